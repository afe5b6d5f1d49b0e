"""Who runs a job: a process's identity as the job log records it.

A job records the pid of its process with the process's start time (pids
are reused), the boot it ran in and its pid namespace; together they tell
whether the process that recorded a job still runs (``process_alive``).
"""

from __future__ import annotations

import functools
import os

_BOOT_ID_FILE = "/proc/sys/kernel/random/boot_id"


@functools.cache
def boot_id() -> str | None:
    """This boot's id (the kernel's, it changes on every boot), or None where there is none."""
    try:
        with open(_BOOT_ID_FILE, encoding="ascii") as fobj:
            return fobj.read().strip() or None
    except OSError:
        return None


def pid_namespace() -> int | None:
    """This process's pid namespace (its inode), or None where it cannot be read."""
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return None


def process_start_time(pid: int) -> int | None:
    """The start time (clock ticks since boot) of process ``pid``, or None if gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fobj:
            stat = fobj.read()
    except OSError:
        return None
    # The command name may contain spaces; fields resume after the last ')'.
    fields = stat[stat.rfind(")") + 2 :].split()
    if fields[0] in ("Z", "X"):  # zombie or dead: the process is gone
        return None
    return int(fields[19])


def process_alive(pid: int, start_time: int | None = None) -> bool:
    """True if ``pid`` runs (and, when given, started at ``start_time``: no pid reuse)."""
    if pid <= 0:
        return False
    if os.path.isdir("/proc/self"):
        current = process_start_time(pid)
        if current is None:
            return False
        return start_time is None or current == start_time
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
