"""Shared pieces of the ``gnt-lv`` commands.

- parsing: key=value lists (``-B memory=128M,vcpus=1``), indexed specs
  (``--disk 0:size=1G``), sizes;
- ``CliEnv``: what a command handler gets (data dir, injected node
  operations, output streams, confirmation prompt), ``submit`` to run
  an opcode as a job with its feedback shown as it comes (progress bars on
  a terminal; see ``ganeti_lv.cli.submit``) and ``query`` to run a list
  command's query without a job;
- ``CommandRegistry``: how command modules add groups and subcommands;
- output tables in Ganeti's style (aligned columns, ``--no-headers``,
  ``--separator``).

Key=value lists: items are separated by ``,``; a value may contain ``=``;
quote a value (``'...'`` or ``"..."``) or escape with ``\\`` to include a
``,``. Example: ``-H 'kernel_args="console=ttyS0 seed=x,y",cpu_type=host'``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from ganeti_lv import constants, paths
from ganeti_lv.cancel import Cancellation
from ganeti_lv.cli import submit
from ganeti_lv.client import Client
from ganeti_lv.errors import ECODE_INVAL, OpPrereqError
from ganeti_lv.opcodes import OpCode, OpInstanceQuery, reason_entry

Handler = Callable[[argparse.Namespace, "CliEnv"], int]

EXIT_SUCCESS = 0
EXIT_FAILURE = 1
# Ganeti's: a confirmation refused (node migrate/evacuate), unknown output fields
EXIT_CONFIRMATION = 13
EXIT_UNKNOWN_FIELD = 14

# the program's name: its usage lines, and the source of its entry in a job's
# reason trail ("gnt:client:gnt-lv", as Ganeti's "gnt:client:gnt-instance")
PROGRAM = "gnt-lv"


class UnknownFields(OpPrereqError):
    """Output fields a list command does not know (exit EXIT_UNKNOWN_FIELD)."""


# ---------------------------------------------------------------- parsing


def split_items(text: str) -> list[str]:
    """Split on commas outside quotes; quotes are removed, ``\\`` escapes one char."""
    items: list[str] = []
    current: list[str] = []
    quote: str | None = None
    escaped = False
    for char in text:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif quote:
            if char == quote:
                quote = None
            else:
                current.append(char)
        elif char in ("'", '"'):
            quote = char
        elif char == ",":
            items.append("".join(current))
            current = []
        else:
            current.append(char)
    if quote or escaped:
        raise OpPrereqError(f"Unbalanced quote or trailing backslash in '{text}'", ECODE_INVAL)
    items.append("".join(current))
    return items


def parse_kv_list(text: str, option: str = "") -> dict[str, str | None]:
    """Parse ``k1=v1,k2=v2``; values may contain ``=``; ``k`` means ``k=yes``,
    ``no_k`` means ``k=no``, and ``-k`` sets ``k`` back to its default (None), as Ganeti's."""
    out: dict[str, str | None] = {}
    if not text.strip():
        return out
    for item in split_items(text):
        if not item:
            continue
        if "=" in item:
            key, value = item.split("=", 1)
        elif item.startswith("no_"):
            key, value = item[3:], "no"
        elif item.startswith("-"):
            key, value = item[1:], None
        else:
            key, value = item, "yes"
        key = key.strip()
        if not key:
            where = f" in {option}" if option else ""
            raise OpPrereqError(f"Missing parameter name{where}: '{item}'", ECODE_INVAL)
        if key in out:
            raise OpPrereqError(f"Parameter '{key}' given twice", ECODE_INVAL)
        out[key] = value
    return out


# Ganeti's hypervisors: its -H is "HYPERVISOR:key=value,..."; here kvm is the only one
GANETI_HYPERVISORS = ("chroot", "fake", "kvm", "lxc", "xen-hvm", "xen-pvm")
_HYPERVISOR_NAME = re.compile(r"[A-Za-z0-9_-]+")


