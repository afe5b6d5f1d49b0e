"""Lifecycle operations merge a snapshot overlay left by an interrupted export.

A live snapshot taken and never committed (what a killed export leaves) is
merged by ``instance shutdown``; an overlay file next to a stopped instance's
image is merged into the image by ``instance startup`` before it boots.
One small guest (128 MiB).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from gnt_helpers import (
    Gnt,
    cli_env_args,
    console,
    domain_state,
    node,
    purge_instance,
    wait_console,
)

from ganeti_lv import constants
from ganeti_lv.config import ConfigStore
from ganeti_lv.hypervisor.export_types import OVERLAY_SUFFIX, overlay_path
from ganeti_lv.hypervisor.libvirt import LibvirtNodeOps
from ganeti_lv.objects import disk_dir, disk_path

pytestmark = pytest.mark.cluster

NAME = "ovl1"
MARK_OFFSET = 80 * 1024 * 1024  # beyond the guest's pattern and heartbeat sectors


@pytest.fixture
def env(devcluster: Any) -> Iterator[tuple[Gnt, ConfigStore, LibvirtNodeOps, dict[str, Any]]]:
    config = ConfigStore(devcluster.data_dir)
    ops = LibvirtNodeOps(devcluster.data_dir)
    try:
        yield Gnt(devcluster.data_dir), config, ops, devcluster.info
    finally:
        purge_instance(ops, config, NAME, constants.DT_FILE)
        ops.close()


def overlay_files(ops: LibvirtNodeOps, where: Any, directory: str) -> list[str]:
    script = f'for f in {directory}/*{OVERLAY_SUFFIX}; do [ -e "$f" ] && echo "$f"; done; true'
    return ops.run_command(where, ["sh", "-c", script]).stdout.split()


def test_shutdown_and_startup_merge_leftover_overlays(env: Any) -> None:
    gnt, config, ops, info = env
    pname = sorted(config.node_names())[1]
    gnt.ok(
        "instance", "add", "-t", "file", "--disk", "0:size=96M", "-n", pname,
        *cli_env_args(info, NAME, patmb=4, dirtymb=0), NAME,
    )  # fmt: skip
    pnode = node(config, pname)
    wait_console(ops, pnode, NAME, lambda t: "GUEST-READY" in t)
    inst = config.get_instance(NAME)
    assert inst is not None
    cluster = config.get_cluster()
    base = disk_path(cluster, inst, 0)

    # a live snapshot that was never merged back: the guest now writes to the overlay
    ops.snapshot_disks(pnode, inst, freeze=False)
    blk = ops.run_command(pnode, ["virsh", "-q", "domblklist", NAME]).stdout
    assert overlay_path(base) in blk

    out = gnt.ok("instance", "shutdown", "--timeout", "60", NAME)
    assert f"Merged leftover export overlay {overlay_path(base)}" in out
    assert domain_state(ops, pnode, NAME) == constants.DOMSTATE_SHUTOFF
    blk = ops.run_command(pnode, ["virsh", "-q", "domblklist", NAME]).stdout
    assert base in blk and OVERLAY_SUFFIX not in blk
    assert overlay_files(ops, pnode, disk_dir(cluster, inst)) == []

    # an overlay file holding data, next to the stopped instance's image
    overlay = overlay_path(base)
    ops.run_command(
        pnode, ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", base, overlay]
    )
    ops.run_command(
        pnode, ["qemu-io", "-f", "qcow2", "-c", f"write -P 0xab {MARK_OFFSET} 4096", overlay]
    )

    booted = console(ops, pnode, NAME).count("GUEST-READY")
    out = gnt.ok("instance", "startup", NAME)
    assert f"Merged leftover export overlay {overlay}" in out
    assert overlay_files(ops, pnode, disk_dir(cluster, inst)) == []
    read_mark = f"dd if={base} bs=4096 skip={MARK_OFFSET // 4096} count=1 2>/dev/null"
    probe = ops.run_command(pnode, ["sh", "-c", f"{read_mark} | od -An -v -tx1"])
    assert set(probe.stdout.split()) == {"ab"}  # the overlay's data is in the image now
    wait_console(ops, pnode, NAME, lambda t: t.count("GUEST-READY") > booted)
    assert gnt.status(NAME) == constants.INSTST_RUNNING
