"""Helpers of the tests that stop an operation while it copies disks (export, import, failover).

``gnt_process`` starts ``gnt-lv`` as a program (so that it can be signalled);
``signal_when_ready`` sends it a signal once a condition holds;
``copy_processes`` finds the copy helpers and the node-to-node ssh of a copy
(the nodes are namespaces of this machine: their processes are in /proc);
``wait_part_file`` waits until a receiver wrote data; ``daemon`` runs the
master daemon for the data dir; ``ClusterEnv`` is what such a test module
holds of the cluster.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any

from gnt_helpers import node, process_argvs
from migrate_helpers import GNT_LV
from support.masterd import start_program

from ganeti_lv import objects
from ganeti_lv.config import ConfigStore
from ganeti_lv.hypervisor.libvirt import LibvirtNodeOps
from ganeti_lv.master import daemon as masterd
from ganeti_lv.master.jobs import JobStore

# What a node's shell answers: ``sh(node, script)`` -> stdout.
Shell = Callable[[str, str], str]


class ClusterEnv:
    """The cluster's configuration, node operations, three nodes and export dir."""

    def __init__(self, devcluster: Any) -> None:
        self.devcluster = devcluster
        self.data_dir = devcluster.data_dir
        self.config = ConfigStore(self.data_dir)
        self.ops = LibvirtNodeOps(self.data_dir)
        self.n1, self.n2, self.n3 = sorted(self.config.node_names())
        self.export_dir = self.config.get_cluster().export_dir

    def node(self, name: str) -> objects.Node:
        """The node ``name`` of the configuration."""
        return node(self.config, name)

    def sh(self, where: str, script: str) -> str:
        """Run ``script`` on node ``where`` (must succeed); its stdout."""
        res = self.ops.run_command(self.node(where), ["sh", "-c", script])
        assert res.exit_status == 0, res.output
        return res.stdout


def gnt_process(data_dir: str, *argv: str) -> subprocess.Popen[str]:
    """``gnt-lv --data-dir DATA_DIR ARGV...`` as a program, its output piped."""
    return subprocess.Popen(
        [GNT_LV, "--data-dir", data_dir, *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def last_job(data_dir: str) -> Any:
    """The newest job of the job log."""
    return JobStore(f"{data_dir}/jobs").list()[-1]


def signal_when_ready(
    proc: subprocess.Popen[str], ready: Callable[[], None], sig: int = signal.SIGTERM
) -> tuple[str, str, float]:
    """Send ``sig`` to ``proc`` once ``ready()`` returned; (stdout, stderr, seconds to its end)."""
    try:
        ready()
        sent = time.monotonic()
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=120)
        return out, err, time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def copy_processes(mark: str) -> list[int]:
    """PIDs of the copy helpers (sender, receiver) and the ssh between them whose
    command line holds ``mark`` (a path the copy reads or writes)."""
    helpers = (b"recv", b"send", b"send-on-go")
    found = []
    wanted = mark.encode()
    for pid, argv in process_argvs():
        copying = argv[:1] == [b"ssh"] or any(a in helpers for a in argv)
        if copying and any(wanted in a for a in argv):
            found.append(pid)
    return found


def wait_no_copy_left(mark: str, timeout: float = 15) -> None:
    """Until no copy process of ``mark`` is left (the receiver ends when its stream does)."""
    deadline = time.monotonic() + timeout
    while copy_processes(mark):
        assert time.monotonic() < deadline, f"copy processes left: {copy_processes(mark)}"
        time.sleep(0.2)  # processes of other namespaces: nothing to wait on


def wait_part_file(sh: Shell, target: str, path: str, timeout: float = 90) -> None:
    """Until the receiver on ``target`` has written data into ``path``'s partial file."""
    directory, name = path.rsplit("/", 1)
    deadline = time.monotonic() + timeout
    while not sh(target, f"find {directory} -name '{name}.part.*' -size +0 2>/dev/null || true"):
        assert time.monotonic() < deadline, "the copy never started"
        time.sleep(0.2)  # a file on a node: nothing to wait on


@contextlib.contextmanager
def daemon(data_dir: str) -> Iterator[int]:
    """The master daemon running for ``data_dir`` (its pid); stopped at the end."""
    res = start_program(data_dir)
    assert res.returncode == 0, res.stderr
    pid = masterd.read_pid(data_dir)
    assert pid is not None
    try:
        yield pid
    finally:
        masterd.stop(data_dir)
