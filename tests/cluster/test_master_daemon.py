"""``gnt-lv`` through the master daemon on the local cluster: migrate, refuse, cancel.

The daemon (``gnt-lv-masterd``, started as an operator would) takes the jobs
of ``gnt-lv`` run as a separate program; one 128 MiB sharedfile guest with
its 32 MiB dirtier is used by the tests of this module, in file order. Each
test leaves it running on exactly one node, the one the configuration names.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from gnt_helpers import node
from migrate_helpers import (
    CliMigration,
    make_instance,
    remove_instance,
    ticks,
    wait_single,
    wait_tick_above,
    where_running,
)

from ganeti_lv import constants
from ganeti_lv.config import ConfigStore
from ganeti_lv.hypervisor.libvirt import LibvirtNodeOps
from ganeti_lv.master import daemon as masterd
from ganeti_lv.master.jobs import JobStore

pytestmark = pytest.mark.cluster

NAME = "mdguest"
ENTRY = "ganeti_lv.cli.entry"  # the gnt-lv program


class Env:
    def __init__(self, devcluster: Any) -> None:
        self.data_dir = devcluster.data_dir
        self.config = ConfigStore(self.data_dir)
        self.ops = LibvirtNodeOps(self.data_dir)
        self.nodes = sorted(self.config.node_names())
        self.daemon_pid = 0

    def gnt(self, *argv: str, python: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
        """``gnt-lv`` as its own program (as an operator runs it; stdout is a pipe).

        Commands the daemon runs are handed over to it (``ganeti_lv.cli.entry``);
        the others (``backup list``) are parsed here and submitted as jobs.
        """
        return subprocess.run(
            [sys.executable, *python, "-m", ENTRY, "--data-dir", self.data_dir, *argv],
            capture_output=True,
            text=True,
            timeout=300,
        )

    def primary(self) -> str:
        inst = self.config.get_instance(NAME)
        assert inst is not None
        return inst.primary_node

    def last_job(self) -> Any:
        return JobStore(f"{self.data_dir}/jobs").list()[-1]


@pytest.fixture(scope="module")
def env(devcluster: Any) -> Iterator[Env]:
    """The daemon running for the cluster's data dir, and the guest on the first node."""
    e = Env(devcluster)
    res = subprocess.run(
        [sys.executable, "-m", "ganeti_lv.master.daemon", "--data-dir", e.data_dir],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    pid = masterd.read_pid(e.data_dir)
    assert pid is not None
    e.daemon_pid = pid
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
            masterd.stop(e.data_dir)
            e.ops.close()


def test_gnt_lv_migrates_through_the_daemon(env: Env) -> None:
    src, dst = env.primary(), env.nodes[1]
    before = max(ticks(env.ops, node(env.config, src), NAME))
    res = env.gnt("instance", "migrate", "-f", "-n", dst, NAME, python=("-X", "importtime"))
    assert res.returncode == 0, res.stderr
    # handed over: gnt-lv parsed nothing itself
    imported = re.findall(r"^import time:.*\|\s+(\S+)$", res.stderr, re.M)
    assert "ganeti_lv.paths" in imported and "argparse" not in imported
    assert "STEP 4/4 Finalising" in res.stdout
    assert "migration completed" in res.stdout
    job = env.last_job()
    assert job.status == "success"
    assert job.pid == env.daemon_pid  # the daemon ran it, not the gnt-lv process
    assert env.primary() == dst
    assert where_running(env.config, env.ops, NAME) == {dst: constants.DOMSTATE_RUNNING}
    wait_tick_above(env.ops, node(env.config, dst), NAME, before)


def test_bad_input_through_the_daemon_changes_nothing(env: Env) -> None:
    serial = env.config.read().serial
    res = env.gnt("instance", "migrate", "-f", "-n", env.primary(), NAME)
    assert res.returncode == 1
    assert "error type: wrong_state" in res.stderr
    res = env.gnt("instance", "migrate", "-f", "nosuch")
    assert res.returncode == 1
    assert "error type: unknown_entity" in res.stderr
    assert env.config.read().serial == serial


def test_ctrl_c_of_gnt_lv_aborts_the_daemons_migration(env: Env) -> None:
    src = env.primary()
    dst = next(n for n in env.nodes if n != src)
    # 4 MiB/s: the 32 MiB dirtier keeps the migration going until it is stopped
    mig = CliMigration(env.data_dir, "-n", dst, "--migration-bandwidth", "4", NAME, program=ENTRY)
    mig.wait_progress()
    mig.signal(signal.SIGINT)
    code, out, err = mig.finish()
    assert code == 1, out + err
    assert "aborted" in err.lower()
    job = env.last_job()
    assert job.pid == env.daemon_pid
    assert job.status == "canceled"
    assert wait_single(env.config, env.ops, NAME) == src
    assert env.primary() == src
    before = max(ticks(env.ops, node(env.config, src), NAME))
    wait_tick_above(env.ops, node(env.config, src), NAME, before)


def test_live_export_through_the_daemon(env: Env) -> None:
    """The other headline operation through the daemon: export, list, remove."""
    target = env.nodes[-1]
    res = env.gnt("backup", "export", "-n", target, "--noshutdown", NAME)
    assert res.returncode == 0, res.stdout + res.stderr
    job = env.last_job()
    assert job.pid == env.daemon_pid and job.status == "success"
    listed = env.gnt("backup", "list", "--node", target)
    assert listed.returncode == 0, listed.stderr
    assert f"Node: {target}" in listed.stdout and f"\t{NAME}" in listed.stdout
    # the instance kept running where it was
    assert wait_single(env.config, env.ops, NAME) == env.primary()
    removed = env.gnt("backup", "remove", NAME)
    assert removed.returncode == 0, removed.stderr
    assert f"\t{NAME}" not in env.gnt("backup", "list", "--node", target).stdout
