"""LUBackupExport / Query / Remove through the processor with FakeNodeOps."""

from __future__ import annotations

import re
import threading
from typing import Any

import pytest
from support import locks as held_locks

from ganeti_lv import constants, exportinfo
from ganeti_lv.cancel import Cancellation
from ganeti_lv.cmdlib.backup_export import LUBackupExport
from ganeti_lv.config import ConfigStore
from ganeti_lv.context import Context
from ganeti_lv.errors import (
    ECODE_INVAL,
    ECODE_NOENT,
    ECODE_NORES,
    ECODE_STATE,
    HooksAbort,
    LockTimeout,
    NodeError,
    NodeUnreachable,
    OpExecError,
    OpPrereqError,
)
from ganeti_lv.hypervisor.base import CopyAhead
from ganeti_lv.hypervisor.fake import FakeNodeOps
from ganeti_lv.hypervisor.fake_export import FakeExport
from ganeti_lv.mcpu import Processor
from ganeti_lv.node.transport import HookScriptResult
from ganeti_lv.objects import disk_dir, disk_path
from ganeti_lv.opcodes import OpBackupExport, OpBackupQuery, OpBackupRemove, OpCode
from ganeti_lv.reservations import MEMORY, Reservation, Reservations
from ganeti_lv.units import MIB

N1, N2, N3 = "node1.example.com", "node2.example.com", "node3.example.com"
INST = "inst1.example.com"


def place_inst1(ops: FakeNodeOps, config: ConfigStore) -> None:
    """inst1 runs on node1 with its disk file."""
    cluster = config.get_cluster()
    inst = config.get_instance(INST)
    assert inst is not None
    path = disk_path(cluster, inst, 0)
    ops.add_domain(N1, INST, disk_paths=[path])
    ops.node(N1).files[path] = 1024


@pytest.fixture
def ops(fake_ops: FakeNodeOps, config: ConfigStore) -> FakeNodeOps:
    """inst1 runs on node1 with its disk file."""
    place_inst1(fake_ops, config)
    return fake_ops


def run(ctx: Context, op: OpCode) -> tuple[Any, list[str]]:
    lines: list[str] = []
    result = Processor(ctx).execute(op, feedback_fn=lines.append)
    return result, lines


def methods(ops: FakeNodeOps) -> list[str]:
    return [c.method for c in ops.calls if c.method not in ("run_hooks",)]


def admin(config: ConfigStore) -> str:
    inst = config.get_instance(INST)
    assert inst is not None
    return inst.admin_state


def running(ops: FakeNodeOps) -> bool:
    dom = ops.node(N1).domains.get(INST)
    return dom is not None and dom.state == constants.DOMSTATE_RUNNING


def test_live_export_snapshots_copies_publishes_and_merges(ctx, ops, config):
    result, lines = run(ctx, OpBackupExport(instance_name="inst1", target_node=N2, shutdown=False))
    assert result == (True, [True])
    seq = methods(ops)
    assert "shutdown_instance" not in seq
    assert seq.index("snapshot_disks") < seq.index("copy_disk") < seq.index("commit_snapshot")
    copy = ops.calls_to("copy_disk")[0]
    assert copy.args[0] == disk_path(config.get_cluster(), config.get_instance(INST), 0)
    assert copy.args[2] == f"{config.get_cluster().export_dir}/{INST}.new/disk0.img"
    assert ops.node(N1).domains[INST].overlays == []
    exp = ops.exports[N2][INST]
    manifest = exportinfo.Manifest.from_json(exp.manifest_text)
    assert manifest.disks[0].checksum == exp.files["disk0.img"]
    assert manifest.disks[0].checksum_algorithm == "sha256-tree-4M"
    cfg = exportinfo.parse_config(exp.config_text)
    assert cfg["instance"]["name"] == INST
    assert cfg["export"]["source"] == config.get_node(N1).uuid
    assert running(ops) and admin(config) == constants.ADMINST_UP
    assert any(line.startswith("disk/0 sent ") and "MiB/s" in line for line in lines)
    assert any("Export of inst1.example.com is in node2" in line for line in lines)


def test_shutdown_export_restarts_right_after_the_snapshot(ctx, ops, config):
    run(ctx, OpBackupExport(instance_name=INST, target_node=N2))
    seq = methods(ops)
    assert seq.index("shutdown_instance") < seq.index("start_with_snapshot")
    assert seq.index("start_with_snapshot") < seq.index("copy_disk")
    assert "start_instance" not in seq
    assert running(ops) and admin(config) == constants.ADMINST_UP


def test_shutdown_export_without_snapshot_is_aborted_unless_a_long_sleep_is_allowed(
    ctx, ops, config
):
    """Ganeti's --long-sleep: the instance down for the whole copy only when allowed."""
    ops.fail("start_with_snapshot", N1, "snapshots unsupported")
    with pytest.raises(OpExecError, match="snapshots unsupported; the instance would stay shut"):
        run(ctx, OpBackupExport(instance_name=INST, target_node=N2))
    seq = methods(ops)
    assert "copy_disk" not in seq and seq.index("shutdown_instance") < seq.index("start_instance")
    assert running(ops) and admin(config) == constants.ADMINST_UP
    assert INST not in ops.exports.get(N2, {})
    ops.calls.clear()
    _, lines = run(ctx, OpBackupExport(instance_name=INST, target_node=N2, long_sleep=True))
    seq = methods(ops)
    assert seq.index("copy_disk") < seq.index("start_instance")
    assert any("copying without" in line for line in lines)
    assert running(ops) and admin(config) == constants.ADMINST_UP


def test_a_restart_on_a_snapshot_that_left_the_guest_paused_is_not_called_a_start(ctx, ops, config):
    """Its connection lost after the paused start, the guest could not be stopped again:
    a start would take it for running and record it up. Said instead, and left alone."""

    def lost(node: Any, cluster: Any, instance: Any) -> Any:
        ops.add_domain(N1, INST, state=constants.DOMSTATE_PAUSED)
        raise NodeUnreachable("connection lost", node=N1)

    ops.start_with_snapshot = lost
    lines: list[str] = []
    with pytest.raises(OpExecError, match="connection lost") as err:
        Processor(ctx).execute(
            OpBackupExport(instance_name=INST, target_node=N2), feedback_fn=lines.append
        )
    assert not ops.calls_to("start_instance") and not ops.calls_to("copy_disk")
    assert any(f"Instance {INST} is not started again: " in line for line in lines), lines
    assert not any("started again" in line and "not started" not in line for line in lines)
    assert ops.node(N1).domains[INST].state == constants.DOMSTATE_PAUSED
    assert admin(config) == constants.ADMINST_DOWN  # not running: not recorded up
    assert "connection lost" in str(err.value)


