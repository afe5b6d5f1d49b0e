"""Import of exports through the processor with FakeNodeOps: Ganeti's exports, bad input."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from support import locks as held_locks
from test_exportcompat import DUMP, GANETI_CONFIG
from test_lu_backup import INST, N1, N2, N3, place_inst1, run, running

from ganeti_lv import constants, exportinfo, locking
from ganeti_lv.config import ConfigStore
from ganeti_lv.context import Context
from ganeti_lv.errors import (
    ECODE_ENVIRON,
    ECODE_INVAL,
    ECODE_NOENT,
    ECODE_STATE,
    LockTimeout,
    OpExecError,
    OpPrereqError,
)
from ganeti_lv.hypervisor.fake import FakeNodeOps
from ganeti_lv.hypervisor.fake_export import FakeExport
from ganeti_lv.objects import disk_path
from ganeti_lv.opcodes import OpBackupExport, OpBackupQuery, OpBackupRemove, OpInstanceCreate

MiB = 1024 * 1024
NEW = "restored.example.com"
SHA = "ab" * 32


@pytest.fixture
def ops(fake_ops: FakeNodeOps, config: ConfigStore) -> FakeNodeOps:
    """inst1 runs on node1 with its disk file."""
    place_inst1(fake_ops, config)
    return fake_ops


def ganeti_export(ops: FakeNodeOps, text: str = GANETI_CONFIG, name: str = "alpha") -> FakeExport:
    """A Ganeti export of ``alpha`` on node2 (br0 is the fake nodes' bridge)."""
    exp = FakeExport(
        files={DUMP: SHA},
        config_text=text.replace("xen-br0", "br0").replace("/boot/vmlinuz-3-kvmU", ""),
        sizes={DUMP: 128 * MiB},
    )
    ops.exports.setdefault(N2, {})[name] = exp
    return exp


def import_op(**kw: Any) -> OpInstanceCreate:
    """An import of ``alpha`` on node2 as NEW, stopped, on node3; ``kw`` overrides."""
    args: dict[str, Any] = {
        "instance_name": NEW,
        "disk_template": "file",
        "pnode": N3,
        "mode": "import",
        "src_node": N2,
        "src_path": "alpha",
        "start": False,
    }
    return OpInstanceCreate(**{**args, **kw})


def _import(ctx: Context, **kw: Any) -> tuple[Any, list[str]]:
    return run(ctx, import_op(**kw))


def _nothing_created(ops: FakeNodeOps, config: ConfigStore) -> None:
    assert config.get_instance(NEW) is None
    assert not ops.calls_to("create_disks") and not ops.calls_to("copy_disk")


def _refused(
    ops: FakeNodeOps, config: ConfigStore, ctx: Context, change: tuple[str, str], match: str
) -> OpPrereqError:
    """The import of Ganeti's export with one ``change`` (old, new text) refused; nothing made."""
    ganeti_export(ops, GANETI_CONFIG.replace(*change))
    with pytest.raises(OpPrereqError, match=match) as err:
        _import(ctx)
    _nothing_created(ops, config)
    return err.value


def test_ganeti_export_imported_with_translated_parameters(ctx, fake_ops, config):
    ganeti_export(fake_ops)
    _, lines = _import(ctx, hvparams={"cpu_type": "qemu64"})
    inst = config.get_instance(NEW)
    assert inst is not None
    assert [d.size for d in inst.disks] == [128] and inst.os == "noop"
    assert inst.nics[0].mac == "aa:00:00:5e:11:22" and inst.nics[0].link == "br0"
    assert inst.beparams == {
        "maxmem": 256,
        "minmem": 256,
        "vcpus": 1,
        "auto_balance": True,
        "always_failover": False,
    }
    # meaningless or cluster-decided parameters dropped; -H wins
    assert "migration_downtime" not in inst.hvparams and "kvm_extra" not in inst.hvparams
    assert inst.hvparams["cpu_type"] == "qemu64" and inst.hvparams["serial_console"] is True
    copy = fake_ops.calls_to("copy_disk", N2)[-1]
    assert copy.args[0] == f"{config.get_cluster().export_dir}/alpha/{DUMP}"
    assert copy.args[2] == disk_path(config.get_cluster(), inst, 0)
    assert fake_ops.copy_options[-1]["expect_sha256"] is None  # nothing to verify against
    text = "\n".join(lines)
    assert "export written by Ganeti" in text
    assert "dropped (hypervisor: kvm_extra, migration_caps, migration_downtime" in text
    assert "backend: spindle_use" in text
    # the sender computes the checksum, on the node that holds the export
    assert f"disk/0: sha256-tree-4M:{SHA} computed on {N2} while copying" in text
    assert inst.tags == ["web"]  # the export's, as none were given
    # Ganeti's import hook keys; SRC_IMAGES as Ganeti's hooks get it (a list's text)
    (pre,) = [
        c.args[1]
        for c in fake_ops.calls_to("run_hooks")
        if c.args[1]["GANETI_HOOKS_PHASE"] == "pre" and c.node == N1
    ]
    src_path = f"{config.get_cluster().export_dir}/alpha"
    assert (pre["GANETI_SRC_NODE"], pre["GANETI_SRC_PATH"]) == (N2, src_path)
    assert pre["GANETI_SRC_IMAGES"] == str([f"{src_path}/{DUMP}"])


def test_import_takes_memory_and_tags_given_over_the_exports(ctx, fake_ops, config):
    ganeti_export(fake_ops)
    _import(ctx, beparams={"memory": 512}, tags=["restored"])
    inst = config.get_instance(NEW)
    assert inst is not None
    assert (inst.beparams["maxmem"], inst.beparams["minmem"]) == (512, 512)
    assert inst.tags == ["restored"]


def test_a_guest_that_had_other_hardware_under_ganeti_is_said_so(ctx, fake_ops, config):
    """IDE disks, an e1000 NIC, a local clock: the guest gets virtio and UTC here."""
    hardware = "cpu_type =\ndisk_type = ide\nnic_type = e1000\nuse_localtime = True\n"
    ganeti_export(fake_ops, GANETI_CONFIG.replace("cpu_type =\n", hardware))
    _, lines = _import(ctx)
    (warning,) = [line for line in lines if "other hardware" in line]
    assert (
        "disk_type=ide (virtio disks here), nic_type=e1000 (virtio NICs here),"
        " use_localtime=True (its clock in UTC here)"
    ) in warning
    ganeti_export(fake_ops)  # Ganeti's defaults (paravirtual, UTC): nothing to say
    _, lines = _import(ctx, instance_name="other.example.com")
    assert not [line for line in lines if "other hardware" in line]


def test_a_maximum_memory_below_the_exports_minimum_is_refused(ctx, fake_ops, config):
    """-B maxmem alone keeps the export's minmem: an instance no change could be recorded
    for afterwards is not created."""
    ganeti_export(fake_ops)
    with pytest.raises(OpPrereqError, match=r"minimum memory \(256 MiB\) of instance") as err:
        _import(ctx, beparams={"maxmem": 128})
    assert err.value.ecode == ECODE_INVAL
    _nothing_created(fake_ops, config)


def _inst_memory(config: ConfigStore) -> tuple[Any, Any, Any]:
    inst = config.get_instance(NEW)
    assert inst is not None
    return inst.beparams["maxmem"], inst.beparams["minmem"], inst.beparams["vcpus"]


def test_an_older_exports_memory_is_both_sizes(ctx, fake_ops, config):
    old = GANETI_CONFIG.replace(
        "maxmem = 256\nminmem = 256\nvcpus = 1\nauto", "memory = 384\nvcpus = 2\nauto"
    )
    assert "[backend]\nmemory = 384" in old
    ganeti_export(fake_ops, old)
    _import(ctx)
    assert _inst_memory(config) == (384, 384, 2)


def test_an_export_without_a_backend_section_has_its_sizes_in_the_instance_section(
    ctx, fake_ops, config
):
    text = GANETI_CONFIG.replace(
        "maxmem = 256\nminmem = 256\nmemory = 256\nvcpus = 1",
        "maxmem = 512\nminmem = 320\nvcpus = 2",
    )
    head, _, rest = text.partition("[backend]")
    ganeti_export(fake_ops, head + "[os]" + rest.partition("[os]")[2])
    _import(ctx)
    assert _inst_memory(config) == (512, 320, 2)


@pytest.mark.parametrize(
    ("old", "new", "says", "ecode"),
    [
        (
            "nic0_mode = bridged",
            "nic0_mode = openvswitch",
            "unsupported NIC mode 'openvswitch'",
            ECODE_INVAL,
        ),
        ("nic0_vlan =", "nic0_vlan = .100", "VLAN '.100' is not supported", ECODE_INVAL),
        # Ganeti's code for a network it does not know
        ("nic0_network = None", "nic0_network = net5", "it is on the network 'net5'", ECODE_NOENT),
    ],
)
def test_an_export_nic_that_cannot_be_given_here_is_refused_unless_nics_are_given(
    ctx, fake_ops, config, old, new, says, ecode
):
    err = _refused(fake_ops, config, ctx, (old, new), f"NIC 0 of the export: {says}.*--net")
    assert err.ecode == ecode
    _import(ctx, nics=[{"link": "br0"}])
    inst = config.get_instance(NEW)
    assert inst is not None and [(n.mode, n.vlan, n.network) for n in inst.nics] == [
        ("bridged", "", "")
    ]


def test_an_export_of_another_hypervisor_is_refused(ctx, fake_ops, config):
    change = ("hypervisor = kvm", "hypervisor = xen-pvm")
    err = _refused(fake_ops, config, ctx, change, "export is of a xen-pvm instance")
    assert err.ecode == ECODE_STATE


def test_an_exports_invalid_tag_is_refused_unless_tags_are_given(ctx, fake_ops, config):
    """Ganeti's import refuses such a tag too; ``--tags`` replaces the export's."""
    change = ("tags = web", "tags = web 50%%off")
    err = _refused(fake_ops, config, ctx, change, "Invalid tag '50%off'.*give --tags")
    assert err.ecode == ECODE_INVAL
    _import(ctx, tags=["restored"])
    inst = config.get_instance(NEW)
    assert inst is not None and inst.tags == ["restored"]


def test_a_dump_that_changed_since_its_check_is_not_imported(ctx, fake_ops, config, monkeypatch):
    """Ganeti replaced its export between the check of its sizes and the copy (an
    export without a manifest has no checksum to catch it): the copy's size does."""
    ganeti_export(fake_ops)
    copy_disk = fake_ops.copy_disk

    def shorter(*args: Any, **kwargs: Any) -> Any:
        return dataclasses.replace(copy_disk(*args, **kwargs), size=64 * MiB)

    monkeypatch.setattr(fake_ops, "copy_disk", shorter)
    with pytest.raises(OpExecError, match=f"held {64 * MiB} bytes, the export says {128 * MiB}"):
        _import(ctx)
    assert config.get_instance(NEW) is None
    assert [f for f in fake_ops.node(N3).files if NEW in f] == []  # its new disks removed


def test_a_given_tag_is_checked_as_ganeti_does(ctx, fake_ops, config):
    ganeti_export(fake_ops)
    for bad in ("two words", "", "x" * 129):
        with pytest.raises(OpPrereqError, match="Invalid tag") as err:
            _import(ctx, tags=["ok", bad])
        assert err.value.ecode == ECODE_INVAL
    _nothing_created(fake_ops, config)
    _import(ctx, tags=["env:prod", "team/ops", "a.b+c*d@e-f_g", "x" * 128])


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (("disk0_name = None", "disk0_name = 1"), "Invalid disk name '1'"),
        (("nic0_name = None", "nic0_name = 0"), "Invalid NIC name '0'"),
    ],
)
def test_names_from_the_export_follow_the_rule_of_names_given(ctx, fake_ops, config, change, match):
    """A number would read as an index (``--disk 1:...``, ``modify --net 0:...``)."""
    err = _refused(fake_ops, config, ctx, change, match)
    assert err.ecode == ECODE_INVAL


