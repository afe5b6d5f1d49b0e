"""Queries run without a job, as Ganeti's list commands query (LUXI Query, no job).

``gnt-lv instance|node|backup list``, ``Client.query`` and the master
daemon's ``query`` request run a query opcode's LU through
``ganeti_lv.mcpu.run_query``: nothing is recorded in the job log, and the
output, the result and the errors are the same in-process and through a
real master daemon (the ``server`` fixture, serving on the fake nodes).
"""

from __future__ import annotations

import json
import socket
from typing import Any

import pytest
from support.waiting import wait_until

from ganeti_lv import Client, paths
from ganeti_lv.cli.main import main
from ganeti_lv.config import ConfigStore
from ganeti_lv.context import Context
from ganeti_lv.errors import ECODE_INVAL, ECODE_NOENT, OpPrereqError
from ganeti_lv.hypervisor.fake import FakeNodeOps
from ganeti_lv.hypervisor.fake_export import FakeExport
from ganeti_lv.master import client as masterclient
from ganeti_lv.master import protocol
from ganeti_lv.master.jobs import JobStore
from ganeti_lv.mcpu import run_query
from ganeti_lv.opcodes import (
    OpBackupQuery,
    OpClusterVerify,
    OpCode,
    OpInstanceQuery,
    OpInstanceQueryData,
    OpNodeEvacuate,
    OpNodeQuery,
    OpNodeSetParams,
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


def _job_ids(data_dir: str) -> list[int]:
    return [job.id for job in JobStore(paths.jobs_dir(data_dir)).list()]


def _gnt_lv(data_dir: str, argv: list[str], capsys: Any, **kwargs: Any) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["--data-dir", data_dir, *argv], **kwargs)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def exports(inst1_running: FakeNodeOps) -> FakeNodeOps:
    """An export of inst1 on node2, and an interrupted one (``cluster verify`` reports it;
    as Ganeti's, a list does not)."""
    inst1_running.exports.setdefault(N2, {})[INST] = FakeExport(manifest_text="{}")
    inst1_running.exports[N2][f"{INST}.new"] = FakeExport()
    return inst1_running


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


# ------------------------------------------------------------------ gnt-lv list commands

LIST_COMMANDS = [
    ["instance", "list"],
    ["instance", "list", "-o", "name,status,oper_ram", INST],
    ["node", "list"],
    ["node", "list", "-o", "name,mfree,pinst_cnt", N1],
    ["backup", "list"],
    ["backup", "list", "--node", N2],
]


@pytest.mark.parametrize("argv", LIST_COMMANDS, ids=" ".join)
def test_list_commands_add_no_job_and_print_the_same_both_ways(
    server: Any, data_dir: str, fake_ops: FakeNodeOps, exports: FakeNodeOps, capsys: Any,
    argv: list[str],
) -> None:  # fmt: skip
    before = _job_ids(data_dir)
    # node operations given: in this process; none given: the daemon's (on the fake nodes)
    local = _gnt_lv(data_dir, argv, capsys, node_ops=fake_ops)
    remote = _gnt_lv(data_dir, argv, capsys)
    assert local[0] == 0, local[2]
    assert remote == local
    assert _job_ids(data_dir) == before


def test_the_list_commands_show_live_data(
    server: Any, data_dir: str, exports: FakeNodeOps, capsys: Any
) -> None:
    # through the daemon: its node operations answered (the real nodes are not there)
    code, out, _ = _gnt_lv(data_dir, ["instance", "list", "-o", "name,status", INST], capsys)
    assert (code, out.split("\n")[1].split()) == (0, [INST, "running"])
    code, out, _ = _gnt_lv(data_dir, ["backup", "list", "--node", N2], capsys)
    assert (code, out.splitlines()[1].split()) == (0, [N2, INST])


@pytest.mark.parametrize(
    ("argv", "text"),
    [
        (["instance", "list", "ghost"], "Instance 'ghost' not known"),
        (["node", "list", "ghost"], "Node 'ghost' not known"),
        (["backup", "list", "--node", "ghost"], "Node 'ghost' not known"),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) else "",
)
def test_an_unknown_name_is_the_same_error_both_ways(
    server: Any, data_dir: str, fake_ops: FakeNodeOps, capsys: Any, argv: list[str], text: str
) -> None:
    before = _job_ids(data_dir)
    local = _gnt_lv(data_dir, argv, capsys, node_ops=fake_ops)
    remote = _gnt_lv(data_dir, argv, capsys)
    assert remote == local
    code, out, err = local
    assert (code, out) == (1, "")
    assert "error type: unknown_entity" in err and text in err
    assert _job_ids(data_dir) == before


def test_instance_info_is_still_a_job(server: Any, data_dir: str, capsys: Any) -> None:
    # as Ganeti's gnt-instance info, which submits OpInstanceQueryData
    before = _job_ids(data_dir)
    code, out, err = _gnt_lv(data_dir, ["instance", "info", INST], capsys)
    assert code == 0, err
    assert f"Instance name: {INST}" in out
    assert len(_job_ids(data_dir)) == len(before) + 1


# ------------------------------------------------------------------ Client.query


