"""ganeti_lv: a libvirt-backed virtualization cluster driver in Ganeti's style.

Ops tooling uses :class:`Client`::

    from ganeti_lv import Client
    from ganeti_lv.opcodes import OpInstanceMigrate

    Client(data_dir="/var/lib/ganeti-lv").submit(OpInstanceMigrate(instance_name="web1"))
"""

from __future__ import annotations

__version__ = "0.1.0"

from ganeti_lv.client import Client

__all__ = ["Client", "__version__"]
