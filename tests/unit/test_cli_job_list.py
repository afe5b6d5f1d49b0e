"""gnt-lv job list as an operator used to gnt-job's runs it: job ids, status flags, fields."""

from __future__ import annotations

from typing import Any

import pytest

from ganeti_lv import paths
from ganeti_lv.cli.main import main
from ganeti_lv.config import ConfigStore
from ganeti_lv.errors import OperationCanceled, OpPrereqError
from ganeti_lv.master.archive import archive_jobs
from ganeti_lv.master.jobs import Job, JobStore
from ganeti_lv.opcodes import OpTestDelay


@pytest.fixture
def store(config: ConfigStore, data_dir: str) -> JobStore:
    return JobStore(paths.jobs_dir(data_dir))


def _cli(data_dir: str, capsys: Any, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["--data-dir", data_dir, *argv])
    out, err = capsys.readouterr()
    return code, out, err


def _rows(out: str) -> list[list[str]]:
    return [line.split("|") for line in out.splitlines()]


def _finished(store: JobStore) -> Job:
    job = store.create_job([OpTestDelay()], start=True)
    store.finish_success(job, True)
    return job


def test_job_list_of_the_ids_given(data_dir: str, store: JobStore, capsys: Any) -> None:
    first, second, third = _finished(store), _finished(store), _finished(store)
    assert archive_jobs(store, [first.id]) == {first.id: None}
    argv = ("job", "list", "--no-headers", "--separator", "|", "-o", "id,status")
    # the order given, each once; an archived job named is found without --archived
    # (as Ganeti's); an unknown one is listed with its id alone, and that is no error
    code, out, err = _cli(data_dir, capsys, *argv, str(third.id), "99", str(first.id), "99")
    assert (code, err) == (0, "")
    assert _rows(out) == [[str(third.id), "success"], ["99", "-"], [str(first.id), "success"]]
    code, out, _ = _cli(data_dir, capsys, *argv, str(second.id))
    assert (code, _rows(out)) == (0, [[str(second.id), "success"]])
    # a status filter applies to them; an unknown job has no status to match
    code, out, _ = _cli(data_dir, capsys, *argv, "--status", "success", str(second.id), "99")
    assert (code, _rows(out)) == (0, [[str(second.id), "success"]])
    # a bad id: nothing listed
    code, out, err = _cli(data_dir, capsys, *argv, str(second.id), "x1")
    assert (code, out) == (1, "") and "Invalid job id 'x1'" in err


def _one_of_each_status(store: JobStore) -> dict[str, int]:
    """A job of each status of the job log: its id by status."""
    queued = store.create_job([OpTestDelay()])
    running = store.create_job([OpTestDelay()], start=True)  # this process runs it
    success = _finished(store)
    error = store.create_job([OpTestDelay()], start=True)
    store.finish_error(error, OpPrereqError("bad", "wrong_input"))
    canceled = store.create_job([OpTestDelay()], start=True)
    store.finish_error(canceled, OperationCanceled("stop"), canceled=True)
    lost = store.create_job([OpTestDelay()], start=True)
    lost.pid, lost.pid_start = 2**22 + 7, None  # no such process
    store.save(lost)
    jobs = (queued, running, success, error, canceled, lost)
    return dict(
        zip(("queued", "running", "success", "error", "canceled", "lost"), (j.id for j in jobs))
    )


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        # gnt-job list's flags, on ganeti_lv's statuses (lost: a failed job)
        (["--pending"], ["queued"]),
        (["--running"], ["running"]),
        (["--error"], ["error", "lost"]),
        (["--finished"], ["success", "error", "canceled", "lost"]),
        # as Ganeti's flags: the last one given counts (also --status, ganeti_lv's)
        (["--error", "--running"], ["running"]),
        (["--finished", "--pending"], ["queued"]),
        (["--running", "--status", "canceled"], ["canceled"]),
        (["--status", "lost", "--error"], ["error", "lost"]),
        ([], ["queued", "running", "success", "error", "canceled", "lost"]),
    ],
)
def test_job_list_status_flags(
    data_dir: str, store: JobStore, capsys: Any, flags: list[str], expected: list[str]
) -> None:
    ids = _one_of_each_status(store)
    argv = ("job", "list", "--no-headers", "--separator", "|", "-o", "id,status")
    code, out, err = _cli(data_dir, capsys, *argv, *flags)
    assert (code, err) == (0, "")
    assert _rows(out) == [[str(ids[status]), status] for status in expected]


def test_job_list_status_flag_with_ids(data_dir: str, store: JobStore, capsys: Any) -> None:
    ids = _one_of_each_status(store)
    argv = ("job", "list", "--no-headers", "-o", "id", "--error")
    code, out, _ = _cli(data_dir, capsys, *argv, str(ids["lost"]), str(ids["success"]))
    assert (code, out.split()) == (0, [str(ids["lost"])])
