"""Migration of a ``sharedfile`` instance on the local cluster: policy, refusals and faults.

Tests marked ``faults`` (daemons killed, links cut, processes killed, a node
taken down) need the local namespace cluster. One 128 MiB guest running its
32 MiB memory dirtier is shared by the tests
of this module (module scope; they run in file order). Every test leaves it
running on exactly one node, which the configuration names, checked against
every node's libvirt; the failover with an offline primary comes last.

Findings under TCG (see ganeti_lv.hypervisor.libvirt.migration): post-copy
and auto-converge both work; the slow-link tests show the policy aborting
(no escalation), escalating to post-copy, and auto-converge converging.
"""

from __future__ import annotations

import re
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from gnt_helpers import Gnt, console
from migrate_helpers import (
    CliMigration,
    InstanceEnv,
    assert_alive,
    console_size,
    install_hook,
    make_instance,
    remove_instance,
    ticks,
    wait_single,
    wait_tick_above,
    where_running,
)
from support.timeouts import scaled

from ganeti_lv import constants, objects
from ganeti_lv.errors import (
    ECODE_ENVIRON,
    ECODE_NORES,
    GenericError,
    HooksAbort,
    MigrationAborted,
    OpExecError,
    OpPrereqError,
)
from ganeti_lv.opcodes import OpClusterVerify, OpInstanceFailover, OpInstanceMigrate

pytestmark = pytest.mark.cluster

NAME = "migsh"
SLOW = 8  # MiB/s: the 32 MiB dirtier never converges at this bandwidth by itself


class Env(InstanceEnv):
    """The session's cluster around this module's instance."""

    def __init__(self, devcluster: Any) -> None:
        super().__init__(devcluster, NAME)


@pytest.fixture(scope="module")
def shared(devcluster: Any) -> Iterator[str]:
    """The module's running sharedfile instance (on the first node at the start)."""
    env = Env(devcluster)
    make_instance(
        env.config, env.ops, NAME, constants.DT_SHARED_FILE, env.nodes[0], "52:54:00:4c:57:21"
    )
    try:
        wait_tick_above(env.ops, env.node(env.nodes[0]), NAME, 1)
        yield NAME
    finally:
        remove_instance(env.config, env.ops, NAME, constants.DT_SHARED_FILE)
        env.close()


@pytest.fixture
def env(devcluster: Any, shared: str) -> Iterator[Env]:
    """Fresh connections for each test (a fault may leave a cached one dead)."""
    e = Env(devcluster)
    try:
        yield e
    finally:
        e.close()


def _unchanged(env: Env, src: str, serial: int) -> None:
    """The instance still runs on ``src`` only and the configuration did not change."""
    assert wait_single(env.config, env.ops, NAME) == src
    assert env.config.read().serial == serial


class Background:
    """``Client.submit`` in a thread; ``started`` is set by the first progress line."""

    def __init__(self, env: Env, op: OpInstanceMigrate) -> None:
        self.lines: list[str] = []
        self.started = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(env, op), daemon=True)
        self.thread.start()

    def _feedback(self, line: str) -> None:
        self.lines.append(line)
        if re.match(r"migration\s+[0-9.]+% of memory", line):
            self.started.set()

    def _run(self, env: Env, op: OpInstanceMigrate) -> None:
        try:
            env.client.submit(op, feedback_fn=self._feedback)
        except BaseException as err:  # noqa: BLE001 - inspected by the test
            self.error = err

    def wait_started(self) -> None:
        """Until the libvirt job reports progress."""
        assert self.started.wait(scaled(180)), self.lines

    def join(self, timeout: float = 240) -> BaseException | None:
        """Wait for the end; return the error raised, if any."""
        self.thread.join(scaled(timeout))
        assert not self.thread.is_alive(), self.lines
        return self.error


# ------------------------------------------------------------------ success


