"""Pure logic of the Ganeti peer: names, addresses, configuration texts, the
install's policy-rc.d handling, the guest budget and the CLI."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from ganeti_lv.devcluster import cli, guest, peerinstall
from ganeti_lv.devcluster import layout as lay
from ganeti_lv.devcluster import peerlayout as pl
from ganeti_lv.devcluster.peer import PeerCluster
from ganeti_lv.errors import ECODE_INVAL, ECODE_NOENT, ECODE_NORES, OpExecError, OpPrereqError

IMAGE = guest.GuestImage("/cache/guest/vmlinuz", "/cache/guest/initrd.gz", "k")


def _split_ganeti(value: str) -> list[str]:
    """Split a Ganeti ``key=value,...`` option on unescaped commas (as gnt-* do)."""
    return [p.replace("\\,", ",") for p in re.split(r"(?<!\\),", value)]


def test_layout_names_addresses_and_isolation_from_the_local_cluster() -> None:
    peer = pl.PeerLayout.build("/var/tmp/some-peer", "10.251.7.0/24")
    local = lay.ClusterLayout.build("/var/tmp/some-peer", 2, "10.250.7.0/24")
    assert peer.cid == local.cid  # same directory, same id ...
    assert peer.prefix == f"gpr{peer.cid}"  # ... but names of its own
    names = [peer.bridge] + [x for n in peer.nodes for x in (n.netns, n.veth_host, n.veth_peer)]
    assert all(len(name) <= lay.IFNAMSIZ and name.startswith(peer.prefix) for name in names)
    assert not {peer.bridge, *(n.netns for n in peer.nodes)} & {
        local.bridge,
        *(n.netns for n in local.nodes),
    }
    assert [n.address for n in peer.nodes] == ["10.251.7.1", "10.251.7.2"]
    assert peer.master_ip == "10.251.7.10" and peer.bridge_address == "10.251.7.254"
    assert peer.master.fqdn == "node1.ganeti-peer.test"
    assert peer.node("node2.ganeti-peer.test") is peer.node("node2")
    with pytest.raises(OpPrereqError) as err:
        peer.node("node3")
    assert err.value.ecode == ECODE_NOENT


@pytest.mark.parametrize("cidr", ["10.251.0.0/29", "10.251.0.1/24", "not-a-net"])
def test_bad_subnets_are_refused(cidr: str) -> None:
    with pytest.raises(OpPrereqError) as err:
        pl.PeerLayout.build("/var/tmp/p", cidr)
    assert err.value.ecode == ECODE_INVAL


def test_node_mounts_and_host_paths() -> None:
    peer = pl.PeerLayout.build("/var/tmp/p")
    node = peer.nodes[1]
    mounts = peer.node_mounts(node)
    targets = [dst for _src, dst in mounts]
    for path in ("/etc/ganeti", "/var/lib/ganeti", "/run/ganeti", "/var/log/ganeti", "/etc/hosts"):
        assert path in targets
    # The shared storage is mounted inside the node's own /srv/ganeti, so after it.
    assert targets.index(pl.SHARED_FILE_STORAGE_DIR) > targets.index("/srv/ganeti")
    assert (peer.shared_dir, pl.SHARED_FILE_STORAGE_DIR) in mounts
    assert all(src.startswith(node.host_dir) or src == peer.shared_dir for src, _ in mounts)
    assert node.host_path("/run/ganeti/ganeti-noded.pid") == os.path.join(
        node.host_dir, "run-ganeti", "ganeti-noded.pid"
    )
    with pytest.raises(ValueError):
        node.host_path("/usr/bin/qemu")


def test_configuration_texts() -> None:
    peer = pl.PeerLayout.build("/var/tmp/p", "10.251.3.0/24")
    hosts = pl.hosts_file(peer)
    assert "10.251.3.1\tnode1.ganeti-peer.test node1\n" in hosts
    assert "10.251.3.10\tcluster.ganeti-peer.test cluster\n" in hosts
    assert pl.file_storage_paths().split() == [pl.FILE_STORAGE_DIR, pl.SHARED_FILE_STORAGE_DIR]
    original = 'NODED_ARGS=""\nRAPI_ARGS="-b 127.0.0.1 --require-authentication"\n'
    defaults = pl.default_ganeti(original)
    assert 'NODED_ARGS=""' in defaults and "127.0.0.1" not in defaults
    assert 'RAPI_ARGS="-b 0.0.0.0 --require-authentication"' in defaults
    assert pl.rapi_users("u", "secret") == "u secret write\n"
    for user, password in (("", "x"), ("u", ""), ("a b", "x")):
        with pytest.raises(OpPrereqError):
            pl.rapi_users(user, password)
    sshd = pl.sshd_config(peer.nodes[0])
    assert "ListenAddress 10.251.3.1\n" in sshd and f"PidFile {pl.SSHD_PIDFILE}\n" in sshd
    assert f"HostKey {pl.SSH_HOST_KEY}\n" in sshd


def test_cluster_init_is_for_tcg_with_file_templates() -> None:
    peer = pl.PeerLayout.build("/var/tmp/p")
    argv = pl.cluster_init_argv(peer)
    assert argv[:2] == ["gnt-cluster", "init"] and argv[-1] == peer.cluster_fqdn
    hv = dict(p.split("=", 1) for p in argv[argv.index("-H") + 1].split(":", 1)[1].split(","))
    assert hv["kvm_flag"] == "disabled" and hv["kvm_path"] == "/usr/bin/qemu-system-x86_64"
    assert argv[argv.index("--enabled-disk-templates") + 1] == "file,sharedfile"
    assert argv[argv.index("-N") + 1] == "link=gnt-br0"
    assert "--no-ssh-init" in argv and "--no-etc-hosts" in argv


def test_instance_add_runs_the_test_guest_with_a_shared_console_log() -> None:
    peer = pl.PeerLayout.build("/var/tmp/p")
    argv = pl.instance_add_argv(peer, "inst1", peer.nodes[1], IMAGE, dirtymb=8)
    assert argv[-1] == "inst1" and argv[argv.index("-n") + 1] == "node2.ganeti-peer.test"
    assert argv[argv.index("-t") + 1] == "sharedfile" and "--ignore-ipolicy" in argv
    hv_value = argv[argv.index("-H") + 1]
    assert hv_value.startswith("kvm:")
    params = dict(p.split("=", 1) for p in _split_ganeti(hv_value[4:]))
    assert params["kernel_path"] == IMAGE.kernel and params["initrd_path"] == IMAGE.initrd
    assert params["kernel_args"] == guest.kernel_args("inst1", patmb=16, dirtymb=8)
    assert params["serial_console"] == "false"
    extra = params["kvm_extra"].split(" ")
    chardev = extra[extra.index("-chardev") + 1].split(",")
    assert f"path={peer.console_log('inst1')}" in chardev and "append=on" in chardev
    assert extra[extra.index("-device") + 1] == "isa-serial,chardev=glvconsole"


def test_instance_add_memory_disk_and_no_start() -> None:
    peer = pl.PeerLayout.build("/var/tmp/p")
    argv = pl.instance_add_argv(peer, "i1", peer.nodes[0], IMAGE, disk_mb=1024, memory_mb=256)
    assert argv[argv.index("--disk") + 1] == "0:size=1024M"
    assert argv[argv.index("-B") + 1] == "maxmem=256,minmem=256,vcpus=1"
    assert "--no-start" not in argv
    stopped = pl.instance_add_argv(peer, "i1", peer.nodes[0], IMAGE, start=False)
    assert "--no-start" in stopped and stopped[-1] == "i1"


@pytest.mark.parametrize("name", ["", "-x", "a b", "a,b", "x" * 64])
def test_bad_instance_names_are_refused(name: str) -> None:
    peer = pl.PeerLayout.build("/var/tmp/p")
    with pytest.raises(OpPrereqError) as err:
        pl.instance_add_argv(peer, name, peer.nodes[0], IMAGE)
    assert err.value.ecode == ECODE_INVAL


def test_only_enabled_templates() -> None:
    peer = pl.PeerLayout.build("/var/tmp/p")
    with pytest.raises(OpPrereqError, match="not enabled"):
        pl.instance_add_argv(peer, "i", peer.nodes[0], IMAGE, template="drbd")


# --- install -----------------------------------------------------------------


def test_policy_rc_d_created_and_removed_when_missing(tmp_path: Path) -> None:
    path = tmp_path / "policy-rc.d"
    with peerinstall.services_blocked(str(path)) as created:
        assert created is True
        assert path.read_text().rstrip().endswith("exit 101")
        assert os.access(path, os.X_OK)
    assert not path.exists()


def test_existing_policy_rc_d_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "policy-rc.d"
    path.write_text("#!/bin/sh\nexit 101\n")
    with peerinstall.services_blocked(str(path)) as created:
        assert created is False
    assert path.read_text() == "#!/bin/sh\nexit 101\n"


def test_policy_rc_d_changed_meanwhile_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "policy-rc.d"
    with peerinstall.services_blocked(str(path)):
        path.write_text("#!/bin/sh\n# someone else's\nexit 101\n")
    assert path.exists()


def test_nothing_to_install_when_present(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(peerinstall, "installed", lambda _p: True)

    def no_apt(*_a: Any, **_k: Any) -> None:
        raise AssertionError("apt-get must not run")

    monkeypatch.setattr(peerinstall.subprocess, "run", no_apt)
    assert peerinstall.ensure_packages() is None


# --- guest budget and CLI -------------------------------------------------------


def test_add_instance_refused_when_two_guests_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    peer = PeerCluster(str(tmp_path))
    monkeypatch.setattr(guest, "running_guests", lambda: [101, 102])
    calls: list[Any] = []
    monkeypatch.setattr(peer, "run", lambda *a, **k: calls.append(a))
    with pytest.raises(OpPrereqError) as err:
        peer.add_instance("inst1")
    assert err.value.ecode == ECODE_NORES and "101" in str(err.value)
    assert calls == [] and not (tmp_path / "state.json").exists()


def test_an_instance_that_does_not_boot_is_removed_and_forgotten(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not left running beside the next guests, nor recorded (the next add of the name
    would be refused); the error raised is the boot's."""
    peer = PeerCluster(str(tmp_path))
    commands: list[list[str]] = []
    monkeypatch.setattr(guest, "running_guests", lambda: [])
    monkeypatch.setattr(guest, "build_guest", lambda *a, **k: IMAGE)
    monkeypatch.setattr(peer, "gnt", lambda argv, check=True, timeout=300: commands.append(argv))

    def no_ready_line(*args: Any) -> None:
        raise OpExecError("no GUEST-READY within 180 s")

    monkeypatch.setattr(guest, "wait_console", no_ready_line)
    with pytest.raises(OpExecError, match="GUEST-READY"):
        peer.add_instance("inst1")
    assert commands[0][:2] == ["gnt-instance", "add"]
    assert commands[1] == ["gnt-instance", "remove", "-f", "--shutdown-timeout=0", "inst1"]
    assert peer.status().get("instances", []) == []
    assert "inst1" not in json.loads((tmp_path / "state.json").read_text()).get("instances", {})


