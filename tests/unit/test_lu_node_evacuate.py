"""LUNodeMigrate / LUNodeEvacuate through the processor with FakeNodeOps."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from support.locks import hold
from support.overlap import Overlap

from ganeti_lv import constants, locking, paths
from ganeti_lv.cancel import Cancellation
from ganeti_lv.cmdlib.node_evacuate import ARRIVED
from ganeti_lv.config import ConfigStore
from ganeti_lv.context import Context
from ganeti_lv.errors import (
    ECODE_INVAL,
    ECODE_STATE,
    HypervisorError,
    LockTimeout,
    OpExecError,
    OpPrereqError,
)
from ganeti_lv.hypervisor.fake import FakeNodeOps
from ganeti_lv.hypervisor.migration_types import MigrationFailed, MigrationProgress
from ganeti_lv.mcpu import Processor
from ganeti_lv.node.transport import HookScriptResult
from ganeti_lv.objects import Disk, Instance, Nic, disk_path
from ganeti_lv.opcodes import OpCode, OpNodeEvacuate, OpNodeMigrate
from ganeti_lv.reservations import MEMORY, Reservations
from ganeti_lv.units import MIB

N1, N2, N3 = "node1.example.com", "node2.example.com", "node3.example.com"
I1, I2, I3 = "inst1.example.com", "inst2.example.com", "inst3.example.com"


@pytest.fixture
def ops(fake_ops: FakeNodeOps, config: ConfigStore) -> FakeNodeOps:
    """inst1 and inst2 running on node1, inst3 stopped there; every disk file present."""
    with config.update() as data:
        data.instances[I3] = Instance(
            name=I3,
            primary_node=N1,
            disk_template=constants.DT_FILE,
            disks=[Disk(size=1024)],
            nics=[Nic(mac="aa:00:00:00:00:09", link="br0")],
            admin_state=constants.ADMINST_DOWN,
        )
        data.cluster.beparams = {**data.cluster.beparams, "maxmem": 512, "minmem": 512}
    cluster = config.get_cluster()
    for name in (I1, I2, I3):
        inst = config.get_instance(name)
        assert inst is not None
        fake_ops.node(N1).files[disk_path(cluster, inst, 0)] = 1024
    fake_ops.add_domain(N1, I1, memory=512)
    fake_ops.add_domain(N1, I2, memory=512)
    fake_ops.present_paths = {cluster.file_storage_dir}
    return fake_ops


def run(ctx: Context, op: OpCode, cancel: Cancellation | None = None) -> tuple[Any, list[str]]:
    lines: list[str] = []
    result = Processor(ctx).execute(op, feedback_fn=lines.append, cancel=cancel)
    return result, lines


def primary(config: ConfigStore, name: str) -> str:
    inst = config.get_instance(name)
    assert inst is not None
    return inst.primary_node


def running_on(ops: FakeNodeOps, name: str) -> list[str]:
    return sorted(
        n
        for n, fake in ops.nodes.items()
        if name in fake.domains and fake.domains[name].state == constants.DOMSTATE_RUNNING
    )


def test_node_migrate_moves_only_running_instances_one_job_each(
    ctx: Context, ops: FakeNodeOps, config: ConfigStore
) -> None:
    result, lines = run(ctx, OpNodeMigrate(node_name="node1"))
    moved = {m["instance"]: m for m in result}
    assert set(moved) == {I1, I2}
    assert {m["status"] for m in result} == {"done"}
    # spread over both other nodes (even free memory), each running on exactly one node
    assert {primary(config, I1), primary(config, I2)} == {N2, N3}
    for name in (I1, I2):
        assert running_on(ops, name) == [primary(config, name)]
        assert moved[name]["node"] == primary(config, name)
    assert primary(config, I3) == N1
    # the plan is shown first, then the counts
    assert lines[0] == f"Plan for node {N1}:"
    assert any(line.startswith("instances 2/2 finished: 2 done") for line in lines)
    # one job per instance, under the node operation's job
    jobs = ctx.jobs.list()
    parent = next(j for j in jobs if j.op_id == "OP_NODE_MIGRATE")
    children = [j for j in jobs if j.parent == parent.id]
    assert sorted(j.summary for j in children) == [
        f"INSTANCE_MIGRATE({I1})",
        f"INSTANCE_MIGRATE({I2})",
    ]
    assert {m["job_id"] for m in result} == {j.id for j in children}
    assert all(j.status == "success" for j in children)


def test_node_evacuate_moves_all_three(ctx: Context, ops: FakeNodeOps, config: ConfigStore) -> None:
    result, _ = run(ctx, OpNodeEvacuate(node_name="node1"))
    kinds = {m["instance"]: m["kind"] for m in result}
    assert kinds == {I1: "migrate", I2: "migrate", I3: "failover"}
    for name in (I1, I2, I3):
        assert primary(config, name) in (N2, N3)
    assert running_on(ops, I3) == []  # stopped stays stopped
    inst3 = config.get_instance(I3)
    assert inst3 is not None and inst3.admin_state == constants.ADMINST_DOWN
    # the stopped instance's disk was copied to its new node
    cluster = config.get_cluster()
    assert disk_path(cluster, inst3, 0) in ops.node(inst3.primary_node).files


def test_evacuating_the_secondaries_moves_nothing(
    ctx: Context, ops: FakeNodeOps, config: ConfigStore
) -> None:
    """Ganeti's secondary-only evacuation: instances here have primary nodes only."""
    result, lines = run(ctx, OpNodeEvacuate(node_name="node1", secondary_only=True))
    assert result == [] and any("No instance to evacuate" in line for line in lines)
    assert [primary(config, n) for n in (I1, I2, I3)] == [N1, N1, N1]
    assert not ops.calls_to("migrate_instance") and not ops.calls_to("shutdown_instance")
    both = OpNodeEvacuate(node_name="node1", primary_only=True, secondary_only=True)
    with pytest.raises(OpPrereqError) as err:
        run(ctx, both)
    assert err.value.ecode == ECODE_INVAL


