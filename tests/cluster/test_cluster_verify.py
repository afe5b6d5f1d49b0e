"""``gnt-lv cluster verify`` on the real cluster: what libvirt runs vs the configuration.

Problems already present before a test (left by other tests) are ignored:
each test compares the problems after its change with those before it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from gnt_helpers import Gnt, cli_env_args, node, purge_instance

from ganeti_lv import constants
from ganeti_lv.client import Client
from ganeti_lv.config import ConfigStore
from ganeti_lv.devcluster.guest import kernel_args
from ganeti_lv.hypervisor.libvirt import LibvirtNodeOps
from ganeti_lv.node.transport import node_call
from ganeti_lv.objects import Disk, Instance, disk_path
from ganeti_lv.opcodes import OpClusterVerify

pytestmark = pytest.mark.cluster

Problem = tuple[str, str, str]


@pytest.fixture
def env(devcluster: Any) -> Iterator[tuple[Gnt, ConfigStore, LibvirtNodeOps, dict[str, Any]]]:
    """gnt-lv runner, configuration, node operations and the cluster description."""
    config = ConfigStore(devcluster.data_dir)
    ops = LibvirtNodeOps(devcluster.data_dir)
    try:
        yield Gnt(devcluster.data_dir), config, ops, devcluster.info
    finally:
        ops.close()


def problems(data_dir: str) -> set[Problem]:
    """The verify result as (code, item, message) triples."""
    with Client(data_dir=data_dir) as client:
        result = client.submit(OpClusterVerify())
    return {(p["code"], p["item"], p["message"]) for p in result}


def guest_instance(info: dict[str, Any], name: str, primary: str) -> Instance:
    """An idle test guest with one small shared disk (not in the configuration)."""
    guest = info["guest"]
    return Instance(
        name=name,
        primary_node=primary,
        disk_template=constants.DT_SHARED_FILE,
        disks=[Disk(size=8)],
        beparams={"maxmem": 128, "minmem": 128, "vcpus": 1},
        hvparams={
            "kernel_path": guest["kernel"],
            "initrd_path": guest["initrd"],
            "kernel_args": kernel_args(name, patmb=1, dirtymb=0, writepat=False),
        },
    )


def test_verify_finds_foreign_domain_and_orphan_images(env: Any) -> None:
    gnt, config, ops, info = env
    nodes = sorted(config.node_names())
    last = nodes[-1]  # the third node; the second (the rogue's too) on a 2-node cluster
    cluster = config.get_cluster()
    before = problems(gnt.data_dir)
    rogue = guest_instance(info, "vrogue", nodes[1])
    where = node(config, nodes[1])
    stray = f"{cluster.file_storage_dir}/vstray/disk0.img"
    try:
        ops.create_disks(where, cluster, rogue)
        ops.start_instance(where, cluster, rogue)
        ops.run_command(
            node(config, last),
            ["sh", "-c", f"mkdir -p {cluster.file_storage_dir}/vstray && truncate -s 1M {stray}"],
        )
        new = problems(gnt.data_dir) - before
        assert {(c, i) for c, i, _ in new} == {
            ("ENODEORPHANINSTANCE", nodes[1]),
            ("ECLUSTERORPHANFILE", cluster.name),
            ("ENODEORPHANFILE", last),
        }
        messages = " ".join(m for _, _, m in new)
        assert "domain 'vrogue' (running)" in messages
        assert disk_path(cluster, rogue, 0) in messages and stray in messages
        code, out, err = gnt("cluster", "verify")
        assert code == 1 and "ERROR: node" in out and "problem(s)" in err
    finally:
        purge_instance(ops, config, "vrogue", constants.DT_SHARED_FILE)
        node_call(
            ops.run_command,
            node(config, last),
            ["rm", "-rf", f"{cluster.file_storage_dir}/vstray"],
        )
    assert problems(gnt.data_dir) - before == set()


def test_verify_finds_instance_on_two_nodes_and_down(env: Any) -> None:
    gnt, config, ops, info = env
    nodes = sorted(config.node_names())
    name = "vdup"
    before = problems(gnt.data_dir)
    try:
        gnt.ok(
            "instance", "add", "-t", "file", "--disk", "0:size=8M", "-n", nodes[0],
            *cli_env_args(info, name, patmb=1, dirtymb=0, writepat=False), name,
        )  # fmt: skip
        inst = config.get_instance(name)
        assert inst is not None
        # the same instance started on a second node behind ganeti_lv's back (its own
        # copy of the disk: qemu's image locking forbids two writers of one file)
        second = node(config, nodes[1])
        ops.create_disks(second, config.get_cluster(), inst)
        ops.start_instance(second, config.get_cluster(), inst)
        new = {(c, i) for c, i, _ in problems(gnt.data_dir) - before}
        assert new == {
            ("EINSTANCEMULTIRUNNING", name),
            ("EINSTANCEWRONGNODE", name),
            ("ENODEORPHANFILE", nodes[1]),
        }
        # running on its primary, as Ganeti 3.0 says it; the second copy is verify's
        assert gnt.status(name) == constants.INSTST_RUNNING
        assert gnt("cluster", "verify")[0] == 1
        for node_name in nodes[:2]:
            ops.run_command(node(config, node_name), ["virsh", "destroy", name])
        new_down = problems(gnt.data_dir) - before
        assert {(c, i) for c, i, _ in new_down} == {
            ("EINSTANCEDOWN", name),
            ("EINSTANCESTALEDEF", name),
            ("ENODEORPHANFILE", nodes[1]),
        }
    finally:
        purge_instance(ops, config, name, constants.DT_FILE)
    assert problems(gnt.data_dir) - before == set()
