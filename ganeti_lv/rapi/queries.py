"""Nodes, instances and the cluster in Ganeti's RAPI fields.

Reads are not jobs (as in Ganeti, where queries go to the query daemon, not
to the job queue): ``ganeti_lv.mcpu.run_query`` runs a query opcode's LU,
which takes no lock and runs no hook, on the daemon's node connections,
without recording it in the job log. ``gnt-lv instance list`` runs the same
query the same way, so it and ``GET /2/instances`` compute an instance's
status alike. The rows are then given Ganeti's field names (``rlib2``'s
``I_FIELDS`` and ``N_FIELDS``); a field ganeti_lv has no value for
(storage, spindles, serial numbers) is null. There are no node groups:
every node is in Ganeti's one group, ``default``, and the instance policy
is one every instance meets.
"""

from __future__ import annotations

import platform
import uuid
from collections.abc import Sequence
from typing import Any

from ganeti_lv import constants
from ganeti_lv.context import Context
from ganeti_lv.errors import ECODE_ENVIRON, ECODE_NOENT, ECODE_STATE, OpPrereqError
from ganeti_lv.mcpu import run_query
from ganeti_lv.objects import Cluster, ConfigData, Instance, Node
from ganeti_lv.opcodes import OpCode, OpInstanceConsole, OpInstanceQuery, OpNodeQuery, OpTagsGet
from ganeti_lv.rapi.httperrors import not_found, service_unavailable

# Ganeti's export format version and OS API version (what ganeti_lv's exports are read as)
EXPORT_VERSION = 0
OS_API_VERSION = 20


def one(ctx: Context, op: OpCode) -> Any:
    """The one row of a query for one name; 404 when the name is unknown."""
    try:
        rows = run_query(ctx, op)
    except OpPrereqError as err:
        if err.ecode == ECODE_NOENT:
            raise not_found(str(err)) from err
        raise
    if not rows:
        raise not_found()
    return rows[0]


# ------------------------------------------------------------------ instances

I_FIELDS = (
    "name", "admin_state", "os", "pnode", "snodes", "disk_template",
    "nic.ips", "nic.macs", "nic.modes", "nic.uuids", "nic.names", "nic.links",
    "nic.networks", "nic.networks.names", "nic.bridges", "network_port",
    "disk.sizes", "disk.spindles", "disk_usage", "disk.uuids", "disk.names",
    "beparams", "hvparams", "oper_state", "oper_ram", "oper_vcpus", "status",
    "custom_hvparams", "custom_beparams", "custom_nicparams",
    "ctime", "mtime", "uuid", "serial_no", "tags",
)  # fmt: skip


def instance_fields(row: dict[str, Any], inst: Instance) -> dict[str, Any]:
    """An instance query row and its configuration as Ganeti's instance fields."""
    beparams = {**constants.GANETI_ONLY_BEPARAMS, **row["beparams"]}
    beparams["memory"] = beparams.get("maxmem")  # Ganeti still adds it for old clients
    nics, disks = inst.nics, inst.disks
    return {
        "name": inst.name,
        "admin_state": inst.admin_state,
        "os": inst.os,
        "pnode": inst.primary_node,
        "snodes": list(inst.secondary_nodes),
        "disk_template": inst.disk_template,
        "nic.ips": [n.ip for n in nics],
        "nic.macs": [n.mac for n in nics],
        "nic.modes": [n.mode for n in nics],
        "nic.uuids": [n.uuid for n in nics],
        "nic.names": [n.name or None for n in nics],
        "nic.links": [n.link for n in nics],
        "nic.networks": [n.network or None for n in nics],
        "nic.networks.names": [n.network or None for n in nics],
        "nic.bridges": [n["bridge"] for n in row["nic_details"]],
        "network_port": None,
        "disk.sizes": [d.size for d in disks],
        "disk.spindles": [None for _ in disks],
        "disk_usage": sum(d.size for d in disks),
        "disk.uuids": [d.uuid for d in disks],
        "disk.names": [d.name or None for d in disks],
        "beparams": beparams,
        "hvparams": row["hvparams"],
        "oper_state": row["oper_state"],
        "oper_ram": row.get("oper_ram"),
        "oper_vcpus": row.get("oper_vcpus"),
        "status": row["status"],
        "custom_hvparams": dict(inst.hvparams),
        "custom_beparams": dict(inst.beparams),
        "custom_nicparams": [{"mode": n.mode, "link": n.link, "vlan": n.vlan} for n in nics],
        "ctime": inst.ctime,
        "mtime": inst.mtime,
        "uuid": inst.uuid,
        "serial_no": None,
        "tags": list(inst.tags),
    }


