"""Polling for a condition in tests, bounded in time, and the processes waited for."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.02) -> bool:
    """Poll ``predicate`` until it holds (True) or ``timeout`` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
    return True


def in_exec(job: Any) -> bool:
    """A test delay's job (``OpTestDelay``) runs its Exec: it has logged its sleep. From
    then on a cancel request no longer stops it (one before Exec does)."""
    return any("Sleeping" in line[2] for line in job.ops[0].log)


def pid_dead(pid: int) -> bool:
    """The process is gone or a zombie (it has ended, reaped or not)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            stat = fh.read()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def wait_dead(pid: int, within: float = 5.0) -> bool:
    """``pid`` has ended within ``within`` seconds."""
    return wait_until(lambda: pid_dead(pid), within)


def parent_pid(pid: int) -> int | None:
    """The parent of ``pid`` (None when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            stat = fh.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def parent_command(pid: int) -> bytes:
    """The command line (NUL-separated) of ``pid``'s parent; b"" when either is gone."""
    parent = parent_pid(pid)
    try:
        with open(f"/proc/{parent}/cmdline", "rb") as fh:
            return fh.read()
    except OSError:
        return b""


def descendants(pid: int) -> list[int]:
    """Every process below ``pid``, children first."""
    parents = {int(e): parent_pid(int(e)) for e in os.listdir("/proc") if e.isdigit()}
    found: list[int] = []
    todo = [pid]
    while todo:
        pid = todo.pop()
        children = [child for child, parent in parents.items() if parent == pid]
        found += children
        todo += children
    return found
