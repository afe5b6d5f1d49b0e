"""Host: facts asked once per connection; a lost kept connection is replaced for host calls."""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

import libvirt
import pytest
from support.libvirt_errors import connection_lost, libvirt_error
from support.overlap import Overlap
from support.queued import queued_failures

from ganeti_lv import retry
from ganeti_lv.errors import HypervisorError, NodeUnreachable
from ganeti_lv.hypervisor.libvirt import host as host_module
from ganeti_lv.hypervisor.libvirt.host import Host
from ganeti_lv.hypervisor.libvirt.nodeops import LibvirtNodeOps
from ganeti_lv.objects import Node

CAPS = (
    "<capabilities><host><uuid>0f0e</uuid><cpu><arch>x86_64</arch><model>qemu64</model>"
    "</cpu></host></capabilities>"
)


class FakeConn:
    """Counts the calls a Host makes; ``alive`` False plays a dropped connection."""

    def __init__(self, calls: Counter[str], generation: int) -> None:
        self.calls = calls
        self.generation = generation
        self.alive = True
        self.closed = False
        # method name -> the error its next calls raise
        self.fail: dict[str, libvirt.libvirtError] = {}

    def isAlive(self) -> bool:
        return self.alive

    def close(self) -> int:
        self.closed = True
        return 0

    def _count(self, name: str, value: Any) -> Any:
        self.calls[name] += 1
        if name in self.fail:
            raise self.fail[name]
        return value

    def getCapabilities(self) -> str:
        return self._count("caps", CAPS)

    def getInfo(self) -> list[Any]:
        return self._count("info", ["x86_64", 4096 * self.generation, 2, 0, 1, 1, 2, 1])

    def getLibVersion(self) -> int:
        return self._count("libversion", 9000000 + self.generation)

    def getVersion(self) -> int:
        return self._count("version", 7002000)

    def getHostname(self) -> str:
        return self._count("hostname", f"node1-gen{self.generation}")

    def getMemoryStats(self, cell: int, flags: int) -> dict[str, int]:
        assert cell == libvirt.VIR_NODE_MEMORY_STATS_ALL_CELLS
        # KiB, as libvirt gives them
        return self._count(
            "free", {"total": 4 << 20, "free": 1 << 20, "buffers": 1024, "cached": 2048}
        )

    def listAllDomains(self, flags: int) -> list[FakeDom]:
        return self._count("list", [FakeDom(self, "web1")])

    def createXML(self, xml: str, flags: int) -> FakeDom:  # noqa: N802 - libvirt's name
        return self._count("create", FakeDom(self, "web1"))


class FakeDom:
    def __init__(self, conn: FakeConn, name: str) -> None:
        self.conn = conn
        self._name = name

    def name(self) -> str:
        return self._name

    def isActive(self) -> int:
        return self.conn._count("isActive", 1)


def _host() -> tuple[Host, Counter[str], list[FakeConn]]:
    calls: Counter[str] = Counter()
    conns: list[FakeConn] = []

    def connect(_attempt: Any) -> FakeConn:
        conns.append(FakeConn(calls, len(conns) + 1))
        return conns[-1]

    return Host("node1", "qemu+tcp://node1/system", connect), calls, conns


def _new_connections_fail(
    host: Host, calls: Counter[str], conns: list[FakeConn], method: str
) -> None:
    """Every connection ``host`` opens from now on loses itself in ``method``."""

    def connect(_attempt: Any) -> FakeConn:
        conns.append(FakeConn(calls, len(conns) + 1))
        conns[-1].fail[method] = connection_lost()
        return conns[-1]

    host._connect_retry = connect


def _facts(host: Host) -> tuple[Any, ...]:
    return (host.capabilities(), host.node_info(), host.versions(), host.hostname())


def test_static_facts_are_asked_once_per_connection() -> None:
    host, calls, conns = _host()
    first = _facts(host)
    assert _facts(host) == first
    assert first[0].uuid == "0f0e" and first[1][1] == 4096 and first[3] == "node1-gen1"
    assert calls == Counter(caps=1, info=1, libversion=1, version=1, hostname=1)
    # what changes while the daemon runs is asked every time
    # free memory as Ganeti counts it: free, buffers and page cache
    assert host.free_memory_mib() == 1024 + 1 + 2
    host.free_memory_mib()
    assert calls["free"] == 2
    assert len(conns) == 1


def test_a_host_replaced_closes_no_connection_in_use() -> None:
    """A node's URI changed while another job's call may run on its connection: that
    call ends on it (closing it would fail the call as an invalid connection)."""
    calls: Counter[str] = Counter()
    conns: list[FakeConn] = []

    def connect(_attempt: Any) -> FakeConn:
        conns.append(FakeConn(calls, len(conns) + 1))
        return conns[-1]

    ops = LibvirtNodeOps("/d", connect_retry=connect)
    node = Node(name="node1", address="x", libvirt_uri="qemu+tcp://a/system")
    old = ops.host(node)
    old.hostname()
    node.libvirt_uri = "qemu+tcp://b/system"
    new = ops.host(node)
    assert new is not old and new.uri == "qemu+tcp://b/system"
    assert not conns[0].closed
    assert new.hostname() == "node1-gen2" and len(conns) == 2


