"""Opcodes of one instance: create, start, stop, reboot, remove, query, console."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from ganeti_lv import constants
from ganeti_lv.errors import ECODE_INVAL, OpPrereqError
from ganeti_lv.names import check_instance_name, check_tags
from ganeti_lv.opcodes.base import (
    OpCode,
    require_choice,
    require_non_negative,
)
from ganeti_lv.units import parse_size


@dataclass(kw_only=True)
class OpInstanceCreate(OpCode):
    """Create an instance (mode 'create'), or restore one from an export ('import').

    ``disks`` items: {"size": MiB, "mode": "rw", "name": ...};
    ``nics`` items: {"link": bridge, "mac": ..., "ip": ...}.
    """

    OP_ID: ClassVar[str] = "OP_INSTANCE_CREATE"
    WITH_DRY_RUN: ClassVar[bool] = True

    instance_name: str
    disk_template: str
    pnode: str | None = None
    iallocator: str | None = None
    disks: list[dict[str, Any]] = field(default_factory=list)
    nics: list[dict[str, Any]] = field(default_factory=list)
    beparams: dict[str, Any] = field(default_factory=dict)
    hvparams: dict[str, Any] = field(default_factory=dict)
    os_type: str = "debootstrap+default"
    tags: list[str] = field(default_factory=list)
    start: bool = True
    wait_for_sync: bool = True
    mode: str = "create"
    src_node: str | None = None
    src_path: str | None = None
    # Ganeti's parameters that ask for nothing here, checked as such: no name or
    # IP looked up in DNS, no OS installed (the disks start empty), no networks
    # (so no IP conflicts), no secondary node, kvm only, no OS parameters
    name_check: bool = False
    ip_check: bool = False
    no_install: bool | None = None
    conflicts_check: bool = True
    hypervisor: str | None = None
    snode: str | None = None
    osparams: dict[str, Any] = field(default_factory=dict)

    def _check_values(self) -> None:
        check_instance_name(self.instance_name)
        self._check_ganeti_only()
        check_tags(self.tags, f"instance {self.instance_name}")
        require_choice(self, "disk_template", constants.DISK_TEMPLATES)
        require_choice(self, "mode", ("create", "import"))
        if self.mode == "import" and not self.src_node:
            raise OpPrereqError("Import requires a source node (src_node)", ECODE_INVAL)
        if self.mode == "create" and not self.disks:
            raise OpPrereqError("At least one disk is required", ECODE_INVAL)
        for idx, disk in enumerate(self.disks):
            size = disk.get("size")
            # MiB, or a size with a unit ("512M", "1.5G"; the LU rounds up and says so)
            if self.mode == "create" and (
                not isinstance(size, (int, str)) or parse_size(size, f"size of disk {idx}") <= 0
            ):
                raise OpPrereqError(f"Invalid size for disk {idx}: {size!r}", ECODE_INVAL)

    def _check_ganeti_only(self) -> None:
        """ECODE_INVAL for what Ganeti's parameters ask that ganeti_lv does not do."""
        refused = []
        if self.name_check or self.ip_check:
            refused.append("name_check and ip_check (instance names are not looked up in DNS)")
        if self.hypervisor not in (None, constants.HYPERVISOR_KVM):
            refused.append(f"hypervisor {self.hypervisor!r} (kvm only)")
        if self.snode:
            refused.append("snode (no disk template with a secondary node)")
        if self.osparams:
            refused.append("osparams (no OS is installed)")
        if refused:
            raise OpPrereqError(
                f"Not supported for instance {self.instance_name}: {'; '.join(refused)}",
                ECODE_INVAL,
            )


@dataclass(kw_only=True)
class OpInstanceStartup(OpCode):
    """Start an instance and mark it up."""

    OP_ID: ClassVar[str] = "OP_INSTANCE_STARTUP"
    WITH_DRY_RUN: ClassVar[bool] = True

    instance_name: str
    force: bool = False
    ignore_offline_nodes: bool = False
    no_remember: bool = False
    # Ganeti's temporary parameters: this start only, the configuration keeps its own
    hvparams: dict[str, Any] = field(default_factory=dict)
    beparams: dict[str, Any] = field(default_factory=dict)
    startup_paused: bool = False


