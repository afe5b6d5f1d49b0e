"""Summaries, targets and tables of the Ganeti comparison (pure; see ganeti.py)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from bench import stats
from bench.qmp_events import SPLIT_KEYS

MIB = 1 << 20
SIDES = ("ganeti", "ganeti_lv")
SIDE_LABEL = {"ganeti": "Ganeti", "ganeti_lv": "ganeti_lv"}
WALL_RATIO_LIMIT = 0.5
EXPORT_MODES = (
    ("ganeti_shutdown", "Ganeti, shut down (--long-sleep)"),
    ("ganeti_lv_live", "ganeti_lv, live (--noshutdown)"),
    ("ganeti_lv_shutdown", "ganeti_lv, shut down"),
)
NAN = math.nan


def case_label(memory: int, dirty: int, fresh: bool = False) -> str:
    """'128 MiB, idle', '256 MiB, dirtier 32 MiB', '... , right after boot'."""
    label = f"{memory} MiB, " + ("idle" if not dirty else f"dirtier {dirty} MiB")
    return label + (", right after boot" if fresh else "")


def left_after_protocol(run: dict[str, Any], libvirt: bool) -> tuple[float | None, float | None]:
    """qemu's downtime less the pre-switchover wait; the pause less that wait and the hand-over.

    The wait counts as 0 when the source's ``pause-before-switchover`` was
    read back off (Ganeti's qemu: no wait to see). The hand-over (source
    ``completed`` to target ``RESUME``) is subtracted only for libvirt
    (``libvirt``), where it is libvirt's Finish; Ganeti's target qemu
    resumes the guest by itself, and that span is its own load and start.
    """
    wait = run.get("switchover_wait_ms")
    if wait is None and (run.get("capabilities") or {}).get("pause-before-switchover") is False:
        wait = 0.0
    finish = run.get("finish_ms") if libvirt else 0.0
    down, pause = run.get("downtime_ms"), run.get("pause_ms")
    down_left = None if down is None or wait is None else float(down) - wait
    pause_left = None
    if pause is not None and wait is not None and finish is not None:
        pause_left = float(pause) - wait - finish
    return down_left, pause_left


def summarize(runs: Sequence[dict[str, Any]], libvirt: bool = False) -> dict[str, Any]:
    """Medians over the migrations that completed, and how many did."""
    done = [r for r in runs if r.get("converged")]
    left = [left_after_protocol(r, libvirt) for r in done]

    def med(key: str) -> float:
        return stats.median(r[key] for r in done if r.get(key) is not None)

    return {
        "wall": med("wall"),
        # qemu's own downtime for both tools (see qemu_monitor); libvirt's
        # (source stop to target resume) for ganeti_lv besides
        "downtime_ms": med("downtime_ms"),
        "downtime_read": sum(1 for r in done if r.get("downtime_ms") is not None),
        "libvirt_downtime_ms": med("libvirt_downtime_ms"),
        # the guest's pause end to end: source stop to target resume (Ganeti:
        # qemu's STOP and RESUME events; ganeti_lv: libvirt's downtime)
        "pause_ms": med("pause_ms"),
        "pauses_ms": [r.get("pause_ms") for r in done],
        "total_ms": med("total_ms"),
        "memory_mib": med("memory_mib"),
        "passes": med("passes"),
        "converged": len(done),
        "runs": len(runs),
        "downtimes_ms": [r.get("downtime_ms") for r in done],
        "start_limit_ms": med("downtime_limit_ms"),
        "return_path": next(
            (r["return_path"] for r in runs if r.get("return_path") is not None), None
        ),
        "capabilities": next((r["capabilities"] for r in runs if r.get("capabilities")), {}),
        **stats.medians(done, SPLIT_KEYS),
        "stopped_memory_mib": med("stopped_memory_mib"),
        "waits_ms": [r.get("switchover_wait_ms") for r in done],
        "finishes_ms": [r.get("finish_ms") for r in done],
        "split_read": sum(1 for r in done if r.get("stop_to_resume_ms") is not None),
        "downtime_left_ms": stats.median(d for d, _ in left if d is not None),
        "pause_left_ms": stats.median(p for _, p in left if p is not None),
    }


def paired_walls(
    a_runs: Sequence[dict[str, Any]], b_runs: Sequence[dict[str, Any]]
) -> tuple[list[float], list[float]]:
    """Wall times of the pairs in which both migrations completed."""
    a_out, b_out = [], []
    for a, b in zip(a_runs, b_runs, strict=False):
        if a.get("converged") and b.get("converged"):
            a_out.append(float(a["wall"]))
            b_out.append(float(b["wall"]))
    return a_out, b_out


def _ratio(a: float, b: float) -> float:
    if math.isnan(a) or math.isnan(b) or b == 0:
        return NAN
    return a / b


def case_result(
    memory: int,
    dirty: int,
    fresh: bool,
    ganeti_runs: Sequence[dict[str, Any]],
    lv_runs: Sequence[dict[str, Any]],
) -> dict[str, Any]:
    """One case: both sides' summaries, the wall-time ratio of the medians and of the pairs."""
    g, lv = summarize(ganeti_runs), summarize(lv_runs, libvirt=True)
    lv_walls, g_walls = paired_walls(lv_runs, ganeti_runs)
    return {
        "label": case_label(memory, dirty, fresh),
        "memory_mib": memory,
        "dirty_mib": dirty,
        "fresh": fresh,
        "pairs": min(len(ganeti_runs), len(lv_runs)),
        "ganeti": g,
        "ganeti_lv": lv,
        "wall_ratio": _ratio(lv["wall"], g["wall"]),
        "wall_pair_ratio": stats.median_pair_ratio(lv_walls, g_walls),
        "runs": {"ganeti": list(ganeti_runs), "ganeti_lv": list(lv_runs)},
    }


