"""LUBackupExport on the session's cluster: live and shutdown exports, import, faults.

One small guest (128 MiB, 16 MiB memory dirtier) with a 128 MiB disk: the
guest writes a known pattern to its first MiBs and prints its sha256, and
writes "tick N" every second into the sector at 64 MiB. An exported copy
therefore proves its consistency (pattern checksum) and the moment of its
snapshot (the tick in the copy).
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from gnt_helpers import process_argvs
from support.clusterfixture import session_guest
from support.timeouts import scaled

from ganeti_lv import constants, exportinfo, objects
from ganeti_lv.cancel import Cancellation
from ganeti_lv.client import Client
from ganeti_lv.config import ConfigStore
from ganeti_lv.devcluster import netns
from ganeti_lv.devcluster.cluster import DevCluster
from ganeti_lv.devcluster.guest import PATTERN_RE, kernel_args
from ganeti_lv.errors import ECODE_NORES, OpExecError, OpPrereqError
from ganeti_lv.hypervisor.export_types import OVERLAY_SUFFIX
from ganeti_lv.hypervisor.libvirt import LibvirtNodeOps
from ganeti_lv.hypervisor.libvirt.domxml import console_log_path
from ganeti_lv.node import diskcopy
from ganeti_lv.node.transport import node_call
from ganeti_lv.opcodes import OpBackupExport, OpInstanceCreate

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(600)]

NAME = "exptest1"
COPY = "exptest2"
PATMB = 8
MiB = 1024 * 1024
TICK_RE = re.compile(r"tick (\d+)")


@pytest.fixture
def env(devcluster: Any) -> Iterator[tuple[ConfigStore, LibvirtNodeOps, Client]]:
    config = ConfigStore(devcluster.data_dir)
    ops = LibvirtNodeOps(devcluster.data_dir)
    try:
        yield config, ops, Client(data_dir=devcluster.data_dir, node_ops=ops)
    finally:
        ops.close()


def _node(config: ConfigStore, name: str) -> objects.Node:
    node = config.get_node(name)
    assert node is not None
    return node


def _sh(ops: LibvirtNodeOps, node: objects.Node, script: str) -> str:
    res = ops.run_command(node, ["sh", "-c", script])
    assert res.exit_status == 0, res.output
    return res.stdout


def _console(ops: LibvirtNodeOps, node: objects.Node, name: str) -> str:
    res = ops.run_command(node, ["cat", console_log_path(name)])
    return res.stdout.replace("\r", "") if res.exit_status == 0 else ""


def _ticks(text: str) -> list[int]:
    return [int(m.group(1)) for m in map(TICK_RE.search, text.splitlines()) if m]


def _wait(ops, node, name, predicate, timeout=120.0) -> str:
    deadline = time.monotonic() + scaled(timeout)
    text = ""
    while time.monotonic() < deadline:
        text = _console(ops, node, name)
        if predicate(text):
            return text
        time.sleep(0.5)  # a remote console file: nothing to wait on
    raise AssertionError(f"console of {name} never matched:\n{text[-1500:]}")


def _assert_kept_running(console_before: str, console_after: str) -> None:
    """The guest neither powered off nor booted again, and its ticks ran on without a restart."""
    assert console_after.startswith(console_before)
    during = console_after[len(console_before) :]
    for sign in ("GUEST-READY", "GUEST: POWEROFF", "Linux version", "Run /init"):
        assert sign not in during, f"{sign!r} on the console during a live export:\n{during}"
    ticks = _ticks(console_before)[-1:] + _ticks(during)
    assert len(ticks) >= 3, during  # it kept ticking during and after the export
    assert ticks == list(range(ticks[0], ticks[0] + len(ticks))), ticks


def _last_tick(ops, node, name, above: int = -1) -> int:
    text = _wait(ops, node, name, lambda t: bool(_ticks(t)) and _ticks(t)[-1] > above)
    return _ticks(text)[-1]


def _make_instance(config, ops, name, node_name, seed, writepat=True, start=True):
    kernel, initrd = session_guest()
    cluster = config.get_cluster()
    inst = objects.Instance(
        name=name,
        primary_node=node_name,
        disk_template=constants.DT_FILE,
        disks=[objects.Disk(size=128)],
        beparams={"maxmem": 128, "minmem": 128, "vcpus": 1},
        hvparams={
            "kernel_path": kernel,
            "initrd_path": initrd,
            "kernel_args": kernel_args(seed, patmb=PATMB, dirtymb=16, writepat=writepat),
        },
        admin_state=constants.ADMINST_UP if start else constants.ADMINST_DOWN,
    )
    node = _node(config, node_name)
    ops.create_disks(node, cluster, inst)
    if start:
        ops.start_instance(node, cluster, inst)
    config.add_instance(inst)
    return inst


def _purge(config, ops, name):
    cluster = config.get_cluster()
    inst = config.get_instance(name) or objects.Instance(
        name=name, primary_node="", disk_template=constants.DT_FILE
    )
    if config.get_instance(name) is not None:
        config.remove_instance(name)
    for node_name in config.node_names():
        node = _node(config, node_name)
        node_call(ops.undefine_instance, node, name)
        node_call(ops.remove_disks, node, cluster, inst)
        node_call(ops.export_remove, node, cluster, name)
        node_call(ops.run_command, node, ["rm", "-f", console_log_path(name)])


@pytest.fixture
def instance(env: Any) -> Iterator[tuple[objects.Instance, str]]:
    """exptest1 running on the first node; yields (instance, its pattern sha256)."""
    config, ops, _ = env
    nodes = sorted(config.node_names())
    for name in (NAME, COPY):
        _purge(config, ops, name)
    inst = _make_instance(config, ops, NAME, nodes[0], seed=NAME)
    try:
        text = _wait(ops, _node(config, nodes[0]), NAME, lambda t: PATTERN_RE.search(t) is not None)
        match = PATTERN_RE.search(text)
        assert match is not None and int(match.group(2)) == PATMB
        yield inst, match.group(3)
    finally:
        for name in (NAME, COPY):
            _purge(config, ops, name)


def _export_file(config: ConfigStore, name: str = NAME) -> str:
    return f"{config.get_cluster().export_dir}/{name}/disk0.img"


def _pattern_sha(ops, node, path) -> str:
    return _sh(ops, node, f"head -c {PATMB * MiB} {path} | sha256sum").split()[0]


def _heartbeat(ops, node, path) -> int:
    out = _sh(ops, node, f"dd if={path} bs=512 skip={64 * 2048} count=1 2>/dev/null | tr -d '\\0'")
    match = TICK_RE.search(out)
    assert match, out
    return int(match.group(1))


def _chain_whole(config, ops, node_name) -> None:
    node = _node(config, node_name)
    info = ops.instance_info(node, NAME)
    inst = config.get_instance(NAME)
    assert inst is not None
    base = objects.disk_path(config.get_cluster(), inst, 0)
    if info is not None:
        assert info.overlays == [] and info.disk_paths == [base]
    leftovers = _sh(ops, node, f"ls {objects.disk_dir(config.get_cluster(), inst)}")
    assert OVERLAY_SUFFIX not in leftovers


def _exports(config, ops, node_name):
    node = _node(config, node_name)
    return ops.export_list(node, config.get_cluster())


def test_live_then_shutdown_export_then_import(env, instance) -> None:
    config, ops, client = env
    inst, pattern = instance
    nodes = sorted(config.node_names())
    n1, n2 = nodes[:2]
    # the second export goes to another node than the first: a third one, or
    # back to the primary on a 2-node cluster
    n3 = nodes[2] if len(nodes) > 2 else n1
    src = _node(config, n1)
    before = _last_tick(ops, src, NAME, 2)
    console_before = _console(ops, src, NAME)

    lines: list[str] = []
    result = client.submit(
        OpBackupExport(instance_name=NAME, target_node=n2, shutdown=False),
        feedback_fn=lines.append,
    )
    assert result == [True, [True]]  # JSON data, as through the daemon
    end = _last_tick(ops, src, NAME)
    later = _last_tick(ops, src, NAME, end)  # the guest keeps ticking, no reboot
    assert later > end >= before
    # one tick more: the export may take less than a tick's interval, and the
    # check below wants three consecutive ticks from before the export on
    _last_tick(ops, src, NAME, later)
    _assert_kept_running(console_before, _console(ops, src, NAME))
    assert "GUEST-READY" not in _console(ops, src, NAME).split(f"tick {before}\n", 1)[1]
    dst = _node(config, n2)
    path = _export_file(config)
    assert _pattern_sha(ops, dst, path) == pattern
    assert before <= _heartbeat(ops, dst, path) <= end
    allocated = int(_sh(ops, dst, f"stat -c %b {path}")) * 512
    assert allocated < 16 * MiB  # 128 MiB disk, 8 MiB pattern: sparse on the target
    _chain_whole(config, ops, n1)
    data = ops.export_read(dst, config.get_cluster(), f"{config.get_cluster().export_dir}/{NAME}")
    cfg = exportinfo.parse_config(data.config_text)
    assert cfg.sections() == ["export", "instance", "hypervisor", "backend", "os", "os_private"]
    assert cfg["export"]["source"] == src.uuid  # the node's identity, as Ganeti writes it
    assert cfg["instance"]["disk_count"] == "1"
    manifest = exportinfo.Manifest.from_json(data.manifest_text)
    checksum = shlex.join(diskcopy.helper_argv("checksum", path))
    assert manifest.disks[0].checksum == _sh(ops, dst, checksum).split()[0]
    assert manifest.disks[0].checksum_algorithm == "sha256-tree-4M"
    assert any("Export of exptest1 is in" in line for line in lines)

    # shutdown export (the default) with compression to another node: removes the first
    client.submit(OpBackupExport(instance_name=NAME, target_node=n3, compress="zstd"))
    assert [e.instance for e in _exports(config, ops, n2) if e.complete] == []
    assert [e.instance for e in _exports(config, ops, n3) if e.complete] == [NAME]
    assert config.get_instance(NAME).admin_state == constants.ADMINST_UP  # type: ignore[union-attr]
    assert ops.instance_info(src, NAME).state == constants.DOMSTATE_RUNNING  # type: ignore[union-attr]
    _chain_whole(config, ops, n1)
    assert _pattern_sha(ops, _node(config, n3), _export_file(config)) == pattern

    # import the export on node2 as a new instance that only reads its pattern
    node_call(ops.shutdown_instance, src, inst, 30)  # keep at most one guest of ours running
    kernel, initrd = session_guest()
    hv = f"kernel_args={kernel_args(NAME, patmb=PATMB, dirtymb=0, writepat=False)}"
    client.submit(
        OpInstanceCreate(
            instance_name=COPY,
            disk_template=constants.DT_FILE,
            pnode=n2,
            mode="import",
            src_node=n3,
            src_path=NAME,
            hvparams={
                "kernel_path": kernel,
                "initrd_path": initrd,
                "kernel_args": hv.split("=", 1)[1],
            },
        )
    )
    text = _wait(ops, dst, COPY, lambda t: PATTERN_RE.search(t) is not None)
    match = PATTERN_RE.search(text)
    assert match is not None and match.group(3) == pattern


def test_export_with_remove_instance(env, instance) -> None:
    config, ops, client = env
    n1, n2 = sorted(config.node_names())[:2]
    client.submit(OpBackupExport(instance_name=NAME, target_node=n2, remove_instance=True))
    assert config.get_instance(NAME) is None
    assert ops.instance_info(_node(config, n1), NAME) is None
    assert [e.instance for e in _exports(config, ops, n2) if e.complete] == [NAME]


def _find_copy_ssh(cluster: DevCluster, address: str) -> int | None:
    """PID of the node-to-node ssh carrying a copy to ``address``: a process of the
    cluster's own nodes (their network namespaces), never another of the machine."""
    ours = {pid for n in cluster.layout().nodes for pid in netns.pids_in_netns(n.netns)}
    for pid, argv in process_argvs():
        to_target = argv and argv[0] == b"ssh" and any(address.encode() in a for a in argv)
        if pid in ours and to_target and any(b"recv" in a for a in argv):
            return pid
    return None