def test_dry_run_shows_the_plan_and_moves_nothing(
    ctx: Context, ops: FakeNodeOps, config: ConfigStore
) -> None:
    result, lines = run(ctx, OpNodeEvacuate(node_name="node1", dry_run=True))
    assert {m["instance"] for m in result} == {I1, I2, I3}
    assert all(m["target"] in (N2, N3) for m in result), result
    assert any("->" in line for line in lines)
    assert [primary(config, n) for n in (I1, I2, I3)] == [N1, N1, N1]
    assert not ops.calls_to("migrate_instance")
    assert [j.op_id for j in ctx.jobs.list()] == ["OP_NODE_EVACUATE"]


def test_memory_cap_forces_the_second_instance_elsewhere(
    ctx: Context, ops: FakeNodeOps, config: ConfigStore
) -> None:
    # node2 has room for one 512 MiB instance only, node3 for one too
    with config.update() as data:
        data.nodes[N2].memory_cap = 700
        data.nodes[N3].memory_cap = 600
    run(ctx, OpNodeMigrate(node_name="node1"))
    assert {primary(config, I1), primary(config, I2)} == {N2, N3}


def test_the_plan_takes_the_memory_a_guest_runs_with(
    ctx: Context, ops: FakeNodeOps, config: ConfigStore
) -> None:
    """inst1 runs with 1024 MiB (a start with -B; 512 configured), inst2 with its 600.
    By the configured sizes inst2 (the larger) would go to node2 and inst1 to node3,
    too small for it (its migration's own check would refuse it); by the sizes they
    run with, inst1 goes to node2, the only node with room, and inst2 to node3."""
    ops.node(N1).domains[I1].memory = 1024
    ops.node(N1).domains[I2].memory = 600
    with config.update() as data:
        data.instances[I2].beparams = {"maxmem": 600, "minmem": 600}
        data.nodes[N2].memory_cap = 1100
        data.nodes[N3].memory_cap = 700
    _, lines = run(ctx, OpNodeMigrate(node_name="node1"))
    assert (primary(config, I1), primary(config, I2)) == (N2, N3), lines


def test_the_plan_takes_the_configured_memory_of_a_guest_that_does_not_run(
    ctx: Context, ops: FakeNodeOps, config: ConfigStore
) -> None:
    """inst1 is marked up but its domain is shut off (it stopped by itself) with 256
    MiB from an earlier start: its move is a failover, which starts it with 512."""
    ops.remove_domain(N1, I1)
    ops.add_domain(N1, I1, state=constants.DOMSTATE_SHUTOFF, memory=256)
    result, _ = run(ctx, OpNodeEvacuate(node_name="node1", dry_run=True))
    assert {m["instance"]: m["memory"] for m in result}[I1] == 512


def test_no_room_for_one_instances_images_turns_no_other_move_away(
    ctx: Context, ops: FakeNodeOps, config: ConfigStore
) -> None:
    """inst1's image (2 GiB allocated; it moves first) does not fit in node2's 1100
    MiB free; inst2's and inst3's (256 MiB each) do, and they still move there
    (node3 is drained)."""
    with config.update() as data:
        data.nodes[N3].drained = True
    inst1 = config.get_instance(I1)
    assert inst1 is not None
    ops.node(N1).files[disk_path(config.get_cluster(), inst1, 0)] = 8192  # 2 GiB allocated
    ops.free_bytes[N2] = 1100 * MIB
    with pytest.raises(OpExecError) as err:
        run(ctx, OpNodeEvacuate(node_name="node1", max_parallel=1))
    failed = str(err.value).split(". Instances now:")[0]
    assert "1 of 3 instance(s)" in failed and f"{I1}: failed: Not enough space in the" in failed
    assert I2 not in failed and I3 not in failed
    assert [primary(config, n) for n in (I1, I2, I3)] == [N1, N2, N2]


def test_unplaceable_instance_is_reported_and_stays(
    ctx: Context, ops: FakeNodeOps, config: ConfigStore
) -> None:
    with config.update() as data:
        data.nodes[N2].memory_cap = 600
        data.nodes[N3].drained = True
    with pytest.raises(OpExecError) as err:
        run(ctx, OpNodeMigrate(node_name="node1"))
    assert err.value.ecode == ECODE_STATE
    text = str(err.value)
    assert "unplaced" in text and "drained" in text and "not enough memory" in text
    # one moved to node2, the other still runs on node1
    nodes = sorted([primary(config, I1), primary(config, I2)])
    assert nodes == [N1, N2]
    stuck = I1 if primary(config, I1) == N1 else I2
    assert running_on(ops, stuck) == [N1]
    # the error names the job of the move that ran, and none for the one that did not
    (moved,) = [j for j in ctx.jobs.list() if j.parent is not None]
    assert f"{moved.ops[0].params['instance_name']} on {N2} (job {moved.id})" in text
    assert f"{stuck} on {N1}," in text or text.endswith(f"{stuck} on {N1}")


