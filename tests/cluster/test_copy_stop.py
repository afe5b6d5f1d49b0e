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
its copy goes on and it finishes.

One stopped instance (``file``, no guest boots) on node1, whose disk holds
16 MiB of random data, and its export on node2 serve the module, in file
order. The copies are slowed to 1 MiB/s by a token bucket on the sending
node's interface (``tc``), so that they are stopped halfway. About 30 s
besides the cluster's start.
"""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Iterator
from functools import partial
from typing import Any

import pytest
from migrate_helpers import make_instance, remove_instance
from stop_helpers import (
    ClusterEnv,
    daemon,
    gnt_process,
    last_job,
    signal_when_ready,
    wait_no_copy_left,
    wait_part_file,
)

from ganeti_lv import constants, objects
from ganeti_lv.client import Client
from ganeti_lv.constants import JOB_STATUS_CANCELED
from ganeti_lv.master import daemon as masterd
from ganeti_lv.node.transport import node_call
from ganeti_lv.opcodes import OpBackupExport

pytestmark = [pytest.mark.cluster, pytest.mark.faults, pytest.mark.timeout(300)]

NAME = "stopcopy"
NEW = "stopcopy2"  # what the imports would create
GANETI = "stopcopyg"  # the export in Ganeti's format
MiB = 1024 * 1024


class Env(ClusterEnv):
    def __init__(self, devcluster: Any) -> None:
        super().__init__(devcluster)
        cluster = self.config.get_cluster()
        inst = objects.Instance(name=NAME, primary_node=self.n1, disk_template="file")
        self.disk = objects.disk_path(cluster, inst, 0)
        probe = objects.Instance(name=NEW, primary_node=self.n3, disk_template="file")
        self.new_dir = objects.disk_dir(cluster, probe)

    def disk_sum(self, where: str) -> str:
        """sha256 of the instance's disk on ``where`` ("" when it has none)."""
        return self.sh(where, f"[ -e {self.disk} ] && sha256sum {self.disk} || true")[:64]


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


def _stop(e: Env, args: list[str], how: str, target: str, path: str) -> tuple[str, str]:
    """Run ``gnt-lv args``, stop it while it copies ``path`` to ``target`` ``how``.

    Its stdout and stderr, once checked that it stopped promptly, exited 1
    and that its job is canceled.
    """
    mid_copy = partial(wait_part_file, e.sh, target, path)
    if how == "sigterm":
        assert masterd.read_pid(e.data_dir) is None  # gnt-lv runs the job itself
        proc = gnt_process(e.data_dir, *args)
        out, err, took = signal_when_ready(proc, mid_copy, signal.SIGTERM)
        assert last_job(e.data_dir).pid == proc.pid
        assert "stopping the operation safely" in err
    else:
        with daemon(e.data_dir) as daemon_pid:
            if how == "job-cancel":
                submitted = gnt_process(e.data_dir, *args, "--submit")
                out, err = submitted.communicate(timeout=60)
                assert submitted.returncode == 0 and err.startswith("JobID: "), (out, err)
                job_id = err.split()[1]  # "JobID: N" on stderr, as Ganeti's
                mid_copy()
                canceled = gnt_process(e.data_dir, "job", "cancel", job_id)
                assert canceled.wait(timeout=60) == 0, canceled.communicate()
                asked = time.monotonic()  # the request is recorded: the job stops from here
                proc = gnt_process(e.data_dir, "job", "watch", job_id)
                out, err = proc.communicate(timeout=120)
                took = time.monotonic() - asked
            else:
                proc = gnt_process(e.data_dir, *args)
                out, err, took = signal_when_ready(proc, mid_copy, signal.SIGINT)
            assert last_job(e.data_dir).pid == daemon_pid
    assert proc.returncode == 1, (out, err)
    assert last_job(e.data_dir).status == JOB_STATUS_CANCELED
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
    args = ["backup", "import", "-n", env.n3, "--src-node", env.n2, "--src-dir", export, NEW]
    with _slowed(env, env.n2):
        out, err = _stop(env, args, how, env.n3, new_disk)
    assert f"Import of {NEW} from {env.n2}:" in err, (out, err)
    assert "canceled" in err and "while copying disk/0" in err, (out, err)
    wait_no_copy_left(new_disk)
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
    wait_no_copy_left(env.disk)
    inst = env.config.get_instance(NAME)
    assert inst is not None and inst.primary_node == env.n1
    assert env.disk_sum(env.n1) == before
    assert env.sh(env.n2, f"ls -d {env.disk.rsplit('/', 1)[0]} 2>/dev/null || true") == ""
    assert env.ops.instance_info(env.node(env.n2), NAME) is None


def _part_size(e: Env, where: str, path: str) -> int:
    """Bytes written so far into ``path``'s partial file on ``where`` (0 when there is none).

    Its allocated size: the receiver sets the file's length first.
    """
    out = e.sh(where, f"stat -c %b {path}.part.* 2>/dev/null || true")
    return sum(int(blocks) * 512 for blocks in out.split())


def test_sighup_does_not_stop_a_failover(env: Env) -> None:
    """The copy goes on after the SIGHUP (it is let run at full speed once it grew by 2 MiB)."""
    before = env.disk_sum(env.n1)
    proc = gnt_process(env.data_dir, "instance", "failover", "-f", "-n", env.n2, NAME)
    try:
        with _slowed(env, env.n1):
            wait_part_file(env.sh, env.n2, env.disk)
            proc.send_signal(signal.SIGHUP)
            start = _part_size(env, env.n2, env.disk)
            deadline = time.monotonic() + 20
            while _part_size(env, env.n2, env.disk) < start + 2 * MiB:
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline, "the copy did not go on after the SIGHUP"
                time.sleep(0.2)  # a file on a node: nothing to wait on
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, (out, err)
    inst = env.config.get_instance(NAME)
    assert inst is not None and inst.primary_node == env.n2
    assert env.disk_sum(env.n2) == before and env.disk_sum(env.n1) == ""
