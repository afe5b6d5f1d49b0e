"""Disk space reserved on a node for the files a job writes there, from its check to its end.

Two jobs writing to one node (two exports, an export and a migration
copying a ``file`` instance's images, two moves of a node evacuation) each
check the free space before they write; without a reservation both may
pass and one then fills the filesystem halfway: its copy fails late, and
the guests whose sparse images live there pause on ENOSPC. So a job
checks under the node's space reservation lock (``ganeti_lv.reservations``,
kind ``SPACE``), counting what the other jobs writing to the node still
have to write (their reservation less what their directory holds so far),
and reserves its own need before the lock is released.

The node's reservations are counted whatever filesystem their directory
is on (the export dir and the file storage dir may be two): a check may
be too careful, never too generous.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ganeti_lv.cmdlib.common import concurrently
from ganeti_lv.errors import NotEnoughSpace
from ganeti_lv.hypervisor.base import NodeOps
from ganeti_lv.node.transport import node_call
from ganeti_lv.objects import Node
from ganeti_lv.reservations import Held, Reservations
from ganeti_lv.units import MIB


def reserve_space(
    rpc: NodeOps,
    data_dir: str,
    node: Node,
    directory: str,
    need: Callable[[], int],
    instance: str,
    where: str,
    measured: bool = True,
) -> Held:
    """Reserve what ``instance``'s job writes into ``directory`` on ``node``; the held reservation.

    ``need()`` answers the bytes needed (the job's own reads and checks,
    run while the node is asked; its errors come first). ``directory`` need
    not exist yet (its filesystem is the one of its nearest existing
    parent); ``where`` names it in the errors ("the export dir /x of
    node2"). NotEnoughSpace (ECODE_NORES) when the node's free space less the
    others' pending writes is less than the need (a need of 0 is never refused).
    Not ``measured``: what is written cannot be told from ``directory``'s size
    (the snapshot overlays beside an instance's images): the reservation counts
    whole until it is released.
    """
    with Reservations(data_dir).node(node.name) as ledger:
        others = ledger.others()
        watched = [r.directory for r in others if r.directory]
        calls: list[Callable[[], Any]] = [
            need,
            lambda: node_call(rpc.free_space, node, directory),
            lambda: node_call(rpc.dir_usage, node, watched),
        ]
        needed, free_res, written_res = concurrently(calls)
        free = free_res.Raise(f"Cannot check the free space in {where}", prereq=True)
        done = iter(written_res.Raise(f"Cannot check the jobs writing to {where}", prereq=True))
        pending = [max(0, r.size - next(done)) if r.directory else r.size for r in others]
        if needed and free - sum(pending) < needed:
            text = (
                f"Not enough space in {where}: {needed // MIB} MiB needed for {instance},"
                f" {free // MIB} MiB free"
            )
            if sum(pending):
                running = ", ".join(
                    f"{r.instance} ({left // MIB} MiB still to write)"
                    for r, left in zip(others, pending, strict=True)
                    if left
                )
                text += (
                    f", of which {sum(pending) // MIB} MiB are reserved by the jobs writing"
                    f" to it: {running}"
                )
            raise NotEnoughSpace(text)
        return ledger.reserve(directory if measured else "", needed, instance)
