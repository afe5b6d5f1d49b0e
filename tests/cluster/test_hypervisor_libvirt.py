"""LibvirtNodeOps against real nodes: the devcluster's libvirtd, qemu and sshd.

Each test boots at most one small guest (the devcluster test guest) and
removes it at the end, also on failure. Console logs are read over SSH, as
ganeti_lv itself would, so the tests also run against real nodes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from support.waiting import wait_until

from ganeti_lv import constants, objects
from ganeti_lv.config import ConfigStore
from ganeti_lv.devcluster.guest import kernel_args, pattern_sha256
from ganeti_lv.devcluster.layout import LIBVIRT_PORTS
from ganeti_lv.errors import InstanceNotFound, NodeError, NodeUnreachable
from ganeti_lv.hypervisor.libvirt import LibvirtNodeOps
from ganeti_lv.hypervisor.libvirt.domxml import console_log_path
from ganeti_lv.hypervisor.libvirt.host import CONNECT_TIMEOUT, KEEPALIVE_COUNT, KEEPALIVE_INTERVAL
from ganeti_lv.node.tcpinfo import unanswered_for
from ganeti_lv.node.transport import node_call

pytestmark = pytest.mark.cluster

BOOT_TIMEOUT = 120.0
PATTERN_RE = re.compile(r"GUEST: PATTERN seed=(\S+) mb=(\d+) sha256=([0-9a-f]{64})")


@dataclass
class HvEnv:
    """Node operations on the session's cluster, plus the test guest."""

    ops: LibvirtNodeOps
    config: ConfigStore
    kernel: str
    initrd: str

    @property
    def cluster(self) -> objects.Cluster:
        """The cluster settings."""
        return self.config.get_cluster()

    def node(self, idx: int = -1) -> objects.Node:
        """A node of the cluster (by position in sorted order)."""
        node = self.config.get_node(sorted(self.config.node_names())[idx])
        assert node is not None
        return node

    def console(self, node: objects.Node, name: str) -> str:
        """The guest's console log as read on the node over SSH ('' while missing)."""
        res = self.ops.run_command(node, ["cat", console_log_path(name)])
        return res.stdout.replace("\r", "") if res.exit_status == 0 else ""

    def wait_console(
        self,
        node: objects.Node,
        name: str,
        regex: str,
        count: int = 1,
        timeout: float = BOOT_TIMEOUT,
    ) -> list[re.Match[str]]:
        """Wait until ``regex`` matched ``count`` console lines; return the matches."""
        pattern = re.compile(regex)
        deadline = time.monotonic() + timeout
        while True:
            text = self.console(node, name)
            matches = [m for m in map(pattern.search, text.splitlines()) if m]
            if len(matches) >= count:
                return matches
            if time.monotonic() > deadline:
                tail = "\n".join(text.splitlines()[-15:])
                raise AssertionError(f"{regex!r} x{count} not in console of {name}:\n{tail}")
            time.sleep(0.5)  # polling a remote file: there is no event to wait on

    def instance(self, name: str, node: objects.Node, args: str) -> objects.Instance:
        """An instance of the test guest with one 80 MiB disk and one NIC."""
        return objects.Instance(
            name=name,
            primary_node=node.name,
            disk_template=constants.DT_FILE,
            disks=[objects.Disk(size=80)],
            nics=[objects.Nic(mac="52:54:00:4c:56:01", link=self.cluster.default_bridge)],
            beparams={"maxmem": 128, "minmem": 128, "vcpus": 1},
            hvparams={"kernel_path": self.kernel, "initrd_path": self.initrd, "kernel_args": args},
        )


@pytest.fixture(scope="module")
def hv(cluster_info: dict[str, Any]) -> Iterator[HvEnv]:
    """LibvirtNodeOps for the session's cluster (conftest's ``cluster_info``)."""
    info = cluster_info
    config = ConfigStore(info["data_dir"])
    ops = LibvirtNodeOps(info["data_dir"])
    try:
        yield HvEnv(ops, config, info["guest"]["kernel"], info["guest"]["initrd"])
    finally:
        ops.close()


@pytest.fixture
def guest_cleanup(hv: HvEnv) -> Iterator[list[tuple[objects.Node, objects.Instance]]]:
    """Instances registered here are undefined and their disks removed after the test."""
    created: list[tuple[objects.Node, objects.Instance]] = []
    yield created
    for node, inst in created:
        node_call(hv.ops.undefine_instance, node, inst.name)
        node_call(hv.ops.remove_disks, node, hv.cluster, inst)
        node_call(hv.ops.run_command, node, ["rm", "-f", console_log_path(inst.name)])


