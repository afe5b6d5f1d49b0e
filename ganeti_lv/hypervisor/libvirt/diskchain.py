"""Disk chains of export snapshots: create, merge back, and repair leftovers.

Shared by the export and the migration. A live export puts a qcow2 overlay
(``<image>.export-snap.qcow2``, in the instance's disk directory on the
primary) on top of each disk image while the frozen image is copied; then
the overlay is merged back and deleted, also when the copy failed. If the
exporting process died in between, the overlay is still there:

- domain running: its live XML shows the overlay as the active image with
  the instance's image below it -> active commit + pivot, delete overlay;
- domain stopped, its definition names the overlay (libvirt puts the
  overlay into the persistent definition with the snapshot and takes it out
  at the pivot) -> ``qemu-img commit`` into the image, delete overlay;
- domain stopped, its definition names only the image: the overlay is stale
  (merged and pivoted, its removal failed) when it is older than the image,
  and deleted unmerged, since merging it would put older data over what the
  guest wrote since; a newer one is merged;
- domain not defined on the node (e.g. shared disks checked from another
  node): an overlay newer than its image is merged. An older one is
  refused: it may be stale, or in effect with a merge into the image cut
  short, and only the operator can tell (the refusal names the overlays
  merged before it).

``repair`` does all of this and is called before any operation touches the
disks.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable, Sequence

from ganeti_lv.errors import ECODE_STATE, HypervisorError, NodeError
from ganeti_lv.hypervisor.export_types import (
    OVERLAY_SUFFIX,
    SnapshotDisk,
    SnapshotInfo,
    overlay_path,
)
from ganeti_lv.hypervisor.libvirt import snapshot as vsnap
from ganeti_lv.hypervisor.libvirt.guest import Guest
from ganeti_lv.node.transport import NodeTransport, Runner


def _buried(overlays: Sequence[str], node: str) -> str:
    """Why export overlays below another image of a running guest's disk chain stay."""
    return (
        f"Export overlay(s) {', '.join(overlays)} on {node} are below another image in the"
        " running guest's disk chain (a snapshot taken over them): neither merged nor"
        " deleted; merge the chain by hand (virsh blockcommit --active --pivot)"
    )


def _remove_files(runner: Runner, node: str, paths: Sequence[str]) -> None:
    if not paths:
        return
    res = runner.run(["rm", "-f", "--", *paths], check=False, timeout=60)
    if res.exit_status != 0:
        raise NodeError(f"Cannot remove {', '.join(paths)} on {node}: {res.output.strip()}", node)


def create(guest: Guest, runner: Runner, node: str, freeze: bool = True) -> SnapshotInfo:
    """Snapshot every disk of the (running or paused) domain into overlays."""
    disks = guest.disks()
    if any(d.chain for d in disks):
        raise HypervisorError(
            f"Disks of {guest.name} already have overlays; repair the disk chain first", node=node
        )
    info = SnapshotInfo(guest.name, node)
    for idx, disk in enumerate(disks):
        info.disks.append(SnapshotDisk(idx, disk.target, disk.source, overlay_path(disk.source)))
    # overlay files of a snapshot that never took effect (not in the chain): stale
    _remove_files(runner, node, [d.overlay for d in info.disks])
    info.frozen = vsnap.create_snapshot(guest, [(d.target, d.overlay) for d in info.disks], freeze)
    return info


