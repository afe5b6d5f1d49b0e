"""The cluster CA, the certificates it issues, their installation and renewal (fake nodes)."""

from __future__ import annotations

import datetime
import fnmatch
import os
import stat
import subprocess
from typing import Any

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ganeti_lv import bootstrap, paths, pki
from ganeti_lv.config import ConfigStore
from ganeti_lv.context import Context
from ganeti_lv.errors import (
    ECODE_ENVIRON,
    ECODE_INVAL,
    NodeUnreachable,
    OpExecError,
    OpPrereqError,
)
from ganeti_lv.hypervisor.fake import FakeNodeOps
from ganeti_lv.hypervisor.libvirt import credentials
from ganeti_lv.mcpu import Processor
from ganeti_lv.node.transport import CommandResult
from ganeti_lv.objects import Node
from ganeti_lv.opcodes import OpClusterRenewCrypto, OpCode, OpNodeAdd, OpNodeRemove

try:
    from tests.unit.test_lu_node_cluster import host_key
except ImportError:  # tests/ itself on sys.path
    from unit.test_lu_node_cluster import host_key  # type: ignore[no-redef]

CLUSTER = "cluster.example.com"


def run(ctx: Context, op: OpCode) -> list[str]:
    lines: list[str] = []
    Processor(ctx).execute(op, feedback_fn=lines.append)
    return lines


def dn(cert: x509.Certificate) -> str:
    """The subject as libvirt compares it with tls_allowed_dn_list (virt-pki-query-dn)."""
    return ",".join(attr.rfc4514_string() for attr in cert.subject)


def purposes(cert: x509.Certificate) -> list[Any]:
    return list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def signed_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


# ---------------------------------------------------------------- certificates


def _server_and_client(
    ca: pki.Authority, server_pem: bytes, client_pem: bytes, addresses: list[str]
) -> tuple[x509.Certificate, x509.Certificate]:
    """The pair, checked: issued by ``ca``, for their purposes, the server's for node2."""
    server = x509.load_pem_x509_certificate(server_pem)
    client = x509.load_pem_x509_certificate(client_pem)
    assert signed_by(server, ca.cert) and signed_by(client, ca.cert)
    assert purposes(server) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert purposes(client) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    alt = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert alt.get_values_for_type(x509.DNSName) == ["node2"]
    assert [str(a) for a in alt.get_values_for_type(x509.IPAddress)] == addresses
    return server, client


def test_node_credentials_serve_the_node_and_identify_it_as_a_cluster_client(
    data_dir: str,
) -> None:
    ca = pki.create_cluster_ca(data_dir, CLUSTER)
    assert stat.S_IMODE(os.stat(paths.ca_key_file(data_dir)).st_mode) == 0o600
    addresses = ["10.250.0.2", "10.251.0.2"]
    creds = pki.issue_node_credentials(ca, CLUSTER, "node2", addresses)
    server, client = _server_and_client(ca, creds.server_cert, creds.client_cert, addresses)
    allowed = pki.allowed_client_dn(CLUSTER)
    assert fnmatch.fnmatchcase(dn(client), allowed)
    assert not fnmatch.fnmatchcase(dn(server), allowed)  # a server certificate is no client
    other = pki.issue(ca, pki.client_subject("other.example.com", "x"), server=False)[0]
    assert not fnmatch.fnmatchcase(dn(x509.load_pem_x509_certificate(other)), allowed)
    assert f'tls_allowed_dn_list = ["{allowed}"]' in pki.libvirtd_tls_settings(CLUSTER)


