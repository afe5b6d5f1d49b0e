"""LUNodeMigrate and LUNodeEvacuate: move the instances off a node.

``node migrate`` live-migrates every instance marked up whose primary is
the node; ``node evacuate`` also fails over the stopped ones (their disks
copied for ``file``), and running instances whose migration is impossible
fall back to a failover (not a paused one: the plan leaves it paused where
it is, and its move would refuse it). The plan comes first: every candidate node is
asked its facts (memory within its cap, bridges, storage paths, CPU
compatibility) and the placement allocator (``cmdlib.allocator``) places
the instances; the plan is logged, and is all a dry run does. An instance
no node can take is reported with the reason and stays where it is.

The plan is made under the node's lock, shared: an operation that is still
bringing an instance onto the node (it holds the node exclusively) ends
first, and its instance is in the plan. The lock is let go once the plan is
made, so the moves' own locks decide from then on.

Then every move runs as a job of its own under this one
(``cmdlib.node_moves``): the single-instance migration or failover with
all its checks and guarantees, within the per-source and per-target
limits (cluster settings, overridden per call). The node operation itself
holds no lock while they run, not even the shared Big Ganeti Lock: each
move takes its own (an operation holding an instance's lock and waiting for
the node would otherwise wait for the node operation, which waits for that
instance's move; and an operation waiting for the BGL exclusively, node add
say, keeps the moves' shared takes behind it while it waits for the node
operation's, which waits for the moves). As in Ganeti, whose node
evacuation ends once it has submitted its jobs, node add or cluster modify
run between two moves. An instance that another operation brought onto the
node after the plan fails the node operation, named as such.

The moves are planned opcodes (``planned_from``): the plan placed them within their
targets' memory, so they take their node and node-resource locks shared
and run side by side, while any other operation that needs these nodes
exclusively waits for them. Each move still checks its target's free
memory, and reserves its instance's memory there until its job ends
(``ganeti_lv.reservations``): the moves of two node operations to one node
do not count the same free memory (``cmdlib.memory_reservation``), and the
plan counts a node's free memory less what other operations' moves
reserved there for instances still on their way.
Its result lists every instance's move, job and node; it fails when any
instance did not move, naming where every instance is and the job of each
move that ran.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from functools import partial
from typing import Any

from ganeti_lv import constants, locking
from ganeti_lv.cmdlib import allocator
from ganeti_lv.cmdlib.base import LogicalUnit, register_lu
from ganeti_lv.cmdlib.common import (
    check_node_takes_instances,
    concurrently,
    expand_node,
    get_node,
    unsettled_state,
)
from ganeti_lv.cmdlib.memory_reservation import arrivals
from ganeti_lv.cmdlib.migration_checks import (
    instance_bridges,
    instance_memory,
    migrating_memory,
    storage_paths,
)
from ganeti_lv.cmdlib.node_moves import CANCELED, DONE, UNPLACED, Move, MoveScheduler
from ganeti_lv.errors import (
    ECODE_INVAL,
    ECODE_STATE,
    OperationCanceled,
    OpExecError,
    OpPrereqError,
)
from ganeti_lv.hypervisor.base import DomainInfo
from ganeti_lv.node.transport import node_call
from ganeti_lv.objects import Cluster, ConfigData, Instance, Node
from ganeti_lv.opcodes import (
    OpCode,
    OpInstanceFailover,
    OpInstanceMigrate,
    OpNodeEvacuate,
    OpNodeMigrate,
)

FeedbackFn = Callable[[str], None]

MIGRATE = "migrate"
FAILOVER = "failover"
# the error of an instance that came onto the node after the plan was made
ARRIVED = "it came onto the node during this operation, after its plan: run it again"


class _NodeMovesLU(LogicalUnit):
    """The plan and the moves; subclasses say which instances move and how (and their hooks)."""

    REQ_BGL = False
    CANCELED_IN_EXEC = True  # its POST hooks run whatever becomes of the moves
    WHAT = "move"

    def ExpandNames(self) -> None:
        """Names only: each instance's move takes its own locks."""
        # an instance allocator named (Ganeti's hail) stands for the built-in placement
        if self.op.iallocator and self.op.target_node:
            raise OpPrereqError("Do not specify both, iallocator and node", ECODE_INVAL)
        self.op.node_name = expand_node(self.cfg, self.op.node_name)
        if self.op.target_node:
            self.op.target_node = expand_node(self.cfg, self.op.target_node)
            if self.op.target_node == self.op.node_name:
                raise OpPrereqError(
                    f"Cannot move the instances of node {self.op.node_name} onto itself",
                    ECODE_INVAL,
                )
        # the plan waits for an operation bringing an instance onto the node
        self.needed_locks = {locking.LEVEL_NODE: [self.op.node_name]}
        self.share_locks[locking.LEVEL_NODE] = 1

    # ------------------------------------------------------------ subclasses
    def _kind(self, inst: Instance, source: Node) -> str | None:
        """How ``inst`` moves off ``source`` (MIGRATE, FAILOVER), or None when it stays."""
        raise NotImplementedError

    def _opcode(self, move: Move) -> OpCode:
        """The opcode of one move (to ``move.target``)."""
        raise NotImplementedError

    def _unmovable(self, inst: Instance, source: Node) -> str:
        """Why ``inst`` cannot leave ``source`` at all, or "" when it may."""
        return ""

    # ------------------------------------------------------------ the plan
    def CheckPrereq(self) -> None:
        """Which instances move, the candidate nodes' facts, the plan (logged)."""
        data = self.cfg.snapshot()
        self.cluster = data.cluster
        source = get_node(self.cfg, self.op.node_name)
        if self.op.target_node:
            check_node_takes_instances(self.cfg, self.op.target_node)
        kinds = self.kinds = self._kinds(data, source)
        instances = [data.instances[name] for name in kinds]
        self.on_source = self._domains_on(source) if MIGRATE in kinds.values() else {}
        self.unsettled = {
            name: text
            for name, dom in self.on_source.items()
            if (text := unsettled_state(dom.state, source.name))
        }
        self.needs = [self._need(inst, kinds[inst.name], source) for inst in instances]
        self.fits = self._fits(data, source, instances)
        self.plan = allocator.plan(self.needs, self.fits, self.op.target_node)
        if not self.needs:
            self.LogInfo(f"No instance to {self.WHAT} on node {source.name}")
        else:
            self.Log(f"Plan for node {source.name}:")
            for line in self.plan.lines(self.needs):
                self.Log(f"  {line}")
        self.dry_run_result = self._plan_result()
        self.ReleaseLocks(locking.LEVEL_NODE)  # the moves take their own

    def _kinds(self, data: ConfigData, source: Node) -> dict[str, str]:
        """How each instance on ``source`` moves (``_kind``), those that move, by name."""
        kinds = {}
        for inst in sorted(data.instances.values(), key=lambda i: i.name):
            if inst.primary_node == source.name:
                kind = self._kind(inst, source)
                if kind is not None:
                    kinds[inst.name] = kind
        return kinds

    def _arrived(self) -> list[Move]:
        """The instances another operation brought onto the node after the plan, which
        would have moved: not moved (``ARRIVED``)."""
        data = self.cfg.snapshot()
        source = data.nodes.get(self.op.node_name)
        if source is None:
            return []
        try:
            now = self._kinds(data, source)
        except OpPrereqError:  # node migrate of a node offline since: every one would have
            now = {
                i.name: MIGRATE for i in data.instances.values() if i.primary_node == source.name
            }
        arrived = []
        for name, kind in sorted(now.items()):
            if name not in self.kinds:
                move = Move(name, source.name, "", kind, status=UNPLACED, error=ARRIVED)
                move.node = source.name
                arrived.append(move)
        return arrived

    def _need(self, inst: Instance, kind: str, source: Node) -> allocator.Need:
        runs = kind == MIGRATE or inst.admin_state == constants.ADMINST_UP
        # a migration takes the memory the guest runs with (a start with -B may have
        # changed it), a failover starts it with its configured memory
        memory = (
            migrating_memory(self.cluster, inst, self.on_source.get(inst.name))
            if kind == MIGRATE
            else instance_memory(self.cluster, inst)
        )
        return allocator.Need(
            name=inst.name,
            node=inst.primary_node,
            memory=memory if runs else 0,
            idle_memory=0 if runs else memory,
            bridges=tuple(instance_bridges(self.cluster, inst)),
            paths=tuple(storage_paths(self.cluster, inst)),
            unmovable=self._unmovable(inst, source) or self._paused_reason(inst),
        )

    def _domains_on(self, source: Node) -> dict[str, DomainInfo]:
        """The domains on ``source``, as its libvirt sees them ({} when it does not answer:
        each move checks).

        The plan takes a migrating guest's memory from them, and leaves where
        they are the guests there but neither running nor stopped (paused;
        ``unsettled``): their migration is refused (a failover's shutdown
        would end in a destroy that loses their memory).
        """
        if source.offline:
            return {}
        res = node_call(self.rpc.instance_list, source)
        return dict(res.payload) if res.ok and res.payload is not None else {}

    def _paused_reason(self, inst: Instance) -> str:
        unsettled = self.unsettled.get(inst.name)
        if self.kinds[inst.name] != MIGRATE or not unsettled:
            return ""
        return f"{unsettled}: resume it or shut it down first"

    def _fits(
        self, data: ConfigData, source: Node, instances: list[Instance]
    ) -> list[allocator.NodeFit]:
        """Every other node's facts, asked of them at once (``concurrently``)."""
        others = sorted((n for n in data.nodes.values() if n.name != source.name), key=_name)
        paths = sorted({p for need in self.needs for p in need.paths})
        # the CPU matters for live migrations only
        migrating = [i for i in instances if self.kinds[i.name] == MIGRATE]

        def facts(node: Node) -> allocator.NodeFit:
            if node.offline or not instances:
                return allocator.NodeFit(node.name, 0, offline=node.offline)
            # its instances before its free memory: one arriving in between is
            # counted twice, never missed (as ``memory_reservation`` does)
            arriving = arrivals(self.rpc, self.ctx.data_dir, node)
            info = node_call(self.rpc.node_info, node)
            found = node_call(self.rpc.paths_exist, node, paths)
            why = ""
            if not info.ok or info.payload is None:
                why = f"no answer: {info.fail_msg}"
            elif not found.ok:
                why = f"cannot check storage paths: {found.fail_msg}"
            for inst in migrating:
                res = node_call(self.rpc.compare_cpu, node, source, inst)
                need = next(n for n in self.needs if n.name == inst.name)
                if res.ok and res.payload and not res.payload[0]:
                    need.refused[node.name] = f"CPU not compatible: {res.payload[1]}"
                elif not res.ok and (res.error is None or res.error.node != source.name):
                    need.refused[node.name] = f"cannot compare CPUs: {res.fail_msg}"
                # a comparison the source could not make (its guest gone meanwhile) turns no
                # node away: the move checks the CPU again itself
            return allocator.NodeFit(
                node.name,
                arriving.free(info.payload) if info.ok and info.payload else 0,
                drained=node.drained,
                vm_capable=node.vm_capable,
                bridges=frozenset(info.payload.bridges if info.ok and info.payload else ()),
                paths=frozenset(p for p, ok in (found.payload or {}).items() if ok),
                incompatible=why,
            )

        return concurrently([partial(facts, node) for node in others])

    def _plan_result(self) -> list[dict[str, Any]]:
        out = []
        for need in self.needs:
            target = self.plan.placed.get(need.name)
            out.append(
                {
                    "instance": need.name,
                    "kind": self.kinds[need.name],
                    "source": need.node,
                    "target": target,
                    "memory": need.memory,
                    "error": self.plan.unplaced.get(need.name, ""),
                }
            )
        return out

    # ------------------------------------------------------------ the moves
    def _limits(self, cluster: Cluster) -> tuple[int, int]:
        source = self.op.max_parallel or cluster.max_parallel_source
        target = self.op.max_parallel_target or cluster.max_parallel_target
        return int(source), int(target)

    def _replace(self, move: Move, failed: set[str]) -> tuple[str | None, str]:
        """A new target for ``move`` on the nodes that did not fail, within the plan.

        The nodes' flags are read again: one offlined or drained since the
        plan is no candidate.
        """
        if self.op.target_node:
            return None, f"the target node {self.op.target_node} was given"
        need = next(n for n in self.needs if n.name == move.instance)
        fits = [
            replace(
                self._flags_now(f),
                memory_free=self.plan.free_after.get(f.name, 0),
                failed=f.name in failed,
            )
            for f in self.fits
        ]
        again = allocator.plan([need], fits)
        new = again.placed.get(need.name)
        if new is None:
            return None, again.unplaced.get(need.name, "")
        self.plan.free_after[new] -= need.memory
        self.plan.free_after[move.target] += need.memory
        return new, ""

    def _flags_now(self, fit: allocator.NodeFit) -> allocator.NodeFit:
        """``fit`` with its node's flags read again (a node gone since reads offline)."""
        node = self.cfg.get_node(fit.name)
        return replace(
            fit,
            offline=node is None or node.offline,
            drained=node is not None and node.drained,
            vm_capable=node is not None and node.vm_capable,
        )

    def _unfit(self, name: str) -> str:
        """What keeps node ``name`` from taking instances now (its flags read again), or ""."""
        return allocator.flags_refusal(self._flags_now(allocator.NodeFit(name, 0)))

    def _start_move(
        self, move: Move, relay: Callable[[str], None]
    ) -> tuple[int, Callable[[], Any]]:
        """Start ``move``'s job; the node operation's cancel request reaches it."""
        assert move.op is not None
        return self.proc.run_child(move.op, relay, self.proc.cancel)

    def Exec(self, feedback_fn: FeedbackFn) -> list[dict[str, Any]]:
        """Run the moves of the plan; every instance's outcome (raises if one did not move)."""
        self.ReleaseLocks(locking.LEVEL_CLUSTER)  # the moves take their own (module doc)
        moves = []
        for need in self.needs:
            target = self.plan.placed.get(need.name)
            move = Move(need.name, need.node, target or "", self.kinds[need.name])
            if target is None:
                move.status, move.error = UNPLACED, self.plan.unplaced.get(need.name, "")
            else:
                move.op = self._opcode(move)
            moves.append(move)
        max_source, max_target = self._limits(self.cfg.get_cluster())
        scheduler = MoveScheduler(
            moves,
            start=self._start_move,
            log=self.Log,
            cancel=self.proc.cancel,
            max_source=max_source,
            max_target=max_target,
            replace=self._replace,
            retarget=self._opcode,
            unfit=self._unfit,
        )
        scheduler.run()
        for move in moves:
            inst = self.cfg.get_instance(move.instance)
            move.node = inst.primary_node if inst is not None else ""
            self.Log(
                f"{move.instance}: {move.status}, on node {move.node or '?'}"
                + (f" ({move.error})" if move.error else "")
            )
        for move in self._arrived():
            self.Log(f"{move.instance}: {move.status}, on node {move.node} ({move.error})")
            moves.append(move)
        result = [m.to_dict() for m in moves]
        stuck = [m for m in moves if m.status != DONE]
        if stuck:
            if self.HPATH is not None:
                # Ganeti's node migrate runs its post hooks once its jobs are submitted,
                # whatever becomes of them: a pre/post pair is never left half done
                self.proc.RunPostHook(self, self.cfg.get_cluster().master_node)
            canceled = any(m.status == CANCELED for m in moves)
            places = ", ".join(_place(m) for m in moves)
            raise (OperationCanceled if canceled else OpExecError)(
                f"{len(stuck)} of {len(moves)} instance(s) of node {self.op.node_name} did not"
                f" move{' (canceled)' if canceled else ''}: "
                + "; ".join(f"{m.instance}: {m.status}: {m.error}" for m in stuck)
                + f". Instances now: {places}",
                ECODE_STATE,
            )
        return result