def test_an_export_nic_whose_mac_is_taken_keeps_its_link_with_a_new_mac(ctx, ops, config):
    """A restore beside the instance it was exported from gets its own address."""
    orig = config.get_instance(INST)
    assert orig is not None and orig.nics
    _own_export(ctx, ops)
    _, lines = _import(ctx, src_path=INST)
    inst = config.get_instance(NEW)
    assert inst is not None and len(inst.nics) == len(orig.nics)
    assert inst.nics[0].link == orig.nics[0].link
    assert inst.nics[0].mac != orig.nics[0].mac
    assert (
        f"MAC address {orig.nics[0].mac} of the export's NIC 0 is in use in the cluster:"
        f" the NIC gets the new address {inst.nics[0].mac}"
    ) in "\n".join(lines)


def test_an_export_nic_whose_mac_another_creation_chose_gets_a_new_mac(ctx, ops, config, data_dir):
    """The address is not in the configuration yet: a creation under way holds it."""
    from ganeti_lv.reservations import MAC_LEDGER, MACS, Reservations

    orig = config.get_instance(INST)
    assert orig is not None and orig.nics
    mac = orig.nics[0].mac
    _own_export(ctx, ops)
    config.remove_instance(INST)  # its address is free in the configuration now ...
    with Reservations(data_dir, MACS).node(MAC_LEDGER) as ledger:
        held = ledger.reserve(mac, 0, "web9.example.com")  # ... but chosen by a creation
    try:
        _, lines = _import(ctx, src_path=INST)
    finally:
        held.release()
    inst = config.get_instance(NEW)
    assert inst is not None and inst.nics[0].mac != mac
    assert f"MAC address {mac} of the export's NIC 0 is in use in the cluster" in "\n".join(lines)


