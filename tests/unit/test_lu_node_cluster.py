"""Node and cluster LUs (add/modify/remove/query, set params, verify) with FakeNodeOps."""

from __future__ import annotations

import base64
import os
import threading
from typing import Any

import pytest

from ganeti_lv import bootstrap, constants, paths
from ganeti_lv.cmdlib.cluster import (
    VerifyData,
    check_orphan_files,
    register_verify_check,
    verify_checks,
)
from ganeti_lv.config import ConfigStore
from ganeti_lv.context import Context
from ganeti_lv.errors import (
    ECODE_EXISTS,
    ECODE_INVAL,
    ECODE_NOENT,
    ECODE_NOTUNIQUE,
    ECODE_STATE,
    HooksAbort,
    NodeUnreachable,
    OpExecError,
    OpPrereqError,
)
from ganeti_lv.hypervisor.fake import FakeNodeOps
from ganeti_lv.mcpu import Processor
from ganeti_lv.node.transport import CommandResult
from ganeti_lv.objects import Node, disk_path
from ganeti_lv.opcodes import (
    OpClusterSetParams,
    OpClusterVerify,
    OpCode,
    OpNodeAdd,
    OpNodeQuery,
    OpNodeRemove,
    OpNodeSetParams,
)

N1, N2, N3 = "node1.example.com", "node2.example.com", "node3.example.com"
INST, INST2 = "inst1.example.com", "inst2.example.com"


def host_key(seed: int = 1) -> str:
    """A well-formed ed25519 public key line."""
    blob = len(b"ssh-ed25519").to_bytes(4, "big") + b"ssh-ed25519"
    blob += (32).to_bytes(4, "big") + bytes([seed]) * 32
    return "ssh-ed25519 " + base64.b64encode(blob).decode()


def run(ctx: Context, op: OpCode) -> tuple[Any, list[str]]:
    lines: list[str] = []
    result = Processor(ctx).execute(op, feedback_fn=lines.append)
    return result, lines


def prereq_error(ctx: Context, op: OpCode) -> OpPrereqError:
    with pytest.raises(OpPrereqError) as info:
        run(ctx, op)
    return info.value


# ---------------------------------------------------------------- host keys


def test_host_key_parsing_and_fingerprint() -> None:
    key = host_key()
    assert bootstrap.parse_host_key(key + " comment")[0] == "ssh-ed25519"
    assert bootstrap.host_key_fingerprint(key).startswith("SHA256:")
    for bad in ("ssh-ed25519", "ssh-dss AAAA", "ssh-ed25519 !!!", "ssh-rsa " + key.split()[1]):
        with pytest.raises(OpPrereqError) as info:
            bootstrap.parse_host_key(bad)
        assert info.value.ecode == ECODE_INVAL


# ---------------------------------------------------------------- node add


def test_node_add_records_key_and_config(
    ctx: Context, fake_ops: FakeNodeOps, config: ConfigStore, data_dir: str
) -> None:
    op = OpNodeAdd(node_name="node4", primary_ip="10.250.0.4", ssh_port=2222, host_key=host_key())
    _, lines = run(ctx, op)
    node = config.get_node("node4")
    assert node is not None and node.address == "10.250.0.4" and node.ssh_port == 2222
    assert node.libvirt_uri == ""  # the node-operations default applies
    known = paths.known_hosts_file(data_dir)
    assert bootstrap.lookup_known_host(known, "10.250.0.4", 2222) == host_key()
    assert [c.args for c in fake_ops.calls_to("run_command", "node4")] == [(["true"], 30)]
    assert any("checking SSH" in line for line in lines)


def test_node_add_unreachable_leaves_nothing(
    ctx: Context, fake_ops: FakeNodeOps, config: ConfigStore, data_dir: str
) -> None:
    fake_ops.set_unreachable("node4")
    serial = config.read().serial
    with pytest.raises(OpExecError, match="not reachable over SSH"):
        run(ctx, OpNodeAdd(node_name="node4", primary_ip="10.250.0.4", host_key=host_key()))
    assert config.read().serial == serial
    assert bootstrap.lookup_known_host(paths.known_hosts_file(data_dir), "10.250.0.4") is None


