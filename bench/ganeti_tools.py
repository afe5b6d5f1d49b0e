"""The two sides of the Ganeti comparison, driven the way an operator drives them.

``PeerTool`` runs Ganeti's own commands (``gnt-instance``, ``gnt-backup``)
on the master of the Ganeti peer (``ganeti_lv.devcluster.peer``) and reads
qemu's figures from the instance's monitor socket. ``LvTool`` runs
``gnt-lv`` against the bench cluster (through its master daemon) and reads
libvirt's completed job. Both boot the same test guest (same kernel,
initramfs and kernel arguments, 1 vCPU, the memory asked for) on disks of
the same template and size, and report a migration as the same dict:
``converged``, ``wall`` (s), ``downtime_ms``, ``total_ms``, ``memory_mib``
(RAM sent), ``passes``, ``note``.
"""

from __future__ import annotations

import contextlib
import glob
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from bench import migration
from bench.common import BIN, BenchCluster, BenchError, Guest, run
from bench.qemu_monitor import LibvirtQmp, MigrationWatcher, MonitorError, hmp
from bench.qmp_events import QmpEvents, libvirt_switchover, pause_ms, switchover
from ganeti_lv.devcluster import guest as devguest
from ganeti_lv.devcluster.peer import READY_RE, PeerCluster

NODES = ("node1", "node2")
PATMB = 16  # the peer's guests write 16 MiB of pattern at boot; so do the bench's
CTRL_DIR = "/run/ganeti/kvm-hypervisor/ctrl"
FILE_STORAGE_DIR = "/srv/ganeti/file-storage"
BOOT_TIMEOUT = 180.0
# libvirt stops the source qemu tens of ms after the transfer: poll it often
QMP_INTERVAL = 0.005


@dataclass(frozen=True)
class GuestSpec:
    """The test guest as both tools create it."""

    memory: int
    dirtymb: int = 0
    template: str = "sharedfile"
    disk_mb: int = 128
    start: bool = True


def other(node: str) -> str:
    """The other of the two nodes."""
    return NODES[1] if node == NODES[0] else NODES[0]


def fill_random(path: str, mib: int) -> None:
    """Write ``mib`` MiB of random data at the start of the image at ``path``."""
    run(
        [
            "dd",
            "if=/dev/urandom",
            f"of={path}",
            "bs=1M",
            f"count={mib}",
            "conv=notrunc,fsync",
            "status=none",
        ],
        timeout=300,
    )


def _tail(text: str, lines: int = 2) -> str:
    return " | ".join(text.strip().splitlines()[-lines:])[-300:]


