"""Opcodes: what an operation is asked to do, with Ganeti's names and defaults.

Each opcode is a keyword-only dataclass with an ``OP_ID`` (Ganeti's ``OP_*``
name); ``field(default_factory=list)`` gives a fresh list per opcode. The
base class adds ``to_dict``/``from_dict`` (the form opcodes take in the job
log and in the master daemon's protocol), ``summary()`` for job listings and
``validate()``, which checks types and values and raises
``OpPrereqError(..., ECODE_INVAL)``; the processor calls it before the LU is
built. ``OP_REGISTRY`` maps OP_ID to class (no name mangling).

Every opcode carries Ganeti's reason trail (``reason``): why it runs, as
``[source, text, timestamp]`` entries, oldest first, the timestamp in
nanoseconds since the epoch as Ganeti's. Whoever submits the job starts it
(``gnt-lv``'s ``--reason`` and command, the remote API's ``?reason=`` and
resource), the job log adds the master's entry when it records the job
(``add_job_reasons``) and a node operation's jobs start with its trail.
"""

from __future__ import annotations

import dataclasses
import math
import time
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ganeti_lv import constants
from ganeti_lv.errors import ECODE_INVAL, OpPrereqError
from ganeti_lv.names import check_instance_name, check_name, check_tags
from ganeti_lv.units import parse_size

__all__ = ["OP_REGISTRY", "OpCode", "add_job_reasons", "field", "reason_entry"]

OP_REGISTRY: dict[str, type[OpCode]] = {}


def _plain(value: Any) -> Any:
    """A copy of a field value that shares no list or dict with it."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    return value


def _type_ok(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is Any:
        return True
    if origin is list:  # and its items, e.g. every disk a dict
        (item,) = typing.get_args(hint) or (Any,)
        return isinstance(value, list) and all(_type_ok(v, item) for v in value)
    if origin is dict:
        key, val = typing.get_args(hint) or (Any, Any)
        return isinstance(value, dict) and all(
            _type_ok(k, key) and _type_ok(v, val) for k, v in value.items()
        )
    if origin is not None:
        hint = origin
    if hint is float:  # a number, not NaN or infinity (which JSON decoders let through)
        return (
            isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        )
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


@dataclass(kw_only=True)
class OpCode:
    """Base of all opcodes. ``dry_run`` is honoured by LUs that support it.

    A subclass is a ``@dataclass(kw_only=True)`` with its own ``OP_ID``;
    defining it registers it in ``OP_REGISTRY``.
    """

    OP_ID: ClassVar[str] = "OP_ABSTRACT"
    WITH_DRY_RUN: ClassVar[bool] = False
    # parameters the master sets for jobs of its own; the remote API refuses them
    INTERNAL: ClassVar[frozenset[str]] = frozenset()

    dry_run: bool = False
    debug_level: int = 0
    # Ganeti's reason trail: [source, text, nanoseconds since the epoch] entries
    reason: list[list[Any]] = field(default_factory=list)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.OP_ID != "OP_ABSTRACT":
            OP_REGISTRY[cls.OP_ID] = cls

    def validate(self) -> None:
        """Check field types and values; raise OpPrereqError(ECODE_INVAL)."""
        hints = typing.get_type_hints(type(self))
        for fld in dataclasses.fields(self):
            value = getattr(self, fld.name)
            if not _type_ok(value, hints[fld.name]):
                raise OpPrereqError(
                    f"Parameter '{self.OP_ID}.{fld.name}' fails validation: "
                    f"expected {hints[fld.name]}, got {value!r}",
                    ECODE_INVAL,
                )
        if self.dry_run and not self.WITH_DRY_RUN:
            raise OpPrereqError(f"{self.OP_ID} does not support dry-run", ECODE_INVAL)
        _require_non_negative(self, "debug_level")
        _check_reason(self)
        self._check_values()

    def _check_values(self) -> None:
        """Per-opcode value checks; override."""

    def summary(self) -> str:
        """Short description for job listings, e.g. 'INSTANCE_MIGRATE(inst1)'."""
        name = self.OP_ID.removeprefix("OP_")
        target = getattr(self, "instance_name", None) or getattr(self, "node_name", None)
        return f"{name}({target})" if target else name

    def to_dict(self) -> dict[str, Any]:
        """Return the opcode as a dict including OP_ID (sharing no list or dict with it)."""
        values = {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}
        return {"OP_ID": self.OP_ID, **values}

    @staticmethod
    def from_dict(data: dict[str, Any]) -> OpCode:
        """Build an opcode from ``to_dict`` output; OpPrereqError for anything else."""
        data = dict(data)
        op_id = data.pop("OP_ID", None)
        cls = OP_REGISTRY.get(str(op_id))
        if cls is None:
            raise OpPrereqError(f"Unknown opcode {op_id!r}", ECODE_INVAL)
        try:
            return cls(**data)
        except TypeError as err:
            raise OpPrereqError(f"Invalid parameters for {op_id}: {err}", ECODE_INVAL) from err


def reason_entry(source: str, text: str, timestamp: int | None = None) -> list[Any]:
    """A reason trail entry as Ganeti's: [source, text, nanoseconds since the epoch (now)]."""
    return [source, text, time.time_ns() if timestamp is None else timestamp]


