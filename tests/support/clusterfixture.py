"""The session's local cluster, shared by the cluster and the peer tests.

``devcluster``: a 3-node local cluster (network namespaces with real
libvirtd, qemu and sshd) brought up once per session in a temporary
directory under /var/tmp on a subnet 10.250.N.0/24 of its own, and brought
down at the end, also when tests fail or the session is interrupted.
Setting ``GANETI_LV_TEST_CLUSTER=/path/to/cluster.json`` points the same
tests at an existing cluster (e.g. the Vagrant one): ``devcluster`` is then
an ``ExternalCluster``. ``cluster_info`` is the cluster description
(cluster.json) either way; ``session_guest()`` the test guest its nodes have.

The fixtures are defined here and imported by tests/conftest.py only, so
tests/cluster and tests/peer (the conformance tests compare the local
cluster with the Ganeti peer) share one cluster per session.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest

from ganeti_lv.devcluster.cluster import DevCluster
from ganeti_lv.devcluster.external import ExternalCluster
from ganeti_lv.devcluster.guest import build_guest
from ganeti_lv.devcluster.netns import free_subnet

try:
    from tests.support.guardian import devcluster_down
    from tests.support.teardown import torn_down_at_exit
    from tests.support.timeouts import EXTERNAL_ENV
except ImportError:  # tests/ itself is on sys.path (pytest's rootdir insertion)
    from support.guardian import devcluster_down  # type: ignore[no-redef]
    from support.teardown import torn_down_at_exit  # type: ignore[no-redef]
    from support.timeouts import EXTERNAL_ENV  # type: ignore[no-redef]

__all__ = ["EXTERNAL_ENV", "cluster_info", "devcluster", "local_devcluster", "session_guest"]
TOOLS = ("ip", "nsenter", "unshare", "libvirtd", "virtlogd", "virsh", "qemu-system-x86_64")


def local_cluster_possible() -> str | None:
    """Why the local cluster cannot run here (None when it can)."""
    if os.geteuid() != 0:
        return "the local cluster needs root"
    for tool in TOOLS:
        if shutil.which(tool) is None and not os.path.exists(f"/usr/sbin/{tool}"):
            return f"the local cluster needs {tool}"
    return None


def session_guest() -> tuple[str, str]:
    """(kernel, initrd) of the test guest on the session cluster's nodes.

    The local cluster's nodes share this machine's guest cache; an external
    cluster's description names the copy every one of its nodes has.
    """
    external = os.environ.get(EXTERNAL_ENV)
    if external:
        guest = ExternalCluster(external).info["guest"]
        return guest["kernel"], guest["initrd"]
    image = build_guest()
    return image.kernel, image.initrd


@pytest.fixture(scope="session")
def devcluster() -> Iterator[Any]:
    """The session's cluster: a local 3-node DevCluster, or the external one."""
    external = os.environ.get(EXTERNAL_ENV)
    if external:
        yield ExternalCluster(external)
        return
    why_not = local_cluster_possible()
    if why_not:
        pytest.skip(why_not)
    directory = tempfile.mkdtemp(prefix="glv-test-", dir="/var/tmp")
    cluster = DevCluster(directory)

    def teardown() -> None:
        cluster.down()  # failed, its record stays for the guardian's second try
        shutil.rmtree(directory, ignore_errors=True)

    with torn_down_at_exit(teardown, devcluster_down(directory), directory):
        cluster.up(nodes=3, subnet=free_subnet())
        yield cluster


@pytest.fixture(scope="session")
def cluster_info(devcluster: Any) -> dict[str, Any]:
    """The session cluster's description (cluster.json)."""
    return dict(devcluster.info)


@pytest.fixture
def local_devcluster(devcluster: Any) -> DevCluster:
    """The session's cluster when it is the local one (skips otherwise)."""
    if not isinstance(devcluster, DevCluster):
        pytest.skip("needs the local namespace cluster")
    return devcluster