def _boot(
    hv: HvEnv, cleanup: list[Any], name: str, args: str
) -> tuple[objects.Node, objects.Instance]:
    node = hv.node()
    inst = hv.instance(name, node, args)
    cleanup.append((node, inst))
    hv.ops.undefine_instance(node, name)
    hv.ops.remove_disks(node, hv.cluster, inst)
    node_call(hv.ops.run_command, node, ["rm", "-f", console_log_path(name)])
    hv.ops.create_disks(node, hv.cluster, inst)
    hv.ops.start_instance(node, hv.cluster, inst)
    return node, inst


def test_guest_lifecycle_console_states_and_memory_cap(hv: HvEnv, guest_cleanup: list[Any]) -> None:
    """Start from generated XML, see the ready and pattern lines, pause, reset, shut down."""
    name = "hvtest-life"
    node, inst = _boot(hv, guest_cleanup, name, kernel_args(name, patmb=8, dirtymb=0))
    disk = objects.disk_path(hv.cluster, inst, 0)
    size = hv.ops.run_command(node, ["stat", "-c", "%s", disk]).stdout
    assert int(size) == 80 * 1024 * 1024

    hv.wait_console(node, name, r"^GUEST-READY")
    pattern = hv.wait_console(node, name, PATTERN_RE.pattern)[0]
    assert pattern.group(1) == name
    assert pattern.group(3) == pattern_sha256(name, 8)

    info = hv.ops.instance_info(node, name)
    assert info is not None
    assert info.state == constants.DOMSTATE_RUNNING
    assert (info.memory, info.vcpus, info.persistent) == (128, 1, True)
    assert info.disk_paths == [disk]
    assert info.overlays == []
    assert info.console_log == console_log_path(name)
    assert hv.ops.instance_list(node)[name].state == constants.DOMSTATE_RUNNING

    # starting a running instance is harmless
    hv.ops.start_instance(node, hv.cluster, inst)
    assert len(hv.wait_console(node, name, r"^GUEST-READY")) == 1

    # a memory cap counts the running guest's memory
    capped = dataclasses.replace(node, memory_cap=1000)
    facts = hv.ops.node_info(capped)
    assert facts.memory_total == 1000
    assert facts.memory_free == 1000 - 128

    hv.ops.host(node).guest(name).suspend()
    paused = hv.ops.instance_info(node, name)
    assert paused is not None and paused.state == constants.DOMSTATE_PAUSED
    hv.ops.host(node).guest(name).resume()

    # a hard reboot, as Ganeti's: the guest shuts down cleanly, then starts again
    hv.ops.reboot_instance(node, hv.cluster, inst, "hard", 10)
    hv.wait_console(node, name, r"^GUEST-READY", count=2)
    assert hv.console(node, name).count("GUEST: POWEROFF") == 1

    clean = hv.ops.shutdown_instance(node, inst, 60)
    assert clean is True
    assert hv.console(node, name).count("GUEST: POWEROFF") == 2
    listed = hv.ops.instance_list(node)
    assert listed[name].state == constants.DOMSTATE_SHUTOFF
    assert listed[name].persistent

    hv.ops.undefine_instance(node, name)
    assert hv.ops.instance_info(node, name) is None
    hv.ops.remove_disks(node, hv.cluster, inst)
    gone = node_call(hv.ops.run_command, node, ["test", "-e", objects.disk_dir(hv.cluster, inst)])
    assert gone.Raise("test").exit_status != 0


def test_shutdown_times_out_and_forces_off(hv: HvEnv, guest_cleanup: list[Any]) -> None:
    """A guest ignoring ACPI is powered off after the timeout; the result says not clean."""
    name = "hvtest-noacpi"
    node, inst = _boot(
        hv, guest_cleanup, name, kernel_args(name, patmb=1, dirtymb=0, ignoreacpi=True)
    )
    hv.wait_console(node, name, r"^GUEST-READY")
    started = time.monotonic()
    clean = hv.ops.shutdown_instance(node, inst, 3)
    elapsed = time.monotonic() - started
    assert clean is False
    assert elapsed >= 3
    assert "GUEST: POWEROFF" not in hv.console(node, name)
    info = hv.ops.instance_info(node, name)
    assert info is not None and info.state == constants.DOMSTATE_SHUTOFF


def test_node_info_facts(hv: HvEnv) -> None:
    """Memory, versions, CPU model, distinct host uuids and the guest bridge."""
    uuids = set()
    for idx in range(len(hv.config.node_names())):
        node = dataclasses.replace(hv.node(idx), memory_cap=None)
        facts = hv.ops.node_info(node)
        assert facts.name == node.name
        assert 0 < facts.memory_free <= facts.memory_total
        assert facts.libvirt_version >= 9_000_000
        assert facts.qemu_version >= 7_000_000
        assert facts.cpu_model and facts.cpu_arch == "x86_64"
        assert facts.cpu_count >= 1
        assert hv.cluster.default_bridge in facts.bridges
        uuids.add(facts.host_uuid)
        capped = hv.ops.node_info(dataclasses.replace(node, memory_cap=64))
        assert capped.memory_total == 64
        assert capped.memory_free <= 64
    assert len(uuids) == len(hv.config.node_names())


