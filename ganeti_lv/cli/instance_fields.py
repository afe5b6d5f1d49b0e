"""The fields of ``gnt-lv instance list -o ...``, named and rendered as gnt-instance's.

Besides ganeti_lv's own short names (``disks``, ``disk_sizes``, ``nic_macs``
...) the list understands Ganeti's query fields that scripts written for
``gnt-instance list`` use: ``be/<param>``, ``hv/<param>``, ``disk.count``,
``disk.sizes``, ``disk.size/N``, ``nic.count``, ``nic.mac/N``, ``nic.ip/N``,
``nic.mode/N``, ``nic.link/N``, ``nic.name/N``, ``nic.network.name/N``,
``nic.names``, ``admin_state_source``, ``oper_ram``, ``hypervisor`` ... and
Ganeti's aliases (``vcpus``, ``ip``, ``sda_size`` ...), each under Ganeti's
title. A field that does not apply (a disk or
NIC index the instance does not have, a parameter it has no value for, among
them Ganeti's KVM parameters that libvirt covers here and its other
hypervisors' parameters) is ``-``, as Ganeti renders it; a parameter neither
knows is an unknown field (exit 14). A live field without the primary
node's answer is Ganeti's ``*`` (``oper_ram``, ``oper_vcpus`` of an
instance whose primary is marked offline) or ``?`` (the primary did not
answer; ``oper_state`` either way); ``status`` says which
(``ERROR_nodeoffline``, ``ERROR_nodedown``).

Sizes (MiB) follow ``--units``: ``h`` (the default for aligned output,
e.g. ``128M``, ``1.5G``), ``m`` (the default with ``--separator``: plain
MiB), ``g`` and ``t``; Ganeti's rule and rounding.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from ganeti_lv.cli import common
from ganeti_lv.constants import (
    ADMINST_UP,
    BEC_DEFAULTS,
    GANETI_KVM_ONLY_HVPARAMS,
    GANETI_ONLY_BEPARAMS,
    GANETI_OTHER_HVPARAMS,
    HVC_DEFAULTS,
    HVC_GLOBALS,
    HYPERVISOR_KVM,
)
from ganeti_lv.errors import ECODE_INVAL, OpPrereqError
from ganeti_lv.units import BE_MEMORY_ALIAS

# a field without a value (an index the instance does not have, a parameter
# not set): rendered "-" like None
UNAVAILABLE = None

Getter = Callable[[dict[str, Any]], Any]

# name -> (header, getter, is a size in MiB)
_SIMPLE: dict[str, tuple[str, Getter, bool]] = {
    "name": ("Instance", lambda r: r["name"], False),
    "uuid": ("UUID", lambda r: r["uuid"], False),
    "pnode": ("Primary_node", lambda r: r["pnode"], False),
    "snodes": ("Secondary_Nodes", lambda r: r["snodes"], False),
    "status": ("Status", lambda r: r["status"], False),
    "admin_state": ("InstanceState", lambda r: r["admin_state"], False),
    "admin_state_source": ("InstanceStateSource", lambda r: "admin", False),
    "oper_state": ("Running", lambda r: r["oper_state"], False),
    "oper_node": ("Oper_Node", lambda r: r["oper_node"], False),
    "running_on": ("Running_On", lambda r: r["running_on"], False),
    # live: "-" when the instance does not run on its primary (_live_mark: without its answer)
    "oper_ram": ("Memory", lambda r: r["oper_ram"], True),
    "oper_vcpus": ("VCPUs", lambda r: r["oper_vcpus"], False),
    "admin_up": ("Autostart", lambda r: r["admin_state"] == ADMINST_UP, False),
    "hypervisor": ("Hypervisor", lambda r: HYPERVISOR_KVM, False),
    "disk_template": ("Disk_template", lambda r: r["disk_template"], False),
    "disks": ("Disks", lambda r: r["disks"], False),
    "disk.count": ("Disks", lambda r: r["disks"], False),
    # MiB whatever --units says, as Ganeti prints them
    "disk_sizes": ("Disk_sizes", lambda r: r["disk_sizes"], False),
    "disk.sizes": ("Disk_sizes", lambda r: r["disk_sizes"], False),
    "nics": ("NICs", lambda r: r["nics"], False),
    "nic.count": ("NICs", lambda r: r["nics"], False),
    "nic_macs": ("NIC_MACs", lambda r: r["nic_macs"], False),
    "nic.macs": ("NIC_MACs", lambda r: r["nic_macs"], False),
    "nic_links": ("NIC_links", lambda r: r["nic_links"], False),
    "nic.links": ("NIC_links", lambda r: r["nic_links"], False),
    "nic.names": ("NIC_Names", lambda r: [n.get("name") or None for n in r["nic_details"]], False),
    # Ganeti prints these lists' items as str() does: None is "None"
    "nic.ips": ("NIC_IPs", lambda r: _nic_strings(r, "ip"), False),
    "nic.modes": ("NIC_modes", lambda r: _nic_strings(r, "mode"), False),
    "nic.bridges": ("NIC_bridges", lambda r: _nic_strings(r, "bridge"), False),
    "disk_usage": ("DiskUsage", lambda r: sum(r["disk_sizes"]), True),
    "os": ("OS", lambda r: r["os"], False),
    "tags": ("Tags", lambda r: r["tags"], False),
    "ctime": ("CTime", lambda r: common.format_time(r["ctime"]), False),
    "mtime": ("MTime", lambda r: common.format_time(r["mtime"]), False),
}

# indexed fields: prefix -> (header prefix, list key, item key, is a size)
_INDEXED: dict[str, tuple[str, str, str, bool]] = {
    "disk.size": ("Disk", "disk_details", "size", True),
    "disk.name": ("DiskName", "disk_details", "name", False),
    "disk.uuid": ("DiskUUID", "disk_details", "uuid", False),
    "nic.mac": ("NicMAC", "nic_details", "mac", False),
    "nic.ip": ("NicIP", "nic_details", "ip", False),
    "nic.mode": ("NicMode", "nic_details", "mode", False),
    "nic.link": ("NicLink", "nic_details", "link", False),
    "nic.name": ("NicName", "nic_details", "name", False),
    "nic.uuid": ("NicUUID", "nic_details", "uuid", False),
    "nic.vlan": ("NicVLAN", "nic_details", "vlan", False),
    "nic.bridge": ("NicBridge", "nic_details", "bridge", False),
    "nic.network.name": ("NicNetworkName", "nic_details", "network", False),
}
# Ganeti's live fields of the primary's answer (luxid's Query/Instance.hs): without
# it "*" (the primary is marked offline) or "?" (it did not answer), and
# oper_state "?" either way (whether the instance runs is not known)
_LIVE = ("oper_ram", "oper_vcpus")
_INDEXED_RE = re.compile(r"^(?P<prefix>[a-z.]+)/(?P<index>\d+)\Z")
_PARAM_RE = re.compile(r"^(?P<kind>be|hv)/(?P<param>[a-z0-9_]+)\Z")
_SIZE_PARAMS = ("maxmem", "minmem")

# other names of fields: Ganeti's (the first NIC's and disks' legacy names,
# vcpus) and ganeti_lv's short ones of the memory parameters; each has its
# field's title
_ALIASES = {
    "vcpus": "be/vcpus",
    "memory": "be/maxmem",
    "maxmem": "be/maxmem",
    "minmem": "be/minmem",
    "ip": "nic.ip/0",
    "mac": "nic.mac/0",
    "bridge": "nic.bridge/0",
    "nic_mode": "nic.mode/0",
    "nic_link": "nic.link/0",
    "sda_size": "disk.size/0",
    "sdb_size": "disk.size/1",
}
FIELDS = (*_SIMPLE, *_ALIASES)

# Ganeti's titles of parameter fields that have one other than their name
_PARAM_TITLES = {
    "be": {
        "auto_balance": "Auto_balance",
        "maxmem": "ConfigMaxMem",
        "minmem": "ConfigMinMem",
        "vcpus": "ConfigVCPUs",
    },
    "hv": {
        "acpi": "ACPI",
        "boot_order": "Boot_order",
        "cdrom_image_path": "CDROM_image_path",
        "cpu_type": "cpu_type",
        "disk_type": "Disk_type",
        "initrd_path": "Initrd_path",
        "kernel_path": "Kernel_path",
        "nic_type": "NIC_type",
        "pae": "PAE",
        "pci_pass": "pci_pass",
        "vnc_bind_address": "VNC_bind_address",
    },
}


# parameters known here or to Ganeti's instances of any hypervisor (those
# print "-"), as Ganeti's fields: be/memory is be/maxmem, the cluster-wide
# hypervisor parameters are no instance fields; others are unknown fields
_PARAMS = {
    "be": {*BEC_DEFAULTS, *GANETI_ONLY_BEPARAMS, BE_MEMORY_ALIAS},
    "hv": {*HVC_DEFAULTS, *GANETI_KVM_ONLY_HVPARAMS, *GANETI_OTHER_HVPARAMS} - set(HVC_GLOBALS),
}


def is_known(field: str) -> bool:
    """Whether ``field`` names an instance field (simple, indexed or a known parameter)."""
    if field in _SIMPLE or field in _ALIASES:
        return True
    param = _PARAM_RE.match(field)
    if param:
        return param.group("param") in _PARAMS[param.group("kind")]
    match = _INDEXED_RE.match(field)
    return bool(match and match.group("prefix") in _INDEXED)


def header(field: str) -> str:
    """The column header of ``field`` (Ganeti's title for Ganeti's fields)."""
    field = _ALIASES.get(field, field)
    if field in _SIMPLE:
        return _SIMPLE[field][0]
    param = _PARAM_RE.match(field)
    if param:
        name = param.group("param")
        name = "maxmem" if param.group("kind") == "be" and name == BE_MEMORY_ALIAS else name
        return _PARAM_TITLES[param.group("kind")].get(name, field)
    match = _INDEXED_RE.match(field)
    if match:
        return f"{_INDEXED[match.group('prefix')][0]}/{match.group('index')}"
    return field


def _nic_strings(row: dict[str, Any], key: str) -> list[str]:
    return [str(nic[key]) for nic in row["nic_details"]]


def _live_mark(row: dict[str, Any], field: str) -> str | None:
    """Ganeti's mark of live ``field`` in ``row`` without the primary's answer, else None."""
    mark = common.live_mark(row)
    if field == "oper_state":
        return "?" if mark else None
    return mark if field in _LIVE else None


def value(row: dict[str, Any], field: str, units: str) -> Any:
    """The value of ``field`` in an instance query row, sizes rendered in ``units``."""
    field = _ALIASES.get(field, field)
    mark = _live_mark(row, field)
    if mark is not None:
        return mark
    if field in _SIMPLE:
        _, getter, is_size = _SIMPLE[field]
        got = getter(row)
        return common.sized(got, units) if is_size else got
    param = _PARAM_RE.match(field)
    if param:
        params = row["beparams" if param.group("kind") == "be" else "hvparams"]
        name = param.group("param")
        if param.group("kind") == "be" and name == BE_MEMORY_ALIAS:
            name = "maxmem"
        if name not in params:
            return UNAVAILABLE
        got = params[name]
        if param.group("kind") == "be" and name in _SIZE_PARAMS:
            return common.sized(got, units)
        return got
    match = _INDEXED_RE.match(field)
    if not match:
        raise OpPrereqError(f"Unknown output field '{field}'", ECODE_INVAL)
    _, list_key, item_key, is_size = _INDEXED[match.group("prefix")]
    items = row[list_key]
    index = int(match.group("index"))
    if index >= len(items):
        return UNAVAILABLE
    got = items[index].get(item_key)
    if got == "":
        got = None
    return common.sized(got, units) if is_size else got
