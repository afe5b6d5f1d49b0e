"""The job log's archive (gnt-lv job archive/autoarchive, the daemon's pass), and the end of
lost jobs recorded."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from support.masterd import start_program
from support.waiting import wait_until
from werkzeug.test import Client as WsgiClient

from ganeti_lv import Client, paths
from ganeti_lv.cli.job import grouped
from ganeti_lv.cli.main import main
from ganeti_lv.config import ConfigStore
from ganeti_lv.errors import ECODE_NOENT, ECODE_STATE
from ganeti_lv.master import daemon as masterd
from ganeti_lv.master.archive import archive_jobs, archive_lock, auto_archive, record_lost
from ganeti_lv.master.jobs import Job, JobStore
from ganeti_lv.opcodes import OpTestDelay
from ganeti_lv.rapi import jobfields
from ganeti_lv.rapi import users as rapi_users
from ganeti_lv.rapi.server import RapiApplication

HOUR = 3600.0


@pytest.fixture
def store(data_dir: str) -> JobStore:
    return JobStore(paths.jobs_dir(data_dir))


def _finished(store: JobStore, ended_ago: float = 0.0, parent: int | None = None) -> Job:
    job = store.create_job([OpTestDelay()], start=True, parent=parent)
    store.finish_success(job, True)
    job.end_ts = time.time() - ended_ago
    store.save(job)
    return job


def _lost(store: JobStore, parent: int | None = None) -> Job:
    """A job whose process is gone (as after a SIGKILL): recorded running, nothing else."""
    job = store.create_job([OpTestDelay(), OpTestDelay()], start=True, parent=parent)
    store.start_op(job, 0)
    job.pid, job.pid_start = 2**22 + 7, None  # no such process
    store.save(job)
    return job


def _file(store: JobStore, job_id: int) -> dict[str, Any]:
    with open(store.path(job_id), encoding="utf-8") as fobj:
        return json.load(fobj)


# ------------------------------------------------------------------ archiving


def test_an_archived_job_leaves_the_list_and_is_still_found_by_its_id(store: JobStore) -> None:
    old, kept = _finished(store), _finished(store)
    assert archive_jobs(store, [old.id]) == {old.id: None}
    archived_path = os.path.join(store.jobs_dir, "archive", "0", f"job-{old.id}.json")
    assert os.path.exists(archived_path) and not os.path.exists(store.path(old.id))
    assert [job.id for job in store.list()] == [kept.id]
    assert [(job.id, job.archived) for job in store.list(archived=True)] == [
        (old.id, True),
        (kept.id, False),
    ]
    found = store.get(old.id)
    assert (found.archived, found.status, found.result) == (True, "success", True)
    assert "archived" not in json.loads(Path(archived_path).read_text())  # the place says it


def test_a_job_archived_while_the_list_is_read_is_listed_once_from_the_archive(
    store: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    moving, kept = _finished(store), _finished(store)
    files = store._files

    def files_then_archived(archived: bool) -> list[tuple[int, bool]]:
        found = files(archived)  # the directories as read before the move
        monkeypatch.setattr(store, "_files", files)
        assert archive_jobs(store, [moving.id]) == {moving.id: None}  # by another process
        return found

    monkeypatch.setattr(store, "_files", files_then_archived)
    assert [(job.id, job.archived) for job in store.list(archived=True)] == [
        (moving.id, True),
        (kept.id, False),
    ]


def test_archive_buckets_ids_by_ten_thousand(store: JobStore) -> None:
    os.makedirs(store.jobs_dir)
    Path(store.jobs_dir, "serial").write_text("12344\n")
    job = _finished(store)
    assert job.id == 12345
    archive_jobs(store, [job.id])
    assert os.path.exists(os.path.join(store.jobs_dir, "archive", "1", "job-12345.json"))
    assert store.get(12345).archived


def test_only_finished_jobs_are_archived(store: JobStore) -> None:
    running = store.create_job([OpTestDelay()], start=True)  # this process runs it
    queued = store.create_job([OpTestDelay()])
    done = _finished(store, ended_ago=10 * HOUR)
    outcome = archive_jobs(store, [running.id, queued.id, 99])
    assert outcome[running.id] is not None and outcome[running.id].ecode == ECODE_STATE
    assert "running: only finished jobs are archived" in outcome[running.id].msg
    assert outcome[queued.id] is not None and outcome[queued.id].ecode == ECODE_STATE
    assert outcome[99] is not None and outcome[99].ecode == ECODE_NOENT
    assert auto_archive(store, None) == 1  # 'all': every finished job, none running
    assert [job.id for job in store.list()] == [running.id, queued.id]
    assert store.get(done.id).archived
    again = archive_jobs(store, [done.id])[done.id]
    assert again is not None and again.ecode == ECODE_STATE and "already archived" in again.msg


def test_auto_archive_takes_the_jobs_that_ended_long_enough_ago(store: JobStore) -> None:
    old = _finished(store, ended_ago=7 * HOUR)
    young = _finished(store, ended_ago=5 * HOUR)
    failed = store.create_job([OpTestDelay()], start=True)
    store.finish_error(failed, RuntimeError("no"))
    failed.end_ts = time.time() - 8 * HOUR
    store.save(failed)
    assert auto_archive(store, 6 * HOUR) == 2
    assert [job.id for job in store.list()] == [young.id]
    assert {old.id, failed.id} <= set(store.job_ids(archived=True))


def test_ids_never_repeat_after_archiving(store: JobStore) -> None:
    for _ in range(3):
        _finished(store)
    assert auto_archive(store, None) == 3
    os.unlink(os.path.join(store.jobs_dir, "serial"))  # lost counter: rebuilt from the files
    assert store.create_job([OpTestDelay()]).id == 4
    Path(store.jobs_dir, "serial").write_text("1\n")  # a counter that lags behind
    assert store.create_job([OpTestDelay()]).id == 5
    assert store.job_ids(archived=True) == [1, 2, 3, 4, 5]


def test_an_empty_bucket_of_the_archive_does_not_hide_the_archived_ids(store: JobStore) -> None:
    """A bucket made by a move that then failed holds no job: the one below it counts
    (id 2 was given to a job whose creation failed)."""
    for _ in range(3):
        _finished(store)
    os.unlink(store.path(2))
    assert auto_archive(store, None) == 2
    os.makedirs(os.path.join(store.jobs_dir, "archive", "7"))
    os.unlink(os.path.join(store.jobs_dir, "serial"))
    assert store.create_job([OpTestDelay()]).id == 4


def test_node_operation_moves_go_with_or_after_their_job(store: JobStore) -> None:
    parent = store.create_job([OpTestDelay()], start=True)
    move_old = _finished(store, ended_ago=9 * HOUR, parent=parent.id)
    move_young = _finished(store, ended_ago=0, parent=parent.id)
    move_running = store.create_job([OpTestDelay()], start=True, parent=parent.id)
    # the moves stay while their node operation's job does (it runs)
    assert auto_archive(store, 6 * HOUR) == 0
    refused = archive_jobs(store, [move_old.id])[move_old.id]
    assert refused is not None and refused.ecode == ECODE_STATE
    assert f"archived with job {parent.id}" in refused.msg
    store.finish_success(parent, True)
    parent.end_ts = time.time() - 7 * HOUR
    store.save(parent)
    # the job goes, its finished moves with it (also the young one), the running one stays
    assert auto_archive(store, 6 * HOUR) == 3
    assert [job.id for job in store.list()] == [move_running.id]
    assert all(store.get(j.id).archived for j in (parent, move_old, move_young))
    # job list's tree: never a node operation without one of its finished moves
    tree = [(job.id, depth) for job, depth in grouped(store.list(archived=True))]
    assert tree == [(parent.id, 0), (move_old.id, 1), (move_young.id, 1), (move_running.id, 1)]


def test_archiving_a_node_operation_by_id_takes_its_moves(store: JobStore) -> None:
    parent = _finished(store)
    move = _finished(store, parent=parent.id)
    other = _finished(store)
    assert archive_jobs(store, [move.id, parent.id]) == {parent.id: None, move.id: None}
    assert [job.id for job in store.list()] == [other.id]


# ------------------------------------------------------------------ lost jobs


def test_a_lost_job_is_recorded_as_ended_with_an_error(store: JobStore) -> None:
    job = _lost(store)
    before = store.get(job.id)
    assert before.status == "lost" and before.end_ts is None
    assert auto_archive(store, 6 * HOUR) == 0  # just ended: recorded, not archived
    data = _file(store, job.id)
    assert data["status"] == "lost" and data["end_ts"] is not None
    assert [op["status"] for op in data["ops"]] == ["error", "error"]
    message = f"Job {job.id} is lost: the process running it (pid {2**22 + 7}) is gone"
    assert [op["error"]["message"] for op in data["ops"]] == [message, message]
    assert all(op["end_ts"] == data["end_ts"] for op in data["ops"])
    # the remote API shows it as before: Ganeti's error, with that error
    fields = jobfields.render(store.get(job.id))
    assert fields["status"] == "error" and fields["opstatus"] == ["error", "error"]
    assert fields["opresult"][0] == ["OpExecError", [message]]
    assert fields["end_ts"] is not None


def test_a_lost_job_keeps_an_end_its_process_recorded_before_it_went(store: JobStore) -> None:
    """Read as lost from an old copy: the file read again says how it ended."""
    job = _lost(store)
    seen = store.get(job.id)
    assert seen.status == "lost"
    done = store.get(job.id)
    done.status, done.end_ts = "success", time.time()
    for op in done.ops:
        op.status = "success"
    store.save(done)
    with archive_lock(store):
        assert record_lost(store, seen).status == "success"
    assert _file(store, job.id)["status"] == "success"


# ------------------------------------------------------------------ the daemon's pass


def test_the_daemon_archives_old_jobs_and_records_lost_ones_at_start(program: str) -> None:
    store = JobStore(paths.jobs_dir(program))
    old, young, lost = _finished(store, ended_ago=7 * HOUR), _finished(store), _lost(store)
    assert start_program(program).returncode == 0
    try:
        assert wait_until(lambda: store.get(old.id).archived, 15)
        assert wait_until(lambda: _file(store, lost.id)["end_ts"] is not None, 15)
        assert [job.id for job in Client(data_dir=program).jobs()] == [young.id, lost.id]
        assert Client(data_dir=program).job(old.id).archived  # through the daemon
        everything = Client(data_dir=program).jobs(archived=True)
        assert [job.id for job in everything] == [old.id, young.id, lost.id]
    finally:
        assert masterd.stop(program) is not None


# ------------------------------------------------------------------ CLI and remote API


def _cli(data_dir: str, capsys: Any, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["--data-dir", data_dir, *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_gnt_lv_job_archive_autoarchive_and_list_archived(
    config: ConfigStore, data_dir: str, store: JobStore, capsys: Any
) -> None:
    first, second = _finished(store, ended_ago=2 * HOUR), _finished(store, ended_ago=90)
    running = store.create_job([OpTestDelay()], start=True)
    code, _, err = _cli(data_dir, capsys, "job", "archive", str(first.id), str(running.id))
    assert code == 1
    assert f"Job {running.id} not archived (wrong_state)" in err
    code, out, _ = _cli(data_dir, capsys, "job", "list", "--no-headers", "-o", "id")
    assert out.split() == [str(second.id), str(running.id)]
    code, out, _ = _cli(data_dir, capsys, "job", "list", "--archived", "-o", "id", "--no-headers")
    assert [line.split() for line in out.splitlines()] == [
        [str(first.id), "Y"],
        [str(second.id), "N"],
        [str(running.id), "N"],
    ]
    code, out, _ = _cli(data_dir, capsys, "job", "info", str(first.id))
    assert code == 0 and "Status: success" in out
    code, out, _ = _cli(data_dir, capsys, "job", "autoarchive", "1h")
    assert (code, out) == (0, "Archived 0 jobs, 0 unchecked left\n")
    code, out, _ = _cli(data_dir, capsys, "job", "autoarchive", "1m")
    assert (code, out) == (0, "Archived 1 jobs, 0 unchecked left\n")
    for bad in ("1x", "h", "-1", ""):
        code, _, err = _cli(data_dir, capsys, "job", "autoarchive", bad)
        assert code != 0 and "Invalid time specification" in err
    code, out, _ = _cli(data_dir, capsys, "job", "autoarchive", "all")
    assert out == "Archived 0 jobs, 0 unchecked left\n"  # the running job stays
    assert [job.id for job in store.list()] == [running.id]


def test_the_remote_api_lists_unarchived_jobs_and_finds_archived_ones(
    config: ConfigStore, data_dir: str, store: JobStore
) -> None:
    old, new = _finished(store), _finished(store)
    archive_jobs(store, [old.id])
    users_path = paths.rapi_users_file(data_dir)
    rapi_users.add_user(users_path, rapi_users.user_line("ops", "secret", write=False, plain=True))
    app = RapiApplication(masterd.MasterDaemon(data_dir), rapi_users.UsersFile(users_path))
    client = WsgiClient(app)
    auth = {"Authorization": "Basic b3BzOnNlY3JldA=="}  # ops:secret
    listed = client.get("/2/jobs", headers=auth).json
    assert listed == [{"id": new.id, "uri": f"/2/jobs/{new.id}"}]
    answer = client.get(f"/2/jobs/{old.id}", headers=auth)
    assert answer.status_code == 200 and answer.json["status"] == "success"
