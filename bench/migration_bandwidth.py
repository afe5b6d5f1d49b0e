"""Where a fresh guest's pause goes: the same migration with and without a bandwidth cap.

A 128 MiB guest migrated as soon as it printed GUEST-READY (the case of
the Ganeti comparison where ganeti_lv's pause is furthest from Ganeti's)
pauses longest in qemu's last stage, from the source's ``device`` status
to its ``completed`` (the device state sent and, with libvirt's return
path, loaded and acknowledged by the target). This part tells apart the
two things that stage can wait for: RAM still to be sent after the stop,
and data sent before the stop that the target has not loaded yet. Fresh
guests (one per migration, the two nodes of the Ganeti comparison) are
migrated by ``gnt-lv instance migrate`` with the cluster's
``migration_bandwidth`` at each value of ``BANDWIDTHS`` in turn (0:
unlimited, ganeti_lv's default): wall time, qemu's downtime, the pause
along qemu's events and its last stage, the RAM sent while the guest was
stopped (``bench/run.py --only bandwidth``).
"""

from __future__ import annotations

import subprocess
from typing import Any

from bench import stats
from bench.common import BenchCluster, BenchError, Feedback, ensure_bytecode
from bench.ganeti_tools import GuestSpec, LvTool

MEMORY = 128
BANDWIDTHS = (0, 300, 100)  # MiB/s; 0 is unlimited
QUICK_BANDWIDTHS = (0, 100)
CAP = 60.0
KEYS = (
    "wall",
    "downtime_ms",
    "stop_to_resume_ms",
    "device_to_completed_ms",
    "finish_ms",
    "stopped_memory_mib",
    "total_ms",
)


def summarize(runs: list[dict[str, Any]]) -> dict[str, float]:
    """Medians of one bandwidth's completed migrations (NaN where none had the figure)."""
    done = [r for r in runs if r.get("converged")]
    return stats.medians(done, KEYS) | {"completed": len(done), "runs": len(runs)}


def run_all(cl: BenchCluster, quick: bool, feedback: Feedback) -> dict[str, Any]:
    """Rounds of fresh guests, one migration per bandwidth per round, in turn."""
    ensure_bytecode()
    bandwidths = QUICK_BANDWIDTHS if quick else BANDWIDTHS
    rounds = 1 if quick else 3
    tool = LvTool(cl)
    runs: dict[int, list[dict[str, Any]]] = {b: [] for b in bandwidths}
    error = None
    before = cl.hvparam("migration_bandwidth")
    cl.start_masterd()
    try:
        for i in range(rounds):
            # each round in the other order, as the alternating pairs elsewhere
            for bw in bandwidths if i % 2 == 0 else tuple(reversed(bandwidths)):
                feedback(f"bandwidth: fresh {MEMORY} MiB guest, cap {bw or 'none'}, round {i + 1}")
                cl.set_hvparam("migration_bandwidth", bw)
                name = f"bw{bw}r{i}"
                try:
                    tool.add(name, GuestSpec(MEMORY, 0))
                    runs[bw].append(tool.migrate(name, CAP))
                finally:
                    tool.remove(name)
    except (BenchError, subprocess.SubprocessError) as err:
        error = str(err)
    finally:
        try:
            cl.set_hvparam("migration_bandwidth", before)
        finally:
            cl.stop_masterd()
    out: dict[str, Any] = {
        "memory_mib": MEMORY,
        "rounds": rounds,
        "cases": [{"bandwidth": bw, **summarize(runs[bw])} for bw in bandwidths],
        "runs": {str(bw): runs[bw] for bw in bandwidths},
    }
    if error:
        out["error"] = error
    return out


def markdown(results: dict[str, Any]) -> str:
    """One row per bandwidth: medians of the fresh guests' migrations."""
    rows = [
        [
            f"{case['bandwidth']} MiB/s" if case["bandwidth"] else "unlimited (default)",
            stats.fmt(case["wall"]),
            stats.fmt(case["downtime_ms"]),
            stats.fmt(case["stop_to_resume_ms"]),
            stats.fmt(case["device_to_completed_ms"]),
            stats.fmt(case["finish_ms"]),
            stats.fmt(case["stopped_memory_mib"]),
            stats.fmt(case["total_ms"], 0),
            f"{case['completed']}/{case['runs']}",
        ]
        for case in results.get("cases", [])
    ]
    headers = [
        "migration_bandwidth",
        "wall s",
        "qemu downtime ms",
        "pause ms (source STOP to target RESUME)",
        "device to completed ms",
        "libvirt's Finish ms",
        "RAM sent while stopped MiB",
        "libvirt total ms",
        "completed",
    ]
    table = stats.markdown_table(headers, rows)
    if results.get("error"):
        table += f"\n\nStopped early: {results['error']}"
    return table
