"""SSH transport to the nodes, on paramiko.

``SshClient`` runs commands, moves files and streams data over one paramiko
transport per (host, port, user); channels are opened per call, so a client
can be shared by threads. Host keys are checked against the cluster's
known_hosts file only: an unknown key or a changed key raises
``HostKeyError`` (paramiko's ``RejectPolicy``; keys are never accepted
automatically). The cluster adds a node's key with ``known_hosts.known_hosts_add``
after the operator confirmed the fingerprint of the key ``fetch_host_key`` returned.

A connection is kept between calls. One the node has ended without a word
(it rebooted) is found dead before use, or by the call that meets its
reset, and replaced (``SshClient._open_session``); the kernel's account of
the connection (``tcpinfo``) tells one whose node no longer answers.

All paramiko and socket exceptions are turned into ganeti_lv errors in one
place, ``ssh_errors.map_error`` (and a channel's open that ran out of time,
which only its connection tells apart, in ``_not_opened``):

- connect refused, timed out, host unreachable, auth failure -> ``NodeUnreachable``
- a channel that does not open within ``connect_timeout``     -> ``NodeUnreachable``
- unknown or changed host key                                -> ``HostKeyError``
- a command exiting non-zero (``check=True``)                -> ``RemoteCommandError``
- a command running past its timeout                         -> ``CommandTimeout``
- SFTP and channel failures                                  -> ``NodeError``

A command's channel (its streams, its end, a node that stops answering
while it runs) is ``ssh_channel``'s.

Nothing is sent to a command that may have ended: sshd would end the whole
connection (see ``ssh_channel``, "Sending").
"""

from __future__ import annotations

import contextlib
import os
import shlex
import socket
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import TypeVar

import paramiko

from ganeti_lv import retry
from ganeti_lv.errors import (
    HostKeyError,
    NodeError,
    NodeUnreachable,
    RemoteCommandError,
)
from ganeti_lv.node.known_hosts import DEFAULT_PORT
from ganeti_lv.node.ssh_channel import (
    CommandTimeout,
    RemoteProcess,
    collect,
    feed_input,
    with_input,
)
from ganeti_lv.node.ssh_errors import RejectUnknownPolicy, endpoint, map_error
from ganeti_lv.node.tcpinfo import unanswered_for
from ganeti_lv.node.transport import CommandResult

T = TypeVar("T")

DEFAULT_USER = "root"
DEFAULT_CONNECT_TIMEOUT = 10.0
# longest wait (s) for the answer to one SFTP request (a stat, a listing, a file part)
DEFAULT_SFTP_TIMEOUT = 60.0
# Extra time the remote ``timeout`` wrapper gets to kill the command and
# report before the local side gives up and closes the channel.
TIMEOUT_KILL_GRACE = 2.0
TIMEOUT_LOCAL_GRACE = 5.0
# Exit statuses of coreutils timeout: timed out (TERM) / had to KILL.
_TIMEOUT_STATUSES = (124, 137)
# how a server refuses one more session on a connection (``SshClient._full``)
_SESSION_LIMIT_CODES = (
    paramiko.common.OPEN_FAILED_CONNECT_FAILED,
    paramiko.common.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED,
)

Command = str | Sequence[str]


# -- helpers -----------------------------------------------------------------


def quote_command(cmd: Command) -> str:
    """A command line: strings pass unchanged, argv lists are shlex-quoted."""
    if isinstance(cmd, str):
        return cmd
    if not cmd:
        raise ValueError("empty command")
    return " ".join(shlex.quote(str(arg)) for arg in cmd)


