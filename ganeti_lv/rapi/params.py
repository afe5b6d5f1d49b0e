"""Query arguments and request bodies of the remote API, checked, into opcodes.

As Ganeti's RAPI does, a change resource builds its opcode from the JSON
body (an object of opcode parameters, by their Ganeti names) plus the
parameters the resource fixes itself (the instance from the path, query
arguments such as ``dry-run``, ``force`` or ``type``); a body may not set
those. Some body names are renamed (``destination`` is the export's
``target_node``). Anything wrong answers 400 with a message: a body that is
not an object, an unknown parameter, a value of the wrong type or out of
range (the opcode's own checks), a query argument that is not a number.

Of Ganeti's parameters common to every opcode, ``priority`` and
``comment`` are accepted without effect here, ``depends`` (job
dependencies) is refused unless empty, and ``reason`` is the remote API's
own, as in Ganeti: a body may not set it, the job's reason trail starts with
the ``reason`` query argument and the resource (``reason_trail``). A
boolean query argument is ``0`` or ``1`` (any integer; ``bulk=1``), as in
Ganeti.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from typing import Any

from ganeti_lv import constants
from ganeti_lv.errors import OpPrereqError
from ganeti_lv.opcodes import OpCode, reason_entry
from ganeti_lv.rapi.httperrors import bad_request, forbidden

QueryArgs = Mapping[str, Sequence[str]]

# Ganeti's parameters of every opcode, checked as Ganeti checks them and then
# without effect here: a job's priority (one of Ganeti's submit priorities) and
# comment; its reason comes from the query (?reason=), never from the body
_PRIORITIES = (-10, 0, 10)
# a path variable of a resource's rule ("<name>", "<int:job_id>")
_RULE_VARIABLE = re.compile(r"<(?:\w+:)?(\w+)>")


def str_arg(args: QueryArgs, name: str, default: str | None = None) -> str | None:
    """The first value of query argument ``name`` (``default`` when absent)."""
    values = args.get(name)
    return values[0] if values else default


def int_arg(args: QueryArgs, name: str, default: int = 0) -> int:
    """Query argument ``name`` as an integer; 400 when it is not one."""
    value = str_arg(args, name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise bad_request(f"Invalid value for the '{name}' parameter") from None


def bool_arg(args: QueryArgs, name: str) -> bool:
    """A boolean query argument (``0``/``1``, as Ganeti takes it)."""
    return bool(int_arg(args, name))


def ganeti_resource_name(rule: str) -> str:
    """Ganeti's name of the resource of ``rule`` (its class's, without ``R_2_``):
    ``/2/instances/<name>/prepare-export`` is ``instances_name_prepare_export``;
    ``/2/modify``'s class is named for what it changes, ``cluster_modify``."""
    if rule == "/2/modify":
        return "cluster_modify"
    path = _RULE_VARIABLE.sub(r"\1", rule).removeprefix("/2/")
    return path.replace("/", "_").replace("-", "_")


def reason_trail(args: QueryArgs, rule: str) -> list[list[Any]]:
    """The reason trail of a job of the resource of ``rule``, as Ganeti's remote API
    starts it: the ``reason`` query argument ("gnt:user"), when given, then the
    resource ("gnt:library:rlib2:instances_name_migrate", no text)."""
    trail = []
    text = str_arg(args, "reason")
    if text:
        trail.append(reason_entry(constants.OPCODE_REASON_SRC_USER, text))
    source = f"{constants.OPCODE_REASON_SRC_RLIB2}:{ganeti_resource_name(rule)}"
    trail.append(reason_entry(source, ""))
    return trail


def check_type(value: Any, expected: type, what: str) -> Any:
    """``value`` when it is an ``expected``; 400 in Ganeti's words otherwise."""
    if not isinstance(value, expected):
        raise bad_request(
            f"{what}: Type is '{_json_type(value)}', but '{_json_type_of(expected)}' is expected"
        )
    return value


def _json_type(value: Any) -> str:
    return _json_type_of(type(value))


def _json_type_of(kind: type) -> str:
    return {dict: "dict", list: "list", str: "str", int: "int", bool: "bool"}.get(
        kind, kind.__name__
    )


def body_object(body: Any) -> dict[str, Any]:
    """The body as a dict of parameters ({} for no body); 400 when it is not a JSON object."""
    if body is None:
        return {}
    return dict(check_type(body, dict, "Body contents"))


# Ganeti's group of cluster-wide backend and NIC parameters (the only one here)
_DEFAULT_GROUP = "default"


def _per_key(params: dict[str, Any], name: str, key: str) -> None:
    """Ganeti's ``{key: {...}}`` form of ``params[name]`` (per hypervisor, per group)
    as the flat dict ganeti_lv takes; 400 for another hypervisor or group."""
    value = params.get(name)
    if not isinstance(value, dict) or not any(isinstance(v, dict) for v in value.values()):
        return  # the flat form already (or a wrong type, which the opcode refuses)
    others = sorted(set(value) - {key})
    if others:
        raise bad_request(f"Invalid {name}: only '{key}' is here, not {', '.join(others)}")
    params[name] = check_type(value[key], dict, f"{name}['{key}']")


