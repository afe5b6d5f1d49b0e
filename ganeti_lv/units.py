"""Parsing of sizes, booleans and typed parameter dicts (hvparams, beparams).

Used by the CLI (text from the command line) and by the LUs (values from
Python callers, which may be ints or the same strings). Every failure is an
``OpPrereqError`` with ``ECODE_INVAL`` so it reaches the user in Ganeti's words.
"""

from __future__ import annotations

import math
import re
from typing import Any

from ganeti_lv.constants import HVC_CHOICES, HVC_DEFAULTS, HVC_MAXIMUMS, HVC_MINIMUMS, HVC_PATHS
from ganeti_lv.errors import ECODE_INVAL, OpPrereqError
from ganeti_lv.hypervisor.migration_types import parse_caps

MIB = 1024 * 1024  # bytes

# a number ("512", "1.5", ".5") and a unit letter, alone or with B/iB ("G", "GB", "GiB"):
# a B without a unit letter would be bytes, which no size here is given in
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(?:([kmgtKMGT])(?:i?[bB])?)?\s*$")
_UNIT_FACTORS = {"k": 1 / 1024, "m": 1, "g": 1024, "t": 1024 * 1024}

_TRUE = ("1", "true", "yes", "on", "y")
_FALSE = ("0", "false", "no", "off", "n")


def parse_size(value: Any, what: str = "size", notes: list[str] | None = None) -> int:
    """Return ``value`` in MiB: ints are MiB; strings like "512", "512M", "1G", "1.5G".

    Fractions of a MiB are rounded up, as Ganeti's ParseUnit does (which
    also rounds up, further to a multiple of 4 MiB for its volume groups),
    and said: a note for the user is appended to ``notes``. Raises
    ECODE_INVAL for anything else, including booleans and negative numbers.
    """
    if isinstance(value, bool):
        raise OpPrereqError(f"Invalid {what} {value!r}", ECODE_INVAL)
    if isinstance(value, int):
        if value < 0:
            raise OpPrereqError(f"Invalid {what} {value!r}: must not be negative", ECODE_INVAL)
        return value
    if not isinstance(value, str):
        raise OpPrereqError(f"Invalid {what} {value!r}", ECODE_INVAL)
    match = _SIZE_RE.match(value)
    if not match:
        raise OpPrereqError(
            f"Invalid {what} '{value}': expected a number with an optional unit (M, G, T)",
            ECODE_INVAL,
        )
    number = float(match.group(1))
    mib = number * _UNIT_FACTORS[(match.group(2) or "m").lower()]
    if not math.isfinite(mib):
        raise OpPrereqError(f"Invalid {what} '{value}': too large", ECODE_INVAL)
    whole = int(mib)
    if whole == mib:
        return whole
    if notes is not None:
        notes.append(
            f"{what} {value.strip()} is not a whole number of MiB: rounded up to {whole + 1} MiB"
        )
    return whole + 1


