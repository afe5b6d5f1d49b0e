"""Reading exports strictly, and carrying them between Ganeti and ganeti_lv.

An import reads an export directory on a node; nothing in it is trusted:

- ``resolve_src_path``: where ``--src-dir`` points. A bare name is an export
  in the cluster's export dir, an absolute path (e.g. Ganeti's
  ``/var/lib/ganeti/export/NAME``) is read in place; relative paths with
  ``/`` or ``..`` are refused.
- ``check_dumps``: every disk's file is a plain name of a regular file of
  that directory (no ``../``, no symbolic link), its size is the disk size
  config.ini gives (``disk<N>_size`` MiB) and, with a manifest, the size the
  manifest gives. A dump that is not a raw disk image (the output of an OS
  export script such as a dump(8) stream, or a compressed or qcow2 file) is
  refused naming the OS that wrote it; a raw dump of the wrong size is
  refused as truncated or corrupted.
- ``translate_hvparams``/``translate_beparams``: Ganeti's parameters, kept
  where they mean the same here, dropped (and named) where they do not.

Exports written here name ``GANETI_RAW_OS`` as their OS, so that a Ganeti
cluster imports their raw images with ganeti-os-noop's import script (a
plain ``dd``); the instance's own OS label is kept in ``[instance] os``.
"""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass, field
from typing import Any

from ganeti_lv import constants
from ganeti_lv.errors import ECODE_INVAL, ECODE_STATE, OpPrereqError
from ganeti_lv.exportinfo import GANETI_HOST_CPU, ExportDescription, Manifest
from ganeti_lv.hypervisor.export_types import ExportData

MiB = 1024 * 1024

# The OS a Ganeti cluster imports a raw image with (Debian's ganeti-os-noop).
GANETI_RAW_OS = "noop"
# OSes whose export script writes the disk as it is (a raw image).
RAW_OSES = frozenset({GANETI_RAW_OS, ""})

# Hypervisor parameters the cluster decides here (the migration settings):
# an export's values are not taken.
HV_CLUSTER_DECIDES = (
    "migration_bandwidth",
    "migration_downtime",
    "migration_mode",
    "migration_caps",
)

# Known starts of files that are not raw disk images: (offset, hex bytes, what).
_NOT_RAW_MAGIC = (
    (24, "6cea0000", "a dump(8) stream"),  # NFS_MAGIC 60012, little-endian
    (24, "0000ea6c", "a dump(8) stream"),
    (0, "1f8b", "gzip data"),
    (0, "fd377a585a00", "xz data"),
    (0, "28b52ffd", "zstd data"),
    (0, "425a68", "bzip2 data"),
    (0, "514649fb", "a qcow2 image"),
)
_TAR_MAGIC = (257, "7573746172", "a tar archive")  # "ustar"


def resolve_src_path(export_dir: str, src_path: str | None, instance_name: str) -> str:
    """The export directory an import reads (ECODE_INVAL for a path not taken).

    None: ``<export_dir>/<instance_name>``; a bare name (an instance name):
    ``<export_dir>/<name>``; an absolute path: itself, normalised, and it must
    not contain ``..``; anything else is refused.
    """
    if not src_path:
        src_path = instance_name
    text = src_path.rstrip("/") if src_path != "/" else src_path
    if text.startswith("/"):
        parts = text.split("/")
        if ".." in parts or "." in parts or posixpath.normpath(text) != text or text == "/":
            raise OpPrereqError(
                f"Export path {src_path!r} is not a plain absolute path (no '.', '..' or '//')",
                ECODE_INVAL,
            )
        return text
    if not constants.NAME_RE.match(text):
        raise OpPrereqError(
            f"Export {src_path!r} is neither an export name in the export dir"
            f" ({export_dir}) nor an absolute path on the source node",
            ECODE_INVAL,
        )
    return f"{export_dir.rstrip('/')}/{text}"


