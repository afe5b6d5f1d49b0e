"""The client of the master daemon's protocol (``ganeti_lv.master.protocol``).

The one client of the daemon: ``ganeti_lv.Client`` (and so ``gnt-lv``)
uses it whenever a daemon runs for the data dir. ``connect`` says whether
one runs; a ``MasterClient`` then submits jobs and follows them (their
records, their results or typed error), submits without waiting, follows a
job by its id, cancels one, runs a query without a job (``query``), and
asks for the job log and the daemon's version. Each request is a connection
of its own. A daemon that does not take or answer a request within
ANSWER_TIMEOUT is an OpExecError (a job followed may be silent for as long
as it runs).

Following a job, a cancel request (``Cancellation`` set from a signal
handler or another thread) is passed on to the daemon, which stops the job
safely; so is an interruption (KeyboardInterrupt) while waiting, which is
then raised here. A job that ended before its cancel could be sent (the
daemon sent its end and closed) gives its outcome, as if none was asked.
A client that goes away leaves its job running.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import socket
import struct
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ganeti_lv import errors, paths
from ganeti_lv.cancel import Cancellation
from ganeti_lv.master import protocol
from ganeti_lv.master.protocol import Message, RecordFn
from ganeti_lv.opcodes import OpCode

if TYPE_CHECKING:
    from ganeti_lv.master.jobs import Job

# How often a waiting client looks at its cancel request (s).
CANCEL_POLL = 0.1

# How long a client waits for the daemon to take a request and to answer it
# (s), as Ganeti's clients wait for their master daemon: a daemon that is
# stopped or stuck fails its clients instead of hanging them. Each chunk of
# a long answer has that long. A followed job's messages have no limit: a
# job may be silent for as long as it waits or works, and the daemon sends
# nothing meanwhile.
ANSWER_TIMEOUT = 180.0

# How long a client waits for the daemon to take its connection (s).
CONNECT_TIMEOUT = 5.0

# connect's errors that mean no daemon listens: no socket file (any more), or
# one left behind by a daemon that is gone (also a file that is no socket)
_NO_DAEMON = frozenset({errno.ENOENT, errno.ECONNREFUSED})


def connect(data_dir: str | None = None, timeout: float = CONNECT_TIMEOUT) -> MasterClient | None:
    """A client of the data dir's master daemon, or None when none runs there.

    A daemon that runs but takes no connection within ``timeout`` seconds
    is an OpExecError, not None: its callers would run the job in their own
    process, beside the daemon.
    """
    path = paths.masterd_socket(paths.data_dir(data_dir))
    if not os.path.exists(path):
        return None
    sock = _open(path, timeout)
    return None if sock is None else MasterClient(path, sock)


def _open(path: str, timeout: float) -> socket.socket | None:
    """A connection to the daemon's socket ``path``; None when no daemon listens there.

    A connect with a timeout fails at once (EAGAIN) while the daemon's queue
    of connections is full (a burst of clients): it is tried again, pausing
    a little longer each time, for up to ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    pause = 0.005
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(path)
        except OSError as err:
            sock.close()
            if err.errno in _NO_DAEMON:
                return None
            if err.errno != errno.EAGAIN:
                raise errors.OpExecError(
                    f"Cannot reach the master daemon at {path}: {err}", errors.ECODE_ENVIRON
                ) from err
            left = deadline - time.monotonic()
            if left <= 0:
                raise errors.OpExecError(
                    f"The master daemon at {path} took no connection within {timeout:g} s"
                    " (its queue of connections stayed full)",
                    errors.ECODE_TEMP_NORES,
                ) from err
            time.sleep(min(pause, left))
            pause = min(2 * pause, 0.1)
        else:
            return sock


