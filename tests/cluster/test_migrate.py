"""Live migration on the session's cluster: one small guest running its memory dirtier.

The guest writes "tick N" to its console every second; after the move the
tick numbers keep increasing without a new boot (no GUEST-READY on the
target), exactly one node runs the domain and the configuration names it.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from support.clusterfixture import session_guest
from support.timeouts import scaled

from ganeti_lv import constants, objects
from ganeti_lv.client import Client
from ganeti_lv.config import ConfigStore
from ganeti_lv.devcluster.guest import kernel_args, kernel_faults
from ganeti_lv.errors import OpPrereqError
from ganeti_lv.hypervisor.libvirt import LibvirtNodeOps
from ganeti_lv.hypervisor.libvirt.domxml import console_log_path
from ganeti_lv.node.transport import node_call
from ganeti_lv.opcodes import OpInstanceMigrate, OpInstanceShutdown

pytestmark = pytest.mark.cluster

TICK_RE = re.compile(r"tick (\d+)")


@pytest.fixture(scope="module")
def env(devcluster: Any) -> Iterator[tuple[ConfigStore, LibvirtNodeOps, Client]]:
    """Config, node operations and a client on the session's cluster."""
    data_dir = devcluster.data_dir
    config = ConfigStore(data_dir)
    ops = LibvirtNodeOps(data_dir)
    client = Client(data_dir=data_dir, node_ops=ops)
    try:
        yield config, ops, client
    finally:
        ops.close()


def _console(ops: LibvirtNodeOps, node: objects.Node, name: str) -> str:
    res = ops.run_command(node, ["cat", console_log_path(name)])
    return res.stdout.replace("\r", "") if res.exit_status == 0 else ""


def _ticks(text: str) -> list[int]:
    return [int(m.group(1)) for m in map(TICK_RE.search, text.splitlines()) if m]


def _wait_ticks(ops: LibvirtNodeOps, node: objects.Node, name: str, above: int) -> int:
    deadline = time.monotonic() + scaled(120)
    while time.monotonic() < deadline:
        ticks = _ticks(_console(ops, node, name))
        if ticks and ticks[-1] > above:
            return ticks[-1]
        time.sleep(0.5)  # polling a remote console file: no event to wait on
    raise AssertionError(f"no tick above {above} from {name}")


@contextlib.contextmanager
def _file_instance(
    env: Any, name: str, mac: str, dirtymb: int, random_mib: int = 0
) -> Iterator[objects.Instance]:
    """A 128 MiB file-template instance with a 64 MiB disk, running on the first node.

    ``dirtymb``: its memory dirtier (0: idle); ``random_mib``: MiB of random
    data written into its disk before it starts (a disk copy has that to send).
    """
    config, ops, _ = env
    kernel, initrd = session_guest()
    nodes = sorted(config.node_names())
    cluster = config.get_cluster()
    inst = objects.Instance(
        name=name,
        primary_node=nodes[0],
        disk_template=constants.DT_FILE,
        disks=[objects.Disk(size=64)],
        nics=[objects.Nic(mac=mac, link=cluster.default_bridge)],
        beparams={"maxmem": 128, "minmem": 128, "vcpus": 1},
        hvparams={
            "kernel_path": kernel,
            "initrd_path": initrd,
            "kernel_args": kernel_args(name, patmb=4, dirtymb=dirtymb),
        },
        admin_state=constants.ADMINST_UP,
    )
    node0 = config.get_node(nodes[0])
    assert node0 is not None
    ops.create_disks(node0, cluster, inst)
    if random_mib:
        path = objects.disk_path(cluster, inst, 0)
        argv = ["dd", "if=/dev/urandom", f"of={path}", "bs=1M", f"count={random_mib}"]
        assert ops.run_command(node0, [*argv, "conv=notrunc"]).exit_status == 0
    ops.start_instance(node0, cluster, inst)
    config.add_instance(inst)
    try:
        yield inst
    finally:
        current = config.get_instance(name)
        config.remove_instance(name)
        for node_name in nodes:
            node = config.get_node(node_name)
            assert node is not None
            node_call(ops.undefine_instance, node, name)
            node_call(ops.remove_disks, node, cluster, current or inst)
            node_call(ops.run_command, node, ["rm", "-f", console_log_path(name)])


@pytest.fixture(scope="module")
def running_file_instance(env: Any) -> Iterator[objects.Instance]:
    """A 128 MiB file-template instance with a 32 MiB dirtier on the first node (shared).

    The tests run in file order; each leaves it running on the first node.
    """
    with _file_instance(env, "migtest1", "52:54:00:4c:57:01", dirtymb=32) as inst:
        yield inst


def _running_nodes(config: ConfigStore, ops: LibvirtNodeOps, name: str) -> list[str]:
    out = []
    for node_name in sorted(config.node_names()):
        node = config.get_node(node_name)
        assert node is not None
        info = ops.instance_info(node, name)
        if info is not None and info.state == constants.DOMSTATE_RUNNING:
            out.append(node_name)
    return out


