"""LibvirtNodeOps logic on stub hosts, guests and SSH (no daemon, fake clock)."""

from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from ganeti_lv import constants, objects
from ganeti_lv.errors import (
    ECODE_EXISTS,
    ECODE_STATE,
    HypervisorError,
    InstanceNotFound,
    NodeUnreachable,
)
from ganeti_lv.hypervisor.base import DomainInfo
from ganeti_lv.hypervisor.export_types import SnapshotInfo
from ganeti_lv.hypervisor.libvirt import LibvirtNodeOps, domxml, exportops
from ganeti_lv.hypervisor.libvirt.nodeops import NODE_COMMAND_TIMEOUT, default_libvirt_uri
from ganeti_lv.node.transport import CommandResult, node_call


class FakeClock:
    """A clock that only moves when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


class StubGuest:
    """Records calls; stops ``stops_after`` polls after a shutdown request."""

    def __init__(
        self,
        name: str,
        active: bool = True,
        stops_after: int | None = None,
        paused: bool = False,
        acpi: bool = True,
    ) -> None:
        self.name = name
        self.active = active
        self.paused = paused
        self.acpi = acpi
        self.stops_after = stops_after
        self.calls: list[str] = []
        self._polls = 0
        self._shutdown_requested = False

    def is_active(self) -> bool:
        if self._shutdown_requested and self.stops_after is not None:
            self._polls += 1
            if self._polls > self.stops_after:
                self.active = False
        return self.active

    def state(self) -> str:
        if not self.active:
            return constants.DOMSTATE_SHUTOFF
        return constants.DOMSTATE_PAUSED if self.paused else constants.DOMSTATE_RUNNING

    def xml(self) -> str:
        features = "<features><acpi/></features>" if self.acpi else "<features/>"
        return f"<domain><name>{self.name}</name>{features}</domain>"

    def shutdown(self) -> None:
        self.calls.append("shutdown")
        if self.paused:  # as libvirt's qemu driver answers
            raise HypervisorError("Requested operation is not valid: domain is not running")
        self._shutdown_requested = True

    def destroy(self) -> None:
        self.calls.append("destroy")
        self.active = False

    def start(self, paused: bool = False) -> None:
        self.calls.append("start paused" if paused else "start")
        self.active = True

    def undefine(self) -> None:
        self.calls.append("undefine")

    def reboot(self) -> None:
        self.calls.append("reboot")

    def info(self) -> DomainInfo:
        state = constants.DOMSTATE_RUNNING if self.active else constants.DOMSTATE_SHUTOFF
        return DomainInfo(name=self.name, state=state, memory=128, vcpus=1)


class StubHost:
    """A node's libvirt with a dict of guests."""

    def __init__(self, guests: dict[str, StubGuest], bridges: list[str] | None = None) -> None:
        self.guests = guests
        self.defined: list[str] = []
        self.libvirt_bridges = bridges

    def find_guest(self, name: str) -> StubGuest | None:
        return self.guests.get(name)

    def guest(self, name: str) -> StubGuest:
        if name not in self.guests:
            raise InstanceNotFound(f"no domain {name}")
        return self.guests[name]

    def define(self, xml: str) -> StubGuest:
        self.defined.append(xml)
        name = domxml.ET.fromstring(xml).findtext("name") or ""
        guest = self.guests.setdefault(name, StubGuest(name, active=False))
        return guest

    def start_once(self, xml: str, paused: bool = False) -> StubGuest:
        name = domxml.ET.fromstring(xml).findtext("name") or ""
        guest = self.guests[name]  # defined first
        guest.calls.append(("start once paused " if paused else "start once ") + xml)
        return guest

    def list_guests(self) -> list[StubGuest]:
        return list(self.guests.values())

    def node_info(self) -> list[Any]:
        return ["x86_64", 8000, 2, 2000, 1, 1, 2, 1]

    def capabilities(self) -> domxml.HostCapabilities:
        return domxml.HostCapabilities("u-1", "x86_64", "Westmere")

    def versions(self) -> tuple[int, int]:
        return 9_000_000, 7_002_000

    def free_memory_mib(self) -> int:
        return 5000

    def hostname(self) -> str:
        return "node1"

    def bridges(self) -> list[str] | None:
        return self.libvirt_bridges


