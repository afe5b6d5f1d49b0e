"""LUBackupExport / Query / Remove through the processor with FakeNodeOps."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from support.waiting import wait_until

from ganeti_lv import constants, exportinfo
from ganeti_lv.config import ConfigStore
from ganeti_lv.context import Context
from ganeti_lv.errors import (
    ECODE_INVAL,
    ECODE_NOENT,
    ECODE_NORES,
    ECODE_STATE,
    NodeError,
    OpExecError,
    OpPrereqError,
)
from ganeti_lv.hypervisor.fake import FakeNodeOps
from ganeti_lv.hypervisor.fake_export import FakeExport
from ganeti_lv.mcpu import Processor
from ganeti_lv.objects import disk_path
from ganeti_lv.opcodes import OpBackupExport, OpBackupQuery, OpBackupRemove, OpCode

N1, N2, N3 = "node1.example.com", "node2.example.com", "node3.example.com"
INST = "inst1.example.com"


def place_inst1(ops: FakeNodeOps, config: ConfigStore) -> None:
    """inst1 runs on node1 with its disk file."""
    cluster = config.get_cluster()
    inst = config.get_instance(INST)
    assert inst is not None
    path = disk_path(cluster, inst, 0)
    ops.add_domain(N1, INST, disk_paths=[path])
    ops.node(N1).files[path] = 1024


@pytest.fixture
def ops(fake_ops: FakeNodeOps, config: ConfigStore) -> FakeNodeOps:
    """inst1 runs on node1 with its disk file."""
    place_inst1(fake_ops, config)
    return fake_ops


def run(ctx: Context, op: OpCode) -> tuple[Any, list[str]]:
    lines: list[str] = []
    result = Processor(ctx).execute(op, feedback_fn=lines.append)
    return result, lines


def methods(ops: FakeNodeOps) -> list[str]:
    return [c.method for c in ops.calls if c.method not in ("run_hooks",)]


def admin(config: ConfigStore) -> str:
    inst = config.get_instance(INST)
    assert inst is not None
    return inst.admin_state


def running(ops: FakeNodeOps) -> bool:
    dom = ops.node(N1).domains.get(INST)
    return dom is not None and dom.state == constants.DOMSTATE_RUNNING


def test_live_export_snapshots_copies_publishes_and_merges(ctx, ops, config):
    result, lines = run(ctx, OpBackupExport(instance_name="inst1", target_node=N2, shutdown=False))
    assert result == (True, [True])
    seq = methods(ops)
    assert "shutdown_instance" not in seq
    assert seq.index("snapshot_disks") < seq.index("copy_disk") < seq.index("commit_snapshot")
    copy = ops.calls_to("copy_disk")[0]
    assert copy.args[0] == disk_path(config.get_cluster(), config.get_instance(INST), 0)
    assert copy.args[2] == f"{config.get_cluster().export_dir}/{INST}.new/disk0.img"
    assert ops.node(N1).domains[INST].overlays == []
    exp = ops.exports[N2][INST]
    manifest = exportinfo.Manifest.from_json(exp.manifest_text)
    assert manifest.disks[0].checksum == exp.files["disk0.img"]
    assert manifest.disks[0].checksum_algorithm == "sha256-tree-4M"
    cfg = exportinfo.parse_config(exp.config_text)
    assert cfg["instance"]["name"] == INST and cfg["export"]["source"] == N1
    assert running(ops) and admin(config) == constants.ADMINST_UP
    assert any(line.startswith("disk/0 sent ") and "MiB/s" in line for line in lines)
    assert any("Export of inst1.example.com is in node2" in line for line in lines)


def test_shutdown_export_restarts_right_after_the_snapshot(ctx, ops, config):
    run(ctx, OpBackupExport(instance_name=INST, target_node=N2))
    seq = methods(ops)
    assert seq.index("shutdown_instance") < seq.index("start_with_snapshot")
    assert seq.index("start_with_snapshot") < seq.index("copy_disk")
    assert "start_instance" not in seq
    assert running(ops) and admin(config) == constants.ADMINST_UP


def test_shutdown_export_without_snapshot_copies_stopped_then_starts(ctx, ops, config):
    ops.fail("start_with_snapshot", N1, "snapshots unsupported")
    _, lines = run(ctx, OpBackupExport(instance_name=INST, target_node=N2))
    seq = methods(ops)
    assert seq.index("copy_disk") < seq.index("start_instance")
    assert any("copying without" in line for line in lines)
    assert running(ops) and admin(config) == constants.ADMINST_UP


def test_failed_copy_keeps_previous_export_and_instance(ctx, ops, config):
    run(ctx, OpBackupExport(instance_name=INST, target_node=N2, shutdown=False))
    previous = ops.exports[N2][INST]
    ops.fail("copy_disk", N1, NodeError("connection lost", N1))
    with pytest.raises(OpExecError, match="connection lost"):
        run(ctx, OpBackupExport(instance_name=INST, target_node=N2, shutdown=False))
    assert ops.exports[N2][INST] is previous
    assert f"{INST}.new" not in ops.exports[N2]
    assert ops.node(N1).domains[INST].overlays == []  # merged in the finally
    assert running(ops) and admin(config) == constants.ADMINST_UP


def test_failed_copy_while_stopped_restarts_instance(ctx, ops, config):
    ops.fail("start_with_snapshot", N1, "snapshots unsupported")
    ops.fail("copy_disk", N1, NodeError("disk full", N1, ecode=ECODE_NORES))
    with pytest.raises(OpExecError) as err:
        run(ctx, OpBackupExport(instance_name=INST, target_node=N2))
    assert err.value.ecode == ECODE_NORES
    assert running(ops) and admin(config) == constants.ADMINST_UP


def test_failed_restart_leaves_config_truthful(ctx, ops, config):
    ops.fail("start_with_snapshot", N1, "snapshots unsupported")
    ops.fail("start_instance", N1, "no memory")
    with pytest.raises(OpExecError, match="Could not start"):
        run(ctx, OpBackupExport(instance_name=INST, target_node=N2))
    assert not running(ops)
    assert admin(config) == constants.ADMINST_DOWN
    assert INST in ops.exports[N2]  # the export itself was completed


def test_export_with_remove_instance(ctx, ops, config):
    run(ctx, OpBackupExport(instance_name=INST, target_node=N2, remove_instance=True))
    seq = methods(ops)
    assert "snapshot_disks" not in seq and "start_with_snapshot" not in seq
    assert seq.index("copy_disk") < seq.index("remove_disks")
    assert config.get_instance(INST) is None
    assert INST in ops.exports[N2]


def test_export_of_stopped_instance_copies_directly(ctx, ops, config):
    config.set_admin_state(INST, constants.ADMINST_DOWN)
    ops.node(N1).domains[INST].state = constants.DOMSTATE_SHUTOFF
    run(ctx, OpBackupExport(instance_name=INST, target_node=N2))
    seq = methods(ops)
    assert "shutdown_instance" not in seq and "start_instance" not in seq
    assert "snapshot_disks" not in seq and "copy_disk" in seq
    assert admin(config) == constants.ADMINST_DOWN and not running(ops)


def test_second_export_elsewhere_removes_first(ctx, ops):
    run(ctx, OpBackupExport(instance_name=INST, target_node=N2, shutdown=False))
    run(ctx, OpBackupExport(instance_name=INST, target_node=N3, shutdown=False))
    assert INST not in ops.exports.get(N2, {})
    assert INST in ops.exports[N3]
    result, _ = run(ctx, OpBackupQuery())
    assert result == {N1: [], N2: [], N3: [INST]}


def test_leftover_overlay_is_merged_first(ctx, ops):
    ops.node(N1).domains[INST].overlays = ["/x/disk0.img.export-snap.qcow2"]
    _, lines = run(ctx, OpBackupExport(instance_name=INST, target_node=N2, shutdown=False))
    assert methods(ops)[0] == "repair_disk_chain" or "repair_disk_chain" in methods(ops)
    assert any("Merged leftover export overlay /x/disk0.img.export-snap.qcow2" in x for x in lines)


def test_zero_free_space_and_compression(ctx, ops):
    run(
        ctx,
        OpBackupExport(instance_name=INST, target_node=N2, zero_free_space=True, compress="zstd"),
    )
    seq = methods(ops)
    assert seq.index("shutdown_instance") < seq.index("zero_free_space")
    assert seq.index("zero_free_space") < seq.index("start_with_snapshot")
    assert ops.copy_options[0]["compress"] == "zstd"


def test_backup_remove(ctx, ops):
    run(ctx, OpBackupExport(instance_name=INST, target_node=N2, shutdown=False))
    result, _ = run(ctx, OpBackupRemove(instance_name=INST))
    assert result == [N2]
    assert INST not in ops.exports[N2]
    with pytest.raises(OpExecError, match="No exports found"):
        run(ctx, OpBackupRemove(instance_name=INST))


def test_target_without_space_is_nores(ctx, ops):
    ops.free_bytes[N2] = 1024
    with pytest.raises(OpPrereqError) as err:
        run(ctx, OpBackupExport(instance_name=INST, target_node=N2))
    assert err.value.ecode == ECODE_NORES
    assert "shutdown_instance" not in methods(ops)


@pytest.mark.parametrize(
    "kwargs, ecode, match",
    [
        ({"remove_instance": True, "shutdown": False}, ECODE_STATE, "Can not remove instance"),
        ({"zero_free_space": True, "shutdown": False}, ECODE_INVAL, "zeroing cannot be used"),
        ({"compress": "lzma"}, ECODE_INVAL, "Compression tool not allowed"),
        ({"long_sleep": True, "shutdown": False}, ECODE_INVAL, "long sleep"),
        ({"zeroing_timeout_fixed": 5}, ECODE_INVAL, "Zeroing timeout options"),
        ({"instance_name": "nosuch"}, ECODE_NOENT, "not known"),
        ({"target_node": "nosuch"}, ECODE_NOENT, "not known"),
        ({"mode": "remote", "target_node": None}, ECODE_INVAL, "Missing X509 key name"),
        (
            {"mode": "remote", "x509_key_name": ["k", "h"], "target_node": None},
            ECODE_INVAL,
            "Missing destination X509 CA",
        ),
        (
            {"mode": "remote", "x509_key_name": ["k"], "destination_x509_ca": "pem"},
            ECODE_INVAL,
            "not supported yet",
        ),
    ],
)
def test_bad_input_changes_nothing(ctx, ops, config, kwargs, ecode, match):
    args = {"instance_name": INST, "target_node": N2, **kwargs}
    with pytest.raises(OpPrereqError, match=match) as err:
        run(ctx, OpBackupExport(**args))
    assert err.value.ecode == ecode
    assert not {"shutdown_instance", "copy_disk", "export_prepare"} & set(methods(ops))
    assert admin(config) == constants.ADMINST_UP and running(ops)


@pytest.mark.parametrize("flag", ["offline", "drained"])
def test_offline_or_drained_target_refused(ctx, ops, config, flag):
    node = config.get_node(N2)
    assert node is not None
    setattr(node, flag, True)
    config.update_node(node)
    with pytest.raises(OpPrereqError) as err:
        run(ctx, OpBackupExport(instance_name=INST, target_node=N2))
    assert err.value.ecode == ECODE_STATE
    assert "copy_disk" not in methods(ops)


def test_hooks_env_and_nodes(ctx, ops):
    seen: list[tuple[str, dict[str, str]]] = []
    ops.hooks_fn = lambda node, d, env, t: seen.append((node, env)) or []
    run(ctx, OpBackupExport(instance_name=INST, target_node=N2, remove_instance=True))
    pre = [(n, e) for n, e in seen if e["GANETI_HOOKS_PHASE"] == "pre"]
    assert sorted(n for n, _ in pre) == [N1, N2]  # master (node1) = primary, target
    env = pre[0][1]
    assert env["GANETI_EXPORT_MODE"] == "local" and env["GANETI_EXPORT_NODE"] == N2
    assert env["GANETI_EXPORT_DO_SHUTDOWN"] == "True"
    assert env["GANETI_REMOVE_INSTANCE"] == "True" and env["GANETI_SHUTDOWN_TIMEOUT"] == "120"
    post = [e for _, e in seen if e["GANETI_HOOKS_PHASE"] == "post"]
    assert post and post[0]["GANETI_POST_INSTANCE_NAME"] == INST  # after removal


def test_dry_run(ctx, ops):
    result, _ = run(ctx, OpBackupExport(instance_name=INST, target_node=N2, dry_run=True))
    assert result == (True, [True])
    assert "copy_disk" not in methods(ops)


def _import_restored(ctx):
    """Import INST's export on N2 as a new, stopped instance on N3."""
    from ganeti_lv.opcodes import OpInstanceCreate

    run(
        ctx,
        OpInstanceCreate(
            instance_name="restored.example.com",
            disk_template="file",
            pnode=N3,
            mode="import",
            src_node=N2,
            src_path=INST,
            start=False,
        ),
    )


