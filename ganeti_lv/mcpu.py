"""The processor: runs one opcode through its LogicalUnit (Ganeti's mcpu).

``Processor(ctx).execute(op, feedback_fn)`` records a job, takes the Big
Ganeti Lock, builds the LU, acquires its locks level by level, runs
CheckPrereq, the PRE hooks, Exec and the POST hooks (then, when the
configuration was written, the config-update hook on the master), and
releases every lock in a ``finally``. See ``ganeti_lv.cmdlib.base`` for the LU contract.

Each opcode of a job (most jobs have one) owns a node-operations session
(``NodeOps.open_session``, opened when it first needs it): the work the LU
asks to begin early (``LogicalUnit.EarlyWork``, right after ExpandNames:
connections warmed, disk copies set up) runs in it, the same way in a
process of its own and in the master daemon. The session is closed in the
opcode's ``finally``, whatever happened (success, a failed check or hook, a
lock timeout, a cancel, an error), so nothing begun for it outlives it; a
failure to close it is logged, never the outcome (recorded by then).

``run_query(ctx, op)`` runs a query (an LU marked ``QUERY``: no hooks, no
locks, nothing changed) without a job, as Ganeti's list commands query
without one: the master daemon (for ``gnt-lv`` list commands, ops tooling
and the remote API) and a caller without a daemon run queries through it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any

from ganeti_lv import cmdlib, constants, locking
from ganeti_lv.cancel import Cancellation, stopped_by
from ganeti_lv.cmdlib.base import LU_REGISTRY, LogicalUnit
from ganeti_lv.context import Context
from ganeti_lv.errors import (
    ECODE_ENVIRON,
    ECODE_FAULT,
    ECODE_INVAL,
    ECODE_TEMP_NORES,
    ConfigurationError,
    GenericError,
    JobError,
    OperationCanceled,
    OpExecError,
    OpPrereqError,
)
from ganeti_lv.hooksmaster import HookResults, HooksMaster
from ganeti_lv.hypervisor.base import NodeSession
from ganeti_lv.locking import _AllSet
from ganeti_lv.master.jobs import Job
from ganeti_lv.node.transport import NodeResult, node_call
from ganeti_lv.opcodes import OpCode

_LOG = logging.getLogger(__name__)

FeedbackFn = Callable[[str], None]

DRY_RUN_MSG = "dry-run mode requested, not actually executing the operation"
MAX_TEMP_NORES_RETRIES = 3
RETRY_DELAY = 1.0
# How long a hooks phase runs before the job log says what it waits for.
HOOKS_PATIENCE = 10.0
# How long a job waits for a lock before its log says which and who holds it (and again).
LOCK_PATIENCE = 10.0

_ = cmdlib  # importing the package fills LU_REGISTRY


class Processor:
    """Runs opcodes in a Context; one instance may run several opcodes in turn."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._feedback_fn: FeedbackFn | None = None
        self.cancel = Cancellation()
        self._job: Job | None = None
        self._op: OpCode | None = None  # the opcode running (of the job ``_job``)
        self._index = 0
        self._session: NodeSession | None = None
        self._session_lock = threading.Lock()
        self._held = contextlib.ExitStack()
        # a cancel stops a wait for the PRE hooks (not for an LU that honours it in Exec)
        self._pre_hooks_cancelable = True

    @property
    def session(self) -> NodeSession:
        """The running opcode's node-operations session (opened on first use)."""
        with self._session_lock:
            if self._session is None:
                self._session = self.ctx.node_ops.open_session()
            return self._session

    def hold_until_opcode_end(self, resource: contextlib.AbstractContextManager[Any]) -> None:
        """Keep ``resource`` (entered now) until the running opcode ends, however.

        Released in the opcode's ``finally`` with its session, before its
        locks go (an export's space reservation: a failed check or hook, a
        dry run, a cancel or an error all free it).
        """
        self._held.enter_context(resource)

    def _release_opcode_resources(self, job: Job) -> None:
        """Release what the opcode held (``hold_until_opcode_end``) and close its session.

        Its outcome is recorded by then: a release that fails is logged, and
        never replaces the result or error.
        """
        for release in (self._held.close, self._close_session):
            try:
                release()
            except Exception:  # noqa: BLE001 - the outcome stands; the daemon's log says
                _LOG.exception("Releasing what job %s (opcode %d) held failed", job.id, self._index)

    def _close_session(self) -> None:
        with self._session_lock:
            session, self._session = self._session, None
        if session is not None:
            session.close()

    # ------------------------------------------------------------ feedback
    def Log(self, msg: str) -> None:
        """Send a feedback line into the job log and to the caller.

        Neither output decides the operation's fate, which may be half-way
        (a migration switched over and not yet recorded): a feedback
        function that fails (a closed pipe, a dropped terminal) is dropped
        for the rest of the job, which goes on; a job log that cannot be
        written (a full disk) keeps the line in the job, written with its
        next save.
        """
        if self._job is not None:
            try:
                self.ctx.jobs.append_log(self._job, msg, index=self._index)
            except OSError as err:
                _LOG.warning("Job %s: a feedback line not written yet: %s", self._job.id, err)
        if self._feedback_fn is not None:
            try:
                self._feedback_fn(msg)
            except Exception:  # noqa: BLE001 - whatever the caller's output raises
                self._feedback_fn = None

    def LogWarning(self, msg: str, hint: str | None = None) -> None:
        """Feedback " - WARNING: msg" (plus "      Hint: ..." when given)."""
        self.Log(f" - WARNING: {msg}")
        if hint:
            self.Log(f"      Hint: {hint}")

    def LogInfo(self, msg: str) -> None:
        """Feedback " - INFO: msg"."""
        self.Log(f" - INFO: {msg}")

    def LogStep(self, current: int, total: int, msg: str) -> None:
        """Feedback "STEP i/n msg"."""
        self.Log(f"STEP {current}/{total} {msg}")

    # ------------------------------------------------------------ execute
    def execute(
        self,
        op: OpCode,
        feedback_fn: FeedbackFn | None = None,
        cancel: Cancellation | None = None,
        *,
        job: Job | None = None,
        index: int = 0,
    ) -> Any:
        """Run ``op`` through its LU; return the result or raise the typed error.

        Setting ``cancel`` before Exec starts stops the operation with nothing
        changed; during Exec, LUs that can stop safely (migration) watch it.
        ``op`` is recorded as a job of its own, or as opcode ``index`` of the
        recorded ``job`` (``ganeti_lv.master.runner`` runs a job's opcodes).
        """
        self.cancel = cancel or Cancellation()
        caller_recorded = job is not None  # else created here, already running
        if job is None:
            job, index = self.ctx.jobs.create(op, start=True), 0
        try:
            if caller_recorded:
                self.ctx.jobs.start_op(job, index)
            return self._locked_execute(op, job, index, feedback_fn)
        except BaseException as err:
            # the job log may be what failed (a full disk: its start or its
            # success not written): the job must not read "queued" or
            # "running" while this process lives
            with contextlib.suppress(Exception):
                self.ctx.jobs.end_unfinished(job.id, err, stopped_by(self.cancel, err), live=job)
            raise

    def _locked_execute(
        self, op: OpCode, job: Job, index: int, feedback_fn: FeedbackFn | None
    ) -> Any:
        self._job, self._op, self._index, self._feedback_fn = job, op, index, feedback_fn
        # a cancel request also ends a wait for a lock (nothing is changed then)
        locks = self.ctx.locks
        locks.set_interrupt(self.cancel)
        # the locks say which job holds them; a wait for one is said in the job log
        locks.set_owner({"job": job.id, "summary": op.summary()})
        locks.set_wait_report(self._report_lock_wait, LOCK_PATIENCE)
        try:
            return self._execute(op, job)
        finally:
            locks.set_interrupt(None)
            locks.set_owner(None)
            locks.set_wait_report(None)
            self._job, self._op, self._feedback_fn = None, None, None

    def _report_lock_wait(
        self, level: str, name: str | None, owner: dict[str, Any] | None, waited: float
    ) -> None:
        """Say in the job log what the job waits for and which job holds it."""
        what = f"the {level} lock '{name}'" if name else f"the {level} locks"
        holder = "another operation"
        job_id = owner.get("job") if owner else None
        if isinstance(job_id, int):
            try:
                active = self.ctx.jobs.get(job_id).status in constants.JOB_ACTIVE_STATUSES
            except GenericError:
                active = False
            if active:
                holder = f"job {job_id} ({owner.get('summary', '?') if owner else '?'})"
        if not name:
            holder += f", which holds the whole {level} level or waits for it"
        self.LogInfo(f"Waiting {waited:.0f} s for {what}, held by {holder}")

    def run_child(
        self, op: OpCode, feedback_fn: FeedbackFn | None, cancel: Cancellation | None = None
    ) -> tuple[int, Callable[[], Any]]:
        """Record ``op`` as a job of the running job's node operation; (its id, its runner).

        The runner (called in a thread of the caller's choosing) runs the
        job through a processor of its own, with its own locks, session and
        job log entry, exactly as a job submitted alone; it returns the
        result or raises the typed error. ``job list`` shows the job with
        the running job as its parent. ``op``'s reason trail gets the
        running opcode's after its own, as a job Ganeti's master submits for
        an opcode does (then the master's entry of the new job).
        """
        parent = self._job.id if self._job is not None else None
        if self._op is not None:
            op.reason = [*op.reason, *self._op.reason]
        child = self.ctx.jobs.create_job([op], parent=parent)

        def run() -> Any:
            return Processor(self.ctx).execute(op, feedback_fn, cancel, job=child, index=0)

        return child.id, run

    def _execute(self, op: OpCode, job: Job) -> Any:
        """Run ``op``; the job's end is recorded while its locks are still held.

        So a job waiting for the same locks always starts executing after the
        recorded end of the one it waited for.
        """
        locks = self.ctx.locks
        release = False
        try:
            lu_class = LU_REGISTRY.get(type(op))
            if lu_class is None:
                raise OpPrereqError(f"Cannot handle opcode {op.OP_ID}", ECODE_INVAL)
            if any(locks.owned(level) for level in locking.LEVELS):
                # Releasing at the end would drop the outer operation's locks.
                raise OpExecError(
                    f"Cannot run {op.OP_ID} inside another operation (locks already held)",
                    ECODE_FAULT,
                )
            self._stop_if_canceled()  # e.g. the job's opcode before this one was canceled
            release = True
            since = locks.now()  # the lock timeout counts the wait for all levels together
            locks.acquire(
                locking.LEVEL_CLUSTER,
                [locking.BGL_NAME],
                shared=not lu_class.REQ_BGL,
                timeout=self.ctx.lock_timeout,
                since=since,
            )
            op.validate()
            lu = lu_class(self, op, self.ctx)
            lu.ExpandNames()
            if not isinstance(lu.needed_locks, dict):
                raise OpExecError(
                    f"{lu_class.__name__}.ExpandNames did not set needed_locks to a dict",
                    ECODE_FAULT,
                )
            self._begin_early_work(lu)
            result = self._run_with_retries(lu, since)
        except BaseException as err:  # Ctrl-C too: stopped_by counts it as canceled
            canceled = stopped_by(self.cancel, err)
            try:
                self.ctx.jobs.finish_error(job, err, canceled=canceled, index=self._index)
            except Exception:  # noqa: BLE001 - the job log failed (a full disk for a moment?)
                # once more from the record, the locks still held; the error raised is err
                with contextlib.suppress(Exception):
                    self.ctx.jobs.end_unfinished(job.id, err, canceled, live=job)
            raise
        else:
            try:
                self.ctx.jobs.finish_success(job, result, index=self._index)
            except OSError as err:  # written again and again: the disk stays full
                raise JobError(
                    f"The operation succeeded, but its end could not be written to the job"
                    f" log: {err}",
                    ECODE_ENVIRON,
                ) from err
            return result
        finally:
            try:
                # before the locks go: a job waiting for them finds nothing of this one left
                self._release_opcode_resources(job)
            finally:
                if release:
                    locks.release_all()

    def _begin_early_work(self, lu: LogicalUnit) -> None:
        """Hand the work the LU asks to begin early to the job's session (hints only)."""
        work = lu.EarlyWork()
        if work is None or not (work.nodes or work.copies):
            return
        if work.nodes:
            self.session.prewarm(work.nodes)
        if work.copies:
            self.session.prestart_copies(work.copies)

    def _run_with_retries(self, lu: LogicalUnit, since: float) -> Any:
        attempt = 0
        while True:
            try:
                return self._lock_and_exec(lu, since)
            except OpPrereqError as err:
                if err.ecode != ECODE_TEMP_NORES or attempt >= MAX_TEMP_NORES_RETRIES:
                    raise
            attempt += 1
            for level in reversed(locking.LEVELS[1:]):
                self.ctx.locks.release(level)
            self.LogInfo(f"Temporarily out of resources, retrying ({attempt})")
            lu.PrepareRetry(self.Log)
            self.ctx.sleep(RETRY_DELAY * attempt)
            since = self.ctx.locks.now()

    def _lock_and_exec(self, lu: LogicalUnit, since: float) -> Any:
        """Take the LU's locks level by level, all within one lock timeout from
        ``since``, and run it."""
        assert lu.needed_locks is not None
        for level in locking.LEVELS[1:]:
            if level not in lu.needed_locks:
                continue
            lu.DeclareLocks(level)
            names = lu.needed_locks.get(level)
            shared = bool(lu.share_locks.get(level, 0))
            if isinstance(names, _AllSet) or names:
                self.ctx.locks.acquire(
                    level,
                    names if isinstance(names, _AllSet) else sorted(set(names)),
                    shared=shared,
                    timeout=self.ctx.lock_timeout,
                    since=since,
                )
        return self._exec_lu(lu)

    def _exec_lu(self, lu: LogicalUnit) -> Any:
        self._stop_if_canceled()  # before the nodes are asked and the PRE hooks run
        if self._job is not None:
            self.ctx.jobs.mark_executing(self._job, index=self._index)
        lu.CheckPrereq()
        self._stop_if_canceled()  # asked for during the checks: no PRE hook without a POST
        hm = self._hooks_master(lu)
        self._pre_hooks_cancelable = not lu.CANCELED_IN_EXEC
        pre_results = hm.run_phase(constants.HOOKS_PHASE_PRE)
        lu.HooksCallBack(constants.HOOKS_PHASE_PRE, pre_results, self.Log, None)
        if getattr(lu.op, "dry_run", False):
            self.LogInfo(DRY_RUN_MSG)
            return lu.dry_run_result
        if self._pre_hooks_cancelable:  # else its Exec honours it, its POST hooks too
            self._stop_if_canceled()
        serial = self._config_serial()
        try:
            result = lu.Exec(self.Log)
            post_results = hm.run_phase(constants.HOOKS_PHASE_POST)
            return lu.HooksCallBack(constants.HOOKS_PHASE_POST, post_results, self.Log, result)
        finally:
            if self._config_serial() != serial:
                self._run_config_update(hm, lu)

    def _config_serial(self) -> int | None:
        """The configuration's serial number (None when it cannot be read)."""
        try:
            return self.ctx.config.snapshot().serial
        except ConfigurationError:
            return None

    @staticmethod
    def _run_config_update(hm: HooksMaster, lu: LogicalUnit) -> None:
        """Ganeti's config-update hook, after an Exec (failed or not) that wrote the configuration.

        It follows the configuration's serial number, so a write of another
        job during this one's Exec counts too (README "Hooks": where Ganeti
        3.0 differs). A failure to run it is a warning: the operation's own
        result or error stands.
        """
        try:
            hm.run_config_update()
        except Exception as err:  # noqa: BLE001 - never replaces the operation's outcome
            lu.LogWarning(
                f"Errors occurred running the {constants.HOOKS_NAME_CFGUPDATE} hooks: {err}"
            )

    def _stop_if_canceled(self) -> None:
        """OperationCanceled when a cancel was asked for; only before Exec starts."""
        if self.cancel.is_set():
            raise OperationCanceled(
                f"Operation canceled ({self.cancel.reason or 'on request'}) before it"
                " started executing; nothing was changed"
            )

    # -------------------------------------------------------------- hooks
    def _hooks_master(self, lu: LogicalUnit) -> HooksMaster:
        """The LU's HooksMaster; an LU without hooks may run without a configuration
        (a test delay), and then has no master to run config-update on either."""
        cluster_name = master_name = None
        try:
            cluster = self.ctx.config.snapshot().cluster
        except ConfigurationError:
            if lu.HPATH is not None:
                raise
        else:
            cluster_name, master_name = cluster.name, cluster.master_node
        return HooksMaster.build_from_lu(
            lu,
            self._run_hooks,
            cluster_name=cluster_name,
            master_name=master_name,
            data_dir=self.ctx.data_dir,
        )

    def RunPostHook(self, lu: LogicalUnit, node_name: str) -> None:
        """Run ``lu``'s post hooks on ``node_name`` alone, now (Ganeti's RunPostHook).

        For a node that leaves the hook nodes in Exec: node remove runs them on
        the node it removes. A failure of the hooks is a warning: the
        operation goes on (as Ganeti's); an LU whose hook environment or
        nodes cannot be built fails, as in Ganeti.
        """
        hm = self._hooks_master(lu)
        try:
            hm.run_phase(constants.HOOKS_PHASE_POST, node_names=[node_name])
        except Exception as err:  # noqa: BLE001 - a post hook never stops the operation
            lu.LogWarning(f"Errors occurred running hooks on {node_name}: {err}")

    def _run_hooks(self, node_names: list[str], phase: str, env: dict[str, str]) -> HookResults:
        """Run the hooks of ``env``'s path and ``phase`` on each node through node_ops."""
        try:
            data = self.ctx.config.snapshot()  # read-only: lookups below
        except ConfigurationError as err:
            raise GenericError(f"Cannot run hooks: {err}", err.ecode) from err
        cluster = data.cluster
        hooks_dir = f"{cluster.hooks_base_dir}/{env['GANETI_HOOKS_PATH']}-{phase}.d"

        def run_on(name: str) -> NodeResult[Any]:
            node = data.nodes.get(name)
            if node is None:
                return NodeResult(name, fail_msg="Node not in the configuration")
            return node_call(
                self.ctx.node_ops.run_hooks,
                node.copy(),
                hooks_dir,
                env,
                timeout=cluster.hooks_timeout,
            )

        # Nodes run their scripts at the same time: a phase costs the slowest
        # node's time, not the sum over the hook nodes. A slow phase is said
        # in the job log, and a cancel ends the wait of a PRE phase (nothing
        # has changed yet; a script still running ends at its own timeout).
        pool = ThreadPoolExecutor(max_workers=max(1, len(node_names)))
        futures = {name: pool.submit(run_on, name) for name in node_names}
        waited = 0.0
        try:
            while True:
                _, pending = wait(futures.values(), timeout=HOOKS_PATIENCE)
                if not pending:
                    return {name: future.result() for name, future in futures.items()}
                waited += HOOKS_PATIENCE
                pre = phase == constants.HOOKS_PHASE_PRE and self._pre_hooks_cancelable
                if pre and self.cancel.is_set():
                    raise OperationCanceled(
                        f"Operation canceled ({self.cancel.reason or 'on request'}) while"
                        f" waiting for the {phase} hooks in {hooks_dir}; nothing was changed"
                    )
                busy = sorted(name for name, f in futures.items() if f in pending)
                self.LogInfo(
                    f"Waiting {waited:.0f} s for the hook scripts in {hooks_dir} on"
                    f" {', '.join(busy)} (each may run {cluster.hooks_timeout:g} s)"
                )
        finally:
            pool.shutdown(wait=False, cancel_futures=True)


