"""The installed ``gnt-lv`` through the master daemon and without it, on the local cluster.

The daemon (``gnt-lv-masterd``, started as an operator would) takes the jobs
of ``gnt-lv``; without it ``gnt-lv`` runs them in its own process. Each
scenario runs both ways and must read the same: migrate, bad input, Ctrl-C,
a lock wait canceled, a live export, and a migration whose output goes away
(``| head -1``). One 128 MiB sharedfile guest with its 32 MiB dirtier is
used by the tests of this module, in file order. Each test leaves it running
on exactly one node, the one the configuration names.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
from gnt_helpers import node
from migrate_helpers import (
    GNT_LV,
    CliMigration,
    make_instance,
    remove_instance,
    ticks,
    wait_single,
    wait_tick_above,
    where_running,
)
from support import locks as held_locks
from support.masterd import start_program

from ganeti_lv import constants
from ganeti_lv.cli.submit import ABORT_REQUESTED
from ganeti_lv.config import ConfigStore
from ganeti_lv.constants import JOB_ACTIVE_STATUSES
from ganeti_lv.hypervisor.libvirt import LibvirtNodeOps
from ganeti_lv.master import daemon as masterd
from ganeti_lv.master.jobs import JobStore

pytestmark = pytest.mark.cluster

NAME = "mdguest"
BOTH_WAYS = ["daemon", "in-process"]


class Env:
    def __init__(self, devcluster: Any) -> None:
        self.data_dir = devcluster.data_dir
        self.config = ConfigStore(self.data_dir)
        self.ops = LibvirtNodeOps(self.data_dir)
        self.nodes = sorted(self.config.node_names())
        self.daemon_pid: int | None = None

    def start_daemon(self) -> None:
        res = start_program(self.data_dir)
        assert res.returncode == 0, res.stderr
        self.daemon_pid = masterd.read_pid(self.data_dir)
        assert self.daemon_pid is not None

    def stop_daemon(self) -> None:
        masterd.stop(self.data_dir)
        self.daemon_pid = None

    @contextlib.contextmanager
    def way(self, way: str) -> Iterator[None]:
        """Run the block with the daemon ("daemon") or without it ("in-process")."""
        if way == "daemon":
            yield
            return
        self.stop_daemon()
        try:
            yield
        finally:
            self.start_daemon()

    def gnt(self, *argv: str) -> subprocess.CompletedProcess[str]:
        """The installed ``gnt-lv`` as its own program (stdout is a pipe)."""
        return subprocess.run(
            [GNT_LV, "--data-dir", self.data_dir, *argv],
            capture_output=True,
            text=True,
            timeout=300,
        )

    def primary(self) -> str:
        inst = self.config.get_instance(NAME)
        assert inst is not None
        return inst.primary_node

    def other(self) -> str:
        return next(n for n in self.nodes if n != self.primary())

    def jobs(self) -> list[Any]:
        return JobStore(f"{self.data_dir}/jobs").list()

    def last_job(self) -> Any:
        return self.jobs()[-1]

    def check_job_ran(self, way: str, gnt_lv_pid: int | None = None) -> Any:
        """The last job, run by the daemon or (``way`` "in-process") by gnt-lv itself."""
        job = self.last_job()
        if way == "daemon":
            assert job.pid == self.daemon_pid
        else:
            assert job.pid != self.daemon_pid
            if gnt_lv_pid is not None:
                assert job.pid == gnt_lv_pid
        return job


@pytest.fixture(scope="module")
def env(devcluster: Any) -> Iterator[Env]:
    """The daemon running for the cluster's data dir, and the guest on the first node."""
    e = Env(devcluster)
    e.start_daemon()
    try:
        make_instance(
            e.config, e.ops, NAME, constants.DT_SHARED_FILE, e.nodes[0], "52:54:00:4d:44:01"
        )
        wait_tick_above(e.ops, node(e.config, e.nodes[0]), NAME, 2)
        yield e
    finally:
        try:
            remove_instance(e.config, e.ops, NAME, constants.DT_SHARED_FILE)
        finally:
            e.stop_daemon()
            e.ops.close()


def _untimed(text: str, *names: str) -> list[str]:
    """Feedback lines without their time stamp and progress, node names replaced."""
    lines = []
    for line in text.splitlines():
        if line[:3].isalpha() and line[24:25] == " ":
            line = line[25:]
        if line.startswith("migration ") and "% of memory" in line:
            continue
        for idx, name in enumerate(names):
            line = line.replace(name, f"<node{idx}>")
        lines.append(line)
    return lines


def test_gnt_lv_migrates_both_ways_with_the_same_output(env: Env) -> None:
    outputs = {}
    for way in BOTH_WAYS:
        with env.way(way):
            src, dst = env.primary(), env.other()
            before = max(ticks(env.ops, node(env.config, src), NAME))
            res = env.gnt("instance", "migrate", "-f", "-n", dst, NAME)
            assert res.returncode == 0, res.stderr
            assert "STEP 4/4 Finalising" in res.stdout
            assert "migration completed" in res.stdout
            assert env.check_job_ran(way).status == "success"
            assert env.primary() == dst
            assert where_running(env.config, env.ops, NAME) == {dst: constants.DOMSTATE_RUNNING}
            wait_tick_above(env.ops, node(env.config, dst), NAME, before)
            # the steps and the outcome (the policy's lines and figures vary by run)
            stable = [
                line
                for line in _untimed(res.stdout, src, dst)
                if line.startswith("STEP ") or " now runs on " in line
            ]
            assert len(stable) >= 5, res.stdout
            outputs[way] = (stable, res.stderr)
    assert outputs["daemon"] == outputs["in-process"]


