"""Side by side with a real Ganeti 3.0: the same guest migrated and exported by both.

A Ganeti peer (``ganeti_lv.devcluster.peer``: two Ganeti 3.0.2 nodes in
namespaces of their own, TCG) runs beside the bench cluster. Each tool gets
the same test guest (kernel, initramfs, kernel arguments, 1 vCPU, memory,
a 128 MiB ``sharedfile`` disk) and keeps its defaults: Ganeti migrates at
32 MiB/s with a 30 ms downtime limit (read back from its qemu), ganeti_lv
with unlimited bandwidth, its downtime limit and convergence policy.

Migrations, in alternating pairs (Ganeti, ganeti_lv; ganeti_lv, Ganeti ...):

* settled guests, 128 and 256 MiB, idle and with the 32 MiB dirtier: one
  guest per tool, booted, moved once unmeasured, then moved back and forth;
* fresh guests (128 MiB, dirtier 32 MiB, the main job's guest): a new
  instance per migration, migrated as soon as it printed GUEST-READY;
* a guest dirtying faster than Ganeti's 32 MiB/s, once per tool, each
  stopped at a cap (Ganeti: ``migrate_cancel`` on its qemu's monitor;
  ganeti_lv: Ctrl-C, which aborts).

At most two guests run at once: while one tool works, the other tool's
guest is paused (qemu ``stop`` / ``virsh suspend``), so neither competes
with the other for the machine's two cores.

Figures: wall time of the command; downtime, RAM sent, passes and total
time from qemu. Ganeti's come from the source qemu's monitor (``info
migrate``, polled every 50 ms while the migration runs, since Ganeti kills
that qemu about a second after it completes), ganeti_lv's from libvirt's
completed job on the target (``virsh domjobinfo --completed``). Both
tools' pauses are also split along qemu's own events (``qmp_events``: the
source's STOP and MIGRATION statuses, the target's RESUME): for ganeti_lv
libvirt's wait at ``pre-switchover`` and its Finish hand-over to the
target, and what is left without them; the source qemu's migration
capabilities are read back during every migration.

Export of the same 1 GiB disk of random data (``file`` disks, node1 to
node2): Ganeti only with the instance shut down (``--long-sleep``; it
cannot snapshot file disks), ganeti_lv live (``--noshutdown``) and shut
down; wall time and the guest's downtime (the longest gap in its ``tick N``
heartbeat from the start of the export until it ticks again).
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bench import ganeti_report as report
from bench import migration, stats
from bench.common import BenchCluster, BenchError, Feedback, ensure_bytecode
from bench.export import Heartbeat, allocated_bytes, link_bytes
from bench.ganeti_tools import NODES, GuestSpec, LvTool, PeerTool, fill_random
from ganeti_lv.devcluster.peer import PeerCluster
from ganeti_lv.errors import GenericError

PEER_DIR = "/var/tmp/ganeti-lv-bench-peer"
SETTLED = [(128, 0), (128, 32), (256, 0), (256, 32)]
QUICK_SETTLED = [(128, 32)]
# right after boot: the main job's guest (dirtier 32 MiB), and the same guest idle
FRESH = [(128, 32), (128, 0)]
FAST = {"memory": 256, "dirtymb": 128}
EXPORT_DISK_MIB = 1024
# created stopped: the disk is filled with random data before the first boot
EXPORT_GUEST = GuestSpec(128, 0, template="file", disk_mb=EXPORT_DISK_MIB, start=False)
# Any migration still running then is stopped: at 32 MiB/s Ganeti sends a
# 256 MiB guest's whole memory in 8 s, and ganeti_lv's idle migrations take
# about 1 s; one still running at 30 s is going round in passes.
CAP = 30.0
FAST_CAP = 60.0
EXPORT_DIR = "/var/lib/ganeti/export"
TICK_BACK_TIMEOUT = 180.0

Errors = (BenchError, GenericError, subprocess.SubprocessError, OSError)


def _both(first: Callable[[], None], second: Callable[[], None]) -> None:
    """Run two set-up steps at once (two guests booting); re-raise the first failure."""
    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(first), pool.submit(second)]
        for fut in futures:
            fut.result()


class Comparison:
    """Both tools and their guests; every case of the comparison."""

    def __init__(self, peer: PeerCluster, cl: BenchCluster, feedback: Feedback) -> None:
        self.g = PeerTool(peer)
        self.lv = LvTool(cl)
        self.peer = peer
        self.cl = cl
        self.feedback = feedback
        self.limits: dict[str, str] = {}

    # ------------------------------------------------------------ one migration
    def migrate_g(self, name: str, lv_name: str | None, cap: float = CAP) -> dict[str, Any]:
        """Ganeti migrates ``name`` while ganeti_lv's guest (if any) is paused."""
        if lv_name is None:
            res = self.g.migrate(name, cap)
        else:
            with self.lv.paused(lv_name):
                res = self.g.migrate(name, cap)
        self._note_ganeti_limits(res)
        return res

    def migrate_lv(self, name: str, g_name: str | None, cap: float = CAP) -> dict[str, Any]:
        """ganeti_lv migrates ``name`` while Ganeti's guest (if any) is paused."""
        if g_name is None:
            return self.lv.migrate(name, cap)
        with self.g.paused(g_name):
            return self.lv.migrate(name, cap)

    def _note_ganeti_limits(self, res: dict[str, Any]) -> None:
        if "ganeti" in self.limits or res.get("downtime_limit_ms") is None:
            return
        bw = res.get("bandwidth_mib_s")
        self.limits["ganeti"] = (
            f"{res['downtime_limit_ms']:g} ms downtime, "
            + (f"{bw:g} MiB/s" if bw else "unlimited bandwidth")
            + " (qemu's migration parameters)"
        )

    # ------------------------------------------------------------ cases
    def settled(self, memory: int, dirty: int, pairs: int) -> dict[str, Any]:
        """Alternating pairs on one booted guest per tool, after one unmeasured move each."""
        gname, lname = f"pg{memory}d{dirty}", f"pl{memory}d{dirty}"
        label = report.case_label(memory, dirty)
        self.feedback(f"ganeti: {label}, {pairs} pairs")
        try:
            _both(
                lambda: self.g.add(gname, GuestSpec(memory, dirty)),
                lambda: self.lv.add(lname, GuestSpec(memory, dirty)),
            )
            self.migrate_g(gname, lname)
            self.migrate_lv(lname, gname)
            g_runs, lv_runs = stats.alternate(
                lambda _i: self.migrate_g(gname, lname),
                lambda _i: self.migrate_lv(lname, gname),
                pairs,
            )
        finally:
            self.g.remove(gname)
            self.lv.remove(lname)
        return report.case_result(memory, dirty, False, g_runs, lv_runs)

    def fresh(self, memory: int, dirty: int, pairs: int) -> dict[str, Any]:
        """A new guest per migration, migrated as soon as it is ready (one guest at a time)."""
        self.feedback(f"ganeti: {report.case_label(memory, dirty, True)}, {pairs} pairs")

        def one(tool: PeerTool | LvTool, name: str) -> dict[str, Any]:
            try:  # a guest that did not boot in time is removed too
                tool.add(name, GuestSpec(memory, dirty))
                return tool.migrate(name, CAP)
            finally:
                tool.remove(name)

        g_runs, lv_runs = stats.alternate(
            lambda i: one(self.g, f"pgf{memory}d{dirty}n{i}"),
            lambda i: one(self.lv, f"plf{memory}d{dirty}n{i}"),
            pairs,
        )
        return report.case_result(memory, dirty, True, g_runs, lv_runs)

    def fast_dirtier(self, cap: float) -> dict[str, Any]:
        """A guest dirtying faster than Ganeti's bandwidth: each tool once, within ``cap``."""
        memory, dirty = FAST["memory"], FAST["dirtymb"]
        gname, lname = "pgfast", "plfast"
        self.feedback(f"ganeti: fast dirtier {dirty} MiB in {memory} MiB, cap {cap:g} s")
        out: dict[str, Any] = {"memory_mib": memory, "dirty_mib": dirty, "cap_s": cap}
        try:
            _both(
                lambda: self.g.add(gname, GuestSpec(memory, dirty)),
                lambda: self.lv.add(lname, GuestSpec(memory, dirty)),
            )
            out["ganeti"] = self.migrate_g(gname, lname, cap)
            out["ganeti_lv"] = self.migrate_lv(lname, gname, cap)
        finally:
            self.g.remove(gname)
            self.lv.remove(lname)
        rate = out["ganeti"].get("dirty_rate_mib_s")
        if rate:
            out["dirty_rate_mib_s"] = rate
        out["limits"] = {
            "ganeti": self.limits.get("ganeti", ""),
            "ganeti_lv": self.limits.get("ganeti_lv", ""),
        }
        return out

    # ------------------------------------------------------------ export
    def _export_one(
        self,
        console: str,
        veth: str,
        target_dir: str,
        do_export: Callable[[], None],
        remove: Callable[[], None],
    ) -> dict[str, Any]:
        with Heartbeat(console) as hb:
            before = link_bytes(veth)
            start = time.monotonic()
            do_export()
            end = time.monotonic()
            wire = link_bytes(veth) - before
            target = allocated_bytes(target_dir)
            back = self._tick_after(hb, end)
        remove()
        return {
            "wall": end - start,
            "guest_gap": hb.watcher.longest_gap(start, back),
            "wire_bytes": wire,
            "target_allocated": target,
        }

    @staticmethod
    def _tick_after(hb: Heartbeat, moment: float) -> float:
        """When the guest first ticked after ``moment`` (it may still be booting)."""
        deadline = time.monotonic() + TICK_BACK_TIMEOUT
        while time.monotonic() < deadline:
            later = [t for t in list(hb.watcher.arrivals) if t > moment]
            if later:
                return later[0]
            time.sleep(0.05)
        raise BenchError(f"the guest did not tick within {TICK_BACK_TIMEOUT:g} s of the export")

    def export(self, rounds: int) -> dict[str, Any]:
        """Rounds of: Ganeti's export (shut down), ganeti_lv's live and shut-down exports."""
        gname, lname = "pgexport", "plexport"
        self.feedback(f"ganeti: export of a {EXPORT_DISK_MIB} MiB disk, {rounds} rounds")
        g_node2 = self.peer.layout().node(NODES[1])
        g_veth = self.peer.layout().node(NODES[0]).veth_host
        lv_veth = str(self.cl.node(NODES[0])["veth"])
        lv_export_dir = str(self.cl.info["storage"]["export_dir"])
        try:

            def add_g() -> None:
                self.g.add(gname, EXPORT_GUEST)
                fill_random(self.g.disk_path(gname), EXPORT_DISK_MIB)
                self.g.start(gname)

            def add_lv() -> None:
                self.lv.add(lname, EXPORT_GUEST)
                fill_random(self.lv.disk_path(lname), EXPORT_DISK_MIB)
                self.lv.start(lname)

            _both(add_g, add_lv)

            def g_export() -> dict[str, Any]:
                with self.lv.paused(lname):
                    return self._export_one(
                        self.g.console(gname),
                        g_veth,
                        g_node2.host_path(f"{EXPORT_DIR}/{gname}"),
                        lambda: self.g.export(gname),
                        lambda: self.g.remove_export(gname),
                    )

            def lv_export(live: bool) -> dict[str, Any]:
                with self.g.paused(gname):
                    return self._export_one(
                        self.lv.console(lname),
                        lv_veth,
                        self.cl.host_path(NODES[1], f"{lv_export_dir}/{lname}"),
                        lambda: self.lv.export(lname, live),
                        lambda: self.lv.remove_export(lname),
                    )

            modes: list[tuple[str, Callable[[], dict[str, Any]]]] = [
                ("ganeti_shutdown", g_export),
                ("ganeti_lv_live", lambda: lv_export(True)),
                ("ganeti_lv_shutdown", lambda: lv_export(False)),
            ]
            runs: dict[str, list[dict[str, Any]]] = {key: [] for key, _ in modes}
            for i in range(rounds):
                # rotate the order, so no mode always goes first
                for key, fn in modes[i % len(modes) :] + modes[: i % len(modes)]:
                    try:
                        runs[key].append(fn())
                    except BenchError as err:  # counted as failed; the others go on
                        self.feedback(f"ganeti: export {key} failed: {err}")
                        runs[key].append({"failed": str(err)})
        finally:
            self.g.remove(gname)
            self.lv.remove(lname)
        return {
            "disk_mib": EXPORT_DISK_MIB,
            "rounds": rounds,
            "runs": runs,
            "summary": {k: report.export_summary(v, EXPORT_DISK_MIB) for k, v in runs.items()},
        }


