"""Credentials on the local cluster: libvirt over TLS, renewal, SSH URIs.

The cluster's libvirtd listen on TLS only and accept only client
certificates of the cluster CA whose subject names the cluster. From a
namespace on the cluster's bridge (node1's), plain TCP and certificates of
another CA (or with another subject) are refused, while the master's own
certificate is let in. One 128 MiB sharedfile guest, shared by the tests in
file order, migrates over TLS, through a certificate renewal (new CA, libvirtd
not restarted, the guest running), with its stream encrypted (qemu's TLS, as
libvirt's log of its qemu monitor commands shows) and peer to peer over
``qemu+ssh`` URIs;
cluster verify finds nothing wrong. The guest's heartbeat is checked after
each move and exactly one node runs it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography import x509
from gnt_helpers import Gnt
from migrate_helpers import (
    InstanceEnv,
    assert_alive,
    console_size,
    make_instance,
    remove_instance,
    wait_single,
    wait_tick_above,
)

from ganeti_lv import constants, paths, pki
from ganeti_lv.config import ConfigStore
from ganeti_lv.opcodes import OpClusterVerify, OpInstanceMigrate

pytestmark = pytest.mark.cluster

NAME = "tlsguest"


@pytest.fixture(scope="module")
def tls_cluster(devcluster: Any, cluster_info: dict[str, Any]) -> Any:
    """The session's local cluster, which serves libvirt over TLS (its default)."""
    if cluster_info.get("kind") != "devcluster":
        pytest.skip("reaches into the local cluster's node namespaces and files")
    # the default: a local cluster that came up otherwise fails these tests, not skips them
    assert cluster_info.get("libvirt_transport") == "tls", cluster_info.get("libvirt_transport")
    return devcluster


class Env(InstanceEnv):
    """The session's cluster around this module's guest."""

    def __init__(self, devcluster: Any) -> None:
        super().__init__(devcluster, NAME)

    def migrate(self, target: str, **kwargs: Any) -> list[str]:
        """Live-migrate the guest to ``target``; it then ticks there, and only there."""
        lines: list[str] = []
        where = self.node(target)
        self.client.submit(
            OpInstanceMigrate(instance_name=NAME, target_node=target, **kwargs),
            feedback_fn=lines.append,
        )
        assert wait_single(self.config, self.ops, NAME) == target == self.primary()
        assert_alive(self.ops, where, NAME, console_size(self.ops, where, NAME))
        return lines


@pytest.fixture(scope="module")
def env(tls_cluster: Any) -> Iterator[Env]:
    """The module's running guest on node1 (small dirtier: it converges at once)."""
    e = Env(tls_cluster)
    make_instance(
        e.config, e.ops, NAME, constants.DT_SHARED_FILE, "node1", "52:54:00:4c:57:41", dirtymb=8
    )
    try:
        wait_tick_above(e.ops, e.node("node1"), NAME, 1)
        yield e
    finally:
        remove_instance(e.config, e.ops, NAME, constants.DT_SHARED_FILE)
        e.ops.close()


def virsh_from_node1(devcluster: Any, uri: str) -> subprocess.CompletedProcess:
    """``virsh -c URI list`` run in node1's namespaces (on the cluster's bridge)."""
    return devcluster.node_exec("node1", ["virsh", "-c", uri, "list", "--all"], check=False)


def client_dir(root: str, ca_pem: bytes, cert: bytes, key: bytes) -> str:
    """A libvirt ``pkipath`` with a client certificate and the CAs to trust."""
    os.makedirs(root, exist_ok=True)
    for name, data in (("cacert.pem", ca_pem), ("clientcert.pem", cert), ("clientkey.pem", key)):
        with open(os.path.join(root, name), "wb") as fobj:
            fobj.write(data)
    return root


