"""Session fixtures of the cluster tests.

``devcluster``: a 3-node local cluster (network namespaces with real
libvirtd, qemu and sshd) brought up once per session in a temporary
directory under /var/tmp on a subnet 10.250.N.0/24 of its own, and brought
down at the end, also when tests fail or the session is interrupted.
Setting ``GANETI_LV_TEST_CLUSTER=/path/to/cluster.json`` points the same
tests at an existing cluster (e.g. the Vagrant one): ``devcluster`` is then
an ``ExternalCluster`` and tests marked ``faults`` are skipped.
``cluster_info`` is the cluster description (cluster.json) either way.

Tests marked ``cluster`` get a per-test timeout (``CLUSTER_TEST_TIMEOUT``)
unless they set their own ``@pytest.mark.timeout``; they are skipped when
the machine cannot run the local cluster (not root, tools missing).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest
from support.teardown import torn_down_at_exit

from ganeti_lv.devcluster.cluster import DevCluster
from ganeti_lv.devcluster.external import ExternalCluster
from ganeti_lv.devcluster.netns import free_subnet

EXTERNAL_ENV = "GANETI_LV_TEST_CLUSTER"
CLUSTER_TEST_TIMEOUT = 300
TOOLS = ("ip", "nsenter", "unshare", "libvirtd", "virtlogd", "virsh", "qemu-system-x86_64")


def local_cluster_possible() -> str | None:
    """Why the local cluster cannot run here (None when it can)."""
    if os.geteuid() != 0:
        return "the local cluster needs root"
    for tool in TOOLS:
        if shutil.which(tool) is None and not os.path.exists(f"/usr/sbin/{tool}"):
            return f"the local cluster needs {tool}"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Per-test timeouts for cluster tests; skip what cannot run here."""
    external = os.environ.get(EXTERNAL_ENV)
    why_not = None if external else local_cluster_possible()
    for item in items:
        if item.get_closest_marker("cluster") is None:
            continue
        if item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(CLUSTER_TEST_TIMEOUT))
        if why_not:
            item.add_marker(pytest.mark.skip(reason=why_not))
        elif external and item.get_closest_marker("faults") is not None:
            item.add_marker(
                pytest.mark.skip(
                    reason=f"fault injection needs the local cluster ({EXTERNAL_ENV} is set)"
                )
            )


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
        try:
            cluster.down()
        finally:
            shutil.rmtree(directory, ignore_errors=True)

    with torn_down_at_exit(teardown):
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