CASE_GROUPS = ("settled", "fresh", "fast", "export")
# subsets: only the idle guests of a group
IDLE_GROUPS = ("settled-idle", "fresh-idle")


def _pick(cases: list[tuple[int, int]], group: str, groups: tuple[str, ...]) -> list[Any]:
    """The cases of ``group`` that ``groups`` selects (all, the idle ones, or none)."""
    if group in groups:
        return cases
    if f"{group}-idle" in groups:
        return [(memory, dirty) for memory, dirty in cases if not dirty]
    return []


def run_all(
    cl: BenchCluster,
    quick: bool,
    feedback: Feedback,
    peer_dir: str = PEER_DIR,
    groups: tuple[str, ...] = CASE_GROUPS,
    pairs: int | None = None,
) -> dict[str, Any]:
    """Bring up the Ganeti peer beside the bench cluster, run the cases, take the peer down.

    ``groups`` selects the groups of cases (``CASE_GROUPS``), so a full run
    can be split into shorter ones; ``pairs`` overrides the number of pairs
    of the settled cases (4) and of the fresh ones (3).
    """
    ensure_bytecode()
    started = time.monotonic()
    peer = PeerCluster(peer_dir, feedback_fn=feedback)
    out: dict[str, Any] = {"cases": [], "cap_s": CAP}
    feedback(f"bringing up the Ganeti peer in {peer_dir}")
    try:
        info = peer.up()
        out["peer"] = {"directory": peer_dir, "subnet": info["subnet"]}
        cl.start_masterd()
        comp = Comparison(peer, cl, feedback)
        comp.limits["ganeti_lv"] = (
            f"downtime limit from {migration.lv_downtime_ms('migration_downtime_initial')} ms"
            f" up to {migration.lv_downtime_ms()} ms while the guest does not converge"
            " (ganeti_lv's defaults), unlimited bandwidth, its convergence policy"
        )
        out["groups"] = list(groups)
        settled_pairs = pairs or (1 if quick else 4)
        settled = _pick(QUICK_SETTLED if quick else SETTLED, "settled", groups)
        for memory, dirty in settled:
            try:
                out["cases"].append(comp.settled(memory, dirty, settled_pairs))
            except Errors as err:
                out["cases"].append({"label": report.case_label(memory, dirty), "error": f"{err}"})
        fresh = _pick(FRESH[:1] if quick else FRESH, "fresh", groups)
        for memory, dirty in fresh:
            try:
                out["cases"].append(comp.fresh(memory, dirty, pairs or (1 if quick else 3)))
            except Errors as err:
                label = report.case_label(memory, dirty, True)
                out["cases"].append({"label": label, "error": f"{err}"})
        try:
            if "fast" in groups:
                out["fast_dirtier"] = comp.fast_dirtier(20.0 if quick else FAST_CAP)
        except Errors as err:
            out["fast_dirtier"] = {"error": str(err), "cap_s": FAST_CAP}
        try:
            if "export" in groups:
                out["export"] = comp.export(1 if quick else 3)
        except Errors as err:
            out["export"] = {"error": str(err)}
        out["limits"] = dict(comp.limits)
    finally:
        cl.stop_masterd()
        feedback("taking the Ganeti peer down")
        peer.down()
    out["seconds"] = time.monotonic() - started
    return out


targets = report.targets
markdown = report.markdown
