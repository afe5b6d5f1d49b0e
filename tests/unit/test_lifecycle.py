"""The processor runs an LU exactly through Ganeti's lifecycle (recording LU)."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest

from ganeti_lv import constants, locking
from ganeti_lv.cmdlib.base import (
    LOCKS_APPEND,
    LOCKS_REPLACE,
    LU_REGISTRY,
    LogicalUnit,
    NoHooksLU,
    Tasklet,
    register_lu,
)
from ganeti_lv.cmdlib.common import expand_instance
from ganeti_lv.context import Context
from ganeti_lv.errors import (
    ECODE_INVAL,
    ECODE_TEMP_NORES,
    HooksAbort,
    OpExecError,
    OpPrereqError,
)
from ganeti_lv.hypervisor.fake import FakeNodeOps
from ganeti_lv.locking import ALL_SET, LEVEL_CLUSTER, LEVEL_INSTANCE, LEVEL_NODE, LockManager
from ganeti_lv.mcpu import DRY_RUN_MSG, Processor
from ganeti_lv.node.transport import HookScriptResult
from ganeti_lv.opcodes import OpCode

MASTER, NODE2, NODE3 = "node1.example.com", "node2.example.com", "node3.example.com"
PRE_DIR = "/etc/ganeti-lv/hooks/instance-record-pre.d"
POST_DIR = "/etc/ganeti-lv/hooks/instance-record-post.d"


@dataclass(kw_only=True)
class OpTestRecord(OpCode):
    """Opcode of the recording LU."""

    OP_ID: ClassVar[str] = "OP_TEST_RECORD"
    WITH_DRY_RUN: ClassVar[bool] = True

    instance_name: str = "inst1"
    fail_exec: bool = False
    tasklets: int = 0
    change_result: bool = False
    all_nodes: bool = False
    temp_nores: int = 0
    bad_needed_locks: bool = False
    extra_node: str = ""  # locked besides the instance's nodes (LOCKS_APPEND)


@dataclass(kw_only=True)
class OpTestUnhandled(OpCode):
    """An opcode without an LU."""

    OP_ID: ClassVar[str] = "OP_TEST_UNHANDLED"


@dataclass(kw_only=True)
class OpTestBgl(OpCode):
    """Opcode of an LU needing the BGL exclusively."""

    OP_ID: ClassVar[str] = "OP_TEST_BGL"


EVENTS: list[Any] = []


class RecordingTasklet(Tasklet):
    """Records its CheckPrereq and Exec."""

    def __init__(self, lu: LogicalUnit, idx: int) -> None:
        super().__init__(lu)
        self.idx = idx

    def CheckPrereq(self) -> None:
        EVENTS.append(("TL.CheckPrereq", self.idx))

    def Exec(self, feedback_fn: Any) -> Any:
        EVENTS.append(("TL.Exec", self.idx))
        feedback_fn(f"tasklet {self.idx}")


@register_lu(OpTestRecord)
class LURecord(LogicalUnit):
    """Records every lifecycle call and the locks held at that moment."""

    HPATH = "instance-record"
    HTYPE = constants.HTYPE_INSTANCE
    REQ_BGL = False

    def locks(self) -> dict[str, set[str]]:
        return {
            "bgl": self.owned_locks(LEVEL_CLUSTER),
            "instance": self.owned_locks(LEVEL_INSTANCE),
            "node": self.owned_locks(LEVEL_NODE),
        }

    def CheckArguments(self) -> None:
        EVENTS.append("CheckArguments")

    def ExpandNames(self) -> None:
        EVENTS.append("ExpandNames")
        if self.op.bad_needed_locks:
            return
        self.op.instance_name = expand_instance(self.cfg, self.op.instance_name)
        self.needed_locks = {LEVEL_INSTANCE: [self.op.instance_name], LEVEL_NODE: []}
        if self.op.all_nodes:
            self.needed_locks[LEVEL_NODE] = ALL_SET
        elif self.op.extra_node:
            self.needed_locks[LEVEL_NODE] = [self.op.extra_node]
            self.recalculate_locks[LEVEL_NODE] = LOCKS_APPEND
        else:
            self.recalculate_locks[LEVEL_NODE] = LOCKS_REPLACE
        self.share_locks[LEVEL_NODE] = 1
        if self.op.tasklets:
            self.tasklets = [RecordingTasklet(self, i) for i in range(self.op.tasklets)]

    def DeclareLocks(self, level: int) -> None:
        EVENTS.append(("DeclareLocks", level, self.locks()))
        if level == LEVEL_NODE and not self.op.all_nodes:
            self._LockInstancesNodes()

    def CheckPrereq(self) -> None:
        EVENTS.append(("CheckPrereq", self.locks()))
        if self.op.temp_nores:
            self.op.temp_nores -= 1
            raise OpPrereqError("No memory right now", ECODE_TEMP_NORES)
        if self.op.all_nodes:
            self.ReleaseLocks(LEVEL_NODE, keep=[MASTER])
            EVENTS.append(("released", self.locks()))
        self.dry_run_result = "dry"
        super().CheckPrereq()

    def PrepareRetry(self, feedback_fn: Any) -> None:
        EVENTS.append("PrepareRetry")

    def BuildHooksNodes(self) -> tuple[list[str], list[str]]:
        EVENTS.append("BuildHooksNodes")
        return [MASTER, NODE2], [MASTER, NODE3]

    def BuildHooksEnv(self) -> dict[str, Any]:
        EVENTS.append("BuildHooksEnv")
        return {"OP_TARGET": self.op.instance_name, "FLAG": True}

    def PreparePostHookNodes(self, post_hook_node_uuids: list[str]) -> list[str]:
        EVENTS.append("PreparePostHookNodes")
        return post_hook_node_uuids

    def HooksCallBack(self, phase: str, hook_results: Any, feedback_fn: Any, lu_result: Any) -> Any:
        EVENTS.append(("HooksCallBack", phase, sorted(hook_results), lu_result))
        return "changed" if self.op.change_result and phase == "post" else lu_result

    def Exec(self, feedback_fn: Any) -> Any:
        EVENTS.append(("Exec", self.locks()))
        self.LogStep(1, 2, "working")
        self.LogWarning("careful")
        if self.op.tasklets:
            return super().Exec(feedback_fn)
        if self.op.fail_exec:
            raise OpExecError("exec failed")
        return "done"


@register_lu(OpTestBgl)
class LUBgl(NoHooksLU):
    """REQ_BGL (the default): the BGL is taken exclusively."""

    def ExpandNames(self) -> None:
        self.needed_locks = {}

    def Exec(self, feedback_fn: Any) -> Any:
        return self.ctx.locks.is_owned_shared(LEVEL_CLUSTER, locking.BGL_NAME)


@pytest.fixture(autouse=True)
def clear_events() -> None:
    EVENTS.clear()


def run(ctx: Context, op: OpCode, lines: list[str] | None = None) -> Any:
    return Processor(ctx).execute(op, feedback_fn=None if lines is None else lines.append)


def names(events: list[Any]) -> list[Any]:
    """Event names only, with DeclareLocks levels and hook phases kept."""
    out: list[Any] = []
    for ev in events:
        if isinstance(ev, str):
            out.append(ev)
        elif ev[0] == "DeclareLocks":
            out.append(f"DeclareLocks({ev[1]})")
        elif ev[0] == "HooksCallBack":
            out.append(f"HooksCallBack({ev[1]})")
        elif ev[0] in ("TL.CheckPrereq", "TL.Exec"):
            out.append(f"{ev[0]}({ev[1]})")
        else:
            out.append(ev[0])
    return out


def assert_no_locks_left(ctx: Context) -> None:
    for level in locking.LEVELS:
        assert ctx.locks.owned(level) == set()
    # Another manager gets every lock exclusively at once.
    other = LockManager(ctx.locks.locks_dir, names_fn=ctx.locks.names_fn)
    for level in (LEVEL_CLUSTER, LEVEL_INSTANCE, LEVEL_NODE):
        other.acquire(level, ALL_SET, timeout=0.5)
    other.release_all()


def test_full_lifecycle_order_and_locks(ctx: Context, fake_ops: FakeNodeOps) -> None:
    lines: list[str] = []
    assert run(ctx, OpTestRecord(), lines) == "done"
    assert names(EVENTS) == [
        "CheckArguments",
        "ExpandNames",
        "DeclareLocks(1)",
        "DeclareLocks(3)",  # only the declared levels (not nodegroup, node-res, network)
        "CheckPrereq",
        "BuildHooksNodes",
        "BuildHooksEnv",
        "HooksCallBack(pre)",
        "Exec",
        "PreparePostHookNodes",  # as in Ganeti: post nodes first, then the post env
        "BuildHooksEnv",
        "HooksCallBack(post)",
    ]
    declare_instance, declare_node, check = EVENTS[2], EVENTS[3], EVENTS[4]
    assert declare_instance[2] == {"bgl": {"BGL"}, "instance": set(), "node": set()}
    assert declare_node[2]["instance"] == {"inst1.example.com"}
    assert check[1] == {"bgl": {"BGL"}, "instance": {"inst1.example.com"}, "node": {MASTER}}
    assert EVENTS[7] == ("HooksCallBack", "pre", [MASTER, NODE2], None)
    assert EVENTS[-1] == ("HooksCallBack", "post", [MASTER, NODE3], "done")
    assert lines == ["STEP 1/2 working", " - WARNING: careful"]
    assert_no_locks_left(ctx)


def test_lock_modes(ctx: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, bool | None] = {}

    def check_modes(self: LURecord, feedback_fn: Any) -> str:
        seen["bgl"] = ctx.locks.is_owned_shared(LEVEL_CLUSTER, "BGL")
        seen["instance"] = ctx.locks.is_owned_shared(LEVEL_INSTANCE, "inst1.example.com")
        seen["node"] = ctx.locks.is_owned_shared(LEVEL_NODE, MASTER)
        return "done"

    monkeypatch.setattr(LURecord, "Exec", check_modes)
    run(ctx, OpTestRecord())
    assert seen == {"bgl": True, "instance": False, "node": True}
    assert run(ctx, OpTestBgl()) is False  # REQ_BGL: exclusive


def test_hooks_env_and_nodes(ctx: Context, fake_ops: FakeNodeOps) -> None:
    run(ctx, OpTestRecord())
    hook_calls = fake_ops.calls_to("run_hooks")
    assert [(c.node, c.args[0]) for c in hook_calls] == [
        (MASTER, PRE_DIR),
        (NODE2, PRE_DIR),
        (MASTER, POST_DIR),
        (NODE3, POST_DIR),
    ]
    pre_env, post_env = hook_calls[0].args[1], hook_calls[2].args[1]
    assert pre_env == {
        "PATH": "/sbin:/bin:/usr/sbin:/usr/bin",
        "GANETI_HOOKS_VERSION": "2",
        "GANETI_OP_CODE": "OP_TEST_RECORD",
        "GANETI_DATA_DIR": ctx.data_dir,
        "GANETI_HOOKS_PHASE": "pre",
        "GANETI_HOOKS_PATH": "instance-record",
        "GANETI_OBJECT_TYPE": "INSTANCE",
        "GANETI_CLUSTER": "cluster.example.com",
        "GANETI_MASTER": MASTER,
        "GANETI_OP_TARGET": "inst1.example.com",
        "GANETI_FLAG": "True",
    }
    assert post_env == {
        **pre_env,
        "GANETI_HOOKS_PHASE": "post",
        "GANETI_POST_OP_TARGET": "inst1.example.com",
        "GANETI_POST_FLAG": "True",
    }
    assert hook_calls[0].args[2] == 60.0  # cluster.hooks_timeout


def test_dry_run_skips_exec_and_post_hooks(ctx: Context, fake_ops: FakeNodeOps) -> None:
    lines: list[str] = []
    assert run(ctx, OpTestRecord(dry_run=True), lines) == "dry"
    assert names(EVENTS)[-1] == "HooksCallBack(pre)"
    assert "Exec" not in names(EVENTS)
    assert lines == [f" - INFO: {DRY_RUN_MSG}"]
    assert [c.args[0] for c in fake_ops.calls_to("run_hooks")] == [PRE_DIR, PRE_DIR]
    assert_no_locks_left(ctx)


def test_tasklets_run_in_order(ctx: Context) -> None:
    lines: list[str] = []
    run(ctx, OpTestRecord(tasklets=2), lines)
    order = [n for n in names(EVENTS) if n.startswith(("TL.", "CheckPrereq", "Exec"))]
    assert order == [
        "CheckPrereq",
        "TL.CheckPrereq(0)",
        "TL.CheckPrereq(1)",
        "Exec",
        "TL.Exec(0)",
        "TL.Exec(1)",
    ]
    assert lines[-2:] == ["tasklet 0", "tasklet 1"]


def test_pre_hook_failure_aborts_before_exec(ctx: Context, fake_ops: FakeNodeOps) -> None:
    fake_ops.set_hook_results(
        NODE2,
        PRE_DIR,
        [
            HookScriptResult("00-ok", constants.HKR_SUCCESS, ""),
            HookScriptResult("10-maint", constants.HKR_FAIL, "maintenance flag set\n"),
        ],
    )
    with pytest.raises(HooksAbort) as err:
        run(ctx, OpTestRecord())
    assert err.value.results == [(NODE2, "10-maint", "maintenance flag set")]  # stripped, as Ganeti
    assert "node node2.example.com, script 10-maint: maintenance flag set" in str(err.value)
    assert "Exec" not in names(EVENTS)
    assert "HooksCallBack(pre)" not in names(EVENTS)
    job = ctx.jobs.list()[-1]
    assert job.status == "error"
    assert job.error is not None and job.error["class"] == "HooksAbort"
    assert_no_locks_left(ctx)


def test_slow_pre_hook_is_reported_and_a_cancel_ends_the_wait(
    ctx: Context, fake_ops: FakeNodeOps, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("ganeti_lv.mcpu.HOOKS_PATIENCE", 0.05)
    release = threading.Event()
    proc = Processor(ctx)
    lines: list[str] = []

    def hooks_fn(node: str, hooks_dir: str, env: Any, timeout: float) -> list[Any]:
        if hooks_dir == PRE_DIR:
            release.wait(10)
        return []

    def feedback(msg: str) -> None:
        lines.append(msg)
        if "Waiting" in msg:
            proc.cancel.request("interrupted")

    fake_ops.hooks_fn = hooks_fn
    try:
        with pytest.raises(OpExecError, match="canceled .* pre hooks"):
            proc.execute(OpTestRecord(), feedback_fn=feedback)
    finally:
        release.set()
    waits = [line for line in lines if f"for the hook scripts in {PRE_DIR} on" in line]
    assert waits and NODE2 in waits[0]
    assert "Exec" not in names(EVENTS)
    assert ctx.jobs.list()[-1].status == "canceled"
    assert_no_locks_left(ctx)


def test_unreachable_online_node_aborts_pre_offline_is_skipped(
    ctx: Context, fake_ops: FakeNodeOps
) -> None:
    fake_ops.set_unreachable(NODE2)
    with pytest.raises(HooksAbort) as err:
        run(ctx, OpTestRecord())
    assert err.value.results[0][0] == NODE2
    assert "Communication failure" in err.value.results[0][2]
    node2 = ctx.config.get_node(NODE2)
    assert node2 is not None
    node2.offline = True
    ctx.config.update_node(node2)
    EVENTS.clear()
    assert run(ctx, OpTestRecord()) == "done"


def test_exec_failure_skips_post_hooks_and_releases_locks(
    ctx: Context, fake_ops: FakeNodeOps
) -> None:
    with pytest.raises(OpExecError, match="exec failed"):
        run(ctx, OpTestRecord(fail_exec=True))
    assert names(EVENTS)[-1] == "Exec"
    assert [c.args[0] for c in fake_ops.calls_to("run_hooks")] == [PRE_DIR, PRE_DIR]
    job = ctx.jobs.list()[-1]
    assert (job.status, job.error) == (
        "error",
        {
            "class": "OpExecError",
            "ganeti_class": "OpExecError",
            "ecode": "internal_error",
            "message": "exec failed",
        },
    )
    assert_no_locks_left(ctx)


def test_post_hook_failure_is_a_warning(ctx: Context, fake_ops: FakeNodeOps) -> None:
    fake_ops.set_hook_results(NODE3, POST_DIR, [HookScriptResult("50-audit", "FAIL", "disk full")])
    lines: list[str] = []
    assert run(ctx, OpTestRecord(), lines) == "done"
    warning = f" - WARNING: On {NODE3} script 50-audit failed, output: disk full"
    assert warning in lines
    assert warning in [entry[2] for entry in ctx.jobs.list()[-1].log]


def test_post_hooks_callback_changes_result(ctx: Context) -> None:
    assert run(ctx, OpTestRecord(change_result=True)) == "changed"
    assert ctx.jobs.list()[-1].result == "changed"


def test_all_set_then_release_down(ctx: Context) -> None:
    run(ctx, OpTestRecord(all_nodes=True))
    check = next(ev for ev in EVENTS if ev[0] == "CheckPrereq")
    assert check[1]["node"] == {MASTER, NODE2, NODE3}
    released = next(ev for ev in EVENTS if ev[0] == "released")
    assert released[1]["node"] == {MASTER}
    exec_ev = next(ev for ev in EVENTS if ev[0] == "Exec")
    assert exec_ev[1]["node"] == {MASTER}


def test_temp_nores_is_retried_after_prepare_retry(ctx: Context) -> None:
    sleeps: list[float] = []
    ctx.sleep = sleeps.append
    assert run(ctx, OpTestRecord(temp_nores=2)) == "done"
    assert names(EVENTS).count("PrepareRetry") == 2
    assert names(EVENTS).count("DeclareLocks(1)") == 3
    assert len(sleeps) == 2


def test_a_retry_keeps_the_nodes_an_lu_locks_besides_its_instances(ctx: Context) -> None:
    """LOCKS_APPEND holds on every attempt, not only the first (Exec had lost the node)."""
    ctx.sleep = lambda _seconds: None
    assert run(ctx, OpTestRecord(temp_nores=1, extra_node=NODE3)) == "done"
    attempts = [ev[1]["node"] for ev in EVENTS if ev[0] in ("CheckPrereq", "Exec")]
    assert attempts == [{MASTER, NODE3}] * 3


def test_validation_error_before_lu(ctx: Context) -> None:
    with pytest.raises(OpPrereqError) as err:
        run(ctx, OpTestRecord(fail_exec="yes"))  # type: ignore[arg-type]
    assert err.value.ecode == ECODE_INVAL
    assert EVENTS == []
    assert_no_locks_left(ctx)


def test_unknown_instance_and_unhandled_opcode(ctx: Context) -> None:
    with pytest.raises(OpPrereqError, match="Instance 'nope' not known") as err:
        run(ctx, OpTestRecord(instance_name="nope"))
    assert err.value.ecode == "unknown_entity"
    with pytest.raises(OpPrereqError, match="Cannot handle opcode OP_TEST_UNHANDLED"):
        run(ctx, OpTestUnhandled())
    assert OpTestUnhandled not in LU_REGISTRY
    assert_no_locks_left(ctx)


def test_needed_locks_must_be_a_dict(ctx: Context) -> None:
    with pytest.raises(OpExecError, match="needed_locks"):
        run(ctx, OpTestRecord(bad_needed_locks=True))
    assert_no_locks_left(ctx)


def test_job_log_records_feedback_with_timestamps(ctx: Context) -> None:
    run(ctx, OpTestRecord())
    job = ctx.jobs.list()[-1]
    assert job.status == "success" and job.result == "done"
    assert [entry[2] for entry in job.log] == ["STEP 1/2 working", " - WARNING: careful"]
    assert all(job.start_ts <= ts <= job.end_ts for ts, _, _ in job.log)  # type: ignore[operator]
    assert job.params["instance_name"] == "inst1"


def test_a_job_log_that_cannot_be_written_does_not_stop_the_operation(
    ctx: Context, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A full disk while Exec reports progress (a migration half-way): the job goes on and
    its lines are written with the job's end."""
    save = ctx.jobs.save

    def full_disk_while_executing(job: Any, durable: bool = False) -> None:
        if not durable and any(ev[0] == "Exec" for ev in EVENTS if isinstance(ev, tuple)):
            raise OSError(28, "No space left on device")
        save(job, durable)

    monkeypatch.setattr(ctx.jobs, "save", full_disk_while_executing)
    lines: list[str] = []
    assert Processor(ctx).execute(OpTestRecord(), feedback_fn=lines.append) == "done"
    assert lines == ["STEP 1/2 working", " - WARNING: careful"]
    assert "Exec" in names(EVENTS) and "HooksCallBack(post)" in names(EVENTS)
    job = ctx.jobs.list()[-1]
    assert job.status == "success" and [entry[2] for entry in job.log] == lines
    assert "a feedback line not written yet: [Errno 28] No space left" in caplog.text


