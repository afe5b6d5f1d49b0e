"""gnt-lv job list as an operator used to gnt-job's runs it: job ids, status flags, fields."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
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
    # jobs this process runs: one waiting for its locks, one holding them
    waiting = store.create_job([OpTestDelay()], start=True)
    store.start_op(waiting, 0)
    running = store.create_job([OpTestDelay()], start=True)
    store.start_op(running, 0)
    store.mark_executing(running, 0)
    success = _finished(store)
    error = store.create_job([OpTestDelay()], start=True)
    store.finish_error(error, OpPrereqError("bad", "wrong_input"))
    canceled = store.create_job([OpTestDelay()], start=True)
    store.finish_error(canceled, OperationCanceled("stop"), canceled=True)
    lost = store.create_job([OpTestDelay()], start=True)
    lost.pid, lost.pid_start = 2**22 + 7, None  # no such process
    store.save(lost)
    jobs = {
        "queued": queued,
        "waiting": waiting,
        "running": running,
        "success": success,
        "error": error,
        "canceled": canceled,
        "lost": lost,
    }
    return {status: job.id for status, job in jobs.items()}


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        # gnt-job list's flags, on ganeti_lv's statuses (lost: a failed job)
        (["--pending"], ["queued", "waiting"]),
        (["--running"], ["running"]),
        (["--error"], ["error", "lost"]),
        (["--finished"], ["success", "error", "canceled", "lost"]),
        # as Ganeti's flags: the last one given counts (also --status, ganeti_lv's)
        (["--error", "--running"], ["running"]),
        (["--finished", "--pending"], ["queued", "waiting"]),
        (["--status", "waiting"], ["waiting"]),
        (["--running", "--status", "canceled"], ["canceled"]),
        (["--status", "lost", "--error"], ["error", "lost"]),
        ([], ["queued", "waiting", "running", "success", "error", "canceled", "lost"]),
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


@pytest.fixture
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Local time is UTC (and back to what it was after the test)."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.usefixtures("utc")
def test_job_list_takes_ganetis_job_fields_with_ganetis_titles(
    data_dir: str, store: JobStore, capsys: Any
) -> None:
    job = store.create_job([OpTestDelay(duration=0.5), OpTestDelay()], start=True)
    job.received_ts, job.start_ts = 1714564800.25, 1714564801.5
    job.ops[0].status, job.ops[0].start_ts = "running", 1714564801.5
    job.ops[0].exec_ts = 1714564802.000001
    store.save(job)
    fields = "id,received_ts,start_ts,end_ts,opstatus,opstart,opexec,opend,summary"
    code, out, err = _cli(data_dir, capsys, "job", "list", "--separator", "|", "-o", fields)
    assert (code, err) == (0, "")
    assert _rows(out) == [
        ["ID", "Received", "Start", "End", "OpCode_status", "OpCode_start", "OpCode_exec"]
        + ["OpCode_end", "Summary"],
        # the job's timestamps as gnt-job list prints them, [seconds, microseconds];
        # the opcodes' in Ganeti's time form, '?' for one not there yet
        [str(job.id), "[1714564800, 250000]", "[1714564801, 500000]", "-", "running,queued"]
        + ["2024-05-01 12:00:01.500000,?", "2024-05-01 12:00:02.000001,?", "?,?"]
        + ["TEST_DELAY,TEST_DELAY"],
    ]
    code, out, _ = _cli(data_dir, capsys, "job", "list", "--no-headers", "-o", "ops")
    assert [op["duration"] for op in json.loads(out)] == [0.5, 0.0]
    assert [op["OP_ID"] for op in json.loads(out)] == ["OP_TEST_DELAY"] * 2
    # the names these fields had before are gone (one name each)
    for old in ("received", "start", "exec", "end"):
        code, _, err = _cli(data_dir, capsys, "job", "list", "-o", old)
        assert code == 14 and f"Unknown output field(s): {old}" in err


def test_job_list_opstatus_of_a_lost_job(data_dir: str, store: JobStore, capsys: Any) -> None:
    job = store.create_job([OpTestDelay(), OpTestDelay()], start=True)
    store.start_op(job, 0)
    job.pid, job.pid_start = 2**22 + 7, None  # no such process
    store.save(job)
    code, out, _ = _cli(data_dir, capsys, "job", "list", "--no-headers", "-o", "status,opstatus")
    assert (code, out.split()) == (0, ["lost", "lost,lost"])
    # job info says the same of each opcode
    _, out, _ = _cli(data_dir, capsys, "job", "info", str(job.id))
    assert [line for line in out.splitlines() if line.startswith("    Status:")] == [
        "    Status: lost",
        "    Status: lost",
    ]


def test_job_waiting_for_its_locks_is_waiting_until_they_are_held(
    data_dir: str, store: JobStore, capsys: Any
) -> None:
    job = store.create_job([OpTestDelay(), OpTestDelay()], start=True)
    store.start_op(job, 0)
    argv = ("job", "list", "--no-headers", "-o", "status,opstatus")
    assert _cli(data_dir, capsys, *argv)[1].split() == ["waiting", "waiting,queued"]
    _, out, _ = _cli(data_dir, capsys, "job", "info", str(job.id))
    assert "  Status: waiting" in out.splitlines()
    store.mark_executing(job, 0)
    assert _cli(data_dir, capsys, *argv)[1].split() == ["running", "running,queued"]
    store.finish_success(job, None, 0)  # between two opcodes: queued, as Ganeti's
    assert _cli(data_dir, capsys, *argv)[1].split() == ["queued", "success,queued"]
    store.start_op(job, 1)
    assert _cli(data_dir, capsys, *argv)[1].split() == ["waiting", "success,waiting"]
