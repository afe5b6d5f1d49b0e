"""Plain value types of the export, import and disk-chain node operations."""

from __future__ import annotations

from dataclasses import dataclass, field

# Overlay files of an export's disk snapshot sit beside the base image:
# ``<disk dir>/disk0.img`` -> ``<disk dir>/disk0.img.export-snap.qcow2``.
OVERLAY_SUFFIX = ".export-snap.qcow2"


def overlay_path(base: str) -> str:
    """The snapshot overlay of base image ``base``."""
    return base + OVERLAY_SUFFIX


@dataclass
class SnapshotDisk:
    """One disk of a live snapshot: the frozen ``base`` and the ``overlay`` taking writes."""

    index: int
    target: str
    base: str
    overlay: str


@dataclass
class SnapshotInfo:
    """A point-in-time disk snapshot of a running domain (external, disk-only)."""

    instance: str
    node: str
    disks: list[SnapshotDisk] = field(default_factory=list)
    frozen: bool = False

    def base_paths(self) -> list[str]:
        """The frozen images to copy, by disk index."""
        return [d.base for d in sorted(self.disks, key=lambda d: d.index)]


@dataclass
class ExportEntry:
    """One export directory on a node (complete, or a stale ``.new``/``.old``)."""

    instance: str
    node: str
    path: str
    complete: bool
    timestamp: int = 0
    stale: bool = False
    # "ganeti_lv" (a manifest.json beside config.ini) or "ganeti" (config.ini
    # and dumps only, as Ganeti writes them: no checksums to verify against)
    kind: str = "ganeti_lv"


@dataclass
class PublishedExport:
    """An export renamed into place: complete and visible from then on.

    ``left``: what its publishing could not do after the rename (sync the
    export dir, remove the previous export renamed aside), one line each;
    the export is complete all the same.
    """

    path: str
    left: list[str] = field(default_factory=list)


@dataclass
class ExportFile:
    """A regular file of an export directory: its size and first bytes (hex)."""

    name: str
    size: int
    head: str = ""


@dataclass
class ExportData:
    """What an import reads from an export directory.

    ``manifest_text`` is None for an export without manifest.json (one
    Ganeti wrote; an empty manifest.json is ""); ``files`` are the
    directory's regular files (symbolic links and subdirectories are not
    listed), by name.
    """

    node: str
    path: str
    config_text: str
    manifest_text: str | None
    files: dict[str, ExportFile] = field(default_factory=dict)


@dataclass
class ZeroingResult:
    """Outcome of zeroing the free space of one disk image."""

    path: str
    zeroed: bool
    detail: str = ""