def test_node_add_whose_configuration_write_fails_forgets_the_key(
    ctx: Context, config: ConfigStore, data_dir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ganeti_lv import config as config_mod

    def disk_full(*args: Any, **kwargs: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(config_mod, "write_file_atomically", disk_full)
    with pytest.raises(OSError, match="No space left"):
        run(ctx, OpNodeAdd(node_name="node4", primary_ip="10.250.0.4", host_key=host_key()))
    monkeypatch.undo()
    assert config.get_node("node4") is None
    assert bootstrap.lookup_known_host(paths.known_hosts_file(data_dir), "10.250.0.4") is None


@pytest.mark.parametrize(
    ("kwargs", "ecode"),
    [
        ({"node_name": N2}, ECODE_EXISTS),
        ({"node_name": "node2"}, ECODE_EXISTS),  # its short name: the same node
        ({"node_name": "node4", "primary_ip": "10.250.0.2"}, ECODE_NOTUNIQUE),
        ({"node_name": "node4", "host_key": None}, ECODE_INVAL),
        # one address each: a list would be written into known_hosts as several names
        ({"node_name": "node4", "primary_ip": "10.250.0.9,10.250.0.2"}, ECODE_INVAL),
        ({"node_name": "node4", "migration_address": "10.9.0.4 10.9.0.5"}, ECODE_INVAL),
        ({"node_name": "node4", "host_key": "ssh-ed25519 xx"}, ECODE_INVAL),
        ({"node_name": "node4", "readd": True}, ECODE_NOENT),
        # an SSH user read as an option by ssh, a URI that runs a program on the master
        ({"node_name": "node4", "ssh_user": "-oProxyCommand=touch /tmp/x"}, ECODE_INVAL),
        ({"node_name": "node4", "ssh_user": "root@evil"}, ECODE_INVAL),
        ({"node_name": "node4", "libvirt_uri": "qemu+ext:///system?command=/bin/x"}, ECODE_INVAL),
        ({"node_name": "node4", "peer_uri": "test:///default"}, ECODE_INVAL),
        ({"node_name": "node4", "peer_uri": "10.0.0.4"}, ECODE_INVAL),
        # as Ganeti: never the master again
        ({"node_name": N1, "primary_ip": "10.250.0.1", "readd": True}, ECODE_STATE),
    ],
)
def test_node_add_bad_input(
    ctx: Context, config: ConfigStore, kwargs: dict[str, Any], ecode: str
) -> None:
    params: dict[str, Any] = {"host_key": host_key()}
    params.update(kwargs)
    serial = config.read().serial
    assert prereq_error(ctx, OpNodeAdd(**params)).ecode == ecode
    assert config.read().serial == serial


def test_a_node_added_again_by_its_short_name_is_that_node(
    ctx: Context, config: ConfigStore
) -> None:
    before = sorted(config.read().nodes)
    _, lines = run(ctx, OpNodeAdd(node_name="node3", host_key=host_key(), readd=True))
    assert sorted(config.read().nodes) == before
    assert f"Node {N3} added to the cluster" in lines


def test_a_node_added_again_keeps_its_vm_capable_flag(ctx: Context, config: ConfigStore) -> None:
    run(ctx, OpNodeSetParams(node_name=N3, vm_capable=False))
    with config.update() as data:
        data.nodes[N3].ssh_port, data.nodes[N3].ssh_user = 2222, "admin"
    run(ctx, OpNodeAdd(node_name=N3, host_key=host_key(), readd=True))  # from the Python API
    node = config.get_node(N3)
    assert node is not None and node.vm_capable is False
    assert (node.address, node.ssh_port, node.ssh_user) == ("10.250.0.3", 2222, "admin")
    # a new address: the migration address that was the old one follows it
    run(ctx, OpNodeAdd(node_name=N3, primary_ip="10.250.0.33", host_key=host_key(), readd=True))
    node = config.get_node(N3)
    assert node is not None and node.migration_address == "10.250.0.33"
    with config.update() as data:
        data.nodes[N3].migration_address = "10.99.0.3"  # a network of its own: stays
    run(ctx, OpNodeAdd(node_name=N3, primary_ip="10.250.0.3", host_key=host_key(), readd=True))
    node = config.get_node(N3)
    assert node is not None and node.migration_address == "10.99.0.3"
    run(ctx, OpNodeAdd(node_name="node4", primary_ip="10.250.0.4", host_key=host_key()))
    new = config.get_node("node4")
    assert new is not None and new.vm_capable is True
    # not vm_capable=no under instances (as node modify refuses it)
    with config.update() as data:
        data.instances[INST2].primary_node = N2
    serial = config.read().serial
    op = OpNodeAdd(
        node_name=N2, primary_ip="10.250.0.2", host_key=host_key(), readd=True, vm_capable=False
    )
    err = prereq_error(ctx, op)
    assert err.ecode == ECODE_STATE and "hosts instances" in err.msg
    assert config.read().serial == serial


# ---------------------------------------------------------------- node modify/remove/query


def test_node_modify_flags(ctx: Context, config: ConfigStore) -> None:
    result, _ = run(ctx, OpNodeSetParams(node_name="node3", drained=True, memory_cap=512))
    # as Ganeti's: the other parameters, then the role flags (node3 was a candidate)
    assert result == [("memory_cap", "512"), ("master_candidate", "False"), ("drained", "True")]
    node = config.get_node(N3)
    assert node is not None and node.drained and node.memory_cap == 512
    run(ctx, OpNodeSetParams(node_name=N3, offline=True))
    node = config.get_node(N3)
    assert node is not None and node.offline and not node.drained


def test_node_modify_refusals(ctx: Context, config: ConfigStore) -> None:
    assert prereq_error(ctx, OpNodeSetParams(node_name=N1, offline=True)).ecode == ECODE_INVAL
    with config.update() as data:
        data.instances[INST].primary_node = N2
    err = prereq_error(ctx, OpNodeSetParams(node_name=N2, offline=True))
    assert err.ecode == ECODE_STATE and INST in str(err)
    assert prereq_error(ctx, OpNodeSetParams(node_name="nope", offline=True)).ecode == ECODE_NOENT
    serial = config.read().serial
    result, _ = run(ctx, OpNodeSetParams(node_name=N3, drained=True, dry_run=True))
    assert result == [("master_candidate", "False"), ("drained", "True")]
    assert config.read().serial == serial


def test_master_candidacy_is_one_of_ganetis_node_roles(
    ctx: Context, config: ConfigStore, fake_ops: FakeNodeOps
) -> None:
    envs: list[dict[str, str]] = []

    def hook(node: str, hooks_dir: str, env: dict[str, str], timeout: float) -> list[Any]:
        envs.append(env)
        return []

    fake_ops.hooks_fn = hook
    # the regular role: no longer a candidate
    result, _ = run(ctx, OpNodeSetParams(node_name=N3, master_candidate=False))
    assert result == [("master_candidate", "False")]
    assert envs[0]["GANETI_MASTER_CANDIDATE"] == "False"
    node = config.get_node(N3)
    assert node is not None and not node.master_candidate
    # a drained node made a candidate leaves the drained role
    run(ctx, OpNodeSetParams(node_name=N3, drained=True))
    result, _ = run(ctx, OpNodeSetParams(node_name=N3, master_candidate=True))
    assert result == [("master_candidate", "True"), ("drained", "False")]
    node = config.get_node(N3)
    assert node is not None and node.master_candidate and not node.drained
    # already a candidate: no change, but the hooks see the candidacy asked for
    envs.clear()
    assert run(ctx, OpNodeSetParams(node_name=N3, master_candidate=True))[0] == []
    assert envs[0]["GANETI_MASTER_CANDIDATE"] == "True"
    # a candidate drained (its flag kept) and made a candidate again: the role changes
    run(ctx, OpNodeSetParams(node_name=N2, drained=True))
    envs.clear()
    result, _ = run(ctx, OpNodeSetParams(node_name=N2, master_candidate=True))
    assert result == [("master_candidate", "True"), ("drained", "False")]
    assert envs[0]["GANETI_MASTER_CANDIDATE"] == "True"
    # not a candidate: unsetting is ignored, as Ganeti says
    run(ctx, OpNodeSetParams(node_name=N3, master_candidate=False))
    result, lines = run(ctx, OpNodeSetParams(node_name=N3, master_candidate=False))
    assert result == [] and any("flag master_candidate, already unset" in x for x in lines)
    serial = config.read().serial
    both = OpNodeSetParams(node_name=N3, master_candidate=True, drained=True)
    assert prereq_error(ctx, both).ecode == ECODE_INVAL
    for change in ({"master_candidate": False}, {"master_candidate": True}, {"drained": True}):
        err = prereq_error(ctx, OpNodeSetParams(node_name=N1, **change))
        assert err.ecode == ECODE_INVAL and "keeps its role" in err.msg
    assert config.read().serial == serial


def test_node_modify_reports_the_role_flags_that_changed_as_ganeti(
    ctx: Context, config: ConfigStore
) -> None:
    """Ganeti's list: only the flags of (master_candidate, drained, offline) that
    differ between the old role and the new, in that order, after the others."""
    # a candidate offlined: demoted; drained was not set, so not listed
    result, _ = run(ctx, OpNodeSetParams(node_name=N3, offline=True, vm_capable=True))
    assert result == [("vm_capable", "True"), ("master_candidate", "False"), ("offline", "True")]
    # back online: a candidate again (its candidacy kept), and said so
    result, lines = run(ctx, OpNodeSetParams(node_name=N3, offline=False))
    assert result == [("master_candidate", "True"), ("offline", "False")]
    assert any(f"Node {N3} is a master candidate again" in line for line in lines)
    # offline to drained: one role for the other
    run(ctx, OpNodeSetParams(node_name=N3, offline=True))
    result, _ = run(ctx, OpNodeSetParams(node_name=N3, drained=True))
    assert result == [("drained", "True"), ("offline", "False")]
    # a regular node drained: only drained
    run(ctx, OpNodeSetParams(node_name=N2, master_candidate=False))
    result, _ = run(ctx, OpNodeSetParams(node_name=N2, drained=True))
    assert result == [("drained", "True")]
    node = config.get_node(N2)
    assert node is not None and node.drained and not node.master_candidate


def test_node_remove(ctx: Context, config: ConfigStore, data_dir: str) -> None:
    known = paths.known_hosts_file(data_dir)
    node3 = config.get_node(N3)
    assert node3 is not None
    bootstrap.record_node_host_key(known, node3, host_key(3))
    run(ctx, OpNodeRemove(node_name="node3"))
    assert config.get_node(N3) is None
    assert bootstrap.lookup_known_host(known, node3.address) is None
    err = prereq_error(ctx, OpNodeRemove(node_name=N1))
    assert err.ecode == ECODE_INVAL and "master" in str(err)


def _hook_nodes(fake_ops: FakeNodeOps) -> list[tuple[str, str]]:
    ran: list[tuple[str, str]] = []

    def hook(node: str, hooks_dir: str, env: dict[str, str], timeout: float) -> list[Any]:
        ran.append((node, os.path.basename(hooks_dir)))
        return []

    fake_ops.hooks_fn = hook
    return ran


def test_node_add_and_remove_run_their_hooks_on_every_node_as_ganeti(
    ctx: Context, fake_ops: FakeNodeOps, config: ConfigStore
) -> None:
    ran = _hook_nodes(fake_ops)
    run(ctx, OpNodeAdd(node_name="node4", primary_ip="10.250.0.4", host_key=host_key()))
    nodes = sorted(config.node_names())
    old = [n for n in nodes if n != "node4"]
    assert sorted(n for n, d in ran if d == "node-add-pre.d") == old
    assert sorted(n for n, d in ran if d == "node-add-post.d") == nodes
    # a dead node that was not marked offline can be removed: its hooks are not run
    ran.clear()
    fake_ops.set_unreachable(N3)
    _, lines = run(ctx, OpNodeRemove(node_name=N3))
    # the post hooks on the removed node itself could not run: a warning
    assert any(f"Communication failure to node {N3}" in line for line in lines), lines
    others = sorted(n for n in nodes if n != N3)
    assert sorted(n for n, d in ran if d == "node-remove-pre.d") == others
    assert sorted(n for n, d in ran if d == "node-remove-post.d") == others
    assert config.get_node(N3) is None


def test_node_modify_hook_environment_is_ganetis(ctx: Context, fake_ops: FakeNodeOps) -> None:
    envs: list[dict[str, str]] = []

    def hook(node: str, hooks_dir: str, env: dict[str, str], timeout: float) -> list[Any]:
        envs.append(env)
        return []

    fake_ops.hooks_fn = hook
    run(ctx, OpNodeSetParams(node_name=N3, drained=True))
    env = envs[0]
    lu_keys = {
        "GANETI_OP_TARGET": N3,
        "GANETI_MASTER_CANDIDATE": "None",
        "GANETI_OFFLINE": "None",  # not asked: str(None), as Ganeti writes it
        "GANETI_DRAINED": "True",
        "GANETI_MASTER_CAPABLE": "None",
        "GANETI_VM_CAPABLE": "None",
    }
    assert {k: env.get(k) for k in lu_keys} == lu_keys
    assert "GANETI_NODE_NAME" not in env
    # unsetting a flag that is not set changes nothing and says None, as in Ganeti
    envs.clear()
    result, lines = run(ctx, OpNodeSetParams(node_name=N3, offline=False, drained=False))
    assert result == [("master_candidate", "True"), ("drained", "False")]  # its candidacy kept
    assert "Ignoring request to unset flag offline, already unset" in "\n".join(lines)
    assert (envs[0]["GANETI_OFFLINE"], envs[0]["GANETI_DRAINED"]) == ("None", "False")


def test_vm_capable_is_not_unset_on_a_node_with_instances(
    ctx: Context, config: ConfigStore
) -> None:
    """Ganeti's refusal: its instances would be left out of the checks that skip such nodes."""
    primary = config.get_instance(INST).primary_node  # type: ignore[union-attr]
    err = prereq_error(ctx, OpNodeSetParams(node_name=primary, vm_capable=False))
    assert err.ecode == ECODE_STATE and "hosts instances" in err.msg
    assert config.get_node(primary).vm_capable  # type: ignore[union-attr]
    run(ctx, OpNodeSetParams(node_name=N3, vm_capable=False))
    assert not config.get_node(N3).vm_capable  # type: ignore[union-attr]


def test_node_remove_with_instances(ctx: Context, config: ConfigStore) -> None:
    with config.update() as data:
        data.instances[INST].primary_node = N2
    err = prereq_error(ctx, OpNodeRemove(node_name=N2))
    assert "still running on the node" in str(err) and config.get_node(N2) is not None


def test_node_query(ctx: Context, fake_ops: FakeNodeOps, config: ConfigStore) -> None:
    with config.update() as data:
        data.nodes[N3].offline = True
    fake_ops.node(N1).facts.memory_free = 1000
    rows, _ = run(ctx, OpNodeQuery())
    by_name = {r["name"]: r for r in rows}
    assert by_name[N1]["mfree"] == 1000 and by_name[N1]["pinst_cnt"] == 2
    assert by_name[N1]["master"] is True
    assert by_name[N3]["mfree"] is None and by_name[N3]["offline"] is True
    assert not fake_ops.calls_to("node_info", N3)


def test_node_query_asks_the_nodes_at_once(
    ctx: Context, fake_ops: FakeNodeOps, monkeypatch: pytest.MonkeyPatch
) -> None:
    # nodes down but not marked offline each take their connect timeouts:
    # asked one after the other, a few of them outlast the client's answer limit
    asked = threading.Barrier(3, timeout=10)  # every node's question open at once
    answer = fake_ops.node_info

    def node_info(node: Any) -> Any:
        asked.wait()
        return answer(node)

    monkeypatch.setattr(fake_ops, "node_info", node_info)
    rows, _ = run(ctx, OpNodeQuery(live=True))
    assert [row["mtotal"] is not None for row in rows] == [True, True, True]
    fake_ops.set_unreachable(N2)
    asked.reset()
    monkeypatch.setattr(fake_ops, "node_info", answer)
    rows, _ = run(ctx, OpNodeQuery(live=True))
    assert [row["mfree"] is None for row in rows] == [False, True, False]  # N2 unanswered


def test_node_query_row_says_why_live_facts_are_missing(
    ctx: Context, fake_ops: FakeNodeOps, config: ConfigStore
) -> None:
    """Ganeti's result statuses of live fields: offline, no data, or answered."""
    with config.update() as data:
        data.nodes[N3].offline = True
    fake_ops.set_unreachable(N2)
    rows, _ = run(ctx, OpNodeQuery(live=True))
    assert [row["live"] for row in rows] == [None, constants.LIVE_NODATA, constants.LIVE_OFFLINE]
    assert rows[0]["mtotal"] is not None and rows[1]["mtotal"] is None
    # not asked: no live facts, whether the node would answer or not
    rows, _ = run(ctx, OpNodeQuery(live=False))
    assert [row["live"] for row in rows] == [
        constants.LIVE_NODATA,
        constants.LIVE_NODATA,
        constants.LIVE_OFFLINE,
    ]


# ---------------------------------------------------------------- cluster modify


def test_cluster_set_params(ctx: Context, config: ConfigStore) -> None:
    run(ctx, OpClusterSetParams(hvparams={"kernel_args": "console=ttyS0 a=b"}, domain_type="qemu"))
    cluster = config.get_cluster()
    assert cluster.hvparams["kernel_args"] == "console=ttyS0 a=b"
    assert cluster.hvparams["acpi"] is True  # merged, not replaced
    assert cluster.domain_type == "qemu"
    serial = config.read().serial
    err = prereq_error(ctx, OpClusterSetParams(beparams={"memory": "x"}))
    assert err.ecode == ECODE_INVAL and config.read().serial == serial
    assert prereq_error(ctx, OpClusterSetParams(export_dir="relative")).ecode == ECODE_INVAL


@pytest.mark.parametrize(
    "change, match",
    [
        ({"hvparams": {"migration_mode": "Live"}}, "valid: live, non-live"),
        ({"hooks_timeout": float("nan")}, "hooks_timeout' fails validation: expected float"),
        ({"hooks_timeout": 0.0}, "hooks timeout must be a positive number"),
        # every migration would refuse these
        ({"hvparams": {"migration_downtime_passes": 0}}, "passes must be at least 1, not 0"),
        ({"hvparams": {"migration_downtime_initial": "0"}}, "initial must be at least 1, not 0"),
        ({"hvparams": {"migration_caps": "auto-converge:no-such"}}, "'no-such'"),
        ({"hvparams": {"migration_caps": "parallel=x"}}, "Invalid hypervisor parameter"),
        # a ramp of that many steps would be built in the master's memory
        ({"hvparams": {"migration_downtime_steps": 10**9}}, "must be at most 100"),
        ({"hvparams": {"kernel_path": "vmlinuz"}}, "must be an absolute path"),
        ({"hvparams": {"initrd_path": "boot/initrd"}}, "must be an absolute path"),
        # Ganeti's rule: gzip stays allowed
        ({"compression_tools": ["zstd"]}, "compression tools must include gzip"),
        ({"compression_tools": ["gzip", "lz4"]}, "Unknown compression tool 'lz4'"),
    ],
)
def test_cluster_settings_that_would_break_later_operations_are_refused(
    ctx: Context, config: ConfigStore, change: dict[str, Any], match: str
) -> None:
    serial = config.read().serial
    err = prereq_error(ctx, OpClusterSetParams(**change))
    assert err.ecode == ECODE_INVAL and match in err.msg
    assert config.read().serial == serial
    run(ctx, OpClusterSetParams(hvparams={"migration_mode": "non-live"}, hooks_timeout=30.0))
    assert config.get_cluster().hvparams["migration_mode"] == "non-live"
    run(ctx, OpClusterSetParams(hvparams={"migration_caps": "postcopy:parallel=4"}))
    assert config.get_cluster().hvparams["migration_caps"] == "postcopy:parallel=4"


@pytest.mark.parametrize(
    "field, path, says",
    [
        ("export_dir", "/", "it holds the system's /boot"),
        ("export_dir", "//etc", "it is the system's /etc"),  # POSIX's two slashes
        ("export_dir", "/srv/../etc/ganeti-lv", "it lies in the system's /etc"),
        ("shared_file_storage_dir", "/usr", "it holds the system's /usr/bin"),
        ("file_storage_dir", "/usr/local/lib/x", "it lies in the system's /usr/local/lib"),
        ("export_dir", "/var/", "shared with the rest of the system"),
        ("export_dir", "/tmp", "shared with the rest of the system"),
    ],
)
def test_a_data_dir_in_the_systems_own_trees_is_refused(
    ctx: Context, config: ConfigStore, field: str, path: str, says: str
) -> None:
    """Exports are replaced and deleted there by instance name: an instance named ``etc``."""
    serial = config.read().serial
    err = prereq_error(ctx, OpClusterSetParams(**{field: path}))
    assert err.ecode == ECODE_INVAL and says in err.msg and field in err.msg
    assert config.read().serial == serial
    run(ctx, OpClusterSetParams(export_dir="/var/lib/ganeti-lv-exports"))  # beside them: fine
    assert config.get_cluster().export_dir == "/var/lib/ganeti-lv-exports"
    run(ctx, OpClusterSetParams(hooks_base_dir="/etc/ganeti-lv/hooks-2"))  # hooks: config
    assert config.get_cluster().hooks_base_dir == "/etc/ganeti-lv/hooks-2"


@pytest.mark.parametrize(
    ("op", "doing"),
    [
        (OpNodeRemove(node_name=N3), "to remove it"),
        (OpNodeSetParams(node_name=N3, offline=True), "to set it offline"),
        (OpNodeSetParams(node_name=N3, offline=True, force=True), "to set it offline"),
        (OpNodeSetParams(node_name=N3, vm_capable=False), "to unset its vm_capable flag"),
    ],
)
def test_a_node_running_an_instance_of_another_primary_stays_asked(
    ctx: Context, config: ConfigStore, fake_ops: FakeNodeOps, op: OpCode, doing: str
) -> None:
    """A migration cut short left inst1 running on node3 alone: removed, offline or not
    vm_capable, node3 would no longer be asked, and inst1's start made a second copy."""
    fake_ops.add_domain(N3, INST)
    serial = config.read().serial
    err = prereq_error(ctx, op)
    assert err.ecode == ECODE_STATE and INST in err.msg and doing in err.msg
    assert "migrate --cleanup" in err.msg and config.read().serial == serial
    fake_ops.fail("instance_list", N3, NodeUnreachable("no route", node=N3))
    _, lines = run(ctx, op)  # a dead node: warned about, the change made
    assert any(f"Could not check which instances run on node {N3}" in line for line in lines)


@pytest.mark.parametrize(
    ("path", "says"),
    [
        ("/tmp", "where anyone may write"),
        ("/var/tmp/hooks", "where anyone may write"),
        ("/dev/shm/h", "where anyone may write"),
        ("/var/lib", "shared with the rest of the system"),
    ],
)
def test_a_hooks_dir_others_may_write_to_is_refused(
    ctx: Context, config: ConfigStore, path: str, says: str
) -> None:
    """The scripts there run as root on every node."""
    serial = config.read().serial
    err = prereq_error(ctx, OpClusterSetParams(hooks_base_dir=path))
    assert err.ecode == ECODE_INVAL and says in err.msg and "hooks_base_dir" in err.msg
    assert config.read().serial == serial


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"export_dir": "FILE"}, "The export_dir (FILE) and the file_storage_dir (FILE)"),
        ({"export_dir": "FILE/exports"}, "and the file_storage_dir (FILE) must be apart"),
        ({"shared_file_storage_dir": "/srv/x", "export_dir": "/srv/x/e"}, "must be apart"),
    ],
)
def test_data_dirs_that_overlap_are_refused(
    ctx: Context, config: ConfigStore, change: dict[str, str], says: str
) -> None:
    """An export's folder would be an instance's disk folder: removing one removes both."""
    file_dir = config.get_cluster().file_storage_dir
    change = {k: v.replace("FILE", file_dir) for k, v in change.items()}
    serial = config.read().serial
    err = prereq_error(ctx, OpClusterSetParams(**change))
    assert err.ecode == ECODE_INVAL and says.replace("FILE", file_dir) in err.msg
    assert config.read().serial == serial


