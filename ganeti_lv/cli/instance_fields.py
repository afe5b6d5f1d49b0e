"""The fields of ``gnt-lv instance list -o ...``, named and rendered as gnt-instance's.

Besides ganeti_lv's own short names (``disks``, ``disk_sizes``, ``nic_macs``
...) the list understands Ganeti's query fields that scripts written for
``gnt-instance list`` use: ``be/<param>``, ``hv/<param>``, ``disk.count``,
``disk.sizes``, ``disk.size/N``, ``nic.count``, ``nic.mac/N``, ``nic.ip/N``,
``nic.mode/N``, ``nic.link/N``, ``nic.name/N``, ``nic.network.name/N``,
``nic.names``, ``admin_state_source``. A field that does not apply (a disk or
NIC index the instance does not have, a parameter it has no value for, among
them Ganeti's KVM parameters that libvirt covers here and its other
hypervisors' parameters) is ``-``, as Ganeti renders it; a parameter neither
knows is an unknown field (exit 14).

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
    BEC_DEFAULTS,
    GANETI_KVM_ONLY_HVPARAMS,
    GANETI_ONLY_BEPARAMS,
    GANETI_OTHER_HVPARAMS,
    HVC_DEFAULTS,
    HVC_GLOBALS,
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
    "memory": ("Memory", lambda r: r["memory"], True),
    "minmem": ("MinMem", lambda r: r["minmem"], True),
    "maxmem": ("MaxMem", lambda r: r["maxmem"], True),
    "vcpus": ("VCPUs", lambda r: r["vcpus"], False),
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
    "os": ("OS", lambda r: r["os"], False),
    "tags": ("Tags", lambda r: r["tags"], False),
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
    "nic.network.name": ("NicNetworkName", "nic_details", "network", False),
}
_INDEXED_RE = re.compile(r"^(?P<prefix>[a-z.]+)/(?P<index>\d+)$")
_PARAM_RE = re.compile(r"^(?P<kind>be|hv)/(?P<param>[a-z0-9_]+)$")
_SIZE_PARAMS = ("maxmem", "minmem")
FIELDS = tuple(_SIMPLE)


# parameters known here or to Ganeti's instances of any hypervisor (those
# print "-"), as Ganeti's fields: be/memory is be/maxmem, the cluster-wide
# hypervisor parameters are no instance fields; others are unknown fields
_PARAMS = {
    "be": {*BEC_DEFAULTS, *GANETI_ONLY_BEPARAMS, BE_MEMORY_ALIAS},
    "hv": {*HVC_DEFAULTS, *GANETI_KVM_ONLY_HVPARAMS, *GANETI_OTHER_HVPARAMS} - set(HVC_GLOBALS),
}


def is_known(field: str) -> bool:
    """Whether ``field`` names an instance field (simple, indexed or a known parameter)."""
    if field in _SIMPLE:
        return True
    param = _PARAM_RE.match(field)
    if param:
        return param.group("param") in _PARAMS[param.group("kind")]
    match = _INDEXED_RE.match(field)
    return bool(match and match.group("prefix") in _INDEXED)


def header(field: str) -> str:
    """The column header of ``field``."""
    if field in _SIMPLE:
        return _SIMPLE[field][0]
    match = _INDEXED_RE.match(field)
    if match:
        return f"{_INDEXED[match.group('prefix')][0]}/{match.group('index')}"
    return field


def value(row: dict[str, Any], field: str, units: str) -> Any:
    """The value of ``field`` in an instance query row, sizes rendered in ``units``."""
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
