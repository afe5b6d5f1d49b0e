"""The one place where libvirt errors become ganeti_lv errors.

* no such domain                         -> InstanceNotFound
* cannot connect, connection lost        -> NodeUnreachable
* everything else libvirt reports        -> HypervisorError

Use ``libvirt_errors(node, "what was attempted")`` as a context manager
around libvirt calls; it raises the most specific error ``from`` the original.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import libvirt

from ganeti_lv.errors import HypervisorError, InstanceNotFound, NodeError, NodeUnreachable

# Error codes meaning the daemon is not reachable (whatever the domain).
_UNREACHABLE_CODES = frozenset(
    {
        libvirt.VIR_ERR_NO_CONNECT,
        libvirt.VIR_ERR_RPC,
        libvirt.VIR_ERR_AUTH_FAILED,
        libvirt.VIR_ERR_AUTH_UNAVAILABLE,
    }
)
# Error domains of the client side of the connection: a system or internal
# error from these is a broken transport ("client socket is closed",
# "Cannot recv data", "Failed to connect socket").
_TRANSPORT_DOMAINS = frozenset({libvirt.VIR_FROM_RPC, libvirt.VIR_FROM_REMOTE})
_TRANSPORT_CODES = frozenset(
    {
        libvirt.VIR_ERR_SYSTEM_ERROR,
        libvirt.VIR_ERR_INTERNAL_ERROR,
        libvirt.VIR_ERR_OPERATION_INVALID,
    }
)


def is_connection_error(err: libvirt.libvirtError) -> bool:
    """True when ``err`` says the connection to libvirtd is unusable."""
    code = err.get_error_code()
    if code in _UNREACHABLE_CODES:
        return True
    return err.get_error_domain() in _TRANSPORT_DOMAINS and code in _TRANSPORT_CODES


def is_keepalive_timeout(err: libvirt.libvirtError) -> bool:
    """True when keepalive declared the node dead: it answered none of the probes.

    libvirt gives this no code of its own: the client fails every call in
    flight with "connection closed due to keepalive timeout". The message is
    libvirt's untranslated one (the process keeps the C locale for messages);
    were it translated, such a call would be made once more and wait out
    the connect timeout, as before this check.
    """
    message = err.get_error_message() or ""
    return err.get_error_domain() == libvirt.VIR_FROM_RPC and "keepalive timeout" in message


def translate(err: libvirt.libvirtError, node: str | None, what: str = "") -> NodeError:
    """Return the ganeti_lv error for a libvirt error (not raised)."""
    detail = err.get_error_message() or str(err)
    text = f"{what}: {detail}" if what else detail
    if node:
        text = f"{text} (node {node})"
    if err.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
        return InstanceNotFound(text, node=node)
    if is_connection_error(err):
        return NodeUnreachable(text, node=node)
    return HypervisorError(text, node=node)


@contextmanager
def libvirt_errors(node: str | None, what: str = "") -> Iterator[None]:
    """Re-raise libvirt errors raised inside the block as ganeti_lv errors."""
    try:
        yield
    except libvirt.libvirtError as err:
        raise translate(err, node, what) from err


def _ignore_libvirt_errors(_ctx: object, _err: object) -> None:
    """libvirt's default handler prints every error to stderr; errors are raised instead."""


libvirt.registerErrorHandler(_ignore_libvirt_errors, None)
