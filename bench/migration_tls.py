"""What encrypting the migration stream costs: plain and TLS streams side by side.

The same 256 MiB guest (idle, then with the 32 MiB dirtier) is migrated
back and forth by ``gnt-lv instance migrate``, alternately with a plain
stream and with ``--migration-encryption yes`` (qemu's TLS with the
nodes' certificates): wall time, libvirt's total time and downtime, and
the ratio TLS / plain as the median of alternating pairs, through the
cluster's master daemon (``bench/run.py --only tls``).
"""

from __future__ import annotations

import subprocess
from typing import Any

from bench import stats
from bench.common import BenchCluster, BenchError, Feedback, ensure_bytecode
from bench.migration import (
    case_label,
    migrate_gnt,
    pair_row,
    start_guest,
    summarize,
)

CASES = [(256, 0), (256, 32)]
QUICK_CASES = [(256, 32)]


def bench_case(
    cl: BenchCluster, memory: int, dirtymb: int, pairs: int, feedback: Feedback
) -> dict[str, Any]:
    """Alternating pairs: a plain migration, then an encrypted one."""
    name = f"bt{memory}d{dirtymb}"
    feedback(f"migration stream TLS vs plain: {memory} MiB, dirtier {dirtymb} MiB, {pairs} pairs")
    tls = ["--migration-encryption", "yes"]
    try:  # a guest that did not boot in time is removed too
        start_guest(cl, name, memory, dirtymb)
        migrate_gnt(cl, name)  # unmeasured: the first move after the boot
        migrate_gnt(cl, name, tls)
        plain, encrypted = stats.alternate(
            lambda _i: migrate_gnt(cl, name), lambda _i: migrate_gnt(cl, name, tls), pairs
        )
    finally:
        cl.remove_instance(name)
    return {
        "memory_mib": memory,
        "dirty_mib": dirtymb,
        "pairs": pairs,
        "plain": summarize(plain),
        "tls": summarize(encrypted),
        "wall_ratio": stats.median_pair_ratio(
            [r["wall"] for r in encrypted], [r["wall"] for r in plain]
        ),
        "runs": {"plain": plain, "tls": encrypted},
    }


def run_all(cl: BenchCluster, quick: bool, feedback: Feedback) -> dict[str, Any]:
    """Every case on a cluster that is up; a case that fails is reported with its error."""
    ensure_bytecode()
    out: dict[str, Any] = {"cases": []}
    cl.start_masterd()
    try:
        for memory, dirtymb in QUICK_CASES if quick else CASES:
            try:
                case = bench_case(cl, memory, dirtymb, 1 if quick else 3, feedback)
            except (BenchError, subprocess.TimeoutExpired) as err:
                case = {"memory_mib": memory, "dirty_mib": dirtymb, "error": str(err)}
            out["cases"].append(case)
    finally:
        cl.stop_masterd()
    return out


def markdown(results: dict[str, Any]) -> str:
    """The cost of TLS streams as a markdown table."""
    rows = []
    for case in results.get("cases", []):
        rows.append(pair_row(case_label(case), case, "plain", "tls"))
    headers = [
        "guest",
        "plain wall s",
        "TLS wall s",
        "ratio TLS/plain (median of pairs)",
        "plain libvirt total ms",
        "TLS libvirt total ms",
        "plain downtime ms",
        "TLS downtime ms",
        "pairs",
    ]
    return stats.markdown_table(headers, rows)
