"""A process holding more than 1024 open files, as the master daemon may (a lock per name)."""

from __future__ import annotations

import os
import resource
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

HELD = 1100


@contextmanager
def holding_many_files() -> Iterator[None]:
    """Hold ``HELD`` more open files (the soft limit raised as far as needed), so that
    every file opened meanwhile gets a number past select's limit of 1024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = HELD + 256
    if hard != resource.RLIM_INFINITY and hard < needed:
        pytest.skip(f"the hard limit of open files ({hard}) is below {needed}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, needed), hard))
    held = [os.open(os.devnull, os.O_RDONLY)]
    try:
        held += [os.dup(held[0]) for _ in range(HELD - 1)]
        yield
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
