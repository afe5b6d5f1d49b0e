"""signal_cancel: SIGTERM goes to a process running a job, never to the master daemon."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from support.waiting import wait_until

from ganeti_lv import paths
from ganeti_lv.errors import JobError
from ganeti_lv.master.follow import _program, signal_cancel
from ganeti_lv.master.jobs import Job, JobStore
from ganeti_lv.master.processes import process_start_time
from ganeti_lv.opcodes import OpTestDelay


@contextmanager
def _process(argv0: str) -> Iterator[subprocess.Popen[bytes]]:
    """A process whose command line starts with ``argv0`` (it sleeps)."""
    proc = subprocess.Popen(["bash", "-c", f"exec -a {argv0} sleep 30"])
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def _job_in(tmp_path: str, proc: subprocess.Popen[bytes]) -> Job:
    store = JobStore(paths.jobs_dir(tmp_path))
    job = store.create_job([OpTestDelay(duration=0)], start=True)
    job.pid, job.pid_start = proc.pid, process_start_time(proc.pid)
    return job


def _command_line_set(proc: subprocess.Popen[bytes], argv0: str) -> bool:
    try:
        with open(f"/proc/{proc.pid}/cmdline", "rb") as fobj:
            return fobj.read().startswith(argv0.encode())
    except OSError:
        return False


@pytest.mark.parametrize(
    "argv0", ["/opt/glv/bin/gnt-lv-masterd", "/opt/glv/bin/not-gnt-lv", "ganeti_lv.master.daemon"]
)
def test_the_master_daemon_and_other_programs_are_never_signalled(
    tmp_path: str, argv0: str
) -> None:
    with _process(argv0) as proc:
        assert wait_until(lambda: _command_line_set(proc, argv0), 5, 0.01)
        with pytest.raises(JobError, match="does not take cancel requests"):
            signal_cancel(_job_in(tmp_path, proc))
        assert proc.poll() is None


@pytest.mark.parametrize("argv0", ["/opt/glv/bin/gnt-lv", "ganeti_lv.master.background"])
def test_a_job_of_gnt_lv_or_a_background_job_is_signalled(tmp_path: str, argv0: str) -> None:
    with _process(argv0) as proc:
        assert wait_until(lambda: _command_line_set(proc, argv0), 5, 0.01)
        signal_cancel(_job_in(tmp_path, proc))
        assert proc.wait(5) == -15  # SIGTERM


def test_a_program_whose_argument_names_gnt_lv_is_never_signalled(tmp_path: str) -> None:
    """The master daemon run with ``--data-dir /srv/gnt-lv``, say: the program counts,
    not its arguments."""
    argv = [sys.executable, "-c", "import time; time.sleep(30)", "--data-dir", "/srv/gnt-lv"]
    proc = subprocess.Popen(argv)
    try:
        assert wait_until(lambda: _command_line_set(proc, sys.executable), 5, 0.01)
        with pytest.raises(JobError, match="does not take cancel requests"):
            signal_cancel(_job_in(tmp_path, proc))
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.wait()


def test_gnt_lv_run_by_its_python_is_signalled(tmp_path: Path) -> None:
    """As the console script runs: ``python3 /venv/bin/gnt-lv job watch 7``."""
    script = tmp_path / "gnt-lv"
    script.write_text("import time\ntime.sleep(30)\n")
    proc = subprocess.Popen([sys.executable, str(script), "job", "watch", "7"])
    try:
        assert wait_until(lambda: _command_line_set(proc, sys.executable), 5, 0.01)
        signal_cancel(_job_in(str(tmp_path), proc))
        assert proc.wait(5) == -15
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize(
    ("words", "program"),
    [
        ([b"/venv/bin/python3", b"/venv/bin/gnt-lv", b"job", b"watch"], b"/venv/bin/gnt-lv"),
        ([b"python3", b"-I", b"-u", b"/venv/bin/gnt-lv"], b"/venv/bin/gnt-lv"),
        ([b"python3", b"-X", b"utf8", b"-m", b"ganeti_lv.cli.main"], b"ganeti_lv.cli.main"),
        ([b"python3", b"-c", b"pass", b"/srv/gnt-lv"], None),
        (
            [b"python3", b"/venv/bin/gnt-lv-masterd", b"--data-dir", b"/srv/gnt-lv"],
            b"/venv/bin/gnt-lv-masterd",
        ),
        ([b"/opt/glv/bin/gnt-lv", b"instance", b"migrate"], b"/opt/glv/bin/gnt-lv"),
    ],
)
def test_the_program_of_a_command_line(words: list[bytes], program: bytes | None) -> None:
    """The command, or what its Python runs after its options; never an argument."""
    assert _program(words) == program


def test_a_followed_job_that_cannot_be_asked_to_stop_is_followed_to_its_end(
    tmp_path: Path,
) -> None:
    from ganeti_lv.cancel import Cancellation
    from ganeti_lv.master.follow import follow_logged

    store = JobStore(str(tmp_path / "jobs"))
    job = store.create_job([OpTestDelay()], start=True)  # run by this process: no requests
    cancel = Cancellation()
    cancel.request("interrupted by the user")
    records: list[object] = []

    def sleep(_seconds: float) -> None:
        store.finish_success(job, True)  # the job ends on its own

    assert follow_logged(store.get, job.id, records.append, cancel, sleep=sleep) == [True]
    texts = [getattr(record, "text", "") for record in records]
    assert any("Cannot ask it to stop" in text and "cancel requests" in text for text in texts)


def test_a_job_whose_process_ends_while_it_is_asked_to_stop_is_a_job_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ganeti_lv.master import follow

    store = JobStore(str(tmp_path / "jobs"))
    job = store.create_job([OpTestDelay()], start=True)
    monkeypatch.setattr(follow, "_cancelable", lambda _pid: True)

    def gone(_pid: int, _sig: int) -> None:
        raise ProcessLookupError(3, "No such process")

    monkeypatch.setattr(follow.os, "kill", gone)
    with pytest.raises(JobError, match="is gone"):
        signal_cancel(job)
