"""Instance lifecycle LUs and a leftover export overlay; startup on the wrong node.

Every LU that touches the disks merges a snapshot overlay left by an
interrupted export before it touches the domain, and refuses with nothing
changed when the overlay cannot be merged.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from ganeti_lv import constants
from ganeti_lv.cmdlib.instance import check_not_running_elsewhere
from ganeti_lv.config import ConfigStore
from ganeti_lv.context import Context
from ganeti_lv.errors import ECODE_STATE, OpExecError, OpPrereqError
from ganeti_lv.hypervisor.fake import FakeNodeOps
from ganeti_lv.mcpu import Processor
from ganeti_lv.objects import disk_path
from ganeti_lv.opcodes import (
    OpBackupExport,
    OpCode,
    OpInstanceReboot,
    OpInstanceRemove,
    OpInstanceShutdown,
    OpInstanceStartup,
)

N1, N2, N3 = "node1.example.com", "node2.example.com", "node3.example.com"
INST = "inst1.example.com"
OVERLAY = "/srv/ganeti-lv/file-storage/inst1.example.com/disk0.img.export-snap.qcow2"

# (opcode class, initial domain state, the node operation that touches the domain)
CASES = [
    (OpInstanceStartup, constants.DOMSTATE_SHUTOFF, "start_instance"),
    (OpInstanceShutdown, constants.DOMSTATE_RUNNING, "shutdown_instance"),
    (OpInstanceReboot, constants.DOMSTATE_RUNNING, "reboot_instance"),
    (OpInstanceRemove, constants.DOMSTATE_RUNNING, "shutdown_instance"),
]
IDS = ["startup", "shutdown", "reboot", "remove"]

DOMAIN_OPS = (
    "start_instance",
    "shutdown_instance",
    "reboot_instance",
    "undefine_instance",
    "remove_disks",
    "snapshot_disks",
    "start_with_snapshot",
    "copy_disk",
    "export_prepare",
    "export_finalize",
    "export_remove",
)


def run(ctx: Context, op: OpCode) -> tuple[Any, list[str]]:
    lines: list[str] = []
    result = Processor(ctx).execute(op, feedback_fn=lines.append)
    return result, lines


def with_overlay(ops: FakeNodeOps, state: str) -> None:
    """inst1 on node1 in ``state`` with a leftover export overlay in its chain."""
    ops.add_domain(N1, INST, state=state)
    ops.node(N1).domains[INST].overlays = [OVERLAY]


def methods(ops: FakeNodeOps) -> list[str]:
    return [c.method for c in ops.calls]


@pytest.mark.parametrize(("op", "state", "touch"), CASES, ids=IDS)
def test_overlay_merged_before_the_domain_is_touched(
    ctx: Context, fake_ops: FakeNodeOps, op: type[OpCode], state: str, touch: str
) -> None:
    with_overlay(fake_ops, state)
    _, lines = run(ctx, op(instance_name=INST))
    seq = methods(fake_ops)
    assert seq.index("repair_disk_chain") < seq.index(touch)
    assert [c.node for c in fake_ops.calls_to("repair_disk_chain")] == [N1]
    assert any("WARNING" in x and f"Merged leftover export overlay {OVERLAY}" in x for x in lines)
    dom = fake_ops.node(N1).domains.get(INST)
    assert dom is None or dom.overlays == []


@pytest.mark.parametrize(("op", "state", "touch"), CASES, ids=IDS)
def test_failed_repair_refuses_and_changes_nothing(
    ctx: Context,
    fake_ops: FakeNodeOps,
    config: ConfigStore,
    op: type[OpCode],
    state: str,
    touch: str,
) -> None:
    with_overlay(fake_ops, state)
    fake_ops.fail("repair_disk_chain", N1, "block job busy")
    before = config.read()
    with pytest.raises(OpExecError) as info:
        run(ctx, op(instance_name=INST))
    text = str(info.value)
    assert "left by an interrupted export that could not be merged" in text
    assert "refusing to touch the disks" in text and "block job busy" in text
    assert not [m for m in methods(fake_ops) if m in DOMAIN_OPS]
    after = config.read()
    assert after.serial == before.serial
    assert after.instances[INST].admin_state == before.instances[INST].admin_state
    dom = fake_ops.node(N1).domains[INST]
    assert dom.state == state and dom.overlays == [OVERLAY]


def test_remove_with_ignore_failures_goes_on(
    ctx: Context, fake_ops: FakeNodeOps, config: ConfigStore
) -> None:
    with_overlay(fake_ops, constants.DOMSTATE_RUNNING)
    inst = config.get_instance(INST)
    assert inst is not None
    fake_ops.node(N1).files[disk_path(config.get_cluster(), inst, 0)] = 1024
    fake_ops.fail("repair_disk_chain", N1, "block job busy")
    _, lines = run(ctx, OpInstanceRemove(instance_name=INST, ignore_failures=True))
    assert any("WARNING" in x and "block job busy" in x for x in lines)
    assert config.get_instance(INST) is None
    assert INST not in fake_ops.node(N1).domains and fake_ops.node(N1).files == {}


def test_offline_primary_is_not_asked_to_repair(
    ctx: Context, fake_ops: FakeNodeOps, config: ConfigStore
) -> None:
    with config.update() as data:
        data.nodes[N1].offline = True
        data.instances[INST].admin_state = constants.ADMINST_DOWN
    run(ctx, OpInstanceStartup(instance_name=INST, ignore_offline_nodes=True))
    assert not fake_ops.calls_to("repair_disk_chain")
    inst = config.get_instance(INST)
    assert inst is not None and inst.admin_state == constants.ADMINST_UP


# ---------------------------------------------------------------- wrong node


def test_startup_refused_when_running_on_another_node(
    ctx: Context, fake_ops: FakeNodeOps, config: ConfigStore
) -> None:
    with config.update() as data:
        data.instances[INST].admin_state = constants.ADMINST_DOWN
    fake_ops.add_domain(N2, INST)
    serial = config.read().serial
    with pytest.raises(OpPrereqError) as info:
        run(ctx, OpInstanceStartup(instance_name=INST))
    err = info.value
    assert err.ecode == ECODE_STATE
    assert f"running on node(s) {N2}, not (only) on its primary node {N1}" in err.msg
    assert f"gnt-lv instance migrate --cleanup {INST}" in err.msg
    assert "gnt-lv cluster verify" in err.msg
    assert not fake_ops.calls_to("start_instance")
    assert not fake_ops.calls_to("repair_disk_chain")
    assert config.read().serial == serial
    assert INST not in fake_ops.node(N1).domains
    # the primary offline, the start only marks it up: refused all the same
    with config.update() as data:
        data.nodes[N1].offline = True
    serial = config.read().serial
    with pytest.raises(OpPrereqError, match=f"running on node\\(s\\) {N2}") as info:
        run(ctx, OpInstanceStartup(instance_name=INST, ignore_offline_nodes=True))
    assert info.value.ecode == ECODE_STATE and config.read().serial == serial


@pytest.mark.parametrize(
    ("op", "refused"),
    [
        (OpInstanceReboot(instance_name=INST), "to start a second copy"),
        (OpInstanceReboot(instance_name=INST, reboot_type="full"), "to start a second copy"),
        (OpInstanceShutdown(instance_name=INST), "to mark it down while it runs there"),
        (OpInstanceRemove(instance_name=INST), "to remove it"),
        (OpInstanceRemove(instance_name=INST, ignore_failures=True), "to remove it"),
        (OpBackupExport(instance_name=INST, target_node=N3), "to export it"),
        (
            OpBackupExport(instance_name=INST, target_node=N3, remove_instance=True),
            "to export it",
        ),
    ],
    ids=[
        "reboot",
        "full-reboot",
        "shutdown",
        "remove",
        "remove-ignoring-failures",
        "export",
        "export-and-remove",
    ],
)
def test_an_instance_running_on_another_node_is_left_alone(
    ctx: Context, fake_ops: FakeNodeOps, config: ConfigStore, op: OpCode, refused: str
) -> None:
    """Its primary is not where it runs: reboot would start a second copy, shutdown
    would mark it down while it runs, remove would delete the disks it runs on, an
    export would copy stale (or in-use) images and replace the good exports with them."""
    fake_ops.add_domain(N2, INST)
    serial = config.read().serial
    with pytest.raises(OpPrereqError) as info:
        run(ctx, op)
    err = info.value
    assert err.ecode == ECODE_STATE
    assert f"running on node(s) {N2}, not (only) on its primary node {N1}" in err.msg
    assert f"refusing {refused}." in err.msg
    assert not [c for c in fake_ops.calls if c.method in DOMAIN_OPS]
    assert config.read().serial == serial
    assert fake_ops.node(N2).domains[INST].state == constants.DOMSTATE_RUNNING
    assert INST not in fake_ops.node(N1).domains


def test_startup_ignores_stopped_copies_and_warns_for_unreachable_nodes(
    ctx: Context, fake_ops: FakeNodeOps, config: ConfigStore
) -> None:
    fake_ops.add_domain(N2, INST, state=constants.DOMSTATE_SHUTOFF)
    fake_ops.set_unreachable(N3)
    with config.update() as data:
        data.instances[INST].admin_state = constants.ADMINST_DOWN
    _, lines = run(ctx, OpInstanceStartup(instance_name=INST))
    assert any("WARNING" in x and f"runs on node {N3}" in x for x in lines)
    assert fake_ops.node(N1).domains[INST].state == constants.DOMSTATE_RUNNING


def test_startup_skips_offline_and_non_vm_capable_nodes(
    ctx: Context, fake_ops: FakeNodeOps, config: ConfigStore
) -> None:
    fake_ops.add_domain(N2, INST)  # nodes that are offline or run no VMs are not asked
    fake_ops.add_domain(N3, INST)
    with config.update() as data:
        data.nodes[N2].vm_capable = False
        data.nodes[N3].offline = True
    run(ctx, OpInstanceStartup(instance_name=INST))
    assert not fake_ops.calls_to("instance_info", N2)
    assert not fake_ops.calls_to("instance_info", N3)
    assert fake_ops.node(N1).domains[INST].state == constants.DOMSTATE_RUNNING


def test_migration_lists_the_overlays_once_and_merges_them_before_migrating(
    ctx: Context, fake_ops: FakeNodeOps, config: ConfigStore
) -> None:
    """CheckPrereq lists the overlays (changing nothing); Exec merges what it found."""
    from ganeti_lv.opcodes import OpInstanceMigrate

    cluster, inst = config.get_cluster(), config.get_instance(INST)
    assert inst is not None
    fake_ops.node(N1).files[disk_path(cluster, inst, 0)] = 1024
    fake_ops.present_paths = {cluster.file_storage_dir}
    with_overlay(fake_ops, constants.DOMSTATE_RUNNING)
    _, lines = run(ctx, OpInstanceMigrate(instance_name=INST, target_node=N2))
    seq = methods(fake_ops)
    assert [c.node for c in fake_ops.calls_to("disk_overlays")] == [N1]
    repair = fake_ops.calls_to("repair_disk_chain")
    assert [c.node for c in repair] == [N1]
    assert repair[0].args[-1] == [OVERLAY]  # the listing was handed over, not repeated
    assert seq.index("disk_overlays") < seq.index("repair_disk_chain")
    assert seq.index("repair_disk_chain") < seq.index("migrate_instance")
    assert any(f"Merged leftover export overlay {OVERLAY}" in x for x in lines)


def test_the_other_nodes_are_asked_at_the_same_time(config: ConfigStore) -> None:
    """Every node but the primary is asked before any answers (no sum of round trips)."""
    data = config.snapshot()
    inst = data.instances[INST]
    others = sorted(n for n in data.nodes if n != inst.primary_node)
    assert len(others) >= 2
    barrier = threading.Barrier(len(others), timeout=10)
    asked: list[str] = []

    class Nodes:
        def instance_info(self, node: Any, name: str) -> None:
            asked.append(node.name)
            barrier.wait()
            return None

    warnings: list[str] = []
    check_not_running_elsewhere(Nodes(), data, inst, warnings.append)  # type: ignore[arg-type]
    assert sorted(asked) == others and warnings == []