def add_job_reasons(ops: Sequence[OpCode], job_id: int, received_ns: int) -> None:
    """Append the master's entry to the trail of each opcode of job ``job_id``, as
    Ganeti's does when it receives a job: ("gnt:opcode:instance_migrate",
    "job=N;index=I", the time the job was received).

    A trail that is no list is left as it is: validation refuses it.
    """
    for index, op in enumerate(ops):
        if isinstance(op.reason, list):  # a new list: a trail may be shared by several opcodes
            source = f"{constants.OPCODE_REASON_SRC_OPCODE}:{op.OP_ID.removeprefix('OP_').lower()}"
            op.reason = [
                *op.reason,
                reason_entry(source, f"job={job_id};index={index}", received_ns),
            ]


def _check_reason(op: OpCode) -> None:
    """ECODE_INVAL unless every entry of the trail is [source, text, integer timestamp]."""
    for idx, entry in enumerate(op.reason):
        if not (
            len(entry) == 3
            and isinstance(entry[0], str)
            and isinstance(entry[1], str)
            and _type_ok(entry[2], int)
        ):
            raise OpPrereqError(
                f"Parameter '{op.OP_ID}.reason' fails validation: entry {idx} is not"
                f" [source, text, timestamp in nanoseconds], got {entry!r}",
                ECODE_INVAL,
            )


def _require_choice(op: OpCode, name: str, choices: tuple[str, ...]) -> None:
    value = getattr(op, name)
    if value is not None and value not in choices:
        raise OpPrereqError(
            f"Parameter '{op.OP_ID}.{name}' must be one of {', '.join(choices)}, got {value!r}",
            ECODE_INVAL,
        )


def check_node_settings(ssh_port: int | None, memory_cap: int | None, what: str) -> None:
    """ECODE_INVAL unless a node's SSH port is a port and its memory cap not negative."""
    if ssh_port is not None and not 0 < ssh_port < 65536:
        raise OpPrereqError(f"Invalid SSH port {ssh_port} for {what}", ECODE_INVAL)
    if memory_cap is not None and memory_cap < 0:
        raise OpPrereqError(f"Invalid memory cap {memory_cap} for {what}", ECODE_INVAL)


def _require_non_negative(op: OpCode, *names: str) -> None:
    for name in names:
        value = getattr(op, name)
        if value is not None and value < 0:
            raise OpPrereqError(
                f"Parameter '{op.OP_ID}.{name}' must not be negative, got {value!r}",
                ECODE_INVAL,
            )


def _require_positive(op: OpCode, *names: str) -> None:
    for name in names:
        value = getattr(op, name)
        if value is not None and value < 1:
            raise OpPrereqError(
                f"Parameter '{op.OP_ID}.{name}' must be at least 1, got {value!r}",
                ECODE_INVAL,
            )


def _require_planned_target(op: OpCode) -> None:
    if getattr(op, "planned_from", None) and not getattr(op, "target_node", None):
        raise OpPrereqError(f"A planned {op.OP_ID} needs its target node", ECODE_INVAL)


# ---------------------------------------------------------------- cluster


@dataclass(kw_only=True)
class OpClusterVerify(OpCode):
    """Compare the configuration with what the nodes really run."""

    OP_ID: ClassVar[str] = "OP_CLUSTER_VERIFY"