def test_an_instance_stopped_for_its_export_keeps_its_memory_on_its_node(ctx, ops, config):
    """Down for the whole copy (--long-sleep), it is started again: a move to its node
    planned meanwhile must not count its memory as free (a reservation until the end)."""
    ops.fail("start_with_snapshot", N1, "snapshots unsupported")
    seen: list[list[Reservation]] = []
    real = ops.copy_disk

    def copy(*args: Any, **kwargs: Any) -> Any:
        with Reservations(config.data_dir, MEMORY).node(N1) as ledger:
            seen.append(ledger.others())
        return real(*args, **kwargs)

    ops.copy_disk = copy  # type: ignore[method-assign]
    run(ctx, OpBackupExport(instance_name=INST, target_node=N2, long_sleep=True))
    maxmem = config.get_cluster().fill_beparams(config.get_instance(INST))["maxmem"]
    assert seen == [[Reservation(N1, "", maxmem * 1024 * 1024, INST)]]
    with Reservations(config.data_dir, MEMORY).node(N1) as ledger:
        assert ledger.others() == []
    assert running(ops)


def test_failed_copy_keeps_previous_export_and_instance(ctx, ops, config):
    run(ctx, OpBackupExport(instance_name=INST, target_node=N2, shutdown=False))
    previous = ops.exports[N2][INST]
    ops.fail("copy_disk", N1, NodeError("connection lost", N1))
    with pytest.raises(OpExecError, match="connection lost"):
        run(ctx, OpBackupExport(instance_name=INST, target_node=N2, shutdown=False))
    assert ops.exports[N2][INST] is previous
    assert f"{INST}.new" not in ops.exports[N2]
    assert ops.node(N1).domains[INST].overlays == []  # merged in the finally
    assert running(ops) and admin(config) == constants.ADMINST_UP


@pytest.mark.parametrize("stopped", [True, False])
def test_a_failed_shutdown_records_the_state_the_guest_is_in(
    ctx, ops, config, monkeypatch, stopped
):
    """The export fails there: the instance runs as before it and is recorded up, also
    when it stopped all the same (its answer lost: started again, not left stopped with
    its configuration saying up)."""
    shutdown = ops.shutdown_instance

    def answer_lost(node, instance, timeout):
        if stopped:
            shutdown(node, instance, timeout)
        raise NodeError("connection lost", N1)

    monkeypatch.setattr(ops, "shutdown_instance", answer_lost)
    with pytest.raises(OpExecError, match="Could not shutdown"):
        run(ctx, OpBackupExport(instance_name=INST, target_node=N2, long_sleep=True))
    assert running(ops) and admin(config) == constants.ADMINST_UP
    assert ("start_instance" in methods(ops)) == stopped
    assert "copy_disk" not in methods(ops)


@pytest.mark.parametrize("lost", [True, False])
def test_a_zeroing_whose_answer_was_lost_leaves_the_instance_stopped(ctx, ops, config, lost):
    """It may still write the disks until its timeout: the guest is not started on them
    (recorded down, the error says when to start it); a zeroing that failed is over,
    and the instance runs again."""
    error = NodeUnreachable("no answer", N1) if lost else NodeError("zerofree failed", N1)
    ops.fail("zero_free_space", N1, error)
    op = OpBackupExport(instance_name=INST, target_node=N2, zero_free_space=True, long_sleep=True)
    with pytest.raises(OpExecError, match="Could not zero the free space") as err:
        run(ctx, op)
    assert ("stays stopped: start it once that time has passed" in err.value.msg) == lost
    assert running(ops) != lost
    assert admin(config) == (constants.ADMINST_DOWN if lost else constants.ADMINST_UP)
    assert "copy_disk" not in methods(ops)


def test_a_running_instance_recorded_down_is_refused_without_shutdown_in_the_checks(
    ctx, ops, config
):
    """Started by hand (its configuration says down): no snapshot, as Ganeti's, and its
    disks are not read in use; refused before anything, with Ganeti's wrong_state."""
    config.set_admin_state(INST, constants.ADMINST_DOWN)
    with pytest.raises(OpPrereqError, match="use the shutdown mode") as err:
        run(ctx, OpBackupExport(instance_name=INST, target_node=N2, shutdown=False))
    assert err.value.ecode == ECODE_STATE
    assert not {"repair_disk_chain", "export_prepare", "copy_disk"} & set(methods(ops))
    assert running(ops)


@pytest.mark.parametrize("suffix", ["", ".old"])
def test_an_export_directory_that_holds_no_export_is_refused_before_anything(
    ctx, ops, config, suffix
):
    """The target would refuse it only after the instance was stopped or snapshotted
    (``.old``, a failed publish's previous export, is put back first when alone)."""
    cluster = config.get_cluster()
    ops.node(N2).files[f"{cluster.export_dir}/{INST}{suffix}/notes.txt"] = 1
    serial = config.read().serial
    with pytest.raises(OpPrereqError, match="holds no export") as err:
        run(ctx, OpBackupExport(instance_name=INST, target_node=N2))
    assert err.value.ecode == ECODE_STATE and config.read().serial == serial
    seq = methods(ops)
    assert "shutdown_instance" not in seq and "snapshot_disks" not in seq
    assert "export_prepare" not in seq and running(ops)


def test_a_failure_before_the_first_copy_removes_the_new_directory(ctx, ops, config, monkeypatch):
    """``.new`` exists from the target's preparation on: whatever fails after it
    (here the warm-up of the other nodes' connections) removes it."""

    def cannot_start(lu):
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(LUBackupExport, "_prewarm_other_nodes", cannot_start)
    with pytest.raises(RuntimeError, match="can't start new thread"):
        run(ctx, OpBackupExport(instance_name=INST, target_node=N2, shutdown=False))
    assert ops.calls_to("export_prepare", N2) and ops.calls_to("export_abort", N2)
    assert f"{INST}.new" not in ops.exports.get(N2, {})
    assert running(ops) and admin(config) == constants.ADMINST_UP