def test_an_export_nic_with_a_multicast_mac_is_refused_before_anything(ctx, ops, config):
    """libvirt would refuse it when the new instance is started."""
    orig = config.get_instance(INST)
    assert orig is not None and orig.nics
    exp = _own_export(ctx, ops)
    exp.config_text = exp.config_text.replace(orig.nics[0].mac, "01:00:5e:00:00:01")
    before = len(ops.calls)
    with pytest.raises(OpPrereqError, match="'01:00:5e:00:00:01' of the export's NIC 0") as err:
        _import(ctx, src_path=INST)
    assert err.value.ecode == ECODE_INVAL and "a multicast address" in err.value.msg
    assert config.get_instance(NEW) is None
    assert not {"create_disks", "copy_disk"} & {c.method for c in ops.calls[before:]}
    # given with --net, the NIC's address is the operator's
    _import(ctx, src_path=INST, nics=[{"mac": "generate"}])
    assert config.get_instance(NEW) is not None


@pytest.mark.parametrize("disks", [[{"size": 64}], [{"size": 256}, {"size": 128}]])
def test_disks_given_that_do_not_start_with_the_exports_are_refused(ctx, fake_ops, config, disks):
    ganeti_export(fake_ops)
    with pytest.raises(OpPrereqError, match="do not start with the export's \\(128 MiB\\)") as err:
        _import(ctx, disks=disks)
    assert err.value.ecode == ECODE_INVAL
    _nothing_created(fake_ops, config)
    # one more disk than the export has: created empty
    _import(ctx, disks=[{"size": 128}, {"size": 64}])
    assert [d.size for d in config.get_instance(NEW).disks] == [128, 64]  # type: ignore[union-attr]
    assert len(fake_ops.calls_to("copy_disk", N2)) == 1


