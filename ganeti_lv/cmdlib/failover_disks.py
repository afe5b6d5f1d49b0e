"""The disk move of a ``file`` instance's failover, and its undo.

The instance is shut down on the source; its disks are copied node to node.
A failure or the job's cancel request (which stops the running copy on both
nodes) undoes the move: the copies on the target are removed and an instance
marked up is started again on the source, whose disks were only read. The
configuration still names the source: the failover switches the primary only
after the copy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ganeti_lv import constants
from ganeti_lv.cmdlib.base import LogicalUnit
from ganeti_lv.cmdlib.common import cancel_reason, copy_canceled
from ganeti_lv.errors import OperationCanceled, OpExecError
from ganeti_lv.node import progress
from ganeti_lv.node.transport import node_call
from ganeti_lv.objects import Cluster, Instance, Node, disk_path

FeedbackFn = Callable[[str], None]


@dataclass
class FailoverDiskMove:
    """Copy the disks of ``inst`` (shut down) from ``src`` to ``dst`` for ``lu``'s failover."""

    lu: LogicalUnit
    cluster: Cluster
    inst: Instance
    src: Node
    dst: Node
    feedback_fn: FeedbackFn

    def run(self) -> None:
        """Copy every disk; undo and raise on a failure or a cancel request."""
        inst, src, dst, feedback_fn = self.inst, self.src, self.dst, self.feedback_fn
        cancel = self.lu.proc.cancel
        for idx in range(len(inst.disks)):
            self._stop_if_canceled(f"before copying disk/{idx}")
            path = disk_path(self.cluster, inst, idx)
            feedback_fn(f"Copying disk/{idx} from {src.name} to {dst.name}")
            res = node_call(
                self.lu.rpc.copy_disk,
                src,
                path,
                dst,
                path,
                progress_fn=progress.ProgressReporter(feedback_fn, f"disk/{idx}"),
                cancel=cancel,
            )
            if copy_canceled(res, cancel):
                feedback_fn(f"Copy of disk/{idx} stopped on {src.name} and {dst.name}")
                self._stop_if_canceled(f"while copying disk/{idx}")
            if not res.ok:
                undone = self._undo()
                raise OpExecError(
                    f"Could not copy disk {idx} of {inst.name} to {dst.name}: {res.fail_msg};"
                    f" the configuration names {src.name}, whose disks were not changed;"
                    f" {undone}",
                    node=res.error.node if res.error is not None else None,
                )
            feedback_fn(f"Disk {idx} copied to {dst.name}")
        self._stop_if_canceled("after copying its disks")

    def _stop_if_canceled(self, when: str) -> None:
        """Once the job was asked to stop: undo the copy and raise OperationCanceled."""
        cancel = self.lu.proc.cancel
        if not cancel.is_set():
            return
        undone = self._undo()
        raise OperationCanceled(
            f"Failover of {self.inst.name} to {self.dst.name} canceled"
            f" ({cancel_reason(cancel)}) {when}; {undone}; the configuration names"
            f" {self.src.name}, whose disks were not changed"
        )

    def _undo(self) -> str:
        """Remove the copies on the target, start the instance on the source if it is up.

        What was done, in words for the job's error.
        """
        inst, src, dst, cluster = self.inst, self.src, self.dst, self.cluster
        removed = node_call(self.lu.rpc.remove_disks, dst, cluster, inst)
        removed.Warn(f"Could not remove partial copies on {dst.name}", self.feedback_fn)
        done = (
            f"the copies on {dst.name} were removed"
            if removed.ok
            else f"the copies on {dst.name} could not be removed"
        )
        if inst.admin_state != constants.ADMINST_UP:
            return f"{done}; {inst.name} stays stopped on {src.name}"
        started = node_call(self.lu.rpc.start_instance, src, cluster, inst)
        started.Warn(f"Could not restart instance on {src.name}", self.feedback_fn)
        if started.ok:
            return f"{done}; {inst.name} runs on {src.name} again"
        return f"{done}; {inst.name} could not be started on {src.name} again"
