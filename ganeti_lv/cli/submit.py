"""How ``gnt-lv`` follows the job it submitted: signals, output, progress bars.

The same for a job in the master daemon and a job in ``gnt-lv``'s own
process:

- SIGINT or SIGTERM asks the job to stop safely (a migration aborts its
  libvirt job and the instance stays on its source; a job waiting for a
  lock stops waiting); a second SIGINT (Ctrl-C) interrupts at once, a
  second SIGTERM (a cancel sent again) changes nothing.
- The job's records are printed as lines with a timestamp, or on a
  terminal drawn as progress bars (rich) with the other lines above them.
- Output that goes away (a closed pipe, ``gnt-lv ... | head -1``; a dropped
  terminal session, SIGHUP) is discarded from then on and never stops the
  job: ``gnt-lv`` follows it to its end and exits with its outcome.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any, TextIO

from ganeti_lv.cancel import Cancellation
from ganeti_lv.master import protocol
from ganeti_lv.master.protocol import Feedback, RecordFn

ABORT_REQUESTED = "Abort requested; stopping the operation safely (again to force)"


class Output:
    """A text stream that a lost reader never turns into an error.

    The first write or flush that fails (EPIPE, EIO after a hang-up, a
    closed file) marks it lost; everything written after that is dropped.
    ``target`` gives the stream at the time of writing (``sys.stdout`` may
    be replaced, as tests do).
    """

    def __init__(self, target: Callable[[], TextIO]) -> None:
        self._target = target
        self.lost = False

    def write(self, text: str) -> int:
        if not self.lost:
            try:
                self._target().write(text)
            except (OSError, ValueError):
                self.lost = True
        return len(text)

    def flush(self) -> None:
        if not self.lost:
            try:
                self._target().flush()
            except (OSError, ValueError):
                self.lost = True

    def isatty(self) -> bool:
        if self.lost:
            return False
        try:
            return bool(self._target().isatty())
        except (AttributeError, ValueError, OSError):
            return False

    def fileno(self) -> int:
        return self._target().fileno()


def discard_stdout() -> None:
    """Point stdout at /dev/null: what is still buffered for a lost reader goes nowhere.

    Without it, the interpreter's last flush at exit reports the broken
    pipe again (and exits with status 120).
    """
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


@contextlib.contextmanager
def job_signals(
    cancel: Cancellation, on_abort: Callable[[], None], on_hangup: Callable[[], None]
) -> Iterator[None]:
    """While a job runs: SIGINT/SIGTERM ask it to stop, SIGHUP only loses the output.

    The first SIGINT or SIGTERM sets ``cancel`` and calls ``on_abort``;
    nothing is interrupted at an arbitrary point. A second Ctrl-C (SIGINT)
    raises KeyboardInterrupt; a repeated SIGTERM (a cancel sent again, by
    ``job cancel`` or the remote API) changes nothing. SIGHUP (the
    terminal went away) calls ``on_hangup`` and the job goes on. Outside
    the main thread (embedded) no handler is installed.
    """

    def interrupt(signum: int, _frame: Any) -> None:
        if cancel.is_set():
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            return
        cancel.request("interrupted by the user")
        on_abort()

    def hangup(_signum: int, _frame: Any) -> None:
        on_hangup()

    wanted = {signal.SIGINT: interrupt, signal.SIGTERM: interrupt, signal.SIGHUP: hangup}
    previous: dict[signal.Signals, Any] = {}
    try:
        for sig, handler in wanted.items():
            previous[sig] = signal.signal(sig, handler)
    except ValueError:  # not the main thread
        pass
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def record_lines(record: Feedback) -> str:
    """A record as text: its lines, each with the time it was made (as Ganeti prints feedback)."""
    stamp = time.ctime(record.ts)
    return "".join(f"{stamp} {line}\n" for line in record.text.splitlines() or [""])


def print_record(out: Output, record: Feedback) -> None:
    """A record as plain lines."""
    out.write(record_lines(record))
    out.flush()


@contextlib.contextmanager
def show_records(out: Output) -> Iterator[RecordFn]:
    """A function showing a job's records: bars on a terminal, plain lines otherwise.

    On a terminal every progress record moves its bar (one per name:
    "migrating", "disk/0", ...) and the other records are printed as lines
    above the bars.
    """
    if not out.isatty():
        yield lambda record: print_record(out, record)
        return
    # rich is loaded for terminals only
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(file=out)  # type: ignore[arg-type]
    columns = (
        TextColumn("[bold]{task.fields[bar]}"),
        BarColumn(),
        TextColumn("{task.percentage:>5.1f}%"),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
    )
    # the bars write through ``out`` itself, not through a replaced sys.stdout
    with Progress(*columns, console=console, redirect_stdout=False, redirect_stderr=False) as bars:
        tasks: dict[str, Any] = {}

        def show(record: Feedback) -> None:
            if not isinstance(record, protocol.Progress):
                text = record_lines(record).rstrip("\n")
                bars.console.print(text, markup=False, highlight=False, soft_wrap=True)
                return
            if record.bar not in tasks:
                tasks[record.bar] = bars.add_task(record.detail, total=100.0, bar=record.bar)
            bars.update(tasks[record.bar], completed=record.percent, description=record.detail)

        yield show
