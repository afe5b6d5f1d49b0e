"""ConfigStore: reads, writes, name expansion, errors, real concurrent writers, kill -9."""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import signal
import time
from collections.abc import Callable
from typing import Any

import pytest

from ganeti_lv import constants, paths
from ganeti_lv.config import ConfigStore, match_name
from ganeti_lv.errors import ConfigurationError, ConfigVersionMismatch
from ganeti_lv.objects import ConfigData, Instance, Node

NODES = ("node1.example.com", "node2.example.com", "node3.example.com")

MP = multiprocessing.get_context("fork")


def test_initialize_and_read(config: ConfigStore) -> None:
    data = config.read()
    assert data.serial == 1
    assert sorted(data.nodes) == list(NODES)
    assert config.get_cluster().name == "cluster.example.com"
    assert config.get_node("node2.example.com").address == "10.250.0.2"  # type: ignore[union-attr]
    assert config.get_node("nope") is None
    assert config.instance_names() == ["inst1.example.com", "inst2.example.com"]


def test_initialize_refuses_existing(
    config: ConfigStore, config_data_factory: Callable[[], ConfigData]
) -> None:
    with pytest.raises(ConfigurationError, match="already exists"):
        ConfigStore.initialize(config.data_dir, config_data_factory())


def test_update_bumps_serial_and_persists(config: ConfigStore) -> None:
    with config.update() as data:
        data.cluster.tags.append("x")
    config.set_admin_state("inst1.example.com", constants.ADMINST_DOWN)
    config.set_instance_primary("inst1.example.com", "node2.example.com")
    fresh = ConfigStore(config.data_dir).read()
    assert fresh.serial == 4
    assert fresh.cluster.tags == ["x"]
    inst = fresh.instances["inst1.example.com"]
    assert (inst.admin_state, inst.primary_node) == ("down", "node2.example.com")


def test_failed_update_block_changes_nothing(config: ConfigStore) -> None:
    with pytest.raises(RuntimeError), config.update() as data:
        data.cluster.tags.append("lost")
        raise RuntimeError("boom")
    assert config.read().cluster.tags == []
    assert config.read().serial == 1


def test_helpers_add_remove(config: ConfigStore) -> None:
    config.add_node(Node(name="node4.example.com", address="10.250.0.4"))
    with pytest.raises(ConfigurationError, match="already exists") as err:
        config.add_node(Node(name="node4.example.com", address="10.250.0.4"))
    assert err.value.ecode == "already_exists"
    config.add_instance(
        Instance(name="db1", primary_node="node4.example.com", disk_template="file")
    )
    config.remove_instance("db1")
    config.remove_node("node4.example.com")
    with pytest.raises(ConfigurationError, match="not known") as err:
        config.remove_node("node4.example.com")
    assert err.value.ecode == "unknown_entity"
    with pytest.raises(ConfigurationError):
        config.set_instance_primary("inst1.example.com", "node9")
    assert config.read().serial == 5


def test_expand_names(config: ConfigStore) -> None:
    assert config.expand_instance_name("inst1") == "inst1.example.com"
    assert config.expand_instance_name("inst1.example.com") == "inst1.example.com"
    assert config.expand_instance_name("inst") is None
    assert config.expand_node_name("node3") == "node3.example.com"
    assert match_name("a", ["a.x", "a.y"]) is None
    assert match_name("a", ["a", "a.y"]) == "a"


def test_missing_file_is_clear_error(data_dir: str) -> None:
    with pytest.raises(ConfigurationError) as err:
        ConfigStore(data_dir).read()
    assert "not found; is the cluster initialised? (gnt-lv cluster init)" in str(err.value)
    assert paths.config_file(data_dir) in str(err.value)


@pytest.mark.parametrize(
    "content, fragment",
    [
        (b'{"cluster": ', "is corrupt"),
        (b"[1, 2]", "is corrupt: not a JSON object"),
        (b'{"version": 1, "cluster": {"name": "c"}}', "is corrupt"),
        (b"\xff\xfe", "is corrupt"),
    ],
)
def test_corrupt_file_is_clear_error(config: ConfigStore, content: bytes, fragment: str) -> None:
    with open(config.path, "wb") as fobj:
        fobj.write(content)
    with pytest.raises(ConfigurationError, match=fragment) as err:
        config.read()
    assert config.path in str(err.value)


def test_version_mismatch(config: ConfigStore) -> None:
    with open(config.path) as fobj:
        doc = json.load(fobj)
    doc["version"] = 99
    with open(config.path, "w") as fobj:
        json.dump(doc, fobj)
    with pytest.raises(ConfigVersionMismatch, match="version 99"):
        config.read()