def test_export_macs_are_kept_in_lower_case(ctx, fake_ops, config):
    """The clash checks compare lower-case addresses."""
    ganeti_export(fake_ops, GANETI_CONFIG.replace("aa:00:00:5e:11:22", "AA:00:00:5E:11:22"))
    _import(ctx)
    assert config.get_instance(NEW).nics[0].mac == "aa:00:00:5e:11:22"  # type: ignore[union-attr]


def test_ganeti_export_read_from_an_absolute_path(ctx, fake_ops, config):
    path = "/var/lib/ganeti/export/alpha"
    exp = ganeti_export(fake_ops)
    fake_ops.exports[N2][path] = fake_ops.exports[N2].pop("alpha")
    assert exp is fake_ops.exports[N2][path]
    _import(ctx, src_path=path + "/")
    assert config.get_instance(NEW) is not None
    assert fake_ops.calls_to("copy_disk", N2)[-1].args[0] == f"{path}/{DUMP}"


def test_missing_nic_link_is_environ_error_naming_net(ctx, fake_ops, config):
    exp = ganeti_export(fake_ops)
    exp.config_text = exp.config_text.replace("nic0_link = br0", "nic0_link = xen-br0")
    with pytest.raises(OpPrereqError) as err:
        _import(ctx)
    assert err.value.ecode == ECODE_ENVIRON
    assert "Missing bridges xen-br0" in str(err.value) and "--net 0:link=" in str(err.value)
    _nothing_created(fake_ops, config)
    # the operator's --net wins over the export's NICs
    _import(ctx, nics=[{"link": "br0"}])
    inst = config.get_instance(NEW)
    assert inst is not None and inst.nics[0].link == "br0"
    assert inst.nics[0].mac != "aa:00:00:5e:11:22"


