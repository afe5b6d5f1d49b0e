"""Instance lifecycle LUs through the processor with FakeNodeOps."""

from __future__ import annotations

import os
import random
import threading
from typing import Any

import pytest

from ganeti_lv import constants, exportinfo, paths
from ganeti_lv.cmdlib.instance import compute_instance_status
from ganeti_lv.cmdlib.instance_nics import generate_mac
from ganeti_lv.config import ConfigStore
from ganeti_lv.context import Context
from ganeti_lv.errors import (
    ECODE_ENVIRON,
    ECODE_EXISTS,
    ECODE_INVAL,
    ECODE_NOENT,
    ECODE_NORES,
    ECODE_NOTUNIQUE,
    ECODE_STATE,
    OpExecError,
    OpPrereqError,
)
from ganeti_lv.hypervisor.fake import FakeNodeOps
from ganeti_lv.mcpu import Processor
from ganeti_lv.objects import disk_path
from ganeti_lv.opcodes import (
    OpCode,
    OpInstanceCreate,
    OpInstanceQuery,
    OpInstanceQueryData,
    OpInstanceReboot,
    OpInstanceRemove,
    OpInstanceShutdown,
    OpInstanceStartup,
)

N1, N2, N3 = "node1.example.com", "node2.example.com", "node3.example.com"
INST = "inst1.example.com"
NEW = "web9"

ST = constants


@pytest.mark.parametrize(
    ("admin", "running_on", "offline", "bad", "expected"),
    [
        ("up", [N1], set(), set(), ST.INSTST_RUNNING),
        ("up", [], set(), set(), ST.INSTST_ERRORDOWN),
        ("down", [], set(), set(), ST.INSTST_ADMINDOWN),
        ("down", [N1], set(), set(), ST.INSTST_ERRORUP),
        ("offline", [], set(), set(), ST.INSTST_ADMINOFFLINE),
        ("up", [N2], set(), set(), ST.INSTST_WRONGNODE),
        # on its primary it is running (Ganeti 3.0 looks there first): a live
        # migration's paused domain on the target is no wrong node
        ("up", [N1, N2], set(), set(), ST.INSTST_RUNNING),
        ("down", [N1, N2], set(), set(), ST.INSTST_ERRORUP),
        ("down", [N2], set(), set(), ST.INSTST_WRONGNODE),
        ("up", [], {N1}, set(), ST.INSTST_NODEOFFLINE),
        ("up", [N2], {N1}, set(), ST.INSTST_NODEOFFLINE),
        ("up", [], set(), {N1}, ST.INSTST_NODEDOWN),
        ("down", [], set(), {N2}, ST.INSTST_ADMINDOWN),
    ],
)
def test_instance_status_table(
    admin: str, running_on: list[str], offline: set[str], bad: set[str], expected: str
) -> None:
    assert compute_instance_status(admin, N1, running_on, offline, bad) == expected


def test_generate_mac_prefix_and_uniqueness() -> None:
    rng = random.Random(1)
    first = generate_mac(set(), random.Random(1))
    assert first.startswith("52:54:00:")
    again = generate_mac({first}, rng)  # same seed would repeat the first one
    assert again != first and again.startswith("52:54:00:")


def run(ctx: Context, op: OpCode) -> tuple[Any, list[str]]:
    lines: list[str] = []
    result = Processor(ctx).execute(op, feedback_fn=lines.append)
    return result, lines


def create_op(**kwargs: Any) -> OpInstanceCreate:
    params: dict[str, Any] = {
        "instance_name": NEW,
        "disk_template": constants.DT_FILE,
        "pnode": N2,
        "disks": [{"size": 1024}],
        "nics": [{}],
        "beparams": {"memory": "256M", "vcpus": "2"},
    }
    params.update(kwargs)
    return OpInstanceCreate(**params)


def prereq_error(ctx: Context, op: OpCode) -> OpPrereqError:
    with pytest.raises(OpPrereqError) as info:
        run(ctx, op)
    return info.value


# ---------------------------------------------------------------- create


def test_a_kernel_missing_on_the_primary_creates_nothing(
    ctx: Context, fake_ops: FakeNodeOps, config: ConfigStore
) -> None:
    """As Ganeti's hypervisor check of kernel_path: the instance could never start."""
    op = create_op(hvparams={"kernel_path": "/boot/vmlinuz-9", "initrd_path": "/boot/initrd-9"})
    err = prereq_error(ctx, op)
    assert err.ecode == ECODE_ENVIRON
    assert f"boots /boot/vmlinuz-9, /boot/initrd-9, missing on node {N2}" in err.msg
    assert config.get_instance(NEW) is None and not fake_ops.calls_to("create_disks")
    fake_ops.node(N2).files.update({"/boot/vmlinuz-9": 8, "/boot/initrd-9": 8})
    run(ctx, op)
    assert config.get_instance(NEW) is not None


def test_an_instance_created_with_a_tag_twice_has_it_once(
    ctx: Context, config: ConfigStore
) -> None:
    """Tags are a set, as in Ganeti (and as the tag commands keep them)."""
    run(ctx, create_op(tags=["web", "db", "web"], start=False))
    inst = config.get_instance(NEW)
    assert inst is not None and inst.tags == ["web", "db"]


