"""LUBackupPrepare: prepare an export of an instance (Ganeti's OP_BACKUP_PREPARE)."""

from __future__ import annotations

from ganeti_lv import constants, locking
from ganeti_lv.cmdlib.base import FeedbackFn, NoHooksLU, register_lu
from ganeti_lv.cmdlib.common import expand_instance
from ganeti_lv.errors import ECODE_INVAL, OpPrereqError
from ganeti_lv.opcodes import OpBackupPrepare


@register_lu(OpBackupPrepare)
class LUBackupPrepare(NoHooksLU):
    """A local export needs nothing prepared; an export to another cluster is not supported.

    As in Ganeti, the instance must exist and is locked (shared) meanwhile;
    the result of a local preparation is None.
    """

    REQ_BGL = False

    def CheckArguments(self) -> None:
        """Only local exports (to a node of this cluster) are supported."""
        if self.op.mode == constants.EXPORT_MODE_REMOTE:
            raise OpPrereqError(
                "Export to another cluster (mode 'remote') is not supported", ECODE_INVAL
            )

    def ExpandNames(self) -> None:
        """The instance's full name; its lock, shared."""
        self.op.instance_name = expand_instance(self.cfg, self.op.instance_name)
        self.needed_locks = {locking.LEVEL_INSTANCE: [self.op.instance_name]}
        self.share_locks[locking.LEVEL_INSTANCE] = 1

    def Exec(self, feedback_fn: FeedbackFn) -> None:
        """Nothing to prepare for a local export."""
        feedback_fn(f"Nothing to prepare for a local export of {self.op.instance_name}")
