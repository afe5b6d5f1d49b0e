"""The ``gnt-lv`` program: hand the command line to the master daemon, or run it here.

When a master daemon runs for the data dir and stdout is not a terminal,
``gnt-lv`` sends its arguments to the daemon, which parses them with the
same parser and runs the command itself (``ganeti_lv.cli.remote``): the job
starts with the node connections open, and this process only prints what
comes back and exits with the command's code. Such a start imports nothing
of argparse, JSON or regular expressions, and takes the C modules of
sockets and signals directly (``socket`` and ``signal`` load ``enum``): some
30 ms less of every command on a busy master.

Everything else runs here, as ``ganeti_lv.cli.main``: no daemon, a terminal
(progress bars, questions), ``--debug``, and whatever the daemon gives back
untouched (help, usage errors, commands that read this machine's files).

The exchange is binary frames (a tag byte, a 4-byte big-endian length, the
payload). ``gnt-lv`` sends a NUL byte, then one ``A`` frame whose payload is
NUL-separated fields: the protocol version, the data dir, "1" or "0" (stdin
is a terminal) and the arguments, then a newline. The daemon answers ``o``
(stdout text) and ``e`` (stderr text) frames, then ``x`` (the exit code),
or only ``l``: run the command here, nothing was done. One ``c`` byte from
``gnt-lv`` (Ctrl-C, SIGTERM) asks the command's job to stop safely; a
second interruption leaves, and the job's end is in the job log.
"""

from __future__ import annotations

import _signal
import _socket
import os
import sys

from ganeti_lv import paths

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

PROTOCOL = "1"
REQUEST_START = b"\0"
TAG_ARGV = b"A"
TAG_STDOUT = b"o"
TAG_STDERR = b"e"
TAG_EXIT = b"x"
TAG_LOCAL = b"l"
CANCEL = b"c"
HEADER = 5  # a frame's tag byte and length
# how often (s) gnt-lv looks for an interruption while it waits for the daemon
SIGNAL_POLL = 0.2
ABORT_REQUESTED = "Abort requested; stopping the operation safely (again to force)"
_EXIT_FAILURE = 1
# the top-level options that take a value (gnt-lv hands them over; any other
# top-level option makes gnt-lv parse the line itself)
VALUE_OPTIONS = ("--data-dir", "--lock-timeout")


def frame(tag: bytes, payload: bytes) -> bytes:
    """One frame of the exchange."""
    return tag + len(payload).to_bytes(4, "big") + payload


def payload_size(header: bytes) -> int:
    """The payload length a frame's header (its first ``HEADER`` bytes) announces."""
    return int.from_bytes(header[1:HEADER], "big")


def encode_request(data_dir: str, stdin_tty: bool, argv: Sequence[str]) -> bytes:
    """What ``gnt-lv`` sends (see the module docstring)."""
    fields = [PROTOCOL, data_dir, "1" if stdin_tty else "0", *argv]
    payload = b"\0".join(os.fsencode(field) for field in fields)
    return REQUEST_START + frame(TAG_ARGV, payload) + b"\n"


def data_dir_of(argv: Sequence[str]) -> str | None:
    """The data dir a command line uses, or None when ``gnt-lv`` should parse it itself.

    Only ``--data-dir`` and ``--lock-timeout`` (with a value, spelled out)
    may come before the group; anything else there (``--debug``, help,
    version, abbreviations) is left to the whole parser.
    """
    explicit = None
    idx = 0
    while idx < len(argv) and argv[idx].startswith("-"):
        name, eq, value = argv[idx].partition("=")
        if name not in VALUE_OPTIONS:
            return None
        if not eq:
            idx += 1
            if idx >= len(argv):
                return None
            value = argv[idx]
        if name == "--data-dir":
            explicit = value
        idx += 1
    if idx >= len(argv):
        return None
    return os.path.abspath(paths.data_dir(explicit))


