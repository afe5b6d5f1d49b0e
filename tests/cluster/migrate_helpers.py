"""Helpers of the migration cluster tests: the test guest, where it runs, CLI processes.

``where_running`` asks every online node's libvirt (never the
configuration) where the domain is; ``wait_single`` polls until exactly one
node has it (a domain a restarted libvirtd is still cleaning up has no event
to wait on). ``CliMigration`` runs the installed ``gnt-lv`` as a real process
so it can be interrupted or killed, and waits for its first progress line.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import signal
import subprocess
import sys
import time
from typing import Any

from gnt_helpers import console, node, purge_instance, wait_console
from support.clusterfixture import session_guest
from support.timeouts import scaled

from ganeti_lv import constants, objects
from ganeti_lv.config import ConfigStore
from ganeti_lv.devcluster.guest import kernel_args, kernel_faults
from ganeti_lv.errors import NodeUnreachable
from ganeti_lv.hypervisor.libvirt import LibvirtNodeOps

TICK_RE = re.compile(r"tick (\d+)")
PROGRESS_RE = re.compile(r"migration\s+[0-9.]+% of memory")


class InstanceEnv:
    """Config, fresh node operations and a client on the session's cluster, around
    one test instance (``name``)."""

    def __init__(self, devcluster: Any, name: str) -> None:
        from ganeti_lv.client import Client

        self.devcluster = devcluster
        self.name = name
        self.data_dir = devcluster.data_dir
        self.config = ConfigStore(self.data_dir)
        self.ops = LibvirtNodeOps(self.data_dir)
        self.client = Client(data_dir=self.data_dir, node_ops=self.ops)
        self.nodes = sorted(self.config.node_names())

    def node(self, name: str) -> objects.Node:
        """A node of the configuration."""
        return node(self.config, name)

    def primary(self) -> str:
        """The instance's primary node per the configuration."""
        inst = self.config.get_instance(self.name)
        assert inst is not None
        return inst.primary_node

    def other(self) -> str:
        """A node other than the primary (the next in order)."""
        nodes = self.nodes
        return nodes[(nodes.index(self.primary()) + 1) % len(nodes)]

    def close(self) -> None:
        """Close the libvirt and SSH connections."""
        self.ops.close()


def make_instance(
    config: ConfigStore,
    ops: LibvirtNodeOps,
    name: str,
    template: str,
    primary: str,
    mac: str,
    dirtymb: int = 32,
    start: bool = True,
) -> objects.Instance:
    """Create (and start) a 128 MiB test instance with a 4 MiB pattern and the dirtier."""
    kernel, initrd = session_guest()
    cluster = config.get_cluster()
    inst = objects.Instance(
        name=name,
        primary_node=primary,
        disk_template=template,
        disks=[objects.Disk(size=80)],
        nics=[objects.Nic(mac=mac, link=cluster.default_bridge)],
        beparams={"maxmem": 128, "minmem": 128, "vcpus": 1},
        hvparams={
            "kernel_path": kernel,
            "initrd_path": initrd,
            "kernel_args": kernel_args(name, patmb=4, dirtymb=dirtymb),
        },
        admin_state=constants.ADMINST_UP if start else constants.ADMINST_DOWN,
    )
    where = node(config, primary)
    ops.create_disks(where, cluster, inst)
    config.add_instance(inst)
    if start:
        ops.start_instance(where, cluster, inst)
    return inst


def remove_instance(config: ConfigStore, ops: LibvirtNodeOps, name: str, template: str) -> None:
    """Remove the test instance everywhere (config, domains, images, console logs)."""
    purge_instance(ops, config, name, template)


def ticks(ops: LibvirtNodeOps, where: objects.Node, name: str) -> list[int]:
    """Tick numbers in the console log of ``name`` on ``where``."""
    text = console(ops, where, name)
    return [int(m.group(1)) for m in map(TICK_RE.search, text.splitlines()) if m]


def wait_tick_above(
    ops: LibvirtNodeOps, where: objects.Node, name: str, above: int, timeout: float = 180
) -> int:
    """Poll the (remote) console until a tick above ``above`` shows; return it."""
    deadline = time.monotonic() + scaled(timeout)
    while time.monotonic() < deadline:
        found = ticks(ops, where, name)
        if found and found[-1] > above:
            return found[-1]
        time.sleep(0.5)
    raise AssertionError(f"no tick above {above} from {name} on {where.name}")


def console_size(ops: LibvirtNodeOps, where: objects.Node, name: str) -> int:
    """Current length of the console log of ``name`` on ``where`` (a mark)."""
    return len(console(ops, where, name))


