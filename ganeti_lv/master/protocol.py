"""The master daemon's protocol: versioned JSON messages over its Unix socket.

Both sides import this module: the daemon (``ganeti_lv.master.daemon``) and
its one client (``ganeti_lv.master.client``), which ``gnt-lv`` and
``ganeti_lv.Client`` use whenever a daemon runs for the data dir. The same
records (feedback, progress) also reach a caller whose job runs in its own
process (``ganeti_lv.master.runner``), so what a caller sees does not depend
on where the job runs.

Transport: the socket ``<data dir>/masterd.sock``; every message is one JSON
object on one line (UTF-8, ``\\n``-terminated) with a ``"type"``. A client
opens one connection per request; each request carries the protocol
version (``"v"``), and a daemon refuses a version it does not speak.

Requests and what the daemon answers:

``{"v": 1, "type": "submit", "ops": [<opcode dict>, ...], "lock_timeout": s|null, "wait": bool}``
    Record a job of the opcodes (run in order; the first failure fails the
    job and the rest are marked failed or canceled) and start it in a
    thread of the daemon. Answer ``{"type": "accepted", "job_id": N}``; with
    ``wait``, then follow the job as ``watch`` does.
``{"v": 1, "type": "watch", "job_id": N}``
    The job's records from its start (``feedback``, ``progress``), then its
    ``end``. A job the daemon is not running answers ``end`` at once from
    the job log.
``{"v": 1, "type": "cancel", "job_id": N, "reason": "..."}``
    Ask a running job to stop safely (as Ctrl-C does in-process); answer
    ``{"type": "canceling", "job_id": N}``. The same message sent on a
    ``submit`` or ``watch`` connection while it streams cancels that job.
``{"v": 1, "type": "query", "op": <opcode dict>}``
    Run a query (an opcode whose LU is a query: instance, node and export
    lists) without a job, as Ganeti's list commands query: nothing is
    recorded in the job log, no lock is taken, no hook runs. Answer
    ``{"type": "result", "result": ...}``, or the query's typed error (an
    unknown instance: ``OpPrereqError`` with ``ECODE_NOENT``); an opcode
    that is not a query is refused (``OpPrereqError``, ``ECODE_INVAL``).
``{"v": 1, "type": "jobs"}``, ``{"v": 1, "type": "job", "job_id": N}``
    Answer ``{"type": "jobs", "jobs": [<job>, ...]}`` or
    ``{"type": "job", "job": <job>}``: jobs as the job log records them
    (``ganeti_lv.master.jobs.Job.to_dict``). ``jobs`` lists the jobs not
    archived, all of them with ``"archived": true``; ``job`` finds an
    archived job too.
``{"v": 1, "type": "version"}``
    Answer ``{"type": "version", "protocol": 1, "version": "0.1.0"}``.

Streamed records: ``{"type": "feedback", "job_id", "op", "ts", "text"}``
(one line of the job log; ``op`` is the opcode's index) and
``{"type": "progress", ... "bar", "percent", "detail"}`` (a progress line
of the job log, structured: a terminal draws bar ``bar`` at ``percent``),
then ``{"type": "end", "job_id", "status", "results": [...], "error": ...}``.

Errors: ``{"type": "error", "error": {"class", "msg", "attrs"}}`` answers a
request that cannot be served (malformed, unknown job); a failed job's
``end`` carries the same form. ``decode_error`` rebuilds the typed error
(``OpPrereqError`` with its ``ecode``, ``HooksAbort`` with its results, ...).

A client that goes away does not stop its job; only a cancel does. Jobs are
the job log's: ``gnt-lv job list`` shows them with the same ids.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ganeti_lv import errors
from ganeti_lv.opcodes import OpCode

PROTOCOL_VERSION = 1

# requests
SUBMIT = "submit"
WATCH = "watch"
CANCEL = "cancel"
JOBS = "jobs"
JOB = "job"
QUERY = "query"
VERSION = "version"
# answers
ACCEPTED = "accepted"
FEEDBACK = "feedback"
PROGRESS = "progress"
END = "end"
ERROR = "error"
CANCELING = "canceling"
RESULT = "result"

# longest message accepted (a job's opcodes, a list of jobs)
MAX_LINE = 64 << 20

Message = dict[str, Any]


def encode(msg: Message) -> bytes:
    """One message as its line."""
    return json.dumps(msg, separators=(",", ":")).encode() + b"\n"


def decode(line: bytes) -> Message:
    """A message from its line; OpPrereqError (ECODE_INVAL) if it is not one."""
    try:
        msg = json.loads(line)
    except (ValueError, RecursionError) as err:  # RecursionError: nested too deep
        raise errors.OpPrereqError(f"Malformed message: {err}", errors.ECODE_INVAL) from err
    if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
        raise errors.OpPrereqError(
            "Malformed message: not an object with a type", errors.ECODE_INVAL
        )
    return msg


# ------------------------------------------------------------------ records


@dataclass(frozen=True)
class Feedback:
    """One feedback line of a job (a line of its job log)."""

    job_id: int
    op: int
    ts: float
    text: str


@dataclass(frozen=True)
class Progress(Feedback):
    """A progress line of a job, with the bar it moves: ``bar`` at ``percent`` (0-100)."""

    bar: str
    percent: float
    detail: str


RecordFn = Callable[[Feedback], None]

# a move's line relayed by a node operation: "web1: <the move's line>"
_WHO = r"(?:(?P<who>[A-Za-z0-9][A-Za-z0-9_.-]*): )?"
# "migration  75.0% of memory, 12.0 MiB/s, remaining 3.0 MiB, ..."
_MIGRATION_RE = re.compile(
    "^" + _WHO + r"migration\s+(?P<pct>[0-9.]+)% of memory(?:, (?P<detail>.*))?$"
)
# "disk/0 sent 1.5G, 120.0 MiB/s, 30%, ETA 12s"
_COPY_RE = re.compile(
    "^" + _WHO + r"(?P<bar>disk/\d+) sent (?P<head>.*?)(?P<pct>\d+)%(?:, )?(?P<tail>.*)$"
)
# a node operation's count: "instances 1/3 finished: 1 done, 1 running, 1 queued, 0 failed"
_MOVES_RE = re.compile(r"^instances (?P<done>\d+)/(?P<total>\d+) finished: (?P<detail>.*)$")


def progress_of(text: str) -> tuple[str, float, str] | None:
    """(bar, percent, detail) of a progress line of the job log, or None for any other line.

    The lines are a migration's (``MigrationProgress.format``: bar
    "migrating") and a disk copy's (``diskcopy.ProgressReporter``: bar
    "disk/N"); ``detail`` is the rest of the line without the percentage.
    A node operation relays its moves' lines prefixed "INSTANCE: " (bars
    "INSTANCE migrating", "INSTANCE disk/N") and counts its instances (bar
    "instances", the share of them finished).
    """
    match = _MIGRATION_RE.match(text)
    if match:
        bar = _bar(match.group("who"), "migrating")
        return bar, float(match.group("pct")), match.group("detail") or ""
    match = _COPY_RE.match(text)
    if match:
        detail = (match.group("head") + match.group("tail")).strip().strip(",").strip()
        return _bar(match.group("who"), match.group("bar")), float(match.group("pct")), detail
    match = _MOVES_RE.match(text)
    if match:
        total = int(match.group("total"))
        share = 100.0 * int(match.group("done")) / total if total else 100.0
        return "instances", share, match.group("detail")
    return None


def _bar(who: str | None, bar: str) -> str:
    return f"{who} {bar}" if who else bar


def make_record(job_id: int, op: int, text: str, ts: float | None = None) -> Feedback:
    """The record of feedback line ``text`` of opcode ``op``: a Progress when it is one."""
    when = time.time() if ts is None else ts
    progress = progress_of(text)
    if progress is None:
        return Feedback(job_id, op, when, text)
    return Progress(job_id, op, when, text, *progress)


def text_of_records(feedback_fn: Callable[[str], None] | None) -> RecordFn | None:
    """A record function handing each record's line to ``feedback_fn`` (None for None)."""
    if feedback_fn is None:
        return None
    fn = feedback_fn

    def on_record(record: Feedback) -> None:
        fn(record.text)

    return on_record


