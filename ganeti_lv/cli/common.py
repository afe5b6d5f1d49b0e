"""Shared pieces of the ``gnt-lv`` commands.

- parsing: key=value lists (``-B memory=128M,vcpus=1``), indexed specs
  (``--disk 0:size=1G``), sizes;
- ``CliEnv``: what a command handler gets (data dir, injected node
  operations, output streams, confirmation prompt) and ``submit`` to run an
  opcode with its feedback printed as it comes;
- ``CommandRegistry``: how command modules add groups and subcommands;
- output tables in Ganeti's style (aligned columns, ``--no-headers``,
  ``--separator``);
- ``progress_feedback``: a feedback function drawing progress bars on a
  terminal (migration, export), plain lines otherwise.

Key=value lists: items are separated by ``,``; a value may contain ``=``;
quote a value (``'...'`` or ``"..."``) or escape with ``\\`` to include a
``,``. Example: ``-H 'kernel_args="console=ttyS0 seed=x,y",cpu_type=host'``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import time

from ganeti_lv import paths
from ganeti_lv.errors import ECODE_INVAL, OpPrereqError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence
    from typing import Any, TextIO

    Handler = Callable[[argparse.Namespace, "CliEnv"], int]
    ProgressParser = Callable[[str], "tuple[str, float, str] | None"]

EXIT_SUCCESS = 0
EXIT_FAILURE = 1


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


def parse_kv_list(text: str, option: str = "") -> dict[str, str]:
    """Parse ``k1=v1,k2=v2``; values may contain ``=``; ``no_k``/``-k`` mean ``k=no``."""
    out: dict[str, str] = {}
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
            key, value = item[1:], "no"
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
    return index, parse_kv_list(rest, option)


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


def parse_fields(text: str | None, default: Sequence[str], known: Sequence[str]) -> list[str]:
    """Parse ``-o f1,f2`` (``+f3`` appends to the defaults); unknown fields are ECODE_INVAL."""
    if not text:
        return list(default)
    fields = list(default) + text[1:].split(",") if text.startswith("+") else text.split(",")
    fields = [f.strip() for f in fields if f.strip()]
    unknown = [f for f in fields if f not in known]
    if unknown:
        raise OpPrereqError(
            f"Unknown output field(s): {', '.join(unknown)} (known: {', '.join(known)})",
            ECODE_INVAL,
        )
    return fields


# ---------------------------------------------------------------- output


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
    """The table as rich renders it for a terminal (borderless, bold headers)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, show_header=not no_headers, header_style="bold", pad_edge=False)
    for header in headers:
        table.add_column(header, no_wrap=True, overflow="ignore")
    for row in rows:
        table.add_row(*(format_value(v) for v in row))
    buffer = io.StringIO()
    Console(file=buffer, width=10_000, force_terminal=True).print(table)
    return "\n".join(line.rstrip() for line in buffer.getvalue().splitlines()) + "\n"


# ---------------------------------------------------------------- environment


