"""config.ini in Ganeti's format and the checksum manifest."""

from __future__ import annotations

import configparser
import io
import json

import pytest

from ganeti_lv import exportcompat, exportinfo
from ganeti_lv.errors import ECODE_ENVIRON, ECODE_INVAL, OpPrereqError
from ganeti_lv.objects import Disk, Instance, Nic


def _instance():
    return Instance(
        name="web1",
        primary_node="node1",
        disk_template="file",
        disks=[Disk(size=1024, name="root"), Disk(size=256)],
        nics=[Nic(mac="aa:00:00:11:22:33", link="br0")],
        tags=["a", "b"],
        os="busybox",
    )


def test_config_has_ganetis_sections_and_keys():
    be = {"maxmem": 128, "minmem": 64, "vcpus": 1}
    hv = {
        "kernel_path": "/k",
        "migration_bandwidth": 0,
        "migration_mode": "live",
        "migration_downtime": 300,
        "migration_caps": "",
    }
    text = exportinfo.config_to_text(
        exportinfo.build_config(_instance(), "uuid-of-node1", be, hv, timestamp=1700000000)
    )
    cfg = configparser.ConfigParser(interpolation=None)
    cfg.read_string(text)
    assert cfg.sections() == ["export", "instance", "hypervisor", "backend", "os", "os_private"]
    # The disks are raw images: a Ganeti cluster imports them with OS noop; the
    # instance's own OS label is kept in [instance].
    assert dict(cfg["export"]) == {
        "version": "0",
        "timestamp": "1700000000",
        "source": "uuid-of-node1",
        "os": "noop",
        "compression": "none",
    }
    assert cfg["instance"]["os"] == "busybox"
    ins = cfg["instance"]
    assert (ins["name"], ins["maxmem"], ins["minmem"], ins["memory"], ins["vcpus"]) == (
        "web1", "128", "64", "128", "1",
    )  # fmt: skip
    assert ins["disk_template"] == "file" and ins["hypervisor"] == "kvm"
    assert ins["tags"] == "a b"
    assert ins["nic_count"] == "1" and ins["nic0_mac"] == "aa:00:00:11:22:33"
    assert ins["nic0_ip"] == "None" and ins["nic0_link"] == "br0" and ins["nic0_mode"] == "bridged"
    assert ins["disk_count"] == "2"
    assert ins["disk0_ivname"] == "disk/0" and ins["disk0_dump"] == "disk0.img"
    assert ins["disk0_size"] == "1024" and ins["disk0_name"] == "root"
    assert ins["disk1_name"] == "None"
    # Ganeti's import refuses its cluster-level parameters on an instance; it
    # takes migration_downtime and migration_caps.
    assert dict(cfg["hypervisor"]) == {
        "kernel_path": "/k",
        "migration_downtime": "300",
        "migration_caps": "",
    }
    assert cfg["backend"]["maxmem"] == "128" and cfg["backend"]["spindle_use"] == "1"


@pytest.mark.parametrize(
    ("here", "written", "read_by_ganeti_lv"),
    [
        ("host-passthrough", "host", "host-passthrough"),
        ("host-model", "host", "host-passthrough"),  # qemu has no name for libvirt's host-model
        ("qemu64", "qemu64", "qemu64"),
    ],
)
def test_cpu_type_is_written_in_qemus_words_and_read_back_in_libvirts(
    here, written, read_by_ganeti_lv
):
    """Ganeti gives cpu_type to qemu's -cpu: 'host-passthrough' would not start there.

    config.ini alone (what Ganeti reads, and an export without a manifest)
    gives the host's CPU as host-passthrough; the manifest keeps the value
    of ganeti_lv's own exports.
    """
    hv = {"cpu_type": here}
    text = exportinfo.config_to_text(exportinfo.build_config(_instance(), "node1", {}, hv))
    cfg = configparser.ConfigParser()
    cfg.read_string(text)
    assert cfg["hypervisor"]["cpu_type"] == written
    desc = exportinfo.describe(exportinfo.parse_config(text))
    assert exportcompat.translate_hvparams(desc.hvparams).params["cpu_type"] == read_by_ganeti_lv
    translated = exportinfo.translated_hvparams(hv)
    assert translated == ({} if here == written else {"cpu_type": here})
    exportinfo.restore_translated(desc.hvparams, translated)  # an import of its own export
    assert exportcompat.translate_hvparams(desc.hvparams).params["cpu_type"] == here
    edited = {"cpu_type": "qemu64"}  # config.ini changed by hand since: the operator's value
    exportinfo.restore_translated(edited, translated)
    assert edited == {"cpu_type": "qemu64"}


