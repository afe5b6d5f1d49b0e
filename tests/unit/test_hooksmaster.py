"""HooksMaster on its own: env building and the meaning of hook results."""

from __future__ import annotations

from typing import Any

import pytest

from ganeti_lv import constants
from ganeti_lv.cmdlib.common import instance_hook_env
from ganeti_lv.errors import HooksAbort, HooksFailure
from ganeti_lv.hooksmaster import HookResults, HooksMaster, hook_value
from ganeti_lv.node.transport import HookScriptResult, NodeResult
from ganeti_lv.objects import Cluster, Disk, Instance, Nic

OK = HookScriptResult("00-ok", constants.HKR_SUCCESS, "fine")
SKIP = HookScriptResult("x.sh", constants.HKR_SKIP, "")
FAIL = HookScriptResult("10-bad", constants.HKR_FAIL, "refused")


class Recorder:
    """A hooks execution function returning canned results and recording calls."""

    def __init__(self, results: dict[str, NodeResult[Any]] | None = None) -> None:
        self.results = results or {}
        self.calls: list[tuple[list[str], str, dict[str, str]]] = []

    def __call__(self, nodes: list[str], phase: str, env: dict[str, str]) -> HookResults:
        self.calls.append((nodes, phase, env))
        return {n: self.results.get(n, NodeResult(n, payload=[OK])) for n in nodes}


def master(
    recorder: Recorder,
    env: dict[str, Any] | None = None,
    nodes: tuple[list[str], list[str]] = (["a", "b"], ["a", "c"]),
    warnings: list[str] | None = None,
    hpath: str | None = "instance-migrate",
) -> HooksMaster:
    counter = {"n": 0}

    def build_env() -> dict[str, Any]:
        counter["n"] += 1
        return dict(env if env is not None else {"NEW_PRIMARY": f"call{counter['n']}"})

    return HooksMaster(
        "OP_INSTANCE_MIGRATE",
        hpath,
        nodes,
        recorder,
        build_env,
        None,
        (warnings if warnings is not None else []).append,
        htype="INSTANCE",
        cluster_name="c.example.com",
        master_name="a",
        data_dir="/var/lib/ganeti-lv",
    )


def test_pre_env_has_base_keys_and_prefix() -> None:
    rec = Recorder()
    master(rec, env={"LIVE": True, "NONE": None, "LIST": ["x", "y"], "NUM": 3}).run_phase("pre")
    nodes, phase, env = rec.calls[0]
    assert (nodes, phase) == (["a", "b"], "pre")
    assert env == {
        "PATH": constants.HOOKS_PATH,
        "GANETI_HOOKS_VERSION": "2",
        "GANETI_OP_CODE": "OP_INSTANCE_MIGRATE",
        "GANETI_DATA_DIR": "/var/lib/ganeti-lv",
        "GANETI_HOOKS_PHASE": "pre",
        "GANETI_HOOKS_PATH": "instance-migrate",
        "GANETI_OBJECT_TYPE": "INSTANCE",
        "GANETI_CLUSTER": "c.example.com",
        "GANETI_MASTER": "a",
        "GANETI_LIVE": "True",
        "GANETI_NONE": "",
        "GANETI_LIST": "x y",
        "GANETI_NUM": "3",
    }


def test_post_env_rebuilt_and_merged_with_pre() -> None:
    rec = Recorder()
    hm = master(rec)
    hm.run_phase("pre")
    hm.run_phase("post")
    post_env = rec.calls[1][2]
    assert post_env["GANETI_NEW_PRIMARY"] == "call1"  # the pre value stays
    assert post_env["GANETI_POST_NEW_PRIMARY"] == "call2"  # BuildHooksEnv called again
    assert post_env["GANETI_HOOKS_PHASE"] == "post"
    assert rec.calls[1][0] == ["a", "c"]


def test_colliding_key_is_rejected() -> None:
    with pytest.raises(HooksFailure, match="collides"):
        master(Recorder(), env={"HOOKS_PHASE": "x"})


def test_pre_failure_aborts_with_node_script_output() -> None:
    rec = Recorder({"b": NodeResult("b", payload=[OK, SKIP, FAIL])})
    with pytest.raises(HooksAbort) as err:
        master(rec).run_phase("pre")
    assert err.value.results == [("b", "10-bad", "refused")]
    assert err.value.ecode == "environment_error"
    assert err.value.nodes == ["a", "b"]  # where the phase ran


def test_a_pre_abort_names_only_the_nodes_its_hooks_ran_on() -> None:
    rec = Recorder(
        {
            "a": NodeResult("a", fail_msg="Node is marked offline", offline=True),
            "b": NodeResult("b", payload=[FAIL]),
        }
    )
    with pytest.raises(HooksAbort) as err:
        master(rec).run_phase("pre")
    assert err.value.nodes == ["b"]  # not the offline node, which was skipped


def test_pre_unreachable_node_aborts_offline_skipped() -> None:
    rec = Recorder({"b": NodeResult("b", fail_msg="connection refused")})
    with pytest.raises(HooksAbort) as err:
        master(rec).run_phase("pre")
    assert err.value.results == [("b", "", "Communication failure: connection refused")]
    rec = Recorder({"b": NodeResult("b", fail_msg="Node is marked offline", offline=True)})
    assert set(master(rec).run_phase("pre")) == {"a", "b"}


