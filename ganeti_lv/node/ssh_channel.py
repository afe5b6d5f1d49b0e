"""A command's channel on an SSH connection: its streams, its end, a node that stops answering.

``RemoteProcess`` streams a command's stdin and stdout (a disk copy's
helper); ``collect`` reads a command's output to its end (``SshClient.run``).
Both wait in slices of ``_WAIT_SLICE`` seconds and look, after a slice
without a byte, whether the node still answers: once it has left our data
(keepalives at least, every 15 s) unanswered for ``STREAM_UNANSWERED_LIMIT``
seconds, the wait ends with ``NodeUnreachable``; TCP alone would retry for
some 15 minutes.
"""

from __future__ import annotations

import select
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

        Only to a command that waits for it (see ``ssh``'s module docstring):
        one that may have ended could lose the whole connection to it.
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
