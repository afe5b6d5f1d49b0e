"""LockManager: shared/exclusive, ALL_SET, timeouts, no deadlock, real processes."""

from __future__ import annotations

import fcntl
import multiprocessing
import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.waiting import wait_until

from ganeti_lv import Client
from ganeti_lv.config import ConfigStore
from ganeti_lv.errors import LockTimeout
from ganeti_lv.hypervisor.fake import FakeNodeOps
from ganeti_lv.locking import (
    ALL_SET,
    BGL_NAME,
    LEVEL_CLUSTER,
    LEVEL_EXPORT,
    LEVEL_INSTANCE,
    LEVEL_NAMES,
    LEVEL_NODE,
    LockManager,
)
from ganeti_lv.mcpu import Processor
from ganeti_lv.opcodes import OpTestDelay

MP = multiprocessing.get_context("fork")
UNIVERSE = {LEVEL_INSTANCE: ["i1", "i2", "i3"], LEVEL_NODE: ["n1", "n2", "n3"]}


def names_fn(level: int) -> list[str] | None:
    return UNIVERSE.get(level)


@pytest.fixture
def locks_dir(tmp_path: Path) -> str:
    return str(tmp_path / "locks")


def manager(locks_dir: str) -> LockManager:
    return LockManager(locks_dir, names_fn=names_fn)


def test_shared_locks_coexist_exclusive_conflicts(locks_dir: str) -> None:
    a, b, c = manager(locks_dir), manager(locks_dir), manager(locks_dir)
    a.acquire(LEVEL_INSTANCE, ["i1"], shared=True)
    b.acquire(LEVEL_INSTANCE, ["i1"], shared=True, timeout=0.1)
    assert a.owned(LEVEL_INSTANCE) == b.owned(LEVEL_INSTANCE) == {"i1"}
    assert a.is_owned_shared(LEVEL_INSTANCE, "i1") is True
    with pytest.raises(LockTimeout):
        c.acquire(LEVEL_INSTANCE, ["i1"], shared=False, timeout=0.1)
    a.release(LEVEL_INSTANCE)
    b.release_all()
    assert c.acquire(LEVEL_INSTANCE, ["i1"], timeout=0.1) == {"i1"}
    with pytest.raises(LockTimeout):
        a.acquire(LEVEL_INSTANCE, ["i1"], shared=True, timeout=0.1)
    # Different names and different levels do not conflict.
    a.acquire(LEVEL_INSTANCE, ["i2"], timeout=0.1)
    a.acquire(LEVEL_NODE, ["i1"], timeout=0.1)


def test_timeout_message_names_the_lock_and_rolls_back(locks_dir: str) -> None:
    holder, waiter = manager(locks_dir), manager(locks_dir)
    holder.acquire(LEVEL_INSTANCE, ["i2"])
    with pytest.raises(LockTimeout) as err:
        waiter.acquire(LEVEL_INSTANCE, ["i1", "i2"], timeout=0.2)
    assert "instance lock 'i2'" in str(err.value)
    assert "within 0.2 s" in str(err.value)
    assert err.value.ecode == "temp_insufficient_resources"
    assert waiter.owned(LEVEL_INSTANCE) == set()
    # i1 (taken before the timeout) was given back.
    holder.acquire(LEVEL_INSTANCE, ["i1"], timeout=0.1)


def test_timeout_uses_injected_clock(locks_dir: str) -> None:
    now = [0.0]
    sleeps: list[float] = []

    def sleep(delay: float) -> None:
        sleeps.append(delay)
        now[0] += delay

    holder = manager(locks_dir)
    waiter = LockManager(locks_dir, clock=lambda: now[0], sleep=sleep)
    holder.acquire(LEVEL_NODE, ["n1"])
    with pytest.raises(LockTimeout):
        waiter.acquire(LEVEL_NODE, ["n1"], timeout=30.0)
    assert sum(sleeps) == pytest.approx(30.0)
    assert max(sleeps) <= 0.05  # backoff is capped, polling stays responsive


def test_all_set_exclusive_blocks_names_and_new_names(locks_dir: str) -> None:
    whole, single = manager(locks_dir), manager(locks_dir)
    assert whole.acquire(LEVEL_NODE, ALL_SET) == {"n1", "n2", "n3"}
    assert whole.owns_all(LEVEL_NODE)
    with pytest.raises(LockTimeout, match="whole node level"):
        single.acquire(LEVEL_NODE, ["n9-new"], timeout=0.1)
    with pytest.raises(LockTimeout):
        single.acquire(LEVEL_NODE, ["n2"], shared=True, timeout=0.1)
    whole.release(LEVEL_NODE)
    single.acquire(LEVEL_NODE, ["n2"], timeout=0.1)