# ------------------------------------------------------------------ queries


class _Quiet:
    """What a query's LU reports to: nothing (a query has no job log)."""

    def Log(self, msg: str) -> None:
        """Dropped."""

    def LogWarning(self, msg: str, hint: str | None = None) -> None:
        """Dropped."""

    def LogInfo(self, msg: str) -> None:
        """Dropped."""

    def LogStep(self, current: int, total: int, msg: str) -> None:
        """Dropped."""


def run_query(ctx: Context, op: OpCode) -> Any:
    """The result of query ``op``, run by its LU without a job (no locks, no hooks).

    OpPrereqError (ECODE_INVAL) for an opcode that is not a query: it
    changes things, takes locks or runs hooks, so it runs as a job
    (``Processor.execute``). The query's own errors are raised as a job
    would raise them (an unknown name: OpPrereqError with ECODE_NOENT).
    """
    lu_class = LU_REGISTRY.get(type(op))
    if lu_class is None or not lu_class.QUERY:
        raise OpPrereqError(f"{op.OP_ID} is not a query; it runs as a job (submit it)", ECODE_INVAL)
    op.validate()
    lu = lu_class(_Quiet(), op, ctx)
    lu.ExpandNames()
    if lu.needed_locks:  # an LU marked QUERY by mistake
        raise OpExecError(f"{op.OP_ID} needs locks; it cannot run as a query", ECODE_FAULT)
    lu.CheckPrereq()
    return lu.Exec(lambda _msg: None)