def export_summary(runs: Sequence[dict[str, Any]], disk_mib: int) -> dict[str, Any]:
    """Medians of one export mode's runs (those that did not fail)."""
    done = [r for r in runs if "failed" not in r]

    def med(key: str) -> float:
        return stats.median(r[key] for r in done if r.get(key) is not None)

    wall = med("wall")
    return {
        "wall": wall,
        "mib_s": disk_mib / wall if wall and not math.isnan(wall) else NAN,
        "guest_gap": med("guest_gap"),
        "wire_bytes": med("wire_bytes"),
        "target_allocated": med("target_allocated"),
        "runs": len(runs),
        "failed": len(runs) - len(done),
    }


# ------------------------------------------------------------ targets


def _lv_figure(lv: dict[str, Any], key: str, ganeti: float, failed: int) -> float:
    """ganeti_lv's median ``key`` as a target's value: NaN when Ganeti's is unknown
    or ganeti_lv's was not read on every migration that completed (a median of the
    ones a watcher caught), infinite (missed) when a migration did not complete."""
    if math.isnan(ganeti):
        return NAN
    if failed:
        return math.inf
    if key == "downtime_ms" and lv.get("downtime_read", 0) < lv.get("converged", 0):
        return NAN
    return float(lv.get(key, NAN))


def targets(results: dict[str, Any]) -> list[stats.Target]:
    """Issue 15's targets: downtime and wall time against Ganeti; the fast dirtier."""
    found: list[stats.Target] = []
    cap = results.get("cap_s")
    for case in results.get("cases", []):
        label = case["label"]
        g = case.get("ganeti", {})
        lv = case.get("ganeti_lv", {})
        within = f" within {cap:g} s" if cap else ""
        if g.get("runs") and not g.get("converged"):
            label += f" (Ganeti completed none of {g['runs']}{within})"
        # a median over the migrations that completed says nothing of those
        # that did not: a case ganeti_lv did not complete every time is missed
        failed = lv.get("runs", 0) - lv.get("converged", 0)
        if failed:
            label += f" (ganeti_lv completed {lv['converged']} of {lv['runs']}{within})"
        for key, what in (
            ("downtime_ms", "median migration downtime (qemu's)"),
            ("pause_ms", "median pause, source stop to target resume,"),
        ):
            g_down = g.get(key, NAN)
            if key == "pause_ms" and math.isnan(g_down) and not g.get("runs"):
                continue
            found.append(
                stats.Target(
                    f"{what} <= Ganeti's, {label}",
                    _lv_figure(lv, key, g_down, failed),
                    g_down,
                    "<=",
                    "ms",
                )
            )
        wall = case.get("wall_ratio", NAN)
        found.append(
            stats.Target(
                f"median migration wall time / Ganeti's, {label}",
                math.inf if failed and not math.isnan(wall) else wall,
                WALL_RATIO_LIMIT,
                "<=",
            )
        )
    fast = results.get("fast_dirtier")
    if fast is not None:
        lv = fast.get("ganeti_lv", {})
        cap = float(fast.get("cap_s", NAN))
        if "error" in fast or not lv:
            value = NAN
        else:
            value = float(lv["wall"]) if lv.get("converged") else math.inf
        name = "fast dirtier converges under ganeti_lv within the cap"
        if "memory_mib" in fast:
            name += f" ({fast['dirty_mib']} MiB in {fast['memory_mib']} MiB)"
        found.append(stats.Target(name, value, cap, "<=", "s"))
    return found


