"""The real Ganeti 3.0 peer: it comes up beside the local cluster, runs the
project's test guest as a Ganeti instance, live-migrates it, answers its
RAPI, and ``down`` leaves nothing behind."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest
from support.guardian import guarded, peer_down
from support.waiting import wait_until

from ganeti_lv.devcluster import guest, netns
from ganeti_lv.devcluster import peerlayout as pl
from ganeti_lv.devcluster.netns import free_subnet
from ganeti_lv.devcluster.peer import PeerCluster
from ganeti_lv.devcluster.peernode import leftovers

pytestmark = [pytest.mark.ganeti_peer, pytest.mark.cluster]

TICK_RE = re.compile(r"^tick (\d+)$", re.M)


def _ticks(text: str) -> list[int]:
    return [int(n) for n in TICK_RE.findall(text)]


def _qemu_pids(netns_name: str, instance: str) -> list[int]:
    """qemu processes of ``instance`` running in the node's network namespace."""
    pids = []
    for pid in netns.pids_in_netns(netns_name):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                argv = fh.read().split(b"\0")
        except OSError:
            continue
        if os.path.basename(argv[0]).startswith(b"qemu-system") and instance.encode() in argv:
            pids.append(pid)
    return pids


def test_peer_is_up_with_both_nodes(ganeti_peer: PeerCluster) -> None:
    info = ganeti_peer.info
    layout = ganeti_peer.layout()
    fqdns = [n["fqdn"] for n in info["nodes"]]
    assert fqdns == ["node1.ganeti-peer.test", "node2.ganeti-peer.test"]
    assert info["master"] == fqdns[0] and info["cluster_name"] == layout.cluster_fqdn
    # Its own subnet, namespaces and bridge: never the local cluster's (10.250.N, glv...).
    assert info["subnet"].startswith("10.251.")
    assert all(n["netns"].startswith("gpr") for n in info["nodes"])
    assert info["host_bridge"].startswith("gpr") and netns.link_exists(info["host_bridge"])
    listed = ganeti_peer.gnt(
        ["gnt-node", "list", "--no-headers", "--separator=:", "-o", "name,master_candidate"]
    )
    assert sorted(listed.split()) == sorted(f"{f}:Y" for f in fqdns)
    # node2 is a member: the master distributed the cluster's node list to it.
    on2 = ganeti_peer.run("node2", ["cat", "/var/lib/ganeti/ssconf_node_list"]).stdout
    assert sorted(on2.split()) == sorted(fqdns)
    master_on2 = ganeti_peer.run("node2", ["cat", "/var/lib/ganeti/ssconf_master_node"]).stdout
    assert master_on2.strip() == fqdns[0]
    assert ganeti_peer.run("node2", ["hostname"]).stdout.strip() == fqdns[1]
    # The hypervisor runs qemu without an accelerator (TCG).
    cluster_info = ganeti_peer.gnt(["gnt-cluster", "info"])
    assert re.search(r"^\s*kvm_flag: disabled$", cluster_info, re.M)
    assert re.search(r"^\s*enabled disk templates: file, sharedfile$", cluster_info, re.M)

    status = ganeti_peer.status()
    assert status["running"] is True
    again = ganeti_peer.up()  # a running peer is kept as it is
    assert ganeti_peer.status() == status
    assert again["nodes"] == info["nodes"]


RAPI_SCRIPT = """
import json, sys
from ganeti.rapi import client
r = json.loads(sys.argv[1])
c = client.GanetiRapiClient(r["host"], port=r["port"], username=r["user"],
    password=r["password"], curl_config_fn=client.GenericCurlConfig(
        verify_hostname=False, cafile=r["cert_file"]))
job = c.AddClusterTags(["glv-peer-test"])
assert c.WaitForJobCompletion(job, period=1, retries=60)
tags = c.GetClusterTags()
c.WaitForJobCompletion(c.DeleteClusterTags(["glv-peer-test"]), period=1, retries=60)
print(json.dumps({"nodes": sorted(c.GetNodes()), "tags": tags, "after": c.GetClusterTags()}))
"""


