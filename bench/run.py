"""Run every benchmark and write bench/results/results.json and results.md.

    .venv/bin/python bench/run.py [--quick]
        [--only framework,startup,migration,tls,bandwidth,export,evacuate,ganeti]

The framework and start-up benchmarks need no cluster. The migration, tls, bandwidth, export,
evacuate and ganeti benchmarks bring up a 3-node local cluster of their own (directory
/var/tmp/ganeti-lv-bench, subnet 10.250.9.0/24, so a test cluster may run
meanwhile) and take it down at the end unless ``--keep-cluster``. The
ganeti part also brings up a real Ganeti 3.0 peer cluster (``--peer-dir``)
beside it and always takes that down.
Every figure is a median of several runs; ratios are medians of pairs
measured alternately. The issue's targets are printed with met / NOT met.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import framework, startup, stats  # noqa: E402
from bench.common import DEFAULT_DIR, DEFAULT_SUBNET, BenchCluster, BenchError  # noqa: E402
from bench.ganeti import CASE_GROUPS, IDLE_GROUPS, PEER_DIR  # noqa: E402
from ganeti_lv.devcluster import emulator  # noqa: E402

RESULTS_DIR = Path(__file__).resolve().parent / "results"
PARTS = (
    "framework",
    "startup",
    "migration",
    "tls",
    "bandwidth",
    "export",
    "evacuate",
    "ganeti",
)
CLUSTER_PARTS = ("migration", "tls", "bandwidth", "export", "evacuate", "ganeti")


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def run_cluster_parts(opts: argparse.Namespace, parts: list[str]) -> dict[str, Any]:
    """Bring the bench cluster up, run the cluster benchmarks, take it down."""
    from bench import export, ganeti, migration

    out: dict[str, Any] = {}
    cl = BenchCluster(opts.dir, opts.subnet, nodes=3, feedback=_log)
    _log(f"bringing up the bench cluster in {opts.dir} ({opts.subnet})")
    # stopped (kill, a job's timeout), the bench still takes its cluster down
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        info = cl.up(qemu=opts.qemu)
        out["cluster"] = {"domain_type": info.get("domain_type"), "nodes": cl.node_names}
        if "migration" in parts:
            start = time.monotonic()
            out["migration"] = migration.run_all(cl, opts.quick, _log)
            out["migration"]["seconds"] = time.monotonic() - start
        if "tls" in parts:
            from bench import migration_tls

            start = time.monotonic()
            out["tls"] = migration_tls.run_all(cl, opts.quick, _log)
            out["tls"]["seconds"] = time.monotonic() - start
        if "bandwidth" in parts:
            from bench import migration_bandwidth

            start = time.monotonic()
            out["bandwidth"] = migration_bandwidth.run_all(cl, opts.quick, _log)
            out["bandwidth"]["seconds"] = time.monotonic() - start
        if "export" in parts:
            start = time.monotonic()
            out["export"] = export.run_all(cl, opts.quick, _log)
            out["export"]["seconds"] = time.monotonic() - start
        if "evacuate" in parts:
            from bench import evacuate

            start = time.monotonic()
            try:
                out["evacuate"] = evacuate.run_all(cl, opts.quick, _log)
            except (BenchError, subprocess.TimeoutExpired) as err:
                # its targets show as not measured; the parts after it still run
                out["evacuate"] = {"error": str(err)}
            out["evacuate"]["seconds"] = time.monotonic() - start
        if "ganeti" in parts:
            groups = tuple(g.strip() for g in opts.ganeti_cases.split(",") if g.strip())
            out["ganeti"] = ganeti.run_all(
                cl, opts.quick, _log, opts.peer_dir, groups, opts.ganeti_pairs
            )
    except Exception as err:  # noqa: BLE001 - report and still write what was measured
        out["cluster_error"] = f"{type(err).__name__}: {err}"
        _log(f"cluster benchmarks stopped: {out['cluster_error']}")
    finally:
        if not opts.keep_cluster:
            _log("taking the bench cluster down")
            cl.down()
    return out


def collect_targets(results: dict[str, Any]) -> list[stats.Target]:
    """Every target (issues 6 and 15) that belongs to a part that ran."""
    from bench import export, ganeti, migration

    found: list[stats.Target] = []
    if "migration" in results:
        found += migration.targets(results["migration"])
    if "export" in results:
        found += export.targets(results["export"])
    if "ganeti" in results:
        found += ganeti.targets(results["ganeti"])
    if "framework" in results:
        found += framework.targets(results["framework"])
    if "evacuate" in results:
        from bench import evacuate

        found += evacuate.targets(results["evacuate"])
    return found


def render_markdown(results: dict[str, Any], targets: list[stats.Target], argv: str) -> str:
    """The whole report: targets, then one section per benchmark."""
    from bench import export, ganeti, ganeti_report, migration

    meta = results["meta"]
    lines = [
        "# ganeti_lv benchmark results",
        "",
        f"Run {meta['date']} on {meta['machine']} ({meta['cpus']} CPUs, Python "
        f"{meta['python']}, qemu {meta.get('qemu', 'default')}), {meta['seconds']:.0f} s in all; "
        f"reproduce with `{argv}`.",
        "",
        "## Targets",
        "",
        stats.markdown_table(
            ["target", "value", "limit", "verdict"],
            [
                [
                    t.name,
                    f"{stats.fmt(t.value, 3)} {t.unit}".strip(),
                    f"{t.op} {t.limit:g}",
                    t.verdict(),
                ]
                for t in targets
            ],
        ),
    ]
    if "migration" in results:
        lines += ["", "## Migration (medians; ratio = median of alternating pairs)", ""]
        lines.append(migration.markdown(results["migration"]))
    if "tls" in results:
        from bench import migration_tls

        lines += ["", "## Migration stream encryption (medians; TLS vs plain, both gnt-lv)", ""]
        lines.append(migration_tls.markdown(results["tls"]))
    if "bandwidth" in results:
        from bench import migration_bandwidth

        lines += ["", "## A fresh guest's pause with and without a bandwidth cap (medians)", ""]
        lines.append(migration_bandwidth.markdown(results["bandwidth"]))
    if "export" in results:
        lines += ["", "## Export (medians; ratio = median of alternating pairs)", ""]
        lines.append(
            export.markdown(results["export"], ganeti_report.export_rows(results.get("ganeti")))
        )
    if "ganeti" in results:
        lines += [
            "",
            "## Side by side with Ganeti 3.0 (medians; the same guest, each tool's defaults)",
            "",
        ]
        lines.append(ganeti.markdown(results["ganeti"]))
    if "evacuate" in results:
        from bench import evacuate

        lines += ["", "## Node evacuation (medians; ratio = median of alternating pairs)", ""]
        lines.append(evacuate.markdown(results["evacuate"]))
    if "framework" in results:
        lines += ["", "## Framework (medians)", ""]
        lines.append(framework.markdown(results["framework"]))
    if "startup" in results:
        lines += ["", "## gnt-lv start-up (a figure, no target)", ""]
        lines.append(startup.markdown(results["startup"]))
    if "cluster_error" in results:
        lines += ["", f"Cluster benchmarks stopped early: {results['cluster_error']}"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run the selected benchmarks, write the result files, print the targets."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="one pair per case, fewer cases")
    parser.add_argument("--only", default=",".join(PARTS), help="comma-separated parts")
    parser.add_argument("--dir", default=DEFAULT_DIR, help="bench cluster directory")
    parser.add_argument("--subnet", default=DEFAULT_SUBNET, help="bench cluster subnet")
    parser.add_argument("--keep-cluster", action="store_true", help="leave the cluster up")
    parser.add_argument("--peer-dir", default=PEER_DIR, help="Ganeti peer directory (ganeti part)")
    parser.add_argument("--out", default=str(RESULTS_DIR), help="results directory")
    parser.add_argument(
        "--ganeti-cases",
        default=",".join(CASE_GROUPS),
        help="groups of cases of the ganeti part (a full run split into shorter ones)",
    )
    parser.add_argument(
        "--ganeti-pairs", type=int, default=None, help="pairs per migration case (ganeti part)"
    )
    parser.add_argument(
        "--qemu",
        choices=emulator.MODES,
        default=None,
        help="the bench cluster's qemu (default: the local cluster's default)",
    )
    opts = parser.parse_args(argv)
    bad = {g.strip() for g in opts.ganeti_cases.split(",") if g.strip()} - set(
        CASE_GROUPS + IDLE_GROUPS
    )
    if bad:
        parser.error(f"unknown ganeti case groups: {', '.join(sorted(bad))}")
    parts = [p.strip() for p in opts.only.split(",") if p.strip()]
    unknown = set(parts) - set(PARTS)
    if unknown:
        parser.error(f"unknown parts: {', '.join(sorted(unknown))}")
    started = time.monotonic()
    results: dict[str, Any] = {}
    if "framework" in parts:
        _log("framework benchmark")
        results["framework"] = framework.run_all(opts.quick)
    if "startup" in parts:
        _log("gnt-lv start-up")
        results["startup"] = startup.run_all(opts.quick)
    cluster_parts = [p for p in parts if p in CLUSTER_PARTS]
    if cluster_parts:
        results.update(run_cluster_parts(opts, cluster_parts))
    results["meta"] = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": platform.node() or platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "quick": opts.quick,
        "parts": parts,
        "qemu": opts.qemu or "default",
        "seconds": time.monotonic() - started,
    }
    targets = collect_targets(results)
    results["targets"] = [t.to_dict() for t in targets]
    shown = "bench/run.py" + (" --quick" if opts.quick else "")
    if opts.qemu:
        shown += f" --qemu {opts.qemu}"
    if opts.only != ",".join(PARTS):
        shown += f" --only {opts.only}"
    if opts.ganeti_cases != ",".join(CASE_GROUPS):
        shown += f" --ganeti-cases {opts.ganeti_cases}"
    if opts.ganeti_pairs:
        shown += f" --ganeti-pairs {opts.ganeti_pairs}"
    out_dir = Path(opts.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(
        json.dumps(_jsonable(results), indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )
    report = render_markdown(results, targets, f".venv/bin/python {shown}")
    (out_dir / "results.md").write_text(report, encoding="utf-8")
    print(report)
    _log(f"results in {out_dir}/results.json and results.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
