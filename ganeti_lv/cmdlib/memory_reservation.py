"""Memory reserved on a move's target node, from its check until its job ends.

Moves of node operations hold the target's resource lock shared: two of
them (of two operations, or of one with more than one move onto a node at
once) could both count the memory the node has free before either
instance is there. So every migration or failover that starts an instance
reserves its memory on the target under the node's reservation lock
(``ganeti_lv.reservations``, kind ``MEMORY``).

A planned move, or any move when others hold reservations on the node,
asks the node again under that lock: its instances first, then its free
memory, so an instance that arrives in between is counted twice, never
missed. The reservation of an instance the node's free memory already
counts is left out: a running one, and one still arriving (paused, qemu
filling its memory as it comes) when the figure is the node's memory cap's
(``NodeFacts.memory_free_capped``), which counts every running or paused
domain; the host's own free memory does not count an arriving one yet.
Memory that only the others' reservations take is a temporary shortage:
the processor tries the check again a few times.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from ganeti_lv import constants
from ganeti_lv.errors import ECODE_ENVIRON, ECODE_TEMP_NORES, OpPrereqError
from ganeti_lv.hypervisor.base import DomainInfo, NodeFacts, NodeOps
from ganeti_lv.node.transport import node_call
from ganeti_lv.objects import Node
from ganeti_lv.reservations import MEMORY, Held, Reservation, Reservations
from ganeti_lv.units import MIB


def reserve_memory(
    rpc: NodeOps,
    data_dir: str,
    node: Node,
    instance: str,
    needed: int,
    recheck: bool,
    check_memory: Callable[[Node, int], None],
) -> Held:
    """Reserve ``needed`` MiB for ``instance`` on ``node``; see the module docstring.

    ``check_memory(node, free)`` raises when the node's own free memory is
    too little (the caller's refusal); ``recheck``: ask the node again even
    when nobody else holds a reservation there (a planned move).
    """
    with Reservations(data_dir, MEMORY).node(node.name) as ledger:
        others = ledger.others()
        if others or recheck:
            what = f"Can't get data from node {node.name}"
            domains = node_call(rpc.instance_list, node).Raise(
                what, prereq=True, ecode=ECODE_ENVIRON
            )
            facts = node_call(rpc.node_info, node).Raise(what, prereq=True, ecode=ECODE_ENVIRON)
            free = facts.memory_free
            check_memory(node, free)
            reserved = Arrivals(tuple(others), domains).mib(facts)
            if free - reserved < needed:
                raise OpPrereqError(
                    f"Not enough memory on node {node.name} for instance {instance} while"
                    f" other moves to it run: needed {needed} MiB, available {free} MiB,"
                    f" of which {reserved} MiB are reserved by them",
                    ECODE_TEMP_NORES,
                )
        return ledger.reserve("", needed * MIB, instance)


@dataclass(frozen=True)
class Arrivals:
    """Other moves' memory reservations on a node, and its domains listed before its free memory."""

    others: tuple[Reservation, ...] = ()
    domains: Mapping[str, DomainInfo] = field(default_factory=dict)

    def mib(self, facts: NodeFacts) -> int:
        """MiB reserved for instances the node's free memory (``facts``) does not count yet."""
        counting = (
            constants.DOMSTATES_ACTIVE
            if facts.memory_free_capped
            else (constants.DOMSTATE_RUNNING,)
        )
        counted = {name for name, dom in self.domains.items() if dom.state in counting}
        return sum(r.size for r in self.others if r.instance not in counted) // MIB

    def free(self, facts: NodeFacts) -> int:
        """The node's free memory in MiB less what these reservations take (never below 0)."""
        return max(0, facts.memory_free - self.mib(facts))


def arrivals(rpc: NodeOps, data_dir: str, node: Node) -> Arrivals:
    """What other moves reserved on ``node``, to subtract from its free memory asked after.

    For a plan. Nothing when nobody reserves memory there (the node is not
    asked then); every reservation counts when the node cannot list its
    instances.
    """
    with Reservations(data_dir, MEMORY).node(node.name) as ledger:
        others = ledger.others()
    if not others:
        return Arrivals()
    domains = node_call(rpc.instance_list, node)
    return Arrivals(tuple(others), domains.payload if domains.ok and domains.payload else {})
