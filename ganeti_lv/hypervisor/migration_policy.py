"""Convergence policy for live migrations: plain functions of plain values.

A guest that dirties memory faster than the migration stream can send it
never converges. The monitor loop feeds the policy one :class:`Sample` per
poll and gets back an :class:`Action`:

1. *Downtime ramp*: a migration starts with a low allowed downtime
   (``ramp_start_ms``) and raises it in ``ramp_steps`` steps of equal
   ratio up to the configured limit (``limit_ms``, the
   ``migration_downtime`` parameter), one step each time ``ramp_passes``
   more passes over memory went by without the migration completing. A
   guest that converges is therefore paused only as long as its last pass
   needs, not as long as the limit allows: qemu stops the guest as soon as
   what is left fits the allowed downtime at the bandwidth it measured, so
   with an unlimited bandwidth even 30 ms lets it stop with many MiB still
   to send (measured under TCG: 10-50 ms pauses at a 30 ms limit).
2. *Progress*: the memory still to send falls towards nothing within each
   pass over memory and jumps back up to what the guest dirtied meanwhile
   when the next pass starts; qemu completes when that fits the allowed
   downtime. A converging guest's passes therefore start lower and lower,
   a guest that does not converge starts each pass about as high as the
   last. A sample makes progress when the memory still to send drops below
   the lowest value seen so far; when a new pass starts with clearly less
   to send than the last better pass did (less than ``PASS_PROGRESS`` of it;
   the first pass is one: such a pass is a *better pass*); and while a
   better pass runs, whenever the amount drops within it (a long pass of a
   converging guest rarely goes below the lowest sample of the short passes
   before it). While the disks
   are copied (non-shared storage: libvirt copies them before the memory),
   progress is the disk data still to send dropping; memory and disks are
   tracked apart, as the memory's first pass starts high above what the
   disk copy left; once the memory's transfer has begun, what the disk
   mirrors still have to send is the guest's own writes, no progress.
   Samples from before the transfer began do not count.
   Without progress for ``progress_timeout`` seconds the migration has
   stagnated.
3. On stagnation, if escalation is allowed, go to the top of the ramp at
   once, then raise the allowed downtime one step (``downtime_steps``, up
   to ``max_downtime_ms``), then rely on auto-converge (the guest's vCPUs
   are throttled by qemu; only when the migration was started with it), then
   switch to post-copy (only when allowed), else abort.
4. The whole migration must finish within a completion timeout that scales
   with the data to send (the guest's memory, plus its disks when they are
   copied; once the memory's transfer has begun, it has the time a
   migration of the memory alone has); past it: post-copy if allowed, else
   abort.
5. Once post-copy runs the guest lives on the target: the policy never
   aborts it.

Nothing here touches libvirt or the clock; the driver supplies the values.
The default never risks the instance: without post-copy every failure path
is an abort, which leaves the guest running on the source.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace

MIB = 1024 * 1024

DEFAULT_DOWNTIME_MS = 300
DEFAULT_RAMP_START_MS = 5
DEFAULT_RAMP_STEPS = 5
DEFAULT_RAMP_PASSES = 2
DEFAULT_MAX_DOWNTIME_MS = 2000
DEFAULT_DOWNTIME_STEPS = 4
DEFAULT_PROGRESS_TIMEOUT = 30.0
DEFAULT_COMPLETION_PER_GIB = 300.0
DEFAULT_COMPLETION_MIN = 120.0

# a new pass is progress when it starts with less than this share of what
# the last better pass had to send: above the noise of the moment a pass's
# first sample is taken (up to one poll into it) for passes of a few seconds
# and more; shorter ones may pass for better a few times, each lowering the bar
PASS_PROGRESS = 0.9

STAGE_PRECOPY = "pre-copy"
STAGE_AUTO_CONVERGE = "auto-converge"
STAGE_POSTCOPY = "post-copy"


class ActionKind(enum.Enum):
    """What the monitor loop must do after a sample."""

    CONTINUE = "continue"
    SET_DOWNTIME = "set-downtime"
    AUTO_CONVERGE = "auto-converge"
    START_POSTCOPY = "start-postcopy"
    ABORT = "abort"


@dataclass(frozen=True)
class Action:
    """One decision: ``downtime_ms`` for SET_DOWNTIME, ``reason`` for the log."""

    kind: ActionKind
    downtime_ms: int | None = None
    reason: str = ""


CONTINUE = Action(ActionKind.CONTINUE)


@dataclass(frozen=True)
class PolicyConfig:
    """The knobs of the policy (times in seconds, memory in MiB).

    ``limit_ms`` is the configured downtime limit: the top of the ramp that
    starts at ``ramp_start_ms`` (no ramp with ``ramp_steps`` 0 or a start at
    or above the limit) and where the stagnation steps up to
    ``max_downtime_ms`` begin. ``disk_mib``: the disks the migration copies
    (0 on shared storage).
    """

    memory_mib: int
    disk_mib: int = 0
    limit_ms: int = DEFAULT_DOWNTIME_MS
    ramp_start_ms: int = DEFAULT_RAMP_START_MS
    ramp_steps: int = DEFAULT_RAMP_STEPS
    ramp_passes: int = DEFAULT_RAMP_PASSES
    max_downtime_ms: int = DEFAULT_MAX_DOWNTIME_MS
    downtime_steps: int = DEFAULT_DOWNTIME_STEPS
    progress_timeout: float = DEFAULT_PROGRESS_TIMEOUT
    completion_timeout: float | None = None
    escalate: bool = True
    auto_converge: bool = False
    allow_postcopy: bool = False


@dataclass(frozen=True)
class Sample:
    """One poll of the running migration job (bytes, seconds)."""

    elapsed: float
    memory_total: int = 0
    memory_processed: int = 0
    memory_remaining: int = 0
    disk_remaining: int = 0
    dirty_rate: int = 0
    iteration: int = 0
    postcopy: bool = False


@dataclass(frozen=True)
class PolicyState:
    """What the policy remembers between samples."""

    stage: str = STAGE_PRECOPY
    downtime_index: int = 0
    step_pass: int = 1
    best_remaining: int | None = None
    best_disk_remaining: int | None = None
    # the pass over memory of the last sample, whether it is a better pass,
    # the least it has had to send, and what the last better pass started with
    # (its first sample)
    pass_seen: int = 0
    better_pass: bool = False
    pass_low: int = 0
    best_pass_start: int | None = None
    memory_began_at: float | None = None
    last_progress_at: float = 0.0
    history: tuple[str, ...] = field(default_factory=tuple)


def completion_timeout(
    memory_mib: int,
    per_gib: float = DEFAULT_COMPLETION_PER_GIB,
    minimum: float = DEFAULT_COMPLETION_MIN,
) -> float:
    """Seconds a migration of a guest with ``memory_mib`` may take in total."""
    return max(minimum, per_gib * memory_mib / 1024.0)


def downtime_steps(initial_ms: int, max_ms: int, steps: int) -> list[int]:
    """Allowed downtimes from ``initial_ms`` up to ``max_ms`` in ``steps`` equal steps.

    The first element is the initial downtime; with ``max_ms <= initial_ms``
    or no steps there is nothing to escalate to.
    """
    if steps <= 0 or max_ms <= initial_ms:
        return [initial_ms]
    delta = (max_ms - initial_ms) / steps
    return [initial_ms] + [int(round(initial_ms + delta * i)) for i in range(1, steps + 1)]


def ramp(config: PolicyConfig) -> list[int]:
    """The allowed downtimes of the ramp, from its start up to ``limit_ms``.

    Each step multiplies the allowed downtime by the same factor, so the low
    end, where most guests converge, is fine-grained: 5 ms to 300 ms in 5
    steps is 5, 11, 26, 58, 132, 300.
    """
    start, limit, steps = config.ramp_start_ms, config.limit_ms, config.ramp_steps
    if steps <= 0 or start >= limit:
        return [limit]
    factor = (limit / start) ** (1.0 / steps)
    values = [int(round(start * factor**i)) for i in range(steps)] + [limit]
    return list(dict.fromkeys(values))


def schedule(config: PolicyConfig) -> list[int]:
    """Every allowed downtime in order: the ramp, then the stagnation steps."""
    beyond = downtime_steps(config.limit_ms, config.max_downtime_ms, config.downtime_steps)
    return ramp(config) + beyond[1:]


def start_downtime_ms(config: PolicyConfig) -> int:
    """The allowed downtime a migration starts with."""
    return ramp(config)[0]


def completion_deadline(config: PolicyConfig, state: PolicyState) -> float:
    """Seconds into the migration by which it must have completed.

    The operator's completion timeout counts for the whole migration. The
    default scales with the data to send: the memory, plus the disks a
    copy-storage migration copies first; once the memory's transfer has
    begun, it ends within the time a migration of the memory alone has.
    """
    if config.completion_timeout is not None:
        return config.completion_timeout
    whole = completion_timeout(config.memory_mib + config.disk_mib)
    if state.memory_began_at is None or not config.disk_mib:
        return whole
    return min(whole, state.memory_began_at + completion_timeout(config.memory_mib))


def initial_state() -> PolicyState:
    """State before the first sample."""
    return PolicyState()


def _note(state: PolicyState, text: str) -> PolicyState:
    return replace(state, history=(*state.history, text))


def _lower(best: int | None, value: int) -> bool:
    return best is None or value < best


def _track_passes(state: PolicyState, iteration: int, remaining: int) -> tuple[PolicyState, bool]:
    """Follow the passes over memory: whether ``remaining`` is progress of a better pass."""
    if iteration > state.pass_seen:  # the first sample of a new pass
        best = state.best_pass_start
        better = best is None or remaining < PASS_PROGRESS * best
        new = replace(
            state,
            pass_seen=iteration,
            better_pass=better,
            pass_low=remaining,
            # the bar is the last better pass's start: passes that each start a little
            # lower (a guest converging slowly) make one better pass every few passes
            best_pass_start=remaining if better else best,
        )
        return new, better
    if remaining < state.pass_low:
        return replace(state, pass_low=remaining), state.better_pass
    return state, False


def _track_progress(state: PolicyState, sample: Sample) -> PolicyState:
    """Record progress: a new lowest amount of memory or disk data to send, or a better pass.

    Memory with nothing sent and nothing left has not begun (the target's
    qemu is still being started, or libvirt still copies the disks): it is
    no lowest amount, which nothing later could go below. Before anything
    is sent, the clock of stagnation does not run. A transfer that never
    begins is left to libvirt's own limits on starting the target and to
    the completion timeout.
    """
    memory_begun = sample.memory_processed > 0 or sample.memory_remaining > 0
    disk_begun = sample.disk_remaining > 0 or state.best_disk_remaining is not None
    if not memory_begun and not disk_begun:
        return replace(state, last_progress_at=sample.elapsed)
    progressed = False
    if memory_begun:
        if state.memory_began_at is None:
            state = replace(state, memory_began_at=sample.elapsed)
        state, progressed = _track_passes(state, sample.iteration, sample.memory_remaining)
        if _lower(state.best_remaining, sample.memory_remaining):
            state = replace(state, best_remaining=sample.memory_remaining)
            progressed = True
    elif _lower(state.best_disk_remaining, sample.disk_remaining):  # the disks are copied
        state = replace(state, best_disk_remaining=sample.disk_remaining)
        progressed = True
    return replace(state, last_progress_at=sample.elapsed) if progressed else state


def _postcopy_or_abort(
    config: PolicyConfig, state: PolicyState, sample: Sample, why: str
) -> tuple[Action, PolicyState]:
    if config.allow_postcopy:
        new = replace(state, stage=STAGE_POSTCOPY, last_progress_at=sample.elapsed)
        return Action(ActionKind.START_POSTCOPY, reason=why), _note(new, "post-copy")
    return Action(ActionKind.ABORT, reason=why), _note(state, "abort")


def _escalate(
    config: PolicyConfig, state: PolicyState, sample: Sample
) -> tuple[Action, PolicyState]:
    """The next step after stagnation."""
    stalled = f"no progress for {config.progress_timeout:g} s"
    steps = schedule(config)
    top = len(ramp(config)) - 1
    # the ramp's top is the configured limit, not an escalation: reached first
    below_top = state.stage == STAGE_PRECOPY and state.downtime_index < top
    if not config.escalate and not below_top:
        return _postcopy_or_abort(config, state, sample, f"{stalled} and escalation is off")
    if state.stage == STAGE_PRECOPY and state.downtime_index + 1 < len(steps):
        idx = max(state.downtime_index + 1, top)
        new = replace(
            state, downtime_index=idx, step_pass=sample.iteration, last_progress_at=sample.elapsed
        )
        act = Action(
            ActionKind.SET_DOWNTIME,
            downtime_ms=steps[idx],
            reason=f"{stalled}: allowing {steps[idx]} ms downtime",
        )
        return act, _note(new, f"downtime {steps[idx]}")
    if state.stage == STAGE_PRECOPY and config.auto_converge:
        new = replace(state, stage=STAGE_AUTO_CONVERGE, last_progress_at=sample.elapsed)
        act = Action(
            ActionKind.AUTO_CONVERGE, reason=f"{stalled}: relying on auto-converge throttling"
        )
        return act, _note(new, "auto-converge")
    return _postcopy_or_abort(config, state, sample, f"{stalled} after every escalation step")


def _ramp_step(
    config: PolicyConfig, state: PolicyState, sample: Sample
) -> tuple[Action, PolicyState] | None:
    """The ramp step due after ``sample``, else None.

    One step per ``ramp_passes`` passes since the last step: a sample that
    comes after several such groups of passes (the guest is polled at
    intervals, and a pass of a small guest can take less than one) raises
    the allowed downtime by as many steps at once.
    """
    top = len(ramp(config)) - 1
    if state.stage != STAGE_PRECOPY or state.downtime_index >= top:
        return None
    passes = sample.iteration - state.step_pass
    per_step = max(1, config.ramp_passes)
    due = passes // per_step
    if due < 1:
        return None
    idx = min(state.downtime_index + due, top)
    allowed = ramp(config)[idx]
    new = replace(state, downtime_index=idx, step_pass=state.step_pass + due * per_step)
    act = Action(
        ActionKind.SET_DOWNTIME,
        downtime_ms=allowed,
        reason=f"not completed after {passes} more passes: allowing {allowed} ms downtime",
    )
    return act, _note(new, f"downtime {allowed} at pass {sample.iteration}")


def decide(config: PolicyConfig, state: PolicyState, sample: Sample) -> tuple[Action, PolicyState]:
    """Decide what to do after ``sample``; return the action and the new state."""
    if state.stage == STAGE_POSTCOPY or sample.postcopy:
        return CONTINUE, replace(state, stage=STAGE_POSTCOPY)
    state = _track_progress(state, sample)
    limit = completion_deadline(config, state)
    if sample.elapsed > limit:
        return _postcopy_or_abort(config, state, sample, f"not completed within {limit:g} s")
    if sample.elapsed - state.last_progress_at > config.progress_timeout:
        return _escalate(config, state, sample)
    return _ramp_step(config, state, sample) or (CONTINUE, state)