# Cluster settings only the master's root may change (403 through the remote
# API): the commands nodes run (Ganeti forbids its compression tools too) and
# the directories hooks are run from and exports are replaced in, which
# Ganeti's opcode does not have.
CLUSTER_FORBIDDEN = ("compression_tools", "export_dir", "hooks_base_dir")


def cluster_params(body: Any) -> dict[str, Any]:
    """The body of Ganeti's ``PUT /2/modify`` as OpClusterSetParams' parameters.

    Ganeti's hypervisor parameters per hypervisor (``{"kvm": {...}}``) and
    backend parameters per group (``{"default": {...}}``) are taken as the
    flat dicts ganeti_lv has; Ganeti's ``nicparams`` (``{"default": {"mode":
    "bridged", "link": BRIDGE}}``) set the default bridge. 403 for a
    ``CLUSTER_FORBIDDEN`` setting, as Ganeti's for its forbidden ones.
    """
    params = body_object(body)
    for name in CLUSTER_FORBIDDEN:
        if name in params:
            raise forbidden(f"The parameter {name} cannot be set via RAPI")
    _per_key(params, "hvparams", constants.HYPERVISOR_KVM)
    _per_key(params, "beparams", _DEFAULT_GROUP)
    if "nicparams" in params:
        params["nicparams"] = check_type(params["nicparams"], dict, "nicparams")
        _per_key(params, "nicparams", _DEFAULT_GROUP)
        nic = dict(params.pop("nicparams"))
        mode = nic.pop("mode", "bridged")
        if mode != "bridged":
            raise bad_request(f"Invalid nicparams: NICs here are bridged, not {mode!r}")
        if set(nic) - {"link"}:
            raise bad_request(f"Invalid nicparams: {', '.join(sorted(set(nic) - {'link'}))}")
        if "link" in nic:
            if "default_bridge" in params:
                raise bad_request("Give the default bridge once: nicparams' link or default_bridge")
            params["default_bridge"] = nic["link"]
    return params


def _drop_common(params: dict[str, Any]) -> None:
    if "reason" in params:
        raise bad_request("Can't overwrite static parameters ['reason']")
    priority = params.pop("priority", 0)
    if isinstance(priority, bool) or priority not in _PRIORITIES:
        raise bad_request(
            f"Invalid body parameters: priority {priority!r} is none of"
            f" {', '.join(map(str, _PRIORITIES))}"
        )
    comment = params.pop("comment", None)
    if comment is not None and not isinstance(comment, str):
        raise bad_request(f"Invalid body parameters: comment {comment!r} is no string")
    depends = params.pop("depends", None)
    if depends:
        raise bad_request("Job dependencies ('depends') are not supported")


def fill_opcode(
    opcls: type[OpCode],
    body: Any,
    static: Mapping[str, Any],
    rename: Mapping[str, str] | None = None,
) -> OpCode:
    """The opcode of ``body``'s parameters and the resource's ``static`` ones, checked.

    ``rename`` maps a body name to the opcode's (Ganeti's ``PUT_RENAME``).
    """
    params = body_object(body)
    for old, new in (rename or {}).items():
        if old in params:
            if new in params:
                raise bad_request(
                    f"Parameter '{old}' was renamed to '{new}', but both are specified"
                )
            params[new] = params.pop(old)
    overwritten = sorted(set(params) & set(static))
    if overwritten:
        raise bad_request(f"Can't overwrite static parameters {overwritten!r}")
    _drop_common(params)
    known = {f.name for f in dataclasses.fields(opcls)} - opcls.INTERNAL
    unknown = sorted(set(params) - known)
    if unknown:
        raise bad_request(
            f"Invalid body parameters: {opcls.OP_ID} has no parameter"
            f" {', '.join(repr(u) for u in unknown)}"
        )
    params.update(static)
    try:
        op = opcls(**params)
        op.validate()
    except TypeError as err:
        raise bad_request(f"Invalid body parameters: {err}") from err
    except OpPrereqError as err:
        raise bad_request(f"Invalid body parameters: {err}") from err
    return op


def refuse_remote_export(op: OpCode) -> None:
    """400 for an export or its preparation to another cluster (mode ``remote``)."""
    if getattr(op, "mode", None) == constants.EXPORT_MODE_REMOTE:
        raise bad_request(
            "Export mode 'remote' (to another cluster) is not supported; use mode 'local'"
        )


def body_list(body: Any, name: str, default: Any = None) -> Any:
    """Body parameter ``name`` of a dict body, which must be a list or None."""
    params = body_object(body)
    value = params.get(name, default)
    if value is not None and not isinstance(value, list):
        raise bad_request(f"The '{name}' parameter should be a list")
    return value


def required(body: Any, name: str) -> Any:
    """Body parameter ``name`` (400 in Ganeti's words when it is missing)."""
    params = body_object(body)
    if name not in params:
        raise bad_request(f"Required parameter '{name}' is missing")
    return params[name]
