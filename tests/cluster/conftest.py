"""Collection rules of the cluster tests.

The session fixtures ``devcluster``, ``cluster_info`` and
``local_devcluster`` live in tests/support/clusterfixture.py (imported by
tests/conftest.py, so the peer tests share the same cluster). With
``GANETI_LV_TEST_CLUSTER=/path/to/cluster.json`` tests marked ``faults``
are skipped, and so are tests marked ``min_nodes(N)`` when that cluster has
fewer than N nodes (the local cluster has 3).

Tests marked ``cluster`` get a per-test timeout (``CLUSTER_TEST_TIMEOUT``)
unless they set their own ``@pytest.mark.timeout``, both multiplied by the
session's timeout scale (tests/support/timeouts.py); they are skipped when
the machine cannot run the local cluster (not root, tools missing).

After every test on the local cluster each node daemon must run again
(``node_daemons_run_after_each_test``); a libvirtd that crashed and was
started again by its reaper, as init restarts it on a real node, is a
warning naming how it ended.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterator

import pytest
from support.clusterfixture import EXTERNAL_ENV, local_cluster_possible
from support.nodedaemons import restart_gone, restarted_after_crash, running_daemons
from support.timeouts import scaled_timeout_mark, timeout_scale

from ganeti_lv.devcluster.cluster import DevCluster

CLUSTER_TEST_TIMEOUT = 300


def _external_nodes(path: str) -> int:
    with open(path, encoding="utf-8") as fh:
        return len(json.load(fh)["nodes"])


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Per-test timeouts for cluster tests; skip what cannot run here."""
    external = os.environ.get(EXTERNAL_ENV)
    why_not = None if external else local_cluster_possible()
    try:
        scale = timeout_scale()
    except (OSError, ValueError) as err:
        raise pytest.UsageError(str(err)) from None
    nodes = _external_nodes(external) if external else None
    for item in items:
        if item.get_closest_marker("cluster") is None:
            continue
        timeout = item.get_closest_marker("timeout")
        if timeout is None or scale != 1:
            # first of the item's own markers: the closest, over the module's and its own
            mark = scaled_timeout_mark(timeout, CLUSTER_TEST_TIMEOUT, scale)
            item.add_marker(mark, append=False)
        needs = item.get_closest_marker("min_nodes")
        if why_not:
            item.add_marker(pytest.mark.skip(reason=why_not))
        elif external and item.get_closest_marker("faults") is not None:
            item.add_marker(
                pytest.mark.skip(
                    reason=f"fault injection needs the local cluster ({EXTERNAL_ENV} is set)"
                )
            )
        elif nodes is not None and needs is not None and nodes < needs.args[0]:
            item.add_marker(
                pytest.mark.skip(
                    reason=f"needs {needs.args[0]} nodes; the cluster in {external} has {nodes}"
                )
            )


@pytest.fixture(autouse=True)
def node_daemons_run_after_each_test(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test on the local cluster leaves every node daemon running (tests/support/nodedaemons.py).

    A daemon gone after the test is started again, and the test errors at
    teardown with how the daemon ended. A libvirtd that crashed during the
    test and was started again by its reaper (as by init on a real node) is
    a warning: the test's own checks tell whether ganeti_lv coped.
    """
    uses_cluster = "devcluster" in request.fixturenames
    cluster = request.getfixturevalue("devcluster") if uses_cluster else None
    if not isinstance(cluster, DevCluster):
        yield
        return
    before = running_daemons(cluster)
    yield
    for crash in restarted_after_crash(cluster, before):
        warnings.warn(f"a node daemon crashed and was started again:\n{crash}", stacklevel=1)
    report = restart_gone(cluster, before)
    if report:
        pytest.fail(f"node daemons gone after the test (started again):\n{report}")
