"""Session fixtures of the Ganeti peer tests.

``ganeti_peer``: a real 2-node Ganeti 3.0 cluster
(:class:`ganeti_lv.devcluster.peer.PeerCluster`) brought up once per session
in a temporary directory under /var/tmp, on a subnet 10.251.N.0/24 of its
own (the local cluster uses 10.250.N.0/24), and brought down at the end,
also when tests fail or the session is interrupted; the tear-down itself
checks that nothing of it is left. ``GANETI_LV_TEST_PEER=DIR`` uses the
peer already up in DIR instead (``gnt-lv-devcluster peer up --dir DIR``),
which is left as it is. No instance runs until a test asks for
one (``peer_instance``), so the peer and the local cluster's tests stay
within the machine's two running guests.

Tests here are marked ``ganeti_peer`` and ``cluster``; they get a timeout of
their own and are skipped when the machine cannot run the peer.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator

import pytest
from support.guardian import peer_down
from support.teardown import torn_down_at_exit

from ganeti_lv.devcluster import peerinstall
from ganeti_lv.devcluster import peerlayout as pl
from ganeti_lv.devcluster.netns import free_subnet
from ganeti_lv.devcluster.peer import PeerCluster

PEER_ENV = "GANETI_LV_TEST_PEER"
PEER_TEST_TIMEOUT = 600
TOOLS = ("ip", "nsenter", "unshare", "qemu-system-x86_64", "ssh-keygen", "/usr/sbin/sshd")


def peer_possible() -> str | None:
    """Why the Ganeti peer cannot run here (None when it can)."""
    if os.geteuid() != 0:
        return "the Ganeti peer needs root"
    for tool in TOOLS:
        if shutil.which(tool) is None:
            return f"the Ganeti peer needs {tool}"
    if peerinstall.missing_packages() and shutil.which("apt-get") is None:
        return "the Ganeti peer needs Debian's ganeti packages (no apt-get here)"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Timeouts for peer tests; skip them where the peer cannot run."""
    why_not = peer_possible()
    for item in items:
        if item.get_closest_marker("ganeti_peer") is None:
            continue
        if item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(PEER_TEST_TIMEOUT))
        if why_not:
            item.add_marker(pytest.mark.skip(reason=why_not))


@pytest.fixture(scope="session")
def ganeti_peer() -> Iterator[PeerCluster]:
    """The session's Ganeti peer, up without instances."""
    existing = os.environ.get(PEER_ENV)
    if existing:
        kept = PeerCluster(existing)
        if not kept.status()["running"]:
            pytest.fail(f"{PEER_ENV}={existing}: no running peer there")
        yield kept
        return
    directory = tempfile.mkdtemp(prefix="glv-peer-test-", dir="/var/tmp")
    peer = PeerCluster(directory)

    def teardown() -> None:
        peer.down()  # failed, its record stays for the guardian's second try
        shutil.rmtree(directory, ignore_errors=True)

    with torn_down_at_exit(teardown, peer_down(directory), directory):
        peer.up(subnet=free_subnet(base=pl.SUBNET_BASE))
        yield peer


@pytest.fixture
def peer_instance(ganeti_peer: PeerCluster) -> Iterator[str]:
    """The test guest as a sharedfile Ganeti instance on node1, removed afterwards."""
    name = "glvpeer1"
    ganeti_peer.add_instance(name, node="node1", template="sharedfile")
    try:
        yield name
    finally:
        ganeti_peer.remove_instance(name)
