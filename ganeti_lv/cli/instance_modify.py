"""``gnt-lv instance modify [-B K=V,...] [-H K=V,...] [-f] INSTANCE``, as Ganeti's.

The changes (``k=default``, or ``-k`` attached as ``-B-k``, sets a parameter back
to the cluster's default) are a
job (``OpInstanceSetParams``); its result is printed as Ganeti prints it:
``Modified instance NAME`` and one `` - be/maxmem -> 512`` line per change.
"""

from __future__ import annotations

import argparse

from ganeti_lv import opcodes
from ganeti_lv.cli import common
from ganeti_lv.cli.common import EXIT_SUCCESS, CliEnv, CommandRegistry
from ganeti_lv.errors import ECODE_INVAL, OpPrereqError


def cmd_modify(opts: argparse.Namespace, env: CliEnv) -> int:
    """Change the instance's parameters."""
    if not (opts.beparams or opts.hvparams):  # refused before any job, as Ganeti's
        raise OpPrereqError("Please give at least one of the parameters (-B, -H)", ECODE_INVAL)
    op = opcodes.OpInstanceSetParams(
        instance_name=opts.instance_name,
        beparams=dict(common.parse_kv_list(opts.beparams or "", "-B")),
        hvparams=dict(common.parse_hvparams(opts.hvparams or "")),
        force=opts.force,
        dry_run=opts.dry_run,
    )
    changes = env.submit(op)
    if changes:  # not with --submit or --dry-run
        env.write(f"Modified instance {op.instance_name}")
        for key, value in changes:
            env.write(f" - {key} -> {value}")
    return EXIT_SUCCESS


def register(registry: CommandRegistry) -> None:
    """Add ``instance modify``."""
    modify = registry.command(
        "instance", "modify", cmd_modify, help="Change an instance's parameters"
    )
    common.add_submit(modify)
    common.add_beparams(modify, "Backend parameters (K=default: back to the cluster's default)")
    common.add_hvparams(modify, "Hypervisor parameters (K=default: back to the cluster's default)")
    common.add_force(
        modify, "Record more memory even when the primary node could not start the instance"
    )
    common.add_dry_run(modify)
    modify.add_argument("instance_name", metavar="INSTANCE")
