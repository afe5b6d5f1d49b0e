"""LogicalUnit, NoHooksLU and Tasklet: the contract every operation implements.

The processor (``ganeti_lv.mcpu.Processor``) drives an LU through these calls,
in this order (Ganeti's lifecycle):

1. ``LU(processor, op, ctx)``; the processor has validated ``op`` already;
   then ``CheckArguments()``: checks of the parameters alone (no config, no
   nodes). Raise ``OpPrereqError(msg, ECODE_INVAL)``.
2. ``ExpandNames()``: canonicalise names (``expand_instance``/``expand_node``
   from ``cmdlib.common``) and set ``self.needed_locks``, a dict from lock
   level to a list of names or ``ALL_SET`` (``{}`` when no lock is needed).
   ``self.share_locks[level] = 1`` makes a level shared (default 0:
   exclusive). The Big Ganeti Lock (level cluster) is taken by the processor
   before the LU is built: shared, or exclusive when ``REQ_BGL = True``.
   Optionally, ``EarlyWork()`` returns work to begin while the job waits
   for its locks and runs its checks (an ``EarlyWork``: connections to
   warm up, disk copies to set up); the processor hands it to the job's
   node-operations session (``self.session``). Only a hint: nothing is
   decided by it, its lookups need no locks, and the job's own calls check
   everything again.
3. For each level from instance to network that is a key of
   ``needed_locks``: ``DeclareLocks(level)`` (the last chance to compute
   the level's names from locks already held, e.g. the nodes of a locked
   instance), then the processor takes the names, sorted.

   Example: lock an instance, then its nodes::

       def ExpandNames(self):
           self.op.instance_name = expand_instance(self.cfg, self.op.instance_name)
           self.needed_locks = {
               LEVEL_INSTANCE: [self.op.instance_name],
               LEVEL_NODE: [],
           }
           self.recalculate_locks[LEVEL_NODE] = LOCKS_REPLACE

       def DeclareLocks(self, level):
           if level == LEVEL_NODE:
               self._LockInstancesNodes()

4. ``CheckPrereq()``: verify the cluster state (with the locks held);
   nothing may change yet. ``OpPrereqError`` with an ecode on failure;
   ``ECODE_TEMP_NORES`` lets the processor call ``PrepareRetry`` and retry.
   Locks not needed anymore may be dropped with ``ReleaseLocks``.
5. ``BuildHooksNodes()`` -> (pre nodes, post nodes) and ``BuildHooksEnv()``
   -> dict without the ``GANETI_`` prefix; the PRE hooks run, then
   ``HooksCallBack("pre", results, feedback_fn, None)``.
6. Dry run: the processor returns ``dry_run_result`` (no Exec, no post hooks).
7. ``Exec(feedback_fn)`` does the work and returns the result.
8. ``BuildHooksEnv()`` again (keys get ``GANETI_POST_``), post nodes via
   ``PreparePostHookNodes``, POST hooks, ``HooksCallBack("post", ...)``
   whose return value is the result. Post hooks do not run if Exec raised.

With ``tasklets`` set (a list of ``Tasklet``), the base ``CheckPrereq`` and
``Exec`` run each tasklet's ``CheckPrereq``/``Exec`` in order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from ganeti_lv import locking
from ganeti_lv.errors import ECODE_FAULT, GenericError, OpPrereqError
from ganeti_lv.locking import ALL_SET, _AllSet
from ganeti_lv.opcodes import OpCode

if TYPE_CHECKING:
    from ganeti_lv.config import ConfigStore
    from ganeti_lv.context import Context
    from ganeti_lv.hypervisor.base import CopyAhead, NodeOps, NodeSession
    from ganeti_lv.objects import Node

FeedbackFn = Callable[[str], None]
NeededLocks = dict[int, "list[str] | _AllSet"]

LOCKS_REPLACE = "replace"
LOCKS_APPEND = "append"

LU_REGISTRY: dict[type[OpCode], type[LogicalUnit]] = {}
LUType = TypeVar("LUType", bound="LogicalUnit")


def register_lu(opcode_cls: type[OpCode]) -> Callable[[type[LUType]], type[LUType]]:
    """Class decorator: ``@register_lu(OpX)`` makes the processor run OpX with this LU."""

    def decorate(lu_cls: type[LUType]) -> type[LUType]:
        existing = LU_REGISTRY.get(opcode_cls)
        if existing is not None and existing is not lu_cls:
            raise ValueError(f"{opcode_cls.__name__} is already handled by {existing.__name__}")
        LU_REGISTRY[opcode_cls] = lu_cls
        return lu_cls

    return decorate


@dataclass
class EarlyWork:
    """Work an LU asks to begin as soon as its names are expanded (hints only).

    ``nodes``: nodes whose connections the job will use (hooks, checks);
    ``copies``: disk copies the job will make, to set up ahead.
    """

    nodes: list[Node] = field(default_factory=list)
    copies: list[CopyAhead] = field(default_factory=list)


class LogicalUnit:
    """Base of every operation's logic; see the module docstring for the contract.

    Class attributes: ``HPATH`` (hooks path, e.g. "instance-migrate"; None:
    no hooks), ``HTYPE`` (hooks object type, e.g. "INSTANCE"), ``REQ_BGL``
    (True: the Big Ganeti Lock is taken exclusively), ``QUERY`` (True: a
    read that may also run without a job, ``ganeti_lv.mcpu.run_query``; such
    an LU has no hooks, takes no lock and changes nothing), ``CANCELED_IN_EXEC``
    (True: a cancel asked for once the PRE hooks have run is left to Exec,
    which ends the operation with its POST hooks; else the operation stops
    before Exec).
    """

    HPATH: ClassVar[str | None] = None
    HTYPE: ClassVar[str | None] = None
    REQ_BGL: ClassVar[bool] = True
    QUERY: ClassVar[bool] = False
    CANCELED_IN_EXEC: ClassVar[bool] = False

    def __init__(self, processor: Any, op: Any, ctx: Context) -> None:
        self.proc = processor
        self.op = op
        self.ctx = ctx
        self.cfg: ConfigStore = ctx.config
        self.needed_locks: NeededLocks | None = None
        self.share_locks: dict[int, int] = dict.fromkeys(locking.LEVELS, 0)
        self.recalculate_locks: dict[int, str] = {}
        self.tasklets: list[Tasklet] | None = None
        self.dry_run_result: Any = None
        self.CheckArguments()

    @property
    def rpc(self) -> NodeOps:
        """The node operations (``ctx.node_ops``); call them through ``node_call``."""
        return self.ctx.node_ops

    @property
    def session(self) -> NodeSession:
        """The job's node-operations session (work begun ahead for this job)."""
        session: NodeSession = self.proc.session
        return session

    # ------------------------------------------------------------ contract
    def CheckArguments(self) -> None:
        """Check the opcode's parameters on their own (no cluster state)."""

    def ExpandNames(self) -> None:
        """Canonicalise names and set ``self.needed_locks`` (a dict; {} for none)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement ExpandNames")

    def EarlyWork(self) -> EarlyWork | None:
        """Work to begin while the job waits for locks (see the module docstring)."""
        return None

    def DeclareLocks(self, level: int) -> None:
        """Compute the names of ``level`` from the locks held so far (optional)."""

    def CheckPrereq(self) -> None:
        """Check the cluster state; the base runs the tasklets' CheckPrereq."""
        for tasklet in self.tasklets or []:
            tasklet.CheckPrereq()

    def BuildHooksEnv(self) -> dict[str, Any]:
        """Hook environment (keys without the GANETI_ prefix)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement BuildHooksEnv")

    def BuildHooksNodes(self) -> tuple[list[str], list[str]]:
        """(pre-phase node names, post-phase node names)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement BuildHooksNodes")

    def PreparePostHookNodes(self, post_hook_node_uuids: list[str]) -> list[str]:
        """Adjust the post-phase nodes after Exec (default: unchanged)."""
        return post_hook_node_uuids

    def HooksCallBack(
        self, phase: str, hook_results: Any, feedback_fn: FeedbackFn, lu_result: Any
    ) -> Any:
        """Look at hook results; the POST call's return value becomes the result."""
        return lu_result

    def Exec(self, feedback_fn: FeedbackFn) -> Any:
        """Do the work; the base runs the tasklets' Exec in order."""
        if self.tasklets is None:
            raise NotImplementedError(f"{type(self).__name__} does not implement Exec")
        for tasklet in self.tasklets:
            tasklet.Exec(feedback_fn)
        return None

    def PrepareRetry(self, feedback_fn: FeedbackFn) -> None:
        """Called when CheckPrereq failed with ECODE_TEMP_NORES, before a retry.

        Change the LU (e.g. its ``needed_locks``) so the retry can succeed.
        """

    # ---------------------------------------------------------------- locks
    def owned_locks(self, level: int) -> set[str]:
        """Names held at ``level`` by this operation."""
        return self.ctx.locks.owned(level)

    def AssertReleasedLocks(self, level: int) -> None:
        """Fail (ECODE_FAULT) if any lock of ``level`` is still held."""
        owned = self.owned_locks(level)
        if owned:
            raise GenericError(
                f"Locks at level {locking.LEVEL_NAMES[level]} still held: "
                f"{', '.join(sorted(owned))}",
                ECODE_FAULT,
            )

    def release_request(self, level: int, names: Iterable[str]) -> list[str]:
        """The sorted subset of ``names`` this operation holds at ``level``."""
        return sorted(set(names) & self.owned_locks(level))

    def ReleaseLocks(
        self,
        level: int,
        names: Iterable[str] | None = None,
        keep: Iterable[str] | None = None,
    ) -> None:
        """Release ``names`` at ``level``, or everything except ``keep``, or all."""
        if names is not None and keep is not None:
            raise GenericError("Only one of 'names' and 'keep' may be given", ECODE_FAULT)
        owned = self.owned_locks(level)
        if names is not None:
            to_release = self.release_request(level, names)
        elif keep is not None:
            to_release = sorted(owned - set(keep))
        else:
            self.ctx.locks.release(level)
            return
        if to_release or self.ctx.locks.owns_all(level):
            self.ctx.locks.release(level, to_release)

    def _LockInstancesNodes(
        self, primary_only: bool = False, level: int = locking.LEVEL_NODE
    ) -> None:
        """Set ``needed_locks[level]`` to the nodes of the locked instances.

        Per ``recalculate_locks[level]``: LOCKS_REPLACE replaces the level's
        list, LOCKS_APPEND adds to it. Call from DeclareLocks.
        """
        wanted: list[str] = []
        for name in sorted(self.owned_locks(locking.LEVEL_INSTANCE)):
            inst = self.cfg.get_instance(name)
            if inst is None:
                continue
            wanted.append(inst.primary_node)
            if not primary_only:
                wanted.extend(inst.secondary_nodes)
        assert self.needed_locks is not None
        # kept for the level's next declaration (a retry after a temporary shortage)
        mode = self.recalculate_locks.get(level, LOCKS_REPLACE)
        current = self.needed_locks.get(level)
        if mode == LOCKS_APPEND:
            if isinstance(current, _AllSet):
                return
            wanted = list(current or []) + wanted
        self.needed_locks[level] = sorted(set(wanted))

    # -------------------------------------------------------------- logging
    def LogWarning(self, msg: str, hint: str | None = None) -> None:
        """Feedback line " - WARNING: msg" (and an indented hint)."""
        self.proc.LogWarning(msg, hint=hint)

    def LogInfo(self, msg: str) -> None:
        """Feedback line " - INFO: msg"."""
        self.proc.LogInfo(msg)

    def LogStep(self, current: int, total: int, msg: str) -> None:
        """Feedback line "STEP i/n msg"."""
        self.proc.LogStep(current, total, msg)

    def Log(self, msg: str) -> None:
        """Plain feedback line."""
        self.proc.Log(msg)