def test_a_cpu_comparison_that_could_not_be_made_turns_no_node_away(
    ctx: Context, ops: FakeNodeOps, config: ConfigStore
) -> None:
    """A comparison the source could not make turns no node away (the move checks the
    CPU again itself); one the target could not make turns the target away."""
    for node in (N2, N3):  # the plan's first comparison for each target fails on the source
        ops.fail("compare_cpu", node, HypervisorError("domain inst1 not found", node=N1), times=1)
    result, _ = run(ctx, OpNodeMigrate(node_name="node1"))
    assert {m["status"] for m in result} == {"done"}
    assert {primary(config, I1), primary(config, I2)} == {N2, N3}


@pytest.mark.parametrize("answer", ["incompatible", "the target's error"])
def test_a_node_whose_cpu_cannot_run_the_guests_or_cannot_tell_takes_none(
    ctx: Context, ops: FakeNodeOps, config: ConfigStore, answer: str
) -> None:
    if answer == "incompatible":
        ops.cpu_compat[N2] = (False, "host CPU lacks avx512f")
    else:
        ops.fail("compare_cpu", N2, "unknown CPU model 'Zen9'")  # raised with node=N2
    result, _ = run(ctx, OpNodeMigrate(node_name="node1"))
    assert {m["status"] for m in result} == {"done"}
    assert primary(config, I1) == primary(config, I2) == N3


def test_explicit_target_and_bad_target(
    ctx: Context, ops: FakeNodeOps, config: ConfigStore
) -> None:
    with pytest.raises(OpPrereqError) as err:
        run(ctx, OpNodeMigrate(node_name="node1", target_node="node1"))
    assert err.value.ecode == ECODE_INVAL
    with pytest.raises(OpPrereqError, match="max_parallel") as err:
        run(ctx, OpNodeMigrate(node_name="node1", max_parallel=0))
    assert err.value.ecode == ECODE_INVAL
    run(ctx, OpNodeMigrate(node_name="node1", target_node="node3"))
    assert primary(config, I1) == primary(config, I2) == N3


@pytest.mark.parametrize("state", ["offline", "drained", "vm_capable"])
def test_an_explicit_target_that_cannot_take_instances_is_refused_before_anything(
    ctx: Context, ops: FakeNodeOps, config: ConfigStore, state: str
) -> None:
    with config.update() as data:
        # vm_capable is the one whose bad value is False
        setattr(data.nodes[N3], state, state != "vm_capable")
    for dry_run in (True, False):
        with pytest.raises(OpPrereqError, match=f"Can't use .* node {N3}") as err:
            run(ctx, OpNodeEvacuate(node_name="node1", target_node="node3", dry_run=dry_run))
        assert err.value.ecode == ECODE_STATE
    assert not ctx.jobs.list() or all(j.parent is None for j in ctx.jobs.list())
    assert primary(config, I1) == primary(config, I2) == primary(config, I3) == N1


def test_file_instances_of_an_offline_node_stay_and_blame_no_target(
    ctx: Context, ops: FakeNodeOps, config: ConfigStore
) -> None:
    # inst3's 'file' disks are on the offline node: it cannot move, and the
    # plan says so; the shared instances are failed over (one move at a time)
    with config.update() as data:
        data.nodes[N1].offline = True
        for name in (I1, I2):
            data.instances[name].disk_template = constants.DT_SHARED_FILE
    cluster = config.get_cluster()
    for name in (I1, I2):
        inst = config.get_instance(name)
        assert inst is not None
        ops.present_paths.add(disk_path(cluster, inst, 0))
    plan, _ = run(ctx, OpNodeEvacuate(node_name="node1", dry_run=True))
    stays = next(m for m in plan if m["instance"] == I3)
    assert stays["target"] is None and "'file' disks are on offline node" in stays["error"]
    with pytest.raises(OpExecError, match="1 of 3 instance") as err:
        run(ctx, OpNodeEvacuate(node_name="node1", max_parallel=1, target_node="node2"))
    assert "'file' disks are on offline node" in str(err.value)
    assert primary(config, I1) == primary(config, I2) == N2
    assert primary(config, I3) == N1


@contextlib.contextmanager
def _while_inst1_moves(config: ConfigStore, name: str, node: str) -> Iterator[None]:
    """Another operation records instance ``name`` on ``node`` as inst1's move starts."""
    original = Processor.run_child

    def meanwhile(proc: Processor, op: OpCode, *args: Any) -> Any:
        if op.instance_name == I1:  # type: ignore[attr-defined]
            with config.update() as data:
                data.instances[name].primary_node = node
        return original(proc, op, *args)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Processor, "run_child", meanwhile)
        yield


