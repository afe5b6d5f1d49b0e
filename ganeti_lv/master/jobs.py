"""The job log: one JSON file per job, written as the job progresses.

A job is one or more opcodes run in order (Ganeti's shape): each has its
input, status, result or error, timestamps and execution log; the first
opcode that fails ends the job, and the ones after it are marked failed
(canceled, when the job was canceled) without running. The job's id is what
``gnt-lv job list`` shows and what the master daemon's protocol names.
Lists show a running job as Ganeti does (``shown_status``): ``waiting``
until its current opcode holds its locks (``exec_ts``), ``queued`` between
two opcodes.

Job ids come from a counter file updated under an exclusive ``flock``, so
ids are unique and increasing across processes. Each job file
(``job-<id>.json``) is rewritten atomically (temp file and rename) on every
change (status, feedback line, result), so it is on record as it happens and
a process killed at any moment (even SIGKILL) leaves a complete file.

Durability: a job is fsynced (file and directory) when it is recorded
(queued, or queued and started in one write) and when an opcode or the job
reaches its final state (success, error, canceled), so both the fact that it
ran and its result survive a power loss once ``create`` / ``finish_*``
return. The writes in between (running, executing, feedback lines) skip
fsync: they survive a crash of the process (the page cache outlives it) but
a power loss may take them back to the recorded start; such a job then shows
as "lost" (its process is gone). The id counter (the last id given and the
boot it was given in) is rewritten in place under its lock, never fsynced:
after a power loss it may lag behind. It is trusted within the boot that
wrote it (a killed process leaves it in the page cache); from another boot,
unreadable or without a boot (an older version's), it is first raised to
the highest id of the job files, the job log's and the archive's, so ids
never go back, not even past an id that was given but whose file was never
written. A new id never reuses one whose job file exists.

A job records the pid (and the process start time) of the process that runs
it (``gnt-lv``, ops tooling or the master daemon) and the boot it ran in
(the kernel's boot id); when a job says "queued" or "running" but that
process is gone (or the machine has rebooted since), readers report it as
"lost", never as running. The master daemon then records its end
(``ganeti_lv.master.archive``): the opcodes it did not finish fail with an
error saying so. Files written before jobs had several opcodes (one
opcode's fields at the top level) are read as one-opcode jobs; files
without a boot id are judged by the pid alone.

Finished jobs are archived (``ganeti_lv.master.archive``): their files move,
unchanged, to ``archive/<id // 10000>/`` under the job log directory, as
Ganeti buckets them. Listing reads the job log directory only (with
``archived``, the archive too); a job is still found by its id, and ids
never repeat (the counter skips archived ones too).
"""

from __future__ import annotations

import builtins
import contextlib
import dataclasses
import json
import logging
import os
import re
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from ganeti_lv.config import (
    atomic_temp_pattern,
    exclusive_file_lock,
    fsync_dir,
    write_file_atomically,
)
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
from ganeti_lv.errors import (
    ECODE_FAULT,
    GenericError,
    HooksAbort,
    JobError,
    ganeti_class,
    plain_attrs,
)
from ganeti_lv.master.processes import boot_id, pid_namespace, process_alive, process_start_time
from ganeti_lv.opcodes import add_job_reasons
from ganeti_lv.retry import job_end_write_policy

ELOG_MESSAGE = "message"

_JOB_FILE_RE = re.compile(r"^job-(\d+)\.json\Z")
# the temp files a writer killed mid-write leaves: save's (write_file_atomically)
# and create_job's (write_new_file_durably: "job-<id>.json.<pid>.<thread id>.tmp")
JOB_TEMP_FILE_RES = (
    atomic_temp_pattern(r"job-\d+\.json"),
    re.compile(r"^job-\d+\.json\.\d+\.\d+\.tmp\Z"),
)

ARCHIVE_DIR = "archive"
# archived jobs per directory of the archive (Ganeti's JOBS_PER_ARCHIVE_DIRECTORY)
JOBS_PER_ARCHIVE_DIR = 10000

