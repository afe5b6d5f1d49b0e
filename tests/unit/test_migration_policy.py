"""Tables for the pure migration convergence policy."""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

import pytest

from ganeti_lv.hypervisor import migration_policy as mp
from ganeti_lv.hypervisor.migration_policy import ActionKind, PolicyConfig, Sample


@pytest.mark.parametrize(
    ("memory", "expected"),
    [
        (128, mp.DEFAULT_COMPLETION_MIN),
        (1024, 300.0),
        (4096, 1200.0),
    ],
)
def test_completion_timeout_scales_with_memory(memory: int, expected: float) -> None:
    assert mp.completion_timeout(memory) == expected


def test_completion_timeout_counts_the_disks_a_migration_copies() -> None:
    # 1 GiB of memory and 10 GiB of disks copied (non-shared storage): 11 GiB to send
    copying = PolicyConfig(memory_mib=1024, disk_mib=10 * 1024)
    assert mp.completion_deadline(copying, mp.initial_state()) == 11 * 300.0
    disk_copy = [
        Sample(elapsed=float(t), disk_remaining=(10240 - t) * mp.MIB) for t in range(0, 1000, 5)
    ]
    assert run(copying, disk_copy) == []  # 1000 s into a steady disk copy: going on
    shared = PolicyConfig(memory_mib=1024)
    assert run(shared, disk_copy)[-1] == (ActionKind.ABORT, None)
    # the memory, begun at 1000 s, has the 300 s a migration of 1 GiB alone has
    memory = [
        Sample(
            elapsed=1000.0 + t,
            memory_processed=(t + 1) * mp.MIB,
            memory_remaining=(1024 - t * 3) * mp.MIB // 10,
            iteration=1,
        )
        for t in range(0, 320, 5)
    ]
    state = mp.initial_state()
    for sample in disk_copy + memory:
        action, state = mp.decide(copying, state, sample)
        if action.kind is not ActionKind.CONTINUE:
            break
    assert (action.kind, sample.elapsed) == (ActionKind.ABORT, 1305.0)
    assert "not completed within 1300 s" in action.reason
    # the operator's completion timeout counts for the whole migration
    assert mp.completion_deadline(replace(copying, completion_timeout=50), state) == 50


@pytest.mark.parametrize(
    ("initial", "maximum", "steps", "expected"),
    [
        (300, 2000, 4, [300, 725, 1150, 1575, 2000]),
        (300, 300, 4, [300]),
        (500, 100, 3, [500]),
        (100, 400, 3, [100, 200, 300, 400]),
        (300, 2000, 0, [300]),
    ],
)
def test_downtime_steps(initial: int, maximum: int, steps: int, expected: list[int]) -> None:
    assert mp.downtime_steps(initial, maximum, steps) == expected


def no_ramp(**kwargs: Any) -> PolicyConfig:
    """A 128 MiB guest's policy without the downtime ramp (the limit from the start)."""
    return PolicyConfig(memory_mib=128, ramp_steps=0, **kwargs)


def run(config: PolicyConfig, samples: list[Sample]) -> list[tuple[ActionKind, int | None]]:
    """Feed samples through the policy; return the non-CONTINUE actions."""
    state = mp.initial_state()
    out = []
    for sample in samples:
        action, state = mp.decide(config, state, sample)
        if action.kind is not ActionKind.CONTINUE:
            out.append((action.kind, action.downtime_ms))
            if action.kind is ActionKind.ABORT:
                break
    return out


def stuck(seconds: int, remaining: int = 50 * mp.MIB) -> list[Sample]:
    """One sample per second with no progress at all."""
    return [Sample(elapsed=float(t), memory_remaining=remaining) for t in range(seconds)]


