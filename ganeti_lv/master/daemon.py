"""``gnt-lv-masterd``: the master daemon, running jobs with warm node connections.

As Ganeti's master daemon does, it keeps the node connections (libvirt and
SSH) of the master open between jobs, so a job submitted by ``gnt-lv`` or by
ops tooling (both through ``ganeti_lv.master.client``) starts at once,
without the start-up of a new process and without new connections. It
speaks only the protocol of ``ganeti_lv.master.protocol``: jobs of opcodes,
their records and outcome, cancel, the job queries, and queries run without
a job (``gnt-lv instance list``: ``ganeti_lv.mcpu.run_query`` on the warm
connections, nothing recorded). Without the daemon the same jobs run in the
caller's process (``ganeti_lv.master.runner``), and so do the queries.

Each job is recorded in the job log first (its id is the job's id
everywhere), then runs in a thread of its own with its own context
(configuration store, lock manager, job log), exactly as a job of its own
process would: jobs of the daemon and of other processes share the same
lock files and the same configuration file. Only the node operations, and
with them the open connections, are shared. A job does not depend on the
connection that submitted it: a client that goes away leaves it running; a
cancel request (from any connection) asks it to stop safely.

Between requests the daemon runs its periodic pass over the data dir
(``ganeti_lv.master.housekeeping``: archiving old jobs, recording lost
ones, removing temp files of killed writers), at its start and then every
few minutes.

SIGTERM (or SIGINT) stops the daemon: it takes no new job (its client runs
it itself, ``MasterStopping``), still serves the rest (the running jobs'
followers and cancels, queries, the job log) and leaves once the running
jobs have ended; a second signal asks them to stop safely. What a job's
followers get and send is ``ganeti_lv.master.streams``.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import logging
import os
import queue
import signal
import socket
import socketserver
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, BinaryIO

from ganeti_lv import constants, paths
from ganeti_lv.cancel import Cancellation, stopped_by
from ganeti_lv.context import Context
from ganeti_lv.errors import (
    ECODE_EXISTS,
    ECODE_FAULT,
    ECODE_STATE,
    GenericError,
    JobError,
    MasterStopping,
    OpExecError,
)
from ganeti_lv.hypervisor.base import NodeOps
from ganeti_lv.master import protocol
from ganeti_lv.master.daemonize import daemonize, detach_stdio, raise_open_files_limit
from ganeti_lv.master.follow import signal_cancel
from ganeti_lv.master.housekeeping import Housekeeper
from ganeti_lv.master.jobs import Job, to_jsonable
from ganeti_lv.master.processes import process_alive, process_start_time
from ganeti_lv.master.protocol import Message
from ganeti_lv.master.runner import record_end, run_job
from ganeti_lv.master.streams import RunningJob, Sender, logged, reason_of, watch_cancel
from ganeti_lv.mcpu import run_query
from ganeti_lv.opcodes import OpCode

log = logging.getLogger("ganeti_lv.master.daemon")

RAPI_PORT = 5080  # Ganeti's remote API port


class MasterDaemon:
    """The jobs of one data dir, each in a thread, sharing the node operations."""

    def __init__(self, data_dir: str | None = None, node_ops: NodeOps | None = None) -> None:
        self.data_dir = paths.data_dir(data_dir)
        self._base = Context.from_data_dir(self.data_dir, node_ops=node_ops)
        self._running: dict[int, RunningJob] = {}
        self._threads: list[threading.Thread] = []
        # jobs whose end the job log did not take (a full disk): (error, canceled)
        self._unrecorded: dict[int, tuple[BaseException, bool]] = {}
        self._lock = threading.Lock()
        self._stopping = False
        self._taking = 0  # submits between their check and their job's thread
        self._taken = threading.Condition(self._lock)
        self.housekeeper = Housekeeper(self.data_dir, before_pass=self.record_unrecorded_ends)

    @property
    def node_ops(self) -> NodeOps:
        """The node operations every job uses (created on first use)."""
        return self._base.node_ops

    def warm_up(self) -> None:
        """Open the connections to the online nodes in the background (a hint)."""
        try:
            nodes = [n for n in self._base.config.snapshot().nodes.values() if not n.offline]
        except GenericError as err:
            log.info("no warm-up: %s", err)
            return
        self.node_ops.prewarm(nodes)

    def context(self, lock_timeout: float | None) -> Context:
        """A job's own context on the shared node operations."""
        return Context.from_data_dir(
            self.data_dir, node_ops=self.node_ops, lock_timeout=lock_timeout
        )

    # -------------------------------------------------------------- jobs

    def stop_taking_jobs(self) -> None:
        """From now on ``submit`` refuses (MasterStopping); the rest is served as before
        (``wait_jobs`` then waits for the jobs taken, also those still starting)."""
        with self._lock:
            self._stopping = True

    def submit(self, ops: Sequence[OpCode], lock_timeout: float | None = None) -> RunningJob:
        """Record a job of ``ops`` and start it in a thread of its own (MasterStopping
        once the daemon is stopping)."""
        with self._lock:
            if self._stopping:
                raise MasterStopping(
                    "The master daemon is stopping: it takes no new jobs", ECODE_STATE
                )
            self._taking += 1
        try:
            return self._start(ops, lock_timeout)
        finally:
            with self._lock:
                self._taking -= 1
                self._taken.notify_all()

    def _start(self, ops: Sequence[OpCode], lock_timeout: float | None) -> RunningJob:
        ctx = self.context(lock_timeout)
        job = ctx.jobs.create_job(ops)
        running = RunningJob(job, ctx.jobs)
        thread = threading.Thread(
            target=self._run, args=(ctx, job, list(ops), running), name=f"job-{job.id}"
        )
        with self._lock:  # started under the lock: a job is in _threads once it runs
            self._running[job.id] = running
            self._threads = [t for t in self._threads if t.is_alive()]
            try:
                thread.start()
            except BaseException as err:  # no thread (the process's limit): the job ends here
                self._running.pop(job.id, None)
                failed: BaseException | None = err
            else:
                self._threads.append(thread)
                failed = None
        if failed is not None:  # nobody follows it yet: it was never in _running outside the lock
            self._record_end(ctx, job, failed, running.cancel)
            raise JobError(f"Job {job.id} could not start: {failed}", ECODE_FAULT) from failed
        return running

    def _run(self, ctx: Context, job: Job, ops: list[OpCode], running: RunningJob) -> None:
        what = f"job {job.id} {job.summary}"
        log.info("%s: started", what)
        try:
            results = run_job(ctx, job, ops, running.publish, running.cancel)
        except BaseException as err:  # noqa: BLE001 - every end goes to the job's followers
            log.info("%s: failed: %s", what, err)
            if not isinstance(err, GenericError):
                log.error("%s: unexpected error", what, exc_info=err)
            # as the job log recorded it (an error before the processor ran an opcode: error)
            status = self._record_end(ctx, job, err, running.cancel)
            end = protocol.end_message(job.id, status, to_jsonable(job.results), err)
        else:
            log.info("%s: succeeded", what)
            end = protocol.end_message(
                job.id, constants.JOB_STATUS_SUCCESS, to_jsonable(results), None
            )
        finally:
            with self._lock:
                self._running.pop(job.id, None)
        running.finish(end)

    def _record_end(self, ctx: Context, job: Job, err: BaseException, cancel: Cancellation) -> str:
        """``runner.record_end``; an end the job log did not take is kept for later
        (``record_unrecorded_ends``) and reported as an error now."""
        status = record_end(ctx, job, err, cancel)
        if status is None:
            with self._lock:
                self._unrecorded[job.id] = (err, stopped_by(cancel, err))
            return constants.JOB_STATUS_ERROR
        return status

    def running(self) -> int:
        """Number of jobs running now."""
        with self._lock:
            return len(self._running)

    def cancel(self, job_id: int, reason: str) -> None:
        """Ask job ``job_id`` to stop safely, here or in the process that runs it.

        JobError when it cannot be asked (unknown, ended, a move of a node
        operation, its process gone).
        """
        running = self._running_or_starting(job_id)
        if running is None:
            signal_cancel(self.job(job_id))
            return
        running.request_cancel(reason)

    def _running_or_starting(self, job_id: int) -> RunningJob | None:
        """The job of ``job_id`` running here, None if it runs elsewhere or has ended.

        A job a submission has just recorded is listed before it is started
        (its file is in place while it is synced): its start is waited for.
        """
        with self._lock:
            running = self._running.get(job_id)
            if running is not None or not self._taking:
                return running
        job = self.job(job_id)
        if job.finished or job.pid != os.getpid():
            return None
        with self._lock:
            while job_id not in self._running and self._taking:
                self._taken.wait(0.5)
            return self._running.get(job_id)

    def cancel_all(self, reason: str) -> None:
        """Ask every running job to stop safely."""
        with self._lock:
            running_jobs = list(self._running.values())
        for running in running_jobs:  # each request writes its job's file: not under the lock
            running.request_cancel(reason)

    def wait_jobs(self) -> None:
        """Wait until every job started so far, or being started now, has ended."""
        with self._lock:
            while self._taking:
                self._taken.wait(0.5)  # in short waits: a signal's handler runs in between
            threads = list(self._threads)
        for thread in threads:
            while thread.is_alive():  # in short waits: a signal's handler runs in between
                thread.join(0.5)

    def watch(self, job_id: int, gone: threading.Event | None = None) -> Iterator[Message]:
        """A job's records from its start, then its end (``RunningJob.follow``).

        A job that ended is told from its job log, every line of it; a job of
        another process is JobError (ECODE_STATE): its own log tells it.
        """
        with self._lock:
            running = self._running.get(job_id)
        if running is not None:
            return running.follow(gone)
        job = self.job(job_id)
        if not job.finished:
            raise JobError(
                f"Job {job_id} is {job.status} in process {job.pid}, not in the master daemon",
                ECODE_STATE,
            )
        return logged(job)

    def query(self, op: OpCode) -> Any:
        """The result of query ``op``, run without a job on the shared node operations.

        OpPrereqError (ECODE_INVAL) for an opcode that is not a query.
        """
        return run_query(self.context(None), op)

    def jobs(self, archived: bool = False) -> list[Job]:
        """The jobs of the job log not archived (with ``archived``, every job)."""
        return self._base.jobs.list(archived)

    def job(self, job_id: int) -> Job:
        """One job of the job log; JobError when unknown."""
        return self._base.jobs.get(job_id)

    def record_unrecorded_ends(self) -> None:
        """Record the ends the job log did not take when the jobs ended (a full disk):
        tried at every periodic pass and when the daemon stops, until written. Until
        then the job log shows those jobs running in a daemon that no longer runs them."""
        with self._lock:
            pending = dict(self._unrecorded)
        for job_id, (err, canceled) in pending.items():
            try:
                status = self._base.jobs.end_unfinished(job_id, err, canceled)
            except (OSError, GenericError) as again:
                log.warning("job %d: its end is still not recorded: %s", job_id, again)
                continue
            log.info("job %d: its end is recorded now (%s)", job_id, status)
            with self._lock:
                self._unrecorded.pop(job_id, None)

    def close(self) -> None:
        """Record the ends not recorded yet, once more; close the node connections."""
        self.record_unrecorded_ends()
        self._base.close()

    # -------------------------------------------------------------- connections

    def serve_connection(self, request: bytes, rfile: BinaryIO, wfile: BinaryIO) -> None:
        """One client's request line (see ``ganeti_lv.master.protocol``) and its answer."""
        send = Sender(wfile)
        try:
            msg = protocol.decode(request)
            protocol.check_version(msg)
            self._answer(msg, rfile, send)
        except GenericError as err:
            send(protocol.error_message(err))
        except Exception as err:  # noqa: BLE001 - a fault here (a full disk) is answered too
            log.exception("request %.200r failed", request)
            send(protocol.error_message(err))

    def _answer(self, msg: Message, rfile: BinaryIO, send: Sender) -> None:
        kind = msg["type"]
        if kind == protocol.SUBMIT:
            request = protocol.parse_submit(msg)
            running = self.submit(request.ops, request.lock_timeout)
            send({"type": protocol.ACCEPTED, "job_id": running.job_id})
            if request.wait:
                self._stream(running.follow, running.job_id, rfile, send)
        elif kind == protocol.WATCH:
            job_id = protocol.job_id_of(msg)
            self._stream(lambda gone: self.watch(job_id, gone), job_id, rfile, send)
        elif kind == protocol.CANCEL:
            job_id = protocol.job_id_of(msg)
            self.cancel(job_id, reason_of(msg))
            send({"type": protocol.CANCELING, "job_id": job_id})
        elif kind == protocol.QUERY:
            result = self.query(protocol.parse_query(msg))
            send({"type": protocol.RESULT, "result": to_jsonable(result)})
        elif kind == protocol.JOBS:
            jobs = self.jobs(protocol.archived_of(msg))
            send({"type": protocol.JOBS, "jobs": [job.to_dict() for job in jobs]})
        elif kind == protocol.JOB:
            send({"type": protocol.JOB, "job": self.job(protocol.job_id_of(msg)).to_dict()})
        elif kind == protocol.VERSION:
            send(
                {
                    "type": protocol.VERSION,
                    "protocol": protocol.PROTOCOL_VERSION,
                    "version": constants.RELEASE_VERSION,
                }
            )
        else:
            raise protocol.invalid_request(f"unknown request type {kind!r}")

    def _stream(
        self,
        follow: Callable[[threading.Event], Iterator[Message]],
        job_id: int,
        rfile: BinaryIO,
        send: Sender,
    ) -> None:
        """Send a job's messages (``follow(gone)``) while the client may ask to cancel
        it; the client's end (``gone``) ends the sending, the job goes on."""
        gone, done = threading.Event(), threading.Event()
        watch_cancel(rfile, lambda reason: self._cancel_quietly(job_id, reason), gone, done)
        try:
            for message in follow(gone):
                if not send(message):
                    return  # the client went away; the job goes on
        finally:
            done.set()

    def _cancel_quietly(self, job_id: int, reason: str) -> None:
        with contextlib.suppress(JobError):
            self.cancel(job_id, reason)


