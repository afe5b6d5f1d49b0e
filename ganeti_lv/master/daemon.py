"""``gnt-lv-masterd``: the master daemon, running jobs with warm node connections.

As Ganeti's master daemon does, it keeps the node connections (libvirt and
SSH) of the master open between jobs, so a job submitted by ``gnt-lv`` (or by
ops tooling through ``ganeti_lv.master.client``) starts at once, without the
start-up of a new process and without new connections. Without the daemon
``gnt-lv`` runs each job in its own process; the daemon changes nothing else.

Each job runs in its own thread with its own context (configuration store,
lock manager, job log), exactly as a job of its own process would: jobs of
the daemon and of other processes share the same lock files and the same
configuration file. Only the node operations, and with them the open
connections, are shared.

A client that disconnects does not stop its job; a cancel request does,
safely. SIGTERM (or SIGINT) stops the daemon: it accepts no new connection
(a client already connected is still served) and leaves once the running jobs
have ended; a second signal asks them to stop safely.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import logging
import os
import signal
import socket
import socketserver
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, BinaryIO

from ganeti_lv import paths
from ganeti_lv.cancel import Cancellation
from ganeti_lv.context import Context
from ganeti_lv.errors import ECODE_EXISTS, ECODE_INVAL, GenericError, OpExecError, OpPrereqError
from ganeti_lv.hypervisor.base import NodeOps
from ganeti_lv.master.client import encode_error, encode_line
from ganeti_lv.master.daemonize import daemonize, detach_stdio
from ganeti_lv.master.jobs import process_alive, process_start_time, to_jsonable
from ganeti_lv.opcodes import OpCode

log = logging.getLogger("ganeti_lv.master.daemon")


class MasterDaemon:
    """Runs submitted opcodes, one thread per connection, sharing node operations."""

    def __init__(self, data_dir: str | None = None, node_ops: NodeOps | None = None) -> None:
        self.data_dir = paths.data_dir(data_dir)
        self._base = Context.from_data_dir(self.data_dir, node_ops=node_ops)
        self._running: set[Cancellation] = set()
        self._lock = threading.Lock()

    @property
    def node_ops(self) -> NodeOps:
        """The node operations every job uses (created on first use)."""
        return self._base.node_ops

    def warm_up(self) -> None:
        """Open the SSH connections to the online nodes in the background (a hint)."""
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

    def running(self) -> int:
        """Number of jobs running now."""
        with self._lock:
            return len(self._running)

    def cancel_all(self, reason: str) -> None:
        """Ask every running job to stop safely."""
        with self._lock:
            for cancel in self._running:
                cancel.request(reason)

    def serve_connection(self, rfile: BinaryIO, wfile: BinaryIO) -> None:
        """One client: read its request, run the opcode, stream feedback and the outcome.

        A connection that starts with ``gnt-lv``'s hand-over of a command
        line goes to ``ganeti_lv.cli.remote`` instead.
        """
        from ganeti_lv.cli import remote

        if remote.is_request(rfile):
            remote.serve(self, rfile, wfile)
            return
        send = _Sender(wfile)
        try:
            try:
                request = json.loads(rfile.readline() or b"null")
            except ValueError as err:
                raise OpPrereqError(
                    f"Malformed request to the master daemon: {err}", ECODE_INVAL
                ) from err
            if not isinstance(request, dict) or not isinstance(request.get("submit"), dict):
                raise OpPrereqError("Malformed request to the master daemon", ECODE_INVAL)
            op = OpCode.from_dict(request["submit"])
            lock_timeout = request.get("lock_timeout")
            if lock_timeout is not None and not isinstance(lock_timeout, (int, float)):
                raise OpPrereqError("lock_timeout must be a number of seconds", ECODE_INVAL)
        except GenericError as err:
            send({"error": encode_error(err)})
            return
        cancel = Cancellation()
        watch_cancel(_json_cancels(rfile), cancel)
        try:
            result = self.run_job(
                op, lock_timeout, lambda msg: send({"feedback": str(msg)}), cancel
            )
        except Exception as err:  # noqa: BLE001 - every failure goes back to the client
            send({"error": encode_error(err)})
        else:
            send({"result": to_jsonable(result)})

    def run_job(
        self,
        op: OpCode,
        lock_timeout: float | None,
        feedback_fn: Callable[[str], None] | None,
        cancel: Cancellation,
    ) -> Any:
        """Run ``op`` through the processor in a context of its own.

        Logged, and stopped safely by ``cancel`` or ``cancel_all``.
        """
        from ganeti_lv.mcpu import Processor

        with self._lock:
            self._running.add(cancel)
        summary = op.summary()
        log.info("%s: started", summary)
        try:
            ctx = self.context(lock_timeout)
            result = Processor(ctx).execute(op, feedback_fn=feedback_fn, cancel=cancel)
        except Exception as err:
            log.info("%s: failed: %s", summary, err)
            if not isinstance(err, GenericError):
                log.exception("%s: unexpected error", summary)
            raise
        else:
            log.info("%s: succeeded", summary)
            return result
        finally:
            with self._lock:
                self._running.discard(cancel)

    def close(self) -> None:
        """Close the node connections."""
        self._base.close()


class _Sender:
    """Writes protocol lines to a client; a client gone just stops receiving them."""

    def __init__(self, wfile: BinaryIO) -> None:
        self._wfile = wfile
        self._lock = threading.Lock()
        self._gone = False

    def __call__(self, obj: Any) -> None:
        with self._lock:
            if self._gone:
                return
            try:
                self._wfile.write(encode_line(obj))
                self._wfile.flush()
            except (OSError, ValueError):
                self._gone = True


def watch_cancel(reasons: Iterator[str], cancel: Cancellation) -> None:
    """Start a thread turning each reason the client sends into a cancel request.

    ``reasons`` reads the client's side of the connection; the thread ends
    with it (the end of the connection, or an error reading it).
    """

    def watch() -> None:
        with contextlib.suppress(OSError, ValueError):
            for reason in reasons:
                cancel.request(reason)

    threading.Thread(target=watch, name="masterd-cancel", daemon=True).start()


def _json_cancels(rfile: BinaryIO) -> Iterator[str]:
    """The reasons of the client's ``{"cancel": reason}`` lines."""
    for line in rfile:
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if isinstance(msg, dict) and "cancel" in msg:
            yield str(msg["cancel"]) or "canceled by the client"