def test_a_new_connection_asks_the_facts_again() -> None:
    host, calls, conns = _host()
    _facts(host)
    conns[0].alive = False  # libvirtd restarted (an upgrade): the connection is gone
    info, hostname = host.node_info(), host.hostname()
    assert len(conns) == 2
    assert info[1] == 8192 and hostname == "node1-gen2"
    assert calls["info"] == 2 and calls["hostname"] == 2
    host.close()
    host.versions()
    assert len(conns) == 3 and calls["libversion"] == 2


class _ClosableConn:
    def __init__(self) -> None:
        self.closed = threading.Event()

    def close(self) -> int:
        self.closed.set()
        return 0


def test_an_open_that_does_not_answer_is_given_up_and_closed_when_it_comes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # a node whose link is gone: libvirt.open would wait until TCP gives up
    release = threading.Event()
    late = _ClosableConn()

    def slow_open(uri: str) -> _ClosableConn:
        release.wait(10)
        return late

    monkeypatch.setattr(host_module.libvirt, "open", slow_open)
    started = time.monotonic()
    with pytest.raises(NodeUnreachable, match="no answer within 0.2 s") as caught:
        host_module.open_connection("qemu+tls://node2/system", "node2", timeout=0.2)
    assert time.monotonic() - started < 5
    assert caught.value.node == "node2"
    assert retry.is_transient(caught.value) is False  # not tried again: the node is silent
    release.set()  # the open comes through after all: nobody takes the connection
    assert late.closed.wait(5)


def test_an_open_that_answers_in_time_returns_the_connection_or_its_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    conn = _ClosableConn()
    monkeypatch.setattr(host_module.libvirt, "open", lambda uri: conn)
    assert host_module.open_connection("qemu+tls://node2/system", "node2", timeout=5) is conn
    assert not conn.closed.is_set()

    def refused(uri: str) -> None:
        raise libvirt.libvirtError("unable to connect to server: Connection refused")

    monkeypatch.setattr(host_module.libvirt, "open", refused)
    with pytest.raises(libvirt.libvirtError, match="Connection refused"):
        host_module.open_connection("qemu+tls://node2/system", "node2", timeout=5)


