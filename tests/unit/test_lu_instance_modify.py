"""gnt-lv instance modify (OP_INSTANCE_SET_PARAMS) on the fake nodes."""

from __future__ import annotations

import os
from typing import Any

import pytest
from support.lu import refused, run_op

from ganeti_lv import constants, paths
from ganeti_lv.cli.main import main
from ganeti_lv.config import ConfigStore
from ganeti_lv.context import Context
from ganeti_lv.errors import ECODE_ENVIRON, ECODE_INVAL, ECODE_NORES, OpPrereqError
from ganeti_lv.hypervisor.fake import FakeNodeOps
from ganeti_lv.opcodes import OpInstanceSetParams

N1 = "node1.example.com"
I1 = "inst1.example.com"


def test_changes_are_merged_recorded_and_listed_as_ganeti_lists_them(
    ctx: Context, inst1_running: FakeNodeOps, config: ConfigStore
) -> None:
    before = config.get_instance(I1)
    assert before is not None
    inst1_running.node(N1).facts.memory_free = 4096
    op = OpInstanceSetParams(
        instance_name="inst1",
        beparams={"memory": "512M", "vcpus": 2},
        hvparams={"kernel_args": "console=ttyS0 quiet"},
    )
    result, feedback = run_op(ctx, op)
    assert result[0] == ["hv/kernel_args", "console=ttyS0 quiet"]
    assert sorted(result[1:]) == [["be/maxmem", 512], ["be/minmem", 512], ["be/vcpus", 2]]
    inst = config.get_instance(I1)
    assert inst is not None
    assert (inst.beparams["maxmem"], inst.beparams["minmem"], inst.beparams["vcpus"]) == (
        512,
        512,
        2,
    )
    assert inst.hvparams["kernel_args"] == "console=ttyS0 quiet"
    assert {k: v for k, v in inst.hvparams.items() if k != "kernel_args"} == {
        k: v for k, v in before.hvparams.items() if k != "kernel_args"
    }
    assert any("at its next start from the configuration" in line for line in feedback)
    # the running domain is not touched
    assert inst1_running.node(N1).domains[I1].memory == 128
    assert not inst1_running.calls_to("start_instance")
    # back to the cluster's defaults: "-key" (None) or Ganeti's "default"
    result, _ = run_op(ctx, OpInstanceSetParams(instance_name=I1, beparams={"vcpus": "default"}))
    assert result == [["be/vcpus", "default"]]
    assert "vcpus" not in config.get_instance(I1).beparams  # type: ignore[union-attr]


def test_more_memory_than_the_primary_could_start_needs_force(
    ctx: Context, inst1_running: FakeNodeOps, config: ConfigStore
) -> None:
    """As Ganeti's: free memory plus what the running instance takes there now."""
    inst1_running.node(N1).facts.memory_free = 100  # and 128 MiB the instance runs with
    err = refused(ctx, config, OpInstanceSetParams(instance_name=I1, beparams={"maxmem": 300}))
    assert err.ecode == ECODE_NORES and "72 MiB of memory missing" in err.msg
    run_op(ctx, OpInstanceSetParams(instance_name=I1, beparams={"maxmem": 228}))  # just fits
    run_op(ctx, OpInstanceSetParams(instance_name=I1, beparams={"maxmem": 300}, force=True))
    assert config.get_instance(I1).beparams["maxmem"] == 300  # type: ignore[union-attr]
    # a primary that does not answer: a warning, as Ganeti's
    inst1_running.fail("node_info", N1, "no answer")
    _, feedback = run_op(ctx, OpInstanceSetParams(instance_name=I1, beparams={"maxmem": 400}))
    assert any(f"Can't get info from primary node {N1}" in line for line in feedback)


def test_bad_changes_change_nothing(
    ctx: Context, inst1_running: FakeNodeOps, config: ConfigStore
) -> None:
    cases = [
        ({}, ECODE_INVAL, "No changes submitted"),
        ({"beparams": {"minmem": 256}}, ECODE_INVAL, "must not exceed its maximum memory"),
        ({"beparams": {"nonsense": 1}}, ECODE_INVAL, "Unknown backend parameter 'nonsense'"),
        ({"hvparams": {"migration_mode": "live"}}, ECODE_INVAL, "for the whole cluster"),
        ({"beparams": {"vcpus": 64}}, ECODE_NORES, "physical CPUs"),
    ]
    inst1_running.node(N1).facts.cpu_count = 2
    for params, ecode, text in cases:
        err = refused(ctx, config, OpInstanceSetParams(instance_name=I1, **params))
        assert (err.ecode, text in err.msg) == (ecode, True), err.msg
    result, _ = run_op(
        ctx, OpInstanceSetParams(instance_name=I1, beparams={"vcpus": 2}, dry_run=True)
    )
    assert result is None and "vcpus" not in config.get_instance(I1).beparams  # type: ignore[union-attr]