class CliEnv:
    """What a command handler gets; tests inject ``node_ops``, ``ask`` and streams.

    ``lock_timeout`` (seconds, None: wait) comes from ``--lock-timeout``.
    ``stdin_tty`` says whether questions could be asked on stdin (None:
    whether this process's stdin is a terminal, at the time of asking).
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
        self.out = out
        self.err = err
        self.client_factory = client_factory
        self.lock_timeout = lock_timeout
        self._client: Any = None

    @property
    def stdout(self) -> TextIO:
        """Output stream (sys.stdout at call time unless injected)."""
        return self.out or sys.stdout

    @property
    def stderr(self) -> TextIO:
        """Error stream (sys.stderr at call time unless injected)."""
        return self.err or sys.stderr

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
        isatty = getattr(self.stdout, "isatty", None)
        if separator is None and callable(isatty) and isatty():
            self.stdout.write(render_rich_table(headers, rows, no_headers))
            self.stdout.flush()
            return
        for line in format_table(headers, rows, separator, no_headers):
            self.write(line)

    def client(self) -> Any:
        """The client for this data dir (built once).

        The master daemon's when one runs for the data dir (and nothing is
        injected), else the library client running jobs in this process.
        """
        if self._client is None:
            if self.client_factory is None and self.node_ops is None:
                from ganeti_lv.master import client as masterclient

                master = masterclient.connect(self.data_dir)
                if master is not None:
                    master.lock_timeout = self.lock_timeout
                    self._client = master
                    return master
            if self.client_factory is not None:
                self._client = self.client_factory(
                    data_dir=self.data_dir, node_ops=self.node_ops, lock_timeout=self.lock_timeout
                )
            else:
                from ganeti_lv.client import Client

                self._client = Client(
                    data_dir=self.data_dir, node_ops=self.node_ops, lock_timeout=self.lock_timeout
                )
        return self._client

    def feedback(self, msg: Any) -> None:
        """Print a feedback line with a timestamp, as Ganeti's CLI does."""
        text = msg if isinstance(msg, str) else str(msg)
        for line in text.splitlines() or [""]:
            self.write(f"{time.ctime()} {line}")

    def submit(self, op: Any, quiet: bool = False) -> Any:
        """Run an opcode, printing its feedback lines as they come (unless quiet)."""
        return self.client().submit(op, feedback_fn=None if quiet else self.feedback)

    def confirm(self, question: str, force: bool) -> bool:
        """Ask the operator; ``force`` answers yes; without a tty the answer is no."""
        if force:
            return True
        if self.ask is not None:
            return self.ask(question)
        if not self._stdin_is_tty():
            self.warn(f"{question} -- not confirmed (no terminal); use -f/--force")
            return False
        try:
            answer = input(f"{question} y/[n]: ")
        except EOFError:
            return False
        return answer.strip().lower() in ("y", "yes")

    def interactive(self) -> bool:
        """True when questions can be asked (injected ``ask`` or a terminal)."""
        return self.ask is not None or self._stdin_is_tty()

    def _stdin_is_tty(self) -> bool:
        return sys.stdin.isatty() if self.stdin_tty is None else self.stdin_tty

    def close(self) -> None:
        """Release the client's resources."""
        client, self._client = self._client, None
        close = getattr(client, "close", None)
        if callable(close):
            close()


def default_data_dir(explicit: str | None) -> str:
    """The data dir from ``--data-dir``, $GANETI_LV_DATA_DIR or the default."""
    return paths.data_dir(explicit)


# ---------------------------------------------------------------- registry


class HelpFormatter(argparse.HelpFormatter):
    """argparse's help formatter, sized to the terminal without ``shutil``.

    argparse makes a formatter for every option it adds (to check it) and
    asks ``shutil.get_terminal_size`` for the width each time; importing
    ``shutil`` (and the compression modules it loads) was some 3 ms of
    every ``gnt-lv`` start. The width is the same: $COLUMNS, else the
    terminal's, else 80 columns, less 2.
    """

    def __init__(
        self,
        prog: str,
        indent_increment: int = 2,
        max_help_position: int = 24,
        width: int | None = None,
    ) -> None:
        super().__init__(prog, indent_increment, max_help_position, width or _help_width())


def _help_width() -> int:
    try:
        columns = int(os.environ.get("COLUMNS", ""))
    except ValueError:
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
    return (columns or 80) - 2


