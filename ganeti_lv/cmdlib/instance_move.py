"""LUInstanceMigrate and LUInstanceFailover: locks, hooks and opcodes around the
TLMigrateInstance tasklet (``instance_migration``), which does the work.
"""

from __future__ import annotations

from ganeti_lv import constants, locking
from ganeti_lv.cmdlib.base import LOCKS_REPLACE, EarlyWork, LogicalUnit, register_lu
from ganeti_lv.cmdlib.common import (
    expand_instance,
    expand_node,
    get_instance,
    instance_hook_env,
    instance_nodes_ahead,
)
from ganeti_lv.cmdlib.instance_migration import FeedbackFn, TLMigrateInstance
from ganeti_lv.errors import ECODE_STATE, OpPrereqError
from ganeti_lv.opcodes import OpInstanceFailover, OpInstanceMigrate


def _declare_node_locks(lu: LogicalUnit, level: int, primary: str, target: str | None) -> None:
    assert lu.needed_locks is not None
    if target:
        lu.needed_locks[level] = sorted({primary, target})
    else:
        lu.needed_locks[level] = locking.ALL_SET


class _MoveLU(LogicalUnit):
    """Shared locking and hooks of the migrate and failover LUs."""

    HTYPE = constants.HTYPE_INSTANCE
    REQ_BGL = False
    _migrater: TLMigrateInstance

    def _expand(self) -> None:
        self.op.instance_name = expand_instance(self.cfg, self.op.instance_name)
        if self.op.target_node:
            self.op.target_node = expand_node(self.cfg, self.op.target_node)
        self.needed_locks = {
            locking.LEVEL_INSTANCE: [self.op.instance_name],
            locking.LEVEL_NODE: [],
            locking.LEVEL_NODE_RES: [],
        }
        self.recalculate_locks[locking.LEVEL_NODE] = LOCKS_REPLACE
        self._old_primary = ""
        if self.op.planned_from:  # a move of a node operation: see cmdlib.node_evacuate
            self.share_locks[locking.LEVEL_NODE] = self.share_locks[locking.LEVEL_NODE_RES] = 1

    def EarlyWork(self) -> EarlyWork | None:
        """Warm the connections to the master, the primary and the target (a hint)."""
        found = instance_nodes_ahead(self.cfg, self.op.instance_name, self.op.target_node)
        return EarlyWork(nodes=found[2]) if found is not None else None

    def DeclareLocks(self, level: int) -> None:
        """Node and node-res locks: primary + target (all nodes when allocating).

        A cleanup locks every node, as Ganeti's: it may find the instance on
        any of them, make that node the primary and clean up on the others.
        """
        if level in (locking.LEVEL_NODE, locking.LEVEL_NODE_RES):
            inst = get_instance(self.cfg, self.op.instance_name)
            target = None if self.op.cleanup else self.op.target_node
            _declare_node_locks(self, level, inst.primary_node, target)

    def CheckPrereq(self) -> None:
        """Run the tasklet's checks; remember the node the instance leaves.

        A node operation's move is refused when its instance has left the
        node it was planned from (another job moved it: it is not moved again).
        """
        planned_from = self.op.planned_from
        inst = get_instance(self.cfg, self.op.instance_name)
        if planned_from and inst.primary_node != planned_from:
            raise OpPrereqError(
                f"Instance {inst.name} is no longer on node {planned_from}"
                f" (now on {inst.primary_node}): not moved",
                ECODE_STATE,
            )
        self._migrater.CheckPrereq()
        self._old_primary = self._migrater.source

    def PrepareRetry(self, feedback_fn: FeedbackFn) -> None:
        """The nodes are asked again (memory that other moves had reserved)."""
        self._migrater.forget_probes()

    def Exec(self, feedback_fn: FeedbackFn) -> None:
        """Run the tasklet."""
        self._migrater.Exec(feedback_fn)

    def _move_env(self) -> dict[str, str]:
        m = self._migrater
        inst = get_instance(self.cfg, self.op.instance_name)
        env = instance_hook_env(self.cfg.get_cluster(), inst)
        env.update(
            {
                "OLD_PRIMARY": self._old_primary,
                "NEW_PRIMARY": m.target or self._old_primary,
                "OLD_SECONDARY": "",
                "NEW_SECONDARY": "",
            }
        )
        return env

    # whether the pre hooks run on the primary (Ganeti's failover leaves it out)
    PRE_HOOKS_ON_PRIMARY = True

    def BuildHooksNodes(self) -> tuple[list[str], list[str]]:
        """Master, primary, secondaries and the target (pre: see PRE_HOOKS_ON_PRIMARY)."""
        inst = get_instance(self.cfg, self.op.instance_name)
        master = self.cfg.get_cluster().master_node
        primary = self._old_primary or inst.primary_node
        target = [self._migrater.target] if self._migrater.target else []
        every = list(dict.fromkeys([master, primary, *inst.secondary_nodes, *target]))
        if self.PRE_HOOKS_ON_PRIMARY:
            return every, every
        return list(dict.fromkeys([master, *inst.secondary_nodes, *target])), every

    def PreparePostHookNodes(self, post_hook_node_uuids: list[str]) -> list[str]:
        """The node a cleanup found the instance on (known only in Exec) runs the post
        hooks too, as Ganeti's target does."""
        target = [self._migrater.target] if self._migrater.target else []
        return list(dict.fromkeys([*post_hook_node_uuids, *target]))


