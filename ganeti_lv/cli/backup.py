"""``gnt-lv backup export/list/remove/import`` (as gnt-backup).

On a terminal the copy's progress ("disk/0 sent 1.5G, 120.0 MiB/s, 30%,
ETA 12s") drives a progress bar per disk; otherwise the lines are printed.
"""

from __future__ import annotations

import argparse

from ganeti_lv import constants, opcodes
from ganeti_lv.cli import common
from ganeti_lv.cli.common import EXIT_FAILURE, EXIT_SUCCESS, CliEnv, CommandRegistry
from ganeti_lv.cli.instance import parse_nics


def cmd_export(opts: argparse.Namespace, env: CliEnv) -> int:
    """Export an instance to a node's export dir."""
    op = opcodes.OpBackupExport(
        instance_name=opts.instance_name,
        target_node=opts.node,
        shutdown=not opts.noshutdown,
        shutdown_timeout=opts.shutdown_timeout,
        remove_instance=opts.remove_instance,
        ignore_remove_failures=opts.ignore_remove_failures,
        compress=opts.transport_compression,
        zero_free_space=opts.zero_free_space,
        zeroing_timeout_fixed=opts.zeroing_timeout_fixed,
        zeroing_timeout_per_mib=opts.zeroing_timeout_per_mib,
        long_sleep=opts.long_sleep,
        bandwidth_limit=opts.bandwidth_limit,
        dry_run=opts.dry_run,
    )
    result = env.submit(op)
    if opts.dry_run or result is None:  # a dry run, or --submit
        return EXIT_SUCCESS
    finalized, disks = result
    if not finalized or not all(disks):
        env.warn("Export failed or incomplete")
        return EXIT_FAILURE
    return EXIT_SUCCESS


# Ganeti's export fields and titles, and the kind of export ganeti_lv adds
# (``ganeti_lv``, or ``ganeti`` for one Ganeti wrote: config.ini without manifest.json)
_FIELDS = {"node": "Node", "export": "Export", "kind": "Kind"}
EXPORT_FIELDS = tuple(_FIELDS)
EXPORT_DEFAULT_FIELDS = ("node", "export")


def cmd_list(opts: argparse.Namespace, env: CliEnv) -> int:
    """List the exports, a row per node and export (Ganeti 3.0's table).

    A node that did not answer gets a row with ``?`` for its exports, as
    Ganeti's; what interrupted exports left is said on stderr.
    """
    fields = common.parse_fields(opts.output, EXPORT_DEFAULT_FIELDS, EXPORT_FIELDS)
    result = env.query(opcodes.OpBackupQuery(nodes=list(opts.nodes), with_kind=True))
    rows: list[list[str]] = []
    for node in sorted(result):
        exports = result[node]
        if exports is False:
            env.warn(f"Node {node}: cannot list exports")
            rows.append([node if f == "node" else "?" for f in fields])
            continue
        for entry in exports:
            if entry["stale"]:
                # also there while an export runs: remove --stale waits for it (the
                # instance's export lock), so it never takes a running export's files
                name = entry["name"]
                env.warn(
                    f"Incomplete export {entry['path']} on {node}: an export of {name} in"
                    " progress, or what an interrupted one left ('gnt-lv backup remove"
                    f" --stale {name}' removes it once no export of {name} runs)"
                )
                continue
            values = {"node": node, "export": entry["name"], "kind": entry["kind"]}
            rows.append([values[f] for f in fields])
    env.table([_FIELDS[f] for f in fields], rows, opts.separator, opts.no_headers)
    return EXIT_SUCCESS


def cmd_remove(opts: argparse.Namespace, env: CliEnv) -> int:
    """Remove every export of an instance."""
    env.submit(opcodes.OpBackupRemove(instance_name=opts.instance_name, stale=opts.stale))
    return EXIT_SUCCESS


