"""Opcodes of exports: export, prepare, query, remove."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from ganeti_lv import constants
from ganeti_lv.errors import ECODE_INVAL, OpPrereqError
from ganeti_lv.opcodes.base import (
    OpCode,
    require_choice,
    require_non_negative,
)


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
        require_choice(self, "mode", constants.EXPORT_MODES)
        require_non_negative(
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
        require_choice(self, "mode", constants.EXPORT_MODES)


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
