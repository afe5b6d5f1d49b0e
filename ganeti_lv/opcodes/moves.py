"""Opcodes that move instances: an instance's migration and failover, a node's
migration and evacuation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ganeti_lv import constants
from ganeti_lv.errors import ECODE_INVAL, OpPrereqError
from ganeti_lv.opcodes.base import (
    OpCode,
    require_choice,
    require_non_negative,
    require_planned_target,
    require_positive,
)


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
        require_choice(self, "mode", constants.HT_MIGRATION_MODES)
        if self.live is not None and self.mode is not None:
            raise OpPrereqError(
                "Only one of the 'live' and 'mode' parameters can be given", ECODE_INVAL
            )
        require_planned_target(self)
        require_non_negative(
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
        require_non_negative(self, "shutdown_timeout")
        require_planned_target(self)


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
        require_choice(self, "mode", constants.HT_MIGRATION_MODES)
        if self.live is not None and self.mode is not None:
            raise OpPrereqError(
                "Only one of the 'live' and 'mode' parameters can be given", ECODE_INVAL
            )
        require_positive(self, "max_parallel", "max_parallel_target")


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
        require_choice(self, "mode", constants.HT_MIGRATION_MODES)
        require_non_negative(self, "shutdown_timeout")
        require_positive(self, "max_parallel", "max_parallel_target")
        if self.primary_only and self.secondary_only:
            raise OpPrereqError(
                "Only one of 'primary_only' and 'secondary_only' can be given", ECODE_INVAL
            )
