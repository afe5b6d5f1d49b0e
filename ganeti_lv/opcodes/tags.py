"""Opcodes of tags: the cluster's, a node's and an instance's (Ganeti's OP_TAGS_*)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import ClassVar

from ganeti_lv import constants
from ganeti_lv.errors import ECODE_INVAL, OpPrereqError
from ganeti_lv.names import check_tags
from ganeti_lv.opcodes.base import OpCode


@dataclass(kw_only=True)
class _TagsOpCode(OpCode):
    """Ganeti's tag target: the cluster (``kind`` cluster, no name), a node or an instance."""

    kind: str
    name: str | None = None

    def _check_values(self) -> None:
        if self.kind not in constants.TAG_KINDS:
            raise OpPrereqError(
                f"Tags of kind '{self.kind}' are not supported: ganeti_lv tags the cluster,"
                " nodes and instances only (Ganeti's kinds:"
                f" {', '.join(constants.GANETI_TAG_KINDS)})",
                ECODE_INVAL,
            )
        if self.kind == constants.TAG_CLUSTER and self.name:
            raise OpPrereqError("The cluster's tags take no name", ECODE_INVAL)
        if self.kind != constants.TAG_CLUSTER and not self.name:
            raise OpPrereqError(
                f"Tags of kind '{self.kind}' need the {self.kind}'s name", ECODE_INVAL
            )


@dataclass(kw_only=True)
class OpTagsGet(_TagsOpCode):
    """The tags of the cluster, a node or an instance (Ganeti's OP_TAGS_GET); a query."""

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
    """Add tags to the cluster, a node or an instance (Ganeti's OP_TAGS_SET)."""

    OP_ID: ClassVar[str] = "OP_TAGS_SET"


@dataclass(kw_only=True)
class OpTagsDel(_TagsChange):
    """Remove tags from the cluster, a node or an instance (Ganeti's OP_TAGS_DEL)."""

    OP_ID: ClassVar[str] = "OP_TAGS_DEL"


@dataclass(kw_only=True)
class OpTagsSearch(OpCode):
    """Every tag of the cluster, its nodes and instances that ``pattern`` (a regular
    expression) finds, as (path, tag) pairs (Ganeti's OP_TAGS_SEARCH); a query."""

    OP_ID: ClassVar[str] = "OP_TAGS_SEARCH"

    pattern: str

    def _check_values(self) -> None:
        try:
            re.compile(self.pattern)
        except re.error as err:
            raise OpPrereqError(
                f"Invalid search pattern '{self.pattern}': {err}", ECODE_INVAL
            ) from None
