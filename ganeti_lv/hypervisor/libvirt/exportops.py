"""Export, import and disk-chain operations of LibvirtNodeOps (a mixin), and its job sessions.

Thin: the logic lives in ``diskcopy`` (copy engine), ``exportdir`` (export
directories), ``diskchain`` and ``snapshot`` (overlays). This mixin only
picks the node connections: ``self.ssh(node)`` (SshClient, a NodeTransport)
and ``self.host(node)`` (libvirt Host).

Node-to-node copies use the node's own OpenSSH client with the cluster key
distributed to every node (``NODE_SSH_KEY_FILE``/``NODE_KNOWN_HOSTS_FILE``
when present there, else the node's defaults).

``CopySession`` is the session of one job (``NodeOps.open_session``): the
disk copies set up ahead for the job live there, not on the node
operations, which the master daemon's jobs share: one job's end calls off
its own copies only, and whatever way a job ends, its session is closed.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ganeti_lv import objects
from ganeti_lv.errors import NodeError
from ganeti_lv.hypervisor.base import CopyAhead, NodeSession
from ganeti_lv.hypervisor.export_types import (
    ExportData,
    ExportEntry,
    PublishedExport,
    SnapshotInfo,
    ZeroingResult,
)
from ganeti_lv.hypervisor.libvirt import diskchain
from ganeti_lv.hypervisor.libvirt.domxml import build_domain_xml
from ganeti_lv.node import diskcopy, diskstat, exportdir
from ganeti_lv.objects import Cluster, Instance, Node

if TYPE_CHECKING:
    from ganeti_lv.cancel import Cancellation
    from ganeti_lv.hypervisor.libvirt.guest import Guest
    from ganeti_lv.hypervisor.libvirt.host import Host
    from ganeti_lv.node.ssh import SshClient

# Where a node keeps the cluster key for node-to-node SSH, if not the default.
NODE_SSH_KEY_FILE = "/root/.ssh/id_cluster"
NODE_KNOWN_HOSTS_FILE = "/root/.ssh/known_hosts"
# Longest wait (s) of a closing session for a copy it is still setting up (one
# still being set up after that calls itself off once it is).
SETUP_JOIN_TIMEOUT = 10.0

# zerofree trusts the block bitmaps: on a filesystem not cleanly unmounted (the
# guest forced off or crashed) blocks its journal allocated look free, and
# zeroing them would destroy the guest's data. Only clean filesystems are
# zeroed: the superblock's state (byte 58) says valid and no error, its
# incompatible features (byte 96) have no journal to recover.
_ZERO_SCRIPT = r"""
byte() { od -An -tu1 -j"$2" -N1 "$1" 2>/dev/null | tr -d ' \n'; }
for img in "$@"; do
  magic=$(od -An -tx1 -j1080 -N2 "$img" 2>/dev/null | tr -d ' \n')
  if [ "$magic" != "53ef" ]; then echo "SKIP $img not an ext2/3/4 filesystem image"; continue; fi
  state=$(byte "$img" 1082); incompat=$(byte "$img" 1120)
  if [ $((state & 3)) -ne 1 ] || [ $((incompat & 4)) -ne 0 ]; then
    echo "SKIP $img filesystem not cleanly unmounted (its journal or a check is due)"; continue
  fi
  if out=$(zerofree "$img" 2>&1); then echo "OK $img"; else echo "FAIL $img $out"; fi