# ------------------------------------------------------------ tables


def _per_run(values: Sequence[Any], digits: int = 0) -> str:
    return ", ".join(stats.fmt(float(v), digits) if v is not None else "-" for v in values)


def migration_table(results: dict[str, Any]) -> str:
    """Every migration case, both tools side by side."""
    rows: list[list[Any]] = []
    for case in results.get("cases", []):
        if "error" in case:
            rows.append([case["label"], "error: " + case["error"][-200:]] + [""] * 14)
            continue
        g, lv = case["ganeti"], case["ganeti_lv"]
        rows.append(
            [
                case["label"],
                g["wall"],
                lv["wall"],
                case["wall_ratio"],
                g["downtime_ms"],
                lv["downtime_ms"],
                f"{_per_run(g['downtimes_ms'])} / {_per_run(lv['downtimes_ms'])}",
                f"{g.get('downtime_read', '-')}, {lv.get('downtime_read', '-')}",
                g.get("pause_ms", NAN),
                lv.get("pause_ms", NAN),
                f"{_per_run(g.get('pauses_ms', []))} / {_per_run(lv.get('pauses_ms', []))}",
                g["memory_mib"],
                lv["memory_mib"],
                g["total_ms"],
                lv["total_ms"],
                f"{g['converged']}/{g['runs']}, {lv['converged']}/{lv['runs']}",
            ]
        )
    headers = [
        "guest",
        "Ganeti wall s",
        "ganeti_lv wall s",
        "wall ratio ganeti_lv / Ganeti",
        "Ganeti downtime ms (qemu)",
        "ganeti_lv downtime ms (qemu)",
        "downtime per run ms (Ganeti / ganeti_lv)",
        "qemu downtime read (Ganeti, ganeti_lv)",
        "Ganeti pause ms (STOP to RESUME events)",
        "ganeti_lv pause ms (libvirt: stop to resume)",
        "pause per run ms (Ganeti / ganeti_lv)",
        "Ganeti RAM sent MiB",
        "ganeti_lv RAM sent MiB",
        "Ganeti qemu total ms",
        "ganeti_lv libvirt total ms",
        "completed (Ganeti, ganeti_lv)",
    ]
    return stats.markdown_table(headers, rows)


def switchover_table(results: dict[str, Any]) -> str:
    """The pause split along qemu's events, per case and tool (medians of completed runs)."""
    rows: list[list[Any]] = []
    for case in results.get("cases", []):
        if "error" in case:
            continue
        for side in SIDES:
            s = case[side]
            if not s.get("converged"):
                continue
            rows.append(
                [
                    case["label"],
                    SIDE_LABEL[side],
                    s["downtime_ms"],
                    s.get("pause_ms", NAN),
                    s.get("stop_to_resume_ms", NAN),
                    s.get("stop_to_switchover_ms", NAN),
                    s.get("switchover_wait_ms", NAN),
                    s.get("device_to_completed_ms", NAN),
                    s.get("finish_ms", NAN),
                    s.get("target_loaded_to_resume_ms", NAN),
                    s.get("downtime_left_ms", NAN),
                    s.get("pause_left_ms", NAN),
                    s.get("stopped_memory_mib", NAN),
                    f"{_per_run(s.get('waits_ms', []))} / {_per_run(s.get('finishes_ms', []))}",
                    f"{s.get('split_read', 0)}/{s['converged']}",
                ]
            )
    if not rows:
        return ""
    headers = [
        "guest",
        "tool",
        "qemu downtime ms",
        "pause ms",
        "source STOP to target RESUME ms (events)",
        "STOP to pre-switchover ms",
        "pre-switchover wait ms (to device)",
        "device to completed ms",
        "source completed to target RESUME ms",
        "target completed to RESUME ms",
        "qemu downtime less the wait ms",
        "pause less the wait and libvirt's hand-over ms",
        "RAM sent while stopped MiB (qemu's downtime-bytes)",
        "wait / hand-over per run ms",
        "events read",
    ]
    return (
        "The pause split along qemu's own events (source: STOP and the MIGRATION"
        " statuses; target: RESUME), medians; the hand-over (source completed to"
        " target RESUME) is subtracted for ganeti_lv only, where it is libvirt's"
        " Finish:\n\n" + stats.markdown_table(headers, rows)
    )


