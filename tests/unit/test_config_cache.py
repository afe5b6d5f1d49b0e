"""ConfigStore's read cache and the config objects' copies: never stale, never shared."""

from __future__ import annotations

import json
import multiprocessing
import os
from typing import Any

import pytest

from ganeti_lv import constants
from ganeti_lv.config import ConfigStore
from ganeti_lv.errors import ConfigurationError
from ganeti_lv.objects import CONFIG_VERSION, ConfigData, Disk, Instance

MP = multiprocessing.get_context("spawn")
INST = "inst1.example.com"


def _append_tag_in_other_process(data_dir: str, tag: str) -> None:
    store = ConfigStore(data_dir)
    with store.update() as data:
        data.cluster.tags.append(tag)


def _run_other_process(data_dir: str, tag: str) -> None:
    proc = MP.Process(target=_append_tag_in_other_process, args=(data_dir, tag))
    proc.start()
    proc.join(60)
    assert proc.exitcode == 0


def test_write_by_another_process_is_seen_by_next_read(config: ConfigStore) -> None:
    assert config.read().cluster.tags == []  # cached now
    assert config.instance_names()  # served from the cache
    _run_other_process(config.data_dir, "from-other")
    assert config.read().cluster.tags == ["from-other"]
    assert config.get_cluster().tags == ["from-other"]
    assert config.read().serial == 2


def test_read_modify_write_never_starts_from_a_stale_cache(config: ConfigStore) -> None:
    config.read()
    _run_other_process(config.data_dir, "other")
    with config.update() as data:
        data.cluster.tags.append("mine")
    fresh = ConfigStore(config.data_dir).read()
    assert fresh.cluster.tags == ["other", "mine"]
    assert fresh.serial == 3


def test_replaced_file_with_same_size_and_mtime_is_detected(config: ConfigStore) -> None:
    """A new version of the file is a new inode; size and timestamps may match."""
    old_stat = os.stat(config.path)
    with open(config.path, "rb") as fobj:
        doc = json.loads(fobj.read())
    assert config.read().cluster.name == "cluster.example.com"
    doc["cluster"]["name"] = "CLUSTER.example.com"  # same length
    tmp = config.path + ".new"
    with open(tmp, "w") as fobj:
        fobj.write(json.dumps(doc, separators=(",", ":")) + "\n")
    os.utime(tmp, ns=(old_stat.st_atime_ns, old_stat.st_mtime_ns))
    os.replace(tmp, config.path)
    assert os.stat(config.path).st_size == old_stat.st_size
    assert config.read().cluster.name == "CLUSTER.example.com"


def test_file_rewritten_in_place_is_detected(config: ConfigStore) -> None:
    config.read()
    with open(config.path, "rb") as fobj:
        doc = json.loads(fobj.read())
    doc["serial"] = 77
    with open(config.path, "w") as fobj:  # in place, same inode
        json.dump(doc, fobj)
    assert config.read().serial == 77


def test_file_removed_after_caching_is_an_error(config: ConfigStore) -> None:
    config.read()
    os.unlink(config.path)
    with pytest.raises(ConfigurationError, match="not found"):
        config.read()
    with pytest.raises(ConfigurationError, match="not found"), config.update():
        pass


def test_callers_get_their_own_copies(config: ConfigStore) -> None:
    snap = config.read()
    snap.instances[INST].tags.append("changed")
    snap.instances[INST].disks[0].size = 1
    snap.cluster.beparams["maxmem"] = 1
    del snap.nodes["node1.example.com"]
    inst = config.get_instance(INST)
    assert inst is not None
    inst.admin_state = constants.ADMINST_DOWN
    inst.nics.clear()
    config.get_cluster().tags.append("x")
    node = config.get_node("node2.example.com")
    assert node is not None
    node.offline = True
    fresh = config.read()
    assert fresh.instances[INST].tags == ["web"]
    assert fresh.instances[INST].disks[0].size == 1024
    assert fresh.instances[INST].admin_state == constants.ADMINST_UP
    assert len(fresh.instances[INST].nics) == 1
    assert fresh.cluster.beparams["maxmem"] == constants.BEC_DEFAULTS["maxmem"]
    assert fresh.cluster.tags == []
    assert "node1.example.com" in fresh.nodes
    assert not fresh.nodes["node2.example.com"].offline
    assert fresh == ConfigStore(config.data_dir).read()


