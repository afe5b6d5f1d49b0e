"""``gnt-lv node migrate`` and ``gnt-lv node evacuate`` (as gnt-node).

The plan is printed first (``--dry-run`` prints only the plan); then one
job per instance runs under the node operation's job, within the
per-source and per-target limits, with a line counting the instances
done, running, queued and failed (a progress bar on a terminal) and each
move's own progress. Ctrl-C (or ``gnt-lv job cancel``) stops the queued
moves and stops the running ones safely (a live migration is aborted with
the instance on its source, as Ctrl-C aborts a single one; a failover
stops while it copies disks, and ends on its own once it has switched the
primary node); the end lists every instance's node.
"""

from __future__ import annotations

import argparse
from typing import Any

from ganeti_lv import constants, opcodes
from ganeti_lv.cli import common
from ganeti_lv.cli.common import EXIT_CONFIRMATION, EXIT_SUCCESS, CliEnv, CommandRegistry
from ganeti_lv.cli.migrate import migration_mode


def _show(env: CliEnv, result: Any) -> None:
    if not result:
        return
    rows = [
        [m["instance"], m.get("kind"), m.get("source"), m.get("target") or "-"]
        + ([m.get("status"), m.get("node"), m.get("job_id")] if "status" in m else [])
        for m in result
    ]
    headers = ["Instance", "Move", "From", "To"]
    if "status" in result[0]:
        headers += ["Status", "Node", "Job"]
    env.table(headers, rows)


def _primary_instances(env: CliEnv, node_name: str) -> tuple[str, list[str]]:
    """The node's full name and its primary instances, by name.

    Queried as Ganeti's client queries them before asking anything: no
    job, no node asked; an unknown node is the query's error (ECODE_NOENT).
    """
    (row,) = env.query(opcodes.OpNodeQuery(names=[node_name], live=False))
    return row["name"], list(row["pinst_list"])


def _running(env: CliEnv, instances: list[str]) -> list[str]:
    """Those of ``instances`` marked up (the ones a node migration moves)."""
    rows = env.query(opcodes.OpInstanceQuery(names=instances, live=False))
    return [r["name"] for r in rows if r["admin_state"] == constants.ADMINST_UP]


def cmd_migrate(opts: argparse.Namespace, env: CliEnv) -> int:
    """Live-migrate every running instance off a node.

    Without any to migrate it says so and exits 0, asking nothing and
    submitting no job (as Ganeti's gnt-node migrate).
    """
    mode = migration_mode(opts)
    name, instances = _primary_instances(env, opts.node_name)
    if not instances:
        env.write(f"No primary instances on node {name}, exiting.")
        return EXIT_SUCCESS
    if not _running(env, instances):
        env.write(f"No running primary instances on node {name}, exiting.")
        return EXIT_SUCCESS
    question = f"All running instances on node {opts.node_name} will be migrated. Continue?"
    if not opts.dry_run and not env.confirm(question, opts.force):
        return EXIT_CONFIRMATION
    op = opcodes.OpNodeMigrate(
        node_name=opts.node_name,
        mode=mode,
        target_node=opts.target_node,
        iallocator=opts.iallocator,
        max_parallel=opts.max_parallel,
        max_parallel_target=opts.max_parallel_target,
        allow_runtime_changes=not opts.no_runtime_changes,
        ignore_hvversions=opts.ignore_hvversions,
        ignore_ipolicy=opts.ignore_ipolicy,
        dry_run=opts.dry_run,
    )
    _show(env, env.submit(op))
    return EXIT_SUCCESS


