"""Start a daemon under a process that reaps its orphans at once.

``python -m ganeti_lv.devcluster.reaper -- libvirtd -d ...`` runs the
daemonising command and returns its exit status and error output, as the
command alone would; but a detached process, marked as the *child
subreaper* of everything below it, stays behind and reaps every orphan of
the daemon (qemu processes, daemonised by libvirtd) as soon as it exits.

On a real node PID 1 (systemd) does that at once. Some machines that run the
local cluster have a PID 1 that reaps orphans only every second or two, and
an exited qemu lingers as a zombie until then. libvirt waits for a stopped
qemu with ``kill(pid, 0)`` every 200 ms, which a zombie passes, so every
stop of a guest (the source of a migration, a shutdown, a destroy) would
stall for up to two seconds that a real node never sees.

The reaper leaves when it has no children left (the daemon and its orphans
are gone). With ``--log FILE`` it appends one line per process it reaps
(time, name, PID and how it ended: ``libvirtd[812] killed by signal 11
(SIGSEGV)``), so a daemon that vanished has a recorded cause, as systemd's
journal gives on a real node. With ``--restart-crashed PIDFILE`` the daemon
(the process ``PIDFILE`` names) is started again when it crashed
(``CRASH_SIGNALS``, which nothing of the local cluster sends), as systemd's
``Restart=on-failure`` restarts libvirtd on a real node (which restarts it
after any unclean end; a daemon stopped or killed on purpose here, SIGTERM
or SIGKILL, stays down), at most ``RESTART_BURST`` times within
``RESTART_INTERVAL`` seconds; its record says so (``; started again``).
Linux only.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import TextIO

from ganeti_lv.devcluster.netns import proc_name
from ganeti_lv.master.daemonize import detach_stdio

PR_SET_CHILD_SUBREAPER = 36
# a process's own crash; the local cluster's tools and tests stop daemons with
# SIGTERM or SIGKILL only
CRASH_SIGNALS = frozenset(
    {signal.SIGABRT, signal.SIGBUS, signal.SIGFPE, signal.SIGILL, signal.SIGSEGV}
)
# as init's start limit: a daemon that crashes more often stays down
RESTART_BURST = 3
RESTART_INTERVAL = 60.0
START_TIMEOUT = 60.0
# how the record of a crashed daemon that was started again ends
STARTED_AGAIN = "; started again"


def _become_subreaper() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


def describe_end(status: int) -> str:
    """How a process ended, from its wait status: ``exited 0``, ``killed by signal 9 (SIGKILL)``."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = f" ({signal.Signals(sig).name})"
        except ValueError:
            name = ""
        core = ", core dumped" if os.WCOREDUMP(status) else ""
        return f"killed by signal {sig}{name}{core}"
    return f"exited {os.WEXITSTATUS(status)}"


def crashed(status: int) -> bool:
    """Whether a wait status is a process's own crash (``CRASH_SIGNALS``)."""
    return os.WIFSIGNALED(status) and os.WTERMSIG(status) in CRASH_SIGNALS


def reap_forever(
    log: TextIO | None = None, on_end: Callable[[int, int], str] | None = None
) -> None:
    """Wait for children (own and adopted) until there are none; record each end in ``log``.

    ``on_end(pid, status)`` is told each end and returns what it did about
    it, added to the record. A record that cannot be written (a full disk)
    ends the recording, never the reaping.
    """
    while True:
        try:
            # peek first (WNOWAIT): the name is readable only until the reaping
            info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOWAIT)
            assert info is not None  # None only with WNOHANG
            pid = info.si_pid
            name = proc_name(pid) or "?"  # a zombie keeps its name until reaped
            _, status = os.waitpid(pid, 0)
        except ChildProcessError:
            return
        except InterruptedError:  # pragma: no cover - PEP 475 retries
            continue
        done = on_end(pid, status) if on_end is not None else ""
        if log is not None:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            try:
                log.write(f"{stamp} {name}[{pid}] {describe_end(status)}{done}\n")
                log.flush()
            except OSError:
                log = None