class StubSsh:
    """Records commands; answers with a fixed result."""

    def __init__(self, result: CommandResult | None = None, files: set[str] | None = None) -> None:
        self.commands: list[Any] = []
        self.result = result or CommandResult(0, "", "")
        self.files = files or set()
        self.stats: list[str] = []
        self.timeouts: list[float | None] = []

    def exists(self, path: str) -> bool:
        self.stats.append(path)
        return path in self.files

    def run(self, cmd: Any, timeout: float | None = None, check: bool = True) -> CommandResult:
        self.commands.append(cmd)
        self.timeouts.append(timeout)
        return self.result

    def close(self) -> None:
        pass

    def release(self) -> None:
        pass


NODE = objects.Node(name="node1", address="10.250.0.1")
CLUSTER = objects.Cluster(name="c", master_node="node1", domain_type="qemu")


def _instance(name: str = "web1") -> objects.Instance:
    return objects.Instance(
        name=name,
        primary_node="node1",
        disk_template=constants.DT_FILE,
        disks=[objects.Disk(size=80), objects.Disk(size=10)],
    )


def _ops(
    host: StubHost, ssh: StubSsh | None = None, clock: FakeClock | None = None
) -> LibvirtNodeOps:
    clock = clock or FakeClock()
    ops = LibvirtNodeOps(
        "/nonexistent",
        ssh_factory=lambda node: ssh or StubSsh(),
        clock=clock,
        sleep=clock.sleep,
        poll_interval=0.5,
    )
    ops.host = lambda node: host  # type: ignore[assignment,method-assign,return-value]
    return ops


def test_shutdown_clean_within_timeout() -> None:
    guest = StubGuest("web1", stops_after=3)
    clock = FakeClock()
    res = node_call(
        _ops(StubHost({"web1": guest}), clock=clock).shutdown_instance, NODE, _instance(), 10
    )
    assert res.Raise("shutdown") is True
    assert guest.calls == ["shutdown"]
    assert sum(clock.slept) == pytest.approx(2.0)


def test_shutdown_timeout_forces_off() -> None:
    guest = StubGuest("web1", stops_after=None)
    clock = FakeClock()
    res = node_call(
        _ops(StubHost({"web1": guest}), clock=clock).shutdown_instance, NODE, _instance(), 3.2
    )
    assert res.Raise("shutdown") is False
    assert guest.calls == ["shutdown", "destroy"]
    assert sum(clock.slept) == pytest.approx(3.2)
    assert max(clock.slept) <= 0.5


def test_shutdown_presses_the_power_button_again_until_timeout() -> None:
    """A guest that missed the first press (still booting) gets more presses."""
    guest = StubGuest("web1", stops_after=None)
    clock = FakeClock()
    res = node_call(
        _ops(StubHost({"web1": guest}), clock=clock).shutdown_instance, NODE, _instance(), 12
    )
    assert res.Raise("shutdown") is False
    assert guest.calls == ["shutdown", "shutdown", "shutdown", "destroy"]


def test_shutdown_press_on_a_guest_that_just_stopped_is_clean() -> None:
    class StopsAtSecondPress(StubGuest):
        def shutdown(self) -> None:
            super().shutdown()
            if self.calls.count("shutdown") == 2:
                self.active = False
                raise HypervisorError("Requested operation is not valid: domain is not running")

    guest = StopsAtSecondPress("web1", stops_after=None)
    res = node_call(_ops(StubHost({"web1": guest})).shutdown_instance, NODE, _instance(), 30)
    assert res.Raise("shutdown") is True
    assert guest.calls == ["shutdown", "shutdown"]


def test_shutdown_of_a_guest_paused_while_it_shuts_down_stops_it_at_once() -> None:
    """qemu pauses a guest whose disk fills while it shuts down: the next press is
    refused, and the guest is stopped then, not left paused with the shutdown failed."""

    class PausedAfterFirstPress(StubGuest):
        def shutdown(self) -> None:
            super().shutdown()
            self.paused = True

    guest = PausedAfterFirstPress("web1", stops_after=None)
    clock = FakeClock()
    res = node_call(
        _ops(StubHost({"web1": guest}), clock=clock).shutdown_instance, NODE, _instance(), 60
    )
    assert res.Raise("shutdown") is False
    assert guest.calls == ["shutdown", "shutdown", "destroy"]
    assert sum(clock.slept) < 10  # not the whole timeout


