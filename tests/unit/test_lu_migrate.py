"""LUInstanceMigrate / LUInstanceFailover through the processor with FakeNodeOps."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from ganeti_lv import constants, locking
from ganeti_lv.cancel import Cancellation
from ganeti_lv.config import ConfigStore
from ganeti_lv.context import Context
from ganeti_lv.errors import (
    ECODE_ENVIRON,
    ECODE_EXISTS,
    ECODE_INVAL,
    ECODE_NOENT,
    ECODE_NORES,
    ECODE_STATE,
    ECODE_TEMP_NORES,
    GenericError,
    HooksAbort,
    HypervisorError,
    MigrationAborted,
    MigrationNotConverged,
    NodeUnreachable,
    OpExecError,
    OpPrereqError,
)
from ganeti_lv.hypervisor.fake import FakeNodeOps
from ganeti_lv.hypervisor.migration_types import MigrationFailed, MigrationProgress
from ganeti_lv.mcpu import Processor
from ganeti_lv.node.transport import HookScriptResult
from ganeti_lv.objects import disk_dir, disk_path
from ganeti_lv.opcodes import OpCode, OpInstanceFailover, OpInstanceMigrate, OpNodeSetParams
from ganeti_lv.reservations import MEMORY, Held, Reservations
from ganeti_lv.units import MIB

N1, N2, N3 = "node1.example.com", "node2.example.com", "node3.example.com"
INST = "inst1.example.com"


@pytest.fixture
def ops(inst1_running: FakeNodeOps) -> FakeNodeOps:
    """Fake nodes where inst1 runs on node1 with its disk files."""
    return inst1_running


def run(ctx: Context, op: OpCode) -> tuple[Any, list[str]]:
    """Execute ``op``; return (result, feedback lines)."""
    lines: list[str] = []
    result = Processor(ctx).execute(op, feedback_fn=lines.append)
    return result, lines


def disk0_path(config: ConfigStore) -> str:
    """The path of INST's first disk image."""
    inst = config.get_instance(INST)
    assert inst is not None
    return disk_path(config.get_cluster(), inst, 0)


def running_on(ops: FakeNodeOps, name: str = INST) -> list[str]:
    """Nodes where the domain runs."""
    return sorted(
        n
        for n, fake in ops.nodes.items()
        if name in fake.domains and fake.domains[name].state == constants.DOMSTATE_RUNNING
    )


def set_shared(config: ConfigStore, unsafe_ok: bool = True) -> None:
    """Make inst1 a sharedfile instance."""
    with config.update() as data:
        data.instances[INST].disk_template = constants.DT_SHARED_FILE
        data.cluster.shared_storage_unsafe_ok = unsafe_ok


def set_shared_present(config: ConfigStore, ops: FakeNodeOps, unsafe_ok: bool = True) -> None:
    """Make inst1 a sharedfile instance whose disk every node sees."""
    set_shared(config, unsafe_ok)
    inst = config.get_instance(INST)
    assert inst is not None
    ops.present_paths.add(disk_path(config.get_cluster(), inst, 0))


def shared_on_offline_n1(config: ConfigStore, ops: FakeNodeOps) -> None:
    """INST on shared storage, its primary N1 marked offline."""
    set_shared_present(config, ops)
    with config.update() as data:
        data.nodes[N1].offline = True


def set_shared_away_from_master(config: ConfigStore, ops: FakeNodeOps) -> None:
    """inst1 shared as above, on node1; the master (where hooks run) is node3."""
    set_shared_present(config, ops)
    with config.update() as data:
        data.cluster.master_node = N3


# ------------------------------------------------------------------ success


def test_live_migration_of_file_instance(
    ctx: Context, ops: FakeNodeOps, config: ConfigStore
) -> None:
    ops.migration_reports = [
        MigrationProgress(elapsed=1.0, memory_total=100, memory_remaining=50, iteration=1)
    ]
    cluster = config.get_cluster()
    inst = config.get_instance(INST)
    assert inst is not None
    _, lines = run(ctx, OpInstanceMigrate(instance_name="inst1", target_node="node2"))
    assert config.get_instance(INST).primary_node == N2  # type: ignore[union-attr]
    assert running_on(ops) == [N2]
    params = ops.calls_to("migrate_instance", N1)[0].args[2]
    assert params.live and params.copy_storage and not params.unsafe
    assert params.downtime_ms == 300 and params.bandwidth == 0
    # the disks copied count in the completion timeout
    assert params.disk_mib == sum(d.size for d in inst.disks) > 0
    # target images prepared before, source images removed after
    assert ops.calls_to("create_disks", N2)
    assert disk_path(cluster, inst, 0) in ops.node(N2).files
    assert not ops.node(N1).files
    assert any("50.0% of memory" in line for line in lines)
    assert any("downtime 42 ms" in line and "total time 1.00 s" in line for line in lines)


def test_sharedfile_uses_unsafe_only_when_cluster_allows(
    ctx: Context, ops: FakeNodeOps, config: ConfigStore
) -> None:
    set_shared_present(config, ops, unsafe_ok=False)
    run(ctx, OpInstanceMigrate(instance_name=INST, target_node=N2))
    params = ops.calls_to("migrate_instance", N1)[0].args[2]
    assert not params.copy_storage and not params.unsafe and params.disk_mib == 0
    assert not ops.calls_to("create_disks")
    set_shared(config, unsafe_ok=True)
    run(ctx, OpInstanceMigrate(instance_name=INST, target_node=N1))
    assert ops.calls_to("migrate_instance", N2)[0].args[2].unsafe
    assert running_on(ops) == [N1]


def test_non_live_and_per_call_overrides(ctx: Context, ops: FakeNodeOps) -> None:
    run(
        ctx,
        OpInstanceMigrate(
            instance_name=INST,
            target_node=N2,
            mode="non-live",
            migration_bandwidth=8,
            migration_downtime=50,
            migration_caps="auto-converge:xbzrle",
            escalate=False,
            progress_timeout=2,
        ),
    )
    params = ops.calls_to("migrate_instance", N1)[0].args[2]
    assert not params.live
    assert (params.bandwidth, params.downtime_ms) == (8, 50)
    assert params.caps == {"xbzrle": 1}  # auto-converge means nothing without live
    assert not params.escalate and params.progress_timeout == 2


def test_hvparams_mode_and_postcopy(ctx: Context, ops: FakeNodeOps, config: ConfigStore) -> None:
    with config.update() as data:
        data.instances[INST].hvparams = {
            "migration_caps": "auto-converge",
            "migration_bandwidth": 16,
        }
    run(ctx, OpInstanceMigrate(instance_name=INST, target_node=N2, allow_postcopy=True))
    params = ops.calls_to("migrate_instance", N1)[0].args[2]
    assert params.live and params.bandwidth == 16 and params.allow_postcopy
    assert params.caps == {"auto-converge": 1, "postcopy-ram": 1}


def test_downtime_ramp_from_hvparams(ctx: Context, ops: FakeNodeOps, config: ConfigStore) -> None:
    run(ctx, OpInstanceMigrate(instance_name=INST, target_node=N2))
    params = ops.calls_to("migrate_instance", N1)[0].args[2]
    assert (params.downtime_initial_ms, params.downtime_steps, params.downtime_passes) == (
        5,
        5,
        2,
    )
    assert params.downtime_ms == 300
    with config.update() as data:
        data.instances[INST].hvparams = {
            "migration_downtime_initial": 10,
            "migration_downtime_steps": 0,
            "migration_downtime_passes": 3,
        }
    run(ctx, OpInstanceMigrate(instance_name=INST, target_node=N1))
    params = ops.calls_to("migrate_instance", N2)[0].args[2]
    assert (params.downtime_initial_ms, params.downtime_steps, params.downtime_passes) == (
        10,
        0,
        3,
    )


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("migration_downtime_initial", 0),
        ("migration_downtime_passes", 0),
        ("migration_downtime_steps", -1),
        # stored before the bound existed: the ramp would be built in the master's memory
        ("migration_downtime_steps", 10**9),
    ],
)
def test_bad_downtime_ramp_is_refused(
    ctx: Context, ops: FakeNodeOps, config: ConfigStore, key: str, value: int
) -> None:
    with config.update() as data:
        data.instances[INST].hvparams = {key: value}
    with pytest.raises(OpPrereqError, match=key) as err:
        run(ctx, OpInstanceMigrate(instance_name=INST, target_node=N2))
    assert err.value.ecode == ECODE_INVAL
    assert not ops.calls_to("migrate_instance", N1)
    assert running_on(ops) == [N1]


@pytest.mark.parametrize(
    "hvparams", [{"migration_caps": "auto-converge:bogus"}, {"migration_downtime_passes": 0}]
)
def test_bad_migration_settings_are_refused_before_any_hook_also_in_dry_runs(
    ctx: Context, ops: FakeNodeOps, config: ConfigStore, hvparams: dict[str, Any]
) -> None:
    with config.update() as data:
        data.instances[INST].hvparams = hvparams
    hooks: list[str] = []

    def hook(node: str, hooks_dir: str, env: dict[str, str], timeout: float) -> list[Any]:
        hooks.append(hooks_dir)
        return []

    ops.hooks_fn = hook
    for dry_run in (True, False):
        with pytest.raises(OpPrereqError) as err:
            run(ctx, OpInstanceMigrate(instance_name=INST, target_node=N2, dry_run=dry_run))
        assert err.value.ecode == ECODE_INVAL
    assert hooks == [] and not ops.calls_to("repair_disk_chain")


def test_allocator_picks_most_free_memory(
    ctx: Context, ops: FakeNodeOps, config: ConfigStore
) -> None:
    ops.node(N2).facts.memory_free = 1000
    ops.node(N3).facts.memory_free = 3000
    _, lines = run(ctx, OpInstanceMigrate(instance_name=INST))
    assert config.get_instance(INST).primary_node == N3  # type: ignore[union-attr]
    assert any(f"Selected node {N3}" in line for line in lines)


def test_allocator_skips_failing_nodes(ctx: Context, ops: FakeNodeOps, config: ConfigStore) -> None:
    ops.node(N2).facts.memory_free = 1000
    ops.node(N3).facts.bridges = []
    run(ctx, OpInstanceMigrate(instance_name=INST))
    assert config.get_instance(INST).primary_node == N2  # type: ignore[union-attr]


def test_allocator_without_candidates(ctx: Context, ops: FakeNodeOps, config: ConfigStore) -> None:
    with config.update() as data:
        data.nodes[N2].drained = True
        data.nodes[N3].offline = True
    with pytest.raises(OpPrereqError) as err:
        run(ctx, OpInstanceMigrate(instance_name=INST))
    assert err.value.ecode == ECODE_NORES  # as Ganeti's allocator failure
    assert "No suitable target node" in err.value.msg and "drained" in err.value.msg


# ---------------------------------------------------------------- bad input


def _refuse(ctx: Context, ops: FakeNodeOps, config: ConfigStore, op: OpCode) -> OpPrereqError:
    serial = config.read().serial
    with pytest.raises(OpPrereqError) as err:
        run(ctx, op)
    assert config.read().serial == serial
    assert not ops.calls_to("migrate_instance")
    assert running_on(ops) == [N1]
    return err.value


def test_unknown_instance(ctx: Context, ops: FakeNodeOps, config: ConfigStore) -> None:
    err = _refuse(ctx, ops, config, OpInstanceMigrate(instance_name="nope"))
    assert (err.ecode, err.msg) == (ECODE_NOENT, "Instance 'nope' not known")


