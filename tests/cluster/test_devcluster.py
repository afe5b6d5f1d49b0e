"""The local cluster itself: up/down hygiene, per-node storage, SSH trust and the test guest."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.guardian import devcluster_down, guarded
from support.nodedaemons import restarted_after_crash, running_daemons
from support.timeouts import scaled
from support.waiting import parent_command, wait_until

from ganeti_lv.config import ConfigStore
from ganeti_lv.devcluster import daemons, emulator, guest, netns
from ganeti_lv.devcluster.cluster import DevCluster
from ganeti_lv.devcluster.guest import GuestImage, kernel_args, pattern_sha256
from ganeti_lv.devcluster.layout import DAEMONS
from ganeti_lv.devcluster.netns import free_subnet as free_test_subnet
from ganeti_lv.errors import OpPrereqError

pytestmark = pytest.mark.cluster

BOOT_TIMEOUT = 120.0


# --- up / down hygiene (own clusters, not the session one) --------------------


def _state(cl: DevCluster) -> dict[str, Any]:
    path = Path(cl.state_file)
    return json.loads(path.read_text()) if path.exists() else {}


def _snapshot(cl: DevCluster) -> tuple[list[str], list[int]]:
    """Namespaces of the cluster and every process running in them or holding them."""
    names = netns.list_netns(f"glv{cl.cid}n")
    pids = {p for n in names for p in netns.pids_in_netns(n)}
    state = _state(cl)
    pids.update(int(p) for p in state.get("holders", {}).values())
    return names, sorted(pids)


def _assert_clean(cl: DevCluster, pids: list[int]) -> None:
    """Nothing of the cluster is left: processes, namespaces, links, mounts."""
    prefix = f"glv{cl.cid}"
    alive = [p for p in pids if netns.proc_alive(p)]
    assert not alive, f"processes left: {alive}"
    ns_out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert prefix not in ns_out
    link_out = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert prefix not in link_out
    with open("/proc/mounts", encoding="utf-8") as fh:
        mounts = fh.read()
    assert prefix not in mounts and cl.directory not in mounts


@pytest.fixture
def scratch_dir() -> Iterator[str]:
    """A cluster directory of its own, brought down and removed afterwards."""
    directory = tempfile.mkdtemp(prefix="glv-updown-", dir="/var/tmp")
    with guarded(devcluster_down(directory), directory):
        try:
            yield directory
        finally:
            DevCluster(directory).down()
            subprocess.run(["rm", "-rf", directory], check=False)


@pytest.mark.faults
def test_up_twice_is_harmless_and_down_leaves_nothing(scratch_dir: str) -> None:
    cl = DevCluster(scratch_dir)
    with pytest.raises(OpPrereqError):
        cl.up(nodes=2, subnet=free_test_subnet(), domain_type="qemu", memory_caps={"node7": 1})
    info = cl.up(nodes=2, subnet=free_test_subnet(), domain_type="qemu", memory_caps={"node2": 300})
    assert [n["name"] for n in info["nodes"]] == ["node1", "node2"]
    store = ConfigStore(info["data_dir"])
    assert store.get_cluster().domain_type == "qemu"
    assert store.get_cluster().shared_storage_unsafe_ok is True
    assert [store.get_node(n).memory_cap for n in ("node1", "node2")] == [None, 300]
    status = cl.status()
    assert status["running"] is True
    names, pids = _snapshot(cl)
    assert len(names) == 2 and len(pids) >= 8  # holder, virtlogd, libvirtd, sshd per node
    assert os.path.exists(os.path.join(info["data_dir"], "config.json"))

    again = cl.up()
    assert cl.status() == status  # same PIDs: nothing restarted
    assert again["nodes"] == info["nodes"]
    names2, pids2 = _snapshot(cl)
    assert names2 == names
    pids = sorted(set(pids) | set(pids2))  # all must be gone after down

    cl.down()
    _assert_clean(cl, pids)
    assert cl.status()["running"] is False
    assert not os.path.exists(cl.info_file)


def _killed_up(cl: DevCluster, directory: str) -> None:
    """Run ``gnt-lv-devcluster up`` and SIGKILL it while it brings node2 up."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ganeti_lv.devcluster.cli",
            "up",
            "--dir",
            directory,
            "--nodes",
            "2",
            "--subnet",
            free_test_subnet(),
            "--domain-type",
            "qemu",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if "node2" in _state(cl).get("holders", {}):
                break
            time.sleep(0.02)  # polling a file another process writes
        assert proc.poll() is None, "up finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()


