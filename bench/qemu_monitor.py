"""QEMU's human monitor (HMP) of a Ganeti instance: ``info migrate`` and friends.

Ganeti's KVM hypervisor starts every instance's qemu with a monitor socket,
``/var/run/ganeti/kvm-hypervisor/ctrl/<instance>.monitor``, on the node
running it (Ganeti itself uses it through ``socat`` for a few commands; it
drives migrations through the separate QMP socket). The peer's nodes have
``/run/ganeti`` bind-mounted from a host directory, so the benchmark
reaches that socket from the host by its host path.

Ganeti's migration kills the source qemu about a second after the memory
transfer completed (it polls ``query-migrate`` every second, then finalizes),
so the figures of a completed migration are read by a watcher that asks the
source's ``info migrate`` every 50 ms while the migration runs and keeps
the sample that says ``completed``.

The same watcher reads ganeti_lv's source qemu through libvirt
(``LibvirtQmp``: QMP ``query-migrate`` over ``virDomainQemuMonitorCommand``
on one connection to the source node's libvirtd), so both tools' downtime
is qemu's own ``downtime`` of the completed migration: from the moment the
source stopped the guest until the source has sent its last state.
libvirt stops the source qemu tens of milliseconds after that, so this
watcher polls every 5 ms.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from bench.common import parse_fields

PROMPT = "(qemu) "
ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Za-z0-9]|\x1b[=>]")
RUNNING_STATES = ("setup", "active", "pre-switchover", "device", "postcopy-active")
FINAL_STATES = ("completed", "failed", "cancelled")
# the source's migration capabilities read back at the start of a migration
# (libvirt turns all three on: status events, the return path, and the wait
# for its migrate-continue before the last state is sent)
CAPABILITIES = ("events", "return-path", "pause-before-switchover")
# unit in `info migrate` -> (key suffix, factor)
_UNITS = {
    "ms": ("ms", 1.0),
    "milliseconds": ("ms", 1.0),
    "kbytes": ("mib", 1 / 1024),
    "bytes": ("mib", 1 / 2**20),
    "mbps": ("mbps", 1.0),
    "pages": ("pages", 1.0),
    "bytes/second": ("mib_s", 1 / 2**20),
}


class MonitorError(Exception):
    """The monitor could not be reached or did not answer."""


def clean_reply(raw: str, command: str) -> str:
    """The output of ``command`` from what the monitor sent after it was typed.

    The monitor echoes the command line (with terminal escape sequences) and
    ends its answer with a new prompt; both are dropped.
    """
    text = ANSI_RE.sub("", raw).replace("\r", "")
    if text.endswith(PROMPT):
        text = text[: -len(PROMPT)]
    lines = text.split("\n")
    for idx, line in enumerate(lines):
        if line.rstrip().endswith(command):
            lines = lines[idx + 1 :]
            break
    return "\n".join(lines).strip("\n")


def _read_until_prompt(sock: socket.socket, after_newline: bool) -> str:
    """Read until the monitor shows its prompt (after a new line when ``after_newline``)."""
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            raise MonitorError("monitor closed the connection")
        data += chunk
        text = ANSI_RE.sub("", data.decode(errors="replace")).replace("\r", "")
        if text.endswith(PROMPT) and (not after_newline or "\n" in text):
            return data.decode(errors="replace")


def hmp(path: str, command: str, timeout: float = 5.0) -> str:
    """Run one monitor command on the socket at ``path``; return its output."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(path)
            _read_until_prompt(sock, after_newline=False)  # the greeting
            sock.sendall(command.encode() + b"\n")
            raw = _read_until_prompt(sock, after_newline=True)
    except OSError as err:
        raise MonitorError(f"{path}: {command}: {err}") from err
    return clean_reply(raw, command)


