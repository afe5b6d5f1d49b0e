"""A canceled export: the copy stops at both ends and everything it began is rolled back.

The LU on the fake nodes (the rollback's order and what it leaves), and the
copy engine on this machine (``CANCEL`` reaching the node-side helpers, the
receiver's partial file removed, errors naming the node and the file).
"""

from __future__ import annotations

import glob
import os
import sys
import threading
import time
from pathlib import Path

import pytest
from support.localrun import LOCAL_ENDPOINT, LocalRunner
from support.waiting import wait_until

from ganeti_lv import constants
from ganeti_lv.cancel import Cancellation
from ganeti_lv.config import ConfigStore
from ganeti_lv.constants import JOB_STATUS_CANCELED, JOB_STATUS_SUCCESS
from ganeti_lv.context import Context
from ganeti_lv.errors import ECODE_NORES, NodeError, OperationCanceled
from ganeti_lv.hypervisor.fake import FakeNodeOps
from ganeti_lv.mcpu import Processor
from ganeti_lv.node import diskcopy
from ganeti_lv.node.diskcopy import CopyCanceled, CopyEndpoint, CopyPlan, StartInfo
from ganeti_lv.objects import disk_path
from ganeti_lv.opcodes import OpBackupExport

N1, N2 = "node1.example.com", "node2.example.com"
INST = "inst1.example.com"
MiB = 1024 * 1024


@pytest.fixture
def ops(fake_ops: FakeNodeOps, config: ConfigStore) -> FakeNodeOps:
    """inst1 runs on node1 with its disk file."""
    inst = config.get_instance(INST)
    assert inst is not None
    path = disk_path(config.get_cluster(), inst, 0)
    fake_ops.add_domain(N1, INST, disk_paths=[path])
    fake_ops.node(N1).files[path] = 1024
    return fake_ops


def _cancel_at(prefix: str, cancel: Cancellation, lines: list[str]):
    def feedback(line: str) -> None:
        lines.append(line)
        if line.startswith(prefix):
            cancel.request("interrupted by the user")

    return feedback


@pytest.mark.parametrize("shutdown", [False, True])
def test_cancel_during_the_copy_rolls_the_export_back(ctx: Context, ops, config, shutdown):
    Processor(ctx).execute(OpBackupExport(instance_name=INST, target_node=N2, shutdown=False))
    previous = ops.exports[N2][INST]
    cancel, lines = Cancellation(), []
    op = OpBackupExport(instance_name=INST, target_node=N2, shutdown=shutdown)
    with pytest.raises(OperationCanceled) as err:
        Processor(ctx).execute(op, _cancel_at("Exporting disk/0", cancel, lines), cancel)
    text = str(err.value)
    assert "canceled (interrupted by the user) while copying disk/0" in text
    assert f"{N2}:{config.get_cluster().export_dir}/{INST}.new removed" in text
    assert "runs on its own disks" in text
    # the earlier export untouched, nothing half-written, the snapshot merged back
    assert ops.exports[N2] == {INST: previous}
    seq = [c.method for c in ops.calls]
    canceled_copy = len(seq) - 1 - seq[::-1].index("copy_disk")
    # after the stopped copy: .new removed, then the snapshot merged back, nothing published
    assert seq[canceled_copy:].index("export_abort") < seq[canceled_copy:].index("commit_snapshot")
    assert ops.node(N1).domains[INST].overlays == []
    assert ops.node(N1).domains[INST].state == constants.DOMSTATE_RUNNING
    assert config.get_instance(INST).admin_state == constants.ADMINST_UP  # type: ignore[union-attr]
    assert "export_finalize" not in seq[canceled_copy:]
    assert ctx.jobs.list()[-1].status == JOB_STATUS_CANCELED
    assert any("Copy of disk/0 stopped" in line for line in lines)


def test_a_cancel_whose_merge_fails_stays_a_cancel_and_says_so(ctx: Context, ops, config):
    ops.fail("commit_snapshot", N1, "block job failed", times=1)
    cancel, lines = Cancellation(), []
    op = OpBackupExport(instance_name=INST, target_node=N2, shutdown=False)
    with pytest.raises(OperationCanceled) as err:
        Processor(ctx).execute(op, _cancel_at("Exporting disk/0", cancel, lines), cancel)
    assert "the snapshot could not be merged back (the next operation" in str(err.value)
    assert "runs on its own disks" not in str(err.value)
    assert any("WARNING: Could not merge the snapshot" in line for line in lines)
    assert ctx.jobs.list()[-1].status == JOB_STATUS_CANCELED


