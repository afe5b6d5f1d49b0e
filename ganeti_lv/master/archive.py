"""Archiving the job log, and recording the end of lost jobs (Ganeti's job archive).

A finished job (success, error, canceled, or lost: its process is gone)
can be archived: its file moves, unchanged, from the job log directory to
``archive/<id // 10000>/`` under it (``JobStore.path``). ``gnt-lv job list``
then leaves it out (``--archived`` includes it); ``job info``, ``job watch``
and the remote API's ``/2/jobs/ID`` still find it by its id. A job still
queued or running is never archived.

The moves of a node operation (jobs whose ``parent`` is its job) go with
their node operation's job or after it, never before: ``job list`` shows a
node operation with its moves under it, so archiving a move alone would
leave its node operation without it. Archiving a node operation's job
archives its finished moves with it (the job first, then its moves).

A lost job (its process was killed) is first recorded as finished
(``record_lost``): the opcodes it did not finish fail with an error saying
that the process running it is gone, and it gets an end time. Its status
stays "lost" (the remote API shows it as Ganeti's "error").

Every change here is made under the job log's archive lock, so two
processes archiving (the master daemon's periodic pass, ``gnt-lv job
archive``) never move or rewrite the same job at once. A move is a rename,
not fsynced: a power loss may undo a recent one, and the job is then
listed again, unchanged.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterable

from ganeti_lv.config import exclusive_file_lock
from ganeti_lv.constants import JOB_ACTIVE_STATUSES, JOB_STATUS_ERROR, JOB_STATUS_LOST
from ganeti_lv.errors import ECODE_STATE, JobError
from ganeti_lv.master.jobs import Job, JobStore, lost_error


def archive_lock(store: JobStore) -> contextlib.AbstractContextManager[None]:
    """The job log's archive lock, held exclusively (waits for another holder)."""
    return exclusive_file_lock(os.path.join(store.jobs_dir, ".archive.lock"))


def job_age(job: Job, now: float) -> float:
    """Seconds since the job ended (or started, or was received, when it has no end)."""
    for stamp in (job.end_ts, job.start_ts, job.received_ts):
        if stamp is not None:
            return now - stamp
    return 0.0


def record_lost(store: JobStore, job: Job) -> Job:
    """Record the end of a lost job; the job as recorded (unchanged unless it was lost).

    ``job`` as read; it is read again here, now that its process is known
    to be gone, so that an end its process recorded just before it went is
    kept. The caller holds the archive lock.
    """
    if job.status != JOB_STATUS_LOST or job.archived:
        return job
    if not any(op.status in JOB_ACTIVE_STATUSES for op in job.ops):
        return job  # recorded already
    again = store.get(job.id)
    unfinished = [op for op in again.ops if op.status in JOB_ACTIVE_STATUSES]
    if again.status != JOB_STATUS_LOST or again.archived or not unfinished:
        return again
    now = time.time()
    for op in unfinished:
        op.status, op.error, op.end_ts = JOB_STATUS_ERROR, lost_error(again), now
    again.end_ts = now
    store.save(again, durable=True)
    return again


def _move(store: JobStore, job: Job) -> None:
    target = store.path(job.id, archived=True)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    os.rename(store.path(job.id), target)


def _moves_by_job(jobs: Iterable[Job]) -> dict[int, list[Job]]:
    """The moves among ``jobs`` by the id of their node operation's job."""
    moves: dict[int, list[Job]] = {}
    for job in jobs:
        if job.parent is not None:
            moves.setdefault(job.parent, []).append(job)
    return moves


def _archive_with_moves(
    store: JobStore, job: Job, moves: dict[int, list[Job]], done: set[int]
) -> None:
    """Archive ``job``, then its finished ``moves``; their ids go to ``done``."""
    _move(store, job)
    done.add(job.id)
    for child in moves.get(job.id, []):
        if child.finished and child.id not in done:
            with contextlib.suppress(FileNotFoundError):  # archived meanwhile
                _move(store, record_lost(store, child))
                done.add(child.id)


def archive_jobs(store: JobStore, job_ids: Iterable[int]) -> dict[int, JobError | None]:
    """Archive the jobs ``job_ids`` (each with its finished moves); per id, None or why not.

    A job is not archived when it is unknown (ECODE_NOENT), already archived,
    still queued or running, or a move of a node operation whose job is not
    archived (ECODE_STATE).
    """
    outcome: dict[int, JobError | None] = {}
    done: set[int] = set()
    with archive_lock(store):
        jobs = store.list()
        listed = {job.id: job for job in jobs}
        moves = _moves_by_job(jobs)
        for job_id in sorted(set(job_ids)):  # a node operation's job before its moves
            if job_id in done:
                outcome[job_id] = None
                continue
            job = listed.get(job_id)
            try:
                if job is None:
                    job = store.get(job_id)  # archived, or unreadable
                    raise JobError(f"Job {job_id} is already archived", ECODE_STATE)
                _check_archivable(job, listed, done)
                _archive_with_moves(store, record_lost(store, job), moves, done)
            except JobError as err:
                outcome[job_id] = err
            except FileNotFoundError:  # gone since it was listed (archived meanwhile)
                outcome[job_id] = JobError(f"Job {job_id} is already archived", ECODE_STATE)
            else:
                outcome[job_id] = None
    return outcome


def _check_archivable(job: Job, listed: dict[int, Job], done: set[int]) -> None:
    if not job.finished:
        raise JobError(
            f"Job {job.id} is {job.status}: only finished jobs are archived", ECODE_STATE
        )
    if job.parent in listed and job.parent not in done:
        raise JobError(
            f"Job {job.id} is a move of the node operation job {job.parent}:"
            f" it is archived with job {job.parent}",
            ECODE_STATE,
        )


def auto_archive(store: JobStore, age: float | None, now: float | None = None) -> int:
    """Record the lost jobs' end, then archive the finished jobs older than ``age`` seconds
    (every finished job for None); the number of jobs archived.

    A move of a node operation goes with its job (also when younger), and
    waits while that job is not archived.
    """
    now = time.time() if now is None else now
    done: set[int] = set()
    with archive_lock(store):
        jobs = [record_lost(store, job) for job in store.list()]
        unarchived = {job.id for job in jobs}
        moves = _moves_by_job(jobs)
        for job in jobs:
            if job.id in done or not job.finished:
                continue
            if job.parent in unarchived and job.parent not in done:
                continue  # its node operation's job stays: so does it
            if age is not None and job_age(job, now) < age:
                continue
            with contextlib.suppress(FileNotFoundError):  # archived meanwhile
                _archive_with_moves(store, job, moves, done)
    return len(done)
