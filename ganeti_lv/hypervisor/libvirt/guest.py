"""One libvirt domain: the only place that handles virDomain objects.

``Guest`` wraps a domain of a ``Host``: state, XML, lifecycle, migration
(start, job figures as a ``JobInfo``, maximum downtime, post-copy, abort)
and disk snapshots; ``BlockDevice`` wraps one of its disks for block jobs
(active commit, pivot). Every call maps libvirt errors through
``Host.guarded`` (so a broken connection is dropped and reported as
NodeUnreachable, a vanished domain as InstanceNotFound, anything else as
HypervisorError): callers see ganeti_lv errors and plain values only.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import libvirt

from ganeti_lv import constants
from ganeti_lv.errors import HypervisorError, InstanceNotFound
from ganeti_lv.hypervisor.base import DomainInfo
from ganeti_lv.hypervisor.libvirt import domxml

if TYPE_CHECKING:
    from ganeti_lv.hypervisor.libvirt.host import Host

_STATE_MAP = {
    libvirt.VIR_DOMAIN_NOSTATE: constants.DOMSTATE_OTHER,
    libvirt.VIR_DOMAIN_RUNNING: constants.DOMSTATE_RUNNING,
    libvirt.VIR_DOMAIN_BLOCKED: constants.DOMSTATE_RUNNING,
    # "being shut down": the guest still runs until it powers off
    libvirt.VIR_DOMAIN_SHUTDOWN: constants.DOMSTATE_RUNNING,
    libvirt.VIR_DOMAIN_PAUSED: constants.DOMSTATE_PAUSED,
    libvirt.VIR_DOMAIN_PMSUSPENDED: constants.DOMSTATE_PAUSED,
    libvirt.VIR_DOMAIN_SHUTOFF: constants.DOMSTATE_SHUTOFF,
    libvirt.VIR_DOMAIN_CRASHED: constants.DOMSTATE_CRASHED,
}

# why a paused domain is paused, when it is a post-copy migration's source
_POSTCOPY_PAUSED = (libvirt.VIR_DOMAIN_PAUSED_POSTCOPY, libvirt.VIR_DOMAIN_PAUSED_POSTCOPY_FAILED)

_UNDEFINE_FLAGS = (
    libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
    | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
    | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
    | libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA
)


_SNAPSHOT_FLAGS = (
    libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY
    | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_NO_METADATA
    | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC
)


@dataclass
class JobInfo:
    """A domain job's figures (libvirt's job statistics), in bytes, pages and ms.

    ``dirty_rate`` is in pages per second (times ``page_size`` for bytes);
    ``time_elapsed_ms`` and ``downtime_ms`` are None when libvirt did not
    report them.
    """

    memory_total: int = 0
    memory_processed: int = 0
    memory_remaining: int = 0
    memory_bps: float = 0.0
    dirty_rate: float = 0.0
    page_size: int = 4096
    iteration: int = 0
    disk_total: int = 0
    disk_processed: int = 0
    disk_remaining: int = 0
    throttle: int = 0
    time_elapsed_ms: int | None = None
    downtime_ms: int | None = None

    @classmethod
    def from_stats(cls, stats: Mapping[str, Any]) -> JobInfo:
        """The figures of a jobStats() dict."""

        def number(key: str) -> int:
            return int(stats.get(key) or 0)

        def optional(key: str) -> int | None:
            value = stats.get(key)
            return None if value is None else int(value)

        return cls(
            memory_total=number("memory_total"),
            memory_processed=number("memory_processed"),
            memory_remaining=number("memory_remaining"),
            memory_bps=float(stats.get("memory_bps") or 0),
            dirty_rate=float(stats.get("memory_dirty_rate") or 0),
            page_size=number("memory_page_size") or 4096,
            iteration=number("memory_iteration"),
            disk_total=number("disk_total"),
            disk_processed=number("disk_processed"),
            disk_remaining=number("disk_remaining"),
            throttle=number("auto_converge_throttle"),
            time_elapsed_ms=optional("time_elapsed"),
            downtime_ms=optional("downtime"),
        )


def map_state(vir_state: int) -> str:
    """constants.DOMSTATE_* for a libvirt domain state number."""
    return _STATE_MAP.get(vir_state, constants.DOMSTATE_OTHER)


class Guest:
    """A domain on ``host``."""

    def __init__(self, host: Host, conn: libvirt.virConnect, domain: libvirt.virDomain) -> None:
        self.host = host
        self._conn = conn  # the connection the domain was found on
        self._domain = domain
        self.name: str = domain.name()

    def __repr__(self) -> str:
        return f"Guest({self.name!r} on {self.host.node!r})"

    def _do(self, what: str, fn: Any, *args: Any) -> Any:
        return self._guarded(f"{what} {self.name}", lambda: fn(*args))

    def _guarded(self, what: str, thunk: Callable[[], Any]) -> Any:
        return self.host.guarded(self._conn, what, thunk)

    # -- state ---------------------------------------------------------------
    def state(self) -> str:
        """The run state as constants.DOMSTATE_*."""
        vir_state, _reason = self._do("Cannot read state of", self._domain.state)
        return map_state(vir_state)

    def is_active(self) -> bool:
        """True while the domain runs (or is paused)."""
        return bool(self._do("Cannot read state of", self._domain.isActive))

    def is_persistent(self) -> bool:
        """True when the domain is defined (survives a stop)."""
        return bool(self._do("Cannot read state of", self._domain.isPersistent))

    def xml(self, inactive: bool = False) -> str:
        """The live XML, or the persistent definition with ``inactive``."""
        flags = libvirt.VIR_DOMAIN_XML_INACTIVE if inactive else 0
        return str(self._do("Cannot read XML of", self._domain.XMLDesc, flags))

    def disks(self) -> list[domxml.DiskState]:
        """The disks of the live XML (with their backing chains)."""
        return domxml.parse_domain_disks(self.xml())

    def info(self) -> DomainInfo:
        """A DomainInfo snapshot of the domain."""
        vir_state, _max_kib, cur_kib, vcpus, _cpu_time = self._do(
            "Cannot read info of", self._domain.info
        )
        xml = self.xml()
        disks = domxml.parse_domain_disks(xml)
        postcopy_source = False
        if vir_state == libvirt.VIR_DOMAIN_PAUSED:  # why: asked of paused domains only
            _now, reason = self._do("Cannot read the state of", self._domain.state)
            postcopy_source = reason in _POSTCOPY_PAUSED
        return DomainInfo(
            name=self.name,
            state=map_state(vir_state),
            postcopy_source=postcopy_source,
            memory=int(cur_kib) // 1024,
            vcpus=int(vcpus),
            persistent=self.is_persistent(),
            disk_paths=[d.base for d in disks],
            overlays=[d.source for d in disks if d.is_overlay],
            console_log=domxml.parse_console_log(xml),
            serial_tty=domxml.parse_serial_tty(xml),
        )

    # -- lifecycle -----------------------------------------------------------
    def start(self, paused: bool = False) -> None:
        """Start a defined, stopped domain (``paused``: its vCPUs paused until resumed)."""
        flags = libvirt.VIR_DOMAIN_START_PAUSED if paused else 0
        self._do("Cannot start", self._domain.createWithFlags, flags)

    def shutdown(self) -> None:
        """Ask the guest to power off (ACPI power button); returns at once."""
        self._do("Cannot shut down", self._domain.shutdown)

    def destroy(self) -> None:
        """Power the domain off at once (no error if it already stopped)."""
        # a transient domain may vanish, any domain stop, between the check and the call
        if self.is_active():
            try:
                self._do("Cannot destroy", self._domain.destroy)
            except InstanceNotFound:
                pass
            except HypervisorError:
                if self.is_active():
                    raise

    def reboot(self) -> None:
        """Ask the guest to reboot."""
        self._do("Cannot reboot", self._domain.reboot, 0)

    def suspend(self) -> None:
        """Pause the domain's vCPUs."""
        self._do("Cannot pause", self._domain.suspend)

    def resume(self) -> None:
        """Resume a paused domain."""
        self._do("Cannot resume", self._domain.resume)

    def undefine(self) -> None:
        """Remove the persistent definition (and its metadata)."""
        with contextlib.suppress(InstanceNotFound):
            self._do("Cannot undefine", self._domain.undefineFlags, _UNDEFINE_FLAGS)

    # -- migration -----------------------------------------------------------
    def migrate(self, peer_uri: str, params: dict[str, Any], flags: int) -> None:
        """migrateToURI3 to ``peer_uri``; blocks until the migration ended.

        Call it in a thread of its own: the job's figures, downtime and abort
        are asked meanwhile from another thread (on the same connection).
        """
        migrate = self._domain.migrateToURI3
        self.host.guarded(
            self._conn,
            "migration failed",
            lambda: migrate(peer_uri, params, flags),
            beside_others=True,
        )

    def job_info(self, completed: bool = False) -> JobInfo | None:
        """The running job's figures, None when no job runs.

        With ``completed``, the figures of the last completed job, kept by
        libvirt for others after us (``virsh domjobinfo --completed``).
        """
        flags = 0
        if completed:
            flags = (
                libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED | libvirt.VIR_DOMAIN_JOB_STATS_KEEP_COMPLETED
            )
        stats = self._do("Cannot read the job of", self._domain.jobStats, flags)
        if not completed and int(stats.get("type", 0)) == libvirt.VIR_DOMAIN_JOB_NONE:
            return None
        if completed and not stats:
            return None
        return JobInfo.from_stats(stats)

    def set_max_downtime(self, ms: int) -> None:
        """The longest pause (ms) the running migration may take to switch over."""
        self._do("Cannot set the migration downtime of", self._domain.migrateSetMaxDowntime, ms, 0)

    def start_postcopy(self) -> None:
        """Switch the running migration to post-copy."""
        self._do(
            "Cannot switch to post-copy the migration of", self._domain.migrateStartPostCopy, 0
        )

    def abort_job(self) -> None:
        """Abort the running job (a migration, a block job's domain job)."""
        self._do("Cannot abort the job of", self._domain.abortJob)

    # -- snapshots and block jobs --------------------------------------------
    def snapshot_disks(self, snapshot_xml: str, quiesce: bool) -> None:
        """An external disk-only snapshot without libvirt metadata (atomic).

        With ``quiesce``, libvirt freezes and thaws the guest's filesystems
        around it (needs an answering guest agent).
        """
        flags = _SNAPSHOT_FLAGS
        if quiesce:
            flags |= libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_QUIESCE
        self._do(
            "Cannot snapshot the disks of", self._domain.snapshotCreateXML, snapshot_xml, flags
        )

    def block_device(self, target: str) -> BlockDevice:
        """The disk with target ``target`` (e.g. "vda"), for block jobs."""
        return BlockDevice(self, target)


class BlockDevice:
    """One disk of a Guest, for its block jobs (active commit and pivot)."""

    def __init__(self, guest: Guest, target: str) -> None:
        self.guest = guest
        self.target = target

    def _do(self, what: str, fn: Any, *args: Any) -> Any:
        return self.guest._guarded(f"{what} {self.guest.name} {self.target}", lambda: fn(*args))

    def job_active(self) -> bool:
        """True while a block job runs on the disk."""
        domain = self.guest._domain
        return bool(self._do("Cannot read the block job of", domain.blockJobInfo, self.target, 0))

    def commit_active(self) -> None:
        """Start merging the active overlay into its backing file (pivot when ready)."""
        domain = self.guest._domain
        flags = libvirt.VIR_DOMAIN_BLOCK_COMMIT_ACTIVE
        self._do(
            "Cannot start the block commit of",
            domain.blockCommit,
            self.target,
            None,
            None,
            0,
            flags,
        )

    def pivot(self) -> None:
        """End a ready active commit: the disk runs on the backing file again."""
        domain = self.guest._domain
        flags = libvirt.VIR_DOMAIN_BLOCK_JOB_ABORT_PIVOT
        self._do("Cannot pivot", domain.blockJobAbort, self.target, flags)
