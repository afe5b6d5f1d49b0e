"""Statistics helpers for the benchmarks: medians, alternating pairs, targets.

Timings on shared machines are noisy, so every benchmark reports medians of
several runs and ratios of pairs measured alternately (A, B, A, B ...): each
pair's ratio compares two runs taken close together in time, and the median
of those ratios is robust against a slow phase of the machine.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any


def median(values: Iterable[float]) -> float:
    """Median of ``values``; NaN for an empty sequence (a benchmark that produced nothing)."""
    data = [float(v) for v in values]
    if not data:
        return math.nan
    return float(statistics.median(data))


def medians(runs: Iterable[dict[str, Any]], keys: Iterable[str]) -> dict[str, float]:
    """Each key's median over the runs that have a value for it (NaN where none has)."""
    rows = list(runs)
    return {key: median(r[key] for r in rows if r.get(key) is not None) for key in keys}


def pair_ratios(a_values: Sequence[float], b_values: Sequence[float]) -> list[float]:
    """Ratios a[i] / b[i] of runs measured alternately, pair by pair.

    Only complete pairs count (the shorter sequence decides); a pair whose
    ``b`` is zero is skipped since its ratio is undefined.
    """
    ratios = []
    for a, b in zip(a_values, b_values, strict=False):
        if b == 0:
            continue
        ratios.append(float(a) / float(b))
    return ratios


def median_pair_ratio(a_values: Sequence[float], b_values: Sequence[float]) -> float:
    """Median of the pairwise ratios a/b (NaN when there is no complete pair)."""
    return median(pair_ratios(a_values, b_values))


def alternate(
    run_a: Callable[[int], Any], run_b: Callable[[int], Any], pairs: int
) -> tuple[list[Any], list[Any]]:
    """Run ``run_a(i)`` and ``run_b(i)`` alternately ``pairs`` times.

    The order inside each pair swaps every round (A B, B A, A B ...), so a
    systematic effect of going first (warm caches, a guest that just moved)
    does not favour one side.
    """
    a_results: list[Any] = []
    b_results: list[Any] = []
    for i in range(pairs):
        if i % 2 == 0:
            a_results.append(run_a(i))
            b_results.append(run_b(i))
        else:
            b_results.append(run_b(i))
            a_results.append(run_a(i))
    return a_results, b_results


def spread(values: Iterable[float]) -> tuple[float, float]:
    """(min, max) of ``values``; (NaN, NaN) when empty."""
    data = [float(v) for v in values]
    if not data:
        return (math.nan, math.nan)
    return (min(data), max(data))


def per_second(count: int, seconds: float) -> float:
    """Rate of ``count`` events in ``seconds`` (infinite for a zero duration)."""
    if seconds <= 0:
        return math.inf
    return count / seconds


@dataclass(frozen=True)
class Target:
    """A published target: ``value`` compared with ``limit`` (``<=`` or ``>=``)."""

    name: str
    value: float
    limit: float
    op: str
    unit: str = ""

    def met(self) -> bool | None:
        """True/False, or None when the value could not be measured (NaN)."""
        if self.value is None or math.isnan(self.value):
            return None
        if self.op == "<=":
            return self.value <= self.limit
        if self.op == ">=":
            return self.value >= self.limit
        raise ValueError(f"unknown comparison {self.op!r}")

    def verdict(self) -> str:
        """'met', 'NOT met' or 'not measured'."""
        state = self.met()
        if state is None:
            return "not measured"
        return "met" if state else "NOT met"

    def to_dict(self) -> dict[str, Any]:
        """JSON form including the verdict."""
        value: float | None = None if math.isnan(self.value) else self.value
        return {
            "name": self.name,
            "value": value,
            "limit": self.limit,
            "op": self.op,
            "unit": self.unit,
            "verdict": self.verdict(),
        }


def fmt(value: float | None, digits: int = 2) -> str:
    """Format a number for a table: NaN/None as '-', large values without decimals."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub markdown table; floats go through :func:`fmt`."""
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join("---" for _ in headers) + " |"]
    for row in rows:
        cells = [fmt(c) if isinstance(c, float) else str(c) for c in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