def _writer(data_dir: str, writer: int, count: int) -> None:
    store = ConfigStore(data_dir)
    for idx in range(count):
        with store.update() as data:
            data.cluster.tags.append(f"w{writer}-{idx}")


def test_concurrent_writer_processes_lose_nothing(config: ConfigStore) -> None:
    writers, count = 4, 25
    procs = [MP.Process(target=_writer, args=(config.data_dir, w, count)) for w in range(writers)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
        assert proc.exitcode == 0
    data = config.read()
    expected = {f"w{w}-{i}" for w in range(writers) for i in range(count)}
    assert set(data.cluster.tags) == expected
    assert len(data.cluster.tags) == writers * count
    assert data.serial == 1 + writers * count


def _big_writer(data_dir: str, started: object) -> None:
    store = ConfigStore(data_dir)
    first = True
    while True:
        with store.update() as data:
            data.cluster.tags[0] = f"serial-{data.serial + 1}"
        if first:
            started.set()  # type: ignore[attr-defined]
            first = False


def test_kill_at_random_moments_leaves_a_readable_version(config: ConfigStore) -> None:
    with config.update() as data:
        data.cluster.tags = ["serial-2", "x" * (4 << 20)]
    rng = random.Random(4)
    for _ in range(6):
        started = MP.Event()
        proc = MP.Process(target=_big_writer, args=(config.data_dir, started))
        proc.start()
        assert started.wait(30)
        time.sleep(rng.uniform(0.0, 0.1))
        os.kill(proc.pid, signal.SIGKILL)  # type: ignore[arg-type]
        proc.join(10)
        assert proc.exitcode == -signal.SIGKILL
        data = config.read()
        assert data.cluster.tags[0] == f"serial-{data.serial}"
        assert len(data.cluster.tags[1]) == 4 << 20


class _HalfWriter:
    """A file wrapper that writes half of the data, then stops (the process dies there)."""

    def __init__(self, fobj: Any, reached: Any) -> None:
        self._fobj, self._reached = fobj, reached

    def write(self, data: bytes) -> int:
        self._fobj.write(data[: len(data) // 2])
        self._fobj.flush()
        self._reached.set()
        time.sleep(60)
        raise AssertionError("not killed")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fobj, name)

    def __enter__(self) -> _HalfWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self._fobj.close()


def _stalling_writer(data_dir: str, point: str, reached: Any) -> None:
    """Save once, stopping at ``point`` until the parent kills this process."""
    import ganeti_lv.config as config_mod

    def stall(*_args: Any, **_kwargs: Any) -> None:
        reached.set()
        time.sleep(60)

    if point == "partial-write":
        real_fdopen = os.fdopen
        config_mod.os.fdopen = lambda *a, **k: _HalfWriter(real_fdopen(*a, **k), reached)  # type: ignore[assignment,attr-defined]
    elif point == "before-rename":
        config_mod.os.replace = stall  # type: ignore[attr-defined]
    else:  # after the rename, before the directory fsync
        config_mod.fsync_dir = stall  # type: ignore[assignment]
    with ConfigStore(data_dir).update() as data:
        data.cluster.tags = ["new version", "y" * (1 << 20)]


@pytest.mark.parametrize("point", ["partial-write", "before-rename", "after-rename"])
def test_kill_inside_a_save_leaves_old_or_new_version(config: ConfigStore, point: str) -> None:
    reached = MP.Event()
    proc = MP.Process(target=_stalling_writer, args=(config.data_dir, point, reached))
    proc.start()
    try:
        assert reached.wait(30)
        if point != "after-rename":
            assert [f for f in os.listdir(config.data_dir) if f.endswith(".tmp")]
    finally:
        os.kill(proc.pid, signal.SIGKILL)  # type: ignore[arg-type]
        proc.join(10)
    assert proc.exitcode == -signal.SIGKILL
    data = config.read()
    if point == "after-rename":
        assert (data.serial, data.cluster.tags[0]) == (2, "new version")
    else:
        assert (data.serial, data.cluster.tags) == (1, [])
    # The lock died with the process and leftover temp files do not disturb writes.
    config.set_admin_state("inst1.example.com", constants.ADMINST_DOWN)
    assert config.read().serial == data.serial + 1


def test_nested_update_fails_instead_of_hanging(config: ConfigStore) -> None:
    with pytest.raises(ConfigurationError, match="Nested configuration update"):  # noqa: SIM117
        with config.update():
            ConfigStore(config.data_dir).update_cluster(config.get_cluster())
    assert config.read().serial == 1
    config.update_cluster(config.get_cluster())  # the lock was released
    assert config.read().serial == 2