@dataclass(kw_only=True)
class OpClusterRenewCrypto(OpCode):
    """Issue new TLS certificates: a new cluster CA and everything it signs, or
    new node and master certificates from the CA there is (on ``node_names``, or all)."""

    OP_ID: ClassVar[str] = "OP_CLUSTER_RENEW_CRYPTO"

    new_cluster_certificate: bool = False
    new_node_certificates: bool = False
    node_names: list[str] = field(default_factory=list)


@dataclass(kw_only=True)
class OpClusterSetParams(OpCode):
    """Change cluster-wide settings (None = unchanged)."""

    OP_ID: ClassVar[str] = "OP_CLUSTER_SET_PARAMS"

    hvparams: dict[str, Any] | None = None
    beparams: dict[str, Any] | None = None
    hooks_base_dir: str | None = None
    export_dir: str | None = None
    file_storage_dir: str | None = None
    shared_file_storage_dir: str | None = None
    compression_tools: list[str] | None = None
    domain_type: str | None = None
    shared_storage_unsafe_ok: bool | None = None
    hooks_timeout: float | None = None
    default_bridge: str | None = None
    max_parallel_source: int | None = None
    max_parallel_target: int | None = None

    def _check_values(self) -> None:
        _require_choice(self, "domain_type", constants.DOMAIN_TYPES)
        _require_positive(self, "max_parallel_source", "max_parallel_target")
        for tool in self.compression_tools or []:
            if not constants.NAME_RE.match(tool):
                raise OpPrereqError(f"Invalid compression tool name {tool!r}", ECODE_INVAL)


@dataclass(kw_only=True)
class OpTestDelay(OpCode):
    """Sleep while holding locks (for testing the framework)."""

    OP_ID: ClassVar[str] = "OP_TEST_DELAY"
    WITH_DRY_RUN: ClassVar[bool] = True

    duration: float = 0.0
    instance_names: list[str] = field(default_factory=list)
    node_names: list[str] = field(default_factory=list)
    fail: bool = False

    def _check_values(self) -> None:
        _require_non_negative(self, "duration")


# ---------------------------------------------------------------- nodes


@dataclass(kw_only=True)
class OpNodeAdd(OpCode):
    """Add a node; its SSH host key must be confirmed (``host_key``)."""

    OP_ID: ClassVar[str] = "OP_NODE_ADD"

    node_name: str
    # None: the node's own (readd), else its name, port 22 and root
    primary_ip: str | None = None
    ssh_port: int | None = None
    ssh_user: str | None = None
    libvirt_uri: str | None = None
    peer_uri: str | None = None
    migration_address: str | None = None
    host_key: str | None = None
    memory_cap: int | None = None
    # None: True for a new node, as it was for a node added again (readd)
    vm_capable: bool | None = None
    readd: bool = False

    def _check_values(self) -> None:
        check_name(self.node_name, "node")
        check_node_settings(self.ssh_port, self.memory_cap, f"node {self.node_name}")


@dataclass(kw_only=True)
class OpNodeSetParams(OpCode):
    """Change a node's flags (None = unchanged)."""

    OP_ID: ClassVar[str] = "OP_NODE_SET_PARAMS"
    WITH_DRY_RUN: ClassVar[bool] = True

    node_name: str
    offline: bool | None = None
    drained: bool | None = None
    # a flag of Ganeti's node roles only (no master candidate runs anything here)
    master_candidate: bool | None = None
    vm_capable: bool | None = None
    memory_cap: int | None = None
    clear_memory_cap: bool = False
    force: bool = False
    # Ganeti's: promote another node when this one stops being a candidate
    # (no effect: no pool of candidates to keep full here)
    auto_promote: bool = False

    def _check_values(self) -> None:
        check_node_settings(None, self.memory_cap, f"node {self.node_name}")
        if self.memory_cap is not None and self.clear_memory_cap:
            raise OpPrereqError("Cannot both set and clear the memory cap", ECODE_INVAL)


@dataclass(kw_only=True)
class OpNodeRemove(OpCode):
    """Remove a node that has no instances."""

    OP_ID: ClassVar[str] = "OP_NODE_REMOVE"

    node_name: str


