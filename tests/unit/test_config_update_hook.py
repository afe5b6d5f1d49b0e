"""Ganeti's config-update hook: on the master after an operation that wrote the configuration."""

from __future__ import annotations

from typing import Any

import pytest
from support.lu import run_op

from ganeti_lv import constants
from ganeti_lv.cmdlib import tags as tags_lus
from ganeti_lv.config import ConfigStore
from ganeti_lv.context import Context
from ganeti_lv.errors import OpExecError
from ganeti_lv.hypervisor.fake import FakeNodeOps
from ganeti_lv.node.transport import HookScriptResult
from ganeti_lv.opcodes import OpInstanceShutdown, OpTagsSet, OpTestDelay

N1 = "node1.example.com"  # the master
I1 = "inst1.example.com"
CFGUPDATE = constants.HOOKS_NAME_CFGUPDATE


def _runs(ops: FakeNodeOps) -> list[tuple[str, str, dict[str, str]]]:
    """(node, hooks dir, env) of every hooks run, in order."""
    return [(c.node, c.args[0], c.args[1]) for c in ops.calls_to("run_hooks")]


def _config_update_runs(ops: FakeNodeOps) -> list[tuple[str, str, dict[str, str]]]:
    return [run for run in _runs(ops) if run[2]["GANETI_HOOKS_PATH"] == CFGUPDATE]


def test_an_operation_without_hooks_that_writes_runs_it_on_the_master(
    ctx: Context, config: ConfigStore, fake_ops: FakeNodeOps
) -> None:
    run_op(ctx, OpTagsSet(kind="instance", name="inst1", tags=["db"]))
    ((node, hooks_dir, env),) = _runs(fake_ops)  # the tags LU has no hooks of its own
    cluster = config.get_cluster()
    assert node == N1
    assert hooks_dir == f"{cluster.hooks_base_dir}/config-update-post.d"
    assert env["GANETI_OP_CODE"] == "OP_TAGS_SET"
    assert env["GANETI_HOOKS_PHASE"] == "post"
    assert env["GANETI_MASTER"] == N1 and env["GANETI_CLUSTER"] == cluster.name
    assert "GANETI_OBJECT_TYPE" not in env  # as Ganeti's: the LU has no hooks type


def test_it_runs_after_the_post_hooks_with_the_pre_environment(
    ctx: Context, inst1_running: FakeNodeOps
) -> None:
    run_op(ctx, OpInstanceShutdown(instance_name=I1, timeout=0))
    runs = _runs(inst1_running)
    *own, last = runs
    assert [run for run in runs if run[2]["GANETI_HOOKS_PATH"] == CFGUPDATE] == [last]
    assert {env["GANETI_HOOKS_PHASE"] for _, _, env in own} == {"pre", "post"}
    node, _, env = last
    pre = next(env for _, _, env in own if env["GANETI_HOOKS_PHASE"] == "pre")
    assert node == N1
    assert env["GANETI_INSTANCE_NAME"] == I1 and env["GANETI_OBJECT_TYPE"] == "INSTANCE"
    assert not [key for key in env if key.startswith("GANETI_POST_")]
    # the PRE environment, but for its hooks path and phase
    different = {k for k in set(env) | set(pre) if env.get(k) != pre.get(k)}
    assert different == {"GANETI_HOOKS_PATH", "GANETI_HOOKS_PHASE"}


def test_nothing_written_nothing_run(
    ctx: Context, config: ConfigStore, inst1_running: FakeNodeOps
) -> None:
    serial = config.read().serial
    run_op(ctx, OpInstanceShutdown(instance_name=I1, timeout=0, dry_run=True))
    run_op(ctx, OpTestDelay(duration=0))
    assert config.read().serial == serial
    assert _runs(inst1_running)  # the shutdown's pre hooks ran
    assert _config_update_runs(inst1_running) == []


def test_a_failed_script_is_a_warning(
    ctx: Context, config: ConfigStore, fake_ops: FakeNodeOps
) -> None:
    hooks_dir = f"{config.get_cluster().hooks_base_dir}/config-update-post.d"
    failed = HookScriptResult("10-notify", constants.HKR_FAIL, "cannot notify")
    fake_ops.set_hook_results(N1, hooks_dir, [failed])
    _, lines = run_op(ctx, OpTagsSet(kind="instance", name="inst1", tags=["db"]))
    assert any(f"On {N1} script 10-notify failed, output: cannot notify" in ln for ln in lines)
    assert config.get_instance(I1).tags == ["web", "db"]  # type: ignore[union-attr]


def test_an_exec_that_wrote_and_failed_runs_it_and_its_error_stands(
    ctx: Context, config: ConfigStore, fake_ops: FakeNodeOps, monkeypatch: Any
) -> None:
    exec_ = tags_lus.LUTagsSet.Exec

    def write_then_fail(lu: Any, feedback_fn: Any) -> None:
        exec_(lu, feedback_fn)
        raise OpExecError("failed after writing")

    def unreachable(*args: Any) -> list[HookScriptResult]:
        raise RuntimeError("no route to the master")

    monkeypatch.setattr(tags_lus.LUTagsSet, "Exec", write_then_fail)
    fake_ops.hooks_fn = unreachable
    with pytest.raises(OpExecError, match="failed after writing"):
        run_op(ctx, OpTagsSet(kind="instance", name="inst1", tags=["db"]))
    assert len(_config_update_runs(fake_ops)) == 1
    assert "db" in config.get_instance(I1).tags  # type: ignore[union-attr]


def test_a_hook_that_cannot_run_is_a_warning(
    ctx: Context, config: ConfigStore, fake_ops: FakeNodeOps, monkeypatch: Any
) -> None:
    from ganeti_lv import hooksmaster

    def broken(self: Any) -> None:
        raise RuntimeError("no route to the master")

    monkeypatch.setattr(hooksmaster.HooksMaster, "run_config_update", broken)
    _, lines = run_op(ctx, OpTagsSet(kind="instance", name="inst1", tags=["db"]))
    assert any(
        "Errors occurred running the config-update hooks: no route to the master" in line
        for line in lines
    )
    assert "db" in config.get_instance(I1).tags  # type: ignore[union-attr]