def instance_names(ctx: Context) -> list[str]:
    """Every instance's name."""
    return sorted(ctx.config.snapshot().instances)


def instances(ctx: Context, names: Sequence[str] = ()) -> list[dict[str, Any]]:
    """The instances (all when ``names`` is empty) in Ganeti's fields, with their live state."""
    rows = run_query(ctx, OpInstanceQuery(names=list(names), live=True))
    data = ctx.config.snapshot()
    return [
        instance_fields(row, data.instances[row["name"]])
        for row in rows
        if row["name"] in data.instances
    ]


def instance(ctx: Context, name: str) -> dict[str, Any]:
    """One instance in Ganeti's fields; 404 when unknown."""
    row = one(ctx, OpInstanceQuery(names=[name], live=True))
    inst = ctx.config.snapshot().instances.get(row["name"])
    if inst is None:
        raise not_found()
    return instance_fields(row, inst)


def instance_console(ctx: Context, name: str) -> dict[str, Any]:
    """How to reach the instance's serial console; 404 when unknown, 503 when it is
    not known to run (stopped, or its primary offline or silent), as Ganeti's."""
    try:
        console: dict[str, Any] = run_query(ctx, OpInstanceConsole(instance_name=name))
    except OpPrereqError as err:
        if err.ecode == ECODE_NOENT:
            raise not_found(str(err)) from err
        if err.ecode in (ECODE_STATE, ECODE_ENVIRON):
            raise service_unavailable(str(err)) from err
        raise
    return console


def tags(ctx: Context, kind: str, name: str | None) -> list[str]:
    """The tags of the cluster, a node or an instance, sorted; 404 for an unknown one."""
    try:
        return list(run_query(ctx, OpTagsGet(kind=kind, name=name)))
    except OpPrereqError as err:
        if err.ecode == ECODE_NOENT:
            raise not_found(str(err)) from err
        raise


# ------------------------------------------------------------------ nodes

N_FIELDS = (
    "name", "offline", "master_candidate", "drained", "dtotal", "dfree", "sptotal", "spfree",
    "mtotal", "mnode", "mfree", "pinst_cnt", "sinst_cnt", "ctotal", "cnos", "cnodes",
    "csockets", "pip", "sip", "role", "pinst_list", "sinst_list", "master_capable",
    "vm_capable", "ndparams", "group.uuid", "ctime", "mtime", "uuid", "serial_no", "tags",
)  # fmt: skip


def node_fields(row: dict[str, Any], node: Node, data: ConfigData) -> dict[str, Any]:
    """A node query row (which has most of them by Ganeti's names) and its
    configuration as Ganeti's node fields."""
    not_in_row: dict[str, Any] = {
        "dtotal": None,
        "dfree": None,
        "sptotal": None,
        "spfree": None,
        "cnos": 0,  # no CPUs are set aside for the node itself
        "cnodes": None,
        "csockets": None,
        "ndparams": node_parameters(node),
        "group.uuid": group_uuid(data.cluster),
        "serial_no": None,
    }
    return {name: not_in_row[name] if name in not_in_row else row[name] for name in N_FIELDS}


