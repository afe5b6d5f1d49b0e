"""Exports across ganeti_lv and the real Ganeti 3.0 peer, both directions.

ganeti_lv -> Ganeti: a guest on the local cluster writes its pattern, ganeti_lv
exports it live, the export is copied into Ganeti's export directory on a peer
node (what ``rsync`` does between real nodes), real ``gnt-backup import``
creates a Ganeti instance that boots and reads the same pattern.

Ganeti -> ganeti_lv: a Ganeti instance (noop OS, raw sharedfile disk) writes
its pattern, ``gnt-backup export --long-sleep`` exports it, the export is
copied onto a local node and ``gnt-lv backup import --src-dir /abs/path``
creates an instance that boots and reads the same pattern. The same export,
given a non-raw OS and a dump that is not a disk image, or truncated, or with
a changed disk size, is refused with nothing created.

The imported guests boot with ``writepat=0``: they only read the pattern and
print its checksum, so an equal checksum proves the disk came across. At most
one guest runs at a time here.
"""

from __future__ import annotations

import configparser
import contextlib
import io
import os
import re
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from typing import Any

import pytest
from cluster.gnt_helpers import Gnt, wait_console
from cluster.gnt_helpers import node as _node

from ganeti_lv import objects
from ganeti_lv.config import ConfigStore
from ganeti_lv.devcluster import guest
from ganeti_lv.devcluster import layout as lay
from ganeti_lv.devcluster import peerlayout as pl
from ganeti_lv.devcluster.peer import PeerCluster
from ganeti_lv.hypervisor.libvirt import LibvirtNodeOps
from ganeti_lv.hypervisor.libvirt.domxml import console_log_path
from ganeti_lv.node.transport import node_call

pytestmark = [pytest.mark.ganeti_peer, pytest.mark.cluster, pytest.mark.timeout(900)]

GANETI_EXPORT_DIR = "/var/lib/ganeti/export"
PATMB = 16
MiB = 1024 * 1024
GNT = "gntexp1"  # the Ganeti instance exported to ganeti_lv


@pytest.fixture
def local(devcluster: Any) -> Iterator[tuple[Gnt, ConfigStore, LibvirtNodeOps, dict[str, Any]]]:
    """gnt-lv, the configuration and the node operations of the session's local cluster."""
    ops = LibvirtNodeOps(devcluster.data_dir)
    try:
        yield Gnt(devcluster.data_dir), ConfigStore(devcluster.data_dir), ops, devcluster.info
    finally:
        ops.close()


def _host_export_dir(info: dict[str, Any], node: str) -> str:
    """Host path of a local node's export dir."""
    [entry] = [n for n in info["nodes"] if n["name"] == node]
    return str(entry["storage"]["export_dir"])


def _copy_tree(src: str, dst: str) -> None:
    """Copy an export directory as rsync would between nodes (sparse files kept sparse)."""
    shutil.rmtree(dst, ignore_errors=True)
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    subprocess.run(["cp", "-a", "--sparse=always", src, dst], check=True)


def _local_pattern(ops: LibvirtNodeOps, node: objects.Node, name: str) -> re.Match[str]:
    """The pattern line of a local instance's console (waits for the boot)."""
    text = wait_console(ops, node, name, lambda t: bool(guest.PATTERN_RE.search(t)), 180)
    match = guest.PATTERN_RE.search(text)
    assert match is not None and int(match.group(2)) == PATMB
    return match


def _purge_local(gnt: Gnt, config: ConfigStore, ops: LibvirtNodeOps, name: str) -> None:
    if config.get_instance(name) is not None:
        gnt("instance", "remove", "-f", "--shutdown-timeout", "0", name)
    cluster = config.get_cluster()
    probe = objects.Instance(name=name, primary_node="", disk_template="file")
    for node_name in config.node_names():
        node = _node(config, node_name)
        node_call(ops.undefine_instance, node, name)
        node_call(ops.run_command, node, ["rm", "-rf", "--", objects.disk_dir(cluster, probe)])
        node_call(ops.run_command, node, ["rm", "-f", "--", console_log_path(name)])
        node_call(ops.export_remove, node, cluster, name)


def _remove_peer_instance(peer: PeerCluster, name: str) -> None:
    listed = peer.gnt(["gnt-instance", "list", "--no-headers", "-o", "name"], check=False)
    if name in listed.split():
        peer.gnt(["gnt-instance", "remove", "-f", "--shutdown-timeout=0", name])
    with contextlib.suppress(FileNotFoundError):
        os.unlink(peer.console_log(name))


def _nothing_created(gnt: Gnt, config: ConfigStore, ops: LibvirtNodeOps, name: str) -> None:
    assert config.get_instance(name) is None
    assert name not in gnt.ok("instance", "list", "--no-headers", "-o", "name").split()
    probe = objects.Instance(name=name, primary_node="", disk_template="file")
    for node_name in config.node_names():
        node = _node(config, node_name)
        res = ops.run_command(node, ["test", "-e", objects.disk_dir(config.get_cluster(), probe)])
        assert res.exit_status != 0, f"disks of {name} created on {node_name}"
        assert ops.instance_info(node, name) is None