done
exit 0
"""


class LibvirtExportOps:
    """Mixin for LibvirtNodeOps; see the module docstring."""

    ssh: Callable[[Node], SshClient]
    host: Callable[[Node], Host]
    prewarm: Callable[[Sequence[Node]], None]

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

    def copy_plan(
        self,
        src: Node,
        src_path: str,
        dst: Node,
        dst_path: str,
        *,
        compress: str,
        bandwidth_limit: float | None,
        expect_sha256: str | None = None,
    ) -> diskcopy.CopyPlan:
        """The copy ``copy_disk`` makes with these arguments (NodeError if they are bad)."""
        return diskcopy.CopyPlan.make(
            src.name,
            src_path,
            self._endpoint(dst),
            dst_path,
            compress=compress,
            bandwidth_limit=bandwidth_limit,
            expect_sha256=expect_sha256,
        )

    def copy_disk(
        self,
        src: Node,
        src_path: str,
        dst: Node,
        dst_path: str,
        *,
        compress: str = "none",
        bandwidth_limit: float | None = None,
        expect_sha256: str | None = None,
        progress_fn: Callable[[int, int], None] | None = None,
        start_fn: Callable[[diskcopy.StartInfo], None] | None = None,
        session: NodeSession | None = None,
        cancel: Cancellation | None = None,
    ) -> diskcopy.CopyStats:
        """See ``NodeOps.copy_disk``; the receiver creates the target's directory itself."""
        plan = self.copy_plan(
            src,
            src_path,
            dst,
            dst_path,
            compress=compress,
            bandwidth_limit=bandwidth_limit,
            expect_sha256=expect_sha256,
        )
        if isinstance(session, CopySession):
            pending = session.take(plan)
            if pending is not None:
                return pending.go(
                    progress_fn, start_fn, cancel=cancel, source=lambda: self.ssh(src)
                )
        return plan.run(self.ssh(src), progress_fn, start_fn, cancel=cancel)

    def disk_usage(self, node: Node, paths: list[str]) -> list[dict[str, Any]]:
        return diskstat.stat_files(self.ssh(node), node.name, paths)

    def free_space(self, node: Node, path: str) -> int:
        # the path may not exist yet (a fresh export dir): the helper measures its
        # nearest existing parent
        return diskstat.free_space(self.ssh(node), node.name, path)

    def dir_usage(self, node: Node, paths: list[str]) -> list[int]:
        return diskstat.dir_usage(self.ssh(node), node.name, paths)

    def snapshot_disks(
        self, node: Node, instance: Instance, *, freeze: bool = True
    ) -> SnapshotInfo:
        guest = self.host(node).guest(instance.name)
        return diskchain.create(guest, self.ssh(node), node.name, freeze)

    def start_with_snapshot(self, node: Node, cluster: Cluster, instance: Instance) -> SnapshotInfo:
        host = self.host(node)
        guest = host.define(build_domain_xml(cluster, instance))
        guest.start(paused=True)
        try:
            snap = diskchain.create(guest, self.ssh(node), node.name, freeze=False)
            guest.resume()
        except NodeError:
            # stopped again before it ever ran: started later from its definition,
            # on its own disks (an overlay made meanwhile holds nothing: stale); the
            # error raised stays the cause
            _stop_again(host, guest, instance.name)
            raise
        return snap

    def commit_snapshot(self, node: Node, instance: Instance, snapshot: SnapshotInfo) -> None:
        guest = self.host(node).guest(instance.name)
        diskchain.commit(guest, self.ssh(node), node.name, snapshot)

    def disk_overlays(self, node: Node, cluster: Cluster, instance: Instance) -> list[str]:
        directory = objects.disk_dir(cluster, instance)
        return diskchain.find_overlay_files(self.ssh(node), node.name, directory)

    def repair_disk_chain(
        self,
        node: Node,
        cluster: Cluster,
        instance: Instance,
        overlays: list[str] | None = None,
    ) -> list[str]:
        guest = self.host(node).find_guest(instance.name)
        return diskchain.repair(
            guest,
            self.ssh(node),
            node.name,
            objects.disk_dir(cluster, instance),
            overlays=overlays,
        )

    def export_prepare(self, node: Node, cluster: Cluster, instance_name: str) -> str:
        return exportdir.prepare(self.ssh(node), node.name, cluster.export_dir, instance_name)

    def export_finalize(
        self,
        node: Node,
        cluster: Cluster,
        instance_name: str,
        config_text: str,
        manifest_text: str,
    ) -> PublishedExport:
        return exportdir.finalize(
            self.ssh(node), node.name, cluster.export_dir, instance_name, config_text, manifest_text
        )

    def export_abort(self, node: Node, cluster: Cluster, instance_name: str) -> None:
        exportdir.abort(self.ssh(node), node.name, cluster.export_dir, instance_name)

    def export_list(self, node: Node, cluster: Cluster) -> list[ExportEntry]:
        return exportdir.list_exports(self.ssh(node), node.name, cluster.export_dir)

    def export_remove(self, node: Node, cluster: Cluster, instance_name: str) -> bool:
        return exportdir.remove(self.ssh(node), node.name, cluster.export_dir, instance_name)

    def export_remove_stale(self, node: Node, cluster: Cluster, instance_name: str) -> list[str]:
        return exportdir.remove_stale(self.ssh(node), node.name, cluster.export_dir, instance_name)

    def export_read(self, node: Node, cluster: Cluster, path: str) -> ExportData:
        return exportdir.read(self.ssh(node), node.name, path)

    def zero_free_space(
        self, node: Node, cluster: Cluster, instance: Instance, timeout: float
    ) -> list[ZeroingResult]:
        paths = objects.disk_paths(cluster, instance)
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