def test_missing_kernel_is_environ_error_naming_h(ctx, fake_ops, config):
    exp = ganeti_export(fake_ops)
    exp.config_text = exp.config_text.replace("kernel_path = \n", "kernel_path = /boot/vmlinuz\n")
    assert "/boot/vmlinuz" in exp.config_text
    with pytest.raises(OpPrereqError, match="-H kernel_path=") as err:
        _import(ctx)
    assert err.value.ecode == ECODE_ENVIRON and "/boot/vmlinuz" in str(err.value)
    _nothing_created(fake_ops, config)
    # the allocator passes over the nodes without the kernel
    fake_ops.node(N1).files["/boot/vmlinuz"] = 8
    fake_ops.node(N3).facts.memory_free = 10**6  # the most free memory, no kernel
    _, lines = _import(ctx, pnode=None, iallocator="hail")
    inst = config.get_instance(NEW)
    assert inst is not None and inst.primary_node == N1, lines
    config.remove_instance(NEW)
    with config.update() as data:  # neither a node nor an allocator: the cluster's default
        data.cluster.default_iallocator = "hail"
    _import(ctx, pnode=None)
    assert config.get_instance(NEW).primary_node == N1  # type: ignore[union-attr]
    config.remove_instance(NEW)
    _import(ctx, hvparams={"kernel_path": ""})  # the operator boots from the disk
    assert config.get_instance(NEW) is not None


def test_non_raw_dump_refused_before_anything_is_created(ctx, fake_ops, config):
    exp = ganeti_export(fake_ops, GANETI_CONFIG.replace("os = noop", "os = debootstrap+default"))
    exp.sizes[DUMP] = 37 * MiB
    exp.heads[DUMP] = "01000000" + "00" * 20 + "6cea0000"
    with pytest.raises(OpPrereqError, match=r"not a raw disk image \(a dump\(8\) stream\)") as err:
        _import(ctx)
    assert err.value.ecode == ECODE_INVAL and "OS 'debootstrap+default'" in str(err.value)
    _nothing_created(fake_ops, config)


def test_truncated_dump_refused(ctx, fake_ops, config):
    exp = ganeti_export(fake_ops)
    exp.sizes[DUMP] = 100 * MiB
    with pytest.raises(OpPrereqError, match="truncated or corrupted"):
        _import(ctx)
    _nothing_created(fake_ops, config)


