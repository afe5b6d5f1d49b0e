"""The cluster's certificate authority and the certificates it issues.

``cluster init`` creates the cluster CA (``create_ca``) or takes the
operator's (``install_ca``): ``<data dir>/pki/cacert.pem`` and its key in
``<data dir>/pki/private/cakey.pem`` (0600). Every node gets a server and a
client certificate from it (``issue_node_credentials``), for libvirtd's TLS
listener and for the connections it opens to its peers (migrations), and a
server and a client certificate of its own for qemu's encrypted migration
streams: qemu reads those keys as the user it runs as, and a client
certificate of qemu's is no libvirt client (``OU=qemu``), so a guest that
took over its qemu gets no way into any node's libvirtd. The master's
client certificate lives in ``<data dir>/pki/libvirt`` under libvirt's file
names, so a ``qemu+tls`` URI finds it with ``pkipath=`` (``write_master_client``).

Client certificates name the cluster in their subject (``O=<cluster>``):
libvirtd accepts only those (``tls_allowed_dn_list``, see
``libvirtd_tls_settings``), on top of the CA's signature.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ganeti_lv import paths
from ganeti_lv.config import write_file_atomically
from ganeti_lv.errors import ECODE_ENVIRON, ECODE_INVAL, OpPrereqError

KEY_BITS = 2048
VALID_DAYS = 5 * 365
CA_VALID_DAYS = 10 * 365
MASTER_CLIENT_NAME = "master"
_CLIENT_UNIT = "clients"
_SERVER_UNIT = "servers"
_QEMU_UNIT = "qemu"


def new_key() -> rsa.RSAPrivateKey:
    """A new RSA key for a certificate."""
    return rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)


def key_pem(key: CertificateIssuerPrivateKeyTypes) -> bytes:
    """The unencrypted private key in PEM form."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def cert_pem(cert: x509.Certificate) -> bytes:
    """The certificate in PEM form."""
    return cert.public_bytes(serialization.Encoding.PEM)


def subject_alt_names(names: Sequence[str], addresses: Sequence[str]) -> list[x509.GeneralName]:
    """DNS names for ``names``, IP addresses (or DNS names) for ``addresses``, without repeats."""
    alt: list[x509.GeneralName] = [x509.DNSName(n) for n in dict.fromkeys(names) if n]
    for address in dict.fromkeys(a for a in addresses if a):
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(address)))
        except ValueError:
            alt.append(x509.DNSName(address))
    return list(dict.fromkeys(alt))


def certificate_builder(
    subject: x509.Name, public_key: rsa.RSAPublicKey, days: int
) -> x509.CertificateBuilder:
    """A builder with a random serial, valid from five minutes ago for ``days`` days."""
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .public_key(public_key)
        .serial_number(int.from_bytes(secrets.token_bytes(16), "big") >> 1)
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
    )


def key_usage(*allowed: str) -> x509.KeyUsage:
    """A KeyUsage extension allowing only the ``allowed`` uses (its argument names)."""
    uses = (
        "digital_signature",
        "content_commitment",
        "key_encipherment",
        "data_encipherment",
        "key_agreement",
        "key_cert_sign",
        "crl_sign",
        "encipher_only",
        "decipher_only",
    )
    return x509.KeyUsage(**{use: use in allowed for use in uses})


# ---------------------------------------------------------------- the CA


@dataclass(frozen=True)
class Authority:
    """The cluster CA: its certificate and key."""

    cert: x509.Certificate
    key: CertificateIssuerPrivateKeyTypes

    @property
    def cert_pem(self) -> bytes:
        """The CA certificate in PEM form (what every party trusts)."""
        return cert_pem(self.cert)


def create_ca(cert_path: str, key_path: str, cluster_name: str) -> Authority:
    """Make a new CA for the cluster at ``cert_path`` and ``key_path`` (replacing one)."""
    authority = new_authority(cluster_name)
    _write_ca(cert_path, key_path, authority.cert_pem, key_pem(authority.key))
    return authority


def new_authority(cluster_name: str) -> Authority:
    """A new CA for the cluster, in memory only (``save_cluster_ca`` keeps it)."""
    key = new_key()
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, cluster_name),
            x509.NameAttribute(NameOID.COMMON_NAME, f"{cluster_name} cluster CA"),
        ]
    )
    cert = (
        certificate_builder(subject, key.public_key(), CA_VALID_DAYS)
        .issuer_name(subject)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(key_usage("key_cert_sign", "crl_sign"), critical=True)
        .sign(key, hashes.SHA256())
    )
    return Authority(cert, key)