def test_steady_progress_never_escalates() -> None:
    config = no_ramp(progress_timeout=2)
    samples = [Sample(elapsed=float(t), memory_remaining=100 - t) for t in range(50)]
    assert run(config, samples) == []


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        # escalation off, no post-copy: abort at the first stagnation
        (
            no_ramp(progress_timeout=2, escalate=False),
            [(ActionKind.ABORT, None)],
        ),
        # escalation off, post-copy allowed: switch
        (
            no_ramp(
                progress_timeout=2,
                escalate=False,
                allow_postcopy=True,
            ),
            [(ActionKind.START_POSTCOPY, None)],
        ),
        # downtime steps, then abort
        (
            no_ramp(
                progress_timeout=2,
                max_downtime_ms=900,
                downtime_steps=2,
            ),
            [
                (ActionKind.SET_DOWNTIME, 600),
                (ActionKind.SET_DOWNTIME, 900),
                (ActionKind.ABORT, None),
            ],
        ),
        # downtime steps, then auto-converge, then post-copy
        (
            no_ramp(
                progress_timeout=2,
                max_downtime_ms=900,
                downtime_steps=2,
                auto_converge=True,
                allow_postcopy=True,
            ),
            [
                (ActionKind.SET_DOWNTIME, 600),
                (ActionKind.SET_DOWNTIME, 900),
                (ActionKind.AUTO_CONVERGE, None),
                (ActionKind.START_POSTCOPY, None),
            ],
        ),
        # downtime steps, then auto-converge, then abort
        (
            no_ramp(
                progress_timeout=2,
                max_downtime_ms=600,
                downtime_steps=1,
                auto_converge=True,
            ),
            [
                (ActionKind.SET_DOWNTIME, 600),
                (ActionKind.AUTO_CONVERGE, None),
                (ActionKind.ABORT, None),
            ],
        ),
    ],
)
def test_escalation_order(
    config: PolicyConfig, expected: list[tuple[ActionKind, int | None]]
) -> None:
    assert run(config, stuck(40)) == expected


def test_each_step_gets_a_full_progress_period() -> None:
    config = PolicyConfig(
        memory_mib=128, ramp_steps=0, progress_timeout=3, max_downtime_ms=600, downtime_steps=1
    )
    state = mp.initial_state()
    times = []
    for sample in stuck(20):
        action, state = mp.decide(config, state, sample)
        if action.kind is not ActionKind.CONTINUE:
            times.append(sample.elapsed)
        if action.kind is ActionKind.ABORT:
            break
    # stagnation is "more than 3 s without progress": at 4 s, then 4 s after the step
    assert times == [4.0, 8.0]


