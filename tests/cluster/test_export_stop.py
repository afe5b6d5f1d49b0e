"""Stopping an export safely, and two exports to one node, on the local cluster.

A live export stopped mid-copy (SIGTERM of an in-process ``gnt-lv``; ``job
cancel`` and Ctrl-C of a job of the master daemon) must leave the guest
running on its own disk (no overlay in its disk chain, ``virsh
domblklist``), no ``NAME.new`` on the target, the earlier export intact, no
copy process on either node, and end as canceled (exit status 1, job status
``canceled``). Two exports to one node whose sum does not fit: the second is
refused up front (ECODE_NORES naming the node, the export dir and the
sizes); alone it succeeds.

One 128 MiB guest (``file`` disk on node1) serves the module, in file order;
the copies are slowed to 1 MiB/s so that they are stopped halfway.
"""

from __future__ import annotations

import signal
import subprocess
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from migrate_helpers import (
    assert_alive,
    console_size,
    make_instance,
    remove_instance,
    wait_tick_above,
)
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
from ganeti_lv.cancel import Cancellation
from ganeti_lv.client import Client
from ganeti_lv.constants import JOB_STATUS_CANCELED
from ganeti_lv.errors import ECODE_NORES, OperationCanceled, OpPrereqError
from ganeti_lv.master import daemon as masterd
from ganeti_lv.node.transport import node_call
from ganeti_lv.opcodes import OpBackupExport, OpInstanceStartup

pytestmark = [pytest.mark.cluster, pytest.mark.min_nodes(3), pytest.mark.timeout(400)]

NAME = "stopexp"
OTHERS = ("stopexpa", "stopexpb")  # stopped instances (no guest runs) for the space test
MiB = 1024 * 1024


class Env(ClusterEnv):
    def gnt(self, *argv: str) -> subprocess.Popen[str]:
        return gnt_process(self.data_dir, *argv)

    def export_sum(self) -> str:
        return self.sh(self.n2, f"sha256sum {self.export_dir}/{NAME}/disk0.img").split()[0]

    def last_job(self) -> Any:
        return last_job(self.data_dir)


@pytest.fixture(scope="module")
def env(devcluster: Any) -> Iterator[Env]:
    """The guest running on node1 and a complete export of it on node2.

    Its disk holds 16 MiB of random data besides what the guest writes, so
    that a copy at 1 MiB/s runs for many seconds.
    """
    e = Env(devcluster)
    try:
        inst = make_instance(
            e.config, e.ops, NAME, constants.DT_FILE, e.n1, "52:54:00:5e:78:01", start=False
        )
        _fill(e, NAME, objects.disk_path(e.config.get_cluster(), inst, 0), 16)
        with Client(data_dir=e.data_dir, node_ops=e.ops) as client:
            client.submit(OpInstanceStartup(instance_name=NAME))
            wait_tick_above(e.ops, e.node(e.n1), NAME, 2)
            client.submit(OpBackupExport(instance_name=NAME, target_node=e.n2, shutdown=False))
        yield e
    finally:
        try:
            for name in (NAME, *OTHERS):
                remove_instance(e.config, e.ops, name, constants.DT_FILE)
                for where in (e.n2, e.n3):
                    node_call(e.ops.export_remove, e.node(where), e.config.get_cluster(), name)
        finally:
            e.ops.close()


def _fill(e: Env, name: str, path: str, mib: int) -> None:
    """``mib`` MiB of random data at 16 MiB into the disk (the test guest uses neither)."""
    e.sh(
        e.n1,
        f"head -c {mib * MiB} /dev/urandom | dd of={path} bs=1M seek=16 conv=notrunc 2>/dev/null",
    )


def _listing(e: Env, node: str) -> list[str]:
    """The export dir of ``node`` (hidden files too) but the lock files of the node-side
    scripts (``exportdir.lock_file``)."""
    names = e.sh(node, f"ls -A {e.export_dir}").split()
    return [n for n in names if not (n.startswith(".") and n.endswith(".lock"))]


def _wait_mid_copy(e: Env, target: str, name: str = NAME) -> None:
    """Until the receiver on ``target`` has written data of ``name``'s copy."""
    wait_part_file(e.sh, target, f"{e.export_dir}/{name}.new/disk0.img")


def _assert_stopped_safely(e: Env, previous: str, mark: int) -> None:
    wait_no_copy_left(f"/{NAME}.new/")
    info = e.ops.instance_info(e.node(e.n1), NAME)
    inst = e.config.get_instance(NAME)
    assert info is not None and inst is not None
    assert info.state == constants.DOMSTATE_RUNNING
    base = objects.disk_path(e.config.get_cluster(), inst, 0)
    assert info.overlays == [] and info.disk_paths == [base]
    blk = e.devcluster.virsh(e.n1, "domblklist", NAME)
    assert base in blk and ".overlay" not in blk, blk
    assert inst.admin_state == constants.ADMINST_UP
    listing = _listing(e, e.n2)
    assert NAME in listing and f"{NAME}.new" not in listing, listing
    assert e.export_sum() == previous
    assert e.last_job().status == JOB_STATUS_CANCELED
    assert_alive(e.ops, e.node(e.n1), NAME, mark)