def test_data_dirs_that_already_overlap_stop_no_other_change(
    ctx: Context, config: ConfigStore
) -> None:
    """A configuration from before the check: other settings still change, and the
    dirs are told apart by a change of one of them (one that still overlaps is refused)."""
    file_dir = config.get_cluster().file_storage_dir
    with config.update() as data:
        data.cluster.export_dir = f"{file_dir}/exports"
    run(ctx, OpClusterSetParams(hooks_base_dir="/etc/ganeti-lv/hooks-2"))
    assert config.get_cluster().hooks_base_dir == "/etc/ganeti-lv/hooks-2"
    run(ctx, OpClusterSetParams(shared_file_storage_dir="/srv/elsewhere"))  # the third one
    assert config.get_cluster().shared_file_storage_dir == "/srv/elsewhere"
    err = prereq_error(ctx, OpClusterSetParams(export_dir=f"{file_dir}/e2"))
    assert err.ecode == ECODE_INVAL and "must be apart" in err.msg
    run(ctx, OpClusterSetParams(export_dir="/var/lib/ganeti-lv-exports"))
    assert config.get_cluster().export_dir == "/var/lib/ganeti-lv-exports"


def _init_refused(data_dir: str, **fields: Any) -> OpPrereqError:
    """The error of a cluster init with ``fields`` (a master m1 at "x", no host key)."""
    with pytest.raises(OpPrereqError) as info:
        bootstrap.init_cluster(
            data_dir, cluster_name="c1", master=Node(name="m1", address="x"), master_host_key=None,
            **fields,
        )  # fmt: skip
    return info.value


