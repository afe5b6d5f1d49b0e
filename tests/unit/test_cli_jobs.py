"""gnt-lv node migrate/evacuate, --submit, job watch and job cancel (CLI)."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from support import locks as held_locks
from support.waiting import in_exec

from ganeti_lv import constants
from ganeti_lv.cli.main import main
from ganeti_lv.config import ConfigStore
from ganeti_lv.hypervisor.fake import FakeNodeOps
from ganeti_lv.master.jobs import JobStore
from ganeti_lv.objects import disk_path

N1, N2, N3 = "node1.example.com", "node2.example.com", "node3.example.com"
I1, I2 = "inst1.example.com", "inst2.example.com"


class Cli:
    def __init__(self, data_dir: str, ops: FakeNodeOps | None, capsys: Any) -> None:
        self.data_dir, self.ops, self.capsys = data_dir, ops, capsys

    def __call__(self, *argv: str, ask: Any = None) -> tuple[int, str, str]:
        self.capsys.readouterr()
        code = main(["--data-dir", self.data_dir, *argv], node_ops=self.ops, ask=ask)
        out, err = self.capsys.readouterr()
        return code, out, err


def running_on_node1(config: ConfigStore, fake_ops: FakeNodeOps) -> None:
    """inst1 and inst2 run on node1 with their disk files, ready to be moved off it."""
    cluster = config.get_cluster()
    for name in (I1, I2):
        inst = config.get_instance(name)
        assert inst is not None
        fake_ops.node(N1).files[disk_path(cluster, inst, 0)] = 1024
        fake_ops.add_domain(N1, name)
    fake_ops.present_paths = {cluster.file_storage_dir}


@pytest.fixture
def cli(config: ConfigStore, data_dir: str, fake_ops: FakeNodeOps, capsys: Any) -> Cli:
    running_on_node1(config, fake_ops)
    return Cli(data_dir, fake_ops, capsys)


def test_a_ganeti_scripts_priority_is_accepted(cli: Cli) -> None:
    """Jobs wait for their locks only: the priority changes nothing, and is no error."""
    for level in ("low", "normal", "high"):
        assert cli("debug", "delay", "--duration", "0", "--priority", level)[0] == 0
    with pytest.raises(SystemExit) as usage:
        cli("debug", "delay", "--duration", "0", "--priority", "urgent")
    assert usage.value.code == 2


def test_node_migrate_dry_run_prints_the_plan(cli: Cli, config: ConfigStore) -> None:
    code, out, _ = cli("node", "migrate", "--dry-run", "node1")
    assert code == 0
    assert f"Plan for node {N1}:" in out
    assert re.search(rf"{I1} \(\d+ MiB\): {N1} -> node[23]", out)
    inst = config.get_instance(I1)
    assert inst is not None and inst.primary_node == N1


def _primaries(config: ConfigStore) -> list[str]:
    return [config.get_instance(name).primary_node for name in (I1, I2)]  # type: ignore[union-attr]


def _no_jobs(cli: Cli) -> bool:
    return JobStore(f"{cli.data_dir}/jobs").list() == []


def test_node_evacuate_of_the_secondaries_moves_nothing(cli: Cli, config: ConfigStore) -> None:
    # gnt-node's -s: the secondary instances only, and there are none here
    code, out, err = cli("node", "evacuate", "-s", "node1")  # nothing to confirm
    assert code == 0, err
    assert err == f"No instances to evacuate on node(s) {N1}, exiting.\n" and not out
    for name in (I1, I2):
        inst = config.get_instance(name)
        assert inst is not None and inst.primary_node == N1
    assert _no_jobs(cli)


def test_node_evacuate_n_is_ganetis_new_secondary_and_moves_nothing(
    cli: Cli, config: ConfigStore
) -> None:
    """A script written for Ganeti: its -n replaces secondaries; --target-node moves all."""
    code, out, err = cli("node", "evacuate", "-f", "-n", "node3", "node1")
    assert (code, out) == (0, "") and "only secondary instances are evacuated" in err
    assert "No instances to evacuate" in err and _primaries(config) == [N1, N1] and _no_jobs(cli)
    assert cli("node", "evacuate", "-f", "--target-node", "node3", "node1")[0] == 0
    assert _primaries(config) == [N3, N3]


def test_node_evacuate_of_the_primaries_and_the_secondaries_at_once_is_refused(
    cli: Cli,
) -> None:
    """As Ganeti's: -p and -s together are an error (ECODE_INVAL), not "nothing to move"."""
    for node in ("node1", "node2"):  # with instances, and without
        code, out, err = cli("node", "evacuate", "-f", "-p", "-s", node)
        assert code == 1 and not out
        assert "error type: wrong_input" in err
        assert "Only one of 'primary_only' and 'secondary_only'" in err
        assert "No instances to evacuate" not in err
    assert _no_jobs(cli)


