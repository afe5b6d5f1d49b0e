"""LUTestDelay: hold locks for a while (exercises the framework and the locks)."""

from __future__ import annotations

from typing import Any

from ganeti_lv import locking
from ganeti_lv.cmdlib.base import NoHooksLU, register_lu
from ganeti_lv.cmdlib.common import expand_instance, expand_node
from ganeti_lv.errors import OpExecError
from ganeti_lv.opcodes import OpTestDelay


@register_lu(OpTestDelay)
class LUTestDelay(NoHooksLU):
    """Sleep ``duration`` seconds holding the given instance and node locks.

    ``fail=True`` raises OpExecError after the sleep; the dry-run result is
    the list of locks that would be held.
    """

    REQ_BGL = False

    def ExpandNames(self) -> None:
        """Lock the named instances and nodes exclusively."""
        self.op.instance_names = [expand_instance(self.cfg, n) for n in self.op.instance_names]
        self.op.node_names = [expand_node(self.cfg, n) for n in self.op.node_names]
        self.needed_locks = {}
        if self.op.instance_names:
            self.needed_locks[locking.LEVEL_INSTANCE] = list(self.op.instance_names)
        if self.op.node_names:
            self.needed_locks[locking.LEVEL_NODE] = list(self.op.node_names)

    def CheckPrereq(self) -> None:
        """Nothing to check; prepare the dry-run result."""
        self.dry_run_result = {
            "instances": sorted(self.op.instance_names),
            "nodes": sorted(self.op.node_names),
        }

    def Exec(self, feedback_fn: Any) -> Any:
        """Sleep, then succeed or fail as asked."""
        if self.op.duration:
            feedback_fn(f"Sleeping for {self.op.duration:g} s")
            self.ctx.sleep(self.op.duration)
        if self.op.fail:
            raise OpExecError("Failing as requested (OpTestDelay.fail)")
        return True