def test_shutdown_zero_timeout_destroys_at_once() -> None:
    guest = StubGuest("web1")
    clock = FakeClock()
    res = node_call(
        _ops(StubHost({"web1": guest}), clock=clock).shutdown_instance, NODE, _instance(), 0
    )
    assert res.Raise("shutdown") is False
    assert guest.calls == ["destroy"]
    assert clock.slept == []


@pytest.mark.parametrize(
    "guest",
    [StubGuest("web1", paused=True), StubGuest("web1", acpi=False)],
    ids=["paused", "without-acpi"],
)
def test_shutdown_of_a_guest_the_power_button_cannot_stop_destroys_it_at_once(
    guest: StubGuest,
) -> None:
    """A paused guest (libvirt refuses the press) and one without ACPI (qemu ignores
    it) are stopped at once, reported as not shut down cleanly."""
    clock = FakeClock()
    res = node_call(
        _ops(StubHost({"web1": guest}), clock=clock).shutdown_instance, NODE, _instance(), 120
    )
    assert res.Raise("shutdown") is False
    assert guest.calls == ["destroy"] and not guest.active
    assert clock.slept == []


def test_shutdown_of_a_transient_domain_gone_meanwhile_is_clean() -> None:
    class Vanishes(StubGuest):
        def state(self) -> str:
            raise InstanceNotFound("no domain web1")

    res = node_call(
        _ops(StubHost({"web1": Vanishes("web1")})).shutdown_instance, NODE, _instance(), 5
    )
    assert res.Raise("shutdown") is True


def test_shutdown_of_stopped_or_unknown_domain_is_clean() -> None:
    stopped = StubGuest("web1", active=False)
    ops = _ops(StubHost({"web1": stopped}))
    assert ops.shutdown_instance(NODE, _instance(), 5) is True
    assert stopped.calls == []
    assert _ops(StubHost({})).shutdown_instance(NODE, _instance(), 5) is True


def test_start_defines_then_starts_and_is_idempotent() -> None:
    host = StubHost({})
    ops = _ops(host)
    ops.start_instance(NODE, CLUSTER, _instance())
    assert len(host.defined) == 1
    assert domxml.ET.fromstring(host.defined[0]).get("type") == "qemu"
    assert host.guests["web1"].calls == ["start"]
    ops.start_instance(NODE, CLUSTER, _instance())
    assert len(host.defined) == 1
    assert host.guests["web1"].calls == ["start"]


def test_a_start_with_temporary_parameters_runs_them_once_over_the_configured_definition() -> None:
    host = StubHost({})
    ops = _ops(host)
    ops.start_instance(
        NODE,
        CLUSTER,
        _instance(),
        hvparams={"kernel_path": "/boot/vmlinuz", "kernel_args": "single"},
        beparams={"maxmem": 512},
    )
    (defined,) = host.defined  # the configuration's, for every later start
    assert domxml.ET.fromstring(defined).findtext("memory") != "512"
    assert "single" not in defined and "/boot/vmlinuz" not in defined
    (call,) = host.guests["web1"].calls
    assert call.startswith("start once <domain")
    live = domxml.ET.fromstring(call.removeprefix("start once "))
    assert live.findtext("memory") == "512" and live.findtext("os/cmdline") == "single"
    # paused, without temporary parameters: the defined domain, started paused
    host = StubHost({})
    _ops(host).start_instance(NODE, CLUSTER, _instance(), paused=True)
    assert host.guests["web1"].calls == ["start paused"]


def test_start_rejects_bad_names_before_touching_libvirt() -> None:
    host = StubHost({})
    res = node_call(_ops(host).start_instance, NODE, CLUSTER, _instance("bad name;rm"))
    assert not res.ok and isinstance(res.error, HypervisorError)
    assert host.defined == []


