"""Ganeti's own cluster tools read ganeti_lv through its remote API, as they read Ganeti.

``hbal`` and ``hroller`` (Debian's ganeti-htools, installed with the Ganeti
peer's packages) load a cluster from a RAPI URL (``-m``): the groups, nodes
and instances in bulk and ``/2/info``. Here they load a ganeti_lv master
daemon serving its remote API on the fake nodes (16 GiB each: htools count
4 GiB of a KVM node for the node itself), the credentials in the URL.
``hroller`` plans the groups of nodes to reboot for maintenance, so that
no instance loses both its node and the node it would move to.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
import threading
from collections.abc import Iterator

import pytest
from support.configdata import NODES, small_cluster

from ganeti_lv import constants, paths
from ganeti_lv.config import ConfigStore
from ganeti_lv.devcluster import peerinstall
from ganeti_lv.hypervisor.fake import FakeNodeOps
from ganeti_lv.master import daemon as masterd
from ganeti_lv.objects import ConfigData
from ganeti_lv.rapi import certs, users
from ganeti_lv.rapi import server as rapi_server

pytestmark = pytest.mark.ganeti_peer

USER, PASSWORD = "reader", "htools-Pw-3"


def _config() -> ConfigData:
    web, db = "web1.example.com", "db1.example.com"
    return small_cluster({web: constants.DT_SHARED_FILE, db: constants.DT_FILE})


@pytest.fixture(scope="module")
def rapi_url() -> Iterator[str]:
    """The URL (with a reader's credentials) of a master daemon's remote API on fake nodes."""
    peerinstall.ensure_packages()
    with tempfile.TemporaryDirectory(prefix="glv-htools-") as data_dir:
        ConfigStore.initialize(data_dir, _config())
        ops = FakeNodeOps()
        for name in NODES:
            ops.add_node(name, memory_total=16384)
        for name in ("web1.example.com", "db1.example.com"):
            ops.add_domain(NODES[0], name)
        certs.create_certificate(
            paths.rapi_cert_file(data_dir), "cluster.example.com", [], ["127.0.0.1"]
        )
        users.add_user(
            paths.rapi_users_file(data_dir), users.user_line(USER, PASSWORD, write=False)
        )
        daemon = masterd.serve(data_dir, node_ops=ops)
        thread = threading.Thread(target=daemon.serve_forever, kwargs={"poll_interval": 0.05})
        thread.start()
        try:
            rapi = rapi_server.start(daemon.daemon, data_dir, "127.0.0.1", 0)
            try:
                yield f"https://{USER}:{PASSWORD}@127.0.0.1:{rapi.address[1]}"
            finally:
                rapi.stop()
        finally:
            daemon.shutdown()
            daemon.server_close()
            thread.join(5)


def _htool(*argv: str) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd="/")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout + proc.stderr


def test_hbal_loads_the_cluster_and_balances_it(rapi_url: str) -> None:
    out = _htool("hbal", "-m", rapi_url)
    assert "Loaded 3 nodes, 2 instances" in out and "Selected node group: default" in out
    assert "Initial check done: 0 bad nodes, 0 bad instances." in out
    # both instances run on node1: the balance moves the one on shared storage
    assert re.search(r"^\s+1\. web1\s+node1\s+=> node[23]\b", out, re.M), out


def test_hbal_accounts_for_every_mib_of_the_nodes(rapi_url: str) -> None:
    # the node's own memory as reported (not htools' fixed 4 GiB for KVM nodes):
    # total = node + free + instances, nothing unaccounted (x_mem)
    out = _htool(
        "hbal", "--static-kvm-node-memory=0", "-m", rapi_url,
        "--print-nodes=name,tmem,nmem,fmem,imem,xmem",
    )  # fmt: skip
    initial = out.split("Initial cluster status:", 1)[1].split("Final cluster status:", 1)[0]
    rows = {
        m.group(1): tuple(int(v) for v in m.groups()[1:])
        for m in re.finditer(r"^\s*(node\d)" + r"\s+(-?\d+)" * 5 + r"\s*$", initial, re.M)
    }
    assert rows == {
        "node1": (16384, 0, 16384 - 256, 256, 0),
        "node2": (16384, 0, 16384, 0, 0),
        "node3": (16384, 0, 16384, 0, 0),
    }, out


def test_hroller_plans_the_node_reboots(rapi_url: str) -> None:
    out = _htool("hroller", "-m", rapi_url)
    lines = out.splitlines()
    assert lines[0] == "'Node Reboot Groups'", out
    groups = [set(line.split(",")) for line in lines[1:] if line]
    # every node rebooted exactly once
    assert sorted(n for g in groups for n in g) == list(NODES)
    # node1's instances need another node up while it reboots
    assert all(len(g) < 3 for g in groups), groups
