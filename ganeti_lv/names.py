"""The rule for names of clusters, nodes, instances and exports, said in full when broken.

A name ends up in file paths, libvirt domain names and remote shell
commands, so it is a DNS host name label's subset (``constants.NAME_RE``).
Ganeti is more lenient (``[a-z0-9._-]``, up to 255 characters, names are
lower-cased); the errors here state ganeti_lv's rule and what in the name
breaks it, so that a refused name can be corrected without guessing. An
instance's name must not end in ``.new`` or ``.old`` either: an export dir
uses those for the export being written and the one it replaces.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re

from ganeti_lv import constants
from ganeti_lv.errors import ECODE_INVAL, ECODE_NOTUNIQUE, OpPrereqError

NAME_RULE = (
    f"1 to {constants.MAX_NAME_LENGTH} characters: lower-case letters a-z, digits 0-9, '-' and '.',"
    " starting and ending with a letter or a digit"
)
_ALLOWED = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-.")


def _what_breaks(name: str) -> str:
    if not name:
        return "it is empty"
    if len(name) > constants.MAX_NAME_LENGTH:
        return f"it is {len(name)} characters long"
    bad = sorted({ch for ch in name if ch not in _ALLOWED})
    if bad:
        if all(ch.isascii() and ch.isupper() for ch in bad):
            return f"it has upper-case letters (use {name.lower()!r})"
        return "it contains " + ", ".join(repr(ch) for ch in bad)
    return f"it starts or ends with {name[0] if not name[0].isalnum() else name[-1]!r}"


def name_problem(name: object, what: str) -> str | None:
    """None when ``name`` is valid, else the message: the name, what breaks the rule, the rule."""
    if isinstance(name, str) and constants.NAME_RE.match(name):
        return None
    reason = _what_breaks(name) if isinstance(name, str) else f"it is a {type(name).__name__}"
    return f"Invalid {what} name {name!r}: {reason}; a name is {NAME_RULE}"


def instance_name_problem(name: object) -> str | None:
    """As :func:`name_problem`, and an instance name must not end like an export's work folder."""
    problem = name_problem(name, "instance")
    if problem is not None or not isinstance(name, str):
        return problem
    for suffix in (constants.EXPORT_NEW_SUFFIX, constants.EXPORT_OLD_SUFFIX):
        if name.endswith(suffix):
            return (
                f"Invalid instance name {name!r}: it ends with {suffix!r}, which the export"
                f" directories keep for an export being written or replaced"
            )
    return None


def check_name(name: object, what: str) -> None:
    """Raise OpPrereqError (ECODE_INVAL) stating the rule unless ``name`` is valid."""
    problem = name_problem(name, what)
    if problem is not None:
        raise OpPrereqError(problem, ECODE_INVAL)


def check_address(address: str | None, what: str) -> None:
    """Raise OpPrereqError (ECODE_INVAL) unless ``address`` (when given: not None or
    empty) is one IP address or one host name: it is written into known_hosts, SSH
    and libvirt URIs, where a comma, a blank or a bracket would make it several or
    another."""
    if not address:
        return
    with contextlib.suppress(ValueError):
        ipaddress.ip_address(address)
        return
    if not constants.NAME_RE.match(address.lower()):
        raise OpPrereqError(
            f"Invalid {what} {address!r}: not an IP address, and not a host name ({NAME_RULE})",
            ECODE_INVAL,
        )


# Ganeti's rule for tags: its import reads them back split at white space
MAX_TAG_LENGTH = 128
MAX_TAGS = 4096
_TAG_RE = re.compile(r"^[\w.+*/:@-]+\Z")


def check_tags(tags: list[str], what: str) -> None:
    """Raise OpPrereqError (ECODE_INVAL) unless every tag keeps Ganeti's rule."""
    if len(tags) > MAX_TAGS:
        raise OpPrereqError(
            f"Too many tags for {what}: {len(tags)} (at most {MAX_TAGS})", ECODE_INVAL
        )
    for tag in tags:
        if not isinstance(tag, str) or not _TAG_RE.match(tag) or len(tag) > MAX_TAG_LENGTH:
            raise OpPrereqError(
                f"Invalid tag {tag!r} for {what}: a tag is 1 to {MAX_TAG_LENGTH} letters, digits"
                " or '_.+*/:@-'",
                ECODE_INVAL,
            )


def check_instance_name(name: object) -> None:
    """Raise OpPrereqError (ECODE_INVAL) stating the rule unless ``name`` is a valid instance's."""
    problem = instance_name_problem(name)
    if problem is not None:
        raise OpPrereqError(problem, ECODE_INVAL)


def device_name(name: str | None) -> str:
    """The name a disk or NIC given ``name`` gets: "" (none) for None, "" and, as in
    Ganeti, "none" in any case."""
    return "" if name is None or name.lower() == "none" else name


def check_device_names(kind: str, names: list[object]) -> None:
    """Ganeti's rule for the names of an instance's disks or NICs (``kind``), in
    order: strings, none a number (ECODE_INVAL: it would read as an index), none
    used twice (ECODE_NOTUNIQUE); unnamed ones (see ``device_name``) are left alone."""
    seen: dict[str, int] = {}
    for idx, name in enumerate(names):
        if name is not None and not isinstance(name, str):
            raise OpPrereqError(f"Invalid name {name!r} of {kind} {idx}", ECODE_INVAL)
        name = device_name(name)
        if not name:
            continue
        try:
            int(name)
        except ValueError:
            pass
        else:
            raise OpPrereqError(
                f"Invalid {kind} name '{name}': purely numeric names are not allowed",
                ECODE_INVAL,
            )
        if name in seen:
            raise OpPrereqError(
                f"{kind} name '{name}' of {kind} {idx} is already the name of {kind} {seen[name]}",
                ECODE_NOTUNIQUE,
            )
        seen[name] = idx
