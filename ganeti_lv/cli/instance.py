"""``gnt-lv instance add|startup|shutdown|reboot|remove|list|info``.

``startup``, ``shutdown`` and ``reboot`` take several instances, or select
them by node, tag or all (``ganeti_lv.cli.instance_many``).
"""

from __future__ import annotations

import argparse
from typing import Any

from ganeti_lv import constants, opcodes
from ganeti_lv.cli import common, instance_fields, instance_info, instance_many
from ganeti_lv.cli.common import EXIT_FAILURE, EXIT_SUCCESS, CliEnv, CommandRegistry
from ganeti_lv.errors import ECODE_INVAL, OpPrereqError
from ganeti_lv.units import parse_size

INSTANCE_FIELDS = instance_fields.FIELDS
# Ganeti's gnt-instance list columns: scripts that read them by position keep working
INSTANCE_DEFAULT_FIELDS = ("name", "hypervisor", "os", "pnode", "status", "oper_ram")


# ---------------------------------------------------------------- add


def parse_disks(specs: list[str] | None) -> list[dict[str, Any]]:
    """``--disk N:size=1G[,mode=rw][,name=x]`` options into opcode disk dicts."""
    disks: list[dict[str, Any]] = []
    for idx, params in enumerate(common.collect_indexed(specs, "--disk")):
        disk: dict[str, Any] = {}
        for key, value in params.items():
            if key == "size":
                parse_size(value, f"size of disk {idx}")  # refused here already when invalid
                # the job parses it again and says in its log when it rounds it up
                disk["size"] = int(value) if value.isdigit() else value
            elif key in ("mode", "name"):
                disk[key] = value
            else:
                raise OpPrereqError(f"Unknown disk parameter '{key}' for disk {idx}", ECODE_INVAL)
        if "size" not in disk:
            raise OpPrereqError(f"Missing size for disk {idx}", ECODE_INVAL)
        disks.append(disk)
    return disks


def parse_nics(specs: list[str] | None) -> list[dict[str, Any]]:
    """``--net N:link=BR[,mac=..][,ip=..]`` options into opcode nic dicts."""
    nics: list[dict[str, Any]] = []
    for idx, params in enumerate(common.collect_indexed(specs, "--net")):
        for key in params:
            if key not in ("link", "mac", "ip", "mode", "name", "vlan"):
                raise OpPrereqError(f"Unknown NIC parameter '{key}' for NIC {idx}", ECODE_INVAL)
        nics.append(dict(params))
    return nics


def _add_nics(opts: argparse.Namespace) -> list[dict[str, Any]]:
    """The --net NICs; without any, one NIC on the cluster's bridge (Ganeti's default)."""
    if opts.no_nics:
        if opts.nets:
            raise OpPrereqError("--no-nics and --net cannot be given together", ECODE_INVAL)
        return []
    return parse_nics(opts.nets) or [{}]


def cmd_add(opts: argparse.Namespace, env: CliEnv) -> int:
    """Create an instance."""
    if not opts.disks:
        raise OpPrereqError("At least one disk is required (--disk 0:size=SIZE)", ECODE_INVAL)
    op = opcodes.OpInstanceCreate(
        instance_name=opts.instance_name,
        disk_template=opts.disk_template,
        pnode=opts.node,
        iallocator=opts.iallocator,
        disks=parse_disks(opts.disks),
        nics=_add_nics(opts),
        beparams=common.parse_kv_list(opts.beparams or "", "-B"),
        hvparams=common.parse_hvparams(opts.hvparams or ""),
        os_type=opts.os,
        tags=common.parse_tags(opts.tags),
        start=not opts.no_start,
        dry_run=opts.dry_run,
    )
    env.submit(op)
    return EXIT_SUCCESS


# ---------------------------------------------------------------- state changes


def cmd_startup(opts: argparse.Namespace, env: CliEnv) -> int:
    """Start instances (with -H/-B: temporary parameters for this start only)."""
    hvparams = common.parse_hvparams(opts.hvparams or "")
    beparams = common.parse_kv_list(opts.beparams or "", "-B")
    return instance_many.run(
        opts,
        env,
        "startup",
        lambda name: opcodes.OpInstanceStartup(
            instance_name=name,
            force=opts.force,
            ignore_offline_nodes=opts.ignore_offline,
            no_remember=opts.no_remember,
            hvparams=dict(hvparams),
            beparams=dict(beparams),
            startup_paused=opts.startup_paused,
            dry_run=opts.dry_run,
        ),
    )


def cmd_shutdown(opts: argparse.Namespace, env: CliEnv) -> int:
    """Stop instances (ACPI, forced after --timeout seconds)."""
    return instance_many.run(
        opts,
        env,
        "shutdown",
        lambda name: opcodes.OpInstanceShutdown(
            instance_name=name,
            timeout=opts.timeout,
            ignore_offline_nodes=opts.ignore_offline,
            no_remember=opts.no_remember,
            force=opts.force,
            dry_run=opts.dry_run,
        ),
    )


def cmd_reboot(opts: argparse.Namespace, env: CliEnv) -> int:
    """Reboot instances."""
    return instance_many.run(
        opts,
        env,
        "reboot",
        lambda name: opcodes.OpInstanceReboot(
            instance_name=name,
            reboot_type=opts.reboot_type,
            shutdown_timeout=opts.shutdown_timeout,
            dry_run=opts.dry_run,
        ),
    )


