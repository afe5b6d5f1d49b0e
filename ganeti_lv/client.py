"""The library API for ops tooling: submit opcodes from Python."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ganeti_lv.cancel import Cancellation
from ganeti_lv.context import Context
from ganeti_lv.hypervisor.base import NodeOps
from ganeti_lv.master.jobs import Job
from ganeti_lv.opcodes import OpCode


class Client:
    """Runs opcodes through the processor on this master.

    Example::

        from ganeti_lv import Client
        from ganeti_lv.opcodes import OpInstanceMigrate

        Client(data_dir="/var/lib/ganeti-lv").submit(OpInstanceMigrate(instance_name="web1"))

    ``data_dir`` defaults to $GANETI_LV_DATA_DIR or /var/lib/ganeti-lv;
    ``node_ops`` defaults to the libvirt implementation; ``lock_timeout``
    (seconds) makes a busy lock fail with LockTimeout instead of waiting.
    """

    def __init__(
        self,
        data_dir: str | None = None,
        node_ops: NodeOps | None = None,
        lock_timeout: float | None = None,
        context: Context | None = None,
    ) -> None:
        self.ctx = context or Context.from_data_dir(
            data_dir, node_ops=node_ops, lock_timeout=lock_timeout
        )

    def submit(
        self,
        op: OpCode,
        feedback_fn: Callable[[str], None] | None = None,
        cancel: Cancellation | None = None,
    ) -> Any:
        """Run ``op``; return its result or raise its typed error (ganeti_lv.errors).

        ``cancel`` (a ``ganeti_lv.cancel.Cancellation``), when set from another
        thread or a signal handler, asks the operation to stop safely.
        """
        from ganeti_lv.mcpu import Processor

        return Processor(self.ctx).execute(op, feedback_fn=feedback_fn, cancel=cancel)

    def jobs(self) -> list[Job]:
        """All recorded jobs, ascending by id."""
        return self.ctx.jobs.list()

    def job(self, job_id: int) -> Job:
        """One recorded job."""
        return self.ctx.jobs.get(job_id)

    def close(self) -> None:
        """Close node connections."""
        self.ctx.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
