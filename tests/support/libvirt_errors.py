"""libvirt errors as libvirtd reports them, for unit tests of the error handling."""

from __future__ import annotations

import libvirt


def libvirt_error(
    code: int, domain: int = libvirt.VIR_FROM_QEMU, message: str = "boom"
) -> libvirt.libvirtError:
    """A libvirtError carrying ``code`` and ``domain`` (as if raised by a call)."""
    err = libvirt.libvirtError(message)
    err.err = (code, domain, message, 2, None, None, None, -1, -1)
    return err


def connection_lost() -> libvirt.libvirtError:
    """What a call on a connection whose peer reset it raises (over TLS)."""
    return libvirt_error(
        libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_FROM_RPC, "Cannot recv data: Input/output error"
    )
