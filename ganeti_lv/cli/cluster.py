"""``gnt-lv cluster init|info|modify|verify``."""

from __future__ import annotations

import argparse
import time
from typing import Any

from ganeti_lv import constants, opcodes
from ganeti_lv.cli import common
from ganeti_lv.cli.common import EXIT_FAILURE, EXIT_SUCCESS, CliEnv, CommandRegistry
from ganeti_lv.units import without_resets


def _add_settings(parser: argparse.ArgumentParser) -> None:
    """The settings ``init`` and ``modify`` both take."""
    parser.add_argument("--hooks-dir", dest="hooks_base_dir", help="Hooks base dir on the nodes")
    parser.add_argument("--export-dir", help="Directory for exports on the nodes")
    parser.add_argument("--file-storage-dir", help="Node-local directory for 'file' disks")
    parser.add_argument("--shared-file-storage-dir", help="Shared directory for 'sharedfile' disks")
    parser.add_argument("--domain-type", choices=("kvm", "qemu"), help="libvirt domain type")
    parser.add_argument(
        "--default-iallocator",
        metavar="NAME",
        help="Allocator of instances added without a primary node (any name: the built-in"
        " one; '' for none; a new cluster's: hail)",
    )
    common.add_hvparams(parser)
    common.add_beparams(parser)


def _settings(opts: argparse.Namespace) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for name in (
        "hooks_base_dir",
        "export_dir",
        "file_storage_dir",
        "shared_file_storage_dir",
        "domain_type",
        "default_iallocator",
    ):
        value = getattr(opts, name)
        if value is not None:
            fields[name] = value
    if opts.hvparams is not None:
        fields["hvparams"] = common.parse_hvparams(opts.hvparams)
    if opts.beparams is not None:
        fields["beparams"] = common.parse_kv_list(opts.beparams, "-B")
    return fields


# ---------------------------------------------------------------- init


def cmd_init(opts: argparse.Namespace, env: CliEnv) -> int:
    """Create a new cluster with this machine's data dir as the master's."""
    from ganeti_lv.cli.node import obtain_host_key
    from ganeti_lv.cmdlib.cluster import normalize_cluster_params

    address = opts.master_address
    fields = _settings(opts)
    if opts.default_bridge:
        fields["default_bridge"] = opts.default_bridge
    fields = normalize_cluster_params(fields)
    for name in ("hvparams", "beparams"):  # "-key" at init: the default, as not given
        if name in fields:
            fields[name] = without_resets(fields[name])
    from ganeti_lv.objects import Node  # only here: gnt-lv starts faster without it

    master = Node(
        name=opts.master_name,
        address=address,
        ssh_port=opts.ssh_port,
        libvirt_uri=opts.libvirt_uri or "",
        peer_uri=opts.peer_uri or "",
        migration_address=opts.migration_address or "",
        memory_cap=opts.memory_cap,
    )
    host_key = None
    if not opts.no_host_key:
        host_key = obtain_host_key(env, address, opts.ssh_port, opts.master_host_key)
    from ganeti_lv import bootstrap  # SSH key handling: paramiko, only for init

    bootstrap.init_cluster(
        env.data_dir,
        cluster_name=opts.cluster_name,
        master=master,
        master_host_key=host_key,
        ssh_key_file=opts.ssh_key_file,
        ca_cert_file=opts.ca_cert,
        ca_key_file=opts.ca_key,
        **fields,
    )
    env.write(f"Cluster '{opts.cluster_name}' initialised in {env.data_dir}")
    if host_key is not None:
        give_master_certificates(env, master.name)
    return EXIT_SUCCESS


def give_master_certificates(env: CliEnv, master: str) -> None:
    """The master node's libvirt certificates, over SSH; a warning when it cannot be reached."""
    from ganeti_lv.errors import OpExecError

    try:
        env.submit(opcodes.OpClusterRenewCrypto(new_node_certificates=True, node_names=[master]))
    except OpExecError as err:
        env.warn(
            f"The master node has no libvirt certificates yet ({err}); give them with"
            " 'gnt-lv cluster renew-crypto --new-node-certificates' once it answers over SSH"
        )