def test_only_the_clusters_client_certificates_get_in(
    tls_cluster: Any, cluster_info: dict[str, Any], tmp_path: Any
) -> None:
    target = cluster_info["nodes"][1]["address"]
    data_dir = cluster_info["data_dir"]
    tls = f"qemu+tls://{target}/system"
    ours = virsh_from_node1(tls_cluster, f"{tls}?pkipath={paths.libvirt_pki_dir(data_dir)}")
    assert ours.returncode == 0, ours.stderr  # the master's certificate: in

    tcp = virsh_from_node1(tls_cluster, f"qemu+tcp://{target}/system")
    assert tcp.returncode != 0 and b"Connection refused" in tcp.stderr

    cluster_ca = pki.load_ca(data_dir)
    name = ConfigStore(data_dir).get_cluster().name
    # another CA, the very same subject: libvirtd refuses the handshake
    other = pki.create_ca(str(tmp_path / "o.pem"), str(tmp_path / "o.key"), "intruders")
    cert, key = pki.issue(other, pki.client_subject(name, "master"), server=False)
    foreign = client_dir(str(tmp_path / "foreign"), other.cert_pem + cluster_ca.cert_pem, cert, key)
    refused = virsh_from_node1(tls_cluster, f"{tls}?pkipath={foreign}")
    assert refused.returncode != 0 and b"failed to connect" in refused.stderr

    # the cluster's CA, but not a client of this cluster: the DN list refuses it
    cert, key = pki.issue(cluster_ca, pki.client_subject("other-cluster", "x"), server=False)
    stranger = client_dir(str(tmp_path / "stranger"), cluster_ca.cert_pem, cert, key)
    denied = virsh_from_node1(tls_cluster, f"{tls}?pkipath={stranger}")
    assert denied.returncode != 0 and b"failed to connect" in denied.stderr


# the modes and groups of qemu's keys on a node, then the group of libvirtd's qemu state
KEY_MODES = (
    "stat -c '%a %g' /etc/pki/qemu/server-key.pem /etc/pki/qemu/client-key.pem;"
    " stat -c %g /var/lib/libvirt/qemu 2>/dev/null || echo 0"
)


def test_qemus_keys_are_its_groups_and_let_nobody_into_libvirtd(
    tls_cluster: Any, cluster_info: dict[str, Any], tmp_path: Any
) -> None:
    """qemu reads its keys as the user libvirtd runs it as; a guest that took over its
    qemu has them, and no node's libvirtd takes its client certificate."""
    target = cluster_info["nodes"][1]["address"]
    for node in cluster_info["nodes"]:
        name = node["name"]
        out = tls_cluster.node_exec(name, ["sh", "-c", KEY_MODES]).stdout.decode().splitlines()
        group = out[2]  # the group libvirtd runs qemu as (root's on the local cluster)
        assert out[:2] == [f"640 {group}", f"640 {group}"], (name, out)

        def node_file(path: str, node: str = name) -> bytes:
            with open(tls_cluster.host_path(node, path), "rb") as fobj:
                return fobj.read()

        qemu_cert = node_file("/etc/pki/qemu/client-cert.pem")
        assert qemu_cert != node_file("/etc/pki/libvirt/clientcert.pem")
        qemus = client_dir(
            str(tmp_path / f"qemu-{name}"),
            node_file("/etc/pki/qemu/ca-cert.pem"),
            qemu_cert,
            node_file("/etc/pki/qemu/client-key.pem"),
        )
        refused = virsh_from_node1(tls_cluster, f"qemu+tls://{target}/system?pkipath={qemus}")
        assert refused.returncode != 0 and b"failed to connect" in refused.stderr


def test_migrate_and_verify_over_tls(env: Env) -> None:
    for name in ("node1", "node2", "node3"):
        found = env.node(name)
        assert found.libvirt_uri.startswith("qemu+tls://"), found.libvirt_uri
        assert found.peer_uri.startswith("qemu+tls://"), found.peer_uri
        assert env.ops.libvirt_uri(found).endswith(f"pkipath={paths.libvirt_pki_dir(env.data_dir)}")
    env.migrate("node2")
    assert env.client.submit(OpClusterVerify()) == []


