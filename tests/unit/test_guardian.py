"""The test harness's guardian: a dead test process's clean-up still runs."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from support.guardian import terminate_if_same

TESTS_DIR = str(Path(__file__).resolve().parent.parent)


def _child(code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a new Python with tests/ on its path (as pytest has it)."""
    prelude = f"import os, signal, sys\nsys.path.insert(0, {TESTS_DIR!r})\n"
    return subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def _appears(path: Path, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "cleaned-up"


def test_a_killed_process_gets_its_clean_up(tmp_path: Path, marker: Path) -> None:
    scratch = tmp_path / "cluster-dir"
    scratch.mkdir()
    res = _child(
        f"""
        from support.guardian import Guardian
        Guardian(["touch", {str(marker)!r}], remove_dir={str(scratch)!r})
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    assert res.returncode == -9
    assert _appears(marker), res.stderr
    deadline = time.monotonic() + 10
    while scratch.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not scratch.exists()


def test_a_released_guardian_does_nothing(tmp_path: Path, marker: Path) -> None:
    scratch = tmp_path / "cluster-dir"
    scratch.mkdir()
    res = _child(
        f"""
        from support.guardian import guarded
        with guarded(["touch", {str(marker)!r}], {str(scratch)!r}):
            pass
        """
    )
    assert res.returncode == 0, res.stderr
    # release() waits for the guardian to end: nothing more can happen after it
    assert not marker.exists()
    assert scratch.exists()


def test_a_failed_tear_down_leaves_the_guardian_to_try_again(tmp_path: Path, marker: Path) -> None:
    """The block's own tear-down raised: the guardian runs once the process has ended."""
    res = _child(
        f"""
        from support.guardian import guarded
        try:
            with guarded(["touch", {str(marker)!r}]):
                raise RuntimeError("down failed")
        except RuntimeError:
            pass
        """
    )
    assert res.returncode == 0, res.stderr
    assert _appears(marker), res.stderr


def test_a_forked_child_holding_the_pipe_does_not_hold_up_the_release(marker: Path) -> None:
    res = _child(
        f"""
        import time
        from support.guardian import Guardian
        guardian = Guardian(["touch", {str(marker)!r}])
        child = os.fork()
        if child == 0:  # holds the write end of the guardian's pipe for 60 s
            time.sleep(60)
            os._exit(0)
        started = time.monotonic()
        guardian.release()
        print(round(time.monotonic() - started, 1))
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
        """
    )
    assert res.returncode == 0, res.stderr
    assert float(res.stdout) < 10
    assert not marker.exists()


def test_torn_down_at_exit_with_a_crash_inside_the_block(marker: Path, tmp_path: Path) -> None:
    teardown_ran = tmp_path / "teardown-ran"
    res = _child(
        f"""
        from support.teardown import torn_down_at_exit
        def teardown():
            open({str(teardown_ran)!r}, "w").close()
        with torn_down_at_exit(teardown, ["touch", {str(marker)!r}], {str(tmp_path / "d")!r}):
            os.kill(os.getpid(), signal.SIGSEGV)
        """
    )
    assert res.returncode == -11
    assert _appears(marker), res.stderr
    assert not teardown_ran.exists()


def test_torn_down_at_exit_at_interpreter_exit_runs_only_the_teardown(
    marker: Path, tmp_path: Path
) -> None:
    teardown_ran = tmp_path / "teardown-ran"
    res = _child(
        f"""
        from support.teardown import torn_down_at_exit
        def teardown():
            open({str(teardown_ran)!r}, "w").close()
        block = torn_down_at_exit(teardown, ["touch", {str(marker)!r}], {str(tmp_path / "d")!r})
        block.__enter__()
        sys.exit(0)  # the block never ends: atexit runs the teardown
        """
    )
    assert res.returncode == 0, res.stderr
    assert teardown_ran.exists()
    assert not marker.exists()


def test_the_guardian_is_out_of_the_test_runs_signals(marker: Path) -> None:
    """A session of its own: a signal to the run's process group (a timeout) misses it."""
    res = _child(
        f"""
        from support.guardian import Guardian
        guardian = Guardian(["touch", {str(marker)!r}])
        print(guardian._proc.pid, os.getsid(guardian._proc.pid), os.getsid(0))
        guardian.release()
        """
    )
    assert res.returncode == 0, res.stderr
    pid, guardian_sid, own_sid = (int(x) for x in res.stdout.split())
    assert guardian_sid == pid != own_sid
    assert not marker.exists()


def test_sshd_of_a_killed_test_process_is_stopped(tmp_path: Path) -> None:
    from support.sshd import sshd_available

    if not sshd_available():
        pytest.skip("needs root and OpenSSH's sshd")
    pid_file = tmp_path / "sshd-pid"
    res = _child(
        f"""
        from support.sshd import LocalSshd
        sshd = LocalSshd({str(tmp_path / "sshd")!r}).start()
        open({str(pid_file)!r}, "w").write(str(sshd.proc.pid))
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    assert res.returncode == -9, res.stderr
    pid = int(pid_file.read_text())
    deadline = time.monotonic() + 20
    while _alive(pid):
        assert time.monotonic() < deadline, f"sshd {pid} still runs"
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_failed_teardown_is_tried_again_by_the_guardian(marker: Path, tmp_path: Path) -> None:
    scratch = tmp_path / "d"
    scratch.mkdir()
    res = _child(
        f"""
        from support.teardown import torn_down_at_exit
        def teardown():
            raise RuntimeError("processes [4242] did not die")
        with torn_down_at_exit(teardown, ["touch", {str(marker)!r}], {str(scratch)!r}):
            pass
        """
    )
    assert res.returncode == 1 and "did not die" in res.stderr
    # the process has ended: its guardian, never released, runs the clean-up
    assert _appears(marker), res.stderr
    deadline = time.monotonic() + 10
    while scratch.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not scratch.exists()


def test_a_clean_up_that_fails_keeps_the_directory(tmp_path: Path) -> None:
    scratch = tmp_path / "d"
    scratch.mkdir()
    (scratch / "state.json").write_text("{}")
    script = str(Path(TESTS_DIR) / "support" / "guardian.py")
    # stdin at its end at once: the test process "died" before its release
    res = subprocess.run(
        [sys.executable, script, "--remove-dir", str(scratch), "--", "false"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 1, res.stderr
    assert "kept" in res.stderr
    assert (scratch / "state.json").exists()


def test_terminate_if_same_spares_a_pid_given_to_another_process() -> None:
    """The guardian's stop of a process by PID: only the process that was meant."""
    meant = subprocess.Popen(["sleep", "30"])
    other = subprocess.Popen(["sleep", "30"])
    try:
        subprocess.run(terminate_if_same(meant.pid), check=True, timeout=30)
        assert meant.wait(timeout=10) == -15
        # the same command for a PID whose process started at another time: spared
        argv = terminate_if_same(other.pid)
        argv[-1] = str(int(argv[-1]) + 1)
        subprocess.run(argv, check=True, timeout=30)
        time.sleep(0.3)
        assert other.poll() is None
    finally:
        for proc in (meant, other):
            proc.kill()
            proc.wait(timeout=10)