# ---------------------------------------------------------------- info


def _fmt_time(value: float) -> str:
    return time.ctime(value)


def _ca_summary(data_dir: str) -> str:
    """The cluster CA's subject and fingerprint (what nodes and the master trust)."""
    import os

    from ganeti_lv import paths

    path = paths.ca_cert_file(data_dir)
    if not os.path.exists(path):
        return "(none: 'gnt-lv cluster renew-crypto --new-cluster-certificate' makes one)"
    from cryptography import x509

    from ganeti_lv.rapi.certs import fingerprint

    with open(path, "rb") as fobj:
        cert = x509.load_pem_x509_certificate(fobj.read())
    return f"{cert.subject.rfc4514_string()}, SHA256 Fingerprint={fingerprint(cert)}"


def cmd_info(opts: argparse.Namespace, env: CliEnv) -> int:
    """Print the cluster's settings."""
    from ganeti_lv.config import ConfigStore

    data = ConfigStore(env.data_dir).read()
    cluster = data.cluster
    lines = [
        f"Cluster name: {cluster.name}",
        f"Cluster UUID: {cluster.uuid}",
        f"Creation time: {_fmt_time(cluster.ctime)}",
        f"Modification time: {_fmt_time(cluster.mtime)}",
        f"Master node: {cluster.master_node}",
        f"Configuration serial: {data.serial}",
        f"Domain type: {cluster.domain_type}",
        f"Default bridge: {cluster.default_bridge}",
        f"Default instance allocator: {cluster.default_iallocator or '(none)'}",
        f"Hooks base dir: {cluster.hooks_base_dir}",
        f"Hooks timeout: {cluster.hooks_timeout:g}",
        f"Node moves at once per source/target: {cluster.max_parallel_source}"
        f"/{cluster.max_parallel_target}",
        f"Export dir: {cluster.export_dir}",
        f"File storage dir: {cluster.file_storage_dir}",
        f"Shared file storage dir: {cluster.shared_file_storage_dir}",
        f"Shared storage unsafe ok: {cluster.shared_storage_unsafe_ok}",
        f"Compression tools: {', '.join(cluster.compression_tools)}",
        f"Tags: {', '.join(cluster.tags) or '(none)'}",
        "Default hypervisor parameters:",
        *(f"  {k}: {common.format_value(v)}" for k, v in sorted(cluster.hvparams.items())),
        "Default backend parameters:",
        *(f"  {k}: {common.format_value(v)}" for k, v in sorted(cluster.beparams.items())),
        f"Nodes: {len(data.nodes)}",
        f"Instances: {len(data.instances)}",
        f"Cluster CA: {_ca_summary(env.data_dir)}",
    ]
    for line in lines:
        env.write(line)
    return EXIT_SUCCESS


# ---------------------------------------------------------------- modify


def cmd_modify(opts: argparse.Namespace, env: CliEnv) -> int:
    """Change cluster-wide settings."""
    fields = _settings(opts)
    if opts.compression_tools is not None:
        fields["compression_tools"] = [t for t in opts.compression_tools.split(",") if t]
    if opts.shared_storage_unsafe_ok is not None:
        fields["shared_storage_unsafe_ok"] = common.parse_yes_no(
            opts.shared_storage_unsafe_ok, "--shared-storage-unsafe-ok"
        )
    if opts.hooks_timeout is not None:
        fields["hooks_timeout"] = opts.hooks_timeout
    if opts.default_bridge is not None:
        fields["default_bridge"] = opts.default_bridge
    if opts.max_parallel_source is not None:
        fields["max_parallel_source"] = opts.max_parallel_source
    if opts.max_parallel_target is not None:
        fields["max_parallel_target"] = opts.max_parallel_target
    if opts.migration_encryption is not None:
        # the cluster's default of the hypervisor parameter (instances may override it)
        fields.setdefault("hvparams", {})["migration_encryption"] = common.parse_yes_no(
            opts.migration_encryption, "--migration-encryption"
        )
    if not fields:
        env.warn("Please give at least one of the parameters.")
        return EXIT_FAILURE
    env.submit(opcodes.OpClusterSetParams(**fields))
    return EXIT_SUCCESS


