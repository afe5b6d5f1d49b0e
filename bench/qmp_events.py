"""The guest's pause as qemu's own events time it: STOP at the source, RESUME at the target.

Every QMP event carries the host's wall-clock time at which qemu emitted it.
On one machine both nodes share that clock, so the time from the source's
``STOP`` (the switch-over begins) to the target's ``RESUME`` (the guest runs
again) is the pause the guest had, end to end, the span libvirt's completed
job reports as its downtime.

Ganeti's KVM hypervisor gives every instance a second QMP socket,
``<ctrl dir>/<instance>.kvmd``, for its kvmd daemon, which exits at once
when user shutdown is off (its default); the benchmark listens there, on
the source before the migration starts and on the target as soon as
Ganeti's target qemu opens it.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from typing import Any


def event_time(message: dict[str, Any]) -> float | None:
    """The host time (s) of a QMP event message, None if it has none."""
    stamp = message.get("timestamp")
    if not isinstance(stamp, dict):
        return None
    try:
        return float(stamp["seconds"]) + float(stamp["microseconds"]) / 1e6
    except (KeyError, TypeError, ValueError):
        return None


def pause_ms(stops: list[float], resumes: list[float]) -> float | None:
    """From the last source STOP to the first target RESUME after it (ms)."""
    if not stops:
        return None
    stop = stops[-1]
    later = [t for t in resumes if t >= stop]
    if not later:
        return None
    return (min(later) - stop) * 1000.0


class QmpEvents:
    """Records the events of the QMP socket at ``path`` while the block runs.

    The socket may appear only later (a migration's target): the listener
    waits for it and retries until it connects or the block ends.
    """

    def __init__(self, path: str, interval: float = 0.005) -> None:
        self.path = path
        self.interval = interval
        self.events: list[tuple[str, float]] = []
        self.connected = False
        self.error = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> QmpEvents:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def times(self, name: str) -> list[float]:
        """Host times of the events called ``name``, in order."""
        return [t for event, t in self.events if event == name]

    def _connect(self) -> socket.socket | None:
        while not self._stop.is_set():
            if os.path.exists(self.path):
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    sock.connect(self.path)
                    return sock
                except OSError as err:
                    sock.close()
                    self.error = str(err)
            self._stop.wait(self.interval)
        return None

    def _run(self) -> None:
        sock = self._connect()
        if sock is None:
            return
        with sock:
            sock.settimeout(0.05)
            buf = b""
            sent = False
            while not self._stop.is_set():
                try:
                    chunk = sock.recv(65536)
                except TimeoutError:
                    continue
                except OSError as err:
                    self.error = str(err)
                    return
                if not chunk:
                    return
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    self._handle(line)
                if not sent and b'"QMP"' in chunk:  # the greeting: enter command mode
                    sock.sendall(b'{"execute": "qmp_capabilities"}\n')
                    sent = self.connected = True

    def _handle(self, line: bytes) -> None:
        with contextlib.suppress(ValueError):
            message = json.loads(line)
            if isinstance(message, dict) and "event" in message:
                stamp = event_time(message)
                self.events.append((str(message["event"]), stamp or time.time()))