@pytest.mark.parametrize("start_fails", [False, True])
def test_a_canceled_stopped_copy_says_whether_the_instance_runs_again(
    ctx: Context, ops, config, start_fails
):
    ops.fail("start_with_snapshot", N1, "snapshots unsupported")
    if start_fails:
        ops.fail("start_instance", N1, "no memory")
    cancel, lines = Cancellation(), []
    with pytest.raises(OperationCanceled) as err:
        Processor(ctx).execute(
            OpBackupExport(instance_name=INST, target_node=N2, long_sleep=True),
            _cancel_at("Exporting disk/0", cancel, lines),
            cancel,
        )
    runs = ops.node(N1).domains[INST].state == constants.DOMSTATE_RUNNING
    assert runs is not start_fails
    assert (f"{INST} was started again" in str(err.value)) is not start_fails
    inst = config.get_instance(INST)
    assert inst is not None
    assert inst.admin_state == (constants.ADMINST_DOWN if start_fails else constants.ADMINST_UP)


def test_cancel_after_the_copy_still_publishes_nothing(ctx: Context, ops):
    cancel, lines = Cancellation(), []
    op = OpBackupExport(instance_name=INST, target_node=N2, shutdown=False)
    # the copy's summary line comes once the copy is complete
    with pytest.raises(OperationCanceled, match="before publishing it"):
        Processor(ctx).execute(op, _cancel_at("disk/0: ", cancel, lines), cancel)
    assert ops.exports.get(N2, {}) == {}
    assert ops.node(N1).domains[INST].overlays == []


def test_a_cancel_at_the_commit_point_is_too_late_and_the_export_succeeds(
    ctx: Context, ops, config, monkeypatch
):
    """Once ``.new`` is renamed into place the export is done: kept, and the job succeeds."""
    Processor(ctx).execute(OpBackupExport(instance_name=INST, target_node=N1, shutdown=False))
    cancel, lines = Cancellation(), []
    publish = ops.export_finalize

    def publish_then_cancel(*args, **kwargs):
        published = publish(*args, **kwargs)
        cancel.request("interrupted by the user")
        return published

    monkeypatch.setattr(ops, "export_finalize", publish_then_cancel)
    op = OpBackupExport(instance_name=INST, target_node=N2, shutdown=False)
    assert Processor(ctx).execute(op, lines.append, cancel) == (True, [True])
    assert set(ops.exports[N2]) == {INST}
    assert INST not in ops.exports.get(N1, {})  # the older export elsewhere removed as usual
    assert ops.node(N1).domains[INST].overlays == []
    assert ops.node(N1).domains[INST].state == constants.DOMSTATE_RUNNING
    assert ctx.jobs.list()[-1].status == JOB_STATUS_SUCCESS
    path = f"{N2}:{config.get_cluster().export_dir}/{INST}"
    assert any(
        "WARNING" in line
        and "cancel request (interrupted by the user) came after the export's commit point" in line
        and f"the export in {path} is complete and kept" in line
        for line in lines
    )


def test_cli_export_canceled_exits_non_zero_saying_so(ctx, ops, data_dir, capsys, monkeypatch):
    from ganeti_lv.cli.main import main

    real = ops.copy_disk

    def copy_then_signal(*args, **kwargs):
        os.kill(os.getpid(), 15)  # SIGTERM of gnt-lv, as `kill PID` or `timeout`
        return real(*args, **kwargs)

    monkeypatch.setattr(ops, "copy_disk", copy_then_signal)
    code = main(
        ["--data-dir", data_dir, "backup", "export", "--noshutdown", "-n", N2, INST],
        node_ops=ops,
    )
    err = capsys.readouterr().err
    assert code == 1
    assert "Abort requested; stopping the operation safely" in err
    assert "canceled (interrupted by the user) while copying disk/0" in err
    assert ops.exports.get(N2, {}) == {}
    assert ops.node(N1).domains[INST].overlays == []


# -- the copy engine on this machine ---------------------------------------------------


def _image(tmp_path, size: int = 8 * MiB) -> str:
    path = tmp_path / "src.img"
    path.write_bytes(os.urandom(size))
    return str(path)


