"""The NICs of a new instance: their specs checked, their MAC addresses taken.

Shared by instance creation and the import of an export: a NIC is bridged,
on the bridge itself (``check_nic_kind``), and its MAC address is unique in
the cluster, lower-cased, generated with the 52:54:00 prefix when asked for
(``take_mac``).
"""

from __future__ import annotations

import contextlib
import ipaddress
import random
import re
from collections.abc import Iterator
from typing import Any

from ganeti_lv import constants
from ganeti_lv.cmdlib.base import LogicalUnit
from ganeti_lv.errors import ECODE_INVAL, ECODE_NOENT, ECODE_NORES, OpPrereqError
from ganeti_lv.objects import ConfigData
from ganeti_lv.reservations import MAC_LEDGER, MACS, Reservations

MAC_PREFIX = "52:54:00"
_MAC_RE = re.compile(r"^([0-9a-f]{2}:){5}[0-9a-f]{2}\Z")


# a NIC's MAC address given as one of these is generated
MAC_GENERATE = ("", "auto", "generate")


def generate_mac(used: set[str], rng: random.Random | None = None) -> str:
    """A MAC with the 52:54:00 prefix not in ``used`` (ECODE_NORES if none is free)."""
    rng = rng or random.SystemRandom()
    for _ in range(1000):
        mac = MAC_PREFIX + "".join(f":{rng.randrange(256):02x}" for _ in range(3))
        if mac not in used:
            return mac
    raise OpPrereqError("Cannot generate a unique MAC address", ECODE_NORES)


def used_macs(data: ConfigData) -> set[str]:
    """Every MAC address of every instance in the configuration."""
    return {nic.mac.lower() for inst in data.instances.values() for nic in inst.nics}


@contextlib.contextmanager
def choosing_macs(lu: LogicalUnit, data: ConfigData) -> Iterator[set[str]]:
    """The MAC addresses taken, for ``take_mac``: the configuration's and those the
    creations and imports of other jobs chose (``reservations.MACS``), under the
    lock of their ledger; the addresses added to the set meanwhile stay reserved
    for ``lu``'s job until it ends (its instance is recorded by then, or never).
    Reservations of the job's own instance (a check made again) do not count."""
    instance = lu.op.instance_name
    with Reservations(lu.ctx.data_dir, MACS).node(MAC_LEDGER) as ledger:
        others = {r.directory for r in ledger.others() if r.instance != instance}
        used = used_macs(data) | others
        before = set(used)
        yield used
        for mac in sorted(used - before):
            lu.proc.hold_until_opcode_end(ledger.reserve(mac, 0, instance))


def take_mac(mac: str | None, used: set[str]) -> str | None:
    """The MAC address a new NIC gets for ``mac``, added to ``used``; None if it is taken.

    Lower-cased; one of ``MAC_GENERATE`` gets a generated address.
    """
    wanted = str(mac or "").lower()
    if wanted in MAC_GENERATE:
        wanted = generate_mac(used)
    elif wanted in used:
        return None
    used.add(wanted)
    return wanted


def check_unicast_mac(mac: str, what: str) -> None:
    """ECODE_INVAL for a multicast address (the group bit set): libvirt refuses it when
    the domain is defined, so the instance could never start. ``what`` ends the message;
    anything but an address (one to generate) passes."""
    if _MAC_RE.match(mac.lower()) and int(mac[:2], 16) & 1:
        raise OpPrereqError(f"Invalid MAC address '{mac}' {what}: a multicast address", ECODE_INVAL)


def check_nics(op_nics: list[dict[str, Any]]) -> None:
    for idx, spec in enumerate(op_nics):
        unknown = set(spec) - {"link", "mac", "ip", "mode", "name", "vlan"}
        if unknown:
            raise OpPrereqError(
                f"Unknown NIC parameter(s) {', '.join(sorted(unknown))} for NIC {idx}",
                ECODE_INVAL,
            )
        link = spec.get("link")
        if link and not (isinstance(link, str) and constants.BRIDGE_NAME_RE.match(link)):
            raise OpPrereqError(
                f"Invalid link {link!r} for NIC {idx}: a bridge's name (at most 15 letters,"
                " digits or '_.:-')",
                ECODE_INVAL,
            )
        mac = spec.get("mac")
        if mac not in (None, *MAC_GENERATE) and not _MAC_RE.match(str(mac).lower()):
            raise OpPrereqError(f"Invalid MAC address '{mac}' for NIC {idx}", ECODE_INVAL)
        if mac not in (None, *MAC_GENERATE):
            check_unicast_mac(str(mac), f"for NIC {idx}")
        check_nic_kind(
            f"NIC {idx}", str(spec.get("mode") or "bridged"), str(spec.get("vlan") or "")
        )
        ip = nic_ip(spec)
        if ip is not None:
            try:
                ipaddress.ip_address(ip)
            except ValueError:
                raise OpPrereqError(f"Invalid IP address '{ip}'", ECODE_INVAL) from None


def check_nic_kind(what: str, mode: str, vlan: str, network: str = "", way_on: str = "") -> None:
    """Refuse ``what`` (a NIC) unless it can be given to a guest here as it is.

    Only bridged NICs, on the bridge itself: a VLAN would be dropped
    silently (libvirt tags only on Open vSwitch), which puts the guest on
    the bridge's untagged traffic (ECODE_INVAL, as another mode), and
    Ganeti's networks do not exist here (ECODE_NOENT, as Ganeti's unknown
    network). ``way_on`` ends the message.
    """
    if mode != "bridged":
        problem, ecode = f"unsupported NIC mode '{mode}' (only 'bridged')", ECODE_INVAL
    elif vlan:
        problem = (
            f"VLAN '{vlan}' is not supported (the guest would be on the bridge's untagged VLAN)"
        )
        ecode = ECODE_INVAL
    elif network:
        problem = f"it is on the network '{network}', and this cluster has no networks"
        ecode = ECODE_NOENT
    else:
        return
    raise OpPrereqError(f"{what}: {problem}{way_on}", ecode)


def nic_ip(spec: dict[str, Any]) -> str | None:
    """A NIC spec's IP address; none given (or Ganeti's "none"): None."""
    ip = str(spec.get("ip") or "")
    return None if ip.lower() in ("", "none") else ip
