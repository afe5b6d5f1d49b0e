"""Bring a session-wide test cluster down also when the session is interrupted or dies."""

from __future__ import annotations

import atexit
import contextlib
import signal
from collections.abc import Callable, Iterator, Sequence
from typing import Any

try:
    from tests.support.guardian import Guardian
except ImportError:  # tests/ itself is on sys.path (pytest's rootdir insertion)
    from support.guardian import Guardian  # type: ignore[no-redef]


@contextlib.contextmanager
def torn_down_at_exit(
    teardown: Callable[[], None], if_killed: Sequence[str], remove_dir: str
) -> Iterator[None]:
    """Run ``teardown`` exactly once: when the block ends (also by an exception),
    or at interpreter exit if the block never ends.

    SIGTERM (e.g. from timeout(1)) and SIGHUP would end Python without any
    clean-up; inside the block they raise KeyboardInterrupt instead, so pytest
    tears the fixtures down. A process that dies outright (SIGKILL, a crash)
    runs no Python at all: then a guardian process runs the command
    ``if_killed`` and removes ``remove_dir`` (see guardian.py).
    """
    done = False
    guardian = Guardian(if_killed, remove_dir)

    def once() -> None:
        nonlocal done
        if not done:
            done = True
            teardown()
            # a tear-down that failed leaves the guardian to try again once
            # this process has ended
            guardian.release()

    def interrupt(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    atexit.register(once)
    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        try:
            once()
        finally:
            atexit.unregister(once)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
