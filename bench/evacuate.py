"""Node evacuation benchmark: ``gnt-lv node evacuate`` against a sequential virsh loop.

Idle 128 MiB guests (``sharedfile``, no dirtier) run on node1. Alternately:

- ganeti_lv: ``gnt-lv node evacuate -f node1`` (through the master daemon),
  which plans the targets and migrates the guests in parallel (cluster
  defaults: 2 moves at once off a node, 1 onto a node);
- the baseline: ``virsh migrate`` of each guest in turn, to the node the
  ganeti_lv plan chose for it in the same pair, with the flags ganeti_lv
  asks libvirt for (``bench.migration.virsh_argv``).

After each side the guests go back to node1 (untimed). Per side: the wall
time of the whole evacuation and each guest's downtime as libvirt
reports it (ganeti_lv prints each migration's statistics; virsh's from
``domjobinfo --completed``). Targets (printed, not asserted): wall-time
ratio ganeti_lv / virsh <= 0.8, and every guest's downtime within its
limit (the ``migration_downtime`` hvparam, 300 ms by default).

Four guests, as the issue names (``GUESTS``). The machine runs at most two
BUSY guests at once: the guests are booted two at a time, and each pair,
once booted, is measured over ``IDLE_WINDOW`` s (the qemu process's CPU
time as libvirt counts it); the next pair is booted only when every guest
so far uses less than ``IDLE_LIMIT`` % of a core (an idle test guest under
TCG uses some 2-3 %: its kernel's timer ticks). Otherwise the benchmark
goes on with the guests it has, and says so. Each guest's idle CPU share
is part of the results.
"""

from __future__ import annotations

import re
import time
from typing import Any

from bench import stats
from bench.common import BenchCluster, BenchError, Feedback, Guest, parse_jobinfo, run
from bench.migration import virsh_argv
from ganeti_lv import constants

GUESTS = 4
MEMORY = 128
# booted at a time, and the idle check before more are booted (s, % of a core)
BOOT_BATCH = 2
IDLE_WINDOW = 10.0
IDLE_LIMIT = 5.0
SOURCE = "node1"
RATIO_LIMIT = 0.8
# "<instance>: ... total time 1.23 s, downtime 45 ms" relayed by the node operation
STATS_RE = re.compile(r"^(?:.*? )?(?P<who>[\w.-]+): .*total time ([0-9.]+) s, downtime (\d+)")
PLAN_RE = re.compile(r"(?P<who>[\w.-]+) \(\d+ MiB\): (?P<src>[\w.-]+) -> (?P<dst>[\w.-]+)")


def _names(count: int) -> list[str]:
    return [f"ev{idx + 1}" for idx in range(count)]


def _back_home(cl: BenchCluster, names: list[str]) -> None:
    """Every guest back on node1 (untimed)."""
    for name in names:
        if cl.primary(name) != SOURCE:
            cl.gnt("instance", "migrate", "-f", "-n", SOURCE, name, timeout=600)


def evacuate_gnt(cl: BenchCluster, names: list[str]) -> dict[str, Any]:
    """One timed ``gnt-lv node evacuate``; wall time, each guest's target and downtime."""
    start = time.perf_counter()
    proc = cl.gnt("node", "evacuate", "-f", SOURCE, timeout=900)
    wall = time.perf_counter() - start
    out = proc.stdout
    targets = {m.group("who"): m.group("dst") for m in PLAN_RE.finditer(out)}
    downtime = {}
    for line in out.splitlines():
        match = STATS_RE.search(line)
        if match:
            downtime[match.group("who")] = float(match.group(3))
    missing = [n for n in names if cl.primary(n) == SOURCE]
    if missing:
        raise BenchError(f"node evacuate left {', '.join(missing)} on {SOURCE}")
    return {"wall": wall, "targets": targets, "downtime_ms": downtime}


def evacuate_virsh(cl: BenchCluster, names: list[str], targets: dict[str, str]) -> dict[str, Any]:
    """One timed sequential loop of ``virsh migrate`` (the configuration updated after)."""
    downtime = {}
    start = time.perf_counter()
    for name in names:
        run(virsh_argv(cl, name, SOURCE, targets[name], []), timeout=600)
    wall = time.perf_counter() - start
    for name in names:
        cl.record_primary(name, targets[name])
        info = cl.virsh(targets[name], "domjobinfo", "--completed", name, check=False)
        found = parse_jobinfo(info.stdout) if info.returncode == 0 else {}
        if found.get("total_downtime_ms") is not None:
            downtime[name] = found["total_downtime_ms"]
    return {"wall": wall, "targets": targets, "downtime_ms": downtime}