def test_import_from_export_verifies_checksums(ctx, ops, config):

    run(ctx, OpBackupExport(instance_name=INST, target_node=N2, shutdown=False))
    sha = ops.exports[N2][INST].files["disk0.img"]
    _import_restored(ctx)
    inst = config.get_instance("restored.example.com")
    assert inst is not None and [d.size for d in inst.disks] == [1024]
    copy = ops.calls_to("copy_disk", N2)[-1]
    assert copy.args[1] == N3 and copy.args[2] == disk_path(config.get_cluster(), inst, 0)
    assert ops.copy_options[-1]["expect_sha256"] == f"sha256-tree-4M:{sha}"


def test_import_with_corrupt_export_fails_and_leaves_nothing(ctx, ops, config):
    from ganeti_lv.opcodes import OpInstanceCreate

    run(ctx, OpBackupExport(instance_name=INST, target_node=N2, shutdown=False))
    ops.exports[N2][INST].files["disk0.img"] = "0" * 64  # data no longer matches the manifest
    with pytest.raises(OpExecError, match="checksum mismatch"):
        run(
            ctx,
            OpInstanceCreate(
                instance_name="restored.example.com",
                disk_template="file",
                pnode=N3,
                mode="import",
                src_node=N2,
                start=False,
                src_path=INST,
            ),
        )
    assert config.get_instance("restored.example.com") is None


