"""diskchain.repair: leftover export overlays in effect merged, stale ones deleted."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from ganeti_lv.errors import ECODE_STATE, NodeError
from ganeti_lv.hypervisor.export_types import SnapshotDisk, SnapshotInfo
from ganeti_lv.hypervisor.libvirt import diskchain
from ganeti_lv.hypervisor.libvirt.domxml import DiskState
from ganeti_lv.node.transport import CommandResult

DIR = "/srv/ganeti-lv/file-storage/web1"
OVERLAY_NAME = "disk0.img.export-snap.qcow2"
OVERLAY = f"{DIR}/{OVERLAY_NAME}"


class Runner:
    """Records commands and directory listings; a directory holds ``names``."""

    def __init__(self, names: list[str]) -> None:
        self.names = names
        self.commands: list[list[str]] = []
        self.listed: list[str] = []

    def run(self, argv: list[str], **_kw: Any) -> CommandResult:
        self.commands.append(list(argv))
        return CommandResult(exit_status=0, stdout="", stderr="")

    def listdir(self, path: str, missing_ok: bool = False) -> list[str]:
        self.listed.append(path)
        return list(self.names)


def test_offline_overlays_are_listed_then_committed() -> None:
    runner = Runner(["disk0.img", OVERLAY_NAME, "disk1.img"])
    assert diskchain.repair(None, runner, "node1", DIR) == [OVERLAY]
    assert runner.listed == [DIR]
    assert len(runner.commands) == 1
    assert "qemu-img commit" in runner.commands[0][-1]


def test_overlay_listing_keeps_overlays_only_sorted() -> None:
    names = ["disk1.img.export-snap.qcow2", "disk0.img", ".x.export-snap.qcow2", "notes"]
    names.append("disk0.img.export-snap.qcow2")
    assert diskchain.find_overlay_files(Runner(names), "node1", DIR) == [
        f"{DIR}/disk0.img.export-snap.qcow2",
        f"{DIR}/disk1.img.export-snap.qcow2",
    ]
    assert diskchain.find_overlay_files(Runner([]), "node1", DIR) == []


def test_a_listing_just_made_is_not_made_again() -> None:
    runner = Runner([OVERLAY_NAME])
    assert diskchain.repair(None, runner, "node1", DIR, overlays=[OVERLAY]) == [OVERLAY]
    assert runner.listed == []
    assert len(runner.commands) == 1
    assert "qemu-img commit" in runner.commands[0][-1]
    # nothing listed: nothing to run on the node at all
    runner = Runner([OVERLAY_NAME])
    assert diskchain.repair(None, runner, "node1", DIR, overlays=[]) == []
    assert runner.commands == []


class StoppedGuest:
    """A defined, stopped domain: ``disks()`` is its persistent definition."""

    name = "web1"

    def __init__(self, disks: list[DiskState]) -> None:
        self._disks = disks

    def is_active(self) -> bool:
        return False

    def disks(self) -> list[DiskState]:
        return self._disks


class LocalRunner(Runner):
    """Runs the node's commands here (the files are in a temporary directory)."""

    def run(self, argv: list[str], **_kw: Any) -> CommandResult:
        self.commands.append(list(argv))
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
        return CommandResult(exit_status=proc.returncode, stdout=proc.stdout, stderr=proc.stderr)


def _image_with_overlay(tmp_path: Path) -> tuple[Path, Path]:
    base, overlay = tmp_path / "disk0.img", tmp_path / OVERLAY_NAME
    base.write_bytes(b"\0" * (1 << 20))
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "raw", str(overlay)],
        check=True,
    )
    write = ["qemu-io", "-f", "qcow2", "-c", "write -P 0x42 0 4k", str(overlay)]
    subprocess.run(write, check=True, capture_output=True)
    return base, overlay


def _age(path: Path, seconds: float = 60) -> None:
    os.utime(path, (time.time() - seconds, time.time() - seconds))


# (what the stopped domain's definition names: nothing (not defined), the image
#  or the overlay (with or without its chain), which file was written last, merged?)
STOPPED_CASES = [
    ("image", "image", False),  # merged and pivoted, then written by the guest: stale
    ("overlay", "image", True),  # in effect, a merge into the image cut short
    ("overlay without chain", "image", True),
    (None, "overlay", True),  # shared disks checked from another node
    ("image", "overlay", True),  # newer than the image the definition names
]


