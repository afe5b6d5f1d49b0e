"""Queries run without a job, as Ganeti's list commands query (LUXI Query, no job).

``ganeti_lv.mcpu.run_query`` runs a query opcode's LU: nothing is recorded
in the job log; an opcode that is not a query is refused.
"""

from __future__ import annotations

import pytest

from ganeti_lv.config import ConfigStore
from ganeti_lv.context import Context
from ganeti_lv.errors import ECODE_INVAL, OpPrereqError
from ganeti_lv.hypervisor.fake import FakeNodeOps
from ganeti_lv.mcpu import run_query
from ganeti_lv.opcodes import (
    OpCode,
    OpInstanceQuery,
    OpInstanceQueryData,
    OpNodeEvacuate,
    OpTestDelay,
)

INST = "inst1.example.com"
N1, N2 = "node1.example.com", "node2.example.com"

# opcodes that are not queries: each changes things, takes locks or runs as a job
NOT_QUERIES = [
    OpNodeEvacuate(node_name=N1),  # no locks of its own: its moves take theirs
    OpTestDelay(duration=0),
    OpInstanceQueryData(instances=[INST]),  # a job in Ganeti too (gnt-instance info)
]


# ------------------------------------------------------------------ the processor


def test_a_query_runs_without_a_job(ctx: Context, inst1_running: FakeNodeOps) -> None:
    rows = run_query(ctx, OpInstanceQuery(names=[INST]))
    assert [(row["name"], row["status"]) for row in rows] == [(INST, "running")]
    assert ctx.jobs.list() == []


@pytest.mark.parametrize("op", NOT_QUERIES, ids=lambda op: op.OP_ID)
def test_an_opcode_that_is_not_a_query_is_refused_and_changes_nothing(
    ctx: Context, config: ConfigStore, inst1_running: FakeNodeOps, op: OpCode
) -> None:
    before = config.read().serial
    with pytest.raises(OpPrereqError, match="is not a query") as err:
        run_query(ctx, op)
    assert err.value.ecode == ECODE_INVAL
    assert config.read().serial == before
    assert ctx.jobs.list() == []
    assert not inst1_running.calls_to("migrate_instance")
