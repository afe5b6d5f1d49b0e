"""Cluster initialisation and the cluster's SSH trust files.

``init_cluster`` creates the master's data dir: the configuration (cluster
plus master node), the cluster SSH key (copied or generated with
``ssh-keygen``), ``known_hosts`` with the master's host key and the remote
API's self-signed certificate (``rapi.pem``). The
known_hosts helpers are used again by node add/remove: a node's key is only
recorded after the operator confirmed it (or passed it explicitly).
"""

from __future__ import annotations

import base64
import binascii
import os
import shutil
import subprocess
from typing import Any

from ganeti_lv import constants, paths
from ganeti_lv.config import write_file_atomically
from ganeti_lv.errors import (
    ECODE_EXISTS,
    ECODE_INVAL,
    ConfigurationError,
    OpPrereqError,
)
from ganeti_lv.names import check_name
from ganeti_lv.node import known_hosts
from ganeti_lv.objects import Cluster, ConfigData, Node
from ganeti_lv.opcodes import check_node_access, check_node_settings

HOST_KEY_TYPES = (
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
)


# ---------------------------------------------------------------- host keys


def parse_host_key(text: str) -> tuple[str, str]:
    """Split ``"<type> <base64>[ comment]"`` into (type, base64); ECODE_INVAL if malformed."""
    fields = text.split()
    if len(fields) < 2:
        raise OpPrereqError(
            f"Invalid SSH host key {text!r}: expected '<type> <base64>'", ECODE_INVAL
        )
    key_type, blob = fields[0], fields[1]
    if key_type not in HOST_KEY_TYPES:
        raise OpPrereqError(f"Unsupported SSH host key type {key_type!r}", ECODE_INVAL)
    try:
        raw = base64.b64decode(blob, validate=True)
    except (binascii.Error, ValueError) as err:
        raise OpPrereqError(f"Invalid SSH host key data: {err}", ECODE_INVAL) from err
    # The blob starts with the key type as an SSH string: check it matches.
    if len(raw) < 4 or raw[4 : 4 + int.from_bytes(raw[:4], "big")] != key_type.encode():
        raise OpPrereqError(
            f"Invalid SSH host key: data does not match type {key_type!r}", ECODE_INVAL
        )
    return key_type, blob


def host_key_fingerprint(text: str) -> str:
    """OpenSSH-style SHA256 fingerprint of a host key (``SHA256:...``)."""
    parse_host_key(text)
    return known_hosts.key_fingerprint(text)


def node_host_names(node: Node) -> list[str]:
    """The names under which a node's host key is recorded: its address, then its name."""
    return list(dict.fromkeys(n for n in (node.address, node.name) if n))


def record_node_host_key(known_hosts_file: str, node: Node, host_key: str) -> None:
    """Record the (confirmed) ``host_key`` of ``node`` for its address and name."""
    parse_host_key(host_key)
    for host in node_host_names(node):
        known_hosts.known_hosts_add(known_hosts_file, host, node.ssh_port, host_key)


def forget_node_host_key(known_hosts_file: str, node: Node) -> int:
    """Remove the node's entries from known_hosts; return how many lines went."""
    return sum(
        known_hosts.known_hosts_remove(known_hosts_file, host, node.ssh_port)
        for host in node_host_names(node)
    )


