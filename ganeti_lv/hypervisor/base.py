"""The node-operations facade the LUs call, and its result object.

LUs never touch libvirt or SSH. They call ``NodeOps`` methods, which return a
``NodeResult`` (payload, fail_msg, offline) in Ganeti's style: the LU decides
whether a failure is fatal (``Raise``) or a warning (``Warn``). A node marked
offline is never contacted: the result says so.

Implementations subclass ``NodeOps`` and implement the ``_op_*`` methods,
which return a payload or raise a ``NodeError``; the public methods wrap them.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from ganeti_lv.errors import (
    ECODE_ENVIRON,
    HypervisorError,
    NodeError,
    OpExecError,
    OpPrereqError,
)
from ganeti_lv.objects import Cluster, Instance, Node

if TYPE_CHECKING:
    import threading

    from ganeti_lv.hypervisor.export_types import (
        ExportData,
        ExportEntry,
        SnapshotInfo,
        ZeroingResult,
    )
    from ganeti_lv.hypervisor.migration_types import (
        MigrationParams,
        MigrationProgress,
        MigrationStats,
    )
    from ganeti_lv.node.diskcopy import CopyStats, StartInfo

P = TypeVar("P")

FeedbackFn = Callable[[str], None]


class NodeResult(Generic[P]):
    """Outcome of one operation on one node (Ganeti's RpcResult)."""

    def __init__(
        self,
        node: str,
        payload: P | None = None,
        fail_msg: str | None = None,
        offline: bool = False,
        error: NodeError | None = None,
    ) -> None:
        self.node = node
        self.payload = payload
        self.fail_msg = fail_msg
        self.offline = offline
        self.error = error

    @property
    def ok(self) -> bool:
        """True when the operation succeeded."""
        return self.fail_msg is None

    def Raise(self, msg: str, prereq: bool = False, ecode: str | None = None) -> P:  # noqa: N802
        """Raise OpPrereqError (prereq) or OpExecError on failure; return the payload."""
        if self.fail_msg is None:
            return self.payload  # type: ignore[return-value]
        text = f"{msg}: {self.fail_msg}" if msg else self.fail_msg
        if prereq:
            raise OpPrereqError(text, ecode or ECODE_ENVIRON)
        raise OpExecError(text, ecode)

    def Warn(self, msg: str, feedback_fn: FeedbackFn) -> None:  # noqa: N802
        """Report a failure as a warning line instead of raising."""
        if self.fail_msg is not None:
            feedback_fn(f" - WARNING: {msg}: {self.fail_msg}")

    def __repr__(self) -> str:
        return f"NodeResult({self.node!r}, ok={self.ok}, fail_msg={self.fail_msg!r})"


@dataclass
class NodeFacts:
    """What a node reports about itself (memory in MiB)."""

    name: str
    memory_total: int
    memory_free: int
    cpu_model: str = ""
    cpu_arch: str = ""
    cpu_count: int = 0
    libvirt_version: int = 0
    qemu_version: int = 0
    hostname: str = ""
    host_uuid: str = ""
    bridges: list[str] = field(default_factory=list)


@dataclass
class DomainInfo:
    """A domain as a node's libvirt sees it."""

    name: str
    state: str
    memory: int = 0
    vcpus: int = 0
    persistent: bool = True
    disk_paths: list[str] = field(default_factory=list)
    overlays: list[str] = field(default_factory=list)
    console_log: str = ""


@dataclass
class CommandResult:
    """Exit status and output of a command run on a node."""

    exit_status: int
    stdout: str
    stderr: str

    @property
    def failed(self) -> bool:
        """True if the command exited non-zero."""
        return self.exit_status != 0

    @property
    def output(self) -> str:
        """stdout and stderr together."""
        return self.stdout + self.stderr


@dataclass
class HookScriptResult:
    """One hook script's outcome on one node."""

    script: str
    status: str
    output: str


def _unsupported(operation: str) -> HypervisorError:
    return HypervisorError(f"{operation} not supported by this node-operations implementation")


class NodeOps(abc.ABC):
    """Facade for every operation on a node. See the module docstring."""

    def _call(
        self, node: Node, fn: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> NodeResult[Any]:
        if node.offline:
            return NodeResult(node.name, fail_msg="Node is marked offline", offline=True)
        try:
            return NodeResult(node.name, payload=fn(*args, **kwargs))
        except NodeError as err:
            return NodeResult(node.name, fail_msg=str(err), error=err)

    # -- facts -------------------------------------------------------
    def node_info(self, node: Node) -> NodeResult[NodeFacts]:
        """Memory, CPU, versions and bridges of a node (memory capped by node.memory_cap)."""
        return self._call(node, self._op_node_info, node)

    def instance_list(self, node: Node) -> NodeResult[dict[str, DomainInfo]]:
        """All domains the node's libvirt knows, by name."""
        return self._call(node, self._op_instance_list, node)

    def instance_info(self, node: Node, name: str) -> NodeResult[DomainInfo | None]:
        """One domain, or None when the node does not know it."""
        return self._call(node, self._op_instance_info, node, name)

    # -- lifecycle ---------------------------------------------------
    def create_disks(self, cluster: Cluster, node: Node, instance: Instance) -> NodeResult[None]:
        """Create the instance's disk images on the node."""
        return self._call(node, self._op_create_disks, cluster, node, instance)

    def remove_disks(self, cluster: Cluster, node: Node, instance: Instance) -> NodeResult[None]:
        """Delete the instance's disk images (and their directory) on the node."""
        return self._call(node, self._op_remove_disks, cluster, node, instance)

    def start_instance(self, cluster: Cluster, node: Node, instance: Instance) -> NodeResult[None]:
        """Define the domain from the configuration and start it."""
        return self._call(node, self._op_start_instance, cluster, node, instance)

    def shutdown_instance(self, node: Node, instance: Instance, timeout: float) -> NodeResult[bool]:
        """ACPI shutdown, forced off after ``timeout`` s; payload: True if clean."""
        return self._call(node, self._op_shutdown_instance, node, instance, timeout)

    def reboot_instance(
        self, cluster: Cluster, node: Node, instance: Instance, reboot_type: str, timeout: float
    ) -> NodeResult[None]:
        """Reboot: soft (guest), hard (reset) or full (stop and start)."""
        return self._call(
            node, self._op_reboot_instance, cluster, node, instance, reboot_type, timeout
        )

    def undefine_instance(self, node: Node, name: str) -> NodeResult[None]:
        """Destroy (if running) and undefine a domain; no error if absent."""
        return self._call(node, self._op_undefine_instance, node, name)

    # -- commands and hooks -----------------------------------------
    def run_command(
        self, node: Node, argv: list[str], timeout: float | None = None
    ) -> NodeResult[CommandResult]:
        """Run a command on the node (over SSH)."""
        return self._call(node, self._op_run_command, node, argv, timeout)

    def run_hooks(
        self,
        node: Node,
        hooks_dir: str,
        env: dict[str, str],
        timeout: float,
    ) -> NodeResult[list[HookScriptResult]]:
        """Run the hook scripts of ``hooks_dir`` on the node with exactly ``env``."""
        return self._call(node, self._op_run_hooks, node, hooks_dir, env, timeout)

    # -- migration (issue 4) -----------------------------------------
    def migrate_instance(
        self,
        cluster: Cluster,
        source: Node,
        target: Node,
        instance: Instance,
        params: MigrationParams,
        progress_fn: Callable[[MigrationProgress], None],
        abort_event: threading.Event,
    ) -> NodeResult[MigrationStats]:
        """Migrate the running domain from ``source`` to ``target`` (peer to peer).

        Blocks until the migration completed or failed; ``progress_fn`` gets a
        report every ``params.report_interval`` s; setting ``abort_event``
        aborts the libvirt job. A failure carries a ``MigrationFailed`` in
        ``NodeResult.error`` telling whether it was aborted and whether the
        guest had already switched over.
        """
        return self._call(
            source,
            self._op_migrate_instance,
            cluster,
            source,
            target,
            instance,
            params,
            progress_fn,
            abort_event,
        )

    def abort_migration(self, node: Node, name: str) -> NodeResult[bool]:
        """Abort a migration job of the domain on the node; payload: True if one ran."""
        return self._call(node, self._op_abort_migration, node, name)

    def compare_cpu(
        self, source: Node, target: Node, instance: Instance
    ) -> NodeResult[tuple[bool, str]]:
        """Can the instance's CPU (as it runs on ``source``) run on ``target``? (ok, reason)."""
        return self._call(target, self._op_compare_cpu, source, target, instance)

    def paths_exist(self, node: Node, paths: list[str]) -> NodeResult[dict[str, bool]]:
        """Which of the given paths exist on the node."""
        return self._call(node, self._op_paths_exist, node, paths)

    def _op_migrate_instance(
        self,
        cluster: Cluster,
        source: Node,
        target: Node,
        instance: Instance,
        params: MigrationParams,
        progress_fn: Callable[[MigrationProgress], None],
        abort_event: threading.Event,
    ) -> MigrationStats:
        raise _unsupported("migrate_instance")

    def _op_abort_migration(self, node: Node, name: str) -> bool:
        raise _unsupported("abort_migration")

    def _op_compare_cpu(self, source: Node, target: Node, instance: Instance) -> tuple[bool, str]:
        raise _unsupported("compare_cpu")

    def _op_paths_exist(self, node: Node, paths: list[str]) -> dict[str, bool]:
        raise _unsupported("paths_exist")

    # -- export, import and disk chains (issue 5) --------------------
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
    ) -> NodeResult[CopyStats]:
        """Copy a file from ``src`` to ``dst`` node to node (sparse, sha256-verified).

        ``dst_path`` appears only once complete and verified; ``bandwidth_limit``
        in MiB/s; ``progress_fn(done, total)`` in bytes. Lack of space on the
        target fails with ECODE_NORES in ``NodeResult.error``.
        """
        return self._call(
            src,
            self._op_copy_disk,
            src,
            src_path,
            dst,
            dst_path,
            compress=compress,
            bandwidth_limit=bandwidth_limit,
            expect_sha256=expect_sha256,
            progress_fn=progress_fn,
            start_fn=start_fn,
        )

    def disk_usage(self, node: Node, paths: list[str]) -> NodeResult[list[dict[str, Any]]]:
        """[{path, exists, size, allocated}] (bytes) of files on the node."""
        return self._call(node, self._op_disk_usage, node, paths)

    def free_space(self, node: Node, path: str) -> NodeResult[int]:
        """Bytes free on the filesystem holding ``path`` (an existing path) on the node."""
        return self._call(node, self._op_free_space, node, path)

    def snapshot_disks(
        self, node: Node, instance: Instance, *, freeze: bool = True
    ) -> NodeResult[SnapshotInfo]:
        """External disk-only snapshot of every disk of the running domain.

        The base images stay frozen (copy them); writes go to overlays beside
        them. With ``freeze`` and a guest agent, filesystems are frozen around it.
        """
        return self._call(node, self._op_snapshot_disks, node, instance, freeze)

    def start_with_snapshot(
        self, cluster: Cluster, node: Node, instance: Instance
    ) -> NodeResult[SnapshotInfo]:
        """Start the stopped instance paused, snapshot its disks, then let it run.

        The snapshot holds exactly the stopped state. On failure the domain is
        left stopped.
        """
        return self._call(node, self._op_start_with_snapshot, cluster, node, instance)

    def commit_snapshot(
        self, node: Node, instance: Instance, snapshot: SnapshotInfo
    ) -> NodeResult[None]:
        """Merge the overlays back (active commit, pivot when ready) and delete them."""
        return self._call(node, self._op_commit_snapshot, node, instance, snapshot)

    def disk_overlays(self, node: Node, instance: Instance) -> NodeResult[list[str]]:
        """The export overlay files in the instance's disk directory (changes nothing)."""
        return self._call(node, self._op_disk_overlays, node, instance)

    def repair_disk_chain(
        self, node: Node, instance: Instance, overlays: list[str] | None = None
    ) -> NodeResult[list[str]]:
        """Merge overlays left by an interrupted export; payload: overlays merged.

        ``overlays``: what ``disk_overlays`` just answered under the same
        instance lock (the directory is then not listed again).
        """
        return self._call(node, self._op_repair_disk_chain, node, instance, overlays)

    def export_prepare(self, node: Node, cluster: Cluster, instance_name: str) -> NodeResult[str]:
        """Create an empty ``<export_dir>/<instance>.new/`` (replacing a stale one)."""
        return self._call(node, self._op_export_prepare, node, cluster, instance_name)

    def export_finalize(
        self,
        node: Node,
        cluster: Cluster,
        instance_name: str,
        config_text: str,
        manifest_text: str,
    ) -> NodeResult[str]:
        """Write config.ini and the manifest into ``.new`` and publish it atomically."""
        return self._call(
            node,
            self._op_export_finalize,
            node,
            cluster,
            instance_name,
            config_text,
            manifest_text,
        )

    def export_abort(self, node: Node, cluster: Cluster, instance_name: str) -> NodeResult[None]:
        """Remove ``<instance>.new`` (the previous export is not touched)."""
        return self._call(node, self._op_export_abort, node, cluster, instance_name)

    def export_list(self, node: Node, cluster: Cluster) -> NodeResult[list[ExportEntry]]:
        """Exports in the node's export dir, complete and stale."""
        return self._call(node, self._op_export_list, node, cluster)

    def export_remove(self, node: Node, cluster: Cluster, instance_name: str) -> NodeResult[bool]:
        """Remove the instance's export (and stale leftovers); payload: one existed."""
        return self._call(node, self._op_export_remove, node, cluster, instance_name)

    def export_read(
        self, node: Node, cluster: Cluster, instance_name: str
    ) -> NodeResult[ExportData]:
        """config.ini and manifest of a complete export."""
        return self._call(node, self._op_export_read, node, cluster, instance_name)

    def zero_free_space(
        self, node: Node, cluster: Cluster, instance: Instance, timeout: float
    ) -> NodeResult[list[ZeroingResult]]:
        """Zero the unused blocks of each disk of a shut-down instance (ext2/3/4)."""
        return self._call(node, self._op_zero_free_space, node, cluster, instance, timeout)

    def _op_copy_disk(self, src: Node, src_path: str, dst: Node, dst_path: str, **kw: Any) -> Any:
        raise _unsupported("copy_disk")

    def _op_disk_usage(self, node: Node, paths: list[str]) -> list[dict[str, Any]]:
        raise _unsupported("disk_usage")

    def _op_free_space(self, node: Node, path: str) -> int:
        raise _unsupported("free_space")

    def _op_snapshot_disks(self, node: Node, instance: Instance, freeze: bool) -> Any:
        raise _unsupported("snapshot_disks")

    def _op_start_with_snapshot(self, cluster: Cluster, node: Node, instance: Instance) -> Any:
        raise _unsupported("start_with_snapshot")

    def _op_commit_snapshot(self, node: Node, instance: Instance, snapshot: Any) -> None:
        raise _unsupported("commit_snapshot")

    def _op_disk_overlays(self, node: Node, instance: Instance) -> list[str]:
        raise _unsupported("disk_overlays")

    def _op_repair_disk_chain(
        self, node: Node, instance: Instance, overlays: list[str] | None
    ) -> list[str]:
        raise _unsupported("repair_disk_chain")

    def _op_export_prepare(self, node: Node, cluster: Cluster, instance_name: str) -> str:
        raise _unsupported("export_prepare")

    def _op_export_finalize(
        self, node: Node, cluster: Cluster, name: str, config_text: str, manifest_text: str
    ) -> str:
        raise _unsupported("export_finalize")

    def _op_export_abort(self, node: Node, cluster: Cluster, instance_name: str) -> None:
        raise _unsupported("export_abort")

    def _op_export_list(self, node: Node, cluster: Cluster) -> Any:
        raise _unsupported("export_list")

    def _op_export_remove(self, node: Node, cluster: Cluster, instance_name: str) -> bool:
        raise _unsupported("export_remove")

    def _op_export_read(self, node: Node, cluster: Cluster, instance_name: str) -> Any:
        raise _unsupported("export_read")

    def _op_zero_free_space(
        self, node: Node, cluster: Cluster, instance: Instance, timeout: float
    ) -> Any:
        raise _unsupported("zero_free_space")

    # -- implementation ----------------------------------------------
    @abc.abstractmethod
    def _op_node_info(self, node: Node) -> NodeFacts: ...

    @abc.abstractmethod
    def _op_instance_list(self, node: Node) -> dict[str, DomainInfo]: ...

    @abc.abstractmethod
    def _op_instance_info(self, node: Node, name: str) -> DomainInfo | None: ...

    @abc.abstractmethod
    def _op_create_disks(self, cluster: Cluster, node: Node, instance: Instance) -> None: ...

    @abc.abstractmethod
    def _op_remove_disks(self, cluster: Cluster, node: Node, instance: Instance) -> None: ...

    @abc.abstractmethod
    def _op_start_instance(self, cluster: Cluster, node: Node, instance: Instance) -> None: ...

    @abc.abstractmethod
    def _op_shutdown_instance(self, node: Node, instance: Instance, timeout: float) -> bool: ...

    @abc.abstractmethod
    def _op_reboot_instance(
        self, cluster: Cluster, node: Node, instance: Instance, reboot_type: str, timeout: float
    ) -> None: ...

    @abc.abstractmethod
    def _op_undefine_instance(self, node: Node, name: str) -> None: ...

    @abc.abstractmethod
    def _op_run_command(
        self, node: Node, argv: list[str], timeout: float | None
    ) -> CommandResult: ...

    @abc.abstractmethod
    def _op_run_hooks(
        self, node: Node, hooks_dir: str, env: dict[str, str], timeout: float
    ) -> list[HookScriptResult]: ...

    def close(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release connections (libvirt, SSH)."""