@pytest.mark.faults
def test_down_after_killed_up_cleans_up(scratch_dir: str) -> None:
    cl = DevCluster(scratch_dir)
    _killed_up(cl, scratch_dir)
    names, pids = _snapshot(cl)
    assert names and pids, "the killed up left nothing to clean (test did not test)"
    cl.down()
    _assert_clean(cl, pids)


@pytest.mark.faults
def test_up_after_killed_up_completes_the_cluster(scratch_dir: str) -> None:
    cl = DevCluster(scratch_dir)
    _killed_up(cl, scratch_dir)
    _, pids = _snapshot(cl)
    info = cl.up()
    assert cl.status()["running"] is True
    assert len(info["nodes"]) == 2
    out = cl.node_exec("node2", ["sh", "-c", "hostname; ssh node1 hostname"]).stdout.decode()
    assert out.split() == ["node2", "node1"]
    _, more = _snapshot(cl)
    cl.down()
    _assert_clean(cl, sorted(set(pids) | set(more)))


# --- the session cluster --------------------------------------------------------


def _sh(cluster: Any, node: str, script: str, check: bool = True) -> str:
    res = cluster.node_exec(node, ["sh", "-c", script], check=check)
    return res.stdout.decode(errors="replace").strip()


def test_node_local_dirs_are_per_node_and_shared_storage_is_shared(
    devcluster: Any, cluster_info: dict[str, Any]
) -> None:
    storage = cluster_info["storage"]
    tag = f"probe-{os.getpid()}"
    first, second, *rest = [n["name"] for n in cluster_info["nodes"]]  # two nodes or more
    try:
        for key in ("export_dir", "file_storage_dir", "hooks_base_dir"):
            path = f"{storage[key]}/{tag}"
            _sh(devcluster, first, f"echo {first} > {path}")
            assert _sh(devcluster, first, f"cat {path}") == first
            for other in (second, *rest):
                assert _sh(devcluster, other, f"test -e {path} && echo yes || echo no") == "no"
        shared = f"{storage['shared_file_storage_dir']}/{tag}"
        _sh(devcluster, second, f"echo from-{second} > {shared}")
        for node in (first, *rest):
            assert _sh(devcluster, node, f"cat {shared}") == f"from-{second}"
        if "host_dir" in cluster_info["nodes"][0]:  # local cluster: host view agrees
            n1 = cluster_info["nodes"][0]["storage"]
            assert Path(f"{n1['export_dir']}/{tag}").read_text() == f"{first}\n"
            shared_on_host = Path(f"{cluster_info['host_shared_dir']}/{tag}")
            assert shared_on_host.read_text() == f"from-{second}\n"
    finally:
        for node in (first, second, *rest):
            _sh(
                devcluster,
                node,
                " ; ".join(
                    f"rm -f {storage[k]}/{tag}"
                    for k in (
                        "export_dir",
                        "file_storage_dir",
                        "hooks_base_dir",
                        "shared_file_storage_dir",
                    )
                ),
            )


def test_nodes_run_a_qemu_whose_tcg_migration_keeps_guest_memory(
    local_devcluster: DevCluster, cluster_info: dict[str, Any]
) -> None:
    """On Debian 12 the nodes' libvirtd runs the backported qemu, not the system's 7.2.

    qemu 7.2 loses guest memory writes during TCG migrations (see
    ganeti_lv.devcluster.emulator); the migration tests rely on a qemu that
    does not.
    """
    expected = emulator.resolve_mode("auto")
    assert cluster_info["qemu"] == expected
    for node in cluster_info["nodes"]:
        version = local_devcluster.virsh(node["name"], "version")
        found = re.search(r"Running hypervisor: QEMU (\d+)\.", version)
        assert found, version
        if expected == "backports":
            assert int(found.group(1)) >= 9, version
            assert cluster_info["emulator_dir"]
            caps = local_devcluster.virsh(node["name"], "capabilities")
            assert f"<emulator>{cluster_info['emulator_dir']}/qemu-system-x86_64<" in caps