def test_cli_export_list_remove(ctx, ops, config, data_dir, capsys):
    from ganeti_lv.cli.backup import parse_progress
    from ganeti_lv.cli.main import main

    base = ["--data-dir", data_dir]
    code = main([*base, "backup", "export", "-n", N2, "--noshutdown", INST], node_ops=ops)
    out = capsys.readouterr().out
    assert code == 0
    assert "disk/0 sent 1.0G, " in out and f"Export of {INST} is in {N2}" in out
    assert main([*base, "backup", "list", "--node", N2], node_ops=ops) == 0
    assert capsys.readouterr().out == f"Node: {N2}\nExports:\n\t{INST}\n"
    code = main(
        [*base, "backup", "export", "-n", N2, "--transport-compression", "xz", INST], node_ops=ops
    )
    err = capsys.readouterr().err
    assert code == 1 and "error type: wrong_input" in err and "Compression tool not allowed" in err
    assert main([*base, "backup", "remove", INST], node_ops=ops) == 0
    assert INST not in ops.exports[N2]
    assert parse_progress("disk/1 sent 1.5G, 120.0 MiB/s, 30%, ETA 12s") == (
        "disk/1",
        30.0,
        "1.5G, 120.0 MiB/s, 30%, ETA 12s",
    )


def test_cluster_verify_reports_overlays_and_stale_exports(ctx, ops, config):
    from ganeti_lv.opcodes import OpClusterVerify

    ops.node(N1).domains[INST].overlays = ["/x/disk0.img.export-snap.qcow2"]
    ops.exports.setdefault(N2, {})[f"{INST}.new"] = FakeExport()
    problems, lines = run(ctx, OpClusterVerify())
    codes = {p["code"] if isinstance(p, dict) else p.code for p in problems}
    assert {"EINSTANCEOVERLAY", "ENODESTALEEXPORT"} <= codes
    assert any("interrupted export" in line for line in lines)
    assert any(f"{INST}.new" in line for line in lines)