# Ganeti's names of the roles (``/2/nodes/[name]/role``)
ROLE_NAMES = {
    constants.NR_MASTER: "master",
    constants.NR_MCANDIDATE: "master-candidate",
    constants.NR_DRAINED: "drained",
    constants.NR_OFFLINE: "offline",
    constants.NR_REGULAR: "regular",
}


def node_role_name(ctx: Context, name: str) -> str:
    """The role of node ``name`` by Ganeti's name of it; 404 when unknown."""
    row = one(ctx, OpNodeQuery(names=[name], live=False))
    return ROLE_NAMES[row["role"]]


def node_names(ctx: Context) -> list[str]:
    """Every node's name."""
    return sorted(ctx.config.snapshot().nodes)


def nodes(ctx: Context) -> list[dict[str, Any]]:
    """Every node in Ganeti's fields, with its live memory where it answers."""
    rows = run_query(ctx, OpNodeQuery(live=True))
    data = ctx.config.snapshot()
    return [
        node_fields(row, data.nodes[row["name"]], data) for row in rows if row["name"] in data.nodes
    ]


def node(ctx: Context, name: str) -> dict[str, Any]:
    """One node in Ganeti's fields, with Ganeti's alias ``secondary_ip`` of ``sip``
    (only here, not in the bulk list); 404 when unknown."""
    row = one(ctx, OpNodeQuery(names=[name], live=True))
    data = ctx.config.snapshot()
    found = data.nodes.get(row["name"])
    if found is None:
        raise not_found()
    fields = node_fields(row, found, data)
    fields["secondary_ip"] = fields["sip"]
    return fields


# ------------------------------------------------------------------ the node group

# ganeti_lv has no node groups: every node is in Ganeti's one default group
DEFAULT_GROUP = "default"


def group_uuid(cluster: Cluster) -> str:
    """The default group's UUID: the same for a cluster every time."""
    return str(uuid.uuid5(uuid.UUID(cluster.uuid), DEFAULT_GROUP))


def node_parameters(node: Node) -> dict[str, Any]:
    """Ganeti's node parameters that tools read (no exclusive storage, one spindle)."""
    return {"exclusive_storage": False, "spindle_count": 1, "ssh_port": node.ssh_port}


def instance_policy(cluster: Cluster) -> dict[str, Any]:
    """Ganeti's instance policy: ganeti_lv enforces none, so one every instance meets.

    Its limits are far above any instance's; the standard spec is the
    cluster's default instance; CPUs are not limited by the node's
    (vcpu-ratio).
    """
    beparams = {**constants.BEC_DEFAULTS, **cluster.beparams}
    low = {
        "memory-size": 0, "cpu-count": 0, "disk-count": 0,
        "disk-size": 0, "nic-count": 0, "spindle-use": 0,
    }  # fmt: skip
    high = {
        "memory-size": 1 << 30, "cpu-count": 1 << 10, "disk-count": 1 << 10,
        "disk-size": 1 << 40, "nic-count": 1 << 10, "spindle-use": 1 << 10,
    }  # fmt: skip
    std = {
        "memory-size": int(beparams["maxmem"]), "cpu-count": int(beparams["vcpus"]),
        "disk-count": 1, "disk-size": 1024, "nic-count": 1, "spindle-use": 1,
    }  # fmt: skip
    return {
        "minmax": [{"min": low, "max": high}],
        "std": std,
        "disk-templates": list(constants.DISK_TEMPLATES),
        "vcpu-ratio": float(1 << 10),
        "spindle-ratio": float(1 << 10),
    }


def group_fields(data: ConfigData) -> dict[str, Any]:
    """The default group in Ganeti's group fields."""
    cluster = data.cluster
    return {
        "name": DEFAULT_GROUP,
        "uuid": group_uuid(cluster),
        "alloc_policy": "preferred",
        "node_cnt": len(data.nodes),
        "node_list": sorted(data.nodes),
        "pinst_cnt": len(data.instances),
        "pinst_list": sorted(data.instances),
        "ipolicy": instance_policy(cluster),
        "custom_ipolicy": {},
        "ndparams": {},
        "custom_ndparams": {},
        "diskparams": {},
        "custom_diskparams": {},
        "networks": [],
        "ctime": cluster.ctime,
        "mtime": cluster.mtime,
        "serial_no": None,
        "tags": [],
    }