def record_message(record: Feedback) -> Message:
    """A record as its message."""
    msg: Message = {
        "type": PROGRESS if isinstance(record, Progress) else FEEDBACK,
        "job_id": record.job_id,
        "op": record.op,
        "ts": record.ts,
        "text": record.text,
    }
    if isinstance(record, Progress):
        msg.update(bar=record.bar, percent=record.percent, detail=record.detail)
    return msg


def message_record(msg: Message) -> Feedback:
    """A ``feedback`` or ``progress`` message as its record."""
    base = (int(msg["job_id"]), int(msg["op"]), float(msg["ts"]), str(msg["text"]))
    if msg["type"] == PROGRESS:
        return Progress(*base, str(msg["bar"]), float(msg["percent"]), str(msg["detail"]))
    return Feedback(*base)


# ------------------------------------------------------------------ errors


def encode_error(err: BaseException) -> Message:
    """An error as the protocol carries it: class name, message, plain attributes
    (``errors.plain_attrs``; a job's record keeps the same, see ``jobs.error_record``)."""
    return {"class": type(err).__name__, "msg": str(err), "attrs": errors.plain_attrs(err)}


def decode_error(data: Message) -> errors.GenericError:
    """The typed error ``encode_error`` describes.

    A class that is not one of ganeti_lv's errors (a bug in the daemon)
    becomes an ``OpExecError`` naming it, with ``ECODE_FAULT``.
    """
    name = str(data.get("class", ""))
    msg = str(data.get("msg", ""))
    cls = getattr(errors, name, None)
    if not (isinstance(cls, type) and issubclass(cls, errors.GenericError)):
        return errors.OpExecError(f"{name}: {msg}" if name else msg, errors.ECODE_FAULT)
    err = cls.__new__(cls)
    Exception.__init__(err, msg)
    err.msg = msg
    attrs = data.get("attrs") or {}
    for key, value in attrs.items():
        setattr(err, key, value)
    if err.ecode not in errors.ECODE_ALL:
        err.ecode = errors.ECODE_FAULT
    return err