def cmd_import(opts: argparse.Namespace, env: CliEnv) -> int:
    """Create an instance from an export (checksums verified), left stopped unless --start.

    As Ganeti's gnt-backup import, which never starts it: a copy of an
    instance that still runs would otherwise start as a second guest.
    """
    op = opcodes.OpInstanceCreate(
        instance_name=opts.instance_name,
        disk_template=opts.disk_template,
        pnode=opts.node,
        iallocator=opts.iallocator,
        mode="import",
        src_node=opts.src_node,
        src_path=opts.src_dir,
        nics=parse_nics(opts.net),
        beparams=common.parse_kv_list(opts.beparams or "", "-B"),
        hvparams=common.parse_hvparams(opts.hvparams or ""),
        tags=common.parse_tags(opts.tags),
        start=opts.start,
        dry_run=opts.dry_run,
    )
    env.submit(op)
    return EXIT_SUCCESS


def register(registry: CommandRegistry) -> None:
    """Add the ``backup`` group."""
    registry.group("backup", help="Instance exports: export, import, list, remove")
    exp = registry.command("backup", "export", cmd_export, help="Export an instance")
    common.add_submit(exp)
    exp.add_argument("instance_name", metavar="INSTANCE")
    exp.add_argument("-n", "--node", required=True, metavar="NODE", help="Target node")
    exp.add_argument("--noshutdown", action="store_true", help="Export live (snapshot)")
    exp.add_argument("--shutdown-timeout", type=int, default=constants.DEFAULT_SHUTDOWN_TIMEOUT)
    exp.add_argument("--remove-instance", action="store_true")
    exp.add_argument("--ignore-remove-failures", action="store_true")
    exp.add_argument(
        "--zero-free-space",
        action="store_true",
        help="Zero the unused blocks of the instance's ext2/3/4 disks before copying"
        " (only filesystems cleanly unmounted; shutdown mode)",
    )
    exp.add_argument("--zeroing-timeout-fixed", type=int, default=None)
    exp.add_argument("--zeroing-timeout-per-mib", type=float, default=None)
    exp.add_argument(
        "--long-sleep",
        action="store_true",
        help="Shutdown mode: copy with the instance down when its disks cannot be snapshotted"
        " (else the export is aborted)",
    )
    exp.add_argument("--transport-compression", default=constants.IEC_NONE, metavar="TOOL")
    exp.add_argument("--bandwidth-limit", type=int, default=None, metavar="MiB/s")
    common.add_dry_run(exp)
    lst = registry.command("backup", "list", cmd_list, help="List exports")
    lst.add_argument(
        "-n",
        "--node",
        dest="nodes",
        action="append",
        default=[],
        metavar="NODE",
        help="Only this node's exports (can be given more than once; default: all nodes)",
    )
    common.add_list_options(lst, EXPORT_FIELDS)
    common.add_units_option(lst)  # no sizes to show: accepted as gnt-backup list accepts it
    rem = registry.command("backup", "remove", cmd_remove, help="Remove an instance's exports")
    common.add_submit(rem)
    rem.add_argument(
        "--stale",
        action="store_true",
        help="remove only what an interrupted export left (INSTANCE.new), not the export",
    )
    rem.add_argument("instance_name", metavar="INSTANCE")
    imp = registry.command("backup", "import", cmd_import, help="Create an instance from an export")
    common.add_submit(imp)
    imp.add_argument("instance_name", metavar="INSTANCE")
    common.add_primary(imp)
    imp.add_argument("--src-node", required=True, metavar="NODE")
    imp.add_argument(
        "--src-dir",
        default=None,
        metavar="NAME|PATH",
        help="Export name in the export dir (default INSTANCE), or the absolute path of an"
        " export directory on the source node (e.g. /var/lib/ganeti/export/NAME)",
    )
    imp.add_argument(
        "--net",
        action="append",
        metavar="N:link=BRIDGE[,mac=MAC][,ip=IP]",
        help="NIC N of the new instance (replaces the export's NICs)",
    )
    imp.add_argument(
        "-t",
        "--disk-template",
        default=constants.DT_FILE,
        metavar="TEMPLATE",
        help=f"{', '.join(constants.DISK_TEMPLATES)} (default: file, the cluster's first"
        " enabled template, as Ganeti's import chooses; not the export's)",
    )
    common.add_beparams(imp)
    common.add_hvparams(imp)
    common.add_tags(imp, "Comma-separated tags (instead of the export's)")
    imp.add_argument(
        "--start",
        action="store_true",
        help="Start the instance once imported (default: left stopped, as Ganeti's import)",
    )
    common.add_dry_run(imp)
