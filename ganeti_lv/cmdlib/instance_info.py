"""LUInstanceQueryData: detailed data of instances, in Ganeti's fields (OP_INSTANCE_QUERY_DATA).

What ``GET /2/instances/[name]/info`` returns as its job's result: one
entry per instance with its configured and its actual state, nodes, disks,
NICs and parameters (the instance's own and the filled ones).
"""

from __future__ import annotations

from typing import Any

from ganeti_lv import constants
from ganeti_lv.cmdlib.base import FeedbackFn, NoHooksLU, register_lu
from ganeti_lv.cmdlib.common import expand_instance
from ganeti_lv.node.transport import node_call
from ganeti_lv.objects import ConfigData, Instance, disk_path
from ganeti_lv.opcodes import OpInstanceQueryData


@register_lu(OpInstanceQueryData)
class LUInstanceQueryData(NoHooksLU):
    """{name: data} for the asked instances (all when none are named); no locks."""

    REQ_BGL = False

    def ExpandNames(self) -> None:
        """Full names (ECODE_NOENT for an unknown one); a snapshot needs no locks."""
        self.wanted = [expand_instance(self.cfg, name) for name in self.op.instances]
        self.needed_locks = {}

    def Exec(self, feedback_fn: FeedbackFn) -> dict[str, dict[str, Any]]:
        """The data of each instance, asking its primary node unless ``static``."""
        data = self.cfg.snapshot()  # read-only: the result is built from copies
        names = self.wanted or sorted(data.instances)
        return {
            name: self._data(data, data.instances[name]) for name in names if name in data.instances
        }

    def _run_state(self, data: ConfigData, inst: Instance) -> str | None:
        if self.op.static:
            return None
        pnode = data.nodes.get(inst.primary_node)
        if pnode is None or pnode.offline:
            self.LogWarning(
                f"Primary node {inst.primary_node} is marked offline, returning static"
                f" information only for instance {inst.name}"
            )
            return None
        domains = node_call(self.rpc.instance_list, pnode).Raise(
            f"Error checking node {pnode.name}"
        )
        dom = (domains or {}).get(inst.name)
        return "up" if dom is not None and dom.state in constants.DOMSTATES_ACTIVE else "down"

    def _data(self, data: ConfigData, inst: Instance) -> dict[str, Any]:
        cluster = data.cluster
        return {
            "name": inst.name,
            "uuid": inst.uuid,
            "config_state": inst.admin_state,
            "run_state": self._run_state(data, inst),
            "pnode": inst.primary_node,
            "pnode_group_uuid": None,
            "pnode_group_name": None,
            "snodes": list(inst.secondary_nodes),
            "snodes_group_uuids": [],
            "snodes_group_names": [],
            "os": inst.os,
            # Ganeti's NIC tuple; its last item, the network's details, is None
            # without a network (the only NICs here)
            "nics": [
                [
                    n.name or None,
                    n.uuid,
                    n.ip,
                    n.mac,
                    n.mode,
                    n.link,
                    n.vlan,
                    n.network or None,
                    None,
                ]
                for n in inst.nics
            ],
            "disk_template": inst.disk_template,
            "disks": [
                {
                    "iv_name": f"disk/{idx}",
                    "dev_type": disk.dev_type,
                    "logical_id": [disk.dev_type, disk_path(cluster, inst, idx)],
                    "drbd_info": None,
                    "pstatus": None,
                    "sstatus": None,
                    "children": [],
                    "mode": disk.mode,
                    "size": disk.size,
                    "spindles": None,
                    "name": disk.name or None,
                    "uuid": disk.uuid,
                }
                for idx, disk in enumerate(inst.disks)
            ],
            "hypervisor": inst.hypervisor or constants.HYPERVISOR_KVM,
            "network_port": None,
            "hv_instance": dict(inst.hvparams),
            "hv_actual": cluster.fill_hvparams(inst),
            "be_instance": dict(inst.beparams),
            "be_actual": cluster.fill_beparams(inst),
            "os_instance": {},
            "os_actual": {},
            "serial_no": None,
            "ctime": inst.ctime,
            "mtime": inst.mtime,
        }