def test_node_migrate_and_evacuate_with_nothing_to_move_ask_nothing(
    cli: Cli, config: ConfigStore, monkeypatch: Any
) -> None:
    """As gnt-node: a message and exit 0, also without a terminal; no job."""
    monkeypatch.setattr("sys.stdin.isatty", lambda: False, raising=False)
    code, out, err = cli("node", "migrate", "node2")
    assert (code, out, err) == (0, f"No primary instances on node {N2}, exiting.\n", "")
    code, out, err = cli("node", "evacuate", "node2")
    assert (code, out, err) == (0, "", f"No instances to evacuate on node(s) {N2}, exiting.\n")
    # stopped instances: nothing to migrate live (evacuate fails them over: it asks)
    with config.update() as data:
        for name in (I1, I2):
            data.instances[name].admin_state = constants.ADMINST_DOWN
    code, out, err = cli("node", "migrate", "node1")
    assert (code, out) == (0, f"No running primary instances on node {N1}, exiting.\n"), err
    code, _, err = cli("node", "evacuate", "node1")
    assert code == 13 and "not confirmed" in err
    assert _no_jobs(cli)


def test_node_migrate_and_evacuate_read_what_to_move_through_the_clients_queries(
    cli: Cli, config: ConfigStore
) -> None:
    """As every other CLI read: queries without a job (the master daemon's when one
    runs), from the configuration only: no node is asked."""
    from ganeti_lv.client import Client

    asked: list[Any] = []

    class Spy(Client):
        def query(self, op: Any) -> Any:
            asked.append(op)
            return super().query(op)

    def run(*argv: str) -> tuple[int, str, str]:
        cli.capsys.readouterr()
        code = main(["--data-dir", cli.data_dir, *argv], node_ops=cli.ops, client_factory=Spy)
        out, err = cli.capsys.readouterr()
        return code, out, err

    with config.update() as data:
        for name in (I1, I2):
            data.instances[name].admin_state = constants.ADMINST_DOWN
    code, out, _ = run("node", "migrate", "node1")
    assert (code, out) == (0, f"No running primary instances on node {N1}, exiting.\n")
    assert [(op.OP_ID, op.names, op.live) for op in asked] == [
        ("OP_NODE_QUERY", ["node1"], False),
        ("OP_INSTANCE_QUERY", [I1, I2], False),
    ]
    asked.clear()
    code, _, err = run("node", "evacuate", "node2")
    assert (code, err) == (0, f"No instances to evacuate on node(s) {N2}, exiting.\n")
    assert [(op.OP_ID, op.names, op.live) for op in asked] == [("OP_NODE_QUERY", ["node2"], False)]
    asked.clear()
    code, _, err = run("node", "evacuate", "-f", "nosuch")
    assert code == 1 and "error type: unknown_entity" in err and "Node 'nosuch' not known" in err
    assert len(asked) == 1 and _no_jobs(cli)


def test_node_migrate_of_an_unknown_node(cli: Cli) -> None:
    code, _, err = cli("node", "migrate", "-f", "nosuch")
    assert code == 1 and "Node 'nosuch' not known" in err
    assert _no_jobs(cli)