def test_sigterm_of_an_in_process_export_stops_it_safely(env: Env) -> None:
    assert masterd.read_pid(env.data_dir) is None  # gnt-lv runs the job itself
    previous, mark = env.export_sum(), console_size(env.ops, env.node(env.n1), NAME)
    proc = env.gnt("backup", "export", "--noshutdown", "--bandwidth-limit", "1", "-n", env.n2, NAME)
    out, err, _ = signal_when_ready(proc, lambda: _wait_mid_copy(env, env.n2), signal.SIGTERM)
    assert proc.returncode == 1, (out, err)
    assert "stopping the operation safely" in err
    assert f"Export of {NAME} to {env.n2} canceled (interrupted by the user) while" in err, err
    assert f"{NAME}.new removed" in err and "runs on its own disks" in err, err
    assert env.last_job().pid == proc.pid
    _assert_stopped_safely(env, previous, mark)


@pytest.mark.parametrize("how", ["job-cancel", "ctrl-c"])
def test_a_daemon_job_export_stops_safely(env: Env, how: str) -> None:
    previous, mark = env.export_sum(), console_size(env.ops, env.node(env.n1), NAME)
    args = ["backup", "export", "--noshutdown", "--bandwidth-limit", "1", "-n", env.n2, NAME]
    with daemon(env.data_dir) as daemon_pid:
        if how == "job-cancel":
            submitted = env.gnt(*args, "--submit")
            out, err = submitted.communicate(timeout=60)
            assert submitted.returncode == 0 and err.startswith("JobID: "), (out, err)
            job_id = err.split()[1]  # "JobID: N" on stderr, as Ganeti's
            _wait_mid_copy(env, env.n2)
            canceled = env.gnt("job", "cancel", job_id)
            assert canceled.wait(timeout=60) == 0, canceled.communicate()
            proc = env.gnt("job", "watch", job_id)
        else:
            proc = env.gnt(*args)
            _wait_mid_copy(env, env.n2)
            proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
        assert env.last_job().pid == daemon_pid
    assert proc.returncode == 1, (out, err)
    assert f"Export of {NAME} to {env.n2} canceled" in err, (out, err)
    _assert_stopped_safely(env, previous, mark)


def test_two_exports_to_one_node_cannot_both_take_its_space(env: Env) -> None:
    """A (64 MiB of data, copied at 1 MiB/s) runs to node3 when B (24 MiB) asks for room.

    node3's export dir (a tmpfs) has room for A and half of B: B fits
    in what is free while A has written only its first MiBs, and without
    the reservation it would start and one of them run out of space.
    """
    cluster = env.config.get_cluster()
    first, second = OTHERS
    sizes = {}
    for name, mib, mac in ((first, 64, "52:54:00:5e:78:02"), (second, 24, "52:54:00:5e:78:03")):
        inst = make_instance(env.config, env.ops, name, constants.DT_FILE, env.n1, mac, start=False)
        path = objects.disk_path(cluster, inst, 0)
        _fill(env, name, path, mib)
        sizes[name] = int(env.sh(env.n1, f"stat -c %b {path}")) * 512
    room = sizes[first] + sizes[second] // 2
    env.devcluster.node_exec(env.n3, ["mkdir", "-p", env.export_dir])
    env.devcluster.node_exec(
        env.n3, ["mount", "-t", "tmpfs", "-o", f"size={room // 1024}k", "tmpfs", env.export_dir]
    )
    cancel = Cancellation()
    errors: list[BaseException] = []
    client = Client(data_dir=env.data_dir, node_ops=env.ops)

    def run_first() -> None:
        op = OpBackupExport(instance_name=first, target_node=env.n3, bandwidth_limit=1)
        try:
            client.submit(op, cancel=cancel)
        except BaseException as err:  # noqa: BLE001
            errors.append(err)

    thread = threading.Thread(target=run_first)
    thread.start()
    try:
        _wait_mid_copy(env, env.n3, first)
        with pytest.raises(OpPrereqError) as refused:
            client.submit(OpBackupExport(instance_name=second, target_node=env.n3))
        text = str(refused.value)
        assert refused.value.ecode == ECODE_NORES, text
        assert f"Not enough space in the export dir {env.export_dir} of {env.n3}:" in text
        assert f"{sizes[second] // MiB} MiB needed for {second}, " in text
        assert f"reserved by the jobs writing to it: {first} (" in text, text
        listing = _listing(env, env.n3)
        assert listing == [f"{first}.new"]  # nothing of the refused one
        cancel.request("test")
        thread.join(120)
        assert len(errors) == 1 and isinstance(errors[0], OperationCanceled), errors
        # alone it fits
        client.submit(OpBackupExport(instance_name=second, target_node=env.n3))
        listing = _listing(env, env.n3)
        assert listing == [second]
    finally:
        cancel.request("test ends")
        thread.join(120)
        client.close()
        env.devcluster.node_exec(env.n3, ["umount", env.export_dir], check=False)
