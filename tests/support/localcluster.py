"""Whether the local cluster can run here (shared by the cluster and peer test fixtures)."""

from __future__ import annotations

import os
import shutil

EXTERNAL_ENV = "GANETI_LV_TEST_CLUSTER"
TOOLS = ("ip", "nsenter", "unshare", "libvirtd", "virtlogd", "virsh", "qemu-system-x86_64")


def local_cluster_possible() -> str | None:
    """Why the local cluster cannot run here (None when it can)."""
    if os.geteuid() != 0:
        return "the local cluster needs root"
    for tool in TOOLS:
        if shutil.which(tool) is None and not os.path.exists(f"/usr/sbin/{tool}"):
            return f"the local cluster needs {tool}"
    return None