def test_failed_copy_while_stopped_restarts_instance(ctx, ops, config):
    ops.fail("start_with_snapshot", N1, "snapshots unsupported")
    ops.fail("copy_disk", N1, NodeError("disk full", N1, ecode=ECODE_NORES))
    with pytest.raises(OpExecError) as err:
        run(ctx, OpBackupExport(instance_name=INST, target_node=N2, long_sleep=True))
    assert err.value.ecode == ECODE_NORES
    assert running(ops) and admin(config) == constants.ADMINST_UP


def test_failed_copy_and_failed_restart_report_the_copy_and_warn(ctx, ops, config):
    ops.fail("start_with_snapshot", N1, "snapshots unsupported")
    ops.fail("copy_disk", N1, NodeError("disk full", N1, ecode=ECODE_NORES))
    ops.fail("start_instance", N1, "no memory")
    lines: list[str] = []
    with pytest.raises(OpExecError, match="disk full") as err:
        Processor(ctx).execute(
            OpBackupExport(instance_name=INST, target_node=N2, long_sleep=True),
            lambda m: lines.append(str(m)),
        )
    assert err.value.ecode == ECODE_NORES
    assert any("Could not start instance" in line and "no memory" in line for line in lines)
    assert not running(ops) and admin(config) == constants.ADMINST_DOWN
    assert INST not in ops.exports.get(N2, {})


def test_failed_restart_leaves_config_truthful(ctx, ops, config):
    ops.fail("start_with_snapshot", N1, "snapshots unsupported")
    ops.fail("start_instance", N1, "no memory")
    with pytest.raises(OpExecError, match="Could not start"):
        run(ctx, OpBackupExport(instance_name=INST, target_node=N2, long_sleep=True))
    assert not running(ops)
    assert admin(config) == constants.ADMINST_DOWN
    assert INST in ops.exports[N2]  # the export itself was completed


def test_export_with_remove_instance(ctx, ops, config):
    run(ctx, OpBackupExport(instance_name=INST, target_node=N2, remove_instance=True))
    seq = methods(ops)
    assert "snapshot_disks" not in seq and "start_with_snapshot" not in seq
    assert seq.index("copy_disk") < seq.index("remove_disks")
    assert config.get_instance(INST) is None
    assert INST in ops.exports[N2]


@pytest.mark.parametrize("step", ["undefine_instance", "remove_disks"])
def test_a_failed_removal_after_the_export_keeps_the_instance_and_says_the_export_is_complete(
    ctx, ops, config, step
):
    """As Ganeti's RemoveInstance: the instance stays in the configuration (its domain or
    disks are still there); the export, complete, is kept and the error says so."""
    ops.fail(step, N1, "cannot remove")
    with pytest.raises(OpExecError) as err:
        run(ctx, OpBackupExport(instance_name=INST, target_node=N2, remove_instance=True))
    assert "cannot remove" in err.value.msg
    assert "the export itself is complete" in err.value.msg
    assert config.get_instance(INST) is not None
    assert INST in ops.exports[N2]
    assert ("remove_disks" in methods(ops)) == (step == "remove_disks")


def test_removal_failures_ignored_on_request_are_warnings(ctx, ops, config):
    ops.fail("undefine_instance", N1, "cannot undefine")
    ops.fail("remove_disks", N1, "cannot remove the disks")
    op = OpBackupExport(
        instance_name=INST, target_node=N2, remove_instance=True, ignore_remove_failures=True
    )
    _, lines = run(ctx, op)
    assert any("cannot undefine" in line for line in lines)
    assert any("cannot remove the disks" in line for line in lines)
    assert config.get_instance(INST) is None
    assert INST in ops.exports[N2]


def test_export_of_stopped_instance_copies_directly(ctx, ops, config):
    config.set_admin_state(INST, constants.ADMINST_DOWN)
    ops.node(N1).domains[INST].state = constants.DOMSTATE_SHUTOFF
    run(ctx, OpBackupExport(instance_name=INST, target_node=N2))
    seq = methods(ops)
    assert "shutdown_instance" not in seq and "start_instance" not in seq
    assert "snapshot_disks" not in seq and "copy_disk" in seq
    assert admin(config) == constants.ADMINST_DOWN and not running(ops)


def test_second_export_elsewhere_removes_first(ctx, ops):
    run(ctx, OpBackupExport(instance_name=INST, target_node=N2, shutdown=False))
    run(ctx, OpBackupExport(instance_name=INST, target_node=N3, shutdown=False))
    assert INST not in ops.exports.get(N2, {})
    assert INST in ops.exports[N3]
    result, _ = run(ctx, OpBackupQuery())
    assert result == {N1: [], N2: [], N3: [INST]}


def test_leftover_overlay_is_merged_first(ctx, ops):
    ops.node(N1).domains[INST].overlays = ["/x/disk0.img.export-snap.qcow2"]
    _, lines = run(ctx, OpBackupExport(instance_name=INST, target_node=N2, shutdown=False))
    seq = methods(ops)
    assert seq.index("repair_disk_chain") < seq.index("snapshot_disks") < seq.index("copy_disk")
    assert any("Merged leftover export overlay /x/disk0.img.export-snap.qcow2" in x for x in lines)


def test_zero_free_space_and_compression(ctx, ops):
    run(
        ctx,
        OpBackupExport(instance_name=INST, target_node=N2, zero_free_space=True, compress="zstd"),
    )
    seq = methods(ops)
    assert seq.index("shutdown_instance") < seq.index("zero_free_space")
    assert seq.index("zero_free_space") < seq.index("start_with_snapshot")
    assert ops.copy_options[0]["compress"] == "zstd"


def test_a_failed_zeroing_starts_the_stopped_instance_again(ctx, ops, config):
    ops.fail("zero_free_space", N1, "zeroing timed out")
    with pytest.raises(OpExecError, match="Could not zero the free space"):
        run(ctx, OpBackupExport(instance_name=INST, target_node=N2, zero_free_space=True))
    seq = methods(ops)
    assert seq.index("zero_free_space") < seq.index("start_instance")
    assert running(ops) and admin(config) == constants.ADMINST_UP
    assert INST not in ops.exports.get(N2, {})


