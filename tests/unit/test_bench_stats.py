"""Unit tests for the benchmark statistics helpers (bench/stats.py)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench import stats  # noqa: E402


def test_median_odd_even_and_empty() -> None:
    assert stats.median([3, 1, 2]) == 2
    assert stats.median([4, 1, 3, 2]) == 2.5
    assert math.isnan(stats.median([]))


def test_pair_ratios_uses_complete_pairs_and_skips_zero() -> None:
    assert stats.pair_ratios([2, 6, 9], [1, 3]) == [2.0, 2.0]
    assert stats.pair_ratios([1, 5], [0, 5]) == [1.0]


def test_median_pair_ratio_is_robust_to_one_slow_pair() -> None:
    # The third pair ran during a slow phase of the machine: both sides slow.
    a = [1.1, 1.0, 11.0, 1.2, 1.05]
    b = [1.0, 1.0, 10.0, 1.0, 1.0]
    ratio = stats.median_pair_ratio(a, b)
    assert ratio == pytest.approx(1.1)
    # The ratio of medians would be misleading if sides were sampled at different times.
    assert math.isnan(stats.median_pair_ratio([], [1.0]))


def test_alternate_swaps_order_every_pair() -> None:
    order: list[str] = []

    def run_a(i: int) -> str:
        order.append(f"a{i}")
        return f"A{i}"

    def run_b(i: int) -> str:
        order.append(f"b{i}")
        return f"B{i}"

    a_res, b_res = stats.alternate(run_a, run_b, 4)
    assert order == ["a0", "b0", "b1", "a1", "a2", "b2", "b3", "a3"]
    assert a_res == ["A0", "A1", "A2", "A3"]
    assert b_res == ["B0", "B1", "B2", "B3"]


def test_spread_and_per_second() -> None:
    assert stats.spread([3, 1, 2]) == (1.0, 3.0)
    assert all(math.isnan(v) for v in stats.spread([]))
    assert stats.per_second(500, 0.5) == 1000.0
    assert math.isinf(stats.per_second(1, 0.0))


def test_target_verdicts() -> None:
    assert stats.Target("ratio", 1.1, 1.15, "<=").verdict() == "met"
    assert stats.Target("ratio", 1.2, 1.15, "<=").verdict() == "NOT met"
    assert stats.Target("tput", 0.9, 0.8, ">=").met() is True
    assert stats.Target("tput", 0.7, 0.8, ">=").met() is False
    missing = stats.Target("x", math.nan, 1.0, "<=")
    assert missing.met() is None
    assert missing.to_dict()["value"] is None
    assert missing.to_dict()["verdict"] == "not measured"
    with pytest.raises(ValueError):
        stats.Target("x", 1.0, 1.0, "==").met()


def test_fmt_and_markdown_table() -> None:
    assert stats.fmt(math.nan) == "-"
    assert stats.fmt(None) == "-"
    assert stats.fmt(12345.678) == "12,346"
    assert stats.fmt(1.23456, 3) == "1.235"
    table = stats.markdown_table(["a", "b"], [[1.5, "x"], [math.nan, 2]])
    assert table.splitlines() == ["| a | b |", "| --- | --- |", "| 1.50 | x |", "| - | 2 |"]
