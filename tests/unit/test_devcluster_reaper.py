"""The devcluster's subreaper: a daemon's orphans are reaped as soon as they exit,
and how each ended is recorded."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from support.waiting import parent_command, parent_pid, wait_until

from ganeti_lv.devcluster import netns
from ganeti_lv.devcluster.reaper import RESTART_BURST, RESTART_INTERVAL, describe_end


def _reaper(*argv: str, timeout: float = 10) -> subprocess.CompletedProcess[str]:
    """The reaper with ``argv`` as its arguments (after its own options, if any)."""
    if argv[:1] not in (("--log",), ("--restart-crashed",)):
        argv = ("--", *argv)
    return subprocess.run(
        [sys.executable, "-m", "ganeti_lv.devcluster.reaper", *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_failure_of_the_command_is_reported_like_the_command_alone() -> None:
    res = _reaper("sh", "-c", "echo cannot bind >&2; exit 3")
    assert res.returncode == 3
    assert "cannot bind" in res.stderr


def test_missing_command_fails_clearly() -> None:
    res = _reaper("/nonexistent/daemon")
    assert res.returncode == 127
    assert "/nonexistent/daemon" in res.stderr


def test_no_command_is_a_usage_error() -> None:
    assert _reaper().returncode == 2


def test_orphans_of_a_daemonising_command_are_adopted_and_reaped_at_once(tmp_path) -> None:
    pidfile = tmp_path / "orphan.pid"
    gate = tmp_path / "gate"
    # Like a daemon: the command starts a background process and returns; the
    # process outlives it (an orphan) and exits when told to.
    # (A daemon detaches from its caller's output as well.)
    loop = f"echo $$ > {pidfile}; while [ ! -e {gate} ]; do sleep 0.02; done"
    script = f"(sh -c '{loop}' </dev/null >/dev/null 2>&1 &); exit 0"
    res = _reaper("sh", "-c", script)
    assert res.returncode == 0, res.stderr
    assert wait_until(lambda: pidfile.exists() and pidfile.read_text().strip(), 5)
    orphan = int(pidfile.read_text())
    reaper = parent_pid(orphan)
    assert reaper is not None and reaper != 1
    assert b"ganeti_lv.devcluster.reaper" in parent_command(orphan)
    gate.touch()
    # Reaped by the subreaper (no zombie left for PID 1 to collect later),
    # and the subreaper leaves once it has no children.
    assert wait_until(lambda: not os.path.exists(f"/proc/{orphan}"), 10.0)
    assert wait_until(lambda: not netns.proc_alive(reaper), 10.0)


def _recorded_ends(log) -> dict[str, str]:
    """PID -> how it ended, from the reaper's log ("<time> <name>[<pid>] <end>")."""
    ends = {}
    for line in log.read_text().splitlines() if log.exists() else []:
        _, who, end = line.split(" ", 2)
        name, _, pid = who.rstrip("]").partition("[")
        ends[pid] = f"{name}: {end}"
    return ends


def test_how_each_reaped_process_ended_is_recorded(tmp_path) -> None:
    """A daemon that crashes leaves a record of its end: name, PID, the signal."""
    log = tmp_path / "reaper.log"
    pids = tmp_path / "pids"
    # two orphans: one exits with status 3, the other dies of SIGSEGV (as a crash)
    script = (
        f"(sh -c 'echo $$ > {pids}.exit; exit 3' </dev/null >/dev/null 2>&1 &);"
        f"(sh -c 'echo $$ > {pids}.segv; kill -SEGV $$' </dev/null >/dev/null 2>&1 &)"
    )
    res = _reaper("--log", str(log), "--", "sh", "-c", script)
    assert res.returncode == 0, res.stderr
    assert wait_until(lambda: len(_recorded_ends(log)) == 2, 5)
    ends = _recorded_ends(log)
    exited = (tmp_path / "pids.exit").read_text().strip()
    crashed = (tmp_path / "pids.segv").read_text().strip()
    assert ends == {exited: "sh: exited 3", crashed: "sh: killed by signal 11 (SIGSEGV)"}


def test_describe_end_names_the_signal_and_a_core_dump() -> None:
    assert describe_end(0) == "exited 0"
    assert describe_end(2 << 8) == "exited 2"
    assert describe_end(signal.SIGKILL) == "killed by signal 9 (SIGKILL)"
    assert describe_end(signal.SIGABRT | 0x80) == "killed by signal 6 (SIGABRT), core dumped"


def test_a_log_that_cannot_be_opened_fails_the_start(tmp_path) -> None:
    res = _reaper("--log", str(tmp_path / "missing" / "reaper.log"), "--", "true")
    assert res.returncode == 127
    assert "missing/reaper.log: No such file or directory" in res.stderr


def test_a_log_that_cannot_be_written_stops_the_records_not_the_reaping(tmp_path) -> None:
    """/dev/full opens but takes no line: the reaper still adopts and reaps orphans."""
    pidfile = tmp_path / "orphan.pid"
    gate = tmp_path / "gate"
    loop = f"echo $$ > {pidfile}; while [ ! -e {gate} ]; do sleep 0.02; done"
    # a first orphan ends at once (its record fails), the second waits for the gate
    script = f"(true &); (sh -c '{loop}' </dev/null >/dev/null 2>&1 &)"
    res = _reaper("--log", "/dev/full", "--", "sh", "-c", script)
    assert res.returncode == 0, res.stderr
    assert wait_until(lambda: pidfile.exists() and pidfile.read_text().strip(), 5)
    orphan = int(pidfile.read_text())
    time.sleep(0.3)  # the first orphan's end has been met meanwhile
    reaper = parent_pid(orphan)
    assert reaper is not None and reaper != 1
    gate.touch()
    assert wait_until(lambda: not os.path.exists(f"/proc/{orphan}"), 10.0)
    assert wait_until(lambda: not netns.proc_alive(reaper), 10.0)