def test_a_move_whose_instance_left_its_source_is_not_started_and_blames_no_target(
    ctx: Context, ops: FakeNodeOps, config: ConfigStore
) -> None:
    # another job moved inst2 after the plan was made (while inst1 moved): it
    # is not moved again, and its target still takes inst3, planned for it too
    with config.update() as data:
        data.instances[I3].admin_state = constants.ADMINST_UP
    ops.add_domain(N1, I3, memory=512)
    with _while_inst1_moves(config, I2, N3), pytest.raises(OpExecError) as err:
        run(ctx, OpNodeMigrate(node_name="node1", target_node="node2", max_parallel=1))
    message = str(err.value)
    assert f"{I2}: failed: Instance {I2} is no longer on node {N1} (now on {N3})" in message
    assert "1 of 3 instance" in message
    assert primary(config, I1) == primary(config, I3) == N2
    assert primary(config, I2) == N3


def test_an_instance_on_its_way_onto_the_node_is_in_the_plan(
    ctx: Context, ops: FakeNodeOps, config: ConfigStore, data_dir: str
) -> None:
    """An operation bringing inst2 onto node1 holds node1 (exclusively) until it commits:
    the plan waits for it and moves inst2 off again, with the others."""
    with config.update() as data:
        data.instances[I2].primary_node = N2
    ops.remove_domain(N1, I2)
    ops.add_domain(N2, I2, memory=512)
    incoming = hold(data_dir, N1, level=locking.LEVEL_NODE)
    planning = threading.Event()
    asked = ops.instance_list

    def instance_list(node: Any) -> Any:
        planning.set()
        return asked(node)

    ops.instance_list = instance_list  # type: ignore[method-assign]
    outcome: list[Any] = []
    evacuation = threading.Thread(
        target=lambda: outcome.append(run(ctx, OpNodeEvacuate(node_name="node1"))[0])
    )
    evacuation.start()
    try:
        # without the wait for the node, the plan is made now (without inst2)
        planning.wait(1.0)
        with config.update() as data:  # the incoming operation commits, then lets go
            data.instances[I2].primary_node = N1
        ops.remove_domain(N2, I2)
        ops.add_domain(N1, I2, memory=512)
    finally:
        incoming.release_all()
        evacuation.join(30)
    assert outcome, "the evacuation failed"
    assert sorted(m["instance"] for m in outcome[0]) == [I1, I2, I3]
    assert {m["status"] for m in outcome[0]} == {"done"}
    assert N1 not in {primary(config, name) for name in (I1, I2, I3)}


def test_the_node_operation_holds_no_lock_while_its_moves_run(
    ctx: Context, ops: FakeNodeOps, config: ConfigStore, data_dir: str
) -> None:
    """Between its moves the cluster lock is free for an operation that needs it
    exclusively (node add, cluster modify), as after Ganeti's evacuation submitted its
    jobs; holding it would also deadlock with such a waiter, whom the moves queue behind."""
    took: list[bool] = []
    original = Processor.run_child

    def between_moves(proc: Processor, op: OpCode, *args: Any) -> Any:
        bgl = locking.LockManager(paths.locks_dir(data_dir))
        try:
            took.append(bool(bgl.acquire(locking.LEVEL_CLUSTER, [locking.BGL_NAME], timeout=2)))
        except LockTimeout:
            took.append(False)
        finally:
            bgl.release_all()
        return original(proc, op, *args)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Processor, "run_child", between_moves)
        run(ctx, OpNodeEvacuate(node_name="node1", max_parallel=1))
    assert took == [True, True, True]
    assert N1 not in {primary(config, name) for name in (I1, I2, I3)}


def test_an_instance_brought_onto_the_node_after_the_plan_fails_the_operation(
    ctx: Context, ops: FakeNodeOps, config: ConfigStore
) -> None:
    """inst3 is put on node1 by another operation while inst1 moves: not in the plan, it
    is left there, and the node operation says so instead of reporting success."""
    with config.update() as data:
        data.instances[I3].primary_node = N2
        data.instances[I3].admin_state = constants.ADMINST_UP
    ops.add_domain(N2, I3, memory=512)
    with _while_inst1_moves(config, I3, N1), pytest.raises(OpExecError) as err:
        run(ctx, OpNodeMigrate(node_name="node1", max_parallel=1))
    assert err.value.ecode == ECODE_STATE
    message = str(err.value)
    assert "1 of 3 instance" in message
    assert f"{I3}: unplaced: {ARRIVED}" in message
    assert primary(config, I3) == N1
    assert N1 not in {primary(config, I1), primary(config, I2)}


@pytest.mark.parametrize("planned", [True, False])
def test_a_paused_guest_stays_paused_on_its_node_and_blames_no_target(
    ctx: Context, ops: FakeNodeOps, config: ConfigStore, planned: bool
) -> None:
    """Not failed over: the shutdown of a paused guest ends in a destroy (its memory
    lost). The plan leaves it where it is; when the source did not tell the plan
    (``planned`` False: its list of guests failed), the move refuses it."""
    ops.node(N1).domains[I1].state = constants.DOMSTATE_PAUSED
    if not planned:
        ops.fail("instance_list", N1, "no answer")
    with config.update() as data:
        data.nodes[N3].memory_cap = 100  # no room on node3: the plan puts all on node2
    with pytest.raises(OpExecError) as err:
        run(ctx, OpNodeEvacuate(node_name="node1", max_parallel=1))
    if planned:
        expected = f"{I1}: unplaced: it is paused on {N1}: resume it or shut it down first"
    else:
        expected = f"{I1}: failed: Can't migrate instance {I1}: it is paused on {N1}"
    assert expected in err.value.msg
    assert "1 of 3 instance" in err.value.msg
    assert primary(config, I1) == N1 and ops.node(N1).domains[I1].state == "paused"
    assert not [c for c in ops.calls_to("shutdown_instance") if c.args[0] == I1]
    assert primary(config, I2) == N2 and primary(config, I3) == N2  # node2 not turned away


