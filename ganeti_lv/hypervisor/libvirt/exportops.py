"""Export, import and disk-chain operations of LibvirtNodeOps (a mixin).

Thin: the logic lives in ``diskcopy`` (copy engine), ``exportdir`` (export
directories), ``diskchain`` and ``snapshot`` (overlays). This mixin only
picks the node connections: ``self.ssh(node)`` (SshClient, a Runner) and
``self.host(node)`` (libvirt Host).

Node-to-node copies use the node's own OpenSSH client with the cluster key
distributed to every node (``NODE_SSH_KEY_FILE``/``NODE_KNOWN_HOSTS_FILE``
when present there, else the node's defaults).
"""

from __future__ import annotations

import threading
from typing import Any

from ganeti_lv import objects
from ganeti_lv.errors import HypervisorError, NodeError
from ganeti_lv.hypervisor.export_types import ExportData, ExportEntry, SnapshotInfo, ZeroingResult
from ganeti_lv.hypervisor.libvirt import diskchain
from ganeti_lv.hypervisor.libvirt import snapshot as vsnap
from ganeti_lv.hypervisor.libvirt.domxml import build_domain_xml
from ganeti_lv.node import diskcopy, exportdir
from ganeti_lv.objects import Cluster, Instance, Node

# Where a node keeps the cluster key for node-to-node SSH, if not the default.
NODE_SSH_KEY_FILE = "/root/.ssh/id_cluster"
NODE_KNOWN_HOSTS_FILE = "/root/.ssh/known_hosts"
# copy_disk arguments a copy set up ahead must match
_COPY_ARGS = ("compress", "bandwidth_limit", "expect_sha256")
# Guards the copies set up ahead (LibvirtExportOps._pending_copies).
_PENDING_LOCK = threading.RLock()

_ZERO_SCRIPT = r"""
rc=0
for img in "$@"; do
  magic=$(od -An -tx1 -j1080 -N2 "$img" 2>/dev/null | tr -d ' \n')
  if [ "$magic" != "53ef" ]; then echo "SKIP $img not an ext2/3/4 filesystem image"; continue; fi
  if out=$(zerofree "$img" 2>&1); then echo "OK $img"; else echo "FAIL $img $out"; rc=1; fi
done
exit 0
"""


