"""Fixtures shared by all tests.

``devcluster``, ``cluster_info``, ``local_devcluster``: the session's local
cluster (tests/support/clusterfixture.py), one for tests/cluster and
tests/peer alike.

``local_sshd``: a real OpenSSH sshd on 127.0.0.1 (tests/support/sshd.py),
started once per session and stopped by PID at the end. Its attributes
``host``, ``port``, ``user``, ``key_file``, ``known_hosts_file`` and
``host_key_line`` describe it; ``client()`` returns a connected-on-demand
``ganeti_lv.node.ssh.SshClient``. Tests needing it are skipped when sshd is not
available (not root or openssh-server missing).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

try:
    from tests.support.clusterfixture import cluster_info, devcluster, local_devcluster
    from tests.support.sshd import LocalSshd, sshd_available
except ImportError:  # tests/ itself is on sys.path (pytest's rootdir insertion)
    from support.clusterfixture import (  # type: ignore[no-redef]
        cluster_info,
        devcluster,
        local_devcluster,
    )
    from support.sshd import LocalSshd, sshd_available  # type: ignore[no-redef]

__all__ = ["cluster_info", "devcluster", "local_devcluster"]


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