def capabilities_line(results: dict[str, Any]) -> str:
    """The source qemu's migration capabilities as read back during a migration, per tool."""
    found: dict[str, dict[str, Any]] = {}
    for case in results.get("cases", []):
        for side in SIDES:
            summary = case.get(side)
            if isinstance(summary, dict) and summary.get("capabilities"):
                found.setdefault(side, summary["capabilities"])
    if not found:
        return ""

    def word(value: Any) -> str:
        return "?" if value is None else ("on" if value else "off")

    return (
        "Migration capabilities of the source qemu, read back during a migration: "
        + "; ".join(
            f"{SIDE_LABEL[side]} " + ", ".join(f"{k} {word(v)}" for k, v in caps.items())
            for side, caps in found.items()
        )
        + "."
    )


def incomplete_table(results: dict[str, Any]) -> str:
    """The migrations stopped at the cap: how far they got (empty when every one completed)."""
    rows = []
    for case in results.get("cases", []):
        for side in SIDES:
            stopped = [r for r in case.get("runs", {}).get(side, []) if not r.get("converged")]
            if not stopped:
                continue

            def med(key: str, runs: list[dict[str, Any]] = stopped) -> float:
                return stats.median(r[key] for r in runs if r.get(key) is not None)

            rows.append(
                [
                    case["label"],
                    SIDE_LABEL[side],
                    f"{len(stopped)} of {len(case['runs'][side])}",
                    med("wall"),
                    med("memory_mib"),
                    med("passes"),
                    med("dirty_rate_mib_s"),
                    str(stopped[-1].get("note", ""))[:120],
                ]
            )
    if not rows:
        return ""
    headers = [
        "guest",
        "tool",
        "not completed",
        "stopped after s",
        "RAM sent by then MiB",
        "passes by then",
        "guest's dirty rate (qemu) MiB/s",
        "message",
    ]
    return "Migrations stopped at the cap (medians of those runs):\n\n" + stats.markdown_table(
        headers, rows
    )


def fast_table(fast: dict[str, Any]) -> str:
    """The guest dirtying faster than Ganeti's bandwidth: what each tool did within the cap."""
    if "error" in fast:
        return f"Fast-dirtier case failed: {fast['error'][-300:]}"
    rows = []
    for side in SIDES:
        r = fast.get(side, {})
        if not r:
            continue
        ended = "completed"
        if not r.get("converged"):
            ended = "not completed"
            if r.get("cancelled_after_s") is not None:
                ended += f", cancelled at the cap ({r['cancelled_after_s']:.0f} s)"
        rows.append(
            [
                SIDE_LABEL[side],
                fast.get("limits", {}).get(side, ""),
                ended,
                r.get("wall", NAN),
                r.get("downtime_ms") if r.get("converged") else NAN,
                r.get("memory_mib") if r.get("memory_mib") is not None else NAN,
                r.get("passes") if r.get("passes") is not None else NAN,
                str(r.get("note", ""))[:160],
            ]
        )
    rate = fast.get("dirty_rate_mib_s")
    text = (
        f"Dirtier {fast['dirty_mib']} MiB in a {fast['memory_mib']} MiB guest, cap "
        f"{fast['cap_s']:g} s"
        + (f"; qemu measured the guest dirtying {rate:.0f} MiB/s" if rate else "")
        + ":\n\n"
    )
    headers = [
        "tool",
        "limits",
        "ended",
        "wall s",
        "downtime ms",
        "RAM sent MiB",
        "passes",
        "message",
    ]
    return text + stats.markdown_table(headers, rows)