class NoHooksLU(LogicalUnit):
    """An LU without hooks (HPATH None); BuildHooks* must not be called."""

    HPATH: ClassVar[str | None] = None
    HTYPE: ClassVar[str | None] = None

    def BuildHooksEnv(self) -> dict[str, Any]:
        """Never called for NoHooksLU."""
        raise AssertionError("BuildHooksEnv called for a NoHooksLU")

    def BuildHooksNodes(self) -> tuple[list[str], list[str]]:
        """Never called for NoHooksLU."""
        raise AssertionError("BuildHooksNodes called for a NoHooksLU")


class Tasklet:
    """A reusable piece of an LU: its own CheckPrereq and Exec.

    The LU builds its tasklets in ExpandNames (locking stays the LU's job)
    and sets ``self.tasklets = [...]``.
    """

    def __init__(self, lu: LogicalUnit) -> None:
        self.lu = lu
        self.cfg = lu.cfg
        self.ctx = lu.ctx

    @property
    def rpc(self) -> NodeOps:
        """The node-operations facade."""
        return self.lu.rpc

    def CheckPrereq(self) -> None:
        """Check the tasklet's prerequisites (default: nothing)."""

    def Exec(self, feedback_fn: FeedbackFn) -> Any:
        """Do the tasklet's work."""
        raise NotImplementedError(f"{type(self).__name__} does not implement Exec")


def require_prereq(condition: bool, msg: str, ecode: str) -> None:
    """Raise OpPrereqError(msg, ecode) unless ``condition``."""
    if not condition:
        raise OpPrereqError(msg, ecode)


__all__ = [
    "ALL_SET",
    "LOCKS_APPEND",
    "LOCKS_REPLACE",
    "LU_REGISTRY",
    "EarlyWork",
    "LogicalUnit",
    "NoHooksLU",
    "Tasklet",
    "register_lu",
    "require_prereq",
]