def test_qemus_certificates_are_its_own_and_let_it_into_no_libvirtd(data_dir: str) -> None:
    """qemu's keys are readable by the user it runs as: its client certificate is no
    libvirt client, and none of its keys is one of libvirtd's. Its server certificate
    names the node: the source's qemu checks the target's."""
    ca = pki.create_cluster_ca(data_dir, CLUSTER)
    creds = pki.issue_node_credentials(ca, CLUSTER, "node2", ["10.250.0.2"])
    _, client = _server_and_client(
        ca, creds.qemu_server_cert, creds.qemu_client_cert, ["10.250.0.2"]
    )
    assert not fnmatch.fnmatchcase(dn(client), pki.allowed_client_dn(CLUSTER))
    libvirt_keys = {creds.server_key, creds.client_key}
    assert not {creds.qemu_server_key, creds.qemu_client_key} & libvirt_keys


def test_an_operators_ca_must_be_a_ca_with_its_own_key(tmp_path: Any, data_dir: str) -> None:
    ca = pki.create_ca(str(tmp_path / "ca.pem"), str(tmp_path / "ca.key"), CLUSTER)
    creds = pki.issue_node_credentials(ca, CLUSTER, "n", ["10.0.0.1"])
    (tmp_path / "leaf.pem").write_bytes(creds.server_cert)
    (tmp_path / "leaf.key").write_bytes(creds.server_key)
    for cert, key, why in (
        ("leaf.pem", "leaf.key", "not a CA"),
        ("ca.pem", "leaf.key", "does not belong"),
        ("ca.pem", "missing.key", "Cannot read"),
    ):
        with pytest.raises(OpPrereqError) as info:
            pki.install_ca(data_dir, str(tmp_path / cert), str(tmp_path / key))
        assert info.value.ecode == ECODE_INVAL and why in str(info.value)
        assert not os.path.exists(paths.ca_cert_file(data_dir))
    with pytest.raises(OpPrereqError) as missing:
        pki.load_ca(data_dir)
    assert missing.value.ecode == ECODE_ENVIRON and "renew-crypto" in str(missing.value)


def _own_ca(key: Any, days_from: int, days_to: int, algorithm: Any) -> bytes:
    """A self-signed CA certificate of ``key``, valid from/to days from now (PEM)."""
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "own CA")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now + datetime.timedelta(days=days_from))
        .not_valid_after(now + datetime.timedelta(days=days_to))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, algorithm)
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: Any) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def test_an_operators_ca_that_cannot_sign_now_is_refused_before_anything_is_written(
    tmp_path: Any, data_dir: str
) -> None:
    """An Ed25519 CA (node certificates are signed with SHA-256) and a CA outside its
    validity: refused as the other unusable CAs are, not a crash halfway."""
    edkey = ed25519.Ed25519PrivateKey.generate()
    rsakey = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cases = (
        (_own_ca(edkey, -1, 365, None), _key_pem(edkey), "an RSA or EC key is needed"),
        (_own_ca(rsakey, -30, -1, hashes.SHA256()), _key_pem(rsakey), "not now"),
        (_own_ca(rsakey, 2, 30, hashes.SHA256()), _key_pem(rsakey), "not now"),
    )
    for cert, key, why in cases:
        (tmp_path / "ca.pem").write_bytes(cert)
        (tmp_path / "ca.key").write_bytes(key)
        with pytest.raises(OpPrereqError) as info:
            pki.install_ca(data_dir, str(tmp_path / "ca.pem"), str(tmp_path / "ca.key"))
        assert info.value.ecode == ECODE_INVAL and why in str(info.value)
        assert not os.path.exists(paths.ca_cert_file(data_dir))


