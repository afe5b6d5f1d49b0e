"""LUInstanceQuery: instance rows with their live status from every online node."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ganeti_lv import constants
from ganeti_lv.cmdlib.base import NoHooksLU, register_lu
from ganeti_lv.cmdlib.common import expand_instance, live_domains
from ganeti_lv.cmdlib.instance import compute_instance_status
from ganeti_lv.hypervisor.base import DomainInfo
from ganeti_lv.objects import Cluster, Instance, disk_path
from ganeti_lv.opcodes import OpInstanceQuery

FeedbackFn = Callable[[str], None]


def instance_row(
    cluster: Cluster,
    inst: Instance,
    domains: dict[str, dict[str, DomainInfo]],
    offline: set[str],
    bad: set[str],
    console_log: Callable[[str], str] = lambda _name: "",
) -> dict[str, Any]:
    """The query row of one instance (config plus live state).

    ``domains``: the domains of each node that answered; ``offline``: the
    nodes marked offline; ``bad``: those that did not answer.
    ``console_log(name)``: where the node keeps the console log of an
    instance whose domain does not say (``NodeOps.console_log_path``).
    The row's ``live`` says whether its primary node's live facts are there:
    ``constants.LIVE_OFFLINE`` (the primary is marked offline),
    ``constants.LIVE_NODATA`` (it was not asked or did not answer) or None
    (it answered: ``oper_ram`` and ``oper_vcpus`` are None when the
    instance does not run there).
    """
    running_on = sorted(
        n
        for n, doms in domains.items()
        if inst.name in doms and doms[inst.name].state in constants.DOMSTATES_ACTIVE
    )
    be = cluster.fill_beparams(inst)
    pdom = domains.get(inst.primary_node, {}).get(inst.name)
    # a stopped domain has no memory or vCPUs in use
    active = pdom if pdom is not None and pdom.state in constants.DOMSTATES_ACTIVE else None
    return {
        "name": inst.name,
        "uuid": inst.uuid,
        "pnode": inst.primary_node,
        "snodes": list(inst.secondary_nodes),
        "status": compute_instance_status(
            inst.admin_state, inst.primary_node, running_on, offline, bad
        ),
        "admin_state": inst.admin_state,
        # None: unknown (the primary is offline or could not be asked)
        "oper_state": None
        if inst.primary_node in offline | bad
        else inst.primary_node in running_on,
        "oper_node": running_on[0] if len(running_on) == 1 else None,
        "oper_ram": active.memory if active is not None else None,
        "oper_vcpus": active.vcpus if active is not None else None,
        "live": _primary_live(inst.primary_node, domains, offline),
        "running_on": running_on,
        "memory": be.get("maxmem"),
        "minmem": be.get("minmem"),
        "maxmem": be.get("maxmem"),
        "vcpus": be.get("vcpus"),
        "disk_template": inst.disk_template,
        "disks": len(inst.disks),
        "disk_sizes": [d.size for d in inst.disks],
        "nics": len(inst.nics),
        "nic_macs": [n.mac for n in inst.nics],
        "nic_links": [n.link for n in inst.nics],
        "os": inst.os,
        "tags": list(inst.tags),
        "ctime": inst.ctime,
        "mtime": inst.mtime,
        "beparams": be,
        "hvparams": cluster.fill_hvparams(inst),
        "own_beparams": dict(inst.beparams),
        "own_hvparams": dict(inst.hvparams),
        "console_log": (pdom.console_log if pdom is not None else "")
        or console_log(inst.name)
        or None,
        "disk_details": [
            {
                "size": d.size,
                "mode": d.mode,
                "dev_type": d.dev_type,
                "name": d.name,
                "uuid": d.uuid,
                "path": disk_path(cluster, inst, idx),
            }
            for idx, d in enumerate(inst.disks)
        ],
        "nic_details": [
            {
                "mac": n.mac,
                "ip": n.ip,
                "mode": n.mode,
                "link": n.link,
                # Ganeti's: the link of a bridged NIC
                "bridge": n.link if n.mode == "bridged" else None,
                "vlan": n.vlan,
                "name": n.name,
                "network": n.network,
                "uuid": n.uuid,
            }
            for n in inst.nics
        ],
    }


def _primary_live(
    primary: str, domains: dict[str, dict[str, DomainInfo]], offline: set[str]
) -> str | None:
    """The row's ``live``: why the primary's live facts are missing, None when it answered."""
    if primary in offline:
        return constants.LIVE_OFFLINE
    if primary not in domains:
        return constants.LIVE_NODATA
    return None


@register_lu(OpInstanceQuery)
class LUInstanceQuery(NoHooksLU):
    """Rows (dicts) of instances with their live status; see ``instance_row``."""

    REQ_BGL = False
    QUERY = True

    def ExpandNames(self) -> None:
        """Canonical names; no locks (a snapshot of config and nodes)."""
        self.wanted = [expand_instance(self.cfg, n) for n in self.op.names]
        self.needed_locks = {}

    def Exec(self, feedback_fn: FeedbackFn) -> list[dict[str, Any]]:
        """One row per instance, sorted by name (or in the order asked)."""
        data = self.cfg.snapshot()  # read-only: the rows are built from copies
        offline = {n for n, node in data.nodes.items() if node.offline}
        if self.op.live:
            online = [n for _, n in sorted(data.nodes.items()) if not n.offline]
            domains, unreachable = live_domains(self.rpc, online)
            bad = set(unreachable)
        else:
            domains, bad = {}, set()
        names = self.wanted or sorted(data.instances)
        return [
            instance_row(
                data.cluster, data.instances[n], domains, offline, bad, self.rpc.console_log_path
            )
            for n in names
            if n in data.instances
        ]