def test_bad_input_reads_the_same_both_ways_and_changes_nothing(env: Env) -> None:
    serial = env.config.read().serial
    answers = {}
    for way in BOTH_WAYS:
        with env.way(way):
            to_itself = env.gnt("instance", "migrate", "-f", "-n", env.primary(), NAME)
            unknown = env.gnt("instance", "migrate", "-f", "nosuch")
            usage = env.gnt("instance", "migrate", "-f", "--migration-mode", "fast", NAME)
            answers[way] = [(r.returncode, r.stdout, r.stderr) for r in (to_itself, unknown, usage)]
    assert answers["daemon"] == answers["in-process"]
    (code, _, err), (code2, _, err2), (code3, _, err3) = answers["daemon"]
    assert code == 1 and "error type: wrong_state" in err
    assert code2 == 1 and "error type: unknown_entity" in err2
    assert code3 == 2 and "invalid choice" in err3
    assert env.config.read().serial == serial


@pytest.mark.parametrize("way", BOTH_WAYS)
def test_ctrl_c_of_gnt_lv_aborts_the_migration(env: Env, way: str) -> None:
    with env.way(way):
        src, dst = env.primary(), env.other()
        # 4 MiB/s: the 32 MiB dirtier keeps the migration going until it is stopped
        mig = CliMigration(env.data_dir, "-n", dst, "--migration-bandwidth", "4", NAME)
        try:
            mig.wait_progress()
            mig.signal(signal.SIGINT)
            code, out, err = mig.finish()
        finally:
            mig.kill()
        assert code == 1, out + err
        assert ABORT_REQUESTED in err and "aborted" in err.lower()
        assert env.check_job_ran(way, mig.proc.pid).status == "canceled"
        assert wait_single(env.config, env.ops, NAME) == src
        assert env.primary() == src
        before = max(ticks(env.ops, node(env.config, src), NAME))
        wait_tick_above(env.ops, node(env.config, src), NAME, before)


@pytest.mark.parametrize("way", BOTH_WAYS)
def test_ctrl_c_of_a_job_waiting_for_a_lock_cancels_it(env: Env, way: str) -> None:
    """The waiting migration never runs, though the lock becomes free."""
    with env.way(way):
        src, dst = env.primary(), env.other()
        serial = env.config.read().serial
        holder = held_locks.hold(env.data_dir, NAME)  # the test holds the instance
        waiting = subprocess.Popen(
            [GNT_LV, "--data-dir", env.data_dir, "instance", "migrate", "-f", "-n", dst, NAME],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            _wait(lambda: _active(env) == 1)
            waiting.send_signal(signal.SIGINT)
            out, err = waiting.communicate(timeout=60)
        finally:
            if waiting.poll() is None:  # the test failed: no migration once the lock is free
                waiting.send_signal(signal.SIGINT)  # its job canceled, wherever it runs
                try:
                    waiting.communicate(timeout=30)
                except subprocess.TimeoutExpired:
                    waiting.kill()
                    waiting.communicate()
            holder.release_all()
        assert waiting.returncode == 1, out + err
        assert ABORT_REQUESTED in err
        job = env.check_job_ran(way, waiting.pid)
        assert job.summary == f"INSTANCE_MIGRATE({NAME})"
        assert job.status == "canceled" and job.exec_ts is None
        assert env.primary() == src and env.config.read().serial == serial
        assert wait_single(env.config, env.ops, NAME) == src


def _active(env: Env) -> int:
    return len([j for j in env.jobs() if j.status in JOB_ACTIVE_STATUSES])


def _wait(predicate: Any, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)  # other processes' job files: no event to wait on


@pytest.mark.parametrize("way", BOTH_WAYS)
def test_live_export_list_and_remove(env: Env, way: str) -> None:
    """The other headline operation: export, list, remove."""
    with env.way(way):
        target = env.nodes[-1]
        res = env.gnt("backup", "export", "-n", target, "--noshutdown", NAME)
        assert res.returncode == 0, res.stdout + res.stderr
        assert env.check_job_ran(way).status == "success"
        assert "Export of" in res.stdout
        listed = env.gnt("backup", "list", "--node", target, "--no-headers")
        assert listed.returncode == 0, listed.stderr
        assert [target, NAME] in [line.split() for line in listed.stdout.splitlines()]
        # the instance kept running where it was
        assert wait_single(env.config, env.ops, NAME) == env.primary()
        removed = env.gnt("backup", "remove", NAME)
        assert removed.returncode == 0, removed.stderr
        listed = env.gnt("backup", "list", "--node", target, "-o", "export", "--no-headers")
        assert NAME not in listed.stdout.split()


@pytest.mark.parametrize("way", BOTH_WAYS)
def test_a_migration_whose_output_goes_away_ends_on_the_target(env: Env, way: str) -> None:
    """``gnt-lv instance migrate ... | head -1``: the reader leaves, the migration does not."""
    with env.way(way):
        dst = env.other()
        command = (
            f"{GNT_LV} --data-dir {env.data_dir} instance migrate -f -n {dst}"
            f" --migration-bandwidth 30 {NAME} | head -1; exit ${{PIPESTATUS[0]}}"
        )
        res = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stdout + res.stderr
        assert len(res.stdout.splitlines()) == 1
        assert "Traceback" not in res.stderr and "internal_error" not in res.stderr
        assert env.check_job_ran(way).status == "success"
        assert wait_single(env.config, env.ops, NAME) == dst
        assert env.primary() == dst
        assert where_running(env.config, env.ops, NAME) == {dst: constants.DOMSTATE_RUNNING}
        verify = env.gnt("cluster", "verify")
        assert verify.returncode == 0, verify.stdout + verify.stderr