class PeerTool:
    """Ganeti 3.0 (the peer), with its defaults."""

    label = "Ganeti"

    def __init__(self, peer: PeerCluster) -> None:
        self.peer = peer
        self.primary: dict[str, str] = {}

    # ------------------------------------------------------------ instances
    def add(self, name: str, spec: GuestSpec) -> None:
        """Add the test guest as a Ganeti instance on node1 (booted unless ``start`` is False)."""
        self.primary[name] = NODES[0]  # before: one added but not booted in time is removed too
        self.peer.add_instance(
            name,
            node=NODES[0],
            template=spec.template,
            dirtymb=spec.dirtymb,
            memory_mb=spec.memory,
            disk_mb=spec.disk_mb,
            start=spec.start,
            boot_timeout=BOOT_TIMEOUT,
        )

    def start(self, name: str) -> None:
        """``gnt-instance startup``; wait for the guest's ready line."""
        since = self.console_size(name)
        self.peer.gnt(["gnt-instance", "startup", name])
        devguest.wait_console(self.console(name), READY_RE, BOOT_TIMEOUT, start=since)

    def remove(self, name: str) -> None:
        """Remove the instance if this tool added it (clean-up path: errors are ignored)."""
        if self.primary.pop(name, None) is None:
            return
        with contextlib.suppress(Exception):
            self.peer.remove_instance(name)

    def console(self, name: str) -> str:
        """Host path of the instance's serial console log."""
        return self.peer.console_log(name)

    def console_size(self, name: str) -> int:
        """Current size of the console log (0 if none)."""
        path = self.console(name)
        return os.path.getsize(path) if os.path.exists(path) else 0

    def monitor(self, name: str, node: str | None = None) -> str:
        """Host path of the instance's monitor socket on ``node`` (its primary by default)."""
        node = node or self.primary[name]
        return self.peer.layout().node(node).host_path(f"{CTRL_DIR}/{name}.monitor")

    def kvmd(self, name: str, node: str) -> str:
        """Host path of the instance's second QMP socket (kvmd's) on ``node``."""
        return self.peer.layout().node(node).host_path(f"{CTRL_DIR}/{name}.kvmd")

    def disk_path(self, name: str) -> str:
        """Host path of a ``file`` instance's first disk (on node1)."""
        pattern = self.peer.layout().node(NODES[0]).host_path(f"{FILE_STORAGE_DIR}/{name}/*")
        found = sorted(glob.glob(pattern))
        if len(found) != 1:
            raise BenchError(f"{name}: expected one disk file, found {found}")
        return found[0]

    @contextlib.contextmanager
    def paused(self, name: str) -> Iterator[None]:
        """The guest stopped (qemu's ``stop``) inside the block, running again after it."""
        hmp(self.monitor(name), "stop")
        try:
            yield
        finally:
            hmp(self.monitor(name), "cont")

    def _check_running(self, name: str, node: str) -> None:
        try:
            status = hmp(self.monitor(name, node), "info status")
        except MonitorError as err:
            raise BenchError(f"{name} does not run on {node} after the migration: {err}") from err
        if "running" not in status:
            raise BenchError(f"{name} on {node}: {status.strip()}")

    # ------------------------------------------------------------ operations
    def migrate(self, name: str, cap: float) -> dict[str, Any]:
        """``gnt-instance migrate -f -n <other node>``; qemu's figures from the source.

        When the memory transfer still runs after ``cap`` seconds it is
        cancelled on the source (``migrate_cancel``); Ganeti then reports a
        failed migration and the guest continues on the source.
        """
        src = self.primary[name]
        dst = other(src)
        fqdn = self.peer.layout().node(dst).fqdn
        argv = ["gnt-instance", "migrate", "-f", "-n", fqdn, name]
        master = self.peer.layout().master.name
        src_events = QmpEvents(self.kvmd(name, src))
        dst_events = QmpEvents(self.kvmd(name, dst))
        with (
            src_events,
            dst_events,
            MigrationWatcher(self.monitor(name, src), cancel_after=cap) as watcher,
        ):
            start = time.perf_counter()
            proc = self.peer.run(master, argv, check=False, timeout=cap + 300)
            wall = time.perf_counter() - start
            # the target's RESUME may trail the command's end by a moment
            deadline = time.monotonic() + 2.0
            while proc.returncode == 0 and not dst_events.times("RESUME"):
                if time.monotonic() > deadline:
                    break
                time.sleep(0.01)
        figures = watcher.result()
        figures["pause_ms"] = pause_ms(src_events.times("STOP"), dst_events.times("RESUME"))
        figures.update(switchover(src_events.events, dst_events.events))
        figures["events"] = {"source": src_events.events, "target": dst_events.events}
        converged = proc.returncode == 0
        if converged:
            self.primary[name] = dst
            self._check_running(name, dst)
        return {
            **figures,
            "src": src,
            "dst": dst,
            "wall": wall,
            "converged": converged,
            "note": "" if converged else _tail(proc.stdout + proc.stderr),
        }

    def export(self, name: str, timeout: float = 1200) -> None:
        """``gnt-backup export -n node2 --long-sleep`` (shut down; the only way for file disks)."""
        fqdn = self.peer.layout().node(NODES[1]).fqdn
        self.peer.gnt(["gnt-backup", "export", "-n", fqdn, "--long-sleep", name], timeout=timeout)

    def remove_export(self, name: str) -> None:
        """``gnt-backup remove`` (untimed clean-up)."""
        self.peer.gnt(["gnt-backup", "remove", name], check=False)