def test_object_kept_after_update_does_not_change_the_cache(config: ConfigStore) -> None:
    with config.update() as data:
        data.cluster.tags.append("saved")
    data.cluster.tags.append("after the block")  # a misuse; must not leak
    data.instances[INST].admin_state = constants.ADMINST_DOWN
    assert config.read().cluster.tags == ["saved"]
    assert config.get_instance(INST).admin_state == constants.ADMINST_UP  # type: ignore[union-attr]


def test_failed_update_leaves_cache_unchanged(config: ConfigStore) -> None:
    config.read()
    with pytest.raises(RuntimeError), config.update() as data:
        data.instances[INST].tags.append("lost")
        raise RuntimeError("boom")
    assert config.get_instance(INST).tags == ["web"]  # type: ignore[union-attr]


def test_cache_fd_is_closed_when_store_goes_away(data_dir: str, config: ConfigStore) -> None:
    def open_fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    before = open_fds()
    store = ConfigStore(data_dir)
    store.read()
    assert open_fds() == before + 1
    store.read()  # same file: no new descriptor
    assert open_fds() == before + 1
    del store
    assert open_fds() == before


# ----------------------------------------------------------- object copies


def test_to_dict_from_dict_and_copy_are_deep(config: ConfigStore) -> None:
    data = config.read()
    doc = data.to_dict()
    rebuilt = ConfigData.from_dict(doc)
    copied = data.copy()
    assert rebuilt == data == copied
    doc["instances"][INST]["tags"].append("doc only")
    doc["instances"][INST]["disks"][0]["size"] = 5
    copied.instances[INST].hvparams["x"] = [1]
    assert rebuilt.instances[INST].tags == ["web"]
    assert rebuilt.instances[INST].disks[0].size == 1024
    assert data.instances[INST].tags == ["web"] and "x" not in data.instances[INST].hvparams
    assert isinstance(rebuilt.instances[INST].disks[0], Disk)


def test_from_dict_fills_defaults_and_rejects_bad_data() -> None:
    inst = Instance.from_dict({"name": "a", "primary_node": "n", "disk_template": "file"})
    assert inst.disks == [] and inst.admin_state == constants.ADMINST_DOWN and inst.uuid
    with pytest.raises(ConfigurationError, match="unknown keys"):
        Instance.from_dict({"name": "a", "primary_node": "n", "disk_template": "f", "x": 1})
    with pytest.raises(ConfigurationError, match="primary_node"):
        Instance.from_dict({"name": "a", "disk_template": "file"})
    with pytest.raises(ConfigurationError, match="expected a mapping"):
        Instance.from_dict({"name": "a", "primary_node": "n", "disk_template": "f", "disks": [3]})


def test_to_dict_skips_attributes_that_are_not_fields() -> None:
    inst = Instance(name="a", primary_node="n", disk_template="file")
    extra: Any = inst
    extra.scratch = "not configuration"
    assert "scratch" not in inst.to_dict()
    assert Instance.from_dict(inst.to_dict()) == inst


def test_written_file_is_compact_json_of_the_current_version(config: ConfigStore) -> None:
    config.set_admin_state(INST, constants.ADMINST_DOWN)
    with open(config.path, "rb") as fobj:
        raw = fobj.read()
    doc = json.loads(raw)
    assert doc["version"] == CONFIG_VERSION and doc["serial"] == 2
    assert doc["instances"][INST]["admin_state"] == constants.ADMINST_DOWN
    assert b"\n " not in raw


def test_snapshot_is_shared_until_the_file_changes(config: ConfigStore) -> None:
    first = config.snapshot()
    assert config.snapshot() is first  # no copy, no re-read
    assert config.read() is not first and config.read() == first
    _run_other_process(config.data_dir, "other")
    second = config.snapshot()
    assert second is not first and second.cluster.tags == ["other"]
    config.set_admin_state(INST, constants.ADMINST_DOWN)
    assert config.snapshot().instances[INST].admin_state == constants.ADMINST_DOWN
