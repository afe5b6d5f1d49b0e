"""The installed ``gnt-lv`` program, through the master daemon and without it.

The daemon serves in a thread of the test process on the fake nodes (the
``server`` fixture); without it, ``gnt-lv`` runs its jobs in its own
process. Commands that touch no node (bad input, ``debug delay``, the job
log) must read the same either way: the same output, exit codes and cancel
behaviour. Migrations run on the fake nodes, so only through the daemon
here (or in-process through ``main`` with fake node operations); the
cluster tests run real ones both ways.
"""

from __future__ import annotations

import fcntl
import io
import os
import pty
import select
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.waiting import wait_until

from ganeti_lv import paths
from ganeti_lv.cli.main import main
from ganeti_lv.cli.submit import ABORT_REQUESTED
from ganeti_lv.client import Client
from ganeti_lv.config import ConfigStore
from ganeti_lv.constants import JOB_STATUS_RUNNING
from ganeti_lv.hypervisor.fake import FakeNodeOps
from ganeti_lv.master import daemon as masterd
from ganeti_lv.master.jobs import JobStore
from ganeti_lv.opcodes import OpTestDelay

INST = "inst1.example.com"
N1, N2 = "node1.example.com", "node2.example.com"
GNT_LV = str(Path(sys.executable).parent / "gnt-lv")
BOTH_WAYS = ["in-process", "daemon"]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "GANETI_LV_DATA_DIR"}
    return {**env, "PYTHONUNBUFFERED": "1"}


def _start(data_dir: str, *argv: str, **kwargs: Any) -> subprocess.Popen[str]:
    options: dict[str, Any] = {
        "stdin": subprocess.DEVNULL,
        "stdout": subprocess.PIPE,
        "stderr": subprocess.PIPE,
    }
    options.update(kwargs)
    return subprocess.Popen(
        [GNT_LV, "--data-dir", data_dir, *argv], text=True, env=_env(), **options
    )


def _run(data_dir: str, *argv: str) -> tuple[int, list[str], str]:
    """gnt-lv's exit code, stdout lines without their time stamps, and stderr."""
    proc = _start(data_dir, *argv)
    out, err = proc.communicate(timeout=60)
    return proc.returncode, _untimed(out), err


def _untimed(text: str) -> list[str]:
    """Feedback lines without their ctime() stamp (24 characters and a space)."""
    return [
        line[25:] if line[:3].isalpha() and line[24:25] == " " else line
        for line in text.splitlines()
    ]


def _jobs(data_dir: str) -> list[Any]:
    return JobStore(paths.jobs_dir(data_dir)).list()


@pytest.fixture
def daemon_for(config: ConfigStore, data_dir: str, inst1_running: FakeNodeOps) -> Iterator[Any]:
    """``daemon_for(way)``: a master daemon (on the fake nodes) for the way "daemon"."""
    started: list[Any] = []

    def start(way: str) -> Any:
        if way == "in-process":
            return None
        srv = masterd.serve(data_dir, node_ops=inst1_running)
        thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05})
        thread.start()
        started.append((srv, thread))
        return srv

    yield start
    for srv, thread in started:
        srv.shutdown()
        srv.server_close()
        thread.join(5)


# ------------------------------------------------------------------ both ways


@pytest.mark.parametrize(
    ("argv", "code", "expected"),
    [
        (("instance", "migrate", "-f", "-n", N2, "ghost"), 1, "error type: unknown_entity"),
        (
            ("instance", "migrate", "-f", "-n", N2, INST, "--migration-mode", "x"),
            2,
            "invalid choice",
        ),
        (("instance", "migrate", "-f"), 2, "the following arguments are required: INSTANCE"),
        (("--lock-timeout", "-1", "debug", "delay"), 2, "must be a finite number >= 0"),
        (("debug", "delay", "--duration", "0.2", "-I", "inst1"), 0, "Sleeping for 0.2 s"),
        (("debug", "delay", "-I", "ghost"), 1, "Instance 'ghost' not known"),
    ],
)
def test_gnt_lv_reads_the_same_through_the_daemon_and_without_it(
    daemon_for: Any, data_dir: str, argv: tuple[str, ...], code: int, expected: str
) -> None:
    results = {}
    for way in BOTH_WAYS:
        daemon_for(way)
        results[way] = _run(data_dir, *argv)
    assert results["in-process"] == results["daemon"]
    got, out, err = results["daemon"]
    assert got == code, err
    assert expected in "\n".join(out) + err


def test_the_job_runs_where_gnt_lv_sends_it(daemon_for: Any, data_dir: str) -> None:
    argv = ("debug", "delay", "--duration", "0", "-I", "inst1")
    assert _run(data_dir, *argv)[0] == 0
    assert _jobs(data_dir)[-1].pid != os.getpid()  # gnt-lv's own process ran it
    daemon_for("daemon")
    assert _run(data_dir, *argv)[0] == 0
    assert _jobs(data_dir)[-1].pid == os.getpid()  # the daemon (a thread of this test) ran it
    # the job log reads the same either way
    assert _run(data_dir, "job", "list", "--no-headers")[1][-2:] == [
        f"{job.id} success TEST_DELAY" for job in _jobs(data_dir)[-2:]
    ]
    # jobs named by id, an unknown one too, through the daemon
    first = _jobs(data_dir)[-2].id
    argv = ("job", "list", "--no-headers", "-o", "id,status", str(first), "99999")
    code, out, _ = _run(data_dir, *argv)
    assert (code, [line.split() for line in out]) == (0, [[str(first), "success"], ["99999", "-"]])