def create_cluster_ca(data_dir: str, cluster_name: str) -> Authority:
    """Make a new cluster CA in ``data_dir`` (replacing the one that is there)."""
    authority = new_authority(cluster_name)
    save_cluster_ca(data_dir, authority)
    return authority


def save_cluster_ca(data_dir: str, authority: Authority) -> None:
    """Make ``authority`` (from ``new_authority``) the cluster CA of ``data_dir``."""
    _write_ca(
        paths.ca_cert_file(data_dir),
        paths.ca_key_file(data_dir),
        authority.cert_pem,
        key_pem(authority.key),
    )


def _write_ca(cert_path: str, key_path: str, cert_data: bytes, key_data: bytes) -> None:
    for path in (cert_path, key_path):
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    write_file_atomically(key_path, key_data, 0o600)
    write_file_atomically(cert_path, cert_data, 0o644)


def read_file(path: str, what: str = "file", ecode: str = ECODE_INVAL) -> bytes:
    """The bytes of ``path``; OpPrereqError (``ecode``) when it cannot be read."""
    try:
        with open(path, "rb") as fobj:
            return fobj.read()
    except OSError as err:
        raise OpPrereqError(f"Cannot read the {what} {path}: {err}", ecode) from err


def parse_ca(cert_data: bytes, key_data: bytes, what: str) -> Authority:
    """The CA of a certificate and its key (PEM); OpPrereqError unless a usable pair."""
    try:
        cert = x509.load_pem_x509_certificate(cert_data)
        key = serialization.load_pem_private_key(key_data, password=None)
    except (ValueError, TypeError) as err:
        raise OpPrereqError(f"{what} cannot be read: {err}", ECODE_INVAL) from err
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        is_ca = constraints.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        raise OpPrereqError(f"{what}: the certificate is not a CA certificate", ECODE_INVAL)
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    if cert.public_key().public_bytes(
        serialization.Encoding.DER, spki
    ) != key.public_key().public_bytes(serialization.Encoding.DER, spki):
        raise OpPrereqError(f"{what}: the key does not belong to the certificate", ECODE_INVAL)
    if not isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
        # certificates are signed with SHA-256, which Ed25519/Ed448 keys do not take
        raise OpPrereqError(
            f"{what}: an RSA or EC key is needed to sign with SHA-256, not {type(key).__name__}",
            ECODE_INVAL,
        )
    now = datetime.datetime.now(datetime.UTC)
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise OpPrereqError(
            f"{what}: the certificate is valid from {cert.not_valid_before_utc:%Y-%m-%d %H:%M}"
            f" to {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC, not now",
            ECODE_INVAL,
        )
    return Authority(cert, key)


def store_ca(data_dir: str, cert_data: bytes, key_data: bytes, what: str) -> Authority:
    """Make a CA (certificate and unencrypted key, PEM) the cluster CA of ``data_dir``."""
    authority = parse_ca(cert_data, key_data, what)
    _write_ca(paths.ca_cert_file(data_dir), paths.ca_key_file(data_dir), cert_data, key_data)
    return authority


def install_ca(data_dir: str, cert_file: str, key_file: str) -> Authority:
    """Make the operator's CA (files: certificate and unencrypted key, PEM) the cluster CA."""
    cert_data = read_file(cert_file, "CA certificate", ECODE_INVAL)
    key_data = read_file(key_file, "CA key", ECODE_INVAL)
    return store_ca(data_dir, cert_data, key_data, f"The CA {cert_file}")


def load_ca(data_dir: str) -> Authority:
    """The cluster CA of ``data_dir``; OpPrereqError (environment) when it has none."""
    cert_path = paths.ca_cert_file(data_dir)
    if not os.path.exists(cert_path):
        raise OpPrereqError(
            f"The cluster has no certificate authority ({cert_path} is missing): create one"
            " with 'gnt-lv cluster renew-crypto --new-cluster-certificate'",
            ECODE_ENVIRON,
        )
    return parse_ca(
        read_file(cert_path, "CA certificate", ECODE_ENVIRON),
        read_file(paths.ca_key_file(data_dir), "CA key", ECODE_ENVIRON),
        f"The cluster CA {cert_path}",
    )