def test_backup_remove(ctx, ops):
    run(ctx, OpBackupExport(instance_name=INST, target_node=N2, shutdown=False))
    result, _ = run(ctx, OpBackupRemove(instance_name=INST))
    assert result == [N2]
    assert INST not in ops.exports[N2]
    with pytest.raises(OpExecError, match="No exports found") as err:
        run(ctx, OpBackupRemove(instance_name=INST))
    assert err.value.ecode == ECODE_NOENT  # unknown_entity, not an internal error


def test_backup_remove_of_a_name_shown_removes_that_export_not_an_instances(ctx, ops):
    """``backup list`` shows the export ``inst1`` of a removed instance beside the
    exports of ``inst1.example.com``: ``backup remove inst1`` removes the former."""
    run(ctx, OpBackupExport(instance_name=INST, target_node=N2, shutdown=False))
    short = INST.split(".")[0]
    ops.exports[N2][short] = ops.exports[N2][INST]
    result, _ = run(ctx, OpBackupRemove(instance_name=short))
    assert result == [N2]
    assert short not in ops.exports[N2] and INST in ops.exports[N2]
    # a node that cannot be asked may hold such an export: refused, nothing removed
    ops.set_unreachable(N3)
    with pytest.raises(OpPrereqError, match=f"Cannot tell whether {short} is the name") as err:
        run(ctx, OpBackupRemove(instance_name=short))
    assert err.value.ecode == "environment_error" and INST in ops.exports[N2]
    ops.unreachable.clear()
    # without such an export the short name is the instance's, as in Ganeti
    result, _ = run(ctx, OpBackupRemove(instance_name=short))
    assert result == [N2] and INST not in ops.exports[N2]


def test_backup_remove_warns_about_an_offline_node_it_cannot_clean(ctx, ops, config):
    run(ctx, OpBackupExport(instance_name=INST, target_node=N2, shutdown=False))
    with config.update() as data:
        data.nodes[N3].offline = True
    result, lines = run(ctx, OpBackupRemove(instance_name=INST))
    assert result == [N2]
    assert any(f"Node {N3} is offline: an export of {INST} there" in line for line in lines)
    run(ctx, OpBackupExport(instance_name=INST, target_node=N2, shutdown=False))
    ops.exports[N2][f"{INST}.new"] = FakeExport()  # left by an interrupted export
    _, lines = run(ctx, OpBackupRemove(instance_name=INST, stale=True))
    assert any(
        f"Node {N3} is offline: what an interrupted export of {INST} left there" in line
        for line in lines
    )


def test_an_old_instance_named_like_an_export_work_folder_is_refused_before_anything(
    ctx, ops, config
):
    """Created before the name rule (or by Ganeti): refused before it is shut down."""
    with config.update() as data:
        inst = data.instances.pop(INST)
        inst.name = "db.old"
        data.instances["db.old"] = inst
    ops.node(N1).domains["db.old"] = ops.node(N1).domains.pop(INST)
    for op in (
        OpBackupExport(instance_name="db.old", target_node=N2),
        OpBackupRemove(instance_name="db.old"),
    ):
        with pytest.raises(OpPrereqError, match="ends with '.old'") as err:
            run(ctx, op)
        assert err.value.ecode == ECODE_INVAL
    assert methods(ops) == []  # nothing asked of a node


@pytest.mark.parametrize("shutdown, zero", [(True, False), (True, True), (False, False)])
def test_a_paused_guest_is_refused_before_anything(ctx, ops, config, shutdown, zero):
    """Paused (by its operator, or by qemu on a full disk): its shutdown would end in a
    destroy, and its disks, still held by its qemu, would be zeroed or copied in use."""
    ops.node(N1).domains[INST].state = constants.DOMSTATE_PAUSED
    op = OpBackupExport(instance_name=INST, target_node=N2, shutdown=shutdown, zero_free_space=zero)
    with pytest.raises(OpPrereqError) as err:
        run(ctx, op)
    assert err.value.ecode == ECODE_STATE
    assert err.value.msg == (
        f"Can't export instance {INST}: it is paused on {N1}, not running;"
        " resume it or shut it down first"
    )
    assert not {
        "shutdown_instance",
        "zero_free_space",
        "snapshot_disks",
        "export_prepare",
        "copy_disk",
    } & set(methods(ops))
    assert ops.node(N1).domains[INST].state == constants.DOMSTATE_PAUSED
    assert admin(config) == constants.ADMINST_UP


@pytest.mark.parametrize("shutdown", [True, False])
def test_a_guest_paused_after_the_checks_is_refused_too(ctx, ops, config, monkeypatch, shutdown):
    """Paused between the checks and Exec (qemu on a full disk, or by hand): neither shut
    down (which ends in a destroy of a paused guest) nor copied while its qemu holds it."""
    checked = LUBackupExport._check_settled

    def check_then_pause(lu: Any) -> None:
        checked(lu)
        ops.node(N1).domains[INST].state = constants.DOMSTATE_PAUSED

    monkeypatch.setattr(LUBackupExport, "_check_settled", check_then_pause)
    op = OpBackupExport(instance_name=INST, target_node=N2, shutdown=shutdown)
    with pytest.raises(OpExecError, match=f"it is paused on {N1}, not running") as err:
        run(ctx, op)
    assert err.value.ecode == ECODE_STATE
    assert not {"shutdown_instance", "snapshot_disks", "export_prepare", "copy_disk"} & set(
        methods(ops)
    )
    assert ops.node(N1).domains[INST].state == constants.DOMSTATE_PAUSED
    assert admin(config) == constants.ADMINST_UP


def test_target_without_space_is_nores(ctx, ops):
    ops.free_bytes[N2] = 1024
    with pytest.raises(OpPrereqError) as err:
        run(ctx, OpBackupExport(instance_name=INST, target_node=N2))
    assert err.value.ecode == ECODE_NORES
    assert "shutdown_instance" not in methods(ops)