def test_init_takes_the_operators_ca_or_makes_one(tmp_path: Any) -> None:
    ca = pki.create_ca(str(tmp_path / "ca.pem"), str(tmp_path / "ca.key"), "mine")
    master = Node(name="m1", address="127.0.0.1")
    own = str(tmp_path / "own")
    bootstrap.init_cluster(
        own,
        cluster_name="c1",
        master=master,
        master_host_key=None,
        ca_cert_file=str(tmp_path / "ca.pem"),
        ca_key_file=str(tmp_path / "ca.key"),
    )
    assert pki.load_ca(own).cert == ca.cert
    client_file = os.path.join(paths.libvirt_pki_dir(own), "clientcert.pem")
    with open(client_file, "rb") as fobj:
        client = x509.load_pem_x509_certificate(fobj.read())
    assert signed_by(client, ca.cert) and fnmatch.fnmatchcase(dn(client), "O=c1,OU=clients,*")
    assert sorted(os.listdir(paths.libvirt_pki_dir(own))) == [
        "cacert.pem",
        "clientcert.pem",
        "clientkey.pem",
    ]
    made = str(tmp_path / "made")
    bootstrap.init_cluster(made, cluster_name="c1", master=master, master_host_key=None)
    assert pki.load_ca(made).cert != ca.cert
    half = str(tmp_path / "half")
    with pytest.raises(OpPrereqError) as info:
        bootstrap.init_cluster(
            half,
            cluster_name="c1",
            master=master,
            master_host_key=None,
            ca_cert_file=str(tmp_path / "ca.pem"),
        )
    assert info.value.ecode == ECODE_INVAL and not os.path.exists(half)


# ---------------------------------------------------------------- on the nodes


class FilesNode:
    """A NodeTransport keeping files in a dict; the reload answers ``reload_output``."""

    node_name = "n"

    def __init__(self, reload_output: str | Exception) -> None:
        self.files: dict[str, tuple[bytes, int]] = {}
        self.commands: list[Any] = []
        self.reload_output = reload_output

    def run(self, cmd: Any, timeout: float | None = None, **_: Any) -> CommandResult:
        self.commands.append(cmd)
        if cmd[:3] == ["sh", "-c", credentials._PUT_IN_PLACE]:
            for path in cmd[4:]:  # as the script does: each staged file over its old one
                self.files[path] = self.files.pop(path + credentials.STAGED)
        if "virt-admin" in " ".join(cmd) and isinstance(self.reload_output, Exception):
            raise self.reload_output
        out = self.reload_output if "virt-admin" in " ".join(cmd) else ""
        return CommandResult(0, str(out), "")

    def put_bytes(self, data: bytes, path: str, mode: int = 0o644) -> None:
        self.files[path] = (data, mode)


def test_first_credentials_written_locally_keep_their_keys_private(tmp_path: Any) -> None:
    ca = pki.create_ca(str(tmp_path / "ca.pem"), str(tmp_path / "ca.key"), CLUSTER)
    root = tmp_path / "node"

    def local(path: str) -> str:
        return str(root) + path

    state = root / credentials.QEMU_STATE_DIR.lstrip("/")
    state.mkdir(parents=True)
    os.chown(state, -1, 4321)  # libvirtd gave it to the group qemu runs as
    assert credentials.write_first(ca, CLUSTER, "n", ["10.0.0.1"], local)
    private = root / "etc/pki/libvirt/private"
    assert stat.S_IMODE(private.stat().st_mode) == 0o700
    assert stat.S_IMODE((private / "serverkey.pem").stat().st_mode) == 0o600
    assert (private / "serverkey.pem").stat().st_gid != 4321
    assert stat.S_IMODE((root / "etc/pki/libvirt/servercert.pem").stat().st_mode) == 0o644
    for key in credentials.QEMU_KEYS:
        written = (root / key.lstrip("/")).stat()
        assert (stat.S_IMODE(written.st_mode), written.st_gid) == (0o640, 4321)


def test_qemus_keys_go_to_the_group_libvirtd_runs_qemu_as(tmp_path: Any) -> None:
    """The node-side script, run here: libvirtd's state directory names the group."""
    key = tmp_path / "server-key.pem.new"
    key.write_bytes(b"k")
    os.chown(key, -1, 4321)
    subprocess.run(["sh", "-c", credentials._TO_QEMU_GROUP, "sh", str(key)], check=True)
    try:
        expected = os.stat(credentials.QEMU_STATE_DIR).st_gid
    except FileNotFoundError:  # no libvirtd here: root's group
        expected = 0
    assert key.stat().st_gid == expected