def fetch_host_key(
    host: str, port: int = DEFAULT_PORT, timeout: float = DEFAULT_CONNECT_TIMEOUT
) -> str:
    """Return the server's host key as "<keytype> <base64>" without authenticating.

    Used by ``node add``: the operator confirms the key (see
    ``known_hosts.key_fingerprint``) before it goes into the cluster's known_hosts.
    """
    sock: socket.socket | None = None
    transport: paramiko.Transport | None = None
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
        transport = paramiko.Transport(sock)
        transport.banner_timeout = timeout
        transport.start_client(timeout=timeout)
        key = transport.get_remote_server_key()
        return f"{key.get_name()} {key.get_base64()}"
    except Exception as err:
        raise map_error(err, host, port, "connect", None) from err
    finally:
        if transport is not None:
            transport.close()
        elif sock is not None:
            sock.close()


def _open_socket(host: str, port: int, timeout: float) -> socket.socket:
    """A TCP connection to host:port with Nagle's algorithm off.

    SSH sends small packets and waits for each answer; with Nagle on, a
    packet written while an earlier one is unacknowledged waits for the
    peer's delayed ACK (40 ms on Linux): about 40 ms per command and
    several per connection handshake.

    No TCP keepalive with a short TCP_USER_TIMEOUT: tried, a test run on the
    local cluster lost an SFTP session in its negotiation on a node whose
    link had been cut and restored shortly before. The kernel counts that
    timeout from the last packet received, so a connection that sat idle
    through a cut of some 10 s can be reset after the link is back.
    """
    sock = socket.create_connection((host, port), timeout=timeout)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        sock.close()
        raise
    return sock


def _remove_temp_dirs(sftp: paramiko.SFTPClient, dirs: list[str], name: str) -> None:
    """Remove the temp directories ``dirs`` of ``put_bytes`` (each may still hold
    its file ``name``) from the node; those that could not be stay in ``dirs``.

    A request without answer (TimeoutError) is raised: its session must be
    dropped, nothing more asked of it.
    """
    for private in list(dirs):
        try:
            with contextlib.suppress(FileNotFoundError):
                sftp.remove(os.path.join(private, name))
            with contextlib.suppress(FileNotFoundError):
                sftp.rmdir(private)
        except TimeoutError:
            raise
        except (OSError, EOFError, paramiko.SSHException):
            continue  # a session that ended, a refusal: left for later
        dirs.remove(private)


# -- the client --------------------------------------------------------------