class MasterClient:
    """Requests to the master daemon listening on ``path``.

    ``sock``, a connection already open (``connect``), serves the first
    request. ``lock_timeout`` is what ``submit`` passes with its job.
    """

    def __init__(
        self, path: str, sock: socket.socket | None = None, lock_timeout: float | None = None
    ) -> None:
        self.path = path
        self._sock = sock
        self.lock_timeout = lock_timeout

    # -------------------------------------------------------------- jobs

    def submit(
        self,
        op: OpCode,
        feedback_fn: Callable[[str], None] | None = None,
        cancel: Cancellation | None = None,
    ) -> Any:
        """Run ``op`` as a job of the daemon; its result, or its typed error raised here."""
        on_record = protocol.text_of_records(feedback_fn)
        return self.submit_job([op], on_record, cancel, self.lock_timeout)[0]

    def submit_job(
        self,
        ops: Sequence[OpCode],
        on_record: RecordFn | None = None,
        cancel: Cancellation | None = None,
        lock_timeout: float | None = None,
        on_job_id: Callable[[int], None] | None = None,
    ) -> list[Any]:
        """Run a job of ``ops`` in the daemon, following it; every opcode's result.

        ``on_record`` gets the job's records as they come (one that fails is
        dropped, the job goes on); ``cancel``, when set, asks the daemon to stop
        the job safely; ``on_job_id`` gets the job's id when the daemon accepts
        it (when it fails, the job is asked to stop).
        """
        request = protocol.submit_request(list(ops), lock_timeout, wait=True)
        return self._follow(request, on_record, cancel, on_job_id, accepted=True)

    def enqueue(self, ops: Sequence[OpCode], lock_timeout: float | None = None) -> int:
        """Start a job of ``ops`` in the daemon without waiting for it; its id."""
        answer = self._ask(protocol.submit_request(list(ops), lock_timeout, wait=False))
        return int(answer["job_id"])

    def watch(
        self,
        job_id: int,
        on_record: RecordFn | None = None,
        cancel: Cancellation | None = None,
    ) -> list[Any]:
        """Follow job ``job_id`` from its start to its end; every opcode's result."""
        return self._follow(protocol.request(protocol.WATCH, job_id=job_id), on_record, cancel)

    def cancel(self, job_id: int, reason: str = "canceled by the client") -> None:
        """Ask job ``job_id`` to stop safely (JobError unless the daemon runs it)."""
        self._ask(protocol.cancel_request(job_id, reason))

    # -------------------------------------------------------------- queries

    def query(self, op: OpCode) -> Any:
        """Run query ``op`` in the daemon without a job; its result, or its typed error."""
        return self._ask(protocol.query_request(op))["result"]

    def jobs(self, archived: bool = False) -> list[Job]:
        """The jobs of the job log not archived (with ``archived``, all), ascending by id."""
        from ganeti_lv.master.jobs import Job  # the job log's records: for job queries only

        answer = self._ask(protocol.request(protocol.JOBS, archived=archived))
        return [Job.from_dict(job) for job in answer["jobs"]]

    def job(self, job_id: int) -> Job:
        """One job of the job log; JobError when unknown."""
        from ganeti_lv.master.jobs import Job

        return Job.from_dict(self._ask(protocol.request(protocol.JOB, job_id=job_id))["job"])

    def version(self) -> Message:
        """The daemon's protocol version and release: {"protocol": 1, "version": ...}."""
        answer = self._ask(protocol.request(protocol.VERSION))
        return {"protocol": answer["protocol"], "version": answer["version"]}

    # -------------------------------------------------------------- the connection

    def _connection(self) -> socket.socket:
        sock, self._sock = self._sock, None
        if sock is None:
            sock = _open(self.path, CONNECT_TIMEOUT)
            if sock is None:
                raise errors.OpExecError(
                    f"Cannot reach the master daemon at {self.path}: it no longer runs",
                    errors.ECODE_ENVIRON,
                )
        sock.settimeout(ANSWER_TIMEOUT)  # sending; receiving waits as its request allows
        return sock

    def _ask(self, request: Message) -> Message:
        """Send one request; its one answer (an error answer is raised)."""
        with _Exchange(self._connection(), self.path) as exchange:
            exchange.send(request)
            msg = exchange.receive(ANSWER_TIMEOUT)
            if msg is None:
                raise exchange.unanswered()
            if msg["type"] == protocol.ERROR:
                raise protocol.decode_error(msg["error"])
            return msg

    def _follow(
        self,
        request: Message,
        on_record: RecordFn | None,
        cancel: Cancellation | None,
        on_job_id: Callable[[int], None] | None = None,
        accepted: bool = False,
    ) -> list[Any]:
        """Send ``request`` and follow its job; ``accepted``: the daemon answers
        at once that it took the job (a job submitted), within ANSWER_TIMEOUT."""
        with _Exchange(self._connection(), self.path) as exchange:
            exchange.send(request)
            try:
                first_within = ANSWER_TIMEOUT if accepted else None
                return _wait(exchange, on_record, cancel, on_job_id, first_within)
            except KeyboardInterrupt:
                # a job this client submitted, as in-process: an interrupted command
                # does not go on in the background (a job past its point of no return
                # still ends safely); a job only watched may be somebody else's
                if accepted:
                    with contextlib.suppress(errors.OpExecError):  # a daemon not taking it
                        exchange.send_cancel("interrupted by the user")
                raise

    def close(self) -> None:
        """Drop an unused connection."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> MasterClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _wait(
    exchange: _Exchange,
    on_record: RecordFn | None,
    cancel: Cancellation | None,
    on_job_id: Callable[[int], None] | None = None,
    first_within: float | None = None,
) -> list[Any]:
    """Read a followed job's messages up to its end (a submitted one's id to
    ``on_job_id``; the first message within ``first_within`` seconds when given)."""
    deadline = None if first_within is None else time.monotonic() + first_within
    while True:
        if cancel is not None and cancel.is_set():
            exchange.send_cancel(cancel.reason or "canceled by the client")
        timeout = CANCEL_POLL if cancel is not None else None
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise exchange.unanswered()
            timeout = left if timeout is None else min(timeout, left)
        msg = exchange.receive(timeout)
        if msg is None:
            continue
        deadline = None
        kind = msg["type"]
        if kind in (protocol.FEEDBACK, protocol.PROGRESS):
            if on_record is not None:
                try:
                    on_record(protocol.message_record(msg))
                except Exception:  # noqa: BLE001 - as in-process: dropped, the job goes on
                    on_record = None
        elif kind == protocol.ACCEPTED:
            if on_job_id is not None:
                try:
                    on_job_id(int(msg["job_id"]))
                except BaseException:  # as in-process: a job its caller cannot follow stops
                    exchange.send_cancel("the client could not take the job's id")
                    raise
        elif kind == protocol.END:
            return protocol.outcome(msg)
        elif kind == protocol.ERROR:
            raise protocol.decode_error(msg["error"])


class _Exchange:
    """One connection to the daemon: messages out, messages in."""

    def __init__(self, sock: socket.socket, path: str) -> None:
        self.sock = sock
        self.path = path
        self.buf = bytearray()
        self._scanned = 0  # bytes at the start of buf known to hold no line's end
        self._poll = select.poll()
        self._poll.register(sock, select.POLLIN)
        self.cancel_sent = False

    def send(self, msg: Message) -> None:
        err = self._try_send(msg)
        if err is not None:
            raise _gone(f": {err}") from err

    def send_cancel(self, reason: str) -> None:
        """Ask the daemon to stop the job this connection follows (once).

        A connection the daemon closed is no error here: the job may have
        ended, its end sent before the daemon closed and not read yet.
        Reading tells: the end, or the connection's loss as the error.
        """
        if not self.cancel_sent:
            self.cancel_sent = True
            self._try_send({"type": protocol.CANCEL, "reason": reason})

    def _try_send(self, msg: Message) -> OSError | None:
        """Send ``msg``; the error of a connection the daemon closed (a reset, a
        broken pipe), else None. A daemon taking nothing in time is raised."""
        try:
            self.sock.sendall(protocol.encode(msg))
        except TimeoutError as err:
            raise self.unanswered() from err
        except OSError as err:
            return err
        return None

    def unanswered(self) -> errors.OpExecError:
        """The error of a daemon that does not take or answer a request in time."""
        pid = _peer_pid(self.sock)
        daemon = f"(pid {pid}) at {self.path}" if pid else f"at {self.path}"
        return errors.OpExecError(
            f"The master daemon {daemon} did not answer within {ANSWER_TIMEOUT:g} s;"
            " it may be stopped or stuck",
            errors.ECODE_ENVIRON,
        )

    def receive(self, timeout: float | None) -> Message | None:
        """The next message; None when ``timeout`` passed without one.

        Each received chunk is searched once for the end of the line: a
        long answer (the whole job log) costs the time of its length.
        """
        end = self.buf.find(b"\n", self._scanned)
        while end < 0:
            self._scanned = len(self.buf)
            # poll, not select: a process holding many files (every lock of a
            # level) may have this socket past select's limit of 1024
            if not self._poll.poll(None if timeout is None else timeout * 1000):
                return None
            try:
                chunk = self.sock.recv(65536)
            except OSError as err:
                raise _gone(f": {err}") from err
            if not chunk:
                raise _gone("")
            self.buf += chunk
            end = self.buf.find(b"\n", self._scanned)
        line = bytes(self.buf[:end])
        del self.buf[: end + 1]
        self._scanned = 0
        return protocol.decode(line)

    def __enter__(self) -> _Exchange:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()


def _peer_pid(sock: socket.socket) -> int | None:
    """The pid of the process that listens on the other end of ``sock`` (Linux), or None."""
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return None
    return struct.unpack("3i", creds)[0] or None


def _gone(detail: str) -> errors.OpExecError:
    return errors.OpExecError(
        f"The master daemon closed the connection before the job ended{detail} "
        "(see gnt-lv job list)",
        errors.ECODE_FAULT,
    )