def test_progress_resets_the_stagnation_clock() -> None:
    config = no_ramp(progress_timeout=3, escalate=False)
    # remaining drops every 3 s: never more than 3 s without progress
    samples = [Sample(elapsed=float(t), memory_remaining=1000 - (t // 3)) for t in range(30)]
    assert run(config, samples) == []


def test_oscillation_without_new_minimum_is_no_progress() -> None:
    config = no_ramp(progress_timeout=3, escalate=False)
    samples = [Sample(elapsed=float(t), memory_remaining=500 if t % 2 else 600) for t in range(10)]
    assert run(config, samples) == [(ActionKind.ABORT, None)]


@pytest.mark.parametrize(
    ("allow_postcopy", "expected"),
    [(False, ActionKind.ABORT), (True, ActionKind.START_POSTCOPY)],
)
def test_completion_timeout(allow_postcopy: bool, expected: ActionKind) -> None:
    config = PolicyConfig(
        memory_mib=128, progress_timeout=100, completion_timeout=5, allow_postcopy=allow_postcopy
    )
    # steady progress, but too slow overall
    samples = [Sample(elapsed=float(t), memory_remaining=1000 - t) for t in range(10)]
    assert run(config, samples)[0] == (expected, None)


def test_postcopy_is_never_aborted() -> None:
    config = no_ramp(progress_timeout=1, completion_timeout=2)
    samples = [Sample(elapsed=float(t), memory_remaining=10, postcopy=True) for t in range(10)]
    assert run(config, samples) == []


def test_after_postcopy_switch_the_policy_only_continues() -> None:
    config = PolicyConfig(
        memory_mib=128, ramp_steps=0, progress_timeout=1, escalate=False, allow_postcopy=True
    )
    state = mp.initial_state()
    kinds = []
    for sample in stuck(20):
        action, state = mp.decide(config, state, sample)
        kinds.append(action.kind)
    assert kinds.count(ActionKind.START_POSTCOPY) == 1
    assert ActionKind.ABORT not in kinds
    assert state.stage == mp.STAGE_POSTCOPY


def test_history_records_steps() -> None:
    config = PolicyConfig(
        memory_mib=128, ramp_steps=0, progress_timeout=1, max_downtime_ms=600, downtime_steps=1
    )
    state = mp.initial_state()
    for sample in stuck(10):
        action, state = mp.decide(config, state, sample)
        if action.kind is ActionKind.ABORT:
            break
    assert state.history == ("downtime 600", "abort")


def test_throttle_is_reported_and_auto_converge_params_are_set() -> None:
    import libvirt

    from ganeti_lv.hypervisor.libvirt.guest import JobInfo
    from ganeti_lv.hypervisor.libvirt.migration import (
        AUTO_CONVERGE_INCREMENT,
        AUTO_CONVERGE_INITIAL,
        migration_uri_params,
        progress_from_job,
    )
    from ganeti_lv.hypervisor.migration_types import MigrationParams, MigrationStats
    from ganeti_lv.objects import Node

    job = JobInfo.from_stats(
        {"memory_total": 100, "memory_remaining": 50, "auto_converge_throttle": 60}
    )
    report = progress_from_job(job, 1.0, 300)
    assert report.throttle == 60 and "auto-converge throttle 60%" in report.format()
    stats = MigrationStats(total_time=2.0, downtime_ms=10, max_throttle=80)
    assert "auto-converge throttled the guest up to 80%" in stats.format()
    node = Node(name="n2", address="10.250.0.2")
    params = migration_uri_params(node, MigrationParams(caps={"auto-converge": 1}))
    assert params[libvirt.VIR_MIGRATE_PARAM_AUTO_CONVERGE_INITIAL] == AUTO_CONVERGE_INITIAL
    assert params[libvirt.VIR_MIGRATE_PARAM_AUTO_CONVERGE_INCREMENT] == AUTO_CONVERGE_INCREMENT
    plain = migration_uri_params(node, MigrationParams())
    assert libvirt.VIR_MIGRATE_PARAM_AUTO_CONVERGE_INITIAL not in plain


# ------------------------------------------------------------ downtime ramp


@pytest.mark.parametrize(
    ("config", "ramp", "start"),
    [
        (PolicyConfig(memory_mib=128), [5, 11, 26, 58, 132, 300], 5),
        (PolicyConfig(memory_mib=128, ramp_steps=0), [300], 300),
        (PolicyConfig(memory_mib=128, ramp_start_ms=300), [300], 300),
        (PolicyConfig(memory_mib=128, ramp_start_ms=30, limit_ms=20), [20], 20),
        (
            PolicyConfig(memory_mib=128, ramp_start_ms=10, limit_ms=40, ramp_steps=2),
            [10, 20, 40],
            10,
        ),
        # rounding never repeats a step
        (PolicyConfig(memory_mib=128, ramp_start_ms=1, limit_ms=3, ramp_steps=5), [1, 2, 3], 1),
    ],
)
def test_ramp_and_start(config: PolicyConfig, ramp: list[int], start: int) -> None:
    assert mp.ramp(config) == ramp
    assert mp.start_downtime_ms(config) == start
    # the stagnation steps continue from the ramp's top up to the maximum
    assert mp.schedule(config) == ramp + mp.downtime_steps(ramp[-1], 2000, 4)[1:]


def passes(count: int, per_pass: int = 3) -> list[Sample]:
    """A guest that keeps iterating and making progress: ``per_pass`` samples per pass."""
    return [
        Sample(elapsed=i * 0.1, memory_remaining=10_000 - i, iteration=1 + i // per_pass)
        for i in range(count * per_pass)
    ]


def test_ramp_raises_one_step_every_two_passes_up_to_the_limit() -> None:
    config = PolicyConfig(memory_mib=128, progress_timeout=100)
    state = mp.initial_state()
    raised = []
    for sample in passes(20):
        action, state = mp.decide(config, state, sample)
        if action.kind is not ActionKind.CONTINUE:
            raised.append((sample.iteration, action.kind, action.downtime_ms))
    assert raised == [
        (3, ActionKind.SET_DOWNTIME, 11),
        (5, ActionKind.SET_DOWNTIME, 26),
        (7, ActionKind.SET_DOWNTIME, 58),
        (9, ActionKind.SET_DOWNTIME, 132),
        (11, ActionKind.SET_DOWNTIME, 300),
    ]
    assert state.history[0] == "downtime 11 at pass 3"


def test_guest_that_converges_in_two_passes_keeps_the_low_start() -> None:
    config = PolicyConfig(memory_mib=128, progress_timeout=100)
    assert run(config, passes(2)) == []


def test_passes_per_step_is_configurable() -> None:
    config = PolicyConfig(memory_mib=128, progress_timeout=100, ramp_passes=1, ramp_steps=2)
    state = mp.initial_state()
    raised = []
    for sample in passes(6):
        action, state = mp.decide(config, state, sample)
        if action.kind is ActionKind.SET_DOWNTIME:
            raised.append((sample.iteration, action.downtime_ms))
    assert raised == [(2, 39), (3, 300)]


def test_stagnation_on_the_ramp_goes_to_the_limit_first() -> None:
    config = PolicyConfig(memory_mib=128, progress_timeout=2, max_downtime_ms=900, downtime_steps=2)
    assert run(config, stuck(40)) == [
        (ActionKind.SET_DOWNTIME, 300),
        (ActionKind.SET_DOWNTIME, 600),
        (ActionKind.SET_DOWNTIME, 900),
        (ActionKind.ABORT, None),
    ]


def test_without_escalation_the_ramp_still_reaches_the_limit() -> None:
    config = PolicyConfig(memory_mib=128, progress_timeout=2, escalate=False)
    assert run(config, stuck(40)) == [(ActionKind.SET_DOWNTIME, 300), (ActionKind.ABORT, None)]


def test_a_sample_after_several_groups_of_passes_raises_as_many_steps() -> None:
    # polled at intervals, a small guest can go through several passes between
    # two samples: the ramp still takes one step per two passes
    config = PolicyConfig(memory_mib=128, progress_timeout=100)
    state = mp.initial_state()
    steps = []
    for iteration in (1, 6, 7, 8):
        sample = Sample(
            elapsed=iteration * 0.2, memory_remaining=1000 - iteration, iteration=iteration
        )
        action, state = mp.decide(config, state, sample)
        steps.append(action.downtime_ms)
    # passes 3 and 5 are due at pass 6 (5 more passes, two steps), pass 7 at 7
    assert steps == [None, 26, 58, None]
    assert state.history == ("downtime 26 at pass 6", "downtime 58 at pass 7")


def test_samples_from_before_the_transfer_are_no_progress_and_no_stagnation() -> None:
    # libvirt's first figures, while the target's qemu starts: nothing sent,
    # nothing left; then a slow but steady first pass
    config = PolicyConfig(memory_mib=1024, progress_timeout=2)
    waiting = [Sample(elapsed=t * 0.5) for t in range(6)]  # 2.5 s
    first_pass = [
        Sample(
            elapsed=3 + t,
            memory_processed=t * 8 * mp.MIB,
            memory_remaining=(900 - t * 8) * mp.MIB,
        )
        for t in range(10)
    ]
    assert run(config, waiting + first_pass) == []


def test_the_memory_after_the_disk_copy_is_progress_of_its_own() -> None:
    # non-shared storage: libvirt copies the disks first (the memory's figures
    # are 0), then the memory's first pass starts high above what the disks left
    config = no_ramp(progress_timeout=2)
    disk_copy = [
        Sample(elapsed=float(t), disk_remaining=(100 - t * 10) * mp.MIB) for t in range(11)
    ]
    memory_pass = [
        Sample(
            elapsed=11.0 + t,
            memory_processed=t * 50 * mp.MIB,
            memory_remaining=(1000 - t * 50) * mp.MIB,
            iteration=1,
        )
        for t in range(15)
    ]
    assert run(config, disk_copy + memory_pass) == []
    stagnated = [(ActionKind.SET_DOWNTIME, 725)]  # the first step above the limit
    # a disk copy that stops sending stagnates as memory does
    stalled = [Sample(elapsed=4.0 + t, disk_remaining=60 * mp.MIB) for t in range(4)]
    assert run(config, disk_copy[:4] + stalled) == stagnated
    # once the memory's transfer has begun, what the disk mirrors still have to
    # send is the guest writing to its disks: no progress, even when it shrinks
    guest_writes = [
        Sample(
            elapsed=11.0 + t,
            memory_processed=mp.MIB,
            memory_remaining=300 * mp.MIB,
            disk_remaining=mp.MIB >> t,
            iteration=1,
        )
        for t in range(4)
    ]
    assert run(config, disk_copy[:10] + guest_writes) == stagnated


def memory_passes(starts: list[int], seconds: int, low: int = 10, t0: float = 0.0) -> list[Sample]:
    """Passes over memory, one sample a second: each starts at ``starts[i]`` MiB
    and falls evenly to ``low`` MiB in ``seconds`` s."""
    out = []
    for index, start in enumerate(starts):
        for step in range(seconds):
            remaining = start - (start - low) * step // (seconds - 1)
            out.append(
                Sample(
                    elapsed=t0 + index * seconds + step,
                    memory_processed=mp.MIB,
                    memory_remaining=remaining * mp.MIB,
                    iteration=index + 1,
                )
            )
    return out


def first_action_at(config: PolicyConfig, samples: list[Sample]) -> float | None:
    state = mp.initial_state()
    for sample in samples:
        action, state = mp.decide(config, state, sample)
        if action.kind is not ActionKind.CONTINUE:
            return sample.elapsed
    return None


def test_long_passes_of_a_converging_guest_are_progress() -> None:
    # each pass starts lower than the one before and takes 6 s, longer than
    # the progress timeout, without going below the first pass's last sample
    config = no_ramp(progress_timeout=2)
    converging = memory_passes([1000, 400, 150, 60], seconds=6, low=12)
    converging[5] = with_changes(converging[5], memory_remaining=10 * mp.MIB)  # pass 1's lowest
    assert first_action_at(config, converging) is None


def test_passes_that_start_as_high_as_before_stagnate() -> None:
    # a guest dirtying as fast as the link sends: every pass after the first
    # starts at about 64 MiB (sampling noise within 10 %), 4 s each
    config = no_ramp(progress_timeout=2)
    stuck_passes = memory_passes([256, 64, 63, 64, 61, 64], seconds=4, low=5)
    # pass 2 is a better pass (to its end, at 7 s); pass 3 is not: stagnation 2 s later
    assert first_action_at(config, stuck_passes) == 10.0
    assert run(config, stuck_passes)[0] == (ActionKind.SET_DOWNTIME, 725)


def test_a_better_pass_is_better_than_every_pass_before_it() -> None:
    # passes alternating between 300 and 200 MiB: the 200 MiB ones are better
    # than the pass just before, never than the best before it
    config = no_ramp(progress_timeout=2)
    alternating = memory_passes([1000] + [300, 200] * 20, seconds=2, low=100)
    assert first_action_at(config, alternating) == 8.0


def test_passes_that_each_start_a_little_lower_are_progress_every_few_passes() -> None:
    """A guest converging slowly (each pass 5 % below the last, 4 s each): every third
    pass or so is 10 % below the last better one, so it never stagnates."""
    config = no_ramp(progress_timeout=10)
    starts = [int(1000 * 0.95**n) for n in range(28)]  # 1000, 950, 902, 857, ... 250 (112 s)
    slow = memory_passes(starts, seconds=4, low=starts[-1] // 2)
    assert first_action_at(config, slow) is None
    state = mp.initial_state()
    better = []
    for n, start in enumerate(starts[:4], 1):
        state, was_better = mp._track_passes(state, n, start * mp.MIB)
        better.append(was_better)
    assert better == [True, False, False, True]  # 857 < 0.9 x 1000


def test_the_first_sample_of_a_pass_comes_up_to_a_poll_late() -> None:
    # passes of 3 s sampled every 0.2 s from a random moment: the first sample
    # of a pass is up to 0.2 s into it
    rnd = random.Random(7)

    def sampled(starts: list[int], seconds: float, low: int) -> list[Sample]:
        out, t = [], rnd.uniform(0, 0.2)
        total = len(starts) * seconds
        while t < total:
            index = int(t // seconds)
            into = (t - index * seconds) / seconds
            remaining = starts[index] - (starts[index] - low) * into
            out.append(
                Sample(
                    elapsed=t,
                    memory_processed=mp.MIB,
                    memory_remaining=int(remaining * mp.MIB),
                    iteration=index + 1,
                )
            )
            t += 0.2
        return out

    config = no_ramp(progress_timeout=2)
    converging = sampled([1000, 500, 250, 125, 62], 3.0, low=40)
    assert first_action_at(config, converging) is None
    stuck_at_64 = sampled([256] + [64] * 10, 3.0, low=2)
    at = first_action_at(config, stuck_at_64)
    # pass 2 is better to its end (6 s); pass 3 is not: 2 s after pass 2's last sample
    assert at is not None and 7.8 < at <= 8.2


def with_changes(sample: Sample, **changes: Any) -> Sample:
    return Sample(**{**sample.__dict__, **changes})
