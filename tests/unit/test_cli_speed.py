"""Start-up and exit speed of ``gnt-lv``: the fast exit."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

NODES = ("node1.example.com", "node2.example.com", "node3.example.com")  # conftest.py


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)


def test_fast_exit_runs_atexit_flushes_and_keeps_the_code() -> None:
    proc = _python(
        "import atexit, sys\n"
        "from ganeti_lv.cli.main import fast_exit\n"
        "atexit.register(lambda: print('atexit ran'))\n"
        "sys.stdout.write('buffered ')\n"
        "fast_exit(3)\n"
        "print('not reached')\n"
    )
    assert proc.returncode == 3
    assert proc.stdout == "buffered atexit ran\n"


def test_fast_exit_waits_for_a_running_non_daemon_thread() -> None:
    proc = _python(
        "import threading\n"
        "from ganeti_lv.cli.main import fast_exit\n"
        "done = threading.Event()\n"
        "t = threading.Thread(target=lambda: (done.wait(5), print('thread finished')))\n"
        "t.start()\n"
        "fast_exit(3)\n"
        "print('normal exit')\n"
        "done.set()\n"
    )
    assert proc.returncode == 0
    assert "normal exit" in proc.stdout and "thread finished" in proc.stdout


def test_fast_exit_is_off_under_a_profiler() -> None:
    proc = _python(
        "import sys\n"
        "from ganeti_lv.cli.main import fast_exit\n"
        "sys.setprofile(lambda *a: None)\n"
        "fast_exit(3)\n"
        "sys.setprofile(None)\n"
        "print('normal exit')\n"
    )
    assert proc.returncode == 0
    assert "normal exit" in proc.stdout


# Modules gnt-lv must not import before it hands a job to the master daemon:
# each costs every command milliseconds (typing, dataclasses with inspect) or
# far more (the framework, paramiko, libvirt, rich), and the daemon has them.
HEAVY = (
    "typing",
    "dataclasses",
    "inspect",
    "shutil",  # argparse's way to the terminal width (cli.common.HelpFormatter has its own)
    "ganeti_lv.config",
    "ganeti_lv.mcpu",
    "ganeti_lv.objects",
    "paramiko",
    "libvirt",
    "rich",
)


class OneShotMaster:
    """A stand-in master daemon: takes one submission and answers with a result."""

    def __init__(self, data_dir: str) -> None:
        from ganeti_lv import paths

        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(paths.masterd_socket(data_dir))
        self.sock.listen(1)
        self.requests: list[dict[str, object]] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        with conn, conn.makefile("rb") as rfile:
            request = json.loads(rfile.readline())
            self.requests.append(request)
            # an export answers (finalized, per-disk results); the others nothing
            result = [True, [True]] if request["submit"]["OP_ID"] == "OP_BACKUP_EXPORT" else None
            answer = [{"feedback": "done"}, {"result": result}]
            conn.sendall(b"".join(json.dumps(msg).encode() + b"\n" for msg in answer))

    def close(self) -> None:
        self.thread.join(timeout=10)
        self.sock.close()


@pytest.mark.parametrize(
    ("argv", "op_id"),
    [
        (["instance", "migrate", "-f", "-n", "node3", "inst1"], "OP_INSTANCE_MIGRATE"),
        (["instance", "failover", "-f", "inst1"], "OP_INSTANCE_FAILOVER"),
        (["backup", "export", "--noshutdown", "-n", "node3", "inst1"], "OP_BACKUP_EXPORT"),
        (["instance", "startup", "inst1"], "OP_INSTANCE_STARTUP"),
        (["debug", "delay", "--duration", "0"], "OP_TEST_DELAY"),
    ],
)
def test_handing_a_job_to_the_master_daemon_imports_nothing_heavy(
    tmp_path: Path, argv: list[str], op_id: str
) -> None:
    master = OneShotMaster(str(tmp_path))
    try:
        proc = _python(
            "import sys\n"
            "from ganeti_lv.cli.main import main\n"
            f"code = main(['--data-dir', {str(tmp_path)!r}, *{argv!r}])\n"
            f"print(code, sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
        )
    finally:
        master.close()
    assert proc.stdout.splitlines()[-1] == "0 []", proc.stdout + proc.stderr
    assert "done" in proc.stdout  # the daemon's feedback was printed
    assert [r["submit"]["OP_ID"] for r in master.requests] == [op_id]  # type: ignore[index]