# Connections the kernel queues for the daemon before it accepts them:
# socketserver's default of 5 is full after a burst of clients (a script
# submitting to many instances at once), and a client finding the queue
# full waits and retries (``client.connect``). The kernel caps it at
# net.core.somaxconn.
LISTEN_BACKLOG = 128

# seconds a client has to send its request, and to take a message once its
# socket's buffer is full
REQUEST_TIMEOUT = 10
SEND_TIMEOUT = 30


class _Handler(socketserver.StreamRequestHandler):
    """One connection. A client that has not sent its whole request within
    REQUEST_TIMEOUT (silent, or sending it a byte at a time), or that reads
    nothing for SEND_TIMEOUT while its messages wait, is let go (a job it
    follows runs on), so that the daemon can always stop.
    """

    server: MasterServer

    def handle(self) -> None:
        sock = self.request
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", SEND_TIMEOUT, 0))
        try:
            # the whole request, silent or sent a byte at a time, has REQUEST_TIMEOUT
            late = threading.Event()
            cut = threading.Timer(REQUEST_TIMEOUT, _cut_off, args=(sock, late))
            cut.start()
            try:
                request = self.rfile.readline(protocol.MAX_LINE)
            except OSError:
                return  # gone
            finally:
                cut.cancel()
            if late.is_set():
                return
            # its reads then wait for a cancel as long as the job runs
            self.server.daemon.serve_connection(request, self.rfile, self.wfile)  # type: ignore[arg-type]
        finally:
            # ends the cancel watcher's read, so closing the reader cannot block
            with contextlib.suppress(OSError):
                self.request.shutdown(socket.SHUT_RDWR)