def test_reboot_types() -> None:
    guest = StubGuest("web1")
    ops = _ops(StubHost({"web1": guest}))
    ops.reboot_instance(NODE, CLUSTER, _instance(), "soft", 5)
    assert guest.calls == ["reboot"]
    # hard, as Ganeti's, and full: a clean shutdown, then a start (no reset)
    for kind in ("hard", "full"):
        guest.calls.clear()
        guest.stops_after, guest._polls, guest._shutdown_requested = 0, 0, False
        ops.reboot_instance(NODE, CLUSTER, _instance(), kind, 5)
        assert guest.calls == ["shutdown", "start"], kind
    stopped = StubGuest("web2", active=False)
    res = node_call(
        _ops(StubHost({"web2": stopped})).reboot_instance,
        NODE,
        CLUSTER,
        _instance("web2"),
        "soft",
        5,
    )
    assert not res.ok and res.error is not None and res.error.ecode == ECODE_STATE


def test_undefine_destroys_then_undefines_and_ignores_absent() -> None:
    guest = StubGuest("web1")
    ops = _ops(StubHost({"web1": guest}))
    ops.undefine_instance(NODE, "web1")
    assert guest.calls == ["destroy", "undefine"]
    assert node_call(ops.undefine_instance, NODE, "nosuch").ok


def test_create_disks_script_and_existing_image() -> None:
    ssh = StubSsh()
    _ops(StubHost({}), ssh).create_disks(NODE, CLUSTER, _instance())
    script = ssh.commands[0]
    directory = objects.disk_dir(CLUSTER, _instance())
    assert f"mkdir -p -- {directory}" in script
    assert f"truncate -s 80M -- {objects.disk_path(CLUSTER, _instance(), 0)}" in script
    assert f"truncate -s 10M -- {objects.disk_path(CLUSTER, _instance(), 1)}" in script
    # a new instance gets a fresh console log, once its disks were made
    assert script.splitlines()[-1] == f"rm -f -- {domxml.console_log_path('web1')}"
    exists = StubSsh(CommandResult(17, "", "/srv/x/disk0.img\n"))
    res = node_call(_ops(StubHost({}), exists).create_disks, NODE, CLUSTER, _instance())
    assert not res.ok and res.error is not None and res.error.ecode == ECODE_EXISTS
    assert "/srv/x/disk0.img already exists" in (res.fail_msg or "")


def test_storage_commands_are_bounded() -> None:
    """A hung mount (NFS) under an instance's disks ends the job instead of holding its
    locks for ever: every command on the node's storage has a timeout."""
    ssh = StubSsh()
    ops = _ops(StubHost({}), ssh)
    ops.create_disks(NODE, CLUSTER, _instance())
    ops.remove_disks(NODE, CLUSTER, _instance())
    ops.prepare_node_dirs(NODE, ["/var/log/libvirt/qemu/web1.console.log"])
    assert len(ssh.timeouts) == 3
    assert all(t is not None and 0 < t <= NODE_COMMAND_TIMEOUT for t in ssh.timeouts)


def test_create_disks_refused_for_one_existing_image_makes_none(tmp_path: Path) -> None:
    """The node script, run here: disk1 exists, so not even disk0 is made."""
    cluster = objects.Cluster(
        name="c", master_node="node1", domain_type="qemu", file_storage_dir=str(tmp_path)
    )
    inst = _instance()
    ssh = StubSsh()
    _ops(StubHost({}), ssh).create_disks(NODE, cluster, inst)
    script = "\n".join(ssh.commands[0].splitlines()[:-1])  # not the console log's removal
    first, second = objects.disk_path(cluster, inst, 0), objects.disk_path(cluster, inst, 1)
    os.makedirs(os.path.dirname(second))
    open(second, "w").close()
    res = subprocess.run(["sh", "-c", script], capture_output=True, text=True)
    assert res.returncode == 17 and res.stderr.strip() == second
    assert not os.path.exists(first)
    os.unlink(second)
    assert subprocess.run(["sh", "-c", script]).returncode == 0
    assert os.path.getsize(first) == 80 << 20 and os.path.getsize(second) == 10 << 20


def _remove_disks_here(tmp_path: Path) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """The node script of remove_disks, run here on the instance's directory in tmp_path."""
    cluster = objects.Cluster(
        name="c", master_node="node1", domain_type="qemu", file_storage_dir=str(tmp_path)
    )
    ssh = StubSsh()
    _ops(StubHost({}), ssh).remove_disks(NODE, cluster, _instance())
    [cmd] = ssh.commands
    res = subprocess.run(cmd, capture_output=True, text=True)
    return Path(objects.disk_dir(cluster, _instance())), res


