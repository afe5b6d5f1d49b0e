"""Running the moves of a node operation: one job per instance, within limits.

``MoveScheduler`` starts each instance's move (a migration or a failover
opcode) as a job of its own under the node operation's job (``job list``
shows them together), each in a thread, at most ``max_source`` at once off
one node and ``max_target`` onto one node; the others wait in their queue.
Every move is the single-instance operation with all its checks, locks,
hooks and guarantees.

- A move that fails makes its target take no more instances: the moves
  still queued for it are placed again on the other nodes (``replace``),
  or fail when none can take them. Failures that are not the target's
  do not count against it (``target_at_fault``): a lock another job held
  too long, a cancel, an answer of another node, the state of the
  instance or its source, a guest that did not converge (the convergence
  policy aborted it), a move that could not start.
- A cancel request stops the queued moves (they never start) and is passed
  on to the running ones, which stop the way Ctrl-C stops a single one: a
  move still waiting for its locks or in its checks and PRE hooks changes
  nothing; a running live migration has its libvirt job aborted and the
  instance keeps running on its source (one that already switched over is
  recorded on its target); a failover still copying ``file`` disks stops
  with the instance on its source, one past its switch of the primary
  node ends on its own. Then every instance's node is reported as the
  configuration has it.
- Progress: one line "instances D/N finished: done, running, queued,
  failed" on every change, and each move's own feedback lines prefixed
  with its instance's name.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ganeti_lv.cancel import Cancellation, stopped_by
from ganeti_lv.errors import (
    ECODE_ENVIRON,
    ECODE_NORES,
    ECODE_TEMP_NORES,
    GenericError,
    HooksAbort,
    HooksFailure,
    LockError,
    MigrationNotConverged,
    NotEnoughSpace,
    OperationCanceled,
    OpPrereqError,
)
from ganeti_lv.opcodes import OpCode

QUEUED = "queued"
RUNNING = "running"
DONE = "done"
FAILED = "failed"
CANCELED = "canceled"
UNPLACED = "unplaced"

# how often the scheduler looks at its cancel request while moves run (s)
POLL = 0.5


@dataclass
class Move:
    """One instance's move and its outcome (``node``: where the instance is at the end)."""

    instance: str
    source: str
    target: str
    kind: str  # "migrate" or "failover"
    op: OpCode | None = None
    job_id: int | None = None
    status: str = QUEUED
    node: str = ""
    error: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The move as the node operation's result lists it."""
        return {
            "instance": self.instance,
            "kind": self.kind,
            "source": self.source,
            "target": self.target,
            "job_id": self.job_id,
            "status": self.status,
            "node": self.node,
            "error": self.error,
        }


# starts a move (its opcode) as a child job: (job id, runner); raises when it cannot
StartFn = Callable[[Move, Callable[[str], None]], tuple[int, Callable[[], Any]]]
# a queued move's new target after its target failed, or (None, why not)
ReplaceFn = Callable[[Move, set[str]], tuple[str | None, str]]


def target_at_fault(err: BaseException, target: str) -> bool:
    """Whether a move's failure ``err`` counts against its target node.

    Not: a lock another job held too long, a cancel, resources taken for a
    while (``temp_insufficient_resources``), a migration the convergence
    policy aborted (the guest's pace: other guests still move there), an error naming another node,
    hook scripts that failed on other nodes too (a policy refusing the
    instance; also when they ran on the target alone, a failover onto the
    master) or hooks that could not run on another node, a prerequisite
    about the state of the instance or its source (``wrong_state``: not
    running, moved away), a lack of space for this instance's images (the
    plan does not count disk space: smaller ones, and guests that copy no
    images, may still fit). Yes: an error naming the target (its answer; its
    state: offline, drained since the plan), hook scripts failing on the
    target alone while they passed elsewhere, a lack of its memory or a
    fault of its
    environment, and a failure of the move itself (the migration: most
    often its target's).
    """
    if isinstance(err, (LockError, OperationCanceled, MigrationNotConverged, NotEnoughSpace)):
        return False
    if isinstance(err, HooksAbort):
        # a script failing on every node it ran on refuses the instance, not the target
        failing = {node for node, _script, _output in err.results}
        return failing == {target} and set(err.nodes) != {target}
    if isinstance(err, HooksFailure):
        return err.node == target
    if not isinstance(err, GenericError):
        return True
    if err.ecode == ECODE_TEMP_NORES:
        return False
    if err.node:
        return err.node == target
    if isinstance(err, OpPrereqError):
        return err.ecode in (ECODE_NORES, ECODE_ENVIRON)
    return True