# ---------------------------------------------------------------- issued certificates


def _subject(cluster_name: str, unit: str, name: str) -> x509.Name:
    """``O=<cluster>, OU=<unit>, CN=<name>``."""
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, cluster_name),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit),
            x509.NameAttribute(NameOID.COMMON_NAME, name),
        ]
    )


def client_subject(cluster_name: str, name: str) -> x509.Name:
    """The subject of a client certificate of the cluster."""
    return _subject(cluster_name, _CLIENT_UNIT, name)


def allowed_client_dn(cluster_name: str) -> str:
    """The ``tls_allowed_dn_list`` pattern matching the cluster's client certificates.

    libvirtd compares it with the client's DN as ``virt-pki-query-dn`` shows it.
    """
    return f"O={cluster_name},OU={_CLIENT_UNIT},CN=*"


def issue(
    authority: Authority,
    subject: x509.Name,
    *,
    server: bool,
    names: Sequence[str] = (),
    addresses: Sequence[str] = (),
) -> tuple[bytes, bytes]:
    """A new certificate for a server or a client, signed by ``authority``: (cert, key) PEM."""
    key = new_key()
    purpose = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        certificate_builder(subject, key.public_key(), VALID_DAYS)
        .issuer_name(authority.cert.subject)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(key_usage("digital_signature", "key_encipherment"), critical=True)
        .add_extension(x509.ExtendedKeyUsage([purpose]), critical=True)
    )
    alt = subject_alt_names(names, addresses)
    if alt:
        builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
    cert = builder.sign(authority.key, hashes.SHA256())
    return cert_pem(cert), key_pem(key)


@dataclass(frozen=True)
class NodeCredentials:
    """What one node gets (PEM): the CA certificate, libvirtd's server and client
    certificates and keys, and qemu's (``qemu_*``, for migration streams)."""

    ca_cert: bytes
    server_cert: bytes
    server_key: bytes
    client_cert: bytes
    client_key: bytes
    qemu_server_cert: bytes
    qemu_server_key: bytes
    qemu_client_cert: bytes
    qemu_client_key: bytes


def issue_node_credentials(
    authority: Authority, cluster_name: str, node_name: str, addresses: Sequence[str]
) -> NodeCredentials:
    """A node's server certificates (its name and addresses) and client certificates,
    libvirtd's and qemu's."""
    server_cert, server_key = issue(
        authority,
        _subject(cluster_name, _SERVER_UNIT, node_name),
        server=True,
        names=[node_name],
        addresses=addresses,
    )
    client_cert, client_key = issue(
        authority, client_subject(cluster_name, node_name), server=False
    )
    qemu_subject = _subject(cluster_name, _QEMU_UNIT, node_name)
    # the target's qemu is checked against the node's name or migration address
    qemu_server_cert, qemu_server_key = issue(
        authority, qemu_subject, server=True, names=[node_name], addresses=addresses
    )
    qemu_client_cert, qemu_client_key = issue(authority, qemu_subject, server=False)
    return NodeCredentials(
        authority.cert_pem,
        server_cert,
        server_key,
        client_cert,
        client_key,
        qemu_server_cert,
        qemu_server_key,
        qemu_client_cert,
        qemu_client_key,
    )


def write_master_client(data_dir: str, authority: Authority, cluster_name: str) -> str:
    """A new client certificate for the master in ``<data dir>/pki/libvirt``; the directory."""
    directory = paths.libvirt_pki_dir(data_dir)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    cert, key = issue(authority, client_subject(cluster_name, MASTER_CLIENT_NAME), server=False)
    write_file_atomically(os.path.join(directory, "clientkey.pem"), key, 0o600)
    write_file_atomically(os.path.join(directory, "clientcert.pem"), cert, 0o644)
    write_file_atomically(os.path.join(directory, "cacert.pem"), authority.cert_pem, 0o644)
    return directory


def libvirtd_tls_settings(cluster_name: str) -> str:
    """libvirtd.conf lines: TLS only, client certificates of the cluster verified."""
    return (
        "listen_tls = 1\n"
        "listen_tcp = 0\n"
        'auth_tls = "none"\n'
        "tls_no_verify_certificate = 0\n"
        "tls_no_sanity_certificate = 0\n"
        f'tls_allowed_dn_list = ["{allowed_client_dn(cluster_name)}"]\n'
    )
