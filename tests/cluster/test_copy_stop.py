"""Stopping the disk copies of an import and of a failover, on the local cluster.

An import (of an export of this cluster, and of one in Ganeti's format: no
manifest.json) and a failover of a ``file`` instance are stopped mid-copy:
SIGTERM of an in-process ``gnt-lv``, ``job cancel`` and Ctrl-C of a job of
the master daemon. Each must end as canceled (exit status 1, job status
``canceled``) with no copy process or node-to-node SSH session left on any
node and a true state: after an import no instance in the configuration
and no disk directory on the target; after a failover the instance on its
source in the configuration and on disk (the source image unchanged), no
copy on the target. A SIGHUP (a dropped session) does not stop a failover:
it finishes.

One stopped instance (``file``, no guest boots) on node1, whose disk holds
16 MiB of random data, and its export on node2 serve the module, in file
order. The copies are slowed to 1 MiB/s by a token bucket on the sending
node's interface (``tc``), so that they are stopped halfway. About 90 s
besides the cluster's start.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
from gnt_helpers import node, process_argvs
from migrate_helpers import GNT_LV, make_instance, remove_instance
from support.masterd import start_program

from ganeti_lv import constants, objects
from ganeti_lv.client import Client
from ganeti_lv.config import ConfigStore
from ganeti_lv.hypervisor.libvirt import LibvirtNodeOps
from ganeti_lv.master import daemon as masterd
from ganeti_lv.master.jobs import JOB_STATUS_CANCELED, JobStore
from ganeti_lv.node.transport import node_call
from ganeti_lv.opcodes import OpBackupExport

pytestmark = [pytest.mark.cluster, pytest.mark.faults, pytest.mark.timeout(300)]

NAME = "stopcopy"
NEW = "stopcopy2"  # what the imports would create
GANETI = "stopcopyg"  # the export in Ganeti's format
MiB = 1024 * 1024


class Env:
    def __init__(self, devcluster: Any) -> None:
        self.devcluster = devcluster
        self.data_dir = devcluster.data_dir
        self.config = ConfigStore(self.data_dir)
        self.ops = LibvirtNodeOps(self.data_dir)
        self.n1, self.n2, self.n3 = sorted(self.config.node_names())
        cluster = self.config.get_cluster()
        self.export_dir = cluster.export_dir
        inst = objects.Instance(name=NAME, primary_node=self.n1, disk_template="file")
        self.disk = objects.disk_path(cluster, inst, 0)
        probe = objects.Instance(name=NEW, primary_node=self.n3, disk_template="file")
        self.new_dir = objects.disk_dir(cluster, probe)

    def node(self, name: str) -> objects.Node:
        return node(self.config, name)

    def sh(self, where: str, script: str) -> str:
        res = self.ops.run_command(self.node(where), ["sh", "-c", script])
        assert res.exit_status == 0, res.output
        return res.stdout

    def gnt(self, *argv: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [GNT_LV, "--data-dir", self.data_dir, *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def disk_sum(self, where: str) -> str:
        """sha256 of the instance's disk on ``where`` ("" when it has none)."""
        return self.sh(where, f"[ -e {self.disk} ] && sha256sum {self.disk} || true")[:64]

    def last_job(self) -> Any:
        return JobStore(f"{self.data_dir}/jobs").list()[-1]


@pytest.fixture(scope="module")
def env(devcluster: Any) -> Iterator[Env]:
    """NAME stopped on node1 with 16 MiB of data; its export on node2, and a Ganeti-format copy."""
    e = Env(devcluster)
    try:
        make_instance(
            e.config, e.ops, NAME, constants.DT_FILE, e.n1, "52:54:00:5e:79:01", start=False
        )
        e.sh(
            e.n1,
            f"head -c {16 * MiB} /dev/urandom | dd of={e.disk} bs=1M seek=16 conv=notrunc"
            " 2>/dev/null",
        )
        with Client(data_dir=e.data_dir, node_ops=e.ops) as client:
            client.submit(OpBackupExport(instance_name=NAME, target_node=e.n2))
        # Ganeti's exports carry no manifest.json: the import computes the checksum
        e.sh(
            e.n2,
            f"cp -a {e.export_dir}/{NAME} {e.export_dir}/{GANETI}"
            f" && rm {e.export_dir}/{GANETI}/manifest.json",
        )
        yield e
    finally:
        try:
            for name in (NAME, NEW):
                remove_instance(e.config, e.ops, name, constants.DT_FILE)
            node_call(e.ops.export_remove, e.node(e.n2), e.config.get_cluster(), NAME)
            e.sh(e.n2, f"rm -rf {e.export_dir}/{GANETI}")
        finally:
            e.ops.close()


@contextlib.contextmanager
def _slowed(e: Env, where: str) -> Iterator[None]:
    """What ``where`` sends leaves at 1 MiB/s (a token bucket on its interface)."""
    dev = ["dev", "eth0", "root"]
    e.devcluster.node_exec(
        where, ["tc", "qdisc", "replace", *dev, "tbf", "rate", "8mbit", "burst", "32kb",
                "latency", "1s"],
    )  # fmt: skip
    try:
        yield
    finally:
        e.devcluster.node_exec(where, ["tc", "qdisc", "del", *dev], check=False)


def _copy_processes(path: str) -> list[int]:
    """PIDs of the copy helpers (sender, receiver) and the ssh between them writing ``path``.

    The nodes are namespaces of this machine: their processes are in /proc.
    """
    marks = (b"recv", b"send", b"send-on-go")
    found = []
    target = path.encode()
    for pid, argv in process_argvs():
        copying = argv[:1] == [b"ssh"] or any(a in marks for a in argv)
        if copying and any(target in a for a in argv):
            found.append(pid)
    return found