def test_a_shutdown_holds_back_no_other_instance_of_its_node(
    ctx: Context, config: ConfigStore, inst1_running: FakeNodeOps, data_dir: str
) -> None:
    """inst1 takes its time to stop (ACPI, up to its timeout): inst2 on the same node
    starts meanwhile, as in Ganeti, where a shutdown locks its instance alone."""
    inst2 = "inst2.example.com"
    both = threading.Barrier(2, timeout=10)
    shutdown, start = inst1_running.shutdown_instance, inst1_running.start_instance

    def slow_shutdown(node: Any, inst: Any, timeout: float) -> Any:
        both.wait()  # inst2's start comes while inst1 stops
        return shutdown(node, inst, timeout)

    def start_meanwhile(*args: Any, **kwargs: Any) -> Any:
        both.wait()
        return start(*args, **kwargs)

    inst1_running.shutdown_instance = slow_shutdown  # type: ignore[method-assign]
    inst1_running.start_instance = start_meanwhile  # type: ignore[method-assign]
    other = Context.from_data_dir(data_dir, node_ops=inst1_running, lock_timeout=5.0)
    errors: list[BaseException] = []

    def stop() -> None:
        try:
            run(ctx, OpInstanceShutdown(instance_name=INST))
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    stopping = threading.Thread(target=stop)
    stopping.start()
    run(other, OpInstanceStartup(instance_name=inst2))
    stopping.join(15)
    assert not errors and not stopping.is_alive()
    assert config.get_instance(INST).admin_state == constants.ADMINST_DOWN  # type: ignore[union-attr]


def test_create_and_start(ctx: Context, fake_ops: FakeNodeOps, config: ConfigStore) -> None:
    result, lines = run(ctx, create_op())
    assert result == [N2]  # Ganeti's: the names of its nodes
    inst = config.get_instance(NEW)
    assert inst is not None
    assert inst.primary_node == N2 and inst.admin_state == constants.ADMINST_UP
    assert inst.beparams == {"maxmem": 256, "minmem": 256, "vcpus": 2}
    assert inst.nics[0].mac.startswith("52:54:00:") and inst.nics[0].link == "br0"
    cluster = config.get_cluster()
    assert fake_ops.node(N2).files == {disk_path(cluster, inst, 0): 1024}
    dom = fake_ops.node(N2).domains[NEW]
    assert dom.state == constants.DOMSTATE_RUNNING and dom.memory == 256
    assert "* starting instance..." in lines


def test_the_allocator_chooses_the_primary_with_the_most_free_memory(
    ctx: Context, fake_ops: FakeNodeOps, config: ConfigStore
) -> None:
    """Any allocator name (Ganeti's hail) is the built-in one: of the nodes that can
    be the primary, the one with the most free memory."""
    fake_ops.node(N1).facts.memory_free = 8000  # the most, but drained
    fake_ops.node(N2).facts.memory_free = 1000
    fake_ops.node(N3).facts.memory_free = 3000
    with config.update() as data:
        data.nodes[N1].drained = True
    _, lines = run(ctx, create_op(pnode=None, iallocator="hail"))
    inst = config.get_instance(NEW)
    assert inst is not None and inst.primary_node == N3
    assert any(f"Selected node {N3} as primary (most free memory)" in x for x in lines)
    assert NEW in fake_ops.node(N3).domains and not fake_ops.calls_to("create_disks", N2)
    # none can take it: each node's reason, nothing made
    fake_ops.node(N2).facts.memory_free = fake_ops.node(N3).facts.memory_free = 100
    serial = config.read().serial
    err = prereq_error(ctx, create_op(instance_name="new2.example.com", pnode=None, iallocator="x"))
    assert err.ecode == ECODE_NORES and "No node can be the primary" in err.msg
    assert f"{N1}: " in err.msg and f"{N2}: Not enough memory" in err.msg
    assert config.read().serial == serial


def test_nic_ip_addresses_are_kept_and_none_means_none(
    ctx: Context, fake_ops: FakeNodeOps, config: ConfigStore
) -> None:
    nics = [{"ip": "192.0.2.7"}, {"ip": "fd00::7"}, {"ip": "None"}]
    run(ctx, create_op(nics=nics))
    inst = config.get_instance(NEW)
    assert inst is not None and [n.ip for n in inst.nics] == ["192.0.2.7", "fd00::7", None]


@pytest.mark.parametrize(
    ("nic", "says"),
    [
        ({"mode": "routed"}, "unsupported NIC mode 'routed'"),
        ({"vlan": ".100"}, "VLAN '.100' is not supported"),
    ],
)
def test_a_nic_that_cannot_be_given_as_asked_is_refused(
    ctx: Context, fake_ops: FakeNodeOps, config: ConfigStore, nic: dict[str, str], says: str
) -> None:
    serial = config.read().serial
    with pytest.raises(OpPrereqError, match=says) as err:
        run(ctx, create_op(nics=[nic]))
    assert err.value.ecode == ECODE_INVAL
    assert config.read().serial == serial and config.get_instance(NEW) is None


def test_create_no_start_and_sharedfile(
    ctx: Context, fake_ops: FakeNodeOps, config: ConfigStore
) -> None:
    run(
        ctx,
        create_op(
            start=False,
            disk_template=constants.DT_SHARED_FILE,
            disks=[{"size": 100}, {"size": 200}],
        ),
    )
    inst = config.get_instance(NEW)
    assert inst is not None and inst.admin_state == constants.ADMINST_DOWN
    assert NEW not in fake_ops.node(N2).domains
    paths = sorted(fake_ops.node(N2).files)
    shared = config.get_cluster().shared_file_storage_dir
    assert paths == [f"{shared}/{NEW}/disk0.img", f"{shared}/{NEW}/disk1.img"]