# The transport as ssh is, for a cancel: the receiver is a process of its
# own, fed by the transport; when the transport is killed, the receiver
# reads the end of its input (sshd closes the session) and cleans up.
_RELAY = (
    "import shutil, subprocess, sys\n"
    "receiver = subprocess.Popen(['sh', '-c', sys.argv[1]], stdin=subprocess.PIPE)\n"
    "shutil.copyfileobj(sys.stdin.buffer, receiver.stdin)\n"
    "receiver.stdin.close()\n"
    "sys.exit(receiver.wait())\n"
)
RELAY_ENDPOINT = CopyEndpoint(argv=[sys.executable, "-c", _RELAY], name="localhost")


def test_canceled_copy_stops_both_helpers_and_leaves_nothing(tmp_path):
    src = _image(tmp_path)
    dst = tmp_path / "out" / "disk0.img"
    plan = CopyPlan.make("local", src, RELAY_ENDPOINT, str(dst), bandwidth_limit=1)
    cancel = Cancellation()
    started: list[StartInfo] = []

    def on_start(info: StartInfo) -> None:
        started.append(info)
        threading.Timer(1.0, cancel.request, args=("interrupted by the user",)).start()

    began = time.monotonic()
    with pytest.raises(CopyCanceled, match="canceled"):
        plan.run(LocalRunner(), start_fn=on_start, cancel=cancel)
    assert time.monotonic() - began < 6  # 8 MiB at 1 MiB/s would take 8 s
    assert started
    # the sender and its transport are gone, and so is the part file
    for pid in [started[0].sender, *started[0].pids]:
        assert wait_until(lambda pid=pid: not _alive(pid), timeout=10), pid
    assert wait_until(lambda: not glob.glob(str(dst) + ".part*"), timeout=10)
    assert not dst.exists()


def test_a_cancel_after_the_receiver_put_the_copy_in_place_is_too_late(tmp_path):
    """The copy landed: it is reported as done, not as canceled with a file in place."""
    src = _image(tmp_path, 2 * MiB)
    dst = tmp_path / "out" / "disk0.img"
    landed = tmp_path / "landed"
    # the transport as ssh, but it lingers after the receiver ended (its answer sent)
    lingering = CopyEndpoint(
        argv=["sh", "-c", f'sh -c "$1"; : > {landed}; sleep 2', "sh"], name="node2"
    )
    plan = CopyPlan.make("node1", src, lingering, str(dst))
    cancel = Cancellation()
    ran = threading.Event()
    asked_while_running: list[bool] = []

    def cancel_once_landed() -> None:
        landed_in_time = wait_until(landed.exists, timeout=20)
        cancel.request("interrupted by the user")
        asked_while_running.append(landed_in_time and not ran.is_set())

    thread = threading.Thread(target=cancel_once_landed)
    thread.start()
    try:
        stats = plan.run(LocalRunner(), cancel=cancel)
    finally:
        ran.set()
        thread.join()
    assert asked_while_running == [True]  # after the copy landed, before run returned
    assert stats.size == 2 * MiB
    assert dst.read_bytes() == Path(src).read_bytes()
    assert not glob.glob(str(dst) + ".part*")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_copy_without_cancel_is_unchanged(tmp_path):
    src = _image(tmp_path, 2 * MiB)
    dst = tmp_path / "disk0.img"
    plan = CopyPlan.make("local", src, LOCAL_ENDPOINT, str(dst))
    stats = plan.run(LocalRunner(), cancel=Cancellation())
    assert stats.size == 2 * MiB and dst.exists()


def test_killed_transport_names_the_node_the_file_and_the_signal(tmp_path):
    src = _image(tmp_path, 2 * MiB)
    dst = tmp_path / "disk0.img"
    killed = CopyEndpoint(argv=["sh", "-c", "kill -9 $$"], name="node2")
    plan = CopyPlan.make("node1", src, killed, str(dst))
    with pytest.raises(NodeError) as err:
        plan.run(LocalRunner())
    text = str(err.value)
    assert f"receiving {dst} on node2 failed" in text
    assert "its connection ended (killed by signal 9)" in text
    assert f"copy of {src} on node1 to {dst} on node2" in text
    assert err.value.node == "node2"


def test_no_space_error_names_the_receiving_node_and_file():
    plan = CopyPlan.make("node1", "/a/disk0", CopyEndpoint(["sh", "-c"], "node2"), "/e/x.new/d")
    info = {
        "msg": "[Errno 28] No space left on device",
        "kind": "nores",
        "side": "receiver",
    }
    err = diskcopy._error_from(info, plan)
    assert err.ecode == ECODE_NORES and err.node == "node2"
    assert str(err).startswith("receiving /e/x.new/d on node2 failed: [Errno 28] No space left")
