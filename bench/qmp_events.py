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
Ganeti's target qemu opens it (``QmpEvents``). A libvirt domain's qemu
has one monitor, libvirt's: libvirt hands on every event qemu sends there,
with qemu's own time, to a client registered for qemu monitor events
(``LibvirtEvents``, as ``virsh qemu-monitor-event`` does). Like virsh,
the benchmark is an outside observer and uses libvirt-python directly;
ganeti_lv itself reaches libvirt only through ganeti_lv.hypervisor.libvirt.

With the ``events`` migration capability on (libvirt turns it on) qemu
also reports every change of the migration's status as a ``MIGRATION``
event. libvirt always turns ``pause-before-switchover`` on at the source
as well: the source stops the guest (``STOP``), reports
``pre-switchover`` and waits, with the guest stopped, until libvirt
answers ``migrate-continue``; then it sends the last state (``device``)
and completes (``completed``). libvirt starts the target qemu paused and
resumes it (``RESUME``) in its Finish phase, once the source has
completed. ``switchover`` splits the pause along those events.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
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


# one recorded event: (name, host time in s, the status of a MIGRATION event or "")
Event = tuple[str, float, str]


def migration_status(message: dict[str, Any]) -> str:
    """The status a ``MIGRATION`` event reports ("" for any other event)."""
    data = message.get("data")
    if message.get("event") != "MIGRATION" or not isinstance(data, dict):
        return ""
    return str(data.get("status", ""))


def pause_ms(stops: list[float], resumes: list[float]) -> float | None:
    """From the last source STOP to the first target RESUME after it (ms)."""
    if not stops:
        return None
    stop = stops[-1]
    later = [t for t in resumes if t >= stop]
    if not later:
        return None
    return (min(later) - stop) * 1000.0