@dataclass(kw_only=True)
class OpInstanceSetParams(OpCode):
    """Change an instance's backend and hypervisor parameters (Ganeti's
    OP_INSTANCE_SET_PARAMS, its ``-B`` and ``-H``; a value None sets one back to
    the cluster's default)."""

    OP_ID: ClassVar[str] = "OP_INSTANCE_SET_PARAMS"
    WITH_DRY_RUN: ClassVar[bool] = True

    instance_name: str
    beparams: dict[str, Any] = field(default_factory=dict)
    hvparams: dict[str, Any] = field(default_factory=dict)
    # Ganeti's: skip the check that the instance can still start with more memory
    force: bool = False


@dataclass(kw_only=True)
class OpInstanceShutdown(OpCode):
    """Shut an instance down (ACPI, then forced after ``timeout`` s) and mark it down."""

    OP_ID: ClassVar[str] = "OP_INSTANCE_SHUTDOWN"
    WITH_DRY_RUN: ClassVar[bool] = True

    instance_name: str
    timeout: int = constants.DEFAULT_SHUTDOWN_TIMEOUT
    ignore_offline_nodes: bool = False
    no_remember: bool = False
    # Ganeti's: skip the check that the instance is not offline (ganeti_lv
    # has no offline instances, so it only says so)
    force: bool = False
    # Ganeti's: who stops it. "admin" (also for None) is what every shutdown
    # here records; "user" (the guest shut itself down) is refused: ganeti_lv
    # has no user shutdown
    admin_state_source: str | None = None

    def _check_values(self) -> None:
        require_non_negative(self, "timeout")
        require_choice(self, "admin_state_source", constants.ADMIN_STATE_SOURCES)
        if self.admin_state_source == constants.USER_SOURCE:
            raise OpPrereqError(
                f"Parameter '{self.OP_ID}.admin_state_source' {constants.USER_SOURCE!r} is not"
                " supported: ganeti_lv has no user shutdown (a guest that shuts itself down"
                f" is not recorded as such); use {constants.ADMIN_SOURCE!r} or leave it out",
                ECODE_INVAL,
            )


@dataclass(kw_only=True)
class OpInstanceReboot(OpCode):
    """Reboot an instance (soft: the guest reboots; hard: a clean shutdown and a start,
    as Ganeti's; full: stop and start through the configuration)."""

    OP_ID: ClassVar[str] = "OP_INSTANCE_REBOOT"
    WITH_DRY_RUN: ClassVar[bool] = True

    instance_name: str
    reboot_type: str = "hard"
    shutdown_timeout: int = constants.DEFAULT_SHUTDOWN_TIMEOUT
    ignore_secondaries: bool = False

    def _check_values(self) -> None:
        require_choice(self, "reboot_type", ("soft", "hard", "full"))
        require_non_negative(self, "shutdown_timeout")


@dataclass(kw_only=True)
class OpInstanceRemove(OpCode):
    """Remove an instance: stop it, undefine it, delete its disks."""

    OP_ID: ClassVar[str] = "OP_INSTANCE_REMOVE"
    WITH_DRY_RUN: ClassVar[bool] = True

    instance_name: str
    ignore_failures: bool = False
    shutdown_timeout: int = constants.DEFAULT_SHUTDOWN_TIMEOUT

    def _check_values(self) -> None:
        require_non_negative(self, "shutdown_timeout")


@dataclass(kw_only=True)
class OpInstanceQuery(OpCode):
    """List instances with their live state."""

    OP_ID: ClassVar[str] = "OP_INSTANCE_QUERY"

    names: list[str] = field(default_factory=list)
    live: bool = True


@dataclass(kw_only=True)
class OpInstanceQueryData(OpCode):
    """Detailed data of instances (Ganeti's OP_INSTANCE_QUERY_DATA), by name.

    ``static``: from the configuration only, without asking the nodes.
    Result: {instance name: {field: value}} in Ganeti's fields.
    """

    OP_ID: ClassVar[str] = "OP_INSTANCE_QUERY_DATA"

    instances: list[str] = field(default_factory=list)
    static: bool = False
    use_locking: bool = False

    def summary(self) -> str:
        """'INSTANCE_QUERY_DATA(name,...)'; any value (a job is recorded before validation)."""
        names = self.instances if isinstance(self.instances, list) else [self.instances]
        return f"INSTANCE_QUERY_DATA({','.join(str(name) for name in names)})"


@dataclass(kw_only=True)
class OpInstanceConsole(OpCode):
    """How to reach an instance's serial console (Ganeti's OP_INSTANCE_CONSOLE); a query."""

    OP_ID: ClassVar[str] = "OP_INSTANCE_CONSOLE"

    instance_name: str
