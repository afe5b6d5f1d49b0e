"""LUBackupExport: export an instance to the export directory of a node.

The export LU (its snapshot's merge in ``backup_merge``); the export query
and removal LUs are in ``backup_query``, the import (a mode of instance
creation) in ``backup_import``.

LUBackupExport keeps Ganeti's parameters, checks, error codes and named
helpers (TrySnapshot, DoReboot, StartInstance, ZeroFreeSpace,
_CleanupExports, _InstanceDiskSizeSum) and fixes its weak points:

- only the instance (exclusive) and its primary and the target node are
  locked, not every node: exports are per instance name, so the instance
  lock already serialises everything done to this instance's exports on
  other nodes (``_CleanupExports``);
- a shutdown is recorded in the configuration (admin state ``down``) before
  the domain is stopped and ``up`` again only once it runs, so the
  configuration never says "up" for a stopped instance, even if the
  exporting process is killed;
- the copy lands in ``<instance>.new`` and is published atomically: the
  previous export is renamed aside, never deleted before the new one is in
  place (see ``exportdir``). That rename is the export's commit point:
  a failure before it leaves no new export and the previous one in place;
  from it on the export is complete and visible, and what fails after it
  (syncing, removing the previous export, merging the snapshot back,
  starting or removing the instance) never undoes it or calls it failed:
  the export's own leftovers are warnings, and an instance step's error
  says that the export is complete;
- live snapshots are merged back in a ``finally``; a leftover of a killed
  export is merged by the next operation (``repair_disk_chain``);
- a live export's first disk copies are set up while the job waits for its
  locks (``EarlyWork``, in the job's session): the copy then only says go;
- a cancel request (Ctrl-C, SIGTERM, ``job cancel``: the job's cancel
  event, as for a migration) stops the running copy on both nodes, removes
  ``<instance>.new``, merges the snapshot back (or starts the instance again
  after a shutdown) and ends the job as canceled (``OperationCanceled``);
  the previous export stays. A cancel that comes after the commit point is
  too late: the export is kept, the job ends as it would have, and the
  job log says so (a warning).

Zeroing free space does not require compression here (Ganeti refuses it):
the copy engine skips all-zero blocks, so zeroed space is never sent.
"""

from __future__ import annotations

import time
from typing import Any

from ganeti_lv import constants, exportinfo, locking
from ganeti_lv.cmdlib import backup_space
from ganeti_lv.cmdlib.backup_merge import SnapshotMerge
from ganeti_lv.cmdlib.base import EarlyWork, FeedbackFn, LogicalUnit, register_lu
from ganeti_lv.cmdlib.common import (
    ask_nodes,
    cancel_reason,
    check_node_not_drained,
    check_node_online,
    copy_canceled,
    expand_instance,
    expand_node,
    get_instance,
    get_node,
    instance_hook_env,
    instance_nodes_ahead,
    removal_step,
    repair_disk_chain,
    unsettled_state,
)
from ganeti_lv.cmdlib.instance import check_not_running_elsewhere
from ganeti_lv.cmdlib.migration_checks import instance_memory
from ganeti_lv.errors import (
    ECODE_INVAL,
    ECODE_STATE,
    GenericError,
    NodeUnreachable,
    OperationCanceled,
    OpExecError,
    OpPrereqError,
)
from ganeti_lv.hypervisor.base import CopyAhead
from ganeti_lv.hypervisor.export_types import PublishedExport, SnapshotInfo
from ganeti_lv.names import check_instance_name
from ganeti_lv.node import diskcopy, progress
from ganeti_lv.node.transport import node_call
from ganeti_lv.objects import Cluster, Instance, Node, disk_path, disk_paths
from ganeti_lv.opcodes import OpBackupExport
from ganeti_lv.reservations import MEMORY, Held, Reservations

MiB = 1024 * 1024
# Zeroing timeouts (Ganeti's defaults: helper VM start-up and per MiB).
ZEROING_TIMEOUT_FIXED = 60
ZEROING_TIMEOUT_PER_MIB = 0.1