class LibvirtExportOps:
    """Mixin for LibvirtNodeOps; see the module docstring."""

    ssh: Any
    host: Any
    _pending_copies: dict[tuple[str, str, str], diskcopy.PendingCopy]

    def _endpoint(self, dst: Node) -> diskcopy.CopyEndpoint:
        """How a source node reaches ``dst`` with OpenSSH: the cluster key if the node
        has it, else the node's default keys (no extra round trip to find out)."""
        return diskcopy.ssh_endpoint(
            dst.address,
            dst.ssh_port,
            dst.ssh_user,
            key_file=NODE_SSH_KEY_FILE,
            name=dst.name,
            identities_only=False,
        )

    def _plan(
        self, src: Node, src_path: str, dst: Node, dst_path: str, kw: dict[str, Any]
    ) -> diskcopy.CopyPlan:
        """The copy ``copy_disk(src, src_path, dst, dst_path, **kw)`` makes."""
        wanted = {k: kw[k] for k in _COPY_ARGS if k in kw}
        return diskcopy.CopyPlan.make(src.name, src_path, self._endpoint(dst), dst_path, **wanted)

    def _op_copy_disk(self, src: Node, src_path: str, dst: Node, dst_path: str, **kw: Any) -> Any:
        # the receiver creates the target's directory itself
        plan = self._plan(src, src_path, dst, dst_path, kw)
        with _PENDING_LOCK:
            pending = self._pending().pop((src.name, dst.name, dst_path), None)
        progress_fn, start_fn = kw.get("progress_fn"), kw.get("start_fn")
        if pending is not None:
            if pending.plan == plan:
                return pending.go(progress_fn, start_fn)
            pending.cancel()
        return plan.run(self.ssh(src), progress_fn, start_fn)

    def _pending(self) -> dict[tuple[str, str, str], diskcopy.PendingCopy]:
        pending: dict[tuple[str, str, str], diskcopy.PendingCopy] | None
        pending = getattr(self, "_pending_copies", None)
        if pending is None:
            pending = {}
            self._pending_copies = pending
        return pending

    def prestart_copy(self, src: Node, src_path: str, dst: Node, dst_path: str, **kw: Any) -> None:
        """Set up a copy ahead (a hint): its processes start and wait.

        A later ``copy_disk`` with the same arguments only says go; one
        with other arguments, or ``drop_prestarted_copies``, calls it off.
        Failures are left to that ``copy_disk``.
        """
        if src.offline or dst.offline:
            return
        key = (src.name, dst.name, dst_path)
        with _PENDING_LOCK:  # the command line may set copies up from a thread
            old = self._pending().pop(key, None)
            try:
                plan: diskcopy.CopyPlan | None = self._plan(src, src_path, dst, dst_path, kw)
            except NodeError:  # bad arguments: copy_disk reports them
                plan = None
            if old is not None:
                if old.plan == plan:
                    self._pending()[key] = old  # the same copy: keep it
                    return
                old.cancel()
            if plan is None:
                return
            try:
                pending = diskcopy.PendingCopy(self.ssh(src), plan)
            except Exception:  # noqa: BLE001 - a hint only; copy_disk reports
                return
            self._pending()[key] = pending

    def drop_prestarted_copies(self) -> None:
        """Call off every copy set up ahead and not used."""
        with _PENDING_LOCK:
            pending = self._pending()
            copies = list(pending.values())
            pending.clear()
        for copy in copies:
            copy.cancel()

    def _op_disk_usage(self, node: Node, paths: list[str]) -> list[dict[str, Any]]:
        return diskcopy.stat_files(self.ssh(node), node.name, paths)

    def _op_free_space(self, node: Node, path: str) -> int:
        # the path may not exist yet (a fresh export dir): the helper measures its
        # nearest existing parent
        return diskcopy.free_space(self.ssh(node), node.name, path)

    def _op_snapshot_disks(self, node: Node, instance: Instance, freeze: bool) -> SnapshotInfo:
        guest = self.host(node).guest(instance.name)
        return diskchain.create(guest, self.ssh(node), node.name, freeze)

    def _op_start_with_snapshot(
        self, cluster: Cluster, node: Node, instance: Instance
    ) -> SnapshotInfo:
        host = self.host(node)
        guest = host.define(build_domain_xml(cluster, instance))
        vsnap.start_paused(guest)
        try:
            snap = diskchain.create(guest, self.ssh(node), node.name, freeze=False)
        except NodeError:
            guest.destroy()
            raise
        guest.resume()
        return snap

    def _op_commit_snapshot(self, node: Node, instance: Instance, snapshot: SnapshotInfo) -> None:
        guest = self.host(node).guest(instance.name)
        diskchain.commit(guest, self.ssh(node), node.name, snapshot)

    def _op_disk_overlays(self, node: Node, instance: Instance) -> list[str]:
        directory = objects.disk_dir(self._cluster(), instance)
        return diskchain.find_overlay_files(self.ssh(node), node.name, directory)

    def _op_repair_disk_chain(
        self, node: Node, instance: Instance, overlays: list[str] | None
    ) -> list[str]:
        guest = self.host(node).find_guest(instance.name)
        cluster = self._cluster()
        return diskchain.repair(
            guest,
            self.ssh(node),
            node.name,
            objects.disk_dir(cluster, instance),
            overlays=overlays,
        )

    def _cluster(self) -> Cluster:
        config = getattr(self, "config", None)
        if config is None:
            raise HypervisorError("The node operations have no configuration to read")
        return config.get_cluster()

    def _op_export_prepare(self, node: Node, cluster: Cluster, instance_name: str) -> str:
        return exportdir.prepare(self.ssh(node), node.name, cluster.export_dir, instance_name)

    def _op_export_finalize(
        self, node: Node, cluster: Cluster, name: str, config_text: str, manifest_text: str
    ) -> str:
        return exportdir.finalize(
            self.ssh(node), node.name, cluster.export_dir, name, config_text, manifest_text
        )

    def _op_export_abort(self, node: Node, cluster: Cluster, instance_name: str) -> None:
        exportdir.abort(self.ssh(node), node.name, cluster.export_dir, instance_name)

    def _op_export_list(self, node: Node, cluster: Cluster) -> list[ExportEntry]:
        return exportdir.list_exports(self.ssh(node), node.name, cluster.export_dir)

    def _op_export_remove(self, node: Node, cluster: Cluster, instance_name: str) -> bool:
        return exportdir.remove(self.ssh(node), node.name, cluster.export_dir, instance_name)

    def _op_export_read(self, node: Node, cluster: Cluster, instance_name: str) -> ExportData:
        data = exportdir.read(self.ssh(node), node.name, cluster.export_dir, instance_name)
        from ganeti_lv.exportinfo import Manifest

        manifest = Manifest.from_json(data.manifest_text)
        data.disk_paths = [f"{data.path}/{d.file}" for d in manifest.disks]
        return data

    def _op_zero_free_space(
        self, node: Node, cluster: Cluster, instance: Instance, timeout: float
    ) -> list[ZeroingResult]:
        paths = [objects.disk_path(cluster, instance, i) for i in range(len(instance.disks))]
        res = self.ssh(node).run(
            ["sh", "-c", _ZERO_SCRIPT, "sh", *paths], timeout=timeout, check=False
        )
        out = []
        for line in res.stdout.splitlines():
            kind, _, rest = line.partition(" ")
            path, _, detail = rest.partition(" ")
            if kind in ("OK", "SKIP", "FAIL"):
                out.append(ZeroingResult(path, kind == "OK", detail))
        if len(out) != len(paths):
            raise NodeError(f"Zeroing failed on {node.name}: {res.output.strip()}", node.name)
        return out