def test_live_migration_of_dirtier_file_instance_and_back(
    env: Any, running_file_instance: objects.Instance
) -> None:
    config, ops, client = env
    name = running_file_instance.name
    src_name = running_file_instance.primary_node
    dst_name = sorted(config.node_names())[1]
    src, dst = config.get_node(src_name), config.get_node(dst_name)
    assert src is not None and dst is not None
    before = _wait_ticks(ops, src, name, 2)

    lines: list[str] = []
    client.submit(
        OpInstanceMigrate(instance_name=name, target_node=dst_name), feedback_fn=lines.append
    )
    assert config.get_instance(name).primary_node == dst_name  # type: ignore[union-attr]
    assert _running_nodes(config, ops, name) == [dst_name]
    # the console file is node-local: the target's shows ticks continuing, no new boot
    after = _wait_ticks(ops, dst, name, before)
    assert after > before
    assert "GUEST-READY" not in _console(ops, dst, name)
    assert not kernel_faults(_console(ops, dst, name))
    summary = [line for line in lines if line.startswith("migration completed")]
    assert summary and re.search(r"downtime \d+ ms", summary[0]), lines
    assert re.search(r"total time [0-9.]+ s", summary[0])
    # the source's images are gone after a copy-storage migration
    path = objects.disk_path(config.get_cluster(), running_file_instance, 0)
    assert ops.paths_exist(src, [path]) == {path: False}

    # and back, non-live
    mark = len(_console(ops, src, name))
    client.submit(OpInstanceMigrate(instance_name=name, target_node=src_name, mode="non-live"))
    assert config.get_instance(name).primary_node == src_name  # type: ignore[union-attr]
    assert _running_nodes(config, ops, name) == [src_name]
    _wait_ticks(ops, src, name, after)
    assert not kernel_faults(_console(ops, src, name)[mark:])


def test_bad_input_changes_nothing(env: Any, running_file_instance: objects.Instance) -> None:
    config, ops, client = env
    name = running_file_instance.name
    serial = config.read().serial
    with pytest.raises(OpPrereqError) as err:
        client.submit(
            OpInstanceMigrate(instance_name=name, target_node=running_file_instance.primary_node)
        )
    assert err.value.ecode == "wrong_state"
    with pytest.raises(OpPrereqError) as err:
        client.submit(OpInstanceMigrate(instance_name="nosuch"))
    assert err.value.ecode == "unknown_entity"
    assert config.read().serial == serial
    assert _running_nodes(config, ops, name) == [running_file_instance.primary_node]


def test_a_slow_disk_copy_and_the_memory_after_it_are_steady_progress(
    env: Any, running_file_instance: objects.Instance
) -> None:
    """A copy-storage migration's memory pass is not taken for stagnation.

    libvirt copies the disks first, then the memory, whose first pass starts
    far above what the disk copy had left: at 16 MiB/s both take seconds,
    well past the 1 s without progress the policy is given here.
    """
    config, ops, client = env
    nodes = sorted(config.node_names())
    with _file_instance(env, "migtest2", "52:54:00:4c:57:02", dirtymb=0, random_mib=48) as inst:
        _wait_ticks(ops, config.get_node(nodes[0]), inst.name, 1)  # type: ignore[arg-type]
        lines: list[str] = []
        op = OpInstanceMigrate(
            instance_name=inst.name,
            target_node=nodes[1],
            migration_bandwidth=16,
            progress_timeout=1.0,
        )
        client.submit(op, feedback_fn=lines.append)
        assert _running_nodes(config, ops, inst.name) == [nodes[1]]
        assert not [line for line in lines if "no progress" in line], lines
        summary = [line for line in lines if line.startswith("migration completed")]
        disk = re.search(r"([0-9.]+) MiB disk", summary[0])
        assert disk and float(disk.group(1)) >= 48, summary  # the disk copy took seconds


def test_migrated_guest_keeps_job_stats_and_still_shuts_down_cleanly(
    env: Any, running_file_instance: objects.Instance, devcluster: Any
) -> None:
    """Runs last: migrated there and back, the guest still obeys the ACPI power button."""
    config, ops, client = env
    name = running_file_instance.name
    home = running_file_instance.primary_node
    away = sorted(config.node_names())[1]
    last = _ticks(_console(ops, config.get_node(home), name))  # type: ignore[arg-type]
    tick = last[-1] if last else 0
    for target in (away, home):
        where = config.get_node(target)
        assert where is not None
        mark = len(_console(ops, where, name))
        client.submit(OpInstanceMigrate(instance_name=name, target_node=target))
        # the completed job's statistics are kept for operators after ganeti_lv read them
        info = devcluster.virsh(target, "domjobinfo", "--completed", name)
        assert re.search(r"Time elapsed:\s+\d+", info), info
        # the guest survived: its ticks go on there and its kernel reported nothing
        tick = _wait_ticks(ops, where, name, tick)
        assert not kernel_faults(_console(ops, where, name)[mark:])
    node = config.get_node(home)
    assert node is not None
    start = time.monotonic()
    client.submit(OpInstanceShutdown(instance_name=name, timeout=60))
    took = time.monotonic() - start
    assert "GUEST: POWEROFF" in _console(ops, node, name)
    assert took < 60, took  # not the forced stop at the timeout
    assert _running_nodes(config, ops, name) == []