def test_a_kernel_missing_on_the_primary_is_refused(
    ctx: Context, inst1_running: FakeNodeOps, config: ConfigStore
) -> None:
    """As Ganeti's hypervisor check: the instance could start no more; nothing recorded."""
    op = OpInstanceSetParams(instance_name=I1, hvparams={"kernel_path": "/boot/vmlinuz-9"})
    with pytest.raises(OpPrereqError, match="boots /boot/vmlinuz-9, missing on node") as err:
        run_op(ctx, op)
    assert err.value.ecode == ECODE_ENVIRON
    assert "kernel_path" not in config.get_instance(I1).hvparams  # type: ignore[union-attr]
    inst1_running.node(N1).files["/boot/vmlinuz-9"] = 8
    run_op(ctx, op)
    assert config.get_instance(I1).hvparams["kernel_path"] == "/boot/vmlinuz-9"  # type: ignore[union-attr]


def test_hooks_see_the_new_memory(
    ctx: Context, inst1_running: FakeNodeOps, config: ConfigStore
) -> None:
    inst1_running.node(N1).facts.memory_free = 4096
    run_op(ctx, OpInstanceSetParams(instance_name=I1, beparams={"memory": 256}))
    envs = [c.args[1] for c in inst1_running.calls_to("run_hooks", N1)]
    (pre,) = [e for e in envs if e["GANETI_HOOKS_PHASE"] == "pre"]
    assert pre["GANETI_HOOKS_PATH"] == constants.HPATH_INSTANCE_MODIFY
    assert (pre["GANETI_INSTANCE_MAXMEM"], pre["GANETI_INSTANCE_MINMEM"]) == ("256", "256")


def test_hooks_see_the_recorded_parameters_before_and_the_new_ones_after(
    ctx: Context, inst1_running: FakeNodeOps, config: ConfigStore
) -> None:
    """As Ganeti's: before the change, INSTANCE_BE_* and INSTANCE_HV_* are the recorded
    values (the memory and vCPU keys already the new ones); after it, the new ones."""
    inst1_running.node(N1).facts.memory_free = 4096
    before = config.get_cluster().fill_beparams(config.get_instance(I1))  # type: ignore[arg-type]
    op = OpInstanceSetParams(
        instance_name=I1, beparams={"memory": 256}, hvparams={"kernel_args": "ro quiet"}
    )
    run_op(ctx, op)
    envs = [c.args[1] for c in inst1_running.calls_to("run_hooks", N1)]
    (pre,) = [e for e in envs if e["GANETI_HOOKS_PHASE"] == "pre"]
    post, config_update = [e for e in envs if e["GANETI_HOOKS_PHASE"] == "post"]
    assert config_update["GANETI_HOOKS_PATH"] == constants.HOOKS_NAME_CFGUPDATE
    assert pre["GANETI_INSTANCE_BE_maxmem"] == str(before["maxmem"]) != "256"
    assert pre["GANETI_INSTANCE_HV_kernel_args"] != "ro quiet"
    assert pre["GANETI_INSTANCE_MEMORY"] == pre["GANETI_INSTANCE_MAXMEM"] == "256"
    assert post["GANETI_POST_INSTANCE_BE_maxmem"] == post["GANETI_POST_INSTANCE_MAXMEM"] == "256"
    assert post["GANETI_POST_INSTANCE_HV_kernel_args"] == "ro quiet"


def test_gnt_lv_instance_modify(
    data_dir: str, config: ConfigStore, capsys: Any, fake_ops: FakeNodeOps
) -> None:
    fake_ops.node(N1).facts.memory_free = 4096
    code = main(
        [
            "--data-dir",
            data_dir,
            "instance",
            "modify",
            "-B",
            "vcpus=2",
            "-H",
            "kernel_args=default",
            I1,
        ],
        node_ops=fake_ops,
    )
    out, err = capsys.readouterr()
    assert (code, err) == (0, "")
    assert out.splitlines()[-3:] == [
        f"Modified instance {I1}",
        " - hv/kernel_args -> default",
        " - be/vcpus -> 2",
    ]
    inst = config.get_instance(I1)
    assert inst is not None and inst.beparams["vcpus"] == 2 and "kernel_args" not in inst.hvparams
    # nothing to change: refused before any job, as Ganeti's client does
    jobs = len(os.listdir(paths.jobs_dir(data_dir)))
    code = main(["--data-dir", data_dir, "instance", "modify", I1], node_ops=fake_ops)
    out, err = capsys.readouterr()
    assert code == 1 and "Please give at least one of the parameters" in err
    assert len(os.listdir(paths.jobs_dir(data_dir))) == jobs