def test_node_evacuate_and_job_list_groups_the_moves(cli: Cli, config: ConfigStore) -> None:
    code, out, err = cli("node", "evacuate", "-f", "node1")
    assert code == 0, err
    assert "instances 2/2 finished: 2 done" in out
    for name in (I1, I2):
        inst = config.get_instance(name)
        assert inst is not None and inst.primary_node in (N2, N3)
    # for people: the moves indented right under their node operation
    code, out, _ = cli("job", "list", "--no-headers", "-o", "summary")
    lines = out.splitlines()
    at = lines.index("NODE_EVACUATE(node1)")
    assert sorted(line.rstrip() for line in lines[at + 1 : at + 3]) == [
        f"  INSTANCE_MIGRATE({I1})",
        f"  INSTANCE_MIGRATE({I2})",
    ]
    # for scripts (a separator): plain rows in id order, the parent field groups them
    code, out, _ = cli("job", "list", "-o", "id,parent,summary", "--no-headers", "--separator", "|")
    rows = [line.split("|") for line in out.splitlines()]
    assert [int(r[0]) for r in rows] == sorted(int(r[0]) for r in rows)
    parent = next(r[0] for r in rows if r[2] == "NODE_EVACUATE(node1)")
    assert sorted(r[2] for r in rows if r[1] == parent) == [
        f"INSTANCE_MIGRATE({I1})",
        f"INSTANCE_MIGRATE({I2})",
    ]


def test_node_migrate_without_confirmation_does_nothing(cli: Cli) -> None:
    code, _, err = cli("node", "migrate", "node1")
    assert code == 13 and "not confirmed" in err  # Ganeti's EXIT_CONFIRMATION
    for command in ("migrate", "evacuate"):
        assert cli("node", command, "node1", ask=lambda _q: False)[0] == 13
    assert JobStore(f"{cli.data_dir}/jobs").list() == []


def test_submit_with_injected_node_ops_is_refused(cli: Cli) -> None:
    code, _, err = cli("node", "migrate", "-f", "--submit", "node1")
    assert code == 1 and "background" in err


def test_job_watch_of_a_finished_job(cli: Cli) -> None:
    cli("node", "evacuate", "-f", "node1")
    code, out, _ = cli("job", "watch", "1")
    assert code == 0
    assert "instances 2/2 finished" in out
    code, _, err = cli("job", "watch", "nope")
    assert code == 1 and "Invalid job id" in err
    for command in ("watch", "info", "cancel"):  # int() would read these as job 1 (or 10)
        for text in ("1_0", "+1", "\u0661", " 1"):
            code, out, err = cli("job", command, text)
            assert code == 1 and f"Invalid job id '{text}'" in err and not out


def test_job_cancel_of_a_finished_job_is_refused(cli: Cli) -> None:
    cli("instance", "shutdown", "inst1")
    code, _, err = cli("job", "cancel", "1")
    assert code == 1 and "not running" in err


def test_job_list_by_status_refuses_an_unknown_status(cli: Cli) -> None:
    cli("instance", "shutdown", "inst1")
    code, out, _ = cli("job", "list", "--status", "success", "--no-headers")
    assert code == 0 and len(out.splitlines()) == 1
    with pytest.raises(SystemExit) as exit_info:
        cli("job", "list", "--status", "bogus")
    assert exit_info.value.code == 2
    assert "invalid choice: 'bogus'" in cli.capsys.readouterr().err


def _wait_for(predicate: Any, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.1)