class MoveScheduler:
    """Runs ``moves`` (queued, with their opcodes) within the limits; see the module doc."""

    def __init__(
        self,
        moves: list[Move],
        start: StartFn,
        log: Callable[[str], None],
        cancel: Cancellation,
        max_source: int,
        max_target: int,
        replace: ReplaceFn | None = None,
        retarget: Callable[[Move], OpCode] | None = None,
        unfit: Callable[[str], str] | None = None,
    ) -> None:
        self.moves = moves
        self._start = start
        self._log = log
        self._cancel = cancel
        self.max_source = max_source
        self.max_target = max_target
        self._replace = replace
        self._retarget = retarget
        self._unfit = unfit
        self.failed_targets: set[str] = set()
        self._cond = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._last_progress = ""

    # ------------------------------------------------------------ counting
    def counts(self) -> dict[str, int]:
        """Moves per status."""
        out = {s: 0 for s in (DONE, RUNNING, QUEUED, FAILED, CANCELED, UNPLACED)}
        for move in self.moves:
            out[move.status] += 1
        return out

    def progress_line(self) -> str:
        """``instances D/N finished: ...`` for the moves so far."""
        c = self.counts()
        total = len(self.moves)
        finished = total - c[RUNNING] - c[QUEUED]
        text = (
            f"instances {finished}/{total} finished: {c[DONE]} done, {c[RUNNING]} running,"
            f" {c[QUEUED]} queued, {c[FAILED]} failed"
        )
        if c[CANCELED]:
            text += f", {c[CANCELED]} canceled"
        if c[UNPLACED]:
            text += f", {c[UNPLACED]} not placed"
        return text

    def _report(self) -> None:
        line = self.progress_line()
        if line != self._last_progress:
            self._last_progress = line
            self._log(line)

    # ------------------------------------------------------------ running
    def _busy(self, key: str, node: str) -> int:
        return sum(1 for m in self.moves if m.status == RUNNING and getattr(m, key) == node)

    def _can_start(self, move: Move) -> bool:
        return (
            self._busy("source", move.source) < self.max_source
            and self._busy("target", move.target) < self.max_target
        )

    def _launch(self, move: Move) -> None:
        """Run ``move`` in a thread of its own; its job is recorded there, so a thread
        that cannot start leaves no job behind."""
        assert move.op is not None
        name = move.instance

        def relay(text: str) -> None:
            self._log(f"{name}: {text}")

        def not_started(err: BaseException) -> None:
            move.status, move.error = FAILED, str(err) or type(err).__name__
            self._log(f"{name}: not started: {move.error}")

        def body() -> None:
            try:
                job_id, run = self._start(move, relay)
            except Exception as err:  # noqa: BLE001 - the move's outcome, not the scheduler's
                with self._cond:
                    not_started(err)
                    self._cond.notify_all()
                return
            move.job_id = job_id
            self._log(f"{name}: {move.kind} to {move.target} started as job {job_id}")
            try:
                run()
            except BaseException as err:  # noqa: BLE001 - every outcome is the move's
                error = str(err) or type(err).__name__
                with self._cond:
                    if stopped_by(self._cancel, err):
                        # stopped by the cancel (the target is not to blame)
                        move.status, move.error = CANCELED, error
                    else:
                        move.status, move.error = FAILED, error
                        if target_at_fault(err, move.target):
                            self.failed_targets.add(move.target)
                    self._cond.notify_all()
            else:
                with self._cond:
                    move.status = DONE
                    self._cond.notify_all()

        move.status = RUNNING
        thread = threading.Thread(target=body, name=f"move-{name}", daemon=False)
        try:
            thread.start()
        except RuntimeError as err:  # no thread to be had: no job was recorded either
            not_started(err)
            return
        self._threads.append(thread)

    def _gone(self, node: str) -> str:
        """Why queued moves may no longer go to ``node`` ("failed a move", "is drained"), or ""."""
        if node in self.failed_targets:
            return "failed a move"
        unfit = self._unfit(node) if self._unfit is not None else ""
        return f"is {unfit}" if unfit else ""

    def _retarget_queued(self) -> None:
        """Queued moves whose target failed, or takes no instances any more (offlined or
        drained since the plan): placed again, or failed."""
        queued = [m for m in self.moves if m.status == QUEUED]
        gone_targets = {target: self._gone(target) for target in {m.target for m in queued}}
        for move in queued:
            gone = gone_targets[move.target]
            if not gone:
                continue
            old = move.target
            new, why = (
                (None, "") if self._replace is None else self._replace(move, self.failed_targets)
            )
            if new is None:
                move.status = FAILED
                move.error = f"target node {old} {gone}; {why or 'no other node'}"
                self._log(f"{move.instance}: not started: {move.error}")
                continue
            move.target = new
            if self._retarget is not None:
                move.op = self._retarget(move)
            self._log(f"{move.instance}: target node {old} {gone}, now going to {new}")

    def run(self) -> list[Move]:
        """Run every queued move; the moves with their outcome once none runs.

        Whatever happens here, it returns or raises only once every move it
        started has ended.
        """
        try:
            with self._cond:
                while True:
                    if self._cancel.is_set():
                        for move in self.moves:
                            if move.status == QUEUED:
                                move.status = CANCELED
                                move.error = "canceled before it started"
                    self._retarget_queued()
                    for move in self.moves:
                        if move.status == QUEUED and self._can_start(move):
                            self._launch(move)
                    self._report()
                    if not any(m.status in (QUEUED, RUNNING) for m in self.moves):
                        break
                    self._cond.wait(POLL)
        finally:
            for thread in self._threads:
                thread.join()
        return self.moves
