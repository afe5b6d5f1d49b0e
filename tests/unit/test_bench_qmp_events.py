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
        while not events.times("STOP") and time.monotonic() < deadline:
            time.sleep(0.01)
    server.join(timeout=5)
    assert events.connected and "qmp_capabilities" in got[0]
    assert events.times("STOP") == [pytest.approx(7.005)]
