"""``gnt-lv rapi add-user|remove-user|list-users|fingerprint`` and ``cluster renew-crypto``.

The remote API (``gnt-lv-masterd --rapi``) reads its users from
``<data dir>/rapi/users`` (Ganeti's format) and serves with the certificate
of ``<data dir>/rapi.pem``. These commands edit the users file (a new
user's password is kept as Ganeti's ``{HA1}`` hash unless ``--plain``;
the daemon reads the file again when it changes), show the certificate's
fingerprint for clients to pin, and replace the certificate: a new
self-signed one, or the operator's own (``--rapi-certificate``, a PEM file
with the certificate, its chain and its unencrypted key). A running daemon
uses a new certificate once it is restarted. ``renew-crypto`` also renews
the cluster CA and the nodes' libvirt certificates (an opcode:
``cmdlib/cluster_crypto.py``).
"""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import TYPE_CHECKING

from ganeti_lv import paths
from ganeti_lv.cli import common
from ganeti_lv.cli.common import EXIT_FAILURE, EXIT_SUCCESS, CliEnv, CommandRegistry
from ganeti_lv.errors import ECODE_INVAL, OpPrereqError

if TYPE_CHECKING:
    from cryptography import x509


def _password(opts: argparse.Namespace, env: CliEnv) -> str:
    """The new user's password: from --password-file ('-': stdin), else asked twice."""
    if opts.password_file:
        try:
            if opts.password_file == "-":
                text = sys.stdin.readline()
            else:
                with open(opts.password_file, encoding="utf-8") as fobj:
                    text = fobj.readline()
        except OSError as err:
            raise OpPrereqError(f"Cannot read {opts.password_file}: {err}", ECODE_INVAL) from err
        return text.rstrip("\r\n")
    if not env.interactive():
        raise OpPrereqError(
            "No terminal to ask for the password: give it with --password-file FILE"
            " (or '-' for standard input)",
            ECODE_INVAL,
        )
    first = getpass.getpass(f"Password for {opts.user}: ")
    if getpass.getpass("Again: ") != first:
        raise OpPrereqError("The passwords do not match", ECODE_INVAL)
    return first


def cmd_add_user(opts: argparse.Namespace, env: CliEnv) -> int:
    """Add a user of the remote API (read-only unless --write)."""
    from ganeti_lv.rapi import users

    users.check_name(opts.user)
    line = users.user_line(
        opts.user, _password(opts, env), opts.write, plain=opts.plain, read=opts.read
    )
    path = paths.rapi_users_file(env.data_dir)
    users.add_user(path, line, replace=opts.replace)
    access = "read and write" if opts.write else "read-only"
    if opts.read:
        access += ", with Ganeti's read option"
    env.write(f"User '{opts.user}' added ({access}) to {path}")
    return EXIT_SUCCESS


def cmd_remove_user(opts: argparse.Namespace, env: CliEnv) -> int:
    """Remove a user of the remote API."""
    from ganeti_lv.rapi import users

    users.remove_user(paths.rapi_users_file(env.data_dir), opts.user)
    env.write(f"User '{opts.user}' removed")
    return EXIT_SUCCESS


def cmd_list_users(opts: argparse.Namespace, env: CliEnv) -> int:
    """List the users of the remote API (never their passwords)."""
    from ganeti_lv.rapi import users

    rows = []
    for user in users.list_users(paths.rapi_users_file(env.data_dir)):
        scheme = user.password[1 : user.password.find("}")].upper()
        if not user.password.startswith("{") or not scheme:
            scheme = "CLEARTEXT"
        rows.append([user.name, ",".join(user.options) or "-", scheme])
    env.table(["User", "Options", "Password"], rows, opts.separator, opts.no_headers)
    return EXIT_SUCCESS


def cmd_fingerprint(opts: argparse.Namespace, env: CliEnv) -> int:
    """Show the remote API certificate's SHA-256 fingerprint (for clients to pin)."""
    from ganeti_lv.rapi import certs

    path = paths.rapi_cert_file(env.data_dir)
    cert = certs.read_certificate(path)
    env.write(f"SHA256 Fingerprint={certs.fingerprint(cert)}")
    if opts.verbose:
        env.write(f"Subject: {cert.subject.rfc4514_string()}")
        env.write(f"Not after: {cert.not_valid_after_utc.isoformat()}")
        env.write(f"File: {path}")
    return EXIT_SUCCESS


