"""Running a recorded job: its opcodes in order through the processor.

The master daemon runs its jobs with this, each in a thread of its own; a
caller without a daemon (``ganeti_lv.Client``, ``gnt-lv``) runs its job with
it in its own process. Either way the caller gets the same records
(``ganeti_lv.master.protocol.Feedback`` and ``Progress``) and the same
results or typed error.

Ganeti's shape: the opcodes run in order, each through the processor with
its own locks; the first one that fails (or is canceled) ends the job, and
the job log marks the ones after it as not run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ganeti_lv.cancel import Cancellation
from ganeti_lv.context import Context
from ganeti_lv.master.jobs import Job
from ganeti_lv.master.protocol import RecordFn, make_record
from ganeti_lv.mcpu import Processor
from ganeti_lv.opcodes import OpCode


def run_job(
    ctx: Context,
    job: Job,
    ops: Sequence[OpCode],
    on_record: RecordFn | None = None,
    cancel: Cancellation | None = None,
) -> list[Any]:
    """Run the opcodes of the recorded ``job``; their results, or the first error raised.

    ``on_record`` gets every feedback line of the job as a record; a
    failing ``on_record`` is dropped and the job goes on (the job log keeps
    every line). ``cancel``, when set, asks the running opcode to stop
    safely; the ones after it do not run.
    """
    cancel = cancel or Cancellation()
    results = []
    for index, op in enumerate(ops):
        feedback = None if on_record is None else _feedback(job.id, index, on_record)
        results.append(Processor(ctx).execute(op, feedback, cancel, job=job, index=index))
    return results


def _feedback(job_id: int, index: int, on_record: RecordFn) -> Callable[[str], None]:
    def feedback(text: str) -> None:
        on_record(make_record(job_id, index, text))

    return feedback
