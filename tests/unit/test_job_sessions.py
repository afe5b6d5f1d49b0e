"""Each job owns a node-operations session: work begun early runs in it, and it is closed.

Through the processor with FakeNodeOps, whose sessions record what they
were asked to begin (see also the export's tests in test_lu_backup).
"""

from __future__ import annotations

import pytest

from ganeti_lv.context import Context
from ganeti_lv.errors import OpPrereqError
from ganeti_lv.hypervisor.fake import FakeNodeOps, FakeSession
from ganeti_lv.mcpu import Processor
from ganeti_lv.opcodes import OpInstanceFailover, OpInstanceMigrate, OpTestDelay

N1, N2, N3 = "node1.example.com", "node2.example.com", "node3.example.com"
INST = "inst1.example.com"


def test_migration_warms_master_primary_and_target_in_its_session(
    ctx: Context, inst1_running: FakeNodeOps
) -> None:
    Processor(ctx).execute(OpInstanceMigrate(instance_name="inst1", target_node="node3"))
    (session,) = inst1_running.sessions
    # master and primary are node1 (named once), the target by its full name
    assert session.events[0] == ("prewarm", [N1, N3])
    assert session.closed and session.events[-1] == ("close", None)


def test_failover_warms_too_and_closes_its_session_when_it_fails(
    ctx: Context, inst1_running: FakeNodeOps
) -> None:
    inst1_running.fail("node_info", N2, "libvirtd is down")
    with pytest.raises(OpPrereqError, match="libvirtd is down"):
        Processor(ctx).execute(OpInstanceFailover(instance_name=INST, target_node=N2))
    (session,) = inst1_running.sessions
    assert session.events == [("prewarm", [N1, N2]), ("close", None)]


def test_no_session_for_unknown_names_or_jobs_without_early_work(
    ctx: Context, fake_ops: FakeNodeOps
) -> None:
    with pytest.raises(OpPrereqError, match="ghost"):
        Processor(ctx).execute(OpInstanceMigrate(instance_name="ghost", target_node="node3"))
    Processor(ctx).execute(OpTestDelay(instance_names=[INST]))
    assert fake_ops.sessions == []


def test_one_processor_opens_a_session_per_job(ctx: Context, inst1_running: FakeNodeOps) -> None:
    proc = Processor(ctx)
    proc.execute(OpInstanceMigrate(instance_name=INST, target_node=N2))
    proc.execute(OpInstanceMigrate(instance_name=INST, target_node=N1))
    first, second = inst1_running.sessions
    assert first is not second and first.closed and second.closed
    assert first.events[0] == ("prewarm", [N1, N2])
    assert second.events[0] == ("prewarm", [N1, N2])  # now on node2: primary node2, target node1


def test_a_session_that_fails_to_close_does_not_change_the_jobs_outcome(
    ctx: Context, inst1_running: FakeNodeOps, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The job's end is recorded before its session closes: the result stands, and the
    job log says what the caller was told; the locks are released all the same."""

    def broken_close(session: FakeSession) -> None:
        raise RuntimeError("cannot join the set-up thread")

    monkeypatch.setattr(FakeSession, "close", broken_close)
    Processor(ctx).execute(OpInstanceMigrate(instance_name="inst1", target_node="node3"))
    assert ctx.jobs.list()[-1].status == "success"
    assert inst1_running.sessions  # it was opened, and its close failed
    # nothing of the job is held: the next one on the same instance takes its locks
    Processor(ctx).execute(OpTestDelay(instance_names=[INST]))
