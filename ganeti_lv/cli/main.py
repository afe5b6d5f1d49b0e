"""``gnt-lv``: the command-line front end (parse -> opcode -> processor -> print).

Command modules live in ``ganeti_lv.cli``; each defines
``register(registry: CommandRegistry)``. The core groups (cluster, node,
instance, job) register first; every other module of the package that has a
``register`` function is found automatically and registered after them, so
``instance migrate`` or a ``backup`` group come from their own modules
without touching this file.

Exit codes follow Ganeti: 0 success, 1 failure (prerequisites, execution,
unconfirmed), 2 usage errors (argparse).
"""

from __future__ import annotations

import argparse
import atexit
import importlib
import os
import sys
import threading

from ganeti_lv import __version__
from ganeti_lv.cli.common import (
    EXIT_FAILURE,
    CliEnv,
    CommandRegistry,
    HelpFormatter,
    default_data_dir,
)
from ganeti_lv.cli.entry import VALUE_OPTIONS
from ganeti_lv.errors import GenericError, format_error

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from types import ModuleType
    from typing import Any, NoReturn

CORE_MODULES = ("cluster", "node", "instance", "job")
_NOT_COMMANDS = {"main", "common", "entry", "remote"}


def _command_modules() -> list[ModuleType]:
    import ganeti_lv.cli as package

    names = list(CORE_MODULES)
    found = {
        entry.removesuffix(".py")
        for directory in package.__path__
        for entry in os.listdir(directory)
        if entry.endswith(".py") and not entry.startswith("_")
    }
    extra = sorted(found - set(names) - _NOT_COMMANDS)
    modules = []
    for name in names + extra:
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


# top-level words after which the whole parser is needed (help, version)
_WHOLE_PARSER_WORDS = ("-h", "--help", "--version", "--")


def wanted_command(argv: Sequence[str]) -> tuple[str | None, str | None]:
    """The (group, command) ``argv`` names, as far as a plain scan can tell.

    ``("instance", "migrate")`` for ``--debug instance migrate -f web1``; the
    command is None unless it follows the group at once (``instance -h``),
    and both are None for the top-level help or version.
    """
    skip = False
    for idx, arg in enumerate(argv):
        if skip:
            skip = False
        elif arg in VALUE_OPTIONS:  # the group is the first word that is not one
            skip = True
        elif arg in _WHOLE_PARSER_WORDS:
            return None, None
        elif not arg.startswith("-"):
            command = argv[idx + 1] if idx + 1 < len(argv) else None
            return arg, command if command and not command.startswith("-") else None
    return None, None


class _NotBuilt(Exception):
    """The command line needs parsers a lean parser did not build."""


class _LeanParser(argparse.ArgumentParser):
    """A parser of one group or command: any error goes to the whole parser instead."""

    def error(self, message: str) -> NoReturn:
        raise _NotBuilt(message)


class _QuietParser(_LeanParser):
    """A lean parser that never prints or exits: help, usage and errors give up instead."""

    def _print_message(self, message: str, file: Any = None) -> None:
        raise _NotBuilt(message)

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        raise _NotBuilt(message or "")


def build_parser(
    group: str | None = None,
    command: str | None = None,
    parser_class: type[argparse.ArgumentParser] | None = None,
) -> argparse.ArgumentParser:
    """The ``gnt-lv`` argument parser; with ``group`` (and ``command``) only those.

    A command line names one group and one command, and building the
    parsers of all costs every ``gnt-lv`` start some 20 ms. A lean parser
    does not report errors itself: ``parse_args`` then parses with the
    whole parser, whose messages name every group and command. When the
    group or command is not one that a module registered (an abbreviated
    option's value, a typo), the whole parser is returned. ``parser_class``
    replaces the lean parser's class.
    """
    lean = group is not None
    parser = ((parser_class or _LeanParser) if lean else argparse.ArgumentParser)(
        prog="gnt-lv",
        description="Manage a ganeti_lv (libvirt) cluster.",
        formatter_class=HelpFormatter,
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
        help="Fail when a lock is not free within SECONDS (default: wait for it)",
    )
    parser.add_argument("--version", action="version", version=f"gnt-lv {__version__}")
    subparsers = parser.add_subparsers(dest="group", metavar="GROUP")
    subparsers.required = True
    registry = CommandRegistry(subparsers, only=group, command=command)
    for module in _command_modules():
        module.register(registry)
    if group is not None and not registry.has_group(group):
        return build_parser()
    if group is not None and command is not None and not registry.has_command(group, command):
        return build_parser(group)
    return parser


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """``argv`` parsed as the whole parser would, building only the parsers it names."""
    try:
        return build_parser(*wanted_command(argv)).parse_args(argv)
    except _NotBuilt:
        return build_parser().parse_args(argv)


