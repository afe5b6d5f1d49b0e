"""``gnt-lv rapi ...`` and ``cluster renew-crypto``; the certificate ``cluster init`` creates."""

from __future__ import annotations

import os
import subprocess
from typing import Any

import pytest
from cryptography import x509

from ganeti_lv import paths
from ganeti_lv.cli.main import main
from ganeti_lv.master.jobs import JobStore
from ganeti_lv.rapi import certs, users


def _gnt(ddir: str, capsys: Any, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["--data-dir", ddir, *argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def ddir(tmp_path: Any) -> str:
    """A data dir of a new cluster made by ``gnt-lv cluster init``."""
    path = str(tmp_path / "data")
    argv = ["--data-dir", path, "cluster", "init", "--master-name", "m1.example.com",
            "--master-address", "127.0.0.1", "--no-host-key", "c1.example.com"]  # fmt: skip
    assert main(argv) == 0
    return path


def _openssl_fingerprint(path: str) -> str:
    out = subprocess.run(
        ["openssl", "x509", "-in", path, "-noout", "-fingerprint", "-sha256"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return out.strip().split("=", 1)[1]


def test_cluster_init_creates_a_private_certificate(ddir: str, capsys: Any) -> None:
    path = paths.rapi_cert_file(ddir)
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    cert = certs.read_certificate(path)
    alt = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert alt.get_values_for_type(x509.DNSName) == ["c1.example.com", "m1.example.com"]
    assert [str(a) for a in alt.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    code, out, _ = _gnt(ddir, capsys, "rapi", "fingerprint")
    assert code == 0 and out == f"SHA256 Fingerprint={_openssl_fingerprint(path)}\n"


def test_users_are_added_listed_and_removed(ddir: str, capsys: Any, tmp_path: Any) -> None:
    secret = tmp_path / "pw"
    secret.write_text("p4ss word\n")
    code, out, _ = _gnt(
        ddir, capsys, "rapi", "add-user", "--write", "--password-file", str(secret), "ops"
    )
    assert code == 0 and "read and write" in out
    code, _, _ = _gnt(
        ddir, capsys, "rapi", "add-user", "--plain", "--password-file", str(secret), "viewer"
    )
    assert code == 1  # a plain password with whitespace cannot be written
    secret.write_text("viewpw\n")
    code, _, _ = _gnt(
        ddir, capsys, "rapi", "add-user", "--plain", "--password-file", str(secret), "viewer"
    )
    assert code == 0
    code, out, _ = _gnt(
        ddir, capsys, "rapi", "add-user", "--read", "--password-file", str(secret), "console"
    )
    assert code == 0 and "with Ganeti's read option" in out
    code, out, _ = _gnt(ddir, capsys, "rapi", "list-users", "--separator", ":", "--no-headers")
    # the options as written: a user without any is no "read" user (the console refuses it)
    assert code == 0 and out == "console:read:HA1\nops:write:HA1\nviewer:-:CLEARTEXT\n"
    path = paths.rapi_users_file(ddir)
    with open(path, encoding="utf-8") as fobj:
        text = fobj.read()
    assert "p4ss word" not in text and users.ha1("ops", "p4ss word") in text
    code, _, err = _gnt(ddir, capsys, "rapi", "add-user", "--password-file", str(secret), "ops")
    assert code == 1 and "already exists" in err
    assert _gnt(ddir, capsys, "rapi", "remove-user", "ops")[0] == 0
    code, _, err = _gnt(ddir, capsys, "rapi", "remove-user", "ops")
    assert code == 1 and "unknown_entity" in err
    assert [(u.name, u.options) for u in users.list_users(path)] == [
        ("console", ("read",)),
        ("viewer", ()),
    ]


def test_add_user_without_a_terminal_needs_a_password_file(
    ddir: str, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", open(os.devnull))  # noqa: SIM115
    code, _, err = _gnt(ddir, capsys, "rapi", "add-user", "ops")
    assert code == 1 and "--password-file" in err
    assert not os.path.exists(paths.rapi_users_file(ddir))


def test_renew_crypto_new_and_own_certificate(ddir: str, capsys: Any, tmp_path: Any) -> None:
    path = paths.rapi_cert_file(ddir)
    first = _openssl_fingerprint(path)
    # asked first, as Ganeti's: no terminal, no -f: nothing renewed
    code, _, err = _gnt(ddir, capsys, "cluster", "renew-crypto", "--new-rapi-certificate")
    assert code == 1 and "remote API's certificate" in err and "not confirmed" in err
    assert _openssl_fingerprint(path) == first
    code, out, _ = _gnt(ddir, capsys, "cluster", "renew-crypto", "-f", "--new-rapi-certificate")
    second = _openssl_fingerprint(path)
    assert code == 0 and second != first and f"Fingerprint={second}" in out
    own = str(tmp_path / "own.pem")
    certs.create_certificate(own, "rapi.example.org", ["rapi.example.org"])
    code, out, _ = _gnt(ddir, capsys, "cluster", "renew-crypto", "-f", "--rapi-certificate", own)
    assert code == 0 and _openssl_fingerprint(path) == _openssl_fingerprint(own)
    # a certificate with somebody else's key is refused, the one in use stays
    other = str(tmp_path / "other.pem")
    certs.create_certificate(other, "x", ["x"])
    with open(own, "rb") as a, open(other, "rb") as b:
        cert_of_own = (
            a.read().split(b"-----END CERTIFICATE-----")[0] + b"-----END CERTIFICATE-----\n"
        )
        key_of_other = b.read().split(b"-----END CERTIFICATE-----\n")[1]
    mixed = tmp_path / "mixed.pem"
    mixed.write_bytes(cert_of_own + key_of_other)
    code, _, err = _gnt(
        ddir, capsys, "cluster", "renew-crypto", "-f", "--rapi-certificate", str(mixed)
    )
    assert code == 1 and "does not belong" in err
    assert _openssl_fingerprint(path) == _openssl_fingerprint(own)
    code, _, err = _gnt(ddir, capsys, "cluster", "renew-crypto")
    assert code == 1 and "--new-rapi-certificate" in err


def test_renew_crypto_checks_the_given_certificate_before_renewing_anything(
    ddir: str, capsys: Any, tmp_path: Any
) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate\n")
    jobs = JobStore(paths.jobs_dir(ddir))
    code, _, err = _gnt(ddir, capsys, "cluster", "renew-crypto", "-f",
                        "--new-cluster-certificate", "--rapi-certificate", str(bad))  # fmt: skip
    assert code == 1 and str(bad) in err
    assert jobs.job_ids(archived=True) == []  # no cluster CA renewed