@pytest.mark.timeout(420)
def test_live_migration_and_back_non_live(env: Env) -> None:
    src, dst = env.primary(), env.other()
    before = wait_tick_above(env.ops, env.node(src), NAME, 0)
    for b, mode in ((dst, "live"), (src, "non-live")):
        lines: list[str] = []
        mark = console_size(env.ops, env.node(b), NAME)
        op = OpInstanceMigrate(instance_name=NAME, target_node=b, mode=mode)
        env.client.submit(op, lines.append)
        assert wait_single(env.config, env.ops, NAME) == b
        # the console log is node-local: ticks go on on the target without a new boot
        before = wait_tick_above(env.ops, env.node(b), NAME, before)
        _alive_on(env, b, mark)
        summary = [x for x in lines if x.startswith("migration completed")]
        assert summary and re.search(r"total time [0-9.]+ s, downtime \d+ ms", summary[0])
        assert any(f"to {b} ({mode})" in x for x in lines), lines
        if b == dst:  # a fresh console log there: no boot, only the continued ticks
            assert "GUEST-READY" not in console(env.ops, env.node(b), NAME)
    # the pattern the guest wrote at boot is intact on the shared image
    out = env.devcluster.node_exec(
        src, ["sh", "-c", f"head -c 4M {_image(env)} | sha256sum"]
    ).stdout.decode()
    from ganeti_lv.devcluster.guest import pattern_sha256

    assert out.split()[0] == pattern_sha256(NAME, 4)


def _image(env: Env) -> str:
    inst = env.config.get_instance(NAME)
    assert inst is not None
    return objects.disk_path(env.config.get_cluster(), inst, 0)


# ------------------------------------------------------------------ policy


@pytest.mark.timeout(300)
def test_slow_link_without_escalation_aborts_cleanly(env: Env) -> None:
    src, dst = env.primary(), env.other()
    serial = env.config.read().serial
    lines: list[str] = []
    op = OpInstanceMigrate(
        instance_name=NAME,
        target_node=dst,
        migration_bandwidth=SLOW,
        escalate=False,
        progress_timeout=3,
        completion_timeout=8,
    )
    with pytest.raises(MigrationAborted) as err:
        env.client.submit(op, feedback_fn=lines.append)
    assert "did not converge within the convergence policy's limits" in err.value.msg
    assert f"keeps running on {src}, configuration unchanged" in err.value.msg
    assert err.value.ecode == ECODE_ENVIRON  # not internal_error
    # the policy's steps and its abort are lines of the job log; no step after the abort
    job = env.client.jobs()[-1]
    assert job.status == constants.JOB_STATUS_ERROR  # a failure, not a cancel
    logged = [msg for _, _, msg in job.log]
    assert any(m.startswith(" - INFO: convergence policy: aborting the migration") for m in logged)
    assert not any(m.startswith("STEP 4/4") for m in logged), logged
    _unchanged(env, src, serial)
    wait_tick_above(env.ops, env.node(src), NAME, _ticks_now(env, src))


def _ticks_now(env: Env, where: str) -> int:
    found = ticks(env.ops, env.node(where), NAME)
    return found[-1] if found else 0


def _alive_on(env: Env, where: str, mark: int) -> None:
    """The guest ticks on ``where`` and its kernel reported nothing after ``mark``."""
    assert_alive(env.ops, env.node(where), NAME, mark)


# --------------------------------------------------------------- refusals


def test_memory_cap_and_missing_bridge_are_refused(env: Env) -> None:
    src, dst = env.primary(), env.other()
    serial = env.config.read().serial
    target = env.node(dst)
    target.memory_cap = 64
    env.config.update_node(target)
    try:
        with pytest.raises(OpPrereqError) as err:
            env.client.submit(OpInstanceMigrate(instance_name=NAME, target_node=dst))
        assert err.value.ecode == ECODE_NORES
        assert (
            f"Not enough memory on node {dst}" in err.value.msg
            and "needed 128 MiB" in err.value.msg
        )
    finally:
        target.memory_cap = None
        env.config.update_node(target)
    inst = env.config.get_instance(NAME)
    assert inst is not None
    link = inst.nics[0].link
    inst.nics[0].link = "glvnobr9"
    env.config.update_instance(inst)
    try:
        with pytest.raises(OpPrereqError) as err:
            env.client.submit(OpInstanceMigrate(instance_name=NAME, target_node=dst))
        assert err.value.ecode == ECODE_ENVIRON
        assert f"destination node '{dst}': missing bridges glvnobr9" in err.value.msg
    finally:
        inst.nics[0].link = link
        env.config.update_instance(inst)
    assert env.config.read().serial == serial + 4
    assert wait_single(env.config, env.ops, NAME) == src