# ---------------------------------------------------------------- verify


def cmd_verify(opts: argparse.Namespace, env: CliEnv) -> int:
    """Compare the configuration with what the nodes run; exit 1 on errors (warnings
    alone exit 0, as in Ganeti)."""
    problems = env.submit(opcodes.OpClusterVerify()) or []
    errors = [p for p in problems if p["severity"] != constants.VERIFY_WARNING]
    if problems:
        env.warn(f"Cluster verify found {len(problems)} problem(s) ({len(errors)} error(s))")
    return EXIT_FAILURE if errors else EXIT_SUCCESS


def register(registry: CommandRegistry) -> None:
    """Add the ``cluster`` group."""
    registry.group("cluster", help="Cluster-wide operations")

    init = registry.command("cluster", "init", cmd_init, help="Initialise a new cluster")
    init.add_argument("cluster_name", metavar="CLUSTERNAME")
    init.add_argument("--master-name", required=True, help="Name of the master node")
    init.add_argument("--master-address", required=True, help="Address of the master node")
    init.add_argument("--ssh-port", type=int, default=22, help="SSH port of the master node")
    init.add_argument("--libvirt-uri", help="libvirt URI the master uses for itself")
    init.add_argument("--peer-uri", help="libvirt URI other nodes use to reach the master")
    init.add_argument("--migration-address", help="Migration address of the master node")
    init.add_argument("--memory-cap", type=int, default=None, help="Master's memory cap (MiB)")
    init.add_argument("--default-bridge", help="Default bridge for instance NICs")
    init.add_argument("--master-host-key", help="The master's SSH host key '<type> <base64>'")
    init.add_argument(
        "--no-host-key",
        action="store_true",
        help="Do not record the master's host key now (add it to known_hosts later)",
    )
    init.add_argument("--ssh-key-file", help="Use this private key as the cluster key")
    init.add_argument(
        "--ca-cert", metavar="FILE", help="Your CA's certificate (PEM) as the cluster CA"
    )
    init.add_argument("--ca-key", metavar="FILE", help="Its private key (PEM, unencrypted)")
    common.add_force(
        init,
        "Accepted; no effect: the master's host key is always confirmed (or given:"
        " --master-host-key)",
    )
    common.add_reason(init)  # the job giving the master its certificates
    _add_settings(init)

    registry.command("cluster", "info", cmd_info, help="Show the cluster configuration")

    modify = registry.command("cluster", "modify", cmd_modify, help="Change cluster settings")
    common.add_submit(modify)
    _add_settings(modify)
    modify.add_argument("--compression-tools", help="Allowed export compression tools")
    modify.add_argument("--shared-storage-unsafe-ok", metavar="yes|no")
    modify.add_argument("--hooks-timeout", type=float, default=None, help="Per-script seconds")
    modify.add_argument(
        "--default-bridge",
        metavar="BRIDGE",
        help="Default bridge for instance NICs without an explicit link",
    )
    modify.add_argument(
        "--migration-encryption",
        metavar="yes|no",
        help="Migration streams over TLS with the nodes' certificates (-H migration_encryption)",
    )
    modify.add_argument(
        "--max-parallel-source",
        type=int,
        default=None,
        metavar="N",
        help="node migrate/evacuate: moves at once off one node",
    )
    modify.add_argument(
        "--max-parallel-target",
        type=int,
        default=None,
        metavar="N",
        help="node migrate/evacuate: moves at once onto one node",
    )

    verify = registry.command(
        "cluster", "verify", cmd_verify, help="Compare the configuration with the nodes"
    )
    common.add_reason(verify)
