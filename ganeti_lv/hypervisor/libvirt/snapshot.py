"""Disk-only external snapshots and active block commit, through Guest.

An export snapshot is an
external, disk-only snapshot without libvirt metadata (``NO_METADATA``): the
base image is frozen and the guest writes into a qcow2 overlay beside it.
Afterwards ``active_commit`` merges the overlay back: blockCommit with the
ACTIVE flag, then a pivot only once the job is ready (``ready='yes'`` on the
disk's mirror element; a job with cur == end is not ready yet).

With a guest agent channel the snapshot is taken with QUIESCE (libvirt
freezes and thaws the guest's filesystems around it); if quiescing fails the
snapshot is taken without.
"""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Sequence
from xml.sax.saxutils import quoteattr

from ganeti_lv.errors import HypervisorError
from ganeti_lv.hypervisor.libvirt.guest import Guest

GUEST_AGENT_CHANNEL = "org.qemu.guest_agent.0"
COMMIT_TIMEOUT = 600.0


def snapshot_xml(disks: Sequence[tuple[str, str]], name: str) -> str:
    """domainsnapshot XML: external snapshots of (target, overlay path) disks."""
    items = "".join(
        f"<disk name={quoteattr(target)} snapshot='external'>"
        f"<driver type='qcow2'/><source file={quoteattr(overlay)}/></disk>"
        for target, overlay in disks
    )
    return f"<domainsnapshot><name>{name}</name><disks>{items}</disks></domainsnapshot>"


def has_guest_agent(domain_xml: str) -> bool:
    """True when the domain has a QEMU guest agent channel."""
    root = ET.fromstring(domain_xml)
    return any(
        t.get("name") == GUEST_AGENT_CHANNEL for t in root.findall("./devices/channel/target")
    )


def mirror_ready(domain_xml: str, target: str) -> bool:
    """True when the block job mirror of disk ``target`` is ready for a pivot."""
    root = ET.fromstring(domain_xml)
    for disk in root.findall("./devices/disk"):
        tgt = disk.find("target")
        if tgt is None or tgt.get("dev") != target:
            continue
        mirror = disk.find("mirror")
        return mirror is not None and mirror.get("ready") == "yes"
    return False


def create_snapshot(guest: Guest, disks: Sequence[tuple[str, str]], freeze: bool) -> bool:
    """Take the external disk-only snapshot; return True if filesystems were frozen."""
    xml = snapshot_xml(disks, f"export-{int(time.time())}")
    if freeze and guest.is_active() and has_guest_agent(guest.xml()):
        try:
            guest.snapshot_disks(xml, quiesce=True)
            return True
        except HypervisorError:  # not a lost connection (NodeUnreachable)
            pass  # agent not answering: a crash-consistent snapshot instead
    guest.snapshot_disks(xml, quiesce=False)
    return False


def active_commit(
    guest: Guest,
    target: str,
    *,
    timeout: float = COMMIT_TIMEOUT,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    interval: float = 0.05,
) -> None:
    """Merge the active overlay of disk ``target`` into its backing file and pivot.

    The job is polled at growing intervals, from ``FIRST_POLL`` up to
    ``interval``: the overlay of an export holds only what the guest wrote
    during the copy, so the job is mostly ready within a few milliseconds,
    and the export's job waits for the merge.
    """
    disk = guest.block_device(target)
    if not disk.job_active():
        disk.commit_active()
    deadline = clock() + timeout
    delays = _poll_delays(interval)
    while not mirror_ready(guest.xml(), target):
        if not disk.job_active():
            raise HypervisorError(f"Block commit of {guest.name} {target} ended without pivot")
        if clock() > deadline:
            raise HypervisorError(f"Block commit of {guest.name} {target} not ready in time")
        sleep(next(delays))
    disk.pivot()
    delays = _poll_delays(interval)
    while disk.job_active():
        if clock() > deadline:
            raise HypervisorError(f"Pivot of {guest.name} {target} did not finish")
        sleep(next(delays))


# The first wait between two polls of a block job (s); each next one doubles.
FIRST_POLL = 0.005


def _poll_delays(longest: float) -> Iterator[float]:
    """FIRST_POLL, twice that, ... up to ``longest``, then ``longest`` forever."""
    delay = min(FIRST_POLL, longest)
    while True:
        yield delay
        delay = min(delay * 2, longest)