def _renew_rapi(own: tuple[bytes, x509.Certificate] | None, env: CliEnv) -> None:
    """A new self-signed remote API certificate, or the operator's ``own`` (its
    content and certificate, from ``certs.read_pem_file``)."""
    from ganeti_lv.config import ConfigStore
    from ganeti_lv.rapi import certs

    path = paths.rapi_cert_file(env.data_dir)
    if own is not None:
        certs.install_certificate(own[0], path)
        cert = own[1]
    else:
        data = ConfigStore(env.data_dir).snapshot()
        master = data.nodes[data.cluster.master_node]
        names = [data.cluster.name, master.name]
        certs.create_certificate(path, data.cluster.name, names, [master.address])
        cert = certs.read_certificate(path)
    env.write(f"New remote API certificate in {path}")
    env.write(f"SHA256 Fingerprint={certs.fingerprint(cert)}")
    env.write("Restart the master daemon (gnt-lv-masterd --rapi) to serve it.")


def cmd_renew_crypto(opts: argparse.Namespace, env: CliEnv) -> int:
    """Renew the cluster's certificates: the CA and the libvirt ones, and/or the remote API's."""
    from ganeti_lv import opcodes
    from ganeti_lv.rapi import certs

    if opts.new_rapi_certificate and opts.rapi_certificate:
        env.warn("Give only one of --new-rapi-certificate and --rapi-certificate FILE.")
        return EXIT_FAILURE
    rapi = bool(opts.new_rapi_certificate or opts.rapi_certificate)
    libvirt = bool(opts.new_cluster_certificate or opts.new_node_certificates)
    # the operator's file is checked before anything is asked or renewed
    own = certs.read_pem_file(opts.rapi_certificate) if opts.rapi_certificate else None
    if not (rapi or libvirt):
        env.warn(
            "Give at least one of --new-cluster-certificate, --new-node-certificates,"
            " --new-rapi-certificate and --rapi-certificate FILE."
        )
        return EXIT_FAILURE
    what = []
    if libvirt:
        what.append(
            "the cluster CA and every certificate"
            if opts.new_cluster_certificate
            else "the node and master certificates"
        )
    if rapi:
        what.append("the remote API's certificate (its clients must trust the new one)")
    # asked whatever is renewed, as Ganeti's
    if not env.confirm(f"Renew {' and '.join(what)}? Guests keep running.", opts.force):
        return EXIT_FAILURE
    if libvirt:
        env.submit(
            opcodes.OpClusterRenewCrypto(
                new_cluster_certificate=opts.new_cluster_certificate,
                new_node_certificates=opts.new_node_certificates,
            )
        )
    if rapi:
        _renew_rapi(own, env)
    return EXIT_SUCCESS


def register(registry: CommandRegistry) -> None:
    """Add the ``rapi`` group and ``cluster renew-crypto``."""
    registry.group("rapi", help="Ganeti's remote API: users and certificate")

    add = registry.command("rapi", "add-user", cmd_add_user, help="Add a remote API user")
    add.add_argument("user", metavar="USER")
    add.add_argument("--write", action="store_true", help="The user may make changes")
    add.add_argument(
        "--read",
        action="store_true",
        help="Ganeti's read option: also the resources kept to it (an instance's console)",
    )
    add.add_argument(
        "--password-file", metavar="FILE", help="Read the password from FILE ('-': stdin)"
    )
    add.add_argument(
        "--plain", action="store_true", help="Keep the password in plain text, not as {HA1}"
    )
    add.add_argument("--replace", action="store_true", help="Replace an existing user")

    remove = registry.command(
        "rapi", "remove-user", cmd_remove_user, help="Remove a remote API user"
    )
    remove.add_argument("user", metavar="USER")

    lst = registry.command("rapi", "list-users", cmd_list_users, help="List remote API users")
    lst.add_argument("--separator", default=None, help="Field separator")
    lst.add_argument("--no-headers", action="store_true", help="Omit the header line")

    fpr = registry.command(
        "rapi", "fingerprint", cmd_fingerprint, help="Show the certificate's fingerprint"
    )
    fpr.add_argument("-v", "--verbose", action="store_true", help="Also subject and expiry")

    renew = registry.command(
        "cluster", "renew-crypto", cmd_renew_crypto, help="Renew the cluster's certificates"
    )
    renew.add_argument(
        "--new-cluster-certificate",
        action="store_true",
        help="A new cluster CA, and new libvirt certificates for every node and the master",
    )
    renew.add_argument(
        "--new-node-certificates",
        action="store_true",
        help="New libvirt certificates for every node and the master from the cluster CA",
    )
    common.add_submit(renew)
    common.add_force(renew)
    renew.add_argument(
        "--new-rapi-certificate", action="store_true", help="Create a new self-signed one"
    )
    renew.add_argument(
        "--rapi-certificate", metavar="FILE", help="Use FILE (certificate, chain, key; PEM)"
    )
