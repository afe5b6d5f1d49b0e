"""ConfigStore saves: copy-on-access working copies and reused JSON text of unchanged entries.

Whatever a block does, the file must be exactly the configuration the block
left (as ``to_dict`` would write it), the cache must equal a fresh read of
the file, and nothing the caller can still reach may be shared with it.
"""

from __future__ import annotations

import copy
import errno
import json
import multiprocessing
import random
from pathlib import Path
from typing import Any

import pytest

from ganeti_lv import config as config_mod
from ganeti_lv import constants
from ganeti_lv.config import ConfigStore
from ganeti_lv.objects import ConfigData, Disk, Instance, Node, json_default

MP = multiprocessing.get_context("spawn")
INST1, INST2 = "inst1.example.com", "inst2.example.com"


def _file_doc(store: ConfigStore) -> Any:
    with open(store.path, "rb") as fobj:
        return json.loads(fobj.read())


def _assert_consistent(store: ConfigStore) -> None:
    """The file, this store's cache and a fresh store all hold the same configuration."""
    on_disk = _file_doc(store)
    assert on_disk == store.snapshot().to_dict()
    assert ConfigStore(store.data_dir).read() == store.snapshot()


def _tag_instance_in_other_process(data_dir: str, name: str, tag: str) -> None:
    with ConfigStore(data_dir).update() as data:
        data.instances[name].tags.append(tag)


def test_json_default_writes_what_to_dict_writes(config: ConfigStore) -> None:
    data = config.read()
    data.instances[INST1].hvparams["nested"] = {"a": [1, 2.5, None, True]}
    assert json.dumps(data, default=json_default) == json.dumps(data.to_dict())
    with pytest.raises(TypeError, match="set"):
        json.dumps({"x": {1}}, default=json_default)


def test_a_save_copies_only_what_the_block_touched(config: ConfigStore) -> None:
    before = config.snapshot()
    with config.update() as data:
        data.instances[INST1].admin_state = constants.ADMINST_DOWN
    after = config.snapshot()
    assert after is not before
    assert after.instances[INST2] is before.instances[INST2]  # untouched: shared
    assert after.nodes["node1.example.com"] is before.nodes["node1.example.com"]
    assert after.instances[INST1] is not before.instances[INST1]
    assert before.instances[INST1].admin_state == constants.ADMINST_UP  # old cache untouched
    assert after.instances[INST1].admin_state == constants.ADMINST_DOWN
    _assert_consistent(config)


@pytest.mark.parametrize(
    "take",
    [
        lambda t: t[INST1],
        lambda t: t.get(INST1),
        lambda t: list(t.values())[0],
        lambda t: dict(t.items())[INST1],
        lambda t: dict(t)[INST1],
        lambda t: {**t}[INST1],
        lambda t: (t | {})[INST1],
        lambda t: t.copy()[INST1],
        lambda t: copy.deepcopy(t)[INST1],
        lambda t: copy.copy(t)[INST1],
        lambda t: t.setdefault(INST1, None),
    ],
    ids=[
        "item",
        "get",
        "values",
        "items",
        "dict",
        "splat",
        "or",
        "copy",
        "deepcopy",
        "shallowcopy",
        "setdefault",
    ],
)
def test_no_way_out_of_a_table_reaches_the_cache(config: ConfigStore, take: Any) -> None:
    cached = config.snapshot().instances[INST1]
    with config.update() as data:
        inst = take(data.instances)
        assert inst is not cached
        inst.tags.append("changed")
    assert cached.tags == ["web"]  # the previous cache never changes
    kept = config.snapshot().instances[INST1]
    inst.tags.append("after the block")  # a misuse; must not leak into the cache
    assert config.snapshot().instances[INST1] is kept
    assert "after the block" not in kept.tags
    _assert_consistent(config)


def test_objects_given_to_helpers_stay_the_callers(config: ConfigStore) -> None:
    inst = Instance(name="new.example.com", primary_node="node1.example.com", disk_template="file")
    config.add_instance(inst)
    inst.tags.append("not saved")
    node = config.get_node("node2.example.com")
    assert node is not None
    node.drained = True
    config.update_node(node)
    node.offline = True
    assert config.get_instance("new.example.com").tags == []  # type: ignore[union-attr]
    stored = config.get_node("node2.example.com")
    assert stored is not None and stored.drained and not stored.offline
    _assert_consistent(config)


