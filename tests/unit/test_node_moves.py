"""MoveScheduler: which failures count against a move's target node, and moves that cannot start."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from ganeti_lv.cancel import Cancellation
from ganeti_lv.cmdlib.node_moves import DONE, FAILED, Move, MoveScheduler, target_at_fault
from ganeti_lv.errors import (
    ECODE_ENVIRON,
    ECODE_NORES,
    ECODE_STATE,
    ECODE_TEMP_NORES,
    HooksAbort,
    HooksFailure,
    HypervisorError,
    LockTimeout,
    MigrationAborted,
    MigrationNotConverged,
    NodeUnreachable,
    OperationCanceled,
    OpExecError,
    OpPrereqError,
)
from ganeti_lv.node.transport import NodeResult
from ganeti_lv.opcodes import OpInstanceMigrate


def _from_node(node: str) -> OpPrereqError:
    """The error an LU raises for a node's failed answer (``NodeResult.Raise``)."""
    with pytest.raises(OpPrereqError) as err:
        NodeResult(node, fail_msg="no answer").Raise("Can't get data", prereq=True)
    assert err.value.node == node
    return err.value


def _of_node(err: OpPrereqError, node: str) -> OpPrereqError:
    """``err`` about ``node``'s own state, as the target checks raise it."""
    err.node = node
    return err


@pytest.mark.parametrize(
    ("err", "blamed"),
    [
        (OpExecError("Migration of instance a failed: qemu died on the target"), True),
        (HypervisorError("cannot start qemu", node="n2"), True),
        (NodeUnreachable("no answer", node="n2"), True),
        (NodeUnreachable("no answer", node="n1"), False),  # the source, not the target
        (LockTimeout("Could not acquire the instance lock 'a'"), False),
        (OperationCanceled("canceled"), False),
        # the guest did not converge: its pace, not the target's; other aborts count
        (MigrationNotConverged("Migration of instance a aborted: did not converge"), False),
        (MigrationAborted("Migration of instance a aborted: job timed out"), True),
        # prerequisites: the target's memory or environment count, the state of things not
        (OpPrereqError("Not enough memory on node n2", ECODE_NORES), True),
        (OpPrereqError("Can't get data from node n2: no answer", ECODE_ENVIRON), True),
        (OpPrereqError("memory reserved by moves to n2", ECODE_TEMP_NORES), False),
        (
            OpPrereqError("Can't migrate, please use failover: instance not running", ECODE_STATE),
            False,
        ),
        (_from_node("n1"), False),  # a node's answer, of the source
        (_from_node("n2"), True),
        (_of_node(OpPrereqError("Node n2 is offline", ECODE_STATE), "n2"), True),  # since the plan
        # hook scripts: only failures on the target alone count against it
        (HooksAbort([("master", "00-policy", "pinned")], ["master", "n2"]), False),
        (HooksAbort([("n1", "c", "pinned"), ("n2", "c", "pinned")], ["master", "n1", "n2"]), False),
        (HooksAbort([("n2", "10-check", "no bridge br7")], ["master", "n1", "n2"]), True),
        # a failover onto the master: its hooks ran there alone
        (HooksAbort([("n2", "00-policy", "pinned")], ["n2"]), False),
        (HooksFailure("hooks could not run on n1", node="n1"), False),
        (HooksFailure("hooks could not run on n2", node="n2"), True),
        (HooksFailure("no hooks runner"), False),
        # a shutdown refused by the source (a failover's first step)
        (OpExecError("Could not shutdown instance a on node n1: libvirt error", node="n1"), False),
    ],
)
def test_target_at_fault(err: Exception, blamed: bool) -> None:
    assert target_at_fault(err, "n2") is blamed


def _moves() -> list[Move]:
    moves = [Move("a", "n1", "n2", "migrate"), Move("b", "n1", "n2", "migrate")]
    for move in moves:
        move.op = OpInstanceMigrate(instance_name=move.instance, target_node=move.target)
    return moves


def _schedule(moves: list[Move], fails: Callable[[Move], Exception | None]) -> MoveScheduler:
    """Run ``moves`` one at a time; ``fails(move)``: what its job raises (None: it succeeds)."""
    ids = iter(range(1, 100))

    def start(move: Move, relay: Callable[[str], None]) -> tuple[int, Callable[[], Any]]:
        def run() -> None:
            err = fails(move)
            if err is not None:
                raise err

        return next(ids), run

    def replace(move: Move, failed: set[str]) -> tuple[str | None, str]:
        return "n3", ""

    scheduler = MoveScheduler(
        moves, start, lambda _text: None, Cancellation(), 1, 1, replace=replace
    )
    scheduler.run()
    return scheduler


def test_a_move_that_waited_too_long_for_a_lock_does_not_turn_its_target_away() -> None:
    moves = _moves()
    scheduler = _schedule(moves, lambda m: LockTimeout("held") if m.instance == "a" else None)
    assert [m.status for m in moves] == [FAILED, DONE]
    assert moves[1].target == "n2" and not scheduler.failed_targets


def test_a_failed_migration_turns_its_target_away() -> None:
    moves = _moves()
    scheduler = _schedule(moves, lambda m: OpExecError("boom") if m.instance == "a" else None)
    assert [m.status for m in moves] == [FAILED, DONE]
    assert moves[1].target == "n3" and scheduler.failed_targets == {"n2"}


def test_a_move_that_cannot_start_fails_alone() -> None:
    moves = _moves()
    logged: list[str] = []
    ids = iter(range(1, 100))

    def start(move: Move, relay: Callable[[str], None]) -> tuple[int, Callable[[], Any]]:
        if move.instance == "a":
            raise OpPrereqError(
                "Instance a is no longer on node n1 (now on n3): not moved", "wrong_state"
            )
        return next(ids), lambda: None

    scheduler = MoveScheduler(moves, start, logged.append, Cancellation(), 1, 1)
    scheduler.run()
    assert [m.status for m in moves] == [FAILED, DONE]
    assert moves[0].job_id is None and "no longer on node n1" in moves[0].error
    assert "a: not started: Instance a is no longer on node n1 (now on n3): not moved" in logged
    assert not scheduler.failed_targets and moves[1].target == "n2"


def test_a_move_whose_thread_cannot_start_fails_alone_and_records_no_job(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No thread to be had (a process limit): the move fails, no job is recorded for it,
    and the other moves and the scheduler's end are not affected."""
    moves = _moves()
    logged: list[str] = []
    recorded: list[str] = []
    real_start = threading.Thread.start

    def start_thread(thread: threading.Thread) -> None:
        if thread.name == "move-a":
            raise RuntimeError("can't start new thread")
        real_start(thread)

    def start(move: Move, relay: Callable[[str], None]) -> tuple[int, Callable[[], Any]]:
        recorded.append(move.instance)
        return len(recorded), lambda: None

    monkeypatch.setattr(threading.Thread, "start", start_thread)
    scheduler = MoveScheduler(moves, start, logged.append, Cancellation(), 1, 1)
    assert scheduler.run() == moves
    assert [m.status for m in moves] == [FAILED, DONE]
    assert recorded == ["b"] and moves[0].job_id is None
    assert "a: not started: can't start new thread" in logged
