"""Domain XML generation and parsing (pure), and the libvirt error mapping."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import libvirt
import pytest
from support.libvirt_errors import libvirt_error

from ganeti_lv import constants, objects
from ganeti_lv.errors import HypervisorError, InstanceNotFound, NodeUnreachable
from ganeti_lv.hypervisor.libvirt import domxml
from ganeti_lv.hypervisor.libvirt.errors import libvirt_errors, translate
from ganeti_lv.hypervisor.libvirt.guest import map_state


def _cluster(**kw: object) -> objects.Cluster:
    return objects.Cluster(name="c.example", master_node="node1", **kw)  # type: ignore[arg-type]


def _instance(**kw: object) -> objects.Instance:
    base: dict[str, object] = {
        "name": "web1",
        "primary_node": "node1",
        "disk_template": constants.DT_FILE,
        "disks": [objects.Disk(size=64), objects.Disk(size=32, mode="ro")],
        "nics": [
            objects.Nic(mac="aa:00:00:00:00:01", link="br-test"),
            objects.Nic(mac="aa:00:00:00:00:02"),
        ],
        "beparams": {"maxmem": 256, "vcpus": 2},
        "hvparams": {
            "kernel_path": "/srv/guest/vmlinuz",
            "initrd_path": "/srv/guest/initrd",
            "kernel_args": "console=ttyS0 seed=web1",
        },
    }
    base.update(kw)
    return objects.Instance(**base)  # type: ignore[arg-type]


def _parse(cluster: objects.Cluster, inst: objects.Instance) -> ET.Element:
    return ET.fromstring(domxml.build_domain_xml(cluster, inst))


def test_identity_memory_vcpus_and_type_from_config() -> None:
    cluster = _cluster(domain_type=constants.DOMAIN_TYPE_QEMU)
    inst = _instance()
    root = _parse(cluster, inst)
    assert root.tag == "domain"
    assert root.get("type") == "qemu"
    assert root.findtext("name") == "web1"
    assert root.findtext("uuid") == inst.uuid
    mem = root.find("memory")
    assert mem is not None and mem.text == "256" and mem.get("unit") == "MiB"
    assert root.findtext("currentMemory") == "256"
    assert root.findtext("vcpu") == "2"
    assert root.findtext("on_poweroff") == "destroy"
    assert root.findtext("on_reboot") == "restart"
    assert root.findtext("on_crash") == "destroy"


def test_kvm_domain_type_is_taken_from_the_cluster_setting() -> None:
    root = _parse(_cluster(domain_type=constants.DOMAIN_TYPE_KVM), _instance())
    assert root.get("type") == "kvm"
    assert root.findtext("cpu/model") == "kvm64"


def test_unknown_domain_type_is_rejected() -> None:
    with pytest.raises(HypervisorError):
        domxml.build_domain_xml(_cluster(domain_type="xen"), _instance())


def test_direct_kernel_boot() -> None:
    root = _parse(_cluster(), _instance())
    assert root.findtext("os/type") == "hvm"
    assert root.findtext("os/kernel") == "/srv/guest/vmlinuz"
    assert root.findtext("os/initrd") == "/srv/guest/initrd"
    assert root.findtext("os/cmdline") == "console=ttyS0 seed=web1"
    assert root.find("os/boot") is None


def test_disk_boot_without_kernel() -> None:
    root = _parse(_cluster(), _instance(hvparams={}))
    assert root.find("os/kernel") is None
    boot = root.find("os/boot")
    assert boot is not None and boot.get("dev") == "hd"


def test_acpi_feature_follows_hvparam() -> None:
    assert _parse(_cluster(), _instance()).find("features/acpi") is not None
    inst = _instance(hvparams={"acpi": False})
    assert _parse(_cluster(), inst).find("features/acpi") is None


def test_cpu_model_named_and_migratable() -> None:
    root = _parse(_cluster(domain_type="qemu"), _instance())
    cpu = root.find("cpu")
    assert cpu is not None and cpu.get("mode") == "custom"
    assert root.findtext("cpu/model") == "qemu64"
    inst = _instance(hvparams={"cpu_type": "Westmere"})
    assert _parse(_cluster(), inst).findtext("cpu/model") == "Westmere"
    cluster = _cluster(hvparams={**constants.HVC_DEFAULTS, "cpu_type": "Nehalem"})
    assert _parse(cluster, _instance(hvparams={})).findtext("cpu/model") == "Nehalem"


def test_disks_are_raw_virtio_direct_io_at_the_configured_paths() -> None:
    cluster = _cluster()
    inst = _instance()
    disks = _parse(cluster, inst).findall("devices/disk")
    assert len(disks) == 2
    for idx, disk in enumerate(disks):
        driver = disk.find("driver")
        assert driver is not None
        assert driver.attrib == {"name": "qemu", "type": "raw", "cache": "none", "io": "native"}
        source = disk.find("source")
        assert source is not None
        assert source.get("file") == objects.disk_path(cluster, inst, idx)
        target = disk.find("target")
        assert target is not None and target.get("bus") == "virtio"
        assert target.get("dev") == ["vda", "vdb"][idx]
    assert disks[0].find("readonly") is None
    assert disks[1].find("readonly") is not None
    assert objects.disk_path(cluster, inst, 0).startswith(cluster.file_storage_dir)


def test_sharedfile_disks_live_on_shared_storage() -> None:
    cluster = _cluster()
    inst = _instance(disk_template=constants.DT_SHARED_FILE)
    source = _parse(cluster, inst).find("devices/disk/source")
    assert source is not None
    assert source.get("file", "").startswith(cluster.shared_file_storage_dir + "/web1/")


def test_disk_cache_hvparam_and_io_mode() -> None:
    inst = _instance(hvparams={"disk_cache": "writeback"})
    driver = _parse(_cluster(), inst).find("devices/disk/driver")
    assert driver is not None and driver.get("cache") == "writeback"
    assert driver.get("io") is None
    with pytest.raises(HypervisorError):
        domxml.build_domain_xml(_cluster(), _instance(hvparams={"disk_cache": "bogus"}))


def test_nics_bridged_virtio_with_mac_and_default_bridge() -> None:
    nics = _parse(_cluster(default_bridge="br0"), _instance()).findall("devices/interface")
    assert [n.get("type") for n in nics] == ["bridge", "bridge"]
    assert [n.find("mac").get("address") for n in nics] == [  # type: ignore[union-attr]
        "aa:00:00:00:00:01",
        "aa:00:00:00:00:02",
    ]
    assert [n.find("source").get("bridge") for n in nics] == ["br-test", "br0"]  # type: ignore[union-attr]
    assert all(n.find("model").get("type") == "virtio" for n in nics)  # type: ignore[union-attr]


def test_routed_nic_is_rejected() -> None:
    inst = _instance(nics=[objects.Nic(mac="aa:00:00:00:00:03", mode="routed")])
    with pytest.raises(HypervisorError):
        domxml.build_domain_xml(_cluster(), inst)


def test_serial_console_on_a_terminal_logged_to_a_file_and_no_balloon() -> None:
    root = _parse(_cluster(), _instance())
    serial = root.find("devices/serial")
    assert serial is not None and serial.get("type") == "pty"  # for virsh console
    log = serial.find("log")
    assert log is not None
    assert log.get("file") == domxml.console_log_path("web1")
    assert log.get("append") == "on"
    balloon = root.find("devices/memballoon")
    assert balloon is not None and balloon.get("model") == "none"
    xml = domxml.build_domain_xml(_cluster(), _instance())
    assert domxml.parse_console_log(xml) == domxml.console_log_path("web1")
    no_serial = _instance(hvparams={"serial_console": False})
    assert _parse(_cluster(), no_serial).find("devices/serial") is None


def test_bad_memory_is_rejected() -> None:
    with pytest.raises(HypervisorError):
        domxml.build_domain_xml(_cluster(), _instance(beparams={"maxmem": 0}))


def test_disk_target_names() -> None:
    assert [domxml.disk_target(i) for i in (0, 1, 25, 26, 27)] == [
        "vda",
        "vdb",
        "vdz",
        "vdaa",
        "vdab",
    ]


LIVE_XML_WITH_OVERLAY = """
<domain type='qemu'>
  <name>web1</name>
  <devices>
    <disk type='file' device='disk'>
      <source file='/srv/x/web1/disk0.img.snap'/>
      <backingStore type='file'>
        <format type='raw'/>
        <source file='/srv/x/web1/disk0.img'/>
        <backingStore/>
      </backingStore>
      <target dev='vda' bus='virtio'/>
    </disk>
    <disk type='file' device='disk'>
      <source file='/srv/x/web1/disk1.img'/>
      <backingStore/>
      <target dev='vdb' bus='virtio'/>
    </disk>
    <disk type='file' device='cdrom'>
      <target dev='hdc' bus='ide'/>
    </disk>
    <serial type='pty'>
      <log file='/var/log/x.log' append='on'/>
    </serial>
  </devices>