def test_single_names_block_all_set(locks_dir: str) -> None:
    whole, single = manager(locks_dir), manager(locks_dir)
    single.acquire(LEVEL_INSTANCE, ["i3"], shared=True)
    with pytest.raises(LockTimeout, match="instance lock 'i3'"):
        whole.acquire(LEVEL_INSTANCE, ALL_SET, timeout=0.1)
    assert whole.owned(LEVEL_INSTANCE) == set()
    # A shared ALL_SET is compatible with shared names ...
    assert whole.acquire(LEVEL_INSTANCE, ALL_SET, shared=True, timeout=0.1) == {"i1", "i2", "i3"}
    # ... but excludes exclusive ones.
    other = manager(locks_dir)
    with pytest.raises(LockTimeout):
        other.acquire(LEVEL_INSTANCE, ["i1"], timeout=0.1)
    other.acquire(LEVEL_INSTANCE, ["i1"], shared=True, timeout=0.1)


def test_a_shared_all_set_waiting_for_a_name_holds_up_no_other_name(locks_dir: str) -> None:
    """A cluster verify waiting for one busy instance: jobs on other instances go on."""
    busy, verify, other = manager(locks_dir), manager(locks_dir), manager(locks_dir)
    busy.acquire(LEVEL_INSTANCE, ["i2"])
    got: list[set[str]] = []
    waiter = threading.Thread(
        target=lambda: got.append(verify.acquire(LEVEL_INSTANCE, ALL_SET, shared=True, timeout=10))
    )
    waiter.start()
    try:
        # verify holds i1 (names are taken in order), so it waits for i2 now
        i1 = os.path.join(locks_dir, LEVEL_NAMES[LEVEL_INSTANCE], "i1.lock")
        assert wait_until(lambda: _held(i1), 10)
        assert waiter.is_alive()
        assert other.acquire(LEVEL_INSTANCE, ["i3"], timeout=1) == {"i3"}
        other.release_all()
    finally:
        busy.release_all()
        waiter.join(10)
    assert got == [{"i1", "i2", "i3"}]


def test_all_set_covers_names_locked_by_a_name_never_listed(locks_dir: str) -> None:
    # A name outside names_fn that somebody holds (e.g. an instance being created)
    single = manager(locks_dir)
    single.acquire(LEVEL_INSTANCE, ["being-created"])
    with pytest.raises(LockTimeout, match="being-created"):
        manager(locks_dir).acquire(LEVEL_INSTANCE, ALL_SET, timeout=0.1)


def test_an_exclusive_taker_of_the_bgl_is_not_starved_by_later_shared_ones(
    locks_dir: str,
) -> None:
    """flock grants a shared lock while an exclusive one waits: node add, node remove or
    cluster modify would wait for as long as jobs overlap. A shared taker that comes
    after an exclusive one waits behind it."""
    first, writer, later = manager(locks_dir), manager(locks_dir), manager(locks_dir)
    first.acquire(LEVEL_CLUSTER, [BGL_NAME], shared=True)
    order: list[str] = []

    def take(who: str, mgr: LockManager, shared: bool) -> None:
        mgr.acquire(LEVEL_CLUSTER, [BGL_NAME], shared=shared, timeout=30)
        order.append(who)
        if not shared:
            time.sleep(0.2)  # the later shared one must still be waiting meanwhile
            order.append("writer done")
        mgr.release_all()

    waiting = threading.Thread(target=take, args=("writer", writer, False))
    waiting.start()
    gate = os.path.join(locks_dir, "cluster", ".gate")
    assert wait_until(lambda: _held(gate, exclusively=True), 10), "the writer never got in line"
    behind = threading.Thread(target=take, args=("later", later, True))
    behind.start()
    behind.join(0.3)
    assert order == []  # the later shared taker waits too, though the lock is shared now
    first.release_all()
    waiting.join(30)
    behind.join(30)
    assert order == ["writer", "writer done", "later"]