def test_context_creates_libvirt_node_ops_lazily(config: Any) -> None:
    from ganeti_lv import Client
    from ganeti_lv.hypervisor.libvirt import LibvirtNodeOps

    ctx = Context.from_data_dir(config.data_dir)
    assert ctx._node_ops is None
    assert isinstance(ctx.node_ops, LibvirtNodeOps)
    assert ctx.node_ops is ctx.node_ops
    ctx.close()
    client = Client(data_dir=config.data_dir, node_ops=FakeNodeOps())
    assert client.submit(OpTestRecord()) == "done"
    assert [job.status for job in client.jobs()] == ["success"]


def test_hook_nodes_run_their_scripts_at_the_same_time(ctx: Context) -> None:
    # Each node's hook waits for the other hook node: run one after the
    # other, the first would wait in vain and the barrier would break.
    barrier = threading.Barrier(2, timeout=10)
    reached: list[str] = []

    def wait_for_peer(node: str, *_args: Any) -> list[HookScriptResult]:
        barrier.wait()
        reached.append(node)
        return []

    ctx.node_ops.hooks_fn = wait_for_peer  # type: ignore[attr-defined]
    assert run(ctx, OpTestRecord()) == "done"
    assert sorted(reached) == sorted([MASTER, NODE2, MASTER, NODE3])
    assert_no_locks_left(ctx)
