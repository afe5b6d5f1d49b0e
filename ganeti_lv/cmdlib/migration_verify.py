"""Cluster-verify checks for what an interrupted migration leaves behind.

Registered into ``gnt-lv cluster verify`` (``cmdlib.cluster``) on import:

- ``EINSTANCEMIGRATION``: a migration left half-done, i.e. the instance's
  domain is active (running or paused) on one node and known (paused or
  defined) on another too, or a paused domain sits on a node that is not
  the primary (an incoming migration that never resumed). Two running
  copies are a split brain (EINSTANCEMULTIRUNNING), not this. Verify
  holds every instance lock shared, so a migration still in progress is
  waited for, never reported.
- leftover images: images of a ``file`` (node-local) instance on a node
  that is not its primary, as a copy-storage migration or a failover
  leaves them when interrupted; reported as ENODEORPHANFILE of that node
  naming the instance (and claimed, so the generic check does not repeat
  them).

Both say how to repair: ``gnt-lv instance migrate --cleanup INSTANCE``.
"""

from __future__ import annotations

from ganeti_lv import constants
from ganeti_lv.cmdlib.cluster import VerifyData, register_verify_check
from ganeti_lv.objects import disk_dir

CLEANUP_HINT = "run 'gnt-lv instance migrate --cleanup {name}'"


def _states(vd: VerifyData, name: str) -> dict[str, str]:
    """Node -> state of the domain ``name`` on every node that reported it."""
    return {node: doms[name].state for node, doms in sorted(vd.domains.items()) if name in doms}


def half_done_nodes(states: dict[str, str], primary: str) -> list[str]:
    """Nodes of a half-done migration given node -> domain state ([] if none).

    A migration never has two running copies (that is a split brain,
    reported as EINSTANCEMULTIRUNNING) and two stopped definitions are no
    migration either; its traces are an active copy next to a paused or
    stopped one, or a paused (incoming) copy off the primary.
    """
    active = [n for n, s in states.items() if s in constants.DOMSTATES_ACTIVE]
    running = [n for n, s in states.items() if s == constants.DOMSTATE_RUNNING]
    if len(states) > 1 and active and len(running) < len(states):
        return sorted(states)
    paused = [n for n in active if states[n] == constants.DOMSTATE_PAUSED and n != primary]
    return sorted(paused)


@register_verify_check(order=25)
def check_half_done_migrations(vd: VerifyData) -> None:
    """An active domain next to a paused/stopped copy, or a paused domain off the primary."""
    for name, inst in sorted(vd.config.instances.items()):
        states = _states(vd, name)
        nodes = half_done_nodes(states, inst.primary_node)
        if not nodes:
            continue
        where = ", ".join(f"{node} ({states[node]})" for node in sorted(nodes))
        vd.report(
            "EINSTANCEMIGRATION",
            "instance",
            name,
            f"migration left half-done: domain on {where} (primary node"
            f" {inst.primary_node}); {CLEANUP_HINT.format(name=name)}",
        )


@register_verify_check(order=90)
def check_migration_leftover_images(vd: VerifyData) -> None:
    """Images of a node-local instance on a node that is not its primary.

    Reported with the generic code of a file no instance owns there
    (ENODEORPHANFILE, so tools keyed on it keep working) but saying whose
    images they are and how to remove them; the files are claimed so the
    generic check does not report them a second time.
    """
    cluster = vd.config.cluster
    local = [
        inst
        for _, inst in sorted(vd.config.instances.items())
        if inst.disk_template == constants.DT_FILE
    ]
    if not local:
        return
    for node in vd.online_nodes():
        if node.name not in vd.domains:
            continue  # unreachable: reported by the node check
        listing = vd.list_files(node, cluster.file_storage_dir) or []
        for inst in local:
            if inst.primary_node == node.name:
                continue
            prefix = disk_dir(cluster, inst) + "/"
            found = [path for path in listing if path.startswith(prefix)]
            if not found:
                continue
            for path in found:
                vd.claim_file(node.name, path)
            vd.report(
                "ENODEORPHANFILE",
                "node",
                node.name,
                f"leftover images of instance {inst.name} (primary node {inst.primary_node}),"
                f" e.g. from an interrupted migration or failover: {', '.join(found)};"
                f" {CLEANUP_HINT.format(name=inst.name)}",
            )
