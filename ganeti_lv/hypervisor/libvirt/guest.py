"""One libvirt domain: the only place that handles virDomain objects.

Every call maps libvirt errors through ``Host.guarded`` (so a broken
connection is dropped and reported as NodeUnreachable, a vanished domain as
InstanceNotFound). Other modules of this package (migration, snapshots) add
operations here or use ``Guest.domain`` for calls that have no wrapper yet.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

import libvirt

from ganeti_lv import constants
from ganeti_lv.errors import InstanceNotFound
from ganeti_lv.hypervisor.base import DomainInfo
from ganeti_lv.hypervisor.libvirt import domxml

if TYPE_CHECKING:
    from ganeti_lv.hypervisor.libvirt.host import Host

_STATE_MAP = {
    libvirt.VIR_DOMAIN_NOSTATE: constants.DOMSTATE_OTHER,
    libvirt.VIR_DOMAIN_RUNNING: constants.DOMSTATE_RUNNING,
    libvirt.VIR_DOMAIN_BLOCKED: constants.DOMSTATE_RUNNING,
    # "being shut down": the guest still runs until it powers off
    libvirt.VIR_DOMAIN_SHUTDOWN: constants.DOMSTATE_RUNNING,
    libvirt.VIR_DOMAIN_PAUSED: constants.DOMSTATE_PAUSED,
    libvirt.VIR_DOMAIN_PMSUSPENDED: constants.DOMSTATE_PAUSED,
    libvirt.VIR_DOMAIN_SHUTOFF: constants.DOMSTATE_SHUTOFF,
    libvirt.VIR_DOMAIN_CRASHED: constants.DOMSTATE_CRASHED,
}

_UNDEFINE_FLAGS = (
    libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
    | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
    | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
    | libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA
)


def map_state(vir_state: int) -> str:
    """constants.DOMSTATE_* for a libvirt domain state number."""
    return _STATE_MAP.get(vir_state, constants.DOMSTATE_OTHER)


class Guest:
    """A domain on ``host``."""

    def __init__(self, host: Host, domain: libvirt.virDomain) -> None:
        self.host = host
        self.domain = domain
        self.name: str = domain.name()

    def __repr__(self) -> str:
        return f"Guest({self.name!r} on {self.host.node!r})"

    def _do(self, what: str, fn: Any, *args: Any) -> Any:
        return self.host.guarded(f"{what} {self.name}", lambda: fn(*args))

    # -- state ---------------------------------------------------------------
    def state(self) -> str:
        """The run state as constants.DOMSTATE_*."""
        vir_state, _reason = self._do("Cannot read state of", self.domain.state)
        return map_state(vir_state)

    def is_active(self) -> bool:
        """True while the domain runs (or is paused)."""
        return bool(self._do("Cannot read state of", self.domain.isActive))

    def is_persistent(self) -> bool:
        """True when the domain is defined (survives a stop)."""
        return bool(self._do("Cannot read state of", self.domain.isPersistent))

    def xml(self, inactive: bool = False) -> str:
        """The live XML, or the persistent definition with ``inactive``."""
        flags = libvirt.VIR_DOMAIN_XML_INACTIVE if inactive else 0
        return str(self._do("Cannot read XML of", self.domain.XMLDesc, flags))

    def disks(self) -> list[domxml.DiskState]:
        """The disks of the live XML (with their backing chains)."""
        return domxml.parse_domain_disks(self.xml())

    def info(self) -> DomainInfo:
        """A DomainInfo snapshot of the domain."""
        vir_state, _max_kib, cur_kib, vcpus, _cpu_time = self._do(
            "Cannot read info of", self.domain.info
        )
        xml = self.xml()
        disks = domxml.parse_domain_disks(xml)
        return DomainInfo(
            name=self.name,
            state=map_state(vir_state),
            memory=int(cur_kib) // 1024,
            vcpus=int(vcpus),
            persistent=self.is_persistent(),
            disk_paths=[d.base for d in disks],
            overlays=[d.source for d in disks if d.is_overlay],
            console_log=domxml.parse_console_log(xml),
        )

    # -- lifecycle -----------------------------------------------------------
    def start(self) -> None:
        """Start a defined, stopped domain."""
        self._do("Cannot start", self.domain.create)

    def shutdown(self) -> None:
        """Ask the guest to power off (ACPI power button); returns at once."""
        self._do("Cannot shut down", self.domain.shutdown)

    def destroy(self) -> None:
        """Power the domain off at once (no error if it already stopped)."""
        # a transient domain may vanish between the check and the call
        if self.is_active():
            with contextlib.suppress(InstanceNotFound):
                self._do("Cannot destroy", self.domain.destroy)

    def reset(self) -> None:
        """Hard reset, like the reset button."""
        self._do("Cannot reset", self.domain.reset, 0)

    def reboot(self) -> None:
        """Ask the guest to reboot."""
        self._do("Cannot reboot", self.domain.reboot, 0)

    def suspend(self) -> None:
        """Pause the domain's vCPUs."""
        self._do("Cannot pause", self.domain.suspend)

    def resume(self) -> None:
        """Resume a paused domain."""
        self._do("Cannot resume", self.domain.resume)

    def undefine(self) -> None:
        """Remove the persistent definition (and its metadata)."""
        with contextlib.suppress(InstanceNotFound):
            self._do("Cannot undefine", self.domain.undefineFlags, _UNDEFINE_FLAGS)
