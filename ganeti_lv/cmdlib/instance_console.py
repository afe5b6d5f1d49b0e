"""LUInstanceConsole: how to reach an instance's serial console (OP_INSTANCE_CONSOLE).

As Ganeti's for KVM: the console is reached over SSH on the primary node,
as the node's SSH user, where the node operations' ``console_command``
attaches to the domain's serial terminal (``virsh console``; Ctrl-] leaves
it). The result is Ganeti's console description: ``kind`` ``ssh`` with
``host``, ``port``, ``user`` and ``command``, or ``kind`` ``msg`` with a
``message`` for a domain whose serial port is no terminal (the hvparam
``serial_console`` off, or a domain an older ganeti_lv started). A query:
no job, no lock, no hook. The instance must run on its primary node
(ECODE_STATE otherwise); the primary must be online and answer.
"""

from __future__ import annotations

from typing import Any

from ganeti_lv import constants
from ganeti_lv.cmdlib.base import FeedbackFn, NoHooksLU, register_lu
from ganeti_lv.cmdlib.common import check_node_online, expand_instance
from ganeti_lv.cmdlib.instance import compute_instance_status, instance_domain
from ganeti_lv.errors import ECODE_NOENT, ECODE_STATE, OpPrereqError
from ganeti_lv.opcodes import OpInstanceConsole

CONS_SSH = "ssh"
CONS_MESSAGE = "msg"


@register_lu(OpInstanceConsole)
class LUInstanceConsole(NoHooksLU):
    """The console description of a running instance."""

    REQ_BGL = False
    QUERY = True

    def ExpandNames(self) -> None:
        """The instance's full name (ECODE_NOENT when unknown); no locks."""
        self.name = expand_instance(self.cfg, self.op.instance_name)
        self.needed_locks = {}

    def Exec(self, feedback_fn: FeedbackFn) -> dict[str, Any]:
        """Ask the primary whether the instance runs there; how to reach its console."""
        data = self.cfg.snapshot()
        inst = data.instances.get(self.name)
        if inst is None:  # removed since its name was expanded (a query takes no lock)
            raise OpPrereqError(f"Instance '{self.name}' not known", ECODE_NOENT)
        check_node_online(self.cfg, inst.primary_node, "Instance primary node offline:")
        pnode = data.nodes[inst.primary_node]
        dom = instance_domain(self.rpc, pnode, inst.name)
        if dom is None or dom.state not in constants.DOMSTATES_ACTIVE:
            state = compute_instance_status(inst.admin_state, pnode.name, [])
            raise OpPrereqError(
                f"Instance {inst.name} is not running (state {state}), it has no console",
                ECODE_STATE,
            )
        if not dom.serial_tty:
            return {
                "instance": inst.name,
                "kind": CONS_MESSAGE,
                "message": (
                    f"Instance {inst.name} has no serial terminal to attach to; with the"
                    " hypervisor parameter serial_console on, starting it again (shutdown,"
                    " startup) gives it one"
                ),
            }
        return {
            "instance": inst.name,
            "kind": CONS_SSH,
            "host": pnode.address,
            "port": pnode.ssh_port,
            "user": pnode.ssh_user,
            "command": self.rpc.console_command(inst.name),
        }