def test_a_master_reached_by_a_program_or_an_option_is_refused_at_init(tmp_path: Any) -> None:
    """The master node's access is checked as ``node add`` checks a node's."""
    for master in (
        Node(name="m1", address="x", libvirt_uri="qemu+ext:///system?command=/bin/x"),
        Node(name="m1", address="x", ssh_user="-oProxyCommand=x"),
    ):
        with pytest.raises(OpPrereqError) as info:
            bootstrap.init_cluster(
                str(tmp_path / "data"), cluster_name="c1", master=master, master_host_key=None
            )
        assert info.value.ecode == ECODE_INVAL and "the master m1" in info.value.msg
        assert not os.path.exists(tmp_path / "data")


def test_data_dirs_that_overlap_are_refused_at_init(tmp_path: Any) -> None:
    err = _init_refused(
        str(tmp_path / "data"), export_dir="/srv/c1/data", shared_file_storage_dir="/srv/c1/data"
    )
    assert err.ecode == ECODE_INVAL and "must be apart" in err.msg


def test_memory_defaults_with_the_minimum_above_the_maximum_are_refused(
    ctx: Context, config: ConfigStore
) -> None:
    serial = config.read().serial
    err = prereq_error(ctx, OpClusterSetParams(beparams={"maxmem": 64}))  # minmem stays 128
    assert err.ecode == ECODE_INVAL and "cluster's minimum memory (128 MiB)" in err.msg
    # an instance with a maximum of its own would be left below the new minimum
    with config.update() as data:
        data.instances[INST].beparams["maxmem"] = 256
    serial = config.read().serial
    err = prereq_error(ctx, OpClusterSetParams(beparams={"minmem": 512, "maxmem": 1024}))
    assert err.ecode == ECODE_INVAL and f"instance(s) {INST}:" in err.msg
    assert config.read().serial == serial
    run(ctx, OpClusterSetParams(beparams={"minmem": 256, "maxmem": 1024}))  # fits both
    assert config.get_cluster().beparams["minmem"] == 256


