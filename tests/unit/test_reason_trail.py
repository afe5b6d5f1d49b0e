"""The reason trail (Ganeti's ``reason`` of every opcode), as Ganeti 3.0 keeps it.

``gnt-lv``'s ``--reason`` and command start it ("gnt:user", then
"gnt:client:gnt-lv"), the job log adds the master's entry when it records
the job ("gnt:opcode:..."), a node operation's jobs start with its trail; a
trail of the wrong shape is refused (ECODE_INVAL). The remote API's
``?reason=`` is tested in ``test_rapi_server.py``.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from test_cli_jobs import running_on_node1

from ganeti_lv.cli.main import main
from ganeti_lv.client import Client
from ganeti_lv.config import ConfigStore
from ganeti_lv.context import Context
from ganeti_lv.errors import ECODE_INVAL, OpPrereqError
from ganeti_lv.hypervisor.fake import FakeNodeOps
from ganeti_lv.master.jobs import JobStore
from ganeti_lv.mcpu import Processor
from ganeti_lv.opcodes import OpCode, OpTestDelay

N1 = "node1.example.com"
I1, I2 = "inst1.example.com", "inst2.example.com"
REASON = "kernel update, ticket 42"


def _run(data_dir: str, ops: FakeNodeOps | None, capsys: Any, *argv: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["--data-dir", data_dir, *argv], node_ops=ops)
    out, err = capsys.readouterr()
    assert code == 0, err
    return code, out


def _trail(data_dir: str, job_id: int, index: int = 0) -> list[list[Any]]:
    """The reason trail recorded in the input of opcode ``index`` of job ``job_id``."""
    return list(JobStore(f"{data_dir}/jobs").get(job_id).ops[index].params["reason"])


def _entries(trail: list[list[Any]]) -> list[tuple[str, str]]:
    """The trail's (source, text) pairs, its timestamps checked: nanoseconds, in order."""
    stamps = [entry[2] for entry in trail]
    assert all(isinstance(s, int) and not isinstance(s, bool) for s in stamps), trail
    assert stamps == sorted(stamps), trail
    # nanoseconds since the epoch (Ganeti's unit), taken within the last minute
    assert all(time.time_ns() - 60 * 10**9 < s <= time.time_ns() for s in stamps), trail
    return [(source, text) for source, text, _ in trail]


def _last_job(data_dir: str) -> int:
    return JobStore(f"{data_dir}/jobs").job_ids()[-1]


# ------------------------------------------------------------------ shape


def test_an_opcode_without_a_trail_has_an_empty_one_and_keeps_a_good_one() -> None:
    assert OpTestDelay().reason == []
    good = [["gnt:user", "why", 1_700_000_000_000_000_000], ["gnt:client:x", "", 0]]
    op = OpTestDelay(reason=good)
    op.validate()
    assert OpCode.from_dict(op.to_dict()) == op


@pytest.mark.parametrize(
    "reason",
    [
        "because",
        None,
        [("gnt:user", "why", 1)],  # JSON has no tuples: an entry is a list
        [["gnt:user", "why"]],
        [["gnt:user", "why", 1, "more"]],
        [[1, "why", 1]],
        [["gnt:user", None, 1]],
        [["gnt:user", "why", 1.5]],
        [["gnt:user", "why", "1"]],
        [["gnt:user", "why", True]],
        ["gnt:user"],
    ],
)
def test_a_trail_of_another_shape_is_refused(reason: Any) -> None:
    with pytest.raises(OpPrereqError, match=r"OP_TEST_DELAY\.reason") as err:
        OpTestDelay(reason=reason).validate()
    assert err.value.ecode == ECODE_INVAL


def test_a_job_with_a_bad_trail_fails_with_ecode_inval_changing_nothing(
    ctx: Context, server: Any, data_dir: str
) -> None:
    # in this process
    with pytest.raises(OpPrereqError, match="reason") as err:
        Processor(ctx).execute(OpTestDelay(instance_names=[I1], reason=[["gnt:user", "x"]]))
    assert err.value.ecode == ECODE_INVAL
    job = JobStore(f"{data_dir}/jobs").get(_last_job(data_dir))
    assert job.status == "error" and job.error is not None and job.error["ecode"] == ECODE_INVAL
    assert job.ops[0].log == []  # refused before it ran
    # through the master daemon's protocol: the trail arrives as it was sent
    sent = [["gnt:user", "x"]]
    with pytest.raises(OpPrereqError, match="reason") as err:
        Client(data_dir=data_dir).submit_job([OpTestDelay(reason=sent)])
    assert err.value.ecode == ECODE_INVAL
    job_id = _last_job(data_dir)
    assert _trail(data_dir, job_id)[0] == sent[0]
    assert JobStore(f"{data_dir}/jobs").get(job_id).status == "error"


def test_the_masters_entry_leaves_the_submitters_list_alone() -> None:
    from ganeti_lv.opcodes import add_job_reasons

    shared: list[list[Any]] = [["gnt:user", "x", 1]]
    first, second = OpTestDelay(reason=shared), OpTestDelay(reason=shared)
    add_job_reasons([first, second], 7, 99)
    assert shared == [["gnt:user", "x", 1]]
    assert first.reason[1:] == [["gnt:opcode:test_delay", "job=7;index=0", 99]]
    assert second.reason[1:] == [["gnt:opcode:test_delay", "job=7;index=1", 99]]
    odd = OpTestDelay(reason="because")  # type: ignore[arg-type]
    add_job_reasons([odd], 8, 99)  # left for validation to refuse
    assert odd.reason == "because"


# ------------------------------------------------------------------ the command line


