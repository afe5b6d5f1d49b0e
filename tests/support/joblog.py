"""Faults of the job log's writes, for the tests of what a job does when they fail."""

from __future__ import annotations

import pytest

from ganeti_lv import retry
from ganeti_lv.master import jobs as jobs_module


def end_writes_fail(monkeypatch: pytest.MonkeyPatch, times: int) -> list[OSError]:
    """The next ``times`` writes of a job's final record fail (ENOSPC), without waiting
    between the tries; returns the failures still to come (clear it: the disk has room)."""
    failures = [OSError(28, "No space left on device") for _ in range(times)]
    real_write = jobs_module.write_file_atomically

    def write(path: str, data: bytes, mode: int = 0o640, *, durable: bool = True) -> None:
        if durable and failures:
            raise failures.pop()
        real_write(path, data, mode, durable=durable)

    monkeypatch.setattr(jobs_module, "write_file_atomically", write)
    monkeypatch.setattr(
        jobs_module,
        "job_end_write_policy",
        lambda: retry.job_end_write_policy(sleep=lambda _s: None),
    )
    return failures