def test_migration_caps_are_written_in_qemus_words_and_read_back_as_they_were():
    """Ganeti hands each ':'-separated name to qemu as it is: 'postcopy', 'parallel=4' or
    ',' would fail every later migration there; the manifest keeps the value here."""
    here = "auto-converge,postcopy,parallel=4:compression:xbzrle"
    hv = {"migration_caps": here}
    text = exportinfo.config_to_text(exportinfo.build_config(_instance(), "node1", {}, hv))
    cfg = configparser.ConfigParser()
    cfg.read_string(text)
    assert (
        cfg["hypervisor"]["migration_caps"] == "auto-converge:postcopy-ram:multifd:compress:xbzrle"
    )
    desc = exportinfo.describe(exportinfo.parse_config(text))
    exportinfo.restore_translated(desc.hvparams, exportinfo.translated_hvparams(hv))
    assert desc.hvparams["migration_caps"] == here  # an import of its own export
    plain = {"migration_caps": "auto-converge:xbzrle"}  # the same in both: nothing to keep
    assert exportinfo.translated_hvparams(plain) == {}


def test_none_in_any_case_is_none_as_ganeti_reads_it():
    text = exportinfo.config_to_text(exportinfo.build_config(_instance(), "node1", {}, {}))
    cfg = configparser.ConfigParser()
    cfg.read_string(text)
    cfg["instance"]["nic0_ip"] = "NONE"
    cfg["instance"]["nic0_network"] = "none"
    buffer = io.StringIO()
    cfg.write(buffer)
    desc = exportinfo.describe(exportinfo.parse_config(buffer.getvalue()))
    assert desc.nics[0].ip is None and not desc.nics[0].network


def test_every_value_is_written_as_ganeti_reads_it_and_older_raw_exports_still_read():
    inst = _instance()
    inst.os = "image+50%"
    inst.tags = ["sale:50%"]
    text = exportinfo.config_to_text(exportinfo.build_config(inst, "node1", {}, {}))
    as_ganeti = configparser.ConfigParser()
    as_ganeti.read_string(text)
    assert as_ganeti["instance"]["os"] == "image+50%"
    assert as_ganeti["instance"]["tags"] == "sale:50%"
    # an export of an older ganeti_lv wrote '%' as it is (its manifest's version is 2)
    raw = text.replace("%%", "%")
    desc = exportinfo.describe(exportinfo.parse_config(raw, escaped=False))
    assert desc.os == "image+50%" and desc.tags == ["sale:50%"]
    with pytest.raises(OpPrereqError, match=r"\[instance\] os of the export's config.ini"):
        exportinfo.describe(exportinfo.parse_config(raw))


def test_describe_round_trip():
    inst = _instance()
    text = exportinfo.config_to_text(
        exportinfo.build_config(inst, "node1", {"maxmem": 128}, {"kernel_path": "/k"})
    )
    desc = exportinfo.describe(exportinfo.parse_config(text))
    assert desc.name == "web1" and desc.source == "node1" and desc.os == "busybox"
    assert [d.size for d in desc.disks] == [1024, 256]
    assert [d.name for d in desc.disks] == ["root", ""]
    assert desc.disk_files == ["disk0.img", "disk1.img"]
    assert desc.nics[0].mac == inst.nics[0].mac and desc.nics[0].ip is None
    assert desc.hvparams == {"kernel_path": "/k"}
    assert desc.beparams == {"maxmem": "128", "spindle_use": "1"}
    assert desc.tags == ["a", "b"]


@pytest.mark.parametrize(
    "text, match, ecode",
    [
        ("[instance]\nname = x\n", r"\[export\]", ECODE_INVAL),
        ("[export]\nversion = 0\n", r"\[instance\]", ECODE_INVAL),
        ("[export]\nversion = 1\n[instance]\nname = x\n", "Wrong export version", ECODE_ENVIRON),
        ("garbage", "Cannot parse", ECODE_INVAL),
    ],
)
def test_bad_config_refused(text, match, ecode):
    with pytest.raises(OpPrereqError, match=match) as err:
        exportinfo.parse_config(text)
    assert err.value.ecode == ecode


def test_a_percent_sign_is_written_as_ganeti_reads_it():
    """Ganeti reads config.ini with '%' interpolation: a bare '%' would fail its import."""
    args = "console=ttyS0 quiet loglevel=3 x=50%"
    text = exportinfo.config_to_text(
        exportinfo.build_config(_instance(), "node1", {"maxmem": 128}, {"kernel_args": args})
    )
    assert "x=50%%" in text
    as_ganeti = configparser.ConfigParser()  # the interpolation Ganeti's parser keeps
    as_ganeti.read_string(text)
    assert as_ganeti["hypervisor"]["kernel_args"] == args
    desc = exportinfo.describe(exportinfo.parse_config(text))
    assert desc.hvparams["kernel_args"] == args
    bare = text.replace("x=50%%", "x=50%")
    with pytest.raises(OpPrereqError, match="a '%' is written '%%'") as err:
        exportinfo.describe(exportinfo.parse_config(bare))
    assert err.value.ecode == ECODE_INVAL