def export_table(export: dict[str, Any]) -> str:
    """Export of the same 1 GiB disk of random data by both tools, and the guest's downtime."""
    if "error" in export:
        return f"Export case failed: {export['error'][-300:]}"
    rows = []
    for key, label in EXPORT_MODES:
        if key not in export.get("summary", {}):
            continue
        s = export["summary"][key]
        runs = export["runs"][key]
        rows.append(
            [
                label,
                s["wall"],
                s["mib_s"],
                s["guest_gap"],
                _per_run([r.get("wall") for r in runs], 1),
                _per_run([r.get("guest_gap") for r in runs], 1),
                f"{s['runs'] - s['failed']}/{s['runs']}",
            ]
        )
    headers = [
        "tool, mode",
        "wall s",
        "MiB/s",
        "guest's longest heartbeat gap s",
        "wall per run s",
        "gap per run s",
        "completed",
    ]
    text = stats.markdown_table(headers, rows)
    failures = [
        f"- {label}: {r['failed'][-300:]}"
        for key, label in EXPORT_MODES
        for r in export.get("runs", {}).get(key, [])
        if "failed" in r
    ]
    if failures:
        text += "\n\nFailed runs:\n\n" + "\n".join(failures)
    return text


def export_rows(results: dict[str, Any] | None) -> list[list[Any]]:
    """Ganeti's export as rows of the export benchmark's table (bench/export.py)."""
    export = (results or {}).get("export", {})
    summary = export.get("summary", {}).get("ganeti_shutdown")
    if not summary:
        return []
    runs = export["runs"]["ganeti_shutdown"]
    return [
        [
            "",
            "ganeti 3.0 (shut down, --long-sleep)",
            summary["wall"],
            summary["mib_s"],
            "-",
            summary["wire_bytes"] / MIB,
            summary["target_allocated"] / MIB,
            max((r["guest_gap"] for r in runs if "guest_gap" in r), default=NAN),
            _per_run([r.get("guest_gap") for r in runs], 1),
        ]
    ]


def markdown(results: dict[str, Any]) -> str:
    """The whole Ganeti comparison as markdown."""
    parts = [migration_table(results)]
    split = switchover_table(results)
    if split:
        parts.append(split)
    caps = capabilities_line(results)
    if caps:
        parts.append(caps)
    stopped = incomplete_table(results)
    if stopped:
        parts.append(stopped)
    limits = results.get("limits", {})
    if limits:
        parts.append(
            "Limits qemu was given: "
            + "; ".join(f"{SIDE_LABEL[s]} {limits[s]}" for s in SIDES if s in limits)
            + "."
        )
    rp = {
        SIDE_LABEL[s]: case[s].get("return_path")
        for case in results.get("cases", [])
        for s in SIDES
        if isinstance(case.get(s), dict) and case[s].get("return_path") is not None
    }
    start = {
        SIDE_LABEL[s]: case[s].get("start_limit_ms")
        for case in results.get("cases", [])
        for s in SIDES
        if isinstance(case.get(s), dict) and not math.isnan(case[s].get("start_limit_ms", NAN))
    }
    if start:
        parts.append(
            "Downtime limit qemu had when the transfer began (its migration parameters,"
            " median): " + ", ".join(f"{side} {ms:g} ms" for side, ms in start.items()) + "."
        )
    if rp:
        parts.append(
            "qemu's return path (the source's downtime then ends at the target's"
            " acknowledgement): "
            + ", ".join(f"{side} {'on' if on else 'off'}" for side, on in rp.items())
            + "."
        )
    if "fast_dirtier" in results:
        parts.append(fast_table(results["fast_dirtier"]))
    if "export" in results:
        disk = results["export"].get("disk_mib", 1024)
        parts.append(
            f"Export of a {disk} MiB disk of random data (file disk, node1 to node2):\n\n"
            + export_table(results["export"])
        )
    return "\n\n".join(parts)