def test_create_dry_run_changes_nothing(
    ctx: Context, fake_ops: FakeNodeOps, config: ConfigStore
) -> None:
    serial = config.read().serial
    result, _ = run(ctx, create_op(dry_run=True))
    assert result == [N2]  # Ganeti's: the names of its nodes
    assert config.read().serial == serial
    assert not fake_ops.calls_to("create_disks")


def test_a_mac_another_creation_chose_is_taken_until_that_job_ends(
    ctx: Context, fake_ops: FakeNodeOps, config: ConfigStore, data_dir: str
) -> None:
    """Two creations at once never give one MAC address to two guests: the second
    learns it before anything is made (not once its guest runs beside the first)."""
    from ganeti_lv.reservations import MAC_LEDGER, MACS, Reservations

    mac = "52:54:00:12:34:56"
    ledger = Reservations(data_dir, MACS)
    with ledger.node(MAC_LEDGER) as macs:
        other = macs.reserve(mac, 0, "web2.example.com")  # another job's creation
    err = prereq_error(ctx, create_op(nics=[{"mac": mac.upper()}]))
    assert err.ecode == ECODE_NOTUNIQUE and f"MAC address {mac} of NIC 0" in err.msg
    assert not fake_ops.calls_to("create_disks")
    other.release()  # that job ended (its instance recorded, or not)
    run(ctx, create_op(nics=[{"mac": mac}]))
    new = config.get_instance(NEW)
    assert new is not None and new.nics[0].mac == mac
    with ledger.node(MAC_LEDGER) as macs:
        assert macs.others() == []  # this job's reservation ended with it


@pytest.mark.parametrize(
    ("kwargs", "ecode", "text"),
    [
        ({"instance_name": INST}, ECODE_EXISTS, "already in the cluster"),
        ({"pnode": "nosuchnode"}, ECODE_NOENT, "Node 'nosuchnode' not known"),
        ({"beparams": {"memory": "lots"}}, ECODE_INVAL, "Invalid backend parameter 'memory'"),
        ({"beparams": {"colour": "red"}}, ECODE_INVAL, "Unknown backend parameter 'colour'"),
        ({"hvparams": {"bogus": "1"}}, ECODE_INVAL, "Unknown hypervisor parameter 'bogus'"),
        ({"disks": [{"size": 0}]}, ECODE_INVAL, "Invalid size for disk 0"),
        ({"nics": [{"mac": "zz"}]}, ECODE_INVAL, "Invalid MAC address"),
        ({"nics": [{"ip": "notanip"}]}, ECODE_INVAL, "Invalid IP address 'notanip'"),
        ({"nics": [{"link": "br7"}]}, ECODE_ENVIRON, "Missing bridges br7"),
        ({"nics": [{"link": 5}]}, ECODE_INVAL, "Invalid link 5 for NIC 0"),
        ({"nics": [{}, {"link": ["br0"]}]}, ECODE_INVAL, "Invalid link ['br0'] for NIC 1"),
        ({"nics": [{"link": "br0 br1"}]}, ECODE_INVAL, "Invalid link 'br0 br1' for NIC 0"),
        ({"beparams": {"memory": "8G"}}, ECODE_NORES, "Not enough memory on node"),
        ({"pnode": None}, ECODE_INVAL, "the cluster has no default allocator"),
        ({"iallocator": "hail"}, ECODE_INVAL, "Do not specify both, iallocator and node"),
        # Ganeti's device names: unique per kind, never purely numeric
        (
            {"disks": [{"size": 64, "name": "data"}, {"size": 64, "name": "data"}]},
            ECODE_NOTUNIQUE,
            "disk name 'data' of disk 1 is already the name of disk 0",
        ),
        ({"disks": [{"size": 64, "name": "5"}]}, ECODE_INVAL, "purely numeric"),
        ({"disks": [{"size": 64, "name": "-1"}]}, ECODE_INVAL, "purely numeric"),
        ({"disks": [{"size": 64, "name": 5}]}, ECODE_INVAL, "Invalid name 5 of disk 0"),
        ({"nics": [{"name": "eth"}, {"name": "eth"}]}, ECODE_NOTUNIQUE, "NIC name 'eth'"),
        ({"nics": [{"name": "0"}]}, ECODE_INVAL, "Invalid NIC name '0'"),
        ({"nics": [{}, {"name": ["x"]}]}, ECODE_INVAL, "Invalid name ['x'] of NIC 1"),
        (
            {"hvparams": {"migration_mode": "non-live", "migration_bandwidth": 1}},
            ECODE_INVAL,
            "migration_bandwidth, migration_mode can only be set for the whole cluster",
        ),
    ],
)
def test_create_bad_input_creates_nothing(
    ctx: Context,
    fake_ops: FakeNodeOps,
    config: ConfigStore,
    kwargs: dict[str, Any],
    ecode: str,
    text: str,
) -> None:
    serial = config.read().serial
    err = prereq_error(ctx, create_op(**kwargs))
    assert err.ecode == ecode
    assert text in str(err)
    assert config.read().serial == serial
    assert not fake_ops.calls_to("create_disks")


def test_create_on_offline_node(ctx: Context, fake_ops: FakeNodeOps, config: ConfigStore) -> None:
    with config.update() as data:
        data.nodes[N2].offline = True
    serial = config.read().serial
    err = prereq_error(ctx, create_op())
    assert err.ecode == ECODE_STATE and "offline" in str(err)
    assert config.read().serial == serial


def test_create_start_failure_rolls_back(
    ctx: Context, fake_ops: FakeNodeOps, config: ConfigStore
) -> None:
    fake_ops.fail("start_instance", N2, "qemu exploded")
    serial = config.read().serial
    with pytest.raises(OpExecError, match="qemu exploded"):
        run(ctx, create_op())
    assert config.read().serial == serial and config.get_instance(NEW) is None
    assert fake_ops.node(N2).files == {}
    assert NEW not in fake_ops.node(N2).domains
    assert fake_ops.calls_to("undefine_instance", N2)


