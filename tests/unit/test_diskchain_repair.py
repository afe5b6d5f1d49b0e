"""diskchain.repair: leftover export overlays merged (offline) or dropped (live)."""

from __future__ import annotations

from typing import Any

from ganeti_lv.hypervisor.libvirt import diskchain
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