def commit(
    guest: Guest,
    runner: Runner,
    node: str,
    snap: SnapshotInfo,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Merge the snapshot's overlays back into the images, then delete them."""
    current = {d.target: d for d in guest.disks()} if guest.is_active() else {}
    errors = []
    for disk in snap.disks:
        state = current.get(disk.target)
        if state is not None and state.source == disk.overlay:
            try:
                vsnap.active_commit(guest, disk.target, clock=clock, sleep=sleep)
            except NodeError as err:
                errors.append(str(err))
                continue
        elif state is None:
            # the domain stopped meanwhile: merge the file offline
            _offline_commit(runner, node, disk.overlay)
            continue
        elif disk.overlay in state.chain:
            errors.append(_buried([disk.overlay], node))
            continue
        _remove_files(runner, node, [disk.overlay])
    if errors:
        raise HypervisorError("; ".join(errors), node=node)


# what _offline_commit does with an overlay older than its image
IF_OLDER_MERGE, IF_OLDER_DELETE, IF_OLDER_REFUSE = "merge", "delete", "refuse"


def _offline_commit(
    runner: Runner, node: str, overlay: str, if_older: str = IF_OLDER_MERGE
) -> bool:
    """qemu-img commit an overlay file into its backing file and delete it.

    ``if_older``: what is done with an overlay older than its image (merged,
    deleted, or refused with a NodeError). False when nothing was merged.
    """
    q = shlex.quote(overlay)
    base = shlex.quote(overlay.removesuffix(OVERLAY_SUFFIX))
    script = f"[ -e {q} ] || exit 3\n"
    if if_older == IF_OLDER_DELETE:
        script += f"if ! [ {q} -nt {base} ]; then rm -f -- {q}; exit 3; fi\n"
    elif if_older == IF_OLDER_REFUSE:
        script += f"[ {q} -nt {base} ] || exit 4\n"
    script += f"qemu-img commit -q {q} && rm -f -- {q}\n"
    res = runner.run(["sh", "-c", script], check=False, timeout=3600)
    if res.exit_status == 3:
        return False
    if res.exit_status == 4:
        raise NodeError(
            f"{overlay} on {node} is older than its image: it may be left over from a merge"
            " that was done, or still hold data of a merge cut short. Look at it, then merge"
            " it (qemu-img commit) or delete it",
            node,
        )
    if res.exit_status != 0:
        raise NodeError(f"Cannot merge {overlay} on {node}: {res.output.strip()}", node)
    return True


def find_overlay_files(runner: NodeTransport, node: str, directory: str) -> list[str]:
    """Overlay files left in an instance's disk directory (none if it is missing), sorted."""
    names = runner.listdir(directory, missing_ok=True)
    return sorted(
        f"{directory}/{name}"
        for name in names
        if name.endswith(OVERLAY_SUFFIX) and not name.startswith(".")
    )


def repair(
    guest: Guest | None,
    runner: NodeTransport,
    node: str,
    directory: str,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    overlays: Sequence[str] | None = None,
) -> list[str]:
    """Merge every leftover export overlay still in effect, delete the stale ones.

    Returns the overlays merged (see the module docstring for which are).
    ``overlays``: the overlay files of ``directory`` when the caller has just
    listed them (``find_overlay_files``, under the instance lock); they are
    then not listed again.
    """
    found = list(overlays) if overlays is not None else None

    def leftover() -> list[str]:
        return found if found is not None else find_overlay_files(runner, node, directory)

    merged: list[str] = []
    if guest is not None and guest.is_active():
        disks = guest.disks()
        for disk in disks:
            if disk.chain and disk.source.endswith(OVERLAY_SUFFIX):
                vsnap.active_commit(guest, disk.target, clock=clock, sleep=sleep)
                _remove_files(runner, node, [disk.source])
                merged.append(disk.source)
        # files not in the live chain are stale; one below another image is not ours to touch
        in_chain = {path for d in disks for path in (d.source, *d.chain)} - set(merged)
        stale = [f for f in leftover() if f not in merged]
        buried = [f for f in stale if f in in_chain]
        if buried:
            raise HypervisorError(_buried(buried, node), node=node, ecode=ECODE_STATE)
        _remove_files(runner, node, stale)
        return merged
    named = {d.source for d in guest.disks()} if guest is not None else set()
    for overlay in leftover():
        if overlay in named:
            if_older = IF_OLDER_MERGE
        else:
            if_older = IF_OLDER_DELETE if guest is not None else IF_OLDER_REFUSE
        try:
            if _offline_commit(runner, node, overlay, if_older):
                merged.append(overlay)
        except NodeError as err:
            if merged:  # the same error (an unreachable node stays one), saying what was done
                err.msg += f" (merged before it: {', '.join(merged)})"
                err.args = (err.msg,)
            raise
    return merged
