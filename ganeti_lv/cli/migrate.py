"""``gnt-lv instance migrate`` and ``gnt-lv instance failover`` (as gnt-instance).

On a terminal the migration's progress drives a progress bar; otherwise
its lines are printed. SIGINT and SIGTERM during the operation become a
cancel request (never an exception at an arbitrary point): before Exec
nothing is done, during the migration the driver aborts the libvirt job and
the instance keeps running on its source (``ganeti_lv.cli.submit``).
"""

from __future__ import annotations

import argparse

from ganeti_lv import constants, opcodes
from ganeti_lv.cli import common
from ganeti_lv.cli.common import EXIT_FAILURE, EXIT_SUCCESS, CliEnv, CommandRegistry
from ganeti_lv.errors import ECODE_INVAL, OpPrereqError


def migration_mode(opts: argparse.Namespace) -> str | None:
    """The mode ``--non-live`` or ``--migration-mode`` asks for (None: the hvparam's)."""
    if opts.non_live and opts.migration_mode:
        raise OpPrereqError("Only one of --non-live and --migration-mode may be given", ECODE_INVAL)
    return constants.HT_MIGRATION_NONLIVE if opts.non_live else opts.migration_mode


def cmd_migrate(opts: argparse.Namespace, env: CliEnv) -> int:
    """Migrate an instance (or clean up after an interrupted migration)."""
    mode = migration_mode(opts)
    if opts.cleanup:
        question = f"Instance {opts.instance_name}'s migration will be cleaned up. Continue?"
    else:
        question = f"Instance {opts.instance_name} will be migrated. Continue?"
    if not env.confirm_for_instance(opts.instance_name, question, opts.force):
        return EXIT_FAILURE
    op = opcodes.OpInstanceMigrate(
        instance_name=opts.instance_name,
        mode=mode,
        target_node=opts.target_node,
        iallocator=opts.iallocator,
        cleanup=opts.cleanup,
        allow_failover=opts.allow_failover,
        allow_runtime_changes=not opts.no_runtime_changes,
        ignore_ipolicy=opts.ignore_ipolicy,
        ignore_hvversions=opts.ignore_hvversions,
        migration_bandwidth=opts.migration_bandwidth,
        migration_downtime=opts.migration_downtime,
        migration_caps=opts.migration_caps,
        migration_encryption=(
            None
            if opts.migration_encryption is None
            else common.parse_yes_no(opts.migration_encryption, "--migration-encryption")
        ),
        allow_postcopy=opts.allow_postcopy,
        escalate=not opts.no_escalate,
        progress_timeout=opts.progress_timeout,
        completion_timeout=opts.completion_timeout,
        dry_run=opts.dry_run,
    )
    env.submit(op)
    return EXIT_SUCCESS


def cmd_failover(opts: argparse.Namespace, env: CliEnv) -> int:
    """Stop an instance on its primary and start it on another node."""
    question = f"Failover will stop instance {opts.instance_name}. Continue?"
    if not env.confirm_for_instance(opts.instance_name, question, opts.force):
        return EXIT_FAILURE
    op = opcodes.OpInstanceFailover(
        instance_name=opts.instance_name,
        shutdown_timeout=opts.shutdown_timeout,
        ignore_consistency=opts.ignore_consistency,
        target_node=opts.target_node,
        iallocator=opts.iallocator,
        cleanup=opts.cleanup,
        ignore_ipolicy=opts.ignore_ipolicy,
        dry_run=opts.dry_run,
    )
    env.submit(op)
    return EXIT_SUCCESS


def _common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("instance_name", metavar="INSTANCE")
    common.add_force(parser)
    common.add_dry_run(parser)
    parser.add_argument("-n", "--target-node", default=None, metavar="NODE")
    parser.add_argument("-I", "--iallocator", default=None)
    parser.add_argument("--cleanup", action="store_true")
    common.add_ignore_ipolicy(parser)


def register(registry: CommandRegistry) -> None:
    """Add ``instance migrate`` and ``instance failover``."""
    mig = registry.command("instance", "migrate", cmd_migrate, help="Migrate an instance")
    common.add_submit(mig)
    _common_args(mig)
    mig.add_argument("--non-live", action="store_true", help="Pause the guest during transfer")
    mig.add_argument("--migration-mode", choices=constants.HT_MIGRATION_MODES, default=None)
    mig.add_argument("--allow-failover", action="store_true")
    mig.add_argument(
        "--no-runtime-changes",
        action="store_true",
        help="Do not change the running instance to make the migration fit or converge:"
        " no auto-converge vCPU throttling (ganeti_lv never balloons memory; a target"
        " with less free memory than the instance's is refused either way)",
    )
    mig.add_argument("--ignore-hvversions", action="store_true")
    mig.add_argument("--migration-bandwidth", type=int, default=None, metavar="MiB/s")
    mig.add_argument("--migration-downtime", type=int, default=None, metavar="MS")
    mig.add_argument("--migration-caps", default=None, metavar="CAP:CAP")
    mig.add_argument(
        "--migration-encryption",
        metavar="yes|no",
        default=None,
        help="The migration stream over TLS with the nodes' certificates"
        " (default: the hypervisor parameter migration_encryption)",
    )
    mig.add_argument("--allow-postcopy", action="store_true")
    mig.add_argument("--no-escalate", action="store_true", help="Abort instead of escalating")
    mig.add_argument("--progress-timeout", type=float, default=None, metavar="SECONDS")
    mig.add_argument("--completion-timeout", type=float, default=None, metavar="SECONDS")
    fail = registry.command("instance", "failover", cmd_failover, help="Fail over an instance")
    common.add_submit(fail)
    _common_args(fail)
    fail.add_argument("--ignore-consistency", action="store_true")
    fail.add_argument("--shutdown-timeout", type=int, default=constants.DEFAULT_SHUTDOWN_TIMEOUT)
