"""A node's TLS credentials under libvirt's and qemu's standard names, and their reload.

libvirtd reads ``/etc/pki/CA/cacert.pem``, ``/etc/pki/libvirt/servercert.pem``,
``/etc/pki/libvirt/private/serverkey.pem`` (its TLS listener) and
``clientcert.pem``/``private/clientkey.pem`` (the connections it opens to
its peers for peer-to-peer migrations); qemu reads ``/etc/pki/qemu/``
``ca-cert.pem``, ``server-cert.pem``, ``server-key.pem``, ``client-cert.pem``
and ``client-key.pem`` for TLS migration streams: certificates of its own
(``pki``), whose keys are readable by the group qemu runs as (libvirtd gives
its state directory, ``/var/lib/libvirt/qemu``, to that user and group;
``libvirt-qemu`` on Debian). ``install`` writes them over the node's SSH session and asks a
running libvirtd to use them at once (``virt-admin server-update-tls``): no
restart, guests undisturbed. The new files are first written beside the old
ones (``STAGED``) and then put in place together by one command, which a lost
SSH connection does not stop: a node that fails before that keeps its old
credentials whole (never a new CA beside an old key), and one whose reload
fails after it has the new ones in place (its libvirtd uses them when it next
starts).
"""

from __future__ import annotations

import os
from collections.abc import Callable

from ganeti_lv.errors import NodeError
from ganeti_lv.node.transport import NodeTransport
from ganeti_lv.pki import Authority, NodeCredentials, issue_node_credentials

CA_CERT = "/etc/pki/CA/cacert.pem"
LIBVIRT_DIR = "/etc/pki/libvirt"
QEMU_DIR = "/etc/pki/qemu"
# owned by the user and group libvirtd runs qemu as (qemu.conf's ``user``/``group``)
QEMU_STATE_DIR = "/var/lib/libvirt/qemu"
SERVER_CERT = f"{LIBVIRT_DIR}/servercert.pem"
PRIVATE_DIR = f"{LIBVIRT_DIR}/private"

# the result line of the reload script
RELOADED = "tls-reloaded"
NOT_SERVING = "tls-not-serving"

# a new file's name until all of them are put in place
STAGED = ".new"
_PUT_IN_PLACE = f'trap "" HUP; for f; do mv -f -- "$f{STAGED}" "$f" || exit 1; done'

_RELOAD = (
    "if virt-admin -q -c libvirtd:///system server-update-tls libvirtd >/dev/null 2>&1;"
    f" then echo {RELOADED}; else echo {NOT_SERVING}; fi"
)


# qemu opens these itself, as the user it runs as: they are readable by its group
QEMU_KEYS = (f"{QEMU_DIR}/server-key.pem", f"{QEMU_DIR}/client-key.pem")

# every file of a node's credentials: node path, the credential it holds, its mode
_FILES = (
    (CA_CERT, "ca_cert", 0o644),
    (SERVER_CERT, "server_cert", 0o644),
    (f"{PRIVATE_DIR}/serverkey.pem", "server_key", 0o600),
    (f"{LIBVIRT_DIR}/clientcert.pem", "client_cert", 0o644),
    (f"{PRIVATE_DIR}/clientkey.pem", "client_key", 0o600),
    (f"{QEMU_DIR}/ca-cert.pem", "ca_cert", 0o644),
    (f"{QEMU_DIR}/server-cert.pem", "qemu_server_cert", 0o644),
    (QEMU_KEYS[0], "qemu_server_key", 0o640),
    (f"{QEMU_DIR}/client-cert.pem", "qemu_client_cert", 0o644),
    (QEMU_KEYS[1], "qemu_client_key", 0o640),
)
# gives the files named after it to qemu's group (root's where libvirtd has no state dir)
_TO_QEMU_GROUP = f'g=$(stat -c %g {QEMU_STATE_DIR} 2>/dev/null) || g=0; chgrp -- "$g" "$@"'


def node_files(creds: NodeCredentials) -> dict[str, tuple[bytes, int]]:
    """Every file of a node's credentials: node path -> (content, mode)."""
    return {path: (getattr(creds, what), mode) for path, what, mode in _FILES}


def write_local(creds: NodeCredentials, local_path: Callable[[str], str]) -> None:
    """Write the credentials where ``local_path`` maps each node path (a node's files
    as seen from its host)."""
    from ganeti_lv.config import write_file_atomically

    try:
        qemu_gid = os.stat(local_path(QEMU_STATE_DIR)).st_gid
    except FileNotFoundError:
        qemu_gid = 0
    for path, (data, mode) in node_files(creds).items():
        local = local_path(path)
        os.makedirs(os.path.dirname(local), mode=0o755, exist_ok=True)
        write_file_atomically(local, data, mode)
        if path in QEMU_KEYS:
            os.chown(local, -1, qemu_gid)
    os.chmod(local_path(PRIVATE_DIR), 0o700)  # as ``install`` leaves it


def write_first(
    authority: Authority,
    cluster_name: str,
    node_name: str,
    addresses: list[str],
    local_path: Callable[[str], str],
) -> bool:
    """A node's first credentials, written locally unless it has a server certificate.

    What provisioning does before libvirtd first listens on TLS (the local
    cluster's harness, the Vagrant nodes); True if it wrote them.
    """
    if os.path.exists(local_path(SERVER_CERT)):
        return False
    write_local(issue_node_credentials(authority, cluster_name, node_name, addresses), local_path)
    return True


def uninstall(node: NodeTransport) -> None:
    """Remove the node's credentials (a node leaving the cluster): the keys and the
    certificates that let it into the other nodes' libvirtd. Its libvirtd keeps what
    it loaded until it next starts."""
    files = [path for path, what, _mode in _FILES if what != "ca_cert"]  # the CA's is public
    node.run(["rm", "-f", "--", *files, *(path + STAGED for path in files)], timeout=30)


def install(node: NodeTransport, creds: NodeCredentials) -> bool:
    """Install the credentials on the node; True if its libvirtd reloaded them.

    False: libvirtd does not serve TLS now (not running, or without a TLS
    listener), or its reload failed; it uses the files when it next starts.
    NodeError (nothing changed on the node) until the files are in place.
    """
    files = node_files(creds)
    dirs = sorted({os.path.dirname(p) for p in files})
    node.run(["mkdir", "-p", *dirs], timeout=30)
    node.run(["chmod", "700", PRIVATE_DIR], timeout=30)
    staged = [path + STAGED for path in files]
    for path, (data, mode) in files.items():
        node.put_bytes(data, path + STAGED, mode)
    node.run(["sh", "-c", _TO_QEMU_GROUP, "sh", *(path + STAGED for path in QEMU_KEYS)], timeout=30)
    # on disk before they replace the old ones: a node that loses its power next must
    # not boot with a key file whose name points at nothing yet
    node.run(["sync", "--", *staged, *dirs], timeout=60)
    node.run(["sh", "-c", _PUT_IN_PLACE, "sh", *files], timeout=60)
    try:
        node.run(["sync", "--", *files, *dirs], timeout=60)  # the renames too
        return RELOADED in node.run(["sh", "-c", _RELOAD], timeout=60).stdout
    except NodeError:  # in place: libvirtd takes them when it next starts
        return False
