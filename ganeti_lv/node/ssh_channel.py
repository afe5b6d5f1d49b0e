"""A command's channel on an SSH connection: its streams, its end, a node that stops answering.

``RemoteProcess`` streams a command's stdin and stdout (a disk copy's
helper); ``collect`` reads a command's output to its end (``SshClient.run``).
Both wait in slices of ``_WAIT_SLICE`` seconds and look, after a slice
without a byte, whether the node still answers: once it has left our data
(keepalives at least, every 15 s) unanswered for ``STREAM_UNANSWERED_LIMIT``
seconds, the wait ends with ``NodeUnreachable``; TCP alone would retry for
some 15 minutes.

Sending: nothing is sent on a channel whose command may have ended.
paramiko makes a channel's end of input (EOF), or data, in the caller's
thread and sends it after letting go of the channel's lock; the node's
close of the channel, answered by paramiko's own thread, can get onto the
wire in between, and sshd ends the whole connection, every other channel
on it included, when something arrives for a channel it has closed
(paramiko issues 1115 and 1705, open). So a command run without input reads
``/dev/null`` and no EOF is sent (the channel's close carries one, made
with the close in one step), one given input reads its input's end before
its shell exits (``with_input``), and a streamed command
(``RemoteProcess``) must not end before what it is sent has come (the disk
copy's sender waits for the end of its input).
"""

from __future__ import annotations

import select
import threading
import time
from typing import TYPE_CHECKING

import paramiko

from ganeti_lv.errors import NodeUnreachable, RemoteCommandError
from ganeti_lv.node.tcpinfo import unanswered_for
from ganeti_lv.node.transport import CommandResult

if TYPE_CHECKING:
    from ganeti_lv.node.ssh import SshClient

READ_CHUNK = 1 << 16
# a command or stream waiting for its node fails once the node has left our
# data unanswered this long (s): its link is gone
STREAM_UNANSWERED_LIMIT = 60.0
# how long one wait for a command's output lasts before that is looked at (s)
_WAIT_SLICE = 5.0


class CommandTimeout(RemoteCommandError):
    """A remote command did not finish within its timeout and was killed."""


class RemoteProcess:
    """A command started by ``SshClient.open_exec``: stream stdin and stdout.

    ``write``/``close_stdin`` feed the command (which must not end before
    what it is sent arrives), ``read`` returns stdout chunks
    (b"" at end), ``wait`` drains the rest and returns a ``CommandResult``
    (its ``stderr`` holds everything the command wrote there). stderr is
    collected on ``write``, ``read`` and ``wait``.
    """

    def __init__(self, client: SshClient, channel: paramiko.Channel, command: str) -> None:
        self._client = client
        self.channel = channel
        self.command = command
        self._stderr = bytearray()

    def _drain_stderr(self) -> None:
        while self.channel.recv_stderr_ready():
            self._stderr += self.channel.recv_stderr(READ_CHUNK)

    def write(self, data: bytes) -> None:
        """Send data to the command's stdin."""
        try:
            self.channel.sendall(data)
        except Exception as err:
            raise self._client._error(err, "write") from err
        self._drain_stderr()

    def close_stdin(self) -> None:
        """Send the end of the command's stdin.

        Only to a command that waits for it (see "Sending" above): one that
        may have ended could lose the whole connection to it.
        """
        if self.channel.closed:
            return
        try:
            self.channel.shutdown_write()
        except Exception as err:
            raise self._client._error(err, "write") from err

    def read(self, size: int = READ_CHUNK) -> bytes:
        """Read up to ``size`` bytes of stdout; b"" at end of output.

        stderr is drained while waiting, so a chatty stderr cannot stall the
        channel's flow-control window.
        """
        channel = self.channel
        try:
            while True:
                self._drain_stderr()
                if channel.recv_ready():
                    return bytes(channel.recv(size))
                if channel.eof_received or channel.closed:
                    return bytes(channel.recv(size)) if channel.recv_ready() else b""
                if not _readable(channel, _WAIT_SLICE):
                    _check_answering(channel, self._client.where, self._client.node_name)
        except NodeUnreachable:
            raise
        except Exception as err:
            raise self._client._error(err, "read") from err

    @property
    def stderr(self) -> str:
        """stderr received so far."""
        self._drain_stderr()
        return self._stderr.decode("utf-8", "replace")

    def wait(self, timeout: float | None = None, check: bool = True) -> CommandResult:
        """Wait for the command to exit; remaining stdout is returned in the result."""
        deadline = None if timeout is None else time.monotonic() + timeout
        out, err = collect(self.channel, deadline, self._client.where, self._client.node_name)
        self._stderr += err
        if out is None:
            self.channel.close()
            raise CommandTimeout(
                f"Command '{self.command}' on {self._client.where} did not finish "
                f"within {timeout} seconds",
                self._client.node_name,
            )
        status = self.channel.recv_exit_status()
        self.channel.close()
        result = CommandResult(
            status, out.decode("utf-8", "replace"), self._stderr.decode("utf-8", "replace")
        )
        if check and result.failed:
            raise self._client._command_failed(self.command, result)
        return result

    def close(self) -> None:
        """Close the channel (the remote command sees EOF/SIGPIPE)."""
        self.channel.close()
        self._client.channel_closed()

    def __enter__(self) -> RemoteProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _readable(channel: paramiko.Channel, timeout: float) -> bool:
    """Whether ``channel`` has data (or its end) within ``timeout`` seconds.

    poll, not select: the master daemon holding many files (every lock of a
    level) may have the channel's pipe past select's limit of 1024.
    """
    poller = select.poll()
    poller.register(channel, select.POLLIN)
    return bool(poller.poll(timeout * 1000))


