"""``gnt-lv node add|list|modify|remove``."""

from __future__ import annotations

import argparse
from typing import Any

from ganeti_lv import opcodes
from ganeti_lv.cli import common
from ganeti_lv.cli.common import EXIT_FAILURE, EXIT_SUCCESS, CliEnv, CommandRegistry
from ganeti_lv.errors import ECODE_EXISTS, ECODE_INVAL, ECODE_NOENT, OpPrereqError

# name -> (title, is a size in MiB); the value is the node query row's.
# Ganeti's fields have Ganeti's titles (gnt-node list); the others are ganeti_lv's.
_FIELDS: dict[str, tuple[str, bool]] = {
    "name": ("Node", False),
    "address": ("Address", False),
    "ssh_port": ("SSHPort", False),
    "libvirt_uri": ("LibvirtURI", False),
    "peer_uri": ("PeerURI", False),
    "migration_address": ("MigrationAddress", False),
    "offline": ("Offline", False),
    "drained": ("Drained", False),
    "vm_capable": ("VMCapable", False),
    "master": ("IsMaster", False),
    "memory_cap": ("MemCap", True),
    "mtotal": ("MTotal", True),
    "mfree": ("MFree", True),
    "pinst_cnt": ("Pinst", False),
    "pinst_list": ("PriInstances", False),
    "uuid": ("UUID", False),
    "master_candidate": ("MasterC", False),
    "master_capable": ("MasterCapable", False),
    "role": ("Role", False),
    "pip": ("PrimaryIP", False),
    "sip": ("SecondaryIP", False),
    "sinst_cnt": ("Sinst", False),
    "sinst_list": ("SecInstances", False),
    "mnode": ("MNode", True),
    "ctotal": ("CTotal", False),
    "ctime": ("CTime", False),
    "mtime": ("MTime", False),
    "tags": ("Tags", False),
}
# Ganeti's names of fields the row has by another name
_ALIASES = {"ndp/ssh_port": "ssh_port"}
_TIMESTAMPS = ("ctime", "mtime")
# fields only a node that answers has (its live facts): "*" for a node marked
# offline, "?" for one that did not answer, as Ganeti's
_LIVE = ("mtotal", "mfree", "mnode", "ctotal")
NODE_FIELDS = (*_FIELDS, *_ALIASES)
NODE_DEFAULT_FIELDS = ("name", "address", "mtotal", "mfree", "pinst_cnt", "offline", "drained")


def field_title(field: str) -> str:
    """The column title of ``field`` (Ganeti's for Ganeti's fields)."""
    if field in _ALIASES:
        return field  # Ganeti's title of ndp/ssh_port is its name
    return _FIELDS[field][0]


def field_value(row: dict[str, Any], field: str, units: str) -> Any:
    """The value of ``field`` in a node query row, sizes rendered in ``units``."""
    field = _ALIASES.get(field, field)
    mark = common.live_mark(row) if field in _LIVE else None
    if mark is not None:
        return mark
    got = row[field]
    if field in _TIMESTAMPS:
        return None if got is None else common.format_time(got)
    return common.sized(got, units) if _FIELDS[field][1] else got


def obtain_host_key(env: CliEnv, address: str, port: int, given: str | None) -> str:
    """The node's SSH host key: ``given`` (validated), or fetched and confirmed.

    ``-f`` never skips this: without a terminal and without ``given`` it refuses.
    """
    from ganeti_lv import bootstrap  # paramiko: only for commands that meet a new node

    if given:
        bootstrap.parse_host_key(given)
        return " ".join(given.split()[:2])
    if not env.interactive():
        raise OpPrereqError(
            f"The SSH host key of {address} (port {port}) must be confirmed, but there is no "
            "terminal to ask; pass it with --host-key '<type> <base64>'",
            ECODE_INVAL,
        )
    from ganeti_lv.node.ssh import fetch_host_key

    key = fetch_host_key(address, port)
    fingerprint = bootstrap.host_key_fingerprint(key)
    env.write(f"The authenticity of host '{address}' (port {port}) can't be established.")
    env.write(f"{key.split()[0]} key fingerprint is {fingerprint}.")
    if not env.confirm("Are you sure you want to trust this host key?", force=False):
        raise OpPrereqError(f"Host key of {address} not confirmed", ECODE_INVAL)
    return key


def cmd_add(opts: argparse.Namespace, env: CliEnv) -> int:
    """Add a node after confirming its host key; a node added again keeps its
    address and SSH port unless ``--address`` and ``--ssh-port`` give others."""
    # a readd's address and port come from the configuration (a reinstalled node would
    # not answer with its old key); a known node without --readd is refused before it
    # is contacted for its host key (the job refuses it too)
    known: dict[str, Any] = {}
    try:
        (known,) = env.query(opcodes.OpNodeQuery(names=[opts.node_name], live=False))
    except OpPrereqError as err:
        if opts.readd or err.ecode != ECODE_NOENT:
            raise
    if known and not opts.readd:
        raise OpPrereqError(
            f"Node {known['name']} is already in the configuration (--readd adds it again)",
            ECODE_EXISTS,
        )
    address = opts.address or known.get("address") or opts.node_name
    port = opts.ssh_port if opts.ssh_port is not None else known.get("ssh_port", 22)
    host_key = obtain_host_key(env, address, port, opts.host_key)
    op = opcodes.OpNodeAdd(
        node_name=opts.node_name,
        primary_ip=opts.address,
        ssh_port=opts.ssh_port,
        libvirt_uri=opts.libvirt_uri,
        peer_uri=opts.peer_uri,
        migration_address=opts.migration_address,
        host_key=host_key,
        memory_cap=opts.memory_cap,
        readd=opts.readd,
    )
    env.submit(op)
    return EXIT_SUCCESS


