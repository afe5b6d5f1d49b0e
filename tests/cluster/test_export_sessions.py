"""Each export job owns the copies set up for it, on the local cluster (real sshd, helpers).

As in the master daemon, the jobs here run in threads of one process, each
with its own context and processor, sharing one LibvirtNodeOps (and its
connections). What is left of a job's copies is looked for on the nodes
themselves: the processes in each node's network namespace that name the
export's ``.new`` directory (the sender, its ssh and the receiver), and the
SSH connections one node holds to another's sshd.
"""

from __future__ import annotations

import shlex
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from support import locks as held_locks
from support.waiting import wait_until
from test_export import NAME, _make_instance, _node, _purge

from ganeti_lv.cancel import Cancellation
from ganeti_lv.config import ConfigStore
from ganeti_lv.context import Context
from ganeti_lv.devcluster import netns
from ganeti_lv.devcluster.cluster import DevCluster
from ganeti_lv.errors import GenericError, HooksAbort, LockTimeout, OpPrereqError
from ganeti_lv.hypervisor.libvirt import LibvirtNodeOps
from ganeti_lv.hypervisor.libvirt.exportops import CopySession
from ganeti_lv.mcpu import Processor
from ganeti_lv.opcodes import OpBackupExport

pytestmark = [pytest.mark.cluster, pytest.mark.faults, pytest.mark.timeout(900)]

OTHER = "exptest3"


def _traces(cluster: DevCluster, config: ConfigStore, name: str) -> list[str]:
    """What the nodes still run of copies for ``name``'s export, and node-to-node SSH."""
    addresses = {_node(config, n).address: n for n in config.node_names()}
    found = []
    for node_name in sorted(config.node_names()):
        for pid in netns.pids_in_netns(cluster.layout().node(node_name).netns):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as fh:
                    argv = fh.read().decode(errors="replace").split("\0")
            except OSError:
                continue
            if any(f"/{name}.new/" in arg for arg in argv):
                found.append(f"{node_name}: process {pid} {argv[0]} {argv[-1][:60]}")
        ss = cluster.node_exec(node_name, ["ss", "-Htn", "state", "established", "( sport = :22 )"])
        for line in ss.stdout.decode().splitlines():
            peer = line.split()[-1].rsplit(":", 1)[0]
            if addresses.get(peer, node_name) != node_name:
                found.append(f"{node_name}: SSH session from {addresses[peer]}")
    return found


def _helpers_up(cluster: DevCluster, config: ConfigStore, name: str) -> bool:
    """The copy set up for ``name`` runs: its sender and receiver wait on the nodes."""
    traces = _traces(cluster, config, name)
    return any("SSH session" in t for t in traces) and len(traces) >= 3


class _Job(threading.Thread):
    """An export job of its own (context, processor) on the shared node operations."""

    def __init__(self, data_dir: str, ops: LibvirtNodeOps, op: OpBackupExport, **ctx: Any):
        super().__init__(name=f"job-{op.instance_name}", daemon=True)
        self.ctx = Context.from_data_dir(data_dir, node_ops=ops, **ctx)
        self.op = op
        self.cancel = Cancellation()
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = Processor(self.ctx).execute(self.op, cancel=self.cancel)
        except BaseException as err:  # noqa: BLE001 - looked at by the test
            self.error = err


@pytest.fixture
def cluster(devcluster: Any) -> Iterator[tuple[DevCluster, ConfigStore, LibvirtNodeOps]]:
    if not isinstance(devcluster, DevCluster):
        pytest.skip("looks into the local cluster's namespaces")
    config = ConfigStore(devcluster.data_dir)
    ops = LibvirtNodeOps(devcluster.data_dir)
    for name in (NAME, OTHER):
        _purge(config, ops, name)
    try:
        yield devcluster, config, ops
    finally:
        for name in (NAME, OTHER):
            _purge(config, ops, name)
        ops.close()


@pytest.fixture
def taken(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, bool]]:
    """(target path, whether its job's session had the copy set up) of every copy made."""
    seen: list[tuple[str, bool]] = []
    take = CopySession.take

    def spy(self: CopySession, plan: Any) -> Any:
        pending = take(self, plan)
        seen.append((plan.dst_path, pending is not None))
        return pending

    monkeypatch.setattr(CopySession, "take", spy)
    return seen