def test_remove_disks_removes_the_instance_directory(tmp_path: Path) -> None:
    directory = tmp_path / "web1"
    directory.mkdir()
    for name in ("disk0.img", "disk1.img", "disk0.img.export-snap.qcow2", "disk1.img.part.42"):
        (directory / name).write_text("x")
    path, res = _remove_disks_here(tmp_path)
    assert path == directory and res.returncode == 0 and not directory.exists()
    assert _remove_disks_here(tmp_path)[1].returncode == 0  # nothing left: nothing to do


def test_remove_disks_keeps_what_is_not_the_instances(tmp_path: Path) -> None:
    """A storage dir shared with other files: the disks go, the rest and its directory stay."""
    directory = tmp_path / "web1"
    (directory / "lib").mkdir(parents=True)
    for name in ("disk0.img", "disk0.img.export-snap.qcow2", "diskette.iso", "precious"):
        (directory / name).write_text("x")
    _, res = _remove_disks_here(tmp_path)
    assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in directory.iterdir()) == ["diskette.iso", "lib", "precious"]


def test_remove_disks_through_a_link_removes_the_disks_and_the_link(tmp_path: Path) -> None:
    elsewhere = tmp_path / "big-disk" / "web1"
    elsewhere.mkdir(parents=True)
    (elsewhere / "disk0.img").write_text("x")
    (tmp_path / "web1").symlink_to(elsewhere)
    _, res = _remove_disks_here(tmp_path)
    assert res.returncode == 0, res.stderr
    assert not (tmp_path / "web1").is_symlink() and list(elsewhere.iterdir()) == []


def test_node_info_memory_cap_counts_running_domains() -> None:
    host = StubHost({"a": StubGuest("a"), "b": StubGuest("b", active=False)})
    ssh = StubSsh(CommandResult(0, "gnt-br0\nvirbr1\n", ""))
    ops = _ops(host, ssh)
    facts = ops.node_info(NODE)
    assert (facts.memory_total, facts.memory_free) == (8000, 5000)
    assert facts.bridges == ["gnt-br0", "virbr1"]
    assert (facts.cpu_model, facts.host_uuid, facts.hostname) == ("Westmere", "u-1", "node1")
    capped = objects.Node(name="node1", address="10.250.0.1", memory_cap=300)
    facts = ops.node_info(capped)
    assert (facts.memory_total, facts.memory_free) == (300, 300 - 128)
    assert facts.memory_free_capped
    # a cap above what the host has free: the host's figure, which says so
    roomy = objects.Node(name="node1", address="10.250.0.1", memory_cap=7000)
    assert (ops.node_info(roomy).memory_free, ops.node_info(roomy).memory_free_capped) == (
        5000,
        False,
    )
    assert not ops.node_info(NODE).memory_free_capped


def test_node_info_takes_bridges_from_libvirt_without_a_shell() -> None:
    ssh = StubSsh(CommandResult(0, "wrong\n", ""))
    ops = _ops(StubHost({}, bridges=["gnt-br0"]), ssh)
    assert ops.node_info(NODE).bridges == ["gnt-br0"]
    assert ssh.commands == []


def test_paths_exist_asks_sftp_and_runs_no_command() -> None:
    ssh = StubSsh(files={"/srv/a"})
    ops = _ops(StubHost({}), ssh)
    assert ops.paths_exist(NODE, ["/srv/a", "/srv/b"]) == {
        "/srv/a": True,
        "/srv/b": False,
    }
    assert ssh.stats == ["/srv/a", "/srv/b"]
    assert ops.paths_exist(NODE, []) == {}
    assert ssh.commands == []


def test_offline_node_is_not_contacted() -> None:
    host = StubHost({})
    offline = objects.Node(name="node1", address="10.250.0.1", offline=True)
    res = node_call(_ops(host).start_instance, offline, CLUSTER, _instance())
    assert res.offline and host.defined == []


def test_default_uri_uses_ssh_with_the_cluster_key_and_known_hosts() -> None:
    node = objects.Node(name="n", address="10.0.0.5", ssh_port=2222)
    uri = default_libvirt_uri(node, "/d/ssh/id_cluster", "/d/ssh/known_hosts")
    assert uri == (
        "qemu+libssh://root@10.0.0.5:2222/system?keyfile=/d/ssh/id_cluster"
        "&known_hosts=/d/ssh/known_hosts&known_hosts_verify=normal&sshauth=privkey"
    )
    assert LibvirtNodeOps("/d").libvirt_uri(node) == uri
    explicit = objects.Node(name="n", address="x", libvirt_uri="qemu+tcp://10.0.0.5/system")
    assert LibvirtNodeOps("/d").libvirt_uri(explicit) == "qemu+tcp://10.0.0.5/system"


