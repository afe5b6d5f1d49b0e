"""Callers queued behind one connection attempt (``retry.SharedFailure``), for the tests."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from ganeti_lv.errors import NodeError
from ganeti_lv.retry import SharedFailure
from support.waiting import wait_until


def queued_failures(
    failures: SharedFailure, call: Callable[[], Any], release: threading.Event, count: int = 3
) -> list[NodeError]:
    """Run ``call`` in ``count`` threads, all waiting (their mark of ``failures`` taken)
    before ``release`` lets the attempt in progress end; the NodeErrors they raised."""
    marks: list[int] = []
    real_mark = failures.mark

    def mark() -> int:
        marks.append(1)
        return real_mark()

    failures.mark = mark  # type: ignore[method-assign]
    errors: list[NodeError] = []

    def run() -> None:
        try:
            call()
        except NodeError as err:
            errors.append(err)

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    wait_until(lambda: len(marks) >= count, timeout=10)
    release.set()
    for thread in threads:
        thread.join(10)
    return errors