@register_lu(OpInstanceMigrate)
class LUInstanceMigrate(_MoveLU):
    """Migrate an instance (live or non-live), or clean up after an interrupted one."""

    HPATH = constants.HPATH_INSTANCE_MIGRATE

    def ExpandNames(self) -> None:
        """Lock the instance; nodes in DeclareLocks."""
        self._expand()
        self._migrater = TLMigrateInstance(
            self,
            self.op.instance_name,
            cleanup=self.op.cleanup,
            fallback=self.op.allow_failover,
            ignore_hvversions=self.op.ignore_hvversions,
            allow_runtime_changes=self.op.allow_runtime_changes,
        )

    def CheckPrereq(self) -> None:
        """Resolve the mode, then the tasklet's checks."""
        inst = get_instance(self.cfg, self.op.instance_name)
        hvp = self.cfg.get_cluster().fill_hvparams(inst)
        if self.op.live is not None:
            live = self.op.live
        else:
            live = (self.op.mode or hvp["migration_mode"]) == constants.HT_MIGRATION_LIVE
        self._migrater.live = live
        super().CheckPrereq()

    def BuildHooksEnv(self) -> dict[str, str]:
        """Ganeti's migrate keys (a failover is never live); post: OLD_PRIMARY is the node left."""
        env = self._move_env()
        env.update(
            {
                "MIGRATE_LIVE": str(self._migrater.live and not self._migrater.failover),
                "MIGRATE_CLEANUP": str(self.op.cleanup),
                "ALLOW_RUNTIME_CHANGES": str(self.op.allow_runtime_changes),
            }
        )
        return env


@register_lu(OpInstanceFailover)
class LUInstanceFailover(_MoveLU):
    """Stop an instance on its primary and start it on another node."""

    HPATH = constants.HPATH_INSTANCE_FAILOVER
    # Ganeti's nodes: a failover is what an operator does when the primary is
    # broken, so its pre hooks must not need the primary to answer (an online
    # node that cannot be reached fails the pre phase); post hooks run there
    PRE_HOOKS_ON_PRIMARY = False

    def ExpandNames(self) -> None:
        """Lock the instance; nodes in DeclareLocks."""
        self._expand()
        self._migrater = TLMigrateInstance(
            self,
            self.op.instance_name,
            cleanup=self.op.cleanup,
            failover=True,
            ignore_consistency=self.op.ignore_consistency,
            shutdown_timeout=self.op.shutdown_timeout,
        )

    def BuildHooksEnv(self) -> dict[str, str]:
        """Ganeti's failover keys."""
        env = self._move_env()
        env.update(
            {
                "IGNORE_CONSISTENCY": str(self.op.ignore_consistency),
                "SHUTDOWN_TIMEOUT": str(self.op.shutdown_timeout),
                "FAILOVER_CLEANUP": str(self.op.cleanup),
            }
        )
        return env