def _rapi_client(rapi: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    """Run RAPI_SCRIPT with Ganeti's own client (Debian's python3, Ganeti's library)."""
    return subprocess.run(
        ["/usr/bin/python3", "-c", RAPI_SCRIPT, json.dumps(rapi)],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": "/usr/share/ganeti/3.0"},
        timeout=120,
    )


def test_rapi_write_user_with_ganetis_client(ganeti_peer: PeerCluster) -> None:
    rapi = ganeti_peer.info["rapi"]
    res = _rapi_client(rapi)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["nodes"] == sorted(n["fqdn"] for n in ganeti_peer.info["nodes"])
    assert "glv-peer-test" in out["tags"] and "glv-peer-test" not in out["after"]

    res = _rapi_client(dict(rapi, password="wrong"))
    assert res.returncode != 0 and "401" in res.stderr


@contextlib.contextmanager
def _cluster_migration_bandwidth(peer: PeerCluster, mib_s: int) -> Iterator[None]:
    """Ganeti's kvm ``migration_bandwidth`` (a cluster-wide parameter) set inside the block."""
    info = peer.gnt(["gnt-cluster", "info"])
    found = re.findall(r"^\s*migration_bandwidth: (\d+)$", info, re.M)
    assert len(found) == 1, info
    peer.gnt(["gnt-cluster", "modify", "-H", f"kvm:migration_bandwidth={mib_s}"], timeout=120)
    try:
        yield
    finally:
        peer.gnt(
            ["gnt-cluster", "modify", "-H", f"kvm:migration_bandwidth={found[0]}"], timeout=120
        )


def test_sharedfile_instance_ticks_and_live_migrates(
    ganeti_peer: PeerCluster, peer_instance: str
) -> None:
    layout = ganeti_peer.layout()
    n1, n2 = layout.nodes
    console = ganeti_peer.console_log(peer_instance)
    text = guest.read_console(console)
    assert re.search(r"^GUEST-READY$", text, re.M)
    pattern = guest.PATTERN_RE.search(text)
    assert pattern and pattern.group(3) == guest.pattern_sha256(peer_instance, 16)
    assert ganeti_peer.instance_node(peer_instance) == "node1"
    assert _qemu_pids(n1.netns, peer_instance) and not _qemu_pids(n2.netns, peer_instance)
    start = guest.console_size(console)
    assert wait_until(lambda: len(_ticks(guest.read_console(console, start))) >= 2, 30, 0.2)
    before = max(_ticks(guest.read_console(console)))

    # The peer runs Debian 12's qemu 7.2, which under TCG loses guest writes in
    # live migrations of four or more pre-copy passes, killing the guest on the
    # target (README, "Guest safety under TCG migration": 18 of 49 such
    # migrations killed their guest, none of 321 of two or three passes). At
    # Ganeti's default 32 MiB/s this idle guest's first pass takes 2 s, and what
    # it dirties meanwhile makes more passes: 4 or 5 in each of 4 migrations on
    # this 2-core machine (qemu's dirty-sync count); at 1000 MiB/s, 2 or 3 in 7
    # of 8 migrations and 4 in one, in 0.1-0.3 s of qemu's time instead of 2.2 s.
    with _cluster_migration_bandwidth(ganeti_peer, 1000):
        ganeti_peer.gnt(
            ["gnt-instance", "migrate", "-f", "-n", n2.fqdn, peer_instance], timeout=300
        )

    assert ganeti_peer.instance_node(peer_instance) == "node2"
    assert _qemu_pids(n2.netns, peer_instance)
    assert wait_until(lambda: not _qemu_pids(n1.netns, peer_instance), 30, 0.2)
    after_migration = guest.console_size(console)
    ticking = wait_until(
        lambda: len(_ticks(guest.read_console(console, after_migration))) >= 2, 30, 0.2
    )
    assert ticking, "no ticks on the target; the console's end:\n" + "\n".join(
        guest.read_console(console).splitlines()[-20:]
    )
    later = guest.read_console(console, after_migration)
    # The same guest goes on counting (no reboot: no second ready line).
    assert min(_ticks(later)) > before
    assert "GUEST-READY" not in later
    listed = ganeti_peer.gnt(
        ["gnt-instance", "list", "--no-headers", "-o", "status", peer_instance]
    )
    assert listed.strip() == "running"


@pytest.fixture
def scratch_peer() -> Iterator[PeerCluster]:
    """A peer of its own (not the session's), brought down and removed afterwards."""
    directory = tempfile.mkdtemp(prefix="glv-peer-updown-", dir="/var/tmp")
    peer = PeerCluster(directory)
    with guarded(peer_down(directory), directory):
        try:
            yield peer
        finally:
            peer.down()  # failed: its state stays for the guardian's second try
            shutil.rmtree(directory, ignore_errors=True)


def test_down_leaves_nothing_behind(scratch_peer: PeerCluster) -> None:
    scratch_peer.up(subnet=free_subnet(base=pl.SUBNET_BASE))
    layout = scratch_peer.layout()
    scratch_peer.add_instance("glvpeer-down", node="node2", template="file")
    names = netns.list_netns(layout.prefix)
    pids = sorted({p for n in names for p in netns.pids_in_netns(n)})
    assert len(names) == 2 and _qemu_pids(layout.nodes[1].netns, "glvpeer-down")
    assert len(pids) >= 10  # holders, sshds, Ganeti's daemons, qemu
    assert leftovers(layout, pids)  # the check sees a running peer

    scratch_peer.down()

    assert leftovers(layout, pids) == []
    assert not [p for p in pids if netns.proc_alive(p)]
    ns_out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert layout.prefix not in ns_out
    link_out = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert layout.prefix not in link_out
    with open("/proc/mounts", encoding="utf-8") as fh:
        assert layout.directory not in fh.read()
    assert not os.path.exists(scratch_peer.info_file)
    assert scratch_peer.status()["running"] is False