def _cut_off(sock: socket.socket, late: threading.Event) -> None:
    """End the connection of a client too slow to send its request (its read returns)."""
    late.set()
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


class MasterServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """The daemon's socket, held under the data dir's daemon lock.

    Only the holder of ``masterd.lock`` binds (and, at the end, removes)
    the socket, so a second daemon refuses to start, also while the first
    one is still finishing its jobs. ``server_close`` serves the waiting
    connections, waits for the running jobs (also those no connection
    follows), then removes the socket and releases the lock.
    """

    daemon_threads = False
    block_on_close = True
    request_queue_size = LISTEN_BACKLOG

    def __init__(self, path: str, daemon: MasterDaemon) -> None:
        self.daemon = daemon
        self._lock_fd = _take_daemon_lock(daemon.data_dir)
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)  # left by a daemon that is gone (we hold the lock)
            old = os.umask(0o077)  # the socket is root's alone, as the data dir
            try:
                super().__init__(path, _Handler)
            finally:
                os.umask(old)
        except BaseException:
            os.close(self._lock_fd)
            raise

    def service_actions(self) -> None:
        """Between requests: the periodic pass over the data dir, when it is due."""
        self.daemon.housekeeper.tick()

    def server_close(self) -> None:
        try:
            # no client finds the door from now on (it runs its job itself), so
            # none is let in after the last one waiting was served
            self._unlink_socket()
            self._serve_waiting()
            super().server_close()
            self.daemon.wait_jobs()
            self.daemon.housekeeper.join()
        finally:
            self._unlink_socket()
            os.close(self._lock_fd)

    def _unlink_socket(self) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self.server_address)  # type: ignore[arg-type]

    def _serve_waiting(self) -> None:
        """Serve the connections the kernel took for us before the door closed.

        A client whose connect succeeded has sent its request; closing the
        socket under it would reset its connection, with no answer. A job it
        submits is refused as stopping (``MasterStopping``: the client runs it
        itself); anything else is answered.
        """
        self.socket.setblocking(False)
        while True:
            try:
                request, address = self.get_request()
            except OSError:  # none waiting (or the socket is closed)
                return
            request.setblocking(True)
            self.process_request(request, address)


