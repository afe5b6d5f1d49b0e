"""Unit tests for the bandwidth part of the benchmarks: medians, table, entry point."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench import migration_bandwidth  # noqa: E402
from bench import run as bench_run  # noqa: E402


def _run(pause: float, device: float, converged: bool = True) -> dict[str, Any]:
    return {
        "converged": converged,
        "wall": 1.0,
        "downtime_ms": pause - 6,
        "stop_to_resume_ms": pause,
        "device_to_completed_ms": device,
        "finish_ms": 6.0,
        "stopped_memory_mib": None,
        "total_ms": 450.0,
    }


def test_summary_counts_only_completed_migrations() -> None:
    runs = [_run(30, 20), _run(40, 30), _run(999, 999, converged=False)]
    summary = migration_bandwidth.summarize(runs)
    assert summary["stop_to_resume_ms"] == 35.0
    assert summary["device_to_completed_ms"] == 25.0
    assert math.isnan(summary["stopped_memory_mib"])
    assert (summary["completed"], summary["runs"]) == (2, 3)


def test_report_has_a_row_per_bandwidth(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cases = [
        {"bandwidth": 0, **migration_bandwidth.summarize([_run(37, 28)])},
        {"bandwidth": 100, **migration_bandwidth.summarize([_run(14, 6.4)])},
    ]
    canned = {"memory_mib": 128, "rounds": 1, "cases": cases, "runs": {}}
    monkeypatch.setattr(bench_run, "run_cluster_parts", lambda opts, parts: {"bandwidth": canned})
    assert bench_run.main(["--only", "bandwidth", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["targets"] == [] and data["meta"]["parts"] == ["bandwidth"]
    report = (tmp_path / "results.md").read_text()
    assert "## A fresh guest's pause with and without a bandwidth cap" in report
    assert "| unlimited (default) | 1.00 | 31.00 | 37.00 | 28.00 | 6.00 | - | 450 | 1/1 |" in report
    assert "| 100 MiB/s | 1.00 | 8.00 | 14.00 | 6.40 | 6.00 | - | 450 | 1/1 |" in report
