"""How many calls run at once, with calls that may overlap made to overlap."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator


class Overlap:
    """Counts the calls inside ``running()``; ``most`` is the most at once.

    Each call waits up to ``wait`` seconds for ``want`` calls to run together,
    so calls that may run side by side do, however slow the machine.
    """

    def __init__(self, want: int, wait: float) -> None:
        self.want, self.wait = want, wait
        self.now = 0
        self.most = 0
        self._changed = threading.Condition()

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        with self._changed:
            self.now += 1
            self.most = max(self.most, self.now)
            self._changed.notify_all()
            self._changed.wait_for(lambda: self.now >= self.want, timeout=self.wait)
        try:
            yield
        finally:
            with self._changed:
                self.now -= 1