def dump_kind(head_hex: str) -> str | None:
    """What a file starting with ``head_hex`` is, when it is known not to be a raw image."""
    for offset, magic, what in (*_NOT_RAW_MAGIC, _TAR_MAGIC):
        if head_hex[2 * offset : 2 * offset + len(magic)] == magic:
            return what
    return None


@dataclass
class DumpCheck:
    """What ``check_dumps`` found: the dumps' paths and what to tell the operator."""

    paths: list[str]
    warnings: list[str] = field(default_factory=list)


def check_dumps(desc: ExportDescription, data: ExportData, manifest: Manifest | None) -> DumpCheck:
    """Check every disk dump of the export (see the module docstring); ECODE_INVAL if bad."""
    where = f"{data.path} on {data.node}"
    compression = desc.compression or constants.IEC_NONE
    if compression != constants.IEC_NONE:
        raise OpPrereqError(
            f"The export in {where} is compressed ({compression}); only uncompressed"
            " exports are imported",
            ECODE_INVAL,
        )
    if manifest is not None and len(manifest.disks) != len(desc.disks):
        raise OpPrereqError(
            f"Export manifest and config.ini disagree on disks in {where}", ECODE_INVAL
        )
    files = desc.disk_files if manifest is None else [d.file for d in manifest.disks]
    paths = []
    warnings = []
    for idx, (disk, fname) in enumerate(zip(desc.disks, files, strict=True)):
        if manifest is not None and fname != desc.disk_files[idx]:
            raise OpPrereqError(
                f"disk/{idx}: the manifest names {fname!r}, config.ini {desc.disk_files[idx]!r}"
                f" ({where})",
                ECODE_INVAL,
            )
        if not fname or "/" in fname or fname in (".", ".."):
            raise OpPrereqError(
                f"disk/{idx}: dump file name {fname!r} is not a file of the export dir ({where})",
                ECODE_INVAL,
            )
        found = data.files.get(fname)
        if found is None:
            raise OpPrereqError(
                f"disk/{idx}: dump {fname} is missing or not a regular file in {where}",
                ECODE_INVAL,
            )
        expected = disk.size * MiB
        if manifest is None and _not_raw(desc.os, found.size, expected, found.head):
            what = dump_kind(found.head) or f"{found.size} bytes for a disk of {disk.size} MiB"
            raise OpPrereqError(
                f"disk/{idx}: dump {fname} in {where} is not a raw disk image ({what}):"
                f" it is what the export script of OS '{desc.os}' wrote. Only raw dumps"
                " are imported: export the instance with an OS that copies its disks"
                f" as they are (Ganeti's '{GANETI_RAW_OS}')",
                ECODE_INVAL,
            )
        if manifest is not None and manifest.disks[idx].size != expected:
            raise OpPrereqError(
                f"disk/{idx}: config.ini gives {disk.size} MiB, the manifest"
                f" {manifest.disks[idx].size} bytes ({where})",
                ECODE_INVAL,
            )
        if found.size != expected:
            raise OpPrereqError(
                f"disk/{idx}: dump {fname} in {where} has {found.size} bytes, config.ini"
                f" gives disk{idx}_size={disk.size} MiB ({expected} bytes): the dump is"
                " truncated or corrupted, or config.ini was changed",
                ECODE_INVAL,
            )
        if manifest is None and desc.os not in RAW_OSES:
            warnings.append(
                f"disk/{idx}: OS '{desc.os}' wrote dump {fname}; taken as a raw disk image"
                " (it has the disk's size)"
            )
        paths.append(f"{data.path}/{fname}")
    return DumpCheck(paths, warnings)


def _not_raw(os_name: str, size: int, expected: int, head: str) -> bool:
    """Whether a dump is not a raw image of the disk.

    A raw-copying OS's dump of the disk's size is the disk, whatever it
    starts with; of another size it is not raw if it is a known stream (else
    it is a truncated raw image). Another OS's dump is not raw when its size
    differs or it is a known stream.
    """
    if os_name in RAW_OSES:
        return size != expected and dump_kind(head) is not None
    return size != expected or dump_kind(head) is not None


def _value(value: Any) -> Any:
    return "" if value in (None, "None") else value


