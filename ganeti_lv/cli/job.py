"""``gnt-lv job list|info|watch|cancel|archive|autoarchive``: the job log and the jobs running.

``job list`` shows the moves of a node operation (``node migrate``,
``node evacuate``) right after its job, indented; archived jobs only with
``--archived`` or named by id. As ``gnt-job list``, it takes job ids, the
status flags ``--pending``/``--running``/``--error``/``--finished`` and
Ganeti's job fields (``STATUS_FLAGS``, ``JOB_HEADERS``). ``job archive
ID...`` and ``job autoarchive AGE`` archive finished jobs as ``gnt-job``'s
do (``ganeti_lv.master.archive``). ``job watch ID`` follows a job to its end
as the command that submitted it would have (progress bars on a terminal;
Ctrl-C asks the job to stop safely) and exits with its outcome; ``job
cancel ID`` asks a running job to stop safely.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ganeti_lv.cli import common
from ganeti_lv.cli.common import EXIT_FAILURE, EXIT_SUCCESS, CliEnv, CommandRegistry
from ganeti_lv.constants import (
    JOB_STATUS_CANCELED,
    JOB_STATUS_CANCELING,
    JOB_STATUS_ERROR,
    JOB_STATUS_LOST,
    JOB_STATUS_QUEUED,
    JOB_STATUS_RUNNING,
    JOB_STATUS_SUCCESS,
    JOB_STATUS_WAITING,
    JOB_STATUSES,
)
from ganeti_lv.errors import ECODE_INVAL, ECODE_NOENT, GenericError, JobError, OpPrereqError

# Ganeti's job fields (their titles too) where the job log has the data, then
# ganeti_lv's own: the opcodes' OP_IDs, the pid running the job, its node operation
JOB_HEADERS = {
    "id": "ID",
    "status": "Status",
    "summary": "Summary",
    "ops": "OpCodes",
    "opstatus": "OpCode_status",
    "opstart": "OpCode_start",
    "opexec": "OpCode_exec",
    "opend": "OpCode_end",
    "received_ts": "Received",
    "start_ts": "Start",
    "end_ts": "End",
    "archived": "Archived",
    "op_id": "OpCode",
    "pid": "PID",
    "parent": "Parent",
}
JOB_FIELDS = tuple(JOB_HEADERS)
JOB_DEFAULT_FIELDS = ("id", "status", "summary")
# gnt-job list's status flags on the statuses job list shows: a lost job (its process
# gone) counts as failed, as the remote API shows it; a job asked to stop (canceling)
# as pending, as Ganeti's
STATUS_FLAGS = {
    "--pending": (
        (JOB_STATUS_QUEUED, JOB_STATUS_WAITING, JOB_STATUS_CANCELING),
        "Only jobs not started yet, waiting for their locks or being canceled (queued,"
        " waiting, canceling)",
    ),
    "--running": ((JOB_STATUS_RUNNING,), "Only jobs running (their locks held)"),
    "--error": ((JOB_STATUS_ERROR, JOB_STATUS_LOST), "Only failed jobs (error, lost)"),
    "--finished": (
        (JOB_STATUS_SUCCESS, JOB_STATUS_ERROR, JOB_STATUS_CANCELED, JOB_STATUS_LOST),
        "Only finished jobs (success, error, canceled, lost)",
    ),
}
# Ganeti's time specification suffixes (cli.ParseTimespec)
_TIMESPEC_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def _split(value: float) -> tuple[int, int]:
    """A timestamp's seconds and microseconds (Ganeti's timeval form)."""
    seconds = int(value)
    usecs = round((value - seconds) * 1_000_000)
    if usecs >= 1_000_000:
        seconds, usecs = seconds + 1, usecs - 1_000_000
    return seconds, usecs


def format_timestamp(value: float) -> str:
    """Ganeti's timestamp form with microseconds: ``2024-05-01 12:00:03.250000``."""
    seconds, usecs = _split(value)
    return f"{common.format_time(seconds)}.{usecs:06d}"


def _ts(value: float | None) -> str | None:
    return None if value is None else format_timestamp(value)


def _ts_pair(value: float | None) -> str | None:
    """A job's timestamp as gnt-job list prints it: ``[seconds, microseconds]``."""
    return None if value is None else "[{}, {}]".format(*_split(value))


