"""Opcodes of the whole cluster (and the framework's test delay)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from ganeti_lv import constants
from ganeti_lv.errors import ECODE_INVAL, OpPrereqError
from ganeti_lv.opcodes.base import (
    OpCode,
    require_choice,
    require_non_negative,
    require_positive,
)


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
    default_iallocator: str | None = None  # "" for none
    max_parallel_source: int | None = None
    max_parallel_target: int | None = None

    def _check_values(self) -> None:
        require_choice(self, "domain_type", constants.DOMAIN_TYPES)
        require_positive(self, "max_parallel_source", "max_parallel_target")
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
        require_non_negative(self, "duration")