# ------------------------------------------------------------ ganeti_lv -> Ganeti


def test_ganeti_lv_live_export_boots_under_real_ganeti(local, ganeti_peer: PeerCluster) -> None:
    gnt, config, ops, info = local
    name = "glvexp1"
    n1, n2 = sorted(config.node_names())[:2]
    layout = ganeti_peer.layout()
    pnode = layout.master
    image = guest.build_guest()
    peer_export = pnode.host_path(f"{GANETI_EXPORT_DIR}/{name}")
    _purge_local(gnt, config, ops, name)
    _remove_peer_instance(ganeti_peer, name)
    try:
        args = guest.kernel_args(name, patmb=PATMB, dirtymb=0)
        gnt.ok(
            "instance", "add", "-t", "file", "--disk", "0:size=128M", "-n", n1,
            "-B", "memory=128M,vcpus=1", "--net", f"0:link={lay.NODE_BRIDGE}",
            "-H", f'kernel_path={image.kernel},initrd_path={image.initrd},kernel_args="{args}"',
            name,
        )  # fmt: skip
        written = _local_pattern(ops, _node(config, n1), name).group(3)
        assert written == guest.pattern_sha256(name, PATMB)
        gnt.ok("backup", "export", "-n", n2, "--noshutdown", name)
        # The guest is no longer needed: the machine runs one guest at a time here.
        gnt.ok("instance", "remove", "-f", "--shutdown-timeout", "0", name)

        src = f"{_host_export_dir(info, n2)}/{name}"
        exported = configparser.ConfigParser(interpolation=None)
        exported.read(f"{src}/config.ini")
        assert exported["export"]["os"] == "noop"
        assert exported["export"]["source"] == _node(config, n1).uuid
        _copy_tree(src, peer_export)

        # The operator's -H (the serial console into a file, the guest only reading
        # its disk) wins over the export's; everything else comes from config.ini.
        hv = pl.instance_kvm_params(layout, name, image, seed=name, writepat=False)
        ganeti_peer.gnt(
            [
                "gnt-backup", "import", "-t", "sharedfile", "-n", pnode.fqdn,
                "--src-node", pnode.fqdn, "--src-dir", name,
                "--no-name-check", "--no-ip-check", "--ignore-ipolicy", "-H", hv, name,
            ],
            timeout=600,
        )  # fmt: skip
        ganeti_peer.gnt(["gnt-instance", "startup", name])  # an import is left stopped
        match = guest.wait_console(ganeti_peer.console_log(name), guest.PATTERN_RE, 180)
        assert match.group(1) == name and int(match.group(2)) == PATMB
        assert match.group(3) == written

        fields = "os,be/maxmem,be/vcpus,hv/migration_downtime,nic.mac/0,nic.link/0,status"
        row = ganeti_peer.gnt(
            ["gnt-instance", "list", "--no-headers", "--separator=|", "-o", fields, name]
        )
        os_name, maxmem, vcpus, downtime, mac, link, status = row.strip().split("|")
        assert (os_name, maxmem, vcpus) == ("noop", "128", "1")
        assert downtime == exported["hypervisor"]["migration_downtime"]
        assert mac == exported["instance"]["nic0_mac"] and link == lay.NODE_BRIDGE
        assert status == "running"
    finally:
        _remove_peer_instance(ganeti_peer, name)
        shutil.rmtree(peer_export, ignore_errors=True)
        _purge_local(gnt, config, ops, name)


# ------------------------------------------------------------ Ganeti -> ganeti_lv


@pytest.fixture(scope="module")
def ganeti_export(ganeti_peer: PeerCluster) -> Iterator[tuple[str, str]]:
    """A real Ganeti export of the test guest: (host path of its directory, pattern sha256)."""
    node = ganeti_peer.layout().master
    path = node.host_path(f"{GANETI_EXPORT_DIR}/{GNT}")
    try:
        ganeti_peer.add_instance(GNT, node="node1", template="sharedfile")
        match = guest.wait_console(ganeti_peer.console_log(GNT), guest.PATTERN_RE, 60)
        assert match.group(3) == guest.pattern_sha256(GNT, PATMB)
        # file/sharedfile disks cannot be snapshotted: Ganeti shuts the instance down
        ganeti_peer.gnt(["gnt-backup", "export", "-n", node.fqdn, "--long-sleep", GNT])
        ganeti_peer.remove_instance(GNT)
        assert os.path.exists(f"{path}/config.ini")
        assert not os.path.exists(f"{path}/manifest.json")
        yield path, match.group(3)
    finally:
        if GNT in ganeti_peer.status().get("instances", []):
            ganeti_peer.remove_instance(GNT)
        ganeti_peer.gnt(["gnt-backup", "remove", GNT], check=False)
        shutil.rmtree(path, ignore_errors=True)