def parse_in_daemon(argv: Sequence[str]) -> argparse.Namespace | None:
    """``argv`` parsed for the master daemon, which must print nothing and not exit.

    None for anything but a plain command: help, version, a usage error, an
    unknown group or command. ``gnt-lv`` then parses the line itself.
    """
    group, command = wanted_command(argv)
    if group is None or command is None:
        return None
    parser = build_parser(group, command, parser_class=_QuietParser)
    if not isinstance(parser, _QuietParser):
        return None
    try:
        return parser.parse_args(argv)
    except _NotBuilt:
        return None


def fast_exit(code: int) -> None:
    """End the process now, skipping the interpreter's teardown, if that is safe.

    After a command, tearing down the interpreter (collecting the modules of
    paramiko, cryptography and libvirt) takes 0.2-0.3 s on a busy node, as
    long as some migrations. Everything the command wrote is already durable
    (configuration and job files are fsync'ed) and its connections are
    closed; what remains is done here: the atexit handlers run and the
    standard streams are flushed, then ``os._exit``. When another non-daemon
    thread is still running, the normal exit (which waits for it) is kept,
    and so it is under a profiler or tracer (``python -m cProfile``), which
    writes its results after the program.
    """
    others = [
        t for t in threading.enumerate() if t is not threading.current_thread() and not t.daemon
    ]
    if others or threading.current_thread() is not threading.main_thread():
        return
    if sys.getprofile() is not None or sys.gettrace() is not None:
        return
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            code = code or EXIT_FAILURE
    os._exit(code)


def main(
    argv: Sequence[str] | None = None,
    *,
    node_ops: Any = None,
    ask: Callable[[str], bool] | None = None,
    client_factory: Callable[..., Any] | None = None,
) -> int:
    """Run ``gnt-lv`` with ``argv``; return the exit code.

    ``node_ops`` (e.g. a FakeNodeOps), ``ask`` (answers confirmations) and
    ``client_factory`` are injection points for tests and embedding. Run
    as the ``gnt-lv`` program (no ``argv``), the process ends right after
    the command (see ``fast_exit``).
    """
    code = _run(argv, node_ops=node_ops, ask=ask, client_factory=client_factory)
    if argv is None:
        fast_exit(code)
    return code


def _run(
    argv: Sequence[str] | None,
    *,
    node_ops: Any,
    ask: Callable[[str], bool] | None,
    client_factory: Callable[..., Any] | None,
) -> int:
    opts = parse_args(list(sys.argv[1:] if argv is None else argv))
    env = CliEnv(
        data_dir=default_data_dir(opts.data_dir),
        node_ops=node_ops,
        lock_timeout=opts.lock_timeout,
        ask=ask,
        client_factory=client_factory,
    )
    try:
        return run_command(opts, env)
    finally:
        env.close()


def run_command(opts: argparse.Namespace, env: CliEnv) -> int:
    """Run the parsed command's handler; its errors become messages and exit code 1."""
    try:
        return int(opts.handler(opts, env))
    except GenericError as err:
        if opts.debug:
            import traceback

            traceback.print_exc()
        env.warn(format_error(err))
        return EXIT_FAILURE
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
