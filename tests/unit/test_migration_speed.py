"""What makes a migration cheap and robust around the libvirt call.

Node facts asked once per operation (in parallel), bridges from libvirt,
keepalive on every connection, completed-job statistics kept for others.
"""

from __future__ import annotations

import threading
from typing import Any

import libvirt
import pytest
from test_lu_migrate import N1, N2, N3, run

from ganeti_lv.context import Context
from ganeti_lv.hypervisor.fake import FakeNodeOps
from ganeti_lv.hypervisor.libvirt import host as hostmod
from ganeti_lv.hypervisor.libvirt import migration
from ganeti_lv.hypervisor.migration_types import MigrationStats
from ganeti_lv.opcodes import OpInstanceMigrate


@pytest.fixture
def ops(inst1_running: FakeNodeOps) -> FakeNodeOps:
    """inst1 runs on node1 with its disk file."""
    return inst1_running


def test_each_node_is_asked_its_facts_once(ctx: Context, ops: FakeNodeOps) -> None:
    run(ctx, OpInstanceMigrate(instance_name="inst1", target_node="node2"))
    assert len(ops.calls_to("node_info", N1)) == 1
    assert len(ops.calls_to("node_info", N2)) == 1
    assert len(ops.calls_to("paths_exist", N2)) == 1
    assert len(ops.calls_to("instance_info", N1)) <= 2  # prereq, plus none on success
    assert ops.calls_to("node_info", N3) == []


def test_allocator_asks_every_candidate_once(ctx: Context, ops: FakeNodeOps) -> None:
    run(ctx, OpInstanceMigrate(instance_name="inst1"))
    for name in (N2, N3):
        assert len(ops.calls_to("node_info", name)) == 1, name


class _Iface:
    def __init__(self, name: str, kind: str) -> None:
        self._name, self.kind = name, kind

    def name(self) -> str:
        return self._name

    def XMLDesc(self, flags: int) -> str:  # noqa: N802 - libvirt's name
        return f"<interface type='{self.kind}' name='{self._name}'/>"


class _Conn:
    def __init__(self, ifaces: list[_Iface] | None) -> None:
        self.ifaces = ifaces
        self.keepalive: tuple[int, int] | None = None

    def isAlive(self) -> bool:  # noqa: N802
        return True

    def listAllInterfaces(self, flags: int) -> list[_Iface]:  # noqa: N802
        if self.ifaces is None:
            raise libvirt.libvirtError("this function is not supported by the connection driver")
        return self.ifaces

    def setKeepAlive(self, interval: int, count: int) -> int:  # noqa: N802
        self.keepalive = (interval, count)
        return 0

    def close(self) -> int:
        return 0


def _host(monkeypatch: pytest.MonkeyPatch, conn: _Conn) -> hostmod.Host:
    monkeypatch.setattr(hostmod.libvirt, "open", lambda uri: conn)
    monkeypatch.setattr(hostmod, "ensure_event_loop", lambda: None)
    return hostmod.Host("node1", "qemu+tcp://10.250.0.1/system", lambda fn: fn())


def test_bridges_from_libvirt_and_none_without_interface_driver(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    conn = _Conn([_Iface("eth0", "ethernet"), _Iface("gnt-br0", "bridge"), _Iface("br1", "bridge")])
    assert _host(monkeypatch, conn).bridges() == ["br1", "gnt-br0"]
    assert _host(monkeypatch, _Conn(None)).bridges() is None


def test_connections_run_keepalive(monkeypatch: pytest.MonkeyPatch) -> None:
    conn = _Conn([])
    _host(monkeypatch, conn).get_connection()
    assert conn.keepalive == (hostmod.KEEPALIVE_INTERVAL, hostmod.KEEPALIVE_COUNT)
    # a dead link is noticed within about 15 s
    assert hostmod.KEEPALIVE_INTERVAL * (hostmod.KEEPALIVE_COUNT + 1) <= 15


def test_event_loop_is_started_once(monkeypatch: pytest.MonkeyPatch) -> None:
    registered: list[int] = []
    monkeypatch.setattr(hostmod, "_event_loop", None)
    monkeypatch.setattr(
        hostmod.libvirt, "virEventRegisterDefaultImpl", lambda: registered.append(1)
    )
    # the loop's thread ends at once: a thread left running libvirt's real
    # loop beside the one the process starts later would run it twice at once
    ran = threading.Event()
    monkeypatch.setattr(hostmod, "_run_event_loop", ran.set)
    hostmod.ensure_event_loop()
    hostmod.ensure_event_loop()
    assert registered == [1]
    loop = hostmod._event_loop
    assert loop is not None and loop.daemon
    assert ran.wait(5)
    loop.join(5)
    assert not loop.is_alive()


def test_completed_job_figures_are_kept_for_others(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[int] = []

    class Dom:
        def name(self) -> str:
            return "web1"

        def jobStats(self, flags: int = 0) -> dict[str, Any]:  # noqa: N802
            asked.append(flags)
            return {"type": 3, "time_elapsed": 850, "downtime": 40, "memory_iteration": 3}

    class Conn(_Conn):
        def lookupByName(self, name: str) -> Dom:  # noqa: N802
            return Dom()

    job = migration.completed_job(_host(monkeypatch, Conn([])), "web1")
    assert job is not None
    assert (job.time_elapsed_ms, job.downtime_ms, job.iteration) == (850, 40, 3)
    assert asked == [
        libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED | libvirt.VIR_DOMAIN_JOB_STATS_KEEP_COMPLETED
    ]


def test_stats_line_names_libvirt_total_and_our_wall_time() -> None:
    text = MigrationStats(total_time=0.85, downtime_ms=40, wall_time=2.5).format()
    assert "total time 0.85 s, downtime 40 ms" in text
    assert "migration call 2.50 s" in text