def test_relative_src_dir_refused(ctx, fake_ops, config):
    ganeti_export(fake_ops)
    with pytest.raises(OpPrereqError, match="neither an export name") as err:
        _import(ctx, src_path="../file-storage/alpha")
    assert err.value.ecode == ECODE_INVAL
    _nothing_created(fake_ops, config)
    assert not fake_ops.calls_to("export_read")


def _own_export(ctx: Context, ops: FakeNodeOps) -> FakeExport:
    run(ctx, OpBackupExport(instance_name=INST, target_node=N2, shutdown=False))
    return ops.exports[N2][INST]


def test_own_export_keeps_what_config_ini_says_in_ganetis_words(ctx, ops, config):
    """host-model is 'host' for Ganeti; ganeti_lv's own import gets host-model back."""
    with config.update() as data:
        data.instances[INST].hvparams["cpu_type"] = "host-model"
        data.instances[INST].os = "image+50%"
    exp = _own_export(ctx, ops)
    assert "cpu_type = host\n" in exp.config_text and "image+50%%" in exp.config_text
    _import(ctx, src_path=INST)
    inst = config.get_instance(NEW)
    assert inst is not None
    assert inst.hvparams["cpu_type"] == "host-model" and inst.os == "image+50%"


def test_an_older_own_export_with_a_bare_percent_sign_still_imports(ctx, ops, config):
    """Manifests before version 3 came with config.ini written as it is."""
    with config.update() as data:
        data.instances[INST].os = "image+50%"
    exp = _own_export(ctx, ops)
    exp.config_text = exp.config_text.replace("%%", "%")
    manifest = exportinfo.Manifest.from_json(exp.manifest_text)
    manifest.version, manifest.translated = 2, {}
    exp.manifest_text = manifest.to_json()
    _import(ctx, src_path=INST)
    inst = config.get_instance(NEW)
    assert inst is not None and inst.os == "image+50%"


def test_own_export_with_edited_disk_size_refused(ctx, ops, config):
    exp = _own_export(ctx, ops)
    exp.config_text = exp.config_text.replace("disk0_size = 1024", "disk0_size = 2048")
    with pytest.raises(OpPrereqError, match="config.ini gives 2048 MiB, the manifest"):
        _import(ctx, src_path=INST)
    assert config.get_instance(NEW) is None


def test_own_export_manifest_naming_another_file_refused(ctx, ops, config):
    exp = _own_export(ctx, ops)
    manifest = exportinfo.Manifest.from_json(exp.manifest_text)
    manifest.disks[0].file = "../other/disk0.img"
    exp.manifest_text = manifest.to_json()
    with pytest.raises(OpPrereqError, match="the manifest names '../other/disk0.img'"):
        _import(ctx, src_path=INST)
    assert config.get_instance(NEW) is None


def test_own_export_manifest_with_an_unknown_checksum_refused_before_anything(ctx, ops, config):
    exp = _own_export(ctx, ops)
    manifest = exportinfo.Manifest.from_json(exp.manifest_text)
    manifest.disks[0].checksum_algorithm = "md5"
    exp.manifest_text = manifest.to_json()
    before = len(ops.calls)
    with pytest.raises(OpPrereqError, match="unknown checksum algorithm 'md5'") as err:
        _import(ctx, src_path=INST)
    assert err.value.ecode == ECODE_INVAL
    assert config.get_instance(NEW) is None
    assert not {"create_disks", "copy_disk"} & {c.method for c in ops.calls[before:]}


@pytest.mark.parametrize("text", ["", "  \n", "{"])
def test_own_export_with_an_empty_or_damaged_manifest_is_refused(ctx, ops, config, text):
    """Not taken for an export Ganeti wrote (no manifest.json), whose images get no
    checksum checks: the manifest that is there must be read."""
    exp = _own_export(ctx, ops)
    exp.manifest_text = text
    ops.calls.clear()  # the export's own
    with pytest.raises(OpPrereqError, match="Invalid export manifest") as err:
        _import(ctx, src_path=INST)
    assert err.value.ecode == ECODE_INVAL
    _nothing_created(ops, config)


