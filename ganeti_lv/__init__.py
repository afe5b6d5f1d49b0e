"""ganeti_lv: a libvirt-backed virtualization cluster driver in Ganeti's style.

Ops tooling uses :class:`Client`::

    from ganeti_lv import Client
    from ganeti_lv.opcodes import OpInstanceMigrate

    Client(data_dir="/var/lib/ganeti-lv").submit(OpInstanceMigrate(instance_name="web1"))
"""

from __future__ import annotations

__version__ = "0.1.0"

TYPE_CHECKING = False  # not ``typing``'s: gnt-lv starts without importing it
if TYPE_CHECKING:
    from typing import Any

    from ganeti_lv.client import Client

__all__ = ["Client", "__version__"]


def __getattr__(name: str) -> Any:
    # ``Client`` is imported on first use: ``import ganeti_lv`` (and ``gnt-lv
    # --version``/``--help``) then does not load the whole framework.
    if name == "Client":
        from ganeti_lv.client import Client

        return Client
    raise AttributeError(f"module 'ganeti_lv' has no attribute {name!r}")