def test_submit_watch_and_cancel_in_background_processes(
    config: ConfigStore, data_dir: str, capsys: Any
) -> None:
    """Real background processes (no daemon): --submit, job watch, job cancel."""
    cli = Cli(data_dir, None, capsys)
    jobs = JobStore(f"{data_dir}/jobs")
    locks = held_locks.hold(data_dir, I1)
    try:
        code, out, err = cli("debug", "delay", "--duration", "0.5", "-I", "inst1", "--submit")
        assert code == 0 and out == "", err
        # as Ganeti's: on stderr
        holder = int(re.fullmatch(r"JobID: (\d+)\n", err).group(1))  # type: ignore[union-attr]
        code, out, err = cli(
            "debug", "delay", "--duration", "0", "-I", "inst1", "--submit", "--print-jobid"
        )
        waiter = int(out)  # --print-jobid: the bare id on stdout, and JobID: N still on stderr
        assert err == f"JobID: {waiter}\n" and waiter > holder
        code, out, err = cli("job", "cancel", str(waiter))
        assert code == 0, err
        code, _, err = cli("job", "watch", str(waiter))
        assert code == 1
        assert jobs.get(waiter).status == "canceled"
        assert not jobs.get(holder).finished
    finally:
        locks.release_all()
    code, out, err = cli("job", "watch", str(holder))
    assert code == 0, err
    assert "Sleeping for 0.5 s" in out
    assert jobs.get(holder).status == "success"


def test_job_cancel_asks_every_job_also_after_one_it_could_not_cancel(
    config: ConfigStore, data_dir: str, capsys: Any
) -> None:
    cli = Cli(data_dir, None, capsys)
    jobs = JobStore(f"{data_dir}/jobs")
    cli("instance", "shutdown", "inst1")  # job 1, finished
    locks = held_locks.hold(data_dir, I1)
    try:
        code, out, err = cli("debug", "delay", "--duration", "0", "-I", "inst1", "--submit")
        assert code == 0, err
        holder = int(err.split()[1])
        code, out, err = cli("debug", "delay", "--duration", "0", "-I", "inst1", "--submit")
        waiter = int(err.split()[1])
        code, out, err = cli("job", "cancel", "1", str(waiter))
        assert code == 1
        assert "Job 1 not canceled (wrong_state)" in err and "not running" in err
        assert f"Job {waiter} asked to stop" in out
        _wait_for(lambda: jobs.get(waiter).finished)
        assert jobs.get(waiter).status == "canceled"
        # a bad id among them: none is asked
        code, _, err = cli("job", "cancel", str(holder), "x")
        assert code == 1 and "Invalid job id 'x'" in err
    finally:
        locks.release_all()
    _wait_for(lambda: jobs.get(holder).finished)
    assert jobs.get(holder).status == "success"


def test_a_cancel_sent_twice_to_a_background_job_stops_it_safely_once(
    config: ConfigStore, data_dir: str, capsys: Any
) -> None:
    """A retried cancel (job cancel, DELETE /2/jobs/ID) is no hard interrupt.

    A test delay holding its lock does not stop for a cancel: the job runs
    to its end; a second SIGTERM used to interrupt it at once.
    """
    cli = Cli(data_dir, None, capsys)
    jobs = JobStore(f"{data_dir}/jobs")
    # long enough to run on through both requests and the checks on a loaded machine
    code, out, err = cli("debug", "delay", "--duration", "6", "-I", "inst1", "--submit")
    assert code == 0, err
    job_id = int(err.split()[1])
    _wait_for(lambda: in_exec(jobs.get(job_id)))
    for attempt in range(2):
        assert not jobs.get(job_id).finished, "the delay ended before the requests"
        code, _, err = cli("job", "cancel", str(job_id))
        assert code == 0, err
        if attempt == 0:  # recorded by the job's own process: canceling until it ends
            _wait_for(lambda: jobs.get(job_id).shown_status == "canceling")
    code, out, _ = cli("job", "list", "--pending", "--no-headers", "-o", "id,status")
    assert out.split() == [str(job_id), "canceling"]  # Ganeti's pending
    code, out, _ = cli("job", "list", "--running", "--no-headers", "-o", "id")
    assert out.split() == []
    assert "Asked to stop: " in cli("job", "info", str(job_id))[1]
    _wait_for(lambda: jobs.get(job_id).finished)
    assert jobs.get(job_id).status == "success", jobs.get(job_id).error
    assert jobs.get(job_id).shown_status == "success"  # it did not stop: its own end