class CopySession(NodeSession):
    """One job's session on LibvirtNodeOps: its warm-ups and the copies set up for it.

    ``prestart_copies`` sets the copies up in a thread of the session
    (``diskcopy.PendingCopy``: the source's sender, its SSH connection to
    the target and the target's receiver start and wait; nothing is read
    or written). ``take`` hands the job's ``copy_disk`` the one made for
    the same copy; ``close`` waits for the set-up to end and calls off the
    rest, so no helper process or node-to-node SSH session outlives the job.
    """

    def __init__(self, ops: LibvirtExportOps) -> None:
        self._ops = ops
        self._lock = threading.Lock()
        self._pending: dict[tuple[str, str, str], diskcopy.PendingCopy] = {}
        self._setup: list[threading.Thread] = []
        self._closed = False

    def prewarm(self, nodes: Sequence[Node]) -> None:
        """Open the connections to ``nodes`` (kept by the node operations)."""
        self._ops.prewarm(nodes)

    def prestart_copies(self, copies: Sequence[CopyAhead]) -> None:
        """Set ``copies`` up in a thread of the session; see the class docstring."""
        wanted = [c for c in copies if not (c.src.offline or c.dst.offline)]
        if not wanted:
            return
        thread = threading.Thread(
            target=self._set_up, args=(wanted,), name="copies-ahead", daemon=True
        )
        with self._lock:
            if self._closed:
                return
            try:
                thread.start()
            except RuntimeError:  # no thread to be had: each copy is made when it is needed
                return
            self._setup.append(thread)

    def _set_up(self, copies: Sequence[CopyAhead]) -> None:
        for copy in copies:
            if self._closed:
                return
            try:
                plan = self._ops.copy_plan(
                    copy.src,
                    copy.src_path,
                    copy.dst,
                    copy.dst_path,
                    compress=copy.compress,
                    bandwidth_limit=copy.bandwidth_limit,
                )
                pending = diskcopy.PendingCopy(self._ops.ssh(copy.src), plan)
            except Exception:  # noqa: BLE001 - a hint only: the job's copy_disk reports
                continue
            with self._lock:
                replaced = self._pending.pop(_key(plan), None)
                keep = not self._closed
                if keep:
                    self._pending[_key(plan)] = pending
            if replaced is not None:
                _call_off(replaced)
            if not keep:  # the job ended while this copy was set up
                _call_off(pending)

    def _wait_for_setup(self, timeout: float | None = None) -> None:
        with self._lock:
            threads = list(self._setup)
        for thread in threads:
            thread.join(timeout)

    def take(self, plan: diskcopy.CopyPlan) -> diskcopy.PendingCopy | None:
        """The copy set up for ``plan``'s target, if it is the same copy (else called off)."""
        self._wait_for_setup()
        with self._lock:
            pending = self._pending.pop(_key(plan), None)
        if pending is not None and pending.plan != plan:
            pending.cancel()
            return None
        return pending

    def close(self) -> None:
        """Call off every copy set up and not used (after its set-up has ended)."""
        with self._lock:
            self._closed = True
        self._wait_for_setup(SETUP_JOIN_TIMEOUT)
        with self._lock:
            left = list(self._pending.values())
            self._pending.clear()
        for pending in left:
            _call_off(pending)


def _key(plan: diskcopy.CopyPlan) -> tuple[str, str, str]:
    return (plan.src_node, plan.dst.name, plan.dst_path)


def _call_off(pending: diskcopy.PendingCopy) -> None:
    """Cancel a copy set up ahead; a channel already broken is gone anyway."""
    try:
        pending.cancel()
    except Exception:  # noqa: BLE001 - calling a copy off never fails the job
        return


def _stop_again(host: Host, guest: Guest, name: str) -> None:
    """Destroy a guest started paused, once more on a new look-up when that fails.

    A connection lost since the start fails the first try; the host opens a
    new one for the look-up (libvirtd restarted, say). A guest that cannot
    be stopped stays paused: the caller's next look at it says so.
    """
    try:
        guest.destroy()
        return
    except NodeError:
        pass
    with contextlib.suppress(NodeError):
        again = host.find_guest(name)
        if again is not None:
            again.destroy()
