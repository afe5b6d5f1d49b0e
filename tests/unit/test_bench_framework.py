"""Unit tests for the framework benchmark's pure parts and a tiny run of each part."""

from __future__ import annotations

import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench import framework  # noqa: E402
from ganeti_lv.config import ConfigStore  # noqa: E402

TINY = {
    "runs": 1,
    "ops": 2,
    "lock_names": 40,
    "lock_rounds": 10,
    "saves": 2,
    "cfg_nodes": 5,
    "cfg_instances": 30,
}


def test_make_config_sizes_and_round_trip(tmp_path: Path) -> None:
    data = framework.make_config(7, 25)
    assert len(data.nodes) == 7 and len(data.instances) == 25
    # Instances spread over every node.
    assert {i.primary_node for i in data.instances.values()} == set(data.nodes)
    store = ConfigStore.initialize(str(tmp_path / "d"), data)
    assert sorted(store.instance_names()) == sorted(data.instances)


def test_tiny_parts_measure_something(tmp_path: Path) -> None:
    for part, bench in framework.BENCHES.items():
        work = tmp_path / part
        work.mkdir()
        result = bench(str(work), TINY)
        if part == "processor":
            assert result["overhead_ms_per_op"] > 0
            assert result["seconds_per_op"]["bare_call"] < result["seconds_per_op"]["plain"]
        elif part == "locks":
            assert result["instances"] == 40
            assert result["acquire_release_per_second"] > 0
            assert result["all_set_seconds"] > 0
        else:
            assert result["instances"] == 30 and result["nodes"] == 5
            assert result["save_ms"] > 0 and result["bare_dump_ms"] > 0
            # The saves really went through the store (serial bumped per save).
            store = ConfigStore(str(work / "data"))
            assert store.read().serial >= 1 + TINY["saves"]


def test_targets_and_markdown_with_missing_parts() -> None:
    results = {
        "processor": {"overhead_ms_per_op": 3.0, "seconds_per_op": {"bare_call": 1e-7}},
        "config": {"error": "Traceback ...\nRuntimeError: boom"},
    }
    verdicts = {t.name: t.verdict() for t in framework.targets(results)}
    assert verdicts == {
        "processor overhead per opcode": "met",
        "configuration save, 1,000 instances": "not measured",
    }
    table = framework.markdown(results)
    assert "| processor, OpTestDelay(0), no locks (disk) | 3.000 ms/op |" in table
    assert "- RuntimeError: boom" in table
    assert math.isnan(framework.targets({})[0].value)
