"""The TLMigrateInstance tasklet: migration, failover and cleanup of one instance
(its LUs, LUInstanceMigrate and LUInstanceFailover, are in ``instance_move``).

Ganeti's semantics (prechecks in Ganeti's order with its error codes, the
cleanup algorithm, the failover fallback), with what Ganeti lacks: live
migration of node-local (``file``) disks with copy-storage, a convergence
policy, progress reports and a clean abort.

The failover's Exec is in ``instance_failover``, the cleanup's in
``migration_cleanup``. The only configuration
change of a migration or failover is the instance's primary node, written
after both sides are finalised. When a migration fails, the nodes are
asked where the instance really runs and the answer, not the hope, decides
what is reported and recorded.

A cancel request (Ctrl-C, SIGTERM, ``job cancel``) aborts a live
migration's libvirt job; a failover of a ``file`` instance stops while its
disks are copied (``failover_disks``: the copy ends on both nodes, the
copies on the target are removed, the instance is started again on its
source if it is marked up).
Once the primary node is switched (the failover's point of no return) a
cancel is not honoured: the failover finishes and the job log says so. A
failover without disks to copy (shared storage) likewise finishes.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from ganeti_lv import constants, locking
from ganeti_lv.cancel import Cancellation
from ganeti_lv.cmdlib import migration_verify  # noqa: F401  (registers the verify checks)
from ganeti_lv.cmdlib.base import LogicalUnit, Tasklet
from ganeti_lv.cmdlib.common import (
    check_node_takes_instances,
    concurrently,
    get_instance,
    get_node,
    repair_disk_chain,
    unsettled_state,
)
from ganeti_lv.cmdlib.instance import check_not_running_elsewhere
from ganeti_lv.cmdlib.instance_failover import FailoverSteps
from ganeti_lv.cmdlib.memory_reservation import arrivals, reserve_memory
from ganeti_lv.cmdlib.migration_checks import (
    check_hv_versions,
    check_target_memory,
    instance_memory,
    migrating_memory,
    migration_params,
    missing_bridges,
    storage_paths,
)
from ganeti_lv.cmdlib.migration_cleanup import POSTCOPY_ADVICE, CleanupSteps
from ganeti_lv.cmdlib.space_reservation import reserve_space
from ganeti_lv.errors import (
    ECODE_ENVIRON,
    ECODE_EXISTS,
    ECODE_INVAL,
    ECODE_NORES,
    ECODE_STATE,
    ConfigurationError,
    MigrationAborted,
    MigrationNotConverged,
    NodeUnreachable,
    OpExecError,
    OpPrereqError,
)
from ganeti_lv.hypervisor.migration_types import (
    MigrationFailed,
    MigrationParams,
    MigrationProgress,
    MigrationStats,
)
from ganeti_lv.node.transport import NodeResult, node_call
from ganeti_lv.objects import Cluster, Instance, Node, disk_dir, disk_paths
from ganeti_lv.reservations import Held

FeedbackFn = Callable[[str], None]


class TLMigrateInstance(FailoverSteps, CleanupSteps, Tasklet):
    """Migrate (or fail over) one instance; shared by the migrate and failover LUs.

    ``failover`` starts as requested and may be switched on in CheckPrereq
    when ``fallback`` (allow_failover) is set and live migration is
    impossible.
    """

    def __init__(
        self,
        lu: LogicalUnit,
        instance_name: str,
        *,
        cleanup: bool = False,
        failover: bool = False,
        fallback: bool = False,
        ignore_consistency: bool = False,
        shutdown_timeout: float = constants.DEFAULT_SHUTDOWN_TIMEOUT,
        ignore_hvversions: bool = False,
        allow_runtime_changes: bool = True,
    ) -> None:
        super().__init__(lu)
        self.allow_runtime_changes = allow_runtime_changes
        self.instance_name = instance_name
        self.cleanup = cleanup
        self.failover = failover
        self.fallback = fallback
        self.ignore_consistency = ignore_consistency
        self.shutdown_timeout = shutdown_timeout
        self.ignore_hvversions = ignore_hvversions
        self.live = True
        self.params: MigrationParams | None = None  # a migration's, from CheckPrereq
        self.instance: Instance | None = None
        self.cluster: Cluster | None = None
        self.source: str = ""
        self.target: str | None = None
        self._memory: Held | None = None  # the memory reserved on the target
        self._space: Held | None = None  # the space reserved there for copied images
        # The caller's cancel request (CLI: Ctrl-C/SIGTERM) aborts the libvirt job.
        self.abort_event: Cancellation = lu.proc.cancel
        # node queries of this operation, asked once (and in parallel up front)
        self._probes: dict[tuple[str, str], NodeResult[Any]] = {}

    # ----------------------------------------------------------- probes
    def _probe(self, kind: str, node: Node, fn: Callable[[], NodeResult[Any]]) -> NodeResult[Any]:
        """``fn()``'s result for (kind, node), asked of the node once per operation."""
        key = (kind, node.name)
        res = self._probes.get(key)
        if res is None:
            res = fn()
            self._probes[key] = res
        return res

    def _node_info(self, node: Node) -> NodeResult[Any]:
        return self._probe("node_info", node, lambda: node_call(self.rpc.node_info, node))

    def _target_paths(self, node: Node) -> NodeResult[Any]:
        """The storage paths the target must have and, for ``file``, the images it must not."""
        cluster, inst = self._cluster(), self._inst()
        paths = storage_paths(cluster, inst)
        if inst.disk_template == constants.DT_FILE:
            paths += disk_paths(cluster, inst)
        return self._probe("paths", node, lambda: node_call(self.rpc.paths_exist, node, paths))

    def _source_state(self) -> NodeResult[Any]:
        src = self._node(self.source)
        return self._probe(
            "instance_info", src, lambda: node_call(self.rpc.instance_info, src, self._inst().name)
        )

    def _memory_needed(self) -> int:
        """The memory (MiB) the instance needs on the target: for a migration what it has
        as it runs now on its source, as Ganeti's (a start with temporary parameters
        may have given it more or less than configured); for a failover, which
        starts it from the configuration, or a source that does not say, its
        configured maximum."""
        if self.failover:
            return instance_memory(self._cluster(), self._inst())
        res = self._source_state()
        return migrating_memory(self._cluster(), self._inst(), res.payload if res.ok else None)

    def _source_runs(self) -> bool:
        res = self._source_state()
        return (
            res.ok and res.payload is not None and res.payload.state == constants.DOMSTATE_RUNNING
        )

    def _cpu_check(self, node: Node) -> NodeResult[Any]:
        src = self._node(self.source)
        return self._probe(
            "cpu", node, lambda: node_call(self.rpc.compare_cpu, node, src, self._inst())
        )

    def _prefetch(self, targets: list[Node]) -> None:
        """Ask the source and every candidate target their facts at once.

        The queries run at the same time, up to ``concurrently``'s limit (the
        node's SSH and libvirt connections are shared and opened once, by
        whichever query comes first; they are reused by the hooks and the
        migration). The checks
        then read the answers in Ganeti's order, so errors are raised as if
        asked one by one. The source also lists the export overlays in the
        instance's disk directory (changing nothing; Exec's disk-chain repair
        uses the answer, still valid under the instance lock, instead of
        asking again).
        """
        src = self._node(self.source)
        online = [n for n in targets if not n.offline]
        # the commands over SSH first: they take longest
        jobs: list[Callable[[], object]] = [partial(self._target_paths, n) for n in online]
        if not self.failover:
            jobs += [self._source_overlays, self._source_state, partial(self._node_info, src)]
        jobs += [partial(self._node_info, n) for n in online]
        if not self.failover and not src.offline:
            jobs += [partial(self._cpu_check, n) for n in online]
        concurrently(jobs)

    def _source_overlays(self) -> NodeResult[Any]:
        src = self._node(self.source)
        return self._probe(
            "overlays",
            src,
            lambda: node_call(self.rpc.disk_overlays, src, self._cluster(), self._inst()),
        )

    # ----------------------------------------------------------- helpers
    @property
    def op(self) -> Any:
        """The LU's opcode."""
        return self.lu.op

    def _inst(self) -> Instance:
        assert self.instance is not None
        return self.instance

    def _cluster(self) -> Cluster:
        assert self.cluster is not None
        return self.cluster

    def _node(self, name: str) -> Node:
        return get_node(self.cfg, name)

    # ------------------------------------------------------- CheckPrereq
    def CheckPrereq(self) -> None:
        """Ganeti's checks, in Ganeti's order (its TLMigrateInstance.CheckPrereq)."""
        inst = get_instance(self.cfg, self.instance_name)
        self.instance = inst
        self.cluster = self.cfg.get_cluster()
        self.source = inst.primary_node
        if not self.cleanup and not self.failover and inst.admin_state != constants.ADMINST_UP:
            if not self.fallback:
                raise OpPrereqError(
                    f"Instance '{inst.name}' is marked to be down, cannot migrate"
                    " (use --allow-failover or failover)",
                    ECODE_STATE,
                )
            self.lu.LogInfo(
                "Instance is marked down or offline, fallback allowed, switching to failover"
            )
            self.failover = True
        if inst.disk_template not in constants.DTS_MIRRORED_MIGRATABLE:
            what = "failovers" if self.failover else "migrations"
            raise OpPrereqError(
                f"Instance's disk layout '{inst.disk_template}' does not allow {what}",
                ECODE_STATE,
            )
        if self.cleanup:
            return
        target = getattr(self.op, "target_node", None)
        if target and getattr(self.op, "iallocator", None):
            raise OpPrereqError("Do not specify both, iallocator and target node", ECODE_INVAL)
        if target:
            self._prefetch([self._node(target)])
            self.target = target
            self._check_target(self._node(target), with_probes=True)
        else:
            names = sorted(n for n in self.cfg.node_names() if n != self.source)
            self._prefetch([self._node(n) for n in names])
            self.target = self._allocate()
        if self._starts_on_target():
            self._reserve_memory(self._node(self.target))
        self.lu.ReleaseLocks(locking.LEVEL_NODE, keep=[self.source, self.target])
        self.lu.ReleaseLocks(locking.LEVEL_NODE_RES, keep=[self.source, self.target])
        if not self.failover:
            self._check_running_on_primary()
        if self.failover:
            self._check_not_on_target()
            # nor on a third node: it would start a second copy (the target answered above)
            check_not_running_elsewhere(
                self.rpc,
                self.cfg.snapshot(),
                inst,
                self.lu.LogWarning,
                refusing="to fail it over (a second copy would start)",
                skip=[self.target],
            )
        if inst.disk_template == constants.DT_FILE and not self._node(self.source).offline:
            self._reserve_space(self._node(self.target))
        if not self.failover:  # bad capabilities or downtime ramp: refused before any hook
            self.params = migration_params(
                self.cluster, inst, self.op, self.live, self.lu.LogWarning, self._memory_needed()
            )

    def _check_not_on_target(self) -> None:
        """ECODE_STATE when the failover's target already runs the instance.

        A migration whose configuration change was lost leaves it there: a
        failover would copy the primary's images over the ones it runs on
        (``file``) and start a second copy (shared disks).
        """
        assert self.target is not None
        state = self._domain_state(self._node(self.target))
        if state in constants.DOMSTATES_ACTIVE:
            raise OpPrereqError(
                f"Instance {self._inst().name} is {state} on the target node {self.target},"
                f" not on its primary {self.source}: nothing was changed. Run 'gnt-lv instance"
                " migrate --cleanup' to record where it runs",
                ECODE_STATE,
            )

    def _starts_on_target(self) -> bool:
        """Whether the instance runs on the target afterwards (a stopped one failed over: not)."""
        return not self.failover or self._inst().admin_state == constants.ADMINST_UP

    def _check_target(self, node: Node, with_probes: bool) -> None:
        """Target checks in order: primary, online, drained, memory, bridges, storage, CPU."""
        inst = self._inst()
        if node.name == self.source:
            raise OpPrereqError(
                f"Cannot migrate instance {inst.name} to its primary ({node.name})",
                ECODE_STATE,
            )
        check_node_takes_instances(self.cfg, node.name)
        if not with_probes:
            return
        info = self._node_info(node).Raise(
            f"Can't get data from node {node.name}", prereq=True, ecode=ECODE_ENVIRON
        )
        if self._starts_on_target():
            self._check_memory(node, info.memory_free)
        missing = missing_bridges(self._cluster(), inst, info)
        if missing:
            raise OpPrereqError(
                f"Error checking bridges on destination node '{node.name}':"
                f" missing bridges {', '.join(missing)}",
                ECODE_ENVIRON,
            )
        self._check_storage(node)
        if not self.failover and self._source_runs():
            # the guest's CPU, read on the source: a guest that does not run
            # there is refused (or failed over) by _check_running_on_primary
            self._check_cpu(node)

    def _reserve_memory(self, node: Node) -> None:
        """The instance's memory, reserved on the target until the job ends.

        Checked against the other moves to the target (``memory_reservation``).
        """
        if self._memory is not None:  # checked again (a retry): the new one counts
            self._memory.release()
        inst = self._inst()
        self._memory = reserve_memory(
            self.rpc,
            self.lu.ctx.data_dir,
            node,
            inst.name,
            self._memory_needed(),
            recheck=bool(getattr(self.op, "planned_from", None)),
            check_memory=self._check_memory,
        )
        self.lu.proc.hold_until_opcode_end(self._memory)

    def _reserve_space(self, node: Node) -> None:
        """Room for the images copied to the target (``file``), reserved until the job ends.

        Their allocated size, against the target's free space less what the
        other jobs writing there still write (``space_reservation``).
        """
        if self._space is not None:  # checked again (a retry): the new one counts
            self._space.release()
        cluster, inst, src = self._cluster(), self._inst(), self._node(self.source)
        images = disk_paths(cluster, inst)

        def need() -> int:
            usage = node_call(self.rpc.disk_usage, src, images)
            if not usage.ok:  # nothing is copied from a source that does not answer:
                return 0  # the move refuses, saying why (the guest's state, the failover)
            return sum(int(u["allocated"]) for u in usage.payload or [])

        self._space = reserve_space(
            self.rpc,
            self.lu.ctx.data_dir,
            node,
            disk_dir(cluster, inst),
            need,
            inst.name,
            f"the file storage dir {cluster.file_storage_dir} of {node.name}",
        )
        self.lu.proc.hold_until_opcode_end(self._space)

    def forget_probes(self) -> None:
        """Ask the nodes again at the next check (a retry after a temporary shortage)."""
        self._probes.clear()

    def _check_memory(self, node: Node, free: int) -> None:
        """The target must hold the instance's memory (``check_target_memory``)."""
        check_target_memory(
            node.name,
            self._inst(),
            self._cluster(),
            free,
            self._memory_needed(),
            failover=self.failover,
            allow_runtime_changes=self.allow_runtime_changes,
        )

    def _check_storage(self, node: Node) -> None:
        """The target's storage paths exist; a ``file`` instance's images are not there yet.

        Images of the instance on the target are newer than the primary's when
        a move whose configuration change was lost left the guest there
        (stopped since): the copy would overwrite them, and its undo remove them.
        """
        cluster, inst = self._cluster(), self._inst()
        paths = storage_paths(cluster, inst)
        found = self._target_paths(node).Raise(
            f"Can't check storage paths on node {node.name}", prereq=True, ecode=ECODE_ENVIRON
        )
        missing = [p for p in paths if not found.get(p)]
        if missing:
            raise OpPrereqError(
                f"Storage paths missing on node {node.name}: {', '.join(missing)}",
                ECODE_ENVIRON,
            )
        if inst.disk_template != constants.DT_FILE:
            return
        there = [p for p in disk_paths(cluster, inst) if found.get(p)]
        if there:
            raise OpPrereqError(
                f"Disk images of instance {inst.name} already exist on node {node.name}"
                f" ({', '.join(there)}): the primary's would overwrite them; nothing was"
                " changed. A move whose configuration change was lost leaves them: run"
                f" 'gnt-lv instance migrate --cleanup {inst.name}' to record where the"
                " instance is, or remove them if they are leftovers",
                ECODE_EXISTS,
            )

    def _check_cpu(self, node: Node) -> None:
        ok, reason = self._cpu_check(node).Raise(
            f"Can't compare CPUs with node {node.name}", prereq=True, ecode=ECODE_ENVIRON
        )
        if not ok:
            raise OpPrereqError(
                f"The CPU of instance {self._inst().name} is not compatible with node"
                f" {node.name}: {reason}",
                ECODE_ENVIRON,
            )

    def _allocate(self) -> str:
        """Built-in allocator: the passing node with the most free memory (less other
        moves' reservations there)."""
        candidates: list[tuple[int, str]] = []
        reasons: list[str] = []
        for name in sorted(self.cfg.node_names()):
            node = self._node(name)
            if name == self.source:
                continue
            try:
                self._check_target(node, with_probes=True)
            except OpPrereqError as err:
                reasons.append(f"{name}: {err.msg}")
                continue
            info = self._node_info(node)
            free = (
                arrivals(self.rpc, self.lu.ctx.data_dir, node).free(info.payload)
                if info.ok and info.payload
                else 0
            )
            candidates.append((free, name))
        if not candidates:
            raise OpPrereqError(
                f"No suitable target node for instance {self._inst().name}: "
                + ("; ".join(reasons) or "no other node"),
                ECODE_NORES,
            )
        candidates.sort(key=lambda item: (-item[0], item[1]))
        chosen = candidates[0][1]
        self.lu.LogInfo(f"Selected node {chosen} as target (most free memory)")
        return chosen

    def _check_running_on_primary(self) -> None:
        """The instance runs on its primary, else failover (when allowed) or Ganeti's refusal.

        The refusal says why, as Ganeti's does: the instance is not running,
        or the primary's answer (a node that does not answer cannot say).
        A guest that is there but neither running nor stopped (paused) is
        refused also when a failover is allowed: its shutdown would end in
        a destroy that loses its memory.
        """
        res = self._source_state()
        if self._source_runs():
            return
        unsettled = unsettled_state(res.payload.state, self.source) if res.payload else ""
        if res.ok and unsettled:
            raise OpPrereqError(
                f"Can't migrate instance {self._inst().name}: {unsettled}, not running;"
                " resume it or shut it down first",
                ECODE_STATE,
            )
        why = res.fail_msg if not res.ok else f"Instance {self._inst().name} is not running"
        if self.fallback:
            self.lu.LogInfo(f"Can't migrate ({why}), fallback allowed, switching to failover")
            self.failover = True
            return
        raise OpPrereqError(f"Can't migrate, please use failover: {why}", ECODE_STATE)

    # -------------------------------------------------------------- Exec
    def Exec(self, feedback_fn: FeedbackFn) -> None:
        """Run the cleanup, the failover or the migration."""
        if self.cleanup:
            return self._exec_cleanup(feedback_fn)
        if self.failover:
            return self._exec_failover(feedback_fn)
        return self._exec_migration(feedback_fn)

    def _repair_chain(self, node: Node, unreachable_fallback: Node | None = None) -> None:
        """Merge a snapshot overlay left by an interrupted export, or refuse to go on.

        Runs before anything touches the disks; a chain that cannot be
        repaired stops the operation with nothing changed.
        ``unreachable_fallback``: the node that repairs a shared chain instead
        when ``node`` does not answer (see ``repair_disk_chain``).
        """
        known = self._probes.get(("overlays", node.name))  # asked in CheckPrereq
        overlays = known.payload if known is not None and known.ok else None
        repair_disk_chain(
            self.lu,
            node,
            self._cluster(),
            self._inst(),
            overlays=overlays,
            unreachable_fallback=unreachable_fallback,
        )

    def _exec_migration(self, feedback_fn: FeedbackFn) -> None:
        inst, cluster = self._inst(), self._cluster()
        assert self.target is not None
        src, dst = self._node(self.source), self._node(self.target)
        copy = inst.disk_template == constants.DT_FILE
        steps = 4
        self.lu.LogStep(1, steps, "Checking disks and hypervisor versions")
        self._repair_chain(src)
        self._check_versions(src, dst, feedback_fn)
        params = self.params
        assert params is not None
        if copy:
            self.lu.LogStep(2, steps, f"Preparing disk images on {dst.name}")
            made = node_call(self.rpc.create_disks, dst, cluster, inst)
            if isinstance(made.error, NodeUnreachable):
                # its answer lost: images may be its own or older ones it refused
                made.Raise(
                    f"Could not prepare disks of {inst.name} on node {dst.name}; once the"
                    " node answers, 'gnt-lv instance migrate --cleanup' removes what it may"
                    " have left there"
                )
            if not made.ok and made.error is not None and made.error.ecode != ECODE_EXISTS:
                # it failed after making some (a later disk): none is left to refuse
                # the next migration to this node
                node_call(self.rpc.remove_disks, dst, cluster, inst).Warn(
                    f"Could not remove the disk images prepared on {dst.name}", feedback_fn
                )
            made.Raise(
                f"Could not prepare disks of {inst.name} on node {dst.name}",
                ecode=made.error.ecode if made.error is not None else None,
            )
        else:
            self.lu.LogStep(2, steps, "Shared storage: nothing to prepare on the target")
        mode = "live" if params.live else "non-live"
        if params.encryption:
            mode += ", stream encrypted with TLS"
        self.lu.LogStep(3, steps, f"Migrating instance {inst.name} to {dst.name} ({mode})")

        def progress(report: MigrationProgress) -> None:
            if report.policy_step:  # a step of the convergence policy: its own line
                self.lu.LogInfo(f"convergence policy: {report.policy_step}")
            else:
                feedback_fn(report.format())

        result = node_call(
            self.rpc.migrate_instance, src, dst, cluster, inst, params, progress, self.abort_event
        )
        if result.ok:
            self.lu.LogStep(4, steps, "Finalising")
            stats = result.payload
            self._commit_target(src, dst, copy, feedback_fn)
            if stats is not None:
                feedback_fn(stats.format())
                if stats.abort_requested:
                    self.lu.LogWarning(
                        "The abort came after the switch-over: the instance was migrated"
                        f" to {dst.name}; configuration updated"
                    )
            return
        self._recover(result, src, dst, copy, feedback_fn)

    def _check_versions(self, src: Node, dst: Node, feedback_fn: FeedbackFn) -> None:
        src_info = self._node_info(src).Raise(f"Can't get data from node {src.name}")
        dst_info = self._node_info(dst).Raise(f"Can't get data from node {dst.name}")
        warnings, errors = check_hv_versions(src_info, dst_info)
        for text in warnings:
            self.lu.LogWarning(text)
        if errors:
            if not self.ignore_hvversions:
                raise OpExecError(
                    "; ".join(errors) + " (use --ignore-hvversions to migrate anyway);"
                    f" nothing was changed, instance still on {src.name}"
                )
            for text in errors:
                self.lu.LogWarning(f"{text} (ignored)")

    def _write_primary(self, dst: Node) -> Exception | None:
        """Record that the guest, migrated, runs on ``dst``; why the configuration could
        not be written (it still names the source), else None."""
        try:
            self.cfg.set_instance_primary(self._inst().name, dst.name)
        except (OSError, ConfigurationError) as err:
            return err
        return None

    def _commit_target(self, src: Node, dst: Node, copy: bool, feedback_fn: FeedbackFn) -> None:
        """The guest runs on dst: record it, then drop the source's leftovers. A write
        that fails says so and what to do: a failover from the source the configuration
        still names would start a second copy."""
        inst = self._inst()
        unwritten = self._write_primary(dst)
        if unwritten is not None:
            raise OpExecError(
                f"Instance {inst.name} runs on {dst.name} after its migration, but the"
                f" configuration could not be written ({unwritten}) and still names {src.name}:"
                f" do not fail it over; once the configuration can be written, run"
                f" 'gnt-lv instance migrate --cleanup {inst.name}'",
                ECODE_ENVIRON,
            ) from unwritten
        feedback_fn(f"Instance {inst.name} now runs on {dst.name}; configuration updated")
        if copy:
            node_call(self.rpc.remove_disks, src, self._cluster(), inst).Warn(
                f"Could not remove the old disk images on {src.name}", feedback_fn
            )
        undef = node_call(self.rpc.undefine_instance, src, inst.name)
        undef.Warn(f"Could not remove the old definition on {src.name}", feedback_fn)

    def _domain_state(self, node: Node) -> str | None:
        """The domain's state on the node, None if absent, "unknown" if unreachable."""
        return self._domain_facts(node)[0]

    def _domain_facts(self, node: Node) -> tuple[str | None, bool]:
        """(``_domain_state``, whether it is paused as a post-copy migration's source)."""
        res = node_call(self.rpc.instance_info, node, self._inst().name)
        if not res.ok:
            return "unknown", False
        info = res.payload
        return (None, False) if info is None else (info.state, info.postcopy_source)

    def _recover(
        self,
        result: NodeResult[MigrationStats],
        src: Node,
        dst: Node,
        copy: bool,
        feedback_fn: FeedbackFn,
    ) -> None:
        """A migration failed or was aborted: find the truth and act on it."""
        inst = self._inst()
        err = result.error
        aborted = isinstance(err, MigrationFailed) and err.aborted
        switched = isinstance(err, MigrationFailed) and err.switched_over

        def look() -> tuple[str | None, str | None, bool]:
            # the target first: a migration that completes between the two questions reads
            # as unclear, never as a source running beside a target's domain to remove
            return self._domain_state(dst), *self._domain_facts(src)

        dst_state, src_state, src_postcopy = look()
        unstopped = None  # why the source's job could not be aborted
        if src_state == constants.DOMSTATE_RUNNING:
            # libvirt's job may still run on the source (the connection to it dropped,
            # the target silent) and complete later: stopped, both read again
            abort = node_call(self.rpc.abort_migration, src, inst.name)
            abort.Warn(f"Could not abort the migration job on {src.name}", feedback_fn)
            unstopped = abort.fail_msg
            dst_state, src_state, src_postcopy = look()
        if (
            (switched or src_postcopy)  # the switch's answer may be what was lost
            and dst_state == constants.DOMSTATE_RUNNING
            # a source that does not answer may still hold pages: never removed unseen
            and src_state in (*constants.DOMSTATES_ACTIVE, "unknown")
        ):
            self._postcopy_split(result, src, dst, answered=src_state != "unknown")
        if src_state == dst_state == constants.DOMSTATE_RUNNING:
            raise OpExecError(
                f"Migration of instance {inst.name} failed: {result.fail_msg}; it runs on both"
                f" {src.name} and {dst.name} (it ran on {dst.name} before?); nothing was removed"
                " and the configuration is unchanged: manual intervention is needed (stop the"
                f" copy that must not run, then 'gnt-lv instance migrate --cleanup')",
                ECODE_STATE,
            )
        if dst_state == constants.DOMSTATE_RUNNING and (
            switched or src_state != constants.DOMSTATE_RUNNING
        ):
            self.lu.LogStep(4, 4, "Finalising")  # the guest runs on the target after all
            self._commit_target(src, dst, copy, feedback_fn)
            why = "the abort came after the switch-over" if aborted else result.fail_msg
            feedback_fn(
                f" - WARNING: instance {inst.name} was migrated to {dst.name} ({why});"
                " configuration updated"
            )
            return
        if src_state == constants.DOMSTATE_RUNNING and unstopped is not None:
            # a job that may still complete: nothing of the target's is removed under it
            raise OpExecError(
                f"Migration of instance {inst.name} failed: {result.fail_msg}; it runs on"
                f" {src.name} (configuration unchanged), but the migration job there could"
                f" not be stopped ({unstopped}): nothing was removed on {dst.name}. Once the"
                " job has ended, run 'gnt-lv instance migrate --cleanup'",
                ECODE_ENVIRON,
            )
        if src_state == constants.DOMSTATE_RUNNING:
            if dst_state not in (None, "unknown"):
                node_call(self.rpc.undefine_instance, dst, inst.name).Warn(
                    f"Could not remove the leftover domain on {dst.name}", feedback_fn
                )
            if copy:
                node_call(self.rpc.remove_disks, dst, self._cluster(), inst).Warn(
                    f"Could not remove the copied disk images on {dst.name}", feedback_fn
                )
            not_converged = aborted and isinstance(err, MigrationFailed) and err.by_policy
            why = (
                f"the guest did not converge within the convergence policy's limits"
                f" ({result.fail_msg})"
                if not_converged
                else result.fail_msg
            )
            text = (
                f"Migration of instance {inst.name} {'aborted' if aborted else 'failed'}:"
                f" {why}; the instance keeps running on {src.name}, configuration unchanged"
            )
            if dst_state == "unknown":
                text += (
                    f"; {dst.name} did not answer: once it does, run 'gnt-lv instance migrate"
                    " --cleanup' to remove what the migration left there"
                )
            if not_converged:
                raise MigrationNotConverged(text, ECODE_ENVIRON)
            if aborted:
                raise MigrationAborted(text)
            raise OpExecError(text)
        raise OpExecError(
            f"Migration of instance {inst.name} failed: {result.fail_msg}; state unclear"
            f" (on {src.name}: {src_state or 'absent'}, on {dst.name}: {dst_state or 'absent'});"
            " run 'gnt-lv instance migrate --cleanup'"
        )

    def _postcopy_split(
        self, result: NodeResult[MigrationStats], src: Node, dst: Node, answered: bool
    ) -> None:
        """Failed after the switch to post-copy while the source may still hold the domain.

        The guest runs on the target, but pages it has not fetched yet are
        only in the source's memory: the source is left as it is (removing it
        would lose them; one that did not ``answer`` may hold them too) and
        the configuration says where the guest runs.
        """
        inst = self._inst()
        unwritten = self._write_primary(dst)  # said after the source's memory, not instead
        recorded = (
            "configuration updated"
            if unwritten is None
            else f"the configuration could not be written and still names {src.name}: {unwritten}"
        )
        holds = (
            "still holds part of its memory"
            if answered
            else "did not answer and may still hold part of its memory"
        )
        raise OpExecError(
            f"Migration of instance {inst.name} failed after its switch to post-copy:"
            f" {result.fail_msg}. It runs on {dst.name} ({recorded}), but"
            f" {src.name} {holds} and was left as it is. {POSTCOPY_ADVICE}"
            " Then run 'gnt-lv instance migrate --cleanup'"
        )