def _held(path: str, exclusively: bool = False) -> bool:
    """Whether someone holds ``path`` (``exclusively``: so that a shared take of it
    fails at once; else in any way: an exclusive take fails)."""
    if not os.path.exists(path):
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if exclusively else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def test_release_down_from_all_set(locks_dir: str) -> None:
    whole, other = manager(locks_dir), manager(locks_dir)
    single = manager(locks_dir)
    single.acquire(LEVEL_NODE, ["stale-name"])
    single.release_all()
    whole.acquire(LEVEL_NODE, ALL_SET)
    assert whole.owned(LEVEL_NODE) == {"n1", "n2", "n3"}  # the stale name is not reported
    whole.release(LEVEL_NODE, ["n2", "n3"])  # keep n1
    assert whole.owned(LEVEL_NODE) == {"n1"}
    assert not whole.owns_all(LEVEL_NODE)
    other.acquire(LEVEL_NODE, ["n2", "n3", "stale-name", "brand-new"], timeout=0.1)
    with pytest.raises(LockTimeout):
        other.acquire(LEVEL_NODE, ["n1"], timeout=0.1)


def test_threads_of_one_manager_exclude_each_other(locks_dir: str) -> None:
    lm = manager(locks_dir)
    lm.acquire(LEVEL_INSTANCE, ["i1"])
    errors: list[BaseException] = []

    def other_thread() -> None:
        try:
            lm.acquire(LEVEL_INSTANCE, ["i1"], timeout=0.1)
        except LockTimeout as err:
            errors.append(err)

    thread = threading.Thread(target=other_thread)
    thread.start()
    thread.join(10)
    assert len(errors) == 1
    assert lm.owned(LEVEL_INSTANCE) == {"i1"}


# ------------------------------------------------------------ property based

LEVEL_REQUEST = st.one_of(
    st.just(ALL_SET),
    st.lists(st.sampled_from(["i1", "i2", "i3"]), min_size=1, max_size=3),
)
REQUEST = st.fixed_dictionaries(
    {
        LEVEL_INSTANCE: st.tuples(LEVEL_REQUEST, st.booleans()),
        LEVEL_NODE: st.tuples(
            st.one_of(
                st.just(ALL_SET),
                st.lists(st.sampled_from(["n1", "n2", "n3"]), min_size=1, max_size=3),
            ),
            st.booleans(),
        ),
    }
)


