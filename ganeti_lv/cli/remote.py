"""The master daemon's side of ``gnt-lv``'s hand-over (see ``ganeti_lv.cli.entry``).

The daemon parses the command line with ``gnt-lv``'s own parser and runs the
command's handler in the connection's thread, its job through the daemon
(``MasterDaemon.run_job``); what the handler prints goes back as frames, and
the exit code last. A command runs here only when nothing of the client's
machine is needed:

- the line parses as a plain command (no help, version, usage error or
  ``--debug``) whose registration says ``in_daemon``;
- the data dir is this daemon's;
- no question must be asked: a handler asking one while ``gnt-lv``'s stdin
  is a terminal gives the command back (``l``).

Until the handler submits its job, its output is held back, so a command
given back has printed nothing and done nothing; ``gnt-lv`` then runs it
itself, exactly as without a daemon.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Any, BinaryIO, NamedTuple

from ganeti_lv.cancel import Cancellation
from ganeti_lv.cli.common import EXIT_FAILURE, CliEnv
from ganeti_lv.cli.entry import (
    CANCEL,
    HEADER,
    PROTOCOL,
    REQUEST_START,
    TAG_ARGV,
    TAG_EXIT,
    TAG_LOCAL,
    TAG_STDERR,
    TAG_STDOUT,
    frame,
    payload_size,
)
from ganeti_lv.cli.main import parse_in_daemon, run_command
from ganeti_lv.master.daemon import watch_cancel

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Iterator

    from ganeti_lv.master.daemon import MasterDaemon

# longest request accepted (arguments of a command line)
MAX_REQUEST = 1 << 20


class GiveBack(BaseException):
    """The command must run in ``gnt-lv`` (not an error: nothing was done)."""


class Request(NamedTuple):
    """A parsed hand-over request."""

    protocol: str
    data_dir: str
    stdin_tty: bool
    argv: list[str]


def is_request(rfile: BinaryIO) -> bool:
    """True if the connection starts with a hand-over (not a JSON submission)."""
    peek = getattr(rfile, "peek", None)
    return callable(peek) and peek(1)[:1] == REQUEST_START


def read_request(rfile: BinaryIO) -> Request | None:
    """The request on ``rfile``; None if it is malformed or cut short."""
    head = rfile.read(1 + HEADER)
    if len(head) != 1 + HEADER or head[:1] != REQUEST_START or head[1:2] != TAG_ARGV:
        return None
    size = payload_size(head[1:])
    if size > MAX_REQUEST:
        return None
    payload = rfile.read(size)
    if len(payload) != size or rfile.read(1) != b"\n":
        return None
    fields = [os.fsdecode(field) for field in payload.split(b"\0")]
    if len(fields) < 3:
        return None
    return Request(fields[0], fields[1], fields[2] == "1", fields[3:])


class Frames:
    """Sends frames to ``gnt-lv``; holds them back until ``commit`` (see the docstring)."""

    def __init__(self, wfile: BinaryIO) -> None:
        self._wfile = wfile
        self._lock = threading.Lock()
        self._held: list[bytes] | None = []
        self._gone = False

    def _send(self, data: bytes) -> None:
        if self._gone:
            return
        try:
            self._wfile.write(data)
            self._wfile.flush()
        except (OSError, ValueError):
            self._gone = True  # a client gone just stops receiving

    def send(self, tag: bytes, payload: bytes = b"") -> None:
        """A frame now, or when committed."""
        with self._lock:
            if self._held is not None:
                self._held.append(frame(tag, payload))
            else:
                self._send(frame(tag, payload))

    def commit(self) -> None:
        """From now on frames go out at once (an empty stdout frame says so)."""
        with self._lock:
            if self._held is None:
                return
            held, self._held = self._held, None
            self._send(b"".join([frame(TAG_STDOUT, b""), *held]))

    def give_back(self) -> bool:
        """Drop what was held back and tell ``gnt-lv`` to run the command itself.

        False (and nothing sent) once committed: a job was submitted.
        """
        with self._lock:
            if self._held is None:
                return False
            self._held = None
            self._send(frame(TAG_LOCAL, b""))
            return True


class _Stream:
    """A text stream whose writes become frames of one tag."""

    def __init__(self, frames: Frames, tag: bytes) -> None:
        self._frames = frames
        self._tag = tag

    def write(self, text: str) -> int:
        self._frames.send(self._tag, text.encode("utf-8", "surrogateescape"))
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


def _ask_in_gnt_lv(_question: str) -> bool:
    raise GiveBack


class DaemonSideClient:
    """What a handler's ``env.client()`` is in the daemon: jobs run through the daemon."""

    ctx = None  # no warm-ups ahead: the daemon's connections are open

    def __init__(
        self, daemon: MasterDaemon, frames: Frames, cancel: Cancellation, lock_timeout: Any
    ) -> None:
        self.daemon = daemon
        self.frames = frames
        self.cancel = cancel
        self.lock_timeout = lock_timeout

    def submit(
        self,
        op: Any,
        feedback_fn: Callable[[str], None] | None = None,
        cancel: Cancellation | None = None,
    ) -> Any:
        """Run ``op`` as a job of the daemon; ``gnt-lv``'s cancel byte stops it.

        ``cancel`` (a handler's own, set by signal handlers that a daemon
        thread cannot install) is not needed: the connection's is used.
        """
        self.frames.commit()
        return self.daemon.run_job(op, self.lock_timeout, feedback_fn, self.cancel)


def _cancel_bytes(rfile: BinaryIO) -> Iterator[str]:
    """A reason per cancel byte ``gnt-lv`` sends (Ctrl-C, SIGTERM)."""
    while data := rfile.read(1):
        if data == CANCEL:
            yield "interrupted by the user"


def _runnable(daemon: MasterDaemon, request: Request) -> argparse.Namespace | None:
    """The request's parsed command line if the daemon runs it (see the docstring)."""
    if request.protocol != PROTOCOL:
        return None
    if os.path.realpath(request.data_dir) != os.path.realpath(daemon.data_dir):
        return None
    opts = parse_in_daemon(request.argv)
    if opts is None or opts.debug or not getattr(opts, "in_daemon", False):
        return None
    return opts


def serve(daemon: MasterDaemon, rfile: BinaryIO, wfile: BinaryIO) -> None:
    """Run one handed-over command line (see the module docstring)."""
    frames = Frames(wfile)
    request = read_request(rfile)
    opts = None if request is None else _runnable(daemon, request)
    if request is None or opts is None:
        frames.give_back()
        return
    cancel = Cancellation()
    watch_cancel(_cancel_bytes(rfile), cancel)
    env = CliEnv(
        data_dir=daemon.data_dir,
        ask=_ask_in_gnt_lv if request.stdin_tty else None,
        out=_Stream(frames, TAG_STDOUT),  # type: ignore[arg-type]
        err=_Stream(frames, TAG_STDERR),  # type: ignore[arg-type]
        client_factory=lambda **_kw: DaemonSideClient(daemon, frames, cancel, opts.lock_timeout),
        lock_timeout=opts.lock_timeout,
        stdin_tty=False,
    )
    try:
        code = run_command(opts, env)
    except GiveBack:
        if frames.give_back():
            return
        # a question after the job was submitted: a handler's bug, not the operator's
        env.warn("Internal error: the command asked a question after submitting its job")
        code = EXIT_FAILURE
    frames.commit()
    frames.send(TAG_EXIT, str(code).encode())
