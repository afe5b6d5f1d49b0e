"""Job log: ids, persistence as it happens, lost jobs after SIGKILL."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import threading
from pathlib import Path
from typing import Any

import pytest
from support.joblog import end_writes_fail
from support.waiting import wait_until

from ganeti_lv import Client, locking, retry
from ganeti_lv.cancel import Cancellation
from ganeti_lv.config import ConfigStore
from ganeti_lv.context import Context
from ganeti_lv.errors import (
    ECODE_ENVIRON,
    ECODE_STATE,
    GenericError,
    HooksAbort,
    JobError,
    OperationCanceled,
    OpExecError,
    OpPrereqError,
    RemoteCommandError,
)
from ganeti_lv.hypervisor.fake import FakeNodeOps
from ganeti_lv.master import jobs as jobs_module
from ganeti_lv.master import protocol, runner
from ganeti_lv.master.archive import archive_jobs
from ganeti_lv.master.follow import follow_logged
from ganeti_lv.master.jobs import JobStore
from ganeti_lv.master.processes import boot_id, pid_namespace, process_alive
from ganeti_lv.master.runner import run_job
from ganeti_lv.master.streams import logged
from ganeti_lv.mcpu import Processor
from ganeti_lv.opcodes import OpClusterVerify, OpCode, OpInstanceMigrate, OpTestDelay

MP = multiprocessing.get_context("fork")


@pytest.fixture
def store(tmp_path: Path) -> JobStore:
    return JobStore(str(tmp_path / "jobs"))


def test_job_written_as_it_happens(store: JobStore) -> None:
    job = store.create(OpTestDelay(duration=1.0, instance_names=["a"]))
    assert store.get(job.id).status == "queued"
    store.start(job)
    store.append_log(job, "first line")
    on_disk = store.get(job.id)
    assert on_disk.status == "running"
    assert [entry[1:] for entry in on_disk.log] == [("message", "first line")]
    store.finish_error(job, OpPrereqError("bad", "wrong_input"))
    final = store.get(job.id)
    assert final.status == "error"
    assert final.error == {
        "class": "OpPrereqError",
        "ganeti_class": "OpPrereqError",
        "ecode": "wrong_input",
        "message": "bad",
    }
    assert final.params["instance_names"] == ["a"]
    assert final.summary == "TEST_DELAY"
    assert final.pid == os.getpid()


def _create_jobs(jobs_dir: str, count: int) -> None:
    store = JobStore(jobs_dir)
    for _ in range(count):
        store.create(OpTestDelay())


def test_ids_unique_and_increasing_across_processes(store: JobStore) -> None:
    procs = [MP.Process(target=_create_jobs, args=(store.jobs_dir, 10)) for _ in range(3)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(30)
        assert proc.exitcode == 0
    assert store.job_ids() == list(range(1, 31))
    assert store.create(OpTestDelay()).id == 31


def test_unknown_and_corrupt_jobs(store: JobStore) -> None:
    with pytest.raises(JobError, match="Job 7 not found"):
        store.get(7)
    job = store.create(OpTestDelay())
    for beyond in (-1, 10**300):  # no file name to look for
        with pytest.raises(JobError, match=f"Job {beyond} not found"):
            store.get(beyond)
    with open(os.path.join(store.jobs_dir, f"job-{job.id}.json"), "w") as fobj:
        fobj.write("{")
    with pytest.raises(JobError, match="corrupt"):
        store.get(job.id)
    assert store.list() == []
    for text in ("{}", "[]", "7"):  # JSON, but no job
        with open(os.path.join(store.jobs_dir, f"job-{job.id}.json"), "w") as fobj:
            fobj.write(text)
        with pytest.raises(JobError, match="corrupt"):
            store.get(job.id)
        assert store.list() == []


def test_running_job_of_dead_process_is_lost(store: JobStore) -> None:
    job = store.create(OpTestDelay())
    store.start(job)
    assert store.get(job.id).status == "running"
    path = os.path.join(store.jobs_dir, f"job-{job.id}.json")
    with open(path) as fobj:
        doc = json.load(fobj)
    doc["pid_start"] = (doc["pid_start"] or 0) + 1  # same pid, another process (pid reuse)
    with open(path, "w") as fobj:
        json.dump(doc, fobj)
    assert store.get(job.id).status == "lost"


def test_a_job_of_another_boot_is_lost(store: JobStore) -> None:
    """Its pid and start time may be those of a live process after a reboot."""
    job = store.create_job([OpTestDelay()], start=True)  # this process: alive
    path = os.path.join(store.jobs_dir, f"job-{job.id}.json")
    with open(path) as fobj:
        doc = json.load(fobj)
    assert doc["boot_id"] == boot_id() is not None
    assert store.get(job.id).status == "running"
    doc["boot_id"] = "00000000-0000-0000-0000-000000000000"
    with open(path, "w") as fobj:
        json.dump(doc, fobj)
    assert store.get(job.id).status == "lost"
    del doc["boot_id"]  # a file of an older version: the pid says it
    with open(path, "w") as fobj:
        json.dump(doc, fobj)
    assert store.get(job.id).status == "running"


def test_a_job_of_another_pid_namespace_is_never_judged_lost(store: JobStore) -> None:
    """Its pid means nothing here (a container sharing the data dir): judged lost,
    its end would be recorded while it still runs."""
    job = store.create_job([OpTestDelay()], start=True)
    path = os.path.join(store.jobs_dir, f"job-{job.id}.json")
    with open(path) as fobj:
        doc = json.load(fobj)
    assert doc["pid_ns"] == pid_namespace() is not None
    doc["pid"] = 2**22 + 1  # no such process here
    for pid_ns, status in ((doc["pid_ns"], "lost"), (doc["pid_ns"] + 1, "running"), (None, "lost")):
        doc["pid_ns"] = pid_ns  # this namespace, another one, a file of an older version
        with open(path, "w") as fobj:
            json.dump(doc, fobj)
        assert store.get(job.id).status == status, pid_ns


def _run_long_job(data_dir: str, holding: Any) -> None:
    def feedback(msg: str) -> None:
        holding.set()

    Client(data_dir=data_dir, node_ops=FakeNodeOps()).submit(OpTestDelay(duration=60), feedback)


def test_sigkilled_job_process_shows_lost(config: ConfigStore) -> None:
    holding = MP.Event()
    proc = MP.Process(target=_run_long_job, args=(config.data_dir, holding))
    proc.start()
    try:
        assert holding.wait(30)
        client = Client(data_dir=config.data_dir, node_ops=FakeNodeOps())
        (job,) = client.jobs()
        assert job.status == "running"
        assert job.log[-1][2] == "Sleeping for 60 s"
    finally:
        os.kill(proc.pid, signal.SIGKILL)  # type: ignore[arg-type]
        proc.join(10)
    assert not process_alive(proc.pid)  # type: ignore[arg-type]
    lost = client.job(job.id)
    assert lost.status == "lost"
    assert lost.end_ts is None


def test_a_job_is_canceled_only_when_it_stopped_for_the_cancel(ctx: Context) -> None:
    """A cancel that comes too late to stop a job (it does not watch for one) and a
    failure of the job's own after it: the job failed, it was not canceled."""
    cancel = Cancellation()
    ctx.sleep = lambda _seconds: cancel.request("job cancel")  # arrives during Exec
    with pytest.raises(OpExecError, match="Failing as requested"):
        Processor(ctx).execute(OpTestDelay(duration=1, fail=True), cancel=cancel)
    late = ctx.jobs.list()[-1]
    assert late.status == "error" and cancel.is_set()
    # a cancel before Exec stops the job: canceled, and recorded as asked, also when
    # nothing recorded the request before the job ended (the two raced)
    with pytest.raises(OperationCanceled, match="before it started executing"):
        Processor(ctx).execute(OpTestDelay(duration=1, fail=True), cancel=cancel)
    canceled = ctx.jobs.list()[-1]
    assert canceled.status == "canceled" and canceled.cancel_ts is not None
    assert late.cancel_ts is None  # the late one: never recorded as a canceled job


