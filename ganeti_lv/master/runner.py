"""Running a recorded job: its opcodes in order through the processor.

The master daemon runs its jobs with this, each in a thread of its own; a
caller without a daemon (``ganeti_lv.Client``, ``gnt-lv``) runs its job with
it in its own process. Either way the caller gets the same records
(``ganeti_lv.master.protocol.Feedback`` and ``Progress``) and the same
results or typed error.

Ganeti's shape: the opcodes run in order, each through the processor with
its own locks; the first one that fails (or is canceled) ends the job, and
the job log marks the ones after it as not run. A cancel request is
recorded in the job log as it comes (the job shows as canceling until it
ends) by a thread of the job's that waits for it: the request may come
from a signal handler, which must neither write the job's file nor touch
any event but the cancel request's own.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from ganeti_lv.cancel import Cancellation, stopped_by
from ganeti_lv.context import Context
from ganeti_lv.master.jobs import Job
from ganeti_lv.master.protocol import RecordFn, make_record
from ganeti_lv.mcpu import Processor
from ganeti_lv.opcodes import OpCode

_LOG = logging.getLogger(__name__)


def run_job(
    ctx: Context,
    job: Job,
    ops: Sequence[OpCode],
    on_record: RecordFn | None = None,
    cancel: Cancellation | None = None,
    on_job_id: Callable[[int], None] | None = None,
) -> list[Any]:
    """Run the opcodes of the recorded ``job``; their results, or the first error raised.

    ``on_record`` gets every feedback line of the job as a record; a
    failing ``on_record`` is dropped and the job goes on (the job log keeps
    every line). ``cancel``, when set, asks the running opcode to stop
    safely; the ones after it do not run. ``on_job_id`` gets the job's id
    before it runs. Whatever ends the job, its end is recorded (an error
    no opcode recorded: the caller's ``on_job_id``, a Ctrl-C between two
    opcodes), so it never reads "running" while its process lives on.
    """
    cancel = cancel or Cancellation()
    results = []
    try:
        with _cancel_recorded(ctx, job, cancel):
            if on_job_id is not None:
                on_job_id(job.id)
            for index, op in enumerate(ops):
                feedback = None if on_record is None else _feedback(job.id, index, on_record)
                results.append(Processor(ctx).execute(op, feedback, cancel, job=job, index=index))
    except BaseException as err:
        record_end(ctx, job, err, cancel)
        raise
    return results


def record_end(ctx: Context, job: Job, err: BaseException, cancel: Cancellation) -> str | None:
    """The job's status as its log records its end; an end not recorded yet is recorded as ``err``.

    Writing the job log itself may be what failed (a full disk): the job
    would stay "running" under its process's pid for as long as it lives.
    ``job`` takes the recorded end (``JobStore.end_unfinished``): a cancel
    request recorded with it after that keeps it. None when the record
    cannot be read or written (the job failed).
    """
    try:
        return ctx.jobs.end_unfinished(job.id, err, stopped_by(cancel, err), live=job)
    except Exception as again:  # noqa: BLE001 - the job log fails; the end still goes out
        _LOG.error("job %d: its end could not be recorded: %s", job.id, again)
        return None


# how long after its job's end the thread recording a cancel request may linger
CANCEL_WATCH_POLL = 0.5


@contextlib.contextmanager
def _cancel_recorded(ctx: Context, job: Job, cancel: Cancellation) -> Iterator[None]:
    """While the job runs, a thread records a cancel request in its job log.

    The thread ends within ``CANCEL_WATCH_POLL`` of the job's end, unwaited
    for (a request after the end changes nothing). Without a thread (the
    process's limit) the job runs as it would, its request unrecorded.
    """
    ended = threading.Event()

    def record() -> None:
        while not ended.is_set():
            if cancel.wait(CANCEL_WATCH_POLL):
                with contextlib.suppress(Exception):  # the job's own records go on regardless
                    ctx.jobs.record_cancel_request(job)
                return

    with contextlib.suppress(RuntimeError):
        threading.Thread(target=record, name=f"job-{job.id}-cancel", daemon=True).start()
    try:
        yield
    finally:
        ended.set()


def _feedback(job_id: int, index: int, on_record: RecordFn) -> Callable[[str], None]:
    def feedback(text: str) -> None:
        on_record(make_record(job_id, index, text))

    return feedback