def test_every_node_daemon_runs_below_its_reaper(local_devcluster: DevCluster) -> None:
    for node in ("node1", "node2", "node3"):
        for name in DAEMONS:
            pid = local_devcluster.daemon_pid(node, name)
            assert pid is not None, (node, name)
            assert b"ganeti_lv.devcluster.reaper" in parent_command(pid), (node, name)


@pytest.mark.filterwarnings("ignore:a node daemon crashed")
def test_a_crashed_libvirtd_is_started_again_as_by_init(local_devcluster: DevCluster) -> None:
    """As Debian's libvirtd.service (Restart=on-failure): a libvirtd that crashed runs
    again at once, below its reaper, and the record of its end says so."""
    before = running_daemons(local_devcluster)
    old = local_devcluster.daemon_pid("node3", "libvirtd")
    assert old is not None
    os.kill(old, signal.SIGABRT)  # as libvirtd aborting itself

    def started_again() -> bool:  # and answering
        if local_devcluster.daemon_pid("node3", "libvirtd") in (None, old):
            return False
        res = local_devcluster.node_exec("node3", ["virsh", "-q", "list", "--all"], check=False)
        return res.returncode == 0

    assert wait_until(started_again, scaled(30), interval=0.2)
    new = local_devcluster.daemon_pid("node3", "libvirtd")
    assert new is not None and b"ganeti_lv.devcluster.reaper" in parent_command(new)
    end = local_devcluster.daemon_end("node3", "libvirtd", old)
    assert end is not None
    assert re.search(r"killed by signal 6 \(SIGABRT\)(, core dumped)?; started again$", end), end
    (report,) = restarted_after_crash(local_devcluster, before)
    assert report.startswith(f"libvirtd on node3: {end}")


