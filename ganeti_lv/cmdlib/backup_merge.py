"""Merging a live export's snapshot back into the instance's disks (``backup_export``).

The export copies the frozen images while the guest writes to the
overlays; once the copies are in place the overlays are merged back, in the
background while the target publishes the export, or right away when the
copy failed.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from ganeti_lv.hypervisor.base import NodeOps
from ganeti_lv.hypervisor.export_types import SnapshotInfo
from ganeti_lv.node.transport import NodeResult, node_call
from ganeti_lv.objects import Instance, Node


class SnapshotMerge:
    """The merge of ``snapshot`` on the primary ``pnode``; nothing to do without one.

    ``start`` begins the merge in a thread (the caller goes on with other
    nodes); ``finish`` waits for it, or merges right away if it was never
    started (the copy failed), and raises OpExecError if the merge failed.
    """

    def __init__(
        self, rpc: NodeOps, pnode: Node, instance: Instance, snapshot: SnapshotInfo | None
    ) -> None:
        self.rpc, self.pnode, self.instance, self.snapshot = rpc, pnode, instance, snapshot
        self._pool: ThreadPoolExecutor | None = None
        self._future: Future[NodeResult[Any]] | None = None

    @property
    def running(self) -> bool:
        """True once started in the background."""
        return self._future is not None

    def _merge(self) -> NodeResult[Any]:
        assert self.snapshot is not None
        return node_call(self.rpc.commit_snapshot, self.pnode, self.instance, self.snapshot)

    def start(self) -> None:
        """Begin the merge in a thread."""
        if self.snapshot is None or self._future is not None:
            return
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="export-merge")
        self._future = self._pool.submit(self._merge)

    def finish(self) -> None:
        """Wait for the merge (or merge now); OpExecError if it failed."""
        if self.snapshot is None:
            return
        if self._future is not None and self._pool is not None:
            res = self._future.result()
            self._pool.shutdown()
        else:
            res = self._merge()
        res.Raise(
            f"Could not merge the snapshot of {self.instance.name} back"
            " (the next operation on the instance retries)"
        )