class Monitor:
    """Checks that no two holders ever break shared/exclusive semantics."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.shared: Counter[tuple[int, str]] = Counter()
        self.exclusive: set[tuple[int, str]] = set()
        self.violations: list[str] = []

    def enter(self, level: int, names: set[str], shared: bool) -> None:
        with self.lock:
            for name in names:
                key = (level, name)
                if key in self.exclusive or (not shared and self.shared[key]):
                    self.violations.append(f"{key} taken while held")
                if shared:
                    self.shared[key] += 1
                else:
                    self.exclusive.add(key)

    def leave(self, level: int, names: set[str], shared: bool) -> None:
        with self.lock:
            for name in names:
                if shared:
                    self.shared[(level, name)] -= 1
                else:
                    self.exclusive.discard((level, name))


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(requests=st.lists(REQUEST, min_size=2, max_size=5))
def test_no_deadlock_and_exclusion_under_random_orders(
    tmp_path: Path, requests: list[dict[int, Any]]
) -> None:
    locks_dir = str(tmp_path / f"locks-{os.urandom(4).hex()}")
    monitor = Monitor()
    failures: list[BaseException] = []
    barrier = threading.Barrier(len(requests))

    def worker(request: dict[int, Any]) -> None:
        lm = manager(locks_dir)
        barrier.wait()
        held: list[tuple[int, set[str], bool]] = []
        try:
            for _ in range(3):
                for level in (LEVEL_INSTANCE, LEVEL_NODE):  # the processor's order
                    names, shared = request[level]
                    wanted = names if names is ALL_SET else sorted(set(names))
                    owned = lm.acquire(level, wanted, shared=shared, timeout=20.0)
                    monitor.enter(level, owned, shared)
                    held.append((level, owned, shared))
                for level, owned, shared in reversed(held):
                    monitor.leave(level, owned, shared)
                held.clear()
                lm.release_all()
        except BaseException as err:  # noqa: BLE001 - reported by the main thread
            failures.append(err)
            lm.release_all()

    threads = [threading.Thread(target=worker, args=(r,), daemon=True) for r in requests]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(t.is_alive() for t in threads), "deadlock: workers still waiting"
    assert failures == []
    assert monitor.violations == []


# ------------------------------------------------------------ real processes


def _hold_instance(
    data_dir: str, instance: str, duration: float, holding: Any, release: Any = None
) -> None:
    def feedback(msg: str) -> None:
        if msg.startswith("Sleeping"):
            holding.set()

    client = Client(data_dir=data_dir, node_ops=FakeNodeOps(), lock_timeout=30.0)
    if release is not None:  # the delay ends when the test says so
        client.ctx.sleep = lambda _seconds: release.wait(30)
    client.submit(OpTestDelay(duration=duration, instance_names=[instance]), feedback)


def _start_holder(
    data_dir: str, instance: str, duration: float, release: Any = None
) -> multiprocessing.Process:
    holding = MP.Event()
    proc = MP.Process(target=_hold_instance, args=(data_dir, instance, duration, holding, release))
    proc.start()
    assert holding.wait(30), "holder process did not get its lock"
    return proc  # type: ignore[return-value]


def test_two_processes_contend_for_one_instance(config: ConfigStore) -> None:
    data_dir = config.data_dir
    holder = _start_holder(data_dir, "inst1.example.com", 60.0)
    try:
        client = Client(data_dir=data_dir, node_ops=FakeNodeOps(), lock_timeout=0.5)
        # Same instance: times out with a clear message naming the lock.
        with pytest.raises(LockTimeout) as err:
            client.submit(OpTestDelay(instance_names=["inst1"]))
        assert "instance lock 'inst1.example.com'" in str(err.value)
        # Another instance: runs while the holder still holds inst1.
        assert client.submit(OpTestDelay(instance_names=["inst2"])) is True
        assert holder.is_alive()
    finally:
        os.kill(holder.pid, signal.SIGKILL)  # type: ignore[arg-type]
        holder.join(10)
    # The lock died with the holder; its job shows as lost.
    assert client.submit(OpTestDelay(instance_names=["inst1"])) is True
    statuses = {job.status for job in client.jobs() if job.pid == holder.pid}
    assert statuses == {"lost"}


def _wait_behind_holder(data_dir: str, hold: float, waits: int = 0) -> tuple[Any, Any, list[str]]:
    """A job on inst1 behind another process's job holding it ``hold`` s: (first, second, lines).

    With ``waits``, the holder holds until the second job has said that many
    times that it waits (however slow the machine).
    """
    release = MP.Event() if waits else None
    holder = _start_holder(data_dir, "inst1.example.com", hold, release)
    client = Client(data_dir=data_dir, node_ops=FakeNodeOps(), lock_timeout=30.0)
    lines: list[str] = []

    def feedback(line: str) -> None:
        lines.append(line)
        if release is not None and sum(w.startswith(" - INFO: Waiting") for w in lines) >= waits:
            release.set()

    try:
        client.submit(OpTestDelay(duration=0.01, instance_names=["inst1"]), feedback)
    finally:
        if release is not None:
            release.set()
        holder.join(30)
    assert holder.exitcode == 0
    first, second = (j for j in client.jobs() if j.summary == "TEST_DELAY")
    assert first.pid == holder.pid
    return first, second, lines


def test_second_process_waits_for_the_first(config: ConfigStore) -> None:
    first, second, lines = _wait_behind_holder(config.data_dir, 0.5)
    assert first.status == "success"
    # The second job got the lock (and logged) only after the first's 0.5 s sleep.
    assert first.log[0][2] == "Sleeping for 0.5 s"
    assert second.log[0][0] >= first.log[0][0] + 0.5
    assert lines == ["Sleeping for 0.01 s"]


def test_new_name_while_holding_the_whole_level(locks_dir: str) -> None:
    whole = manager(locks_dir)
    whole.acquire(LEVEL_NODE, ALL_SET)
    assert whole.acquire(LEVEL_NODE, ["n4-new"], timeout=0.1) == {"n1", "n2", "n3", "n4-new"}
    with pytest.raises(LockTimeout):
        manager(locks_dir).acquire(LEVEL_NODE, ["n4-new"], timeout=0.1)
    whole.release_all()
    manager(locks_dir).acquire(LEVEL_NODE, ["n4-new"], timeout=0.1)


def test_lock_dir_removed_after_first_use_is_created_again(locks_dir: str) -> None:
    import shutil

    mgr = manager(locks_dir)
    mgr.acquire(LEVEL_INSTANCE, ["i1"], timeout=0.1)
    mgr.release_all()
    shutil.rmtree(locks_dir)
    assert mgr.acquire(LEVEL_INSTANCE, ["i1"], timeout=0.1) == {"i1"}
    with pytest.raises(LockTimeout, match="instance lock 'i1'"):
        manager(locks_dir).acquire(LEVEL_INSTANCE, ["i1"], timeout=0.1)
    mgr.release_all()
    assert manager(locks_dir).acquire(LEVEL_INSTANCE, ALL_SET, timeout=0.1) == {"i1", "i2", "i3"}


def test_an_interrupt_ends_a_wait_without_timeout(tmp_path) -> None:
    """A job's cancel request stops its wait for a busy lock (nothing taken)."""
    import threading

    from ganeti_lv.cancel import Cancellation
    from ganeti_lv.errors import LockError
    from ganeti_lv.locking import LEVEL_INSTANCE, LockManager

    locks = LockManager(str(tmp_path))
    locks.acquire(LEVEL_INSTANCE, ["web1"])
    outcome: list[BaseException | set[str]] = []
    cancel = Cancellation()

    def waiter() -> None:
        locks.set_interrupt(cancel)
        try:
            outcome.append(locks.acquire(LEVEL_INSTANCE, ["web1"]))
        except LockError as err:
            outcome.append(err)

    thread = threading.Thread(target=waiter)
    thread.start()
    thread.join(0.3)
    assert thread.is_alive() and outcome == []  # still waiting
    cancel.request("interrupted by the user")
    thread.join(5)
    assert len(outcome) == 1 and isinstance(outcome[0], LockError)
    assert "interrupted by the user" in str(outcome[0])
    assert locks.owned(LEVEL_INSTANCE) == {"web1"}  # the holder keeps its lock