@pytest.mark.parametrize("argv", [["--log"], ["--log", "--", "true"], ["--log", "", "true"]])
def test_a_log_option_without_a_file_is_a_usage_error(argv: list[str]) -> None:
    res = _reaper(*argv)
    assert res.returncode == 2
    assert res.stderr.startswith("usage:")


def _daemon_script(tmp_path, crashes: str) -> str:
    """A daemonising command whose daemon records its PID (in ``pids`` and its pid file
    ``daemon.pid``), crashes (SIGSEGV) while ``crashes`` (a shell test) holds, else
    waits for the gate."""
    pids, pidfile, gate = tmp_path / "pids", tmp_path / "daemon.pid", tmp_path / "gate"
    loop = (
        f"echo $$ >> {pids}; echo $$ > {pidfile}; if {crashes}; then kill -SEGV $$; fi;"
        f" while [ ! -e {gate} ]; do sleep 0.02; done"
    )
    return f"(sh -c '{loop}' </dev/null >/dev/null 2>&1 &); exit 0"


def _started(tmp_path) -> list[str]:
    path = tmp_path / "pids"
    return path.read_text().split() if path.exists() else []


def _restarting(tmp_path, log, script: str) -> subprocess.CompletedProcess[str]:
    pidfile = str(tmp_path / "daemon.pid")
    return _reaper("--log", str(log), "--restart-crashed", pidfile, "--", "sh", "-c", script)


def test_a_crashed_daemon_is_started_again_as_init_would(tmp_path) -> None:
    log, marker = tmp_path / "reaper.log", tmp_path / "crashed-once"
    script = _daemon_script(tmp_path, f"[ ! -e {marker} ] && touch {marker}")
    res = _restarting(tmp_path, log, script)
    assert res.returncode == 0, res.stderr
    assert wait_until(lambda: len(_started(tmp_path)) == 2, 5)
    first, second = _started(tmp_path)
    assert _recorded_ends(log)[first] == "sh: killed by signal 11 (SIGSEGV); started again"
    reaper = parent_pid(int(second))
    assert reaper is not None and b"ganeti_lv.devcluster.reaper" in parent_command(int(second))
    (tmp_path / "gate").touch()  # the daemon ends cleanly: not started again
    assert wait_until(lambda: not netns.proc_alive(reaper), 10.0)
    assert _recorded_ends(log)[second] == "sh: exited 0"
    assert len(_started(tmp_path)) == 2


def test_a_daemon_crashing_again_and_again_stays_down(tmp_path) -> None:
    log = tmp_path / "reaper.log"
    res = _restarting(tmp_path, log, _daemon_script(tmp_path, "true"))
    assert res.returncode == 0, res.stderr
    assert wait_until(lambda: len(_recorded_ends(log)) == 1 + RESTART_BURST, 10)
    time.sleep(0.3)
    started = _started(tmp_path)
    assert len(started) == 1 + RESTART_BURST  # no start after the last record
    ends = _recorded_ends(log)
    assert [ends[pid] for pid in started[:-1]] == [
        "sh: killed by signal 11 (SIGSEGV); started again"
    ] * RESTART_BURST
    assert ends[started[-1]] == (
        f"sh: killed by signal 11 (SIGSEGV); not started again ({RESTART_BURST} restarts in"
        f" {RESTART_INTERVAL:g} s)"
    )


def test_a_daemon_killed_on_purpose_stays_down(tmp_path) -> None:
    log = tmp_path / "reaper.log"
    res = _restarting(tmp_path, log, _daemon_script(tmp_path, "false"))
    assert res.returncode == 0, res.stderr
    assert wait_until(lambda: len(_started(tmp_path)) == 1, 5)
    (daemon,) = _started(tmp_path)
    reaper = parent_pid(int(daemon))
    assert reaper is not None
    os.kill(int(daemon), signal.SIGKILL)
    assert wait_until(lambda: not netns.proc_alive(reaper), 10.0)
    assert _recorded_ends(log)[daemon] == "sh: killed by signal 9 (SIGKILL)"  # no restart
    assert _started(tmp_path) == [daemon]


def test_a_crash_of_another_process_than_the_daemon_starts_nothing(tmp_path) -> None:
    """An orphan of the daemon's (a fork that crashed) is not the daemon its pid file names."""
    log, gate = tmp_path / "reaper.log", tmp_path / "gate"
    orphan = "sh -c 'kill -SEGV $$' </dev/null >/dev/null 2>&1 &"
    script = _daemon_script(tmp_path, "false").replace("); exit 0", f"); ({orphan}); exit 0")
    res = _restarting(tmp_path, log, script)
    assert res.returncode == 0, res.stderr
    assert wait_until(lambda: len(_recorded_ends(log)) == 1, 5)
    ((_, end),) = _recorded_ends(log).items()
    assert end == "sh: killed by signal 11 (SIGSEGV)"
    time.sleep(0.3)
    assert len(_started(tmp_path)) == 1  # the daemon runs on, started once
    gate.touch()
    assert wait_until(lambda: len(_recorded_ends(log)) >= 2, 5)


@pytest.mark.parametrize("argv", [["--restart-crashed"], ["--restart-crashed", "--", "true"]])
def test_a_restart_option_without_a_pid_file_is_a_usage_error(argv: list[str]) -> None:
    res = _reaper(*argv)
    assert res.returncode == 2 and res.stderr.startswith("usage:")