def _boot(
    cl: BenchCluster, wanted: list[str], feedback: Feedback, names: list[str]
) -> dict[str, float]:
    """Boot ``wanted`` on node1, ``BOOT_BATCH`` at a time, while the booted ones idle.

    Each guest is added to ``names`` once created; returns each one's idle
    CPU share in % of a core.
    """
    idle: dict[str, float] = {}
    for start in range(0, len(wanted), BOOT_BATCH):
        busy = {n: pct for n, pct in idle.items() if pct >= IDLE_LIMIT}
        if busy:
            feedback(
                f"evacuation: not booting more guests: {busy} use {IDLE_LIMIT:g} % of a core"
                f" or more when idle; going on with {len(names)}"
            )
            break
        batch = wanted[start : start + BOOT_BATCH]
        for name in batch:
            cl.remove_instance(name)
            since = cl.console_size(name, SOURCE)
            cl.add_instance(name, SOURCE, Guest(seed=name, dirtymb=0), memory=MEMORY, disk="96M")
            names.append(name)
            cl.wait_console(name, SOURCE, "GUEST-READY", timeout=180, since=since)
        before = {n: cl.cpu_seconds(n, SOURCE) for n in batch}
        begin = time.monotonic()
        time.sleep(IDLE_WINDOW)
        after = {n: cl.cpu_seconds(n, SOURCE) for n in batch}
        elapsed = time.monotonic() - begin
        for name in batch:
            idle[name] = 100.0 * (after[name] - before[name]) / elapsed
        feedback(
            "evacuation: idle CPU "
            + ", ".join(f"{n} {idle[n]:.1f} %" for n in batch)
            + f" of a core over {elapsed:.0f} s"
        )
    return idle


def run_all(
    cl: BenchCluster, quick: bool, feedback: Feedback, guests: int = GUESTS
) -> dict[str, Any]:
    """Alternating pairs of evacuations of node1; medians, the pair ratio, downtimes."""
    pairs = 1 if quick else 3
    feedback(f"evacuation: {guests} idle {MEMORY} MiB guests, {pairs} pairs")
    names: list[str] = []
    masterd = False
    try:
        idle = _boot(cl, _names(guests), feedback, names)
        cl.start_masterd()
        masterd = True
        # one unmeasured round of each first (first moves create the console logs)
        first = evacuate_gnt(cl, names)
        _back_home(cl, names)
        evacuate_virsh(cl, names, first["targets"])
        _back_home(cl, names)
        gnt: list[dict[str, Any]] = []
        virsh: list[dict[str, Any]] = []
        # the order swaps every pair; the loop moves each guest where
        # ganeti_lv's last plan put it
        targets = first["targets"]
        for i in range(pairs):
            for tool in ("gnt", "virsh") if i % 2 == 0 else ("virsh", "gnt"):
                if tool == "gnt":
                    gnt.append(evacuate_gnt(cl, names))
                    targets = gnt[-1]["targets"]
                else:
                    virsh.append(evacuate_virsh(cl, names, targets))
                _back_home(cl, names)
    finally:
        if masterd:
            cl.stop_masterd()
        for name in names:
            cl.remove_instance(name)
    limit = float(constants.HVC_DEFAULTS["migration_downtime"])
    worst = max((d for r in gnt for d in r["downtime_ms"].values()), default=float("nan"))
    return {
        "guests": len(names),
        "guests_wanted": guests,
        "idle_cpu_pct": idle,
        "memory_mib": MEMORY,
        "pairs": pairs,
        "ganeti_lv_wall": stats.median(r["wall"] for r in gnt),
        "virsh_wall": stats.median(r["wall"] for r in virsh),
        "wall_ratio": stats.median_pair_ratio([r["wall"] for r in gnt], [r["wall"] for r in virsh]),
        "worst_downtime_ms": worst,
        "downtime_limit_ms": limit,
        "runs": {"ganeti_lv": gnt, "virsh": virsh},
    }


def targets(results: dict[str, Any]) -> list[stats.Target]:
    """The issue's targets for the evacuation."""
    return [
        stats.Target(
            f"node evacuation wall-time ratio to a sequential virsh loop,"
            f" {results.get('guests', GUESTS)} idle guests",
            results.get("wall_ratio", float("nan")),
            RATIO_LIMIT,
            "<=",
        ),
        stats.Target(
            "worst guest downtime in a node evacuation",
            results.get("worst_downtime_ms", float("nan")),
            results.get("downtime_limit_ms", 300.0),
            "<=",
            "ms",
        ),
    ]


def markdown(results: dict[str, Any]) -> str:
    """The evacuation results as a table."""
    if "error" in results:
        return f"Evacuation benchmark failed: {results['error'][-300:]}"
    idle = results.get("idle_cpu_pct") or {}
    rows = [
        [
            f"{results['guests']} x {results['memory_mib']} MiB idle"
            + (f" ({max(idle.values()):.1f} % of a core at most)" if idle else ""),
            results["ganeti_lv_wall"],
            results["virsh_wall"],
            results["wall_ratio"],
            results["worst_downtime_ms"],
            results["pairs"],
        ]
    ]
    headers = [
        "guests",
        "gnt-lv node evacuate wall s",
        "sequential virsh wall s",
        "ratio (median of pairs)",
        "worst downtime ms (gnt-lv)",
        "pairs",
    ]
    return stats.markdown_table(headers, rows)