def test_import_of_version1_export_verifies_plain_sha256(ctx, ops, config):
    import json

    run(ctx, OpBackupExport(instance_name=INST, target_node=N2, shutdown=False))
    exp = ops.exports[N2][INST]
    data = json.loads(exp.manifest_text)
    disk = data["disks"][0]
    disk["sha256"] = disk.pop("checksum")
    del disk["checksum_algorithm"]
    data["version"] = 1
    exp.manifest_text = json.dumps(data)  # as written before the tree checksum
    _import_restored(ctx)
    assert ops.copy_options[-1]["expect_sha256"] == f"sha256:{exp.files['disk0.img']}"


class _Rendezvous(FakeNodeOps):
    """Fake node operations whose space reads wait until all of them have started."""

    def __init__(self, parties: int) -> None:
        super().__init__()
        self.barrier = threading.Barrier(parties, timeout=5)

    def _op_disk_usage(self, node, paths):
        self.barrier.wait()  # BrokenBarrierError if the reads ran one after another
        return super()._op_disk_usage(node, paths)

    def _op_free_space(self, node, path):
        self.barrier.wait()
        return super()._op_free_space(node, path)


def test_space_checks_on_primary_and_target_run_at_once(config):
    # the disk read and the free space of the primary and of the target
    ops = _Rendezvous(3)
    cluster = config.get_cluster()
    inst = config.get_instance(INST)
    path = disk_path(cluster, inst, 0)
    ops.add_domain(N1, INST, disk_paths=[path])
    ops.node(N1).files[path] = 1024
    ctx = Context.from_data_dir(config.data_dir, node_ops=ops)
    result, _ = run(ctx, OpBackupExport(instance_name=INST, target_node=N2, shutdown=False))
    assert result == (True, [True])
    assert sorted((c.method, c.node) for c in ops.calls_to("free_space")) == [
        ("free_space", N1),
        ("free_space", N2),
    ]