def error_message(err: BaseException) -> Message:
    """The answer to a request that cannot be served."""
    return {"type": ERROR, "error": encode_error(err)}


# ------------------------------------------------------------------ requests


def request(kind: str, **fields: Any) -> Message:
    """A request of this protocol version."""
    return {"v": PROTOCOL_VERSION, "type": kind, **fields}


def submit_request(ops: list[OpCode], lock_timeout: float | None, wait: bool) -> Message:
    """Submit a job of ``ops``; with ``wait``, follow it to its end."""
    return request(SUBMIT, ops=[op.to_dict() for op in ops], lock_timeout=lock_timeout, wait=wait)


def query_request(op: OpCode) -> Message:
    """Run query ``op`` without a job."""
    return request(QUERY, op=op.to_dict())


def cancel_request(job_id: int, reason: str) -> Message:
    """Ask job ``job_id`` to stop safely."""
    return request(CANCEL, job_id=job_id, reason=reason)


@dataclass(frozen=True)
class Submit:
    """A checked ``submit`` request."""

    ops: list[OpCode]
    lock_timeout: float | None
    wait: bool


def invalid_request(text: str) -> errors.OpPrereqError:
    """The error answering a malformed request."""
    return errors.OpPrereqError(
        f"Malformed request to the master daemon: {text}", errors.ECODE_INVAL
    )


def check_version(msg: Message) -> None:
    """OpPrereqError unless ``msg`` is of this protocol version."""
    if msg.get("v") != PROTOCOL_VERSION:
        raise errors.OpPrereqError(
            f"The master daemon speaks protocol version {PROTOCOL_VERSION}, not {msg.get('v')!r}",
            errors.ECODE_INVAL,
        )


def job_id_of(msg: Message) -> int:
    """The ``job_id`` of a request; OpPrereqError unless it is a positive integer."""
    job_id = msg.get("job_id")
    if not isinstance(job_id, int) or isinstance(job_id, bool) or job_id <= 0:
        raise invalid_request(f"job_id must be a positive integer, got {job_id!r}")
    return job_id


def archived_of(msg: Message) -> bool:
    """The ``archived`` flag of a ``jobs`` request (default false); OpPrereqError unless a bool."""
    archived = msg.get("archived", False)
    if not isinstance(archived, bool):
        raise invalid_request(f"archived must be true or false, got {archived!r}")
    return archived


def _seconds(value: Any) -> bool:
    """Whether ``value`` is a finite number of seconds, 0 or more (no bool)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value) and value >= 0
    except OverflowError:  # an integer too large for a float
        return False


def parse_submit(msg: Message) -> Submit:
    """The opcodes and options of a ``submit`` request; OpPrereqError if malformed."""
    ops = msg.get("ops")
    if not isinstance(ops, list) or not ops or not all(isinstance(op, dict) for op in ops):
        raise invalid_request("ops must be a non-empty list of opcodes")
    lock_timeout = msg.get("lock_timeout")
    if lock_timeout is not None and not _seconds(lock_timeout):
        raise invalid_request("lock_timeout must be a number of seconds, 0 or more")
    wait = msg.get("wait", True)
    if not isinstance(wait, bool):
        raise invalid_request("wait must be true or false")
    return Submit([OpCode.from_dict(op) for op in ops], lock_timeout, wait)


def parse_query(msg: Message) -> OpCode:
    """The opcode of a ``query`` request; OpPrereqError if malformed."""
    op = msg.get("op")
    if not isinstance(op, dict):
        raise invalid_request("op must be an opcode")
    return OpCode.from_dict(op)


# ------------------------------------------------------------------ the end of a job


def end_message(
    job_id: int, status: str, results: list[Any], error: BaseException | Message | None
) -> Message:
    """The end of a job: its status, every opcode's result, the error that ended it."""
    if isinstance(error, BaseException):
        error = encode_error(error)
    return {"type": END, "job_id": job_id, "status": status, "results": results, "error": error}


def outcome(msg: Message) -> list[Any]:
    """The results an ``end`` message carries, or its typed error raised."""
    if msg.get("error"):
        raise decode_error(msg["error"])
    results = msg.get("results")
    return list(results) if isinstance(results, list) else []