def test_renewed_certificates_are_used_at_once_and_the_guest_keeps_running(
    env: Env, tmp_path: Any
) -> None:
    src = env.primary()
    libvirtd = {n: env.devcluster.daemon_pid(n, "libvirtd") for n in ("node1", "node2", "node3")}
    old_master = str(tmp_path / "old-master")
    shutil.copytree(paths.libvirt_pki_dir(env.data_dir), old_master)
    old_ca = pki.load_ca(env.data_dir)
    Gnt(env.data_dir).ok("cluster", "renew-crypto", "--new-cluster-certificate", "-f")
    new_ca = pki.load_ca(env.data_dir)
    assert new_ca.cert != old_ca.cert
    where = env.node(src)
    assert_alive(env.ops, where, NAME, console_size(env.ops, where, NAME))
    for name, pid in libvirtd.items():  # reloaded, not restarted
        assert env.devcluster.daemon_pid(name, "libvirtd") == pid
        with open(env.devcluster.host_path(name, "/etc/pki/libvirt/servercert.pem"), "rb") as fh:
            x509.load_pem_x509_certificate(fh.read()).verify_directly_issued_by(new_ca.cert)
    # the old master certificate is no longer let in; the new one is
    address = env.node("node3").address
    old = virsh_from_node1(env.devcluster, f"qemu+tls://{address}/system?pkipath={old_master}")
    assert old.returncode != 0
    # the next migration: the source's libvirtd connects to the target with its new
    # client certificate (the target trusts only the new CA now)
    env.migrate("node3")
    assert env.client.submit(OpClusterVerify()) == []


QMP_LOG = "/var/log/libvirt/qmp-test.log"
LIBVIRTD_LOG = "3:file:/var/log/libvirt/libvirtd.log"


def test_encrypted_migration_stream_is_tls(env: Env) -> None:
    """libvirt's own log of its qemu monitor commands on the source shows what
    qemu was told: the migration's TLS credentials and the peer name to check."""
    src = env.primary()
    dst = next(n for n in ("node1", "node2", "node3") if n != src)
    dev = env.devcluster
    log = dev.host_path(src, QMP_LOG)
    dev.node_exec(src, ["virt-admin", "daemon-log-filters", "1:qemu.qemu_monitor"])
    dev.node_exec(src, ["virt-admin", "daemon-log-outputs", f"{LIBVIRTD_LOG} 1:file:{QMP_LOG}"])
    try:
        lines = env.migrate(dst, migration_encryption=True)
    finally:
        dev.node_exec(src, ["virt-admin", "daemon-log-outputs", LIBVIRTD_LOG])
        dev.node_exec(src, ["virt-admin", "daemon-log-filters", ""])
    assert any("stream encrypted with TLS" in line for line in lines)
    with open(log, encoding="utf-8", errors="replace") as fobj:
        qmp = fobj.read()
    os.unlink(log)
    setting = re.search(
        r'"execute":"migrate-set-parameters","arguments":\{[^}]*"tls-creds":"(\w+)"', qmp
    )
    assert setting is not None and setting.group(1), qmp[-3000:]
    assert f'"tls-hostname":"{env.node(dst).migration_address}"' in qmp
    assert re.search(r'"object-add".*"tls-creds-x509"', qmp)


def test_peer_to_peer_migration_over_ssh_uris(env: Env) -> None:
    src = env.primary()
    dst = "node2" if src != "node2" else "node3"
    saved = {n: env.node(n) for n in (src, dst)}
    try:
        for original in saved.values():
            changed = original.copy()
            changed.libvirt_uri = ""  # the default: SSH with the cluster key and known_hosts
            changed.peer_uri = f"qemu+ssh://root@{original.address}/system"
            env.config.update_node(changed)
            assert env.ops.libvirt_uri(changed).startswith("qemu+libssh://root@")
            facts = env.ops.node_info(changed)  # the master's connection, over SSH
            assert facts.memory_total > 0
        lines = env.migrate(dst)
        assert lines
        assert env.ops.host(env.node(dst)).uri.startswith("qemu+libssh://")
    finally:
        for original in saved.values():
            env.config.update_node(original)