def test_incomplete_instance_section_refused():
    cfg = exportinfo.parse_config("[export]\nversion = 0\n[instance]\nname = x\ndisk_count = 1\n")
    with pytest.raises(OpPrereqError, match="Incomplete"):
        exportinfo.describe(cfg)


def test_manifest_round_trip_and_bad_input():
    man = exportinfo.Manifest(
        instance="web1",
        source="node1",
        timestamp=5,
        disks=[exportinfo.DiskManifest(0, "disk0.img", 1 << 30, "ab" * 32, 4096)],
    )
    again = exportinfo.Manifest.from_json(man.to_json())
    assert again == man
    data = json.loads(man.to_json())
    assert data["version"] == 3 and again.config_escaped  # config.ini as Ganeti reads it
    assert data["disks"][0]["checksum_algorithm"] == "sha256-tree-4M"
    assert data["disks"][0]["checksum"] == "ab" * 32 and "sha256" not in data["disks"][0]
    assert again.disks[0].checksum_text == "sha256-tree-4M:" + "ab" * 32
    with pytest.raises(OpPrereqError) as err:
        exportinfo.Manifest.from_json('{"instance": "x"}')
    assert err.value.ecode == ECODE_INVAL
    # a checksum no copy can verify: refused when read, before an import creates anything
    data["disks"][0]["checksum_algorithm"] = "md5"
    with pytest.raises(OpPrereqError) as err:
        exportinfo.Manifest.from_json(json.dumps(data))
    assert err.value.ecode == ECODE_INVAL
    assert err.value.msg == "Invalid export manifest: unknown checksum algorithm 'md5'"
    # any wrong shape is the same clear error, never an unhandled one
    data["disks"][0]["checksum_algorithm"] = "sha256-tree-4M"
    for key, wrong in (("translated", None), ("translated", []), ("disks", {"a": 1})):
        with pytest.raises(OpPrereqError) as err:
            exportinfo.Manifest.from_json(json.dumps({**data, key: wrong}))
        assert err.value.ecode == ECODE_INVAL and "Invalid export manifest" in err.value.msg


def test_version1_manifest_reads_as_plain_sha256():
    text = json.dumps(
        {
            "version": 1,
            "instance": "web1",
            "source": "node1",
            "timestamp": 5,
            "disks": [{"index": 0, "file": "disk0.img", "size": 8, "sha256": "cd" * 32}],
        }
    )
    disk = exportinfo.Manifest.from_json(text).disks[0]
    assert (disk.checksum_algorithm, disk.checksum) == ("sha256", "cd" * 32)
    assert disk.checksum_text == "sha256:" + "cd" * 32


@pytest.mark.parametrize(
    ("dirname", "owner"),
    [
        ("web", ("web", False)),
        ("web.new", ("web", True)),
        ("web.old", ("web", True)),
        ("web.newer", ("web.newer", False)),
        ("db.example.com.old", ("db.example.com", True)),
    ],
)
def test_an_export_directory_names_its_instance(dirname: str, owner: tuple[str, bool]) -> None:
    assert exportinfo.export_dir_owner(dirname) == owner


def test_a_device_named_none_in_an_export_has_no_name_as_in_ganeti():
    # Ganeti reads the name "none" (any case) as no name; so does an import here
    inst = _instance()
    inst.disks[0].name = "NONE"
    inst.nics[0].name = "none"
    text = exportinfo.config_to_text(exportinfo.build_config(inst, "node1", {}, {}))
    desc = exportinfo.describe(exportinfo.parse_config(text))
    assert [d.name for d in desc.disks] == ["", ""]
    assert desc.nics[0].name == ""


@pytest.mark.parametrize(
    ("present", "blocking"),
    [
        ([], None),  # a first export
        (["/e/a", "/e/a/config.ini"], None),  # replaced by the new one
        (["/e/a"], "/e/a"),  # something else is there: the target refuses to publish
        (["/e/a.old", "/e/a.old/config.ini"], None),  # put back, then replaced
        (["/e/a.old"], "/e/a.old"),  # put back first: then refused as /e/a
        (["/e/a", "/e/a/config.ini", "/e/a.old"], None),  # the complete one stays
    ],
)
def test_what_keeps_an_export_from_being_published(present: list[str], blocking: str | None):
    exists = {path: path in present for path in exportinfo.publish_blockers("/e/a")}
    assert exportinfo.blocking_dir("/e/a", exists) == blocking
