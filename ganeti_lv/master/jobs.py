"""The job log: one JSON file per opcode run, written as the run progresses.

Job ids come from a counter file updated under an exclusive ``flock``, so
ids are unique and increasing across processes. Each job file
(``job-<id>.json``) is rewritten atomically (temp file and rename) on every
change (status, feedback line, result), so it is on record as it happens and
a process killed at any moment (even SIGKILL) leaves a complete file.

Durability: a job is fsynced (file and directory) when it is recorded
(queued, or queued and started in one write) and when it reaches its final
state (success, error, canceled), so both the fact that it ran and its
result survive a power loss once ``create`` / ``finish_*`` return. The
writes in between (running, executing, feedback lines) skip fsync: they
survive a crash of the process (the page cache outlives it) but a power loss
may take them back to the recorded start; such a job then shows as "lost"
(its process is gone). The id counter is a number rewritten in place under
its lock, never fsynced: after a power loss it may lag behind, and a new id
never reuses one whose job file exists; an unreadable counter is rebuilt
from the job files.

A job records the pid (and the process start time)
of the process that runs it; when a job says "queued" or "running" but that
process is gone, readers report it as "lost", never as running.
"""

from __future__ import annotations

import builtins
import contextlib
import dataclasses
import fcntl
import json
import os
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ganeti_lv.config import fsync_dir, write_file_atomically
from ganeti_lv.errors import ECODE_FAULT, GenericError, JobError

JOB_STATUS_QUEUED = "queued"
JOB_STATUS_RUNNING = "running"
JOB_STATUS_SUCCESS = "success"
JOB_STATUS_ERROR = "error"
JOB_STATUS_CANCELED = "canceled"
JOB_STATUS_LOST = "lost"
JOB_STATUSES = (
    JOB_STATUS_QUEUED,
    JOB_STATUS_RUNNING,
    JOB_STATUS_SUCCESS,
    JOB_STATUS_ERROR,
    JOB_STATUS_CANCELED,
    JOB_STATUS_LOST,
)
ACTIVE_STATUSES = (JOB_STATUS_QUEUED, JOB_STATUS_RUNNING)

ELOG_MESSAGE = "message"

_JOB_FILE_RE = re.compile(r"^job-(\d+)\.json$")


def process_start_time(pid: int) -> int | None:
    """The start time (clock ticks since boot) of process ``pid``, or None if gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fobj:
            stat = fobj.read()
    except OSError:
        return None
    # The command name may contain spaces; fields resume after the last ')'.
    fields = stat[stat.rfind(")") + 2 :].split()
    if fields[0] in ("Z", "X"):  # zombie or dead: the process is gone
        return None
    return int(fields[19])


def process_alive(pid: int, start_time: int | None = None) -> bool:
    """True if ``pid`` runs (and, when given, started at ``start_time``: no pid reuse)."""
    if pid <= 0:
        return False
    if os.path.isdir("/proc/self"):
        current = process_start_time(pid)
        if current is None:
            return False
        return start_time is None or current == start_time
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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


@dataclass
class Job:
    """One opcode run as recorded in the job log (timestamps: seconds since the epoch)."""

    id: int
    op_id: str
    summary: str
    params: dict[str, Any]
    status: str = JOB_STATUS_QUEUED
    received_ts: float = field(default_factory=time.time)
    start_ts: float | None = None
    end_ts: float | None = None
    # when every lock was held and the LU's checks and Exec began (Ganeti's exec_timestamp)
    exec_ts: float | None = None
    log: list[tuple[float, str, str]] = field(default_factory=list)
    result: Any = None
    error: dict[str, Any] | None = None
    pid: int = field(default_factory=os.getpid)
    pid_start: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """The job as JSON data."""
        data = dataclasses.asdict(self)
        data["log"] = [list(entry) for entry in self.log]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Job:
        """Build a job from ``to_dict`` output."""
        data = dict(data)
        data["log"] = [tuple(entry) for entry in data.get("log", [])]
        return cls(**data)

    @property
    def finished(self) -> bool:
        """True when the job reached a final status."""
        return self.status not in ACTIVE_STATUSES


_JOB_FIELDS = tuple(f.name for f in dataclasses.fields(Job))


def _json_record(job: Job) -> dict[str, Any]:
    """The job as JSON data for its file (shares params, result and error with the job)."""
    data = {name: getattr(job, name) for name in _JOB_FIELDS}
    data["log"] = [list(entry) for entry in job.log]
    return data


def write_new_file_durably(path: str, data: bytes, mode: int = 0o640) -> None:
    """Create ``path`` with ``data``: complete or absent to readers, durable on return.

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
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_dir(directory)


def _encode(job: Job) -> bytes:
    return json.dumps(_json_record(job), sort_keys=True, separators=(",", ":")).encode() + b"\n"