@dataclass
class Translated:
    """Parameters kept from an export, and the names dropped as meaningless here."""

    params: dict[str, Any]
    dropped: list[str]


def translate_hvparams(hvparams: dict[str, Any]) -> Translated:
    """An export's hypervisor parameters as they mean here.

    Kept: those of ``constants.HVC_DEFAULTS`` except the migration settings
    (the cluster decides them); Ganeti's ``cpu_type`` ``host`` is libvirt's
    ``host-passthrough``. When the kernel is booted directly, the
    command line Ganeti's KVM builds is rebuilt: ``root=<root_path>`` in
    front of ``kernel_args`` and ``console=ttyS0,<serial_speed>`` when the
    serial console is on. Everything else is dropped (and named).
    """
    kept = {
        k: _value(v)
        for k, v in hvparams.items()
        if k in constants.HVC_DEFAULTS and k not in HV_CLUSTER_DECIDES
    }
    dropped = sorted(k for k in hvparams if k not in kept)
    if kept.get("cpu_type") == GANETI_HOST_CPU:
        kept["cpu_type"] = "host-passthrough"  # qemu's -cpu host, in libvirt's words
    if kept.get("kernel_path") and "root_path" in hvparams:
        args = str(kept.get("kernel_args") or "").split()
        root = str(_value(hvparams.get("root_path")))
        if root and not any(a.startswith("root=") for a in args):
            args.insert(0, f"root={root}")
        serial = str(hvparams.get("serial_console", "")).lower() == "true"
        if serial and not any(a.startswith("console=") for a in args):
            speed = _value(hvparams.get("serial_speed")) or "38400"
            args.append(f"console=ttyS0,{speed}")
        kept["kernel_args"] = " ".join(args)
    return Translated(kept, dropped)


# Ganeti's KVM parameters that change the hardware its guest sees, with the
# value that gives the guest what a domain here has (virtio disks and NICs,
# its clock in UTC)
GUEST_HARDWARE: dict[str, tuple[str, str]] = {
    "disk_type": ("paravirtual", "virtio disks"),
    "nic_type": ("paravirtual", "virtio NICs"),
    "use_localtime": ("false", "its clock in UTC"),
}


def hardware_differences(hvparams: dict[str, Any]) -> list[str]:
    """The export's parameters whose guest had other hardware than it gets here,
    as "disk_type=ide (virtio disks here)"; a guest may not boot or find its
    devices then (an fstab naming /dev/sda, no virtio driver, a local clock)."""
    found = []
    for key, (same, here) in GUEST_HARDWARE.items():
        value = str(_value(hvparams.get(key)) or "")
        if value and value.lower() != same:
            found.append(f"{key}={value} ({here} here)")
    return found


def translate_beparams(beparams: dict[str, Any]) -> Translated:
    """An export's backend parameters: those known here; the rest dropped (named).

    An older export's ``memory`` is both sizes, where they are not given
    themselves (as Ganeti reads it).
    """
    kept = {k: v for k, v in beparams.items() if k in constants.BEC_DEFAULTS}
    if beparams.get("memory") not in (None, "", "None"):
        for size in ("maxmem", "minmem"):
            kept.setdefault(size, beparams["memory"])
    dropped = sorted(k for k in beparams if k not in kept and k != "memory")
    return Translated(kept, dropped)


def check_hypervisor(desc: ExportDescription) -> None:
    """Refuse (ECODE_STATE) an export of an instance of another hypervisor than kvm.

    Its hypervisor parameters mean nothing here and its disks may not boot
    under kvm; Ganeti refuses a hypervisor that its cluster does not enable.
    """
    if desc.hypervisor != constants.HYPERVISOR_KVM:
        raise OpPrereqError(
            f"The export is of a {desc.hypervisor} instance; this cluster runs kvm only",
            ECODE_STATE,
        )


def dump_basename(path: str) -> str:
    """The export's directory name (what ``backup list`` shows) of an export path."""
    return os.path.basename(path.rstrip("/"))