def test_install_writes_libvirts_and_qemus_files_then_reloads(data_dir: str) -> None:
    ca = pki.create_cluster_ca(data_dir, CLUSTER)
    creds = pki.issue_node_credentials(ca, CLUSTER, "n", ["10.0.0.1"])
    node = FilesNode(credentials.RELOADED + "\n")
    assert credentials.install(node, creds) is True
    assert node.files["/etc/pki/CA/cacert.pem"] == (ca.cert_pem, 0o644)
    assert node.files["/etc/pki/libvirt/servercert.pem"] == (creds.server_cert, 0o644)
    assert node.files["/etc/pki/libvirt/private/serverkey.pem"] == (creds.server_key, 0o600)
    assert node.files["/etc/pki/libvirt/private/clientkey.pem"] == (creds.client_key, 0o600)
    assert node.files["/etc/pki/qemu/server-key.pem"] == (creds.qemu_server_key, 0o640)
    assert node.files["/etc/pki/qemu/client-cert.pem"] == (creds.qemu_client_cert, 0o644)
    assert node.files["/etc/pki/qemu/client-key.pem"] == (creds.qemu_client_key, 0o640)
    assert len(node.files) == 10
    (to_group,) = [c for c in node.commands if c[:3] == ["sh", "-c", credentials._TO_QEMU_GROUP]]
    assert to_group[4:] == [p + credentials.STAGED for p in credentials.QEMU_KEYS]
    sync = node.commands[-2]  # files and their directories synced before the reload
    assert sync[:2] == ["sync", "--"] and set(sync[2:]) == set(node.files) | {
        os.path.dirname(p) for p in node.files
    }
    assert "server-update-tls libvirtd" in " ".join(node.commands[-1])
    assert credentials.install(FilesNode(credentials.NOT_SERVING + "\n"), creds) is False


def test_an_install_cut_short_leaves_the_old_credentials_whole(data_dir: str) -> None:
    """A connection lost while the files go over: none of the old ones was replaced
    (a node must never have a new CA beside its old key)."""
    ca = pki.create_cluster_ca(data_dir, CLUSTER)
    old = pki.issue_node_credentials(ca, CLUSTER, "n", ["10.0.0.1"])
    node = FilesNode(credentials.RELOADED + "\n")
    credentials.install(node, old)
    before = dict(node.files)
    new_ca = pki.new_authority(CLUSTER)
    new = pki.issue_node_credentials(new_ca, CLUSTER, "n", ["10.0.0.1"])
    put = node.put_bytes
    sent: list[str] = []

    def lost_after_five(data: bytes, path: str, mode: int = 0o644) -> None:
        if len(sent) == 5:
            raise NodeUnreachable("the connection to n was lost", node="n")
        sent.append(path)
        put(data, path, mode)

    node.put_bytes = lost_after_five  # type: ignore[method-assign]
    with pytest.raises(NodeUnreachable):
        credentials.install(node, new)
    assert {p: v for p, v in node.files.items() if p in before} == before
    assert all(p.endswith(credentials.STAGED) for p in node.files if p not in before)


def test_a_reload_that_fails_after_the_files_are_in_place_is_no_failure(
    data_dir: str,
) -> None:
    ca = pki.create_cluster_ca(data_dir, CLUSTER)
    creds = pki.issue_node_credentials(ca, CLUSTER, "n", ["10.0.0.1"])
    node = FilesNode(NodeUnreachable("the connection to n was lost", node="n"))
    assert credentials.install(node, creds) is False  # in place; used at libvirtd's start
    assert node.files["/etc/pki/CA/cacert.pem"] == (ca.cert_pem, 0o644)
    assert not [p for p in node.files if p.endswith(credentials.STAGED)]


