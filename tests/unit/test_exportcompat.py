"""Strict reading of exports and Ganeti's parameters translated (pure logic)."""

from __future__ import annotations

import pytest

from ganeti_lv import exportcompat, exportinfo
from ganeti_lv.errors import ECODE_INVAL, OpPrereqError
from ganeti_lv.hypervisor.export_types import ExportData, ExportFile

MiB = 1024 * 1024
DUMP = "2b1f4c7e-0d3a-4c55-9e4f-1234567890ab"
EXPORT_DIR = "/srv/ganeti-lv/export"

GANETI_CONFIG = f"""[export]
version = 0
timestamp = 1700000000
source = 6f0e4a52-5d1b-4f67-a3e3-0c5bd2a1b111
os = noop
compression = none

[instance]
name = alpha
maxmem = 256
minmem = 256
memory = 256
vcpus = 1
disk_template = sharedfile
hypervisor = kvm
tags = web
nic0_mac = aa:00:00:5e:11:22
nic0_ip = None
nic0_network = None
nic0_name = None
nic0_mode = bridged
nic0_link = xen-br0
nic0_vlan =
nic_count = 1
disk0_ivname = disk/0
disk0_dump = {DUMP}
disk0_size = 128
disk0_name = None
disk_count = 1

[hypervisor]
kernel_path = /boot/vmlinuz-3-kvmU
initrd_path =
kernel_args = ro
root_path = /dev/vda1
serial_console = True
serial_speed = 38400
migration_downtime = 30
migration_caps =
kvm_extra =
vnc_bind_address =
acpi = True
cpu_type =

[backend]
maxmem = 256
minmem = 256
vcpus = 1
auto_balance = True
always_failover = False
spindle_use = 1

[os]

[os_private]
"""


def _desc(text: str = GANETI_CONFIG) -> exportinfo.ExportDescription:
    return exportinfo.describe(exportinfo.parse_config(text))


def _data(size: int = 128 * MiB, head: str = "00" * 64, name: str = DUMP) -> ExportData:
    files = {name: ExportFile(name, size, head), "config.ini": ExportFile("config.ini", 900)}
    return ExportData("node2", f"{EXPORT_DIR}/alpha", GANETI_CONFIG, "", files)


# --- --src-dir ------------------------------------------------------------


@pytest.mark.parametrize(
    "src, expected",
    [
        (None, f"{EXPORT_DIR}/web1"),
        ("alpha", f"{EXPORT_DIR}/alpha"),
        ("alpha/", f"{EXPORT_DIR}/alpha"),
        ("/var/lib/ganeti/export/alpha", "/var/lib/ganeti/export/alpha"),
        ("/var/lib/ganeti/export/alpha/", "/var/lib/ganeti/export/alpha"),
    ],
)
def test_src_dir_resolved(src, expected):
    assert exportcompat.resolve_src_path(EXPORT_DIR, src, "web1") == expected


@pytest.mark.parametrize(
    "src",
    [
        "../file-storage/alpha",
        "alpha/../beta",
        "sub/alpha",
        "/var/lib/ganeti/export/../../../etc",
        "/var/lib//ganeti/export/alpha",
        "/var/./alpha",
        "/",
        "Alpha Beta",
    ],
)
def test_src_dir_relative_paths_refused(src):
    with pytest.raises(OpPrereqError) as err:
        exportcompat.resolve_src_path(EXPORT_DIR, src, "web1")
    assert err.value.ecode == ECODE_INVAL


# --- dumps ------------------------------------------------------------------


def test_raw_ganeti_dump_of_the_disks_size_is_taken():
    checked = exportcompat.check_dumps(_desc(), _data(), None)
    assert checked.paths == [f"{EXPORT_DIR}/alpha/{DUMP}"] and checked.warnings == []


def test_raw_dump_may_start_like_anything():
    # a noop OS copies the disk as it is: its first bytes are the guest's business
    checked = exportcompat.check_dumps(_desc(), _data(head="1f8b" + "00" * 62), None)
    assert checked.paths


@pytest.mark.parametrize("size", [128 * MiB - 512, 127 * MiB, 128 * MiB + 1, 0])
def test_raw_dump_of_another_size_is_truncated_or_corrupted(size):
    with pytest.raises(OpPrereqError, match="truncated or corrupted") as err:
        exportcompat.check_dumps(_desc(), _data(size=size), None)
    assert err.value.ecode == ECODE_INVAL
    assert f"has {size} bytes" in str(err.value) and "disk0_size=128 MiB" in str(err.value)


def test_config_disk_size_edited_is_refused():
    text = GANETI_CONFIG.replace("disk0_size = 128", "disk0_size = 512")
    with pytest.raises(OpPrereqError, match="disk0_size=512 MiB"):
        exportcompat.check_dumps(_desc(text), _data(), None)


DUMP8_HEAD = "01000000" + "00" * 20 + "6cea0000" + "00" * 36


@pytest.mark.parametrize(
    "head, size, what",
    [
        (DUMP8_HEAD, 40 * MiB, "a dump(8) stream"),
        (DUMP8_HEAD, 128 * MiB, "a dump(8) stream"),
        ("00" * 257 + "7573746172", 3 * MiB, "a tar archive"),
        ("514649fb" + "00" * 60, 128 * MiB, "a qcow2 image"),
        ("00" * 64, 40 * MiB, "41943040 bytes for a disk of 128 MiB"),
    ],
)
def test_dump_of_a_non_raw_os_refused_naming_the_os(head, size, what):
    text = GANETI_CONFIG.replace("os = noop", "os = debootstrap+default")
    with pytest.raises(OpPrereqError) as err:
        exportcompat.check_dumps(_desc(text), _data(size=size, head=head), None)
    msg = str(err.value)
    assert err.value.ecode == ECODE_INVAL
    assert "not a raw disk image" in msg and f"({what})" in msg
    assert "OS 'debootstrap+default'" in msg and "'noop'" in msg