def test_create_duplicate_mac_refused(ctx: Context, config: ConfigStore) -> None:
    err = prereq_error(ctx, create_op(nics=[{"mac": "aa:00:00:00:00:00"}]))
    assert "already in use" in str(err)


def test_create_with_a_multicast_mac_refused(ctx: Context, config: ConfigStore) -> None:
    """libvirt refuses it when the domain is defined: refused before anything."""
    err = prereq_error(ctx, create_op(nics=[{"mac": "01:00:5e:00:00:01"}]))
    assert err.ecode == ECODE_INVAL and "a multicast address" in err.msg
    assert config.get_instance(NEW) is None


@pytest.mark.parametrize("where, state", [(N2, "shutoff"), (N2, "running"), (N3, "running")])
def test_create_beside_a_domain_of_that_name_refused(
    ctx: Context, fake_ops: FakeNodeOps, config: ConfigStore, where: str, state: str
) -> None:
    """A leftover or another tool's domain: not taken over, nor removed by a clean-up."""
    fake_ops.add_domain(where, NEW, state=state, memory=64)
    serial = config.read().serial
    err = prereq_error(ctx, create_op(start=True))
    assert err.ecode == ECODE_EXISTS and f"A domain named {NEW}" in err.msg and where in err.msg
    assert config.read().serial == serial
    assert fake_ops.node(where).domains[NEW].state == state
    assert not {"create_disks", "start_instance", "undefine_instance"} & {
        c.method for c in fake_ops.calls
    }


# ---------------------------------------------------------------- lifecycle


@pytest.fixture
def running(fake_ops: FakeNodeOps) -> FakeNodeOps:
    """inst1 runs on node1."""
    fake_ops.add_domain(N1, INST)
    return fake_ops


def test_shutdown_and_startup(ctx: Context, running: FakeNodeOps, config: ConfigStore) -> None:
    run(ctx, OpInstanceShutdown(instance_name="inst1", timeout=7))
    assert running.node(N1).domains[INST].state == constants.DOMSTATE_SHUTOFF
    assert running.calls_to("shutdown_instance")[0].args[-1] == 7.0
    inst = config.get_instance(INST)
    assert inst is not None and inst.admin_state == constants.ADMINST_DOWN
    run(ctx, OpInstanceStartup(instance_name=INST))
    assert running.node(N1).domains[INST].state == constants.DOMSTATE_RUNNING
    inst = config.get_instance(INST)
    assert inst is not None and inst.admin_state == constants.ADMINST_UP


def test_a_shutdown_not_remembered_warns_that_its_admin_state_source_is_ignored(
    ctx: Context, running: FakeNodeOps, config: ConfigStore
) -> None:
    """As Ganeti's: no_remember records no admin state, so its source has no effect."""
    op = OpInstanceShutdown(instance_name=INST, no_remember=True, admin_state_source="admin")
    _, feedback = run(ctx, op)
    (warning,) = [line for line in feedback if "WARNING" in line]
    assert "'admin_state_source' is ignored" in warning and "'no_remember'" in warning
    assert running.node(N1).domains[INST].state == constants.DOMSTATE_SHUTOFF
    inst = config.get_instance(INST)
    assert inst is not None and inst.admin_state == constants.ADMINST_UP  # not remembered
    # either alone: no warning
    run(ctx, OpInstanceStartup(instance_name=INST))
    for op in (
        OpInstanceShutdown(instance_name=INST, no_remember=True),
        OpInstanceShutdown(instance_name=INST, admin_state_source="admin"),
    ):
        _, feedback = run(ctx, op)
        assert not any("admin_state_source" in line for line in feedback)


def test_a_forced_shutdown_says_it_ignores_the_offline_check(
    ctx: Context, running: FakeNodeOps, config: ConfigStore
) -> None:
    """Ganeti's force: the offline instance check is skipped, with its warning."""
    _, feedback = run(ctx, OpInstanceShutdown(instance_name=INST, force=True))
    assert any("Ignoring offline instance check" in line for line in feedback)
    assert running.node(N1).domains[INST].state == constants.DOMSTATE_SHUTOFF
    run(ctx, OpInstanceStartup(instance_name=INST))
    _, feedback = run(ctx, OpInstanceShutdown(instance_name=INST))
    assert not any("offline instance check" in line for line in feedback)


@pytest.mark.parametrize(
    ("op", "state"),
    [
        (OpInstanceStartup(instance_name=INST), constants.DOMSTATE_SHUTOFF),
        (OpInstanceReboot(instance_name=INST), constants.DOMSTATE_SHUTOFF),
        (OpInstanceReboot(instance_name=INST, reboot_type="full"), constants.DOMSTATE_RUNNING),
    ],
    ids=["startup", "reboot-of-a-stopped-one", "full-reboot"],
)
def test_a_start_without_the_nics_bridge_is_refused_up_front(
    ctx: Context, fake_ops: FakeNodeOps, config: ConfigStore, op: OpCode, state: str
) -> None:
    """As Ganeti's CheckInstanceBridgesExist: refused before anything is stopped."""
    fake_ops.add_domain(N1, INST, state=state)
    fake_ops.node(N1).facts.bridges = ["br1"]
    serial = config.read().serial
    err = prereq_error(ctx, op)
    assert err.ecode == ECODE_ENVIRON and f"Missing bridges br0 on node {N1}" in err.msg
    assert not fake_ops.calls_to("start_instance") and not fake_ops.calls_to("reboot_instance")
    assert fake_ops.node(N1).domains[INST].state == state
    assert config.read().serial == serial
    # a soft reboot keeps the guest's NICs where they are; a hard one starts it again
    if state == constants.DOMSTATE_RUNNING:
        run(ctx, OpInstanceReboot(instance_name=INST, reboot_type="soft"))
        err = prereq_error(ctx, OpInstanceReboot(instance_name=INST, reboot_type="hard"))
        assert err.ecode == ECODE_ENVIRON and f"Missing bridges br0 on node {N1}" in err.msg