# ------------------------------------------------------------------ faults


def test_failing_pre_hook_changes_nothing(env: Env) -> None:
    src, dst = env.primary(), env.other()
    hooks_dir = f"{env.config.get_cluster().hooks_base_dir}/instance-migrate-pre.d"
    path = install_hook(env.devcluster, dst, hooks_dir, "#!/bin/sh\necho no entry >&2\nexit 1\n")
    serial = env.config.read().serial
    try:
        with pytest.raises(HooksAbort) as err:
            env.client.submit(OpInstanceMigrate(instance_name=NAME, target_node=dst))
        assert dst in str(err.value)
    finally:
        env.devcluster.node_exec(dst, ["rm", "-f", path])
    _unchanged(env, src, serial)


@pytest.mark.timeout(420)
def test_sigint_aborts_and_keeps_the_instance(env: Env) -> None:
    src, dst = env.primary(), env.other()
    serial = env.config.read().serial
    cli = CliMigration(env.data_dir, "-n", dst, "--migration-bandwidth", str(SLOW), NAME)
    try:
        cli.wait_progress()
        cli.signal(signal.SIGINT)
        code, out, err = cli.finish()
    finally:
        cli.kill()
    assert code != 0, out
    assert "interrupted by the user" in err, err
    assert f"keeps running on {src}, configuration unchanged" in err
    _unchanged(env, src, serial)


@pytest.mark.faults
@pytest.mark.timeout(420)
def test_target_libvirtd_killed_mid_migration(env: Env) -> None:
    src, dst = env.primary(), env.other()
    serial = env.config.read().serial
    job = Background(
        env,
        OpInstanceMigrate(instance_name=NAME, target_node=dst, migration_bandwidth=SLOW),
    )
    try:
        job.wait_started()
        env.devcluster.kill_daemon(dst, "libvirtd")
        error = job.join()
    finally:
        env.devcluster.start_daemon(dst, "libvirtd")
    assert isinstance(error, OpExecError), (error, job.lines)
    assert f"keeps running on {src}" in str(error)
    _unchanged(env, src, serial)


@pytest.mark.faults
@pytest.mark.timeout(420)
def test_target_link_cut_mid_migration(env: Env) -> None:
    src, dst = env.primary(), env.other()
    serial = env.config.read().serial
    job = Background(
        env,
        OpInstanceMigrate(
            instance_name=NAME,
            target_node=dst,
            migration_bandwidth=SLOW,
            progress_timeout=3,
            completion_timeout=60,
            abort_timeout=60,
        ),
    )
    try:
        job.wait_started()
        cut = time.monotonic()
        env.devcluster.cut_link(dst)
        # the policy sees no progress and aborts; keepalive declares the target
        # dead, so the operation ends while the link is still down
        error = job.join(timeout=150)
        ended_after = time.monotonic() - cut
        assert isinstance(error, GenericError), (error, job.lines)
        assert f"keeps running on {src}" in str(error), error
        # still cut: the source runs the guest, its migration job is over
        assert re.search(r"\brunning\b", env.devcluster.virsh(src, "domstate", NAME)), src
        _wait_no_job(env, src, timeout=15)  # at once, polled through virsh under load
        assert env.config.read().serial == serial
    finally:
        env.devcluster.restore_link(dst)
    assert ended_after < 120, (ended_after, job.lines)
    _unchanged(env, src, serial)