def parse_bool(value: Any, what: str = "value") -> bool:
    """Parse yes/no, true/false, on/off, 1/0 (or a real bool)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise OpPrereqError(f"Invalid boolean {what} '{value}': use yes or no", ECODE_INVAL)


def parse_int(value: Any, what: str = "value") -> int:
    """Parse a non-negative integer."""
    if isinstance(value, bool):
        raise OpPrereqError(f"Invalid integer {what} {value!r}", ECODE_INVAL)
    try:
        number = int(str(value).strip()) if not isinstance(value, int) else value
    except ValueError as err:
        raise OpPrereqError(f"Invalid integer {what} '{value}'", ECODE_INVAL) from err
    if number < 0:
        raise OpPrereqError(f"Invalid {what} {number}: must not be negative", ECODE_INVAL)
    return number


# beparams holding memory sizes (MiB); "memory" is a shortcut for minmem = maxmem.
BE_MEMORY_KEYS = ("maxmem", "minmem")
BE_MEMORY_ALIAS = "memory"
# Ganeti's value that sets a parameter back to its default
VALUE_DEFAULT = "default"


def coerce_params(
    params: dict[str, Any],
    defaults: dict[str, Any],
    kind: str,
    size_keys: tuple[str, ...] = (),
    notes: list[str] | None = None,
) -> dict[str, Any]:
    """Check keys against ``defaults`` and convert values to the defaults' types.

    ``kind`` names the dict in errors ("hypervisor", "backend"). Keys in
    ``size_keys`` accept sizes ("128M"; rounding is noted in ``notes``).
    Unknown keys are ECODE_INVAL. A value of None (``-key``) or Ganeti's
    ``"default"`` becomes None: the key goes back to its default
    (``without_resets``, ``apply_changes``).
    """
    out: dict[str, Any] = {}
    for key, value in params.items():
        if key not in defaults:
            raise OpPrereqError(
                f"Unknown {kind} parameter '{key}' (valid: {', '.join(sorted(defaults))})",
                ECODE_INVAL,
            )
        if value is None or value == VALUE_DEFAULT:  # back to the default, as Ganeti's
            out[key] = None
            continue
        what = f"{kind} parameter '{key}'"
        default = defaults[key]
        if key in size_keys:
            out[key] = parse_size(value, what, notes)
        elif isinstance(default, bool):
            out[key] = parse_bool(value, what)
        elif isinstance(default, int):
            out[key] = parse_int(value, what)
        elif isinstance(default, float):
            try:
                out[key] = float(value)
            except (TypeError, ValueError) as err:
                raise OpPrereqError(f"Invalid {what} '{value}'", ECODE_INVAL) from err
        else:
            out[key] = "" if value is None else str(value)
    return out


def check_hv_bounds(key: str, value: int) -> None:
    """ECODE_INVAL unless the numeric hypervisor parameter ``key`` is within its bounds
    (``HVC_MINIMUMS``, ``HVC_MAXIMUMS``); checked when set and when used (a value
    stored before a bound existed)."""
    least, most = HVC_MINIMUMS.get(key), HVC_MAXIMUMS.get(key)
    if least is not None and value < least:
        raise OpPrereqError(
            f"Hypervisor parameter {key} must be at least {least}, not {value}", ECODE_INVAL
        )
    if most is not None and value > most:
        raise OpPrereqError(
            f"Hypervisor parameter {key} must be at most {most}, not {value}", ECODE_INVAL
        )


def migration_caps(text: str) -> dict[str, int]:
    """The migration capabilities ``text`` names (``parse_caps``); ECODE_INVAL for an
    unknown one, checked when set and when used."""
    try:
        return parse_caps(text)
    except ValueError as err:
        raise OpPrereqError(
            f"Invalid hypervisor parameter 'migration_caps': {err}", ECODE_INVAL
        ) from err


def coerce_hvparams(params: dict[str, Any]) -> dict[str, Any]:
    """Like ``coerce_params`` for hypervisor params; a word parameter takes one of its words.

    A typo (``migration_mode=Live``) would otherwise be stored and change
    what every later operation does (every migration non-live).
    """
    out = coerce_params(params, HVC_DEFAULTS, "hypervisor")
    for key in HVC_MINIMUMS.keys() | HVC_MAXIMUMS.keys():
        if out.get(key) is not None:
            check_hv_bounds(key, out[key])
    for key in HVC_PATHS:
        path = out.get(key)
        if path and not path.startswith("/"):
            raise OpPrereqError(
                f"Hypervisor parameter {key} must be an absolute path, not '{path}'", ECODE_INVAL
            )
    if out.get("migration_caps"):  # a typo would refuse every later migration
        migration_caps(out["migration_caps"])
    for key, words in HVC_CHOICES.items():
        if out.get(key) is not None and out[key] not in words:
            raise OpPrereqError(
                f"Invalid hypervisor parameter '{key}' '{out[key]}' (valid: {', '.join(words)})",
                ECODE_INVAL,
            )
    return out


def coerce_beparams(
    params: dict[str, Any], defaults: dict[str, Any], notes: list[str] | None = None
) -> dict[str, Any]:
    """Like ``coerce_params`` for backend params, expanding ``memory`` to min/maxmem."""
    params = dict(params)
    if BE_MEMORY_ALIAS in params:
        memory = params.pop(BE_MEMORY_ALIAS)
        if memory is not None and memory != VALUE_DEFAULT:
            memory = parse_size(memory, "backend parameter 'memory'", notes)
        for key in BE_MEMORY_KEYS:
            if key in params:
                raise OpPrereqError(
                    f"Backend parameter 'memory' cannot be combined with '{key}'", ECODE_INVAL
                )
            params[key] = memory
    out = coerce_params(params, defaults, "backend", size_keys=BE_MEMORY_KEYS, notes=notes)
    if out.get("vcpus") is not None and out["vcpus"] < 1:
        raise OpPrereqError("Backend parameter 'vcpus' must be at least 1", ECODE_INVAL)
    for key in BE_MEMORY_KEYS:
        if out.get(key) is not None and out[key] < 1:
            raise OpPrereqError(f"Backend parameter '{key}' must be positive", ECODE_INVAL)
    return out


def without_resets(params: dict[str, Any]) -> dict[str, Any]:
    """``params`` without the keys set back to their default (value None)."""
    return {key: value for key, value in params.items() if value is not None}


def apply_changes(current: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """``current`` with ``changes`` merged in; a change to None removes the key."""
    merged = {**current, **changes}
    return without_resets(merged)
