"""Start, check and stop a node's daemons (virtlogd, libvirtd, sshd).

Daemons run inside a node's namespaces (entered through its holder process)
and write their pid files into the node's /run/libvirt, which is backed by a
host directory, so the host finds them by PID.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time

from ganeti_lv.devcluster import netns
from ganeti_lv.devcluster.layout import (
    LIBVIRT_PORTS,
    LIBVIRT_SOCK,
    PIDFILES,
    REAPER_LOG,
    NodeLayout,
)
from ganeti_lv.devcluster.reaper import reaper_argv
from ganeti_lv.errors import OpExecError, OpPrereqError

# daemons that take their pid file with a lock: a second one fails to start
PIDFILE_LOCKERS = ("virtlogd", "libvirtd")

DAEMON_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
}


def daemon_argv(node: NodeLayout, name: str) -> list[str]:
    """The command starting daemon ``name`` on the node (it daemonises, writes its pid file).

    Below a subreaper, as on a real node below its init: a stopped qemu or
    an orphan of an SSH session is reaped at once, how the daemon ended is
    on record, and a libvirtd that crashed is started again, as Debian's
    libvirtd.service restarts it (see ganeti_lv.devcluster.reaper).
    """
    commands = {
        "virtlogd": ["virtlogd", "-d", "-p", PIDFILES["virtlogd"]],
        "libvirtd": ["libvirtd", "-d", "--listen", "-p", PIDFILES["libvirtd"]]
        + ["-f", "/etc/libvirt/libvirtd.conf"],
        "sshd": ["/usr/sbin/sshd", "-f", os.path.join(node.sshd_dir, "sshd_config")],
    }
    if name not in commands:
        raise OpPrereqError(f"Unknown daemon {name!r}", "wrong_input")
    restart_pidfile = PIDFILES[name] if name == "libvirtd" else None
    return reaper_argv(commands[name], REAPER_LOG, restart_pidfile)


def pidfile(node: NodeLayout, name: str) -> str:
    """Host-side path of a daemon's pid file."""
    return node.host_path(PIDFILES[name])


def daemon_pid(node: NodeLayout, name: str) -> int | None:
    """PID of a running daemon of the node, else None.

    The pid file's process must be alive, in the node's netns and named like
    the daemon: a daemon that was killed leaves its pid file, and on a busy
    machine its PID soon belongs to another process.
    """
    pid = netns.read_pidfile(pidfile(node, name))
    if pid is None or not netns.proc_alive(pid):
        return None
    if netns.proc_ns(pid, "net") != netns.netns_link(node.netns):
        return None
    return pid if netns.proc_name(pid) == name else None


def daemon_end(node: NodeLayout, name: str, pid: int) -> str | None:
    """How the node's daemon ``name`` running as ``pid`` ended, as its reaper recorded it.

    None while it runs (or if it ended unrecorded).
    """
    try:
        with open(node.host_path(REAPER_LOG), encoding="utf-8", errors="replace") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return None
    ends = [line for line in lines if f" {name}[{pid}] " in line]
    return ends[-1] if ends else None


def _ready(node: NodeLayout, name: str) -> bool:
    """True when the daemon accepts connections."""
    if name == "virtlogd":
        return os.path.exists(node.host_path("/run/libvirt/virtlogd-sock"))
    if name == "libvirtd":  # its socket, and its TLS or (debugging) TCP listener
        return os.path.exists(node.host_path(LIBVIRT_SOCK)) and any(
            port_open(node.address, port) for port in LIBVIRT_PORTS.values()
        )
    return port_open(node.address, 22)


def port_open(address: str, port: int) -> bool:
    """True when a TCP connection to ``address``:``port`` succeeds within 0.5 s."""
    try:
        with socket.create_connection((address, port), timeout=0.5):
            return True
    except OSError:
        return False