def _wait_mid_copy(e: Env, target: str, path: str) -> None:
    """Until the receiver on ``target`` has written data into ``path``'s partial file."""
    directory, name = path.rsplit("/", 1)
    deadline = time.monotonic() + 90
    while not e.sh(target, f"find {directory} -name '{name}.part.*' -size +0 2>/dev/null || true"):
        assert time.monotonic() < deadline, "the copy never started"
        time.sleep(0.2)  # a file on a node: nothing to wait on


def _no_copy_left(path: str) -> None:
    deadline = time.monotonic() + 15
    while _copy_processes(path):
        assert time.monotonic() < deadline, f"copy processes left: {_copy_processes(path)}"
        time.sleep(0.2)  # the receiver ends when its stream does


@contextlib.contextmanager
def _daemon(e: Env) -> Iterator[int]:
    res = start_program(e.data_dir)
    assert res.returncode == 0, res.stderr
    pid = masterd.read_pid(e.data_dir)
    assert pid is not None
    try:
        yield pid
    finally:
        masterd.stop(e.data_dir)


def _stop(e: Env, args: list[str], how: str, target: str, path: str) -> tuple[str, str]:
    """Run ``gnt-lv args``, stop it mid-copy ``how`` and check that it stopped promptly.

    Its stdout and stderr; it exited 1 and its job is canceled.
    """
    if how == "sigterm":
        assert masterd.read_pid(e.data_dir) is None  # gnt-lv runs the job itself
        proc = e.gnt(*args)
        try:
            _wait_mid_copy(e, target, path)
            asked = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert e.last_job().pid == proc.pid
        assert "stopping the operation safely" in err
    else:
        with _daemon(e) as daemon_pid:
            if how == "job-cancel":
                submitted = e.gnt(*args, "--submit")
                out, err = submitted.communicate(timeout=60)
                assert submitted.returncode == 0 and out.startswith("JobID: "), (out, err)
                job_id = out.split()[1]
                _wait_mid_copy(e, target, path)
                asked = time.monotonic()
                canceled = e.gnt("job", "cancel", job_id)
                assert canceled.wait(timeout=60) == 0, canceled.communicate()
                proc = e.gnt("job", "watch", job_id)
            else:
                proc = e.gnt(*args)
                _wait_mid_copy(e, target, path)
                asked = time.monotonic()
                proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=120)
            assert e.last_job().pid == daemon_pid
    took = time.monotonic() - asked
    assert proc.returncode == 1, (out, err)
    assert e.last_job().status == JOB_STATUS_CANCELED
    # the rest of 16 MiB at 1 MiB/s would take longer
    assert took < 10, f"{took:.1f} s from the cancel to the end"
    return out, err


@pytest.mark.parametrize(
    ("how", "export"),
    [("sigterm", NAME), ("job-cancel", GANETI), ("ctrl-c", NAME)],
    ids=["sigterm", "job-cancel-ganeti-format", "ctrl-c"],
)
def test_a_stopped_import_leaves_no_instance_and_no_disk(env: Env, how: str, export: str) -> None:
    new_disk = f"{env.new_dir}/disk0.img"
    args = ["backup", "import", "-n", env.n3, "--src-node", env.n2, "--src-dir", export,
            "--no-start", NEW]  # fmt: skip
    with _slowed(env, env.n2):
        out, err = _stop(env, args, how, env.n3, new_disk)
    assert f"Import of {NEW} from {env.n2}:" in err, (out, err)
    assert "canceled" in err and "while copying disk/0" in err, (out, err)
    _no_copy_left(new_disk)
    assert env.config.get_instance(NEW) is None
    assert env.sh(env.n3, f"ls -d {env.new_dir} 2>/dev/null || true") == ""
    assert env.ops.instance_info(env.node(env.n3), NEW) is None
    # the export was only read
    listing = env.sh(env.n2, f"ls -A {env.export_dir}/{export}").split()
    assert "disk0.img" in listing and "config.ini" in listing


@pytest.mark.parametrize("how", ["sigterm", "job-cancel", "ctrl-c"])
def test_a_stopped_failover_leaves_the_instance_on_its_source(env: Env, how: str) -> None:
    before = env.disk_sum(env.n1)
    assert before
    args = ["instance", "failover", "-f", "-n", env.n2, NAME]
    with _slowed(env, env.n1):
        out, err = _stop(env, args, how, env.n2, env.disk)
    assert f"Failover of {NAME} to {env.n2} canceled" in err, (out, err)
    assert f"the copies on {env.n2} were removed" in err, (out, err)
    _no_copy_left(env.disk)
    inst = env.config.get_instance(NAME)
    assert inst is not None and inst.primary_node == env.n1
    assert env.disk_sum(env.n1) == before
    assert env.sh(env.n2, f"ls -d {env.disk.rsplit('/', 1)[0]} 2>/dev/null || true") == ""
    assert env.ops.instance_info(env.node(env.n2), NAME) is None


def test_sighup_does_not_stop_a_failover(env: Env) -> None:
    before = env.disk_sum(env.n1)
    with _slowed(env, env.n1):
        proc = env.gnt("instance", "failover", "-f", "-n", env.n2, NAME)
        try:
            _wait_mid_copy(env, env.n2, env.disk)
            proc.send_signal(signal.SIGHUP)
            out, err = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 0, (out, err)
    inst = env.config.get_instance(NAME)
    assert inst is not None and inst.primary_node == env.n2
    assert env.disk_sum(env.n2) == before and env.disk_sum(env.n1) == ""