def test_a_canceled_job_takes_no_lock_asks_no_node_and_runs_no_hook_after_the_cancel(
    ctx: Context, inst1_running: FakeNodeOps, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Canceled before it started, or while its first opcode ran: the next opcode
    stops before its locks, its session with the nodes, its checks and PRE hooks."""
    migrate = OpInstanceMigrate(instance_name="inst1.example.com", target_node="node2.example.com")
    taken: list[str] = []
    acquire = ctx.locks.acquire

    def counted(level: str, *args: Any, **kwargs: Any) -> Any:
        taken.append(level)
        return acquire(level, *args, **kwargs)

    monkeypatch.setattr(ctx.locks, "acquire", counted)
    cancel = Cancellation()
    cancel.request("job cancel")
    with pytest.raises(OperationCanceled, match="before it started executing"):
        Processor(ctx).execute(migrate, cancel=cancel)
    assert (taken, inst1_running.calls, inst1_running.sessions) == ([], [], [])
    assert ctx.jobs.list()[-1].status == "canceled"

    cancel = Cancellation()
    ops = [OpTestDelay(duration=0.01), migrate]
    job = ctx.jobs.create_job(ops, start=True)

    def on_record(_record: Any) -> None:  # the cancel arrives while opcode 0 runs
        cancel.request("job cancel")

    with pytest.raises(OperationCanceled):
        run_job(ctx, job, ops, on_record, cancel)
    assert taken == [locking.LEVEL_CLUSTER]  # opcode 0's, the delay's only
    assert (inst1_running.calls, inst1_running.sessions) == ([], [])
    stored = ctx.jobs.get(job.id)
    assert stored.status == "canceled"
    assert [op.status for op in stored.ops] == ["success", "canceled"]


def test_a_cancel_during_the_checks_runs_no_pre_hook(
    ctx: Context, inst1_running: FakeNodeOps, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It arrives while CheckPrereq asks the nodes: no PRE hook runs (hook consumers would
    see a PRE without a POST), and the job ends canceled with nothing changed."""
    ops = inst1_running
    cancel = Cancellation()
    asked = ops.node_info

    def node_info(node: Any) -> Any:
        cancel.request("job cancel")
        return asked(node)

    monkeypatch.setattr(ops, "node_info", node_info)
    migrate = OpInstanceMigrate(instance_name="inst1.example.com", target_node="node2.example.com")
    with pytest.raises(OperationCanceled, match="before it started executing"):
        Processor(ctx).execute(migrate, cancel=cancel)
    assert not [c for c in ops.calls if c.method == "run_hooks"]
    assert ctx.jobs.list()[-1].status == "canceled"


def test_a_job_whose_start_or_end_could_not_be_written_does_not_stay_active(
    ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One failed write of the job log (a full disk for a moment): the job still ends
    in its record, as the master daemon's own jobs do, also a node operation's move
    and a job run in-process."""

    def once(method: str) -> None:
        real = getattr(JobStore, method)

        def failing(store: JobStore, *args: Any, **kwargs: Any) -> Any:
            monkeypatch.setattr(JobStore, method, real)
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(JobStore, method, failing)

    parent = ctx.jobs.create(OpTestDelay(duration=0), start=True)
    proc = Processor(ctx)
    proc._job = parent  # a node operation's processor, running its job
    child_id, run = proc.run_child(OpTestDelay(duration=0), None, Cancellation())
    once("start_op")
    with pytest.raises(OSError):
        run()
    child = ctx.jobs.get(child_id)
    assert child.status == "error" and child.parent == parent.id
    assert child.ops[0].error is not None and "No space left" in child.ops[0].error["message"]

    # the write of a job's end fails once (a full disk for a moment): written again, it
    # records the success; an operation that succeeded is no failed job
    failures = end_writes_fail(monkeypatch, 1)
    assert Processor(ctx).execute(OpTestDelay(duration=0)) is True
    assert ctx.jobs.list()[-1].status == "success" and not failures

    # the write of a canceled job's end fails once: recorded canceled, the cancel raised
    once("finish_error")
    cancel = Cancellation()
    cancel.request("job cancel")
    with pytest.raises(OperationCanceled):
        Processor(ctx).execute(OpTestDelay(duration=0), cancel=cancel)
    assert ctx.jobs.list()[-1].status == "canceled"


def test_an_end_that_cannot_be_written_says_the_operation_succeeded(
    ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk stays full: the error says what happened to the operation itself."""
    end_writes_fail(monkeypatch, 1000)
    with pytest.raises(JobError, match="succeeded, but its end could not be written") as err:
        Processor(ctx).execute(OpTestDelay(duration=0))
    assert err.value.ecode == ECODE_ENVIRON and "No space left" in err.value.msg


def test_a_job_end_written_again_does_not_hold_up_the_other_writers(
    store: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the end's write waits to be tried again, another job's line is written."""
    end_writes_fail(monkeypatch, 1)
    ending = store.create(OpTestDelay(duration=0), start=True)
    other = store.create(OpTestDelay(duration=0), start=True)
    written: list[bool] = []

    def wait(_seconds: float) -> None:
        writer = threading.Thread(
            target=lambda: written.append(store.append_log(other, "x") is None)
        )
        writer.start()
        writer.join(10)

    monkeypatch.setattr(
        jobs_module, "job_end_write_policy", lambda: retry.job_end_write_policy(sleep=wait)
    )
    store.finish_success(ending, True)
    assert written == [True] and store.get(ending.id).status == "success"
    assert store.get(other.id).ops[0].log[-1][2] == "x"


def _first_end_not_written(store: JobStore, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, OSError]:
    """A running job of two opcodes whose first one's success could not be written (a
    full disk): the job and the error of that write."""
    job = store.create_job([OpTestDelay(), OpTestDelay()], start=True)
    store.start_op(job, 0)
    failures = end_writes_fail(monkeypatch, 1000)
    with pytest.raises(OSError) as err:
        store.finish_success(job, True, index=0)
    failures.clear()
    return job, err.value


def test_a_cancel_request_after_the_end_was_recorded_from_the_file_keeps_the_end(
    store: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The write of an opcode's success fails (a full disk), the job's end is then
    recorded from its file (``end_unfinished``): the runner's own object of the job
    still says running, and a cancel request recorded with it after that does not
    bring the job back to running (under the live process's pid: for ever)."""
    job, err = _first_end_not_written(store, monkeypatch)
    assert store.end_unfinished(job.id, err) == "error"
    store.record_cancel_request(job)
    assert store.get(job.id).status == "error"


def test_the_runners_object_of_a_job_takes_the_end_recorded_from_the_file(
    store: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its later writes (a cancel request, a line of a thread still running) keep the end."""
    job, err = _first_end_not_written(store, monkeypatch)
    assert store.end_unfinished(job.id, err, live=job) == "error"
    assert job.status == "error" and [op.status for op in job.ops] == ["error", "error"]
    store.record_cancel_request(job)
    store.append_log(job, "a late line")
    stored = store.get(job.id)
    assert (stored.status, stored.cancel_ts, stored.log[-1][2]) == ("error", None, "a late line")
    assert stored.error is not None and "No space left" in stored.error["message"]


def test_client_records_success_and_error(config: ConfigStore) -> None:
    client = Client(data_dir=config.data_dir, node_ops=FakeNodeOps())
    assert client.submit(OpTestDelay(instance_names=["inst1"])) is True
    with pytest.raises(OpPrereqError):
        client.submit(OpTestDelay(duration=-1))
    ok, bad = client.jobs()
    assert (ok.status, ok.result) == ("success", True)
    assert bad.status == "error" and bad.error is not None
    assert bad.error["ecode"] == "wrong_input"


def test_a_job_ended_outside_its_opcodes_is_recorded_as_ended(
    ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A caller's on_job_id that raises, a Ctrl-C between two opcodes: the job's end is
    recorded, it does not read "running" while its process lives on."""

    def boom(job_id: int) -> None:
        raise RuntimeError("the caller's callback failed")

    ops: list[OpCode] = [OpTestDelay(duration=0)]
    job = ctx.jobs.create_job(ops, start=True)
    with pytest.raises(RuntimeError, match="the caller's callback failed"):
        run_job(ctx, job, ops, on_job_id=boom)
    assert ctx.jobs.get(job.id).status == "error"

    class InterruptedBetween(Processor):
        def execute(self, op: OpCode, *args: Any, index: int = 0, **kwargs: Any) -> Any:
            if index == 1:  # a Ctrl-C landing after opcode 0, before opcode 1 is run
                raise KeyboardInterrupt
            return super().execute(op, *args, index=index, **kwargs)

    monkeypatch.setattr(runner, "Processor", InterruptedBetween)
    ops = [OpTestDelay(duration=0), OpTestDelay(duration=0)]
    job = ctx.jobs.create_job(ops, start=True)
    with pytest.raises(KeyboardInterrupt):
        run_job(ctx, job, ops)
    stored = ctx.jobs.get(job.id)
    assert stored.finished and [op.status for op in stored.ops][0] == "success"


def test_ids_never_reused_when_counter_is_lost(store: JobStore) -> None:
    first = store.create(OpTestDelay())
    os.unlink(os.path.join(store.jobs_dir, "serial"))
    assert store.create(OpTestDelay()).id == first.id + 1


def test_create_started_job_is_one_running_record(store: JobStore) -> None:
    job = store.create(OpTestDelay(), start=True)
    on_disk = store.get(job.id)
    assert on_disk.status == "running"
    assert on_disk.start_ts == on_disk.received_ts is not None


def test_ids_skip_existing_job_files_when_counter_lags(store: JobStore) -> None:
    """After a power loss the (not fsynced) counter may be behind fsynced job files."""
    for _ in range(3):
        store.finish_success(store.create(OpTestDelay()), True)
    with open(os.path.join(store.jobs_dir, "serial"), "w") as fobj:
        fobj.write("1\n")
    job = store.create(OpTestDelay())
    assert job.id == 4
    assert store.get(2).status == "success"


@pytest.mark.parametrize("archived", [False, True], ids=["job log", "archive"])
@pytest.mark.parametrize(
    "counter", [b"1\n", b"1 00000000-0000-0000-0000-000000000000\n"], ids=["old", "other boot"]
)
def test_ids_never_go_back_below_a_job_when_the_counter_lags_past_a_gap(
    store: JobStore, archived: bool, counter: bytes
) -> None:
    """A power loss may take back the (not fsynced) counter; the ids above it are not
    all taken (id 4 was given to a job whose creation failed): the next id is still
    above every job's, also one archived."""
    for _ in range(6):
        store.finish_success(store.create(OpTestDelay()), True)
    os.unlink(store.path(4))
    if archived:
        assert archive_jobs(store, [5, 6]) == {5: None, 6: None}
    with open(os.path.join(store.jobs_dir, "serial"), "wb") as fobj:
        fobj.write(counter)
    assert store.create(OpTestDelay()).id == 7
    assert store.create(OpTestDelay()).id == 8


def test_ids_within_a_boot_come_from_the_counter_alone(
    store: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The job files are listed once per boot (the counter's first use in it), not on
    every new job."""
    store.create(OpTestDelay())

    def listed() -> int:
        raise AssertionError("the job files were listed")

    monkeypatch.setattr(store, "_highest_id", listed)
    assert [store.create(OpTestDelay()).id for _ in range(3)] == [2, 3, 4]


def test_creation_and_final_states_are_fsynced(
    store: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ganeti_lv.config as config_mod

    synced: list[int] = []
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(config_mod.os, "fsync", counting_fsync)
    job = store.create(OpTestDelay(), start=True)
    assert len(synced) == 2  # the new job file and its directory
    store.mark_executing(job)
    store.append_log(job, "a line")
    assert len(synced) == 2  # intermediate states: no fsync
    assert store.get(job.id).log[-1][2] == "a line"
    store.finish_success(job, True)
    assert len(synced) == 4  # the job file and its directory again
    assert store.get(job.id).status == "success"


@pytest.mark.parametrize("content", [b"", b"garbage\n", b"0\n", b"\x00\x00"])
def test_unreadable_counter_is_rebuilt_from_job_files(store: JobStore, content: bytes) -> None:
    for _ in range(3):
        store.create(OpTestDelay())
    with open(os.path.join(store.jobs_dir, "serial"), "wb") as fobj:
        fobj.write(content)
    assert store.create(OpTestDelay()).id == 4
    assert store.create(OpTestDelay()).id == 5


def test_counter_rewritten_in_place_holds_the_last_id(store: JobStore) -> None:
    """With the boot it was written in (an older version's counter has the number alone)."""
    counter = os.path.join(store.jobs_dir, "serial")
    for _ in range(12):
        store.create(OpTestDelay())
    with open(counter, "rb") as fobj:
        assert fobj.read() == f"12 {boot_id()}\n".encode()
    with open(counter, "wb") as fobj:
        fobj.write(b"100000\n")  # ahead (ids are never reused, gaps are fine)
    assert store.create(OpTestDelay()).id == 100001
    with open(counter, "rb") as fobj:
        assert fobj.read() == f"100001 {boot_id()}\n".encode()


def test_new_job_file_is_whole_or_absent(store: JobStore, monkeypatch: pytest.MonkeyPatch) -> None:
    import ganeti_lv.master.jobs as jobs_mod

    def fail(*_args: Any) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(jobs_mod.os, "replace", fail)
    with pytest.raises(OSError, match="disk gone"):
        store.create(OpTestDelay())
    assert sorted(os.listdir(store.jobs_dir)) == [".lock", "serial"]  # no job, no temp file
    monkeypatch.undo()
    job = store.create(OpTestDelay(), start=True)
    assert job.id == 2  # the failed creation's id is not reused, nor is its file there
    assert store.job_ids() == [2] and store.get(2).status == "running"


def test_a_new_job_file_in_place_whose_sync_fails_is_created(
    store: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every reader sees it: its creation is not reported as failed (a job recorded that
    its caller never ran), the sync's failure is only logged."""
    import ganeti_lv.master.jobs as jobs_mod

    def fail(*_args: Any) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(jobs_mod.os, "fsync", fail)
    job = store.create(OpTestDelay(), start=True)
    monkeypatch.undo()
    assert store.get(job.id).status == "running"


def test_a_job_file_of_one_opcode_at_the_top_level_is_read_as_a_job(store: JobStore) -> None:
    """Job files written before jobs had several opcodes stay readable."""
    old = {
        "id": 5, "op_id": "OP_TEST_DELAY", "summary": "TEST_DELAY", "status": "error",
        "params": {"OP_ID": "OP_TEST_DELAY", "duration": 1.0}, "received_ts": 10.0,
        "start_ts": 11.0, "exec_ts": 12.0, "end_ts": 13.0, "result": None,
        "log": [[12.5, "message", "Sleeping for 1 s"]], "pid": 1, "pid_start": None,
        "error": {"class": "OpExecError", "ecode": "internal_error", "message": "boom"},
    }  # fmt: skip
    os.makedirs(store.jobs_dir)
    with open(os.path.join(store.jobs_dir, "job-5.json"), "w") as fobj:
        json.dump(old, fobj)
    job = store.get(5)
    assert (job.id, job.status, job.op_id, job.summary, job.exec_ts) == (
        5, "error", "OP_TEST_DELAY", "TEST_DELAY", 12.0,
    )  # fmt: skip
    assert job.params["duration"] == 1.0
    assert job.log == [(12.5, "message", "Sleeping for 1 s")]
    assert job.error == old["error"]
    assert [(op.status, op.end_ts) for op in job.ops] == [("error", 13.0)]
    # written again in the current form, it reads back the same
    store.save(job)
    assert store.get(5) == job


def test_a_job_of_several_opcodes_records_each(store: JobStore) -> None:
    first, second = OpTestDelay(duration=1.0), OpTestDelay(instance_names=["a"])
    job = store.create_job([first, second])
    assert (job.op_id, job.summary) == ("OP_TEST_DELAY,OP_TEST_DELAY", "TEST_DELAY,TEST_DELAY")
    store.start_op(job, 0)
    store.append_log(job, "one", index=0)
    store.finish_success(job, True, index=0)
    assert store.get(job.id).status == "running"  # the second opcode is still to run
    store.start_op(job, 1)
    store.append_log(job, "two", index=1)
    store.finish_success(job, [1, 2], index=1)
    done = store.get(job.id)
    assert done.status == "success" and done.end_ts is not None
    assert done.results == [True, [1, 2]] and done.result == [1, 2]
    assert [e[2] for e in done.log] == ["one", "two"]
    assert [op.params["OP_ID"] for op in done.ops] == ["OP_TEST_DELAY", "OP_TEST_DELAY"]


def test_a_failing_feedback_function_never_stops_the_job(
    config: ConfigStore, fake_ops: FakeNodeOps
) -> None:
    """A caller whose output went away (a closed pipe) does not decide the operation's fate."""
    calls: list[str] = []

    def broken(line: str) -> None:
        calls.append(line)
        raise BrokenPipeError("the reader went away")

    client = Client(data_dir=config.data_dir, node_ops=fake_ops)
    problems = client.submit(OpClusterVerify(), broken)
    (job,) = client.jobs()
    assert job.status == "success" and job.result == problems
    logged = [e[2] for e in job.log]
    assert len(logged) > 2 and logged[0] == "* Gathering data from the nodes"
    assert calls == logged[:1]  # tried once, then dropped; the job log has every line


def test_the_thread_recording_a_cancel_request_ends_with_its_job(ctx: Context) -> None:
    """One thread per running job waits for its cancel request; it records one that
    comes while the job runs, and is gone soon after the job's end (a request then
    changes nothing)."""
    import threading
    import time

    from ganeti_lv.master.runner import CANCEL_WATCH_POLL

    def watchers(job_id: int) -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name == f"job-{job_id}-cancel"]

    cancel = Cancellation()
    job = ctx.jobs.create_job([OpTestDelay(duration=0.5)], start=True)

    def sleep(_seconds: float) -> None:  # the request comes while the delay sleeps
        cancel.request("asked")
        wait_until(lambda: ctx.jobs.get(job.id).cancel_ts is not None, 10)

    ctx.sleep = sleep
    run_job(ctx, job, [OpTestDelay(duration=0.5)], None, cancel)  # a delay does not stop
    recorded = ctx.jobs.get(job.id)
    assert recorded.status == "success" and recorded.cancel_ts is not None
    quiet = ctx.jobs.create_job([OpTestDelay(duration=0)], start=True)
    late = Cancellation()
    run_job(ctx, quiet, [OpTestDelay(duration=0)], None, late)
    late.request("too late")
    deadline = time.monotonic() + CANCEL_WATCH_POLL + 2
    while (watchers(quiet.id) or watchers(job.id)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert watchers(quiet.id) == [] and watchers(job.id) == []
    assert ctx.jobs.get(quiet.id).cancel_ts is None  # after its end: not recorded


def _live(err: GenericError) -> GenericError:
    """The error as a client following the job live gets it: over the daemon's socket."""
    return protocol.decode_error(json.loads(json.dumps(protocol.encode_error(err))))


@pytest.mark.parametrize(
    "err",
    [
        HooksAbort([("node2", "10-deny", "not today")], ["node1", "node2"]),
        RemoteCommandError("mkdir failed", node="node2", exit_status=1, output="EACCES"),
        OpPrereqError("busy", ECODE_STATE, node="node1"),
        OperationCanceled(""),
    ],
    ids=lambda err: type(err).__name__,
)
def test_an_error_replayed_from_the_job_log_is_the_live_one(
    store: JobStore, err: GenericError
) -> None:
    """Following a job that ended (from its record, with or without a daemon) raises
    the error a client following it live gets: its type, message and attributes."""
    job = store.create(OpTestDelay(), start=True)
    store.finish_error(job, err)
    with pytest.raises(GenericError) as followed:
        follow_logged(store.get, job.id)
    (end,) = [json.loads(protocol.encode(m)) for m in logged(store.get(job.id))]
    with pytest.raises(GenericError) as watched:
        protocol.outcome(end)
    live = _live(err)
    for replayed in (followed.value, watched.value):
        assert type(replayed) is type(live)
        assert (str(replayed), vars(replayed)) == (str(live), vars(live))


def test_a_hook_failure_recorded_before_errors_kept_their_attributes_replays_its_results(
    store: JobStore,
) -> None:
    """Its record has the failures (``hook_failures``) but no ``attrs``."""
    job = store.create(OpTestDelay(), start=True)
    store.finish_error(job, OpExecError("x"))
    path = store.path(job.id)
    with open(path) as fobj:
        doc = json.load(fobj)
    doc["ops"][0]["error"] = {
        "class": "HooksAbort", "ganeti_class": "HooksAbort", "ecode": ECODE_ENVIRON,
        "message": "Hook script failure(s), aborting:\n  node n2, script 10-deny: no",
        "hook_failures": [["n2", "10-deny", "no"]],
    }  # fmt: skip
    with open(path, "w") as fobj:
        json.dump(doc, fobj)
    with pytest.raises(HooksAbort) as err:
        follow_logged(store.get, job.id)
    assert err.value.results == [["n2", "10-deny", "no"]]
    assert (err.value.ecode, err.value.msg) == (ECODE_ENVIRON, doc["ops"][0]["error"]["message"])
