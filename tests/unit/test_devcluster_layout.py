"""Pure logic of the local cluster: names, addresses, paths and config texts."""

from __future__ import annotations

import os
from typing import Any

import pytest

from ganeti_lv.devcluster import layout as lay
from ganeti_lv.errors import OpPrereqError


def test_names_fit_interface_limit_and_differ_per_directory() -> None:
    a = lay.ClusterLayout.build("/var/tmp/a", 3)
    b = lay.ClusterLayout.build("/var/tmp/b", 3)
    assert a.cid != b.cid
    for cl in (a, b):
        names = [cl.bridge] + [n.veth_host for n in cl.nodes] + [n.veth_peer for n in cl.nodes]
        assert all(len(n) <= lay.IFNAMSIZ for n in names)
        assert all(n.startswith(cl.prefix) for n in names)
        assert all(n.netns.startswith(cl.prefix) for n in cl.nodes)
    assert {n.netns for n in a.nodes}.isdisjoint({n.netns for n in b.nodes})


def test_same_directory_same_names() -> None:
    assert lay.cluster_id("/var/tmp/x/") == lay.cluster_id("/var/tmp/x")


def test_addresses_follow_the_subnet() -> None:
    cl = lay.ClusterLayout.build("/var/tmp/a", 3, "10.250.7.0/24")
    assert [n.address for n in cl.nodes] == ["10.250.7.1", "10.250.7.2", "10.250.7.3"]
    assert cl.bridge_address == "10.250.7.254"
    assert cl.nodes[1].libvirt_uri() == "qemu+tls://10.250.7.2/system"
    assert cl.nodes[1].libvirt_uri(lay.TRANSPORT_TCP) == "qemu+tcp://10.250.7.2/system"
    assert [n.name for n in cl.nodes] == ["node1", "node2", "node3"]


@pytest.mark.parametrize("subnet", ["10.250.0.0/30", "10.250.0.1/24", "nonsense"])
def test_bad_subnets_are_refused(subnet: str) -> None:
    with pytest.raises(OpPrereqError) as err:
        lay.ClusterLayout.build("/var/tmp/a", 3, subnet)
    assert err.value.ecode == "wrong_input"


@pytest.mark.parametrize("nodes", [0, 4])
def test_node_count_is_bounded(nodes: int) -> None:
    with pytest.raises(OpPrereqError):
        lay.ClusterLayout.build("/var/tmp/a", nodes)


def test_memory_caps() -> None:
    assert lay.parse_memory_caps(["node1=512", "node2=1G", "node3=256M"]) == {
        "node1": 512,
        "node2": 1024,
        "node3": 256,
    }
    for bad in ("node1", "node1=", "=5", "node1=lots"):
        with pytest.raises(OpPrereqError):
            lay.parse_memory_caps([bad])


def test_node_local_paths_map_to_per_node_host_dirs_and_shared_is_common() -> None:
    cl = lay.ClusterLayout.build("/var/tmp/a", 2)
    n1, n2 = cl.nodes
    p1 = n1.host_path(lay.EXPORT_DIR + "/x")
    assert p1 == "/var/tmp/a/nodes/node1/export/x"
    assert n2.host_path(lay.EXPORT_DIR + "/x") != p1
    assert n1.host_path("/run/libvirt/libvirtd.pid").endswith("node1/run-libvirt/libvirtd.pid")
    with pytest.raises(ValueError):
        n1.host_path("/etc/passwd")
    shared1 = dict((dst, src) for src, dst in cl.node_mounts(n1))
    shared2 = dict((dst, src) for src, dst in cl.node_mounts(n2))
    assert shared1[lay.SHARED_FILE_STORAGE_DIR] == shared2[lay.SHARED_FILE_STORAGE_DIR]
    for path in (lay.EXPORT_DIR, lay.FILE_STORAGE_DIR, lay.HOOKS_BASE_DIR, "/etc/libvirt"):
        assert shared1[path] != shared2[path]


def test_daemon_configs_are_per_node() -> None:
    cl = lay.ClusterLayout.build("/var/tmp/a", 2, "10.250.9.0/24")
    n1, n2 = cl.nodes
    assert n1.host_uuid != n2.host_uuid
    c1 = lay.libvirtd_conf(n1, lay.TRANSPORT_TLS, cl.cluster_name)
    assert f'host_uuid = "{n1.host_uuid}"' in c1 and 'listen_addr = "10.250.9.1"' in c1
    assert 'migration_address = "10.250.9.2"' in lay.qemu_conf(n2)
    assert 'security_driver = "none"' in lay.qemu_conf(n2)
    s1 = lay.sshd_config(n1)
    assert "ListenAddress 10.250.9.1\n" in s1 and n1.sshd_dir in s1
    assert lay.PIDFILES["sshd"] in s1


def test_hosts_and_known_hosts_list_every_node() -> None:
    cl = lay.ClusterLayout.build("/var/tmp/a", 3, "10.250.9.0/24")
    hosts = lay.hosts_file(cl)
    for n in cl.nodes:
        assert f"{n.address}\t{n.name}\n" in hosts
    keys = {n.name: f"ssh-ed25519 KEY{n.index}" for n in cl.nodes}
    known = lay.known_hosts(cl, keys).splitlines()
    assert known == [f"node{i},10.250.9.{i} ssh-ed25519 KEY{i}" for i in (1, 2, 3)]


def test_libvirtd_listens_on_tls_with_verified_clients_unless_tcp_is_asked_for() -> None:
    cl = lay.ClusterLayout.build("/var/tmp/a", 1, "10.250.9.0/24")
    (node,) = cl.nodes
    tls = lay.libvirtd_conf(node, lay.TRANSPORT_TLS, cl.cluster_name).splitlines()
    assert "listen_tls = 1" in tls and "listen_tcp = 0" in tls
    assert "tls_no_verify_certificate = 0" in tls
    assert f'tls_allowed_dn_list = ["O={cl.cluster_name},OU=clients,CN=*"]' in tls
    assert not any(line.startswith("auth_tcp") for line in tls)
    tcp = lay.libvirtd_conf(node, lay.TRANSPORT_TCP, cl.cluster_name).splitlines()
    assert "listen_tcp = 1" in tcp and "listen_tls = 0" in tcp
    assert "migrate_tls_x509_verify = 1" in lay.qemu_conf(node).splitlines()


def test_an_unknown_libvirt_transport_is_refused_before_anything_happens(tmp_path: Any) -> None:
    from ganeti_lv.devcluster.cluster import DevCluster

    with pytest.raises(OpPrereqError) as err:
        DevCluster(str(tmp_path)).up(transport="telnet")
    assert err.value.ecode == "wrong_input" and "tls or tcp" in str(err.value)
    assert os.listdir(tmp_path) == []


def test_devcluster_cli_insecure_tcp_is_an_explicit_choice() -> None:
    from ganeti_lv.devcluster.cli import _parser

    assert _parser().parse_args(["up"]).insecure_tcp is False
    assert _parser().parse_args(["up", "--insecure-tcp"]).insecure_tcp is True