def test_an_open_that_fails_otherwise_raises_its_error_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Not a libvirt error (the bindings' own): raised in the caller's thread, not
    taken for a node that did not answer."""

    def broken(uri: str) -> None:
        raise TypeError("expected str, got bytes")

    monkeypatch.setattr(host_module.libvirt, "open", broken)
    started = time.monotonic()
    with pytest.raises(TypeError, match="expected str"):
        host_module.open_connection("qemu+tls://node2/system", "node2", timeout=5)
    assert time.monotonic() - started < 4


# -- a kept connection that only looks alive ------------------------------------


def _kept(host: host_module.Host) -> Any:
    """The connection the host uses for its next call (None: it opens a new one)."""
    return host._conn


def test_close_closes_the_connection() -> None:
    host, _calls, conns = _host()
    host.list_guests()
    host.close()
    assert conns[0].closed and _kept(host) is None


def test_a_host_call_on_a_lost_kept_connection_runs_once_more_on_a_new_one() -> None:
    # libvirtd restarted while the link was down: the first request meets a reset
    host, calls, conns = _host()
    host.list_guests()
    conns[0].fail["list"] = connection_lost()
    guests = host.list_guests()
    assert [g.name for g in guests] == ["web1"] and len(conns) == 2
    # the lost one is forgotten, not closed (another thread may be in a call on it)
    assert _kept(host) is conns[1] and not conns[0].closed
    assert guests[0].is_active() and calls["isActive"] == 1
    # the guest belongs to the new connection: its failure drops that one
    conns[1].fail["isActive"] = connection_lost()
    with pytest.raises(NodeUnreachable):
        guests[0].is_active()
    assert _kept(host) is None
    # the facts as well
    host.list_guests()
    conns[2].fail["hostname"] = connection_lost()
    assert host.hostname() == "node1-gen4" and len(conns) == 4


def test_a_host_call_that_fails_on_a_new_connection_is_not_repeated() -> None:
    host, calls, conns = _host()
    host.list_guests()
    conns[0].fail["list"] = connection_lost()
    _new_connections_fail(host, calls, conns, "list")  # the new connection fails as well
    with pytest.raises(NodeUnreachable, match="Cannot list domains: Cannot recv data") as caught:
        host.list_guests()
    assert caught.value.node == "node1"
    assert len(conns) == 2 and calls["list"] == 3 and _kept(host) is None
    # a call whose first try is on a new connection: it is not tried again either
    with pytest.raises(NodeUnreachable):
        host.list_guests()
    assert len(conns) == 3 and calls["list"] == 4


def test_other_errors_and_calls_on_domains_are_not_repeated() -> None:
    host, calls, conns = _host()
    guest = host.list_guests()[0]
    conns[0].fail["free"] = libvirt_error(libvirt.VIR_ERR_OPERATION_FAILED)
    with pytest.raises(HypervisorError, match="Cannot read free memory"):
        host.free_memory_mib()
    assert len(conns) == 1 and _kept(host) is conns[0]
    # a domain's call may not be safe to make twice (a migration): it fails, the connection goes
    conns[0].fail["isActive"] = connection_lost()
    with pytest.raises(NodeUnreachable):
        guest.is_active()
    assert calls["isActive"] == 1 and _kept(host) is None
    assert host.list_guests()[0].name == "web1" and len(conns) == 2


def test_a_start_is_never_repeated_on_a_new_connection() -> None:
    """It may have been made before the connection broke: a second one would fail on a
    guest that runs (the job failing while the guest was started)."""
    host, calls, conns = _host()
    host.list_guests()
    conns[0].fail["create"] = connection_lost()
    with pytest.raises(NodeUnreachable):
        host.start_once("<domain><name>web1</name></domain>")
    assert calls["create"] == 1 and len(conns) == 1 and _kept(host) is None


def test_a_call_drops_only_the_connection_it_used() -> None:
    # a monitor's guest from the old connection fails after another thread reconnected
    host, _calls, conns = _host()
    old_guest = host.list_guests()[0]
    conns[0].alive = False
    host.free_memory_mib()
    assert len(conns) == 2
    conns[0].fail["isActive"] = connection_lost()
    with pytest.raises(NodeUnreachable):
        old_guest.is_active()
    assert host.get_connection() is conns[1] and len(conns) == 2


def test_a_host_call_that_failed_because_keepalive_gave_up_is_not_repeated() -> None:
    # the node went silent: keepalive declared the connection dead after its
    # probes; a call that began just before fails at once, with libvirt's words
    host, calls, conns = _host()
    host.list_guests()
    conns[0].fail["list"] = libvirt_error(
        libvirt.VIR_ERR_INTERNAL_ERROR,
        libvirt.VIR_FROM_RPC,
        "internal error: connection closed due to keepalive timeout",
    )
    with pytest.raises(NodeUnreachable, match="keepalive timeout"):
        host.list_guests()
    assert len(conns) == 1 and _kept(host) is None and calls["list"] == 2


def test_a_fact_asked_on_a_connection_opened_for_it_is_not_repeated() -> None:
    host, calls, conns = _host()
    host.hostname()
    conns[0].alive = False  # gone: the fact is asked again, on a new connection
    _new_connections_fail(host, calls, conns, "hostname")
    with pytest.raises(NodeUnreachable, match="Cannot read host name"):
        host.hostname()
    assert len(conns) == 2 and calls["hostname"] == 2


def _overlap(host: Host, beside_others: bool = False) -> int:
    """The most calls that ran at once when three threads called through ``host``."""
    overlap = Overlap(want=3, wait=1.0)

    def call() -> None:
        with overlap.running():
            pass

    kwargs = {"beside_others": beside_others}
    threads = [
        threading.Thread(target=host.guarded, args=(None, "a call", call), kwargs=kwargs)
        for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return overlap.most


def test_a_libssh_connection_takes_one_call_at_a_time() -> None:
    """Concurrent calls on one qemu+libssh connection crashed libvirt's client."""
    assert _overlap(Host("node1", "qemu+libssh://root@10.250.0.1/system?keyfile=k")) == 1
    assert _overlap(Host("node1", "qemu+tls://10.250.0.1/system")) == 3
    # the migration call waits beside the others (its monitor asks meanwhile)
    assert _overlap(Host("node1", "qemu+libssh://root@n1/system"), beside_others=True) == 3


def test_the_event_loop_outlives_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without it no connection sends keepalive probes: a cut node would block calls for
    TCP's minutes instead of keepalive's seconds."""

    class Stop(BaseException):
        pass

    runs: list[int] = []

    def run_once() -> int:
        runs.append(1)
        if len(runs) == 1:
            raise libvirt_error(libvirt.VIR_ERR_INTERNAL_ERROR)
        raise Stop

    monkeypatch.setattr(host_module.libvirt, "virEventRunDefaultImpl", run_once)
    monkeypatch.setattr(host_module.time, "sleep", lambda _s: None)
    with pytest.raises(Stop):
        host_module._run_event_loop()
    assert len(runs) == 2


def test_callers_that_waited_for_a_failed_open_share_its_failure() -> None:
    """A node that does not answer: the callers queued behind one attempt get its error,
    instead of each making an attempt of its own in turn (20 jobs, 20 timeouts)."""
    attempts: list[int] = []
    waiting = threading.Event()

    def connect(_attempt: Any) -> FakeConn:
        attempts.append(1)
        waiting.wait(10)  # the other callers queue behind this attempt meanwhile
        raise NodeUnreachable("Cannot connect to libvirt: timed out", node="node1")

    host = Host("node1", "qemu+tcp://node1/system", connect)
    errors = queued_failures(host._open_failures, host.get_connection, waiting)
    assert len(errors) == 3 and len(attempts) == 1
    assert all("timed out" in str(err) and err.node == "node1" for err in errors)
    # a caller that comes after the failure tries again
    waiting.set()
    with pytest.raises(NodeUnreachable):
        host.get_connection()
    assert len(attempts) == 2
