"""Disk copy progress as Ganeti prints it: "disk/0 sent 1.5G, 120.0 MiB/s, 30%, ETA 12s".

``ProgressReporter`` turns a copy's ``progress_fn(done, total)`` calls into
feedback lines, at most one per interval; ``gnt-lv`` draws a progress bar
from them on a terminal.
"""

from __future__ import annotations

import time
from collections.abc import Callable

MiB = 1024 * 1024


def format_unit(mib: float) -> str:
    """Ganeti's FormatUnit(value, "h"): 512M, 1.5G, 2.0T."""
    if mib < 1024:
        return f"{int(mib)}M"
    if mib < 1024 * 1024:
        return f"{mib / 1024:0.1f}G"
    return f"{mib / (1024 * 1024):0.1f}T"


def format_seconds(secs: float) -> str:
    """Ganeti's FormatSeconds: 12s, 1m 5s, 2h 0m 3s."""
    parts: list[str] = []
    rest = int(round(secs))
    if rest > 0:
        for unit, one in (("d", 86400), ("h", 3600), ("m", 60)):
            whole, rest = divmod(rest, one)
            if whole or parts:
                parts.append(f"{whole}{unit}")
    parts.append(f"{max(rest, 0)}s")
    return " ".join(parts)


def format_progress(done: int, total: int, elapsed: float) -> str:
    """Text like "1.5G, 120.0 MiB/s, 30%, ETA 12s" from bytes done/total and seconds elapsed."""
    rate = done / MiB / elapsed if elapsed > 0 else 0.0
    parts = [format_unit(done / MiB), f"{rate:0.1f} MiB/s"]
    if total > 0:
        parts.append(f"{int(done * 100 / total)}%")
        if rate > 0 and done < total:
            parts.append(f"ETA {format_seconds((total - done) / MiB / rate)}")
    return ", ".join(parts)


class ProgressReporter:
    """Turn copy progress into feedback lines, at most one per ``interval`` s."""

    def __init__(
        self,
        feedback_fn: Callable[[str], None],
        label: str,
        interval: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.feedback_fn = feedback_fn
        self.label = label
        self.interval = interval
        self.clock = clock
        self.started = clock()
        self.last = self.started

    def __call__(self, done: int, total: int) -> None:
        """Report ``done`` of ``total`` bytes if the interval passed."""
        now = self.clock()
        if now - self.last < self.interval and done < total:
            return
        self.last = now
        self.feedback_fn(f"{self.label} sent {format_progress(done, total, now - self.started)}")