_LOG = logging.getLogger(__name__)


def to_jsonable(value: Any) -> Any:
    """Convert an LU result to JSON data (objects via to_dict, others via repr)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    to_dict = getattr(value, "to_dict", None)
    if callable(to_dict):
        return to_jsonable(to_dict())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_jsonable(dataclasses.asdict(value))
    return repr(value)


def error_record(err: BaseException) -> dict[str, Any]:
    """An error as the job log keeps it: its class, error code and message, the class a
    Ganeti job would show it as (``errors.ganeti_class``), for a failed pre hook the
    (node, script, output) of each failure, and in ``attrs`` its other plain attributes
    (those the master daemon's protocol carries: a node, an exit status, the nodes a
    hook phase ran on...), so that the error replayed from the record
    (``error_attrs``) is the one a client following the job live got."""
    message = str(err) or repr(err)
    record: dict[str, Any] = {
        "class": type(err).__name__,
        "ganeti_class": ganeti_class(type(err)),
        "ecode": err.ecode if isinstance(err, GenericError) else ECODE_FAULT,
        "message": message,
    }
    # the attributes, less what the record holds already (ecode, message, a hook's failures)
    attrs = plain_attrs(err)
    attrs.pop("ecode", None)
    if attrs.get("msg") == message:
        del attrs["msg"]
    if isinstance(err, HooksAbort):
        record["hook_failures"] = [list(failure) for failure in err.results]
        attrs.pop("results", None)
    if attrs:
        record["attrs"] = attrs
    return record


def error_attrs(error: dict[str, Any]) -> dict[str, Any]:
    """The attributes of the error recorded as ``error`` (``error_record``), as the
    master daemon's protocol carries them (``protocol.encode_error``).

    A record written before records kept them (no ``attrs``) gives what it
    holds: the message, the error code, a failed pre hook's failures.
    """
    attrs: dict[str, Any] = {"msg": error.get("message", ""), "ecode": error.get("ecode")}
    if "hook_failures" in error:
        attrs["results"] = error["hook_failures"]
    attrs.update(error.get("attrs") or {})
    return attrs


@dataclass
class OpRecord:
    """One opcode of a job as recorded: its input, status, outcome and execution log."""

    op_id: str
    summary: str
    params: dict[str, Any]
    status: str = JOB_STATUS_QUEUED
    start_ts: float | None = None
    # when every lock was held and the LU's checks and Exec began (Ganeti's exec_timestamp)
    exec_ts: float | None = None
    end_ts: float | None = None
    result: Any = None
    error: dict[str, Any] | None = None
    log: list[tuple[float, str, str]] = field(default_factory=list)

    @classmethod
    def of(cls, op: Any) -> OpRecord:
        """The record of opcode ``op``, queued."""
        return cls(op_id=op.OP_ID, summary=op.summary(), params=to_jsonable(op.to_dict()))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OpRecord:
        """Build a record from its JSON form."""
        data = dict(data)
        data["log"] = [tuple(entry) for entry in data.get("log", [])]
        return cls(**data)

    @property
    def shown_status(self) -> str:
        """The status as Ganeti shows it: running before its locks are held is waiting."""
        if self.status == JOB_STATUS_RUNNING and self.exec_ts is None:
            return JOB_STATUS_WAITING
        return self.status


@dataclass
class Job:
    """A job as recorded in the job log (timestamps: seconds since the epoch).

    ``op_id``, ``summary``, ``params``, ``exec_ts``, ``result``, ``error``
    and ``log`` describe the whole job the way a one-opcode job shows it:
    the opcodes' ids and summaries joined with commas, the first opcode's
    input and execution start, the last opcode's result, the error that
    ended the job, and every opcode's log lines in order.
    """

    id: int
    ops: list[OpRecord]
    status: str = JOB_STATUS_QUEUED
    received_ts: float = field(default_factory=time.time)
    start_ts: float | None = None
    end_ts: float | None = None
    pid: int = field(default_factory=os.getpid)
    pid_start: int | None = None
    # the job of the node operation this job is part of (its per-instance jobs)
    parent: int | None = None
    # the boot the job's process ran in (None in files written before it was recorded)
    boot_id: str | None = None
    # the pid namespace of the job's process (None in files written before it was recorded)
    pid_ns: int | None = None
    # when a stop was asked for (None: never); the job shows as canceling until it ends
    cancel_ts: float | None = None
    # where the job's file is (the archive or not), not in the file: set when it is read
    archived: bool = False

    @property
    def op_id(self) -> str:
        """The OP_IDs of the job's opcodes, comma-separated."""
        return ",".join(op.op_id for op in self.ops)

    @property
    def summary(self) -> str:
        """The summaries of the job's opcodes, comma-separated."""
        return ",".join(op.summary for op in self.ops)

    @property
    def params(self) -> dict[str, Any]:
        """The first opcode's input."""
        return self.ops[0].params if self.ops else {}

    @property
    def exec_ts(self) -> float | None:
        """When the first opcode began executing (all its locks held)."""
        return self.ops[0].exec_ts if self.ops else None

    @property
    def result(self) -> Any:
        """The last opcode's result (the job's result for a one-opcode job)."""
        return self.ops[-1].result if self.ops else None

    @property
    def results(self) -> list[Any]:
        """Every opcode's result, in order."""
        return [op.result for op in self.ops]

    @property
    def error(self) -> dict[str, Any] | None:
        """The error that ended the job (class, ecode, message), or None."""
        return next((op.error for op in self.ops if op.error is not None), None)

    @property
    def log(self) -> list[tuple[float, str, str]]:
        """Every opcode's execution log, in order: (timestamp, type, message)."""
        return [entry for op in self.ops for entry in op.log]

    def to_dict(self) -> dict[str, Any]:
        """The job as JSON data (its file's content)."""
        return _json_record(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Job:
        """Build a job from ``to_dict`` output (or a one-opcode job file of an older version)."""
        data = dict(data)
        if "ops" not in data:
            data = _upgrade(data)
        data["ops"] = [OpRecord.from_dict(op) for op in data["ops"]]
        return cls(**data)

    @property
    def finished(self) -> bool:
        """True when the job reached a final status."""
        return self.status not in JOB_ACTIVE_STATUSES

    @property
    def shown_status(self) -> str:
        """The status as Ganeti shows it: a running job asked to stop is canceling,
        another's is its current opcode's (the first not finished): waiting for its
        locks, or queued between two opcodes."""
        if self.status != JOB_STATUS_RUNNING:
            return self.status
        if self.cancel_ts is not None:
            return JOB_STATUS_CANCELING
        current = self.current_op
        return self.status if current is None else current.shown_status

    @property
    def current_op(self) -> OpRecord | None:
        """The opcode the job is at: the first not finished (None when all are)."""
        return next((op for op in self.ops if op.status in JOB_ACTIVE_STATUSES), None)

    def op_shown_status(self, op: OpRecord) -> str:
        """One of its opcodes' status as shown: canceling while the job is, until it
        ends; lost when the job is lost (its process gone) and the opcode unfinished."""
        if op.status in JOB_ACTIVE_STATUSES and self.shown_status in (
            JOB_STATUS_CANCELING,
            JOB_STATUS_LOST,
        ):
            return self.shown_status
        return op.shown_status


def _upgrade(data: dict[str, Any]) -> dict[str, Any]:
    """A job file with one opcode's fields at the top level, as a job with ``ops``."""
    op = {
        "op_id": data.pop("op_id"),
        "summary": data.pop("summary"),
        "params": data.pop("params"),
        "status": data["status"],
        "start_ts": data.get("start_ts"),
        "exec_ts": data.pop("exec_ts", None),
        "end_ts": data.get("end_ts"),
        "result": data.pop("result", None),
        "error": data.pop("error", None),
        "log": data.pop("log", []),
    }
    return {**data, "ops": [op]}


_JOB_FIELDS = tuple(f.name for f in dataclasses.fields(Job))
_OP_FIELDS = tuple(f.name for f in dataclasses.fields(OpRecord))
# what a job's file records (not where the file is)
_RECORD_FIELDS = tuple(name for name in _JOB_FIELDS if name != "archived")


def _json_record(job: Job) -> dict[str, Any]:
    """The job as JSON data for its file (shares params, result and error with the job)."""
    data = {name: getattr(job, name) for name in _JOB_FIELDS}
    data["ops"] = [
        {**{name: getattr(op, name) for name in _OP_FIELDS}, "log": [list(e) for e in op.log]}
        for op in job.ops
    ]
    return data


def write_new_file_durably(path: str, data: bytes, mode: int = 0o640) -> None:
    """Create ``path`` with ``data``: complete or absent to readers, durable on return
    unless its sync failed once it was in place (logged, not raised: it is there).

    The data goes to a temp file renamed to ``path``, so a process killed at
    any point leaves no file or the whole file. The file and the directory
    are fsynced after the rename: one journal commit covers the data and
    the new name (fsyncing the data before the rename costs a second one).
    ``path`` must be new: a power loss before this returns may leave it with
    incomplete content (there is no older version to keep), which readers
    report as corrupt.
    """
    directory = os.path.dirname(os.path.abspath(path))
    tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        try:
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        try:
            os.fsync(fd)
            fsync_dir(directory)
        except OSError as err:
            # the file is in place, every reader sees it: raising would tell the caller
            # that nothing was written (a job recorded but never run)
            _LOG.warning("%s is written, but could not be synced: %s", path, err)
    finally:
        os.close(fd)


def _encode(job: Job) -> bytes:
    data = _json_record(job)
    del data["archived"]  # where the file is says that
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode() + b"\n"


def lost_error(job: Job) -> dict[str, Any]:
    """The error of the opcodes a lost job did not finish (its process is gone)."""
    return {
        "class": "OpExecError",
        "ganeti_class": "OpExecError",
        "ecode": ECODE_FAULT,
        "message": f"Job {job.id} is lost: the process running it (pid {job.pid}) is gone",
    }


def _gone(job: Job) -> bool:
    """True when the process that runs ``job`` is gone (or ran before this boot).

    A job of another pid namespace (a container sharing the data dir) is
    never judged gone: its pid means nothing here, and a job judged lost has
    its end recorded (``archive.record_lost``) while it may still run.
    """
    current = boot_id()
    if job.boot_id is not None and current is not None and job.boot_id != current:
        return True
    namespace = pid_namespace()
    if job.pid_ns is not None and namespace is not None and job.pid_ns != namespace:
        return False
    return not process_alive(job.pid, job.pid_start)


# ids are given in ascending order from 1: beyond this there is no job (and no file name)
MAX_JOB_ID = 2**63 - 1


def _parse_counter(raw: bytes) -> tuple[int, str | None]:
    """The last id given and the boot it was given in, from the counter's content.

    (0, None) for an unreadable counter; a counter of an older version (the
    number alone) has no boot.
    """
    words = raw.split()
    try:
        last = int(words[0]) if words else 0
    except ValueError:
        return 0, None
    if last <= 0:
        return 0, None
    return last, words[1].decode("ascii", "replace") if len(words) > 1 else None


def _counter_text(last: int, boot: str | None) -> bytes:
    """The counter's content: the last id given, and the boot it was given in (if known)."""
    return (f"{last} {boot}\n" if boot else f"{last}\n").encode()


class JobStore:
    """The job log directory. Writers record a run; readers list and inspect jobs."""

    def __init__(self, jobs_dir: str) -> None:
        self.jobs_dir = jobs_dir
        # Feedback may come from worker threads (e.g. a migration monitor).
        self._write_lock = threading.RLock()

    # -------------------------------------------------------------- files
    def _path(self, job_id: int) -> str:
        return os.path.join(self.jobs_dir, f"job-{job_id}.json")

    @property
    def archive_dir(self) -> str:
        """The directory of the archived jobs."""
        return os.path.join(self.jobs_dir, ARCHIVE_DIR)

    def path(self, job_id: int, archived: bool = False) -> str:
        """The file of job ``job_id``, in the job log directory or in the archive."""
        if not archived:
            return self._path(job_id)
        bucket = str(job_id // JOBS_PER_ARCHIVE_DIR)
        return os.path.join(self.archive_dir, bucket, f"job-{job_id}.json")

    @contextlib.contextmanager
    def _counter_lock(self) -> Iterator[None]:
        with exclusive_file_lock(os.path.join(self.jobs_dir, ".lock")):
            yield

    def _next_id(self) -> int:
        """A new job id: above the last one given, and above every job file's id.

        The counter holds the last id and the boot it was written in. Within
        that boot it is trusted (processes that die leave it in the page
        cache), so a new id costs no listing of the job files; written
        before this boot (a power loss may have taken back its latest
        updates), unreadable or missing, it is raised to the highest id of
        the job files first (``_highest_id``).
        """
        counter = os.path.join(self.jobs_dir, "serial")
        current = boot_id()
        with self._counter_lock():
            fd = os.open(counter, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                raw = os.pread(fd, 128, 0)
                last, written_in = _parse_counter(raw)
                if current is None or written_in != current:
                    last = max(last, self._highest_id())
                # a job file the counter did not give (put back from elsewhere): skip it
                while self._known(last + 1):
                    last += 1
                # In place: one small write of a growing number under the lock.
                text = _counter_text(last + 1, current)
                os.pwrite(fd, text, 0)
                if len(raw) > len(text):
                    os.ftruncate(fd, len(text))
            finally:
                os.close(fd)
        return last + 1

    def _known(self, job_id: int) -> bool:
        """True when job ``job_id`` has a file (in the job log or in the archive)."""
        return os.path.lexists(self._path(job_id)) or os.path.lexists(self.path(job_id, True))

    def _highest_id(self) -> int:
        """The highest id of a job file (0 if none): the job log's, and the archive's
        highest bucket that holds one (bucket n holds ids from ``n * JOBS_PER_ARCHIVE_DIR``)."""
        buckets = sorted((int(n) for n in _listdir(self.archive_dir) if n.isdigit()), reverse=True)
        paths = (os.path.join(self.archive_dir, str(bucket)) for bucket in buckets)
        archived = next((ids for path in paths if (ids := _ids_in(path))), [])
        return max([0, *self.job_ids(), *archived])

    def save(self, job: Job, durable: bool = False) -> None:
        """Write the job's file atomically; ``durable`` also fsyncs it (final states)."""
        with self._write_lock:
            write_file_atomically(self._path(job.id), _encode(job), durable=durable)

    def _save_end(self, job: Job) -> None:
        """Write the job's final state durably; a failed write is tried again
        (``job_end_write_policy``), waiting without the lock (the job's other
        writers, a monitor's feedback line, go on meanwhile)."""
        for attempt in job_end_write_policy():
            with attempt:
                self.save(job, durable=True)

    # ------------------------------------------------------------ writing
    def create(self, op: Any, start: bool = False) -> Job:
        """Record a new job of the one opcode ``op`` (see ``create_job``)."""
        return self.create_job([op], start=start)

    def create_job(self, ops: Sequence[Any], start: bool = False, parent: int | None = None) -> Job:
        """Record a new job of ``ops`` (run by this process), durably.

        The job is queued, or with ``start`` already running (one write
        instead of ``create_job`` followed by ``start``). ``parent`` is the
        job of the node operation this job belongs to. Before the job is
        written, each opcode's reason trail gets the master's entry
        (``opcodes.add_job_reasons``), as Ganeti's master adds it when it
        receives a job; the opcodes then run with it.
        """
        if not ops:
            raise JobError("A job needs at least one opcode", ECODE_FAULT)
        job_id, received_ns = self._next_id(), time.time_ns()
        add_job_reasons(ops, job_id, received_ns)
        job = Job(
            id=job_id,
            ops=[OpRecord.of(op) for op in ops],
            received_ts=received_ns / 1e9,
            pid=os.getpid(),
            pid_start=process_start_time(os.getpid()),
            parent=parent,
            boot_id=boot_id(),
            pid_ns=pid_namespace(),
        )
        if start:
            job.status = JOB_STATUS_RUNNING
            job.start_ts = job.received_ts
        with self._write_lock:
            write_new_file_durably(self._path(job.id), _encode(job))
        return job

    def start(self, job: Job) -> None:
        """Mark the job running."""
        with self._write_lock:
            job.status = JOB_STATUS_RUNNING
            job.start_ts = time.time()
            self.save(job)

    def start_op(self, job: Job, index: int) -> None:
        """Mark opcode ``index`` running (and the job, when it was queued)."""
        with self._write_lock:
            now = time.time()
            if job.status == JOB_STATUS_QUEUED:
                job.status, job.start_ts = JOB_STATUS_RUNNING, now
            op = job.ops[index]
            op.status, op.start_ts = JOB_STATUS_RUNNING, now
            self.save(job)

    def record_cancel_request(self, job: Job) -> None:
        """Record that the job was asked to stop (once; not after its end).

        ``job`` may say it runs while its file records its end: recorded
        from the file (``end_unfinished``) after a write of ``job`` failed.
        The file is read first, under the write lock, so that a request
        never writes such a stale ``job`` over the recorded end.
        """
        with self._write_lock:
            if job.cancel_ts is not None or job.finished or self.get(job.id).finished:
                return
            job.cancel_ts = time.time()
            self.save(job)

    def mark_executing(self, job: Job, index: int = 0) -> None:
        """Record that opcode ``index`` holds its locks and its operation now runs."""
        with self._write_lock:
            job.ops[index].exec_ts = time.time()
            self.save(job)

    def append_log(
        self, job: Job, message: str, log_type: str = ELOG_MESSAGE, index: int = 0
    ) -> None:
        """Add one feedback line of opcode ``index`` (timestamped) and persist it at once."""
        with self._write_lock:
            job.ops[index].log.append((time.time(), log_type, message))
            self.save(job)

    def finish_success(self, job: Job, result: Any, index: int = 0) -> None:
        """Mark opcode ``index`` successful with ``result``; the last one ends the job."""
        with self._write_lock:
            op = job.ops[index]
            op.status, op.result, op.end_ts = JOB_STATUS_SUCCESS, to_jsonable(result), time.time()
            if index == len(job.ops) - 1:
                job.status, job.end_ts = JOB_STATUS_SUCCESS, op.end_ts
        self._save_end(job)

    def finish_error(
        self, job: Job, err: BaseException, canceled: bool = False, index: int = 0
    ) -> None:
        """Mark opcode ``index`` failed (or canceled) with ``err``; this ends the job.

        The opcodes after it are marked the same way without having run. A
        job canceled whose request was not recorded yet (the request's record
        and the job's end raced) has it recorded now, so it never reads as
        canceled without having been asked.
        """
        status = JOB_STATUS_CANCELED if canceled else JOB_STATUS_ERROR
        with self._write_lock:
            now = time.time()
            if canceled and job.cancel_ts is None:
                job.cancel_ts = now
            op = job.ops[index]
            op.status, op.error, op.end_ts = status, error_record(err), now
            for later in job.ops[index + 1 :]:
                later.status, later.end_ts = status, now
                later.error = {
                    "class": "OpExecError",
                    "ecode": ECODE_FAULT,
                    "message": f"Not run: opcode {index + 1} of the job did not succeed",
                }
            job.status, job.end_ts = status, now
        self._save_end(job)

    def end_unfinished(
        self, job_id: int, err: BaseException, canceled: bool = False, live: Job | None = None
    ) -> str:
        """The job's status as its record says; an end not recorded yet is recorded as ``err``.

        For the code that runs a job, after its error: writing the job log
        may be what failed (a full disk), and a job left "queued" or
        "running" would read so for as long as its process lives. The first
        opcode that did not succeed gets the error. Raises when the record
        cannot be read or written.

        ``live`` is the job's object its runner holds, which may be ahead of
        the record (a write of it failed) or behind it: it takes the record's
        state, then the end, so that a later write of it (a feedback line of
        a thread still running, a cancel request) keeps the end.
        """
        job = self.get(job_id)
        # "lost" is a reader's judgment (its process gone), never the runner's to write
        if live is not None and job.status != JOB_STATUS_LOST:
            self._take_record(live, job)
            job = live
        if not job.finished:
            index = next((i for i, op in enumerate(job.ops) if op.status != JOB_STATUS_SUCCESS), 0)
            self.finish_error(job, err, canceled=canceled, index=index)
        return job.status

    def _take_record(self, job: Job, record: Job) -> None:
        """Make ``job`` what ``record`` (the job as read from its file) says."""
        with self._write_lock:
            for name in _RECORD_FIELDS:
                setattr(job, name, getattr(record, name))

    # ------------------------------------------------------------ reading
    def _load(self, path: str, archived: bool = False) -> Job:
        try:
            with open(path, "rb") as fobj:
                job = Job.from_dict(json.loads(fobj.read()))
        except FileNotFoundError:
            raise JobError(f"Job file {path} not found") from None
        except (ValueError, TypeError, KeyError, AttributeError) as err:
            raise JobError(f"Job file {path} is corrupt: {err!r}", ECODE_FAULT) from err
        job.archived = archived
        if job.status in JOB_ACTIVE_STATUSES and _gone(job):
            job.status = JOB_STATUS_LOST
        return job

    def get(self, job_id: int) -> Job:
        """The job ``job_id``, archived or not; JobError (ECODE_NOENT) if unknown."""
        job_id = int(job_id)
        if not 0 <= job_id <= MAX_JOB_ID:  # no file name to look for
            raise JobError(f"Job {job_id} not found")
        # the job log first: a file moves only to the archive, never back, so
        # one that is not in the job log (any more) is in the archive if anywhere
        for archived in (False, True):
            path = self.path(job_id, archived)
            try:
                return self._load(path, archived)
            except JobError:
                if os.path.lexists(path):
                    raise  # there, but unreadable
        raise JobError(f"Job {job_id} not found")

    def job_ids(self, archived: bool = False) -> builtins.list[int]:
        """Ids of the recorded jobs, ascending (with ``archived``, the archived ones too)."""
        return sorted(job_id for job_id, _ in self._files(archived))

    def list(self, archived: bool = False) -> builtins.list[Job]:
        """The recorded jobs not archived (with ``archived``, all), ascending by id.

        Unreadable files are skipped. With ``archived``, a job archived
        while the directories are read is listed once, from the archive.
        """
        jobs: dict[int, Job] = {}
        for job_id in self.job_ids(archived):
            if job_id in jobs:
                continue  # moved to the archive between the two directories' listings
            with contextlib.suppress(JobError):
                jobs[job_id] = self.get(job_id) if archived else self._load(self.path(job_id))
        return builtins.list(jobs.values())

    def _files(self, archived: bool) -> builtins.list[tuple[int, bool]]:
        """(id, archived) of each job file of the job log (with ``archived``, the archive's too)."""
        files = [(job_id, False) for job_id in _ids_in(self.jobs_dir)]
        if archived:
            for bucket in _listdir(self.archive_dir):
                if bucket.isdigit():
                    directory = os.path.join(self.archive_dir, bucket)
                    files.extend((job_id, True) for job_id in _ids_in(directory))
        return files


def _listdir(directory: str) -> builtins.list[str]:
    try:
        return os.listdir(directory)
    except FileNotFoundError:
        return []


def _ids_in(directory: str) -> builtins.list[int]:
    """Ids of the job files in ``directory``."""
    return [int(m.group(1)) for n in _listdir(directory) if (m := _JOB_FILE_RE.match(n))]