# QMP (query-migrate, query-migrate-parameters) key -> (our key, factor)
_QMP_KEYS = {
    "total-time": ("total_time_ms", 1.0),
    "downtime": ("downtime_ms", 1.0),
    "setup-time": ("setup_ms", 1.0),
    "downtime-limit": ("downtime_limit_ms", 1.0),
    "max-bandwidth": ("max_bandwidth_mib_s", 1 / 2**20),
}
_QMP_RAM_KEYS = {
    "transferred": ("transferred_ram_mib", 1 / 2**20),
    "total": ("total_ram_mib", 1 / 2**20),
    "dirty-sync-count": ("dirty_sync_count", 1.0),
    "mbps": ("throughput_mbps", 1.0),
    # RAM sent while the guest was stopped (QMP from qemu 8.1 on; 7.2 prints it
    # only in HMP's `info migrate`, as `downtime ram`)
    "downtime-bytes": ("downtime_ram_mib", 1 / 2**20),
    "dirty-pages-rate": ("dirty_pages_rate_pages", 1.0),
    "page-size": ("page_size_mib", 1 / 2**20),
}


def parse_qmp(text: str) -> dict[str, Any]:
    """The keys of ``parse_info`` from a QMP reply (``{"return": {...}}``)."""
    try:
        ret = json.loads(text).get("return", {})
    except (ValueError, AttributeError) as err:
        raise MonitorError(f"not a QMP reply: {text[:200]!r}") from err
    out: dict[str, Any] = {}
    if "status" in ret:
        out["status"] = str(ret["status"])
    for table, values in ((_QMP_KEYS, ret), (_QMP_RAM_KEYS, ret.get("ram") or {})):
        for key, (name, factor) in table.items():
            if isinstance(values.get(key), (int, float)):
                out[name] = float(values[key]) * factor
    return out


def parse_info(text: str) -> dict[str, Any]:
    """Numbers of ``info migrate`` (or ``info migrate_parameters``) output by key.

    A QMP reply (JSON) is read by ``parse_qmp`` into the same keys.

    'total time: 1234 ms' -> {'total_time_ms': 1234.0}; 'transferred ram:
    2048 kbytes' -> {'transferred_ram_mib': 2.0}; 'Migration status:
    completed' -> {'status': 'completed'}; 'downtime-limit: 30 ms' ->
    {'downtime_limit_ms': 30.0}. Lines without a number are left out.
    """
    if text.lstrip().startswith("{"):
        return parse_qmp(text)
    out: dict[str, Any] = dict(parse_fields(text, _UNITS))
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "Migration status" and value.split():
            out["status"] = value.split()[0]
    return out


def migration_figures(info: dict[str, Any]) -> dict[str, Any]:
    """What the benchmark reports of one ``info migrate`` sample."""
    return {
        "status": info.get("status"),
        "total_ms": info.get("total_time_ms"),
        "downtime_ms": info.get("downtime_ms"),
        "setup_ms": info.get("setup_ms"),
        "memory_mib": info.get("transferred_ram_mib"),
        "total_ram_mib": info.get("total_ram_mib"),
        "passes": info.get("dirty_sync_count"),
        "throughput_mbps": info.get("throughput_mbps"),
        "stopped_memory_mib": info.get("downtime_ram_mib"),
    }


def dirty_rate_mib_s(info: dict[str, Any]) -> float | None:
    """The guest's dirty rate qemu measured (a running migration's sample), MiB/s."""
    pages = info.get("dirty_pages_rate_pages")
    page = info.get("page_size_mib")
    if pages is None or page is None:
        return None
    return float(pages) * float(page)


# HMP commands the watcher sends -> the QMP command asked through libvirt
_QMP_OF_HMP = {
    "info migrate": "query-migrate",
    "info migrate_parameters": "query-migrate-parameters",
    "migrate_cancel": "migrate_cancel",
    "info migrate_capabilities": "query-migrate-capabilities",
}


def capability(text: str, name: str) -> bool | None:
    """Whether capability ``name`` is on in ``info migrate_capabilities`` (HMP or QMP)."""
    if text.lstrip().startswith("{"):
        try:
            caps = json.loads(text).get("return", [])
        except (ValueError, AttributeError):
            return None
        for cap in caps if isinstance(caps, list) else []:
            if isinstance(cap, dict) and cap.get("capability") == name:
                return bool(cap.get("state"))
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == name:
            return value.strip() == "on"
    return None


