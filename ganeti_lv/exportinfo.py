"""An export's description: config.ini in Ganeti's format, plus a checksum manifest.

An export on a node is the directory ``<export_dir>/<instance>/`` holding
``config.ini`` (ConfigParser, sections export/instance/hypervisor/backend/os
with Ganeti's keys, so Ganeti-minded tools can read it), one raw image per
disk (``disk<N>.img``, sparse) and ``manifest.json`` with every disk's size
and checksum as computed at the source. While being written it lives in
``<instance>.new/``; an export without both files is not complete.

manifest.json (version 2)::

    {"version": 2, "instance": NAME, "source": NODE, "timestamp": UNIX,
     "disks": [{"index": 0, "file": "disk0.img", "size": BYTES,
                "allocated": BYTES, "checksum_algorithm": "sha256-tree-4M",
                "checksum": HEX}]}

``sha256-tree-4M`` is defined in ``diskcopy_stream`` (sha256 over the disk
size and the sha256 of every 4 MiB chunk); check an image by hand with
``python3 -m ganeti_lv.node.diskcopy_helper checksum disk0.img``. Version 1
manifests (a plain whole-disk ``"sha256": HEX`` per disk) are still read;
their checksum algorithm is ``sha256``.
"""

from __future__ import annotations

import configparser
import io
import json
import time
from dataclasses import dataclass, field
from typing import Any

from ganeti_lv import constants
from ganeti_lv.errors import ECODE_ENVIRON, ECODE_INVAL, OpPrereqError
from ganeti_lv.hypervisor.migration_types import (
    CAP_AUTO_CONVERGE,
    CAP_COMPRESSION,
    CAP_PARALLEL,
    CAP_POSTCOPY,
    CAP_XBZRLE,
    parse_caps,
)
from ganeti_lv.names import device_name
from ganeti_lv.node.diskcopy_stream import ALGORITHMS, PLAIN, TREE
from ganeti_lv.objects import Disk, Instance, Nic

CONFIG_FILE = "config.ini"
MANIFEST_FILE = "manifest.json"
NEW_SUFFIX = constants.EXPORT_NEW_SUFFIX
OLD_SUFFIX = constants.EXPORT_OLD_SUFFIX


def export_dir_owner(dirname: str) -> tuple[str, bool]:
    """The instance a directory of the export dir is the export of, and whether it is
    one in the works (``NAME.new`` being written, ``NAME.old`` being replaced)."""
    for suffix in (NEW_SUFFIX, OLD_SUFFIX):
        if dirname.endswith(suffix):
            return dirname.removesuffix(suffix), True
    return dirname, False


def _publish_dirs(export: str) -> tuple[str, str]:
    """The export, and what a failed publish left aside (put back first when alone)."""
    return export, export + OLD_SUFFIX


def publish_blockers(export: str) -> list[str]:
    """The paths ``blocking_dir`` judges, to be asked of the target node."""
    return [path for d in _publish_dirs(export) for path in (d, f"{d}/{CONFIG_FILE}")]


def blocking_dir(export: str, exists: dict[str, bool]) -> str | None:
    """The directory that keeps a new export from being published as ``export`` (as
    the target node judges it: it holds no export), or None. ``NAME.old``, what a
    failed publish left aside, counts when alone: it is put back first."""
    taken = next((d for d in _publish_dirs(export) if exists.get(d)), None)
    if taken is None or exists.get(f"{taken}/{CONFIG_FILE}"):
        return None
    return taken


INISECT_EXP = "export"
INISECT_INS = "instance"
INISECT_HYP = "hypervisor"
INISECT_BEP = "backend"
INISECT_OSP = "os"

INISECT_OSP_PRIVATE = "os_private"