def test_a_parameter_set_to_none_goes_back_to_its_default(
    ctx: Context, config: ConfigStore
) -> None:
    """gnt-lv cluster modify -H -kernel_args (Ganeti's "-key")."""
    run(ctx, OpClusterSetParams(hvparams={"kernel_args": "quiet", "cpu_type": "qemu64"}))
    run(ctx, OpClusterSetParams(hvparams={"kernel_args": None}, beparams={"vcpus": None}))
    cluster = config.get_cluster()
    assert "kernel_args" not in cluster.hvparams and cluster.hvparams["cpu_type"] == "qemu64"
    assert "vcpus" not in cluster.beparams


def test_a_storage_dir_in_use_is_not_moved(ctx: Context, config: ConfigStore) -> None:
    """Existing instances' disk paths follow the dir: they would point at nothing."""
    inst = config.get_instance(INST)
    assert inst is not None and inst.disk_template == "file"
    before = disk_path(config.get_cluster(), inst, 0)
    err = prereq_error(ctx, OpClusterSetParams(file_storage_dir="/srv/elsewhere"))
    assert err.ecode == ECODE_STATE and INST in err.msg
    assert disk_path(config.get_cluster(), inst, 0) == before
    # the shared dir has no instance here: it may move
    run(ctx, OpClusterSetParams(shared_file_storage_dir="/srv/shared-elsewhere"))
    assert config.get_cluster().shared_file_storage_dir == "/srv/shared-elsewhere"
    # one spelling per directory: the disks' paths are compared as text (cluster verify)
    run(ctx, OpClusterSetParams(shared_file_storage_dir="/srv//shared/../shared-2/"))
    assert config.get_cluster().shared_file_storage_dir == "/srv/shared-2"
    # the dir in use, spelled otherwise, is the same dir: nothing moves
    run(ctx, OpClusterSetParams(file_storage_dir=config.get_cluster().file_storage_dir + "/"))
    assert disk_path(config.get_cluster(), inst, 0) == before
    # one stored with a slash before paths were normalised is set to its plain spelling
    plain = config.get_cluster().file_storage_dir
    with config.update() as data:
        data.cluster.file_storage_dir = plain + "/"
    run(ctx, OpClusterSetParams(file_storage_dir=plain))
    assert config.get_cluster().file_storage_dir == plain