</domain>
"""


def test_parse_disks_finds_overlays_and_bases() -> None:
    disks = domxml.parse_domain_disks(LIVE_XML_WITH_OVERLAY)
    assert [d.target for d in disks] == ["vda", "vdb"]
    assert disks[0].is_overlay and disks[0].source.endswith(".snap")
    assert disks[0].base == "/srv/x/web1/disk0.img"
    assert not disks[1].is_overlay and disks[1].base == "/srv/x/web1/disk1.img"
    assert domxml.parse_console_log(LIVE_XML_WITH_OVERLAY) == "/var/log/x.log"


def test_parse_capabilities() -> None:
    caps = """<capabilities><host><uuid>1b4e28ba-2fa1-11d2-883f-0016d3cca427</uuid>
      <cpu><arch>x86_64</arch><model>Skylake-Client-IBRS</model></cpu></host></capabilities>"""
    parsed = domxml.parse_capabilities(caps)
    assert parsed.uuid == "1b4e28ba-2fa1-11d2-883f-0016d3cca427"
    assert parsed.arch == "x86_64"
    assert parsed.cpu_model == "Skylake-Client-IBRS"


# -- libvirt error mapping ----------------------------------------------------


@pytest.mark.parametrize(
    ("code", "domain", "expected"),
    [
        (libvirt.VIR_ERR_NO_DOMAIN, libvirt.VIR_FROM_QEMU, InstanceNotFound),
        (libvirt.VIR_ERR_NO_CONNECT, libvirt.VIR_FROM_NONE, NodeUnreachable),
        (libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_FROM_RPC, NodeUnreachable),
        (libvirt.VIR_ERR_INTERNAL_ERROR, libvirt.VIR_FROM_RPC, NodeUnreachable),
        (libvirt.VIR_ERR_RPC, libvirt.VIR_FROM_REMOTE, NodeUnreachable),
        (libvirt.VIR_ERR_OPERATION_INVALID, libvirt.VIR_FROM_QEMU, HypervisorError),
        (libvirt.VIR_ERR_INTERNAL_ERROR, libvirt.VIR_FROM_QEMU, HypervisorError),
        (libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_FROM_QEMU, HypervisorError),
    ],
)
def test_error_mapping(code: int, domain: int, expected: type) -> None:
    mapped = translate(libvirt_error(code, domain, "detail"), "node2", "Cannot start web1")
    assert type(mapped) is expected
    assert mapped.node == "node2"
    assert "Cannot start web1: detail" in str(mapped)


def test_context_manager_raises_from_original() -> None:
    original = libvirt_error(libvirt.VIR_ERR_NO_DOMAIN, libvirt.VIR_FROM_QEMU)
    with pytest.raises(InstanceNotFound) as info, libvirt_errors("node1", "lookup"):
        raise original
    assert info.value.__cause__ is original
    assert info.value.ecode == "unknown_entity"


def test_state_mapping() -> None:
    assert map_state(libvirt.VIR_DOMAIN_RUNNING) == constants.DOMSTATE_RUNNING
    assert map_state(libvirt.VIR_DOMAIN_PAUSED) == constants.DOMSTATE_PAUSED
    assert map_state(libvirt.VIR_DOMAIN_SHUTOFF) == constants.DOMSTATE_SHUTOFF
    assert map_state(libvirt.VIR_DOMAIN_CRASHED) == constants.DOMSTATE_CRASHED
    assert map_state(99) == constants.DOMSTATE_OTHER


def test_the_files_a_migrating_domain_writes_are_its_serial_log_or_file() -> None:
    """What a migration creates on its target first (``migration.serial_files``)."""
    from ganeti_lv.hypervisor.libvirt.migration import serial_files

    log = domxml.console_log_path("web1")
    assert serial_files(domxml.build_domain_xml(_cluster(), _instance())) == [log]
    # libvirt's live XML repeats the terminal as the console: one file
    live = f"""<domain><devices>
      <serial type="pty"><source path="/dev/pts/3"/><log file="{log}" append="on"/></serial>
      <console type="pty"><source path="/dev/pts/3"/><log file="{log}" append="on"/></console>
    </devices></domain>"""
    assert serial_files(live) == [log]
    # a domain defined by an older ganeti_lv: the serial port writes the file itself
    old = (
        '<domain><devices><serial type="file"><source path="/v/x.log"/></serial></devices></domain>'
    )
    assert serial_files(old) == ["/v/x.log"]
    assert serial_files("<domain><devices/></domain>") == []