# ------------------------------------------------------ who holds what a job waits for


def test_a_waiter_is_told_what_it_waits_for_and_who_holds_it(locks_dir: str) -> None:
    now = [0.0]

    def sleep(delay: float) -> None:
        now[0] += delay

    holder = manager(locks_dir)
    waiter = LockManager(locks_dir, names_fn=names_fn, clock=lambda: now[0], sleep=sleep)
    holder.set_owner({"job": 7, "summary": "INSTANCE_MIGRATE(i1)"})
    holder.acquire(LEVEL_INSTANCE, ["i1"])
    reports: list[tuple[Any, ...]] = []
    waiter.set_wait_report(lambda *r: reports.append(r), interval=0.05)
    with pytest.raises(LockTimeout):
        waiter.acquire(LEVEL_INSTANCE, ["i1"], timeout=0.3)
    assert len(reports) >= 3, reports  # repeated while the wait lasts
    level, name, owner, waited = reports[0]
    assert (level, name, owner) == ("instance", "i1", {"job": 7, "summary": "INSTANCE_MIGRATE(i1)"})
    assert 0.05 <= waited < 0.1 and reports[-1][3] > 0.2
    holder.release(LEVEL_INSTANCE)
    reports.clear()
    waiter.acquire(LEVEL_INSTANCE, ["i1"], timeout=0.3)
    assert reports == []  # free: no wait, nothing said
    assert Path(locks_dir, "instance", "i1.lock").read_bytes().strip() == b""  # no owner set


def test_a_waiter_for_a_name_is_told_who_holds_the_whole_level(locks_dir: str) -> None:
    whole, waiter = manager(locks_dir), manager(locks_dir)
    whole.set_owner({"job": 3, "summary": "NODE_EVACUATE(n1)"})
    whole.acquire(LEVEL_NODE, ALL_SET)
    reports: list[tuple[Any, ...]] = []
    waiter.set_wait_report(lambda *r: reports.append(r), interval=0.05)
    with pytest.raises(LockTimeout):
        waiter.acquire(LEVEL_NODE, ["n2"], timeout=0.2)
    assert reports and reports[0][:3] == ("node", None, {"job": 3, "summary": "NODE_EVACUATE(n1)"})


