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
are gone). Linux only.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys

from ganeti_lv.master.daemonize import detach_stdio

PR_SET_CHILD_SUBREAPER = 36


def _become_subreaper() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


def reap_forever() -> None:
    """Wait for children (own and adopted) until there are none."""
    while True:
        try:
            os.wait()
        except ChildProcessError:
            return
        except InterruptedError:  # pragma: no cover - PEP 475 retries
            continue


def _serve(argv: list[str], status_fd: int) -> None:
    """The detached side: start the daemon, report, then reap."""
    os.setsid()
    _become_subreaper()
    try:
        res = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, check=False)
        code, err = res.returncode, res.stderr + res.stdout
    except OSError as exc:
        code, err = 127, f"{argv[0]}: {exc}".encode()
    with os.fdopen(status_fd, "wb") as status:
        status.write(b"%d\n" % code + err)
    detach_stdio()
    if code == 0:
        reap_forever()


def main(argv: list[str]) -> int:
    """Run ``argv`` (a daemonising command) below a detached subreaper."""
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        sys.stderr.write("usage: python -m ganeti_lv.devcluster.reaper -- COMMAND...\n")
        return 2
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(rfd)
        try:
            _serve(argv, wfd)
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
