"""Domain XML: generated from the configuration, and read back (pure functions).

``build_domain_xml`` turns a cluster, an instance and its filled parameters
(with a start's temporary ones, as ``instance startup -H/-B``) into libvirt
domain XML. The domain type (``kvm`` or ``qemu``) is the
cluster's setting, never derived from libvirt's capabilities, which may list
kvm where kvm cannot run guests. The CPU model is a named model (hvparam
``cpu_type``) so a guest can migrate between hosts of different CPUs; the
default for TCG is ``qemu64`` and for kvm ``kvm64``, never host-passthrough.

Disks are raw files with ``cache='none'`` (direct I/O, the setting libvirt
considers safe for migration) and native AIO. The serial console is a
terminal (``virsh console`` on the node attaches to it) whose output also
goes to a log file on the node (``console_log_path``), so the guest's output
can be read back over SSH.

The parsing helpers (``parse_domain_disks``, ``parse_console_log``,
``parse_serial_tty``, ``parse_capabilities``) read XML that libvirt returns; they are pure too.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ganeti_lv import constants, objects
from ganeti_lv.errors import ECODE_INVAL, HypervisorError
from ganeti_lv.objects import Cluster, Instance

CONSOLE_LOG_DIR = "/var/log/libvirt/qemu"
"""Node-local directory of the serial console logs (one file per instance)."""

DEFAULT_ARCH = "x86_64"
DEFAULT_CPU_MODELS = {
    constants.DOMAIN_TYPE_QEMU: "qemu64",
    constants.DOMAIN_TYPE_KVM: "kvm64",
}
DISK_CACHE_MODES = ("none", "writethrough", "writeback", "directsync", "unsafe", "default")


def console_log_path(instance_name: str) -> str:
    """Node-local path of the instance's serial console log file."""
    return f"{CONSOLE_LOG_DIR}/{instance_name}-console.log"


def disk_target(idx: int) -> str:
    """virtio target device name of disk ``idx`` (vda, vdb, ..., vdz, vdaa, ...)."""
    letters = ""
    n = idx
    while True:
        letters = chr(ord("a") + n % 26) + letters
        n = n // 26 - 1
        if n < 0:
            return "vd" + letters


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    elem = ET.SubElement(parent, tag, attrs)
    if text is not None:
        elem.text = text
    return elem


def _os_element(root: ET.Element, hvp: dict[str, Any]) -> None:
    os_elem = _sub(root, "os")
    _sub(os_elem, "type", "hvm", arch=DEFAULT_ARCH)
    kernel = str(hvp.get("kernel_path") or "")
    if kernel:
        _sub(os_elem, "kernel", kernel)
        initrd = str(hvp.get("initrd_path") or "")
        if initrd:
            _sub(os_elem, "initrd", initrd)
        args = str(hvp.get("kernel_args") or "")
        if args:
            _sub(os_elem, "cmdline", args)
    else:
        _sub(os_elem, "boot", dev="hd")


def _cpu_element(root: ET.Element, domain_type: str, hvp: dict[str, Any]) -> None:
    model = str(hvp.get("cpu_type") or "") or DEFAULT_CPU_MODELS.get(domain_type, "qemu64")
    if model in ("host-passthrough", "host-model"):
        _sub(root, "cpu", mode=model)
        return
    cpu = _sub(root, "cpu", mode="custom", match="exact", check="none")
    _sub(cpu, "model", model, fallback="forbid")


def _disk_elements(devices: ET.Element, cluster: Cluster, instance: Instance, cache: str) -> None:
    for idx, disk in enumerate(instance.disks):
        elem = _sub(devices, "disk", type="file", device="disk")
        driver = {"name": "qemu", "type": "raw", "cache": cache}
        if cache in ("none", "directsync"):
            driver["io"] = "native"
        _sub(elem, "driver", **driver)
        _sub(elem, "source", file=objects.disk_path(cluster, instance, idx))
        _sub(elem, "target", dev=disk_target(idx), bus="virtio")
        if disk.mode == "ro":
            _sub(elem, "readonly")
        _sub(elem, "serial", disk.uuid.replace("-", "")[:20])


def _nic_elements(devices: ET.Element, cluster: Cluster, instance: Instance) -> None:
    for idx, nic in enumerate(instance.nics):
        if nic.mode != "bridged":
            raise HypervisorError(
                f"NIC {idx} of {instance.name}: mode {nic.mode!r} is not supported"
                " (only 'bridged')",
                ecode=ECODE_INVAL,
            )
        bridge = nic.link or cluster.default_bridge
        elem = _sub(devices, "interface", type="bridge")
        _sub(elem, "mac", address=nic.mac)
        _sub(elem, "source", bridge=bridge)
        _sub(elem, "model", type="virtio")