def test_another_processs_write_is_never_overwritten_by_reused_text(config: ConfigStore) -> None:
    """Text of unchanged entries is reused only while the file is this process's own."""
    config.set_admin_state(INST2, constants.ADMINST_DOWN)  # INST1's text now known
    proc = MP.Process(target=_tag_instance_in_other_process, args=(config.data_dir, INST1, "x"))
    proc.start()
    proc.join(60)
    assert proc.exitcode == 0
    config.set_admin_state(INST2, constants.ADMINST_UP)  # INST1 not touched here
    assert _file_doc(config)["instances"][INST1]["tags"] == ["web", "x"]
    assert config.snapshot().serial == 4
    _assert_consistent(config)


def _random_block(data: ConfigData, rng: random.Random, step: int) -> None:
    """One random change made the ways LUs make them."""
    names = sorted(data.instances)
    choice = rng.randrange(8)
    if choice == 0 and names:
        data.instances[rng.choice(names)].tags.append(f"t{step}")
    elif choice == 1 and names:
        del data.instances[rng.choice(names)]
    elif choice == 2:
        name = f"i{step}.example.com"
        data.instances[name] = Instance(
            name=name,
            primary_node="node1.example.com",
            disk_template="file",
            disks=[Disk(size=step)],
        )
    elif choice == 3 and names:
        data.instances.pop(rng.choice(names)).tags.append("popped")
    elif choice == 4:
        for inst in data.instances.values():
            inst.beparams["step"] = step
    elif choice == 5:
        data.nodes[f"n{step}"] = Node(name=f"n{step}", address="10.250.0.99")
    elif choice == 6 and names:
        data.instances = {n: data.instances[n] for n in names[: len(names) // 2]}
    else:
        data.cluster.tags.append(f"c{step}")


def test_random_saves_always_write_the_blocks_configuration(config: ConfigStore) -> None:
    rng = random.Random(6)
    for step in range(60):
        with config.update() as data:
            _random_block(data, rng, step)
            expected = data.to_dict()
        expected["serial"] += 1
        assert _file_doc(config) == expected
        _assert_consistent(config)


def test_failed_block_after_taking_objects_leaves_cache_and_file(config: ConfigStore) -> None:
    config.set_admin_state(INST1, constants.ADMINST_DOWN)
    raw_before = Path(config.path).read_bytes()
    with pytest.raises(RuntimeError), config.update() as data:
        data.instances[INST2].tags.append("lost")
        del data.instances[INST1]
        raise RuntimeError("boom")
    assert Path(config.path).read_bytes() == raw_before
    config.set_admin_state(INST1, constants.ADMINST_UP)
    doc = _file_doc(config)
    assert doc["instances"][INST2]["tags"] == ["web"] and INST1 in doc["instances"]
    _assert_consistent(config)


def test_cached_object_stored_under_another_name_is_written_under_it(config: ConfigStore) -> None:
    config.set_admin_state(INST2, constants.ADMINST_DOWN)  # INST1's text now known
    shared = config.snapshot().instances[INST1]
    with config.update() as data:
        data.instances["copy.example.com"] = shared
    doc = _file_doc(config)
    assert doc["instances"]["copy.example.com"] == doc["instances"][INST1]
    assert config.snapshot().instances["copy.example.com"] is not shared
    _assert_consistent(config)


@pytest.mark.parametrize("fails", ["fsync_dir", "_settled_copy"])
def test_a_fault_after_the_new_file_is_in_place_does_not_undo_the_save(
    config: ConfigStore, monkeypatch: pytest.MonkeyPatch, fails: str
) -> None:
    """Once the file is renamed into place every reader sees it: no error may tell the
    caller (an instance add, which would remove the new instance's disks) that nothing
    was saved. The directory's sync failing (EIO) or the cache's copy failing is logged
    or forgotten, and the next read loads the file."""

    def broken(*_args: Any) -> Any:
        raise OSError(errno.EIO, "Input/output error")

    serial = config.read().serial
    monkeypatch.setattr(config_mod, fails, broken)
    with config.update() as data:
        data.instances[INST1].tags.append("saved")
    monkeypatch.undo()
    assert config.read().serial == serial + 1
    assert "saved" in config.get_instance(INST1).tags  # type: ignore[union-attr]
    _assert_consistent(config)