@pytest.mark.parametrize(
    "kwargs, ecode, match",
    [
        ({"remove_instance": True, "shutdown": False}, ECODE_STATE, "Can not remove instance"),
        ({"zero_free_space": True, "shutdown": False}, ECODE_INVAL, "zeroing cannot be used"),
        ({"compress": "lzma"}, ECODE_INVAL, "Compression tool not allowed"),
        ({"long_sleep": True, "shutdown": False}, ECODE_INVAL, "long sleep"),
        ({"zeroing_timeout_fixed": 5}, ECODE_INVAL, "Zeroing timeout options"),
        ({"instance_name": "nosuch"}, ECODE_NOENT, "not known"),
        ({"target_node": "nosuch"}, ECODE_NOENT, "not known"),
        ({"mode": "remote", "target_node": None}, ECODE_INVAL, "Missing X509 key name"),
        (
            {"mode": "remote", "x509_key_name": ["k", "h"], "target_node": None},
            ECODE_INVAL,
            "Missing destination X509 CA",
        ),
        (
            {"mode": "remote", "x509_key_name": ["k"], "destination_x509_ca": "pem"},
            ECODE_INVAL,
            "not supported yet",
        ),
    ],
)
def test_bad_input_changes_nothing(ctx, ops, config, kwargs, ecode, match):
    args = {"instance_name": INST, "target_node": N2, **kwargs}
    with pytest.raises(OpPrereqError, match=match) as err:
        run(ctx, OpBackupExport(**args))
    assert err.value.ecode == ecode
    assert not {"shutdown_instance", "copy_disk", "export_prepare"} & set(methods(ops))
    assert admin(config) == constants.ADMINST_UP and running(ops)


@pytest.mark.parametrize("flag", ["offline", "drained"])
def test_offline_or_drained_target_refused(ctx, ops, config, flag):
    node = config.get_node(N2)
    assert node is not None
    setattr(node, flag, True)
    config.update_node(node)
    with pytest.raises(OpPrereqError) as err:
        run(ctx, OpBackupExport(instance_name=INST, target_node=N2))
    assert err.value.ecode == ECODE_STATE
    assert "copy_disk" not in methods(ops)


def test_hooks_env_and_nodes(ctx, ops):
    seen: list[tuple[str, dict[str, str]]] = []
    ops.hooks_fn = lambda node, d, env, t: seen.append((node, env)) or []
    run(ctx, OpBackupExport(instance_name=INST, target_node=N2, remove_instance=True))
    pre = [(n, e) for n, e in seen if e["GANETI_HOOKS_PHASE"] == "pre"]
    assert sorted(n for n, _ in pre) == [N1, N2]  # master (node1) = primary, target
    env = pre[0][1]
    assert env["GANETI_EXPORT_MODE"] == "local" and env["GANETI_EXPORT_NODE"] == N2
    assert env["GANETI_EXPORT_DO_SHUTDOWN"] == "True"
    assert env["GANETI_REMOVE_INSTANCE"] == "True" and env["GANETI_SHUTDOWN_TIMEOUT"] == "120"
    post = [e for _, e in seen if e["GANETI_HOOKS_PHASE"] == "post"]
    assert post and post[0]["GANETI_POST_INSTANCE_NAME"] == INST  # after removal


def test_dry_run(ctx, ops):
    result, _ = run(ctx, OpBackupExport(instance_name=INST, target_node=N2, dry_run=True))
    assert result == (True, [True])
    assert "copy_disk" not in methods(ops)


def _import_restored(ctx):
    """Import INST's export on N2 as a new, stopped instance on N3."""
    from ganeti_lv.opcodes import OpInstanceCreate

    run(
        ctx,
        OpInstanceCreate(
            instance_name="restored.example.com",
            disk_template="file",
            pnode=N3,
            mode="import",
            src_node=N2,
            src_path=INST,
            start=False,
        ),
    )


def test_import_from_export_verifies_checksums(ctx, ops, config):

    run(ctx, OpBackupExport(instance_name=INST, target_node=N2, shutdown=False))
    sha = ops.exports[N2][INST].files["disk0.img"]
    _import_restored(ctx)
    inst = config.get_instance("restored.example.com")
    assert inst is not None and [d.size for d in inst.disks] == [1024]
    copy = ops.calls_to("copy_disk", N2)[-1]
    assert copy.args[1] == N3 and copy.args[2] == disk_path(config.get_cluster(), inst, 0)
    assert ops.copy_options[-1]["expect_sha256"] == f"sha256-tree-4M:{sha}"


def test_import_with_corrupt_export_fails_and_leaves_nothing(ctx, ops, config):
    from ganeti_lv.opcodes import OpInstanceCreate

    run(ctx, OpBackupExport(instance_name=INST, target_node=N2, shutdown=False))
    ops.exports[N2][INST].files["disk0.img"] = "0" * 64  # data no longer matches the manifest
    with pytest.raises(OpExecError, match="checksum mismatch"):
        run(
            ctx,
            OpInstanceCreate(
                instance_name="restored.example.com",
                disk_template="file",
                pnode=N3,
                mode="import",
                src_node=N2,
                start=False,
                src_path=INST,
            ),
        )
    assert config.get_instance("restored.example.com") is None


def test_cli_export_list_remove(ctx, ops, config, data_dir, capsys):
    from ganeti_lv.cli.main import main
    from ganeti_lv.master.protocol import progress_of

    base = ["--data-dir", data_dir]
    code = main([*base, "backup", "export", "-n", N2, "--noshutdown", INST], node_ops=ops)
    out = capsys.readouterr().out
    assert code == 0
    assert "disk/0 sent 1.0G, " in out and f"Export of {INST} is in {N2}" in out
    assert main([*base, "backup", "list", "--node", N2, "--no-headers"], node_ops=ops) == 0
    assert capsys.readouterr().out.split() == [N2, INST]
    code = main(
        [*base, "backup", "export", "-n", N2, "--transport-compression", "xz", INST], node_ops=ops
    )
    err = capsys.readouterr().err
    assert code == 1 and "error type: wrong_input" in err and "Compression tool not allowed" in err
    assert main([*base, "backup", "remove", INST], node_ops=ops) == 0
    assert INST not in ops.exports[N2]
    assert progress_of("disk/1 sent 1.5G, 120.0 MiB/s, 30%, ETA 12s") == (
        "disk/1",
        30.0,
        "1.5G, 120.0 MiB/s, ETA 12s",
    )


def test_cluster_verify_reports_overlays_and_stale_exports(ctx, ops, config):
    from ganeti_lv.opcodes import OpClusterVerify

    ops.node(N1).domains[INST].overlays = ["/x/disk0.img.export-snap.qcow2"]
    ops.exports.setdefault(N2, {})[f"{INST}.new"] = FakeExport()
    problems, lines = run(ctx, OpClusterVerify())
    codes = {p["code"] if isinstance(p, dict) else p.code for p in problems}
    assert {"EINSTANCEOVERLAY", "ENODESTALEEXPORT"} <= codes
    assert any("interrupted export" in line for line in lines)
    assert any(f"{INST}.new" in line for line in lines)
    [hint] = [line for line in lines if f"{INST}.new" in line]
    assert f"'gnt-lv backup remove --stale {INST}'" in hint, hint
    assert f"'backup remove {INST}'" not in hint  # that would remove the good export too


