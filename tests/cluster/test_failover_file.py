"""Failover of a stopped ``file`` instance on the local cluster moves its disk images.

No guest runs here: the image gets a known content over SSH, the instance
is failed over (and migrated with --allow-failover, which falls back to a
failover for a stopped instance), and the target node must hold an image
with the same checksum while the source holds none. Cluster verify names
images of the instance left on a node that is not its primary.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from gnt_helpers import Gnt, node
from migrate_helpers import make_instance, remove_instance, where_running

from ganeti_lv import constants, objects
from ganeti_lv.client import Client
from ganeti_lv.config import ConfigStore
from ganeti_lv.hypervisor.libvirt import LibvirtNodeOps
from ganeti_lv.node.transport import node_call
from ganeti_lv.opcodes import OpClusterVerify

pytestmark = pytest.mark.cluster

NAME = "migfo"


def _sha(ops: LibvirtNodeOps, where: objects.Node, path: str) -> str | None:
    res = ops.run_command(where, ["sh", "-c", f"[ -e {path} ] && sha256sum {path}"])
    return res.stdout.split()[0] if res.exit_status == 0 else None


@pytest.fixture
def stopped(devcluster: Any) -> Iterator[tuple[ConfigStore, LibvirtNodeOps, str]]:
    """A stopped file instance on the first node whose image holds a known pattern."""
    config = ConfigStore(devcluster.data_dir)
    ops = LibvirtNodeOps(devcluster.data_dir)
    first = sorted(config.node_names())[0]
    inst = make_instance(
        config, ops, NAME, constants.DT_FILE, first, "52:54:00:4c:57:31", start=False
    )
    path = objects.disk_path(config.get_cluster(), inst, 0)
    script = f"yes failover-pattern | head -c 6M | dd of={path} conv=notrunc status=none"
    ops.run_command(node(config, first), ["sh", "-c", script])
    try:
        yield config, ops, path
    finally:
        remove_instance(config, ops, NAME, constants.DT_FILE)
        ops.close()


def test_failover_of_stopped_file_instance_moves_its_disk(
    devcluster: Any, stopped: tuple[ConfigStore, LibvirtNodeOps, str]
) -> None:
    config, ops, path = stopped
    first, second, third = sorted(config.node_names())[:3]
    want = _sha(ops, node(config, first), path)
    assert want is not None
    gnt = Gnt(devcluster.data_dir)
    gnt.ok("instance", "failover", "-f", "-n", second, NAME)
    assert config.get_instance(NAME).primary_node == second  # type: ignore[union-attr]
    assert _sha(ops, node(config, second), path) == want
    assert _sha(ops, node(config, first), path) is None
    assert where_running(config, ops, NAME) == {}  # stopped: not started anywhere
    # a stopped instance is not migrated: without --allow-failover refused, with it moved
    code, _, err = gnt("instance", "migrate", "-f", "-n", third, NAME)
    assert code != 0 and "cannot migrate" in err
    gnt.ok("instance", "migrate", "-f", "--allow-failover", "-n", third, NAME)
    assert config.get_instance(NAME).primary_node == third  # type: ignore[union-attr]
    assert _sha(ops, node(config, third), path) == want
    assert _sha(ops, node(config, second), path) is None
    # images left on a node that is not the primary (an interrupted copy): verify names them
    stray = node(config, first)
    node_call(
        ops.run_command, stray, ["sh", "-c", f"mkdir -p {path.rsplit('/', 1)[0]} && touch {path}"]
    )
    try:
        problems = Client(data_dir=devcluster.data_dir, node_ops=ops).submit(OpClusterVerify())
        mine = [p for p in problems if NAME in p["message"]]
        assert [(p["code"], p["item"]) for p in mine] == [("ENODEORPHANFILE", first)], problems
        assert f"leftover images of instance {NAME} (primary node {third})" in mine[0]["message"]
        assert path in mine[0]["message"] and "--cleanup" in mine[0]["message"]
    finally:
        node_call(ops.run_command, stray, ["rm", "-rf", path.rsplit("/", 1)[0]])