def test_tls_uris_get_the_masters_client_certificate() -> None:
    ops = LibvirtNodeOps("/d")
    tls = objects.Node(name="n", address="x", libvirt_uri="qemu+tls://10.0.0.5/system")
    assert ops.libvirt_uri(tls) == "qemu+tls://10.0.0.5/system?pkipath=/d/pki/libvirt"
    with_params = objects.Node(name="n", address="x", libvirt_uri="qemu+tls://h/system?x=1")
    assert ops.libvirt_uri(with_params) == "qemu+tls://h/system?x=1&pkipath=/d/pki/libvirt"
    own = objects.Node(name="n", address="x", libvirt_uri="qemu+tls://h/system?pkipath=/p")
    assert ops.libvirt_uri(own) == "qemu+tls://h/system?pkipath=/p"


def test_file_paths_in_uris_are_escaped_as_libvirt_decodes_them() -> None:
    """A data dir named with a space, '&' or '#' keeps each path whole in the URI."""
    node = objects.Node(name="n", address="10.0.0.5")
    uri = default_libvirt_uri(node, "/d d/k&x", "/d#d/h")
    assert " " not in uri and "keyfile=/d%20d/k%26x&known_hosts=/d%23d/h&" in uri
    query = parse_qs(urlsplit(uri).query)
    assert (query["keyfile"], query["known_hosts"]) == (["/d d/k&x"], ["/d#d/h"])
    tls = objects.Node(name="n", address="x", libvirt_uri="qemu+tls://10.0.0.5/system")
    assert LibvirtNodeOps("/a b").libvirt_uri(tls).endswith("?pkipath=/a%20b/pki/libvirt")


class WarmSsh(StubSsh):
    """A StubSsh that records its warm-up."""

    def __init__(self) -> None:
        super().__init__()
        self.warmed = threading.Event()

    connected = False

    def warm_up(self) -> bool:
        self.warmed.set()
        return True


def test_prewarm_warms_online_nodes_and_keeps_their_clients() -> None:
    clients: dict[str, WarmSsh] = {}

    def factory(node: objects.Node) -> WarmSsh:
        clients[node.name] = WarmSsh()
        return clients[node.name]

    ops = LibvirtNodeOps("/nonexistent", ssh_factory=factory)
    online = objects.Node(name="node1", address="10.250.0.1")
    offline = objects.Node(name="node2", address="10.250.0.2", offline=True)
    ops.prewarm([online, offline])
    assert clients["node1"].warmed.wait(5)
    assert "node2" not in clients  # an offline node is never contacted
    assert ops.ssh(online) is clients["node1"]  # the operation uses the warmed client