def cmd_list(opts: argparse.Namespace, env: CliEnv) -> int:
    """List nodes with their live memory figures."""
    fields = common.parse_fields(opts.output, NODE_DEFAULT_FIELDS, NODE_FIELDS)
    units = common.list_units(opts)
    live = any(f in _LIVE for f in fields)
    rows = env.query(opcodes.OpNodeQuery(names=list(opts.nodes), live=live))
    table = [[field_value(row, f, units) for f in fields] for row in rows]
    headers = [field_title(f) for f in fields]
    env.table(headers, table, opts.separator, opts.no_headers)
    return EXIT_SUCCESS


def cmd_modify(opts: argparse.Namespace, env: CliEnv) -> int:
    """Set a node's offline/drained flags or memory cap."""
    kwargs: dict[str, Any] = {}
    if opts.offline is not None:
        kwargs["offline"] = common.parse_yes_no(opts.offline, "--offline")
    if opts.drained is not None:
        kwargs["drained"] = common.parse_yes_no(opts.drained, "--drained")
    if opts.master_candidate is not None:
        kwargs["master_candidate"] = common.parse_yes_no(
            opts.master_candidate, "--master-candidate"
        )
    if opts.vm_capable is not None:
        kwargs["vm_capable"] = common.parse_yes_no(opts.vm_capable, "--vm-capable")
    if opts.memory_cap is not None:
        if opts.memory_cap.strip().lower() in ("none", "default", ""):
            kwargs["clear_memory_cap"] = True
        else:
            from ganeti_lv.units import parse_size

            kwargs["memory_cap"] = parse_size(opts.memory_cap, "memory cap")
    if not kwargs:
        env.warn("Please give at least one of the parameters.")
        return EXIT_FAILURE
    # as Ganeti asks: guests failed over while it was offline may still run there too
    online = (
        f"Bring node {opts.node_name} back online by hand? Guests failed over away from it"
        " while it was offline may still run on it (a second copy of each); 'node add"
        " --readd' checks the node first. Continue?"
    )
    if kwargs.get("offline") is False and not opts.dry_run and not env.confirm(online, opts.force):
        return EXIT_FAILURE
    result = env.submit(
        opcodes.OpNodeSetParams(
            node_name=opts.node_name, force=opts.force, dry_run=opts.dry_run, **kwargs
        )
    )
    if result and not opts.dry_run:
        # as gnt-node modify prints them: values as Python's str (True, None)
        env.write(f"Modified node {opts.node_name}")
        for name, value in result:
            env.write(f" - {name:<5} -> {value}")
    return EXIT_SUCCESS


def cmd_remove(opts: argparse.Namespace, env: CliEnv) -> int:
    """Remove a node without instances, without asking (as Ganeti's gnt-node remove).

    The job refuses the master node and a node any instance is on.
    """
    env.submit(opcodes.OpNodeRemove(node_name=opts.node_name))
    return EXIT_SUCCESS


def register(registry: CommandRegistry) -> None:
    """Add the ``node`` group."""
    registry.group("node", help="Node operations")

    add = registry.command("node", "add", cmd_add, help="Add a node to the cluster")
    common.add_submit(add)
    add.add_argument("node_name", metavar="NODE")
    add.add_argument(
        "--address",
        help="Address the master uses (default: the node name; a node added again: its own)",
    )
    add.add_argument("--ssh-port", type=int, default=None, help="(default: 22; readd: its own)")
    add.add_argument("--libvirt-uri", help="libvirt URI the master uses for this node")
    add.add_argument("--peer-uri", help="libvirt URI other nodes use for this node")
    add.add_argument("--migration-address", help="Address for migration streams")
    add.add_argument("--memory-cap", type=int, default=None, help="Memory cap in MiB")
    add.add_argument("--host-key", help="The node's SSH host key '<type> <base64>'")
    add.add_argument("--readd", action="store_true", help="Re-add a known node")
    common.add_force(
        add, "Accepted; no effect: the host key is always confirmed (or given: --host-key)"
    )

    lst = registry.command("node", "list", cmd_list, help="List nodes")
    lst.add_argument("nodes", nargs="*", metavar="NODE")
    common.add_list_options(lst, NODE_FIELDS)
    common.add_units_option(lst)

    modify = registry.command("node", "modify", cmd_modify, help="Change node flags")
    common.add_submit(modify)
    modify.add_argument("node_name", metavar="NODE")
    modify.add_argument("-O", "--offline", metavar="yes|no")
    modify.add_argument("-D", "--drained", metavar="yes|no")
    modify.add_argument("-C", "--master-candidate", metavar="yes|no")
    modify.add_argument("--vm-capable", metavar="yes|no")
    modify.add_argument("--memory-cap", metavar="SIZE|none")
    common.add_force(
        modify, "Do not ask before bringing a node online; take one offline with instances on it"
    )
    common.add_dry_run(modify)

    remove = registry.command("node", "remove", cmd_remove, help="Remove a node")
    common.add_submit(remove)
    remove.add_argument("node_name", metavar="NODE")
    common.add_force(
        remove, "Accepted for compatibility: nothing is asked (as Ganeti's node remove)"
    )