def _ganeti_config(path: str) -> configparser.ConfigParser:
    cfg = configparser.ConfigParser(interpolation=None)
    cfg.read(f"{path}/config.ini")
    return cfg


def test_ganeti_export_imports_into_ganeti_lv_and_boots(local, ganeti_export) -> None:
    gnt, config, ops, info = local
    src, pattern = ganeti_export
    name = "glvimp1"
    n1, n2 = sorted(config.node_names())[:2]
    dst = f"{_host_export_dir(info, n1)}/{GNT}"
    _purge_local(gnt, config, ops, name)
    ganeti = _ganeti_config(src)
    try:
        _copy_tree(src, dst)
        listed = gnt.ok("backup", "list", "--node", n1, "-o", "export,kind", "--no-headers")
        assert [GNT, "ganeti"] in [line.split() for line in listed.splitlines()]

        args = guest.kernel_args(GNT, patmb=PATMB, dirtymb=0, writepat=False)
        code, out, err = gnt(
            "backup", "import", "-n", n2, "--src-node", n1,
            "--src-dir", f"{lay.EXPORT_DIR}/{GNT}", "-t", "file", "--start",
            "-H", f'serial_console=true,kernel_args="{args}"', name,
        )  # fmt: skip
        assert code == 0, out + err
        out += err
        # Ganeti's KVM-only parameters are named as dropped; the checksum is computed
        assert re.search(r"dropped \(hypervisor: [^)]*\bkvm_extra\b", out), out
        assert "spindle_use" in out and "computed on" in out

        match = _local_pattern(ops, _node(config, n2), name)
        assert match.group(1) == GNT and match.group(3) == pattern

        inst = config.get_instance(name)
        assert inst is not None
        assert [d.size for d in inst.disks] == [int(ganeti["instance"]["disk0_size"])]
        assert inst.nics[0].mac == ganeti["instance"]["nic0_mac"]
        assert inst.nics[0].link == lay.NODE_BRIDGE
        assert inst.os == "noop" and inst.beparams["maxmem"] == 128
        # the cluster decides migration settings; the export's kernel came along
        assert "migration_downtime" not in inst.hvparams
        assert inst.hvparams["kernel_path"] == ganeti["hypervisor"]["kernel_path"]
    finally:
        _purge_local(gnt, config, ops, name)
        shutil.rmtree(dst, ignore_errors=True)


def _tar_stream() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        data = b"root filesystem of a debootstrap instance\n" * 100
        member = tarfile.TarInfo("etc/motd")
        member.size = len(data)
        tar.addfile(member, io.BytesIO(data))
    return buf.getvalue()


def _set_option(path: str, section: str, key: str, value: str) -> None:
    cfg = _ganeti_config(path)
    cfg[section][key] = value
    with open(f"{path}/config.ini", "w", encoding="utf-8") as fh:
        cfg.write(fh)


def _refused(gnt: Gnt, node: str, src_dir: str, name: str) -> str:
    code, out, err = gnt(
        "backup", "import", "-n", node, "--src-node", node, "--src-dir", src_dir,
        "-t", "file", name,
    )  # fmt: skip
    assert code != 0, out
    return out + err


def test_non_raw_truncated_or_resized_ganeti_exports_refused(local, ganeti_export) -> None:
    gnt, config, ops, info = local
    src, _ = ganeti_export
    n1 = sorted(config.node_names())[0]
    base = _host_export_dir(info, n1)
    dump = _ganeti_config(src)["instance"]["disk0_dump"]
    size = int(_ganeti_config(src)["instance"]["disk0_size"]) * MiB
    made = []
    try:
        # An OS whose export script writes a stream, not the disk.
        bad = f"{base}/gntbad"
        made.append(bad)
        _copy_tree(src, bad)
        _set_option(bad, "export", "os", "debootstrap+default")
        with open(f"{bad}/{dump}", "wb") as fh:
            fh.write(_tar_stream())
        out = _refused(gnt, n1, "gntbad", "glvbad")
        assert "not a raw disk image (a tar archive)" in out
        assert "OS 'debootstrap+default'" in out
        _nothing_created(gnt, config, ops, "glvbad")

        # A raw dump cut short (a copy that broke off).
        short = f"{base}/gntshort"
        made.append(short)
        _copy_tree(src, short)
        os.truncate(f"{short}/{dump}", size - MiB)
        out = _refused(gnt, n1, "gntshort", "glvshort")
        assert f"has {size - MiB} bytes" in out and "truncated or corrupted" in out
        _nothing_created(gnt, config, ops, "glvshort")

        # config.ini edited to a larger disk than the dump is.
        resized = f"{base}/gntresized"
        made.append(resized)
        _copy_tree(src, resized)
        _set_option(resized, "instance", "disk0_size", str(2 * size // MiB))
        out = _refused(gnt, n1, "gntresized", "glvresized")
        assert f"disk0_size={2 * size // MiB} MiB" in out
        _nothing_created(gnt, config, ops, "glvresized")
    finally:
        for path in made:
            shutil.rmtree(path, ignore_errors=True)
