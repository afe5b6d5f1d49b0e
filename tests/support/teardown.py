"""Bring a session-wide test cluster down also when the session is interrupted."""

from __future__ import annotations

import atexit
import contextlib
import signal
from collections.abc import Callable, Iterator
from typing import Any


@contextlib.contextmanager
def torn_down_at_exit(teardown: Callable[[], None]) -> Iterator[None]:
    """Run ``teardown`` exactly once: when the block ends (also by an exception),
    or at interpreter exit if the block never ends.

    SIGTERM (e.g. from timeout(1)) and SIGHUP would end Python without any
    clean-up; inside the block they raise KeyboardInterrupt instead, so pytest
    tears the fixtures down.
    """
    done = False

    def once() -> None:
        nonlocal done
        if not done:
            done = True
            teardown()

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