def cmd_remove(opts: argparse.Namespace, env: CliEnv) -> int:
    """Remove an instance and its disks."""
    question = (
        f"This will remove the volumes of the instance {opts.instance_name} (including "
        "mirrors), thus removing all the data of the instance. Continue?"
    )
    if not env.confirm_for_instance(opts.instance_name, question, opts.force):
        return EXIT_FAILURE
    env.submit(
        opcodes.OpInstanceRemove(
            instance_name=opts.instance_name,
            ignore_failures=opts.ignore_failures,
            shutdown_timeout=opts.shutdown_timeout,
            dry_run=opts.dry_run,
        )
    )
    return EXIT_SUCCESS


# ---------------------------------------------------------------- queries


def cmd_list(opts: argparse.Namespace, env: CliEnv) -> int:
    """List instances with their real run state."""
    fields = common.parse_fields(
        opts.output, INSTANCE_DEFAULT_FIELDS, INSTANCE_FIELDS, instance_fields.is_known
    )
    units = common.list_units(opts)
    rows = env.query(opcodes.OpInstanceQuery(names=list(opts.instances)))
    table = [[instance_fields.value(row, f, units) for f in fields] for row in rows]
    headers = [instance_fields.header(f) for f in fields]
    env.table(headers, table, opts.separator, opts.no_headers)
    return EXIT_SUCCESS


def cmd_info(opts: argparse.Namespace, env: CliEnv) -> int:
    """Show details of the instances named, or of all with ``--all`` (as gnt-instance info)."""
    if bool(opts.instances) == opts.show_all:
        env.warn(
            "Name instances or give --all, not both"
            if opts.show_all
            else "No instance given: name instances, or give --all to see every instance"
        )
        return EXIT_FAILURE
    rows = env.submit(opcodes.OpInstanceQuery(names=list(opts.instances)))
    if not rows:
        env.write("No instances.")
        return EXIT_FAILURE
    for row in rows:
        for line in instance_info.info_lines(row):
            env.write(line)
    return EXIT_SUCCESS


# ---------------------------------------------------------------- registration


def _instance_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("instance_name", metavar="INSTANCE")


def _register_add(registry: CommandRegistry) -> None:
    add = registry.command("instance", "add", cmd_add, help="Create an instance")
    common.add_submit(add)
    _instance_arg(add)
    add.add_argument("-t", "--disk-template", required=True, choices=constants.DISK_TEMPLATES)
    add.add_argument("--disk", dest="disks", action="append", metavar="N:size=SIZE,...")
    common.add_primary(add)
    common.add_beparams(add)
    common.add_hvparams(add)
    add.add_argument(
        "--net",
        dest="nets",
        action="append",
        metavar="N:link=BRIDGE,...",
        help="a NIC (default: one NIC on the cluster's default bridge)",
    )
    add.add_argument("--no-nics", action="store_true", help="create the instance without NICs")
    add.add_argument("-o", "--os-type", dest="os", default="debootstrap+default")
    common.add_tags(add)
    add.add_argument("--no-start", action="store_true", help="Do not start the instance")
    common.add_dry_run(add)


def _register_state(registry: CommandRegistry) -> None:
    startup = registry.command("instance", "startup", cmd_startup, help="Start instances")
    common.add_submit(startup)
    instance_many.add_selection(startup)
    common.add_force(startup)
    startup.add_argument("--ignore-offline", action="store_true")
    startup.add_argument("--no-remember", action="store_true")
    common.add_hvparams(startup, "Temporary hypervisor parameters, for this start only")
    common.add_beparams(startup, "Temporary backend parameters, for this start only")
    startup.add_argument(
        "--paused",
        dest="startup_paused",
        action="store_true",
        help="Start the guest paused; its console resumes it",
    )
    common.add_dry_run(startup)

    shutdown = registry.command("instance", "shutdown", cmd_shutdown, help="Stop instances")
    common.add_submit(shutdown)
    instance_many.add_selection(shutdown)
    shutdown.add_argument(
        "--timeout", type=int, default=constants.DEFAULT_SHUTDOWN_TIMEOUT, metavar="SECONDS"
    )
    shutdown.add_argument("--ignore-offline", action="store_true")
    shutdown.add_argument("--no-remember", action="store_true")
    common.add_force(shutdown, "Ignore the offline instance check (Ganeti's)")
    common.add_dry_run(shutdown)

    reboot = registry.command("instance", "reboot", cmd_reboot, help="Reboot instances")
    common.add_submit(reboot)
    instance_many.add_selection(reboot)
    reboot.add_argument(
        "-t",
        "--type",
        dest="reboot_type",
        default="hard",
        choices=("soft", "hard", "full"),
        help="Type of reboot (default: hard)",
    )
    reboot.add_argument("--shutdown-timeout", type=int, default=constants.DEFAULT_SHUTDOWN_TIMEOUT)
    common.add_dry_run(reboot)

    remove = registry.command("instance", "remove", cmd_remove, help="Remove an instance")
    common.add_submit(remove)
    _instance_arg(remove)
    common.add_force(remove)
    remove.add_argument("--ignore-failures", action="store_true")
    remove.add_argument("--shutdown-timeout", type=int, default=constants.DEFAULT_SHUTDOWN_TIMEOUT)
    common.add_dry_run(remove)


def register(registry: CommandRegistry) -> None:
    """Add the ``instance`` group."""
    registry.group("instance", help="Instance operations")
    _register_add(registry)
    _register_state(registry)
    lst = registry.command("instance", "list", cmd_list, help="List instances")
    lst.add_argument("instances", nargs="*", metavar="INSTANCE")
    common.add_list_options(lst, INSTANCE_FIELDS)
    common.add_units_option(lst)
    info = registry.command("instance", "info", cmd_info, help="Show instance details")
    info.add_argument("instances", nargs="*", metavar="INSTANCE")
    info.add_argument("--all", dest="show_all", action="store_true", help="Every instance")
    common.add_reason(info)
