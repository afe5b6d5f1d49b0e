"""The placement allocator of node operations (ganeti_lv.cmdlib.allocator), by tables."""

from __future__ import annotations

from typing import Any

import pytest

from ganeti_lv.cmdlib.allocator import Need, NodeFit, plan

STORE = "/srv/ganeti-lv/file-storage"


def fit(name: str, free: int, **kw: Any) -> NodeFit:
    kw.setdefault("bridges", frozenset({"br0"}))
    kw.setdefault("paths", frozenset({STORE}))
    return NodeFit(name, free, **kw)


def need(name: str, memory: int, **kw: Any) -> Need:
    kw.setdefault("bridges", ("br0",))
    kw.setdefault("paths", (STORE,))
    return Need(name, "n1", memory, **kw)


# (case, needs, nodes, target, expected placement, expected unplaced {name: reason part})
CASES = [
    (
        "most free memory wins",
        [need("a", 512)],
        [fit("n2", 1000), fit("n3", 2000)],
        None,
        {"a": "n3"},
        {},
    ),
    (
        "stopped instances spread by the memory they take once started, never refused",
        [
            need("r", 512),
            need("s1", 0, idle_memory=512),
            need("s2", 0, idle_memory=512),
            need("s3", 0, idle_memory=4096),
        ],
        [fit("n2", 8000), fit("n3", 7990)],
        None,
        {"r": "n2", "s3": "n3", "s1": "n2", "s2": "n2"},
        {},
    ),
    (
        "spread: the second instance goes where the most is left after the first",
        [need("a", 512), need("b", 512)],
        [fit("n2", 1500), fit("n3", 1600)],
        None,
        {"a": "n3", "b": "n2"},
        {},
    ),
    (
        "a memory cap (low free memory) forces the second instance elsewhere",
        [need("a", 256), need("b", 256)],
        [fit("n2", 300), fit("n3", 290)],
        None,
        {"a": "n2", "b": "n3"},
        {},
    ),
    (
        "an unmovable instance stays, and takes no memory from the others",
        [need("a", 256, unmovable="its disks are on offline node n1"), need("b", 256)],
        [fit("n2", 300)],
        None,
        {"b": "n2"},
        {"a": "its disks are on offline node n1"},
    ),
    (
        "memory already placed counts: nothing left for the third",
        [need("a", 256), need("b", 256), need("c", 256)],
        [fit("n2", 300), fit("n3", 300)],
        None,
        {"a": "n2", "b": "n3"},
        {"c": "not enough memory (needs 256 MiB, 44 MiB free after the plan)"},
    ),
    (
        "larger instances are placed first",
        [need("small", 100), need("big", 900)],
        [fit("n2", 1000), fit("n3", 950)],
        None,
        {"big": "n2", "small": "n3"},
        {},
    ),
    (
        "drained and offline nodes take nothing",
        [need("a", 100)],
        [fit("n2", 4000, drained=True), fit("n3", 4000, offline=True), fit("n4", 200)],
        None,
        {"a": "n4"},
        {},
    ),
    (
        "not vm_capable takes nothing",
        [need("a", 100)],
        [fit("n2", 4000, vm_capable=False)],
        None,
        {},
        {"a": "n2: not vm_capable"},
    ),
    (
        "a missing bridge excludes the node",
        [need("a", 100, bridges=("br0", "br9"))],
        [fit("n2", 4000), fit("n3", 1000, bridges=frozenset({"br0", "br9"}))],
        None,
        {"a": "n3"},
        {},
    ),
    (
        "missing storage excludes the node",
        [need("a", 100)],
        [fit("n2", 4000, paths=frozenset())],
        None,
        {},
        {"a": f"n2: missing storage paths {STORE}"},
    ),
    (
        "an incompatible node (CPU, no answer) takes nothing",
        [need("a", 100)],
        [fit("n2", 4000, incompatible="no answer: timeout"), fit("n3", 500)],
        None,
        {"a": "n3"},
        {},
    ),
    (
        "a node refused for one instance only",
        [need("a", 100, refused={"n3": "CPU not compatible: no avx"}), need("b", 100)],
        [fit("n2", 500), fit("n3", 4000)],
        None,
        {"a": "n2", "b": "n3"},
        {},
    ),
    (
        "a stopped instance needs no memory",
        [need("stopped", 0)],
        [fit("n2", 0)],
        None,
        {"stopped": "n2"},
        {},
    ),
    (
        "an instance that fits nowhere says why, per node",
        [need("huge", 8000)],
        [fit("n2", 4000), fit("n3", 4000, drained=True)],
        None,
        {},
        {
            "huge": "n2: not enough memory (needs 8000 MiB, 4000 MiB free after the plan);"
            " n3: drained"
        },
    ),
    (
        "the instance's own node is never a target",
        [need("a", 100)],
        [fit("n1", 4000)],
        None,
        {},
        {"a": "n1: the instance's own node"},
    ),
    (
        "an explicit target is the only candidate",
        [need("a", 100), need("b", 100)],
        [fit("n2", 4000), fit("n3", 300)],
        "n3",
        {"a": "n3", "b": "n3"},
        {},
    ),
    (
        "an explicit target that is full",
        [need("a", 200), need("b", 200)],
        [fit("n2", 4000), fit("n3", 300)],
        "n3",
        {"a": "n3"},
        {"b": "n3: not enough memory"},
    ),
    (
        "an explicit target that is no candidate",
        [need("a", 100)],
        [fit("n2", 4000)],
        "n9",
        {},
        {"a": "target node n9 is not a candidate"},
    ),
    ("no other node", [need("a", 100)], [], None, {}, {"a": "no other node"}),
]


@pytest.mark.parametrize(
    ("needs", "nodes", "target", "placed", "unplaced"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_plan(
    needs: list[Need],
    nodes: list[NodeFit],
    target: str | None,
    placed: dict[str, str],
    unplaced: dict[str, str],
) -> None:
    result = plan(needs, nodes, target)
    assert result.placed == placed
    assert set(result.unplaced) == set(unplaced)
    for name, part in unplaced.items():
        assert part in result.unplaced[name]


def test_free_after_accounts_for_every_placement() -> None:
    result = plan([need("a", 300), need("b", 200)], [fit("n2", 1000), fit("n3", 900)])
    assert result.free_after == {"n2": 700, "n3": 700}


def test_plan_lines_name_source_target_and_reason() -> None:
    needs = [need("a", 300), need("b", 5000)]
    result = plan(needs, [fit("n2", 1000)])
    lines = result.lines(needs)
    assert lines[0] == "a (300 MiB): n1 -> n2"
    assert lines[1].startswith("b: stays on n1: no node can take it (n2: not enough memory")
