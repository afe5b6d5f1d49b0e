"""The library API for ops tooling: submit opcodes from Python.

``Client.submit`` runs an opcode as a job of the master daemon when one runs
for the data dir (through ``ganeti_lv.master.client``, the same path
``gnt-lv`` takes), and otherwise in this process through the processor
(``ganeti_lv.master.runner``). Either way the job is in the job log, the
feedback lines and the result are the same, and errors are raised typed.

``Client.query`` runs a query (instance, node or export list) the same two
ways, but without a job, as Ganeti's list commands do: nothing is recorded.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ganeti_lv import paths
from ganeti_lv.cancel import Cancellation
from ganeti_lv.errors import ECODE_INVAL, ECODE_STATE, JobError, MasterStopping, OpPrereqError
from ganeti_lv.master import client as master_client
from ganeti_lv.master.protocol import RecordFn, text_of_records
from ganeti_lv.opcodes import OpCode

if TYPE_CHECKING:
    from ganeti_lv.context import Context
    from ganeti_lv.hypervisor.base import NodeOps
    from ganeti_lv.master.jobs import Job


class Client:
    """Runs opcodes on this master: in the master daemon, or in this process.

    Example::

        from ganeti_lv import Client
        from ganeti_lv.opcodes import OpInstanceMigrate

        Client(data_dir="/var/lib/ganeti-lv").submit(OpInstanceMigrate(instance_name="web1"))

    ``data_dir`` defaults to $GANETI_LV_DATA_DIR or /var/lib/ganeti-lv;
    ``lock_timeout`` (seconds) makes a busy lock fail with LockTimeout
    instead of waiting. ``node_ops`` (default: the libvirt implementation)
    or a ``context`` given here always run the jobs in this process.
    """

    def __init__(
        self,
        data_dir: str | None = None,
        node_ops: NodeOps | None = None,
        lock_timeout: float | None = None,
        context: Context | None = None,
    ) -> None:
        self.data_dir = context.data_dir if context is not None else paths.data_dir(data_dir)
        self.lock_timeout = lock_timeout
        self._node_ops = node_ops
        self._ctx = context
        self._local_only = node_ops is not None or context is not None

    @property
    def ctx(self) -> Context:
        """The context jobs run in when they run in this process (built on first use)."""
        if self._ctx is None:
            from ganeti_lv.context import Context

            self._ctx = Context.from_data_dir(
                self.data_dir, node_ops=self._node_ops, lock_timeout=self.lock_timeout
            )
        return self._ctx

    def _daemon(self) -> master_client.MasterClient | None:
        if self._local_only:
            return None
        return master_client.connect(self.data_dir)

    def submit(
        self,
        op: OpCode,
        feedback_fn: Callable[[str], None] | None = None,
        cancel: Cancellation | None = None,
    ) -> Any:
        """Run ``op``; return its result or raise its typed error (ganeti_lv.errors).

        ``feedback_fn`` gets the job's feedback lines; ``cancel`` (a
        ``ganeti_lv.cancel.Cancellation``), when set from another thread or
        a signal handler, asks the operation to stop safely.
        """
        return self.submit_job([op], text_of_records(feedback_fn), cancel)[0]

    def submit_job(
        self,
        ops: Sequence[OpCode],
        on_record: RecordFn | None = None,
        cancel: Cancellation | None = None,
        on_job_id: Callable[[int], None] | None = None,
    ) -> list[Any]:
        """Run a job of ``ops`` in order; every opcode's result, or the first error raised.

        ``on_record`` gets the job's records (``ganeti_lv.master.protocol``:
        feedback lines, and progress lines with their bar and percentage); one
        that fails is dropped and the job goes on. ``on_job_id`` gets the job's
        id once it is recorded; when it fails, the job is asked to stop (here
        it never starts; the master daemon has started it already). The
        results are JSON data (as the job log keeps them), from the master
        daemon or from this process alike.
        """
        master = self._daemon()
        if master is not None:
            with master, contextlib.suppress(MasterStopping):  # stopping: run here
                return master.submit_job(ops, on_record, cancel, self.lock_timeout, on_job_id)
        # the processor, the LUs and the node operations: loaded when a job runs here
        from ganeti_lv.master.jobs import to_jsonable
        from ganeti_lv.master.runner import run_job

        job = self.ctx.jobs.create_job(ops, start=True)
        return list(to_jsonable(run_job(self.ctx, job, ops, on_record, cancel, on_job_id)))

    def query(self, op: OpCode) -> Any:
        """Run query ``op`` without a job; its result as JSON data, or its typed error.

        Queries are the opcodes of the list commands (``OpInstanceQuery``,
        ``OpNodeQuery``, ``OpBackupQuery``) and ``OpInstanceConsole``
        (the LUs marked ``QUERY``): they take no lock, run no hook,
        change nothing, and leave nothing in the job log. Any other opcode
        is OpPrereqError (ECODE_INVAL): it runs as a job (``submit``). The
        master daemon runs the query when one runs for the data dir, else
        this process does; the result and the errors are the same.
        """
        master = self._daemon()
        if master is not None:
            with master:
                return master.query(op)
        # the processor and the LUs: loaded when a query runs here
        from ganeti_lv.master.jobs import to_jsonable
        from ganeti_lv.mcpu import run_query

        return to_jsonable(run_query(self.ctx, op))

    def enqueue(self, ops: Sequence[OpCode]) -> int:
        """Start a job of ``ops`` without waiting for it; its id.

        The master daemon runs it when one runs for the data dir; otherwise
        a process of its own (``ganeti_lv.master.background``). Jobs with
        injected node operations or context cannot leave this process.
        """
        master = self._daemon()
        if master is not None:
            with master, contextlib.suppress(MasterStopping):  # stopping: a process of its own
                return master.enqueue(ops, self.lock_timeout)
        if self._local_only:
            raise OpPrereqError(
                "A job with injected node operations cannot run in the background",
                ECODE_INVAL,
            )
        from ganeti_lv.master import background

        return background.start(self.data_dir, ops, self.lock_timeout)

    def watch(
        self, job_id: int, on_record: RecordFn | None = None, cancel: Cancellation | None = None
    ) -> list[Any]:
        """Follow job ``job_id`` to its end; every opcode's result, or its typed error.

        A job of the master daemon is followed through it (every record
        from its start); any other job (of another process, or one that
        ended) through the job log, polled.
        """
        master = self._daemon()
        if master is not None:
            with master:
                try:
                    return master.watch(job_id, on_record, cancel)
                except JobError as err:
                    if err.ecode != ECODE_STATE:
                        raise
        from ganeti_lv.master.follow import follow_logged

        return follow_logged(self.job, job_id, on_record, cancel)

    def cancel(self, job_id: int, reason: str = "canceled by request") -> None:
        """Ask job ``job_id`` to stop safely, wherever it runs (JobError when it cannot)."""
        master = self._daemon()
        if master is not None:
            with master:
                master.cancel(job_id, reason)  # its own jobs, or those of other processes
                return
        from ganeti_lv.master.follow import signal_cancel

        signal_cancel(self.job(job_id))

    def jobs(self, archived: bool = False) -> list[Job]:
        """The recorded jobs not archived (with ``archived``, all), ascending by id."""
        master = self._daemon()
        if master is not None:
            with master:
                return master.jobs(archived)
        return self.ctx.jobs.list(archived)

    def job(self, job_id: int) -> Job:
        """One recorded job; JobError when unknown."""
        master = self._daemon()
        if master is not None:
            with master:
                return master.job(job_id)
        return self.ctx.jobs.get(job_id)

    def archive(self, job_ids: Sequence[int]) -> dict[int, JobError | None]:
        """Archive finished jobs (each with the finished moves of a node operation's job);
        per id, None or the JobError saying why it was not (``ganeti_lv.master.archive``).

        The job log is archived in place, by this process, also when a master
        daemon runs (its periodic pass and this take turns).
        """
        from ganeti_lv.master.archive import archive_jobs

        return archive_jobs(self.ctx.jobs, job_ids)

    def auto_archive(self, age: float | None) -> int:
        """Archive the finished jobs that ended ``age`` seconds ago or earlier (every
        finished job for None); how many were archived."""
        from ganeti_lv.master.archive import auto_archive

        return auto_archive(self.ctx.jobs, age)

    def close(self) -> None:
        """Close node connections (of the jobs run in this process)."""
        if self._ctx is not None:
            self._ctx.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