def lookup_known_host(known_hosts_file: str, host: str, port: int = 22) -> str | None:
    """The recorded ``"<type> <base64>"`` for host:port, or None."""
    name = known_hosts.known_hosts_name(host, port)
    try:
        with open(known_hosts_file, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except FileNotFoundError:
        return None
    for line in lines:
        fields = line.split()
        if len(fields) >= 3 and name in fields[0].split(","):
            return f"{fields[1]} {fields[2]}"
    return None


# ---------------------------------------------------------------- cluster key


def _install_ssh_key(data_dir: str, ssh_key_file: str | None, comment: str) -> None:
    key_path = paths.ssh_key_file(data_dir)
    os.makedirs(os.path.dirname(key_path), mode=0o700, exist_ok=True)
    if ssh_key_file:
        if not os.path.isfile(ssh_key_file):
            raise OpPrereqError(f"SSH key file {ssh_key_file!r} does not exist", ECODE_INVAL)
        with open(ssh_key_file, "rb") as fh:  # never readable by others, not even briefly
            write_file_atomically(key_path, fh.read(), mode=0o600)
        pub = ssh_key_file + ".pub"
        if os.path.isfile(pub):
            shutil.copyfile(pub, key_path + ".pub")
        else:
            out = _ssh_keygen(["-y", "-f", key_path])
            with open(key_path + ".pub", "w", encoding="utf-8") as fh:
                fh.write(out)
        return
    if os.path.isfile(key_path) and os.path.isfile(key_path + ".pub"):
        return  # left by an earlier, interrupted init: keep the key nodes may already trust
    _ssh_keygen(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", key_path])


def _ssh_keygen(args: list[str]) -> str:
    try:
        proc = subprocess.run(
            ["ssh-keygen", *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
    except OSError as err:
        raise ConfigurationError(f"Cannot run ssh-keygen: {err}") from err
    if proc.returncode != 0:
        raise ConfigurationError(f"ssh-keygen failed: {proc.stderr.strip()}")
    return proc.stdout


def _create_rapi_certificate(data_dir: str, cluster_name: str, master: Node) -> None:
    """The remote API's self-signed certificate for the cluster and the master."""
    from ganeti_lv.rapi import certs  # cryptography: only for init

    certs.create_certificate(
        paths.rapi_cert_file(data_dir),
        cluster_name,
        [cluster_name, master.name],
        [master.address],
    )


# ---------------------------------------------------------------- init


def _build_cluster(cluster_name: str, master: Node, cluster_fields: dict[str, Any]) -> Cluster:
    check_name(cluster_name, "cluster")
    check_name(master.name, "master node")
    allowed = {"name", "master_node", "uuid", "ctime", "mtime"}
    for key in cluster_fields:
        if key in allowed or key not in Cluster.__dataclass_fields__:
            raise OpPrereqError(f"Unknown cluster parameter {key!r}", ECODE_INVAL)
    domain_type = cluster_fields.get("domain_type", constants.DOMAIN_TYPE_KVM)
    if domain_type not in constants.DOMAIN_TYPES:
        raise OpPrereqError(
            f"Invalid domain type {domain_type!r}, must be one of "
            f"{', '.join(constants.DOMAIN_TYPES)}",
            ECODE_INVAL,
        )
    # a new cluster's allocator, as Ganeti's init picks hail (ours is always there)
    cluster = Cluster(
        name=cluster_name, master_node=master.name, default_iallocator=constants.IALLOC_HAIL
    )
    for key, value in cluster_fields.items():
        if key in ("hvparams", "beparams"):
            merged = dict(getattr(cluster, key))
            merged.update(value)
            value = merged
        setattr(cluster, key, value)
    problem = cluster.data_dirs_problem()
    if problem is not None:
        raise OpPrereqError(problem, ECODE_INVAL)
    return cluster


def init_cluster(
    data_dir: str,
    *,
    cluster_name: str,
    master: Node,
    master_host_key: str | None,
    ssh_key_file: str | None = None,
    ca_cert_file: str | None = None,
    ca_key_file: str | None = None,
    **cluster_fields: Any,
) -> ConfigData:
    """Create a new cluster in ``data_dir`` with ``master`` as its only node.

    ``cluster_fields`` are Cluster attributes (hooks_base_dir, export_dir,
    file_storage_dir, shared_file_storage_dir, domain_type, hvparams,
    beparams, default_bridge, ...). The cluster CA is made new, or is the
    operator's (``ca_cert_file`` and ``ca_key_file``, PEM, the key
    unencrypted); the master's libvirt client certificate comes from it.
    Refuses (ECODE_EXISTS) when the data dir already holds a configuration;
    nothing is written when an argument is bad.
    """
    from ganeti_lv.config import ConfigStore  # the store is built on top of objects

    if os.path.exists(paths.config_file(data_dir)):
        raise OpPrereqError(
            f"Cluster is already initialised (configuration {paths.config_file(data_dir)} exists)",
            ECODE_EXISTS,
        )
    cluster = _build_cluster(cluster_name, master, cluster_fields)
    what = f"the master {master.name}"
    check_node_settings(master.ssh_port, master.memory_cap, what)
    check_node_access(master.ssh_user, master.libvirt_uri, master.peer_uri, what)
    if master_host_key is not None:
        parse_host_key(master_host_key)
    if bool(ca_cert_file) != bool(ca_key_file):
        raise OpPrereqError("Give both the CA certificate and its key, or neither", ECODE_INVAL)
    from ganeti_lv import pki  # cryptography: only for init

    operator_ca: tuple[bytes, bytes] | None = None
    if ca_cert_file and ca_key_file:
        operator_ca = (pki.read_file(ca_cert_file), pki.read_file(ca_key_file))
        pki.parse_ca(*operator_ca, f"The CA {ca_cert_file}")  # checked before anything is written
    master = master.copy()
    master.offline = False
    master.drained = False
    master.master_candidate = True
    config = ConfigData(cluster=cluster, nodes={master.name: master})

    os.makedirs(data_dir, mode=0o700, exist_ok=True)
    _install_ssh_key(data_dir, ssh_key_file, f"ganeti-lv@{cluster_name}")
    if master_host_key is not None:
        record_node_host_key(paths.known_hosts_file(data_dir), master, master_host_key)
    _create_rapi_certificate(data_dir, cluster_name, master)
    if operator_ca is not None:
        authority = pki.store_ca(data_dir, *operator_ca, what=f"The CA {ca_cert_file}")
    else:
        authority = pki.create_cluster_ca(data_dir, cluster_name)
    pki.write_master_client(data_dir, authority, cluster_name)
    ConfigStore.initialize(data_dir, config)
    return config
