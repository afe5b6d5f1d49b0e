"""Tags of the cluster, nodes and instances: OP_TAGS_GET/SET/DEL and the gnt-lv commands."""

from __future__ import annotations

import io
from typing import Any

import pytest
from support.lu import refused, run_op

from ganeti_lv.cli.main import main
from ganeti_lv.config import ConfigStore
from ganeti_lv.context import Context
from ganeti_lv.errors import ECODE_INVAL, ECODE_NOENT
from ganeti_lv.mcpu import run_query
from ganeti_lv.names import MAX_TAGS
from ganeti_lv.opcodes import OpCode, OpTagsDel, OpTagsGet, OpTagsSearch, OpTagsSet

I1 = "inst1.example.com"
N2, N3 = "node2.example.com", "node3.example.com"


def _run(ctx: Context, op: OpCode) -> Any:
    return run_op(ctx, op)[0]


def test_an_instances_tags_are_added_read_sorted_and_removed(
    ctx: Context, config: ConfigStore
) -> None:
    before = config.get_instance(I1)
    assert before is not None and before.tags == ["web"]
    _run(ctx, OpTagsSet(kind="instance", name="inst1", tags=["zeta", "alpha", "web", "zeta"]))
    after = config.get_instance(I1)
    assert after is not None
    assert after.tags == ["web", "zeta", "alpha"]  # in the order added, each once
    assert after.mtime >= before.mtime
    assert run_query(ctx, OpTagsGet(kind="instance", name="inst1")) == ["alpha", "web", "zeta"]
    _run(ctx, OpTagsDel(kind="instance", name=I1, tags=["web", "zeta"]))
    assert config.get_instance(I1).tags == ["alpha"]  # type: ignore[union-attr]
    # the other instance and the cluster are untouched
    assert config.get_instance("inst2.example.com").tags == ["web"]  # type: ignore[union-attr]
    assert config.get_cluster().tags == []


def test_a_nodes_tags_under_its_lock(ctx: Context, config: ConfigStore, monkeypatch: Any) -> None:
    """Expanded as node names are; a change holds the node's lock (Ganeti's), nothing else."""
    from ganeti_lv import locking
    from ganeti_lv.cmdlib import tags as tags_lus

    held: list[list[str]] = []
    checked = tags_lus.LUTagsSet.CheckPrereq

    def noting_locks(lu: Any) -> None:
        held.append(sorted(lu.owned_locks(locking.LEVEL_NODE)))
        held.append(sorted(lu.owned_locks(locking.LEVEL_INSTANCE)))
        checked(lu)

    monkeypatch.setattr(tags_lus.LUTagsSet, "CheckPrereq", noting_locks)
    _run(ctx, OpTagsSet(kind="node", name="node2", tags=["rack:7", "ssd"]))
    assert held == [[N2], []]
    node = config.get_node(N2)
    assert node is not None and node.tags == ["rack:7", "ssd"]
    assert config.get_node(N3).tags == [] and config.get_cluster().tags == []  # type: ignore[union-attr]
    assert run_query(ctx, OpTagsGet(kind="node", name=N2)) == ["rack:7", "ssd"]
    _run(ctx, OpTagsDel(kind="node", name=N2, tags=["ssd"]))
    assert config.get_node(N2).tags == ["rack:7"]  # type: ignore[union-attr]


def test_the_clusters_tags(ctx: Context, config: ConfigStore) -> None:
    _run(ctx, OpTagsSet(kind="cluster", tags=["site:ams", "prod"]))
    assert config.get_cluster().tags == ["site:ams", "prod"]
    assert run_query(ctx, OpTagsGet(kind="cluster")) == ["prod", "site:ams"]
    _run(ctx, OpTagsDel(kind="cluster", tags=["prod"]))
    assert config.get_cluster().tags == ["site:ams"]


def test_bad_tag_requests_change_nothing(ctx: Context, config: ConfigStore) -> None:
    err = refused(ctx, config, OpTagsDel(kind="instance", name=I1, tags=["web", "b", "a"]))
    assert (err.ecode, err.msg) == (ECODE_NOENT, "Tag(s) 'a', 'b' not found")
    err = refused(ctx, config, OpTagsSet(kind="instance", name="ghost", tags=["x"]))
    assert err.ecode == ECODE_NOENT and "ghost" in err.msg
    err = refused(ctx, config, OpTagsSet(kind="nodegroup", name="default", tags=["x"]))
    assert err.ecode == ECODE_INVAL and "tags the cluster, nodes and instances only" in err.msg
    err = refused(ctx, config, OpTagsSet(kind="node", name="ghost", tags=["x"]))
    assert err.ecode == ECODE_NOENT and "Node 'ghost' not known" in err.msg
    err = refused(ctx, config, OpTagsSet(kind="node", tags=["x"]))
    assert err.ecode == ECODE_INVAL and "Tags of kind 'node' need the node's name" in err.msg
    err = refused(ctx, config, OpTagsSet(kind="instance", name=I1, tags=["two words"]))
    assert err.ecode == ECODE_INVAL and "Invalid tag 'two words'" in err.msg
    err = refused(ctx, config, OpTagsSet(kind="cluster", name="c1", tags=["x"]))
    assert err.ecode == ECODE_INVAL and "take no name" in err.msg
    many = [f"t{i}" for i in range(MAX_TAGS)]  # 4096 new ones and "web"
    err = refused(ctx, config, OpTagsSet(kind="instance", name=I1, tags=many))
    assert err.ecode == ECODE_INVAL and f"{MAX_TAGS + 1} with the new ones" in err.msg
    _run(ctx, OpTagsSet(kind="instance", name=I1, tags=["new"], dry_run=True))
    assert config.get_instance(I1).tags == ["web"]  # type: ignore[union-attr]