def build_domain_xml(
    cluster: Cluster,
    instance: Instance,
    hvparams: Mapping[str, Any] | None = None,
    beparams: Mapping[str, Any] | None = None,
) -> str:
    """Return the libvirt domain XML of ``instance`` (see the module docstring), with
    temporary ``hvparams``/``beparams`` over the instance's when given."""
    hvp = cluster.fill_hvparams(instance, hvparams)
    bep = cluster.fill_beparams(instance, beparams)
    if cluster.domain_type not in constants.DOMAIN_TYPES:
        raise HypervisorError(f"Unknown domain type {cluster.domain_type!r}", ecode=ECODE_INVAL)
    cache = str(hvp.get("disk_cache") or "none")
    if cache not in DISK_CACHE_MODES:
        raise HypervisorError(f"Unknown disk cache mode {cache!r}", ecode=ECODE_INVAL)
    memory = int(bep["maxmem"])
    vcpus = int(bep["vcpus"])
    if memory <= 0 or vcpus <= 0:
        raise HypervisorError(
            f"Invalid memory ({memory}) or vcpus ({vcpus}) for {instance.name}", ecode=ECODE_INVAL
        )

    root = ET.Element("domain", type=cluster.domain_type)
    _sub(root, "name", instance.name)
    _sub(root, "uuid", instance.uuid)
    _sub(root, "memory", str(memory), unit="MiB")
    _sub(root, "currentMemory", str(memory), unit="MiB")
    _sub(root, "vcpu", str(vcpus), placement="static")
    _os_element(root, hvp)
    features = _sub(root, "features")
    if hvp.get("acpi", True):
        _sub(features, "acpi")
    _cpu_element(root, cluster.domain_type, hvp)
    _sub(root, "clock", offset="utc")
    _sub(root, "on_poweroff", "destroy")
    _sub(root, "on_reboot", "restart")
    _sub(root, "on_crash", "destroy")

    devices = _sub(root, "devices")
    _disk_elements(devices, cluster, instance, cache)
    _nic_elements(devices, cluster, instance)
    if hvp.get("serial_console", True):
        # a terminal for ``virsh console``, its output also kept in the log file
        serial = _sub(devices, "serial", type="pty")
        _sub(serial, "log", file=console_log_path(instance.name), append="on")
        _sub(serial, "target", port="0")
    _sub(devices, "memballoon", model="none")
    ET.indent(root)
    return ET.tostring(root, encoding="unicode")


# -- reading libvirt's XML ----------------------------------------------------


@dataclass
class DiskState:
    """A disk as a domain's XML shows it.

    ``source`` is the file the domain writes to now; ``chain`` the backing
    files below it, top first (empty when the disk is not an overlay).
    """

    target: str
    source: str
    chain: list[str] = field(default_factory=list)

    @property
    def base(self) -> str:
        """The bottom of the chain: the instance's own image."""
        return self.chain[-1] if self.chain else self.source

    @property
    def is_overlay(self) -> bool:
        """True when the disk writes to an overlay on a backing chain."""
        return bool(self.chain)


def _source_path(elem: ET.Element) -> str:
    src = elem.find("source")
    if src is None:
        return ""
    return src.get("file") or src.get("dev") or src.get("path") or src.get("name") or ""


def parse_domain_disks(xml: str) -> list[DiskState]:
    """The file/block disks of a domain XML (cdroms and empty drives skipped)."""
    root = ET.fromstring(xml)
    disks: list[DiskState] = []
    for disk in root.findall("./devices/disk"):
        if disk.get("device", "disk") != "disk":
            continue
        source = _source_path(disk)
        if not source:
            continue
        target = disk.find("target")
        chain: list[str] = []
        store = disk.find("backingStore")
        while store is not None:
            path = _source_path(store)
            if not path:
                break
            chain.append(path)
            store = store.find("backingStore")
        disks.append(DiskState(target.get("dev", "") if target is not None else "", source, chain))
    return disks


def parse_acpi(xml: str) -> bool:
    """Whether the domain has ACPI (a power button its guest can be asked with)."""
    return ET.fromstring(xml).find("./features/acpi") is not None


def parse_serial_tty(xml: str) -> bool:
    """Whether the first serial port is a terminal (``virsh console`` attaches to it)."""
    serial = ET.fromstring(xml).find("./devices/serial")
    return serial is not None and serial.get("type") == "pty"


def parse_console_log(xml: str) -> str:
    """The file the first serial port logs to ('' when none)."""
    root = ET.fromstring(xml)
    for serial in root.findall("./devices/serial"):
        if serial.get("type") == "file":
            return _source_path(serial) or ""
        log = serial.find("log")
        if log is not None and log.get("file"):
            return log.get("file", "")
    return ""


@dataclass
class HostCapabilities:
    """The parts of libvirt's capabilities XML the node facts need."""

    uuid: str = ""
    arch: str = ""
    cpu_model: str = ""


def parse_capabilities(xml: str) -> HostCapabilities:
    """Host uuid, arch and CPU model from libvirt's capabilities XML."""
    root = ET.fromstring(xml)
    host = root.find("host")
    if host is None:
        return HostCapabilities()
    return HostCapabilities(
        uuid=(host.findtext("uuid") or "").strip(),
        arch=(host.findtext("cpu/arch") or "").strip(),
        cpu_model=(host.findtext("cpu/model") or "").strip(),
    )