class _Leave(Exception):
    """Stop following the daemon's answer with this exit code."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class _Signals:
    """Counts SIGINT and SIGTERM while installed (nothing is raised inside a read)."""

    def __init__(self) -> None:
        self.count = 0
        self._previous: dict[int, object] = {}

    def _handler(self, _signum: int, _frame: object) -> None:
        self.count += 1

    def install(self) -> None:
        for sig in (_signal.SIGINT, _signal.SIGTERM):
            try:
                self._previous[sig] = _signal.signal(sig, self._handler)
            except ValueError:  # not the main thread (embedded): no handlers
                return

    def restore(self) -> None:
        for sig, previous in self._previous.items():
            _signal.signal(sig, previous)  # type: ignore[arg-type]


class _Follower:
    """Reads the daemon's frames and prints them; interruptions ask the job to stop."""

    def __init__(self, sock: _socket.socket, signals: _Signals) -> None:
        self.sock = sock
        self.signals = signals
        self.buf = b""
        self.answered = False
        self.seen_signals = 0

    def check_signals(self) -> None:
        """The first interruption sends the cancel byte, the next one leaves."""
        while self.seen_signals < self.signals.count:
            self.seen_signals += 1
            if self.seen_signals > 1:
                _write(sys.stderr, b"Aborted.\n")
                raise _Leave(_EXIT_FAILURE)
            try:  # noqa: SIM105 - no contextlib import on this path
                self.sock.sendall(CANCEL)
            except OSError:
                pass  # the daemon is gone: the end of the connection tells
            _write(sys.stderr, ABORT_REQUESTED.encode() + b"\n")

    def _fill(self, size: int) -> bool:
        while len(self.buf) < size:
            self.check_signals()
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                continue  # a look at the signals now and then
            except OSError:
                return False
            if not chunk:
                return False
            self.buf += chunk
        return True

    def next_frame(self) -> tuple[bytes, bytes] | None:
        """(tag, payload), or None at the end of the connection."""
        if not self._fill(HEADER):
            return None
        size = payload_size(self.buf)
        if not self._fill(HEADER + size):
            return None
        tag, payload = self.buf[:1], self.buf[HEADER : HEADER + size]
        self.buf = self.buf[HEADER + size :]
        return tag, payload

    def ended(self) -> int | None:
        """The connection ended without an exit code."""
        if not self.answered and not self.signals.count:
            return None  # nothing was done
        _write(
            sys.stderr,
            b"The master daemon closed the connection before the command ended"
            b" (see gnt-lv job list)\n",
        )
        return _EXIT_FAILURE

    def follow(self) -> int | None:
        """Print the daemon's answer: the command's exit code, or None to run it here."""
        while True:
            got = self.next_frame()
            if got is None:
                return self.ended()
            tag, payload = got
            if tag == TAG_EXIT:
                return int(payload) if payload.isdigit() else _EXIT_FAILURE
            if tag not in (TAG_STDOUT, TAG_STDERR):
                # given back ("l"), or a daemon speaking another protocol (an older one)
                if self.signals.count:
                    _write(sys.stderr, b"Aborted.\n")
                    return _EXIT_FAILURE
                return _EXIT_FAILURE if self.answered else None
            self.answered = True
            if not _write(sys.stdout if tag == TAG_STDOUT else sys.stderr, payload):
                return _EXIT_FAILURE  # our output is gone (a closed pipe): the job goes on


def _write(stream: object, data: bytes) -> bool:
    """Write and flush; False if the stream is closed or broken."""
    if not data:
        return True
    try:
        out = getattr(stream, "buffer", None)
        if out is None:  # a replaced text stream
            stream.write(data.decode("utf-8", "replace"))  # type: ignore[attr-defined]
        else:
            out.write(data)
        stream.flush()  # type: ignore[attr-defined]
    except (OSError, ValueError, AttributeError):
        return False
    return True


def _is_tty(stream: object) -> bool:
    try:
        return bool(stream.isatty())  # type: ignore[attr-defined]
    except (AttributeError, ValueError, OSError):  # None (fd closed) or closed
        return False


def hand_over(argv: Sequence[str]) -> int | None:
    """Run ``argv`` in the master daemon; its exit code, or None to run it here."""
    if _is_tty(sys.stdout):
        return None
    data_dir = data_dir_of(argv)
    if data_dir is None:
        return None
    signals = _Signals()
    signals.install()  # from the request on, an interruption asks the job to stop
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        try:
            sock.connect(paths.masterd_socket(data_dir))
            sock.sendall(encode_request(data_dir, _is_tty(sys.stdin), argv))
        except OSError:
            return None  # no daemon, or it went away before reading the request
        sock.settimeout(SIGNAL_POLL)
        return _Follower(sock, signals).follow()
    except _Leave as leave:
        return leave.code
    finally:
        sock.close()
        signals.restore()


def main() -> int:
    """The ``gnt-lv`` program."""
    argv = sys.argv[1:]
    code = hand_over(argv)
    if code is not None:
        return code
    from ganeti_lv.cli.main import main as run_here

    return run_here()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