def _hook_env(ops: FakeNodeOps, opcode: str, phase: str) -> dict[str, str]:
    """The environment the master's hooks of ``phase`` got in the last ``opcode``
    (its own hooks path's, not config-update's)."""
    envs = [
        c.args[1]
        for c in ops.calls_to("run_hooks", N1)
        if c.args[1]["GANETI_OP_CODE"] == opcode
        and c.args[1]["GANETI_HOOKS_PHASE"] == phase
        and c.args[1]["GANETI_HOOKS_PATH"] != constants.HOOKS_NAME_CFGUPDATE
    ]
    return envs[-1]


def test_hook_environments_as_ganeti_gives_them(
    ctx: Context, running: FakeNodeOps, config: ConfigStore
) -> None:
    """Post hooks see what Ganeti's see (the recorded state, except after a reboot).

    Ganeti's extra keys are there.
    """
    run(ctx, OpInstanceShutdown(instance_name=INST))
    env = _hook_env(running, "OP_INSTANCE_SHUTDOWN", "post")
    assert (env["GANETI_INSTANCE_STATUS"], env["GANETI_POST_INSTANCE_STATUS"]) == ("up", "down")
    run(ctx, OpInstanceStartup(instance_name=INST, force=True))
    env = _hook_env(running, "OP_INSTANCE_STARTUP", "post")
    assert (env["GANETI_INSTANCE_STATUS"], env["GANETI_POST_INSTANCE_STATUS"]) == ("down", "up")
    assert env["GANETI_FORCE"] == env["GANETI_POST_FORCE"] == "True"
    run(ctx, OpInstanceReboot(instance_name=INST, ignore_secondaries=True))
    env = _hook_env(running, "OP_INSTANCE_REBOOT", "pre")
    assert env["GANETI_IGNORE_SECONDARIES"] == "True" and env["GANETI_REBOOT_TYPE"] == "hard"
    # a stopped instance rebooted (started): recorded up, but Ganeti's post hooks
    # see the instance as it was read before
    run(ctx, OpInstanceShutdown(instance_name=INST))
    run(ctx, OpInstanceReboot(instance_name=INST))
    env = _hook_env(running, "OP_INSTANCE_REBOOT", "post")
    assert (env["GANETI_INSTANCE_STATUS"], env["GANETI_POST_INSTANCE_STATUS"]) == ("down", "down")
    inst = config.get_instance(INST)
    assert inst is not None and inst.admin_state == constants.ADMINST_UP
    # instance add: INSTANCE_STATUS is whether the instance is started, as in Ganeti
    run(ctx, create_op(start=False))
    env = _hook_env(running, "OP_INSTANCE_CREATE", "post")
    assert env["GANETI_INSTANCE_STATUS"] == env["GANETI_POST_INSTANCE_STATUS"] == "False"


def test_startup_without_memory(ctx: Context, fake_ops: FakeNodeOps, config: ConfigStore) -> None:
    fake_ops.node(N1).facts.memory_free = 64
    with config.update() as data:
        data.instances[INST].admin_state = constants.ADMINST_DOWN
    err = prereq_error(ctx, OpInstanceStartup(instance_name=INST))
    assert err.ecode == ECODE_NORES
    assert not fake_ops.calls_to("start_instance")


def test_a_start_with_temporary_parameters_leaves_the_configuration_as_it_was(
    ctx: Context, fake_ops: FakeNodeOps, config: ConfigStore
) -> None:
    """As Ganeti's -H/-B: the domain starts with them (paused with startup_paused);
    the instance keeps its own parameters."""
    with config.update() as data:
        data.instances[INST].admin_state = constants.ADMINST_DOWN
    before = config.get_instance(INST)
    assert before is not None
    fake_ops.node(N1).facts.memory_free = 4096
    op = OpInstanceStartup(
        instance_name=INST,
        hvparams={"kernel_args": "single"},
        beparams={"memory": "512M", "vcpus": "2"},
        startup_paused=True,
    )
    _, feedback = run(ctx, op)
    (call,) = fake_ops.calls_to("start_instance", N1)
    assert call.args[1:] == (
        {"kernel_args": "single"},
        {"minmem": 512, "maxmem": 512, "vcpus": 2},  # memory as Ganeti's min/max, typed
        True,
    )
    dom = fake_ops.node(N1).domains[INST]
    assert (dom.state, dom.memory, dom.vcpus) == (constants.DOMSTATE_PAUSED, 512, 2)
    assert any(f"console (gnt-lv instance console {INST}) resumes it" in x for x in feedback)
    after = config.get_instance(INST)
    assert after is not None and after.admin_state == constants.ADMINST_UP
    assert (after.beparams, after.hvparams) == (before.beparams, before.hvparams)