class LibvirtQmp:
    """The watcher's ``query`` for a libvirt domain: QMP through libvirtd.

    ``LibvirtQmp(uri)(domain name, "info migrate")`` returns the JSON reply
    of ``query-migrate``. One connection for all samples; a gone domain or
    daemon is a ``MonitorError``.
    """

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self._conn: Any = None

    def __call__(self, name: str, command: str) -> str:
        import libvirt
        import libvirt_qemu

        try:
            if self._conn is None:
                self._conn = libvirt.open(self.uri)
            dom = self._conn.lookupByName(name)
            qmp = json.dumps({"execute": _QMP_OF_HMP[command]})
            return str(libvirt_qemu.qemuMonitorCommand(dom, qmp, 0))
        except libvirt.libvirtError as err:
            raise MonitorError(f"{name}: {command}: {err}") from err

    def close(self) -> None:
        """Close the connection (if one was opened)."""
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None


class MigrationWatcher:
    """Polls ``info migrate`` on a source qemu's monitor while a migration runs.

    The first sample of a running migration also reads the migration
    parameters qemu was given (``info migrate_parameters``: downtime limit,
    bandwidth). With ``cancel_after`` the watcher cancels the migration
    (``migrate_cancel``) when it still runs that many seconds after start.
    A final state seen before any running one (left from an earlier
    migration of the same qemu) is ignored.
    """

    def __init__(
        self,
        path: str,
        interval: float = 0.05,
        cancel_after: float | None = None,
        query: Callable[[str, str], str] = hmp,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self.interval = interval
        self.cancel_after = cancel_after
        self.query = query
        self.clock = clock
        self.running_seen = False
        self.last: dict[str, Any] = {}
        self.final: dict[str, Any] = {}
        self.parameters: dict[str, Any] = {}
        self.samples = 0
        self.errors = 0
        self.cancelled_at: float | None = None
        self.started = clock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> MigrationWatcher:
        self.started = self.clock()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.is_set() and not self.final:
            self.poll()
            self._stop.wait(self.interval)

    def poll(self) -> None:
        """One sample (errors, e.g. no socket yet or qemu gone, are counted)."""
        try:
            info = parse_info(self.query(self.path, "info migrate"))
        except MonitorError:
            self.errors += 1
            return
        self.samples += 1
        status = info.get("status")
        if status in RUNNING_STATES:
            if not self.running_seen:
                self.running_seen = True
                self._read_parameters()
            self.last = info
            self._maybe_cancel()
        elif status in FINAL_STATES and self.running_seen:
            self.final = info

    def _read_parameters(self) -> None:
        try:
            self.parameters = parse_info(self.query(self.path, "info migrate_parameters"))
            caps = self.query(self.path, "info migrate_capabilities")
            self.parameters["capabilities"] = {c: capability(caps, c) for c in CAPABILITIES}
        except MonitorError:
            self.errors += 1

    def _maybe_cancel(self) -> None:
        if self.cancel_after is None or self.cancelled_at is not None:
            return
        elapsed = self.clock() - self.started
        if elapsed >= self.cancel_after:
            try:
                self.query(self.path, "migrate_cancel")
                self.cancelled_at = elapsed
            except MonitorError:
                self.errors += 1

    def result(self) -> dict[str, Any]:
        """Figures of the completed migration (else of its last running sample)."""
        completed = self.final.get("status") == "completed"
        # a cancelled or failed migration's final sample has no figures left:
        # those of its last running sample tell how far it got
        out = migration_figures(self.final if completed else self.last)
        out["status"] = self.final.get("status") or self.last.get("status")
        out["final_seen"] = bool(self.final)
        out["samples"] = self.samples
        out["cancelled_after_s"] = self.cancelled_at
        out["dirty_rate_mib_s"] = dirty_rate_mib_s(self.last)
        out["downtime_limit_ms"] = self.parameters.get("downtime_limit_ms")
        # with qemu's return path the source's downtime ends only once the
        # target has loaded the last state and closed the path
        out["capabilities"] = dict(self.parameters.get("capabilities") or {})
        out["return_path"] = out["capabilities"].get("return-path")
        bandwidth = self.parameters.get("max_bandwidth_mib_s")
        out["bandwidth_mib_s"] = bandwidth
        return out