def test_unknown_domain_errors(hv: HvEnv) -> None:
    """Unknown domains: InstanceNotFound where a domain is required, harmless elsewhere."""
    node = hv.node()
    assert hv.ops.instance_info(node, "hvtest-nosuch") is None
    with pytest.raises(InstanceNotFound):
        hv.ops.host(node).guest("hvtest-nosuch")
    ghost = hv.instance("hvtest-nosuch", node, "")
    res = node_call(hv.ops.reboot_instance, node, hv.cluster, ghost, "soft", 1)
    assert not res.ok and isinstance(res.error, InstanceNotFound)
    assert res.error.ecode == "unknown_entity"
    assert node_call(hv.ops.undefine_instance, node, "hvtest-nosuch").ok
    assert hv.ops.shutdown_instance(node, ghost, 1) is True


def test_unreachable_libvirtd_and_reconnect(hv: HvEnv) -> None:
    """No libvirtd at the URI -> NodeUnreachable; a dropped connection is reopened."""
    node = hv.node()
    dead = dataclasses.replace(node, libvirt_uri=f"qemu+tcp://{node.address}:1/system")
    res = node_call(hv.ops.instance_list, dead)
    assert not res.ok and isinstance(res.error, NodeUnreachable)
    assert res.error.node == node.name

    host = hv.ops.host(node)
    before = hv.ops.instance_list(node)
    host.get_connection().close()  # behind the Host's back
    assert hv.ops.instance_list(node).keys() == before.keys()


@pytest.mark.faults
def test_killed_libvirtd_is_unreachable_then_reconnected(hv: HvEnv, local_devcluster: Any) -> None:
    """A node whose libvirtd died answers NodeUnreachable; after a restart it works again.

    The local cluster records how its libvirtd ended.
    """
    devcluster = local_devcluster
    node = hv.node()
    hv.ops.instance_list(node)
    pid = devcluster.kill_daemon(node.name, "libvirtd")
    try:
        assert pid is not None
        assert wait_until(lambda: devcluster.daemon_end(node.name, "libvirtd", pid), 5)
        end = devcluster.daemon_end(node.name, "libvirtd", pid)
        assert end.endswith(f" libvirtd[{pid}] killed by signal 9 (SIGKILL)"), end
        res = node_call(hv.ops.instance_list, node)
        assert not res.ok and isinstance(res.error, NodeUnreachable)
        assert res.error.node == node.name
    finally:
        devcluster.start_daemon(node.name, "libvirtd")
    assert isinstance(hv.ops.instance_list(node), dict)


@pytest.mark.faults
def test_libvirt_calls_after_the_node_forgot_the_kept_connection_work(
    hv: HvEnv, local_devcluster: Any
) -> None:
    """libvirtd drops our connection while the node's link is down (as its restart does).

    Its reset never arrives, and the link is back well within keepalive's 12 s:
    the kept connection still looks alive, and the first request on it is
    answered by a reset. The lookups and lists a job starts with must not fail
    for that.
    """
    node = hv.node()
    before = hv.ops.instance_list(node)
    host = hv.ops.host(node)
    kept = host.get_connection()
    ports = " or ".join(f"sport = :{port}" for port in LIBVIRT_PORTS.values())
    with _link_cut(local_devcluster, node):
        local_devcluster.node_exec(node.name, ["ss", "-K", "-t", f"( {ports} )"])
    assert kept.isAlive()  # nothing told the client
    assert hv.ops.instance_list(node).keys() == before.keys()
    assert host.get_connection() is not kept


@pytest.mark.faults
@pytest.mark.timeout(120)
def test_a_libvirt_call_that_keepalive_ended_is_not_repeated(
    hv: HvEnv, local_devcluster: Any
) -> None:
    """A call that began just before keepalive gave up on a cut-off node is not made again.

    It fails as soon as keepalive gives up, with keepalive's own error; made
    again on a new connection, it would wait for the connect timeout.
    Keepalive gives up 11-13 s after the node's last answer (whole-second
    clock): the call begins 1.5 s before 12 s. Begun later than that, it
    would go to a new connection and the test would fail, never pass falsely.
    """
    node = hv.node()
    hv.ops.instance_list(node)  # the node's last answer
    silent_for = KEEPALIVE_INTERVAL * (KEEPALIVE_COUNT + 1)  # until keepalive gives up
    with _link_cut(local_devcluster, node):
        time.sleep(silent_for - 1.5)
        started = time.monotonic()
        res = node_call(hv.ops.instance_list, node)
        took = time.monotonic() - started
    assert not res.ok and isinstance(res.error, NodeUnreachable)
    assert "keepalive timeout" in str(res.error)
    assert took < CONNECT_TIMEOUT
    assert wait_until(lambda: node_call(hv.ops.instance_list, node).ok, 60, 0.5)


