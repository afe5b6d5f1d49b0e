"""LUInstanceSetParams: change an instance's parameters (OP_INSTANCE_SET_PARAMS).

As Ganeti's ``gnt-instance modify -B/-H``: the changes are merged into the
instance's own backend and hypervisor parameters (None sets one back to the
cluster's default), checked as ``instance add`` checks them, and recorded.
A running instance gets them at its next start from the configuration (a
shutdown and startup, a full reboot, a failover), as in Ganeti; the job log
says so. Growing the maximum memory is refused (ECODE_NORES) when the
primary node could not start the instance with it (its free memory plus
what the instance takes there now), unless forced, and so are more vCPUs
than the node has CPUs (an addition to Ganeti's checks); a minimum memory
above the maximum is ECODE_INVAL. The result is Ganeti's list of the changes,
``[["hv/kernel_args", "..."], ["be/maxmem", 512]]``. Hooks: instance-modify,
seeing the new memory and vCPUs. Disks, NICs, the disk template, the OS and
the primary node are not changed here.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from ganeti_lv import constants
from ganeti_lv.cmdlib.base import FeedbackFn, register_lu
from ganeti_lv.cmdlib.common import get_instance, instance_hook_env, refuse_cluster_wide
from ganeti_lv.cmdlib.instance import (
    InstanceLU,
    check_kernel_files,
    check_memory_bounds,
    check_node_cpus,
)
from ganeti_lv.errors import ECODE_INVAL, ECODE_NORES, OpPrereqError
from ganeti_lv.hooksmaster import hook_value
from ganeti_lv.node.transport import node_call
from ganeti_lv.opcodes import OpInstanceSetParams
from ganeti_lv.units import apply_changes, coerce_beparams, coerce_hvparams


@register_lu(OpInstanceSetParams)
class LUInstanceSetParams(InstanceLU):
    """Merge the changes into the instance's parameters."""

    HPATH = constants.HPATH_INSTANCE_MODIFY

    def CheckArguments(self) -> None:
        """Something to change; known parameters of their types (None: back to the default)."""
        if not self.op.beparams and not self.op.hvparams:
            raise OpPrereqError("No changes submitted", ECODE_INVAL)
        self.be_changes = coerce_beparams(self.op.beparams, dict(constants.BEC_DEFAULTS))
        self.hv_changes = coerce_hvparams(self.op.hvparams)
        refuse_cluster_wide(self.hv_changes)

    def CheckPrereq(self) -> None:
        """Minimum memory within the maximum; the node can start it with what it gets."""
        self._load()
        inst = self.instance
        self.new_be = apply_changes(inst.beparams, self.be_changes)
        self.new_hv = apply_changes(inst.hvparams, self.hv_changes)
        changed = dataclasses.replace(inst, beparams=self.new_be, hvparams=self.new_hv)
        old, new = self.cluster.fill_beparams(inst), self.cluster.fill_beparams(changed)
        self.filled_be = new
        check_memory_bounds(new, inst.name)
        boots = {"kernel_path", "initrd_path"} & set(self.hv_changes)
        if boots and not self.pnode.offline:
            check_kernel_files(self.rpc, self.pnode, self.cluster, changed)
        grows_memory = int(new["maxmem"]) > int(old["maxmem"])
        grows_cpus = int(new["vcpus"]) > int(old["vcpus"])
        if (grows_memory or grows_cpus) and not self.op.force and not self.pnode.offline:
            self._check_primary(int(new["maxmem"]) if grows_memory else 0, int(new["vcpus"]))

    def _check_primary(self, maxmem: int, vcpus: int) -> None:
        """The primary can start the instance with ``maxmem`` MiB (0: not asked) and
        ``vcpus``; a node that does not answer is a warning, as in Ganeti."""
        inst, pnode = self.instance, self.pnode
        facts = node_call(self.rpc.node_info, pnode)
        dom = node_call(self.rpc.instance_info, pnode, inst.name)
        node = facts.payload
        if node is None or not dom.ok:
            why = facts.fail_msg or dom.fail_msg
            self.LogWarning(f"Can't get info from primary node {pnode.name}: {why}")
            return
        check_node_cpus(node, vcpus, f"instance {inst.name}")
        runs = dom.payload is not None and dom.payload.state in constants.DOMSTATES_ACTIVE
        current = dom.payload.memory if dom.payload is not None and runs else 0
        missing = maxmem - current - node.memory_free
        if maxmem and missing > 0:
            raise OpPrereqError(
                f"This change would keep instance {inst.name} from starting: {missing} MiB"
                f" of memory missing on its primary node {pnode.name} (force to record it"
                " anyway)",
                ECODE_NORES,
            )

    def BuildHooksEnv(self) -> dict[str, Any]:
        """Instance keys, the memory and vCPU ones with the new values (as Ganeti's: its
        ``INSTANCE_BE_*`` and ``INSTANCE_HV_*`` keys are the recorded ones, so the new
        values in the post phase only)."""
        new = self.filled_be
        override = {
            "INSTANCE_MINMEM": hook_value(new["minmem"]),
            "INSTANCE_MAXMEM": hook_value(new["maxmem"]),
            "INSTANCE_MEMORY": hook_value(new["maxmem"]),
            "INSTANCE_VCPUS": hook_value(new["vcpus"]),
        }
        return {
            "OP_TARGET": self.instance.name,
            **instance_hook_env(self.cluster, self.instance, override),
        }

    def Exec(self, feedback_fn: FeedbackFn) -> list[list[Any]]:
        """Record the new parameters; Ganeti's list of the changes."""
        with self.cfg.update() as data:
            inst = data.instances[self.instance.name]
            inst.beparams, inst.hvparams = dict(self.new_be), dict(self.new_hv)
            inst.mtime = time.time()
        self.instance = get_instance(self.cfg, self.instance.name)  # for the post hooks
        if self.instance.admin_state == constants.ADMINST_UP:
            feedback_fn(
                f"Instance {self.instance.name} gets the changes at its next start from the"
                " configuration (shutdown and startup, or a full reboot); a restart from"
                " within the guest is not enough"
            )
        changes = [[f"hv/{k}", v] for k, v in self.hv_changes.items()]
        changes += [[f"be/{k}", v] for k, v in self.be_changes.items()]
        return [[key, "default" if value is None else value] for key, value in changes]