class LvTool:
    """ganeti_lv (the bench cluster, ``gnt-lv`` through its master daemon), with its defaults."""

    label = "ganeti_lv"

    def __init__(self, cl: BenchCluster) -> None:
        self.cl = cl
        self.names: set[str] = set()

    # ------------------------------------------------------------ instances
    def add(self, name: str, spec: GuestSpec) -> None:
        """``gnt-lv instance add`` of the test guest on node1 (booted unless ``start`` is False)."""
        self.cl.remove_instance(name)
        since = self.console_size(name)
        self.names.add(name)
        self.cl.add_instance(
            name,
            NODES[0],
            Guest(seed=name, patmb=PATMB, dirtymb=spec.dirtymb),
            memory=spec.memory,
            disk=f"{spec.disk_mb}M",
            template=spec.template,
            start=spec.start,
        )
        if spec.start:
            self.cl.wait_console(name, NODES[0], "GUEST-READY", timeout=BOOT_TIMEOUT, since=since)

    def start(self, name: str) -> None:
        """``gnt-lv instance startup``; wait for the guest's ready line."""
        since = self.console_size(name)
        self.cl.gnt("instance", "startup", name, timeout=300)
        self.cl.wait_console(name, NODES[0], "GUEST-READY", timeout=BOOT_TIMEOUT, since=since)

    def remove(self, name: str) -> None:
        """Remove the instance (errors ignored)."""
        if name in self.names:
            self.names.discard(name)
            self.cl.remove_instance(name)

    def console(self, name: str) -> str:
        """Host path of the console log on the instance's primary node."""
        return self.cl.console_path(name, self.cl.primary(name))

    def console_size(self, name: str) -> int:
        """Current size of the console log on node1 (0 if none)."""
        return self.cl.console_size(name, NODES[0])

    def disk_path(self, name: str) -> str:
        """Host path of a ``file`` instance's first disk."""
        from ganeti_lv import objects

        cfg = self.cl.config()
        node_path = objects.disk_path(cfg.cluster, cfg.instances[name], 0)
        return self.cl.host_path(NODES[0], node_path)

    @contextlib.contextmanager
    def paused(self, name: str) -> Iterator[None]:
        """The guest suspended (``virsh suspend``) inside the block, resumed after it."""
        node = self.cl.primary(name)
        self.cl.virsh(node, "suspend", name)
        try:
            yield
        finally:
            self.cl.virsh(node, "resume", name)

    # ------------------------------------------------------------ operations
    def migrate(self, name: str, cap: float) -> dict[str, Any]:
        """``gnt-lv instance migrate -f -n <other node>``; qemu's and libvirt's figures.

        ``downtime_ms`` is qemu's own (``query-migrate`` on the source, as
        for Ganeti), ``libvirt_downtime_ms`` libvirt's completed job's (from
        the source's stop until the target's resume). When it still runs
        after ``cap`` seconds it gets a Ctrl-C (SIGINT), which aborts the
        migration; the guest stays on the source.
        """
        src = self.cl.primary(name)
        dst = other(src)
        argv = [str(BIN / "gnt-lv"), "instance", "migrate", "-f", "-n", dst, name]
        qmp = LibvirtQmp(self.cl.uri(src))
        capped = False
        try:
            with (
                libvirt_switchover(self.cl.uri(src), self.cl.uri(dst), name) as split,
                MigrationWatcher(name, interval=QMP_INTERVAL, query=qmp) as watcher,
            ):
                start = time.perf_counter()
                proc = subprocess.Popen(
                    argv,
                    env=self.cl.env(),
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                )
                try:
                    out, _ = proc.communicate(timeout=cap)
                except subprocess.TimeoutExpired:
                    capped = True
                    proc.send_signal(signal.SIGINT)
                    try:
                        out, _ = proc.communicate(timeout=300)
                    except subprocess.TimeoutExpired:
                        proc.kill()  # its cancel did not end it: nothing is left running
                        out, _ = proc.communicate()
                wall = time.perf_counter() - start
        finally:
            qmp.close()
        qemu = watcher.result()
        converged = proc.returncode == 0
        result: dict[str, Any] = {
            "src": src,
            "dst": dst,
            "wall": wall,
            "converged": converged,
            "cancelled_after_s": cap if capped else None,
            "note": "" if converged else _tail(out),
        }
        if not converged:
            return result
        state = self.cl.virsh(dst, "domstate", name, check=False).stdout.strip()
        if state != "running":
            raise BenchError(f"{name} is '{state}' on {dst} after the migration")
        info = migration.completed_jobinfo(self.cl, dst, name)
        match = migration.GNT_STATS_RE.search(out)
        downtime = info.get("total_downtime_ms")
        if downtime is None and match and match.group(2) != "unknown":
            downtime = float(match.group(2))
        total = info.get("time_elapsed_ms")
        if total is None and match:
            total = float(match.group(1)) * 1000
        caught = qemu.get("status") == "completed" and qemu.get("downtime_ms") is not None
        result.update(
            downtime_ms=qemu["downtime_ms"] if caught else None,
            qemu_caught=caught,
            qemu_samples=qemu.get("samples"),
            downtime_limit_ms=qemu.get("downtime_limit_ms"),
            return_path=qemu.get("return_path"),
            libvirt_downtime_ms=downtime,
            # libvirt's downtime runs from the source's stop to the target's resume
            pause_ms=downtime,
            capabilities=qemu.get("capabilities"),
            stopped_memory_mib=qemu.get("stopped_memory_mib") if caught else None,
            **split,
            total_ms=total,
            memory_mib=info.get("memory_processed_mib"),
            passes=info.get("iteration"),
        )
        return result

    def export(self, name: str, live: bool, timeout: float = 1200) -> None:
        """``gnt-lv backup export -n node2`` (``--noshutdown`` when ``live``)."""
        extra = ["--noshutdown"] if live else []
        self.cl.gnt("backup", "export", *extra, "-n", NODES[1], name, timeout=timeout)

    def remove_export(self, name: str) -> None:
        """``gnt-lv backup remove`` (untimed clean-up)."""
        self.cl.gnt("backup", "remove", name, check=False, timeout=120)