def test_known_stream_of_wrong_size_refused_even_from_noop():
    with pytest.raises(OpPrereqError, match=r"not a raw disk image \(gzip data\)"):
        exportcompat.check_dumps(_desc(), _data(size=3 * MiB, head="1f8b" + "00" * 62), None)


def test_non_raw_os_with_a_disk_sized_image_is_taken_with_a_warning():
    text = GANETI_CONFIG.replace("os = noop", "os = image+default")
    checked = exportcompat.check_dumps(_desc(text), _data(), None)
    assert checked.paths and "image+default" in checked.warnings[0]


@pytest.mark.parametrize("dump", ["../other/disk0.img", "/etc/shadow", "..", ""])
def test_dump_names_outside_the_export_refused(dump):
    text = GANETI_CONFIG.replace(f"disk0_dump = {DUMP}", f"disk0_dump = {dump}")
    with pytest.raises(OpPrereqError) as err:
        exportcompat.check_dumps(_desc(text), _data(), None)
    assert err.value.ecode == ECODE_INVAL


def test_missing_dump_or_symlink_refused():
    # a symbolic link or a directory is not listed by the node: same as missing
    with pytest.raises(OpPrereqError, match="missing or not a regular file"):
        exportcompat.check_dumps(_desc(), _data(name="other"), None)


def test_compressed_export_refused():
    text = GANETI_CONFIG.replace("compression = none", "compression = gzip")
    with pytest.raises(OpPrereqError, match=r"compressed \(gzip\)"):
        exportcompat.check_dumps(_desc(text), _data(), None)


def _manifest(file: str = DUMP, size: int = 128 * MiB) -> exportinfo.Manifest:
    disk = exportinfo.DiskManifest(index=0, file=file, size=size, checksum="ab" * 32)
    return exportinfo.Manifest(instance="alpha", source="node1", timestamp=1, disks=[disk])


def test_manifest_file_must_be_the_dump_config_names():
    with pytest.raises(OpPrereqError, match="the manifest names '../other/disk0.img'"):
        exportcompat.check_dumps(_desc(), _data(), _manifest("../other/disk0.img"))


def test_manifest_size_and_config_size_must_agree():
    with pytest.raises(OpPrereqError, match="config.ini gives 128 MiB, the manifest"):
        exportcompat.check_dumps(_desc(), _data(), _manifest(size=64 * MiB))
    # with a manifest, the dump's size is checked too (no OS judgement)
    with pytest.raises(OpPrereqError, match="truncated or corrupted"):
        exportcompat.check_dumps(_desc(), _data(size=64 * MiB), _manifest())
    assert exportcompat.check_dumps(_desc(), _data(), _manifest()).paths


# --- parameters -------------------------------------------------------------


def test_ganeti_hvparams_translated():
    tr = exportcompat.translate_hvparams(_desc().hvparams)
    assert tr.params == {
        "kernel_path": "/boot/vmlinuz-3-kvmU",
        "initrd_path": "",
        # Ganeti's KVM puts root= in front and the serial console at the end
        "kernel_args": "root=/dev/vda1 ro console=ttyS0,38400",
        "serial_console": "True",
        "acpi": "True",
        "cpu_type": "",
    }
    assert tr.dropped == [
        "kvm_extra",
        "migration_caps",
        "migration_downtime",
        "root_path",
        "serial_speed",
        "vnc_bind_address",
    ]


def test_kernel_args_kept_when_booting_from_disk_or_already_complete():
    tr = exportcompat.translate_hvparams(
        {"kernel_path": "", "kernel_args": "ro", "root_path": "/dev/vda1"}
    )
    assert tr.params["kernel_args"] == "ro"
    tr = exportcompat.translate_hvparams(
        {
            "kernel_path": "/k",
            "kernel_args": "root=/dev/vda2 console=ttyS1",
            "root_path": "/dev/vda1",
            "serial_console": "True",
        }
    )
    assert tr.params["kernel_args"] == "root=/dev/vda2 console=ttyS1"


def test_ganeti_lv_export_hvparams_keep_their_meaning():
    # no root_path in ganeti_lv's own exports: kernel_args untouched
    tr = exportcompat.translate_hvparams(
        {"kernel_path": "/k", "kernel_args": "console=ttyS0 seed=x", "migration_downtime": "300"}
    )
    assert tr.params == {"kernel_path": "/k", "kernel_args": "console=ttyS0 seed=x"}
    assert tr.dropped == ["migration_downtime"]


def test_ganeti_beparams_translated():
    tr = exportcompat.translate_beparams(_desc().beparams)
    assert tr.params == {
        "maxmem": "256",
        "minmem": "256",
        "vcpus": "1",
        "auto_balance": "True",
        "always_failover": "False",
    }
    assert tr.dropped == ["spindle_use"]


def test_ganeti_description():
    # Ganeti writes str(None) for NIC parameters it does not have
    desc = _desc(GANETI_CONFIG.replace("nic0_vlan =", "nic0_vlan = None"))
    assert desc.nics[0].vlan == "" and desc.nics[0].mode == "bridged"
    assert desc.os == "noop" and desc.disk_files == [DUMP] and desc.compression == "none"
    assert desc.nics[0].link == "xen-br0" and desc.nics[0].ip is None
    assert desc.nics[0].network == "" and desc.nics[0].name == ""
