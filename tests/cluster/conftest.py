"""Collection rules of the cluster tests.

The session fixtures ``devcluster``, ``cluster_info`` and
``local_devcluster`` live in tests/support/clusterfixture.py (imported by
tests/conftest.py, so the peer tests share the same cluster). With
``GANETI_LV_TEST_CLUSTER=/path/to/cluster.json`` tests marked ``faults``
are skipped.

Tests marked ``cluster`` get a per-test timeout (``CLUSTER_TEST_TIMEOUT``)
unless they set their own ``@pytest.mark.timeout``; they are skipped when
the machine cannot run the local cluster (not root, tools missing).
"""

from __future__ import annotations

import os

import pytest
from support.clusterfixture import EXTERNAL_ENV, local_cluster_possible

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
