"""``gnt-lv``: the command-line front end (parse -> opcode -> job -> print).

``gnt-lv`` parses its command line with one argparse parser, asks its
questions (confirmations), builds the command's opcodes and submits them
as a job: to the master daemon when one runs for the data dir, else in its
own process (``ganeti_lv.Client`` decides). The output, the exit codes and
what Ctrl-C does are the same either way (``ganeti_lv.cli.submit``).

Command modules live in ``ganeti_lv.cli``; each defines
``register(registry: CommandRegistry)``. The core groups (cluster, node,
instance, job) register first; every other module of the package that has a
``register`` function is found automatically and registered after them, so
``instance migrate`` or a ``backup`` group come from their own modules
without touching this file.

Exit codes follow Ganeti: 0 success, 1 failure (prerequisites, execution,
unconfirmed), 2 usage errors (argparse), 13 an unconfirmed ``node migrate`` or
``node evacuate``, 14 unknown output fields (``-o``).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

from ganeti_lv import constants
from ganeti_lv.cli import submit
from ganeti_lv.cli.common import (
    EXIT_FAILURE,
    EXIT_UNKNOWN_FIELD,
    PROGRAM,
    CliEnv,
    CommandRegistry,
    UnknownFields,
    default_data_dir,
)
from ganeti_lv.errors import GenericError, format_error
from ganeti_lv.master.daemonize import raise_open_files_limit

CORE_MODULES = ("cluster", "node", "instance", "job")


def _command_modules() -> list[ModuleType]:
    import ganeti_lv.cli as package

    found = {
        entry.removesuffix(".py")
        for directory in package.__path__
        for entry in os.listdir(directory)
        if entry.endswith(".py") and not entry.startswith("_")
    }
    modules = []
    for name in [*CORE_MODULES, *sorted(found - set(CORE_MODULES))]:
        module = importlib.import_module(f"ganeti_lv.cli.{name}")
        if callable(getattr(module, "register", None)):
            modules.append(module)
    return modules


def _lock_timeout(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number of seconds: '{text}'") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got '{text}'")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The ``gnt-lv`` argument parser: every group and command."""
    parser = argparse.ArgumentParser(
        prog=PROGRAM, description="Manage a ganeti_lv (libvirt) cluster."
    )
    parser.add_argument(
        "--data-dir",
        default=None,
        help="Cluster data dir (default: $GANETI_LV_DATA_DIR or /var/lib/ganeti-lv)",
    )
    parser.add_argument("--debug", action="store_true", help="Show tracebacks of internal errors")
    parser.add_argument(
        "--lock-timeout",
        type=_lock_timeout,
        default=None,
        metavar="SECONDS",
        help="Fail when an operation's locks are not all taken within SECONDS"
        " (default: wait for them)",
    )
    parser.add_argument(
        "--version", action="version", version=f"{PROGRAM} {constants.RELEASE_VERSION}"
    )
    subparsers = parser.add_subparsers(dest="group", metavar="GROUP")
    subparsers.required = True
    registry = CommandRegistry(subparsers)
    for module in _command_modules():
        module.register(registry)
    return parser


def main(
    argv: Sequence[str] | None = None,
    *,
    node_ops: Any = None,
    ask: Callable[[str], bool] | None = None,
    client_factory: Callable[..., Any] | None = None,
) -> int:
    """Run ``gnt-lv`` with ``argv`` (default: the process's arguments); the exit code.

    ``node_ops`` (e.g. a FakeNodeOps), ``ask`` (answers confirmations) and
    ``client_factory`` are injection points for tests and embedding.
    """
    raise_open_files_limit()  # a job taking every lock of a level holds a file per lock
    opts = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    env = CliEnv(
        data_dir=default_data_dir(opts.data_dir),
        node_ops=node_ops,
        lock_timeout=opts.lock_timeout,
        ask=ask,
        client_factory=client_factory,
    )
    env.submit_only = bool(getattr(opts, "submit", False))
    env.print_jobid = bool(getattr(opts, "print_jobid", False))
    env.command = f"{opts.group} {opts.command}"
    env.reason = getattr(opts, "reason", None)
    try:
        return run_command(opts, env)
    finally:
        env.close()
        if env.stdout_lost:
            submit.discard_stdout()


def run_command(opts: argparse.Namespace, env: CliEnv) -> int:
    """Run the parsed command's handler; its errors become messages and exit code 1
    (14 for unknown output fields, as Ganeti's)."""
    try:
        return int(opts.handler(opts, env))
    except GenericError as err:
        if opts.debug:
            traceback.print_exc()
        env.warn(format_error(err))
        return EXIT_UNKNOWN_FIELD if isinstance(err, UnknownFields) else EXIT_FAILURE
    except KeyboardInterrupt:
        env.warn("Aborted.")
        return EXIT_FAILURE
    except Exception as err:  # noqa: BLE001 - last resort: a message, not a traceback
        if opts.debug:
            raise
        env.warn(format_error(err))
        env.warn("(run with --debug for details)")
        return EXIT_FAILURE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