def test_temporary_parameters_are_checked_before_anything_starts(
    ctx: Context, fake_ops: FakeNodeOps, config: ConfigStore
) -> None:
    with config.update() as data:
        data.instances[INST].admin_state = constants.ADMINST_DOWN
    fake_ops.node(N1).facts.memory_free = 1024
    serial = config.read().serial
    refused = [
        ({"beparams": {"memory": "2G"}}, ECODE_NORES, "needed 2048 MiB, available 1024 MiB"),
        ({"beparams": {"maxmem": None}}, ECODE_INVAL, "set back to their default: maxmem"),
        ({"hvparams": {"migration_bandwidth": 10}}, ECODE_INVAL, "for the whole cluster"),
        ({"hvparams": {"no_such": "x"}}, ECODE_INVAL, "no_such"),
        ({"beparams": {"vcpus": "many"}}, ECODE_INVAL, "vcpus"),
        ({"hvparams": {"migration_downtime": 50}}, ECODE_INVAL, "act on migrations"),
        (
            {"hvparams": {"serial_console": False}, "startup_paused": True},
            ECODE_INVAL,
            "needs its serial console",
        ),
        # as Ganeti's hypervisor check of -H: the kernel must be a file on the node
        ({"hvparams": {"kernel_path": "/boot/vmlinuz-9"}}, ECODE_ENVIRON, "/boot/vmlinuz-9,"),
    ]
    for params, ecode, text in refused:
        err = prereq_error(ctx, OpInstanceStartup(instance_name=INST, **params))
        assert (err.ecode, text in err.msg) == (ecode, True), err.msg
    assert not fake_ops.calls_to("start_instance")
    assert config.read().serial == serial


def test_temporary_parameters_of_a_running_instance_are_ignored_with_a_warning(
    ctx: Context, running: FakeNodeOps
) -> None:
    op = OpInstanceStartup(instance_name=INST, hvparams={"kernel_args": "x"}, startup_paused=True)
    _, feedback = run(ctx, op)
    warnings = [line for line in feedback if "WARNING" in line]
    assert warnings == [
        " - WARNING: The temporary parameters and the paused start ignored: it runs already"
    ]
    assert not running.calls_to("start_instance")
    assert running.node(N1).domains[INST].state == constants.DOMSTATE_RUNNING
    _, feedback = run(ctx, OpInstanceStartup(instance_name=INST))  # nothing asked: no warning
    assert not any("WARNING" in line for line in feedback)


def test_startup_offline_primary(ctx: Context, config: ConfigStore) -> None:
    with config.update() as data:
        data.nodes[N1].offline = True
    err = prereq_error(ctx, OpInstanceStartup(instance_name=INST))
    assert err.ecode == ECODE_STATE


def test_a_full_reboot_needs_the_memory_the_guest_lacks_now(
    ctx: Context, fake_ops: FakeNodeOps, config: ConfigStore
) -> None:
    """A guest started with less memory than configured (startup -B) needs the rest
    free before a full reboot stops it; with it, the reboot runs."""
    fake_ops.add_domain(N1, INST, memory=64)  # 128 MiB configured
    fake_ops.node(N1).facts.memory_free = 32
    err = prereq_error(ctx, OpInstanceReboot(instance_name=INST, reboot_type="full"))
    assert err.ecode == ECODE_NORES
    assert "needed 64 MiB beyond the 64 MiB it runs with, available 32 MiB" in err.msg
    assert fake_ops.node(N1).domains[INST].state == constants.DOMSTATE_RUNNING
    assert not fake_ops.calls_to("shutdown_instance")
    fake_ops.node(N1).facts.memory_free = 64
    run(ctx, OpInstanceReboot(instance_name=INST, reboot_type="full"))
    assert [c.args[1] for c in fake_ops.calls_to("reboot_instance", N1)] == ["full"]


def test_a_dry_run_of_a_removal_checks_and_changes_nothing(
    ctx: Context, running: FakeNodeOps, config: ConfigStore
) -> None:
    serial = config.read().serial
    result, _ = run(ctx, OpInstanceRemove(instance_name=INST, dry_run=True))
    assert result is None and config.read().serial == serial
    assert running.node(N1).domains[INST].state == constants.DOMSTATE_RUNNING
    assert not running.calls_to("shutdown_instance") and not running.calls_to("remove_disks")
    with config.update() as data:
        data.nodes[N1].offline = True
    err = prereq_error(ctx, OpInstanceRemove(instance_name=INST, dry_run=True))
    assert err.ecode == ECODE_STATE and "use ignore_failures" in err.msg


def test_unknown_instance(ctx: Context) -> None:
    err = prereq_error(ctx, OpInstanceStartup(instance_name="ghost"))
    assert err.ecode == ECODE_NOENT and "Instance 'ghost' not known" in str(err)


def test_reboot_running_and_stopped(ctx: Context, running: FakeNodeOps) -> None:
    run(ctx, OpInstanceReboot(instance_name=INST, reboot_type="soft"))
    assert running.calls_to("reboot_instance")[0].args[1] == "soft"
    running.node(N1).domains[INST].state = constants.DOMSTATE_SHUTOFF
    _, lines = run(ctx, OpInstanceReboot(instance_name=INST))
    assert any("was not running" in line for line in lines)
    assert running.node(N1).domains[INST].state == constants.DOMSTATE_RUNNING