def test_failed_merge_after_publish_is_reported_and_export_kept(ctx, ops, config):
    run(ctx, OpBackupExport(instance_name=INST, target_node=N3, shutdown=False))
    ops.fail("commit_snapshot", N1, "block job failed", times=1)
    with pytest.raises(OpExecError, match="Could not merge the snapshot"):
        run(ctx, OpBackupExport(instance_name=INST, target_node=N2, shutdown=False))
    # the new export was published; the older one elsewhere was removed meanwhile
    assert INST in ops.exports[N2] and f"{INST}.new" not in ops.exports[N2]
    assert INST not in ops.exports.get(N3, {})
    assert ops.node(N1).domains[INST].overlays != []  # the fake left the overlay
    # the next operation on the instance merges the leftover
    run(ctx, OpBackupExport(instance_name=INST, target_node=N2, shutdown=False))
    assert ops.node(N1).domains[INST].overlays == []


def test_cli_export_warms_master_primary_and_target(ctx, ops, data_dir):
    from ganeti_lv.cli.main import main

    warmed: list[list[str]] = []
    ops.prewarm = lambda nodes: warmed.append([n.name for n in nodes])  # type: ignore[attr-defined]
    code = main(
        ["--data-dir", data_dir, "backup", "export", "-n", N2, "--noshutdown", INST], node_ops=ops
    )
    assert code == 0
    # the CLI: master and primary (node1) and the target; the LU, during the copy:
    # the other node, for the clean-up of older exports
    assert warmed == [[N1, N2], [N3]]