@pytest.mark.parametrize("named, newest, merged", STOPPED_CASES)
def test_which_overlays_of_a_stopped_domain_are_merged(
    tmp_path: Path, named: str | None, newest: str, merged: bool
) -> None:
    """Merging a stale overlay would put old data over what the guest wrote since."""
    base, overlay = _image_with_overlay(tmp_path)
    _age(overlay if newest == "image" else base)
    disks = {
        "image": [DiskState("vda", str(base))],
        "overlay": [DiskState("vda", str(overlay), [str(base)])],
        "overlay without chain": [DiskState("vda", str(overlay))],
    }
    guest = StoppedGuest(disks[named]) if named else None
    runner = LocalRunner([OVERLAY_NAME])
    result = diskchain.repair(guest, runner, "node1", str(tmp_path))  # type: ignore[arg-type]
    assert result == ([str(overlay)] if merged else [])
    assert not overlay.exists()
    assert base.read_bytes()[:4096] == (b"\x42" if merged else b"\0") * 4096


def test_without_a_definition_an_overlay_older_than_its_image_is_left_to_the_operator(
    tmp_path: Path,
) -> None:
    """Stale, or in effect with a merge cut short (the image written last): nobody can tell."""
    base, overlay = _image_with_overlay(tmp_path)
    _age(overlay)
    before = base.read_bytes()
    with pytest.raises(NodeError, match="older than its image"):
        diskchain.repair(None, LocalRunner([OVERLAY_NAME]), "node1", str(tmp_path))
    assert overlay.exists() and base.read_bytes() == before


def test_a_refusal_names_the_overlays_merged_before_it(tmp_path: Path) -> None:
    first, second = tmp_path / "disk0.img", tmp_path / "disk1.img"
    for image in (first, second):
        image.write_bytes(b"\0" * (1 << 20))
        subprocess.run(
            ["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(image), "-F", "raw",
             f"{image}{diskchain.OVERLAY_SUFFIX}"],
            check=True,
        )  # fmt: skip
    _age(first)  # disk0's overlay is newer: merged; disk1's is older: refused
    _age(Path(f"{second}{diskchain.OVERLAY_SUFFIX}"))
    names = [f"disk0.img{diskchain.OVERLAY_SUFFIX}", f"disk1.img{diskchain.OVERLAY_SUFFIX}"]
    with pytest.raises(NodeError, match=r"merged before it: .*disk0\.img\.export-snap"):
        diskchain.repair(None, LocalRunner(names), "node1", str(tmp_path))


class RunningGuest(StoppedGuest):
    """A running domain: ``disks()`` is its live definition."""

    def is_active(self) -> bool:
        return True


def test_an_overlay_below_another_image_of_a_running_guest_is_left_alone() -> None:
    """A snapshot taken over a leftover export overlay: the guest reads the overlay, so it
    is neither merged nor deleted (deleting it lost what the guest wrote since)."""
    snap = f"{DIR}/disk0.snap1.qcow2"
    guest = RunningGuest([DiskState("vda", snap, [OVERLAY, f"{DIR}/disk0.img"])])
    runner = Runner([OVERLAY_NAME])
    with pytest.raises(NodeError, match="below another image") as err:
        diskchain.repair(guest, runner, "node1", DIR)  # type: ignore[arg-type]
    assert err.value.ecode == ECODE_STATE
    assert runner.commands == []  # nothing removed, nothing merged
    # after the merge of the snapshot's chain, the same overlay is stale: deleted
    guest = RunningGuest([DiskState("vda", f"{DIR}/disk0.img")])
    assert diskchain.repair(guest, runner, "node1", DIR) == []  # type: ignore[arg-type]
    assert runner.commands == [["rm", "-f", "--", OVERLAY]]


def test_a_snapshot_merged_back_under_another_image_is_left_alone() -> None:
    """The export's own merge finds its overlay below a snapshot taken meanwhile."""
    snap = SnapshotInfo("web1", "node1")
    snap.disks.append(SnapshotDisk(0, "vda", f"{DIR}/disk0.img", OVERLAY))
    guest = RunningGuest([DiskState("vda", f"{DIR}/disk0.snap1.qcow2", [OVERLAY])])
    runner = Runner([])
    with pytest.raises(NodeError, match="below another image"):
        diskchain.commit(guest, runner, "node1", snap)  # type: ignore[arg-type]
    assert runner.commands == []
