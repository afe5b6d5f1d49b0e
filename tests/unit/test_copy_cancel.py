"""A cancel stops the disk copies of an import and of a failover, and leaves a true state.

On the fake nodes: the import (of an export of this cluster and of one
written by Ganeti) ends canceled with its new disks removed and nothing in
the configuration; a failover of a ``file`` instance ends canceled with the
instance on its source (started again when it was up), its source disk
untouched and no copy left on the target; a cancel after the failover's
point of no return is said in the job log and the failover finishes.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest
from test_lu_backup import place_inst1
from test_lu_backup_import import NEW, ganeti_export, import_op

from ganeti_lv import constants
from ganeti_lv.cancel import Cancellation
from ganeti_lv.config import ConfigStore
from ganeti_lv.constants import JOB_STATUS_CANCELED, JOB_STATUS_SUCCESS
from ganeti_lv.context import Context
from ganeti_lv.errors import GenericError, NodeError, OperationCanceled
from ganeti_lv.hypervisor.fake import FakeNodeOps
from ganeti_lv.mcpu import Processor
from ganeti_lv.node.diskcopy import CopyCanceled
from ganeti_lv.objects import Instance, disk_dir, disk_path
from ganeti_lv.opcodes import OpBackupExport, OpCode, OpInstanceFailover

N1, N2, N3 = "node1.example.com", "node2.example.com", "node3.example.com"
INST = "inst1.example.com"


def _cancel_at(prefix: str, cancel: Cancellation, lines: list[str]) -> Callable[[str], None]:
    """Feedback that asks the job to stop at the first line starting with ``prefix``."""

    def feedback(line: str) -> None:
        lines.append(line)
        if line.startswith(prefix):
            cancel.request("interrupted by the user")

    return feedback


def _run_canceled(ctx: Context, op: OpCode, at: str) -> tuple[str, list[str]]:
    cancel, lines = Cancellation(), []
    with pytest.raises(OperationCanceled) as err:
        Processor(ctx).execute(op, _cancel_at(at, cancel, lines), cancel)
    assert ctx.jobs.list()[-1].status == JOB_STATUS_CANCELED
    return str(err.value), lines


# ------------------------------------------------------------------ import


def _own_export(ctx: Context, ops: FakeNodeOps, config: ConfigStore) -> str:
    place_inst1(ops, config)
    Processor(ctx).execute(OpBackupExport(instance_name=INST, target_node=N2, shutdown=False))
    return INST


def _ganeti_export(ctx: Context, ops: FakeNodeOps, config: ConfigStore) -> str:
    ganeti_export(ops)
    return "alpha"


def _nothing_imported(ops: FakeNodeOps, config: ConfigStore) -> None:
    assert config.get_instance(NEW) is None
    probe = Instance(name=NEW, primary_node=N3, disk_template="file")
    directory = disk_dir(config.get_cluster(), probe)
    assert ops.calls_to("remove_disks", N3)
    assert not [p for p in ops.node(N3).files if p.startswith(directory + "/")]
    assert NEW not in ops.node(N3).domains
    assert not ops.calls_to("start_instance", N3)


@pytest.mark.parametrize("export", [_own_export, _ganeti_export], ids=["own", "ganeti"])
def test_cancel_during_an_import_copy_leaves_no_instance(ctx, fake_ops, config, export):
    src_path = export(ctx, fake_ops, config)
    text, lines = _run_canceled(ctx, import_op(src_path=src_path, start=True), "Importing disk/0")
    assert f"Import of {NEW} from {N2}:" in text
    assert "canceled (interrupted by the user) while copying disk/0" in text
    assert f"{N3}:{config.get_cluster().file_storage_dir}/{NEW} removed" in text
    assert f"{NEW} is not in the configuration" in text
    assert f"Copy of disk/0 stopped on {N2} and {N3}" in lines
    _nothing_imported(fake_ops, config)
    # the export itself is untouched
    assert src_path in fake_ops.exports[N2]


def test_cancel_after_the_import_copy_still_starts_nothing(ctx, fake_ops, config):
    src_path = _own_export(ctx, fake_ops, config)
    # the copy's summary line comes once the copy is complete
    text, _ = _run_canceled(ctx, import_op(src_path=src_path, start=True), "disk/0: ")
    assert "canceled (interrupted by the user) before it was started and recorded" in text
    _nothing_imported(fake_ops, config)


def test_cli_import_canceled_by_sigterm_exits_1(
    data_dir, ctx, fake_ops, config, capsys, monkeypatch
):
    from ganeti_lv.cli.main import main

    src_path = _own_export(ctx, fake_ops, config)
    real = fake_ops.copy_disk

    def copy_then_signal(*args: Any, **kwargs: Any) -> Any:
        os.kill(os.getpid(), 15)  # SIGTERM of gnt-lv, as `kill PID` or `timeout`
        return real(*args, **kwargs)

    monkeypatch.setattr(fake_ops, "copy_disk", copy_then_signal)
    code = main(
        ["--data-dir", data_dir, "backup", "import", "-n", N3, "--src-node", N2,
         "--src-dir", src_path, NEW],
        node_ops=fake_ops,
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1, err
    assert "Abort requested; stopping the operation safely" in err
    assert "canceled (interrupted by the user) while copying disk/0" in err
    _nothing_imported(fake_ops, config)


# ---------------------------------------------------------------- failover


@pytest.fixture
def on_n1(inst1_running: FakeNodeOps, config: ConfigStore) -> tuple[FakeNodeOps, str]:
    """inst1 runs on node1 with its disk file; (ops, the disk's path)."""
    inst = config.get_instance(INST)
    assert inst is not None
    return inst1_running, disk_path(config.get_cluster(), inst, 0)


def _running_on(ops: FakeNodeOps) -> list[str]:
    return sorted(
        n
        for n, fake in ops.nodes.items()
        if INST in fake.domains and fake.domains[INST].state == constants.DOMSTATE_RUNNING
    )


@pytest.mark.parametrize("up", [True, False])
def test_cancel_during_a_failover_copy_keeps_the_instance_on_its_source(ctx, on_n1, config, up):
    ops, path = on_n1
    if not up:
        config.set_admin_state(INST, constants.ADMINST_DOWN)
        ops.node(N1).domains[INST].state = constants.DOMSTATE_SHUTOFF
    op = OpInstanceFailover(instance_name=INST, target_node=N2)
    text, lines = _run_canceled(ctx, op, "Copying disk/0")
    assert f"Failover of {INST} to {N2} canceled (interrupted by the user) while copying" in text
    assert f"the copies on {N2} were removed" in text
    assert f"the configuration names {N1}, whose disks were not changed" in text
    assert f"Copy of disk/0 stopped on {N1} and {N2}" in lines
    inst = config.get_instance(INST)
    assert inst is not None and inst.primary_node == N1
    assert path in ops.node(N1).files and path not in ops.node(N2).files
    assert not ops.calls_to("remove_disks", N1)
    assert INST not in ops.node(N2).domains
    if up:
        assert f"{INST} runs on {N1} again" in text
        assert _running_on(ops) == [N1]
    else:
        assert f"{INST} stays stopped on {N1}" in text
        assert _running_on(ops) == [] and not ops.calls_to("start_instance")
    assert not any(line.startswith("STEP 3/4") for line in lines)


def test_cancel_after_the_failover_copy_undoes_it(ctx, on_n1, config):
    ops, path = on_n1
    text, lines = _run_canceled(
        ctx, OpInstanceFailover(instance_name=INST, target_node=N2), "Disk 0 copied"
    )
    assert "canceled (interrupted by the user) after copying its disks" in text
    assert config.get_instance(INST).primary_node == N1  # type: ignore[union-attr]
    assert path in ops.node(N1).files and path not in ops.node(N2).files
    assert _running_on(ops) == [N1]


def test_cancel_after_the_point_of_no_return_finishes_the_failover(ctx, on_n1, config):
    ops, path = on_n1
    cancel, lines = Cancellation(), []
    op = OpInstanceFailover(instance_name=INST, target_node=N2)
    Processor(ctx).execute(op, _cancel_at("STEP 4/4", cancel, lines), cancel)
    assert ctx.jobs.list()[-1].status == JOB_STATUS_SUCCESS
    assert config.get_instance(INST).primary_node == N2  # type: ignore[union-attr]
    assert _running_on(ops) == [N2]
    assert path in ops.node(N2).files and path not in ops.node(N1).files
    assert any(
        "is not honoured past the failover's point of no return" in line
        and f"switched to {N2}" in line
        for line in lines
    ), lines


def test_a_late_cancel_is_not_called_finished_when_the_start_failed(ctx, on_n1, config):
    ops, _path = on_n1
    ops.fail("start_instance", N2, "qemu exploded")
    cancel, lines = Cancellation(), []
    op = OpInstanceFailover(instance_name=INST, target_node=N2)
    with pytest.raises(GenericError, match="Could not start instance"):
        Processor(ctx).execute(op, _cancel_at("STEP 4/4", cancel, lines), cancel)
    assert not any("point of no return" in line for line in lines), lines


@pytest.mark.parametrize("restarts", [True, False])
def test_a_failed_failover_copy_says_what_its_undo_did(ctx, on_n1, config, restarts):
    """The error says where the instance is: running on its source again, or not."""
    ops, _path = on_n1
    ops.fail("copy_disk", N1, NodeError("connection lost", N1))
    if not restarts:
        ops.fail("start_instance", N1, "no memory")
    with pytest.raises(GenericError) as err:
        Processor(ctx).execute(OpInstanceFailover(instance_name=INST, target_node=N2))
    text = str(err.value)
    assert "connection lost" in text and f"the copies on {N2} were removed" in text
    if restarts:
        assert f"runs on {N1} again" in text and _running_on(ops) == [N1]
    else:
        assert f"could not be started on {N1} again" in text and _running_on(ops) == []
    assert config.get_instance(INST).primary_node == N1


def test_a_copy_stopped_without_a_cancel_request_is_a_failure(ctx, fake_ops, config):
    src_path = _own_export(ctx, fake_ops, config)
    fake_ops.fail("copy_disk", N2, CopyCanceled("copy of disk0 canceled: helper stopped", N2))
    with pytest.raises(GenericError) as err:
        Processor(ctx).execute(import_op(src_path=src_path, start=True))
    assert not isinstance(err.value, OperationCanceled)
    assert "Import of disk/0 failed" in str(err.value) and "helper stopped" in str(err.value)
    assert ctx.jobs.list()[-1].status != JOB_STATUS_CANCELED
    _nothing_imported(fake_ops, config)
