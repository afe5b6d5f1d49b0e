"""Host: facts of a running libvirtd are asked once per connection."""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

import libvirt
import pytest

from ganeti_lv import retry
from ganeti_lv.errors import NodeUnreachable
from ganeti_lv.hypervisor.libvirt import host as host_module
from ganeti_lv.hypervisor.libvirt.host import Host

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

    def isAlive(self) -> bool:
        return self.alive

    def close(self) -> int:
        return 0

    def _count(self, name: str, value: Any) -> Any:
        self.calls[name] += 1
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

    def getFreeMemory(self) -> int:
        return self._count("free", 1 << 30)


def _host() -> tuple[Host, Counter[str], list[FakeConn]]:
    calls: Counter[str] = Counter()
    conns: list[FakeConn] = []

    def connect(_attempt: Any) -> FakeConn:
        conns.append(FakeConn(calls, len(conns) + 1))
        return conns[-1]

    return Host("node1", "qemu+tcp://node1/system", connect), calls, conns


def _facts(host: Host) -> tuple[Any, ...]:
    return (host.capabilities(), host.node_info(), host.versions(), host.hostname())


def test_static_facts_are_asked_once_per_connection() -> None:
    host, calls, conns = _host()
    first = _facts(host)
    assert _facts(host) == first
    assert first[0].uuid == "0f0e" and first[1][1] == 4096 and first[3] == "node1-gen1"
    assert calls == Counter(caps=1, info=1, libversion=1, version=1, hostname=1)
    # what changes while the daemon runs is asked every time
    host.free_memory_mib()
    host.free_memory_mib()
    assert calls["free"] == 2
    assert len(conns) == 1


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