def _op_ts(values: list[float | None]) -> list[str]:
    """The opcodes' timestamps as gnt-job list prints them: Ganeti's form, '?' for none."""
    return ["?" if value is None else format_timestamp(value) for value in values]


def _op_statuses(job: Any) -> list[str]:
    """The opcodes' statuses as shown (``Job.op_shown_status``)."""
    return [job.op_shown_status(op) for op in job.ops]


_FIELD_VALUES: dict[str, Callable[[Any], Any]] = {
    "id": lambda job: job.id,
    "status": lambda job: job.shown_status,
    "summary": lambda job: job.summary,
    # as JSON: the opcodes' input with their OP_ID (Ganeti prints Python's form)
    "ops": lambda job: json.dumps([op.params for op in job.ops], sort_keys=True),
    "opstatus": _op_statuses,
    "opstart": lambda job: _op_ts([op.start_ts for op in job.ops]),
    "opexec": lambda job: _op_ts([op.exec_ts for op in job.ops]),
    "opend": lambda job: _op_ts([op.end_ts for op in job.ops]),
    "received_ts": lambda job: _ts_pair(job.received_ts),
    "start_ts": lambda job: _ts_pair(job.start_ts),
    "end_ts": lambda job: _ts_pair(job.end_ts),
    "archived": lambda job: job.archived,
    "op_id": lambda job: job.op_id,
    "pid": lambda job: job.pid,
    "parent": lambda job: job.parent,
}


@dataclass(frozen=True)
class _UnknownJob:
    """A job asked for by id that the job log does not have (or cannot read): listed
    with its id and every other field unavailable ("-"), as Ganeti's ``gnt-job list ID``."""

    id: int
    parent: None = None
    shown_status: None = None


def _field(job: Any, name: str) -> Any:
    if isinstance(job, _UnknownJob):
        return job.id if name == "id" else None
    return _FIELD_VALUES[name](job)


def grouped(jobs: list[Any]) -> list[tuple[Any, int]]:
    """Jobs in id order, each job's children (moves of a node operation) right after it.

    Each job comes with its depth (0, or 1 for a child whose parent is listed).
    """
    listed = {job.id for job in jobs}
    children: dict[int, list[Any]] = {}
    for job in jobs:
        if job.parent is not None and job.parent in listed:
            children.setdefault(job.parent, []).append(job)
    out: list[tuple[Any, int]] = []
    for job in jobs:
        if job.parent is not None and job.parent in listed:
            continue
        out.append((job, 0))
        out.extend((child, 1) for child in children.get(job.id, []))
    return out


def cmd_list(opts: argparse.Namespace, env: CliEnv) -> int:
    """List recorded jobs (a job whose process died shows as "lost").

    For people (aligned columns) a node operation's moves come indented right
    under it; with ``--separator``, for scripts, every job is one plain row in
    id order (that of the ids given, when given), as Ganeti's ``gnt-job list``
    (the ``parent`` field groups them).
    """
    fields = common.parse_fields(opts.output, JOB_DEFAULT_FIELDS, JOB_FIELDS)
    if opts.archived and "archived" not in fields:
        fields.append("archived")  # as gnt-job list --archived
    jobs = _selected_jobs(env.client(), opts.job_ids, opts.archived)
    if opts.statuses is not None:
        jobs = [j for j in jobs if j.shown_status in opts.statuses]
    rows = []
    for job, depth in grouped(jobs) if opts.separator is None else [(j, 0) for j in jobs]:
        row = [_field(job, f) for f in fields]
        if depth and "summary" in fields:
            row[fields.index("summary")] = f"  {job.summary}"
        rows.append(row)
    headers = [JOB_HEADERS[f] for f in fields]
    env.table(headers, rows, opts.separator, opts.no_headers)
    return EXIT_SUCCESS


def _selected_jobs(client: Any, texts: list[str], archived: bool) -> list[Any]:
    """The jobs to list: all (archived ones with ``archived``), or those of the ids given.

    Named jobs come in the order given, each once, archived or not (as
    Ganeti's, which finds a named job in its archive too); one the job log
    does not have is an ``_UnknownJob``, as Ganeti lists an unknown id.
    """
    if not texts:
        return list(client.jobs(archived=archived))
    job_ids = list(dict.fromkeys(_job_id(text) for text in texts))  # a bad id: nothing listed
    jobs: list[Any] = []
    for job_id in job_ids:
        try:
            jobs.append(client.job(job_id))
        except JobError:
            jobs.append(_UnknownJob(job_id))
    return jobs


