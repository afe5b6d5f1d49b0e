"""Start-up and exit speed of ``gnt-lv``: connection warm-up and the fast exit."""

from __future__ import annotations

import subprocess
import sys

from ganeti_lv.ahead import prewarm_nodes
from ganeti_lv.client import Client
from ganeti_lv.config import ConfigStore
from ganeti_lv.hypervisor.fake import FakeNodeOps
from ganeti_lv.objects import Node
from ganeti_lv.opcodes import OpInstanceMigrate

NODES = ("node1.example.com", "node2.example.com", "node3.example.com")  # conftest.py


class WarmRecorder(FakeNodeOps):
    """Fake node operations that record what they were asked to warm up."""

    def __init__(self) -> None:
        super().__init__()
        self.warmed: list[list[str]] = []

    def prewarm(self, nodes: list[Node]) -> None:
        self.warmed.append([n.name for n in nodes])


def test_migrate_warms_master_primary_and_target(config: ConfigStore, data_dir: str) -> None:
    ops = WarmRecorder()
    client = Client(data_dir=data_dir, node_ops=ops)
    prewarm_nodes(client.ctx, OpInstanceMigrate(instance_name="inst1", target_node="node3"))
    # master and primary are node1 (named once), the target by its full name
    assert ops.warmed == [[NODES[0], NODES[2]]]


def test_no_warm_up_for_unknown_names_or_without_support(
    config: ConfigStore, data_dir: str
) -> None:
    ops = WarmRecorder()
    client = Client(data_dir=data_dir, node_ops=ops)
    prewarm_nodes(client.ctx, OpInstanceMigrate(instance_name="ghost", target_node="node3"))
    assert ops.warmed == []
    plain = Client(data_dir=data_dir, node_ops=FakeNodeOps())
    prewarm_nodes(plain.ctx, OpInstanceMigrate(instance_name="inst1"))  # no prewarm(): no error
    prewarm_nodes(None, OpInstanceMigrate(instance_name="inst1"))  # no context: skipped


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