class _Prestarts(FakeNodeOps):
    """Fake node operations that record copies set up ahead and called off."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[tuple[str, Any]] = []

    def prestart_copy(self, src, src_path, dst, dst_path, **kw):
        self.events.append(("prestart", (src.name, src_path, dst.name, dst_path, kw)))

    def drop_prestarted_copies(self):
        self.events.append(("drop", None))

    def _op_snapshot_disks(self, node, instance, freeze):
        self.events.append(("snapshot", node.name))
        return super()._op_snapshot_disks(node, instance, freeze)


@pytest.fixture
def pops(config: ConfigStore) -> _Prestarts:
    ops = _Prestarts()
    place_inst1(ops, config)
    return ops


def test_live_export_sets_its_copy_up_before_the_snapshot(config, pops):
    ctx = Context.from_data_dir(config.data_dir, node_ops=pops)
    run(ctx, OpBackupExport(instance_name=INST, target_node=N2, shutdown=False, compress="gzip"))
    cluster = config.get_cluster()
    inst = config.get_instance(INST)
    expected = (
        N1,
        disk_path(cluster, inst, 0),
        N2,
        f"{cluster.export_dir}/{INST}.new/disk0.img",
        {"compress": "gzip", "bandwidth_limit": None},
    )
    assert pops.events == [("prestart", expected), ("snapshot", N1), ("drop", None)]
    # the copy made is the one set up (same source, target and options)
    copy = pops.calls_to("copy_disk")[0]
    assert (copy.node, *copy.args) == expected[:4]


def test_prestarted_copy_called_off_when_the_export_fails_early(config, pops):
    pops.fail("snapshot_disks", N1, "qemu said no")
    ctx = Context.from_data_dir(config.data_dir, node_ops=pops)
    with pytest.raises(OpExecError, match="without a snapshot"):
        run(ctx, OpBackupExport(instance_name=INST, target_node=N2, shutdown=False))
    assert [e[0] for e in pops.events] == ["prestart", "snapshot", "drop"]
    assert pops.calls_to("copy_disk") == []


def test_shutdown_export_sets_nothing_up_ahead(config, pops):
    ctx = Context.from_data_dir(config.data_dir, node_ops=pops)
    run(ctx, OpBackupExport(instance_name=INST, target_node=N2))
    kinds = [e[0] for e in pops.events]
    assert "prestart" not in kinds and kinds[-1] == "drop"


def test_cli_sets_live_export_copies_up_while_the_job_starts(config, pops, data_dir):
    from ganeti_lv.cli.main import main

    done = threading.Event()
    calls: list[tuple[str, Any]] = []

    def prestart(src, src_path, dst, dst_path, **kw):
        calls.append((threading.current_thread().name, (src.name, src_path, dst.name, dst_path)))
        done.set()

    pops.prestart_copy = prestart  # type: ignore[method-assign]
    base = ["--data-dir", data_dir, "backup", "export", "-n", N2]
    assert main([*base, "--noshutdown", INST], node_ops=pops) == 0
    assert done.wait(10)
    cluster, inst = config.get_cluster(), config.get_instance(INST)
    new_disk = f"{cluster.export_dir}/{INST}.new/disk0.img"
    expected = (N1, disk_path(cluster, inst, 0), N2, new_disk)
    # once from the command line's thread, once more (the same copy) from the LU
    assert sorted(calls) == [("MainThread", expected), ("export-prestart", expected)]
    calls.clear()
    assert main([*base, "--noshutdown", "--dry-run", INST], node_ops=pops) == 0
    assert main([*base, INST], node_ops=pops) == 0  # shutdown mode
    assert calls == []


def test_the_master_daemon_sets_a_live_exports_copy_up_ahead_of_the_job(config, pops):
    from ganeti_lv.cancel import Cancellation
    from ganeti_lv.master.daemon import MasterDaemon

    daemon = MasterDaemon(config.data_dir, node_ops=pops)
    op = OpBackupExport(instance_name=INST, target_node=N2, shutdown=False)
    daemon.run_job(op, None, lambda _line: None, Cancellation())
    # ahead of the job (its thread may still be at it) and again by the LU
    # before the snapshot (where the same copy is kept), dropped at the end
    wait_until(lambda: [e[0] for e in pops.events].count("prestart") >= 2, 5)
    kinds = [e[0] for e in pops.events]
    assert kinds.count("prestart") == 2
    assert kinds.index("prestart") < kinds.index("snapshot")
    # a shutdown export reads a stopped disk: nothing is set up ahead for it
    pops.events.clear()
    ahead_ctx = daemon.context(None)
    from ganeti_lv import ahead

    ahead.prestart_copies(ahead_ctx, OpBackupExport(instance_name=INST, target_node=N2))
    time.sleep(0.1)
    assert pops.events == []