def group_names(ctx: Context) -> list[str]:
    """Every group's name: the default one."""
    return [DEFAULT_GROUP]


def groups(ctx: Context) -> list[dict[str, Any]]:
    """Every group in Ganeti's fields."""
    return [group_fields(ctx.config.snapshot())]


def group(ctx: Context, name: str) -> dict[str, Any]:
    """One group (by name or UUID) in Ganeti's fields; 404 when unknown."""
    fields = group_fields(ctx.config.snapshot())
    if name not in (fields["name"], fields["uuid"]):
        raise not_found(f"Node group '{name}' not found")
    return fields


# ------------------------------------------------------------------ the cluster


def cluster_info(ctx: Context) -> dict[str, Any]:
    """The cluster as Ganeti's ``/2/info`` shows it (with its aliases ``vg_name``, ...)."""
    data = ctx.config.snapshot()
    cluster = data.cluster
    info: dict[str, Any] = {
        "software_version": constants.RELEASE_VERSION,
        "protocol_version": None,
        "config_version": data.version,
        "os_api_version": OS_API_VERSION,
        "export_version": EXPORT_VERSION,
        "vcs_version": None,
        "architecture": [platform.architecture()[0], platform.machine()],
        "name": cluster.name,
        "master": cluster.master_node,
        "default_hypervisor": constants.HYPERVISOR_KVM,
        "enabled_hypervisors": [constants.HYPERVISOR_KVM],
        "hvparams": {constants.HYPERVISOR_KVM: {**constants.HVC_DEFAULTS, **cluster.hvparams}},
        "os_hvp": {},
        "beparams": {"default": {**constants.BEC_DEFAULTS, **cluster.beparams}},
        "osparams": {},
        "nicparams": {"default": {"mode": "bridged", "link": cluster.default_bridge}},
        "ndparams": {},
        "diskparams": {},
        "ipolicy": instance_policy(data.cluster),
        "candidate_pool_size": len(data.nodes),
        "mac_prefix": None,
        "master_netdev": None,
        "volume_group_name": None,
        "drbd_usermode_helper": None,
        "file_storage_dir": cluster.file_storage_dir,
        "shared_file_storage_dir": cluster.shared_file_storage_dir,
        "enabled_disk_templates": list(constants.DISK_TEMPLATES),
        "compression_tools": list(cluster.compression_tools),
        "default_iallocator": cluster.default_iallocator,
        "ctime": cluster.ctime,
        "mtime": cluster.mtime,
        "uuid": cluster.uuid,
        "tags": list(cluster.tags),
        # Ganeti's settings that have no counterpart here: present, empty or off,
        # so that a client reading them finds them
        "blacklisted_os": [],
        "hidden_os": [],
        "default_iallocator_params": {},
        "enabled_user_shutdown": False,
        "install_image": "",
        "instance_communication_network": "",
        "maintain_node_health": False,
        "master_netmask": None,
        "max_running_jobs": None,
        "max_tracked_jobs": None,
        "prealloc_wipe_disks": False,
        "primary_ip_version": None,
        "reserved_lvs": [],
        "uid_pool": [],
        "use_external_mip_script": False,
        "gluster_storage_dir": "",
        "zeroing_image": "",
        "enabled_data_collectors": {},
        "data_collector_interval": {},
        "modify_ssh_setup": False,
        "ssh_key_type": None,
        "ssh_key_bits": None,
    }
    info["vg_name"] = info["volume_group_name"]
    info["drbd_helper"] = info["drbd_usermode_helper"]
    return info
