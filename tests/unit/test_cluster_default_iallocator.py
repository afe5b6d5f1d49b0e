"""The cluster's default instance allocator (Ganeti's ``default_iallocator``): set at
``cluster init`` (hail), changed by ``cluster modify``, used by ``instance add`` and
``backup import`` given neither a primary nor an allocator (or Ganeti's ".")."""

from __future__ import annotations

from typing import Any

import pytest

from ganeti_lv.cli.main import main
from ganeti_lv.config import ConfigStore
from ganeti_lv.context import Context
from ganeti_lv.errors import ECODE_INVAL, OpPrereqError
from ganeti_lv.hypervisor.fake import FakeNodeOps
from ganeti_lv.mcpu import Processor
from ganeti_lv.opcodes import OpClusterSetParams, OpInstanceCreate

N1, N2, N3 = "node1.example.com", "node2.example.com", "node3.example.com"


def _create(name: str, **kwargs: Any) -> OpInstanceCreate:
    return OpInstanceCreate(
        instance_name=name, disk_template="file", disks=[{"size": 64}], nics=[{}], **kwargs
    )


def _refused(ctx: Context, op: Any) -> OpPrereqError:
    with pytest.raises(OpPrereqError) as info:
        Processor(ctx).execute(op)
    return info.value


@pytest.mark.parametrize("iallocator", [None, "."])
def test_without_a_primary_the_clusters_default_allocator_chooses(
    ctx: Context, fake_ops: FakeNodeOps, config: ConfigStore, iallocator: str | None
) -> None:
    fake_ops.node(N1).facts.memory_free = 500
    fake_ops.node(N2).facts.memory_free = 1000
    fake_ops.node(N3).facts.memory_free = 3000
    assert config.get_cluster().default_iallocator == ""  # a cluster from before the setting
    serial = config.read().serial
    err = _refused(ctx, _create("web8", iallocator=iallocator))
    assert err.ecode == ECODE_INVAL and "the cluster has no default allocator" in err.msg
    assert config.read().serial == serial and config.get_instance("web8") is None
    assert Processor(ctx).execute(OpClusterSetParams(default_iallocator="hail")) == [
        "default_iallocator"
    ]
    lines: list[str] = []
    Processor(ctx).execute(_create("web9", iallocator=iallocator), feedback_fn=lines.append)
    inst = config.get_instance("web9")
    assert inst is not None and inst.primary_node == N3
    assert any(f"Selected node {N3} as primary" in line for line in lines)
    # cleared again: refused again
    Processor(ctx).execute(OpClusterSetParams(default_iallocator=""))
    err = _refused(ctx, _create("web7", iallocator=iallocator))
    assert "no default allocator" in err.msg and config.get_instance("web7") is None


def test_a_primary_and_an_allocator_together_are_refused(ctx: Context, config: ConfigStore) -> None:
    serial = config.read().serial
    err = _refused(ctx, _create("web9", pnode=N2, iallocator="hail"))
    assert err.ecode == ECODE_INVAL and err.msg == "Do not specify both, iallocator and node"
    assert config.read().serial == serial


@pytest.mark.parametrize("name", [".", "has space", "a/b", "-lead", "x" * 64])
def test_an_invalid_default_allocator_is_refused(
    ctx: Context, config: ConfigStore, name: str
) -> None:
    serial = config.read().serial
    err = _refused(ctx, OpClusterSetParams(default_iallocator=name))
    assert err.ecode == ECODE_INVAL and f"Invalid instance allocator name '{name}'" in err.msg
    assert config.read().serial == serial and config.get_cluster().default_iallocator == ""


def test_cli_init_modify_info_and_add_without_a_node(
    tmp_path: Any, config: ConfigStore, data_dir: str, fake_ops: FakeNodeOps, capsys: Any
) -> None:
    def cli(*argv: str, ddir: str = data_dir) -> tuple[int, str, str]:
        code = main(["--data-dir", ddir, *argv], node_ops=fake_ops)
        out, err = capsys.readouterr()
        return code, out, err

    init = ["cluster", "init", "--master-name", "m1", "--master-address", "127.0.0.1"]
    for ddir, given, expected in (("a", [], "hail"), ("b", ["--default-iallocator", ""], "")):
        new = str(tmp_path / ddir)
        code, _, err = cli(*init, "--no-host-key", *given, "c1", ddir=new)
        assert code == 0, err
        assert ConfigStore(new).get_cluster().default_iallocator == expected
    code, out, _ = cli("cluster", "info")
    assert code == 0 and "Default instance allocator: (none)\n" in out
    code, _, err = cli("instance", "add", "-t", "file", "--disk", "0:size=64M", "--no-start", "w1")
    assert code == 1 and "error type: wrong_input" in err and "no default allocator" in err
    code, _, err = cli("cluster", "modify", "--default-iallocator", "hail")
    assert code == 0, err
    code, out, _ = cli("cluster", "info")
    assert "Default instance allocator: hail\n" in out
    fake_ops.node(N1).facts.memory_free = 9000
    code, _, err = cli("instance", "add", "-t", "file", "--disk", "0:size=64M", "--no-start", "w1")
    assert code == 0, err
    inst = config.get_instance("w1")
    assert inst is not None and inst.primary_node == N1