def _job_lines(job: Any) -> list[str]:
    lines = [
        f"Job ID: {job.id}",
        f"  Status: {job.shown_status}",
        f"  PID: {job.pid}",
        f"  Received: {_ts(job.received_ts)}",
        f"  Processing start: {_ts(job.start_ts) or 'N/A'}",
        f"  Execution start: {_ts(job.exec_ts) or 'N/A'}",
        f"  Processing end: {_ts(job.end_ts) or 'N/A'}",
        *([f"  Asked to stop: {_ts(job.cancel_ts)}"] if job.cancel_ts is not None else []),
        "  Opcodes:",
    ]
    for op in job.ops:
        lines += _op_lines(job, op)
    return lines


def _op_lines(job: Any, op: Any) -> list[str]:
    lines = [
        f"    OP_ID: {op.op_id}",
        f"    Summary: {op.summary}",
        f"    Status: {job.op_shown_status(op)}",
        "    Input fields:",
    ]
    for key, value in sorted(op.params.items()):
        if key == "reason" and _is_trail(value):
            lines.append(f"      {key}:")
            lines += _trail_lines(value, "        ")
        elif key != "OP_ID":
            lines.append(f"      {key}: {json.dumps(value, sort_keys=True)}")
    if op.error:
        lines.append(
            f"    Error: {op.error.get('class')} ({op.error.get('ecode')}): "
            f"{op.error.get('message')}"
        )
    else:
        lines.append(f"    Result: {json.dumps(op.result, sort_keys=True)}")
    lines.append("    Execution log:")
    for timestamp, log_type, message in op.log:
        lines.append(f"      {format_timestamp(timestamp)}:{log_type} {message}")
    return lines


def _is_trail(value: Any) -> bool:
    """True for a reason trail with entries (a list of lists)."""
    return isinstance(value, list) and bool(value) and all(isinstance(e, list) and e for e in value)


def _trail_lines(trail: list[list[Any]], indent: str) -> list[str]:
    """A reason trail as ``gnt-job info`` shows it: an entry's source, text and
    timestamp (nanoseconds) one a line, each entry a list item."""
    lines = []
    for entry in trail:
        for pos, item in enumerate(entry):
            lines.append(f"{indent}{'- - ' if pos == 0 else '  - '}{item}")
    return lines


def cmd_info(opts: argparse.Namespace, env: CliEnv) -> int:
    """Show one or more jobs in detail; an unknown one is said so and the others shown
    (as Ganeti's ``gnt-job info``)."""
    job_ids = [_job_id(text) for text in opts.job_ids]
    client = env.client()
    for num, job_id in enumerate(job_ids):
        if num:
            env.write("")
        try:
            job = client.job(job_id)
        except JobError as err:
            if err.ecode != ECODE_NOENT:  # there, but unreadable
                raise
            env.write(f"Job ID {job_id} not found")
            continue
        for line in _job_lines(job):
            env.write(line)
    return EXIT_SUCCESS


def _job_id(text: str) -> int:
    """A job id: digits only (int() would take '1_0', '+1' or other scripts' digits)."""
    if not (text.isascii() and text.isdigit()) or int(text) <= 0:
        raise OpPrereqError(f"Invalid job id '{text}'", ECODE_INVAL)
    return int(text)


def cmd_watch(opts: argparse.Namespace, env: CliEnv) -> int:
    """Follow a job to its end; exit 0 when it succeeded.

    Ctrl-C stops the watching, not the job (as Ganeti's ``gnt-job watch``):
    the job may be somebody else's; ``job cancel`` stops it.
    """
    job_id = _job_id(opts.job_id)
    client = env.client()
    try:
        with env.records() as show:
            client.watch(job_id, show)
    except KeyboardInterrupt:
        env.warn(
            f"Stopped watching job {job_id}; it goes on ('gnt-lv job cancel {job_id}'"
            " asks it to stop)"
        )
        return EXIT_FAILURE
    return EXIT_SUCCESS


