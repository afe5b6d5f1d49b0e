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

After every test on the local cluster each node daemon must run
(``node_daemons_run_after_each_test``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest
from support.clusterfixture import EXTERNAL_ENV, local_cluster_possible
from support.timeouts import scaled_timeout_mark, timeout_scale

from ganeti_lv.devcluster.cluster import DevCluster
from ganeti_lv.devcluster.layout import DAEMONS

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
    """A test on the local cluster leaves every node daemon running.

    Tests that stop a daemon start it again themselves, so a daemon found
    gone here died on its own or by mistake. The test fails with how it
    ended (the reaper's record) and the end of its log, and the daemon is
    started again: one death is reported once, with its cause, instead of
    failing every later test that needs the node.
    """
    yield
    if "devcluster" not in request.fixturenames:
        return
    cluster = request.getfixturevalue("devcluster")
    if not isinstance(cluster, DevCluster):
        return
    gone = [
        (node, name)
        for node, entry in cluster.status()["nodes"].items()
        for name in DAEMONS
        if entry[name] is None
    ]
    if not gone:
        return
    report = [_daemon_report(cluster, node, name) for node, name in gone]
    for node, name in gone:
        cluster.start_daemon(node, name)
    pytest.fail("node daemons gone after the test (started again):\n" + "\n".join(report))


def _daemon_report(cluster: Any, node: str, name: str) -> str:
    """What is known of how ``name`` on ``node`` ended: the reaper's record, its log's end."""
    lines = [f"{name} on {node}: {cluster.daemon_end(node, name) or 'no record of its end'}"]
    log = cluster.host_path(node, f"/var/log/libvirt/{name}.log")
    if os.path.exists(log):
        with open(log, encoding="utf-8", errors="replace") as fh:
            tail = fh.read().splitlines()[-15:]
        lines += [f"  {log}:", *(f"    {line}" for line in tail)]
    return "\n".join(lines)