class Restarter:
    """Starts the daemon of ``argv`` (the process ``pidfile`` names) again when it
    crashed, as init restarts a crashed service: at most ``RESTART_BURST`` times
    within ``RESTART_INTERVAL`` seconds, each start given ``START_TIMEOUT`` seconds."""

    def __init__(
        self, argv: list[str], pidfile: str, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.argv = argv
        self.pidfile = pidfile
        self.clock = clock
        self.starts: list[float] = []

    def __call__(self, pid: int, status: int) -> str:
        """What was done about the end of process ``pid``: nothing (""), or a restart."""
        if not crashed(status) or pid != _pid_in(self.pidfile):
            return ""
        now = self.clock()
        self.starts = [at for at in self.starts if now - at < RESTART_INTERVAL]
        if len(self.starts) >= RESTART_BURST:
            return f"; not started again ({RESTART_BURST} restarts in {RESTART_INTERVAL:g} s)"
        self.starts.append(now)
        code, err = _start(self.argv, START_TIMEOUT)
        if code == 0:
            return STARTED_AGAIN
        return f"; starting it again failed (exit {code}): {err.decode(errors='replace').strip()}"


def _pid_in(pidfile: str) -> int | None:
    """The PID a pid file names (None: none readable)."""
    try:
        with open(pidfile, encoding="ascii", errors="replace") as fobj:
            return int(fobj.read().strip())
    except (OSError, ValueError):
        return None


def _start(argv: list[str], timeout: float | None = None) -> tuple[int, bytes]:
    """Run the daemonising command; its exit status and output (127 if it cannot run,
    124 if it did not return within ``timeout`` seconds and was killed)."""
    try:
        res = subprocess.run(
            argv, stdin=subprocess.DEVNULL, capture_output=True, check=False, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return 124, f"{argv[0]} did not return within {timeout:g} s".encode()
    except OSError as exc:
        return 127, f"{exc.filename or argv[0]}: {exc.strerror or exc}".encode()
    return res.returncode, res.stderr + res.stdout


def _serve(argv: list[str], status_fd: int, log_path: str | None, pidfile: str | None) -> None:
    """The detached side: start the daemon, report, then reap."""
    os.setsid()
    _become_subreaper()
    log = None
    try:
        if log_path is not None:
            log = open(log_path, "a", encoding="utf-8")  # noqa: SIM115 - open while reaping
    except OSError as exc:
        code, err = 127, f"{exc.filename}: {exc.strerror or exc}".encode()
    else:
        code, err = _start(argv)
    with os.fdopen(status_fd, "wb") as status:
        status.write(b"%d\n" % code + err)
    detach_stdio()
    if code == 0:
        reap_forever(log, Restarter(argv, pidfile) if pidfile else None)


def reaper_argv(
    argv: list[str], log: str | None = None, restart_pidfile: str | None = None
) -> list[str]:
    """The command running ``argv`` (a daemonising command) below a reaper logging to
    ``log``; with ``restart_pidfile``, a crash of the daemon it names starts it again."""
    options = [] if log is None else ["--log", log]
    if restart_pidfile is not None:
        options += ["--restart-crashed", restart_pidfile]
    return [sys.executable, "-m", "ganeti_lv.devcluster.reaper", *options, "--", *argv]


USAGE = (
    "usage: python -m ganeti_lv.devcluster.reaper [--log FILE] [--restart-crashed PIDFILE]"
    " -- COMMAND...\n"
)


def _option(argv: list[str], name: str) -> tuple[str | None, list[str]]:
    """The value of ``name VALUE`` at the start of ``argv`` (None when not there) and the
    arguments after it; ValueError when the value is missing."""
    if argv[:1] != [name]:
        return None, argv
    value = argv[1] if len(argv) > 1 else ""
    if not value or value.startswith("-"):
        raise ValueError(name)
    return value, argv[2:]


def main(argv: list[str]) -> int:
    """Run ``argv`` (a daemonising command) below a detached subreaper."""
    try:
        log_path, argv = _option(argv, "--log")
        pidfile, argv = _option(argv, "--restart-crashed")
    except ValueError:
        sys.stderr.write(USAGE)
        return 2
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv or argv[0].startswith("--"):
        sys.stderr.write(USAGE)
        return 2
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(rfd)
        try:
            _serve(argv, wfd, log_path, pidfile)
        finally:
            os._exit(0)
    os.close(wfd)
    with os.fdopen(rfd, "rb") as status:
        data = status.read()
    head, _, err = data.partition(b"\n")
    sys.stderr.buffer.write(err)
    return int(head) if head.strip().lstrip(b"-").isdigit() else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
