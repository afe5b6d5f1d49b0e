"""Opcodes of nodes: add, modify, remove, query."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from ganeti_lv.errors import ECODE_INVAL, OpPrereqError
from ganeti_lv.names import check_address, check_name
from ganeti_lv.opcodes.base import (
    OpCode,
    check_node_access,
    check_node_settings,
)


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
        check_address(self.primary_ip, "node address")
        check_address(self.migration_address, "migration address")
        check_node_settings(self.ssh_port, self.memory_cap, f"node {self.node_name}")
        check_node_access(self.ssh_user, self.libvirt_uri, self.peer_uri, f"node {self.node_name}")


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
