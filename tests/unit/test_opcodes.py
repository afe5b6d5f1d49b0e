"""Opcodes: keyword-only fields with defaults, equality, dicts and validation."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest

from ganeti_lv import opcodes
from ganeti_lv.errors import ECODE_INVAL, OpPrereqError
from ganeti_lv.opcodes import (
    OP_REGISTRY,
    OpBackupExport,
    OpCode,
    OpInstanceCreate,
    OpInstanceMigrate,
    OpTestDelay,
)


@dataclass(kw_only=True)
class OpSample(OpCode):
    """An opcode of every kind of field."""

    OP_ID: ClassVar[str] = "OP_TEST_SAMPLE"
    WITH_DRY_RUN: ClassVar[bool] = True

    name: str
    count: int = 3
    ratio: float | None = None
    tags: list[str] = dataclasses.field(default_factory=list)
    params: dict[str, Any] = dataclasses.field(default_factory=dict)
    disks: list[dict[str, Any]] = dataclasses.field(default_factory=list)


def _names(cls: type[OpCode]) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def test_fields_in_declaration_order_with_the_base_fields_first() -> None:
    assert _names(OpSample) == [
        "dry_run",
        "debug_level",
        "reason",
        "name",
        "count",
        "ratio",
        "tags",
        "params",
        "disks",
    ]
    assert "OP_ID" not in _names(OpSample) and "WITH_DRY_RUN" not in _names(OpSample)
    assert OP_REGISTRY["OP_TEST_SAMPLE"] is OpSample


@pytest.mark.parametrize("cls", sorted(OP_REGISTRY.values(), key=lambda c: c.OP_ID))
def test_every_annotated_attribute_of_an_opcode_is_a_field(cls: type[OpCode]) -> None:
    """A class missing its @dataclass would take its base's fields only."""
    for klass in cls.__mro__:
        if issubclass(klass, OpCode):
            for name, hint in vars(klass).get("__annotations__", {}).items():
                assert str(hint).startswith("ClassVar") or name in _names(cls), (klass, name)


def test_defaults_and_fresh_lists_per_opcode() -> None:
    a, b = OpSample(name="a"), OpSample(name="b", count=5, dry_run=True)
    assert (a.name, a.count, a.ratio, a.tags, a.params, a.dry_run) == ("a", 3, None, [], {}, False)
    assert (b.count, b.dry_run) == (5, True)
    a.tags.append("x")
    assert b.tags == [] and OpSample(name="c").tags == []


def test_missing_and_unknown_keywords_are_type_errors() -> None:
    with pytest.raises(TypeError, match="missing 1 required keyword-only argument: 'name'"):
        OpSample()  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="unexpected keyword argument 'colour'"):
        OpSample(name="a", colour="red")  # type: ignore[call-arg]


def test_equality_and_repr() -> None:
    assert OpSample(name="a", tags=["x"]) == OpSample(name="a", tags=["x"])
    assert OpSample(name="a") != OpSample(name="a", count=4)
    assert OpInstanceMigrate(instance_name="a") != OpInstanceMigrate(instance_name="b")
    assert OpTestDelay() != OpSample(name="a")
    text = repr(OpSample(name="a"))
    assert text.startswith("OpSample(dry_run=False, debug_level=0, reason=[], name='a', count=3")


@pytest.mark.parametrize("cls", sorted(OP_REGISTRY.values(), key=lambda c: c.OP_ID))
def test_every_opcode_survives_its_dict(cls: type[OpCode]) -> None:
    required = {
        f.name: "x"
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }
    op = cls(**required)
    data = op.to_dict()
    assert data["OP_ID"] == cls.OP_ID
    assert OpCode.from_dict(data) == op


def test_to_dict_shares_no_list_or_dict() -> None:
    op = OpInstanceCreate(
        instance_name="a", disk_template="file", disks=[{"size": 10}], beparams={"x": [1]}
    )
    data = op.to_dict()
    data["disks"][0]["size"] = 99
    data["beparams"]["x"].append(2)
    assert op.disks == [{"size": 10}] and op.beparams == {"x": [1]}


def test_from_dict_refuses_unknown_opcodes_and_parameters() -> None:
    with pytest.raises(OpPrereqError, match="Unknown opcode") as err:
        OpCode.from_dict({"OP_ID": "OP_NOSUCH"})
    assert err.value.ecode == ECODE_INVAL
    with pytest.raises(OpPrereqError, match="Invalid parameters for OP_INSTANCE_MIGRATE"):
        OpCode.from_dict({"OP_ID": "OP_INSTANCE_MIGRATE", "instance_name": "a", "colour": 1})


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"name": 3}, "name"),
        ({"name": "a", "count": True}, "count"),  # a bool is not an int
        ({"name": "a", "count": 2.5}, "count"),
        ({"name": "a", "ratio": "half"}, "ratio"),
        ({"name": "a", "tags": "x"}, "tags"),
        ({"name": "a", "params": []}, "params"),
        # the items of lists and dicts too (a disk that is no dict, a name None)
        ({"name": "a", "tags": ["x", None]}, "tags"),
        ({"name": "a", "params": {1: "x"}}, "params"),
        ({"name": "a", "disks": [5]}, "disks"),
    ],
)
def test_validate_checks_types(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(OpPrereqError, match=f"'OP_TEST_SAMPLE.{field}' fails validation") as err:
        OpSample(**kwargs).validate()
    assert err.value.ecode == ECODE_INVAL


def test_validate_accepts_what_the_annotations_allow() -> None:
    OpSample(name="a", count=1, ratio=2, tags=["x"], params={"k": 1}).validate()  # int as float
    OpSample(name="a", disks=[{"size": 1, "name": None}]).validate()
    OpSample(name="a", ratio=0.5).validate()
    OpInstanceMigrate(instance_name="a", mode="live", migration_downtime=300).validate()


def test_validate_runs_the_value_checks_and_the_dry_run_rule() -> None:
    with pytest.raises(OpPrereqError, match="must not be negative"):
        OpInstanceMigrate(instance_name="a", migration_bandwidth=-1).validate()
    with pytest.raises(OpPrereqError, match="must be one of"):
        OpBackupExport(instance_name="a", mode="carrier-pigeon").validate()
    with pytest.raises(OpPrereqError, match="does not support dry-run"):
        opcodes.OpNodeRemove(node_name="n", dry_run=True).validate()