def test_print_jobid_of_a_followed_job_comes_first_on_stdout(
    cli: Cli, server: Any, config: ConfigStore, data_dir: str, capsys: Any
) -> None:
    """As Ganeti's --print-jobid without --submit: the id, then the job followed to its end."""
    for ops in (cli.ops, None):  # in this process, and in the master daemon
        where = Cli(data_dir, ops, capsys)
        code, out, err = where(
            "debug", "delay", "--duration", "0.01", "-I", "inst1", "--print-jobid"
        )
        assert code == 0, err
        first, *rest = out.splitlines()
        assert JobStore(f"{data_dir}/jobs").get(int(first)).status == "success"
        assert any("Sleeping for 0.01 s" in line for line in rest), out
        assert "JobID" not in out + err
    code, out, _ = cli("debug", "delay", "--duration", "0.01", "-I", "inst1")
    assert code == 0 and "Sleeping" in out.splitlines()[0]  # without it: no id


def test_node_migrate_in_the_master_daemon(
    server: Any, data_dir: str, config: ConfigStore, inst1_running: FakeNodeOps
) -> None:
    """--submit's path with a daemon: the node job and its moves run in the daemon."""
    from ganeti_lv.client import Client
    from ganeti_lv.errors import JobError
    from ganeti_lv.master.protocol import Feedback
    from ganeti_lv.opcodes import OpNodeMigrate

    inst1_running.add_domain(N1, I2)
    client = Client(data_dir=data_dir)
    job_id = client.enqueue([OpNodeMigrate(node_name="node1")])
    records: list[Feedback] = []
    [result] = client.watch(job_id, records.append)
    assert {m["instance"] for m in result} == {I1, I2}
    assert any(r.text.startswith("instances 2/2 finished") for r in records)
    children = [j for j in client.jobs() if j.parent == job_id]
    assert len(children) == 2 and all(j.status == "success" for j in children)
    # a move's job is followed through the job log; canceling it alone is refused
    assert client.watch(children[0].id) == [None]
    with pytest.raises(JobError, match="not running"):
        client.cancel(children[0].id)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("migration  75.0% of memory, 12 MiB/s", ("migrating", 75.0, "12 MiB/s")),
        ("ev1: migration  75.0% of memory, 12 MiB/s", ("ev1 migrating", 75.0, "12 MiB/s")),
        (
            "ev1: disk/0 sent 1.5G, 120 MiB/s, 30%, ETA 12s",
            ("ev1 disk/0", 30.0, "1.5G, 120 MiB/s, ETA 12s"),
        ),
        (
            "instances 1/4 finished: 1 done, 2 running, 1 queued, 0 failed",
            ("instances", 25.0, "1 done, 2 running, 1 queued, 0 failed"),
        ),
        ("ev1: migrate to node2 started as job 7", None),
    ],
)
def test_progress_of_node_operation_lines(line: str, expected: Any) -> None:
    from ganeti_lv.master.protocol import progress_of

    assert progress_of(line) == expected


def test_node_migrate_takes_ganetis_ignore_ipolicy_and_passes_it_on(cli: Cli) -> None:
    # gnt-node migrate's --ignore-ipolicy: on the node's job and on each move's
    code, _, err = cli("node", "migrate", "-f", "--ignore-ipolicy", "node1")
    assert code == 0, err
    jobs = JobStore(f"{cli.data_dir}/jobs").list()
    node_job = next(j for j in jobs if j.parent is None)
    moves = [j for j in jobs if j.parent == node_job.id]
    assert node_job.ops[0].params["ignore_ipolicy"] is True
    assert len(moves) == 2
    assert all(m.ops[0].params["ignore_ipolicy"] is True for m in moves)


def test_node_evacuate_takes_ganetis_ignore_soft_errors(cli: Cli) -> None:
    code, _, err = cli("node", "evacuate", "-f", "--ignore-soft-errors", "node1")
    assert code == 0, err
    node_job = next(j for j in JobStore(f"{cli.data_dir}/jobs").list() if j.parent is None)
    assert node_job.ops[0].params["ignore_soft_errors"] is True
