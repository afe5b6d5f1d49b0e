"""The base of every opcode: ``OpCode`` (validation, the dict form, the registry)
and the reason trail's helpers; the value checks the opcodes share."""

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
        require_non_negative(self, "debug_level")
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


def require_choice(op: OpCode, name: str, choices: tuple[str, ...]) -> None:
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


def check_node_access(
    ssh_user: str | None, libvirt_uri: str | None, peer_uri: str | None, what: str
) -> None:
    """ECODE_INVAL unless a node's SSH user is a login name (it reaches ``ssh`` as a word
    of its own) and its libvirt URIs are qemu URIs (``qemu+ext`` runs a program)."""
    if ssh_user is not None and not constants.SSH_USER_RE.match(ssh_user):
        raise OpPrereqError(f"Invalid SSH user name '{ssh_user}' for {what}", ECODE_INVAL)
    for key, uri in (("libvirt_uri", libvirt_uri), ("peer_uri", peer_uri)):
        scheme = uri.partition("://")[0] if uri and "://" in uri else None
        if uri and scheme not in constants.LIBVIRT_URI_SCHEMES:
            raise OpPrereqError(
                f"Invalid {key} '{uri}' for {what}: a qemu URI is needed, one of the"
                " schemes " + ", ".join(sorted(constants.LIBVIRT_URI_SCHEMES)),
                ECODE_INVAL,
            )


def require_non_negative(op: OpCode, *names: str) -> None:
    for name in names:
        value = getattr(op, name)
        if value is not None and value < 0:
            raise OpPrereqError(
                f"Parameter '{op.OP_ID}.{name}' must not be negative, got {value!r}",
                ECODE_INVAL,
            )


def require_positive(op: OpCode, *names: str) -> None:
    for name in names:
        value = getattr(op, name)
        if value is not None and value < 1:
            raise OpPrereqError(
                f"Parameter '{op.OP_ID}.{name}' must be at least 1, got {value!r}",
                ECODE_INVAL,
            )


def require_planned_target(op: OpCode) -> None:
    if getattr(op, "planned_from", None) and not getattr(op, "target_node", None):
        raise OpPrereqError(f"A planned {op.OP_ID} needs its target node", ECODE_INVAL)