def test_target_is_primary(ctx: Context, ops: FakeNodeOps, config: ConfigStore) -> None:
    err = _refuse(ctx, ops, config, OpInstanceMigrate(instance_name=INST, target_node=N1))
    assert err.ecode == ECODE_STATE
    assert err.msg == f"Cannot migrate instance {INST} to its primary ({N1})"


@pytest.mark.parametrize(("flag", "text"), [("offline", "offline"), ("drained", "drained")])
def test_offline_or_drained_target(
    ctx: Context, ops: FakeNodeOps, config: ConfigStore, flag: str, text: str
) -> None:
    with config.update() as data:
        setattr(data.nodes[N2], flag, True)
    err = _refuse(ctx, ops, config, OpInstanceMigrate(instance_name=INST, target_node=N2))
    assert err.ecode == ECODE_STATE
    assert err.msg == f"Can't use {text} node {N2}"
    assert err.node == N2  # the target's own state: a node operation turns it away


def test_stopped_without_allow_failover(
    ctx: Context, ops: FakeNodeOps, config: ConfigStore
) -> None:
    config.set_admin_state(INST, constants.ADMINST_DOWN)
    err = _refuse(ctx, ops, config, OpInstanceMigrate(instance_name=INST, target_node=N2))
    assert err.ecode == ECODE_STATE and "marked to be down, cannot migrate" in err.msg


def test_live_and_mode(ctx: Context, ops: FakeNodeOps, config: ConfigStore) -> None:
    op = OpInstanceMigrate(instance_name=INST, live=True, mode="live")
    err = _refuse(ctx, ops, config, op)
    assert err.ecode == ECODE_INVAL and "Only one of the 'live' and 'mode'" in err.msg


def _cap_memory(config: ConfigStore, name: str, mib: int) -> None:
    node = config.get_node(name)
    assert node is not None
    node.memory_cap = mib
    config.update_node(node)


def _reserve_for_another_move(memory: Reservations, node: str, mib: int) -> Held:
    """What another node operation's move to ``node`` holds for an instance on its way."""
    with memory.node(node) as ledger:
        return ledger.reserve("", mib * MIB, "other.example.com")


def test_not_enough_memory_within_cap(ctx: Context, ops: FakeNodeOps, config: ConfigStore) -> None:
    _cap_memory(config, N2, 100)
    err = _refuse(ctx, ops, config, OpInstanceMigrate(instance_name=INST, target_node=N2))
    assert err.ecode == ECODE_NORES
    assert err.msg == (
        f"Not enough memory on node {N2} for migrating instance {INST}:"
        " needed 128 MiB, available 100 MiB"
    )


def test_a_guest_started_with_more_memory_needs_it_on_the_target(
    ctx: Context, ops: FakeNodeOps, config: ConfigStore
) -> None:
    """As Ganeti's: the memory the guest runs with (here 256 MiB from a start with
    temporary parameters, 128 MiB configured), not the configured one, must fit."""
    ops.node(N1).domains[INST].memory = 256
    _cap_memory(config, N2, 200)
    err = _refuse(ctx, ops, config, OpInstanceMigrate(instance_name=INST, target_node=N2))
    assert err.ecode == ECODE_NORES and "needed 256 MiB, available 200 MiB" in err.msg
    # a failover starts it from the configuration: its 128 MiB fit
    run(ctx, OpInstanceFailover(instance_name=INST, target_node=N2))
    assert running_on(ops) == [N2]


def test_a_stopped_guest_failed_over_needs_its_configured_memory(
    ctx: Context, ops: FakeNodeOps, config: ConfigStore
) -> None:
    """Its shut-off domain's smaller memory (from an earlier start with temporary
    parameters) is not what the failover starts it with."""
    ops.remove_domain(N1, INST)
    ops.add_domain(N1, INST, state=constants.DOMSTATE_SHUTOFF, memory=64)
    _cap_memory(config, N2, 100)
    serial = config.read().serial
    op = OpInstanceMigrate(instance_name=INST, target_node=N2, allow_failover=True)
    with pytest.raises(OpPrereqError) as err:
        run(ctx, op)
    assert err.value.ecode == ECODE_NORES and "needed 128 MiB, available 100 MiB" in err.value.msg
    assert config.read().serial == serial and INST not in ops.node(N2).domains


