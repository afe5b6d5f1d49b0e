"""diskchain.repair: leftover export overlays merged (offline) or dropped (live)."""

from __future__ import annotations

from typing import Any

from ganeti_lv import diskchain
from ganeti_lv.hypervisor.base import CommandResult

DIR = "/srv/ganeti-lv/file-storage/web1"
OVERLAY = f"{DIR}/disk0.img.export-snap.qcow2"


class Runner:
    """Records commands; answers the overlay listing with ``listing``."""

    def __init__(self, listing: list[str]) -> None:
        self.listing = listing
        self.commands: list[list[str]] = []

    def run(self, argv: list[str], **_kw: Any) -> CommandResult:
        self.commands.append(list(argv))
        out = "\n".join(self.listing) + "\n" if "for f in" in argv[-1] else ""
        return CommandResult(exit_status=0, stdout=out, stderr="")


def test_offline_overlays_are_listed_then_committed() -> None:
    runner = Runner([OVERLAY])
    assert diskchain.repair(None, runner, "node1", DIR) == [OVERLAY]
    assert "for f in" in runner.commands[0][-1]
    assert "qemu-img commit" in runner.commands[1][-1]


def test_a_listing_just_made_is_not_made_again() -> None:
    runner = Runner([OVERLAY])
    assert diskchain.repair(None, runner, "node1", DIR, overlays=[OVERLAY]) == [OVERLAY]
    assert len(runner.commands) == 1
    assert "qemu-img commit" in runner.commands[0][-1]
    # nothing listed: nothing to run on the node at all
    runner = Runner([OVERLAY])
    assert diskchain.repair(None, runner, "node1", DIR, overlays=[]) == []
    assert runner.commands == []