def _check_answering(channel: paramiko.Channel, where: str, node: str | None) -> None:
    """NodeUnreachable once the node has left our data unanswered for
    ``STREAM_UNANSWERED_LIMIT`` seconds (TCP alone would retry for some 15 minutes)."""
    transport = channel.get_transport()
    if transport is None:
        return
    waited = unanswered_for(transport.sock)
    if waited >= STREAM_UNANSWERED_LIMIT:
        raise NodeUnreachable(
            f"{where} has left our data unanswered for {waited:.0f} s: its link is gone", node
        )


def collect(
    channel: paramiko.Channel, deadline: float | None, where: str, node: str | None
) -> tuple[bytes | None, bytes]:
    """Read stdout/stderr until EOF and the exit status; stdout None on deadline.

    sshd may send the exit status before the last output, so the end is the
    remote EOF (or channel close), not the exit status. NodeUnreachable when
    the node stops answering (``_check_answering``, ``where``: its address).
    """
    out = bytearray()
    err = bytearray()
    while True:
        while channel.recv_ready():
            out += channel.recv(READ_CHUNK)
        while channel.recv_stderr_ready():
            err += channel.recv_stderr(READ_CHUNK)
        ended = channel.eof_received or channel.closed
        if ended and not (channel.recv_ready() or channel.recv_stderr_ready()):
            break
        wait = _WAIT_SLICE if deadline is None else deadline - time.monotonic()
        if wait <= 0:
            return None, bytes(err)
        if not _readable(channel, min(wait, _WAIT_SLICE)):
            _check_answering(channel, where, node)
    while not channel.exit_status_ready():
        wait = _WAIT_SLICE if deadline is None else deadline - time.monotonic()
        if wait <= 0:
            return None, bytes(err)
        if not channel.status_event.wait(min(wait, _WAIT_SLICE)):
            _check_answering(channel, where, node)
    return bytes(out), bytes(err)


def with_input(remote: str, data: bytes | str | None) -> str:
    """The command line ``remote`` as sent, to be fed ``data`` (see "Sending" above).

    Without input its stdin is ``/dev/null``; with input, the command (in a
    subshell: an ``exec`` in it must not skip the rest) reads what it wants
    of it, ``cat`` reads the rest up to the end the client sends, and the
    command's exit status is the shell's.
    """
    if not data:
        return f"exec </dev/null; {remote}"
    return f"( {remote}\n); s=$?; cat >/dev/null; exit $s"


def feed_input(channel: paramiko.Channel, data: bytes | str | None) -> threading.Thread | None:
    """Send ``data`` and its end to a command run ``with_input`` (in a thread, so big
    input cannot deadlock with output); without input nothing is sent."""
    if not data:
        return None
    payload = data.encode() if isinstance(data, str) else data

    def feed() -> None:
        try:
            channel.sendall(payload)
            channel.shutdown_write()
        except (OSError, EOFError, paramiko.SSHException):
            pass  # the command exited early; its status tells the story

    thread = threading.Thread(target=feed, name="ssh-stdin", daemon=True)
    thread.start()
    return thread