class SshClient:
    """SSH connection to one node (see the module docstring).

    ``known_hosts_file`` is the only source of trusted host keys; without it
    every host key is unknown and rejected. The connection is opened lazily
    (or by ``connect()``), retried under ``retry.ssh_connect_policy``, and
    re-opened if the transport died, also when that is only found out by the
    call that meets it (``_open_session``).
    """

    def __init__(
        self,
        host: str,
        port: int = DEFAULT_PORT,
        user: str = DEFAULT_USER,
        key_file: str | None = None,
        known_hosts_file: str | None = None,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        node_name: str | None = None,
        connect_attempts: int = retry.SSH_CONNECT_ATTEMPTS,
        sleep: Callable[[float], None] = time.sleep,
        sftp_timeout: float = DEFAULT_SFTP_TIMEOUT,
    ) -> None:
        self.host = host
        self.sftp_timeout = sftp_timeout
        self.port = port
        self.user = user
        self.key_file = key_file
        self.known_hosts_file = known_hosts_file
        self.connect_timeout = connect_timeout
        self.node_name = node_name or host
        self._connect_attempts = connect_attempts
        self._sleep = sleep
        self._client: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None
        # connections given up as dead while channels of ours were still open
        # on them: closed once those have ended (or the connection has)
        self._retired: list[paramiko.SSHClient] = []
        self._channels: weakref.WeakSet[paramiko.Channel] = weakref.WeakSet()
        # let go of by its owner (``release``): a job still holding it may use it,
        # but a connection it opens goes once nothing of ours uses it
        self._released = False
        self._opening = 0  # channels being opened (not in ``_channels`` yet)
        self._opening_lock = threading.Lock()
        self._lock = threading.RLock()
        self._connect_failures = retry.SharedFailure()
        self._sftp_lock = threading.Lock()

    @property
    def where(self) -> str:
        """host:port, for messages."""
        return endpoint(self.host, self.port)

    def _error(self, err: BaseException, action: str) -> NodeError:
        return map_error(err, self.host, self.port, action, self.node_name)

    # -- connection ------------------------------------------------------
    def _connect_once(self) -> paramiko.SSHClient:
        client = paramiko.SSHClient()
        if self.known_hosts_file and os.path.exists(self.known_hosts_file):
            try:
                client.load_host_keys(self.known_hosts_file)
            except (OSError, paramiko.SSHException) as err:
                raise HostKeyError(
                    f"Cannot read known_hosts {self.known_hosts_file}: {err}", self.node_name
                ) from err
        client.set_missing_host_key_policy(RejectUnknownPolicy())
        try:
            sock = _open_socket(self.host, self.port, self.connect_timeout)
        except Exception as err:
            client.close()
            raise self._error(err, "connect") from err
        try:
            client.connect(
                self.host,
                port=self.port,
                sock=sock,
                username=self.user,
                key_filename=self.key_file,
                timeout=self.connect_timeout,
                banner_timeout=self.connect_timeout,
                auth_timeout=self.connect_timeout,
                look_for_keys=self.key_file is None,
                allow_agent=False,
            )
        except Exception as err:
            client.close()
            sock.close()
            raise self._error(err, "connect") from err
        transport = client.get_transport()
        if transport is not None:
            transport.set_keepalive(15)
        return client

    def connect(self) -> SshClient:
        """Open the connection now (otherwise it is opened on first use)."""
        self._transport()
        return self

    @property
    def connected(self) -> bool:
        """True while the connection is open and not dead (the next call need not connect)."""
        client = self._client
        transport = client.get_transport() if client is not None else None
        return transport is not None and not self._dead(transport)

    def warm_up(self) -> bool:
        """Open the connection and its first session now; False if that failed.

        For a caller that will use the node soon and has other work to do
        meanwhile (a background thread): the handshake and the node's
        set-up of the first session (~50 ms) then overlap that work. One
        attempt, no retry, errors dropped: the next real call connects
        again under the retry policy and reports what is wrong (the host
        key is checked the same way either way). A connection already open
        is left alone; a dead one (``_dead``) is replaced.
        """
        if self.connected:
            return True
        try:
            with self._lock:
                if not self.connected:
                    self._retire()
                    self._client = self._connect_once()
            self.run(["true"])
        except Exception:  # noqa: BLE001 - a hint only; the real call reports
            return False
        return True

    def _transport(self) -> tuple[paramiko.Transport, bool]:
        """The open transport and whether it was open before this call.

        A kept one that is dead (``_dead``) is replaced by a new connection.
        """
        mark = self._connect_failures.mark()
        with self._lock:
            if self._retired:
                self._close_retired()
            if self._client is not None:
                transport = self._client.get_transport()
                if transport is not None and not self._dead(transport):
                    return transport, True
                self._retire()
            # a caller that waited while an attempt failed gets its failure
            self._connect_failures.check(mark)
            policy = retry.ssh_connect_policy(self._connect_attempts, self._sleep)
            self._client = self._connect_failures.attempt(
                lambda: retry.call_with_retry(policy, self._connect_once)
            )
            transport = self._client.get_transport()
            assert transport is not None
            return transport, False

    def _open_session(self, action: str) -> paramiko.Channel:
        """A new channel; when the kept connection is found dead, on a new connection.

        A node that rebooted answers a kept connection's first packet with a
        reset, or, when TCP was retransmitting to it meanwhile, only the next
        retransmission does, maybe minutes later. So a kept connection that
        is closed, or on which the node has left data unanswered for
        ``connect_timeout`` seconds (``_dead``), is replaced before use; and
        when the channel does not open on a kept connection that has closed
        meanwhile, it is opened once more on a new one (nothing ran on the
        node). A node that does not answer or only acknowledges (cut off, a
        stopped sshd) fails the call after the channel's wait (bounded:
        paramiko's own ``open_sftp`` waits up to an hour). A live connection
        whose sshd refuses one more session (``_full``) is put aside as well:
        its channels go on, and the new one opens on a new connection.
        """
        # counted apart from ``_lock``: a caller waiting here for another's connect
        # must still share that connect's failure (``_transport``'s mark)
        with self._opening_lock:
            self._opening += 1  # a released client keeps the connection meanwhile
        try:
            transport, kept = self._transport()
            try:
                channel = transport.open_session(timeout=self.connect_timeout)
            except Exception as err:
                full = self._full(err, transport)
                if not (full or (kept and self._dead(transport))):
                    raise self._not_opened(err, transport, action) from err
                self._retire(transport, keep_sftp=full)
                transport, _ = self._transport()
                try:
                    channel = transport.open_session(timeout=self.connect_timeout)
                except Exception as err:
                    raise self._not_opened(err, transport, action) from err
            with self._lock:
                self._channels.add(channel)
            return channel
        finally:
            with self._opening_lock:
                self._opening -= 1

    def _not_opened(self, err: Exception, transport: paramiko.Transport, action: str) -> NodeError:
        """The error of a channel that did not open on ``transport``.

        paramiko's plain ``SSHException`` on a connection still up is its
        wait running out (a refusal is a ``ChannelException``, a connection
        that ended is no longer active): the node did not answer within
        ``connect_timeout`` seconds, so it is unreachable, as when a connect
        gets no answer or a command's node leaves our data unanswered.
        """
        timed_out = (
            isinstance(err, paramiko.SSHException)
            and not isinstance(err, paramiko.ChannelException)
            and transport.is_active()
        )
        if not timed_out:
            return self._error(err, action)
        return self._no_answer(action, NodeUnreachable, " (no channel opened)")

    def _full(self, err: Exception, transport: paramiko.Transport) -> bool:
        """True when sshd refused a session on ``transport`` while channels of ours are open
        on it: its ``MaxSessions`` (10 by default) is reached, not a refusal of every session.

        OpenSSH says "connect failed" then; other servers may say "prohibited".
        """
        refused = isinstance(err, paramiko.ChannelException) and err.code in _SESSION_LIMIT_CODES
        with self._lock:
            return refused and any(
                ch.get_transport() is transport and not ch.closed for ch in self._channels
            )

    def _dead(self, transport: paramiko.Transport) -> bool:
        """True when ``transport`` is closed or its node leaves our data unanswered."""
        return not transport.is_active() or unanswered_for(transport.sock) >= self.connect_timeout

    def _retire(
        self, transport: paramiko.Transport | None = None, *, keep_sftp: bool = False
    ) -> None:
        """Put the connection (if ``transport``'s) aside; closed once no channel of ours uses it.

        One judged dead may only be stalled (a link down for a while): a disk
        copy streaming over it ends by itself, as it would have anyway. A full
        one (``keep_sftp``) keeps serving its SFTP session, which may be in use.
        """
        with self._lock:
            current = self._client
            if current is not None and transport in (None, current.get_transport()):
                if not keep_sftp:
                    self._drop_sftp()
                self._retired.append(current)
                self._client = None
            self._close_retired()

    def _close_retired(self) -> None:
        """Close the retired connections that no open channel of ours uses."""
        open_channels = [ch for ch in list(self._channels) if not ch.closed]
        kept = []
        for client in self._retired:
            t = client.get_transport()
            if (
                t is not None
                and t.is_active()
                and any(ch.get_transport() is t for ch in open_channels)
            ):
                kept.append(client)
            else:
                client.close()
        self._retired = kept

    def _drop_sftp(self) -> None:
        if self._sftp is not None:
            with contextlib.suppress(Exception):  # closing a dead channel
                self._sftp.close()
            self._sftp = None

    def _drop(self) -> None:
        self._drop_sftp()
        if self._client is not None:
            self._client.close()
            self._client = None

    def close(self) -> None:
        """Close the connection; the client may be used again (it reconnects)."""
        with self._lock:
            self._drop()
            for client in self._retired:
                client.close()
            self._retired = []

    def release(self) -> None:
        """Let go of the connection: closed now, or once the channels of ours on it have ended.

        For a caller that stops using this client while other threads may
        still stream over it (a disk copy): ``close`` would cut them off.
        Those threads may still call it: a connection it opens for them is
        closed in turn once their channels have ended (nobody else would).
        """
        self._released = True
        self._retire()

    def channel_closed(self) -> None:
        """A channel of ours was closed: close the retired connections nothing uses now
        (after a release, the current one too)."""
        if not (self._released or self._retired):
            return  # nothing to close; the lock may be held by another job's reconnect
        with self._lock:
            in_use = self._opening or any(not ch.closed for ch in list(self._channels))
            if self._released and not in_use:
                self._retire()
            elif self._retired:
                self._close_retired()

    def __enter__(self) -> SshClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SshClient({self.user}@{self.where})"

    def _open_channel(self, command: str) -> paramiko.Channel:
        channel = self._open_session("exec")
        self._request(channel, "exec", lambda: channel.exec_command(command))
        return channel

    def _request(self, channel: paramiko.Channel, action: str, send: Callable[[], None]) -> None:
        """Send a channel's request (exec, subsystem) and wait for its answer, at most
        ``connect_timeout`` seconds: paramiko would wait for ever (a node cut off
        right after the channel opened, an sshd stuck setting up the session)."""
        gave_up = threading.Event()

        def give_up() -> None:
            gave_up.set()
            channel.close()  # ends the wait

        unanswered = threading.Timer(self.connect_timeout, give_up)
        unanswered.daemon = True
        unanswered.start()
        try:
            send()
        except Exception as err:
            channel.close()
            if gave_up.is_set():
                raise self._no_answer(action) from err
            raise self._error(err, action) from err
        finally:
            unanswered.cancel()
        if gave_up.is_set():  # answered as the timer closed the channel: closed all the same
            raise self._no_answer(action)

    def _no_answer(
        self, action: str, error: type[NodeError] = NodeError, detail: str = ""
    ) -> NodeError:
        """``error`` saying that ``action`` got no answer within the connect timeout."""
        return error(
            f"SSH {action} on {self.where}: no answer within {self.connect_timeout:g} s{detail}",
            self.node_name,
        )

    # -- commands --------------------------------------------------------
    def _command_failed(self, command: str, result: CommandResult) -> RemoteCommandError:
        detail = (result.stderr.strip() or result.stdout.strip())[-2000:]
        return RemoteCommandError(
            f"Command '{command}' on {self.node_name} failed with exit status "
            f"{result.exit_status}" + (f": {detail}" if detail else ""),
            self.node_name,
            exit_status=result.exit_status,
            output=result.output,
        )

    def run(
        self,
        cmd: Command,
        timeout: float | None = None,
        input: bytes | str | None = None,  # noqa: A002 - mirrors subprocess.run
        check: bool = True,
    ) -> CommandResult:
        """Run a command on the node and return its exit status and output.

        ``cmd`` is a shell string or an argv list (each argument shlex-quoted).
        With ``timeout`` the command runs under coreutils ``timeout`` in its own
        process group, which is killed when time is up; ``CommandTimeout`` is
        raised. A non-zero exit raises ``RemoteCommandError`` when ``check``.
        Without ``input`` the command's stdin is ``/dev/null``; with it, what
        the command leaves of it is read after it (``ssh_channel.with_input``).
        """
        command = quote_command(cmd)
        remote = command
        if timeout is not None:
            remote = (
                f"timeout -k {TIMEOUT_KILL_GRACE:g} {max(timeout, 0.001):g} "
                f"sh -c {shlex.quote(command)}"
            )
        channel = self._open_channel(with_input(remote, input))
        # the command's time counts from its start on the node, not from the wait for
        # the connection (it may wait for another job's SFTP set-up on this client)
        started = time.monotonic()
        deadline = None
        if timeout is not None:
            deadline = started + timeout + TIMEOUT_KILL_GRACE + TIMEOUT_LOCAL_GRACE
        feeder = None
        try:
            feeder = feed_input(channel, input)
            try:
                out, err = collect(channel, deadline, self.where, self.node_name)
            except NodeUnreachable:
                raise
            except Exception as exc:
                raise self._error(exc, "run") from exc
            if out is None:
                raise self._timed_out(command, timeout)
            status = channel.recv_exit_status()
        finally:
            if feeder is not None:  # its last message out before our close (ssh_channel)
                feeder.join(timeout=1.0)
            channel.close()
            self.channel_closed()
        result = CommandResult(
            status, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")
        )
        if (
            timeout is not None
            and status in _TIMEOUT_STATUSES
            and time.monotonic() - started >= timeout
        ):
            raise self._timed_out(command, timeout, result)
        if check and result.failed:
            raise self._command_failed(command, result)
        return result

    def _timed_out(
        self, command: str, timeout: float | None, result: CommandResult | None = None
    ) -> CommandTimeout:
        return CommandTimeout(
            f"Command '{command}' on {self.node_name} timed out after {timeout} seconds "
            "and was killed",
            self.node_name,
            exit_status=None if result is None else result.exit_status,
            output="" if result is None else result.output,
        )

    def open_exec(self, cmd: Command) -> RemoteProcess:
        """Start a command and return a ``RemoteProcess`` to stream data in and out."""
        command = quote_command(cmd)
        return RemoteProcess(self, self._open_channel(command), command)

    # -- files -----------------------------------------------------------
    def _sftp_client(self) -> tuple[paramiko.SFTPClient, bool]:
        """The client's SFTP session and whether it was open before this call."""
        with self._lock:
            # the session is the current connection's, or one's put aside as full (it is
            # used while that connection lives); a connection retired as dead drops it
            if self._sftp is not None and not self._dead(self._sftp.sock.get_transport()):
                return self._sftp, True
            channel = self._open_session("sftp open")
            try:
                # a request on a hung path (a stuck NFS mount) must not hold the
                # node's one session, and every job waiting for it, for ever;
                # the SFTP handshake below is the first such request
                channel.settimeout(self.sftp_timeout)
                self._request(channel, "sftp open", lambda: channel.invoke_subsystem("sftp"))
                self._sftp = paramiko.SFTPClient(channel)
            except NodeError:
                raise
            except Exception as err:
                channel.close()
                raise self._error(err, "sftp open") from err
            return self._sftp, False

    def _with_sftp(self, action: str, fn: Callable[[paramiko.SFTPClient], T]) -> T:
        """``fn(sftp)`` on the client's SFTP session, one thread at a time.

        A request without an answer within ``sftp_timeout`` seconds drops the
        session (a late answer must not be taken for the next request's) and
        is a NodeError; the next request opens a new session. A request that
        failed otherwise on a kept session whose connection turned out dead
        (see ``_open_session``) is made once more on a new connection, and one
        on a kept session the server ended, on a new session: every SFTP
        action here may be repeated.
        """
        with self._sftp_lock:  # one SFTP session per client, used by one thread at a time
            try:
                return self._sftp_call(action, fn)
            finally:
                if self._released:  # its session goes now, its connection once unused
                    with self._lock:
                        self._drop_sftp()
                    self.channel_closed()

    def _sftp_call(self, action: str, fn: Callable[[paramiko.SFTPClient], T]) -> T:
        """``_with_sftp``'s request, made again as it says (under its lock)."""
        while True:
            sftp, kept = self._sftp_client()
            transport = sftp.sock.get_transport()
            try:
                return fn(sftp)
            except TimeoutError as err:
                self._drop_sftp()
                raise NodeError(
                    f"sftp {action} on {self.where}: no answer within {self.sftp_timeout:g} s",
                    self.node_name,
                ) from err
            except Exception as err:
                # the server may have ended the session (its sftp-server gone, an
                # idle timeout) on a live connection: a new session, once
                ended = sftp.sock.closed or sftp.sock.eof_received
                if ended or not isinstance(err, OSError | paramiko.sftp.SFTPError):
                    self._drop_sftp()
                if kept and ended and not self._dead(transport):
                    continue
                if not (kept and self._dead(transport)):
                    raise self._error(err, f"sftp {action}") from err
            # the session opened next is not kept: this ends
            with self._lock:
                self._drop_sftp()  # also one on a connection put aside before
            self._retire(transport)

    def put_bytes(self, data: bytes, path: str, mode: int = 0o644) -> None:
        """Write ``data`` to ``path`` on the node atomically (temp file + rename).

        The temp file is written in a directory of its own that only the
        node's user may enter: SFTP creates a file with the server's default
        mode, and one opened by another user before its ``chmod`` (a private
        key's) could be read through that open file later. An attempt whose
        session ended leaves that directory behind: it is removed by the next
        attempt, or after a put that failed on a connection still up, on a
        new session (best effort: the put's own error is the one raised).
        """
        directory, base = os.path.split(path)
        left: list[str] = []  # temp directories of attempts that could not remove theirs

        def put(sftp: paramiko.SFTPClient) -> None:
            _remove_temp_dirs(sftp, left, base)
            # named per attempt: a repeated one (a new session) finds no directory of its own
            private = os.path.join(directory, f".{base}.tmp-{uuid.uuid4().hex[:8]}")
            tmp = os.path.join(private, base)
            sftp.mkdir(private, 0o700)
            left.append(private)
            try:
                with sftp.open(tmp, "wb") as fh:
                    fh.chmod(mode)
                    fh.set_pipelined(True)
                    fh.write(data)
                sftp.posix_rename(tmp, path)
            except TimeoutError:
                raise  # the session is dropped unanswered: its directory is removed on a new one
            except BaseException:
                self._remove_or_drop(sftp, left, base)
                raise
            self._remove_or_drop(sftp, left, base)

        try:
            self._with_sftp(f"put {path}", put)
        except NodeError:
            if left and self.connected:  # a node gone is not connected to again for this
                with contextlib.suppress(NodeError):
                    self._with_sftp(
                        f"put {path} (removing its temp directory)",
                        lambda sftp: _remove_temp_dirs(sftp, left, base),
                    )
            raise

    def _remove_or_drop(self, sftp: paramiko.SFTPClient, dirs: list[str], name: str) -> None:
        """``_remove_temp_dirs`` on the session in use; one of its requests left
        unanswered drops the session (the directories left stay in ``dirs``)."""
        try:
            _remove_temp_dirs(sftp, dirs, name)
        except TimeoutError:
            self._drop_sftp()

    def get_bytes(self, path: str) -> bytes:
        """Read a whole file from the node (NodeError with ECODE_NOENT if missing)."""

        def get(sftp: paramiko.SFTPClient) -> bytes:
            with sftp.open(path, "rb") as fh:
                fh.prefetch()
                return bytes(fh.read())

        return self._with_sftp(f"get {path}", get)

    def listdir(self, path: str, missing_ok: bool = False) -> list[str]:
        """Names in the node's directory ``path`` (without . and ..), unsorted.

        One SFTP request on the client's open session: no process is started
        on the node. A missing ``path`` (or one that is not a directory) is
        NodeError with ECODE_NOENT, or ``[]`` with ``missing_ok``.
        """

        def names(sftp: paramiko.SFTPClient) -> list[str]:
            try:
                return sftp.listdir(path)
            except FileNotFoundError:
                if missing_ok:
                    return []
                raise

        return self._with_sftp(f"listdir {path}", names)

    def exists(self, path: str) -> bool:
        """True if ``path`` exists on the node."""

        def stat(sftp: paramiko.SFTPClient) -> bool:
            try:
                sftp.stat(path)
            except FileNotFoundError:
                return False
            return True

        return self._with_sftp(f"stat {path}", stat)
