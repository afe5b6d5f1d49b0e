"""Temp files that writers killed mid-write leave, and the master daemon's periodic pass."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from support.masterd import start_program
from support.waiting import wait_until

from ganeti_lv import paths
from ganeti_lv.config import ConfigStore, write_file_atomically
from ganeti_lv.master import daemon as masterd
from ganeti_lv.master import housekeeping
from ganeti_lv.master.jobs import JobStore
from ganeti_lv.opcodes import OpTestDelay

MP = multiprocessing.get_context("fork")


@pytest.fixture
def store(data_dir: str) -> JobStore:
    return JobStore(paths.jobs_dir(data_dir))


def _killed_while_writing(target: Any, *args: Any) -> None:
    def die(*_args: Any) -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    os.replace = die  # the child dies where a writer's rename would be
    target(*args)


def _kill_writer(target: Any, *args: Any) -> None:
    proc = MP.Process(target=_killed_while_writing, args=(target, *args))
    proc.start()
    proc.join(30)
    assert proc.exitcode == -signal.SIGKILL


def _save_config(data_dir: str) -> None:
    store = ConfigStore(data_dir)
    with store.update() as data:
        data.cluster.tags.append("x")


def test_temp_files_of_killed_writers_are_removed_once_stale(
    config: ConfigStore, data_dir: str, store: JobStore
) -> None:
    job = store.create_job([OpTestDelay()], start=True)
    _kill_writer(_save_config, data_dir)
    _kill_writer(store.create_job, [OpTestDelay()])
    _kill_writer(store.save, job)
    left = sorted(os.listdir(data_dir)) + sorted(os.listdir(store.jobs_dir))
    temps = [name for name in left if name.endswith(".tmp")]
    assert len(temps) == 3, left
    # others that must stay: not a writer's temp name, or not a file
    keep = [
        os.path.join(data_dir, ".config.json.tmp"),
        os.path.join(data_dir, "config.json.abcdefgh.tmp"),
        os.path.join(store.jobs_dir, ".job-1.json.ABCDEFGH.tmp"),
    ]
    for path in keep:
        Path(path).write_text("x")
    os.mkdir(os.path.join(store.jobs_dir, ".job-2.json.abcdefgh.tmp"))
    assert housekeeping.remove_stale_temps(data_dir) == []  # young: a writer may be at it
    later = time.time() + housekeeping.STALE_TEMP_AGE + 1
    assert sorted(housekeeping.remove_stale_temps(data_dir, now=later)) == sorted(temps)
    assert all(os.path.exists(path) for path in keep)
    assert ConfigStore(data_dir).get_cluster().tags == config.get_cluster().tags
    assert [j.id for j in store.list()] == [job.id]


def test_an_atomic_write_leaves_no_temp_file(tmp_path: Path) -> None:
    write_file_atomically(str(tmp_path / "f"), b"data")
    assert os.listdir(tmp_path) == ["f"]


def test_the_pass_runs_at_once_then_every_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    runs: list[str] = []
    monkeypatch.setattr(housekeeping, "housekeeping_pass", runs.append)
    now = [100.0]
    keeper = housekeeping.Housekeeper(
        "/ddir", interval=300, clock=lambda: now[0], before_pass=lambda: runs.append("own")
    )
    keeper.tick()
    keeper.join()
    now[0] += 299
    keeper.tick()
    keeper.join()
    assert runs == ["own", "/ddir"]  # the daemon's own step first
    now[0] += 1
    keeper.tick()
    keeper.join()
    assert runs == ["own", "/ddir", "own", "/ddir"]


def test_a_failing_step_of_the_daemon_leaves_the_pass_running(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    runs: list[str] = []
    monkeypatch.setattr(housekeeping, "housekeeping_pass", runs.append)

    def broken() -> None:
        raise RuntimeError("broken step")

    housekeeping.Housekeeper("/ddir", before_pass=broken).run_pass()
    assert runs == ["/ddir"]
    assert "the periodic pass over the data dir failed" in caplog.text


def test_a_pass_that_cannot_start_a_thread_leaves_the_daemon_serving(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # tick runs in the daemon's serve loop: an error from it would end the loop
    runs: list[str] = []
    monkeypatch.setattr(housekeeping, "housekeeping_pass", runs.append)
    now = [100.0]
    keeper = housekeeping.Housekeeper("/ddir", interval=300, clock=lambda: now[0])
    start = threading.Thread.start

    def no_thread(_thread: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threading.Thread, "start", no_thread)
    keeper.tick()  # no error
    monkeypatch.setattr(threading.Thread, "start", start)
    keeper.tick()
    keeper.join()
    assert runs == []  # the next pass waits for its time
    now[0] += 300
    keeper.tick()
    keeper.join()
    assert runs == ["/ddir"]


def test_the_daemon_removes_stale_temp_files_at_start(program: str) -> None:
    jobs_dir = paths.jobs_dir(program)
    os.mkdir(jobs_dir)
    stale = [
        os.path.join(program, ".config.json.k1l2e3d4.tmp"),
        os.path.join(jobs_dir, "job-3.json.77.1401.tmp"),
    ]
    for path in stale:
        Path(path).write_text("{}")
        old = time.time() - housekeeping.STALE_TEMP_AGE - 60
        os.utime(path, (old, old))
    fresh = os.path.join(jobs_dir, ".job-2.json.abcd1234.tmp")
    Path(fresh).write_text("{}")
    assert start_program(program).returncode == 0
    try:
        assert wait_until(lambda: not any(os.path.exists(path) for path in stale), 15)
        assert os.path.exists(fresh)
    finally:
        assert masterd.stop(program) is not None