class _Handler(socketserver.StreamRequestHandler):
    server: MasterServer

    def handle(self) -> None:
        try:
            self.server.daemon.serve_connection(self.rfile, self.wfile)  # type: ignore[arg-type]
        finally:
            # ends the cancel watcher's read, so closing the reader cannot block
            with contextlib.suppress(OSError):
                self.request.shutdown(socket.SHUT_RDWR)


class MasterServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """The daemon's socket, held under the data dir's daemon lock.

    Only the holder of ``masterd.lock`` binds (and, at the end, removes)
    the socket, so a second daemon refuses to start, also while the first
    one is still finishing its jobs. ``server_close`` waits for the running
    jobs, then removes the socket and releases the lock.
    """

    daemon_threads = False
    block_on_close = True

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

    def server_close(self) -> None:
        try:
            self._serve_waiting()
            super().server_close()
        finally:
            with contextlib.suppress(OSError):
                os.unlink(self.server_address)  # type: ignore[arg-type]
            os.close(self._lock_fd)

    def _serve_waiting(self) -> None:
        """Serve the connections the kernel took for us before the door closed.

        A client whose connect succeeded has sent its job; closing the socket
        under it would reset its connection, with no answer. Its job runs as
        if it had come a moment earlier (``server_close`` then waits for it).
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


def stop(data_dir: str, timeout: float = 60.0) -> int | None:
    """Stop the data dir's daemon (by its pid file); the PID it had, None if none ran."""
    pid, start = _read_pidfile(data_dir)
    if pid is None or not process_alive(pid, start):
        return None
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process_alive(pid, start):
            return pid
        time.sleep(0.05)
    raise OpExecError(f"The master daemon ({pid}) did not stop within {timeout:g} s")


def _install_signals(server: MasterServer) -> None:
    stopping = threading.Event()

    def handler(signum: int, _frame: Any) -> None:
        if stopping.is_set():
            log.info("signal %d again: asking the running jobs to stop", signum)
            server.daemon.cancel_all("the master daemon is stopping")
            return
        stopping.set()
        log.info("signal %d: no new jobs; waiting for %d running", signum, server.daemon.running())
        threading.Thread(target=server.shutdown, name="masterd-shutdown").start()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, handler)


def build_parser() -> argparse.ArgumentParser:
    """Options of ``gnt-lv-masterd``."""
    parser = argparse.ArgumentParser(
        prog="gnt-lv-masterd",
        description="Run ganeti_lv jobs with the node connections kept open (gnt-lv uses "
        "the daemon when it runs). Stop it with SIGTERM or --stop.",
    )
    parser.add_argument("--data-dir", help="the cluster's data dir ($GANETI_LV_DATA_DIR)")
    parser.add_argument(
        "-f", "--foreground", action="store_true", help="do not detach (for a service manager)"
    )
    parser.add_argument("--stop", action="store_true", help="stop the running daemon and exit")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Start (or with --stop, stop) the master daemon of a data dir."""
    opts = build_parser().parse_args(argv)
    ddir = paths.data_dir(opts.data_dir)
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
    _write_pidfile(paths.masterd_pidfile(ddir))
    _install_signals(server)
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
        server.server_close()  # waits for the running jobs, removes the socket
        with contextlib.suppress(OSError):
            if read_pid(ddir) == os.getpid():
                os.unlink(paths.masterd_pidfile(ddir))
        server.daemon.close()
        log.info("master daemon %d stopped", os.getpid())
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