def test_two_exports_at_once_keep_their_own_copies(cluster, taken) -> None:
    devcluster, config, ops = cluster
    n1, n2, _n3 = sorted(config.node_names())
    _make_instance(config, ops, NAME, n1, seed=NAME, writepat=False)
    _make_instance(config, ops, OTHER, n1, seed=OTHER, writepat=False)
    live = {"target_node": n2, "shutdown": False}
    held = held_locks.hold(
        devcluster.data_dir, NAME
    )  # the first export waits here, its copy set up
    first = _Job(devcluster.data_dir, ops, OpBackupExport(instance_name=NAME, **live))
    first.start()
    try:
        assert wait_until(lambda: _helpers_up(devcluster, config, NAME), 60)
        second = _Job(devcluster.data_dir, ops, OpBackupExport(instance_name=OTHER, **live))
        second.start()
        second.join(300)
        assert second.error is None and second.result == (True, [True])
        # the second job has ended (its session closed): the first one's copy still waits
        assert _helpers_up(devcluster, config, NAME), _traces(devcluster, config, NAME)
    finally:
        held.release_all()
    first.join(300)
    assert first.error is None and first.result == (True, [True])
    # each job made its copy with the one its own session had set up
    assert sorted((path.split("/")[-2], used) for path, used in taken) == [
        (f"{NAME}.new", True),
        (f"{OTHER}.new", True),
    ]
    for name in (NAME, OTHER):
        assert wait_until(lambda n=name: not _traces(devcluster, config, n), 15)


def _refusing_hook(ops: LibvirtNodeOps, config: ConfigStore, node_name: str) -> Callable[[], None]:
    """Install a pre-export hook on the node that fails; returns its remover."""
    hooks = f"{config.get_cluster().hooks_base_dir}/instance-export-pre.d"
    node = _node(config, node_name)
    script = f"{hooks}/10-refuse"
    ops.run_command(
        node,
        ["sh", "-c", f"mkdir -p {hooks} && printf '#!/bin/sh\\nexit 1\\n' > {script}"
         f" && chmod +x {shlex.quote(script)}"],
    )  # fmt: skip
    return lambda: ops.run_command(node, ["rm", "-f", script])


def _drain(config: ConfigStore, node_name: str, drained: bool) -> None:
    node = _node(config, node_name)
    node.drained = drained
    config.update_node(node)


@pytest.mark.parametrize("failure", ["prereq", "pre-hook", "lock-timeout", "cancel"])
def test_export_failing_before_exec_leaves_nothing_on_the_nodes(cluster, taken, failure) -> None:
    devcluster, config, ops = cluster
    n1, n2, _n3 = sorted(config.node_names())
    _make_instance(config, ops, NAME, n1, seed=NAME, writepat=False)
    assert _traces(devcluster, config, NAME) == []
    undo: Callable[[], None] = lambda: None  # noqa: E731
    expected: type[GenericError] = GenericError
    lock_timeout = 120.0
    if failure == "prereq":
        _drain(config, n2, True)
        undo, expected = (lambda: _drain(config, n2, False)), OpPrereqError
    elif failure == "pre-hook":
        undo, expected = _refusing_hook(ops, config, n2), HooksAbort
    elif failure == "lock-timeout":
        lock_timeout, expected = 20.0, LockTimeout
    op = OpBackupExport(instance_name=NAME, target_node=n2, shutdown=False)
    held = held_locks.hold(devcluster.data_dir, NAME)
    job = _Job(devcluster.data_dir, ops, op, lock_timeout=lock_timeout)
    try:
        job.start()
        # the job waits for the instance lock; its copy is set up on the nodes meanwhile
        assert wait_until(lambda: _helpers_up(devcluster, config, NAME), 60)
        if failure == "cancel":
            job.cancel.request("Ctrl-C")
        elif failure != "lock-timeout":
            held.release_all()
        job.join(120)
    finally:
        held.release_all()
        undo()
    assert not job.is_alive()
    assert isinstance(job.error, expected), job.error
    assert taken == []  # no copy was made
    # the job's end called its copy off: nothing of it is left on any node
    wait_until(lambda: not _traces(devcluster, config, NAME), 15)
    assert _traces(devcluster, config, NAME) == []
