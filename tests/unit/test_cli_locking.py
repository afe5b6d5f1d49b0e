"""Locks across real ``gnt-lv`` processes: ``debug delay`` and ``--lock-timeout``.

OpTestDelay touches no node, so a data dir holding a configuration is all the
processes need. Timings come from the job log as ``gnt-lv job info`` shows it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest

from ganeti_lv.cli.main import main
from ganeti_lv.config import ConfigStore

DURATION = 2.0
HOLD = 600.0  # a holder that outlasts every check (killed when its test ends)
INST1, INST2 = "inst1.example.com", "inst2.example.com"
TS_FORMAT = "%Y-%m-%d %H:%M:%S.%f"


@dataclass
class JobTimes:
    """What ``gnt-lv job info`` reports about one job."""

    job_id: int
    status: str
    exec_start: float
    end: float


class GntLv:
    """Starts ``gnt-lv`` processes on one data dir and stops them all at the end."""

    def __init__(self, data_dir: str) -> None:
        self.data_dir = data_dir
        self.procs: list[subprocess.Popen[str]] = []

    def start(self, *argv: str) -> subprocess.Popen[str]:
        env = {k: v for k, v in os.environ.items() if k != "GANETI_LV_DATA_DIR"}
        proc = subprocess.Popen(
            [sys.executable, "-m", "ganeti_lv.cli.main", "--data-dir", self.data_dir, *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        self.procs.append(proc)
        return proc

    def delay(
        self, instance: str, *extra: str, duration: float = DURATION
    ) -> subprocess.Popen[str]:
        return self.start(*extra, "debug", "delay", "--duration", str(duration), "-I", instance)

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()


@pytest.fixture
def gnt(config: ConfigStore, data_dir: str) -> Iterator[GntLv]:
    runner = GntLv(data_dir)
    try:
        yield runner
    finally:
        runner.stop_all()


def finish(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=60)
    return proc.returncode, out, err


def job_times(data_dir: str, pid: int, capsys: Any) -> JobTimes:
    """Find the job run by ``pid`` with ``job list`` and read ``job info``."""
    capsys.readouterr()
    argv = ["--data-dir", data_dir, "job", "list", "-o", "id,pid", "--no-headers"]
    assert main([*argv, "--separator", "|"]) == 0
    rows = [line.split("|") for line in capsys.readouterr().out.splitlines()]
    ids = [int(job_id) for job_id, job_pid in rows if int(job_pid) == pid]
    assert len(ids) == 1, rows
    assert main(["--data-dir", data_dir, "job", "info", str(ids[0])]) == 0
    fields: dict[str, str] = {}
    for line in capsys.readouterr().out.splitlines():
        key, sep, value = line.strip().partition(": ")
        if sep and key not in fields:
            fields[key] = value

    def stamp(key: str) -> float:
        return datetime.strptime(fields[key], TS_FORMAT).timestamp()

    return JobTimes(ids[0], fields["Status"], stamp("Execution start"), stamp("Processing end"))


def test_same_instance_serializes(gnt: GntLv, data_dir: str, capsys: Any) -> None:
    procs = [gnt.delay("inst1"), gnt.delay("inst1")]
    for proc in procs:
        code, _, err = finish(proc)
        assert code == 0, err
    first, second = sorted(
        (job_times(data_dir, p.pid, capsys) for p in procs), key=lambda t: t.exec_start
    )
    assert first.status == second.status == "success"
    assert first.end - first.exec_start >= DURATION
    # the second ran only once the first had ended
    assert second.exec_start >= first.end


def test_different_instances_overlap(gnt: GntLv, data_dir: str, capsys: Any) -> None:
    holder = gnt.delay("inst1", duration=HOLD)  # runs until the test ends (killed)
    assert holder.stdout is not None
    line = holder.stdout.readline()  # printed once the lock is held
    assert f"Sleeping for {HOLD:g} s" in line, line
    other = gnt.delay("inst2", duration=0.1)
    code, _, err = finish(other)
    assert code == 0, err
    assert job_times(data_dir, other.pid, capsys).status == "success"
    assert holder.poll() is None  # it ran while the holder held inst1


def test_lock_timeout_fails_clearly(gnt: GntLv, data_dir: str, capsys: Any) -> None:
    holder = gnt.delay("inst1", duration=HOLD)
    assert holder.stdout is not None
    line = holder.stdout.readline()  # printed once the lock is held
    assert f"Sleeping for {HOLD:g} s" in line, line
    waiter = gnt.delay("inst1", "--lock-timeout", "0.5")
    code, out, err = finish(waiter)
    assert code == 1
    assert "Failure: temp_insufficient_resources:" in err
    assert f"Could not acquire the instance lock '{INST1}' within 0.5 s" in err
    assert "Traceback" not in err and "Sleeping" not in out
    assert holder.poll() is None  # the waiter gave up while the holder still held the lock
    failed = job_status(data_dir, waiter.pid, capsys)
    assert failed == "error"


def job_status(data_dir: str, pid: int, capsys: Any) -> str:
    """The status of the job run by ``pid`` (a failed job has no execution start)."""
    capsys.readouterr()
    argv = ["--data-dir", data_dir, "job", "list", "-o", "pid,status", "--no-headers"]
    assert main([*argv, "--separator", "|"]) == 0
    rows = [line.split("|") for line in capsys.readouterr().out.splitlines()]
    return [status for job_pid, status in rows if int(job_pid) == pid][0]


def test_lock_timeout_option_reaches_the_client(
    config: ConfigStore, data_dir: str, capsys: Any
) -> None:
    from ganeti_lv.client import Client

    seen: dict[str, Any] = {}

    def factory(**kwargs: Any) -> Client:
        seen.update(kwargs)
        return Client(**kwargs)

    argv = ["--data-dir", data_dir, "--lock-timeout", "1.5", "debug", "delay", "--duration", "0"]
    assert main([*argv, "-I", "inst1", "-N", "node2"], client_factory=factory) == 0
    assert seen["lock_timeout"] == 1.5
    assert main(["--data-dir", data_dir, "debug", "delay", "--dry-run", "-I", "inst2"]) == 0
    assert f"Would hold instances: {INST2} nodes: (none)" in capsys.readouterr().out
    # submitted only: the job id, no result to show
    argv = ["--data-dir", data_dir, "debug", "delay", "--dry-run", "--submit", "-I", "inst2"]
    assert main(argv) == 0
    out = capsys.readouterr()
    assert "Would hold" not in out.out and "Unhandled error" not in out.err
    with pytest.raises(SystemExit) as info:
        main(["--data-dir", data_dir, "--lock-timeout", "-1", "debug", "delay"])
    assert info.value.code == 2
    assert "must be a finite number >= 0" in capsys.readouterr().err