@dataclass(kw_only=True)
class OpNodeQuery(OpCode):
    """List nodes with live facts where reachable."""

    OP_ID: ClassVar[str] = "OP_NODE_QUERY"

    names: list[str] = field(default_factory=list)
    live: bool = True


# ---------------------------------------------------------------- instances


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
        _require_choice(self, "disk_template", constants.DISK_TEMPLATES)
        _require_choice(self, "mode", ("create", "import"))
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
        _require_non_negative(self, "timeout")
        _require_choice(self, "admin_state_source", constants.ADMIN_STATE_SOURCES)
        if self.admin_state_source == constants.USER_SOURCE:
            raise OpPrereqError(
                f"Parameter '{self.OP_ID}.admin_state_source' {constants.USER_SOURCE!r} is not"
                " supported: ganeti_lv has no user shutdown (a guest that shuts itself down"
                f" is not recorded as such); use {constants.ADMIN_SOURCE!r} or leave it out",
                ECODE_INVAL,
            )


@dataclass(kw_only=True)
class OpInstanceReboot(OpCode):
    """Reboot an instance (soft: guest reboot; hard: reset; full: stop+start)."""

    OP_ID: ClassVar[str] = "OP_INSTANCE_REBOOT"
    WITH_DRY_RUN: ClassVar[bool] = True

    instance_name: str
    reboot_type: str = "hard"
    shutdown_timeout: int = constants.DEFAULT_SHUTDOWN_TIMEOUT
    ignore_secondaries: bool = False

    def _check_values(self) -> None:
        _require_choice(self, "reboot_type", ("soft", "hard", "full"))
        _require_non_negative(self, "shutdown_timeout")


@dataclass(kw_only=True)
class OpInstanceRemove(OpCode):
    """Remove an instance: stop it, undefine it, delete its disks."""

    OP_ID: ClassVar[str] = "OP_INSTANCE_REMOVE"
    WITH_DRY_RUN: ClassVar[bool] = True

    instance_name: str
    ignore_failures: bool = False
    shutdown_timeout: int = constants.DEFAULT_SHUTDOWN_TIMEOUT

    def _check_values(self) -> None:
        _require_non_negative(self, "shutdown_timeout")


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
class _TagsOpCode(OpCode):
    """Ganeti's tag target: the cluster (``kind`` cluster, no name) or an instance."""

    kind: str
    name: str | None = None

    def _check_values(self) -> None:
        if self.kind not in constants.TAG_KINDS:
            raise OpPrereqError(
                f"Tags of kind '{self.kind}' are not supported: ganeti_lv tags the cluster"
                f" and instances only (Ganeti's kinds: {', '.join(constants.GANETI_TAG_KINDS)})",
                ECODE_INVAL,
            )
        if self.kind == constants.TAG_CLUSTER and self.name:
            raise OpPrereqError("The cluster's tags take no name", ECODE_INVAL)
        if self.kind == constants.TAG_INSTANCE and not self.name:
            raise OpPrereqError("An instance's tags need the instance's name", ECODE_INVAL)


@dataclass(kw_only=True)
class OpTagsGet(_TagsOpCode):
    """The tags of the cluster or of an instance (Ganeti's OP_TAGS_GET); a query."""

    OP_ID: ClassVar[str] = "OP_TAGS_GET"


@dataclass(kw_only=True)
class _TagsChange(_TagsOpCode):
    """Tags to add or remove, each of Ganeti's form."""

    WITH_DRY_RUN: ClassVar[bool] = True

    tags: list[str] = field(default_factory=list)

    def _check_values(self) -> None:
        super()._check_values()
        check_tags(self.tags, f"{self.kind} {self.name or ''}".rstrip())


@dataclass(kw_only=True)
class OpTagsSet(_TagsChange):
    """Add tags to the cluster or an instance (Ganeti's OP_TAGS_SET)."""

    OP_ID: ClassVar[str] = "OP_TAGS_SET"


@dataclass(kw_only=True)
class OpTagsDel(_TagsChange):
    """Remove tags from the cluster or an instance (Ganeti's OP_TAGS_DEL)."""

    OP_ID: ClassVar[str] = "OP_TAGS_DEL"


@dataclass(kw_only=True)
class OpInstanceConsole(OpCode):
    """How to reach an instance's serial console (Ganeti's OP_INSTANCE_CONSOLE); a query."""

    OP_ID: ClassVar[str] = "OP_INSTANCE_CONSOLE"

    instance_name: str