class EventLog:
    """Events recorded by a listener: ``events`` in arrival order."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.connected = False
        self.error = ""

    def times(self, name: str) -> list[float]:
        """Host times of the events called ``name``, in order."""
        return [t for event, t, _ in self.events if event == name]


class QmpEvents(EventLog):
    """Records the events of the QMP socket at ``path`` while the block runs.

    The socket may appear only later (a migration's target): the listener
    waits for it and retries until it connects or the block ends.
    """

    def __init__(self, path: str, interval: float = 0.005) -> None:
        super().__init__()
        self.path = path
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> QmpEvents:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

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
                name = str(message["event"])
                self.events.append((name, stamp or time.time(), migration_status(message)))


def first_after(events: list[Event], name: str, status: str, since: float) -> float | None:
    """Time of the first event ``name`` (with ``status``, for MIGRATION) at or after ``since``."""
    found = [t for event, t, st in events if event == name and st == status and t >= since]
    return min(found) if found else None


# what ``switchover`` returns, in order along the pause
SPLIT_KEYS = (
    "stop_to_switchover_ms",
    "switchover_wait_ms",
    "device_to_completed_ms",
    "finish_ms",
    "stop_to_completed_ms",
    "stop_to_resume_ms",
    "target_loaded_to_resume_ms",
)


def _span_ms(start: float | None, end: float | None) -> float | None:
    if start is None or end is None:
        return None
    return (end - start) * 1000.0


def switchover(src: list[Event], dst: list[Event]) -> dict[str, float | None]:
    """The pause split along the source's and the target's events (ms; None if not seen).

    From the last source ``STOP`` (before the source's ``completed``, when
    there is one): ``stop_to_switchover_ms`` until ``pre-switchover``,
    ``switchover_wait_ms`` from there until ``device`` (the round trip to
    whoever has to answer ``migrate-continue``), ``device_to_completed_ms``
    (the last state sent and, with the return path, acknowledged),
    ``finish_ms`` from the source's ``completed`` until the target's
    ``RESUME``; and the whole spans ``stop_to_completed_ms`` (what qemu
    counts as its downtime) and ``stop_to_resume_ms`` (the pause), and
    ``target_loaded_to_resume_ms`` from the target's own ``completed``
    (the last state loaded) until its ``RESUME``.
    """
    completed_src = [t for event, t, st in src if event == "MIGRATION" and st == "completed"]
    completed = completed_src[-1] if completed_src else None
    stops = [t for event, t, _ in src if event == "STOP" and (completed is None or t <= completed)]
    out: dict[str, float | None] = dict.fromkeys(SPLIT_KEYS)
    if not stops:
        return out
    stop = stops[-1]
    pre = first_after(src, "MIGRATION", "pre-switchover", stop)
    device = first_after(src, "MIGRATION", "device", pre if pre is not None else stop)
    resume = first_after(dst, "RESUME", "", stop)
    loaded = first_after(dst, "MIGRATION", "completed", stop)
    out.update(
        stop_to_switchover_ms=_span_ms(stop, pre),
        switchover_wait_ms=_span_ms(pre, device),
        device_to_completed_ms=_span_ms(device, completed),
        finish_ms=_span_ms(completed, resume),
        stop_to_completed_ms=_span_ms(stop, completed),
        stop_to_resume_ms=_span_ms(stop, resume),
        target_loaded_to_resume_ms=_span_ms(loaded, resume),
    )
    return out


# what ``wall_phases`` returns, in order along the tool's run
PHASE_KEYS = ("before_ms", "migration_ms", "after_ms")


def wall_phases(src: list[Event], started: float, ended: float) -> dict[str, float | None]:
    """A tool's wall time split along the source's events (ms; None if not seen).

    ``before_ms`` from the tool's start (host time) until the source's
    migration ``setup``: the tool's own start and checks, then libvirt's
    Begin and Prepare (the target's qemu started); ``migration_ms`` from
    there until the source's ``completed`` (memory sent, the pause);
    ``after_ms`` from there until the tool ended: libvirt's Finish and
    Confirm (the source's qemu stopped), then the tool's own bookkeeping.
    """
    setups = [t for event, t, st in src if event == "MIGRATION" and st == "setup" and t >= started]
    setup = min(setups) if setups else None
    completed = first_after(src, "MIGRATION", "completed", setup) if setup is not None else None
    return {
        "before_ms": _span_ms(started, setup),
        "migration_ms": _span_ms(setup, completed),
        "after_ms": _span_ms(completed, ended),
    }


_LOOP_LOCK = threading.Lock()
_LOOP_STARTED: list[threading.Thread] = []


def _libvirt_event_loop() -> None:
    """libvirt's default event loop, once per process, in a thread of its own.

    A connection delivers events only when it was opened after the loop
    was registered; connections opened later also get libvirt's keepalive,
    which the same loop answers.
    """
    import libvirt

    with _LOOP_LOCK:
        if _LOOP_STARTED:
            return
        libvirt.virEventRegisterDefaultImpl()

        def run() -> None:
            while True:
                libvirt.virEventRunDefaultImpl()

        thread = threading.Thread(target=run, name="libvirt-events", daemon=True)
        thread.start()
        _LOOP_STARTED.append(thread)


class LibvirtEvents(EventLog):
    """The qemu monitor events of domain ``domain`` on the libvirt node at ``uri``.

    Registered for every domain of the node (a migration's target domain
    does not exist yet when the block starts) and kept for ``domain``
    only, with qemu's own times.
    """

    def __init__(self, uri: str, domain: str) -> None:
        super().__init__()
        self.uri = uri
        self.domain = domain
        self._conn: Any = None
        self._callback: int | None = None

    def __enter__(self) -> LibvirtEvents:
        import libvirt
        import libvirt_qemu

        _libvirt_event_loop()
        try:
            self._conn = libvirt.open(self.uri)
            self._callback = libvirt_qemu.qemuMonitorEventRegister(
                self._conn, None, None, self._on_event, None, 0
            )
            self.connected = True
        except libvirt.libvirtError as err:
            self.error = str(err)
            self._close()
        return self

    def __exit__(self, *exc: object) -> None:
        self._close()

    def wait_for(self, name: str, timeout: float) -> bool:
        """Wait up to ``timeout`` s for an event ``name`` (events arrive a moment late)."""
        deadline = time.monotonic() + timeout
        while not self.times(name):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def _on_event(
        self,
        _conn: Any,
        dom: Any,
        event: str,
        seconds: int,
        micros: int,
        details: str | None,
        _opaque: Any,
    ) -> None:
        if dom.name() != self.domain:
            return
        self.events.append(libvirt_event(event, seconds, micros, details))

    def _close(self) -> None:
        import libvirt
        import libvirt_qemu

        conn, self._conn = self._conn, None
        if conn is None:
            return
        with contextlib.suppress(libvirt.libvirtError):
            if self._callback is not None:
                libvirt_qemu.qemuMonitorEventDeregister(conn, self._callback)
        self._callback = None
        with contextlib.suppress(libvirt.libvirtError):
            conn.close()


def libvirt_event(event: str, seconds: int, micros: int, details: str | None) -> Event:
    """One event as libvirt hands it on (``details`` is the event's ``data`` as JSON)."""
    data: Any = None
    if details:
        with contextlib.suppress(ValueError):
            data = json.loads(details)
    message = {"event": event, "data": data}
    return (event, seconds + micros / 1e6, migration_status(message))


@contextlib.contextmanager
def libvirt_switchover(src_uri: str, dst_uri: str, domain: str) -> Iterator[dict[str, Any]]:
    """qemu's events of a libvirt migration of ``domain`` in the block, on both nodes.

    The dict yielded is filled after the block: ``switchover``'s split,
    ``wall_phases`` of the block (what the block runs besides the tool
    counts as the tool's),
    the recorded ``events`` of both sides and ``events_error`` (why a side
    could not listen, "" when both did). When the source completed, the
    target's ``RESUME`` is waited for a moment: libvirt hands it on just
    after its migration call returns.
    """
    out: dict[str, Any] = {}
    with LibvirtEvents(src_uri, domain) as src, LibvirtEvents(dst_uri, domain) as dst:
        started = time.time()
        yield out
        ended = time.time()
        if any(ev == "MIGRATION" and st == "completed" for ev, _, st in src.events):
            dst.wait_for("RESUME", 2.0)
    out.update(switchover(src.events, dst.events))
    out.update(wall_phases(src.events, started, ended))
    out["events"] = {"source": src.events, "target": dst.events}
    out["events_error"] = src.error or dst.error
