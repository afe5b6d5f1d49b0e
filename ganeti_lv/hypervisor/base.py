"""The node-operations interface the LUs call, declared once.

LUs never touch libvirt or SSH. ``NodeOps`` is the interface of every
operation on a node; implementations (``libvirt.LibvirtNodeOps`` on real
nodes, ``fake.FakeNodeOps`` in unit tests) override its methods. Each
operation takes the node it runs on first, does its work and returns its
payload, or raises a ``NodeError``. The LUs call them through
``ganeti_lv.node.transport.node_call``, which turns the outcome into a
``NodeResult`` (payload, fail_msg, offline) in Ganeti's style: the LU
decides whether a failure is fatal (``Raise``) or a warning (``Warn``),
and a node marked offline is never contacted::

    dom = node_call(self.rpc.instance_info, self.pnode, name).Raise("Cannot query")

Node operations get everything they need from their arguments: they never
read the configuration store.

Optional capabilities are declared here with do-nothing defaults, so a
caller never has to find out whether an implementation has them:

- ``prewarm(nodes)``: open connections ahead of use (a hint);
- ``open_session()``: a ``NodeSession`` for one job: the work begun ahead
  of need for that job (connections warmed, disk copies set up) belongs to
  it, and the processor closes it when the job ends, whatever happened;
- ``close()``: release the connections.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ganeti_lv.objects import Cluster, Instance, Node

if TYPE_CHECKING:
    from ganeti_lv.cancel import Cancellation
    from ganeti_lv.hypervisor.export_types import (
        ExportData,
        ExportEntry,
        PublishedExport,
        SnapshotInfo,
        ZeroingResult,
    )
    from ganeti_lv.hypervisor.migration_types import (
        MigrationParams,
        MigrationProgress,
        MigrationStats,
    )
    from ganeti_lv.node.diskcopy import CopyStats, StartInfo
    from ganeti_lv.node.transport import CommandResult, HookScriptResult
    from ganeti_lv.pki import NodeCredentials


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
    # memory_free is the node's memory cap's figure (the cap less the memory of
    # every running or paused domain, one still arriving too), not the host's
    memory_free_capped: bool = False


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
    # its serial port is a terminal, which a console can attach to
    serial_tty: bool = False
    # paused as a post-copy migration's source (running or failed): it holds
    # memory its target still needs, so it is not a leftover to remove
    postcopy_source: bool = False


@dataclass(frozen=True)
class CopyAhead:
    """A disk copy a job will make, to set up ahead (``NodeSession.prestart_copies``).

    The arguments ``copy_disk`` will get: ``src_path`` on ``src`` to
    ``dst_path`` on ``dst``, with the compression and bandwidth limit (MiB/s).
    """

    src: Node
    src_path: str
    dst: Node
    dst_path: str
    compress: str
    bandwidth_limit: float | None = None


class NodeSession:
    """The work node operations begin for one job before the job needs it.

    Opened by ``NodeOps.open_session`` for one job and closed by the
    processor when the job ends (success, failure, cancel); nothing of it
    outlives the job. Everything here is a hint: nothing is decided or
    changed on a node before the job's own call asks for it, and a failure
    is left to that call. This base does nothing (node operations that
    have no work to begin ahead).
    """

    def prewarm(self, nodes: Sequence[Node]) -> None:
        """Open the connections to ``nodes`` in the background (the job will use them)."""

    def prestart_copies(self, copies: Sequence[CopyAhead]) -> None:
        """Set ``copies`` up in the background: their processes start and wait.

        A ``copy_disk`` of this session with the same arguments then only
        says go; the rest are called off by ``close``.
        """

    def close(self) -> None:
        """Call off everything begun for the job and not used; never raises."""


class NodeOps(abc.ABC):
    """Every operation on a node; see the module docstring."""

    # -- facts -------------------------------------------------------
    @abc.abstractmethod
    def node_info(self, node: Node) -> NodeFacts:
        """Memory, CPU, versions and bridges of a node (memory capped by node.memory_cap)."""

    @abc.abstractmethod
    def instance_list(self, node: Node) -> dict[str, DomainInfo]:
        """All domains the node's libvirt knows, by name."""

    @abc.abstractmethod
    def instance_info(self, node: Node, name: str) -> DomainInfo | None:
        """One domain, or None when the node does not know it."""

    @abc.abstractmethod
    def console_command(self, instance_name: str) -> list[str]:
        """The command that attaches to the serial terminal of a domain, run on its node
        by the node's SSH user (``DomainInfo.serial_tty``: whether it has one)."""

    def console_log_path(self, instance_name: str) -> str:
        """Where a node keeps the console log of an instance ("" when unknown).

        A domain's own ``DomainInfo.console_log`` says it when it is
        defined; this is the place for one that is not (yet).
        """
        return ""

    # -- lifecycle ---------------------------------------------------
    @abc.abstractmethod
    def create_disks(self, node: Node, cluster: Cluster, instance: Instance) -> None:
        """Create the instance's disk images on the node."""

    @abc.abstractmethod
    def remove_disks(self, node: Node, cluster: Cluster, instance: Instance) -> None:
        """Delete the instance's disk images, and their directory unless it holds more
        (what is not the instance's is kept)."""

    @abc.abstractmethod
    def start_instance(
        self,
        node: Node,
        cluster: Cluster,
        instance: Instance,
        *,
        hvparams: Mapping[str, Any] | None = None,
        beparams: Mapping[str, Any] | None = None,
        paused: bool = False,
    ) -> None:
        """Define the domain from the configuration and start it (nothing if it runs).

        ``hvparams``/``beparams``: temporary parameters over the instance's for
        this start only (the defined domain keeps the configuration's);
        ``paused``: its vCPUs paused until resumed (the console resumes them).
        """

    @abc.abstractmethod
    def shutdown_instance(self, node: Node, instance: Instance, timeout: float) -> bool:
        """ACPI shutdown, forced off after ``timeout`` s; True if clean."""

    @abc.abstractmethod
    def reboot_instance(
        self, node: Node, cluster: Cluster, instance: Instance, reboot_type: str, timeout: float
    ) -> None:
        """Reboot: soft (guest), hard (reset) or full (stop and start)."""

    @abc.abstractmethod
    def undefine_instance(self, node: Node, name: str) -> None:
        """Destroy (if running) and undefine a domain; no error if absent."""

    # -- commands and hooks -----------------------------------------
    @abc.abstractmethod
    def run_command(
        self, node: Node, argv: list[str], timeout: float | None = None
    ) -> CommandResult:
        """Run a command on the node (over SSH); a non-zero exit is in the result."""

    @abc.abstractmethod
    def install_tls_credentials(self, node: Node, creds: NodeCredentials) -> bool:
        """Install the node's TLS credentials (over SSH); True if the hypervisor
        daemon uses them at once, False if only from its next start."""

    @abc.abstractmethod
    def remove_tls_credentials(self, node: Node) -> None:
        """Remove the node's TLS credentials of the cluster (over SSH): it leaves it."""

    @abc.abstractmethod
    def run_hooks(
        self, node: Node, hooks_dir: str, env: dict[str, str], timeout: float
    ) -> list[HookScriptResult]:
        """Run the hook scripts of ``hooks_dir`` on the node with exactly ``env``."""

    # -- migration ---------------------------------------------------
    @abc.abstractmethod
    def migrate_instance(
        self,
        source: Node,
        target: Node,
        cluster: Cluster,
        instance: Instance,
        params: MigrationParams,
        progress_fn: Callable[[MigrationProgress], None],
        abort_event: Cancellation,
    ) -> MigrationStats:
        """Migrate the running domain from ``source`` to ``target`` (peer to peer).

        Blocks until the migration completed or failed; ``progress_fn`` gets a
        report every ``params.report_interval`` s; setting ``abort_event``
        aborts the libvirt job. A failure raises ``MigrationFailed``, telling
        whether it was aborted and whether the guest had already switched over.
        """

    @abc.abstractmethod
    def abort_migration(self, node: Node, name: str) -> bool:
        """Abort a migration job of the domain on the node; True if one ran."""

    @abc.abstractmethod
    def compare_cpu(self, target: Node, source: Node, instance: Instance) -> tuple[bool, str]:
        """Can the instance's CPU (as it runs on ``source``) run on ``target``? (ok, reason)."""

    @abc.abstractmethod
    def paths_exist(self, node: Node, paths: list[str]) -> dict[str, bool]:
        """Which of the given paths exist on the node."""

    # -- export, import and disk chains -----------------------------
    @abc.abstractmethod
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
        """Copy a file from ``src`` to ``dst`` node to node (sparse, checksummed).

        ``dst_path`` appears only once complete and verified; ``bandwidth_limit``
        in MiB/s; ``progress_fn(done, total)`` in bytes. A copy the job's
        ``session`` set up ahead with the same arguments is used. Lack of
        space on the target fails with ECODE_NORES. Setting ``cancel`` (the
        job's cancel request) stops the copy at both ends: ``CopyCanceled``,
        nothing left at ``dst_path``.
        """

    @abc.abstractmethod
    def disk_usage(self, node: Node, paths: list[str]) -> list[dict[str, Any]]:
        """[{path, exists, size, allocated}] (bytes) of files on the node."""

    @abc.abstractmethod
    def free_space(self, node: Node, path: str) -> int:
        """Bytes free on the filesystem holding ``path`` on the node."""

    @abc.abstractmethod
    def dir_usage(self, node: Node, paths: list[str]) -> list[int]:
        """Bytes allocated under each directory (0 for one that does not exist)."""

    @abc.abstractmethod
    def snapshot_disks(
        self, node: Node, instance: Instance, *, freeze: bool = True
    ) -> SnapshotInfo:
        """External disk-only snapshot of every disk of the running domain.

        The base images stay frozen (copy them); writes go to overlays beside
        them. With ``freeze`` and a guest agent, filesystems are frozen around it.
        """

    @abc.abstractmethod
    def start_with_snapshot(self, node: Node, cluster: Cluster, instance: Instance) -> SnapshotInfo:
        """Start the stopped instance paused, snapshot its disks, then let it run.

        The snapshot holds exactly the stopped state. On failure the domain is
        left stopped.
        """

    @abc.abstractmethod
    def commit_snapshot(self, node: Node, instance: Instance, snapshot: SnapshotInfo) -> None:
        """Merge the overlays back (active commit, pivot when ready) and delete them."""

    @abc.abstractmethod
    def disk_overlays(self, node: Node, cluster: Cluster, instance: Instance) -> list[str]:
        """The export overlay files in the instance's disk directory (changes nothing)."""

    @abc.abstractmethod
    def repair_disk_chain(
        self,
        node: Node,
        cluster: Cluster,
        instance: Instance,
        overlays: list[str] | None = None,
    ) -> list[str]:
        """Merge overlays left by an interrupted export; the overlays merged.

        ``overlays``: what ``disk_overlays`` just answered under the same
        instance lock (the directory is then not listed again).
        """

    @abc.abstractmethod
    def export_prepare(self, node: Node, cluster: Cluster, instance_name: str) -> str:
        """Create an empty ``<export_dir>/<instance>.new/`` (replacing a stale one)."""

    @abc.abstractmethod
    def export_finalize(
        self,
        node: Node,
        cluster: Cluster,
        instance_name: str,
        config_text: str,
        manifest_text: str,
    ) -> PublishedExport:
        """Write config.ini and the manifest into ``.new`` and publish it atomically.

        NodeError when it failed before the rename into place (nothing was
        published); what failed after it is in the result's ``left``.
        """

    @abc.abstractmethod
    def export_abort(self, node: Node, cluster: Cluster, instance_name: str) -> None:
        """Remove ``<instance>.new``; the previous export is kept (put back if a failed
        publish had renamed it aside)."""

    @abc.abstractmethod
    def export_list(self, node: Node, cluster: Cluster) -> list[ExportEntry]:
        """Exports in the node's export dir, complete and stale."""

    @abc.abstractmethod
    def export_remove(self, node: Node, cluster: Cluster, instance_name: str) -> bool:
        """Remove the instance's export (and stale leftovers); True if one existed."""

    @abc.abstractmethod
    def export_remove_stale(self, node: Node, cluster: Cluster, instance_name: str) -> list[str]:
        """Remove only ``<instance>.new``/``.old`` leftovers; "removed PATH" lines."""

    @abc.abstractmethod
    def export_read(self, node: Node, cluster: Cluster, path: str) -> ExportData:
        """config.ini, manifest.json (if any) and the files of the export in ``path``."""

    @abc.abstractmethod
    def zero_free_space(
        self, node: Node, cluster: Cluster, instance: Instance, timeout: float
    ) -> list[ZeroingResult]:
        """Zero the unused blocks of each disk of a shut-down instance (ext2/3/4)."""

    # -- optional capabilities (do nothing by default) ----------------
    def prewarm(self, nodes: Sequence[Node]) -> None:  # noqa: B027 - optional
        """Start opening the connections to ``nodes`` in the background (a hint)."""

    def open_session(self) -> NodeSession:
        """A session for one job (see ``NodeSession``); the caller closes it."""
        return NodeSession()

    def close(self) -> None:  # noqa: B027 - optional, nothing to release by default
        """Release connections (libvirt, SSH)."""