def parse_hvparams(text: str) -> dict[str, str | None]:
    """``-H``: Ganeti's ``kvm:k=v,...`` (``kvm`` alone: no parameters), or ``k=v,...``.

    A hypervisor name before the first ``:`` (or alone, a Ganeti hypervisor's)
    other than kvm is refused (ECODE_INVAL): ganeti_lv runs kvm only.
    """
    name, colon, rest = text.partition(":")
    name = name.strip()
    if (colon and _HYPERVISOR_NAME.fullmatch(name)) or (not colon and name in GANETI_HYPERVISORS):
        if name != constants.HYPERVISOR_KVM:
            raise OpPrereqError(
                f"Hypervisor '{name}' is not supported: ganeti_lv runs kvm only"
                f" (-H {constants.HYPERVISOR_KVM}:key=value,... or -H key=value,...)",
                ECODE_INVAL,
            )
        text = rest
    return parse_kv_list(text, "-H")


def parse_indexed_spec(text: str, option: str) -> tuple[int, dict[str, str]]:
    """Parse ``N:k=v,...`` (or just ``N``) as used by ``--disk`` and ``--net``."""
    index_text, _, rest = text.partition(":")
    try:
        index = int(index_text)
    except ValueError:
        raise OpPrereqError(
            f"Invalid {option} specification '{text}': expected N:key=value,...", ECODE_INVAL
        ) from None
    if index < 0:
        raise OpPrereqError(f"Invalid {option} index {index}", ECODE_INVAL)
    params = parse_kv_list(rest, option)
    resets = sorted(key for key, value in params.items() if value is None)
    if resets:
        raise OpPrereqError(
            f"'-{resets[0]}' (back to the default) has no meaning in {option}", ECODE_INVAL
        )
    return index, {key: str(value) for key, value in params.items()}


def collect_indexed(specs: Sequence[str] | None, option: str) -> list[dict[str, str]]:
    """Parse several ``--disk``/``--net`` options into a list ordered 0..n-1."""
    by_index: dict[int, dict[str, str]] = {}
    for spec in specs or []:
        index, params = parse_indexed_spec(spec, option)
        if index in by_index:
            raise OpPrereqError(f"Duplicate {option} index {index}", ECODE_INVAL)
        by_index[index] = params
    expected = list(range(len(by_index)))
    if sorted(by_index) != expected:
        raise OpPrereqError(
            f"{option} indices must be 0..{len(by_index) - 1} without gaps, got {sorted(by_index)}",
            ECODE_INVAL,
        )
    return [by_index[i] for i in expected]


def parse_yes_no(text: str, option: str) -> bool:
    """Parse ``yes``/``no`` for options like ``--offline``."""
    lowered = text.strip().lower()
    if lowered in ("yes", "y", "true", "1", "on"):
        return True
    if lowered in ("no", "n", "false", "0", "off"):
        return False
    raise OpPrereqError(f"Invalid value '{text}' for {option}: use yes or no", ECODE_INVAL)


def parse_fields(
    text: str | None,
    default: Sequence[str],
    known: Sequence[str],
    is_known: Callable[[str], bool] | None = None,
) -> list[str]:
    """Parse ``-o f1,f2`` (``+f3`` appends to the defaults); unknown fields are
    UnknownFields (ECODE_INVAL).

    ``is_known`` decides for fields not in ``known`` (e.g. indexed ones like
    ``disk.size/0``).
    """
    if not text:
        return list(default)
    fields = list(default) + text[1:].split(",") if text.startswith("+") else text.split(",")
    fields = [f.strip() for f in fields if f.strip()]
    unknown = [f for f in fields if f not in known and not (is_known and is_known(f))]
    if unknown:
        raise UnknownFields(
            f"Unknown output field(s): {', '.join(unknown)} (known: {', '.join(known)})",
            ECODE_INVAL,
        )
    return fields


# ---------------------------------------------------------------- output

# --units of a list: h(uman), m(iB), g(iB), t(iB), as Ganeti's
UNITS = ("h", "m", "g", "t")


def format_size(value: float, units: str) -> str:
    """MiB as Ganeti renders them in ``units`` (h: 512M / 1.5G / 2.0T)."""
    if units not in UNITS:
        raise OpPrereqError(f"Invalid unit '{units}' (known: {', '.join(UNITS)})", ECODE_INVAL)
    if units == "m" or (units == "h" and value < 1024):
        return f"{round(value):d}" + ("M" if units == "h" else "")
    if units == "g" or (units == "h" and value < 1024 * 1024):
        return f"{value / 1024:.1f}" + ("G" if units == "h" else "")
    return f"{value / 1024 / 1024:.1f}" + ("T" if units == "h" else "")


