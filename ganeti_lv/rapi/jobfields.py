"""Jobs of the job log in Ganeti's job fields, and waiting for a job to change.

A job as ``GET /2/jobs/[id]`` shows it, in Ganeti's shape: ``id``,
``status``, ``summary`` (one per opcode), ``ops`` (each opcode's input with
its ``OP_ID``), ``opstatus``, ``opresult``, ``oplog`` (per opcode, entries
``[serial, [seconds, microseconds], type, message]`` with serials counted
over the whole job from 1), ``received_ts``, ``start_ts``, ``end_ts``
(``[seconds, microseconds]`` or null).

Statuses are Ganeti's: an opcode (and its job) that runs but still waits
for its locks is ``waiting``; a job asked to stop before its opcode
executes is ``canceling`` (as the job log records it), and so are its
opcodes not ended: it ends ``canceled``, as a Ganeti job that is
``canceling`` always does. One asked to stop while its opcode executes
stays ``running`` here (the job log says ``canceling``): it stops where it
safely can, or ends as it would have, and Ganeti's clients take
``canceling`` for the end (``cli.GenericPollJob`` raises JobCanceled
at once); a job whose process is gone ("lost" in ``gnt-lv job list``)
is ``error``, so a client polling for the end of a job sees one. A failed
opcode's result is its error as Ganeti encodes it, named by the class of
Ganeti's ``errors`` module a job of Ganeti's would show
(``errors.ganeti_class``; a client maps it back with
``errors.GetErrorClass``): ``["OpPrereqError", [message, error code]]`` for
a refusal, ``["OpExecError", [message]]`` for a failure (also an aborted
migration or an unreachable node), and ``["HooksAbort", [[[node, script,
output], ...]]]`` for a failed pre hook. An opcode of a canceled job that
did not get to run (it waited for its locks, or was queued) has the result
``"Job canceled by request"``. A node's migration or evacuation succeeds
with Ganeti's result of an opcode that submitted jobs, ``{"jobs": [[true,
id], ...]}``; when it failed, its result is its error like any other (no
``jobs``: Ganeti's client decodes a failed opcode's result as an error),
whose message names the job of each move that ran. A dry run's result is
null, as Ganeti's (the Python API's is the LU's: a node operation's plan,
say). ``archived`` says whether the job is archived: ``GET /2/jobs`` lists
the jobs not archived, ``GET /2/jobs/[id]`` finds an archived one too (as
Ganeti's).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import Any

from ganeti_lv import errors
from ganeti_lv.constants import (
    JOB_ACTIVE_STATUSES,
    JOB_STATUS_CANCELED,
    JOB_STATUS_CANCELING,
    JOB_STATUS_ERROR,
    JOB_STATUS_LOST,
    JOB_STATUS_QUEUED,
    JOB_STATUS_RUNNING,
    JOB_STATUS_SUCCESS,
    JOB_STATUS_WAITING,
)
from ganeti_lv.master.jobs import Job, OpRecord, lost_error
from ganeti_lv.rapi.httperrors import bad_request

# the statuses a wait for a change waits in; any other answers at once, as
# Ganeti's (a canceling job too: Ganeti's clients take it for the end)
WAITED_IN = (JOB_STATUS_QUEUED, JOB_STATUS_WAITING, JOB_STATUS_RUNNING)
CANCELED_RESULT = "Job canceled by request"

JOB_FIELDS_BULK = (
    "id",
    "ops",
    "status",
    "summary",
    "opstatus",
    "received_ts",
    "start_ts",
    "end_ts",
)
JOB_FIELDS = (*JOB_FIELDS_BULK, "oplog", "opresult")
ALL_FIELDS = (*JOB_FIELDS, "priority", "archived", "opstart", "opexec", "opend", "oppriority")

# How long GET /2/jobs/[id]/wait waits for a change (Ganeti's), and how often it looks.
WAIT_TIMEOUT = 10.0
WAIT_POLL = 0.2


def split_time(value: float | None) -> list[int] | None:
    """A timestamp as Ganeti sends it: [seconds, microseconds] (None stays None)."""
    if value is None:
        return None
    seconds = int(value)
    usecs = round((value - seconds) * 1_000_000)
    if usecs >= 1_000_000:
        seconds, usecs = seconds + 1, usecs - 1_000_000
    return [seconds, usecs]


def _lost(job: Job) -> bool:
    return job.status == JOB_STATUS_LOST


def _stopping_in_exec(job: Job) -> bool:
    """Asked to stop while its opcode executes: it may still end as it would have."""
    current = job.current_op
    return (
        job.shown_status == JOB_STATUS_CANCELING
        and current is not None
        and current.exec_ts is not None
    )


def op_status(job: Job, op: OpRecord) -> str:
    """One opcode's status, as Ganeti names it."""
    if op.status in JOB_ACTIVE_STATUSES and _lost(job):
        return JOB_STATUS_ERROR
    if op.status in JOB_ACTIVE_STATUSES and _stopping_in_exec(job):
        return op.shown_status
    return job.op_shown_status(op)


