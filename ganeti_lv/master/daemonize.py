"""Setting up the processes of ganeti_lv's programs.

Detaching a process from the one that started it (the master daemon, the
reaper), and raising the open-files limit (the master daemon, gnt-lv).
"""

from __future__ import annotations

import contextlib
import os
import resource

# The detached process's umask: what a root shell and a service manager
# (systemd's default) give, so that the files the daemon creates without a
# mode of their own (its pid file and log, directories in the data dir) do
# not depend on who started it; the others have explicit modes.
DAEMON_UMASK = 0o022


def daemonize(ready_r: int, ready_w: int) -> None:
    """Detach (double fork, new session); the caller's process waits for "ready".

    The original process exits once the detached one writes ``b"ready"`` to
    ``ready_w`` (status 0) or closes it without doing so (status 1). The
    detached process keeps no descriptor of its starter but stdin, stdout,
    stderr and ``ready_w``: an inherited lock, pipe or socket (an operator's
    ``flock``, an SSH session) is not held for the daemon's lifetime. Nor
    is its starter's working directory (a file system the operator would
    unmount): it works in "/" (relative paths must be resolved before), with
    DAEMON_UMASK.
    """
    if os.fork() > 0:
        os.close(ready_w)
        with os.fdopen(ready_r, "rb") as ready:
            word = ready.read()
        os._exit(0 if word == b"ready" else 1)
    os.close(ready_r)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    os.chdir("/")
    os.umask(DAEMON_UMASK)
    os.closerange(3, ready_w)
    os.closerange(ready_w + 1, os.sysconf("SC_OPEN_MAX"))


def detach_stdio() -> None:
    """Point stdin, stdout and stderr at /dev/null."""
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)


def raise_open_files_limit() -> None:
    """Raise this process's soft limit of open files to its hard limit.

    A job that takes every lock of a level (``cluster verify``: every
    instance name ever locked) holds one open file per lock; the soft limit
    service managers and shells set (1024) is reached with about a thousand
    instances, the hard limit (systemd: 524288) is not. A limit that cannot
    be raised is left as it is.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):  # an unlimited hard limit, say
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
