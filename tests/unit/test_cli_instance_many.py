"""gnt-lv instance startup/shutdown/reboot of several instances (Ganeti's selections)."""

from __future__ import annotations

import contextlib
import re
from typing import Any

import pytest

from ganeti_lv.cancel import Cancellation
from ganeti_lv.cli import instance_many
from ganeti_lv.cli.main import main
from ganeti_lv.config import ConfigStore
from ganeti_lv.errors import JobError, OperationCanceled
from ganeti_lv.hypervisor.fake import FakeNodeOps
from ganeti_lv.master.jobs import JobStore
from ganeti_lv.opcodes import OpInstanceShutdown

N1, N2 = "node1.example.com", "node2.example.com"
I1, I2 = "inst1.example.com", "inst2.example.com"


class Cli:
    """gnt-lv on the test data dir, submitting to the test's master daemon."""

    def __init__(self, data_dir: str, capsys: Any) -> None:
        self.data_dir, self.capsys = data_dir, capsys

    def __call__(self, *argv: str, ask: Any = None) -> tuple[int, str, str]:
        self.capsys.readouterr()
        code = main(["--data-dir", self.data_dir, *argv], ask=ask)
        out, err = self.capsys.readouterr()
        return code, out, err


@pytest.fixture
def cli(server: Any, data_dir: str, inst1_running: FakeNodeOps, capsys: Any) -> Cli:
    inst1_running.add_domain(N1, I2)  # both instances run on node1
    return Cli(data_dir, capsys)


def _states(config: ConfigStore) -> dict[str, str]:
    return {name: inst.admin_state for name, inst in config.read().instances.items()}


def _jobs(data_dir: str) -> list[Any]:
    return JobStore(f"{data_dir}/jobs").list()


def test_shutdown_of_the_primaries_of_a_node_runs_one_job_per_instance(
    cli: Cli, config: ConfigStore, data_dir: str
) -> None:
    code, out, err = cli("instance", "shutdown", "--primary", N1, "--force-multiple")
    assert (code, err) == (0, "")
    jobs = _jobs(data_dir)
    assert [job.summary for job in jobs] == [f"INSTANCE_SHUTDOWN({I1})", f"INSTANCE_SHUTDOWN({I2})"]
    assert all(job.status == "success" for job in jobs)
    lines = out.splitlines()
    assert lines[0] == f"Submitted jobs {jobs[0].id}, {jobs[1].id}"
    assert f"Waiting for job {jobs[0].id} for {I1} ..." in lines
    assert f"Waiting for job {jobs[1].id} for {I2} ..." in lines
    assert _states(config) == {I1: "down", I2: "down"}
    # and back up, named; the jobs' reason trail names the command
    code, out, err = cli("instance", "startup", "--force-multiple", I2, I1)
    assert (code, err) == (0, "")
    assert _states(config) == {I1: "up", I2: "up"}
    started = _jobs(data_dir)[2:]
    assert [job.ops[0].params["instance_name"] for job in started] == [I2, I1]  # as named
    assert all(job.ops[0].params["reason"][-2][1] == "instance startup" for job in started)


