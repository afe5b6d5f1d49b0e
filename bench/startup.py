"""gnt-lv's own start-up: what the installed program costs before and around a job.

A figure, not a target. Each command runs ``runs`` times, the commands in
turn (A B C D, A B C D, ...), on scratch data dirs holding a small
configuration whose nodes are offline (nothing reaches a node):

* ``python -c pass``: the interpreter alone, the floor of any Python CLI;
* ``gnt-lv --version``: the interpreter, ganeti_lv's client side and the
  parser with every command;
* ``gnt-lv debug delay --duration 0`` submitted to a master daemon running
  for the data dir (``OpTestDelay`` with no locks: a whole job that does
  nothing), which is how a migration starts on a master;
* the same command without a daemon: ``gnt-lv`` loads the processor and
  the LUs and runs the job in its own process.

Run directly: ``python -m bench.startup [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import stats  # noqa: E402
from bench.common import ensure_bytecode  # noqa: E402

BIN = Path(sys.executable).parent
FULL_RUNS = 15
QUICK_RUNS = 5
CASES = ("python", "version", "job_daemon", "job_in_process")
LABELS = {
    "python": "`python -c pass` (the interpreter alone)",
    "version": "`gnt-lv --version`",
    "job_daemon": "`gnt-lv debug delay --duration 0` through the master daemon",
    "job_in_process": "`gnt-lv debug delay --duration 0` without a daemon (in-process)",
}


def _make_data_dir(path: str) -> None:
    from bench.framework import make_config
    from ganeti_lv.config import ConfigStore

    data = make_config(3, 2)
    for node in data.nodes.values():
        node.offline = True  # the daemon warms up no connection
    ConfigStore.initialize(path, data)


def _seconds(argv: Sequence[str]) -> float:
    start = time.perf_counter()
    subprocess.run(list(argv), capture_output=True, check=True, timeout=120)
    return time.perf_counter() - start


def _daemon(data_dir: str, *extra: str) -> None:
    subprocess.run(
        [str(BIN / "gnt-lv-masterd"), "--data-dir", data_dir, *extra],
        capture_output=True,
        check=True,
        timeout=120,
    )


def run_all(quick: bool = False) -> dict[str, Any]:
    """Median wall time (ms) of each command.

    Two data dirs alike: a master daemon runs for one of them throughout.
    """
    ensure_bytecode()
    runs = QUICK_RUNS if quick else FULL_RUNS
    times: dict[str, list[float]] = {case: [] for case in CASES}
    with tempfile.TemporaryDirectory(prefix="gnt-lv-bench-startup-") as workdir:
        served, alone = f"{workdir}/served", f"{workdir}/alone"
        _make_data_dir(served)
        _make_data_dir(alone)
        delay = ["debug", "delay", "--duration", "0"]
        commands = {
            "python": [sys.executable, "-c", "pass"],
            "version": [str(BIN / "gnt-lv"), "--version"],
            "job_daemon": [str(BIN / "gnt-lv"), "--data-dir", served, *delay],
            "job_in_process": [str(BIN / "gnt-lv"), "--data-dir", alone, *delay],
        }
        _daemon(served)
        try:
            _seconds(commands["job_daemon"])  # the daemon's first job: not measured
            for _ in range(runs):
                for case in CASES:
                    times[case].append(_seconds(commands[case]))
        finally:
            _daemon(served, "--stop")
    return {
        "runs": runs,
        "ms": {case: stats.median(values) * 1000 for case, values in times.items()},
    }


def markdown(results: dict[str, Any]) -> str:
    """The start-up figures as a markdown table."""
    rows = [[LABELS[case], results["ms"].get(case, float("nan"))] for case in CASES]
    table = stats.markdown_table(["command", "median ms"], rows)
    return f"{table}\n\nMedians of {results.get('runs', '-')} runs of each, in turn."


def main(argv: list[str] | None = None) -> int:
    """Measure and print the start-up figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer runs")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    opts = parser.parse_args(argv)
    results = run_all(opts.quick)
    print(json.dumps(results) if opts.json else markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
