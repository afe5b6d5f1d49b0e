"""scripts/demo.sh, run for real against stand-ins for the cluster's commands.

The demo's guest dirties memory: however the demo ends before its own last
step (a step failing, Ctrl-C, a closed terminal, a kill), it shuts the guest
down, so that nothing busy is left beside the test suite. The stand-ins
(``gnt-lv``, ``gnt-lv-devcluster``, ``gnt-lv-masterd``, ``python3``) record
what the demo asked of them; the migration takes a few seconds, the window
in which the demo is interrupted.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# what sourcing setup.sh leaves: the stand-ins first on PATH
_SETUP = 'export PATH="$STUBS:$PATH"\n'

_GNT_LV = """#!/bin/sh
echo "gnt-lv $*" >> "$CALLS"
case "$1 $2" in
  "instance info") [ -e "$STATE/added" ] ;;
  "instance add") touch "$STATE/added" ;;
  "instance migrate") [ -n "$MIGRATE_FAILS" ] && exit 1; sleep 3 ;;
  "instance shutdown") exec /usr/bin/python3 -c "$SHUTDOWN" ;;
  *) exit 0 ;;
esac
"""

# the shutdown: like gnt-lv, it takes SIGINT (even one its shell ignored) as a request to
# stop its job
_SHUTDOWN = """
import os, signal, sys, time

def stop(*_args):
    open(os.environ["CALLS"], "a").write("shutdown asked to stop\\n")
    sys.exit(1)

signal.signal(signal.SIGINT, stop)
time.sleep(float(os.environ.get("SHUTDOWN_SECONDS", "0")))
open(os.environ["CALLS"], "a").write("shut down\\n")
"""

# python3 as the demo calls it: reads of cluster.json (-c), the console's place and
# the wait for the boot (scripts on stdin)
_PYTHON3 = """#!/bin/sh
if [ "$1" = "-c" ]; then echo /x; exit 0; fi
script=$(cat)
case "$script" in *console_size*) echo "/x/console.log 0" ;; esac
exit 0
"""


def _stub(directory: Path, name: str, text: str) -> None:
    path = directory / name
    path.write_text(text)
    path.chmod(0o755)


@pytest.fixture
def demo(tmp_path: Path) -> tuple[list[str], dict[str, str], Path]:
    """A copy of the demo beside a stand-in setup.sh; its command, environment and call log."""
    scripts = tmp_path / "tree" / "scripts"
    scripts.mkdir(parents=True)
    shutil.copy(ROOT / "scripts" / "demo.sh", scripts / "demo.sh")
    (scripts / "setup.sh").write_text(_SETUP)
    stubs = tmp_path / "stubs"
    stubs.mkdir()
    _stub(stubs, "gnt-lv", _GNT_LV)
    _stub(stubs, "python3", _PYTHON3)
    for name in ("gnt-lv-devcluster", "gnt-lv-masterd"):
        _stub(stubs, name, "#!/bin/sh\nexit 0\n")
    (tmp_path / "state").mkdir()
    calls = tmp_path / "calls"
    calls.touch()
    env = {
        "PATH": os.environ["PATH"],
        "STUBS": str(stubs),
        "STATE": str(tmp_path / "state"),
        "CALLS": str(calls),
        "GANETI_LV_DEMO_DIR": str(tmp_path / "demo"),
        "SHUTDOWN": _SHUTDOWN,
    }
    return ["bash", str(scripts / "demo.sh")], env, calls


def _wait_for(calls: Path, text: str, timeout: float = 20) -> None:
    end = time.monotonic() + timeout
    while text not in calls.read_text():
        assert time.monotonic() < end, calls.read_text()
        time.sleep(0.05)


def _shutdowns(calls: Path) -> list[str]:
    return [line for line in calls.read_text().splitlines() if "instance shutdown" in line]


def test_a_demo_run_to_its_end_shuts_its_guest_down_once(demo) -> None:
    argv, env, calls = demo
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert _shutdowns(calls) == ["gnt-lv instance shutdown demo1"]
    assert "did not finish" not in done.stderr


def test_a_failing_step_shuts_the_guest_down(demo) -> None:
    argv, env, calls = demo
    done = subprocess.run(
        argv, env={**env, "MIGRATE_FAILS": "1"}, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    assert _shutdowns(calls) == ["gnt-lv instance shutdown demo1"]
    assert "did not finish (exit 1)" in done.stderr


@pytest.mark.parametrize(
    ("sig", "whole_group", "status"),
    [
        (signal.SIGTERM, False, 143),  # a kill of the demo (a job runner's time limit)
        (signal.SIGHUP, False, 129),  # its terminal closed
        (signal.SIGINT, True, 130),  # Ctrl-C: the whole foreground group
    ],
)
def test_an_interrupted_demo_shuts_its_guest_down(
    demo, sig: signal.Signals, whole_group: bool, status: int
) -> None:
    argv, env, calls = demo
    proc = subprocess.Popen(
        argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        _wait_for(calls, "instance migrate")
        if whole_group:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == status
    assert _shutdowns(calls) == ["gnt-lv instance shutdown demo1"]
    assert f"did not finish (exit {status})" in err.decode()


def test_a_second_ctrl_c_does_not_cut_the_shutdown_short(demo) -> None:
    argv, env, calls = demo
    proc = subprocess.Popen(
        argv,
        env={**env, "SHUTDOWN_SECONDS": "2"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        _wait_for(calls, "instance migrate")
        os.killpg(proc.pid, signal.SIGINT)
        _wait_for(calls, "instance shutdown")
        os.killpg(proc.pid, signal.SIGINT)  # impatient: again, during the shutdown
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130
    assert calls.read_text().splitlines()[-1] == "shut down"
