"""Cancel requests for a running operation.

A caller (the CLI on SIGINT/SIGTERM, or ops tooling from another thread)
asks a running operation to stop by setting a ``Cancellation``. Nothing is
interrupted asynchronously: the processor refuses to start Exec once a cancel
was requested, and an LU whose Exec can be stopped safely (a migration, an
export, an import, a failover while it copies disks) watches the event and
rolls back; past a point of no return an LU finishes and says so.

An operation counts as canceled only when it stopped for the request
(``stopped_by``): one that went on (it does not watch the event, or was past
its point of no return) and then failed on its own failed.
"""

from __future__ import annotations

import threading

from ganeti_lv.errors import LockError, MigrationAborted, OperationCanceled


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


def stopped_by(cancel: Cancellation, err: BaseException) -> bool:
    """Whether ``err`` ended an operation because of the request ``cancel``: a
    rollback on request, a migration aborted, a lock wait given up, Ctrl-C."""
    if isinstance(err, KeyboardInterrupt):
        return True
    return cancel.is_set() and isinstance(err, (OperationCanceled, MigrationAborted, LockError))