def test_the_cli_reason_and_command_start_the_trail_and_the_master_adds_its_entry(
    server: Any, data_dir: str, fake_ops: FakeNodeOps, capsys: Any
) -> None:
    """As Ganeti's client: the user's reason, the program and its command; then the
    master's entry of the job, in this process and in the master daemon alike."""
    for ops in (fake_ops, None):  # in this process, then through the daemon's protocol
        _run(data_dir, ops, capsys, "debug", "delay", "--duration", "0", "--reason", REASON)
        job_id = _last_job(data_dir)
        assert _entries(_trail(data_dir, job_id)) == [
            ("gnt:user", REASON),
            ("gnt:client:gnt-lv", "debug delay"),
            ("gnt:opcode:test_delay", f"job={job_id};index=0"),
        ]
    # without --reason: the command's entry and the master's
    _run(data_dir, fake_ops, capsys, "instance", "shutdown", "--dry-run", I1)
    job_id = _last_job(data_dir)
    assert _entries(_trail(data_dir, job_id)) == [
        ("gnt:client:gnt-lv", "instance shutdown"),
        ("gnt:opcode:instance_shutdown", f"job={job_id};index=0"),
    ]


def test_a_submitted_job_in_a_background_process_keeps_the_trail(
    config: ConfigStore, data_dir: str, capsys: Any
) -> None:
    """--submit without a daemon: the opcodes go to a process of their own as dicts."""
    _, out = _run(
        data_dir,
        None,
        capsys,
        "debug", "delay", "--duration", "0", "--submit", "--print-jobid", "--reason", REASON,
    )  # fmt: skip
    job_id = int(out)
    end = time.monotonic() + 30
    while not JobStore(f"{data_dir}/jobs").get(job_id).finished:
        assert time.monotonic() < end
        time.sleep(0.05)
    assert _entries(_trail(data_dir, job_id)) == [
        ("gnt:user", REASON),
        ("gnt:client:gnt-lv", "debug delay"),
        ("gnt:opcode:test_delay", f"job={job_id};index=0"),
    ]


def test_every_command_that_submits_a_job_takes_reason(
    config: ConfigStore, data_dir: str, capsys: Any
) -> None:
    from ganeti_lv.cli.main import build_parser

    parser = build_parser()
    for argv in (
        ["cluster", "init", "c", "--master-name", "m", "--master-address", "1.2.3.4"],
        ["cluster", "modify"],
        ["cluster", "verify"],
        ["cluster", "renew-crypto"],
        ["node", "add", "n"],
        ["node", "modify", "n"],
        ["node", "remove", "n"],
        ["node", "migrate", "n"],
        ["node", "evacuate", "n"],
        ["instance", "add", "-t", "file", "-n", "n", "i"],
        ["instance", "add", "-t", "file", "-I", "hail", "i"],
        ["instance", "modify", "-B", "vcpus=2", "i"],
        ["instance", "add-tags", "i", "t"],
        ["instance", "remove-tags", "i", "t"],
        ["cluster", "add-tags", "t"],
        ["instance", "startup", "i"],
        ["instance", "shutdown", "i"],
        ["instance", "reboot", "i"],
        ["instance", "remove", "i"],
        ["instance", "migrate", "i"],
        ["instance", "failover", "i"],
        ["instance", "info", "i"],
        ["backup", "export", "-n", "n", "i"],
        ["backup", "import", "-n", "n", "--src-node", "n", "i"],
        ["backup", "remove", "i"],
        ["debug", "delay"],
    ):
        assert parser.parse_args([*argv, "--reason", REASON]).reason == REASON, argv


def test_job_info_shows_the_trail_as_gnt_job_info(
    config: ConfigStore, data_dir: str, fake_ops: FakeNodeOps, capsys: Any
) -> None:
    _run(data_dir, fake_ops, capsys, "debug", "delay", "--duration", "0", "--reason", REASON)
    job_id = _last_job(data_dir)
    (user, client, master) = _trail(data_dir, job_id)
    _, out = _run(data_dir, fake_ops, capsys, "job", "info", str(job_id))
    lines = out.splitlines()
    at = lines.index("      reason:")
    assert lines[at + 1 : at + 10] == [
        "        - - gnt:user",
        f"          - {REASON}",
        f"          - {user[2]}",
        "        - - gnt:client:gnt-lv",
        "          - debug delay",
        f"          - {client[2]}",
        "        - - gnt:opcode:test_delay",
        f"          - job={job_id};index=0",
        f"          - {master[2]}",
    ]


# ------------------------------------------------------------------ a node operation's jobs


def test_the_jobs_of_a_node_evacuation_start_with_its_trail(
    config: ConfigStore, data_dir: str, fake_ops: FakeNodeOps, capsys: Any
) -> None:
    """As Ganeti's master for the jobs of an opcode's result: the node job's trail,
    then the master's entry of each move's own job."""
    running_on_node1(config, fake_ops)
    _run(data_dir, fake_ops, capsys, "node", "evacuate", "-f", "--reason", REASON, "node1")
    jobs = JobStore(f"{data_dir}/jobs").list()
    (parent,) = [job for job in jobs if job.parent is None]
    children = [job for job in jobs if job.parent == parent.id]
    assert len(children) == 2 and all(job.status == "success" for job in children)
    trail = _trail(data_dir, parent.id)
    assert _entries(trail) == [
        ("gnt:user", REASON),
        ("gnt:client:gnt-lv", "node evacuate"),
        ("gnt:opcode:node_evacuate", f"job={parent.id};index=0"),
    ]
    for child in children:
        child_trail = _trail(data_dir, child.id)
        assert child_trail[:3] == trail
        assert _entries(child_trail)[3:] == [
            ("gnt:opcode:instance_migrate", f"job={child.id};index=0")
        ]