# Hypervisor parameters not exported: Ganeti's HVC_GLOBALS (its import refuses
# them on an instance) that exist here, and the downtime steps of the
# migration policy and the stream's encryption, which Ganeti does not know
# (its import refuses unknown keys); the cluster's values apply to an
# imported instance.
HV_NOT_EXPORTED = (
    *constants.HVC_GLOBALS,
    "migration_downtime_initial",
    "migration_downtime_steps",
    "migration_downtime_passes",
    "migration_encryption",
)
# The OS written to [export]: the one a Ganeti cluster imports a raw image
# with (Debian's ganeti-os-noop); the instance's own OS is [instance] os.
EXPORT_OS = "noop"
# cpu_type is libvirt's CPU mode here and qemu's -cpu model in Ganeti: the
# host's own CPU is "host" there. libvirt's host-model (a named model like the
# host's) has no qemu name: it is exported as the host's CPU too.
GANETI_HOST_CPU = "host"
CPU_TYPES_TO_GANETI = {"host-passthrough": GANETI_HOST_CPU, "host-model": GANETI_HOST_CPU}
# migration_caps: Ganeti hands each name (':'-separated) to qemu as it is; here
# they are libvirt's features (``migration_types.parse_caps``, ',' too, "postcopy",
# "parallel=N" with its connection count, a qemu parameter Ganeti has no key for)
MIGRATION_CAPS_TO_QEMU = {
    CAP_AUTO_CONVERGE: "auto-converge",
    CAP_POSTCOPY: "postcopy-ram",
    CAP_XBZRLE: "xbzrle",
    CAP_COMPRESSION: "compress",
    CAP_PARALLEL: "multifd",
}


def disk_file_name(idx: int) -> str:
    """File name of disk ``idx`` inside an export directory."""
    return f"disk{idx}.img"


def new_disk_path(export_dir: str, instance_name: str, idx: int) -> str:
    """Where an export being written puts disk ``idx``: ``<export_dir>/<name>.new/diskN.img``."""
    return f"{export_dir}/{instance_name}{NEW_SUFFIX}/{disk_file_name(idx)}"


@dataclass
class DiskManifest:
    """One exported disk: file name, logical size (bytes) and checksum."""

    index: int
    file: str
    size: int
    checksum: str
    allocated: int = 0
    checksum_algorithm: str = TREE

    @property
    def checksum_text(self) -> str:
        """``ALGORITHM:HEX``, the expected checksum as the copy engine takes it."""
        return f"{self.checksum_algorithm}:{self.checksum}"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DiskManifest:
        """From a manifest's disk entry; a version 1 entry (``sha256``) is a plain sha256."""
        data = dict(data)
        if "checksum" not in data and "sha256" in data:
            data["checksum"] = data.pop("sha256")
            data.setdefault("checksum_algorithm", PLAIN)
        disk = cls(**data)
        if disk.checksum_algorithm not in ALGORITHMS:  # refused before anything is created
            raise ValueError(f"unknown checksum algorithm {disk.checksum_algorithm!r}")
        return disk


# Manifest versions: 2 added tree checksums; from 3 on, config.ini is written
# as Ganeti reads it ('%' as '%%') and ``translated`` is there.
MANIFEST_VERSION = 3
MANIFEST_ESCAPED_FROM = 3