@dataclass(kw_only=True)
class OpInstanceMigrate(OpCode):
    """Migrate an instance (Ganeti's OP_INSTANCE_MIGRATE).

    ``mode`` defaults to the hvparam ``migration_mode``; the obsolete ``live``
    flag may not be given together with ``mode``. The ``migration_*``
    fields override the hvparams for this call; the timeouts feed the
    convergence policy (None = policy defaults).
    """

    OP_ID: ClassVar[str] = "OP_INSTANCE_MIGRATE"
    WITH_DRY_RUN: ClassVar[bool] = True
    INTERNAL: ClassVar[frozenset[str]] = frozenset({"planned_from"})

    instance_name: str
    mode: str | None = None
    live: bool | None = None
    target_node: str | None = None
    iallocator: str | None = None
    cleanup: bool = False
    allow_failover: bool = False
    allow_runtime_changes: bool = True
    ignore_ipolicy: bool = False
    ignore_hvversions: bool = False
    migration_bandwidth: int | None = None
    migration_downtime: int | None = None
    migration_caps: str | None = None
    migration_encryption: bool | None = None
    allow_postcopy: bool = False
    escalate: bool = True
    progress_timeout: float | None = None
    completion_timeout: float | None = None
    abort_timeout: float | None = None
    # a node operation's move of the instance off this node (its plan placed
    # it): node locks shared with the operation's other moves; refused if the
    # instance is no longer on that node
    planned_from: str | None = None

    def _check_values(self) -> None:
        _require_choice(self, "mode", constants.HT_MIGRATION_MODES)
        if self.live is not None and self.mode is not None:
            raise OpPrereqError(
                "Only one of the 'live' and 'mode' parameters can be given", ECODE_INVAL
            )
        _require_planned_target(self)
        _require_non_negative(
            self,
            "migration_bandwidth",
            "migration_downtime",
            "progress_timeout",
            "completion_timeout",
            "abort_timeout",
        )


@dataclass(kw_only=True)
class OpInstanceFailover(OpCode):
    """Fail an instance over: stop on the primary, start on the target."""

    OP_ID: ClassVar[str] = "OP_INSTANCE_FAILOVER"
    WITH_DRY_RUN: ClassVar[bool] = True
    INTERNAL: ClassVar[frozenset[str]] = frozenset({"planned_from"})

    instance_name: str
    shutdown_timeout: int = constants.DEFAULT_SHUTDOWN_TIMEOUT
    ignore_consistency: bool = False
    target_node: str | None = None
    iallocator: str | None = None
    cleanup: bool = False
    ignore_ipolicy: bool = False
    planned_from: str | None = None  # as for OpInstanceMigrate

    def _check_values(self) -> None:
        _require_non_negative(self, "shutdown_timeout")
        _require_planned_target(self)


@dataclass(kw_only=True)
class OpNodeMigrate(OpCode):
    """Live-migrate every running instance off a node (Ganeti's OP_NODE_MIGRATE).

    One job per instance (``job list`` shows them under this one); the
    targets come from the placement allocator unless ``target_node`` is
    given. ``max_parallel``/``max_parallel_target`` override the cluster's
    limits of moves at once off this node and onto one node.
    """

    OP_ID: ClassVar[str] = "OP_NODE_MIGRATE"
    WITH_DRY_RUN: ClassVar[bool] = True

    node_name: str
    mode: str | None = None
    live: bool | None = None
    target_node: str | None = None
    iallocator: str | None = None
    max_parallel: int | None = None
    max_parallel_target: int | None = None
    allow_runtime_changes: bool = True
    ignore_hvversions: bool = False
    # passed on to each instance's migration, as in Ganeti (no policy here to ignore)
    ignore_ipolicy: bool = False

    def _check_values(self) -> None:
        _require_choice(self, "mode", constants.HT_MIGRATION_MODES)
        if self.live is not None and self.mode is not None:
            raise OpPrereqError(
                "Only one of the 'live' and 'mode' parameters can be given", ECODE_INVAL
            )
        _require_positive(self, "max_parallel", "max_parallel_target")