def _cli(data_dir: str, capsys: Any, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["--data-dir", data_dir, *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_gnt_lv_tag_commands(
    data_dir: str, config: ConfigStore, capsys: Any, tmp_path: Any, monkeypatch: Any
) -> None:
    source = tmp_path / "tags"
    source.write_text("from-file\n\n  spaced  \n")
    code, _, err = _cli(data_dir, capsys, "instance", "add-tags", "--from", str(source), I1, "b")
    assert (code, err) == (0, "")
    code, out, _ = _cli(data_dir, capsys, "instance", "list-tags", "inst1")
    assert (code, out) == (0, "b\nfrom-file\nspaced\nweb\n")
    code, _, err = _cli(data_dir, capsys, "instance", "remove-tags", I1, "b", "nope")
    assert code != 0 and "Tag(s) 'nope' not found" in err
    inst = config.get_instance(I1)
    assert inst is not None and inst.tags == ["web", "b", "from-file", "spaced"]  # as given
    code, _, err = _cli(data_dir, capsys, "instance", "add-tags", I1)
    assert code != 0 and "No tags to be added" in err
    # the cluster's, the tags from standard input
    monkeypatch.setattr("sys.stdin", io.StringIO("one\ntwo\n"))
    assert _cli(data_dir, capsys, "cluster", "add-tags", "--from", "-")[0] == 0
    assert _cli(data_dir, capsys, "cluster", "list-tags")[1] == "one\ntwo\n"
    assert _cli(data_dir, capsys, "cluster", "remove-tags", "one")[0] == 0
    assert config.get_cluster().tags == ["two"]
    # a node's, shown by node list's Tags field as well
    assert _cli(data_dir, capsys, "node", "add-tags", "node2", "rack:7", "ssd")[0] == 0
    assert _cli(data_dir, capsys, "node", "list-tags", "node2")[1] == "rack:7\nssd\n"
    code, out, _ = _cli(data_dir, capsys, "node", "list", "--no-headers", "-o", "name,tags", N2)
    assert (code, out.split()) == (0, [N2, "rack:7,ssd"])
    code, _, err = _cli(data_dir, capsys, "node", "remove-tags", "ghost", "x")
    assert code != 0 and "Node 'ghost' not known" in err


def test_a_tag_removed_by_another_job_meanwhile_fails_the_removal(
    ctx: Context, config: ConfigStore, monkeypatch: Any
) -> None:
    """The cluster's tags take no lock: the removal checks again where it writes."""
    from ganeti_lv.cmdlib import tags as tags_lus
    from ganeti_lv.errors import OpExecError

    _run(ctx, OpTagsSet(kind="cluster", tags=["a", "b"]))
    checked = tags_lus.LUTagsDel.CheckPrereq

    def then_another_job(lu: Any) -> None:
        checked(lu)
        with config.update() as data:  # another job's removal of "b"
            data.cluster.tags.remove("b")

    monkeypatch.setattr(tags_lus.LUTagsDel, "CheckPrereq", then_another_job)
    with pytest.raises(OpExecError, match="Tag\\(s\\) 'b' not found"):
        _run(ctx, OpTagsDel(kind="cluster", tags=["a", "b"]))
    assert config.get_cluster().tags == ["a"]  # "a" stays: nothing of the failed job


def test_searching_every_objects_tags(
    ctx: Context, config: ConfigStore, data_dir: str, capsys: Any
) -> None:
    """Ganeti's search-tags: (path, tag) pairs of the cluster, instances and nodes."""
    with config.update() as data:
        data.cluster.tags = ["site:ams", "prod"]
        data.nodes[N2].tags = ["rack:7", "site:ams-2"]
    found = run_query(ctx, OpTagsSearch(pattern="^site:|^web$"))
    assert found == [
        ["/cluster", "site:ams"],
        [f"/instances/{I1}", "web"],
        ["/instances/inst2.example.com", "web"],
        [f"/nodes/{N2}", "site:ams-2"],
    ]
    assert run_query(ctx, OpTagsSearch(pattern="nothing")) == []
    err = refused(ctx, config, OpTagsSearch(pattern="(unclosed"))
    assert err.ecode == ECODE_INVAL and "Invalid search pattern '(unclosed'" in err.msg
    code, out, _ = _cli(data_dir, capsys, "cluster", "search-tags", "ams")
    assert (code, out) == (0, f"/cluster site:ams\n/nodes/{N2} site:ams-2\n")
    code, out, _ = _cli(data_dir, capsys, "cluster", "search-tags", "nothing")
    assert (code, out) == (1, "")  # none found: exit 1, as Ganeti's
