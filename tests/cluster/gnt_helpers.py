"""Helpers for the instance lifecycle and cluster verify tests on the real cluster.

``Gnt`` runs ``gnt-lv`` in-process against the cluster's data dir (real
LibvirtNodeOps) and captures its output; ``console`` reads an instance's
serial console log on its node over SSH; ``wait_console`` polls it until a
predicate holds (a remote file has no event to wait on);
``interactive_console`` runs the installed ``gnt-lv instance console`` on a
terminal, as an operator would.
"""

from __future__ import annotations

import contextlib
import io
import os
import pty
import re
import select
import signal
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

from support.timeouts import scaled

from ganeti_lv import constants
from ganeti_lv.config import ConfigStore
from ganeti_lv.hypervisor.libvirt import LibvirtNodeOps
from ganeti_lv.hypervisor.libvirt.domxml import console_log_path
from ganeti_lv.node.transport import node_call
from ganeti_lv.objects import Node


class Gnt:
    """``gnt-lv`` on one data dir; each call returns (exit code, stdout, stderr)."""

    def __init__(self, data_dir: str) -> None:
        self.data_dir = data_dir

    def __call__(self, *argv: str) -> tuple[int, str, str]:
        from ganeti_lv.cli.main import main

        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["--data-dir", self.data_dir, *argv])
        return code, out.getvalue(), err.getvalue()

    def ok(self, *argv: str) -> str:
        """Run and assert success; return stdout."""
        code, out, err = self(*argv)
        assert code == 0, f"gnt-lv {' '.join(argv)} failed ({code}):\n{out}\n{err}"
        return out

    def status(self, name: str) -> str:
        """The instance's status column."""
        out = self.ok("instance", "list", "-o", "status", "--no-headers", name)
        return out.strip()


def node(config: ConfigStore, name: str) -> Node:
    """A node from the configuration (must exist)."""
    found = config.get_node(name)
    assert found is not None, name
    return found


def console(ops: LibvirtNodeOps, where: Node, name: str) -> str:
    """The instance's console log on ``where`` ("" when missing)."""
    res = ops.run_command(where, ["cat", console_log_path(name)])
    return res.stdout.replace("\r", "") if res.exit_status == 0 else ""


def wait_console(
    ops: LibvirtNodeOps,
    where: Node,
    name: str,
    predicate: Callable[[str], bool],
    timeout: float = 120.0,
) -> str:
    """Poll the console log until ``predicate(text)``; return the text.

    ``timeout`` is the local cluster's; it scales (support.timeouts).
    """
    deadline = time.monotonic() + scaled(timeout)
    text = ""
    while time.monotonic() < deadline:
        text = console(ops, where, name)
        if predicate(text):
            return text
        time.sleep(0.5)
    raise AssertionError(f"console of {name} on {where.name} never matched; tail:\n{text[-2000:]}")


def domain_state(ops: LibvirtNodeOps, where: Node, name: str) -> str | None:
    """The domain's state on ``where`` per libvirt, or None when undefined."""
    info = ops.instance_info(where, name)
    return None if info is None else info.state


def running_nodes(ops: LibvirtNodeOps, config: ConfigStore, name: str) -> list[str]:
    """Nodes whose libvirt runs the domain."""
    out = []
    for node_name in config.node_names():
        if domain_state(ops, node(config, node_name), name) == constants.DOMSTATE_RUNNING:
            out.append(node_name)
    return out


def purge_instance(ops: LibvirtNodeOps, config: ConfigStore, name: str, template: str) -> None:
    """Remove every trace of ``name`` (config, domains, images, console logs) everywhere."""
    from ganeti_lv.objects import Instance, disk_dir

    inst = config.get_instance(name)
    if inst is not None:
        config.remove_instance(name)
    cluster = config.get_cluster()
    probe = inst or Instance(name=name, primary_node="", disk_template=template)
    for node_name in config.node_names():
        where = node(config, node_name)
        node_call(ops.undefine_instance, where, name)
        node_call(ops.run_command, where, ["rm", "-rf", "--", disk_dir(cluster, probe)])
        node_call(ops.run_command, where, ["rm", "-f", "--", console_log_path(name)])


def cli_env_args(info: dict[str, Any], name: str, **kernel: Any) -> list[str]:
    """``-H`` and ``-B`` options for a small test guest."""
    from ganeti_lv.devcluster.guest import kernel_args

    guest = info["guest"]
    args = kernel_args(name, **kernel)
    return [
        "-B",
        "memory=128M,vcpus=1",
        "-H",
        f'kernel_path={guest["kernel"]},initrd_path={guest["initrd"]},kernel_args="{args}"',
    ]


def process_argvs() -> Iterator[tuple[int, list[bytes]]]:
    """(pid, argv) of every process of this machine (the nodes' too: they are namespaces)."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                yield int(pid), fh.read().split(b"\0")
        except OSError:
            continue


def interactive_console(
    data_dir: str, name: str, pattern: bytes, timeout: float
) -> tuple[int, str]:
    """``gnt-lv instance console NAME`` (the installed program) on a terminal: what the
    terminal shows until ``pattern`` appears (or ``timeout`` passes), then Ctrl-] to
    leave the console; the program's exit status and everything it showed."""
    program = os.path.join(os.path.dirname(sys.executable), "gnt-lv")
    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover - the child: never back into the test session
        try:
            os.execv(program, [program, "--data-dir", data_dir, "instance", "console", name])
        finally:
            os._exit(127)
    seen = bytearray()
    try:
        _read_until(fd, seen, lambda: re.search(pattern, seen) is not None, scaled(timeout))
        with contextlib.suppress(OSError):  # the program may have ended already
            os.write(fd, b"\x1d")  # Ctrl-]: virsh console leaves
        _read_until(fd, seen, lambda: False, scaled(30))  # to the end of the output
        return os.waitstatus_to_exitcode(_wait(pid, scaled(30))), seen.decode(errors="replace")
    finally:
        os.close(fd)


def _read_until(fd: int, seen: bytearray, done: Callable[[], bool], timeout: float) -> None:
    """Add what the terminal shows to ``seen`` until ``done()``, the terminal is closed or
    ``timeout`` seconds passed."""
    deadline = time.monotonic() + timeout
    while not done() and time.monotonic() < deadline:
        chunk = _read(fd, 0.5)
        if chunk is None:
            return
        seen += chunk


def _read(fd: int, wait: float) -> bytes | None:
    """What the terminal has within ``wait`` seconds (b""), None once it is closed."""
    ready, _, _ = select.select([fd], [], [], wait)
    if not ready:
        return b""
    try:
        return os.read(fd, 4096) or None
    except OSError:  # EIO: nothing has the terminal open any more
        return None


def _wait(pid: int, timeout: float) -> int:
    """The wait status of child ``pid``, killed (SIGKILL) if it has not ended in time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)
    return os.waitpid(pid, 0)[1]
