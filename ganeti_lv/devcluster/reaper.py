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
journal gives on a real node. Linux only.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from typing import TextIO

from ganeti_lv.devcluster.netns import proc_name
from ganeti_lv.master.daemonize import detach_stdio

PR_SET_CHILD_SUBREAPER = 36


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


def reap_forever(log: TextIO | None = None) -> None:
    """Wait for children (own and adopted) until there are none; record each end in ``log``.

    A record that cannot be written (a full disk) ends the recording, never
    the reaping.
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
        if log is not None:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            try:
                log.write(f"{stamp} {name}[{pid}] {describe_end(status)}\n")
                log.flush()
            except OSError:
                log = None


def _serve(argv: list[str], status_fd: int, log_path: str | None) -> None:
    """The detached side: start the daemon, report, then reap."""
    os.setsid()
    _become_subreaper()
    log = None
    try:
        if log_path is not None:
            log = open(log_path, "a", encoding="utf-8")  # noqa: SIM115 - open while reaping
        res = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, check=False)
        code, err = res.returncode, res.stderr + res.stdout
    except OSError as exc:
        code, err = 127, f"{exc.filename or argv[0]}: {exc.strerror or exc}".encode()
    with os.fdopen(status_fd, "wb") as status:
        status.write(b"%d\n" % code + err)
    detach_stdio()
    if code == 0:
        reap_forever(log)


def reaper_argv(argv: list[str], log: str | None = None) -> list[str]:
    """The command running ``argv`` (a daemonising command) below a reaper logging to ``log``."""
    options = [] if log is None else ["--log", log]
    return [sys.executable, "-m", "ganeti_lv.devcluster.reaper", *options, "--", *argv]


USAGE = "usage: python -m ganeti_lv.devcluster.reaper [--log FILE] -- COMMAND...\n"


def main(argv: list[str]) -> int:
    """Run ``argv`` (a daemonising command) below a detached subreaper."""
    log_path = None
    if argv[:1] == ["--log"]:
        log_path, argv = (argv[1] if len(argv) > 1 else ""), argv[2:]
        if not log_path or log_path.startswith("-"):
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
            _serve(argv, wfd, log_path)
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