def test_remove(ctx: Context, running: FakeNodeOps, config: ConfigStore) -> None:
    inst = config.get_instance(INST)
    assert inst is not None
    running.node(N1).files[disk_path(config.get_cluster(), inst, 0)] = 1024
    run(ctx, OpInstanceRemove(instance_name=INST))
    assert config.get_instance(INST) is None
    assert INST not in running.node(N1).domains and running.node(N1).files == {}
    # no lock file is left of it (nor of a creation that failed); the others' stay
    prereq_error(ctx, create_op(beparams={"memory": "64G"}))
    run(ctx, OpInstanceShutdown(instance_name="inst2.example.com"))
    instance_locks = os.listdir(os.path.join(paths.locks_dir(ctx.data_dir), "instance"))
    assert sorted(f for f in instance_locks if f.endswith(".lock")) == ["inst2.example.com.lock"]


def test_remove_failure_keeps_config_unless_ignored(
    ctx: Context, running: FakeNodeOps, config: ConfigStore
) -> None:
    running.fail("remove_disks", N1, "disk busy")
    with pytest.raises(OpExecError, match="disk busy"):
        run(ctx, OpInstanceRemove(instance_name=INST))
    # kept, and marked down: its guest was shut down and undefined
    assert config.get_instance(INST).admin_state == constants.ADMINST_DOWN  # type: ignore[union-attr]
    assert INST not in running.node(N1).domains
    _, lines = run(ctx, OpInstanceRemove(instance_name=INST, ignore_failures=True))
    assert any("WARNING" in line and "disk busy" in line for line in lines)
    assert config.get_instance(INST) is None


# ---------------------------------------------------------------- query


def test_a_disk_given_without_a_name_has_none_as_in_ganeti(
    ctx: Context, fake_ops: FakeNodeOps, config: ConfigStore
) -> None:
    """No name is made up for it: its hook keys, queries and export say so as Ganeti's
    do for a nameless disk, and another disk may be named "disk0"."""
    run(ctx, create_op(start=False, disks=[{"size": 64}, {"size": 64, "name": "disk0"}]))
    inst = config.get_instance(NEW)
    assert inst is not None and [d.name for d in inst.disks] == ["", "disk0"]
    cluster = config.get_cluster()
    assert sorted(fake_ops.node(N2).files) == [disk_path(cluster, inst, i) for i in (0, 1)]
    for phase, prefix in (("pre", "GANETI_"), ("post", "GANETI_POST_")):
        env = _hook_env(fake_ops, "OP_INSTANCE_CREATE", phase)
        assert f"{prefix}INSTANCE_DISK0_NAME" not in env
        assert env[f"{prefix}INSTANCE_DISK0_UUID"] == inst.disks[0].uuid
        assert env[f"{prefix}INSTANCE_DISK1_NAME"] == "disk0"
    data, _ = run(ctx, OpInstanceQueryData(instances=[NEW], static=True))
    assert [d["name"] for d in data[NEW]["disks"]] == [None, "disk0"]
    ini = exportinfo.build_config(inst, N2, {}, {})
    assert (ini["instance"]["disk0_name"], ini["instance"]["disk1_name"]) == ("None", "disk0")
    assert [d.name for d in exportinfo.describe(ini).disks] == ["", "disk0"]


def test_the_name_none_means_no_name_as_in_ganeti(ctx: Context, config: ConfigStore) -> None:
    """Ganeti's "none" (any case) for a disk's or NIC's name: nameless, never a duplicate."""
    disks = [{"size": 64, "name": "none"}, {"size": 64, "name": "None"}]
    nics = [{"name": "NONE"}, {"name": "none"}, {"name": "none"}]
    run(ctx, create_op(start=False, disks=disks, nics=nics))
    inst = config.get_instance(NEW)
    assert inst is not None
    assert [d.name for d in inst.disks] == ["", ""]
    assert [n.name for n in inst.nics] == ["", "", ""]


def test_query_live_status(ctx: Context, fake_ops: FakeNodeOps, config: ConfigStore) -> None:
    fake_ops.add_domain(N1, INST)
    fake_ops.add_domain(N2, "inst2.example.com")
    rows, _ = run(ctx, OpInstanceQuery())
    by_name = {r["name"]: r for r in rows}
    assert by_name[INST]["status"] == constants.INSTST_RUNNING
    assert by_name[INST]["oper_state"] is True
    assert by_name["inst2.example.com"]["status"] == constants.INSTST_WRONGNODE
    assert by_name[INST]["disk_details"][0]["path"].endswith(f"/{INST}/disk0.img")
    # destroyed behind ganeti_lv's back
    fake_ops.remove_domain(N1, INST)
    rows, _ = run(ctx, OpInstanceQuery(names=["inst1"]))
    assert [r["status"] for r in rows] == [constants.INSTST_ERRORDOWN]
    assert rows[0]["oper_state"] is False
    fake_ops.set_unreachable(N1)
    rows, _ = run(ctx, OpInstanceQuery(names=[INST]))
    assert rows[0]["status"] == constants.INSTST_NODEDOWN
    assert rows[0]["oper_state"] is None  # unknown, not "down"


def test_query_row_says_why_the_primarys_live_facts_are_missing(
    ctx: Context, fake_ops: FakeNodeOps, config: ConfigStore
) -> None:
    """Ganeti's result statuses of oper_ram and co: offline, no data, or answered."""
    fake_ops.add_domain(N1, INST)
    rows, _ = run(ctx, OpInstanceQuery(names=[INST, "inst2.example.com"]))
    # answered: inst2 does not run, its oper_ram does not apply
    assert [r["live"] for r in rows] == [None, None]
    assert rows[0]["oper_ram"] is not None and rows[1]["oper_ram"] is None
    fake_ops.set_unreachable(N1)
    rows, _ = run(ctx, OpInstanceQuery(names=[INST]))
    assert rows[0]["live"] == constants.LIVE_NODATA and rows[0]["oper_ram"] is None
    with config.update() as data:
        data.nodes[N1].offline = True
    rows, _ = run(ctx, OpInstanceQuery(names=[INST]))
    assert rows[0]["live"] == constants.LIVE_OFFLINE
    assert rows[0]["status"] == constants.INSTST_NODEOFFLINE


