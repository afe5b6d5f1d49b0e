"""The devcluster's subreaper: a daemon's orphans are reaped as soon as they exit."""

from __future__ import annotations

import os
import subprocess
import sys

from support.waiting import parent_pid, wait_until

from ganeti_lv.devcluster import netns


def _reaper(*argv: str, timeout: float = 10) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ganeti_lv.devcluster.reaper", "--", *argv],
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
    with open(f"/proc/{reaper}/cmdline", "rb") as fh:
        assert b"ganeti_lv.devcluster.reaper" in fh.read()
    gate.touch()
    # Reaped by the subreaper (no zombie left for PID 1 to collect later),
    # and the subreaper leaves once it has no children.
    assert wait_until(lambda: not os.path.exists(f"/proc/{orphan}"), 1.0)
    assert wait_until(lambda: not netns.proc_alive(reaper), 2.0)
