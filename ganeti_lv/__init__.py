"""ganeti_lv: a libvirt-backed virtualization cluster driver in Ganeti's style.

Ops tooling uses :class:`Client`::

    from ganeti_lv import Client
    from ganeti_lv.opcodes import OpInstanceMigrate

    Client(data_dir="/var/lib/ganeti-lv").submit(OpInstanceMigrate(instance_name="web1"))

The client submits to the master daemon when one runs for the data dir, and
otherwise runs the opcode in its own process.
"""

from __future__ import annotations

from ganeti_lv.client import Client
from ganeti_lv.constants import RELEASE_VERSION

__version__ = RELEASE_VERSION

__all__ = ["Client", "__version__"]