@pytest.mark.parametrize("way", BOTH_WAYS)
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_cancels_a_job_waiting_for_a_lock(
    daemon_for: Any, data_dir: str, way: str, sig: int
) -> None:
    """Ctrl-C (or SIGTERM) of gnt-lv: its job stops waiting and never runs."""
    daemon_for(way)
    holder = Client(data_dir=data_dir, node_ops=FakeNodeOps())
    release = threading.Event()
    holder.ctx.sleep = lambda _seconds: release.wait(30)  # it holds the lock until released
    hold = threading.Thread(
        target=holder.submit, args=(OpTestDelay(duration=3.0, instance_names=[INST]),)
    )
    hold.start()
    try:
        assert wait_until(lambda: len(_running(data_dir)) == 1, 10)
        proc = _start(data_dir, "debug", "delay", "--duration", "0", "-I", "inst1")
        assert wait_until(lambda: len(_running(data_dir)) == 2, 10)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
    finally:
        release.set()
        hold.join(10)
    assert proc.returncode == 1, out + err
    assert ABORT_REQUESTED in err
    assert "Failure: " in err
    waiting = _jobs(data_dir)[-1]
    assert waiting.status == "canceled"
    assert waiting.exec_ts is None  # never ran, though the lock became free


def _running(data_dir: str) -> list[Any]:
    return [j for j in _jobs(data_dir) if j.status == JOB_STATUS_RUNNING]


# ------------------------------------------------------------------ migrations (daemon)


def _read_until(stream: Any, word: str, timeout: float = 20) -> str:
    seen = ""
    deadline = time.monotonic() + timeout
    while word not in seen and time.monotonic() < deadline:
        line = stream.readline()
        if not line:
            break
        seen += line
    assert word in seen, seen
    return seen


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_or_sigterm_cancels_the_daemons_migration(
    server: Any, data_dir: str, config: ConfigStore, slow_migration: FakeNodeOps, sig: int
) -> None:
    proc = _start(data_dir, "instance", "migrate", "-f", "-n", N2, INST)
    _read_until(proc.stdout, "migration ")
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, out + err
    assert ABORT_REQUESTED in err
    assert "interrupted by the user" in err
    assert config.get_instance(INST).primary_node == N1  # type: ignore[union-attr]
    assert _jobs(data_dir)[-1].status == "canceled"


def test_a_closed_stdout_does_not_stop_the_daemons_migration(
    server: Any, data_dir: str, config: ConfigStore, slow_migration: FakeNodeOps
) -> None:
    """``gnt-lv instance migrate ... | head -1``: the migration ends where it was going."""
    slow_migration.migration_reports = slow_migration.migration_reports[:40]
    proc = _start(data_dir, "instance", "migrate", "-f", "-n", N2, INST)
    assert proc.stdout is not None and proc.stderr is not None
    _read_until(proc.stdout, "migration ")
    proc.stdout.close()  # the reader goes away; gnt-lv's next line meets a broken pipe
    err = proc.stderr.read()
    assert proc.wait(60) == 0, err
    assert "Traceback" not in err and "BrokenPipe" not in err
    assert config.get_instance(INST).primary_node == N2  # type: ignore[union-attr]
    assert _jobs(data_dir)[-1].status == "success"


def test_a_dropped_terminal_does_not_stop_the_daemons_migration(
    server: Any, data_dir: str, config: ConfigStore, slow_migration: FakeNodeOps
) -> None:
    """On a terminal (progress bars) a hang-up loses the output, not the job."""
    slow_migration.migration_reports = slow_migration.migration_reports[:60]
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    proc = subprocess.Popen(
        [GNT_LV, "--data-dir", data_dir, "instance", "migrate", "-f", "-n", N2, INST],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=_env(),
    )
    os.close(slave)
    seen = b""
    deadline = time.monotonic() + 20
    while b"migrating" not in seen and time.monotonic() < deadline:
        if select.select([master], [], [], 1.0)[0]:
            seen += os.read(master, 65536)
    assert b"migrating" in seen and "━".encode() in seen  # a progress bar, not lines
    os.close(master)  # the session is gone: writes fail from now on
    proc.send_signal(signal.SIGHUP)
    assert proc.wait(60) == 0
    assert config.get_instance(INST).primary_node == N2  # type: ignore[union-attr]
    assert _jobs(data_dir)[-1].status == "success"