@pytest.mark.faults
def test_faults_keep_instance_chain_and_previous_export(env, instance, devcluster) -> None:
    config, ops, client = env
    _inst, pattern = instance
    n1, n2, n3 = sorted(config.node_names())
    src, dst = _node(config, n1), _node(config, n2)
    client.submit(OpBackupExport(instance_name=NAME, target_node=n2, shutdown=False))
    previous = {"sum": _sh(ops, dst, f"sha256sum {_export_file(config)}")}

    def still_fine() -> None:
        assert ops.instance_info(src, NAME).state == constants.DOMSTATE_RUNNING  # type: ignore[union-attr]
        assert config.get_instance(NAME).admin_state == constants.ADMINST_UP  # type: ignore[union-attr]
        assert _sh(ops, dst, f"sha256sum {_export_file(config)}") == previous["sum"]
        assert [e.instance for e in _exports(config, ops, n2) if e.complete] == [NAME]

    # 1. the node-to-node SSH connection dies mid-copy
    errors: list[BaseException] = []
    cancel = Cancellation()

    def export() -> None:
        try:
            client.submit(
                OpBackupExport(
                    instance_name=NAME, target_node=n2, shutdown=False, bandwidth_limit=1
                ),
                cancel=cancel,
            )
        except BaseException as err:  # noqa: BLE001
            errors.append(err)

    thread = threading.Thread(target=export)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        pid = None
        while pid is None and time.monotonic() < deadline:
            pid = _find_copy_ssh(devcluster, dst.address)
            time.sleep(0.2)  # waiting for a process to appear: no event to await
        assert pid is not None
        time.sleep(1.5)  # let some data flow first
        os.kill(pid, signal.SIGKILL)
        thread.join(60)
    finally:
        if thread.is_alive():  # the test failed: the export stops, not runs on after it
            cancel.request("the test failed")
            thread.join(120)
    assert errors and isinstance(errors[0], OpExecError)
    still_fine()
    _chain_whole(config, ops, n1)
    assert not [e for e in _exports(config, ops, n2) if e.stale]

    # 2. the exporting process is killed (SIGKILL) mid-copy, then recovered
    code = (
        "from ganeti_lv.client import Client\n"
        "from ganeti_lv.opcodes import OpBackupExport\n"
        f"Client(data_dir={devcluster.data_dir!r}).submit(OpBackupExport("
        f"instance_name={NAME!r}, target_node={n2!r}, shutdown=False, bandwidth_limit=1))\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.monotonic() + 60
        while _find_copy_ssh(devcluster, dst.address) is None and time.monotonic() < deadline:
            time.sleep(0.2)
        # killed mid-copy, not before it
        assert _find_copy_ssh(devcluster, dst.address) is not None
        time.sleep(1.5)
    finally:
        proc.kill()  # also when the copy never showed: no export left running on
        proc.wait()
    info = ops.instance_info(src, NAME)
    assert info is not None and info.overlays  # the guest now writes into the overlay
    still_fine()
    deadline = time.monotonic() + 30
    while not [e for e in _exports(config, ops, n2) if e.stale] and time.monotonic() < deadline:
        time.sleep(0.2)  # the receiver notices the dead stream
    assert [e for e in _exports(config, ops, n2) if e.stale]  # left incomplete, never complete
    # the next operation on the instance merges the overlay back
    client.submit(OpBackupExport(instance_name=NAME, target_node=n2, shutdown=False))
    _chain_whole(config, ops, n1)
    assert _pattern_sha(ops, dst, _export_file(config)) == pattern
    assert not [e for e in _exports(config, ops, n2) if e.stale]
    previous["sum"] = _sh(ops, dst, f"sha256sum {_export_file(config)}")

    # 3. the target's export dir is too small
    export_dir = config.get_cluster().export_dir
    devcluster.node_exec(n3, ["mkdir", "-p", export_dir])
    devcluster.node_exec(n3, ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", export_dir])
    try:
        with pytest.raises(OpPrereqError) as err:
            client.submit(OpBackupExport(instance_name=NAME, target_node=n3, shutdown=False))
        assert err.value.ecode == ECODE_NORES
    finally:
        devcluster.node_exec(n3, ["umount", export_dir])
    still_fine()
    _chain_whole(config, ops, n1)


SENT_RE = re.compile(r"disk/0: \d+ MiB, (\d+) bytes sent \((\d+) allocated\)")


def _sent(lines: list[str]) -> tuple[int, int]:
    for line in lines:
        match = SENT_RE.search(line)
        if match:
            return int(match.group(1)), int(match.group(2))
    raise AssertionError(f"no copy summary in {lines}")


@pytest.fixture
def stopped(env: Any) -> Iterator[objects.Instance]:
    """exptest1 defined but stopped (admin down) with a 4 GiB sparse disk on node1."""
    config, ops, _ = env
    _purge(config, ops, NAME)
    n1 = sorted(config.node_names())[0]
    inst = _make_instance(config, ops, NAME, n1, seed=NAME, start=False)
    inst.disks[0].size = 4096
    config.update_instance(inst)
    path = objects.disk_path(config.get_cluster(), inst, 0)
    _sh(ops, _node(config, n1), f"truncate -s 4G {path}")
    try:
        yield inst
    finally:
        _purge(config, ops, NAME)


def test_stopped_sparse_disk_export(env, stopped) -> None:
    config, ops, client = env
    n1, n2 = sorted(config.node_names())[:2]
    src = _node(config, n1)
    path = objects.disk_path(config.get_cluster(), stopped, 0)
    for offset in (0, 1000, 3000):  # 3 x 2 MiB of data in 4 GiB
        _sh(ops, src, f"head -c 2M /dev/urandom | dd of={path} bs=1M seek={offset} conv=notrunc")
    lines: list[str] = []
    client.submit(OpBackupExport(instance_name=NAME, target_node=n2), feedback_fn=lines.append)
    sent, allocated = _sent(lines)
    assert sent <= allocated * 1.05 and sent >= 6 * MiB
    # progress and ETA count the disk's data, not its 4 GiB: no line says gigabytes
    progress = [line for line in lines if line.startswith("disk/0 sent ")]
    assert progress and progress[-1].endswith("100%"), lines
    assert not any(re.match(r"disk/0 sent [0-9.]+[GT],", line) for line in progress), progress
    dst = _node(config, n2)
    out = _export_file(config)
    assert int(_sh(ops, dst, f"stat -c %s {out}")) == 4096 * MiB
    assert int(_sh(ops, dst, f"stat -c %b {out}")) * 512 < 12 * MiB
    assert _sh(ops, dst, f"sha256sum < {out}") == _sh(ops, src, f"sha256sum < {path}")
    info = ops.instance_info(src, NAME)
    assert info is None or info.state != constants.DOMSTATE_RUNNING
    assert config.get_instance(NAME).admin_state == constants.ADMINST_DOWN  # type: ignore[union-attr]


def test_zero_free_space_makes_a_smaller_export(env, stopped) -> None:
    config, ops, client = env
    n1, n2 = sorted(config.node_names())[:2]
    src = _node(config, n1)
    path = objects.disk_path(config.get_cluster(), stopped, 0)
    _sh(
        ops,
        src,
        f"set -e; d=$(mktemp -d); head -c 24M /dev/urandom > $d/junk; echo keep > $d/keep;"
        f" truncate -s 64M {path}; mkfs.ext4 -q -F -d $d {path}; rm -rf $d;"
        f" debugfs -w -R 'rm /junk' {path} >/dev/null 2>&1",
    )
    lines: list[str] = []
    client.submit(OpBackupExport(instance_name=NAME, target_node=n2), feedback_fn=lines.append)
    plain, _ = _sent(lines)
    lines.clear()
    client.submit(
        OpBackupExport(instance_name=NAME, target_node=n2, zero_free_space=True),
        feedback_fn=lines.append,
    )
    zeroed, _ = _sent(lines)
    assert plain > 24 * MiB and zeroed < plain - 20 * MiB
    assert _sh(ops, src, f"debugfs -R 'cat /keep' {path} 2>/dev/null").strip() == "keep"