def daemon_env(emulator_dir: str | None = None) -> dict[str, str]:
    """The daemons' environment; ``emulator_dir`` goes first on PATH (libvirtd finds qemu there)."""
    env = dict(DAEMON_ENV)
    if emulator_dir:
        env["PATH"] = f"{emulator_dir}:{env['PATH']}"
    return env


def start_daemon(
    node: NodeLayout,
    holder: int,
    name: str,
    timeout: float = 30,
    emulator_dir: str | None = None,
) -> int:
    """Start daemon ``name`` in the node unless it runs; return its PID once ready.

    ``emulator_dir`` holds the ``qemu-system-x86_64`` libvirtd is to run
    (see ``ganeti_lv.devcluster.emulator``); None: the system's.
    """
    pid = daemon_pid(node, name) or _await_starting(node, name, timeout)
    if pid is not None:
        return pid
    path = pidfile(node, name)
    if os.path.exists(path):
        os.unlink(path)
    if name == "virtlogd":
        sock = node.host_path("/run/libvirt/virtlogd-sock")
        if os.path.exists(sock):
            os.unlink(sock)
    res = subprocess.run(
        netns.nsenter_argv(holder, daemon_argv(node, name)),
        env=daemon_env(emulator_dir),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=timeout,
    )
    if res.returncode != 0:
        stderr = res.stderr.decode(errors="replace").strip()
        # another start of the daemon (a killed ``up``'s) took its pid file meanwhile
        try:
            pid = _await_starting(node, name, timeout)
        except OpExecError as err:
            raise OpExecError(f"{err}; this start of it failed: {stderr}") from err
        if pid is not None:
            return pid
        raise OpExecError(f"{name} on {node.name} failed to start: {stderr}")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = daemon_pid(node, name)
        if pid is not None and _ready(node, name):
            return pid
        time.sleep(0.05)
    raise OpExecError(f"{name} on {node.name} did not become ready within {timeout}s")


def _starting(node: NodeLayout, name: str) -> list[int]:
    """Processes named ``name`` in the node's netns whose parent is not: daemons.

    A netns belongs to one node of one cluster, so such a process was started
    for this node, maybe by an ``up`` killed while the daemon came up. The
    half of a daemon that forks to go to the background has a parent of its
    name. Only the daemons that lock a pid file (``PIDFILE_LOCKERS``) count:
    sshd's sessions are named ``sshd`` too and outlive it (below the reaper).
    """
    if name not in PIDFILE_LOCKERS:
        return []
    return [
        pid
        for pid in netns.pids_in_netns(node.netns)
        if netns.proc_name(pid) == name and netns.proc_name(netns.proc_parent(pid) or 0) != name
    ]


def _await_starting(node: NodeLayout, name: str, timeout: float) -> int | None:
    """The PID of daemon ``name`` once another start of it is done, or None if none runs.

    A second daemon started beside one that is still coming up would fail to
    take the pid file. Only ``PIDFILE_LOCKERS`` are awaited (see ``_starting``).
    """
    deadline = time.monotonic() + timeout
    while _starting(node, name):
        pid = daemon_pid(node, name)
        if pid is not None and _ready(node, name):
            return pid
        if time.monotonic() > deadline:
            raise OpExecError(
                f"{name} on {node.name} (PIDs {_starting(node, name)}) did not become ready"
                f" within {timeout}s"
            )
        time.sleep(0.05)
    return None


def stop_daemon(
    node: NodeLayout, name: str, sig: int = signal.SIGTERM, timeout: float = 10
) -> int | None:
    """Signal a node daemon and wait until it is gone; return the PID it had."""
    pid = daemon_pid(node, name)
    if pid is None:
        return None
    os.kill(pid, sig)
    if netns.wait_gone([pid], timeout):
        if sig == signal.SIGKILL:
            raise OpExecError(f"{name} ({pid}) on {node.name} survived SIGKILL")
        netns.kill_pids([pid], grace=0)
    return pid