def test_memory_reserved_by_other_moves_to_the_target_is_not_free(
    ctx: Context, ops: FakeNodeOps, config: ConfigStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # room for one 128 MiB instance on node2; another node operation's move
    # reserved 100 MiB there for an instance not running on node2 yet
    _cap_memory(config, N2, 200)
    memory = Reservations(config.data_dir, MEMORY)
    other = _reserve_for_another_move(memory, N2, 100)
    waits: list[float] = []
    monkeypatch.setattr(ctx, "sleep", waits.append)
    err = _refuse(ctx, ops, config, OpInstanceMigrate(instance_name=INST, target_node=N2))
    # a shortage while the other move runs: tried again, then given up
    assert err.ecode == ECODE_TEMP_NORES and waits == [1.0, 2.0, 3.0]
    assert err.msg == (
        f"Not enough memory on node {N2} for instance {INST} while other moves to it run:"
        " needed 128 MiB, available 200 MiB, of which 100 MiB are reserved by them"
    )
    # with a cap of 300 MiB, while that instance arrives on node2 (paused, as a
    # migration's copy): the cap's figure counts it already (300 - 100 MiB free),
    # so its reservation is left out, not counted a second time
    _cap_memory(config, N2, 300)
    ops.add_domain(N2, "other.example.com", state=constants.DOMSTATE_PAUSED, memory=100)
    run(ctx, OpInstanceMigrate(instance_name=INST, target_node=N2))
    assert running_on(ops) == [N2]
    other.release()
    # the migration's own reservation ended with its job
    with memory.node(N2) as ledger:
        assert ledger.others() == []


def test_the_allocator_counts_other_moves_reservations(
    ctx: Context, ops: FakeNodeOps, config: ConfigStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """node2 has the most free memory, but another move reserved most of it: node3."""
    _cap_memory(config, N2, 200)
    _cap_memory(config, N3, 150)
    other = _reserve_for_another_move(Reservations(config.data_dir, MEMORY), N2, 100)
    monkeypatch.setattr(ctx, "sleep", lambda _s: None)
    _, lines = run(ctx, OpInstanceMigrate(instance_name=INST))
    other.release()
    assert running_on(ops) == [N3]
    assert any(f"Selected node {N3} as target" in line for line in lines)


def test_an_arriving_instance_counts_when_the_hosts_free_memory_is_the_smaller_figure(
    ctx: Context, ops: FakeNodeOps, config: ConfigStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cap far above the host's free memory: the paused arrival is in neither figure."""
    _cap_memory(config, N2, 8192)
    ops.node(N2).facts.memory_free = 200  # the host's figure binds
    memory = Reservations(config.data_dir, MEMORY)
    other = _reserve_for_another_move(memory, N2, 100)
    # it arrives paused: qemu has not taken its memory from the host yet
    ops.add_domain(N2, "other.example.com", state=constants.DOMSTATE_PAUSED, memory=100)
    monkeypatch.setattr(ctx, "sleep", lambda _s: None)
    err = _refuse(ctx, ops, config, OpInstanceMigrate(instance_name=INST, target_node=N2))
    assert err.ecode == ECODE_TEMP_NORES and "100 MiB are reserved by them" in err.msg
    # once it runs there the host's figure counts it: its reservation is left out
    ops.node(N2).domains["other.example.com"].state = constants.DOMSTATE_RUNNING
    run(ctx, OpInstanceMigrate(instance_name=INST, target_node=N2))
    assert running_on(ops) == [N2]
    other.release()


def test_memory_refusal_explains_runtime_changes(
    ctx: Context, ops: FakeNodeOps, config: ConfigStore
) -> None:
    """No ballooning: refused either way; the text says why, per allow_runtime_changes."""
    _cap_memory(config, N2, 100)
    with config.update() as data:
        data.instances[INST].beparams["minmem"] = 64
    err = _refuse(ctx, ops, config, OpInstanceMigrate(instance_name=INST, target_node=N2))
    assert err.ecode == ECODE_NORES
    assert "minimum memory (64 MiB) would need memory ballooning" in err.msg
    op = OpInstanceMigrate(instance_name=INST, target_node=N2, allow_runtime_changes=False)
    err = _refuse(ctx, ops, config, op)
    assert err.ecode == ECODE_NORES
    assert err.msg == (
        f"Memory ballooning not allowed and not enough free memory to fit instance {INST}"
        f" on target node {N2} (have 100 MiB, need 128 MiB)"
    )


def test_failover_memory_refusal(ctx: Context, ops: FakeNodeOps, config: ConfigStore) -> None:
    _cap_memory(config, N2, 100)
    err = _refuse(ctx, ops, config, OpInstanceFailover(instance_name=INST, target_node=N2))
    assert err.ecode == ECODE_NORES
    assert f"for starting instance {INST}: needed 128 MiB" in err.msg


@pytest.mark.parametrize("op_class", [OpInstanceMigrate, OpInstanceFailover])
def test_a_file_instances_images_already_on_the_target_are_never_overwritten(
    ctx: Context, ops: FakeNodeOps, config: ConfigStore, op_class: type[OpCode]
) -> None:
    """Images of the instance on the target (a move whose configuration change was lost,
    the guest stopped there since) are newer than the primary's: the copy would overwrite
    them and its undo remove them. Refused before anything is touched."""
    path = disk0_path(config)
    ops.node(N2).files[path] = 2048
    err = _refuse(ctx, ops, config, op_class(instance_name=INST, target_node=N2))
    assert err.ecode == ECODE_EXISTS
    assert f"Disk images of instance {INST} already exist on node {N2} ({path})" in err.msg
    assert f"gnt-lv instance migrate --cleanup {INST}" in err.msg
    assert ops.node(N2).files[path] == 2048
    touching = ("shutdown_instance", "create_disks", "copy_disk", "remove_disks")
    assert not [c for c in ops.calls if c.method in touching]
    # the allocator passes over that node, and says why when no other one is left
    with config.update() as data:
        data.nodes[N3].offline = True
    err = _refuse(ctx, ops, config, op_class(instance_name=INST))
    assert err.ecode == ECODE_NORES
    assert f"{N2}: Disk images of instance {INST} already exist" in err.msg
    with config.update() as data:
        data.nodes[N3].offline = False
    ops.present_paths.add(config.get_cluster().file_storage_dir)
    run(ctx, op_class(instance_name=INST))
    assert config.get_instance(INST).primary_node == N3  # type: ignore[union-attr]
    assert ops.node(N2).files[path] == 2048


def test_no_runtime_changes_disables_auto_converge(
    ctx: Context, ops: FakeNodeOps, config: ConfigStore
) -> None:
    op = OpInstanceMigrate(
        instance_name=INST,
        target_node=N2,
        migration_caps="auto-converge:xbzrle",
        allow_runtime_changes=False,
    )
    _, lines = run(ctx, op)
    params = ops.calls_to("migrate_instance", N1)[0].args[2]
    assert "auto-converge" not in params.caps and "xbzrle" in params.caps
    assert any("auto-converge" in line and "runtime changes" in line for line in lines)
    # a dry run of the same migration says so too (the parameters are checked before Exec)
    _, lines = run(ctx, replace(op, target_node=N1, dry_run=True))
    assert any("auto-converge" in line and "runtime changes" in line for line in lines)
    run(ctx, OpInstanceMigrate(instance_name=INST, target_node=N1, migration_caps="auto-converge"))
    assert "auto-converge" in ops.calls_to("migrate_instance", N2)[0].args[2].caps


def test_disk_chain_repair_failure_refuses(
    ctx: Context, ops: FakeNodeOps, config: ConfigStore
) -> None:
    ops.fail("repair_disk_chain", N1, "overlay is busy")
    serial = config.read().serial
    with pytest.raises(OpExecError, match="could not be merged; refusing") as err:
        run(ctx, OpInstanceMigrate(instance_name=INST, target_node=N2))
    assert "overlay is busy" in str(err.value)
    assert not ops.calls_to("migrate_instance")
    with pytest.raises(OpExecError, match="refusing to touch the disks"):
        run(ctx, OpInstanceFailover(instance_name=INST, target_node=N2))
    assert not ops.calls_to("shutdown_instance")
    assert config.read().serial == serial and running_on(ops) == [N1]


def test_disk_chain_repaired_before_migration(
    ctx: Context, ops: FakeNodeOps, config: ConfigStore
) -> None:
    ops.node(N1).domains[INST].overlays = ["/x/disk0.export-snap.qcow2"]
    _, lines = run(ctx, OpInstanceMigrate(instance_name=INST, target_node=N2))
    assert any("Merged leftover export overlay /x/disk0.export-snap.qcow2" in x for x in lines)
    assert running_on(ops) == [N2]


def test_missing_bridge(ctx: Context, ops: FakeNodeOps, config: ConfigStore) -> None:
    ops.node(N2).facts.bridges = ["br1"]
    err = _refuse(ctx, ops, config, OpInstanceMigrate(instance_name=INST, target_node=N2))
    assert err.ecode == ECODE_ENVIRON and "missing bridges br0" in err.msg


def test_missing_storage_path(ctx: Context, ops: FakeNodeOps, config: ConfigStore) -> None:
    ops.missing_paths[N2] = {config.get_cluster().file_storage_dir}
    err = _refuse(ctx, ops, config, OpInstanceMigrate(instance_name=INST, target_node=N2))
    assert err.ecode == ECODE_ENVIRON and "Storage paths missing" in err.msg


def test_incompatible_cpu(ctx: Context, ops: FakeNodeOps, config: ConfigStore) -> None:
    ops.cpu_compat[N2] = (False, "host CPU lacks avx512f")
    err = _refuse(ctx, ops, config, OpInstanceMigrate(instance_name=INST, target_node=N2))
    assert err.ecode == ECODE_ENVIRON and "avx512f" in err.msg


def test_not_running_on_primary(ctx: Context, ops: FakeNodeOps, config: ConfigStore) -> None:
    ops.remove_domain(N1, INST)
    ops.add_domain(N1, INST, state=constants.DOMSTATE_SHUTOFF)
    serial = config.read().serial
    with pytest.raises(OpPrereqError) as err:
        run(ctx, OpInstanceMigrate(instance_name=INST, target_node=N2))
    assert (err.value.ecode, err.value.msg) == (
        ECODE_STATE,
        f"Can't migrate, please use failover: Instance {INST} is not running",
    )
    assert config.read().serial == serial


@pytest.mark.parametrize("allow_failover", [False, True])
def test_a_paused_guest_is_refused_never_failed_over(
    ctx: Context, ops: FakeNodeOps, config: ConfigStore, allow_failover: bool
) -> None:
    """A failover's shutdown of a paused guest ends in a destroy: its memory would be lost."""
    ops.remove_domain(N1, INST)
    ops.add_domain(N1, INST, state=constants.DOMSTATE_PAUSED)
    serial = config.read().serial
    with pytest.raises(OpPrereqError) as err:
        run(
            ctx,
            OpInstanceMigrate(instance_name=INST, target_node=N2, allow_failover=allow_failover),
        )
    assert (err.value.ecode, err.value.msg) == (
        ECODE_STATE,
        f"Can't migrate instance {INST}: it is paused on {N1}, not running;"
        " resume it or shut it down first",
    )
    assert config.read().serial == serial
    assert not ops.calls_to("shutdown_instance") and not ops.calls_to("migrate_instance")
    assert running_on(ops) == [] and ops.node(N1).domains[INST].state == constants.DOMSTATE_PAUSED


def test_an_offline_primary_is_not_asked_for_the_guests_cpu_and_falls_back_to_failover(
    ctx: Context, ops: FakeNodeOps, config: ConfigStore
) -> None:
    shared_on_offline_n1(config, ops)
    with config.update() as data:  # settings a failover does not use do not stop it
        data.instances[INST].hvparams = {"migration_caps": "auto-converge:bogus"}
    _, lines = run(
        ctx,
        OpInstanceMigrate(instance_name=INST, target_node=N2, allow_failover=True, dry_run=True),
    )
    assert any("switching to failover" in line for line in lines)
    assert not ops.calls_to("compare_cpu")


def test_primary_not_answering_is_refused_with_its_reason(
    ctx: Context, ops: FakeNodeOps, config: ConfigStore
) -> None:
    """Not "not running": the primary's libvirtd did not answer, and the refusal says so."""
    ops.fail("instance_info", N1, NodeUnreachable(f"Cannot connect to libvirt on {N1}", node=N1))
    serial = config.read().serial
    with pytest.raises(OpPrereqError) as err:
        run(ctx, OpInstanceMigrate(instance_name=INST, target_node=N2))
    assert err.value.ecode == ECODE_STATE
    assert err.value.msg.startswith("Can't migrate, please use failover: ")
    assert f"Cannot connect to libvirt on {N1}" in err.value.msg
    assert "is not running" not in err.value.msg
    assert config.read().serial == serial


def test_unsafe_versions_refused_unless_ignored(
    ctx: Context, ops: FakeNodeOps, config: ConfigStore
) -> None:
    ops.node(N2).facts.qemu_version = 6002000
    with pytest.raises(OpExecError, match="Unsafe migration: qemu versions differ"):
        run(ctx, OpInstanceMigrate(instance_name=INST, target_node=N2))
    assert config.get_instance(INST).primary_node == N1  # type: ignore[union-attr]
    assert not ops.calls_to("migrate_instance")
    _, lines = run(
        ctx, OpInstanceMigrate(instance_name=INST, target_node=N2, ignore_hvversions=True)
    )
    assert config.get_instance(INST).primary_node == N2  # type: ignore[union-attr]
    assert any("(ignored)" in line for line in lines)


# ----------------------------------------------------------- hooks


def test_hooks_env_and_nodes(ctx: Context, ops: FakeNodeOps) -> None:
    seen: list[tuple[str, str, dict[str, str]]] = []

    def hooks(node: str, hooks_dir: str, env: dict[str, str], timeout: float) -> list[Any]:
        seen.append((node, env["GANETI_HOOKS_PHASE"], env))
        return []

    ops.hooks_fn = hooks
    run(ctx, OpInstanceMigrate(instance_name=INST, target_node=N2))
    assert sorted(n for n, phase, _ in seen if phase == "pre") == [N1, N2]
    pre = next(env for _, phase, env in seen if phase == "pre")
    post = next(env for _, phase, env in seen if phase == "post")
    assert pre["GANETI_MIGRATE_LIVE"] == "True" and pre["GANETI_MIGRATE_CLEANUP"] == "False"
    assert (pre["GANETI_OLD_PRIMARY"], pre["GANETI_NEW_PRIMARY"]) == (N1, N2)
    assert pre["GANETI_OLD_SECONDARY"] == "" and pre["GANETI_ALLOW_RUNTIME_CHANGES"] == "True"
    assert pre["GANETI_INSTANCE_NAME"] == INST
    assert (post["GANETI_POST_OLD_PRIMARY"], post["GANETI_POST_NEW_PRIMARY"]) == (N1, N2)
    assert post["GANETI_POST_INSTANCE_PRIMARY"] == N2


def test_failing_pre_hook_changes_nothing(
    ctx: Context, ops: FakeNodeOps, config: ConfigStore
) -> None:
    hooks_dir = f"{config.get_cluster().hooks_base_dir}/instance-migrate-pre.d"
    ops.set_hook_results(N2, hooks_dir, [HookScriptResult("10-deny", constants.HKR_FAIL, "no")])
    with pytest.raises(HooksAbort):
        run(ctx, OpInstanceMigrate(instance_name=INST, target_node=N2))
    assert not ops.calls_to("migrate_instance")
    assert config.get_instance(INST).primary_node == N1  # type: ignore[union-attr]
    assert running_on(ops) == [N1]


# -------------------------------------------------------- failure and abort


def test_abort_keeps_instance_on_source(
    ctx: Context, ops: FakeNodeOps, config: ConfigStore
) -> None:
    ops.fail("migrate_instance", N1, MigrationFailed("aborted by user", node=N1, aborted=True))
    ops.add_domain(N2, INST, state=constants.DOMSTATE_PAUSED)  # the incoming side
    with pytest.raises(MigrationAborted) as err:
        run(ctx, OpInstanceMigrate(instance_name=INST, target_node=N2))
    assert "keeps running on node1.example.com, configuration unchanged" in err.value.msg
    assert config.get_instance(INST).primary_node == N1  # type: ignore[union-attr]
    assert running_on(ops) == [N1] and INST not in ops.node(N2).domains
    assert ops.calls_to("remove_disks", N2) and not ops.node(N2).files


def test_abort_event_is_honoured(ctx: Context, ops: FakeNodeOps, config: ConfigStore) -> None:
    """An abort requested while progress is reported stops the migration."""
    from ganeti_lv.cmdlib import instance_migration

    ops.migration_reports = [MigrationProgress(elapsed=float(i)) for i in range(3)]
    original = instance_migration.TLMigrateInstance._exec_migration

    def exec_with_abort(self: Any, feedback_fn: Any) -> None:
        self.abort_event.set()
        original(self, feedback_fn)

    instance_migration.TLMigrateInstance._exec_migration = exec_with_abort  # type: ignore[method-assign,assignment]
    try:
        with pytest.raises(MigrationAborted):
            run(ctx, OpInstanceMigrate(instance_name=INST, target_node=N2))
    finally:
        instance_migration.TLMigrateInstance._exec_migration = original  # type: ignore[method-assign,assignment]
    assert config.get_instance(INST).primary_node == N1  # type: ignore[union-attr]
    assert running_on(ops) == [N1]


def test_abort_after_switch_over_reports_truth(
    ctx: Context, ops: FakeNodeOps, config: ConfigStore
) -> None:
    def switched_then_failed(*args: Any) -> Any:
        ops.remove_domain(N1, INST)
        ops.add_domain(N2, INST)
        raise MigrationFailed("aborted by user", node=N1, aborted=True, switched_over=True)

    ops.migrate_instance = switched_then_failed  # type: ignore[method-assign,assignment]
    _, lines = run(ctx, OpInstanceMigrate(instance_name=INST, target_node=N2))
    assert config.get_instance(INST).primary_node == N2  # type: ignore[union-attr]
    assert any("abort came after the switch-over" in line for line in lines)


def test_failure_with_unclear_state(ctx: Context, ops: FakeNodeOps, config: ConfigStore) -> None:
    def paused_then_failed(*args: Any) -> Any:
        ops.remove_domain(N1, INST)
        ops.add_domain(N1, INST, state=constants.DOMSTATE_PAUSED)
        raise MigrationFailed("connection lost", node=N1)

    ops.migrate_instance = paused_then_failed  # type: ignore[method-assign,assignment]
    with pytest.raises(OpExecError, match="state unclear.*--cleanup"):
        run(ctx, OpInstanceMigrate(instance_name=INST, target_node=N2))
    assert config.get_instance(INST).primary_node == N1  # type: ignore[union-attr]


def test_a_job_that_completes_while_the_failure_is_looked_at_loses_nothing(
    ctx: Context, ops: FakeNodeOps, config: ConfigStore
) -> None:
    """The connection to the source dropped while libvirt's job went on: the job
    completes right after the source was first read as running. The job is stopped
    (here: it had ended) and both nodes read again, so the guest that now runs on the
    target is recorded there, not removed as a leftover beside its source."""

    def lost_while_running(*args: Any) -> Any:
        ops.add_domain(N2, INST, state=constants.DOMSTATE_PAUSED)  # the incoming copy
        raise MigrationFailed("connection to node1 lost", node=N1)

    asked = ops.instance_info

    def completes_after_the_first_look(node: Any, name: str) -> Any:
        dom = asked(node, name)
        incoming = ops.node(N2).domains.get(INST)
        if node.name == N1 and incoming and incoming.state == constants.DOMSTATE_PAUSED:
            ops.remove_domain(N1, INST)
            incoming.state = constants.DOMSTATE_RUNNING
        return dom

    ops.migrate_instance = lost_while_running  # type: ignore[method-assign,assignment]
    ops.instance_info = completes_after_the_first_look  # type: ignore[method-assign]
    _, lines = run(ctx, OpInstanceMigrate(instance_name=INST, target_node=N2))
    assert config.get_instance(INST).primary_node == N2  # type: ignore[union-attr]
    assert running_on(ops) == [N2] and not ops.calls_to("undefine_instance", N2)
    assert any(f"was migrated to {N2}" in line for line in lines)
    assert ops.calls_to("abort_migration", N1)


def _switch_to_post_copy_then_cut(ops: FakeNodeOps) -> None:
    """The next migration switches to post-copy (the guest runs on node2, node1 holds the
    rest of its memory, paused), then its stream breaks."""

    def switched_then_cut(*args: Any) -> Any:
        ops.node(N1).domains[INST].state = constants.DOMSTATE_PAUSED
        ops.node(N1).domains[INST].postcopy_source = True
        ops.add_domain(N2, INST)
        raise MigrationFailed("stream broken", node=N1, switched_over=True)

    ops.migrate_instance = switched_then_cut  # type: ignore[method-assign,assignment]


def test_a_post_copy_that_failed_after_its_switch_keeps_the_source(
    ctx: Context, ops: FakeNodeOps, config: ConfigStore
) -> None:
    """The source still holds pages the target has not fetched: it is not removed."""

    _switch_to_post_copy_then_cut(ops)
    with pytest.raises(OpExecError, match="failed after its switch to post-copy") as err:
        run(ctx, OpInstanceMigrate(instance_name=INST, target_node=N2, allow_postcopy=True))
    assert "--postcopy-resume" in err.value.msg and "--cleanup" in err.value.msg
    assert config.get_instance(INST).primary_node == N2  # type: ignore[union-attr]
    assert ops.node(N1).domains[INST].state == constants.DOMSTATE_PAUSED
    assert not ops.calls_to("undefine_instance", N1) and not ops.calls_to("remove_disks", N1)
    # and the cleanup run too early leaves the post-copy's source alone
    with pytest.raises(OpExecError, match="as a post-copy migration's source") as err:
        run(ctx, OpInstanceMigrate(instance_name=INST, cleanup=True))
    assert err.value.ecode == ECODE_STATE
    assert ops.node(N1).domains[INST].state == constants.DOMSTATE_PAUSED
    assert not ops.calls_to("undefine_instance", N1)


def test_a_post_copy_split_whose_configuration_cannot_be_written_still_warns_of_the_source(
    ctx: Context, ops: FakeNodeOps, config: ConfigStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The source holds pages the target lacks: that warning is not lost to the write's."""

    def full(*_args: Any) -> None:
        raise OSError(28, "No space left on device")

    _switch_to_post_copy_then_cut(ops)
    monkeypatch.setattr(ConfigStore, "set_instance_primary", full)
    with pytest.raises(OpExecError, match="failed after its switch to post-copy") as err:
        run(ctx, OpInstanceMigrate(instance_name=INST, target_node=N2, allow_postcopy=True))
    assert f"the configuration could not be written and still names {N1}" in err.value.msg
    assert "No space left" in err.value.msg and "--postcopy-resume" in err.value.msg
    assert ops.node(N1).domains[INST].state == constants.DOMSTATE_PAUSED


def test_a_post_copy_whose_source_stopped_answering_keeps_the_source(
    ctx: Context, ops: FakeNodeOps, config: ConfigStore
) -> None:
    """Switched to post-copy, then the source's connection dropped: it may still hold
    pages, so it is never removed unseen (it answers again by the time of the undefine)."""
    silent = {"looks": 0}  # the source's answers missed after the failure
    info = ops.instance_info

    def switched_then_cut(*args: Any) -> Any:
        ops.node(N1).domains[INST].state = constants.DOMSTATE_PAUSED
        ops.node(N1).domains[INST].postcopy_source = True
        ops.add_domain(N2, INST)
        silent["looks"] = 2
        raise MigrationFailed("connection to the source lost", node=N1, switched_over=True)

    def source_silent_at_first(node: Any, name: str) -> Any:
        if node.name == N1 and silent["looks"] > 0:
            silent["looks"] -= 1
            raise NodeUnreachable("no answer", node=N1)
        return info(node, name)

    ops.migrate_instance = switched_then_cut  # type: ignore[method-assign,assignment]
    ops.instance_info = source_silent_at_first  # type: ignore[method-assign]
    with pytest.raises(OpExecError, match="did not answer and may still hold") as err:
        run(ctx, OpInstanceMigrate(instance_name=INST, target_node=N2, allow_postcopy=True))
    assert "--postcopy-resume" in err.value.msg
    assert config.get_instance(INST).primary_node == N2  # type: ignore[union-attr]
    assert ops.node(N1).domains[INST].state == constants.DOMSTATE_PAUSED
    assert not ops.calls_to("undefine_instance", N1) and not ops.calls_to("remove_disks", N1)


# ---------------------------------------------------------------- cleanup


def test_cleanup_adopts_target(ctx: Context, ops: FakeNodeOps, config: ConfigStore) -> None:
    cluster = config.get_cluster()
    inst = config.get_instance(INST)
    assert inst is not None
    ops.remove_domain(N1, INST)
    ops.add_domain(N2, INST)
    ops.node(N2).files[disk_path(cluster, inst, 0)] = 1024
    locked: dict[int, Any] = {}
    acquire = ctx.locks.acquire

    def recording(level: int, names: Any, **kw: Any) -> Any:
        locked[level] = names
        return acquire(level, names, **kw)

    ctx.locks.acquire = recording  # type: ignore[method-assign]
    hooked: list[tuple[str, str]] = []
    ops.hooks_fn = lambda node, hooks_dir, _env, _t: hooked.append((hooks_dir, node)) or []
    run(ctx, OpInstanceMigrate(instance_name=INST, cleanup=True))
    # the node where it was found runs the post hooks too (found only in Exec)
    post = sorted(node for where, node in hooked if where.endswith("instance-migrate-post.d"))
    assert post == [N1, N2]
    # the node it adopts (and the nodes it cleans up) are locked, not only the primary
    assert locked[locking.LEVEL_NODE] is locking.ALL_SET
    assert locked[locking.LEVEL_NODE_RES] is locking.ALL_SET
    assert config.get_instance(INST).primary_node == N2  # type: ignore[union-attr]
    assert not ops.node(N1).files  # the source's leftover images are gone
    assert disk_path(cluster, inst, 0) in ops.node(N2).files


def test_cleanup_source_only_cleans_leftovers(
    ctx: Context, ops: FakeNodeOps, config: ConfigStore
) -> None:
    cluster = config.get_cluster()
    inst = config.get_instance(INST)
    assert inst is not None
    ops.add_domain(N3, INST, state=constants.DOMSTATE_PAUSED)
    ops.node(N3).files[disk_path(cluster, inst, 0)] = 1024
    serial = config.read().serial
    run(ctx, OpInstanceMigrate(instance_name=INST, cleanup=True))
    assert config.read().serial == serial
    assert INST not in ops.node(N3).domains and not ops.node(N3).files
    assert running_on(ops) == [N1]
    assert ops.calls_to("paths_exist", N3)[0].args[0][0] == disk_dir(cluster, inst)
    # the orphaned outgoing job on the source is aborted before the leftover goes
    assert [c.args for c in ops.calls_to("abort_migration", N1)] == [(INST,)]


def test_cleanup_whose_orphaned_job_completes_instead_of_aborting_removes_nothing(
    ctx: Context, ops: FakeNodeOps, config: ConfigStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The job was in its switch-over: the guest now runs on the node that looked like a
    leftover, and must not be destroyed there."""
    cluster = config.get_cluster()
    inst = config.get_instance(INST)
    assert inst is not None
    ops.add_domain(N3, INST, state=constants.DOMSTATE_PAUSED)
    ops.node(N3).files[disk_path(cluster, inst, 0)] = 1024

    def completes(node: Any, name: str) -> bool:
        del ops.node(N1).domains[name]
        ops.node(N3).domains[name].state = constants.DOMSTATE_RUNNING
        return False

    monkeypatch.setattr(ops, "abort_migration", completes)
    serial = config.read().serial
    with pytest.raises(OpExecError, match="a migration went on while the cleanup") as err:
        run(ctx, OpInstanceMigrate(instance_name=INST, cleanup=True))
    assert err.value.ecode == ECODE_STATE and config.read().serial == serial
    assert running_on(ops) == [N3] and ops.node(N3).files
    assert not ops.calls_to("undefine_instance") and not ops.calls_to("remove_disks")


def test_cleanup_whose_orphaned_job_could_not_be_aborted_changes_nothing(
    ctx: Context, ops: FakeNodeOps, config: ConfigStore
) -> None:
    """The job may still complete onto the domain that looks like a leftover: it stays,
    and the cleanup is to be run again once the job has ended."""
    ops.add_domain(N3, INST, state=constants.DOMSTATE_PAUSED)
    ops.fail("abort_migration", N1, "abort refused")
    serial = config.read().serial
    with pytest.raises(OpExecError, match="could not be aborted \\(abort refused\\)") as err:
        run(ctx, OpInstanceMigrate(instance_name=INST, cleanup=True))
    assert err.value.ecode == ECODE_STATE and config.read().serial == serial
    assert ops.node(N3).domains[INST].state == constants.DOMSTATE_PAUSED
    assert not ops.calls_to("undefine_instance") and running_on(ops) == [N1]


def test_cleanup_running_on_two_nodes(ctx: Context, ops: FakeNodeOps, config: ConfigStore) -> None:
    ops.add_domain(N2, INST)
    with pytest.raises(OpExecError, match="running on nodes .*manual intervention"):
        run(ctx, OpInstanceMigrate(instance_name=INST, cleanup=True))
    assert len(ops.calls_to("abort_migration")) == 2
    assert config.get_instance(INST).primary_node == N1  # type: ignore[union-attr]


def test_cleanup_running_nowhere(ctx: Context, ops: FakeNodeOps) -> None:
    ops.remove_domain(N1, INST)
    with pytest.raises(OpExecError, match="does not seem to be running at all"):
        run(ctx, OpInstanceMigrate(instance_name=INST, cleanup=True))


def test_cleanup_of_a_non_live_migration_paused_on_both_nodes_aborts_its_job(
    ctx: Context, ops: FakeNodeOps, config: ConfigStore
) -> None:
    """A non-live migration's source is paused by libvirt: the job is aborted where a
    domain is paused (the source resumes, the incoming copy goes), then looked at again."""
    ops.node(N1).domains[INST].state = constants.DOMSTATE_PAUSED
    ops.add_domain(N2, INST, state=constants.DOMSTATE_PAUSED)

    def abort(node: Any, name: str) -> bool:
        if node.name != N1:
            return False
        ops.node(N1).domains[INST].state = constants.DOMSTATE_RUNNING
        ops.remove_domain(N2, INST)
        return True

    ops.abort_migration = abort  # type: ignore[method-assign]
    run(ctx, OpInstanceMigrate(instance_name=INST, cleanup=True))
    assert running_on(ops) == [N1] and INST not in ops.node(N2).domains
    assert config.get_instance(INST).primary_node == N1  # type: ignore[union-attr]


def test_cleanup_whose_second_look_misses_a_node_changes_nothing(
    ctx: Context, ops: FakeNodeOps, config: ConfigStore
) -> None:
    """A node that stops answering between the cleanup's two looks may run a copy."""
    ops.node(N1).domains[INST].state = constants.DOMSTATE_PAUSED
    ops.add_domain(N2, INST, state=constants.DOMSTATE_PAUSED)

    def abort(node: Any, name: str) -> bool:
        if node.name == N1:
            ops.node(N1).domains[INST].state = constants.DOMSTATE_RUNNING
            ops.set_unreachable(N2)  # its answer to the second look is lost
        return True

    ops.abort_migration = abort  # type: ignore[method-assign]
    serial = config.read().serial
    with pytest.raises(OpExecError, match=f"node {N2} did not answer") as err:
        run(ctx, OpInstanceMigrate(instance_name=INST, cleanup=True))
    assert err.value.ecode == ECODE_ENVIRON
    assert config.read().serial == serial and not ops.calls_to("undefine_instance")


def test_cleanup_of_a_guest_paused_with_no_job_changes_nothing(
    ctx: Context, ops: FakeNodeOps, config: ConfigStore
) -> None:
    """Not a shutdown's advice: that would destroy the paused guest's memory."""
    ops.node(N1).domains[INST].state = constants.DOMSTATE_PAUSED
    serial = config.read().serial
    with pytest.raises(OpExecError, match=f"runs nowhere: it is paused on {N1}") as err:
        run(ctx, OpInstanceMigrate(instance_name=INST, cleanup=True))
    assert err.value.ecode == ECODE_STATE and "virsh resume" in err.value.msg
    assert [c.args for c in ops.calls_to("abort_migration", N1)] == [(INST,)]
    assert ops.node(N1).domains[INST].state == constants.DOMSTATE_PAUSED
    assert config.read().serial == serial and not ops.calls_to("undefine_instance")


def _stopped_on_n1(ops: FakeNodeOps, config: ConfigStore) -> str:
    """INST marked down, its domain shut off on its primary N1; its first disk's path."""
    config.set_admin_state(INST, constants.ADMINST_DOWN)
    ops.remove_domain(N1, INST)
    ops.add_domain(N1, INST, state=constants.DOMSTATE_SHUTOFF)
    inst = config.get_instance(INST)
    assert inst is not None
    return disk_path(config.get_cluster(), inst, 0)


def test_cleanup_of_a_stopped_instance_removes_the_copies_beside_its_primary(
    ctx: Context, ops: FakeNodeOps, config: ConfigStore
) -> None:
    """What cluster verify reports after an interrupted failover of a stopped instance."""
    path = _stopped_on_n1(ops, config)
    ops.node(N2).files[path] = 10  # a copy the failover had begun
    _, lines = run(ctx, OpInstanceMigrate(instance_name=INST, cleanup=True))
    assert f"Removing leftover disk images on {N2}" in lines
    assert path not in ops.node(N2).files and path in ops.node(N1).files
    assert config.get_instance(INST).primary_node == N1  # type: ignore[union-attr]
    # a primary without the images: nothing is removed anywhere
    del ops.node(N1).files[path]
    ops.node(N2).files[path] = 10
    with pytest.raises(OpExecError, match=f"its primary {N1} lacks its disk images") as err:
        run(ctx, OpInstanceMigrate(instance_name=INST, cleanup=True))
    assert err.value.ecode == ECODE_STATE and path in ops.node(N2).files


def test_cleanup_of_a_stopped_instance_defined_only_elsewhere_removes_nothing(
    ctx: Context, ops: FakeNodeOps, config: ConfigStore
) -> None:
    """A migration whose configuration change was lost: N2 holds the current copy."""
    path = _stopped_on_n1(ops, config)
    ops.remove_domain(N1, INST)  # the migration undefined it on its source
    ops.add_domain(N2, INST, state=constants.DOMSTATE_SHUTOFF)
    ops.node(N2).files[path] = 2048
    with pytest.raises(OpExecError, match=f"defined on {N2} and not on its primary") as err:
        run(ctx, OpInstanceMigrate(instance_name=INST, cleanup=True))
    assert err.value.ecode == ECODE_STATE and "virsh start" in err.value.msg
    assert path in ops.node(N2).files and INST in ops.node(N2).domains


def test_cleanup_of_a_stopped_shared_instance_drops_a_definition_left_elsewhere(
    ctx: Context, ops: FakeNodeOps, config: ConfigStore
) -> None:
    """Shared disks are the same everywhere: a definition elsewhere holds no data."""
    set_shared_present(config, ops)
    _stopped_on_n1(ops, config)
    ops.remove_domain(N1, INST)
    ops.add_domain(N2, INST, state=constants.DOMSTATE_SHUTOFF)
    _, lines = run(ctx, OpInstanceMigrate(instance_name=INST, cleanup=True))
    assert f"Removing the leftover domain on {N2}" in lines
    assert INST not in ops.node(N2).domains
    assert config.get_instance(INST).primary_node == N1  # type: ignore[union-attr]


def _libvirtd_down(ops: FakeNodeOps, node: str) -> None:
    """Every libvirt-backed operation on ``node`` fails as unreachable; hooks (SSH) run."""
    down = NodeUnreachable(f"Cannot connect to libvirt on {node}", node=node)
    for method in ("node_info", "instance_info", "instance_list", "shutdown_instance"):
        ops.fail(method, node, down)
    for method in ("disk_overlays", "repair_disk_chain", "migrate_instance"):
        ops.fail(method, node, down)


def test_cleanup_with_the_primary_unreachable_says_so(
    ctx: Context, ops: FakeNodeOps, config: ConfigStore
) -> None:
    """Its libvirtd down, the primary cannot say whether the guest runs: no advice to
    shut down and restart, nothing changed."""
    serial = config.read().serial
    _libvirtd_down(ops, N1)
    with pytest.raises(OpExecError, match=f"Cannot tell where .* node {N1} did not answer") as err:
        run(ctx, OpInstanceMigrate(instance_name=INST, cleanup=True))
    assert err.value.ecode == ECODE_ENVIRON
    assert "does not seem to be running" not in str(err.value)
    assert config.read().serial == serial


def test_cleanup_with_another_node_unreachable_changes_nothing(
    ctx: Context, ops: FakeNodeOps, config: ConfigStore
) -> None:
    """As Ganeti's: a node that does not answer may run a second copy, which the cleanup
    cannot see; nothing is adopted or removed until it answers or is marked offline."""
    cluster = config.get_cluster()
    inst = config.get_instance(INST)
    assert inst is not None
    ops.add_domain(N2, INST, state=constants.DOMSTATE_SHUTOFF)
    ops.node(N2).files[disk_path(cluster, inst, 0)] = 1024
    _libvirtd_down(ops, N3)
    with pytest.raises(OpExecError, match=f"node {N3} did not answer") as err:
        run(ctx, OpInstanceMigrate(instance_name=INST, cleanup=True))
    assert err.value.ecode == ECODE_ENVIRON and "mark it offline" in err.value.msg
    assert INST in ops.node(N2).domains and ops.node(N2).files
    assert not ops.calls_to("undefine_instance") and not ops.calls_to("abort_migration")
    # one that runs no guests (not vm_capable) is not asked either: the leftover goes
    with config.update() as data:
        data.nodes[N3].vm_capable = False
    run(ctx, OpInstanceMigrate(instance_name=INST, cleanup=True))
    assert INST not in ops.node(N2).domains and not ops.node(N2).files


def test_cleanup_aborts_nothing_while_a_node_does_not_answer(
    ctx: Context, ops: FakeNodeOps, config: ConfigStore
) -> None:
    ops.add_domain(N2, INST)  # running on two nodes: the cleanup would abort their jobs
    _libvirtd_down(ops, N3)
    with pytest.raises(OpExecError, match=f"node {N3} did not answer") as err:
        run(ctx, OpInstanceMigrate(instance_name=INST, cleanup=True))
    assert "Nothing was changed" in err.value.msg and not ops.calls_to("abort_migration")


def _target_cut_off_mid_migration(ops: FakeNodeOps) -> None:
    def cut_off(*args: Any) -> Any:
        _libvirtd_down(ops, N2)
        raise MigrationFailed("connection to node2 lost", node=N2)

    ops.migrate_instance = cut_off  # type: ignore[method-assign,assignment]


def test_a_failed_migration_whose_target_does_not_answer_points_to_the_cleanup(
    ctx: Context, ops: FakeNodeOps, config: ConfigStore
) -> None:
    _target_cut_off_mid_migration(ops)
    with pytest.raises(OpExecError) as err:
        run(ctx, OpInstanceMigrate(instance_name=INST, target_node=N2))
    assert err.value.msg.endswith(
        f"the instance keeps running on {N1}, configuration unchanged; {N2} did not answer:"
        " once it does, run 'gnt-lv instance migrate --cleanup' to remove what the migration"
        " left there"
    )
    assert running_on(ops) == [N1]
    # libvirt's job may go on on the source without its client: it is stopped first
    assert [c.args for c in ops.calls_to("abort_migration", N1)] == [(INST,)]


def test_a_preparation_of_the_targets_disks_whose_answer_was_lost_removes_nothing(
    ctx: Context, ops: FakeNodeOps, config: ConfigStore
) -> None:
    """The images there may be its own or older ones it refused: left for the cleanup to judge."""
    path = disk0_path(config)

    def lost(node: Any, cluster: Any, instance: Any) -> None:
        ops.node(N2).files[path] = 1024
        raise NodeUnreachable("no answer", node=N2)

    ops.create_disks = lost  # type: ignore[method-assign]
    with pytest.raises(OpExecError, match="migrate --cleanup' removes what it may"):
        run(ctx, OpInstanceMigrate(instance_name=INST, target_node=N2))
    assert path in ops.node(N2).files and not ops.calls_to("remove_disks", N2)
    assert running_on(ops) == [N1]


@pytest.mark.parametrize("existing", [False, True])
def test_a_failed_preparation_of_the_targets_disks_leaves_none_it_made(
    ctx: Context, ops: FakeNodeOps, config: ConfigStore, existing: bool
) -> None:
    """Images it made (its answer lost, a later disk failed) would refuse the next
    migration to that node; images that were there before (refused) are not its own."""
    path = disk0_path(config)
    create = ops.create_disks

    def fails(node: Any, cluster: Any, instance: Any) -> None:
        if existing:
            ops.node(N2).files[path] = 1024
            raise HypervisorError(f"Disk image {path} already exists", node=N2, ecode=ECODE_EXISTS)
        create(node, cluster, instance)
        raise HypervisorError("no answer after the images were made", node=N2)

    ops.create_disks = fails  # type: ignore[method-assign]
    with pytest.raises(OpExecError, match="Could not prepare disks") as info:
        run(ctx, OpInstanceMigrate(instance_name=INST, target_node=N2))
    # the node's code is kept: images found there (made since the checks), or its failure
    assert info.value.ecode == (ECODE_EXISTS if existing else ECODE_ENVIRON)
    assert running_on(ops) == [N1]
    assert (path in ops.node(N2).files) == existing
    assert bool(ops.calls_to("remove_disks", N2)) != existing


def test_a_failed_migration_says_when_its_job_could_not_be_aborted(
    ctx: Context, ops: FakeNodeOps, config: ConfigStore
) -> None:
    """A job that may still complete: nothing of the target's is removed under it (its
    images could be what the guest runs on a moment later)."""
    _target_cut_off_mid_migration(ops)
    ops.fail("abort_migration", N1, "abort refused")
    lines: list[str] = []
    with pytest.raises(OpExecError, match="configuration unchanged") as err:
        Processor(ctx).execute(
            OpInstanceMigrate(instance_name=INST, target_node=N2), feedback_fn=lines.append
        )
    assert any(
        f"WARNING: Could not abort the migration job on {N1}: abort refused" in line
        for line in lines
    )
    assert f"could not be stopped (abort refused): nothing was removed on {N2}" in err.value.msg
    assert "Once the job has ended, run 'gnt-lv instance migrate --cleanup'" in err.value.msg
    assert not ops.calls_to("remove_disks", N2) and not ops.calls_to("undefine_instance", N2)
    assert running_on(ops) == [N1]


def test_a_switch_to_post_copy_whose_answer_was_lost_keeps_the_source(
    ctx: Context, ops: FakeNodeOps, config: ConfigStore
) -> None:
    """The call failed as the switch was made: the failure does not say it switched,
    the source says it (paused as a post-copy source), and it is not removed."""

    def switched_unsaid(*args: Any) -> Any:
        ops.node(N1).domains[INST].state = constants.DOMSTATE_PAUSED
        ops.node(N1).domains[INST].postcopy_source = True
        ops.add_domain(N2, INST)
        raise MigrationFailed("connection to node1 lost", node=N1)

    ops.migrate_instance = switched_unsaid  # type: ignore[method-assign,assignment]
    with pytest.raises(OpExecError, match="failed after its switch to post-copy"):
        run(ctx, OpInstanceMigrate(instance_name=INST, target_node=N2, allow_postcopy=True))
    assert config.get_instance(INST).primary_node == N2  # type: ignore[union-attr]
    assert ops.node(N1).domains[INST].state == constants.DOMSTATE_PAUSED
    assert not ops.calls_to("undefine_instance", N1) and not ops.calls_to("remove_disks", N1)


def test_a_failed_migration_to_a_node_that_runs_the_instance_too_removes_neither(
    ctx: Context, ops: FakeNodeOps, config: ConfigStore
) -> None:
    """Two copies run (one started beside the recorded primary): which one must go is
    the operator's call, never the failed migration's."""
    ops.add_domain(N2, INST)
    ops.fail("migrate_instance", N1, MigrationFailed("domain already active on node2", node=N2))
    with pytest.raises(OpExecError, match="runs on both .*manual intervention") as err:
        run(ctx, OpInstanceMigrate(instance_name=INST, target_node=N2))
    assert err.value.ecode == ECODE_STATE
    assert sorted(running_on(ops)) == [N1, N2]
    assert not ops.calls_to("undefine_instance") and not ops.calls_to("remove_disks")
    assert config.get_instance(INST).primary_node == N1  # type: ignore[union-attr]


def test_failover_with_the_primary_unreachable_blames_no_overlay(
    ctx: Context, ops: FakeNodeOps, config: ConfigStore
) -> None:
    set_shared_present(config, ops)
    serial = config.read().serial
    _libvirtd_down(ops, N1)
    with pytest.raises(GenericError) as err:
        run(ctx, OpInstanceFailover(instance_name=INST, target_node=N2))
    assert "overlay" not in str(err.value) and N1 in str(err.value)
    assert config.read().serial == serial


def test_failover_with_ignore_consistency_from_an_unreachable_primary(
    ctx: Context, ops: FakeNodeOps, config: ConfigStore
) -> None:
    """The primary's link is gone and the operator says it is down (Ganeti's
    --ignore-consistency) without marking it offline: the shared disks' chain is
    checked from the target, the shutdown there is given up with Ganeti's warning,
    and the instance runs on the target."""
    set_shared_away_from_master(config, ops)
    ops.set_unreachable(N1)
    _, lines = run(
        ctx, OpInstanceFailover(instance_name=INST, target_node=N2, ignore_consistency=True)
    )
    assert config.get_instance(INST).primary_node == N2  # type: ignore[union-attr]
    assert N2 in running_on(ops)
    assert ops.calls_to("repair_disk_chain", N2)
    text = "\n".join(lines)
    assert (
        f"Node {N1} is unreachable: checking the disk chain of instance {INST} from {N2},"
        " which reaches the same disks" in text
    )
    assert f"Could not shutdown instance {INST} on node {N1}. Proceeding anyway." in text


@pytest.mark.parametrize("primary", ["unreachable", "shutdown fails"])
def test_failover_that_did_not_stop_the_guest_keeps_the_primary_when_the_start_fails(
    ctx: Context, ops: FakeNodeOps, config: ConfigStore, primary: str
) -> None:
    """--ignore-consistency went on without the shutdown on the primary, where the guest
    may still run (qemu's lock on the shared disk makes the start on the target fail):
    the primary stays the old node, as after a failover from an offline node."""
    set_shared_away_from_master(config, ops)
    if primary == "unreachable":
        ops.set_unreachable(N1)
    else:
        ops.fail("shutdown_instance", N1, "timed out")
    ops.fail("start_instance", N2, 'Failed to get "write" lock')
    if primary == "shutdown fails":  # it answers: removing the definition stopped it
        ops.fail("undefine_instance", N1, "connection lost")  # ...unless that failed too
    with pytest.raises(OpExecError, match=f"configuration keeps {N1} as its primary") as err:
        run(ctx, OpInstanceFailover(instance_name=INST, target_node=N2, ignore_consistency=True))
    assert f"may still run on {N1}" in err.value.msg
    assert f"as it could not be shut down on node {N1}" in err.value.msg
    assert err.value.ecode == ECODE_ENVIRON
    assert config.get_instance(INST).primary_node == N1  # type: ignore[union-attr]
    assert INST not in ops.node(N2).domains


def test_a_guest_stopped_by_the_removal_of_its_definition_is_not_said_to_run_there(
    ctx: Context, ops: FakeNodeOps, config: ConfigStore
) -> None:
    """--ignore-consistency past a failed shutdown: removing the definition on the source
    destroyed the guest there, so a failed start on the target leaves it running nowhere,
    which is what the error says (not that it may still run on the source)."""
    set_shared_present(config, ops)
    ops.fail("shutdown_instance", N1, "timed out")
    ops.fail("start_instance", N2, "no memory")
    with pytest.raises(OpExecError) as err:
        run(ctx, OpInstanceFailover(instance_name=INST, target_node=N2, ignore_consistency=True))
    assert "may still run" not in err.value.msg
    assert "removal of its definition there stopped it: it runs nowhere now" in err.value.msg
    assert f"'gnt-lv instance startup {INST}' starts it there" in err.value.msg
    assert err.value.ecode == ECODE_ENVIRON
    assert running_on(ops) == [] and INST not in ops.node(N1).domains
    assert config.get_instance(INST).primary_node == N1  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("template", "ignore"),
    [(constants.DT_SHARED_FILE, False), (constants.DT_FILE, True)],
    ids=["without-ignore-consistency", "disks-on-the-primary"],
)
def test_failover_from_an_unreachable_primary_needs_ignore_consistency_and_shared_disks(
    ctx: Context, ops: FakeNodeOps, config: ConfigStore, template: str, ignore: bool
) -> None:
    """Without --ignore-consistency, or with the disks on the primary itself, nothing
    is changed and the chain is not looked at from anywhere else."""
    set_shared_away_from_master(config, ops)
    with config.update() as data:
        data.instances[INST].disk_template = template
    serial = config.read().serial
    ops.set_unreachable(N1)
    op = OpInstanceFailover(instance_name=INST, target_node=N2, ignore_consistency=ignore)
    with pytest.raises(OpExecError, match=f"node {N1} is unreachable; refusing to touch"):
        run(ctx, op)
    assert config.read().serial == serial
    assert not ops.calls_to("repair_disk_chain", N2) and not ops.calls_to("shutdown_instance")


@pytest.mark.parametrize("kind", ["migrate", "failover"])
def test_a_file_instance_needs_room_for_its_images_on_the_target(
    ctx: Context, ops: FakeNodeOps, config: ConfigStore, kind: str
) -> None:
    """Its images' allocated size (the fake: a quarter of 1024 MiB) against the free
    space less what other jobs writing to the target still write; nothing changed."""
    cluster = config.get_cluster()
    inst = config.get_instance(INST)
    assert inst is not None
    ops.free_bytes[N2] = 300 * MIB
    other = Reservations(config.data_dir).node(N2)
    with other as ledger:  # an export to node2 that has 100 MiB to write
        held = ledger.reserve(f"{cluster.export_dir}/inst9.new", 100 * MIB, "inst9")
    op: OpCode = (
        OpInstanceMigrate(instance_name=INST, target_node=N2)
        if kind == "migrate"
        else OpInstanceFailover(instance_name=INST, target_node=N2)
    )
    serial = config.read().serial
    with held, pytest.raises(OpPrereqError) as err:
        run(ctx, op)
    assert err.value.ecode == ECODE_NORES
    assert err.value.msg == (
        f"Not enough space in the file storage dir {cluster.file_storage_dir} of {N2}:"
        f" 256 MiB needed for {INST}, 300 MiB free, of which 100 MiB are reserved by the"
        " jobs writing to it: inst9 (100 MiB still to write)"
    )
    assert config.read().serial == serial and running_on(ops) == [N1]
    assert not ops.calls_to("create_disks", N2)
    # room made (the export done): the move holds its room while it runs
    ops.free_bytes[N2] = 2048 * MIB
    seen: list[list[Any]] = []
    real = ops.migrate_instance if kind == "migrate" else ops.copy_disk

    def watch(*args: Any, **kwargs: Any) -> Any:
        with Reservations(config.data_dir).node(N2) as ledger:
            seen.append([(r.directory, r.size) for r in ledger.others()])
        return real(*args, **kwargs)

    if kind == "migrate":
        ops.migrate_instance = watch  # type: ignore[method-assign]
    else:
        ops.copy_disk = watch  # type: ignore[method-assign]
    run(ctx, op)
    assert seen and seen[0] == [(disk_dir(cluster, inst), 256 * MIB)]
    assert config.get_instance(INST).primary_node == N2  # type: ignore[union-attr]
    with Reservations(config.data_dir).node(N2) as ledger:
        assert ledger.others() == []  # released at the job's end


def test_the_state_of_the_instance_is_said_before_the_room_on_the_target(
    ctx: Context, ops: FakeNodeOps, config: ConfigStore
) -> None:
    """A failover onto a node that already runs the instance: the advice to clean up,
    not the lack of room its images there take."""
    ops.add_domain(N2, INST)
    ops.free_bytes[N2] = MIB
    with pytest.raises(OpPrereqError, match="migrate --cleanup") as err:
        run(ctx, OpInstanceFailover(instance_name=INST, target_node=N2))
    assert err.value.ecode == ECODE_STATE


# ---------------------------------------------------------------- failover


def test_not_running_on_primary_with_allow_failover_fails_over_and_says_why(
    ctx: Context, ops: FakeNodeOps, config: ConfigStore
) -> None:
    ops.remove_domain(N1, INST)
    ops.add_domain(N1, INST, state=constants.DOMSTATE_SHUTOFF)
    _, lines = run(ctx, OpInstanceMigrate(instance_name=INST, target_node=N2, allow_failover=True))
    assert any(
        f"Can't migrate (Instance {INST} is not running), fallback allowed, switching to failover"
        in line
        for line in lines
    ), lines
    assert config.get_instance(INST).primary_node == N2  # type: ignore[union-attr]


def test_migrate_stopped_with_allow_failover_moves_disks(
    ctx: Context, ops: FakeNodeOps, config: ConfigStore
) -> None:
    path = _stopped_on_n1(ops, config)
    live: list[str] = []

    def hooks(node: str, hooks_dir: str, env: dict[str, str], timeout: float) -> list[Any]:
        live.append(env["GANETI_MIGRATE_LIVE"])
        return []

    ops.hooks_fn = hooks
    run(ctx, OpInstanceMigrate(instance_name=INST, target_node=N2, allow_failover=True))
    assert live and set(live) == {"False"}  # the failover is not live, as Ganeti says
    assert [c.args for c in ops.calls_to("copy_disk", N1)] == [(path, N2, path)]
    assert config.get_instance(INST).primary_node == N2  # type: ignore[union-attr]
    assert path in ops.node(N2).files and not ops.node(N1).files
    assert INST not in ops.node(N1).domains and running_on(ops) == []


def test_failover_running_instance(ctx: Context, ops: FakeNodeOps, config: ConfigStore) -> None:
    _, lines = run(ctx, OpInstanceFailover(instance_name=INST, target_node=N2))
    assert ops.calls_to("shutdown_instance", N1)
    assert running_on(ops) == [N2]
    assert config.get_instance(INST).primary_node == N2  # type: ignore[union-attr]


@pytest.mark.parametrize("allow_failover", [False, True])
@pytest.mark.parametrize(
    ("target", "says"),
    [
        # it would copy node1's images over the ones it runs on
        (N2, f"Instance {INST} is running on the target node {N2}, not on its primary {N1}:"),
        # it would start a second copy on node3
        (N3, f"Instance {INST} is running on node(s) {N2}, not (only) on its primary node {N1}"),
    ],
)
def test_a_failover_of_an_instance_that_runs_elsewhere_is_refused(
    ctx: Context,
    ops: FakeNodeOps,
    config: ConfigStore,
    allow_failover: bool,
    target: str,
    says: str,
) -> None:
    """A migration whose configuration change was lost: it runs on node2, the configuration
    says node1. A failover (or a migration's fallback to one) changes nothing, says so and
    leads to --cleanup."""
    ops.remove_domain(N1, INST)
    ops.add_domain(N2, INST)
    op: OpCode = (
        OpInstanceMigrate(instance_name=INST, target_node=target, allow_failover=True)
        if allow_failover
        else OpInstanceFailover(instance_name=INST, target_node=target)
    )
    serial = config.read().serial
    with pytest.raises(OpPrereqError) as raised:
        run(ctx, op)
    err = raised.value
    assert err.ecode == ECODE_STATE and config.read().serial == serial
    assert err.msg.startswith(says) and "--cleanup" in err.msg
    assert not {"shutdown_instance", "copy_disk", "start_instance"} & {c.method for c in ops.calls}
    assert running_on(ops) == [N2]


def test_a_configuration_that_cannot_be_written_after_the_move_says_where_it_runs(
    ctx: Context, ops: FakeNodeOps, config: ConfigStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The guest runs on node2; the configuration (a full disk) still names node1: the
    error says so and leads to --cleanup, not to a failover (a second copy)."""

    def full(*_args: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ConfigStore, "set_instance_primary", full)
    with pytest.raises(OpExecError) as raised:
        run(ctx, OpInstanceMigrate(instance_name=INST, target_node=N2))
    err = raised.value
    assert err.ecode == ECODE_ENVIRON and f"runs on {N2} after its migration" in err.msg
    assert f"still names {N1}" in err.msg and f"migrate --cleanup {INST}" in err.msg
    assert running_on(ops) == [N2] and config.get_instance(INST).primary_node == N1  # type: ignore[union-attr]
    assert not ops.calls_to("undefine_instance")  # the source's definition stays for --cleanup


def test_a_failover_that_copied_the_disks_goes_back_when_the_start_fails(
    ctx: Context, ops: FakeNodeOps, config: ConfigStore
) -> None:
    """The source keeps the images until the target runs the instance: it runs there again."""
    path = disk0_path(config)
    ops.fail("start_instance", N2, "could not start")
    with pytest.raises(OpExecError, match=f"failover was undone: the instance runs on {N1}") as err:
        run(ctx, OpInstanceFailover(instance_name=INST, target_node=N2))
    assert err.value.ecode == ECODE_ENVIRON
    assert config.get_instance(INST).primary_node == N1  # type: ignore[union-attr]
    assert running_on(ops) == [N1]
    assert path in ops.node(N1).files and path not in ops.node(N2).files
    assert INST not in ops.node(N2).domains


def test_a_failover_undone_whose_copies_stay_says_so(
    ctx: Context, ops: FakeNodeOps, config: ConfigStore
) -> None:
    ops.fail("start_instance", N2, "could not start")
    ops.fail("remove_disks", N2, "device busy")
    with pytest.raises(OpExecError, match="failover was undone") as err:
        run(ctx, OpInstanceFailover(instance_name=INST, target_node=N2))
    assert f"the copied disk images on {N2} could not be removed" in err.value.msg
    assert "--cleanup" in err.value.msg and running_on(ops) == [N1]


def test_a_failover_undone_whose_configuration_cannot_be_written_keeps_the_copies(
    ctx: Context, ops: FakeNodeOps, config: ConfigStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The configuration names the target still: the target keeps the images it names."""
    path = disk0_path(config)
    ops.fail("start_instance", N2, "could not start")
    write = ConfigStore.set_instance_primary

    def disk_full_on_the_way_back(store: ConfigStore, name: str, node: str) -> None:
        if node == N1:
            raise OSError(28, "No space left on device")
        write(store, name, node)

    monkeypatch.setattr(ConfigStore, "set_instance_primary", disk_full_on_the_way_back)
    with pytest.raises(OSError, match="No space left"):
        run(ctx, OpInstanceFailover(instance_name=INST, target_node=N2))
    assert config.get_instance(INST).primary_node == N2  # type: ignore[union-attr]
    assert path in ops.node(N2).files


def _start_on_n2_then_answer(ops: FakeNodeOps, monkeypatch: pytest.MonkeyPatch, lost: bool) -> None:
    """The start on N2 starts the guest, then fails: N2 unreachable (``lost``) or not."""
    start = ops.start_instance

    def started_then_failed(node: Any, cluster: Any, instance: Any) -> None:
        start(node, cluster, instance)
        if node.name == N2:
            if lost:
                ops.set_unreachable(N2)
            raise NodeUnreachable(f"Node {N2}: keepalive timed out", node=N2)

    monkeypatch.setattr(ops, "start_instance", started_then_failed)


@pytest.mark.parametrize("shared", [False, True])
def test_a_failed_start_whose_target_cannot_say_is_not_undone(
    ctx: Context,
    ops: FakeNodeOps,
    config: ConfigStore,
    monkeypatch: pytest.MonkeyPatch,
    shared: bool,
) -> None:
    """The guest started on the target but the answer was lost: never a second copy."""
    path = disk0_path(config)
    if shared:  # the primary did not stop the guest: the undo would point at it
        shared_on_offline_n1(config, ops)
    _start_on_n2_then_answer(ops, monkeypatch, lost=True)
    op = OpInstanceFailover(instance_name=INST, target_node=N2, ignore_consistency=shared)
    with pytest.raises(OpExecError, match="whether it runs there is unclear") as err:
        run(ctx, op)
    assert "migrate --cleanup" in err.value.msg
    advice = "fail over again with --ignore-consistency" if shared else "virsh start"
    assert advice in err.value.msg
    assert N2 in running_on(ops) and (shared or running_on(ops) == [N2])
    assert config.get_instance(INST).primary_node == N2  # type: ignore[union-attr]
    assert shared or path in ops.node(N1).files  # the source keeps its images


def test_a_failed_start_whose_leftover_cannot_be_removed_says_so(
    ctx: Context, ops: FakeNodeOps, config: ConfigStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The target answers but cannot undefine the stopped leftover: nothing undone, and why."""
    start = ops.start_instance

    def start_fails_stopped(node: Any, cluster: Any, instance: Any) -> None:
        start(node, cluster, instance)
        if node.name == N2:
            ops.node(N2).domains[INST].state = constants.DOMSTATE_SHUTOFF
            raise HypervisorError("qemu exited", node=N2)

    monkeypatch.setattr(ops, "start_instance", start_fails_stopped)
    ops.fail("undefine_instance", N2, "domain is locked")
    with pytest.raises(OpExecError, match="whether it runs there is unclear") as err:
        run(ctx, OpInstanceFailover(instance_name=INST, target_node=N2))
    assert "leftover domain could not be removed there: " in err.value.msg
    assert "domain is locked" in err.value.msg and "cannot be asked" not in err.value.msg
    assert config.get_instance(INST).primary_node == N2  # type: ignore[union-attr]
    assert running_on(ops) == []


def test_a_failed_start_after_which_the_target_runs_the_instance_is_done(
    ctx: Context, ops: FakeNodeOps, config: ConfigStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = disk0_path(config)
    _start_on_n2_then_answer(ops, monkeypatch, lost=False)
    _, lines = run(ctx, OpInstanceFailover(instance_name=INST, target_node=N2))
    assert any(f"but instance {INST} is running there" in line for line in lines)
    assert running_on(ops) == [N2]
    assert config.get_instance(INST).primary_node == N2  # type: ignore[union-attr]
    assert path not in ops.node(N1).files and path in ops.node(N2).files


def test_a_start_that_finishes_while_it_is_undone_is_not_undone(
    ctx: Context, ops: FakeNodeOps, config: ConfigStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Asked, the target said shut off; the start then finished: the undefine left it running."""
    start, undefine = ops.start_instance, ops.undefine_instance

    def slow_start(node: Any, cluster: Any, instance: Any) -> None:
        start(node, cluster, instance)
        if node.name == N2:
            ops.node(N2).domains[INST].state = constants.DOMSTATE_SHUTOFF  # not up yet
            raise HypervisorError("answer lost", node=N2)

    def undefine_while_it_starts(node: Any, name: str) -> None:
        if node.name == N2 and name in ops.node(N2).domains:
            ops.node(N2).domains[name].state = constants.DOMSTATE_RUNNING  # now transient
            return
        undefine(node, name)

    monkeypatch.setattr(ops, "start_instance", slow_start)
    monkeypatch.setattr(ops, "undefine_instance", undefine_while_it_starts)
    with pytest.raises(OpExecError, match="unclear \\(it is running there\\)"):
        run(ctx, OpInstanceFailover(instance_name=INST, target_node=N2))
    assert running_on(ops) == [N2]
    assert config.get_instance(INST).primary_node == N2  # type: ignore[union-attr]


def test_a_file_failover_whose_source_did_not_stop_is_refused_even_ignoring_consistency(
    ctx: Context, ops: FakeNodeOps, config: ConfigStore
) -> None:
    """Its disks cannot be copied consistently, and two copies could run."""
    ops.fail("shutdown_instance", N1, "timed out")
    op = OpInstanceFailover(instance_name=INST, target_node=N2, ignore_consistency=True)
    with pytest.raises(OpExecError, match="Could not shutdown instance") as err:
        run(ctx, op)
    assert "--ignore-consistency does not apply to node-local disks" in err.value.msg
    assert config.get_instance(INST).primary_node == N1  # type: ignore[union-attr]
    assert not ops.calls_to("copy_disk") and running_on(ops) == [N1]


def test_failover_shared_with_offline_primary(
    ctx: Context, ops: FakeNodeOps, config: ConfigStore
) -> None:
    shared_on_offline_n1(config, ops)
    run(ctx, OpInstanceFailover(instance_name=INST, target_node=N2, ignore_consistency=True))
    assert config.get_instance(INST).primary_node == N2  # type: ignore[union-attr]
    assert N2 in running_on(ops)
    assert not ops.calls_to("shutdown_instance")
    # the shared disk chain is repaired from the target, the offline node is not touched
    assert ops.calls_to("repair_disk_chain", N2) and not ops.calls_to("repair_disk_chain", N1)


def test_failover_from_offline_primary_keeps_it_when_the_start_fails(
    ctx: Context, ops: FakeNodeOps, config: ConfigStore
) -> None:
    """The offline node's guest may still run (only its libvirtd died): qemu's lock on
    the shared disk makes the start on the target fail; the primary stays the old node."""
    shared_on_offline_n1(config, ops)
    ops.fail("start_instance", N2, 'Failed to get "write" lock')
    with pytest.raises(OpExecError, match=f"configuration keeps {N1} as its primary") as err:
        run(ctx, OpInstanceFailover(instance_name=INST, target_node=N2, ignore_consistency=True))
    assert err.value.ecode == ECODE_ENVIRON
    assert config.get_instance(INST).primary_node == N1  # type: ignore[union-attr]
    assert ops.calls_to("undefine_instance", N2)
    assert INST not in ops.node(N2).domains


def test_failover_shutdown_failure_refused_without_ignore_consistency(
    ctx: Context, ops: FakeNodeOps, config: ConfigStore
) -> None:
    ops.fail("shutdown_instance", N1, "timed out")
    with pytest.raises(OpExecError, match="Could not shutdown instance"):
        run(ctx, OpInstanceFailover(instance_name=INST, target_node=N2))
    assert config.get_instance(INST).primary_node == N1  # type: ignore[union-attr]


# --------------------------------------------------------------------- CLI


def test_cli_migrate_and_refusal(
    data_dir: str, ops: FakeNodeOps, config: ConfigStore, capsys: pytest.CaptureFixture[str]
) -> None:
    from ganeti_lv.cli.main import main

    ops.migration_reports = [MigrationProgress(elapsed=1.0, memory_total=10, memory_remaining=5)]
    argv = ["--data-dir", data_dir, "instance", "migrate", "-f", "-n", "node2", "inst1"]
    assert main(argv, node_ops=ops) == 0
    out = capsys.readouterr().out
    assert "50.0% of memory" in out and "downtime 42 ms" in out
    assert config.get_instance(INST).primary_node == N2  # type: ignore[union-attr]
    assert main(argv, node_ops=ops) == 1
    err = capsys.readouterr().err
    assert "error type: wrong_state" in err and "to its primary" in err


def test_migration_progress_lines_are_progress_records() -> None:
    from ganeti_lv.master.protocol import progress_of

    line = MigrationProgress(elapsed=1, memory_total=200, memory_remaining=50).format()
    assert progress_of(line)[:2] == ("migrating", 75.0)  # type: ignore[index]
    assert progress_of("STEP 1/4 Checking") is None


def test_cancel_request_during_migration_aborts_it(
    ctx: Context, ops: FakeNodeOps, config: ConfigStore
) -> None:
    """A caller's cancel (the CLI sets it on Ctrl-C) reaches the running migration."""
    ops.migration_reports = [MigrationProgress(elapsed=float(i)) for i in range(3)]
    cancel = Cancellation()
    lines: list[str] = []

    def feedback(line: str) -> None:
        lines.append(line)
        if line.startswith("migration "):  # the job runs: the operator presses Ctrl-C
            cancel.request("interrupted by the user")

    with pytest.raises(MigrationAborted) as err:
        Processor(ctx).execute(
            OpInstanceMigrate(instance_name=INST, target_node=N2), feedback, cancel
        )
    assert "interrupted by the user" in err.value.msg
    assert config.get_instance(INST).primary_node == N1  # type: ignore[union-attr]
    assert running_on(ops) == [N1]
    assert ctx.jobs.list()[-1].status == "canceled"


def test_cancel_before_exec_changes_nothing(
    ctx: Context, ops: FakeNodeOps, config: ConfigStore
) -> None:
    cancel = Cancellation()
    cancel.request("interrupted by the user")
    serial = config.read().serial
    with pytest.raises(OpExecError) as err:
        Processor(ctx).execute(OpInstanceMigrate(instance_name=INST, target_node=N2), None, cancel)
    assert "canceled (interrupted by the user) before it started executing" in err.value.msg
    assert not ops.calls_to("migrate_instance", N1)
    assert config.read().serial == serial
    assert running_on(ops) == [N1]


# -------------------------------------------- the convergence policy in the job log


def test_policy_steps_are_lines_of_the_job_log(
    ctx: Context, ops: FakeNodeOps, config: ConfigStore
) -> None:
    step = "not completed after 2 more passes: allowing 11 ms downtime"
    ops.migration_reports = [
        MigrationProgress(elapsed=1.0, memory_total=100, memory_remaining=50),
        MigrationProgress(elapsed=1.2, memory_total=100, memory_remaining=50, policy_step=step),
    ]
    _, lines = run(ctx, OpInstanceMigrate(instance_name=INST, target_node=N2))
    logged = [msg for _, _, msg in ctx.jobs.list()[-1].log]
    assert f" - INFO: convergence policy: {step}" in logged
    assert f" - INFO: convergence policy: {step}" in lines
    assert sum("migration " in msg and "% of memory" in msg for msg in logged) == 1


def test_abort_by_the_policy_is_a_typed_error_and_no_finalising_step(
    ctx: Context, ops: FakeNodeOps, config: ConfigStore
) -> None:
    failure = MigrationFailed(
        "convergence policy: no progress for 30 s after every escalation step"
        " (operation aborted: migration out job: canceled by client)",
        node=N1,
        aborted=True,
        by_policy=True,
    )
    ops.fail("migrate_instance", N1, failure)
    with pytest.raises(MigrationNotConverged) as err:
        run(ctx, OpInstanceMigrate(instance_name=INST, target_node=N2))
    assert err.value.ecode == ECODE_ENVIRON
    assert "did not converge within the convergence policy's limits" in err.value.msg
    assert "no progress for 30 s after every escalation step" in err.value.msg
    assert f"keeps running on {N1}, configuration unchanged" in err.value.msg
    job = ctx.jobs.list()[-1]
    assert job.ops[0].error is not None and job.ops[0].error.get("ecode") == ECODE_ENVIRON
    logged = [msg for _, _, msg in job.log]
    assert any(msg.startswith("STEP 3/4") for msg in logged)
    assert not any(msg.startswith("STEP 4/4") for msg in logged), logged
    assert config.get_instance(INST).primary_node == N1  # type: ignore[union-attr]
    # the target silent afterwards: the cleanup it needs is said as for any other abort
    ops.fail("instance_info", N2, NodeUnreachable("no answer", node=N2))
    with pytest.raises(MigrationNotConverged) as err:
        run(ctx, OpInstanceMigrate(instance_name=INST, target_node=N2))
    assert "did not converge within the convergence policy's limits" in err.value.msg
    assert f"{N2} did not answer: once it does, run 'gnt-lv instance migrate --cleanup'" in (
        err.value.msg
    )


def test_user_abort_announces_no_finalising_step(ctx: Context, ops: FakeNodeOps) -> None:
    ops.fail("migrate_instance", N1, MigrationFailed("aborted by user", node=N1, aborted=True))
    with pytest.raises(MigrationAborted):
        run(ctx, OpInstanceMigrate(instance_name=INST, target_node=N2))
    assert not any(msg.startswith("STEP 4/4") for _, _, msg in ctx.jobs.list()[-1].log)


def test_migration_encryption_from_the_cluster_then_per_call(
    ctx: Context, ops: FakeNodeOps, config: ConfigStore
) -> None:
    import libvirt

    from ganeti_lv.hypervisor.libvirt.migration import migration_flags

    _, lines = run(ctx, OpInstanceMigrate(instance_name=INST, target_node=N2))
    plain = ops.calls_to("migrate_instance", N1)[0].args[2]
    assert not plain.encryption and not migration_flags(plain) & libvirt.VIR_MIGRATE_TLS
    assert not any("TLS" in line for line in lines)
    with config.update() as data:
        data.cluster.hvparams["migration_encryption"] = True
    _, lines = run(ctx, OpInstanceMigrate(instance_name=INST, target_node=N1))
    encrypted = ops.calls_to("migrate_instance", N2)[0].args[2]
    assert encrypted.encryption and migration_flags(encrypted) & libvirt.VIR_MIGRATE_TLS
    assert any("stream encrypted with TLS" in line for line in lines)
    run(ctx, OpInstanceMigrate(instance_name=INST, target_node=N2, migration_encryption=False))
    assert not ops.calls_to("migrate_instance", N1)[1].args[2].encryption


# ------------------------------------------------------------ a dead primary


def _hook_nodes(ops: FakeNodeOps, phase: str) -> set[str]:
    """The nodes whose ``phase`` hooks ran (the fake records every call)."""
    return {c.node for c in ops.calls_to("run_hooks") if c.args[1]["GANETI_HOOKS_PHASE"] == phase}


def test_failover_pre_hooks_leave_out_the_primary(
    ctx: Context, ops: FakeNodeOps, config: ConfigStore
) -> None:
    """Ganeti's nodes: pre on master and target, post on those and the primary."""
    with config.update() as data:
        data.cluster.master_node = N3
    run(ctx, OpInstanceFailover(instance_name=INST, target_node=N2))
    assert _hook_nodes(ops, "pre") == {N3, N2}
    assert _hook_nodes(ops, "post") == {N3, N2, N1}
    # a migration runs its pre hooks on the primary as well
    ops.calls.clear()
    run(ctx, OpInstanceMigrate(instance_name=INST, target_node=N1))
    assert _hook_nodes(ops, "pre") == {N3, N2, N1}


def test_a_primary_that_cannot_be_reached_is_taken_offline_then_failed_over(
    ctx: Context, ops: FakeNodeOps, config: ConfigStore
) -> None:
    """The primary's link is gone (SSH and libvirt): the operator marks it offline
    (its own pre hooks are not needed for that) and fails the instance over."""
    set_shared_away_from_master(config, ops)
    ops.set_unreachable(N1)
    run(ctx, OpNodeSetParams(node_name=N1, offline=True, force=True))
    run(ctx, OpInstanceFailover(instance_name=INST, target_node=N2, ignore_consistency=True))
    assert config.get_instance(INST).primary_node == N2  # type: ignore[union-attr]
    assert N2 in running_on(ops)


def test_failover_to_an_offline_node_is_refused_as_such(
    ctx: Context, ops: FakeNodeOps, config: ConfigStore
) -> None:
    # nothing is asked of an offline target: no query at all
    with config.update() as data:
        data.nodes[N2].offline = True
    err = _refuse(ctx, ops, config, OpInstanceFailover(instance_name=INST, target_node=N2))
    assert err.ecode == ECODE_STATE and err.msg.startswith("Can't use offline node")
    assert ops.calls == []