class CommandRegistry:
    """Collects command groups and subcommands for the ``gnt-lv`` parser.

    A command module defines ``register(registry)`` and calls
    ``registry.command("instance", "migrate", handler, help=...)``; the
    returned parser gets the command's options. Groups are created on first
    use, so a module may also add a whole new group (``backup``).

    A registry may build only one group (``only``), or only one command of
    it (``command``): a command line names one, and building every parser
    costs each ``gnt-lv`` start some 20 ms. The other groups and commands
    are still known by name (``has_group``, ``has_command``) but get no
    parser.
    """

    def __init__(self, subparsers: Any, only: str | None = None, command: str | None = None):
        self._top = subparsers
        self._groups: dict[str, Any] = {}
        self._known: dict[str, set[str]] = {}
        self._only = only
        self._command = command

    def has_group(self, name: str) -> bool:
        """True once a module registered group ``name``."""
        return name in self._known

    def has_command(self, group: str, name: str) -> bool:
        """True once a module registered command ``name`` of ``group``."""
        return name in self._known.get(group, ())

    def _builds(self, group: str, name: str | None = None) -> bool:
        if self._only is not None and group != self._only:
            return False
        return name is None or self._command is None or name == self._command

    def group(self, name: str, help: str | None = None) -> Any:  # noqa: A002
        """The subparsers action of group ``name`` (created when missing).

        None for a group this registry does not build.
        """
        self._known.setdefault(name, set())
        if not self._builds(name):
            return None
        if name not in self._groups:
            parser = self._top.add_parser(
                name, help=help, description=help, formatter_class=HelpFormatter
            )
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
        in_daemon: bool = False,
    ) -> argparse.ArgumentParser:
        """Add ``gnt-lv GROUP NAME`` running ``handler(opts, env) -> exit code``.

        ``in_daemon``: the master daemon may run the command for ``gnt-lv``
        (``ganeti_lv.cli.remote``): its handler reads nothing of the
        machine it runs on (no files, no environment) besides its options
        and ``env``. A command this registry does not build gets a stand-in
        that takes and drops its options.
        """
        subs = self.group(group)
        self._known[group].add(name)
        if subs is None or not self._builds(group, name):
            return _UnbuiltParser()  # type: ignore[return-value]
        parser: argparse.ArgumentParser = subs.add_parser(
            name, help=help, description=help, formatter_class=HelpFormatter
        )
        parser.set_defaults(handler=handler, in_daemon=in_daemon)
        return parser


class _UnbuiltParser:
    """Stands in for the parser of a command that is not built: every call is dropped."""

    def __getattr__(self, _name: str) -> Any:
        return self._drop

    def _drop(self, *_args: Any, **_kwargs: Any) -> _UnbuiltParser:
        return self


# ---------------------------------------------------------------- common options


def add_force(parser: argparse.ArgumentParser) -> None:
    """``-f/--force``: skip confirmations (never host-key checks)."""
    parser.add_argument("-f", "--force", action="store_true", help="Do not ask for confirmation")


def add_dry_run(parser: argparse.ArgumentParser) -> None:
    """``--dry-run``: check prerequisites only."""
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="Check the prerequisites only, do not execute the operation",
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


# ---------------------------------------------------------------- progress bars


@contextlib.contextmanager
def progress_feedback(
    env: CliEnv, parse: ProgressParser, show_percent: bool = True
) -> Iterator[Callable[[str], None]]:
    """A feedback function: rich progress bars on a terminal, plain lines otherwise.

    ``parse(line)`` returns (bar name, percent, detail) for a progress line
    (one bar per name, e.g. "migrating" or "disk/0") and None for any other
    line, which is printed above the bars. ``show_percent`` adds a column
    with the percentage (leave it off when the detail already shows it).
    """
    if env.out is not None or not sys.stdout.isatty():
        yield env.feedback
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    columns: list[Any] = [TextColumn("[bold]{task.fields[bar]}"), BarColumn()]
    if show_percent:
        columns.append(TextColumn("{task.percentage:>5.1f}%"))
    columns += [TimeElapsedColumn(), TextColumn("{task.description}")]
    with Progress(*columns) as bars:
        tasks: dict[str, Any] = {}

        def feedback(msg: str) -> None:
            parsed = parse(msg)
            if parsed is None:
                bars.console.print(msg, markup=False, highlight=False)
                return
            name, pct, detail = parsed
            if name not in tasks:
                tasks[name] = bars.add_task(detail, total=100.0, bar=name)
            bars.update(tasks[name], completed=pct, description=detail)

        yield feedback
