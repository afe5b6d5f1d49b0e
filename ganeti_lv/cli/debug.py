"""``gnt-lv debug delay``: run OpTestDelay (like Ganeti's ``gnt-debug delay``).

The operation holds exclusive locks on the given instances and nodes for
``--duration`` seconds and touches no node, so it shows how operations
serialise on locks (and what ``--lock-timeout`` does) on any data dir.
"""

from __future__ import annotations

import argparse

from ganeti_lv import opcodes
from ganeti_lv.cli import common
from ganeti_lv.cli.common import EXIT_SUCCESS, CliEnv, CommandRegistry


def cmd_delay(opts: argparse.Namespace, env: CliEnv) -> int:
    """Sleep holding the named instance and node locks."""
    op = opcodes.OpTestDelay(
        duration=opts.duration,
        instance_names=list(opts.instances or []),
        node_names=list(opts.nodes or []),
        dry_run=opts.dry_run,
    )
    result = env.submit(op)
    if opts.dry_run and result is not None:  # None: submitted only (--submit)
        env.write(
            "Would hold instances: {} nodes: {}".format(
                common.format_value(result["instances"]) if result["instances"] else "(none)",
                common.format_value(result["nodes"]) if result["nodes"] else "(none)",
            )
        )
    return EXIT_SUCCESS


def register(registry: CommandRegistry) -> None:
    """Add the ``debug`` group."""
    registry.group("debug", help="Debugging commands")
    delay = registry.command(
        "debug", "delay", cmd_delay, help="Hold instance/node locks for a while (OpTestDelay)"
    )
    common.add_submit(delay)
    delay.add_argument(
        "--duration", type=float, default=1.0, metavar="SECONDS", help="How long (default: 1)"
    )
    delay.add_argument(
        "-I",
        "--instance",
        dest="instances",
        action="append",
        metavar="INSTANCE",
        help="Lock this instance exclusively (repeatable)",
    )
    delay.add_argument(
        "-N",
        "--node",
        dest="nodes",
        action="append",
        metavar="NODE",
        help="Lock this node exclusively (repeatable)",
    )
    common.add_dry_run(delay)