def test_node_add_gives_the_node_certificates_before_checking_libvirt(
    ctx: Context, fake_ops: FakeNodeOps, config: ConfigStore, data_dir: str
) -> None:
    ca = pki.create_cluster_ca(data_dir, CLUSTER)
    run(ctx, OpNodeAdd(node_name="node4", primary_ip="10.250.0.4", host_key=host_key()))
    methods = [c.method for c in fake_ops.calls if c.node == "node4"]
    assert methods.index("install_tls_credentials") < methods.index("node_info")
    server = x509.load_pem_x509_certificate(fake_ops.tls_credentials["node4"].server_cert)
    assert signed_by(server, ca.cert)
    alt = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(a) for a in alt.get_values_for_type(x509.IPAddress)] == ["10.250.0.4"]


def test_a_node_leaving_the_cluster_loses_its_certificates(
    ctx: Context, fake_ops: FakeNodeOps, config: ConfigStore, data_dir: str
) -> None:
    """The other nodes' libvirtd let in any certificate of the cluster CA: a removed
    node, and one whose add failed after it got them, keep none."""
    pki.create_cluster_ca(data_dir, CLUSTER)
    run(ctx, OpNodeAdd(node_name="node4", primary_ip="10.250.0.4", host_key=host_key()))
    assert "node4" in fake_ops.tls_credentials
    run(ctx, OpNodeRemove(node_name="node4"))
    assert "node4" not in fake_ops.tls_credentials
    fake_ops.fail("node_info", "node5", "libvirtd is not running")
    with pytest.raises(OpExecError, match="Cannot talk to libvirt on node node5"):
        run(ctx, OpNodeAdd(node_name="node5", primary_ip="10.250.0.5", host_key=host_key()))
    assert fake_ops.calls_to("install_tls_credentials", "node5")
    assert "node5" not in fake_ops.tls_credentials and config.get_node("node5") is None
    # an install that failed left the node's own files: nothing is removed there
    fake_ops.fail("install_tls_credentials", "node6", "no space left on /etc/pki")
    with pytest.raises(OpExecError, match="Cannot install the TLS certificates on node node6"):
        run(ctx, OpNodeAdd(node_name="node6", primary_ip="10.250.0.6", host_key=host_key()))
    assert not fake_ops.calls_to("remove_tls_credentials", "node6")
    # one that cannot be asked: said, with the way to make its copy worthless
    run(ctx, OpNodeAdd(node_name="node4", primary_ip="10.250.0.4", host_key=host_key()))
    fake_ops.set_unreachable("node4")
    lines = run(ctx, OpNodeRemove(node_name="node4"))
    assert config.get_node("node4") is None
    assert any(
        "certificates could not be removed from node node4" in line
        and "renew-crypto --new-cluster-certificate" in line
        for line in lines
    )


def test_uninstall_removes_the_keys_and_certificates_not_the_ca(data_dir: str) -> None:
    node = FilesNode("")
    credentials.uninstall(node)
    (rm,) = node.commands
    assert rm[:3] == ["rm", "-f", "--"]
    assert "/etc/pki/libvirt/private/clientkey.pem" in rm
    assert "/etc/pki/qemu/server-key.pem" in rm
    assert "/etc/pki/libvirt/private/serverkey.pem.new" in rm  # a staged one too
    assert not [path for path in rm if "ca" in os.path.basename(path)]


def test_renew_node_certificates_keeps_the_ca(
    ctx: Context, fake_ops: FakeNodeOps, config: ConfigStore, data_dir: str
) -> None:
    ca = pki.create_cluster_ca(data_dir, CLUSTER)
    lines = run(ctx, OpClusterRenewCrypto(new_node_certificates=True))
    assert sorted(fake_ops.tls_credentials) == sorted(config.read().nodes)
    for creds in fake_ops.tls_credentials.values():
        assert signed_by(x509.load_pem_x509_certificate(creds.server_cert), ca.cert)
    assert pki.load_ca(data_dir).cert == ca.cert
    assert any("master's client certificate" in line for line in lines)


