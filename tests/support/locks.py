"""Locks a test holds itself: jobs that need them wait until the test lets go."""

from __future__ import annotations

from ganeti_lv import locking, paths


def hold(
    data_dir: str, name: str, level: int = locking.LEVEL_INSTANCE, shared: bool = False
) -> locking.LockManager:
    """``name``'s lock of ``level`` held for the data dir's jobs (``release_all`` lets go)."""
    locks = locking.LockManager(paths.locks_dir(data_dir))
    locks.acquire(level, [name], shared=shared)
    return locks