def test_several_instances_are_confirmed_first(
    cli: Cli, config: ConfigStore, data_dir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[str] = []

    def no(question: str) -> bool:
        asked.append(question)
        return False

    code, _, _ = cli("instance", "reboot", "--node", N1, ask=no)
    assert code == 1 and _jobs(data_dir) == []
    assert asked == [
        f"The reboot will operate on 2 instances.\nAffected instances:\n  {I1}\n  {I2}\n"
        "Do you want to continue?"
    ]
    # without a terminal the answer is no, and the option to give is named
    monkeypatch.setattr("sys.stdin.isatty", lambda: False, raising=False)
    code, _, err = cli("instance", "shutdown", "--all")
    assert code == 1 and "not confirmed (no terminal); use --force-multiple" in err
    assert _jobs(data_dir) == [] and _states(config) == {I1: "up", I2: "up"}
    # one instance named: one job, no question (as before)
    code, _, err = cli("instance", "shutdown", I1)
    assert code == 0, err
    assert _states(config) == {I1: "down", I2: "up"}


@pytest.mark.parametrize(
    ("argv", "text"),
    [
        (["--all", I1], "--all takes no names"),
        (["--node"], "No node names given"),
        (["--tags"], "No instance tag names given"),
        ([], "No instance names given"),
        (["--secondary", N1], "Selection filter does not match any instances"),
        (["--primary", N2], "Selection filter does not match any instances"),
        (["--tags", "db"], "Selection filter does not match any instances"),
        (["--node-tags"], "No node tag names given"),
        (["--node-tags", "rack:1"], "Selection filter does not match any instances"),
        (["--sec-node-tags", "rack:1"], "Selection filter does not match any instances"),
        (["--node", "nosuch"], "Node 'nosuch' not known"),
        (["ghost", I1], "Instance 'ghost' not known"),
    ],
)
def test_a_selection_of_nothing_or_of_unknown_names_changes_nothing(
    cli: Cli, config: ConfigStore, data_dir: str, argv: list[str], text: str
) -> None:
    code, _, err = cli("instance", "shutdown", "--force-multiple", *argv)
    assert code == 1 and text in err, err
    assert "error type: " in err  # a prerequisite error, with its code
    assert _jobs(data_dir) == [] and _states(config) == {I1: "up", I2: "up"}


def test_selection_by_node_tags(cli: Cli, config: ConfigStore, data_dir: str) -> None:
    """Ganeti's --node-tags and --pri-node-tags: instances of a node with any of the tags."""
    with config.update() as data:
        data.nodes[N1].tags = ["rack:1", "ssd"]
        data.nodes[N2].tags = ["rack:1"]
    code, _, err = cli("instance", "shutdown", "--pri-node-tags", "ssd", "x", "--force-multiple")
    assert code == 0, err
    assert _states(config) == {I1: "down", I2: "down"}
    assert [job.summary for job in _jobs(data_dir)] == [
        f"INSTANCE_SHUTDOWN({I1})",
        f"INSTANCE_SHUTDOWN({I2})",
    ]
    with config.update() as data:  # two nodes, by either tag: their instances in order
        data.instances[I2].primary_node = N2
    code, _, err = cli("instance", "startup", "--node-tags", "rack:1", "ssd", "--force-multiple")
    assert code == 0, err
    assert [job.summary for job in _jobs(data_dir)[2:]] == [
        f"INSTANCE_STARTUP({I1})",
        f"INSTANCE_STARTUP({I2})",
    ]


def test_selection_by_tag_and_the_empty_cluster(
    cli: Cli, config: ConfigStore, data_dir: str
) -> None:
    with config.update() as data:
        data.instances[I2].tags = ["db"]
    code, _, err = cli("instance", "shutdown", "--tags", "db", "other", "--force-multiple")
    assert code == 0, err
    assert _states(config) == {I1: "up", I2: "down"}
    with config.update() as data:
        data.instances.clear()
    code, out, err = cli("instance", "startup", "--all", "--force-multiple")
    assert (code, out, err) == (0, "Cluster is empty, no instances to startup\n", "")


def test_submit_prints_each_job_as_ganeti(cli: Cli, config: ConfigStore, data_dir: str) -> None:
    code, out, err = cli("instance", "shutdown", "--all", "--force-multiple", "--submit")
    assert (code, err) == (0, "")
    pairs = [re.fullmatch(r"(\d+): (\S+)", line).groups() for line in out.splitlines()]  # type: ignore[union-attr]
    assert [name for _, name in pairs] == [I1, I2]
    store = JobStore(f"{data_dir}/jobs")
    for job_id, name in pairs:
        assert store.get(int(job_id)).ops[0].params["instance_name"] == name
    # one instance named: the same line, not asked (Ganeti's JobExecutor either way)
    code, out, err = cli("instance", "startup", "--submit", I1)
    assert (code, err) == (0, "")
    [(job_id, name)] = [re.fullmatch(r"(\d+): (\S+)", line).groups() for line in out.splitlines()]  # type: ignore[union-attr]
    assert name == I1 and store.get(int(job_id)).ops[0].params["instance_name"] == I1
    # an unknown one is refused before a job is started for it, as Ganeti looks it up first
    before = store.job_ids()
    code, out, err = cli("instance", "shutdown", "--submit", "--print-jobid", "nosuch")
    assert (code, out) == (1, "") and "unknown_entity" in err and store.job_ids() == before


def test_a_failed_job_is_reported_and_the_others_are_followed(
    cli: Cli, config: ConfigStore, data_dir: str, inst1_running: FakeNodeOps
) -> None:
    inst1_running.fail("shutdown_instance", N1, "no ACPI today", times=1)
    code, out, err = cli("instance", "shutdown", "--all", "--force-multiple")
    assert code == 1
    failed = re.findall(r"Job (\d+) for (\S+) has failed: Failure: ", err)
    assert len(failed) == 1, err
    assert "no ACPI today" in err
    assert out.count("Waiting for job") == 2
    jobs = {job.id: job for job in _jobs(data_dir)}
    assert sorted(job.status for job in jobs.values()) == ["error", "success"]
    assert jobs[int(failed[0][0])].status == "error"


class _Following:
    """A CliEnv and client stand-in for ``instance_many``'s submission and following.

    ``watch`` of job ``interrupt_at`` is Ctrl-C while it is followed (the
    signal handler sets the cancel request); with ``again`` the second
    Ctrl-C interrupts it. Jobs in ``ended`` cannot be asked to stop.
    """

    def __init__(self, ended: set[int], interrupt_at: int = 1, again: bool = False) -> None:
        self.ended, self.interrupt_at, self.again = ended, interrupt_at, again
        self.watched: list[tuple[int, bool]] = []
        self.canceled: list[int] = []
        self.lines: list[str] = []
        self.next_id = 0
        self.refused: set[str] = set()

    # the CliEnv side
    def client(self) -> _Following:
        return self

    def records(self) -> Any:
        return contextlib.nullcontext(self.lines.append)

    def write(self, line: str) -> None:
        self.lines.append(line)

    warn = write

    def enqueue(self, ops: list[Any]) -> int:
        if ops[0].instance_name in self.refused:
            raise JobError("the job log is full")
        self.next_id += 1
        return self.next_id

    # the client side
    def watch(self, job_id: int, _show: Any, cancel: Any) -> list[Any]:
        self.watched.append((job_id, cancel.is_set()))
        if job_id == self.interrupt_at:
            cancel.request("interrupted by the user")  # the signal handler's part
            if self.again:
                raise KeyboardInterrupt
            raise OperationCanceled(f"Job {job_id} canceled")
        return [None]

    def cancel(self, job_id: int, reason: str) -> None:
        if job_id in self.ended:
            raise JobError(f"Job {job_id} is success, not running")
        self.canceled.append(job_id)


JOBS = [(1, I1), (2, I2), (3, "inst3")]


def test_ctrl_c_stops_the_job_followed_then_every_other_job_not_ended() -> None:
    following = _Following(ended={2})
    ok = instance_many._follow(following, JOBS, Cancellation())  # type: ignore[arg-type]
    assert not ok
    # the job followed was asked by its watch; then the others at once, once
    assert following.canceled == [3]
    assert following.watched == [(1, False), (2, True), (3, True)]
    assert any(line.startswith(f"Job 1 for {I1} has failed") for line in following.lines)


def test_a_second_ctrl_c_asks_every_job_not_followed_to_its_end_and_ends() -> None:
    following = _Following(ended=set(), interrupt_at=2, again=True)
    with pytest.raises(KeyboardInterrupt):
        instance_many._follow(following, JOBS, Cancellation())  # type: ignore[arg-type]
    assert following.watched == [(1, False), (2, False)]
    assert following.canceled == [2, 3]  # not job 1, which ended


def test_submission_stops_at_a_cancel_and_goes_on_after_a_refused_job() -> None:
    following = _Following(ended=set())
    following.refused = {I2}
    jobs, ok = instance_many._start(
        following,  # type: ignore[arg-type]
        [I1, I2, "inst3"],
        lambda name: OpInstanceShutdown(instance_name=name),
        Cancellation(),
    )
    assert (jobs, ok) == ([(1, I1), (2, "inst3")], False)
    assert any(line.startswith(f"Failed to submit job for {I2}: ") for line in following.lines)
    stopped = Cancellation()
    stopped.request("interrupted by the user")
    following = _Following(ended=set())
    jobs, ok = instance_many._start(
        following,  # type: ignore[arg-type]
        [I1, I2],
        lambda name: OpInstanceShutdown(instance_name=name),
        stopped,
    )
    assert (jobs, ok) == ([], False)
    assert following.lines == [f"Not submitted (interrupted): {I1}, {I2}"]


def test_an_instance_named_twice_is_one_job(cli: Cli, data_dir: str) -> None:
    code, out, err = cli("instance", "shutdown", "inst1", I1)
    assert (code, err) == (0, "")
    assert [job.summary for job in _jobs(data_dir)] == [f"INSTANCE_SHUTDOWN({I1})"]
    assert "Submitted jobs" not in out  # one instance: followed as a single job


def test_startup_with_temporary_parameters_and_paused(
    cli: Cli, config: ConfigStore, data_dir: str, inst1_running: FakeNodeOps
) -> None:
    """-H (Ganeti's kvm: form too), -B and --paused reach the opcode of every job."""
    cli("instance", "shutdown", "--force-multiple", I1, I2)
    code, out, err = cli(
        "instance",
        "startup",
        "--force-multiple",
        "-H",
        "kvm:kernel_args=single",
        "-B",
        "memory=64M",
        "--paused",
        I1,
        I2,
    )
    assert (code, err) == (0, "")
    started = _jobs(data_dir)[2:]
    assert sorted(job.ops[0].params["instance_name"] for job in started) == [I1, I2]
    for job in started:
        params = job.ops[0].params
        assert params["hvparams"] == {"kernel_args": "single"}
        assert params["beparams"] == {"memory": "64M"}
        assert params["startup_paused"] is True
    assert {d.state for d in inst1_running.node(N1).domains.values()} == {"paused"}
    assert _states(config) == {I1: "up", I2: "up"}
    # a bad temporary parameter: every job fails before anything started
    cli("instance", "shutdown", "--force-multiple", I1, I2)
    code, out, err = cli("instance", "startup", "--force-multiple", "-B", "vcpus=0", I1, I2)
    assert code == 1 and err.count("Backend parameter 'vcpus' must be at least 1") == 2
    assert _states(config) == {I1: "down", I2: "down"}