def test_own_export_round_trip_keeps_parameters(ctx, ops, config):
    _own_export(ctx, ops)
    _, lines = _import(ctx, src_path=INST)
    inst, orig = config.get_instance(NEW), config.get_instance(INST)
    assert inst is not None and orig is not None
    assert inst.os == orig.os  # [instance] os, not the [export] os for Ganeti
    assert not any("dropped" in line for line in lines)
    assert ops.copy_options[-1]["expect_sha256"].startswith("sha256-tree-4M:")


def test_backup_list_names_ganeti_exports(ctx, ops, config):
    _own_export(ctx, ops)
    ganeti_export(ops)
    plain, _ = run(ctx, OpBackupQuery(nodes=[N2]))
    assert plain == {N2: ["alpha", INST]}
    kinds, _ = run(ctx, OpBackupQuery(nodes=[N2], with_kind=True))
    assert kinds == {
        N2: [
            {"name": "alpha", "kind": "ganeti", "stale": False},
            {"name": INST, "kind": "ganeti_lv", "stale": False},
        ]
    }


def test_cli_list_warns_of_what_an_interrupted_export_left(ctx, ops, config, data_dir, capsys):
    from ganeti_lv.cli.main import main

    _own_export(ctx, ops)
    ops.exports[N2][f"{INST}.new"] = FakeExport()  # left by an interrupted export
    jobs_before = len(ctx.jobs.list())
    assert main(["--data-dir", data_dir, "backup", "list", "--node", N2], node_ops=ops) == 0
    out, err = capsys.readouterr()
    assert [line.split() for line in out.splitlines()] == [["Node", "Export"], [N2, INST]]
    export_dir = config.read().cluster.export_dir
    # also what a running export writes: said so, and when remove --stale removes it
    assert (
        f"Incomplete export {export_dir}/{INST}.new on {N2}: an export of {INST} in"
        " progress, or what an interrupted one left ('gnt-lv backup remove --stale"
        f" {INST}' removes it once no export of {INST} runs)"
    ) in err
    assert len(ctx.jobs.list()) == jobs_before  # a list is no job


def test_cli_list_a_node_that_does_not_answer_gets_a_row_of_its_own(ctx, ops, data_dir, capsys):
    from ganeti_lv.cli.main import main

    _own_export(ctx, ops)
    ops.set_unreachable(N1)
    argv = ["--data-dir", data_dir, "backup", "list", "--no-headers", "--separator", ":"]
    assert main(argv, node_ops=ops) == 0
    out, err = capsys.readouterr()
    # as Ganeti's table: "?" where a node gave no answer; the others' exports listed
    assert f"{N1}:?" in out.splitlines() and f"{N2}:{INST}" in out.splitlines()
    assert f"Node {N1}: cannot list exports" in err


def test_cli_list_and_import_with_net(ctx, ops, config, data_dir, capsys):
    from ganeti_lv.cli.main import main

    ganeti_export(ops)
    base = ["--data-dir", data_dir]
    argv = [*base, "backup", "list", "--node", N2, "-o", "export,kind", "--separator", "|"]
    assert main(argv, node_ops=ops) == 0
    assert "alpha|ganeti" in capsys.readouterr().out.splitlines()
    argv = [*base, "backup", "import", "-n", N1, "--src-node", N2, "--src-dir", "alpha"]
    net = ["--net", "0:link=br0,mac=aa:00:00:00:00:99", "--tags", "restored,db"]
    code = main([*argv, *net, NEW], node_ops=ops)
    assert code == 0, capsys.readouterr()
    inst = config.get_instance(NEW)
    assert inst is not None and inst.nics[0].mac == "aa:00:00:00:00:99"
    assert inst.tags == ["restored", "db"]  # --tags, as Ganeti's, instead of the export's


