"""Unit tests for the benchmark entry point: result files, targets, markdown."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench import framework, startup  # noqa: E402
from bench import run as bench_run  # noqa: E402

CANNED = {
    "processor": {"overhead_ms_per_op": 7.5, "seconds_per_op": {"bare_call": 1e-7}},
    "config": {"save_ms": 40.0, "instances": 1000, "nodes": 100, "bare_dump_ms": math.nan},
}


def test_main_writes_results_and_verdicts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(framework, "run_all", lambda quick: dict(CANNED))
    assert bench_run.main(["--only", "framework", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "results.json").read_text())
    verdicts = {t["name"]: t["verdict"] for t in data["targets"]}
    assert verdicts == {
        "processor overhead per opcode": "NOT met",
        "configuration save, 1,000 instances": "met",
    }
    # NaN is not valid JSON: it is written as null.
    assert data["framework"]["config"]["bare_dump_ms"] is None
    assert data["meta"]["parts"] == ["framework"]
    report = (tmp_path / "results.md").read_text()
    assert "| processor overhead per opcode | 7.500 ms | <= 5 | NOT met |" in report
    assert "bench/run.py --only framework" in report
    assert "## Migration" not in report
    assert "NOT met" in capsys.readouterr().out


def test_unknown_part_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        bench_run.main(["--only", "framework,bogus", "--out", str(tmp_path)])


def test_start_up_is_a_figure_without_a_target(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ms = {"python": 15.0, "version": 80.0, "job_daemon": 110.0, "job_in_process": 420.0}
    monkeypatch.setattr(startup, "run_all", lambda quick: {"runs": 5, "ms": ms})
    assert bench_run.main(["--only", "startup", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["targets"] == [] and data["startup"]["ms"] == ms
    report = (tmp_path / "results.md").read_text()
    assert "## gnt-lv start-up (a figure, no target)" in report
    assert "| `gnt-lv --version` | 80.00 |" in report
    assert "without a daemon (in-process) | 420.00 |" in report


def test_a_bench_stopped_by_sigterm_takes_its_cluster_down(tmp_path: Path) -> None:
    """Killed (SIGTERM) while its cluster is up, the bench still takes the cluster down
    (in a process of its own: the signal ends it)."""
    script = f"""
import os, signal, sys
sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
from bench import run

class Cluster:
    def __init__(self, *args, **kwargs):
        self.node_names = []

    def up(self, qemu=None):
        os.kill(os.getpid(), signal.SIGTERM)

    def down(self):
        print("taken down", flush=True)

run.BenchCluster = Cluster
opts = run.argparse.Namespace(dir={str(tmp_path)!r}, subnet="10.250.9.0/24", qemu=None,
                              quick=True, keep_cluster=False)
run.run_cluster_parts(opts, ["migration"])
"""
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr
    assert "taken down" in proc.stdout
