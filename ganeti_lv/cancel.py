"""Cancel requests for a running operation.

A caller (the CLI on SIGINT/SIGTERM, or ops tooling from another thread)
asks a running operation to stop by setting a ``Cancellation``. Nothing is
interrupted asynchronously: the processor refuses to start Exec once a cancel
was requested, and an LU whose Exec can be stopped safely (a migration, an
export, an import, a failover while it copies disks) watches the event and
rolls back; past a point of no return an LU finishes and says so.
"""

from __future__ import annotations

import threading


class Cancellation(threading.Event):
    """An event with the reason it was set (the first reason wins)."""

    def __init__(self) -> None:
        super().__init__()
        self.reason = ""

    def request(self, reason: str) -> None:
        """Ask the operation to stop, saying why."""
        if not self.reason:
            self.reason = reason
        self.set()