def cmd_evacuate(opts: argparse.Namespace, env: CliEnv) -> int:
    """Move every instance off a node (running ones migrated, the others failed over).

    Without any to move (always with ``-s``, and with ``-n``, Ganeti's new
    secondary node: no instance has secondaries) it says so and exits 0,
    asking nothing and submitting no job (as Ganeti's gnt-node evacuate);
    options the opcode refuses (``-p`` with ``-s``) are refused first, as
    Ganeti's client refuses them.
    """
    op = opcodes.OpNodeEvacuate(
        node_name=opts.node_name,
        primary_only=opts.primary_only,
        secondary_only=opts.secondary_only,
        target_node=opts.target_node,
        iallocator=opts.iallocator,
        mode=opts.migration_mode,
        max_parallel=opts.max_parallel,
        max_parallel_target=opts.max_parallel_target,
        shutdown_timeout=opts.shutdown_timeout,
        ignore_soft_errors=opts.ignore_soft_errors,
        dry_run=opts.dry_run,
    )
    op.validate()
    if opts.new_secondary is not None:  # Ganeti's -n: only the secondaries move
        env.warn(
            f"A new secondary node ({opts.new_secondary}) was given: only secondary"
            " instances are evacuated"
        )
    name, instances = _primary_instances(env, opts.node_name)
    if opts.secondary_only or opts.new_secondary is not None or not instances:
        env.warn(f"No instances to evacuate on node(s) {name}, exiting.")
        return EXIT_SUCCESS
    question = f"All instances on node {opts.node_name} will be moved off it. Continue?"
    if not opts.dry_run and not env.confirm(question, opts.force):
        return EXIT_CONFIRMATION
    _show(env, env.submit(op))
    return EXIT_SUCCESS


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("node_name", metavar="NODE")
    common.add_force(parser)
    common.add_submit(parser)
    parser.add_argument("--dry-run", action="store_true", help="Show the plan only, move nothing")
    parser.add_argument("-I", "--iallocator", default=None)
    parser.add_argument(
        "--max-parallel",
        type=int,
        default=None,
        metavar="N",
        help="Moves at once off the node (default: the cluster's max_parallel_source)",
    )
    parser.add_argument(
        "--max-parallel-target",
        type=int,
        default=None,
        metavar="N",
        help="Moves at once onto one node (default: the cluster's max_parallel_target)",
    )


def register(registry: CommandRegistry) -> None:
    """Add ``node migrate`` and ``node evacuate``."""
    mig = registry.command(
        "node", "migrate", cmd_migrate, help="Migrate all running instances off a node"
    )
    _common(mig)
    mig.add_argument(
        "-n", "--target-node", default=None, metavar="NODE", help="The node they all go to"
    )
    mig.add_argument("--non-live", action="store_true", help="Pause the guests during transfer")
    mig.add_argument("--migration-mode", choices=constants.HT_MIGRATION_MODES, default=None)
    mig.add_argument("--no-runtime-changes", action="store_true")
    mig.add_argument("--ignore-hvversions", action="store_true")
    common.add_ignore_ipolicy(mig)
    evac = registry.command("node", "evacuate", cmd_evacuate, help="Move all instances off a node")
    _common(evac)
    evac.add_argument("--target-node", default=None, metavar="NODE", help="The node they all go to")
    evac.add_argument(
        "-n",
        "--new-secondary",
        default=None,
        metavar="NODE",
        help="As Ganeti's: a new secondary node, so only secondary instances are"
        " evacuated (there are none: nothing moves)",
    )
    evac.add_argument(
        "-p",
        "--primary-only",
        action="store_true",
        help="Only primary instances (ganeti_lv instances have no secondaries: the default)",
    )
    evac.add_argument(
        "-s",
        "--secondary-only",
        action="store_true",
        help="Only secondary instances (there are none: nothing moves)",
    )
    evac.add_argument("--migration-mode", choices=constants.HT_MIGRATION_MODES, default=None)
    evac.add_argument("--shutdown-timeout", type=int, default=constants.DEFAULT_SHUTDOWN_TIMEOUT)
    evac.add_argument(
        "--ignore-soft-errors",
        action="store_true",
        help="Accepted for Ganeti compatibility; ganeti_lv's placement has no soft rules",
    )