def test_backup_remove_stale_keeps_the_complete_export(ctx, ops):
    run(ctx, OpBackupExport(instance_name=INST, target_node=N2, shutdown=False))
    good = ops.exports[N2][INST]
    ops.exports[N2][f"{INST}.new"] = FakeExport()  # left by an interrupted export
    result, lines = run(ctx, OpBackupRemove(instance_name=INST, stale=True))
    assert result == [N2]
    assert ops.exports[N2] == {INST: good}
    assert any(line.endswith(f"/{INST}.new") and "removed" in line for line in lines)
    with pytest.raises(OpExecError, match="No incomplete export of instance") as info:
        run(ctx, OpBackupRemove(instance_name=INST, stale=True))
    assert info.value.ecode == ECODE_NOENT
    assert ops.exports[N2] == {INST: good}


def test_import_of_version1_export_verifies_plain_sha256(ctx, ops, config):
    import json

    run(ctx, OpBackupExport(instance_name=INST, target_node=N2, shutdown=False))
    exp = ops.exports[N2][INST]
    data = json.loads(exp.manifest_text)
    disk = data["disks"][0]
    disk["sha256"] = disk.pop("checksum")
    del disk["checksum_algorithm"]
    data["version"] = 1
    exp.manifest_text = json.dumps(data)  # as written before the tree checksum
    _import_restored(ctx)
    assert ops.copy_options[-1]["expect_sha256"] == f"sha256:{exp.files['disk0.img']}"


class _Rendezvous(FakeNodeOps):
    """Fake node operations whose space reads wait until all of them have started."""

    def __init__(self, parties: int) -> None:
        super().__init__()
        self.barrier = threading.Barrier(parties, timeout=5)

    def disk_usage(self, node, paths):
        self.barrier.wait()  # BrokenBarrierError if the reads ran one after another
        return super().disk_usage(node, paths)

    def free_space(self, node, path):
        self.barrier.wait()
        return super().free_space(node, path)


def _export_refused(ctx: Context, ops: FakeNodeOps, target: str) -> OpPrereqError:
    """A live export of inst1 to ``target`` refused before its snapshot; nothing held."""
    with pytest.raises(OpPrereqError) as err:
        run(ctx, OpBackupExport(instance_name=INST, target_node=target, shutdown=False))
    assert err.value.ecode == ECODE_NORES
    assert not ops.calls_to("snapshot_disks") and running(ops)
    with Reservations(ctx.data_dir).node(N1) as ledger:
        assert [r for r in ledger.others() if r.instance == INST] == []  # none of its own left
    return err.value


def test_the_overlays_room_on_the_primary_counts_what_other_jobs_still_write(ctx, ops, config):
    """Another job still writes 280 of node1's 300 MiB free: the 64 MiB the snapshot
    overlays may take are not there, and the guest would pause on a full disk."""
    ops.free_bytes[N1] = 300 * MIB
    with Reservations(config.data_dir).node(N1) as ledger:
        other = ledger.reserve("/srv/ganeti-lv/export/other.new", 280 * MIB, "other")
    try:
        with Reservations(config.data_dir).node(N1) as ledger:
            assert len(ledger.others()) == 1
        err = _export_refused(ctx, ops, N2)
    finally:
        other.release()
    pdir = disk_dir(config.get_cluster(), config.get_instance(INST))
    assert str(err) == (
        f"Not enough space in {pdir} of {N1} for the snapshot overlays: 64 MiB needed for"
        f" {INST}, 300 MiB free, of which 280 MiB are reserved by the jobs writing to it:"
        " other (280 MiB still to write)"
    )
    run(ctx, OpBackupExport(instance_name=INST, target_node=N2, shutdown=False))


def test_an_export_to_its_own_primary_needs_room_for_overlays_and_copies_together(ctx, ops):
    """300 MiB free on node1 holds the 64 MiB of overlays or the 256 MiB of copies, not both."""
    ops.free_bytes[N1] = 300 * MIB
    err = _export_refused(ctx, ops, N1)
    assert "64 MiB are reserved" in str(err) or "256 MiB are reserved" in str(err)
    ops.free_bytes[N1] = 1100 * MIB  # the fake's copy wants the whole 1 GiB image's room
    run(ctx, OpBackupExport(instance_name=INST, target_node=N1, shutdown=False))


def test_space_checks_on_primary_and_target_run_at_once(config):
    # the disk read and the free space of the primary and of the target
    ops = _Rendezvous(3)
    cluster = config.get_cluster()
    inst = config.get_instance(INST)
    path = disk_path(cluster, inst, 0)
    ops.add_domain(N1, INST, disk_paths=[path])
    ops.node(N1).files[path] = 1024
    ctx = Context.from_data_dir(config.data_dir, node_ops=ops)
    result, _ = run(ctx, OpBackupExport(instance_name=INST, target_node=N2, shutdown=False))
    assert result == (True, [True])
    assert sorted((c.method, c.node) for c in ops.calls_to("free_space")) == [
        ("free_space", N1),
        ("free_space", N2),
    ]


def test_failed_merge_after_publish_is_reported_and_export_kept(ctx, ops, config):
    run(ctx, OpBackupExport(instance_name=INST, target_node=N3, shutdown=False))
    ops.fail("commit_snapshot", N1, "block job failed", times=1)
    with pytest.raises(OpExecError, match="Could not merge the snapshot") as err:
        run(ctx, OpBackupExport(instance_name=INST, target_node=N2, shutdown=False))
    path = f"{N2}:{config.get_cluster().export_dir}/{INST}"
    assert str(err.value).endswith(f"; the export itself is complete in {path}")
    # the merge's own error is the cause; its class and error code are kept
    cause = err.value.__cause__
    assert isinstance(cause, OpExecError) and str(cause) == str(err.value).split("; the export")[0]
    assert type(err.value) is type(cause) and err.value.ecode == cause.ecode
    # the new export was published; the older one elsewhere was removed meanwhile
    assert INST in ops.exports[N2] and f"{INST}.new" not in ops.exports[N2]
    assert INST not in ops.exports.get(N3, {})
    assert ops.node(N1).domains[INST].overlays != []  # the fake left the overlay
    # the next operation on the instance merges the leftover
    run(ctx, OpBackupExport(instance_name=INST, target_node=N2, shutdown=False))
    assert ops.node(N1).domains[INST].overlays == []