class JobStore:
    """The job log directory. Writers record a run; readers list and inspect jobs."""

    def __init__(self, jobs_dir: str) -> None:
        self.jobs_dir = jobs_dir
        # Feedback may come from worker threads (e.g. a migration monitor).
        self._write_lock = threading.RLock()

    # -------------------------------------------------------------- files
    def _path(self, job_id: int) -> str:
        return os.path.join(self.jobs_dir, f"job-{job_id}.json")

    @contextlib.contextmanager
    def _counter_lock(self) -> Iterator[None]:
        os.makedirs(self.jobs_dir, exist_ok=True)
        fd = os.open(os.path.join(self.jobs_dir, ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _next_id(self) -> int:
        counter = os.path.join(self.jobs_dir, "serial")
        with self._counter_lock():
            fd = os.open(counter, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                raw = os.pread(fd, 64, 0)
                try:
                    last = int(raw.strip() or b"0")
                except ValueError:
                    last = 0
                if last <= 0:
                    # A new, lost or unreadable counter: never reuse an id.
                    last = max([0, *self.job_ids()])
                # The counter is not fsynced: after a power loss it may lag
                # behind job files that were; skip ids whose file exists.
                while os.path.lexists(self._path(last + 1)):
                    last += 1
                # In place: one small write of a growing number under the lock.
                text = f"{last + 1}\n".encode()
                os.pwrite(fd, text, 0)
                if len(raw) > len(text):
                    os.ftruncate(fd, len(text))
            finally:
                os.close(fd)
        return last + 1

    def save(self, job: Job, durable: bool = False) -> None:
        """Write the job's file atomically; ``durable`` also fsyncs it (final states)."""
        with self._write_lock:
            write_file_atomically(self._path(job.id), _encode(job), durable=durable)

    # ------------------------------------------------------------ writing
    def create(self, op: Any, start: bool = False) -> Job:
        """Record a new job for opcode ``op`` (run by this process), durably.

        The job is queued, or with ``start`` already running (one write
        instead of ``create`` followed by ``start``).
        """
        job = Job(
            id=self._next_id(),
            op_id=op.OP_ID,
            summary=op.summary(),
            params=to_jsonable(op.to_dict()),
            pid=os.getpid(),
            pid_start=process_start_time(os.getpid()),
        )
        if start:
            job.status = JOB_STATUS_RUNNING
            job.start_ts = job.received_ts
        with self._write_lock:
            write_new_file_durably(self._path(job.id), _encode(job))
        return job

    def start(self, job: Job) -> None:
        """Mark the job running."""
        job.status = JOB_STATUS_RUNNING
        job.start_ts = time.time()
        self.save(job)

    def mark_executing(self, job: Job) -> None:
        """Record that the job holds its locks and its operation now runs."""
        with self._write_lock:
            job.exec_ts = time.time()
            self.save(job)

    def append_log(self, job: Job, message: str, log_type: str = ELOG_MESSAGE) -> None:
        """Add one feedback line (timestamped) and persist it at once."""
        with self._write_lock:
            job.log.append((time.time(), log_type, message))
            self.save(job)

    def finish_success(self, job: Job, result: Any) -> None:
        """Mark the job successful with ``result``."""
        job.status = JOB_STATUS_SUCCESS
        job.result = to_jsonable(result)
        job.end_ts = time.time()
        self.save(job, durable=True)

    def finish_error(self, job: Job, err: BaseException, canceled: bool = False) -> None:
        """Mark the job failed (or canceled) with the error's class, ecode and message."""
        job.status = JOB_STATUS_CANCELED if canceled else JOB_STATUS_ERROR
        job.error = {
            "class": type(err).__name__,
            "ecode": err.ecode if isinstance(err, GenericError) else ECODE_FAULT,
            "message": str(err) or repr(err),
        }
        job.end_ts = time.time()
        self.save(job, durable=True)

    # ------------------------------------------------------------ reading
    def _load(self, path: str) -> Job:
        try:
            with open(path, "rb") as fobj:
                job = Job.from_dict(json.loads(fobj.read()))
        except FileNotFoundError:
            raise JobError(f"Job file {path} not found") from None
        except (ValueError, TypeError) as err:
            raise JobError(f"Job file {path} is corrupt: {err}", ECODE_FAULT) from err
        if job.status in ACTIVE_STATUSES and not process_alive(job.pid, job.pid_start):
            job.status = JOB_STATUS_LOST
        return job

    def get(self, job_id: int) -> Job:
        """The job ``job_id``; JobError (ECODE_NOENT) if unknown."""
        path = self._path(int(job_id))
        if not os.path.exists(path):
            raise JobError(f"Job {job_id} not found")
        return self._load(path)

    def job_ids(self) -> builtins.list[int]:
        """Ids of all recorded jobs, ascending."""
        try:
            names = os.listdir(self.jobs_dir)
        except FileNotFoundError:
            return []
        return sorted(int(m.group(1)) for n in names if (m := _JOB_FILE_RE.match(n)))

    def list(self) -> builtins.list[Job]:
        """All recorded jobs, ascending by id (unreadable files are skipped)."""
        jobs = []
        for job_id in self.job_ids():
            with contextlib.suppress(JobError):
                jobs.append(self._load(self._path(job_id)))
        return jobs
