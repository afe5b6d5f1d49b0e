"""Context: the node operations made once, also when threads ask at the same time."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from ganeti_lv.context import Context
from ganeti_lv.hypervisor import libvirt as libvirt_ops


def test_threads_asking_at_once_share_one_node_operations(
    data_dir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The master daemon's jobs and remote API requests at its start: a second facade
    would hold connections nobody closes."""
    made: list[Any] = []
    inside, release = threading.Event(), threading.Event()

    class Slow:  # a facade whose making takes a while (libvirt imported, say)
        def __init__(self, ddir: str) -> None:
            made.append(self)
            inside.set()
            release.wait(10)

    monkeypatch.setattr(libvirt_ops, "LibvirtNodeOps", Slow)
    ctx = Context.from_data_dir(data_dir)
    got: list[Any] = []
    threads = [threading.Thread(target=lambda: got.append(ctx.node_ops)) for _ in range(4)]
    threads[0].start()
    assert inside.wait(10)
    for thread in threads[1:]:
        thread.start()
    for thread in threads[1:]:
        thread.join(0.3)  # asking while the first one is made: they wait for it
    release.set()
    for thread in threads:
        thread.join(10)
    assert len(made) == 1
    assert len(got) == 4 and all(ops is made[0] for ops in got)