@dataclass(kw_only=True)
class OpNodeEvacuate(OpCode):
    """Move every instance off a node: running ones migrated, the others failed over.

    ``primary_only`` and ``secondary_only`` are Ganeti's evacuation modes:
    ganeti_lv's instances have no secondary nodes, so only primaries ever
    move, and an evacuation of the secondaries moves nothing.
    """

    OP_ID: ClassVar[str] = "OP_NODE_EVACUATE"
    WITH_DRY_RUN: ClassVar[bool] = True

    node_name: str
    primary_only: bool = False
    secondary_only: bool = False
    target_node: str | None = None
    iallocator: str | None = None
    mode: str | None = None
    max_parallel: int | None = None
    max_parallel_target: int | None = None
    shutdown_timeout: int = constants.DEFAULT_SHUTDOWN_TIMEOUT
    # Ganeti's "ignore soft htools errors" (N+1, instance policy): the plan here
    # has no soft rules, every refusal is a hard one, so the plan is the same
    ignore_soft_errors: bool | None = None

    def _check_values(self) -> None:
        _require_choice(self, "mode", constants.HT_MIGRATION_MODES)
        _require_non_negative(self, "shutdown_timeout")
        _require_positive(self, "max_parallel", "max_parallel_target")
        if self.primary_only and self.secondary_only:
            raise OpPrereqError(
                "Only one of 'primary_only' and 'secondary_only' can be given", ECODE_INVAL
            )


# ---------------------------------------------------------------- backups


@dataclass(kw_only=True)
class OpBackupExport(OpCode):
    """Export an instance to another node (Ganeti's OP_BACKUP_EXPORT).

    Result: (finalized, [per-disk ok]).
    """

    OP_ID: ClassVar[str] = "OP_BACKUP_EXPORT"
    WITH_DRY_RUN: ClassVar[bool] = True

    instance_name: str
    target_node: str | None = None
    mode: str = constants.EXPORT_MODE_LOCAL
    shutdown: bool = True
    shutdown_timeout: int = constants.DEFAULT_SHUTDOWN_TIMEOUT
    remove_instance: bool = False
    ignore_remove_failures: bool = False
    compress: str = constants.IEC_NONE
    zero_free_space: bool = False
    zeroing_timeout_fixed: int | None = None
    zeroing_timeout_per_mib: float | None = None
    long_sleep: bool = False
    bandwidth_limit: int | None = None
    x509_key_name: list[Any] | None = None
    destination_x509_ca: str | None = None

    def _check_values(self) -> None:
        _require_choice(self, "mode", constants.EXPORT_MODES)
        _require_non_negative(
            self, "shutdown_timeout", "zeroing_timeout_fixed", "zeroing_timeout_per_mib"
        )
        if self.bandwidth_limit is not None and self.bandwidth_limit <= 0:
            raise OpPrereqError("The bandwidth limit must be positive", ECODE_INVAL)


@dataclass(kw_only=True)
class OpBackupPrepare(OpCode):
    """Prepare an export of an instance (Ganeti's OP_BACKUP_PREPARE).

    Mode ``local`` needs nothing prepared (result: None); ``remote`` (to
    another cluster) is not supported.
    """

    OP_ID: ClassVar[str] = "OP_BACKUP_PREPARE"

    instance_name: str
    mode: str

    def _check_values(self) -> None:
        _require_choice(self, "mode", constants.EXPORT_MODES)


@dataclass(kw_only=True)
class OpBackupQuery(OpCode):
    """List the exports on the given nodes (all when empty)."""

    OP_ID: ClassVar[str] = "OP_BACKUP_QUERY"

    nodes: list[str] = field(default_factory=list)
    # False: {node: [name, ...]} (Ganeti's result: complete exports); True: {node: [{"name":
    # NAME, "kind": "ganeti_lv"|"ganeti", "stale": bool}, ...]}: who wrote each
    # export, and the incomplete ones too (NAME.new/NAME.old: an export running or
    # interrupted) with "stale" true and their "path"
    with_kind: bool = False


@dataclass(kw_only=True)
class OpBackupRemove(OpCode):
    """Remove every export of an instance."""

    OP_ID: ClassVar[str] = "OP_BACKUP_REMOVE"

    instance_name: str
    # only the leftovers of an interrupted export (NAME.new); the export stays
    stale: bool = False