def cmd_cancel(opts: argparse.Namespace, env: CliEnv) -> int:
    """Ask running jobs to stop safely: every job is asked, also after one that
    could not be (as Ganeti's ``gnt-job cancel``); exit 1 if any could not."""
    job_ids = [_job_id(text) for text in opts.job_ids]  # a bad id: none is asked
    client = env.client()
    status = EXIT_SUCCESS
    for job_id in job_ids:
        try:
            client.cancel(job_id)
        except GenericError as err:
            env.warn(f"Job {job_id} not canceled ({err.ecode}): {err.msg}")
            status = EXIT_FAILURE
        else:
            env.write(f"Job {job_id} asked to stop")
    return status


def parse_timespec(text: str) -> int:
    """Seconds of a time specification as Ganeti's: a number of seconds, or one with
    the suffix s, m, h, d or w; OpPrereqError (ECODE_INVAL) for anything else."""
    number, unit = (
        (text[:-1], _TIMESPEC_UNITS[text[-1]]) if text[-1:] in _TIMESPEC_UNITS else (text, 1)
    )
    if not (number.isascii() and number.isdigit()):
        raise OpPrereqError(f"Invalid time specification '{text}'", ECODE_INVAL)
    return int(number) * unit


def cmd_archive(opts: argparse.Namespace, env: CliEnv) -> int:
    """Archive finished jobs (a node operation's with its moves); exit 1 if one was not."""
    job_ids = [_job_id(text) for text in opts.job_ids]  # a bad id: none is archived
    status = EXIT_SUCCESS
    for job_id, err in env.client().archive(job_ids).items():
        if err is not None:
            env.warn(f"Job {job_id} not archived ({err.ecode}): {err.msg}")
            status = EXIT_FAILURE
    return status


def cmd_autoarchive(opts: argparse.Namespace, env: CliEnv) -> int:
    """Archive the finished jobs older than AGE (``all``: every finished job)."""
    age = None if opts.age == "all" else parse_timespec(opts.age)
    archived = env.client().auto_archive(age)
    # Ganeti's line; every job is checked here (gnt-job's may stop at a timeout)
    env.write(f"Archived {archived} jobs, 0 unchecked left")
    return EXIT_SUCCESS


class _OneStatus(argparse.Action):
    """``--status S``: the same selection as a status flag's, of the one status S."""

    def __call__(self, parser: Any, namespace: Any, values: Any, option: Any = None) -> None:
        setattr(namespace, self.dest, (values,))


def _add_status_options(parser: argparse.ArgumentParser) -> None:
    """The status selections of ``job list``: the last one given counts, as gnt-job's flags."""
    for flag, (statuses, text) in STATUS_FLAGS.items():
        parser.add_argument(flag, dest="statuses", action="store_const", const=statuses, help=text)
    parser.add_argument(
        "--status",
        dest="statuses",
        action=_OneStatus,
        choices=JOB_STATUSES,
        help="Only jobs with this status (one the Status column shows)",
    )


def register(registry: CommandRegistry) -> None:
    """Add the ``job`` group."""
    registry.group("job", help="Job log")
    lst = registry.command(
        "job", "list", cmd_list, help="List jobs (all, or those of the ids given)"
    )
    lst.add_argument("job_ids", nargs="*", metavar="ID")
    _add_status_options(lst)
    lst.add_argument("--archived", action="store_true", help="Include archived jobs")
    common.add_list_options(lst, JOB_FIELDS)
    info = registry.command("job", "info", cmd_info, help="Show jobs in detail")
    info.add_argument("job_ids", nargs="+", metavar="ID")
    watch = registry.command("job", "watch", cmd_watch, help="Follow a job to its end")
    watch.add_argument("job_id", metavar="ID")
    cancel = registry.command("job", "cancel", cmd_cancel, help="Ask running jobs to stop safely")
    cancel.add_argument("job_ids", nargs="+", metavar="ID")
    archive = registry.command("job", "archive", cmd_archive, help="Archive finished jobs")
    archive.add_argument("job_ids", nargs="+", metavar="ID")
    autoarchive = registry.command(
        "job", "autoarchive", cmd_autoarchive, help="Archive finished jobs older than AGE"
    )
    autoarchive.add_argument(
        "age", metavar="AGE", help="seconds, or with a suffix: 1m, 1h, 1d, 1w; or 'all'"
    )