def test_a_failed_merge_after_a_failed_copy_does_not_hide_the_copys_error(ctx, ops, config):
    ops.fail("copy_disk", N1, NodeError("connection lost", N1))
    ops.fail("commit_snapshot", N1, "block job failed", times=1)
    lines: list[str] = []
    with pytest.raises(OpExecError, match="connection lost"):
        Processor(ctx).execute(
            OpBackupExport(instance_name=INST, target_node=N2, shutdown=False), lines.append
        )
    assert any("WARNING: Could not merge the snapshot" in line for line in lines)
    assert INST not in ops.exports.get(N2, {}) and f"{INST}.new" not in ops.exports.get(N2, {})
    assert running(ops)


def test_cli_export_warms_master_primary_and_target(ctx, ops, data_dir):
    from ganeti_lv.cli.main import main

    code = main(
        ["--data-dir", data_dir, "backup", "export", "-n", N2, "--noshutdown", INST], node_ops=ops
    )
    assert code == 0
    # the job's session: master and primary (node1) and the target once the names
    # are expanded; during the copy the other node, for the clean-up of older exports
    (session,) = ops.sessions
    assert [e[1] for e in session.events if e[0] == "prewarm"] == [[N1, N2], [N3]]
    assert session.closed


class _Snapshots(FakeNodeOps):
    """Fake node operations noting each snapshot among the job's session events."""

    def snapshot_disks(self, node, instance, *, freeze=True):
        self.sessions[-1].events.append(("snapshot", node.name))
        return super().snapshot_disks(node, instance, freeze=freeze)


@pytest.fixture
def sops(config: ConfigStore) -> _Snapshots:
    ops = _Snapshots()
    place_inst1(ops, config)
    return ops


def _copy_ahead(config: ConfigStore, compress: str = "none") -> CopyAhead:
    cluster, inst = config.get_cluster(), config.get_instance(INST)
    assert inst is not None
    return CopyAhead(
        config.get_node(N1),
        disk_path(cluster, inst, 0),
        config.get_node(N2),
        f"{cluster.export_dir}/{INST}.new/disk0.img",
        compress,
    )


def test_live_export_sets_its_copy_up_in_its_session_before_the_snapshot(config, sops):
    ctx = Context.from_data_dir(config.data_dir, node_ops=sops)
    run(ctx, OpBackupExport(instance_name=INST, target_node=N2, shutdown=False, compress="gzip"))
    (session,) = sops.sessions
    expected = _copy_ahead(config, "gzip")
    assert session.events == [
        ("prewarm", [N1, N2]),
        ("prestart", expected),
        ("snapshot", N1),
        ("prewarm", [N3]),
        ("close", None),
    ]
    # the copy made is the one set up (same source, target and options), in that session
    copy = sops.calls_to("copy_disk")[0]
    assert (copy.node, *copy.args) == (N1, expected.src_path, N2, expected.dst_path)
    assert sops.copy_options[0]["compress"] == "gzip"
    assert sops.copy_options[0]["session"] is session


def test_prestarted_copy_called_off_when_the_export_fails_early(config, sops):
    sops.fail("snapshot_disks", N1, "qemu said no")
    ctx = Context.from_data_dir(config.data_dir, node_ops=sops)
    with pytest.raises(OpExecError, match="without a snapshot"):
        run(ctx, OpBackupExport(instance_name=INST, target_node=N2, shutdown=False))
    (session,) = sops.sessions
    assert [e[0] for e in session.events] == ["prewarm", "prestart", "snapshot", "close"]
    assert sops.calls_to("copy_disk") == []


def _cancel_in_pre_hook(ops: FakeNodeOps, cancel: Cancellation) -> None:
    def hooks(node, hooks_dir, env, timeout):
        cancel.request("Ctrl-C")
        return []

    ops.hooks_fn = hooks


@pytest.mark.parametrize("failure", ["prereq", "pre-hook", "lock-timeout", "cancel"])
def test_export_failing_before_exec_closes_its_session(config, sops, failure):
    """Whatever stops a live export before Exec, the copies set up for it are called off."""
    ctx = Context.from_data_dir(config.data_dir, node_ops=sops, lock_timeout=5.0)
    cancel = Cancellation()
    held = None
    expected: type[Exception] = OpExecError
    if failure == "prereq":
        sops.free_bytes[N2] = 1024
        expected = OpPrereqError
    elif failure == "pre-hook":
        hooks_dir = f"{config.get_cluster().hooks_base_dir}/instance-export-pre.d"
        sops.set_hook_results(N2, hooks_dir, [HookScriptResult("x/10-no", "FAIL", "no")])
        expected = HooksAbort
    elif failure == "lock-timeout":
        held = held_locks.hold(config.data_dir, INST)
        ctx.lock_timeout = 0.2
        expected = LockTimeout
    else:
        _cancel_in_pre_hook(sops, cancel)
    op = OpBackupExport(instance_name=INST, target_node=N2, shutdown=False)
    try:
        with pytest.raises(expected):
            Processor(ctx).execute(op, cancel=cancel)
    finally:
        if held is not None:
            held.release_all()
    (session,) = sops.sessions
    assert [e[0] for e in session.events] == ["prewarm", "prestart", "close"]
    assert sops.calls_to("copy_disk") == [] and running(sops)


def test_shutdown_export_sets_nothing_up_ahead(config, sops):
    ctx = Context.from_data_dir(config.data_dir, node_ops=sops)
    run(ctx, OpBackupExport(instance_name=INST, target_node=N2))
    kinds = [e[0] for e in sops.sessions[0].events]
    assert "prestart" not in kinds and kinds[-1] == "close"