class _ConsoleLogs(FakeNodeOps):
    """Node operations that know where a node keeps console logs."""

    def console_log_path(self, instance_name: str) -> str:
        return f"/var/log/consoles/{instance_name}.log"


def test_query_console_log_from_the_domain_else_from_the_node_operations(config) -> None:
    ops = _ConsoleLogs()
    ctx = Context.from_data_dir(config.data_dir, node_ops=ops)
    ops.add_domain(N1, INST, console_log="/srv/logs/inst1.log")
    rows, _ = run(ctx, OpInstanceQuery())
    logs = {r["name"]: r["console_log"] for r in rows}
    assert logs == {
        INST: "/srv/logs/inst1.log",  # what the domain says
        "inst2.example.com": "/var/log/consoles/inst2.example.com.log",  # not defined
    }
    plain = Context.from_data_dir(config.data_dir, node_ops=FakeNodeOps())
    rows, _ = run(plain, OpInstanceQuery(names=["inst2"]))
    assert rows[0]["console_log"] is None  # nobody knows


def test_create_rechecks_name_under_config_lock(
    ctx: Context, fake_ops: FakeNodeOps, config: ConfigStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A same-named instance recorded meanwhile (by hand) makes the create roll back."""
    original = fake_ops.start_instance

    def start_and_race(node: Any, cluster: Any, instance: Any) -> None:
        original(node, cluster, instance)
        other = instance.copy()
        other.primary_node = N3
        config.add_instance(other)

    monkeypatch.setattr(fake_ops, "start_instance", start_and_race)
    with pytest.raises(OpExecError) as info:
        run(ctx, create_op())
    assert info.value.ecode == ECODE_EXISTS
    inst = config.get_instance(NEW)
    assert inst is not None and inst.primary_node == N3  # the other one is untouched
    assert fake_ops.node(N2).files == {} and NEW not in fake_ops.node(N2).domains


# ---------------------------------------------------------------- vCPUs against the node


@pytest.mark.parametrize("start", [True, False])
def test_create_with_more_vcpus_than_the_node_has_cpus_is_refused_up_front(
    ctx: Context, fake_ops: FakeNodeOps, config: ConfigStore, start: bool
) -> None:
    serial = config.read().serial
    err = prereq_error(ctx, create_op(beparams={"vcpus": "999"}, start=start))
    assert err.ecode == ECODE_NORES
    assert f"Node {N2} has 2 physical CPUs, but instance {NEW} needs 999" in str(err)
    assert config.read().serial == serial and config.get_instance(NEW) is None
    assert not fake_ops.calls_to("create_disks") and not fake_ops.calls_to("start_instance")


def test_startup_and_reboot_refuse_more_vcpus_than_the_node_has(
    ctx: Context, fake_ops: FakeNodeOps, config: ConfigStore
) -> None:
    with config.update() as data:
        data.instances[INST].admin_state = constants.ADMINST_DOWN
        data.instances[INST].beparams["vcpus"] = 999
    for op in (OpInstanceStartup(instance_name=INST), OpInstanceReboot(instance_name=INST)):
        err = prereq_error(ctx, op)
        assert err.ecode == ECODE_NORES and "999" in str(err) and "2 physical CPUs" in str(err)
    assert not fake_ops.calls_to("start_instance")
    inst = config.get_instance(INST)
    assert inst is not None and inst.admin_state == constants.ADMINST_DOWN


# ---------------------------------------------------------------- sizes and disk space


def test_sizes_that_are_not_whole_mib_are_rounded_up_and_the_job_log_says_so(
    ctx: Context, config: ConfigStore
) -> None:
    op = create_op(disks=[{"size": "0.5M"}, {"size": "1.25G"}], beparams={"memory": "100.5M"})
    _, lines = run(ctx, op)
    inst = config.get_instance(NEW)
    assert inst is not None
    assert [d.size for d in inst.disks] == [1, 1280]
    assert inst.beparams["maxmem"] == 101
    assert " - INFO: size of disk 0 0.5M is not a whole number of MiB: rounded up to 1 MiB" in lines
    assert any(
        "'memory' 100.5M is not a whole number of MiB: rounded up to 101" in x for x in lines
    )
    assert not any("disk 1" in line for line in lines)  # 1.25G is 1280 MiB exactly


def test_create_refuses_disks_larger_than_the_free_space_on_the_node(
    ctx: Context, fake_ops: FakeNodeOps, config: ConfigStore
) -> None:
    fake_ops.free_bytes[N2] = 10 * 1024 * 1024 * 1024
    serial = config.read().serial
    err = prereq_error(ctx, create_op(disks=[{"size": "1T"}, {"size": 1024}]))
    assert err.ecode == ECODE_NORES
    directory = fake_ops.calls_to("free_space", N2)[0].args[0]
    assert directory.endswith(f"/{NEW}")
    assert str(err) == (
        f"Not enough space for the disks of instance {NEW} on node {N2} in {directory}:"
        " 1049600 MiB needed (1048576 MiB + 1024 MiB), 10240 MiB free"
    )
    assert config.read().serial == serial and not fake_ops.calls_to("create_disks")
    fake_ops.free_bytes[N2] = 2048 * 1024 * 1024
    run(ctx, create_op(disks=[{"size": "2G"}]))  # exactly fits
    assert config.get_instance(NEW) is not None
