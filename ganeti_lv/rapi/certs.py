"""The remote API's TLS certificate: one PEM file with the certificate and its key.

``cluster init`` creates a self-signed certificate for the cluster name, the
master's name and its address (``create_certificate``), in
``<data dir>/rapi.pem`` as Ganeti keeps its ``rapi.pem``: certificate (and
any chain) and private key in one file that only its owner may read.
Clients pin it by its SHA-256 fingerprint (``gnt-lv rapi fingerprint``) or
trust the file's certificate as a CA. An operator's own certificate replaces
it with ``install_certificate`` (``gnt-lv cluster renew-crypto
--rapi-certificate FILE``): a PEM file with the certificate, its chain and
the unencrypted private key, checked to belong together (``read_pem_file``)
before anything is renewed or replaced.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ganeti_lv import pki
from ganeti_lv.config import write_file_atomically
from ganeti_lv.errors import ECODE_ENVIRON, ECODE_INVAL, OpPrereqError

_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n.*?-----END \1-----\r?\n?", re.DOTALL)


def create_certificate(
    path: str, common_name: str, names: Sequence[str], addresses: Sequence[str] = ()
) -> None:
    """Write a new self-signed certificate and key for ``names`` and ``addresses`` to ``path``."""
    key = pki.new_key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    builder = (
        pki.certificate_builder(subject, key.public_key(), pki.VALID_DAYS)
        .issuer_name(subject)
        # its own trust anchor: a client may trust this file as its CA
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    )
    alt = pki.subject_alt_names(names, addresses)
    if alt:
        builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
    cert = builder.sign(key, hashes.SHA256())
    write_file_atomically(path, pki.cert_pem(cert) + pki.key_pem(key), 0o600)


def _blocks(data: bytes) -> tuple[list[bytes], list[bytes]]:
    """The certificate blocks and the private key blocks of a PEM file."""
    certs, keys = [], []
    for match in _PEM_BLOCK.finditer(data):
        kind = match.group(1)
        if kind == b"CERTIFICATE":
            certs.append(match.group(0))
        elif kind.endswith(b"PRIVATE KEY"):
            keys.append(match.group(0))
    return certs, keys


def check_pem(data: bytes, what: str) -> x509.Certificate:
    """The certificate of a PEM file; OpPrereqError unless its key is there and matches it."""
    certs, keys = _blocks(data)
    if not certs or len(keys) != 1:
        raise OpPrereqError(
            f"{what} must hold a certificate (then its chain) and one private key in PEM form",
            ECODE_INVAL,
        )
    try:
        cert = x509.load_pem_x509_certificate(certs[0])
        key = serialization.load_pem_private_key(keys[0], password=None)
    except (ValueError, TypeError) as err:
        raise OpPrereqError(f"{what} cannot be read: {err}", ECODE_INVAL) from err
    if cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) != key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ):
        raise OpPrereqError(
            f"{what}: the private key does not belong to the certificate", ECODE_INVAL
        )
    return cert


def read_certificate(path: str) -> x509.Certificate:
    """The certificate of the remote API's PEM file, checked; OpPrereqError when unusable."""
    try:
        with open(path, "rb") as fobj:
            data = fobj.read()
    except FileNotFoundError:
        raise OpPrereqError(
            f"The remote API has no certificate ({path} is missing): create one with"
            " 'gnt-lv cluster renew-crypto --new-rapi-certificate'",
            ECODE_ENVIRON,
        ) from None
    except OSError as err:
        raise OpPrereqError(f"Cannot read {path}: {err}", ECODE_ENVIRON) from err
    return check_pem(data, f"The remote API certificate file {path}")


def read_pem_file(source: str) -> tuple[bytes, x509.Certificate]:
    """What ``source`` holds (certificate, chain, key in PEM) and its certificate, checked
    (``check_pem``); OpPrereqError (ECODE_INVAL) when it cannot be read or is not one."""
    try:
        with open(source, "rb") as fobj:
            data = fobj.read()
    except OSError as err:
        raise OpPrereqError(f"Cannot read {source}: {err}", ECODE_INVAL) from err
    return data, check_pem(data, source)


def install_certificate(data: bytes, path: str) -> None:
    """Make ``data`` (from ``read_pem_file``) the remote API's certificate at ``path``."""
    write_file_atomically(path, data, 0o600)


def fingerprint(cert: x509.Certificate) -> str:
    """The certificate's SHA-256 fingerprint as ``AB:CD:...`` (as ``openssl x509`` shows it)."""
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()