@dataclass
class Manifest:
    """Checksums of an export, written last before publishing.

    ``translated``: the hypervisor parameters whose value config.ini gives
    in Ganeti's words, as they are here (an import by ganeti_lv restores
    them; Ganeti reads config.ini's).
    """

    instance: str
    source: str
    timestamp: int
    disks: list[DiskManifest] = field(default_factory=list)
    version: int = MANIFEST_VERSION
    translated: dict[str, str] = field(default_factory=dict)

    @property
    def config_escaped(self) -> bool:
        """Whether its config.ini writes '%' as '%%' (older exports wrote it raw)."""
        return self.version >= MANIFEST_ESCAPED_FROM

    def to_json(self) -> str:
        """Serialise to JSON text."""
        data = {
            "version": self.version,
            "instance": self.instance,
            "source": self.source,
            "timestamp": self.timestamp,
            "disks": [vars(d) for d in self.disks],
            "translated": self.translated,
        }
        return json.dumps(data, indent=1, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        """Parse JSON text; bad data is ECODE_INVAL."""
        try:
            data = json.loads(text)
            return cls(
                instance=data["instance"],
                source=data["source"],
                timestamp=int(data["timestamp"]),
                disks=[DiskManifest.from_dict(d) for d in data["disks"]],
                version=int(data.get("version", 1)),
                translated={str(k): str(v) for k, v in data.get("translated", {}).items()},
            )
        except (ValueError, KeyError, TypeError, AttributeError) as err:  # any wrong shape
            raise OpPrereqError(f"Invalid export manifest: {err}", ECODE_INVAL) from err


def _fmt(value: Any) -> str:
    # Ganeti reads config.ini with configparser's '%' interpolation: '%' is '%%'
    return "None" if value is None else str(value).replace("%", "%%")


def build_config(
    instance: Instance,
    source_node: str,
    beparams: dict[str, Any],
    hvparams: dict[str, Any],
    disk_files: list[str] | None = None,
    timestamp: int | None = None,
) -> configparser.ConfigParser:
    """The config.ini of an export, in Ganeti's sections and keys.

    ``beparams``/``hvparams`` are the instance's filled parameters (what
    Ganeti writes too); ``hvparams`` leaves out Ganeti's cluster-level
    ones. ``source_node`` is the node's identity (its UUID, as Ganeti's).
    ``[export] os`` is ``EXPORT_OS`` (the disks are raw images), the
    instance's OS label is ``[instance] os``.
    """
    cfg = configparser.ConfigParser()
    cfg[INISECT_EXP] = {
        "version": str(constants.EXPORT_VERSION),
        "timestamp": str(int(time.time() if timestamp is None else timestamp)),
        "source": source_node,
        "os": EXPORT_OS,
        "compression": constants.IEC_NONE,
    }
    ins: dict[str, str] = {
        "name": instance.name,
        "os": _fmt(instance.os),
        "maxmem": str(beparams.get("maxmem", "")),
        "minmem": str(beparams.get("minmem", "")),
        "memory": str(beparams.get("maxmem", "")),
        "vcpus": str(beparams.get("vcpus", "")),
        "disk_template": instance.disk_template,
        "hypervisor": instance.hypervisor,
        "tags": _fmt(" ".join(instance.tags)),
    }
    for idx, nic in enumerate(instance.nics):
        for key, value in (
            ("mac", nic.mac),
            ("ip", nic.ip),
            ("mode", nic.mode),
            ("link", nic.link),
            ("network", nic.network or None),
            ("name", nic.name or None),
            ("vlan", nic.vlan),
        ):
            ins[f"nic{idx}_{key}"] = _fmt(value)
    ins["nic_count"] = str(len(instance.nics))
    files = disk_files or [disk_file_name(i) for i in range(len(instance.disks))]
    for idx, disk in enumerate(instance.disks):
        ins[f"disk{idx}_ivname"] = f"disk/{idx}"
        ins[f"disk{idx}_dump"] = files[idx]
        ins[f"disk{idx}_size"] = str(disk.size)
        ins[f"disk{idx}_name"] = _fmt(disk.name or None)
    ins["disk_count"] = str(len(instance.disks))
    cfg[INISECT_INS] = ins
    cfg[INISECT_HYP] = {k: _fmt(v) for k, v in sorted(written_hvparams(hvparams).items())}
    bep = {**constants.GANETI_ONLY_BEPARAMS, **beparams}
    cfg[INISECT_BEP] = {k: _fmt(v) for k, v in sorted(bep.items())}
    cfg[INISECT_OSP] = {}
    cfg[INISECT_OSP_PRIVATE] = {}
    return cfg


def written_hvparams(hvparams: dict[str, Any]) -> dict[str, Any]:
    """The hypervisor parameters as config.ini gives them, in Ganeti's words."""
    out = {k: v for k, v in hvparams.items() if k not in HV_NOT_EXPORTED}
    if out.get("cpu_type") in CPU_TYPES_TO_GANETI:
        out["cpu_type"] = CPU_TYPES_TO_GANETI[out["cpu_type"]]
    if out.get("migration_caps"):
        try:
            caps = parse_caps(str(out["migration_caps"]))
        except ValueError:
            pass  # not one this cluster could have set: as it is
        else:
            out["migration_caps"] = ":".join(MIGRATION_CAPS_TO_QEMU[name] for name in caps)
    return out


def translated_hvparams(hvparams: dict[str, Any]) -> dict[str, str]:
    """Those of ``hvparams`` that config.ini gives otherwise: their values here."""
    written = written_hvparams(hvparams)
    return {k: str(v) for k, v in hvparams.items() if k in written and written[k] != v}


def restore_translated(hvparams: dict[str, str], translated: dict[str, str]) -> None:
    """Give ``hvparams`` (config.ini's) the values here that ``translated`` keeps.

    Only where config.ini still says what the export wrote for them: a value
    edited by hand since is the operator's.
    """
    for key, value in translated.items():
        written = written_hvparams({key: value}).get(key)
        if written is not None and hvparams.get(key) == str(written):
            hvparams[key] = value


def config_to_text(cfg: configparser.ConfigParser) -> str:
    """The config.ini text."""
    buf = io.StringIO()
    cfg.write(buf)
    return buf.getvalue()


def parse_config(text: str, escaped: bool = True) -> configparser.ConfigParser:
    """Parse config.ini text and check it as Ganeti's import does.

    With ``escaped`` its values are read as Ganeti reads them, '%%' being
    '%' (Ganeti's exports, and ganeti_lv's from manifest version 3); without
    (older ganeti_lv exports) as they are. A wrong version is ECODE_ENVIRON
    (as in Ganeti), anything else ECODE_INVAL.
    """
    cfg = configparser.ConfigParser() if escaped else configparser.ConfigParser(interpolation=None)
    try:
        cfg.read_string(text)
    except configparser.Error as err:
        raise OpPrereqError(f"Cannot parse export config.ini: {err}", ECODE_INVAL) from err
    for section in (INISECT_EXP, INISECT_INS):
        if not cfg.has_section(section):
            raise OpPrereqError(f"Export config.ini lacks the [{section}] section", ECODE_INVAL)
    version = cfg.get(INISECT_EXP, "version", fallback=None)
    if version != str(constants.EXPORT_VERSION):
        raise OpPrereqError(
            f"Wrong export version {version} (expected {constants.EXPORT_VERSION})",
            ECODE_ENVIRON,
        )
    return cfg


def _none(value: str) -> str | None:
    # any case, as Ganeti reads its own config.ini
    return None if value.lower() in ("none", "") else value


@dataclass
class ExportDescription:
    """What an import needs from an export: the instance's shape and its disks."""

    name: str
    source: str
    os: str
    disk_template: str
    beparams: dict[str, str]
    hvparams: dict[str, str]
    disks: list[Disk]
    disk_files: list[str]
    nics: list[Nic]
    tags: list[str]
    timestamp: int
    compression: str = constants.IEC_NONE
    hypervisor: str = constants.HYPERVISOR_KVM


def _beparams(cfg: configparser.ConfigParser) -> dict[str, str]:
    """[backend]; an export without it has them in [instance] (as Ganeti reads it)."""
    if cfg.has_section(INISECT_BEP):
        return dict(cfg[INISECT_BEP])
    ins = cfg[INISECT_INS]
    return {
        k: ins[k] for k in (*constants.BEC_DEFAULTS, *constants.GANETI_ONLY_BEPARAMS) if k in ins
    }


def describe(cfg: configparser.ConfigParser) -> ExportDescription:
    """Read the instance description out of a parsed config.ini."""
    ins = cfg[INISECT_INS]
    try:
        disks = []
        files = []
        for idx in range(int(ins["disk_count"])):
            disks.append(
                Disk(
                    size=int(ins[f"disk{idx}_size"]),
                    name=device_name(_none(ins.get(f"disk{idx}_name", ""))),
                )
            )
            files.append(ins[f"disk{idx}_dump"])
        nics = []
        for idx in range(int(ins.get("nic_count", "0"))):
            nics.append(
                Nic(
                    mac=ins[f"nic{idx}_mac"],
                    ip=_none(ins.get(f"nic{idx}_ip", "None")),
                    mode=_none(ins.get(f"nic{idx}_mode", "")) or "bridged",
                    link=_none(ins.get(f"nic{idx}_link", "")) or "",
                    vlan=_none(ins.get(f"nic{idx}_vlan", "")) or "",
                    name=device_name(_none(ins.get(f"nic{idx}_name", ""))),
                    network=_none(ins.get(f"nic{idx}_network", "")) or "",
                )
            )
        return ExportDescription(
            name=ins["name"],
            source=cfg.get(INISECT_EXP, "source", fallback=""),
            os=ins.get("os") or cfg.get(INISECT_EXP, "os", fallback="") or "",
            disk_template=ins.get("disk_template", constants.DT_FILE),
            beparams=_beparams(cfg),
            hvparams=dict(cfg[INISECT_HYP]) if cfg.has_section(INISECT_HYP) else {},
            disks=disks,
            disk_files=files,
            nics=nics,
            tags=ins.get("tags", "").split(),
            timestamp=int(cfg.get(INISECT_EXP, "timestamp", fallback="0")),
            compression=cfg.get(INISECT_EXP, "compression", fallback=constants.IEC_NONE),
            hypervisor=ins.get("hypervisor") or constants.HYPERVISOR_KVM,
        )
    except configparser.InterpolationError as err:
        raise OpPrereqError(
            f"Cannot read [{err.section}] {err.option} of the export's config.ini: a '%' is"
            " written '%%' there",
            ECODE_INVAL,
        ) from err
    except (KeyError, ValueError) as err:
        raise OpPrereqError(f"Incomplete export config.ini: {err}", ECODE_INVAL) from err
