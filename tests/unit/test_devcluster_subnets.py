"""The local cluster's subnet checks: addresses and routes the machine has (a fake ``ip``)."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from ganeti_lv.devcluster import netns
from ganeti_lv.errors import OpPrereqError

ADDRS = """\
1: lo    inet 127.0.0.1/8 scope host lo
2: eth0    inet 192.0.2.2/24 brd 192.0.2.255 scope global eth0
5: tun0    inet 172.31.9.4/32 scope global tun0
9: glvab12    inet 10.250.0.1/24 scope global glvab12
"""
ROUTES = """\
default via 192.0.2.1 dev eth0
0.0.0.0/1 via 172.31.9.1 dev tun0
128.0.0.0/1 via 172.31.9.1 dev tun0
throw 10.128.0.0/9
10.0.0.0/9 dev tun0 scope link
10.250.0.0/24 dev glvab12 proto kernel scope link src 10.250.0.1
local 10.250.0.1 dev glvab12 table local proto kernel scope host src 10.250.0.1
broadcast 10.250.0.255 dev glvab12 table local proto kernel scope link src 10.250.0.1
"""


@pytest.fixture
def machine(monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine on a VPN whose route takes 10.0.0.0/9 (and the default route, in halves),
    with a cluster's bridge glvab12."""

    def run(argv: Any, **_kw: Any) -> subprocess.CompletedProcess[bytes]:
        out = ROUTES if "route" in argv else ADDRS
        return subprocess.CompletedProcess(argv, 0, out.encode(), b"")

    monkeypatch.setattr(netns, "run", run)


def test_a_subnet_a_route_takes_is_refused(machine: None) -> None:
    with pytest.raises(OpPrereqError, match="the route 10.0.0.0/9 dev tun0"):
        netns.check_subnet_free("10.1.2.0/24", "glvnew")


def test_the_clusters_own_bridge_and_the_default_route_claim_nothing(machine: None) -> None:
    netns.check_subnet_free("10.250.0.0/24", "glvab12")  # its own address and routes
    netns.check_subnet_free("10.250.7.0/24", "glvnew")  # beyond 10.0.0.0/9, only default's
    with pytest.raises(OpPrereqError, match="glvab12"):
        netns.check_subnet_free("10.250.0.0/24", "glvnew")  # another cluster's


def test_a_free_subnet_is_one_no_address_or_route_claims(machine: None) -> None:
    assert netns.free_subnet(first=0, count=3, base="10.250") in ("10.250.1.0/24", "10.250.2.0/24")
    with pytest.raises(Exception, match="no free 10.5.N.0/24"):
        netns.free_subnet(base="10.5")  # all within the VPN's 10.0.0.0/9