# ---------------------------------------------------------------- verify


def codes(problems: list[dict[str, str]]) -> list[tuple[str, str]]:
    return sorted((p["code"], p["item"]) for p in problems)


def test_verify_clean(ctx: Context, fake_ops: FakeNodeOps) -> None:
    fake_ops.add_domain(N1, INST)
    fake_ops.add_domain(N1, INST2)
    problems, lines = run(ctx, OpClusterVerify())
    assert problems == []
    assert "* No problems found" in lines


def test_verify_finds_domain_problems(ctx: Context, fake_ops: FakeNodeOps) -> None:
    fake_ops.add_domain(N1, INST)
    fake_ops.add_domain(N2, INST)  # running on two nodes
    fake_ops.add_domain(N3, "rogue")  # started behind ganeti_lv's back
    # inst2 is marked up but runs nowhere
    problems, lines = run(ctx, OpClusterVerify())
    assert codes(problems) == [
        ("EINSTANCEDOWN", INST2),
        ("EINSTANCEMULTIRUNNING", INST),
        ("EINSTANCEWRONGNODE", INST),
        ("ENODEORPHANINSTANCE", N3),
    ]
    assert any(
        line.startswith("  - ERROR: node node3.example.com: domain 'rogue'") for line in lines
    )


def test_verify_unreachable_and_orphan_files(
    ctx: Context, fake_ops: FakeNodeOps, config: ConfigStore
) -> None:
    fake_ops.add_domain(N1, INST)
    fake_ops.add_domain(N1, INST2)
    cluster = config.get_cluster()
    inst = config.get_instance(INST)
    assert inst is not None
    files = {
        N1: [disk_path(cluster, inst, 0), f"{cluster.file_storage_dir}/old/disk0.img"],
        N2: [],
    }
    shared = [f"{cluster.shared_file_storage_dir}/gone/disk0.img"]

    def command(node: str, argv: list[str]) -> CommandResult:
        target = argv[-1]
        listing = shared if target == cluster.shared_file_storage_dir else files.get(node, [])
        return CommandResult(0, "".join(p + "\n" for p in listing), "")

    fake_ops.command_fn = command
    fake_ops.set_unreachable(N3)
    problems, _ = run(ctx, OpClusterVerify())
    assert codes(problems) == [
        ("ECLUSTERORPHANFILE", "cluster.example.com"),
        ("ENODEORPHANFILE", N1),
        ("ENODERPC", N3),
    ]
    orphan = [p for p in problems if p["code"] == "ENODEORPHANFILE"][0]
    assert "/old/disk0.img" in orphan["message"]
    # the shared dir is listed once, from the master
    shared_calls = [
        c
        for c in fake_ops.calls_to("run_command")
        if c.args[0][-1] == cluster.shared_file_storage_dir
    ]
    assert [c.node for c in shared_calls] == [N1]


