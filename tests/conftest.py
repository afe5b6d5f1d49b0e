"""Fixtures shared by all tests.

``local_sshd``: a real OpenSSH sshd on 127.0.0.1 (tests/support/sshd.py),
started once per session and stopped by PID at the end. Its attributes
``host``, ``port``, ``user``, ``key_file``, ``known_hosts_file`` and
``host_key_line`` describe it; ``client()`` returns a connected-on-demand
``ganeti_lv.node.ssh.SshClient``. Tests needing it are skipped when sshd is not
available (not root or openssh-server missing).

``devcluster`` and ``cluster_info``: the session's local cluster (see
tests/cluster/conftest.py), here so that the cluster tests and the Ganeti
peer tests (tests/peer) share one cluster per session.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest

try:
    from tests.support.sshd import LocalSshd, sshd_available
except ImportError:  # tests/ itself is on sys.path (pytest's rootdir insertion)
    from support.sshd import LocalSshd, sshd_available  # type: ignore[no-redef]
try:
    from tests.support.localcluster import EXTERNAL_ENV, local_cluster_possible
    from tests.support.teardown import torn_down_at_exit
except ImportError:
    from support.localcluster import (  # type: ignore[no-redef]
        EXTERNAL_ENV,
        local_cluster_possible,
    )
    from support.teardown import torn_down_at_exit  # type: ignore[no-redef]

from ganeti_lv.devcluster.cluster import DevCluster
from ganeti_lv.devcluster.external import ExternalCluster
from ganeti_lv.devcluster.netns import free_subnet


@pytest.fixture(scope="session")
def local_sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSshd]:
    """A real sshd on loopback for the whole test session."""
    if not sshd_available():
        pytest.skip("needs root and /usr/sbin/sshd")
    sshd = LocalSshd(str(tmp_path_factory.mktemp("sshd")))
    sshd.start()
    try:
        yield sshd
    finally:
        sshd.stop()


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
