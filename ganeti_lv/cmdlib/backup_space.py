"""An export's room on its nodes: the snapshot overlays on the primary, the copies on the target.

Both are checked and reserved under the node's reservation lock
(``space_reservation``), so what other jobs still have to write there is
not taken for free space: the overlays on the primary (a live export's
guest writes into them while its disks are copied, and pauses when their
filesystem is full) and the copies on the target, the two nodes asked at
once. Each is
held until the job ends (the copies' until they are published). When the
target is the primary, the copies' check counts the overlays' reservation
as any other, so both must fit together. The overlays cannot be measured
as they grow (they sit beside the instance's images): their reservation
counts whole.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from ganeti_lv import constants, exportinfo
from ganeti_lv.cmdlib.common import concurrently
from ganeti_lv.cmdlib.space_reservation import reserve_space
from ganeti_lv.errors import ECODE_STATE, OpPrereqError
from ganeti_lv.hypervisor.base import NodeOps
from ganeti_lv.node.transport import node_call
from ganeti_lv.objects import Cluster, Instance, Node, disk_dir, disk_paths
from ganeti_lv.reservations import Held
from ganeti_lv.units import MIB

# Room the snapshot overlays need on the primary, as a share of the disks.
OVERLAY_SPACE_SHARE = 0.05
OVERLAY_SPACE_MIN = 64 * MIB


def new_dir(cluster: Cluster, instance: Instance) -> str:
    """Where the export is written before it is published."""
    return f"{cluster.export_dir}/{instance.name}{exportinfo.NEW_SUFFIX}"


@dataclass
class ExportSpace:
    """The room one export needs; ``reserve`` checks it and holds it.

    ``remove_instance``: the export removes the instance after it (no snapshot to
    keep it running meanwhile).
    """

    rpc: NodeOps
    data_dir: str
    cluster: Cluster
    instance: Instance
    pnode: Node
    dst_node: Node
    remove_instance: bool
    # the primary's answer about the disks, read once per ``reserve``
    _usage: list[dict[str, Any]] | None = field(default=None, init=False)
    _usage_lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    @property
    def overlays(self) -> bool:
        """Whether the export snapshots the instance (one marked up, kept after)."""
        return not self.remove_instance and self.instance.admin_state == constants.ADMINST_UP

    def reserve(self) -> list[Held]:
        """The overlays' reservation (when taken), then the copies'; OpPrereqError
        (ECODE_STATE, ECODE_NORES: ``NotEnoughSpace``) when a check fails, the
        primary's judged first. The two nodes are asked at once."""
        self._usage = None
        steps = [self._reserve_copies]
        if self.overlays:
            steps.insert(0, self._reserve_overlays)
        outcomes = concurrently([partial(_outcome, step) for step in steps])
        held = [one for one, _err in outcomes if one is not None]
        failures = [err for _one, err in outcomes if err is not None]
        if failures:
            for one in held:
                one.release()
            raise failures[0]
        return held

    def _reserve_overlays(self) -> Held:
        pdir = disk_dir(self.cluster, self.instance)
        return reserve_space(
            self.rpc,
            self.data_dir,
            self.pnode,
            pdir,
            self._overlay_need,
            self.instance.name,
            f"{pdir} of {self.pnode.name} for the snapshot overlays",
            measured=False,
        )

    def _reserve_copies(self) -> Held:
        return reserve_space(
            self.rpc,
            self.data_dir,
            self.dst_node,
            new_dir(self.cluster, self.instance),
            self._copy_need,
            self.instance.name,
            f"the export dir {self.cluster.export_dir} of {self.dst_node.name}",
        )

    def _disk_usage(self) -> list[dict[str, Any]]:
        """The disks on the primary (ECODE_STATE when one is missing), asked once."""
        with self._usage_lock:  # both reservations want it
            return self._read_disk_usage()

    def _read_disk_usage(self) -> list[dict[str, Any]]:
        if self._usage is None:
            res = node_call(
                self.rpc.disk_usage, self.pnode, disk_paths(self.cluster, self.instance)
            )
            usage = res.Raise(
                f"Cannot read the disks of {self.instance.name} on {self.pnode.name}", prereq=True
            )
            missing = [u["path"] for u in usage if not u["exists"]]
            if missing:
                raise OpPrereqError(
                    f"Disk image(s) {', '.join(missing)} missing on {self.pnode.name}",
                    ECODE_STATE,
                )
            self._usage = usage
        return self._usage

    def _overlay_need(self) -> int:
        """Bytes the overlays may take: a share of the disks, at least a minimum."""
        total = sum(int(u["size"]) for u in self._disk_usage())
        return max(OVERLAY_SPACE_MIN, int(total * OVERLAY_SPACE_SHARE))

    def _copy_need(self) -> int:
        """The target's export directory is free for this export; the bytes the copies
        need there (the disks' allocated data)."""
        export = f"{self.cluster.export_dir}/{self.instance.name}"
        calls: list[Callable[[], Any]] = [
            self._disk_usage,
            lambda: node_call(
                self.rpc.paths_exist, self.dst_node, exportinfo.publish_blockers(export)
            ),
        ]
        usage, found_res = concurrently(calls)
        found = found_res.Raise(
            f"Cannot look at the export directory on {self.dst_node.name}", prereq=True
        )
        blocked = exportinfo.blocking_dir(export, found)
        if blocked is not None:
            # the target would refuse it after the instance was stopped or snapshotted
            raise OpPrereqError(
                f"{blocked} on {self.dst_node.name} holds no export (no"
                f" {exportinfo.CONFIG_FILE}): move or remove it by hand; nothing was changed",
                ECODE_STATE,
            )
        return sum(int(u["allocated"]) for u in usage)


def _outcome(step: Callable[[], Held]) -> tuple[Held | None, Exception | None]:
    """``step()``'s reservation, or its error: the other step's reservation must be
    let go of when this one fails."""
    try:
        return step(), None
    except Exception as err:  # noqa: BLE001 - raised by ``reserve`` once both ended
        return None, err