def test_post_failures_are_warnings() -> None:
    warnings: list[str] = []
    rec = Recorder(
        {
            "a": NodeResult("a", payload=[FAIL]),
            "c": NodeResult("c", fail_msg="timed out"),
        }
    )
    results = master(rec, warnings=warnings).run_phase("post")
    assert set(results) == {"a", "c"}
    assert warnings == [
        "On a script 10-bad failed, output: refused",
        "Communication failure to node c: timed out",
    ]


def test_failed_scripts_output_is_shown_stripped_as_ganeti_shows_it() -> None:
    """Ganeti's runner strips a script's output; a post warning says "(no output)"
    for none. Skipped scripts are not reported."""
    noisy = HookScriptResult("10-noisy", constants.HKR_FAIL, "\n  disk full\n\n")
    quiet = HookScriptResult("20-quiet", constants.HKR_FAIL, "\n")
    rec = Recorder({"a": NodeResult("a", payload=[SKIP, noisy, quiet])})
    warnings: list[str] = []
    master(rec, warnings=warnings).run_phase("post")
    assert warnings == [
        "On a script 10-noisy failed, output: disk full",
        "On a script 20-quiet failed, output: (no output)",
    ]
    with pytest.raises(HooksAbort) as err:
        master(rec).run_phase("pre")
    assert err.value.results == [("a", "10-noisy", "disk full"), ("a", "20-quiet", "")]
    assert str(err.value).splitlines()[1:] == [
        "  node a, script 10-noisy: disk full",
        "  node a, script 20-quiet: (no output)",
    ]


def test_no_hpath_or_no_nodes_runs_nothing() -> None:
    rec = Recorder()
    assert master(rec, hpath=None).run_phase("pre") == {}
    assert master(rec, nodes=([], [])).run_phase("post") == {}
    assert rec.calls == []


def test_duplicate_nodes_run_once() -> None:
    rec = Recorder()
    master(rec, nodes=(["a", "b", "a"], [])).run_phase("pre")
    assert rec.calls[0][0] == ["a", "b"]


def test_hook_value() -> None:
    assert [hook_value(v) for v in (True, False, None, 5, ["a", 1])] == [
        "True",
        "False",
        "",
        "5",
        "a 1",
    ]


def test_instance_hook_env() -> None:
    cluster = Cluster(name="c", master_node="n1")
    inst = Instance(
        name="web1",
        primary_node="n1",
        disk_template="file",
        disks=[Disk(size=512, uuid="d0")],
        nics=[Nic(mac="aa:bb:cc:dd:ee:ff", uuid="n0", link="br0", ip="10.0.0.5")],
        beparams={"maxmem": 256},
        tags=["b", "a"],
        admin_state="up",
    )
    env = instance_hook_env(cluster, inst, override={"minmem": 64, "OP_TARGET": "web1"})
    assert env["INSTANCE_NAME"] == "web1"
    assert env["INSTANCE_PRIMARY"] == "n1"
    assert env["INSTANCE_SECONDARIES"] == ""
    assert env["INSTANCE_STATUS"] == "up"
    assert (env["INSTANCE_MAXMEM"], env["INSTANCE_MEMORY"], env["INSTANCE_MINMEM"]) == (
        "256",
        "256",
        "64",
    )
    assert env["INSTANCE_BE_minmem"] == "64"
    assert env["INSTANCE_TAGS"] == "a b"
    assert env["INSTANCE_NIC_COUNT"] == "1"
    assert env["INSTANCE_NIC0_MAC"] == "aa:bb:cc:dd:ee:ff"
    assert env["INSTANCE_NIC0_BRIDGE"] == "br0"
    assert env["INSTANCE_NIC0_IP"] == "10.0.0.5"
    assert env["INSTANCE_DISK_COUNT"] == "1"
    assert (env["INSTANCE_DISK0_SIZE"], env["INSTANCE_DISK0_UUID"]) == ("512", "d0")
    assert env["INSTANCE_HV_migration_mode"] == "live"
    assert env["INSTANCE_HV_acpi"] == "True"
    assert env["OP_TARGET"] == "web1"
    assert all(isinstance(v, str) for v in env.values())
    # as Ganeti's: OP_TARGET without being asked; no NIC name or network keys unless set
    plain = instance_hook_env(cluster, inst)
    assert plain["OP_TARGET"] == "web1"
    assert "INSTANCE_NIC0_NAME" not in plain and "INSTANCE_NIC0_NETWORK_NAME" not in plain
    inst.nics[0].name, inst.nics[0].network = "front", "net1"
    named = instance_hook_env(cluster, inst)
    assert (named["INSTANCE_NIC0_NAME"], named["INSTANCE_NIC0_NETWORK_NAME"]) == ("front", "net1")
    # likewise a disk: INSTANCE_DISKn_NAME only for a named one
    assert "INSTANCE_DISK0_NAME" not in plain
    inst.disks[0].name = "data"
    assert instance_hook_env(cluster, inst)["INSTANCE_DISK0_NAME"] == "data"
