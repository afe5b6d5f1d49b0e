"""Work begun ahead of a job, while it is set up: node connections, disk copies.

Only hints: nothing here decides anything or changes the cluster, and any
doubt (unknown names, no configuration, node operations without the hook)
skips the hint. The job does the real work and checks as if no hint had
been given. ``gnt-lv`` gives them before it runs a job in its own process;
the master daemon (whose connections stay open) sets the copies up ahead of
its export jobs.
"""

from __future__ import annotations

import threading

from ganeti_lv import constants, opcodes
from ganeti_lv.errors import GenericError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class OpNodes:
    """What an instance opcode names, looked up ahead of its job (a hint only).

    A plain class (like everything ``gnt-lv`` imports before it hands a job
    to the master daemon): no ``dataclasses``, no ``typing`` at run time.
    """

    __slots__ = ("ctx", "cluster", "instance", "primary", "target", "master")

    def __init__(
        self, ctx: Any, cluster: Any, instance: Any, primary: Any, target: Any, master: Any
    ) -> None:
        self.ctx = ctx
        self.cluster = cluster
        self.instance = instance
        self.primary = primary
        self.target = target
        self.master = master


def op_nodes(ctx: Any, op: Any) -> OpNodes | None:
    """The instance, its primary and the target node ``op`` names; None on any doubt.

    For work done in the background while the job is set up (connections,
    copies): nothing is decided here, so unknown names, a missing
    configuration or no context (None) just give None.
    """
    if ctx is None:
        return None
    try:
        cfg = ctx.config
        cluster = cfg.get_cluster()
        inst_name = cfg.expand_instance_name(op.instance_name)
        inst = cfg.get_instance(inst_name) if inst_name else None
        primary = cfg.get_node(inst.primary_node) if inst is not None else None
        target_name = cfg.expand_node_name(op.target_node) if op.target_node else None
        target = cfg.get_node(target_name) if target_name else None
        master = cfg.get_node(cluster.master_node)
    except (GenericError, OSError, ValueError):
        return None
    if inst is None or primary is None:
        return None
    return OpNodes(ctx, cluster, inst, primary, target, master)


def prewarm_nodes(ctx: Any, op: Any) -> None:
    """Let the node operations open their connections to the nodes ``op`` will use.

    The master, the instance's primary and the given target (hooks and
    checks run there) are connected in the background while the job is set
    up. Only a hint: nothing is decided here, and any doubt (unknown names,
    fake node operations) just skips it.
    """
    _warm(op_nodes(ctx, op))


def begin(ctx: Any, op: Any) -> None:
    """``prewarm_nodes`` and ``prestart_copies`` with one lookup of ``op``'s names."""
    found = op_nodes(ctx, op)
    _warm(found)
    _copies_in_background(found, op)


def _warm(found: OpNodes | None) -> None:
    if found is None:
        return
    prewarm = getattr(found.ctx.node_ops, "prewarm", None)
    nodes = [n for n in (found.master, found.primary, found.target) if n is not None]
    if callable(prewarm):
        prewarm(list({n.name: n for n in nodes}.values()))


def set_up_export_copies(
    node_ops: Any, cluster: Any, instance: Any, src: Any, dst: Any, op: Any
) -> None:
    """Ask ``node_ops`` to set the first disk copies of a live export up, now.

    What the export's own copies will be: the instance's disks on its
    primary to ``<export_dir>/<name>.new/`` on the target, with the
    opcode's compression and bandwidth limit. Node operations without
    ``prestart_copy``, and exports that stop the instance, skip it.
    """
    from ganeti_lv import exportinfo, objects  # loaded with the node operations
    from ganeti_lv.node import diskcopy

    prestart = getattr(node_ops, "prestart_copy", None)
    if not callable(prestart) or op.shutdown or op.remove_instance:
        return
    for idx in range(min(len(instance.disks), diskcopy.PRESTART_COPIES)):
        prestart(
            src,
            objects.disk_path(cluster, instance, idx),
            dst,
            exportinfo.new_disk_path(cluster.export_dir, instance.name, idx),
            compress=op.compress,
            bandwidth_limit=op.bandwidth_limit,
        )


def prestart_copies(ctx: Any, op: Any) -> None:
    """Let the node operations set a live export's disk copies up in the background.

    The connection from the primary to the target and the copy helpers
    start while the job is set up (imports, locks, checks, hooks); the
    export's copy then only says go. A hint like ``prewarm_nodes``: nothing
    is read or written before the job's copy asks for it, a copy the job
    does not make is called off when it ends (or when this process ends),
    and any doubt (not an export, unknown names, a dry run, fake node
    operations) skips it.
    """
    if _live_local_export(op):
        _copies_in_background(op_nodes(ctx, op), op)


def _live_local_export(op: Any) -> bool:
    return (
        isinstance(op, opcodes.OpBackupExport)
        and not op.dry_run
        and op.mode == constants.EXPORT_MODE_LOCAL
    )


def _copies_in_background(found: OpNodes | None, op: Any) -> None:
    if found is None or found.target is None or not _live_local_export(op):
        return
    threading.Thread(
        target=set_up_export_copies,
        args=(found.ctx.node_ops, found.cluster, found.instance, found.primary, found.target, op),
        name="export-prestart",
        daemon=True,
    ).start()