def test_running_guests_are_the_qemu_emulators(tmp_path: Path) -> None:
    # a program named as qemu's system emulators are (a copy of sleep)
    fake = tmp_path / "qemu-system-x86_64"
    shutil.copy(shutil.which("sleep") or "/bin/sleep", fake)
    proc = subprocess.Popen([str(fake), "30"])
    try:
        deadline = time.monotonic() + 10
        while proc.pid not in guest.running_guests() and time.monotonic() < deadline:
            time.sleep(0.02)
        running = guest.running_guests()
        assert proc.pid in running
        assert os.getpid() not in running
    finally:
        proc.kill()
        proc.wait()
    assert proc.pid not in guest.running_guests()


def test_cli_peer_subcommands_parse() -> None:
    parser = cli._parser()
    opts = parser.parse_args(["peer", "up", "--dir", "/x", "--subnet", "10.251.9.0/24"])
    assert (opts.command, opts.peer_command, opts.dir, opts.subnet) == (
        "peer",
        "up",
        "/x",
        "10.251.9.0/24",
    )
    opts = parser.parse_args(["peer", "add-instance", "-t", "file", "--node", "node2", "i1"])
    assert (opts.name, opts.node, opts.disk_template) == ("i1", "node2", "file")
    with pytest.raises(SystemExit):
        parser.parse_args(["peer", "add-instance", "-t", "drbd", "i1"])


def test_cli_status_of_a_peer_never_built(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["peer", "status", "--dir", str(tmp_path)]) == 1
    assert "not (fully) running" in capsys.readouterr().out


@pytest.mark.parametrize(("argv", "peer"), [([], False), (["--with-peer"], True)])
def test_prepare_fetches_and_builds_what_up_needs_first(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], argv: list[str], peer: bool
) -> None:
    """The test suite's stage before its tests: the qemu, the guest, the peer's packages."""
    done: list[tuple[str, ...]] = []
    monkeypatch.setattr(
        cli.emulator, "emulator_dir", lambda mode, cache, _f: done.append(("qemu", mode, cache))
    )
    monkeypatch.setattr(guest, "build_guest", lambda cache, _f: done.append(("guest", cache)))
    monkeypatch.setattr(peerinstall, "ensure_packages", lambda _f: done.append(("peer",)))
    assert cli.main(["prepare", "--cache-dir", "/c", *argv]) == 0
    assert done == [("qemu", "auto", "/c"), ("guest", "/c")] + ([("peer",)] if peer else [])
    assert capsys.readouterr().out == "prepared in /c\n"
