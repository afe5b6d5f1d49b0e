"""Session fixtures of the cluster tests.

``devcluster`` (defined in tests/conftest.py, so that the Ganeti peer
tests share it): a 3-node local cluster (network namespaces with real
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
from typing import Any

import pytest
from support.localcluster import EXTERNAL_ENV, local_cluster_possible

from ganeti_lv.devcluster.cluster import DevCluster

CLUSTER_TEST_TIMEOUT = 300


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


@pytest.fixture
def local_devcluster(devcluster: Any) -> DevCluster:
    """The session's cluster when it is the local one (skips otherwise)."""
    if not isinstance(devcluster, DevCluster):
        pytest.skip("needs the local namespace cluster")
    return devcluster