def _wait_no_job(env: Env, where: str, timeout: float = 180) -> None:
    """Poll the node's libvirt (from inside its namespace) until the domain has no job."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = env.devcluster.virsh(where, "domjobinfo", NAME, check=False)
        if re.search(r"Job type:\s+None", out):
            return
        time.sleep(0.5)
    raise AssertionError(f"the migration job of {NAME} on {where} never ended")


@pytest.mark.faults
@pytest.mark.timeout(420)
def test_sigkill_then_verify_and_cleanup(env: Env) -> None:
    src, dst = env.primary(), env.other()
    serial = env.config.read().serial
    cli = CliMigration(env.data_dir, "-n", dst, "--migration-bandwidth", str(SLOW), NAME)
    try:
        cli.wait_progress()
        cli.signal(signal.SIGKILL)
        cli.finish()
    finally:
        cli.kill()
    # the orphaned libvirt job goes on: the incoming domain waits paused on the target
    states = where_running(env.config, env.ops, NAME)
    assert states == {src: constants.DOMSTATE_RUNNING, dst: constants.DOMSTATE_PAUSED}, states
    problems = env.client.submit(OpClusterVerify())
    half = [p for p in problems if p["code"] == "EINSTANCEMIGRATION" and p["item"] == NAME]
    assert len(half) == 1, problems
    where = ", ".join(
        f"{node} ({state})" for node, state in sorted({src: "running", dst: "paused"}.items())
    )
    assert f"domain on {where}" in half[0]["message"]
    assert f"gnt-lv instance migrate --cleanup {NAME}" in half[0]["message"]
    gnt = Gnt(env.data_dir)
    out = gnt.ok("instance", "migrate", "-f", "--cleanup", NAME)
    assert f"runs on its primary {src}: configuration unchanged" in out
    _unchanged(env, src, serial)
    left = [p for p in env.client.submit(OpClusterVerify()) if NAME in p["message"] + p["item"]]
    assert left == []


# --------------------------------------------------- failover (runs last)


@pytest.mark.faults
@pytest.mark.timeout(420)
def test_failover_from_offline_primary_whose_guest_still_runs(env: Env) -> None:
    """Only the primary's libvirtd died; its qemu runs on. The operator marks the node
    offline and fails over: the start on the target cannot take the disk's lock, and the
    configuration keeps the old primary, where the guest still runs."""
    src, dst = env.primary(), env.other()
    mark = _ticks_now(env, src)
    serial = env.config.read().serial
    env.devcluster.kill_daemon(src, "libvirtd")
    down = env.node(src)
    try:
        # what the tools say before the operator offlines the node: the truth
        rc, _, err = Gnt(env.data_dir)("instance", "migrate", "-f", "--cleanup", NAME)
        assert rc != 0 and f"Cannot tell where instance {NAME} runs" in err, err
        assert f"node {src} did not answer" in err, err
        for argv in (
            ("instance", "failover", "-f", "-n", dst, NAME),
            ("instance", "shutdown", NAME),
        ):
            rc, _, err = Gnt(env.data_dir)(*argv)
            assert rc != 0 and "overlay" not in err and src in err, (argv, err)
        assert env.config.read().serial == serial
        down.offline = True
        env.config.update_node(down)
        with pytest.raises(OpExecError, match=f"configuration keeps {src} as its primary"):
            env.client.submit(
                OpInstanceFailover(instance_name=NAME, target_node=dst, ignore_consistency=True)
            )
        assert env.primary() == src
    finally:
        env.devcluster.start_daemon(src, "libvirtd")
        down.offline = False
        env.config.update_node(down)
    assert wait_single(env.config, env.ops, NAME) == src
    _alive_on(env, src, mark)


@pytest.mark.faults
@pytest.mark.timeout(420)
def test_failover_with_ignore_consistency_from_a_primary_cut_off(env: Env) -> None:
    """A node other than the master died with its link (guest gone, nothing answers);
    the operator does not mark it offline but says it is down, as Ganeti's operators
    do: ``gnt-lv instance failover --ignore-consistency``. The shared disks' chain is
    checked from the target and the guest starts there; the old primary, back, keeps
    a stopped definition until the cleanup removes it."""
    master = env.config.get_cluster().master_node
    if env.primary() == master:  # the master runs the job's hooks: it must answer
        Gnt(env.data_dir).ok("instance", "migrate", "-f", "-n", env.other(), NAME)
    src = env.primary()
    dst = next(n for n in env.nodes if n != src)
    env.devcluster.virsh(src, "destroy", NAME)
    env.devcluster.cut_link(src)
    try:
        rc, out, err = Gnt(env.data_dir)(
            "instance", "failover", "-f", "--ignore-consistency", "-n", dst, NAME
        )
        assert rc == 0, err
        said = out + err
        assert f"Node {src} is unreachable: checking the disk chain" in said, said
        assert f"Could not shutdown instance {NAME} on node {src}. Proceeding anyway" in said
        assert env.primary() == dst
        info = env.ops.instance_info(env.node(dst), NAME)
        assert info is not None and info.state == constants.DOMSTATE_RUNNING
        wait_tick_above(env.ops, env.node(dst), NAME, 0)
    finally:
        env.devcluster.restore_link(src)
        if env.primary() == src:  # failed: the guest runs again where the configuration says
            env.devcluster.virsh(src, "start", NAME, check=False)
    assert where_running(env.config, env.ops, NAME).get(src) == constants.DOMSTATE_SHUTOFF
    Gnt(env.data_dir).ok("instance", "migrate", "-f", "--cleanup", NAME)
    assert wait_single(env.config, env.ops, NAME) == dst


@pytest.mark.faults
@pytest.mark.timeout(420)
def test_failover_with_primary_offline(env: Env) -> None:
    src, dst = env.primary(), env.other()
    # the primary "dies": its guest and its libvirtd are gone, the config marks it offline
    env.devcluster.virsh(src, "destroy", NAME)
    env.devcluster.kill_daemon(src, "libvirtd")
    down = env.node(src)
    down.offline = True
    env.config.update_node(down)
    try:
        env.client.submit(
            OpInstanceFailover(instance_name=NAME, target_node=dst, ignore_consistency=True)
        )
        assert wait_single(env.config, env.ops, NAME) == dst
        wait_tick_above(env.ops, env.node(dst), NAME, 0)
    finally:
        env.devcluster.start_daemon(src, "libvirtd")
        down.offline = False
        env.config.update_node(down)
    # back online, the old primary still has the stopped definition: cleanup removes it
    assert where_running(env.config, env.ops, NAME).get(src) == constants.DOMSTATE_SHUTOFF
    Gnt(env.data_dir).ok("instance", "migrate", "-f", "--cleanup", NAME)
    assert wait_single(env.config, env.ops, NAME) == dst


@pytest.mark.timeout(300)
def test_slow_link_converges_with_auto_converge(env: Env) -> None:
    """Without post-copy the policy's last resort is qemu throttling the guest's vCPUs.

    Whether qemu had to throttle depends on how fast the guest dirties memory
    on a loaded machine; the summary says so when it did. What must hold: the
    migration converges without post-copy and the guest keeps running.
    """
    src, dst = env.primary(), env.other()
    mark = console_size(env.ops, env.node(dst), NAME)
    lines: list[str] = []
    op = OpInstanceMigrate(
        instance_name=NAME,
        target_node=dst,
        migration_bandwidth=SLOW,
        migration_caps="auto-converge",
        progress_timeout=10,
    )
    env.client.submit(op, feedback_fn=lines.append)
    assert wait_single(env.config, env.ops, NAME) == dst
    summary = [x for x in lines if x.startswith("migration completed")][0]
    throttled = [x for x in lines if "throttle" in x]
    print(summary, *throttled[-1:], sep="\n")  # which step converged it (-s shows it)
    assert "post-copy" not in summary
    _alive_on(env, dst, mark)
    env.client.submit(OpInstanceMigrate(instance_name=NAME, target_node=src))
    assert wait_single(env.config, env.ops, NAME) == src


@pytest.mark.timeout(300)
def test_slow_link_escalates_to_postcopy(env: Env) -> None:
    dst = env.other()
    mark = console_size(env.ops, env.node(dst), NAME)
    lines: list[str] = []
    op = OpInstanceMigrate(
        instance_name=NAME,
        target_node=dst,
        migration_bandwidth=SLOW,
        allow_postcopy=True,
        progress_timeout=2,
    )
    env.client.submit(op, feedback_fn=lines.append)
    assert wait_single(env.config, env.ops, NAME) == dst
    summary = [x for x in lines if x.startswith("migration completed")][0]
    # the policy shows which step converged it: downtime steps, then post-copy
    assert "policy: " in summary, f"no policy step was needed: {summary}"
    steps = summary.split("policy: ", 1)[1].split(", ")
    assert steps[-1] == "post-copy", summary
    assert all(s.startswith("downtime ") for s in steps[:-1]), summary
    _alive_on(env, dst, mark)
