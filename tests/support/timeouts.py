"""How much more time the session's cluster needs than the local one: test timeouts scale.

The cluster tests' limits (per-test timeouts, how long they wait for a
console line or a migration's progress) are set for the local cluster,
whose guests run under TCG on the test machine itself. On a cluster whose
nodes are themselves emulated (the Vagrant cluster under TCG: its guests
run under TCG inside nodes under TCG) everything takes several times
longer. The factor comes from, in this order:

- ``GANETI_LV_TEST_TIMEOUT_SCALE`` (a number above 0);
- ``timeout_scale`` in the description of an external cluster
  (``GANETI_LV_TEST_CLUSTER``; the Vagrant provisioning writes it);
- 1.

Only limits scale: what a test asserts about the code does not.
"""

from __future__ import annotations

import functools
import json
import math
import os

import pytest

SCALE_ENV = "GANETI_LV_TEST_TIMEOUT_SCALE"
EXTERNAL_ENV = "GANETI_LV_TEST_CLUSTER"


def parse_scale(value: object, where: str) -> float:
    """``value`` as a factor above 0; ``ValueError`` naming ``where`` otherwise."""
    try:
        scale = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        scale = math.nan
    if not math.isfinite(scale) or scale <= 0 or isinstance(value, bool):
        raise ValueError(f"{where} must be a number above 0, not {value!r}")
    return scale


def read_scale(environ: dict[str, str] | os._Environ[str]) -> float:
    """The factor for ``environ`` (see the module docstring)."""
    text = environ.get(SCALE_ENV)
    if text:
        return parse_scale(text, SCALE_ENV)
    path = environ.get(EXTERNAL_ENV)
    if path:
        with open(path, encoding="utf-8") as fh:
            info = json.load(fh)
        if "timeout_scale" in info:
            return parse_scale(info["timeout_scale"], f"timeout_scale in {path}")
    return 1.0


@functools.cache
def timeout_scale() -> float:
    """The session's factor (read once)."""
    return read_scale(os.environ)


def scaled(seconds: float) -> float:
    """``seconds`` of the local cluster on the session's cluster."""
    return seconds * timeout_scale()


def scaled_timeout_mark(
    mark: pytest.Mark | None, default: float, scale: float
) -> pytest.MarkDecorator:
    """A pytest-timeout marker: ``mark``'s limit (``default`` without one) times ``scale``.

    The method (``method=`` or second argument) is kept; no limit (0 or
    None) stays none.
    """
    args: tuple[object, ...] = mark.args if mark is not None else ()
    kwargs = dict(mark.kwargs) if mark is not None else {}
    seconds = kwargs.pop("timeout", args[0] if args else default)
    if seconds:
        seconds = float(seconds) * scale  # type: ignore[arg-type]
    return pytest.mark.timeout(seconds, *args[1:], **kwargs)