def _name(node: Node) -> str:
    return node.name


def _place(move: Move) -> str:
    """Where ``move``'s instance is, and the job of its move when it ran as one.

    The failed operation's error is all a remote client gets (Ganeti's
    encoded error, no ``jobs`` list): the jobs it names are there to follow.
    """
    job = f" (job {move.job_id})" if move.job_id is not None else ""
    return f"{move.instance} on {move.node or '?'}{job}"


@register_lu(OpNodeMigrate)
class LUNodeMigrate(_NodeMovesLU):
    """Live-migrate every running instance off a node (Ganeti's LUNodeMigrate).

    Its hooks run on the master, before the plan's moves and after them
    (each move runs its own instance-migrate hooks).
    """

    HPATH = constants.HPATH_NODE_MIGRATE
    HTYPE = constants.HTYPE_NODE
    WHAT = "migrate"

    def BuildHooksEnv(self) -> dict[str, Any]:
        """Ganeti's node-migrate keys."""
        return {
            "NODE_NAME": self.op.node_name,
            "ALLOW_RUNTIME_CHANGES": self.op.allow_runtime_changes,
        }

    def BuildHooksNodes(self) -> tuple[list[str], list[str]]:
        """The master, before and after (as Ganeti's)."""
        master = [self.cfg.get_cluster().master_node]
        return master, master

    def _kind(self, inst: Instance, source: Node) -> str | None:
        if source.offline:
            raise OpPrereqError(
                f"Node {source.name} is offline: nothing can be migrated off it"
                " (node evacuate fails its instances over)",
                ECODE_STATE,
            )
        return MIGRATE if inst.admin_state == constants.ADMINST_UP else None

    def _opcode(self, move: Move) -> OpCode:
        return OpInstanceMigrate(
            instance_name=move.instance,
            target_node=move.target,
            mode=self.op.mode,
            live=self.op.live,
            allow_runtime_changes=self.op.allow_runtime_changes,
            ignore_hvversions=self.op.ignore_hvversions,
            ignore_ipolicy=self.op.ignore_ipolicy,
            planned_from=move.source,
        )


@register_lu(OpNodeEvacuate)
class LUNodeEvacuate(_NodeMovesLU):
    """Move every instance off a node: migrate the running ones, fail over the others.

    No hooks of its own, as Ganeti's; each move runs its instance's hooks.
    """

    WHAT = "evacuate"

    def _kind(self, inst: Instance, source: Node) -> str | None:
        if self.op.secondary_only:  # no instance has a secondary node
            return None
        # an offline node cannot send a live migration: everything is failed over
        if inst.admin_state == constants.ADMINST_UP and not source.offline:
            return MIGRATE
        return FAILOVER

    def _unmovable(self, inst: Instance, source: Node) -> str:
        if source.offline and inst.disk_template == constants.DT_FILE:
            return f"its 'file' disks are on offline node {source.name}: they cannot be moved"
        return ""

    def _opcode(self, move: Move) -> OpCode:
        if move.kind == MIGRATE:
            return OpInstanceMigrate(
                instance_name=move.instance,
                target_node=move.target,
                mode=self.op.mode,
                allow_failover=True,
                planned_from=move.source,
            )
        return OpInstanceFailover(
            instance_name=move.instance,
            target_node=move.target,
            shutdown_timeout=self.op.shutdown_timeout,
            planned_from=move.source,
        )
