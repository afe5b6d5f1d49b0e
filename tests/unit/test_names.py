"""Invalid names are refused with the rule they break (issue 13 item 8)."""

from __future__ import annotations

from typing import Any

import pytest

from ganeti_lv.cli.main import main
from ganeti_lv.cmdlib.cluster import normalize_cluster_params
from ganeti_lv.cmdlib.instance_nics import check_nics
from ganeti_lv.config import ConfigStore
from ganeti_lv.errors import ECODE_INVAL, OpPrereqError
from ganeti_lv.hypervisor.fake import FakeNodeOps
from ganeti_lv.names import NAME_RULE, check_name, check_tags, name_problem
from ganeti_lv.opcodes import OpInstanceCreate, OpNodeAdd

RULE_WORDS = ("1 to 63 characters", "lower-case letters", "digits", "'-' and '.'")


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("Web1", "upper-case letters (use 'web1')"),
        ("web_1", "contains '_'"),
        ("a b/c", "contains ' ', '/'"),
        ("-web", "starts or ends with '-'"),
        ("web.", "starts or ends with '.'"),
        ("x" * 64, "64 characters long"),
        ("", "it is empty"),
        ("web1\n", "contains '\\n'"),  # a name read with its line's end
    ],
)
def test_the_error_names_what_breaks_the_rule_and_states_it(name: str, reason: str) -> None:
    with pytest.raises(OpPrereqError) as info:
        check_name(name, "instance")
    assert info.value.ecode == ECODE_INVAL
    assert info.value.msg.startswith(f"Invalid instance name {name!r}: ")
    assert reason in info.value.msg
    assert all(word in info.value.msg for word in RULE_WORDS), info.value.msg


def test_valid_names_pass() -> None:
    for name in ("web1", "a", "node-1.example.com", "x" * 63):
        assert name_problem(name, "node") is None


def test_opcodes_state_the_rule() -> None:
    with pytest.raises(OpPrereqError, match="Invalid node name 'Node_2'") as info:
        OpNodeAdd(node_name="Node_2").validate()
    assert NAME_RULE in info.value.msg
    create = OpInstanceCreate(
        instance_name="web_1", disk_template="file", pnode="node1", disks=[{"size": 64}]
    )
    with pytest.raises(OpPrereqError) as info:
        create.validate()
    assert "contains '_'" in info.value.msg and NAME_RULE in info.value.msg


@pytest.mark.parametrize("name", ["db.old", "web.new"])
def test_an_instance_name_may_not_end_like_an_export_work_folder(name: str) -> None:
    create = OpInstanceCreate(
        instance_name=name, disk_template="file", pnode="node1", disks=[{"size": 64}]
    )
    with pytest.raises(OpPrereqError, match="which the export directories keep") as info:
        create.validate()
    assert info.value.ecode == ECODE_INVAL
    assert name_problem(name, "node") is None  # a node may be called so


def test_cli_instance_add_says_the_rule_and_changes_nothing(
    config: ConfigStore, data_dir: str, fake_ops: FakeNodeOps, capsys: Any
) -> None:
    serial = config.read().serial
    code = main(
        ["--data-dir", data_dir, "instance", "add", "-t", "file", "--disk", "0:size=64M",
         "-n", "node2.example.com", "--no-start", "Web_1"],
        node_ops=fake_ops,
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code != 0
    assert "error type: wrong_input" in err
    assert "Invalid instance name 'Web_1'" in err and NAME_RULE in err
    assert config.read().serial == serial
    assert not fake_ops.calls_to("create_disks", "node2.example.com")


def test_a_value_read_with_its_lines_end_is_refused() -> None:
    """A trailing newline matched the rules' ``$``: a tag, a MAC (then not seen as a
    duplicate of the same address), a bridge and an allocator name were accepted."""
    with pytest.raises(OpPrereqError, match="Invalid tag") as info:
        check_tags(["prod\n"], "instance web1")
    assert info.value.ecode == ECODE_INVAL
    with pytest.raises(OpPrereqError, match="Invalid MAC address") as info:
        check_nics([{"mac": "52:54:00:aa:bb:cc\n"}])
    assert info.value.ecode == ECODE_INVAL
    with pytest.raises(OpPrereqError) as info:
        normalize_cluster_params({"default_bridge": "br0\n"})
    assert info.value.ecode == ECODE_INVAL
    with pytest.raises(OpPrereqError) as info:
        normalize_cluster_params({"default_iallocator": "hail\n"})
    assert info.value.ecode == ECODE_INVAL