def job_status(job: Job) -> str:
    """The job's status, as Ganeti names it."""
    if _lost(job):
        return JOB_STATUS_ERROR
    if _stopping_in_exec(job):
        return JOB_STATUS_RUNNING
    return job.shown_status


# opcodes whose result is, in Ganeti, the jobs they submitted
_JOB_SUBMITTERS = ("OP_NODE_MIGRATE", "OP_NODE_EVACUATE")


def op_result(job: Job, op: OpRecord) -> Any:
    """One opcode's result: its value, or its error encoded as Ganeti encodes errors."""
    if op.status == JOB_STATUS_SUCCESS:
        if op.params.get("dry_run"):
            # Ganeti's LUs of every opcode submitted here give no dry-run result
            # (ganeti_lv's: a node operation's plan, a node change's list of changes)
            return None
        if op.op_id in _JOB_SUBMITTERS and isinstance(op.result, list):
            return moves_result(op.result)
        return op.result
    if op.error is not None:
        if op.status == JOB_STATUS_CANCELED and op.exec_ts is None:
            return CANCELED_RESULT
        return encode_error(op.error)
    if _lost(job) and op.status in JOB_ACTIVE_STATUSES:  # its end not recorded yet
        return encode_error(lost_error(job))
    if op.status == JOB_STATUS_CANCELED:
        return CANCELED_RESULT
    return None


def moves_result(moves: list[dict[str, Any]]) -> dict[str, Any]:
    """A node operation's moves as Ganeti's result of an opcode that submitted jobs.

    ``jobs``: ``[true, job id]`` for each move that ran as a job, ``[false,
    why]`` for one that did not; nothing else, as Ganeti's result of these
    opcodes has nothing else (``gnt-lv job info`` shows the moves).
    """
    jobs = [
        [True, m["job_id"]] if m.get("job_id") is not None else [False, m.get("error") or ""]
        for m in moves
    ]
    return {"jobs": jobs}


def _ganeti_class_of(name: Any) -> str:
    """Ganeti's class for an error recorded before records kept it, by its class name."""
    found = getattr(errors, str(name or ""), None)
    return errors.ganeti_class(found) if isinstance(found, type) else "OpExecError"


def encode_error(error: dict[str, Any]) -> list[Any]:
    """A job log error record as Ganeti's ``[class, args]``.

    Ganeti's encoding carries an error's arguments: a refusal
    (``OpPrereqError``) has its message and error code, every other class
    its message alone, as Ganeti's job queue gives them (its client prints
    a second argument of any other class as part of the message).
    """
    name = str(error.get("ganeti_class") or _ganeti_class_of(error.get("class")))
    if name == "HooksAbort":
        # Ganeti's arguments: the list of (node, script, output)
        if "hook_failures" in error:
            return [name, [error["hook_failures"]]]
        name = "OpExecError"
    message = str(error.get("message", ""))
    if name == "OpPrereqError" and error.get("ecode"):
        return [name, [message, error["ecode"]]]
    return [name, [message]]


