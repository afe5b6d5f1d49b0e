"""Shared fixtures for unit tests: a data dir with a small cluster, fake node ops, a context.

``cluster_config`` has nodes node1/node2/node3.example.com (node3 offline is
not set: all online) and instances inst1/inst2.example.com on node1.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support.configdata import NODES, small_cluster

from ganeti_lv import constants
from ganeti_lv.config import ConfigStore
from ganeti_lv.context import Context
from ganeti_lv.hypervisor.fake import FakeNodeOps
from ganeti_lv.objects import ConfigData, disk_path

INSTANCES = ("inst1.example.com", "inst2.example.com")


def make_config_data() -> ConfigData:
    """A small cluster: three nodes, two instances on node1."""
    return small_cluster({name: constants.DT_FILE for name in INSTANCES}, tags=("web",))


@pytest.fixture
def config_data_factory() -> Callable[[], ConfigData]:
    """The function building the small cluster's ConfigData (a fresh one per call)."""
    return make_config_data


@pytest.fixture
def data_dir(tmp_path: Path) -> str:
    """An empty data dir."""
    path = tmp_path / "data"
    path.mkdir()
    return str(path)


@pytest.fixture
def config(data_dir: str) -> ConfigStore:
    """An initialised configuration (see make_config_data)."""
    return ConfigStore.initialize(data_dir, make_config_data())


@pytest.fixture
def fake_ops() -> FakeNodeOps:
    """Fake node operations knowing the three nodes."""
    ops = FakeNodeOps()
    for name in NODES:
        ops.add_node(name)
    return ops


@pytest.fixture
def ctx(config: ConfigStore, data_dir: str, fake_ops: FakeNodeOps) -> Context:
    """A context on the initialised data dir with fake node ops and a 5 s lock timeout."""
    return Context.from_data_dir(data_dir, node_ops=fake_ops, lock_timeout=5.0)


@pytest.fixture
def inst1_running(fake_ops: FakeNodeOps, config: ConfigStore) -> FakeNodeOps:
    """The fake nodes with inst1 running on node1, its disk file there, the storage dir known."""
    cluster = config.get_cluster()
    inst = config.get_instance(INSTANCES[0])
    assert inst is not None
    fake_ops.add_domain(NODES[0], INSTANCES[0])
    fake_ops.node(NODES[0]).files[disk_path(cluster, inst, 0)] = 1024
    fake_ops.present_paths = {cluster.file_storage_dir}
    return fake_ops


@pytest.fixture
def slow_migration(inst1_running: FakeNodeOps) -> FakeNodeOps:
    """inst1_running, whose fake migration reports progress 200 times, 50 ms apart.

    Long enough for a cancel request to arrive while it runs.
    """
    from ganeti_lv.hypervisor.migration_types import MigrationProgress

    ops = inst1_running
    ops.migration_reports = [MigrationProgress(elapsed=float(i)) for i in range(200)]
    real_migrate = ops.migrate_instance

    def slow_migrate(*args: Any) -> Any:
        progress_fn = args[5]

        def slowed(report: Any) -> None:
            progress_fn(report)
            time.sleep(0.05)

        return real_migrate(*args[:5], slowed, *args[6:])

    ops.migrate_instance = slow_migrate  # type: ignore[method-assign]
    return ops


@pytest.fixture
def server(config: ConfigStore, data_dir: str, inst1_running: FakeNodeOps) -> Iterator[Any]:
    """A master daemon for the test data dir, serving in a thread, on the fake nodes.

    inst1 runs on node1 with its disk files (as in the migration LU tests).
    """
    from ganeti_lv.master import daemon as masterd

    srv = masterd.serve(data_dir, node_ops=inst1_running)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(5)


@pytest.fixture
def held_delays(server: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """The test daemon's test delays sleep until the test sets the event (at the latest
    when the test ends, or after 60 s), however slow the machine."""
    release = threading.Event()
    make = server.daemon.context

    def context(lock_timeout: float | None) -> Context:
        ctx = make(lock_timeout)
        ctx.sleep = lambda _seconds: release.wait(60)
        return ctx

    monkeypatch.setattr(server.daemon, "context", context)
    try:
        yield release
    finally:
        release.set()


@pytest.fixture
def program(tmp_path: Path) -> Iterator[str]:
    """A data dir without a cluster for a master daemon program the test starts (the
    daemon then opens no node connection); a daemon left running is killed."""
    from ganeti_lv.master import daemon as masterd

    ddir = str(tmp_path / "data")
    os.mkdir(ddir)
    try:
        yield ddir
    finally:
        pid = masterd.read_pid(ddir)
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