def sized(value: Any, units: str) -> Any:
    """A size field's value (MiB, or a list of them) rendered in ``units``; others as they are."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, float)):
        return format_size(value, units)
    if isinstance(value, (list, tuple)):
        return [sized(v, units) for v in value]
    return value


def list_units(opts: argparse.Namespace) -> str:
    """The units of a list's sizes: ``--units``, else ``m`` with ``--separator``, else ``h``."""
    return str(opts.units or ("m" if opts.separator is not None else "h"))


def format_time(value: float) -> str:
    """A timestamp as Ganeti shows it (``2024-05-01 12:00:03``, local time)."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(value))


# Ganeti's marks of a live field without a value (its RSS_DESCRIPTION): the node is
# marked offline, or it was not asked or did not answer (a query row's ``live``)
_LIVE_MARKS: dict[str | None, str] = {constants.LIVE_OFFLINE: "*", constants.LIVE_NODATA: "?"}


def live_mark(row: dict[str, Any]) -> str | None:
    """What a list prints for a live field of ``row`` that has no answer of its node
    (``*`` or ``?``); None when the node answered (a live field without a value
    then does not apply: ``-``)."""
    return _LIVE_MARKS.get(row.get("live"))


def format_value(value: Any) -> str:
    """Ganeti's rendering of a field value: lists comma-joined, booleans Y/N, None '-'."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "Y" if value else "N"
    if isinstance(value, (list, tuple)):
        return ",".join(format_value(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def format_table(
    headers: Sequence[str],
    rows: Sequence[Sequence[Any]],
    separator: str | None = None,
    no_headers: bool = False,
) -> list[str]:
    """Lines of a table: aligned columns, or joined by ``separator`` when given."""
    text_rows = [[format_value(v) for v in row] for row in rows]
    all_rows = text_rows if no_headers else [list(headers), *text_rows]
    if separator is not None:
        return [separator.join(row) for row in all_rows]
    widths = [max((len(r[i]) for r in all_rows), default=0) for i in range(len(headers))]
    return [
        " ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in all_rows
    ]


def render_rich_table(
    headers: Sequence[str], rows: Sequence[Sequence[Any]], no_headers: bool = False
) -> str:
    """The table as rich renders it for a terminal (borderless, bold headers); the values
    as they are (never read as markup: ``[quiet]`` in a kernel command line stays)."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(box=None, show_header=not no_headers, header_style="bold", pad_edge=False)
    for header in headers:
        table.add_column(header, no_wrap=True, overflow="ignore")
    for row in rows:
        table.add_row(*(Text(format_value(v)) for v in row))
    buffer = io.StringIO()
    Console(file=buffer, width=10_000, force_terminal=True).print(table)
    return "\n".join(line.rstrip() for line in buffer.getvalue().splitlines()) + "\n"


# ---------------------------------------------------------------- environment


class CliEnv:
    """What a command handler gets; tests inject ``node_ops``, ``ask`` and streams.

    ``lock_timeout`` (seconds, None: wait) comes from ``--lock-timeout``;
    ``command`` ("instance migrate") and ``reason`` (``--reason``) start the
    reason trail of every job the command submits.
    ``stdin_tty`` says whether questions could be asked on stdin (None:
    whether this process's stdin is a terminal, at the time of asking).
    Output that goes away (a closed pipe, a hang-up) is dropped, never an
    error (``stdout_lost`` then says so).
    """

    def __init__(
        self,
        data_dir: str,
        node_ops: Any = None,
        ask: Callable[[str], bool] | None = None,
        out: TextIO | None = None,
        err: TextIO | None = None,
        client_factory: Callable[..., Any] | None = None,
        lock_timeout: float | None = None,
        stdin_tty: bool | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.stdin_tty = stdin_tty
        self.node_ops = node_ops
        self.ask = ask
        self.stdout = submit.Output(lambda: out or sys.stdout)
        self.stderr = submit.Output(lambda: err or sys.stderr)
        self.client_factory = client_factory
        self.lock_timeout = lock_timeout
        # --submit: start the jobs and print their ids instead of following them
        self.submit_only = False
        # --print-jobid: each job's bare id on stdout first (for scripts)
        self.print_jobid = False
        self.command = ""
        self.reason: str | None = None
        self._client: Any = None

    @property
    def stdout_lost(self) -> bool:
        """True once stdout's reader went away."""
        return self.stdout.lost

    def write(self, line: str = "") -> None:
        """Print one line to stdout."""
        self.stdout.write(line + "\n")
        self.stdout.flush()

    def warn(self, line: str) -> None:
        """Print one line to stderr."""
        self.stderr.write(line + "\n")
        self.stderr.flush()

    def table(
        self,
        headers: Sequence[str],
        rows: Sequence[Sequence[Any]],
        separator: str | None = None,
        no_headers: bool = False,
    ) -> None:
        """Print a table: rich columns on a terminal, else plain aligned/separated lines."""
        if separator is None and self.stdout.isatty():
            self.stdout.write(render_rich_table(headers, rows, no_headers))
            self.stdout.flush()
            return
        for line in format_table(headers, rows, separator, no_headers):
            self.write(line)

    def client(self) -> Any:
        """The client for this data dir (built once): ``ganeti_lv.Client`` unless injected.

        It submits to the master daemon when one runs for the data dir
        (and no node operations are injected), else runs jobs here.
        """
        if self._client is None:
            factory = self.client_factory or Client
            self._client = factory(
                data_dir=self.data_dir, node_ops=self.node_ops, lock_timeout=self.lock_timeout
            )
        return self._client

    def submit(self, op: OpCode) -> Any:
        """Run an opcode as a job, showing its feedback as it comes."""
        return self.run_job([op])[0]

    def query(self, op: OpCode) -> Any:
        """Run a query without a job (``Client.query``), as Ganeti's list commands do."""
        return self.client().query(op)

    def run_job(self, ops: Sequence[OpCode]) -> list[Any]:
        """Run a job of ``ops``; every opcode's result (see ``ganeti_lv.cli.submit``).

        With ``submit_only`` (``--submit``) the job is started, "JobID: N"
        printed on stderr (as Ganeti's) and every result is None. With
        ``print_jobid`` the bare id goes to stdout first, also for a job
        that is followed (as Ganeti's ``--print-jobid``). Each opcode's
        reason trail is the command's (``reason_trail``).
        """
        on_job_id = self._print_job_id if self.print_jobid else None
        if self.submit_only:
            job_id = self.enqueue(ops)
            if on_job_id is not None:
                on_job_id(job_id)
            self.warn(f"JobID: {job_id}")
            return [None] * len(ops)
        self._set_reason(ops)
        client = self.client()
        return self.follow(
            lambda on_record, cancel: client.submit_job(ops, on_record, cancel, on_job_id)
        )

    def enqueue(self, ops: Sequence[OpCode]) -> int:
        """Start a job of ``ops`` without following it (``Client.enqueue``); its id."""
        self._set_reason(ops)
        return int(self.client().enqueue(ops))

    def _set_reason(self, ops: Sequence[OpCode]) -> None:
        for op in ops:
            op.reason = self.reason_trail()

    def reason_trail(self) -> list[list[Any]]:
        """The reason trail of a job of this command, as Ganeti's client starts it: the
        user's ``--reason`` ("gnt:user"), then the program and its command
        ("gnt:client:gnt-lv", "instance migrate")."""
        trail = []
        if self.reason:
            trail.append(reason_entry(constants.OPCODE_REASON_SRC_USER, self.reason))
        source = f"{constants.OPCODE_REASON_SRC_CLIENT}:{PROGRAM}"
        trail.append(reason_entry(source, self.command))
        return trail

    def _print_job_id(self, job_id: int) -> None:
        self.write(str(job_id))

    def follow(self, run: Callable[[Any, Cancellation], Sequence[Any]]) -> list[Any]:
        """``run(on_record, cancel)`` with the job's records shown and signals as cancel."""
        cancel = Cancellation()
        with self.job_signals(cancel), self.records() as show:
            return list(run(show, cancel))

    def job_signals(self, cancel: Cancellation) -> contextlib.AbstractContextManager[None]:
        """While jobs are followed: SIGINT/SIGTERM set ``cancel`` (``submit.job_signals``)."""
        return submit.job_signals(cancel, lambda: self.warn(submit.ABORT_REQUESTED), self._hangup)

    def records(self) -> contextlib.AbstractContextManager[Any]:
        """While a job is followed: the function showing its records on stdout
        (``submit.show_records``)."""
        return submit.show_records(self.stdout)

    def _hangup(self) -> None:
        # the terminal went away: nobody reads stdout or stderr any more
        self.stdout.lost = self.stderr.lost = True

    def confirm_for_instance(self, name: str, question: str, force: bool) -> bool:
        """``confirm`` about instance ``name``, which must exist first (ECODE_NOENT): as
        Ganeti's, an operator is not asked about an instance the cluster does not know."""
        if not force:
            self.query(OpInstanceQuery(names=[name], live=False))
        return self.confirm(question, force)

    def confirm(self, question: str, force: bool, force_flag: str = "-f/--force") -> bool:
        """Ask the operator; ``force`` (the option ``force_flag``) answers yes; without a
        tty the answer is no.

        The question and the answer go through the terminal itself (``/dev/tty``), as
        Ganeti's: stdout may be a file or a pipe a script reads.
        """
        if force:
            return True
        if self.ask is not None:
            return self.ask(question)
        if not self._stdin_is_tty():
            self.warn(f"{question} -- not confirmed (no terminal); use {force_flag}")
            return False
        try:
            with open("/dev/tty", "w", encoding="utf-8") as out, open("/dev/tty") as inp:
                out.write(f"{question} y/[n]: ")
                out.flush()
                answer = inp.readline()
        except OSError as err:
            self.warn(f"{question} -- not confirmed (the terminal: {err}); use {force_flag}")
            return False
        return answer.strip().lower() in ("y", "yes")

    def interactive(self) -> bool:
        """True when questions can be asked (injected ``ask`` or a terminal)."""
        return self.ask is not None or self._stdin_is_tty()

    def _stdin_is_tty(self) -> bool:
        if self.stdin_tty is not None:
            return self.stdin_tty
        try:
            return sys.stdin is not None and sys.stdin.isatty()
        except (ValueError, OSError):  # closed
            return False

    def close(self) -> None:
        """Release the client's resources."""
        client, self._client = self._client, None
        if client is not None:
            client.close()


def default_data_dir(explicit: str | None) -> str:
    """The data dir from ``--data-dir``, $GANETI_LV_DATA_DIR or the default."""
    return paths.data_dir(explicit)


# ---------------------------------------------------------------- registry


class CommandRegistry:
    """Collects command groups and subcommands for the ``gnt-lv`` parser.

    A command module defines ``register(registry)`` and calls
    ``registry.command("instance", "migrate", handler, help=...)``; the
    returned parser gets the command's options. Groups are created on first
    use, so a module may also add a whole new group (``backup``).
    """

    def __init__(self, subparsers: Any) -> None:
        self._top = subparsers
        self._groups: dict[str, Any] = {}

    def group(self, name: str, help: str | None = None) -> Any:  # noqa: A002
        """The subparsers action of group ``name`` (created when missing)."""
        if name not in self._groups:
            parser = self._top.add_parser(name, help=help, description=help)
            subs = parser.add_subparsers(dest="command", metavar="COMMAND")
            subs.required = True
            self._groups[name] = subs
        return self._groups[name]

    def command(
        self,
        group: str,
        name: str,
        handler: Handler,
        help: str | None = None,  # noqa: A002
    ) -> argparse.ArgumentParser:
        """Add ``gnt-lv GROUP NAME`` running ``handler(opts, env) -> exit code``."""
        parser: argparse.ArgumentParser = self.group(group).add_parser(
            name, help=help, description=help
        )
        parser.set_defaults(handler=handler)
        return parser


# ---------------------------------------------------------------- common options


def add_force(
    parser: argparse.ArgumentParser,
    help: str = "Do not ask for confirmation",  # noqa: A002
) -> None:
    """``-f/--force``: skip confirmations (never host-key checks); ``help`` says what it
    does where it does more, or nothing."""
    parser.add_argument("-f", "--force", action="store_true", help=help)


def add_reason(parser: argparse.ArgumentParser) -> None:
    """``--reason TEXT``: why, first in the reason trail of the command's jobs (as Ganeti's).

    Every command that submits a job takes it (``add_submit`` adds it).
    """
    parser.add_argument(
        "--reason",
        default=None,
        metavar="TEXT",
        help="The reason for executing the command (kept in its jobs' reason trail)",
    )


def add_submit(parser: argparse.ArgumentParser) -> None:
    """``--submit``: start the job, print its id and return at once; ``--print-jobid``;
    and ``--reason`` (``add_reason``)."""
    add_reason(parser)
    parser.add_argument(
        "--submit",
        action="store_true",
        help="Start the job, print 'JobID: N' on stderr and return (follow it with"
        " 'gnt-lv job watch N')",
    )
    parser.add_argument(
        "--print-jobid",
        action="store_true",
        help="Also print the job's id alone as the first line on stdout (for scripts;"
        " instance startup, shutdown and reboot print 'N: NAME' per job instead)",
    )
    parser.add_argument(
        "--priority",
        choices=("low", "normal", "high"),
        help="Accepted for Ganeti's scripts; no effect: jobs do not wait in a queue here,"
        " only for their locks",
    )


def add_primary(parser: argparse.ArgumentParser) -> None:
    """A new instance's primary: ``-n NODE``, or ``-I NAME`` to let the allocator choose
    (neither: the cluster's default allocator)."""
    where = parser.add_mutually_exclusive_group()
    where.add_argument("-n", "--node", metavar="NODE", help="Primary node")
    where.add_argument(
        "-I",
        "--iallocator",
        metavar="NAME",
        help="Let the allocator choose the primary (any name, e.g. Ganeti's hail: the"
        " built-in one, the node with the most free memory; '.' or neither option: the"
        " cluster's default allocator)",
    )


def add_beparams(parser: argparse.ArgumentParser, what: str = "Backend parameters") -> None:
    """``-B K=V,...``: backend parameters (memory, vcpus, ...)."""
    parser.add_argument(
        "-B", "--backend-parameters", dest="beparams", default=None, metavar="K=V,...", help=what
    )


def add_hvparams(parser: argparse.ArgumentParser, what: str = "Hypervisor parameters") -> None:
    """``-H [kvm:]K=V,...``: hypervisor parameters, in Ganeti's form or without the name."""
    parser.add_argument(
        "-H",
        "--hypervisor-parameters",
        dest="hvparams",
        default=None,
        metavar="[kvm:]K=V,...",
        help=f"{what}; 'kvm:' in front as Ganeti's -H (the only hypervisor)",
    )


def add_tags(parser: argparse.ArgumentParser, help_text: str = "Comma-separated tags") -> None:
    """``--tags TAG,...``: the new instance's tags (Ganeti's create option)."""
    parser.add_argument("--tags", help=help_text)


def parse_tags(text: str | None) -> list[str]:
    """The tags of a ``--tags`` value."""
    return [tag for tag in (text or "").split(",") if tag]


def add_dry_run(parser: argparse.ArgumentParser) -> None:
    """``--dry-run``: check prerequisites only."""
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="Check the prerequisites only, do not execute the operation",
    )


def add_ignore_ipolicy(parser: argparse.ArgumentParser) -> None:
    """``--ignore-ipolicy``: Ganeti's option of a move, taken with nothing to ignore."""
    parser.add_argument(
        "--ignore-ipolicy",
        action="store_true",
        help="Accepted for Ganeti compatibility; ganeti_lv has no instance policies",
    )


def add_list_options(parser: argparse.ArgumentParser, fields: Sequence[str]) -> None:
    """``-o FIELDS``, ``--no-headers``, ``--separator``."""
    parser.add_argument(
        "-o",
        "--output",
        dest="output",
        metavar="FIELDS",
        help=f"Comma-separated fields (+F to append); known: {', '.join(fields)}",
    )
    parser.add_argument("--no-headers", action="store_true", help="Do not print headers")
    parser.add_argument("--separator", default=None, help="Column separator (default: aligned)")


def add_units_option(parser: argparse.ArgumentParser) -> None:
    """``--units h|m|g|t`` of a list with size fields (see ``list_units``)."""
    parser.add_argument(
        "--units",
        choices=UNITS,
        default=None,
        help="Units of sizes: h (human, the default), m, g, t (m with --separator)",
    )