def oplog(job: Job) -> list[list[list[Any]]]:
    """Every opcode's log entries: [serial, [s, us], type, message], serials from 1."""
    serial = 0
    logs = []
    for op in job.ops:
        entries = []
        for ts, log_type, message in op.log:
            serial += 1
            entries.append([serial, split_time(ts), log_type, message])
        logs.append(entries)
    return logs


def log_entries(job: Job, after: int | None) -> list[list[Any]]:
    """The job's log entries with a serial above ``after`` (all for None)."""
    return [e for entries in oplog(job) for e in entries if after is None or e[0] > after]


def job_field(job: Job, name: str) -> Any:
    """One of Ganeti's job fields (``ALL_FIELDS``)."""
    per_op: dict[str, Callable[[OpRecord], Any]] = {
        "ops": lambda op: op.params,
        "summary": lambda op: op.summary,
        "opstatus": lambda op: op_status(job, op),
        "opresult": lambda op: op_result(job, op),
        "opstart": lambda op: split_time(op.start_ts),
        "opexec": lambda op: split_time(op.exec_ts),
        "opend": lambda op: split_time(op.end_ts),
        "oppriority": lambda op: 0,
    }
    if name in per_op:
        return [per_op[name](op) for op in job.ops]
    value: Any
    if name == "id":
        value = job.id
    elif name == "status":
        value = job_status(job)
    elif name == "oplog":
        value = oplog(job)
    elif name == "priority":
        value = 0
    elif name == "archived":
        value = job.archived
    elif name in ("received_ts", "start_ts", "end_ts"):
        value = split_time(getattr(job, name))
    else:
        raise bad_request(f"Unknown job field '{name}'")
    return value


def render(job: Job, fields: Sequence[str] = JOB_FIELDS) -> dict:
    """The job as a dict of ``fields``."""
    return {name: job_field(job, name) for name in fields}


# ------------------------------------------------------------------ waiting for a change


def check_wait_body(body: Any) -> tuple[list[str], list[Any] | None, int | None]:
    """The ``fields``, ``previous_job_info`` and ``previous_log_serial`` of a wait request."""
    if not isinstance(body, dict):
        raise bad_request("Body contents: Type is not 'dict'")
    if "fields" not in body:
        raise bad_request("Required parameter 'fields' is missing")
    fields, prev_info = body["fields"], body.get("previous_job_info")
    prev_serial = body.get("previous_log_serial")
    if not isinstance(fields, list) or not all(isinstance(f, str) for f in fields):
        raise bad_request("The 'fields' parameter should be a list")
    unknown = [f for f in fields if f not in ALL_FIELDS]
    if unknown:
        raise bad_request(f"Unknown job field '{unknown[0]}'")
    if not (prev_info is None or isinstance(prev_info, list)):
        raise bad_request("The 'previous_job_info' parameter should be a list")
    if not (
        prev_serial is None or (isinstance(prev_serial, int) and not isinstance(prev_serial, bool))
    ):
        raise bad_request("The 'previous_log_serial' parameter should be a number")
    return fields, prev_info, prev_serial


def changes(
    job: Job,
    fields: Sequence[str],
    prev_info: list[Any] | None,
    prev_serial: int | None,
) -> dict[str, Any] | None:
    """``{"job_info", "log_entries"}`` when the job changed (or ended), else None."""
    # as the client will see them (tuples become lists)
    info = json.loads(json.dumps([job_field(job, f) for f in fields]))
    entries = log_entries(job, prev_serial)
    if job_status(job) not in WAITED_IN or info != prev_info or entries:
        return {"job_info": info, "log_entries": entries}
    return None


def wait_for_change(
    load: Callable[[], Job],
    fields: Sequence[str],
    prev_info: list[Any] | None,
    prev_serial: int | None,
    timeout: float = WAIT_TIMEOUT,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any] | None:
    """The job's change within ``timeout`` seconds, or None when it did not change.

    ``load`` returns the job as it is now.
    """
    deadline = clock() + timeout
    while True:
        found = changes(load(), fields, prev_info, prev_serial)
        if found is not None or clock() >= deadline:
            return found
        sleep(min(WAIT_POLL, max(0.0, deadline - clock())))