def test_a_guest_that_does_not_converge_turns_no_target_away(
    ctx: Context, ops: FakeNodeOps, config: ConfigStore
) -> None:
    """inst1 dirties its memory too fast (the policy aborts it); node2 still takes inst2."""
    real = ops.migrate_instance

    def migrate(source: Any, target: Any, cluster: Any, instance: Any, *args: Any) -> Any:
        if instance.name == I1:
            raise MigrationFailed(
                "convergence policy: no progress", node=source.name, aborted=True, by_policy=True
            )
        return real(source, target, cluster, instance, *args)

    ops.migrate_instance = migrate  # type: ignore[method-assign]
    with pytest.raises(OpExecError) as err:
        run(ctx, OpNodeMigrate(node_name="node1", target_node="node2", max_parallel=1))
    assert f"{I1}: failed: Migration of instance {I1} aborted: the guest did not converge" in (
        err.value.msg
    )
    assert "1 of 2 instance" in err.value.msg
    assert primary(config, I1) == N1 and running_on(ops, I1) == [N1]
    assert primary(config, I2) == N2 and running_on(ops, I2) == [N2]


def _moved_while_reserved(ctx: Context, config: ConfigStore, caps: dict[str, int]) -> Any:
    """node1's instances migrated (node caps ``caps``) while another operation holds
    1024 MiB on node2 for an instance on its way there; each instance's target."""
    with config.update() as data:
        for name, cap in caps.items():
            data.nodes[name].memory_cap = cap
    with Reservations(ctx.data_dir, MEMORY).node(N2) as ledger:
        held = ledger.reserve("", 1024 * MIB, "arriving.example.com")
    try:
        result, _lines = run(ctx, OpNodeMigrate(node_name="node1", max_parallel=1))
    finally:
        held.release()
    return {m["instance"]: m["target"] for m in result}