def test_a_daemon_pid_file_naming_another_process_of_the_node_is_not_the_daemon(
    local_devcluster: DevCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A killed daemon leaves its pid file; its PID may soon belong to another process."""
    node = local_devcluster.layout().node("node2")
    sshd = daemons.daemon_pid(node, "sshd")
    assert sshd is not None
    stale = tmp_path / "libvirtd.pid"
    stale.write_text(f"{sshd}\n")  # alive, in the node: but not libvirtd
    monkeypatch.setattr(daemons, "pidfile", lambda _node, _name: str(stale))
    assert daemons.daemon_pid(node, "libvirtd") is None
    assert daemons.daemon_pid(node, "sshd") == sshd


def test_nodes_know_each_other_and_reach_each_other_over_ssh(
    devcluster: Any, cluster_info: dict[str, Any]
) -> None:
    for node in cluster_info["nodes"]:
        assert _sh(devcluster, node["name"], "hostname") == node["name"]
    for peer in cluster_info["nodes"][1:]:
        out = _sh(
            devcluster, "node1", f"ssh {peer['name']} hostname && ssh {peer['address']} hostname"
        )
        assert out.split() == [peer["name"], peer["name"]]
    uuids = set()
    for node in cluster_info["nodes"]:
        sysinfo = devcluster.virsh(node["name"], "capabilities")
        m = re.search(r"<uuid>([0-9a-f-]+)</uuid>", sysinfo)
        assert m is not None
        uuids.add(m.group(1))
    assert len(uuids) == len(cluster_info["nodes"]), "host uuids must differ"


# --- the test guest -----------------------------------------------------------------


class GuestRun:
    """A transient test-guest domain started directly with virsh on a node."""

    def __init__(self, cluster: Any, info: dict[str, Any], node: str, name: str) -> None:
        self.cluster, self.info, self.node, self.name = cluster, info, node, name
        base = f"{info['storage']['file_storage_dir']}"
        self.disk = f"{base}/{name}.img"
        self.log = f"{base}/{name}.console"

    def prepare_disk(self, mib: int) -> None:
        _sh(
            self.cluster, self.node, f"rm -f {self.disk} {self.log}; truncate -s {mib}M {self.disk}"
        )

    def start(self, cmdline: str) -> None:
        g = self.info["guest"]
        image = GuestImage(g["kernel"], g["initrd"], key="")
        xml = guest.domain_xml(
            self.name, self.info["domain_type"], image, cmdline, self.disk, self.log
        )
        _sh(self.cluster, self.node, f"rm -f {self.log}")
        self.cluster.node_exec(self.node, ["virsh", "create", "/dev/stdin"], input=xml.encode())

    def console(self) -> str:
        return _sh(self.cluster, self.node, f"cat {self.log} 2>/dev/null", check=False)

    def wait(self, regex: str, timeout: float = BOOT_TIMEOUT) -> re.Match[str]:
        pattern = re.compile(regex)
        deadline = time.monotonic() + timeout
        while True:
            text = self.console().replace("\r", "")
            for line in text.splitlines():
                m = pattern.search(line)
                if m:
                    return m
            if time.monotonic() > deadline:
                raise AssertionError(f"{regex!r} not in console:\n{text[-1500:]}")
            time.sleep(0.3)  # polling a file on the node: no event to wait on

    def running(self) -> bool:
        return self.name in self.cluster.virsh(self.node, "list", "--name").split()

    def destroy(self) -> None:
        self.cluster.virsh(self.node, "destroy", self.name, check=False)
        _sh(self.cluster, self.node, f"rm -f {self.disk} {self.log}", check=False)


@pytest.fixture
def guest_run(devcluster: Any, cluster_info: dict[str, Any]) -> Iterator[GuestRun]:
    run = GuestRun(devcluster, cluster_info, "node2", f"dctest{os.getpid()}")
    try:
        yield run
    finally:
        run.destroy()


def _tick_sector(run: GuestRun) -> str:
    return _sh(
        run.cluster,
        run.node,
        f"dd if={run.disk} bs=512 skip=131072 count=1 2>/dev/null | tr -d '\\000'",
    )


@pytest.mark.timeout(400)
def test_guest_pattern_ready_ticks_and_acpi_poweroff(guest_run: GuestRun) -> None:
    guest_run.prepare_disk(80)
    guest_run.start(kernel_args("dcseed", patmb=4, dirtymb=8))
    m = guest_run.wait(guest.PATTERN_RE.pattern)
    assert m.group(1) == "dcseed" and m.group(2) == "4"
    assert m.group(3) == pattern_sha256("dcseed", 4)
    guest_run.wait(r"^GUEST-READY$")
    tick = int(guest_run.wait(r"^tick (\d+)$").group(1))
    guest_run.wait(rf"^tick {tick + 2}$", timeout=30)
    assert re.fullmatch(r"tick \d+", _tick_sector(guest_run))
    # The pattern is on the disk, as the host sees it.
    head = guest_run.cluster.node_exec(
        guest_run.node, ["dd", f"if={guest_run.disk}", "bs=1M", "count=4"]
    ).stdout
    assert head == guest.pattern_bytes("dcseed", 4)

    guest_run.cluster.virsh(guest_run.node, "shutdown", guest_run.name)
    guest_run.wait(r"^GUEST: POWEROFF$", timeout=30)
    deadline = time.monotonic() + 30
    while guest_run.running() and time.monotonic() < deadline:
        time.sleep(0.2)  # waiting for libvirt to notice qemu's exit
    assert not guest_run.running()


@pytest.mark.timeout(400)
def test_guest_ignoreacpi_and_readonly_pattern(guest_run: GuestRun) -> None:
    guest_run.prepare_disk(80)
    # The disk already carries the pattern of seed "keep": writepat=0 must report it.
    _sh(
        guest_run.cluster,
        guest_run.node,
        f"yes keep | tr -d '\\n' | dd of={guest_run.disk} bs=1M count=2 iflag=fullblock "
        "conv=notrunc 2>/dev/null",
    )
    guest_run.start(kernel_args("other", patmb=2, dirtymb=0, writepat=False, ignoreacpi=True))
    m = guest_run.wait(guest.PATTERN_RE.pattern)
    assert m.group(1) == "other" and m.group(3) == pattern_sha256("keep", 2)
    guest_run.wait(r"^GUEST-READY$")
    tick = int(guest_run.wait(r"^tick (\d+)$").group(1))
    guest_run.cluster.virsh(guest_run.node, "shutdown", guest_run.name)
    # Several seconds of ticks after the request: still running, no power-off.
    guest_run.wait(rf"^tick {tick + 5}$", timeout=60)
    assert "GUEST: POWEROFF" not in guest_run.console()
    assert guest_run.running()