def assert_alive(
    ops: LibvirtNodeOps, where: objects.Node, name: str, mark: int, timeout: float = 60
) -> None:
    """The guest survived: it ticks on ``where`` and its kernel reported no fault.

    Alive means a ``tick`` line the guest prints on ``where`` after this call
    (the console log is kept across migrations and a reset guest counts from
    1 again, so tick numbers are not compared), and no kernel error (see
    ``kernel_faults``) in the log after ``mark``. The local cluster runs a
    qemu whose TCG migration keeps guest memory intact (see
    ``ganeti_lv.devcluster.emulator``), so a guest that dies after a
    migration is a bug, under TCG as under KVM.
    """
    start = console_size(ops, where, name)
    try:
        wait_console(ops, where, name, lambda t: TICK_RE.search(t[start:]) is not None, timeout)
    except AssertionError:
        text = console(ops, where, name)[mark:]
        raise AssertionError(
            f"{name} silent on {where.name}; kernel: {kernel_faults(text)}; tail:\n{text[-1500:]}"
        ) from None
    text = console(ops, where, name)[mark:]
    assert not kernel_faults(text), f"{name} on {where.name}: {kernel_faults(text)}"


def where_running(config: ConfigStore, ops: LibvirtNodeOps, name: str) -> dict[str, str]:
    """Node -> domain state on every online node that knows the domain."""
    out: dict[str, str] = {}
    for node_name in sorted(config.node_names()):
        where = node(config, node_name)
        if where.offline:
            continue
        info = ops.instance_info(where, name)
        if info is not None:
            out[node_name] = info.state
    return out


def wait_single(config: ConfigStore, ops: LibvirtNodeOps, name: str, timeout: float = 90) -> str:
    """Wait until exactly one node runs the domain and no other node has it; return it.

    Asserts that the configuration names that node. A node that does not
    answer is asked again until the timeout (a libvirtd started again after a
    crash takes a moment to listen).
    """
    deadline = time.monotonic() + scaled(timeout)
    found: dict[str, str] = {}
    while time.monotonic() < deadline:
        try:
            found = where_running(config, ops, name)
        except NodeUnreachable as err:
            found = {"(no answer)": str(err)}
            time.sleep(0.5)
            continue
        running = [n for n, s in found.items() if s == constants.DOMSTATE_RUNNING]
        if len(running) == 1 and len(found) == 1:
            inst = config.get_instance(name)
            assert inst is not None
            assert inst.primary_node == running[0], (inst.primary_node, found)
            return running[0]
        time.sleep(0.5)
    raise AssertionError(f"{name} is not on exactly one node: {found}")


# the installed gnt-lv program, as an operator runs it
GNT_LV = os.path.join(os.path.dirname(sys.executable), "gnt-lv")


class CliMigration:
    """``gnt-lv instance migrate`` (the installed program) in a child process.

    To interrupt or kill it; it submits to the master daemon when one runs
    for the data dir, else runs the migration itself.
    """

    def __init__(self, data_dir: str, *args: str) -> None:
        argv = [GNT_LV, "--data-dir", data_dir]
        self.proc = subprocess.Popen(
            [*argv, "instance", "migrate", "-f", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.out = ""

    def wait_progress(self, timeout: float = 120) -> None:
        """Read stdout until the first progress line (the libvirt job runs)."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + scaled(timeout)
        fd = self.proc.stdout.fileno()
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 1.0)
            if not ready:
                continue
            chunk = os.read(fd, 65536).decode(errors="replace")
            if not chunk:
                break
            self.out += chunk
            if PROGRESS_RE.search(self.out):
                return
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)  # its stdout closed: it is ending
        ended = "" if self.proc.poll() is None else f" (gnt-lv exited {self.proc.returncode})"
        raise AssertionError(
            f"no progress line from the migration{ended}:\n{self.out}\nstderr:\n{self._stderr()}"
        )

    def _stderr(self) -> str:
        """All the child wrote to stderr, once it ended (for a failure's message)."""
        assert self.proc.stderr is not None
        if self.proc.poll() is None:
            return "(gnt-lv still runs)"
        return self.proc.stderr.read().decode(errors="replace")

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the child (only this process, by its PID)."""
        self.proc.send_signal(sig)

    def finish(self, timeout: float = 180) -> tuple[int, str, str]:
        """Wait for the end: (exit code, all stdout, stderr)."""
        out, err = self.proc.communicate(timeout=scaled(timeout))
        self.out += out.decode(errors="replace")
        return self.proc.returncode, self.out, err.decode(errors="replace")

    def kill(self) -> None:
        """SIGKILL the child if it still runs (test clean-up)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)


def install_hook(devcluster: Any, node_name: str, hooks_dir: str, script: str) -> str:
    """Install an executable hook script on a node; return its path."""
    path = f"{hooks_dir}/10-test"
    devcluster.node_exec(
        node_name,
        ["sh", "-c", f'mkdir -p "{hooks_dir}" && cat > "{path}" && chmod 755 "{path}"'],
        input=script.encode(),
    )
    return path