def test_a_job_waiting_for_a_lock_says_so_in_its_log(
    config: ConfigStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ganeti_lv import mcpu

    monkeypatch.setattr(mcpu, "LOCK_PATIENCE", 0.3)
    first, second, lines = _wait_behind_holder(config.data_dir, 1.5, waits=3)
    said = f" - INFO: Waiting 0 s for the instance lock 'inst1.example.com', held by job {first.id}"
    waits = [line for line in lines if line.startswith(" - INFO: Waiting")]
    assert waits and waits[0] == f"{said} (TEST_DELAY)", lines
    assert len(waits) >= 3  # repeated every LOCK_PATIENCE seconds
    assert [msg for _, _, msg in second.log][: len(waits)] == waits  # in the job log too


def test_the_lock_timeout_counts_all_levels_of_an_operation_together(ctx: Any) -> None:
    """--lock-timeout 30: 20 s for the instance lock leave 10 s for the node lock, not 30."""
    now = [0.0]
    holder = LockManager(ctx.locks.locks_dir)
    holder.acquire(LEVEL_INSTANCE, ["inst1.example.com"])
    holder.acquire(LEVEL_NODE, ["node1.example.com"])

    def sleep(delay: float) -> None:
        now[0] += delay
        if now[0] >= 20.0 and holder.owned(LEVEL_INSTANCE):
            holder.release(LEVEL_INSTANCE)

    ctx.locks = LockManager(ctx.locks.locks_dir, clock=lambda: now[0], sleep=sleep)
    ctx.lock_timeout = 30.0
    op = OpTestDelay(instance_names=["inst1"], node_names=["node1"])
    try:
        with pytest.raises(LockTimeout, match="node lock 'node1.example.com' within 30 s"):
            Processor(ctx).execute(op)
    finally:
        holder.release_all()
    assert now[0] == pytest.approx(30.0, abs=0.1)
    assert ctx.locks.owned(LEVEL_INSTANCE) == set()  # nothing kept after the timeout


def _lock_files(locks_dir: str, level: str) -> set[str]:
    path = os.path.join(locks_dir, level)
    return {f.removesuffix(".lock") for f in os.listdir(path) if f.endswith(".lock")}


def test_the_file_of_a_name_gone_is_deleted_by_its_exclusive_holder(locks_dir: str) -> None:
    """Removed instances leave no lock files behind; listed names and shared holds keep theirs."""
    mgr = manager(locks_dir)
    mgr.acquire(LEVEL_INSTANCE, ["i1", "removed"])
    mgr.release_all()
    assert _lock_files(locks_dir, "instance") == {"i1"}
    mgr.acquire(LEVEL_INSTANCE, ["read-only"], shared=True)
    mgr.release_all()
    assert _lock_files(locks_dir, "instance") == {"i1", "read-only"}
    # a level whose names are not listed (exports) keeps every file
    mgr.acquire(LEVEL_EXPORT, ["web1"])
    mgr.release_all()
    assert _lock_files(locks_dir, "export") == {"web1"}
    # an exclusive ALL_SET takes the stale file too, and deletes it as it lets go
    mgr.acquire(LEVEL_INSTANCE, ALL_SET)
    assert mgr.owned(LEVEL_INSTANCE) == {"i1", "i2", "i3"}
    mgr.release_all()
    assert _lock_files(locks_dir, "instance") == {"i1", "i2", "i3"}


def test_a_waiter_on_a_deleted_file_takes_the_names_new_file(locks_dir: str) -> None:
    """Who waited on the file of a name whose holder deleted it holds the name's new
    file: never the name together with someone else."""
    holder, waiter, third = manager(locks_dir), manager(locks_dir), manager(locks_dir)
    holder.acquire(LEVEL_INSTANCE, ["gone"])
    waiting, got, done = threading.Event(), threading.Event(), threading.Event()

    def wait_for_it() -> None:
        # told while it waits for the lock of the file it opened
        waiter.set_wait_report(lambda *_: waiting.set(), interval=0.01)
        waiter.acquire(LEVEL_INSTANCE, ["gone"], timeout=10)
        got.set()
        done.wait(10)
        waiter.release_all()

    thread = threading.Thread(target=wait_for_it)
    thread.start()
    try:
        assert waiting.wait(10)
        holder.release_all()  # "gone" is not listed: its file is deleted
        assert got.wait(10)
        assert _lock_files(locks_dir, "instance") == {"gone"}  # the waiter's new file
        with pytest.raises(LockTimeout, match="gone"):
            third.acquire(LEVEL_INSTANCE, ["gone"], timeout=0.2)
    finally:
        done.set()
        thread.join(10)