@pytest.mark.parametrize(
    "op",
    [OpInstanceQuery(), OpNodeQuery(names=[N2]), OpBackupQuery(with_kind=True)],
    ids=lambda op: op.OP_ID,
)
def test_the_library_client_queries_the_same_both_ways(
    server: Any, data_dir: str, fake_ops: FakeNodeOps, exports: FakeNodeOps, op: OpCode
) -> None:
    with Client(data_dir=data_dir, node_ops=fake_ops) as local:
        here = local.query(op)
    with Client(data_dir=data_dir) as client:
        there = client.query(op)
    assert here == there
    assert here  # rows (or exports by node): something to compare
    assert json.loads(json.dumps(here)) == here  # JSON data in this process too
    assert _job_ids(data_dir) == []


@pytest.mark.parametrize(
    ("op", "ecode"),
    [
        (OpInstanceQuery(names=["ghost"]), ECODE_NOENT),
        (OpNodeQuery(names=["ghost"]), ECODE_NOENT),
        *((op, ECODE_INVAL) for op in NOT_QUERIES),
    ],
    ids=lambda value: value.OP_ID if isinstance(value, OpCode) else value,
)
def test_the_library_client_raises_the_same_errors_both_ways(
    server: Any, data_dir: str, config: ConfigStore, fake_ops: FakeNodeOps, op: OpCode, ecode: str
) -> None:
    before = config.read().serial
    local = Client(data_dir=data_dir, node_ops=fake_ops)
    with local, pytest.raises(OpPrereqError) as here:
        local.query(op)
    with Client(data_dir=data_dir) as client, pytest.raises(OpPrereqError) as there:
        client.query(op)
    assert (there.value.ecode, there.value.msg) == (here.value.ecode, here.value.msg)
    assert here.value.ecode == ecode
    assert config.read().serial == before
    assert _job_ids(data_dir) == []
    assert not fake_ops.calls_to("migrate_instance")


def test_the_library_client_submits_the_same_both_ways_whatever_its_feedback_does(
    server: Any, data_dir: str, fake_ops: FakeNodeOps
) -> None:
    """A job's result is JSON data from the daemon and from this process alike, and a
    feedback function that fails (a reader gone) is dropped: the result still comes."""
    lines: list[str] = []

    def gone(line: str) -> None:
        lines.append(line)
        raise BrokenPipeError("the reader went away")

    with Client(data_dir=data_dir, node_ops=fake_ops) as local:
        here = local.submit(OpClusterVerify(), gone)
    assert len(lines) == 1  # called once, then dropped
    with Client(data_dir=data_dir) as client:
        there = client.submit(OpClusterVerify(), gone)
    assert len(lines) == 2
    assert here == there
    with Client(data_dir=data_dir, node_ops=fake_ops) as local:
        here = local.submit(OpNodeSetParams(node_name=N2, drained=True))
    with Client(data_dir=data_dir) as client:
        there = client.submit(OpNodeSetParams(node_name=N2, drained=False))
    # lists of pairs both ways (Ganeti's (parameter, new value) pairs, as JSON has them)
    assert here == [["master_candidate", "False"], ["drained", "True"]]
    assert there == [["master_candidate", "True"], ["drained", "False"]]


def test_a_job_whose_caller_cannot_take_its_id_is_asked_to_stop(
    server: Any, data_dir: str, held_delays: Any
) -> None:
    def refuse(_job_id: int) -> None:
        raise RuntimeError("no place to keep the id")

    with Client(data_dir=data_dir) as client, pytest.raises(RuntimeError):
        client.submit_job([OpTestDelay(duration=1)], on_job_id=refuse)
    store = JobStore(paths.jobs_dir(data_dir))
    (job,) = store.list()
    assert wait_until(lambda: store.get(job.id).cancel_ts is not None, 10)
    held_delays.set()
    assert wait_until(lambda: store.get(job.id).finished, 30)


# ------------------------------------------------------------------ the daemon's request


def _ask(data_dir: str, request: dict[str, Any]) -> dict[str, Any]:
    """The daemon's one answer to ``request``, sent as any client would."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(paths.masterd_socket(data_dir))
        sock.sendall(protocol.encode(request))
        with sock.makefile("rb") as rfile:
            return dict(json.loads(rfile.readline()))


def test_the_daemon_answers_a_query_with_its_result(server: Any, data_dir: str) -> None:
    op = {"OP_ID": "OP_INSTANCE_QUERY", "names": [INST]}
    answer = _ask(data_dir, {"v": 1, "type": "query", "op": op})
    assert answer["type"] == "result"
    assert [(row["name"], row["status"]) for row in answer["result"]] == [(INST, "running")]
    assert _job_ids(data_dir) == []


@pytest.mark.parametrize("op", NOT_QUERIES, ids=lambda op: op.OP_ID)
def test_the_daemon_refuses_an_opcode_that_is_not_a_query(
    server: Any, data_dir: str, config: ConfigStore, fake_ops: FakeNodeOps, op: OpCode
) -> None:
    before = config.read().serial
    answer = _ask(data_dir, protocol.query_request(op))
    assert answer["type"] == "error"
    err = protocol.decode_error(answer["error"])
    assert isinstance(err, OpPrereqError)
    assert err.ecode == ECODE_INVAL and f"{op.OP_ID} is not a query" in err.msg
    assert config.read().serial == before
    assert _job_ids(data_dir) == []
    assert not fake_ops.calls_to("migrate_instance")


def test_the_master_client_runs_queries_in_the_daemon(
    server: Any, data_dir: str, fake_ops: FakeNodeOps
) -> None:
    client = masterclient.connect(data_dir)
    assert client is not None
    with client:
        rows = client.query(OpNodeQuery(names=[N1], live=True))
    assert [row["name"] for row in rows] == [N1]
    assert _job_ids(data_dir) == []