def test_renew_cluster_certificate_makes_a_new_ca_for_everything(
    ctx: Context, fake_ops: FakeNodeOps, config: ConfigStore, data_dir: str
) -> None:
    old = pki.create_cluster_ca(data_dir, CLUSTER)
    node = config.get_node("node3.example.com")
    assert node is not None
    node.offline = True
    config.update_node(node)
    lines = run(ctx, OpClusterRenewCrypto(new_cluster_certificate=True))
    new = pki.load_ca(data_dir)
    assert new.cert != old.cert
    assert sorted(fake_ops.tls_credentials) == ["node1.example.com", "node2.example.com"]
    for creds in fake_ops.tls_credentials.values():
        assert creds.ca_cert == new.cert_pem
        assert signed_by(x509.load_pem_x509_certificate(creds.client_cert), new.cert)
    with open(os.path.join(paths.libvirt_pki_dir(data_dir), "clientcert.pem"), "rb") as fobj:
        assert signed_by(x509.load_pem_x509_certificate(fobj.read()), new.cert)
    assert any("node3.example.com is offline" in line for line in lines)


def test_renew_refuses_nothing_to_do_and_a_cluster_without_ca(
    ctx: Context, fake_ops: FakeNodeOps, data_dir: str
) -> None:
    with pytest.raises(OpPrereqError) as nothing:
        run(ctx, OpClusterRenewCrypto())
    assert nothing.value.ecode == ECODE_INVAL
    with pytest.raises(OpPrereqError) as no_ca:
        run(ctx, OpClusterRenewCrypto(new_node_certificates=True))
    assert no_ca.value.ecode == ECODE_ENVIRON
    assert fake_ops.tls_credentials == {}


def test_a_node_that_cannot_take_a_new_ca_does_not_split_the_cluster(
    ctx: Context, fake_ops: FakeNodeOps, config: ConfigStore, data_dir: str
) -> None:
    """node2 is unreachable: node1, node3 and the master move to the new CA together,
    and the job fails naming node2 (it stopped at node2 and left node3 behind)."""
    old = pki.create_cluster_ca(data_dir, CLUSTER)
    fake_ops.set_unreachable("node2.example.com")
    with pytest.raises(OpExecError, match="node2.example.com kept their old certificates"):
        run(ctx, OpClusterRenewCrypto(new_cluster_certificate=True))
    new = pki.load_ca(data_dir)
    assert new.cert != old.cert
    assert sorted(fake_ops.tls_credentials) == ["node1.example.com", "node3.example.com"]
    assert all(c.ca_cert == new.cert_pem for c in fake_ops.tls_credentials.values())
    with open(os.path.join(paths.libvirt_pki_dir(data_dir), "clientcert.pem"), "rb") as fobj:
        assert signed_by(x509.load_pem_x509_certificate(fobj.read()), new.cert)


def test_a_new_ca_for_some_nodes_only_is_refused(
    ctx: Context, fake_ops: FakeNodeOps, data_dir: str
) -> None:
    old = pki.create_cluster_ca(data_dir, CLUSTER)
    op = OpClusterRenewCrypto(new_cluster_certificate=True, node_names=["node1"])
    with pytest.raises(OpPrereqError, match="goes to every node") as err:
        run(ctx, op)
    assert err.value.ecode == ECODE_INVAL
    assert pki.load_ca(data_dir).cert == old.cert and fake_ops.tls_credentials == {}


def test_a_new_ca_no_node_could_take_changes_nothing(
    ctx: Context, fake_ops: FakeNodeOps, config: ConfigStore, data_dir: str
) -> None:
    old = pki.create_cluster_ca(data_dir, CLUSTER)
    client = os.path.join(paths.libvirt_pki_dir(data_dir), "clientcert.pem")
    pki.write_master_client(data_dir, old, CLUSTER)
    with open(client, "rb") as fobj:
        before = fobj.read()
    for name in config.read().nodes:
        fake_ops.set_unreachable(name)
    with pytest.raises(OpExecError, match="No node took the new cluster certificate"):
        run(ctx, OpClusterRenewCrypto(new_cluster_certificate=True))
    assert pki.load_ca(data_dir).cert == old.cert
    with open(client, "rb") as fobj:
        assert fobj.read() == before