@register_lu(OpBackupExport)
class LUBackupExport(LogicalUnit):
    """Export an instance to a node's export dir (see the module docstring)."""

    HPATH = constants.HPATH_INSTANCE_EXPORT
    HTYPE = constants.HTYPE_INSTANCE
    REQ_BGL = False
    # whether the last removal of ``<instance>.new`` worked (said after a cancel)
    _new_removed = False
    # ``node:path`` of the export once published (the commit point, ``_publish``)
    _published = ""
    # the space for this export (``_check_space``): the overlays', then the copies'
    _reservations: tuple[Held, ...] = ()
    # the zeroing's answer was lost: it may still run on the primary (``ZeroFreeSpace``)
    _zeroing_unclear = False

    def CheckArguments(self) -> None:
        """Ganeti's argument checks: remote mode x509 fields, zeroing needs shutdown."""
        self.x509_key_name = self.op.x509_key_name
        self.dest_x509_ca_pem = self.op.destination_x509_ca
        if self.op.mode == constants.EXPORT_MODE_REMOTE:
            if not self.x509_key_name:
                raise OpPrereqError("Missing X509 key name for encryption", ECODE_INVAL)
            if not self.dest_x509_ca_pem:
                raise OpPrereqError("Missing destination X509 CA", ECODE_INVAL)
        elif not self.op.target_node:
            raise OpPrereqError("The target node must be given for a local export", ECODE_INVAL)
        if self.op.zero_free_space and not self.op.shutdown:
            raise OpPrereqError(
                "Unless the instance is shut down, zeroing cannot be used.", ECODE_INVAL
            )

    def ExpandNames(self) -> None:
        """Lock the instance and its export; its primary and the target node are added
        in DeclareLocks.

        The export's lock keeps an import from reading the export this one
        replaces, or removes from other nodes, and ``backup remove`` away.
        """
        self.op.instance_name = expand_instance(self.cfg, self.op.instance_name)
        self.needed_locks = {locking.LEVEL_INSTANCE: [self.op.instance_name]}
        if self.op.mode == constants.EXPORT_MODE_LOCAL:
            self.op.target_node = expand_node(self.cfg, self.op.target_node)
            self.needed_locks[locking.LEVEL_EXPORT] = [self.op.instance_name]
        self.needed_locks[locking.LEVEL_NODE] = []
        # Nothing about the nodes changes unless disks are zeroed or removed.
        exclusive = self.op.zero_free_space or self.op.remove_instance
        self.share_locks[locking.LEVEL_NODE] = 0 if exclusive else 1

    def EarlyWork(self) -> EarlyWork | None:
        """Warm the master's, primary's and target's connections; set a live copy up.

        A live export's first copies (the connection from the primary to the
        target, the helpers at both ends) start while the job takes its locks
        and runs its checks and hooks; no data moves before its copy asks for
        it. An export that stops the instance, or removes it, sets nothing up.
        """
        if self.op.mode != constants.EXPORT_MODE_LOCAL:
            return None
        found = instance_nodes_ahead(self.cfg, self.op.instance_name, self.op.target_node)
        if found is None:
            return None
        data, inst, nodes = found
        work = EarlyWork(nodes=nodes)
        src, dst = data.nodes.get(inst.primary_node), data.nodes.get(self.op.target_node)
        if self.op.dry_run or self.op.shutdown or self.op.remove_instance or not (src and dst):
            return work
        for idx in range(min(len(inst.disks), diskcopy.PRESTART_COPIES)):
            work.copies.append(
                CopyAhead(
                    src,
                    disk_path(data.cluster, inst, idx),
                    dst,
                    exportinfo.new_disk_path(data.cluster.export_dir, inst.name, idx),
                    self.op.compress,
                    self.op.bandwidth_limit,
                )
            )
        return work

    def DeclareLocks(self, level: int) -> None:
        """Node level: the primary node and the target node only."""
        if level != locking.LEVEL_NODE or self.needed_locks is None:
            return
        inst = self.cfg.get_instance(self.op.instance_name)
        names = {inst.primary_node} if inst is not None else set()
        if self.op.mode == constants.EXPORT_MODE_LOCAL:
            names.add(self.op.target_node)
        self.needed_locks[level] = sorted(names)

    def CheckPrereq(self) -> None:
        """Ganeti's checks in Ganeti's order, plus the target's free space."""
        self.cluster: Cluster = self.cfg.get_cluster()
        self.instance: Instance = get_instance(self.cfg, self.op.instance_name)
        # an instance of an older version, or one from Ganeti: its export would
        # take another's directory; refused before anything is touched
        check_instance_name(self.instance.name)
        self.pnode: Node = get_node(self.cfg, self.instance.primary_node)
        check_node_online(self.cfg, self.pnode.name)
        if (
            self.op.remove_instance
            and self.instance.admin_state == constants.ADMINST_UP
            and not self.op.shutdown
        ):
            raise OpPrereqError(
                "Can not remove instance without shutting it down before", ECODE_STATE
            )
        if self.op.mode == constants.EXPORT_MODE_LOCAL:
            self.dst_node: Node = get_node(self.cfg, self.op.target_node)
            check_node_online(self.cfg, self.dst_node.name)
            check_node_not_drained(self.cfg, self.dst_node.name)
        else:
            raise OpPrereqError(
                "Export to another cluster (mode 'remote') is not supported yet", ECODE_INVAL
            )
        if self.op.zero_free_space:
            if self.op.zeroing_timeout_fixed is None:
                self.op.zeroing_timeout_fixed = ZEROING_TIMEOUT_FIXED
            if self.op.zeroing_timeout_per_mib is None:
                self.op.zeroing_timeout_per_mib = ZEROING_TIMEOUT_PER_MIB
        elif (
            self.op.zeroing_timeout_fixed is not None or self.op.zeroing_timeout_per_mib is not None
        ):
            raise OpPrereqError(
                "Zeroing timeout options can only be used only with the --zero-free-space option",
                ECODE_INVAL,
            )
        allowed = self.cluster.compression_tools
        if self.op.compress != constants.IEC_NONE and self.op.compress not in allowed:
            raise OpPrereqError(
                f"Compression tool not allowed, tools allowed are [{', '.join(allowed)}]",
                ECODE_INVAL,
            )
        if self.op.long_sleep and not self.op.shutdown:
            raise OpPrereqError(
                "The long sleep option only makes sense when the instance can be shut down.",
                ECODE_INVAL,
            )
        # running elsewhere (a lost configuration change): stale images, in-use disks
        check_not_running_elsewhere(
            self.rpc, self.cfg.snapshot(), self.instance, self.LogWarning, "to export it"
        )
        self._check_settled()
        self._check_space()
        # cached for the post hooks (the instance may be gone by then)
        self._hook_env = instance_hook_env(self.cluster, self.instance)
        self.dry_run_result = (True, [True] * len(self.instance.disks))

    def _check_settled(self) -> None:
        """ECODE_STATE for a guest neither running nor stopped (``unsettled_state``), and
        for one running that may not be shut down and gets no snapshot.

        A paused guest would not shut down (its shutdown ends in a destroy),
        and without a shutdown its disks would be read, or zeroed, in use; so
        would a running guest's whose configuration says it is down (started by
        hand: it gets no snapshot, as Ganeti's).
        """
        state = self._settled_state(OpPrereqError)
        if state == constants.DOMSTATE_RUNNING and not self.op.shutdown and not self.TrySnapshot():
            raise OpPrereqError(
                f"Cannot export the running instance {self.instance.name} without a snapshot"
                " (its configuration says it is down); use the shutdown mode",
                ECODE_STATE,
            )

    def _settled_state(self, refusal: type[OpPrereqError] | type[OpExecError]) -> str | None:
        """The guest's domain state (None: no domain); ``refusal`` (ECODE_STATE) when it is
        neither running nor stopped."""
        dom = node_call(self.rpc.instance_info, self.pnode, self.instance.name).Raise(
            f"Cannot query instance {self.instance.name} on {self.pnode.name}",
            prereq=refusal is OpPrereqError,
        )
        unsettled = unsettled_state(dom.state, self.pnode.name) if dom is not None else ""
        if unsettled:
            raise refusal(
                f"Can't export instance {self.instance.name}: {unsettled}, not running;"
                " resume it or shut it down first",
                ECODE_STATE,
            )
        return dom.state if dom is not None else None

    def _check_space(self) -> None:
        """Room for the overlays on the primary and for the copies on the target,
        reserved (``backup_space``): held until the job ends, the copies' until they
        are published."""
        for held in self._reservations:  # checked again (a retry): the new ones count
            held.release()
        space = backup_space.ExportSpace(
            self.rpc,
            self.ctx.data_dir,
            self.cluster,
            self.instance,
            self.pnode,
            self.dst_node,
            self.op.remove_instance,
        )
        self._reservations = tuple(space.reserve())
        for held in self._reservations:
            self.proc.hold_until_opcode_end(held)

    def BuildHooksEnv(self) -> dict[str, Any]:
        """Ganeti's export keys plus the instance keys (cached in CheckPrereq)."""
        env: dict[str, Any] = {
            "OP_TARGET": self.instance.name,
            "EXPORT_MODE": self.op.mode,
            "EXPORT_NODE": self.op.target_node or "",
            "EXPORT_DO_SHUTDOWN": str(bool(self.op.shutdown)),
            "SHUTDOWN_TIMEOUT": str(self.op.shutdown_timeout),
            "REMOVE_INSTANCE": str(bool(self.op.remove_instance)),
        }
        env.update(self._hook_env)
        return env

    def BuildHooksNodes(self) -> tuple[list[str], list[str]]:
        """Master, primary and target."""
        nodes = [self.cluster.master_node, self.pnode.name]
        if self.op.mode == constants.EXPORT_MODE_LOCAL:
            nodes.append(self.dst_node.name)
        nodes = list(dict.fromkeys(nodes))
        return nodes, nodes

    # -- Ganeti's named helpers --------------------------------------------
    def TrySnapshot(self) -> bool:
        """True when a snapshot is preferable: the instance stays and is meant to run."""
        return not self.op.remove_instance and self.instance.admin_state == constants.ADMINST_UP

    def DoReboot(self) -> bool:
        """True when the instance must be started again after (or during) the export."""
        return (
            self.op.shutdown
            and self.instance.admin_state == constants.ADMINST_UP
            and not self.op.remove_instance
        )

    def StartInstance(self, feedback_fn: FeedbackFn) -> None:
        """Start the instance again and record it as up."""
        feedback_fn(f"Starting instance {self.instance.name}")
        node_call(self.rpc.start_instance, self.pnode, self.cluster, self.instance).Raise(
            f"Could not start instance {self.instance.name}"
        )
        self._set_admin(constants.ADMINST_UP)

    def _start_after_export(self, feedback_fn: FeedbackFn, failed: bool) -> bool:
        """Start the instance this export shut down, when it is to run again.

        After a successful export that is the reboot mode's restart, and a
        failure to start fails the job. After a failed one the instance runs
        again if it was up (even when it was to be removed), and a failure
        to start is a warning beside the export's own error; so is a guest
        left paused (its restart on a snapshot, cut short, could not stop it
        again), which a start would take for running. True when the instance
        was started.
        """
        if not failed:
            if not self.DoReboot():
                return False
            self.StartInstance(feedback_fn)
            return True
        if self.instance.admin_state != constants.ADMINST_UP:
            return False
        try:
            self._is_running()  # ECODE_STATE for a guest left paused: no start
            self.StartInstance(feedback_fn)
        except GenericError as err:
            self.LogWarning(f"Instance {self.instance.name} is not started again: {err}")
            return False
        return True

    def ZeroFreeSpace(self, feedback_fn: FeedbackFn) -> None:
        """Zero the unused blocks of every disk (instance shut down) so less is sent."""
        size = sum(d.size for d in self.instance.disks)  # MiB
        assert self.op.zeroing_timeout_fixed is not None
        assert self.op.zeroing_timeout_per_mib is not None
        timeout = self.op.zeroing_timeout_fixed + size * self.op.zeroing_timeout_per_mib
        feedback_fn(f"Zeroing free disk space (timeout {int(timeout)}s)")
        results = node_call(
            self.rpc.zero_free_space, self.pnode, self.cluster, self.instance, timeout
        )
        if isinstance(results.error, NodeUnreachable):
            # it may go on writing the disks until its timeout: a guest started on them
            # now could lose what it writes, so it stays stopped
            self._zeroing_unclear = True
            advice = (
                "start it once that time has passed"
                if self.instance.admin_state == constants.ADMINST_UP  # as before the export
                else "do not start it before that time has passed"
            )
            results.Raise(
                f"Could not zero the free space; the zeroing may still run on"
                f" {self.pnode.name} for up to {int(timeout)} s, so instance"
                f" {self.instance.name} stays stopped: {advice}"
            )
        for res in results.Raise("Could not zero the free space"):
            if not res.zeroed:
                self.LogWarning(f"Free space of {res.path} not zeroed: {res.detail}")

    def _CleanupExports(self, feedback_fn: FeedbackFn) -> None:
        """Remove this instance's exports from every other node (all nodes at once)."""
        data = self.cfg.snapshot()  # read-only: lookups
        nodes = [
            node
            for node in data.nodes.values()
            if node.name != self.dst_node.name and not node.offline
        ]
        removed, failed = ask_nodes(self.rpc.export_remove, nodes, self.cluster, self.instance.name)
        for node in nodes:
            if node.name in failed:
                self.LogWarning(
                    f"Could not remove older export for instance {self.instance.name}"
                    f" on node {node.name}: {failed[node.name]}"
                )
            elif removed[node.name]:
                feedback_fn(f"Removed older export of {self.instance.name} on {node.name}")

    # -- Exec -------------------------------------------------------------------
    def _set_admin(self, state: str) -> None:
        if self.cfg.get_instance(self.instance.name) is not None:
            self.cfg.set_admin_state(self.instance.name, state)

    def _is_running(self) -> bool:
        """Whether the guest runs; ECODE_STATE when it was paused since the checks."""
        return self._settled_state(OpExecError) == constants.DOMSTATE_RUNNING

    def _shutdown(self, feedback_fn: FeedbackFn) -> None:
        if self.DoReboot():
            self._keep_memory()
        feedback_fn(f"Shutting down instance {self.instance.name}")
        if self.instance.admin_state == constants.ADMINST_UP:
            self._set_admin(constants.ADMINST_DOWN)  # truthful even if we die now
        res = node_call(
            self.rpc.shutdown_instance, self.pnode, self.instance, float(self.op.shutdown_timeout)
        )
        if not res.ok and self.instance.admin_state == constants.ADMINST_UP:
            # the export fails here: the instance runs as before it, also when it stopped
            # all the same (the shutdown's answer lost, say)
            try:
                stopped = not self._is_running()
            except OpExecError:  # unknown or paused: as it was
                stopped = False
            if not (stopped and self._start_after_export(feedback_fn, failed=True)):
                self._set_admin(constants.ADMINST_UP)
        res.Raise(f"Could not shutdown instance {self.instance.name} on node {self.pnode.name}")

    def _keep_memory(self) -> None:
        """Reserve the instance's memory on its primary until the job ends: stopped for
        the export (with ``--long-sleep``, for its whole copy), it is started again, and a
        move to the node must not count that memory as free meanwhile."""
        inst = self.instance
        with Reservations(self.ctx.data_dir, MEMORY).node(self.pnode.name) as ledger:
            held = ledger.reserve("", instance_memory(self.cluster, inst) * MiB, inst.name)
        self.proc.hold_until_opcode_end(held)

    def _snapshot(self, feedback_fn: FeedbackFn, start: bool) -> SnapshotInfo | None:
        """Live snapshot (or start-with-snapshot); None when none could be taken."""
        feedback_fn("Creating a snapshot of the instance's disks")
        if start:
            res = node_call(self.rpc.start_with_snapshot, self.pnode, self.cluster, self.instance)
            if res.ok:
                self._set_admin(constants.ADMINST_UP)
        else:
            res = node_call(self.rpc.snapshot_disks, self.pnode, self.instance)
        if not res.ok:
            if start and not self.op.long_sleep:  # the instance would stay down for the copy
                raise OpExecError(
                    f"Could not start {self.instance.name} on a snapshot of its disks:"
                    f" {res.fail_msg};"
                    " the instance would stay shut down while its disks are copied, which"
                    " --long-sleep allows; aborting"
                )
            self.LogWarning(f"Could not snapshot the disks: {res.fail_msg}; copying without")
            return None
        return res.payload

    def Exec(self, feedback_fn: FeedbackFn) -> tuple[bool, list[bool]]:
        """Shut down, zero, snapshot, restart, copy, publish, remove, clean up."""
        repair_disk_chain(self, self.pnode, self.cluster, self.instance)
        running = self._is_running()
        stopped_by_us = False
        if self.op.shutdown and running:
            self._shutdown(feedback_fn)
            running, stopped_by_us = False, True
        snapshot: SnapshotInfo | None = None
        merge = SnapshotMerge(self.rpc, self.pnode, self.instance, None)
        failed, started_again, merged = True, False, True
        try:
            try:
                if self.op.zero_free_space:
                    self.ZeroFreeSpace(feedback_fn)
                if self.TrySnapshot() and (running or (self.DoReboot() and stopped_by_us)):
                    snapshot = self._snapshot(feedback_fn, start=not running)
                    merge = SnapshotMerge(self.rpc, self.pnode, self.instance, snapshot)
                sources = (
                    snapshot.base_paths()
                    if snapshot is not None
                    else disk_paths(self.cluster, self.instance)
                )
                if snapshot is None and running:
                    raise OpExecError(
                        f"Cannot export the running instance {self.instance.name} without a"
                        " snapshot; use the shutdown mode"
                    )
                manifest = self._copy_disks(feedback_fn, sources)
                self._stop_if_canceled(feedback_fn, "before publishing it")
                # The copy is done: the primary merges the snapshot back while the
                # target publishes the export and the other nodes drop older ones.
                merge.start()
                # The commit point: from here on the export is complete and
                # visible; no cancel request stops it, nothing undoes it.
                self._publish(feedback_fn, manifest)
                failed = False
                if merge.running:
                    self._CleanupExports(feedback_fn)
            finally:
                if failed and snapshot is not None:
                    feedback_fn("Merging the snapshot back into the instance's disks")
                try:
                    merge.finish()
                except OpExecError as err:
                    if not failed:
                        raise
                    merged = False
                    self.LogWarning(str(err))  # beside the export's own error, not instead
                if stopped_by_us and snapshot is None and not self._zeroing_unclear:
                    started_again = self._start_after_export(feedback_fn, failed)
            if self.op.remove_instance:
                self._remove_instance(feedback_fn)
        except OperationCanceled as err:
            raise OperationCanceled(
                f"{err}; {self._after_cancel(snapshot, started_again, merged)}"
            ) from err
        except OpExecError as err:  # a step after the commit point fails: said, not undone
            if not self._published:
                raise
            raise self._export_kept_error(err) from err
        if not merge.running:
            self._CleanupExports(feedback_fn)
        self._note_late_cancel()
        return True, [True] * len(sources)

    def _export_kept_error(self, err: OpExecError) -> OpExecError:
        """The error of a step after the commit point, saying that the export is complete.

        Of the same class, error code and node as ``err`` (what the job log,
        RAPI and the CLI's exit code go by), its message extended.
        """
        return type(err)(
            f"{err.msg}; the export itself is complete in {self._published}", err.ecode, err.node
        )

    def _stop_if_canceled(self, feedback_fn: FeedbackFn, when: str) -> None:
        """OperationCanceled (after removing ``.new``) once the job was asked to stop."""
        cancel = self.proc.cancel
        if not cancel.is_set():
            return
        self._abort_export(feedback_fn)
        raise OperationCanceled(
            f"Export of {self.instance.name} to {self.dst_node.name} canceled"
            f" ({cancel_reason(cancel)}) {when}"
        )

    def _after_cancel(
        self, snapshot: SnapshotInfo | None, started_again: bool, merged: bool
    ) -> str:
        """What a canceled export left (said once the rollback is done)."""
        newdir = f"{self.cluster.export_dir}/{self.instance.name}{exportinfo.NEW_SUFFIX}"
        text = (
            f"{self.dst_node.name}:{newdir}"
            f" {'removed' if self._new_removed else 'could not be removed'};"
            f" an earlier export {self.instance.name} on {self.dst_node.name}, if any, is untouched"
        )
        if snapshot is not None and merged:
            text += f"; the snapshot was merged back, {self.instance.name} runs on its own disks"
        elif snapshot is not None:
            text += "; the snapshot could not be merged back (the next operation on the instance"
            text += " retries)"
        elif started_again:
            text += f"; {self.instance.name} was started again"
        return text

    def _copy_disks(self, feedback_fn: FeedbackFn, sources: list[str]) -> exportinfo.Manifest:
        """Copy every disk into ``<instance>.new`` on the target; the manifest of the copies.

        On failure the incomplete ``.new`` is removed (the previous export stays).
        """
        inst, dst = self.instance, self.dst_node
        newdir = node_call(self.rpc.export_prepare, dst, self.cluster, inst.name).Raise(
            f"Could not prepare the export directory on {dst.name}"
        )
        manifest = exportinfo.Manifest(inst.name, self.pnode.name, int(time.time()))
        try:
            self._prewarm_other_nodes()
            for idx, src in enumerate(sources):
                self._stop_if_canceled(feedback_fn, f"before copying disk/{idx}")
                manifest.disks.append(self._copy_disk(feedback_fn, idx, src, newdir))
        except OperationCanceled:
            raise
        except BaseException:
            self._abort_export(feedback_fn)
            raise
        return manifest

    def _copy_disk(
        self, feedback_fn: FeedbackFn, idx: int, src: str, newdir: str
    ) -> exportinfo.DiskManifest:
        dst = self.dst_node
        fname = exportinfo.disk_file_name(idx)
        feedback_fn(f"Exporting disk/{idx} to {dst.name}")
        res = node_call(
            self.rpc.copy_disk,
            self.pnode,
            src,
            dst,
            f"{newdir}/{fname}",
            compress=self.op.compress,
            bandwidth_limit=self.op.bandwidth_limit,
            progress_fn=progress.ProgressReporter(feedback_fn, f"disk/{idx}"),
            session=self.session,
            cancel=self.proc.cancel,
        )
        if copy_canceled(res, self.proc.cancel):
            feedback_fn(
                f"Copy of disk/{idx} stopped on {self.pnode.name} and {dst.name};"
                f" removing {dst.name}:{newdir}"
            )
            self._abort_export(feedback_fn)
            raise OperationCanceled(
                f"Export of {self.instance.name} to {dst.name} canceled"
                f" ({cancel_reason(self.proc.cancel)}) while copying disk/{idx}"
            )
        ecode = res.error.ecode if res.error is not None else None
        stats = res.Raise(f"Export of disk/{idx} failed", ecode=ecode)
        feedback_fn(
            f"disk/{idx}: {stats.size // MiB} MiB, {stats.sent} bytes sent"
            f" ({stats.allocated} allocated), {stats.checksum_text}"
        )
        return exportinfo.DiskManifest(
            idx,
            fname,
            stats.size,
            stats.checksum,
            stats.allocated,
            checksum_algorithm=stats.checksum_algorithm,
        )

    def _prewarm_other_nodes(self) -> None:
        """Let the job's session connect to the nodes ``_CleanupExports`` visits.

        A hint: the connections open in the background while the copy runs,
        so the clean-up after it finds them ready.
        """
        data = self.cfg.snapshot()  # read-only: lookups
        skip = {self.dst_node.name, self.pnode.name}
        others = [n for n in data.nodes.values() if n.name not in skip and not n.offline]
        if others:
            self.session.prewarm(others)

    def _publish(self, feedback_fn: FeedbackFn, manifest: exportinfo.Manifest) -> None:
        """Write config.ini and the manifest and publish ``.new`` atomically: the commit point.

        Until the rename into place a failure removes ``.new`` (the previous
        export stays, or is put back) and fails the export. From the rename
        on the export is complete and visible (``self._published``): what
        the publish could not do after it is a warning, and a publish that
        failed (or whose answer was lost) counts as done when the target
        shows it renamed into place.
        """
        inst, dst, cluster = self.instance, self.dst_node, self.cluster
        try:
            hvparams = cluster.fill_hvparams(inst)
            config = exportinfo.build_config(
                inst, self.pnode.uuid, cluster.fill_beparams(inst), hvparams
            )
            manifest.translated = exportinfo.translated_hvparams(hvparams)
            res = node_call(
                self.rpc.export_finalize,
                dst,
                cluster,
                inst.name,
                exportinfo.config_to_text(config),
                manifest.to_json(),
            )
            written = int(config[exportinfo.INISECT_EXP]["timestamp"])
            published = res.payload if res.ok else self._published_after_all(written)
            if published is None:
                res.Raise("Export finalization failed")
        except BaseException:
            self._abort_export(feedback_fn)
            raise
        assert published is not None
        self._published = f"{dst.name}:{published.path}"
        if self._reservations:
            self._reservations[-1].release()  # the copies are in place: they hold their space
        if not res.ok:
            published.left.append(f"its publishing reported an error: {res.fail_msg}")
        for left in published.left:
            self.LogWarning(f"Export of {inst.name} is complete in {self._published}, but {left}")
        feedback_fn(f"Export of {inst.name} is in {self._published}")

    def _published_after_all(self, timestamp: int) -> PublishedExport | None:
        """The export, if the target shows it renamed into place (its publish failed
        after the rename, or its answer was lost); else None.

        Only that rename takes ``.new`` away while this job holds the
        instance's export lock, so a complete export without a ``.new``
        beside it, whose config.ini has the ``timestamp`` this job wrote,
        is this one (the timestamp tells it from the previous export when
        ``.new`` went away some other way).
        """
        path = f"{self.cluster.export_dir}/{self.instance.name}"
        res = node_call(self.rpc.export_list, self.dst_node, self.cluster)
        if res.payload is None:  # cannot tell: not published, as far as this job knows
            return None
        found = {e.path: e for e in res.payload}
        entry = found.get(path)
        new = backup_space.new_dir(self.cluster, self.instance)
        if new in found or entry is None or not entry.complete:
            return None
        return PublishedExport(path) if entry.timestamp == timestamp else None

    def _note_late_cancel(self) -> None:
        """Warn that a cancel request came after the commit point (the export was kept)."""
        cancel = self.proc.cancel
        if cancel.is_set():
            self.LogWarning(
                f"The cancel request ({cancel_reason(cancel)}) came after the export's commit"
                f" point (its publishing): the export in {self._published} is complete and kept"
            )

    def _abort_export(self, feedback_fn: FeedbackFn) -> None:
        res = node_call(self.rpc.export_abort, self.dst_node, self.cluster, self.instance.name)
        res.Warn(f"Could not remove the incomplete export on {self.dst_node.name}", feedback_fn)
        self._new_removed = res.ok

    def _remove_instance(self, feedback_fn: FeedbackFn) -> None:
        """Ganeti's RemoveInstance: undefine, remove disks, drop the config entry."""
        name, ignore = self.instance.name, self.op.ignore_remove_failures
        feedback_fn(f"Removing instance {name}")
        res = node_call(self.rpc.undefine_instance, self.pnode, name)
        removal_step(res, f"Could not undefine instance {name}", ignore, feedback_fn)
        res = node_call(self.rpc.remove_disks, self.pnode, self.cluster, self.instance)
        removal_step(res, f"Could not remove the disks of instance {name}", ignore, feedback_fn)
        self.cfg.remove_instance(name)
