"""The benchmark's QMP event listener and the pause it derives (bench/qmp_events.py)."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import pytest

from bench import qmp_events


def test_event_time_and_pause() -> None:
    msg = {"event": "STOP", "timestamp": {"seconds": 100, "microseconds": 250000}}
    assert qmp_events.event_time(msg) == pytest.approx(100.25)
    assert qmp_events.event_time({"event": "STOP"}) is None
    # the last stop before the first resume after it
    assert qmp_events.pause_ms([10.0, 20.0], [15.0, 20.012, 30.0]) == pytest.approx(12.0)
    assert qmp_events.pause_ms([], [1.0]) is None
    assert qmp_events.pause_ms([5.0], [4.0]) is None


def _serve(path: str, got: list[str]) -> threading.Thread:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)

    def run() -> None:
        conn, _ = server.accept()
        with conn, server:
            conn.sendall(b'{"QMP": {"version": {}, "capabilities": []}}\r\n')
            got.append(conn.recv(4096).decode())
            conn.sendall(b'{"return": {}}\r\n')
            stop = {"event": "STOP", "timestamp": {"seconds": 7, "microseconds": 5000}}
            conn.sendall(json.dumps(stop).encode() + b"\r\n")
            status = {
                "event": "MIGRATION",
                "data": {"status": "pre-switchover"},
                "timestamp": {"seconds": 7, "microseconds": 6000},
            }
            conn.sendall(json.dumps(status).encode() + b"\r\n")
            time.sleep(0.2)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_listener_waits_for_the_socket_negotiates_and_records(tmp_path: Path) -> None:
    path = str(tmp_path / "inst.kvmd")
    got: list[str] = []
    with qmp_events.QmpEvents(path) as events:
        time.sleep(0.05)  # the socket appears only later, as a migration target's does
        server = _serve(path, got)
        deadline = time.monotonic() + 5
        while not events.times("MIGRATION") and time.monotonic() < deadline:
            time.sleep(0.01)
    server.join(timeout=5)
    assert events.connected and "qmp_capabilities" in got[0]
    assert events.times("STOP") == [pytest.approx(7.005)]
    assert events.events[-1] == ("MIGRATION", pytest.approx(7.006), "pre-switchover")


# a libvirt migration's events on the source and the target (host times in s)
SOURCE = [
    ("MIGRATION", 99.0, "setup"),
    ("MIGRATION", 99.1, "active"),
    ("STOP", 90.0, ""),  # an earlier pause of the guest
    ("STOP", 100.000, ""),
    ("MIGRATION", 100.002, "pre-switchover"),
    ("MIGRATION", 100.006, "device"),
    ("MIGRATION", 100.011, "completed"),
]
TARGET = [
    ("RESUME", 95.0, ""),  # before the stop: not this migration's
    ("MIGRATION", 100.010, "completed"),
    ("RESUME", 100.019, ""),
]


def test_switchover_splits_the_pause_along_the_events() -> None:
    split = qmp_events.switchover(SOURCE, TARGET)
    expected = {
        "stop_to_switchover_ms": 2.0,
        "switchover_wait_ms": 4.0,
        "device_to_completed_ms": 5.0,
        "finish_ms": 8.0,
        "stop_to_completed_ms": 11.0,
        "stop_to_resume_ms": 19.0,
        "target_loaded_to_resume_ms": 9.0,
    }
    assert split == {key: pytest.approx(value) for key, value in expected.items()}


def test_switchover_without_status_events_keeps_the_pause_only() -> None:
    # Ganeti's qemu: STOP and RESUME, no MIGRATION events (capability off)
    split = qmp_events.switchover([("STOP", 10.0, "")], [("RESUME", 10.012, "")])
    assert split["stop_to_resume_ms"] == pytest.approx(12.0)
    assert split["switchover_wait_ms"] is None and split["finish_ms"] is None
    assert split["stop_to_completed_ms"] is None
    assert set(qmp_events.switchover([], TARGET).values()) == {None}


def test_libvirt_event_reads_the_status_and_qemus_time() -> None:
    event = qmp_events.libvirt_event("MIGRATION", 100, 2000, '{"status":"pre-switchover"}')
    assert event == ("MIGRATION", pytest.approx(100.002), "pre-switchover")
    assert qmp_events.libvirt_event("STOP", 5, 0, None) == ("STOP", 5.0, "")
    assert qmp_events.libvirt_event("MIGRATION", 5, 0, "{bad") == ("MIGRATION", 5.0, "")


def test_wall_phases_split_the_tools_run_at_the_migrations_setup_and_completion() -> None:
    # the tool started at 98.9 and ended at 100.211 (host time)
    phases = qmp_events.wall_phases(SOURCE, 98.9, 100.211)
    assert phases == {
        "before_ms": pytest.approx(100.0),
        "migration_ms": pytest.approx(1011.0),
        "after_ms": pytest.approx(200.0),
    }
    # a setup from before the tool started is another migration's
    assert qmp_events.wall_phases(SOURCE, 99.05, 100.2) == {
        "before_ms": None,
        "migration_ms": None,
        "after_ms": None,
    }
    # never completed (aborted): only the time before the setup is known
    aborted = [("MIGRATION", 99.0, "setup"), ("MIGRATION", 99.5, "cancelled")]
    phases = qmp_events.wall_phases(aborted, 98.5, 100.0)
    assert phases["before_ms"] == pytest.approx(500.0)
    assert phases["migration_ms"] is None and phases["after_ms"] is None