def test_the_plan_counts_memory_another_operation_reserved(
    ctx: Context, ops: FakeNodeOps, config: ConfigStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """node2 has the most free memory, but another operation's move reserved most of it."""
    monkeypatch.setattr(ctx, "sleep", lambda _seconds: None)
    targets = _moved_while_reserved(ctx, config, {N2: 1024 + 256, N3: 1024})
    assert targets == {I1: N3, I2: N3}
    assert primary(config, I1) == N3 and primary(config, I2) == N3


def test_the_plan_counts_an_instance_arriving_on_a_capped_node_once(
    ctx: Context, ops: FakeNodeOps, config: ConfigStore
) -> None:
    """node2's cap already counts an instance arriving there (paused, qemu filling it):
    its reservation is not subtracted a second time, so node2 still has the most room."""
    ops.add_domain(N2, "arriving.example.com", state=constants.DOMSTATE_PAUSED, memory=1024)
    assert _moved_while_reserved(ctx, config, {N2: 2048, N3: 512}) == {I1: N2, I2: N2}
    assert primary(config, I1) == N2 and primary(config, I2) == N2


def test_failed_target_takes_no_more_instances(
    ctx: Context, ops: FakeNodeOps, config: ConfigStore
) -> None:
    # node2 fails every migration; with one move at a time, the second instance
    # planned for node2 (if any) goes to node3 instead
    ops.fail("migrate_instance", N1, "injected failure")
    with config.update() as data:
        data.nodes[N3].memory_cap = 2000
    with pytest.raises(OpExecError):
        run(ctx, OpNodeMigrate(node_name="node1", max_parallel=1))
    jobs = [j for j in ctx.jobs.list() if j.parent is not None]
    # the first move failed; its target took nothing more
    targets = [j.ops[0].params["target_node"] for j in jobs]
    assert len(targets) == len(set(targets))


@pytest.mark.parametrize("where", [{N1}, {N1, N2, N3}])
def test_a_pre_hook_refusing_one_instance_turns_no_target_away(
    ctx: Context, ops: FakeNodeOps, config: ConfigStore, where: set[str]
) -> None:
    """A site policy pins inst1 (on the master alone, or on every node, as scripts are
    usually installed): node2, planned for both, still takes inst2."""

    def hooks(node: str, hooks_dir: str, env: dict[str, str], timeout: float) -> Any:
        pre = env.get("GANETI_HOOKS_PHASE") == "pre"
        if node in where and pre and env.get("GANETI_INSTANCE_NAME") == I1:
            return [HookScriptResult("00-policy", constants.HKR_FAIL, "inst1 is pinned")]
        return []

    ops.hooks_fn = hooks
    with config.update() as data:
        data.nodes[N3].memory_cap = 100  # no room on node3: the plan puts both on node2
    with pytest.raises(OpExecError, match="inst1 is pinned") as err:
        run(ctx, OpNodeMigrate(node_name="node1", max_parallel=1))
    assert "1 of 2 instance" in err.value.msg
    assert primary(config, I1) == N1 and primary(config, I2) == N2
    assert running_on(ops, I2) == [N2]


def test_a_shutdown_the_source_refuses_turns_no_target_away(
    ctx: Context, ops: FakeNodeOps, config: ConfigStore
) -> None:
    """Stopped instances on shared disks fail over; the source's shutdown of two fails."""
    with config.update() as data:
        for name in (I1, I2, I3):
            data.instances[name].disk_template = constants.DT_SHARED_FILE
            data.instances[name].admin_state = constants.ADMINST_DOWN
    cluster = config.get_cluster()
    for name in (I1, I2, I3):
        inst = config.get_instance(name)
        assert inst is not None
        ops.present_paths = {*ops.present_paths, disk_path(cluster, inst, 0)}
        ops.add_domain(N1, name, state=constants.DOMSTATE_SHUTOFF)
    real = ops.shutdown_instance

    def shutdown(node: Any, instance: Any, timeout: float) -> None:
        if instance.name in (I1, I2):
            raise HypervisorError("libvirtd: internal error", node=node.name)
        real(node, instance, timeout)

    ops.shutdown_instance = shutdown  # type: ignore[method-assign]
    with pytest.raises(OpExecError) as err:
        run(ctx, OpNodeEvacuate(node_name="node1", max_parallel=1))
    assert "2 of 3 instance" in err.value.msg and "libvirtd: internal error" in err.value.msg
    assert primary(config, I1) == primary(config, I2) == N1
    assert primary(config, I3) != N1  # two failures of the source turned neither target away
    assert "offline" not in err.value.msg


def test_a_target_that_failed_is_named_so_when_no_node_is_left(
    ctx: Context, ops: FakeNodeOps, config: ConfigStore
) -> None:
    """Not "offline": the operator is told the node failed a move of this operation."""
    ops.fail("migrate_instance", N1, "injected failure")
    with config.update() as data:
        data.nodes[N3].memory_cap = 100  # no room on node3: only node2 takes instances
    with pytest.raises(OpExecError) as err:
        run(ctx, OpNodeMigrate(node_name="node1", max_parallel=1))
    assert f"{N2}: failed a move of this operation" in err.value.msg
    assert f"{N2}: offline" not in err.value.msg


def test_a_node_drained_during_the_operation_takes_no_replaced_move(
    ctx: Context, ops: FakeNodeOps, config: ConfigStore
) -> None:
    """node2 fails a move while the operator drains node3: the next move goes nowhere."""
    real = ops.migrate_instance

    def migrate(source: Any, target: Any, *args: Any, **kwargs: Any) -> Any:
        if target.name == N2:
            with config.update() as data:
                data.nodes[N3].drained = True
            raise HypervisorError("qemu died on the target", node=N2)
        return real(source, target, *args, **kwargs)

    ops.migrate_instance = migrate  # type: ignore[method-assign]
    with config.update() as data:
        data.nodes[N3].memory_cap = 600  # room for one: the plan puts both on node2
    with pytest.raises(OpExecError) as err:
        run(ctx, OpNodeMigrate(node_name="node1", max_parallel=1))
    assert f"no node can take it ({N2}: failed a move of this operation; {N3}: drained)" in (
        err.value.msg
    )
    assert primary(config, I1) == primary(config, I2) == N1


def test_a_target_drained_during_the_operation_gets_no_more_moves(
    ctx: Context, ops: FakeNodeOps, config: ConfigStore
) -> None:
    """The operator drains node2 while its first move runs: the move queued to it goes
    to node3 instead of failing on the drained node."""
    real = ops.migrate_instance

    def migrate(source: Any, target: Any, *args: Any, **kwargs: Any) -> Any:
        with config.update() as data:
            data.nodes[N2].drained = True
        return real(source, target, *args, **kwargs)

    ops.migrate_instance = migrate  # type: ignore[method-assign]
    with config.update() as data:
        data.nodes[N3].memory_cap = 600  # room for one: the plan puts both on node2
    _, lines = run(ctx, OpNodeMigrate(node_name="node1", max_parallel=1))
    assert sorted([primary(config, I1), primary(config, I2)]) == [N2, N3]
    assert any(f"target node {N2} is drained, now going to {N3}" in line for line in lines)


def test_node_migrate_runs_ganetis_node_migrate_hooks_on_the_master_and_evacuate_none(
    ctx: Context, ops: FakeNodeOps, config: ConfigStore
) -> None:
    calls: list[tuple[str, str, dict[str, str]]] = []

    def hooks(node: str, hooks_dir: str, env: dict[str, str], timeout: float) -> Any:
        calls.append((node, hooks_dir, env))
        return []

    ops.hooks_fn = hooks
    run(ctx, OpNodeMigrate(node_name="node1", allow_runtime_changes=False))
    node_hooks = [(n, d, e) for n, d, e in calls if "node-migrate" in d]
    master = config.get_cluster().master_node
    assert [(n, d.rsplit("/", 1)[-1]) for n, d, _ in node_hooks] == [
        (master, "node-migrate-pre.d"),
        (master, "node-migrate-post.d"),
    ]
    env = node_hooks[0][2]
    assert env["GANETI_NODE_NAME"] == N1 and env["GANETI_OBJECT_TYPE"] == "NODE"
    assert env["GANETI_ALLOW_RUNTIME_CHANGES"] == "False"
    assert any("instance-migrate-pre.d" in d for _, d, _ in calls)  # each move's own
    # a move that fails fails the node operation: its post hooks still run, as Ganeti's
    calls.clear()
    for name in (I1, I2):
        with config.update() as data:
            data.instances[name].primary_node = N1
        ops.remove_domain(N2, name)
        ops.remove_domain(N3, name)
        ops.add_domain(N1, name, memory=512)
    ops.fail("migrate_instance", N1, HypervisorError("no way", node=N1))
    with pytest.raises(OpExecError, match="did not move"):
        run(ctx, OpNodeMigrate(node_name="node1"))
    assert [d.rsplit("/", 1)[-1] for n, d, _ in calls if "node-migrate" in d] == [
        "node-migrate-pre.d",
        "node-migrate-post.d",
    ]
    calls.clear()
    run(ctx, OpNodeEvacuate(node_name="node2"))
    assert not [d for _, d, _ in calls if d.rsplit("/", 1)[-1].startswith("node-")]


@pytest.mark.parametrize("slow", [False, True], ids=["quick", "slow"])
def test_a_cancel_during_the_pre_hooks_leaves_no_pre_hook_without_its_post(
    ctx: Context, ops: FakeNodeOps, config: ConfigStore, monkeypatch: Any, slow: bool
) -> None:
    """The PRE hooks ran: the node operation goes on to its end (no move starts) and its
    POST hooks run, as they do for every node migrate whose PRE hooks ran; also when
    the cancel comes while the job waits for slow PRE hooks."""
    monkeypatch.setattr("ganeti_lv.mcpu.HOOKS_PATIENCE", 0.05)
    cancel = Cancellation()
    dirs: list[str] = []

    def hooks(node: str, hooks_dir: str, env: dict[str, str], timeout: float) -> Any:
        dirs.append(hooks_dir.rsplit("/", 1)[-1])
        if dirs[-1] == "node-migrate-pre.d":
            cancel.request("stopped by the operator")
            if slow:
                time.sleep(0.3)  # the job waits past its patience with the cancel set
        return []

    ops.hooks_fn = hooks
    with pytest.raises(OpExecError, match="canceled"):
        run(ctx, OpNodeMigrate(node_name="node1"), cancel)
    assert dirs == ["node-migrate-pre.d", "node-migrate-post.d"]
    assert not ops.calls_to("migrate_instance")
    assert [primary(config, n) for n in (I1, I2)] == [N1, N1]


def _cancel_in_migrations(ops: FakeNodeOps, cancel: Cancellation) -> None:
    """The cancel request comes once a migration has begun (before it ends)."""
    real = ops.migrate_instance

    def migrate(*args: Any) -> Any:
        cancel.request("test")
        return real(*args)

    ops.migrate_instance = migrate  # type: ignore[method-assign]


def test_cancel_stops_queued_moves_and_aborts_the_running_migration(
    ctx: Context, ops: FakeNodeOps, config: ConfigStore
) -> None:
    ops.migration_reports = [MigrationProgress(elapsed=1.0)]  # the abort is seen here
    cancel = Cancellation()
    _cancel_in_migrations(ops, cancel)
    with pytest.raises(OpExecError) as err:
        run(ctx, OpNodeEvacuate(node_name="node1", max_parallel=1), cancel)
    assert "canceled" in str(err.value)
    # one migration began and was aborted; the queued moves never started
    assert len(ops.calls_to("migrate_instance")) == 1
    assert not ops.calls_to("copy_disk")
    assert [primary(config, n) for n in (I1, I2, I3)] == [N1, N1, N1]
    assert running_on(ops, I1) == [N1] and running_on(ops, I2) == [N1]
    children = [j for j in ctx.jobs.list() if j.parent is not None]
    assert len(children) == 1 and children[0].status == "canceled"
    parent = next(j for j in ctx.jobs.list() if j.parent is None)
    assert parent.status == "canceled"
    # the report names every instance's node; the aborted one is canceled, not failed
    text = str(err.value)
    for name in (I1, I2, I3):
        assert f"{name} on {N1}" in text
    assert f"{I1}: canceled:" in text and "keeps running on" in text


def test_cancel_after_the_switch_over_records_the_target(
    ctx: Context, ops: FakeNodeOps, config: ConfigStore
) -> None:
    """A migration that ends before it sees the cancel is recorded where it went."""
    cancel = Cancellation()
    _cancel_in_migrations(ops, cancel)  # no progress report: the migration does not see it
    with pytest.raises(OpExecError):
        run(ctx, OpNodeEvacuate(node_name="node1", max_parallel=1), cancel)
    moved = [n for n in (I1, I2, I3) if primary(config, n) != N1]
    assert moved == [I1]
    assert running_on(ops, I1) == [primary(config, I1)]
    children = [j for j in ctx.jobs.list() if j.parent is not None]
    assert len(children) == 1 and children[0].status == "success"


def test_parallel_moves_respect_the_limits(
    ctx: Context, ops: FakeNodeOps, config: ConfigStore
) -> None:
    overlap = Overlap(want=2, wait=2.0)
    real = ops.migrate_instance

    def counting(*args: Any) -> Any:
        with overlap.running():
            return real(*args)

    ops.migrate_instance = counting  # type: ignore[method-assign]
    run(ctx, OpNodeMigrate(node_name="node1", max_parallel=2, max_parallel_target=1))
    assert overlap.most == 2  # both at once (different targets)
    with config.update() as data:
        for name in (I1, I2):
            data.instances[name].primary_node = N1
    cluster = config.get_cluster()
    for name in (I1, I2):  # back on node1, as a move would have left them
        inst = config.get_instance(name)
        assert inst is not None
        for node in (N2, N3):
            ops.remove_domain(node, name)
            ops.node(node).files.pop(disk_path(cluster, inst, 0), None)
        ops.add_domain(N1, name, memory=512)
        ops.node(N1).files[disk_path(cluster, inst, 0)] = 1024
    overlap.most = 0
    run(ctx, OpNodeMigrate(node_name="node1", target_node="node2", max_parallel=2))
    assert overlap.most == 1  # one target, one move at a time onto it


def test_offline_node_is_evacuated_by_failover_only(
    ctx: Context, ops: FakeNodeOps, config: ConfigStore
) -> None:
    with config.update() as data:
        data.nodes[N1].offline = True
        for name in (I1, I2, I3):
            data.instances[name].disk_template = constants.DT_SHARED_FILE
    cluster = config.get_cluster()
    for name in (I1, I2, I3):  # the shared images, seen from every node
        inst = config.get_instance(name)
        assert inst is not None
        ops.present_paths.add(disk_path(cluster, inst, 0))
    with pytest.raises(OpPrereqError) as err:
        run(ctx, OpNodeMigrate(node_name="node1"))
    assert err.value.ecode == ECODE_STATE
    result, _ = run(ctx, OpNodeEvacuate(node_name="node1", dry_run=True))
    assert {m["kind"] for m in result} == {"failover"}
    assert all(m["target"] in (N2, N3) for m in result), result


def test_a_source_back_online_during_the_evacuation_is_not_ignored(
    ctx: Context, ops: FakeNodeOps, config: ConfigStore
) -> None:
    """Offline when planned, online again when a later move runs: a shutdown it refuses
    stops that move (the guest may run there), as for any failover."""
    with config.update() as data:
        data.nodes[N1].offline = True
        for name in (I1, I2):
            data.instances[name].disk_template = constants.DT_SHARED_FILE
        del data.instances[I3]
    cluster = config.get_cluster()
    for name in (I1, I2):
        inst = config.get_instance(name)
        assert inst is not None
        ops.present_paths.add(disk_path(cluster, inst, 0))
    real_start = ops.start_instance

    def start(node: Any, *args: Any, **kwargs: Any) -> Any:
        with config.update() as data:  # the operator sets node1 online again
            data.nodes[N1].offline = False
        return real_start(node, *args, **kwargs)

    ops.start_instance = start  # type: ignore[method-assign]
    ops.fail("shutdown_instance", N1, "libvirtd does not answer")
    with pytest.raises(OpExecError, match="Could not shutdown instance"):
        run(ctx, OpNodeEvacuate(node_name="node1", max_parallel=1))
    moved, stayed = sorted((I1, I2), key=lambda name: primary(config, name) == N1)
    assert primary(config, moved) != N1 and running_on(ops, moved) == [N1, primary(config, moved)]
    # the second guest was not started beside the one the source may still run
    assert primary(config, stayed) == N1 and running_on(ops, stayed) == [N1]


def test_cancel_during_a_failover_copy_keeps_the_instance_on_its_node(
    ctx: Context, ops: FakeNodeOps, config: ConfigStore
) -> None:
    """The node operation's cancel reaches a failover copying disks: it stops on N1."""
    cancel = Cancellation()
    real = ops.copy_disk

    def copy_then_cancel(*args: Any, **kwargs: Any) -> Any:
        cancel.request("test")
        return real(*args, **kwargs)

    ops.copy_disk = copy_then_cancel  # type: ignore[method-assign]
    with pytest.raises(OpExecError) as err:
        run(ctx, OpNodeEvacuate(node_name="node1"), cancel)
    assert primary(config, I3) == N1
    inst3 = config.get_instance(I3)
    assert inst3 is not None
    path = disk_path(config.get_cluster(), inst3, 0)
    assert [n for n, fake in ops.nodes.items() if path in fake.files] == [N1]
    assert f"{I3}: canceled:" in str(err.value)
    failover = next(j for j in ctx.jobs.list() if j.summary == f"INSTANCE_FAILOVER({I3})")
    assert failover.status == "canceled"


@pytest.mark.parametrize("op_class", [OpNodeMigrate, OpNodeEvacuate])
def test_an_instance_allocator_stands_for_the_built_in_placement(
    ctx: Context, ops: FakeNodeOps, config: ConfigStore, op_class: type[OpCode]
) -> None:
    """Ganeti's tools name hail; the built-in placement places the instances."""
    result, _lines = run(ctx, op_class(node_name="node1", iallocator="hail"))
    assert all(m["status"] == "done" and m["target"] != N1 for m in result)
    assert primary(config, I1) != N1 and primary(config, I2) != N1
    # with a target node too: refused before anything, as in Ganeti
    with pytest.raises(OpPrereqError) as err:
        run(ctx, op_class(node_name=primary(config, I1), iallocator="hail", target_node=N1))
    assert (err.value.ecode, err.value.msg) == (
        ECODE_INVAL,
        "Do not specify both, iallocator and node",
    )
