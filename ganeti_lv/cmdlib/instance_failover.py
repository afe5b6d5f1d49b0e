"""The failover half of the TLMigrateInstance tasklet (``instance_migration``).

Stop the instance on its primary, copy a ``file`` instance's disks
(``failover_disks``), switch the primary, start the instance on the target.
A start on the target that fails is undone where the instance can go back:
a ``file`` instance keeps its images on the source until the target runs
it, and one that was not shut down on the source (Ganeti's
ignore_consistency) may still run there.
"""

from __future__ import annotations

from collections.abc import Callable

from ganeti_lv import constants
from ganeti_lv.cmdlib.base import LogicalUnit
from ganeti_lv.cmdlib.common import cancel_reason
from ganeti_lv.cmdlib.failover_disks import FailoverDiskMove
from ganeti_lv.config import ConfigStore
from ganeti_lv.errors import ECODE_ENVIRON, OpExecError
from ganeti_lv.hypervisor.base import NodeOps
from ganeti_lv.node.transport import node_call
from ganeti_lv.objects import Cluster, Instance, Node

FeedbackFn = Callable[[str], None]


class FailoverSteps:
    """The failover's Exec, for TLMigrateInstance (which provides what is declared here)."""

    lu: LogicalUnit
    rpc: NodeOps
    cfg: ConfigStore
    source: str
    target: str | None
    ignore_consistency: bool
    shutdown_timeout: float
    _inst: Callable[[], Instance]
    _cluster: Callable[[], Cluster]
    _node: Callable[[str], Node]
    _repair_chain: Callable[..., None]
    _domain_state: Callable[[Node], str | None]

    def _exec_failover(self, feedback_fn: FeedbackFn) -> None:
        """Stop on the source, move definition (and file disks), start on the target."""
        inst = self._inst()
        assert self.target is not None
        src, dst = self._node(self.source), self._node(self.target)
        copy = inst.disk_template == constants.DT_FILE
        if copy and src.offline:
            raise OpExecError(
                f"Disks of the 'file' instance {inst.name} are on offline node {src.name}:"
                " they cannot be moved"
            )
        # the disk chain first, where it can be reached: nothing changed if it fails.
        # A primary that does not answer is treated as down only when the operator
        # said so (Ganeti's ignore_consistency); shared disks are then reached from
        # the target.
        if not src.offline:
            fallback = dst if self.ignore_consistency and not copy else None
            self._repair_chain(src, unreachable_fallback=fallback)
        elif not copy:
            self._repair_chain(dst)
        self.lu.LogStep(1, 4, f"Shutting down instance {inst.name} on {src.name}")
        # why the guest may still run on the source, when it was not shut down there
        not_stopped: str | None = None
        if not src.offline:
            res = node_call(self.rpc.shutdown_instance, src, inst, self.shutdown_timeout)
            if not res.ok:
                if not self.ignore_consistency or copy:
                    # node-local disks of a guest that may still run: a copy would be
                    # inconsistent, and two copies could run
                    raise OpExecError(
                        f"Could not shutdown instance {inst.name} on node {src.name}:"
                        f" {res.fail_msg}"
                        + (
                            "; --ignore-consistency does not apply to node-local disks,"
                            " which are copied from the source: stop the guest there first"
                            if copy and self.ignore_consistency
                            else ""
                        ),
                        node=src.name,
                    )
                self.lu.LogWarning(
                    f"Could not shutdown instance {inst.name} on node {src.name}. Proceeding"
                    f" anyway. Please make sure node {src.name} is down. Error details:"
                    f" {res.fail_msg}"
                )
                not_stopped = f"it could not be shut down on node {src.name}"
        else:
            self.lu.LogWarning(f"Node {src.name} is offline: not shutting down there")
            not_stopped = f"node {src.name} is marked offline and it was not shut down there"
        if copy:
            self.lu.LogStep(2, 4, f"Copying disks to {dst.name}")
            FailoverDiskMove(self.lu, self._cluster(), inst, src, dst, feedback_fn).run()
        else:
            self.lu.LogStep(2, 4, "Shared storage: no disks to move")
        self.lu.LogStep(3, 4, f"Switching primary node to {dst.name}")
        self.cfg.set_instance_primary(inst.name, dst.name)
        self._finish_failover(src, dst, copy, not_stopped, feedback_fn)
        self._note_late_cancel(dst)

    def _finish_failover(
        self, src: Node, dst: Node, copy: bool, not_stopped: str | None, feedback_fn: FeedbackFn
    ) -> None:
        """After the switch: the source cleaned up, the instance started on ``dst`` if up.

        ``not_stopped``: why the guest may still run on ``src`` (it was not shut
        down there); a start on ``dst`` that then fails puts the primary back.
        """
        inst, cluster = self._inst(), self._cluster()
        if not src.offline and not copy:
            self._drop_from_source(src, copy, feedback_fn)
        if inst.admin_state == constants.ADMINST_UP:
            self.lu.LogStep(4, 4, f"Starting instance {inst.name} on {dst.name}")
            moved = self.cfg.get_instance(inst.name) or inst
            started = node_call(self.rpc.start_instance, dst, cluster, moved)
            if not started.ok:
                self._after_failed_start(src, dst, started.fail_msg, copy, not_stopped, feedback_fn)
        else:
            self.lu.LogStep(4, 4, "Instance is marked down: not starting it")
        if copy:  # the copies on the source are dropped only once the target has the instance
            self._drop_from_source(src, copy, feedback_fn)

    def _drop_from_source(self, src: Node, copy: bool, feedback_fn: FeedbackFn) -> None:
        """The definition on ``src`` removed, and a ``file`` instance's images (warnings)."""
        inst = self._inst()
        node_call(self.rpc.undefine_instance, src, inst.name).Warn(
            f"Could not remove the definition on {src.name}", feedback_fn
        )
        if copy:
            node_call(self.rpc.remove_disks, src, self._cluster(), inst).Warn(
                f"Could not remove the old disk images on {src.name}", feedback_fn
            )

    def _note_late_cancel(self, dst: Node) -> None:
        """Say in the job log that a cancel request was not honoured (the failover finished).

        Once the configuration names the target, stopping would leave the
        instance half moved (not started anywhere): the failover finishes
        instead, and the job succeeds. Said
        only once it did finish: a failover that failed after the switch
        reports its own error.
        """
        cancel = self.lu.proc.cancel
        if cancel.is_set():
            self.lu.LogInfo(
                f"The cancel request ({cancel_reason(cancel)}) is not honoured past the"
                f" failover's point of no return (the primary node switched to {dst.name}):"
                " the failover was finished instead"
            )

    def _after_failed_start(
        self,
        src: Node,
        dst: Node,
        fail_msg: str | None,
        copy: bool,
        not_stopped: str | None,
        feedback_fn: FeedbackFn,
    ) -> None:
        """The start on ``dst`` failed: ask ``dst`` before anything is undone.

        A start can fail after qemu started (its answer lost). When the
        instance runs on ``dst`` after all, the failover is done (with a
        warning). Otherwise what the start left on ``dst`` is removed, and
        only once ``dst`` then says the domain is gone is the failover undone
        where it can be (see the two undo methods); else the error stands
        with the primary on ``dst``, as Ganeti's. When ``dst`` cannot say,
        nothing is undone: two copies must never run.
        """
        name = self._inst().name
        state = self._domain_state(dst)
        if state in constants.DOMSTATES_ACTIVE:
            self.lu.LogWarning(
                f"The start on {dst.name} reported an error ({fail_msg}), but instance {name}"
                f" is {state} there"
            )
            return
        if state in (None, *constants.DOMSTATES_STOPPED):
            gone = node_call(self.rpc.undefine_instance, dst, name)
            if not gone.ok:
                why = f"its leftover domain could not be removed there: {gone.fail_msg}"
                self._unclear_start(src, dst, fail_msg, copy, why)
            state = self._domain_state(dst)
        if state is not None:
            why = f"{dst.name} cannot be asked" if state == "unknown" else f"it is {state} there"
            self._unclear_start(src, dst, fail_msg, copy, why)
        if copy:  # the source was shut down (else a file failover stops before the copy)
            self._undo_copied_failover(src, dst, fail_msg, feedback_fn)
        if not_stopped is not None:
            self._undo_unstopped_failover(src, dst, fail_msg, not_stopped)
        raise OpExecError(f"Could not start instance {name} on node {dst.name}: {fail_msg}")

    def _unclear_start(
        self, src: Node, dst: Node, fail_msg: str | None, copy: bool, why: str
    ) -> None:
        """A failed start after which ``dst`` does not say the domain is gone: nothing undone."""
        name = self._inst().name
        if copy:
            after = (
                f"the disks stay on {src.name}. If {dst.name} is down for good, mark it"
                f" offline, start the domain on {src.name} (virsh start) and run the cleanup"
            )
        else:
            after = (
                f"if {dst.name} is down for good, mark it offline and fail over again with"
                " --ignore-consistency"
            )
        raise OpExecError(
            f"Could not start instance {name} on node {dst.name}: {fail_msg}; whether it runs"
            f" there is unclear ({why}): the configuration keeps {dst.name} as its primary"
            f" and nothing was undone. Run 'gnt-lv instance migrate --cleanup {name}' once"
            f" {dst.name} answers; {after}",
            ECODE_ENVIRON,
        )

    def _undo_copied_failover(
        self, src: Node, dst: Node, fail_msg: str | None, feedback_fn: FeedbackFn
    ) -> None:
        """The domain is gone from ``dst`` after a failover that copied its disks.

        The source still has the instance's images and definition: the
        primary goes back to ``src``, then the copies on ``dst`` are removed
        (a configuration that cannot be written keeps ``dst``, with its
        images), and the instance is started on ``src`` again.
        """
        inst, cluster = self._inst(), self._cluster()
        self.cfg.set_instance_primary(inst.name, src.name)
        removed = node_call(self.rpc.remove_disks, dst, cluster, inst)
        removed.Warn(f"Could not remove the copied disk images on {dst.name}", feedback_fn)
        restored = self.cfg.get_instance(inst.name) or inst
        again = node_call(self.rpc.start_instance, src, cluster, restored)
        if again.ok:
            where = f"the instance runs on {src.name} again, configuration unchanged"
        else:
            where = (
                f"the configuration keeps {src.name} as its primary, but it could not be"
                f" started there either: {again.fail_msg}"
            )
        if not removed.ok:
            where += f"; the copied disk images on {dst.name} could not be removed"
            if again.ok:  # the cleanup judges only an instance that runs
                where += " ('gnt-lv instance migrate --cleanup' removes them)"
        raise OpExecError(
            f"Could not start instance {inst.name} on node {dst.name}: {fail_msg}; the failover"
            f" was undone: {where}",
            ECODE_ENVIRON,
        )

    def _undo_unstopped_failover(
        self, src: Node, dst: Node, fail_msg: str | None, not_stopped: str
    ) -> None:
        """The start after a failover that did not shut the guest down on ``src`` failed.

        The domain is gone from ``dst`` (it said so), and the guest may well
        still run on ``src`` (an offline node, or one that did not answer the
        shutdown; qemu's lock on the shared disks is the usual reason for the
        failure). The primary goes back to ``src``. A ``src`` that answers
        that it has no such domain (the removal of its definition stopped the
        guest) is said so: the guest runs nowhere.
        """
        name = self._inst().name
        self.cfg.set_instance_primary(name, src.name)
        if not src.offline and self._domain_state(src) is None:
            raise OpExecError(
                f"Could not start instance {name} on node {dst.name}: {fail_msg}. Its shutdown"
                f" on {src.name} had failed, but the removal of its definition there stopped"
                f" it: it runs nowhere now. The configuration keeps {src.name} as its primary:"
                f" 'gnt-lv instance startup {name}' starts it there.",
                ECODE_ENVIRON,
            )
        raise OpExecError(
            f"Could not start instance {name} on node {dst.name}: {fail_msg}. The instance"
            f" may still run on {src.name} (its disks in use), as {not_stopped}; the"
            f" configuration keeps {src.name} as its primary. Make sure {src.name} is really"
            " down before failing over again.",
            ECODE_ENVIRON,
        )
