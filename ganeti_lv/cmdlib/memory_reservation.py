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
missed. The reservation of an instance the node's figures already count,
a running one, is left out. One still arriving (paused: qemu fills its
memory as it comes) keeps its reservation: a memory cap's figure counts
it already, the host's free memory does not yet, and the node does not say
which figure it gave. Memory that only
the others' reservations take is a temporary shortage: the processor
tries the check again a few times.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from ganeti_lv import constants
from ganeti_lv.errors import ECODE_ENVIRON, ECODE_TEMP_NORES, OpPrereqError
from ganeti_lv.hypervisor.base import DomainInfo, NodeOps
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
            free = (
                node_call(rpc.node_info, node)
                .Raise(what, prereq=True, ecode=ECODE_ENVIRON)
                .memory_free
            )
            check_memory(node, free)
            reserved = _not_counted_mib(others, domains)
            if free - reserved < needed:
                raise OpPrereqError(
                    f"Not enough memory on node {node.name} for instance {instance} while"
                    f" other moves to it run: needed {needed} MiB, available {free} MiB,"
                    f" of which {reserved} MiB are reserved by them",
                    ECODE_TEMP_NORES,
                )
        return ledger.reserve("", needed * MIB, instance)


def reserved_for_arrivals(rpc: NodeOps, data_dir: str, node: Node) -> int:
    """MiB the moves to ``node`` reserved for instances its free memory does not count yet.

    For a plan: the node's free memory less this is what it can still take.
    0 when nobody reserves memory there (the node is not asked then); all of
    it when the node cannot list its instances.
    """
    with Reservations(data_dir, MEMORY).node(node.name) as ledger:
        others = ledger.others()
    if not others:
        return 0
    domains = node_call(rpc.instance_list, node)
    return _not_counted_mib(others, domains.payload if domains.ok and domains.payload else {})


def _not_counted_mib(others: list[Reservation], domains: Mapping[str, DomainInfo]) -> int:
    """MiB of ``others`` for instances not running on the node yet (``domains``: its own)."""
    counted = {name for name, dom in domains.items() if dom.state == constants.DOMSTATE_RUNNING}
    return sum(r.size for r in others if r.instance not in counted) // MIB
