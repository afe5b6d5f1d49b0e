"""Placement of many instances at once: the plan of a node operation.

Pure logic, no node access: the caller asks the nodes for their facts
(``NodeFit``) and describes each instance's needs (``Need``); ``plan``
answers where each instance goes, or why it can go nowhere.

A node can take an instance when it is online, not drained, vm-capable,
not the instance's node, compatible (CPU, as the caller found it), has the
instance's bridges and storage paths, and still has the instance's memory
free after the instances already placed on it by this plan (the node's
free memory as reported, which its memory cap already bounds). Instances
that will not run on the target (a stopped instance failed over) need no
memory. Among the nodes that can take it, an instance goes to the one
with the most free memory left, so the plan leaves the free memory as even
as it can; larger instances are placed first. The stopped instances placed
on a node count there with the memory they take once started
(``idle_memory``) when the nodes are compared, never to refuse one: they
spread over the nodes instead of all going to the one with the most free
memory. An explicit target limits the candidates to that node.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class NodeFit:
    """What a candidate node offers (memory in MiB).

    ``incompatible``: why instances of the source cannot run there (a CPU
    mismatch, a failed query), or "" when they can. ``paths``: storage
    paths that exist on the node. ``failed``: the node failed a move of
    this operation and takes no more of its instances.
    """

    name: str
    memory_free: int
    offline: bool = False
    drained: bool = False
    vm_capable: bool = True
    bridges: frozenset[str] = frozenset()
    paths: frozenset[str] = frozenset()
    incompatible: str = ""
    failed: bool = False


@dataclass
class Need:
    """What an instance needs on its new node (memory in MiB; 0 when it will not run).

    ``idle_memory``: what an instance that will not run takes once started
    (compared, never refused). ``refused``: nodes the caller found unfit
    for this instance alone (its CPU), with the reason. ``unmovable``: why
    no node can take it, whatever they offer (its disks are on an offline
    node), or "" when one may.
    """

    name: str
    node: str
    memory: int
    idle_memory: int = 0
    bridges: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()
    refused: dict[str, str] = field(default_factory=dict)
    unmovable: str = ""


@dataclass
class Plan:
    """Where each instance goes (``placed``), or why it cannot go anywhere (``unplaced``)."""

    placed: dict[str, str] = field(default_factory=dict)
    unplaced: dict[str, str] = field(default_factory=dict)
    free_after: dict[str, int] = field(default_factory=dict)

    def lines(self, needs: Sequence[Need]) -> list[str]:
        """The plan as text, one line per instance, in the order of ``needs``."""
        out = []
        for need in needs:
            if need.name in self.placed:
                out.append(
                    f"{need.name} ({need.memory} MiB): {need.node} -> {self.placed[need.name]}"
                )
            elif need.name in self.unplaced:
                out.append(f"{need.name}: stays on {need.node}: {self.unplaced[need.name]}")
        return out


def flags_refusal(node: NodeFit) -> str:
    """Why ``node``'s flags keep it from taking instances ("offline", ...), or ""."""
    if node.offline:
        return "offline"
    if node.drained:
        return "drained"
    return "" if node.vm_capable else "not vm_capable"


def refusal(node: NodeFit, need: Need, free: int) -> str:
    """Why ``node`` cannot take ``need`` with ``free`` MiB left, or "" when it can."""
    if node.name == need.node:
        return "the instance's own node"
    flags = flags_refusal(node)
    if flags:
        return flags
    if node.failed:
        return "failed a move of this operation"
    if node.incompatible:
        return node.incompatible
    if node.name in need.refused:
        return need.refused[node.name]
    missing = [b for b in need.bridges if b not in node.bridges]
    if missing:
        return f"missing bridges {', '.join(missing)}"
    absent = [p for p in need.paths if p not in node.paths]
    if absent:
        return f"missing storage paths {', '.join(absent)}"
    if need.memory > free:
        return f"not enough memory (needs {need.memory} MiB, {free} MiB free after the plan)"
    return ""


def plan(needs: Sequence[Need], nodes: Sequence[NodeFit], target: str | None = None) -> Plan:
    """Place every instance of ``needs`` on one of ``nodes`` (only ``target`` when given)."""
    candidates = [n for n in nodes if target is None or n.name == target]
    result = Plan(free_after={n.name: n.memory_free for n in candidates})
    idle = {n.name: 0 for n in candidates}  # the stopped instances placed there, started
    if target is not None and not candidates:
        for need in needs:
            result.unplaced[need.name] = f"target node {target} is not a candidate"
        return result
    # larger first: the hardest to place get the most choice; then by name
    for need in sorted(needs, key=lambda n: (-n.memory, -n.idle_memory, n.name)):
        if need.unmovable:
            result.unplaced[need.name] = need.unmovable
            continue
        best: NodeFit | None = None
        reasons = []
        for node in candidates:
            free = result.free_after[node.name]
            why = refusal(node, need, free)
            if why:
                reasons.append(f"{node.name}: {why}")
            elif best is None or free - idle[node.name] > (
                result.free_after[best.name] - idle[best.name]
            ):
                best = node
        if best is None:
            result.unplaced[need.name] = (
                "no node can take it (" + ("; ".join(reasons) or "no other node") + ")"
            )
            continue
        result.placed[need.name] = best.name
        result.free_after[best.name] -= need.memory
        idle[best.name] += need.idle_memory
    return result