def _fails_within(call: Any) -> float:
    """Seconds until ``call()`` raised a NodeError (it must raise one)."""
    start = time.monotonic()
    with pytest.raises(NodeError):
        call()
    return time.monotonic() - start


def _ssh_works(ssh: Any) -> bool:
    try:
        ssh.run(["true"])
    except NodeError:
        return False
    return True


def _ssh_in_use(hv: HvEnv) -> tuple[objects.Node, Any]:
    """A node and its SSH client with the connection and the SFTP session open."""
    node = hv.node()
    ssh = hv.ops.ssh(node)
    ssh.run(["true"])
    ssh.listdir("/")
    return node, ssh


@contextlib.contextmanager
def _link_cut(devcluster: Any, node: objects.Node) -> Iterator[None]:
    """The node's link is down inside the block (and back after it, whatever happens)."""
    devcluster.cut_link(node.name)
    try:
        yield
    finally:
        devcluster.restore_link(node.name)


def _node_forgets_its_ssh_connections(devcluster: Any, node: objects.Node) -> None:
    """The node's end of every SSH connection is gone, as after a reboot (its reset may be lost)."""
    devcluster.node_exec(node.name, ["ss", "-K", "-t", "state", "established", "( sport = :22 )"])


@pytest.mark.faults
@pytest.mark.timeout(300)
def test_ssh_calls_to_a_node_whose_link_is_cut_fail_instead_of_hanging(
    hv: HvEnv, local_devcluster: Any
) -> None:
    """Open SSH connection and SFTP session, then the link goes: no call hangs.

    The first call waits for its answer as long as an SFTP request may (60 s);
    a command waits for its channel (10 s), and so does a new SFTP session
    (paramiko's own open waited up to an hour).
    """
    node, ssh = _ssh_in_use(hv)
    with _link_cut(local_devcluster, node):
        took = {
            "sftp on the open session": _fails_within(lambda: ssh.listdir("/")),
            "a command": _fails_within(lambda: ssh.run(["true"])),
            "sftp on a new session": _fails_within(lambda: ssh.listdir("/")),
        }
    assert all(seconds < 75 for seconds in took.values()), took
    # the node is back: the next call connects again
    assert wait_until(lambda: _ssh_works(ssh), 60, 1.0)
    assert ssh.listdir("/")


@pytest.mark.faults
def test_ssh_calls_after_the_node_forgot_the_kept_connection_work(
    hv: HvEnv, local_devcluster: Any
) -> None:
    """The node drops our SSH connection while we cannot hear it (as a reboot does).

    With the link cut, the node's end of the connection is killed (its reset
    never arrives); with the link back, the kept connection still looks open,
    and the first packet on it is answered by a reset. The next SFTP request
    and the next command must not fail for that.
    """
    node, ssh = _ssh_in_use(hv)
    with _link_cut(local_devcluster, node):
        _node_forgets_its_ssh_connections(local_devcluster, node)
    assert ssh.connected  # nothing told the client
    assert "etc" in ssh.listdir("/")
    assert ssh.run(["echo", "back"]).stdout == "back\n"


@pytest.mark.faults
@pytest.mark.timeout(180)
def test_ssh_calls_after_the_node_came_back_while_tcp_was_resending_work(
    hv: HvEnv, local_devcluster: Any
) -> None:
    """As above, but TCP was sending to the node while it was away (a keepalive).

    Only TCP's next retransmission would meet the node's reset. Once the data
    has waited the connect timeout (10 s: the retransmission at 12.6 s after
    the send, from the 200 ms minimum), the next one is 12.8 s off, longer
    than a channel's 10 s wait: waiting for it fails the call. The kernel's
    account of the unanswered data tells the connection is dead before use.
    """
    node, ssh = _ssh_in_use(hv)
    transport = ssh._transport()[0]
    with _link_cut(local_devcluster, node):
        transport.send_ignore()
        _node_forgets_its_ssh_connections(local_devcluster, node)
        assert wait_until(lambda: unanswered_for(transport.sock) >= ssh.connect_timeout, 30, 0.2)
    start = time.monotonic()
    assert ssh.run(["echo", "back"]).stdout == "back\n"
    assert time.monotonic() - start < ssh.connect_timeout
    assert "etc" in ssh.listdir("/")
