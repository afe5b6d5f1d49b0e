"""Plain values exchanged between the migration LU and the node operations.

``MigrationParams`` says how to migrate, ``MigrationProgress`` is one
progress report, ``MigrationStats`` the outcome of a finished migration.
``MigrationFailed`` is the node-level error of a migration that did not
complete; ``aborted`` tells whether it was aborted on purpose (user, policy
or timeout) and ``switched_over`` whether the guest already ran on the
target when it failed (post-copy).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ganeti_lv.errors import HypervisorError

MIB = 1024 * 1024

# Capability names accepted in migration_caps (Ganeti uses ':' as separator)
CAP_AUTO_CONVERGE = "auto-converge"
CAP_POSTCOPY = "postcopy-ram"
CAP_XBZRLE = "xbzrle"
CAP_COMPRESSION = "compression"
CAP_PARALLEL = "parallel"
KNOWN_CAPS = (CAP_AUTO_CONVERGE, CAP_POSTCOPY, CAP_XBZRLE, CAP_COMPRESSION, CAP_PARALLEL)


def parse_caps(text: str) -> dict[str, int]:
    """Parse ``"auto-converge:postcopy-ram:parallel=4"`` (also ',' separated).

    Returns capability -> value (1 for plain flags, the connection count for
    ``parallel``); raises ValueError for unknown names.
    """
    caps: dict[str, int] = {}
    for item in text.replace(",", ":").split(":"):
        item = item.strip()
        if not item:
            continue
        name, _, value = item.partition("=")
        if name == "postcopy":
            name = CAP_POSTCOPY
        if name not in KNOWN_CAPS:
            raise ValueError(f"unknown migration capability {name!r}")
        caps[name] = int(value) if value else (2 if name == CAP_PARALLEL else 1)
    return caps


@dataclass
class MigrationParams:
    """How to migrate one instance (bandwidth MiB/s, 0 = unlimited; times in s).

    ``downtime_ms`` is the downtime limit the migration may reach; it starts
    at ``downtime_initial_ms`` and is raised in ``downtime_steps`` steps, one
    per ``downtime_passes`` passes without completion (the convergence
    policy's ramp). ``memory_mib`` and ``disk_mib`` (the disks a
    ``copy_storage`` migration copies; 0 on shared storage) scale its
    completion timeout.
    """

    live: bool = True
    bandwidth: int = 0
    downtime_ms: int = 300
    downtime_initial_ms: int = 5
    downtime_steps: int = 5
    downtime_passes: int = 2
    caps: dict[str, int] = field(default_factory=dict)
    allow_postcopy: bool = False
    escalate: bool = True
    copy_storage: bool = False
    unsafe: bool = False
    progress_timeout: float | None = None
    completion_timeout: float | None = None
    abort_timeout: float = 60.0
    poll_interval: float = 0.2
    report_interval: float = 10.0
    memory_mib: int = 0
    disk_mib: int = 0
    encryption: bool = False


@dataclass
class MigrationProgress:
    """One progress report of a running migration (bytes, seconds)."""

    elapsed: float
    memory_total: int = 0
    memory_processed: int = 0
    memory_remaining: int = 0
    bandwidth: float = 0.0
    dirty_rate: float = 0.0
    iteration: int = 0
    disk_total: int = 0
    disk_processed: int = 0
    disk_remaining: int = 0
    downtime_ms: int = 0
    postcopy: bool = False
    throttle: int = 0
    # set on the report of a step of the convergence policy (a line of its own)
    policy_step: str = ""

    @property
    def percent(self) -> float:
        """Share of the memory already sent, 0-100."""
        if self.memory_total <= 0:
            return 0.0
        done = self.memory_total - self.memory_remaining
        return max(0.0, min(100.0, 100.0 * done / self.memory_total))

    @property
    def disk_percent(self) -> float:
        """Share of the disks already copied, 0-100 (0 without copy-storage)."""
        if self.disk_total <= 0:
            return 0.0
        return max(0.0, min(100.0, 100.0 * self.disk_processed / self.disk_total))

    def format(self) -> str:
        """The progress line written to the job log."""
        text = (
            f"migration {self.percent:5.1f}% of memory, "
            f"{self.bandwidth / MIB:.1f} MiB/s, "
            f"remaining {self.memory_remaining / MIB:.1f} MiB, "
            f"dirty rate {self.dirty_rate / MIB:.1f} MiB/s, "
            f"iteration {self.iteration}"
        )
        if self.disk_total:
            text += (
                f", disks {self.disk_percent:5.1f}% "
                f"({self.disk_processed / MIB:.0f}/{self.disk_total / MIB:.0f} MiB)"
            )
        if self.throttle:
            text += f", auto-converge throttle {self.throttle}%"
        if self.postcopy:
            text += ", post-copy"
        return text


@dataclass
class MigrationStats:
    """Figures of a completed migration.

    ``total_time`` and ``downtime_ms`` are libvirt's (the job's time_elapsed
    and downtime) when it reported them; ``wall_time`` is ganeti_lv's own
    clock around the libvirt call (None when not measured).
    """

    total_time: float
    downtime_ms: int | None = None
    memory_transferred: int = 0
    disk_transferred: int = 0
    iterations: int = 0
    postcopy: bool = False
    policy_steps: list[str] = field(default_factory=list)
    abort_requested: bool = False
    max_throttle: int = 0
    wall_time: float | None = None

    def format(self) -> str:
        """The summary line for the job log."""
        downtime = "unknown" if self.downtime_ms is None else f"{self.downtime_ms} ms"
        text = (
            f"migration completed: total time {self.total_time:.2f} s, downtime {downtime}, "
            f"{self.memory_transferred / MIB:.1f} MiB memory sent"
        )
        if self.wall_time is not None:
            text += f", migration call {self.wall_time:.2f} s"
        if self.disk_transferred:
            text += f", {self.disk_transferred / MIB:.1f} MiB disk"
        if self.max_throttle:
            text += f", auto-converge throttled the guest up to {self.max_throttle}%"
        if self.policy_steps:
            text += f", policy: {', '.join(self.policy_steps)}"
        return text


class MigrationFailed(HypervisorError):
    """A migration did not complete on the node.

    ``aborted``: stopped on purpose (user, policy, timeout);
    ``by_policy``: aborted by the convergence policy (the guest did not converge);
    ``switched_over``: the guest already ran on the target (post-copy).
    """

    def __init__(
        self,
        msg: str,
        node: str | None = None,
        aborted: bool = False,
        switched_over: bool = False,
        by_policy: bool = False,
    ) -> None:
        super().__init__(msg, node)
        self.aborted = aborted
        self.switched_over = switched_over
        self.by_policy = by_policy