def test_verify_check_registry_and_claims(config: ConfigStore, fake_ops: FakeNodeOps) -> None:
    assert verify_checks()[-1] is check_orphan_files
    cluster = config.get_cluster()
    path = f"{cluster.file_storage_dir}/{INST}/disk0.img.overlay"
    fake_ops.command_fn = lambda node, argv: CommandResult(0, path + "\n", "")
    reported: list[str] = []
    vd = VerifyData(config=config.read(), rpc=fake_ops, feedback_fn=reported.append)
    vd.domains = {N1: {}}

    @register_verify_check(order=60)
    def claim_overlays(vdata: VerifyData) -> None:
        vdata.claim_file(N1, path)

    try:
        for check in verify_checks():
            check(vd)
        assert not [p for p in vd.problems if p.code == "ENODEORPHANFILE"]
    finally:
        from ganeti_lv.cmdlib import cluster as cluster_mod

        cluster_mod._VERIFY_CHECKS[:] = [
            c for c in cluster_mod._VERIFY_CHECKS if c[2] is not claim_overlays
        ]


def test_init_with_an_operators_ssh_key_writes_a_private_copy(tmp_path: Any) -> None:
    """The copy is written 0600 from its first byte, and replaces whatever the path held
    (a symlink's target elsewhere is left alone)."""
    from ganeti_lv.objects import Node

    ddir, own = tmp_path / "d", tmp_path / "operator_key"
    own.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nx\n")
    (tmp_path / "operator_key.pub").write_text("ssh-ed25519 QUFBQQ== op\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_text("not to be touched\n")
    key_path = paths.ssh_key_file(str(ddir))
    os.makedirs(os.path.dirname(key_path))
    os.symlink(elsewhere, key_path)
    bootstrap.init_cluster(
        str(ddir),
        cluster_name="c1",
        master=Node(name="m1", address="127.0.0.1"),
        master_host_key=host_key(),
        ssh_key_file=str(own),
    )
    assert not os.path.islink(key_path) and os.stat(key_path).st_mode & 0o777 == 0o600
    with open(key_path) as fh:
        assert fh.read() == own.read_text()
    assert elsewhere.read_text() == "not to be touched\n"


def test_init_cluster(tmp_path: Any) -> None:
    from ganeti_lv.objects import Node

    ddir = str(tmp_path / "d")
    data = bootstrap.init_cluster(
        ddir,
        cluster_name="c1",
        master=Node(name="m1", address="127.0.0.1", ssh_port=2200),
        master_host_key=host_key(),
        domain_type="qemu",
        hvparams={"kernel_args": "x"},
    )
    assert data.cluster.domain_type == "qemu" and data.cluster.hvparams["acpi"] is True
    assert os.path.isfile(paths.ssh_key_file(ddir)) and os.path.isfile(
        paths.ssh_key_file(ddir) + ".pub"
    )
    assert (
        bootstrap.lookup_known_host(paths.known_hosts_file(ddir), "127.0.0.1", 2200) == host_key()
    )
    assert ConfigStore(ddir).read().nodes["m1"].address == "127.0.0.1"
    with pytest.raises(OpPrereqError) as info:
        bootstrap.init_cluster(
            ddir, cluster_name="c1", master=Node(name="m1", address="x"), master_host_key=None
        )
    assert info.value.ecode == ECODE_EXISTS
    _init_refused(str(tmp_path / "e"), colour="red")
    assert not os.path.exists(str(tmp_path / "e"))
    # the master's settings as node add and modify check a node's
    for master, text in (
        (Node(name="m1", address="x", memory_cap=-4096), "Invalid memory cap -4096"),
        (Node(name="m1", address="x", ssh_port=0), "Invalid SSH port 0"),
    ):
        with pytest.raises(OpPrereqError, match=text) as info:
            bootstrap.init_cluster(
                str(tmp_path / "e"), cluster_name="c1", master=master, master_host_key=None
            )
        assert info.value.ecode == ECODE_INVAL
        assert not os.path.exists(str(tmp_path / "e"))


def test_node_taken_offline_needs_no_pre_hooks_on_it(
    ctx: Context, config: ConfigStore, fake_ops: FakeNodeOps
) -> None:
    """Offlining is how a dead node is declared dead: its own pre hooks are not run."""
    fake_ops.set_unreachable(N3)
    run(ctx, OpNodeSetParams(node_name=N3, offline=True))
    node = config.get_node(N3)
    assert node is not None and node.offline
    # back online only when it answers (as Ganeti), also into the drained role
    for back in ({"offline": False}, {"drained": True}):
        with pytest.raises(OpPrereqError, match="brought back online but does not answer") as err:
            run(ctx, OpNodeSetParams(node_name=N3, **back))
        assert err.value.ecode == ECODE_STATE
        node = config.get_node(N3)
        assert node is not None and node.offline and not node.drained
    fake_ops.set_unreachable(N3, False)
    run(ctx, OpNodeSetParams(node_name=N3, drained=True))
    node = config.get_node(N3)
    assert node is not None and not node.offline and node.drained  # Ganeti's drained role
    # any other change still runs the node's pre hooks, and fails when it is unreachable
    fake_ops.set_unreachable(N3)
    with pytest.raises(HooksAbort, match="Communication failure"):
        run(ctx, OpNodeSetParams(node_name=N3, drained=False))


def test_node_remove_runs_the_post_hooks_on_the_removed_node_too(
    ctx: Context, fake_ops: FakeNodeOps, config: ConfigStore
) -> None:
    envs: dict[str, dict[str, str]] = {}

    def hook(node: str, hooks_dir: str, env: dict[str, str], timeout: float) -> list[Any]:
        if os.path.basename(hooks_dir) == "node-remove-post.d":
            envs[node] = dict(env)
        return []

    fake_ops.hooks_fn = hook
    others = sorted(n for n in config.node_names() if n != N3)
    run(ctx, OpNodeRemove(node_name=N3))
    assert sorted(envs) == sorted([*others, N3])  # Ganeti's RunPostHook on the node
    assert envs[N3]["GANETI_HOOKS_PHASE"] == "post"
    assert envs[N3]["GANETI_NODE_NAME"] == envs[N3]["GANETI_POST_NODE_NAME"] == N3
    assert config.get_node(N3) is None


def test_node_modify_keeps_vm_capable_under_instances(ctx: Context, config: ConfigStore) -> None:
    serial = config.read().serial
    err = prereq_error(ctx, OpNodeSetParams(node_name=N1, vm_capable=False))
    assert err.ecode == ECODE_STATE
    assert err.msg == f"Node {N1} hosts instances, cannot unset the vm_capable flag"
    node = config.get_node(N1)
    assert node is not None and node.vm_capable is True and config.read().serial == serial


@pytest.mark.parametrize(
    "op",
    [
        OpNodeAdd(node_name="node4", primary_ip="10.250.0.4", memory_cap=-1),
        OpNodeSetParams(node_name=N3, memory_cap=-1),
    ],
    ids=["add", "modify"],
)
def test_a_negative_memory_cap_is_refused_alike_by_add_and_modify(
    ctx: Context, config: ConfigStore, op: OpCode
) -> None:
    serial = config.read().serial
    err = prereq_error(ctx, op)
    assert (err.ecode, err.msg) == (ECODE_INVAL, f"Invalid memory cap -1 for node {op.node_name}")
    assert config.read().serial == serial


def test_node_remove_goes_on_when_the_removed_nodes_post_hooks_fail(
    ctx: Context, fake_ops: FakeNodeOps, config: ConfigStore
) -> None:
    def hook(node: str, hooks_dir: str, env: dict[str, str], timeout: float) -> list[Any]:
        if node == N3:
            raise RuntimeError("hooks runner broke")
        return []

    fake_ops.hooks_fn = hook
    _, lines = run(ctx, OpNodeRemove(node_name=N3))
    assert any(f"Errors occurred running hooks on {N3}" in line for line in lines), lines
    assert config.get_node(N3) is None