def test_cli_sets_live_export_copies_up_in_the_jobs_session(config, sops, data_dir):
    from ganeti_lv.cli.main import main

    base = ["--data-dir", data_dir, "backup", "export", "-n", N2]
    assert main([*base, "--noshutdown", INST], node_ops=sops) == 0
    assert ("prestart", _copy_ahead(config)) in sops.sessions[0].events
    assert main([*base, "--noshutdown", "--dry-run", INST], node_ops=sops) == 0
    assert main([*base, INST], node_ops=sops) == 0  # shutdown mode
    assert all(e[0] != "prestart" for s in sops.sessions[1:] for e in s.events)
    assert all(s.closed for s in sops.sessions) and len(sops.sessions) == 3


def test_jobs_of_the_master_daemon_each_have_their_own_session(config, sops, data_dir):
    from ganeti_lv.master import daemon as masterd
    from ganeti_lv.master.client import connect

    srv = masterd.serve(data_dir, node_ops=sops)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        client = connect(data_dir)
        assert client is not None
        op = OpBackupExport(instance_name=INST, target_node=N2, shutdown=False)
        client.submit(op)
        client.submit(op)
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(5)
    # the same work begun early in the daemon as in a process of its own, one session a job
    assert len(sops.sessions) == 2 and all(s.closed for s in sops.sessions)
    for session in sops.sessions:
        assert ("prestart", _copy_ahead(config)) in session.events
        assert session.events.index(("prestart", _copy_ahead(config))) < session.events.index(
            ("snapshot", N1)
        )
    sessions = [o["session"] for o in sops.copy_options]
    assert sessions == sops.sessions


def test_cli_backup_remove_stale(ctx, ops, config, capsys):
    from ganeti_lv.cli.main import main

    run(ctx, OpBackupExport(instance_name=INST, target_node=N2, shutdown=False))
    good = ops.exports[N2][INST]
    ops.exports[N2][f"{INST}.new"] = FakeExport()
    code = main(["--data-dir", config.data_dir, "backup", "remove", "--stale", INST], node_ops=ops)
    out = capsys.readouterr().out
    assert code == 0 and f"{N2}: removed " in out and f"/{INST}.new" in out
    assert ops.exports[N2] == {INST: good}


def test_backup_remove_asks_every_online_node_and_warns_in_node_order(ctx, ops, config):
    run(ctx, OpBackupExport(instance_name=INST, target_node=N2, shutdown=False))
    with config.update() as data:
        data.nodes[N3].offline = True
    ops.set_unreachable(N1)
    result, lines = run(ctx, OpBackupRemove(instance_name=INST))
    assert result == [N2]
    warned = [line for line in lines if f"Could not remove export on {N1}" in line]
    offline = [line for line in lines if f"Node {N3} is offline" in line]
    assert len(warned) == len(offline) == 1
    assert lines.index(warned[0]) < lines.index(offline[0])  # node1 comes before node3


def _warnings(lines: list[str]) -> list[str]:
    return [line for line in lines if "WARNING" in line]


def test_a_publish_that_left_something_after_the_rename_succeeds_with_a_warning(ctx, ops, config):
    run(ctx, OpBackupExport(instance_name=INST, target_node=N3, shutdown=False))
    ops.publish_left[N2] = ["the previous export /srv/export/inst1.old not removed: I/O error"]
    result, lines = run(ctx, OpBackupExport(instance_name=INST, target_node=N2, shutdown=False))
    assert result == (True, [True])
    path = f"{N2}:{config.get_cluster().export_dir}/{INST}"
    assert _warnings(lines) == [
        f" - WARNING: Export of {INST} is complete in {path}, but the previous export"
        " /srv/export/inst1.old not removed: I/O error"
    ]
    assert set(ops.exports[N2]) == {INST} and INST not in ops.exports.get(N3, {})
    assert ops.node(N1).domains[INST].overlays == [] and running(ops)


def test_a_publish_whose_answer_is_lost_after_the_rename_counts_as_done(
    ctx, ops, config, monkeypatch
):
    publish = ops.export_finalize

    def publish_then_lose_the_answer(node, *args, **kwargs):
        publish(node, *args, **kwargs)
        raise NodeError("connection lost", node.name)

    monkeypatch.setattr(ops, "export_finalize", publish_then_lose_the_answer)
    result, lines = run(ctx, OpBackupExport(instance_name=INST, target_node=N2, shutdown=False))
    assert result == (True, [True])
    assert ops.calls_to("export_list")  # the target was asked whether it is in place
    assert "export_abort" not in methods(ops)
    assert any("its publishing reported an error: connection lost" in w for w in _warnings(lines))
    assert set(ops.exports[N2]) == {INST}
    assert ops.node(N1).domains[INST].overlays == [] and running(ops)


def test_a_publish_failing_before_the_rename_fails_and_keeps_the_previous_export(ctx, ops):
    run(ctx, OpBackupExport(instance_name=INST, target_node=N2, shutdown=False))
    previous = ops.exports[N2][INST]
    ops.fail("export_finalize", N2, NodeError("sync: I/O error", N2))
    with pytest.raises(OpExecError, match="Export finalization failed: sync: I/O error") as err:
        run(ctx, OpBackupExport(instance_name=INST, target_node=N2, shutdown=False))
    assert "the export itself is complete" not in str(err.value)
    assert ops.exports[N2] == {INST: previous}  # .new removed, the previous export kept
    assert ops.node(N1).domains[INST].overlays == [] and running(ops)


def test_a_failed_publish_does_not_take_the_previous_export_for_this_one(ctx, ops, monkeypatch):
    # .new went away some other way (an operator's rm): the publish fails, and the
    # complete export left in place is the previous one (its own timestamp), not this job's
    run(ctx, OpBackupExport(instance_name=INST, target_node=N2, shutdown=False))
    previous = ops.exports[N2][INST]
    previous.config_text = re.sub(
        r"^timestamp = \d+$", "timestamp = 1000", previous.config_text, flags=re.MULTILINE
    )
    publish = ops.export_finalize

    def new_gone_then_publish(node, cluster, name, *args, **kwargs):
        ops.exports[node.name].pop(name + ".new", None)
        return publish(node, cluster, name, *args, **kwargs)

    monkeypatch.setattr(ops, "export_finalize", new_gone_then_publish)
    with pytest.raises(OpExecError, match="Export finalization failed: no export in progress"):
        run(ctx, OpBackupExport(instance_name=INST, target_node=N2, shutdown=False))
    assert ops.exports[N2] == {INST: previous}
    assert ops.node(N1).domains[INST].overlays == [] and running(ops)
