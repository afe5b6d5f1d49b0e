"""In-memory export, snapshot and copy operations for FakeNodeOps (unit tests).

A mixin: it relies on FakeNodeOps' ``_enter`` (records calls, injects
failures) and ``node()`` (per-node state with ``files`` and ``domains``).
File contents are modelled by a checksum per (node, path) in ``file_sha``;
export directories by ``exports[node][dirname] = FakeExport``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ganeti_lv import constants, exportinfo, objects
from ganeti_lv.errors import ECODE_NORES, HypervisorError, NodeError
from ganeti_lv.hypervisor.base import NodeSession
from ganeti_lv.hypervisor.export_types import (
    ExportData,
    ExportEntry,
    ExportFile,
    PublishedExport,
    SnapshotDisk,
    SnapshotInfo,
    ZeroingResult,
    overlay_path,
)
from ganeti_lv.node.diskcopy import CopyCanceled, CopyStats, StartInfo
from ganeti_lv.node.diskcopy_stream import split_checksum
from ganeti_lv.objects import Cluster, Instance, Node

if TYPE_CHECKING:
    from ganeti_lv.cancel import Cancellation

MiB = 1024 * 1024


@dataclass
class FakeExport:
    """One fake export directory: files (name -> checksum) and the two texts
    (``manifest_text`` None: no manifest.json, as Ganeti's exports).

    ``sizes`` (bytes) and ``heads`` (first bytes, hex) describe the files as
    the node would list them; a copy into the export records its size.
    """

    files: dict[str, str] = field(default_factory=dict)
    config_text: str = ""
    manifest_text: str | None = None
    sizes: dict[str, int] = field(default_factory=dict)
    heads: dict[str, str] = field(default_factory=dict)


class FakeExportOps:
    """The export, snapshot and copy operations of FakeNodeOps; see the module docstring."""

    # provided by FakeNodeOps
    _enter: Any
    node: Any
    calls: list[Any]
    start_instance: Any

    def _init_export_state(self) -> None:
        self.exports: dict[str, dict[str, FakeExport]] = {}  # node -> directory -> export
        self.file_sha: dict[tuple[str, str], str] = {}
        self.free_bytes: dict[str, int] = {}  # free_space per node (default: plenty)
        # keyword arguments (compress, bandwidth_limit, ...) of every copy_disk call
        self.copy_options: list[dict[str, Any]] = []
        # what export_finalize says it left undone after the rename, per node
        self.publish_left: dict[str, list[str]] = {}

    def sha_of(self, node: str, path: str) -> str:
        """The fake content checksum of a file (derived from where it was created)."""
        return (
            self.file_sha.get((node, path)) or hashlib.sha256(f"{node}:{path}".encode()).hexdigest()
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
        start_fn: Callable[[StartInfo], None] | None = None,
        session: NodeSession | None = None,
        cancel: Cancellation | None = None,
    ) -> CopyStats:
        """A copy in two halves; ``cancel`` set by the end of the first stops it (nothing lands)."""
        fake = self._enter("copy_disk", src, src_path, dst.name, dst_path)
        self.copy_options.append(
            {
                "compress": compress,
                "bandwidth_limit": bandwidth_limit,
                "expect_sha256": expect_sha256,
                "session": session,
            }
        )
        if src_path not in fake.files:
            raise NodeError(f"{src_path}: no such file", src.name)
        size = fake.files[src_path] * MiB
        if size > self.free_bytes.get(dst.name, 1 << 50):
            raise NodeError(f"not enough space for {dst_path}", dst.name, ecode=ECODE_NORES)
        target = self._enter("copy_disk_receive", dst, dst_path)
        sha = self.sha_of(src.name, src_path)
        if expect_sha256 and split_checksum(expect_sha256)[1] != sha:
            raise NodeError(
                f"checksum mismatch: expected {expect_sha256}, received {sha}", dst.name
            )
        for done in (size // 2, size):
            if progress_fn is not None:
                progress_fn(done, size)
            if cancel is not None and cancel.is_set() and done < size:
                raise CopyCanceled(f"copy of {src_path} to {dst_path} canceled", src.name)
        export = self._export_for_path(dst.name, dst_path)
        if export is not None:
            export.files[dst_path.rsplit("/", 1)[1]] = sha
            export.sizes[dst_path.rsplit("/", 1)[1]] = size
        else:
            target.files[dst_path] = fake.files[src_path]
            self.file_sha[(dst.name, dst_path)] = sha
        return CopyStats(sha, size, size // 4, size // 4, size // 4, 0.1, compress or "none")

    def _export_for_path(self, node: str, path: str) -> FakeExport | None:
        dirpath, _, _ = path.rpartition("/")
        name = dirpath.rsplit("/", 1)[-1]
        return self.exports.get(node, {}).get(name)

    def dir_usage(self, node: Node, paths: list[str]) -> list[int]:
        """What an export being written (``<name>.new``) or an instance's disk directory
        holds: its files at their allocated size (a quarter, as ``disk_usage`` says)."""
        fake = self._enter("dir_usage", node, list(paths))
        dirs = self.exports.get(node.name, {})
        out = []
        for path in paths:
            name = path.rstrip("/").rsplit("/", 1)[-1]
            if name.endswith(exportinfo.NEW_SUFFIX):
                export = dirs.get(name)
                out.append(sum(export.sizes.values()) // 4 if export is not None else 0)
            else:
                inside = [mib for f, mib in fake.files.items() if f.startswith(f"{path}/")]
                out.append(sum(inside) * MiB // 4)
        return out

    def disk_usage(self, node: Node, paths: list[str]) -> list[dict[str, Any]]:
        fake = self._enter("disk_usage", node, list(paths))
        return [
            {
                "path": p,
                "exists": p in fake.files,
                "size": fake.files.get(p, 0) * MiB,
                "allocated": fake.files.get(p, 0) * MiB // 4,
            }
            for p in paths
        ]

    def free_space(self, node: Node, path: str) -> int:
        self._enter("free_space", node, path)
        return self.free_bytes.get(node.name, 1 << 50)

    def snapshot_disks(
        self, node: Node, instance: Instance, *, freeze: bool = True
    ) -> SnapshotInfo:
        fake = self._enter("snapshot_disks", node, instance.name)
        dom = fake.domains.get(instance.name)
        if dom is None or dom.state != constants.DOMSTATE_RUNNING:
            raise HypervisorError(f"Domain {instance.name} is not running", node=node.name)
        snap = SnapshotInfo(instance.name, node.name, frozen=False)
        for idx, base in enumerate(dom.disk_paths):
            snap.disks.append(SnapshotDisk(idx, f"vd{chr(97 + idx)}", base, overlay_path(base)))
            dom.overlays.append(overlay_path(base))
        return snap

    def start_with_snapshot(self, node: Node, cluster: Cluster, instance: Instance) -> SnapshotInfo:
        self._enter("start_with_snapshot", node, instance.name)
        self.start_instance(node, cluster, instance)
        self.calls.pop()  # recorded as start_with_snapshot
        return self.snapshot_disks(node, instance)

    def commit_snapshot(self, node: Node, instance: Instance, snapshot: SnapshotInfo) -> None:
        fake = self._enter("commit_snapshot", node, instance.name)
        dom = fake.domains.get(instance.name)
        if dom is not None:
            dom.overlays = [o for o in dom.overlays if o not in {d.overlay for d in snapshot.disks}]

    def disk_overlays(self, node: Node, cluster: Cluster, instance: Instance) -> list[str]:
        fake = self._enter("disk_overlays", node, instance.name)
        dom = fake.domains.get(instance.name)
        return list(dom.overlays) if dom is not None else []

    def repair_disk_chain(
        self,
        node: Node,
        cluster: Cluster,
        instance: Instance,
        overlays: list[str] | None = None,
    ) -> list[str]:
        fake = self._enter("repair_disk_chain", node, instance.name, overlays)
        dom = fake.domains.get(instance.name)
        if dom is None:
            return []
        merged, dom.overlays = list(dom.overlays), []
        return merged

    def export_prepare(self, node: Node, cluster: Cluster, instance_name: str) -> str:
        self._enter("export_prepare", node, instance_name)
        self.exports.setdefault(node.name, {})[instance_name + exportinfo.NEW_SUFFIX] = FakeExport()
        return f"{cluster.export_dir}/{instance_name}{exportinfo.NEW_SUFFIX}"

    def export_finalize(
        self,
        node: Node,
        cluster: Cluster,
        instance_name: str,
        config_text: str,
        manifest_text: str,
    ) -> PublishedExport:
        """Publish ``.new``; ``publish_left[node]`` is what the publish then says it left."""
        name = instance_name
        self._enter("export_finalize", node, name)
        dirs = self.exports.setdefault(node.name, {})
        new = dirs.get(name + exportinfo.NEW_SUFFIX)
        if new is None:
            raise NodeError(f"no export in progress for {name}", node.name)
        new.config_text, new.manifest_text = config_text, manifest_text
        dirs[name] = dirs.pop(name + exportinfo.NEW_SUFFIX)
        return PublishedExport(f"{cluster.export_dir}/{name}", self.publish_left.get(node.name, []))

    def export_abort(self, node: Node, cluster: Cluster, instance_name: str) -> None:
        self._enter("export_abort", node, instance_name)
        self.exports.get(node.name, {}).pop(instance_name + exportinfo.NEW_SUFFIX, None)

    def export_list(self, node: Node, cluster: Cluster) -> list[ExportEntry]:
        self._enter("export_list", node)
        out = []
        for dirname, exp in sorted(self.exports.get(node.name, {}).items()):
            name, stale = exportinfo.export_dir_owner(dirname)
            kind = "ganeti_lv" if exp.manifest_text is not None or stale else "ganeti"
            path = f"{cluster.export_dir}/{dirname}"
            # read as the node's listing reads it (``exportdir``: the first timestamp line)
            stamp = re.search(r"^timestamp *= *(\d+)$", exp.config_text or "", re.MULTILINE)
            timestamp = int(stamp.group(1)) if stamp else 0
            out.append(ExportEntry(name, node.name, path, not stale, timestamp, stale, kind))
        return out

    def export_remove(self, node: Node, cluster: Cluster, instance_name: str) -> bool:
        self._enter("export_remove", node, instance_name)
        dirs = self.exports.get(node.name, {})
        found = dirs.pop(instance_name, None) is not None
        for suffix in (exportinfo.NEW_SUFFIX, exportinfo.OLD_SUFFIX):
            dirs.pop(instance_name + suffix, None)
        return found

    def export_remove_stale(self, node: Node, cluster: Cluster, instance_name: str) -> list[str]:
        self._enter("export_remove_stale", node, instance_name)
        dirs = self.exports.get(node.name, {})
        done = []
        for suffix in (exportinfo.OLD_SUFFIX, exportinfo.NEW_SUFFIX):
            if instance_name + suffix in dirs:
                dirs.pop(instance_name + suffix)
                done.append(f"removed {cluster.export_dir}/{instance_name}{suffix}")
        return done

    def export_read(self, node: Node, cluster: Cluster, path: str) -> ExportData:
        self._enter("export_read", node, path)
        dirname = path.removeprefix(cluster.export_dir.rstrip("/") + "/")
        exp = self.exports.get(node.name, {}).get(dirname)
        if exp is None:
            raise NodeError(f"No export directory {path} on {node.name}", node.name)
        fake = self.node(node.name)
        files = {}
        for fname, sha in exp.files.items():
            size = exp.sizes.get(fname, 0)
            # make the export's files copyable by copy_disk
            fake.files[f"{path}/{fname}"] = size // MiB
            self.file_sha[(node.name, f"{path}/{fname}")] = sha
            files[fname] = ExportFile(fname, size, exp.heads.get(fname, ""))
        return ExportData(node.name, path, exp.config_text, exp.manifest_text, files)

    def zero_free_space(
        self, node: Node, cluster: Cluster, instance: Instance, timeout: float
    ) -> list[ZeroingResult]:
        self._enter("zero_free_space", node, instance.name, timeout)
        return [ZeroingResult(path, True) for path in objects.disk_paths(cluster, instance)]