@pytest.mark.parametrize("start", [False, True], ids=["default", "--start"])
def test_cli_import_leaves_the_instance_stopped_unless_start(ctx, ops, data_dir, config, start):
    """As Ganeti's gnt-backup import: a copy of a running instance must not run twice."""
    from ganeti_lv.cli.main import main

    ganeti_export(ops)
    argv = ["--data-dir", data_dir, "backup", "import", "-n", N1, "--src-node", N2]
    argv += ["--src-dir", "alpha", "--net", "0:link=br0", *(["--start"] if start else []), NEW]
    assert main(argv, node_ops=ops) == 0
    inst = config.get_instance(NEW)
    assert inst is not None
    assert inst.admin_state == (constants.ADMINST_UP if start else constants.ADMINST_DOWN)
    dom = ops.node(N1).domains.get(NEW)
    assert (dom is not None and dom.state == constants.DOMSTATE_RUNNING) == start


# -- the export's lock: an import reads an export nobody replaces or removes meanwhile


@pytest.mark.parametrize(
    "src", ["alpha", "{export_dir}/alpha", "alpha.new", "alpha.old"], ids=str.strip
)
def test_an_import_waits_while_its_export_is_written_or_removed(ctx, fake_ops, config, src):
    """Also from alpha.new or alpha.old: an export of alpha writes or replaces them."""
    ganeti_export(fake_ops, name=src.rsplit("/", 1)[-1])
    path = src.format(export_dir=config.get_cluster().export_dir)
    # an export of alpha, or its removal
    held = held_locks.hold(config.data_dir, "alpha", locking.LEVEL_EXPORT, shared=False)
    ctx.lock_timeout = 0.2
    try:
        with pytest.raises(LockTimeout, match="export lock 'alpha'"):
            _import(ctx, src_path=path)
    finally:
        held.release_all()
    _nothing_created(fake_ops, config)
    assert not fake_ops.calls_to("export_read")
    _import(ctx, src_path=path)  # once it is let go
    assert config.get_instance(NEW) is not None


def test_imports_of_one_export_run_side_by_side(ctx, fake_ops, config):
    ganeti_export(fake_ops)
    # another import reading alpha
    held = held_locks.hold(config.data_dir, "alpha", locking.LEVEL_EXPORT, shared=True)
    ctx.lock_timeout = 0.2
    try:
        _import(ctx)
    finally:
        held.release_all()
    assert config.get_instance(NEW) is not None


def test_an_import_from_outside_the_export_dir_takes_no_export_lock(ctx, fake_ops, config):
    exp = ganeti_export(fake_ops)
    fake_ops.exports[N2]["/srv/elsewhere/alpha"] = exp
    held = held_locks.hold(config.data_dir, "alpha", locking.LEVEL_EXPORT, shared=False)
    ctx.lock_timeout = 0.2
    try:
        _import(ctx, src_path="/srv/elsewhere/alpha")
    finally:
        held.release_all()
    assert config.get_instance(NEW) is not None


@pytest.mark.parametrize(
    "op",
    [
        OpBackupExport(instance_name=INST, target_node=N2, shutdown=False),
        OpBackupRemove(instance_name=INST),
    ],
    ids=["export", "remove"],
)
def test_an_export_and_its_removal_wait_for_an_import_reading_it(ctx, ops, config, op):
    exp = ganeti_export(ops, name=INST)
    # an import reading inst1's export
    held = held_locks.hold(config.data_dir, INST, locking.LEVEL_EXPORT, shared=True)
    ctx.lock_timeout = 0.2
    try:
        with pytest.raises(LockTimeout, match=f"export lock '{INST}'"):
            run(ctx, op)
    finally:
        held.release_all()
    assert ops.exports[N2][INST] is exp
    assert not ops.calls_to("export_remove") and not ops.calls_to("copy_disk")
    assert running(ops)
