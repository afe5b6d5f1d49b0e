"""Following and canceling a job that the master daemon does not run.

Such a job runs in a process of its own (``gnt-lv`` following it, or a
background job, ``ganeti_lv.master.background``), or has ended. Following
it reads its job log entry until it ends (``follow_logged``): its lines as
the same records the daemon streams, then its results or its typed error
(with the attributes its record kept: the error a live follow raises).
Canceling it sends SIGTERM to its process (``signal_cancel``), which both
kinds of process take as a request to stop safely, as Ctrl-C.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from typing import Any

from ganeti_lv.cancel import Cancellation
from ganeti_lv.constants import JOB_STATUS_SUCCESS
from ganeti_lv.errors import ECODE_STATE, JobError
from ganeti_lv.master.jobs import Job, error_attrs
from ganeti_lv.master.processes import process_alive
from ganeti_lv.master.protocol import RecordFn, decode_error, make_record

# how often the job log is read (s)
POLL = 0.5
# processes that take SIGTERM as a cancel request: the gnt-lv program, or the
# module a job runs in (one word of the command line; the master daemon,
# gnt-lv-masterd, takes SIGTERM as the order to stop, and is never signalled)
_CANCELABLE_PROGRAMS = frozenset({b"gnt-lv"})
_CANCELABLE_MODULES = frozenset({b"ganeti_lv.cli.main", b"ganeti_lv.master.background"})


def follow_logged(
    get_job: Callable[[int], Job],
    job_id: int,
    on_record: RecordFn | None = None,
    cancel: Cancellation | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> list[Any]:
    """Every line of job ``job_id`` as records, up to its end; its results or typed error.

    ``cancel``, once set, asks the job to stop safely (once); the job is
    followed on to its end, also when it cannot be asked (said as a record).
    """
    seen: dict[int, int] = {}
    asked = False
    while True:
        job = get_job(job_id)
        for index, op in enumerate(job.ops):
            for ts, _kind, text in op.log[seen.get(index, 0) :]:
                if on_record is not None:
                    on_record(make_record(job.id, index, text, ts))
            seen[index] = len(op.log)
        if job.finished:
            break
        if cancel is not None and cancel.is_set() and not asked:
            asked = True
            try:
                signal_cancel(job)
            except JobError as err:  # its process takes no requests, or just ended
                if on_record is not None:
                    op_index = max(0, len(job.ops) - 1)
                    on_record(make_record(job.id, op_index, f"Cannot ask it to stop: {err}"))
        sleep(POLL)
    error = end_error(job)
    if error is None:
        return job.results
    raise decode_error(error)


def end_error(job: Job) -> dict[str, Any] | None:
    """The typed error of a job that ended without success, as the protocol carries it.

    None for a successful job. The error has the attributes its record kept
    (``jobs.error_attrs``): the one a client following the job live got. A
    job that ended without an error of its own (lost: its process is gone)
    gets one that says so.
    """
    if job.status == JOB_STATUS_SUCCESS:
        return None
    error = job.error or {"class": "OpExecError", "message": f"Job {job.id} is {job.status}"}
    return {
        "class": error.get("class"),
        "msg": error.get("message", ""),
        "attrs": error_attrs(error),
    }


def signal_cancel(job: Job) -> None:
    """Ask the process running ``job`` to stop it safely; JobError when it cannot be asked."""
    if job.finished:
        raise JobError(f"Job {job.id} is {job.status}, not running", ECODE_STATE)
    if job.parent is not None:
        raise JobError(
            f"Job {job.id} is one move of the node operation job {job.parent};"
            f" cancel job {job.parent} (its queued moves do not start, the running ones stop"
            " safely)",
            ECODE_STATE,
        )
    if not process_alive(job.pid, job.pid_start):
        raise JobError(f"Job {job.id}'s process {job.pid} is gone", ECODE_STATE)
    if not _cancelable(job.pid):
        raise JobError(
            f"Job {job.id} runs in process {job.pid}, which does not take cancel requests",
            ECODE_STATE,
        )
    try:
        os.kill(job.pid, signal.SIGTERM)
    except ProcessLookupError:  # ended since it was looked at
        raise JobError(f"Job {job.id}'s process {job.pid} is gone", ECODE_STATE) from None


def _cancelable(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fobj:
            cmdline = fobj.read()
    except OSError:
        return False
    program = _program([word for word in cmdline.split(b"\0") if word])
    return program is not None and (
        os.path.basename(program) in _CANCELABLE_PROGRAMS or program in _CANCELABLE_MODULES
    )


def _program(words: list[bytes]) -> bytes | None:
    """The program of a command line: the command itself, or the script or module its
    Python runs after its options (never one of its arguments: a daemon's
    ``--data-dir /srv/gnt-lv`` is no gnt-lv); None for ``python -c``."""
    if not words or not os.path.basename(words[0]).startswith(b"python"):
        return words[0] if words else None
    rest = iter(words[1:])
    for word in rest:
        if word == b"-m":
            return next(rest, None)
        if word == b"-c":
            return None
        if word in (b"-W", b"-X"):  # options that take the next word
            next(rest, None)
        elif not word.startswith(b"-"):
            return word
    return None
