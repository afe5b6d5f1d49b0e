"""Host: facts of a running libvirtd are asked once per connection."""

from __future__ import annotations

from collections import Counter
from typing import Any

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