def test_prewarm_without_a_thread_to_be_had_is_only_a_hint_not_taken(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = WarmSsh()
    ops = LibvirtNodeOps("/nonexistent", ssh_factory=lambda node: client)

    def no_thread(thread: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threading.Thread, "start", no_thread)
    ops.prewarm([objects.Node(name="node1", address="10.250.0.1")])  # no error
    assert not client.warmed.is_set()


class AddressedSsh:
    """A client that knows where it connects, as SshClient does."""

    def __init__(self, node: objects.Node) -> None:
        self.host, self.port, self.user = node.address, node.ssh_port, node.ssh_user
        self.released = False

    def release(self) -> None:
        self.released = True


def test_a_node_readded_elsewhere_gets_a_new_client_and_is_prepared_again() -> None:
    """A long-lived NodeOps (the master daemon's) follows a node's new address."""
    made: list[AddressedSsh] = []

    def factory(node: objects.Node) -> AddressedSsh:
        made.append(AddressedSsh(node))
        return made[-1]

    ops = LibvirtNodeOps("/nonexistent", ssh_factory=factory)
    node = objects.Node(name="node1", address="10.250.0.1")
    first = ops.ssh(node)
    assert ops.ssh(node) is first
    ops._prepared["node1"] = {"/var/log/libvirt/qemu"}
    moved = objects.Node(name="node1", address="10.250.0.9")
    second = ops.ssh(moved)
    assert second is not first and first.released
    assert (second.host, second.port) == ("10.250.0.9", 22)
    assert "node1" not in ops._prepared
    other_port = objects.Node(name="node1", address="10.250.0.9", ssh_port=2222)
    assert ops.ssh(other_port) is not second


def test_node_directories_and_logs_are_made_once_per_node_and_client() -> None:
    """A long-lived NodeOps asks a node to make a log and its directory once, not every time."""
    ssh = StubSsh()
    ops = _ops(StubHost({}), ssh)
    log = "/var/log/libvirt/qemu/web1-console.log"
    ops.prepare_node_dirs(NODE, [log])
    assert ssh.commands == [f"mkdir -p -- /var/log/libvirt/qemu && touch -- {log}"]
    ops.prepare_node_dirs(NODE, [log])
    ops.prepare_node_dirs(NODE)
    assert len(ssh.commands) == 1
    # a serial log elsewhere: only it and its directory are made
    ops.prepare_node_dirs(NODE, ["/srv/consoles/web1.log", log])
    assert ssh.commands[1:] == ["mkdir -p -- /srv/consoles && touch -- /srv/consoles/web1.log"]
    # another node is asked on its own
    ops.prepare_node_dirs(objects.Node(name="node2", address="10.250.0.2"), [log])
    assert len(ssh.commands) == 3
    # a new instance of the name removes its log on its node: the log is made again
    ops.create_disks(NODE, CLUSTER, _instance())
    ops.prepare_node_dirs(NODE, [log])
    assert ssh.commands[-1] == f"touch -- {log}"
    # a node whose SSH client was dropped (a failure, a re-add) is asked again
    ops._drop_ssh("node1")
    ops.prepare_node_dirs(NODE, [log])
    assert ssh.commands[-1] == f"mkdir -p -- /var/log/libvirt/qemu && touch -- {log}"


class _PausedStartGuest(StubGuest):
    """Starts paused; its resume fails (a qemu or libvirt error)."""

    def start(self, paused: bool = False) -> None:
        self.calls.append("start_paused" if paused else "start")
        self.active = True

    def resume(self) -> None:
        self.calls.append("resume")
        raise HypervisorError("Cannot resume web1: internal error", node="node1")


def test_a_failed_resume_after_the_snapshot_leaves_the_guest_stopped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Not paused on its overlays with nothing to merge them: stopped, started later
    from its definition on its own disks."""
    guest = _PausedStartGuest("web1", active=False)
    made: list[str] = []

    def create(g: Any, runner: Any, node: str, freeze: bool = True) -> SnapshotInfo:
        made.append(g.name)
        return SnapshotInfo(g.name, node)

    monkeypatch.setattr(exportops.diskchain, "create", create)
    ops = _ops(StubHost({"web1": guest}))
    with pytest.raises(HypervisorError, match="Cannot resume"):
        ops.start_with_snapshot(NODE, CLUSTER, _instance())
    assert made == ["web1"]
    assert guest.calls == ["start_paused", "resume", "destroy"] and not guest.active


@pytest.mark.parametrize("lost_for", [1, 2])
def test_a_failed_resume_whose_stop_fails_too_reports_the_resume(
    monkeypatch: pytest.MonkeyPatch, lost_for: int
) -> None:
    """The connection lost, say: the stop is tried once more on a new look-up (a new
    connection), and its error does not replace the cause."""

    class LostGuest(_PausedStartGuest):
        def destroy(self) -> None:
            self.calls.append("destroy")
            if self.calls.count("destroy") <= lost_for:
                raise NodeUnreachable("connection lost", node="node1")
            self.active = False

    guest = LostGuest("web1", active=False)
    monkeypatch.setattr(
        exportops.diskchain, "create", lambda g, r, node, freeze=True: SnapshotInfo(g.name, node)
    )
    with pytest.raises(HypervisorError, match="Cannot resume"):
        _ops(StubHost({"web1": guest})).start_with_snapshot(NODE, CLUSTER, _instance())
    assert guest.calls == ["start_paused", "resume", "destroy", "destroy"]
    # stopped by the second try; left paused (active) when that fails too
    assert guest.active == (lost_for == 2)