@pytest.mark.parametrize("answer", ["n", "y"])
def test_a_question_goes_to_the_terminal_not_to_the_output(
    server: Any, data_dir: str, config: ConfigStore, tmp_path: Path, answer: str
) -> None:
    """``gnt-lv instance remove INST > out`` on a terminal: the question is on the terminal
    (a script reading stdout never gets it), the answer read from it."""
    out = tmp_path / "out"
    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover - the child: never back into the test session
        try:
            os.dup2(os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), 1)
            os.execve(GNT_LV, [GNT_LV, "--data-dir", data_dir, "instance", "remove", INST], _env())
        finally:
            os._exit(127)
    seen = b""
    try:
        deadline = time.monotonic() + 30
        while b"y/[n]" not in seen and time.monotonic() < deadline:
            if select.select([fd], [], [], 1.0)[0]:
                seen += os.read(fd, 4096)
        assert b"y/[n]" in seen and INST.encode() in seen
        os.write(fd, answer.encode() + b"\n")
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(fd)
    assert "y/[n]" not in out.read_text()
    assert os.waitstatus_to_exitcode(status) == (0 if answer == "y" else 1)
    assert (config.get_instance(INST) is None) == (answer == "y")


def test_ctrl_c_on_job_watch_stops_the_watching_not_the_job(
    server: Any, data_dir: str, held_delays: threading.Event
) -> None:
    """As Ganeti's gnt-job watch: the job watched may be somebody else's."""
    job_id = Client(data_dir).enqueue([OpTestDelay(duration=1.0)])
    store = JobStore(paths.jobs_dir(data_dir))
    assert wait_until(lambda: store.get(job_id).status == JOB_STATUS_RUNNING, 30)
    earlier = _watchers()  # of other tests' daemons, in this process too
    proc = _start(data_dir, "job", "watch", str(job_id))
    try:
        # following it: the daemon streams the job's records to the watcher
        assert wait_until(lambda: _watchers() - earlier, 30)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 1, (out, err)
    assert f"Stopped watching job {job_id}; it goes on" in err and "Traceback" not in err
    # the daemon read what the watcher sent up to its end: no cancel request among it
    assert wait_until(lambda: not _watchers() - earlier, 30)
    job = store.get(job_id)
    assert (job.status, job.cancel_ts) == (JOB_STATUS_RUNNING, None)
    held_delays.set()
    assert wait_until(lambda: store.get(job_id).status == "success", 30)


def _watchers() -> set[threading.Thread]:
    """The threads reading what clients of a daemon in this process send after their
    request (a watcher's, once it follows), up to the client's end."""
    return {t for t in threading.enumerate() if t.name.startswith("masterd-cancel")}


# ------------------------------------------------------------------ migrations (in-process)


class _ClosingPipe(io.StringIO):
    """A stdout whose reader goes away after ``lines`` lines (``| head -N``)."""

    def __init__(self, lines: int) -> None:
        super().__init__()
        self.left = lines

    def write(self, text: str) -> int:
        if self.left <= 0:
            raise BrokenPipeError(32, "Broken pipe")
        self.left -= text.count("\n")
        return super().write(text)


def test_in_process_a_closed_stdout_does_not_stop_the_migration(
    data_dir: str, config: ConfigStore, slow_migration: FakeNodeOps, capsys: Any
) -> None:
    slow_migration.migration_reports = slow_migration.migration_reports[:20]
    pipe = _ClosingPipe(1)
    old, sys.stdout = sys.stdout, pipe
    try:
        code = main(["--data-dir", data_dir, "instance", "migrate", "-f", "-n", N2, INST],
                    node_ops=slow_migration)  # fmt: skip
    finally:
        sys.stdout = old
    assert code == 0, capsys.readouterr().err
    assert len(pipe.getvalue().splitlines()) == 1
    assert config.get_instance(INST).primary_node == N2  # type: ignore[union-attr]
    job = _jobs(data_dir)[-1]
    assert job.status == "success"
    assert any(e[2].startswith("migration completed") for e in job.log)  # every line logged


def test_in_process_a_hang_up_does_not_stop_the_migration(
    data_dir: str, config: ConfigStore, slow_migration: FakeNodeOps, capsys: Any
) -> None:
    slow_migration.migration_reports = slow_migration.migration_reports[:20]
    before = signal.getsignal(signal.SIGHUP)
    code = main(["--data-dir", data_dir, "instance", "migrate", "-f", "-n", N2, INST],
                node_ops=_HangingUp(slow_migration))  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 0, err
    assert config.get_instance(INST).primary_node == N2  # type: ignore[union-attr]
    assert "migration completed" not in out  # nothing written after the hang-up
    assert _jobs(data_dir)[-1].status == "success"
    assert signal.getsignal(signal.SIGHUP) == before  # restored after the job


class _HangingUp:
    """The slow fake nodes, sending this process SIGHUP at the first migration progress."""

    def __init__(self, ops: FakeNodeOps) -> None:
        self._ops = ops
        self._sent = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ops, name)

    def migrate_instance(self, *args: Any, **kwargs: Any) -> Any:
        progress_fn = args[5]

        def progress(report: Any) -> None:
            if not self._sent:
                self._sent = True
                os.kill(os.getpid(), signal.SIGHUP)
            progress_fn(report)

        return self._ops.migrate_instance(*args[:5], progress, *args[6:], **kwargs)