def _take_daemon_lock(data_dir: str) -> int:
    """The data dir's daemon lock (an open fd, flocked); OpExecError if another holds it."""
    fd = os.open(paths.masterd_lock(data_dir), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        pid = read_pid(data_dir)
        running = f" (pid {pid})" if pid is not None else ""
        raise OpExecError(
            f"A master daemon already runs for {data_dir}{running}", ECODE_EXISTS
        ) from None
    return fd


def serve(data_dir: str | None = None, node_ops: NodeOps | None = None) -> MasterServer:
    """Bind the daemon's socket for ``data_dir``; the caller runs ``serve_forever``."""
    daemon = MasterDaemon(data_dir, node_ops=node_ops)
    return MasterServer(paths.masterd_socket(daemon.data_dir), daemon)


# ------------------------------------------------------------------ program


def _write_pidfile(path: str) -> None:
    """ "<pid> <start time>": a reused pid is never taken for the daemon."""
    pid = os.getpid()
    tmp = f"{path}.{pid}.tmp"
    with open(tmp, "w", encoding="ascii") as fh:
        fh.write(f"{pid} {process_start_time(pid)}\n")
    os.replace(tmp, path)


def read_pid(data_dir: str) -> int | None:
    """The PID in the daemon's pid file if that process still runs, else None."""
    pid, start = _read_pidfile(data_dir)
    return pid if pid is not None and process_alive(pid, start) else None


def _read_pidfile(data_dir: str) -> tuple[int | None, int | None]:
    try:
        with open(paths.masterd_pidfile(data_dir), encoding="ascii") as fh:
            fields = fh.read().split()
        return int(fields[0]), int(fields[1]) if len(fields) > 1 else None
    except (OSError, ValueError, IndexError):
        return None, None


# with ``stop(force=True)``: seconds the running jobs have to roll back once
# canceled, before the daemon is killed
FORCED_STOP_GRACE = 30.0


def stop(data_dir: str, timeout: float = 60.0, force: bool = False) -> int | None:
    """Stop the data dir's daemon (by its pid file); the PID it had, None if none ran.

    Its running jobs end first; a daemon still running after ``timeout`` is
    an error, unless ``force`` (the cluster itself goes away): then its jobs
    are canceled (a second SIGTERM) and, ``FORCED_STOP_GRACE`` later, the
    daemon is killed.
    """
    pid, start = _read_pidfile(data_dir)
    if pid is None or not process_alive(pid, start):
        return None

    def ended(sig: signal.Signals, within: float) -> bool:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if not process_alive(pid, start):
                return True
            time.sleep(0.05)
        return False

    if ended(signal.SIGTERM, timeout):
        return pid
    if force and (
        ended(signal.SIGTERM, FORCED_STOP_GRACE) or ended(signal.SIGKILL, FORCED_STOP_GRACE)
    ):
        return pid
    raise OpExecError(f"The master daemon ({pid}) did not stop within {timeout:g} s")


def _install_signals(server: MasterServer) -> None:
    """SIGTERM and SIGINT: the first stops the daemon taking jobs (it ends once the
    running ones have, serving their clients, cancels and queries meanwhile; a
    client submitting runs its job itself), the next ones ask the running jobs to
    stop.

    The handler only hands the signal to a thread of the daemon's, which does
    the work: a handler interrupts the main thread anywhere, also inside a lock
    the work takes (the daemon's, logging's, threading's), and would wait for
    it forever. ``queue.SimpleQueue.put`` is made to be called so.
    """
    signals: queue.SimpleQueue[int] = queue.SimpleQueue()

    def handle() -> None:
        signum = signals.get()
        server.daemon.stop_taking_jobs()
        log.info("signal %d: no new jobs; waiting for %d running", signum, server.daemon.running())

        def drain() -> None:  # the clients of the running jobs served meanwhile (cancels)
            server.daemon.wait_jobs()
            server.shutdown()  # waits for the serving loop, which may not run yet

        threading.Thread(target=drain, name="masterd-shutdown", daemon=True).start()
        while True:
            signum = signals.get()
            log.info("signal %d again: asking the running jobs to stop", signum)
            server.daemon.cancel_all("the master daemon is stopping")

    threading.Thread(target=handle, name="masterd-signals", daemon=True).start()

    def handler(signum: int, _frame: Any) -> None:
        signals.put(signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, handler)


def build_parser() -> argparse.ArgumentParser:
    """Options of ``gnt-lv-masterd``."""
    parser = argparse.ArgumentParser(
        prog="gnt-lv-masterd",
        description="Run ganeti_lv jobs with the node connections kept open (gnt-lv and "
        "ganeti_lv.Client submit to the daemon when it runs). Stop it with SIGTERM or --stop.",
    )
    parser.add_argument("--data-dir", help="the cluster's data dir ($GANETI_LV_DATA_DIR)")
    parser.add_argument(
        "-f", "--foreground", action="store_true", help="do not detach (for a service manager)"
    )
    parser.add_argument("--stop", action="store_true", help="stop the running daemon and exit")
    parser.add_argument(
        "--rapi",
        action="store_true",
        help="also serve Ganeti's remote API (RAPI v2, HTTPS) for ops tooling",
    )
    parser.add_argument(
        "--rapi-address",
        metavar="ADDRESS",
        help="address the remote API listens on (default: the master node's address)",
    )
    parser.add_argument(
        "--rapi-port",
        type=int,
        default=RAPI_PORT,
        metavar="PORT",
        help=f"port of the remote API (default: {RAPI_PORT})",
    )
    return parser


def _start_rapi(server: MasterServer, opts: argparse.Namespace) -> Any:
    """The remote API's server (started), or None when not asked for."""
    if not opts.rapi:
        return None
    from ganeti_lv.rapi import server as rapi_server  # TLS and HTTP: only with --rapi

    return rapi_server.start(
        server.daemon, server.daemon.data_dir, opts.rapi_address, opts.rapi_port
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Start (or with --stop, stop) the master daemon of a data dir."""
    opts = build_parser().parse_args(argv)
    ddir = os.path.abspath(paths.data_dir(opts.data_dir))  # detached, it works in "/"
    if opts.stop:
        try:
            pid = stop(ddir)
        except OpExecError as err:
            sys.stderr.write(f"{err}\n")
            return 1
        if pid is None:
            sys.stderr.write(f"No master daemon runs for {ddir}\n")
        return 0
    ready_r, ready_w = os.pipe()
    if not opts.foreground:
        daemonize(ready_r, ready_w)
    raise_open_files_limit()  # a job taking every lock of a level holds a file per lock
    logging.basicConfig(
        filename=None if opts.foreground else paths.masterd_log(ddir),
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
    )
    try:
        server = serve(ddir)
    except (GenericError, OSError) as err:
        log.error("cannot start: %s", err)
        sys.stderr.write(f"gnt-lv-masterd: {err}\n")
        return 1
    # named by its pid file once it holds the data dir (``stop`` finds it), and
    # stopping on a signal from then on, also while the rest starts
    _install_signals(server)
    _write_pidfile(paths.masterd_pidfile(ddir))
    try:
        rapi = _start_rapi(server, opts)
    except GenericError as err:
        log.error("cannot start: %s", err)
        sys.stderr.write(f"gnt-lv-masterd: {err}\n")
        server.server_close()
        server.daemon.close()
        _remove_pidfile(ddir)
        return 1
    if opts.foreground:
        os.close(ready_r)
    else:
        os.write(ready_w, b"ready")
        detach_stdio()
    os.close(ready_w)
    log.info("master daemon %d serving %s", os.getpid(), server.server_address)
    try:
        server.daemon.warm_up()
        server.serve_forever(poll_interval=0.5)
    finally:
        if rapi is not None:
            rapi.stop()  # no new jobs from the remote API either
        server.server_close()  # waits for the running jobs, removes the socket
        server.daemon.close()
        log.info("master daemon %d stopped", os.getpid())
        # last: while the pid file names it, the daemon still closes its connections
        _remove_pidfile(ddir)
    return 0


def _remove_pidfile(data_dir: str) -> None:
    """Remove the daemon's pid file if it names this process."""
    with contextlib.suppress(OSError):
        if read_pid(data_dir) == os.getpid():
            os.unlink(paths.masterd_pidfile(data_dir))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
