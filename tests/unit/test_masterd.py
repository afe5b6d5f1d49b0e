"""The master daemon and its client: same feedback, results, errors and cancel as in-process.

The daemon serves in a thread on the fake nodes (the ``server`` fixture);
its client is ``ganeti_lv.master.client``, the one client of the protocol.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import resource
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from typing import Any

import pytest
from support.joblog import end_writes_fail
from support.masterd import start_program
from support.waiting import in_exec, wait_until

import ganeti_lv
from ganeti_lv import Client, constants, paths
from ganeti_lv.cancel import Cancellation
from ganeti_lv.cli.main import main
from ganeti_lv.config import ConfigStore
from ganeti_lv.constants import JOB_ACTIVE_STATUSES, JOB_STATUS_RUNNING
from ganeti_lv.errors import (
    ECODE_FAULT,
    ECODE_INVAL,
    ECODE_NOENT,
    ECODE_STATE,
    HooksAbort,
    JobError,
    MigrationAborted,
    OpExecError,
    OpPrereqError,
)
from ganeti_lv.hypervisor.fake import FakeNodeOps
from ganeti_lv.hypervisor.migration_types import MigrationProgress
from ganeti_lv.master import client as masterclient
from ganeti_lv.master import daemon as masterd
from ganeti_lv.master import protocol
from ganeti_lv.master.jobs import JobStore
from ganeti_lv.master.protocol import Feedback, Progress
from ganeti_lv.node.transport import HookScriptResult
from ganeti_lv.opcodes import OpInstanceMigrate, OpTestDelay

INST = "inst1.example.com"
N1, N2 = "node1.example.com", "node2.example.com"


def _client(data_dir: str) -> masterclient.MasterClient:
    client = masterclient.connect(data_dir)
    assert client is not None
    return client


def _jobs(data_dir: str) -> list[Any]:
    return JobStore(paths.jobs_dir(data_dir)).list()


def _running(data_dir: str) -> int:
    return len([j for j in _jobs(data_dir) if j.status == JOB_STATUS_RUNNING])


def test_no_daemon_means_no_client(data_dir: str) -> None:
    assert masterclient.connect(data_dir) is None


def test_migration_through_the_daemon(
    server: Any, data_dir: str, config: ConfigStore, fake_ops: FakeNodeOps
) -> None:
    fake_ops.migration_reports = [
        MigrationProgress(elapsed=1.0, memory_total=10, memory_remaining=5)
    ]
    records: list[Feedback] = []
    with _client(data_dir) as client:
        client.submit_job([OpInstanceMigrate(instance_name=INST, target_node=N2)], records.append)
    assert config.get_instance(INST).primary_node == N2  # type: ignore[union-attr]
    assert fake_ops.calls_to("migrate_instance")
    lines = [r.text for r in records]
    assert any(line.startswith("STEP 3/4 Migrating instance") for line in lines)
    # progress comes structured: the bar, its percentage and the rest of the line
    (progress,) = [r for r in records if isinstance(r, Progress)]
    assert (progress.bar, progress.percent) == ("migrating", 50.0)
    assert progress.text.startswith("migration  50.0% of memory")
    job = _jobs(data_dir)[-1]
    assert job.status == "success"
    assert {r.job_id for r in records} == {job.id} and {r.op for r in records} == {0}
    # the job log holds the same lines the client was sent
    assert [entry[-1] for entry in job.log] == lines


def test_results_come_back_as_data(server: Any, data_dir: str) -> None:
    op = OpTestDelay(duration=0, instance_names=["inst1"], dry_run=True)
    result = _client(data_dir).submit(op)
    assert result == {"instances": [INST], "nodes": []}


def test_prerequisite_error_keeps_its_type_and_code(
    server: Any, data_dir: str, config: ConfigStore
) -> None:
    before = config.read().serial
    with pytest.raises(OpPrereqError) as err:
        _client(data_dir).submit(OpInstanceMigrate(instance_name="ghost", target_node=N2))
    assert err.value.ecode == ECODE_NOENT
    assert "ghost" in err.value.msg
    assert config.read().serial == before


def test_hook_failure_keeps_its_results(
    server: Any, data_dir: str, config: ConfigStore, fake_ops: FakeNodeOps
) -> None:
    hooks_dir = f"{config.get_cluster().hooks_base_dir}/instance-migrate-pre.d"
    deny = HookScriptResult("10-deny", constants.HKR_FAIL, "not today")
    fake_ops.set_hook_results(N2, hooks_dir, [deny])
    with pytest.raises(HooksAbort) as err:
        _client(data_dir).submit(OpInstanceMigrate(instance_name=INST, target_node=N2))
    assert any(script == "10-deny" and "not today" in out for _, script, out in err.value.results)
    assert config.get_instance(INST).primary_node == N1  # type: ignore[union-attr]


def test_cancel_from_the_client_aborts_the_migration(
    server: Any, data_dir: str, config: ConfigStore, slow_migration: FakeNodeOps
) -> None:
    cancel = Cancellation()
    gate = threading.Event()

    def feedback(line: str) -> None:
        if line.startswith("migration ") and not cancel.is_set():
            cancel.request("interrupted by the user")
            gate.set()

    with pytest.raises(MigrationAborted) as err:
        _client(data_dir).submit(
            OpInstanceMigrate(instance_name=INST, target_node=N2), feedback, cancel
        )
    assert gate.is_set()
    assert "interrupted by the user" in err.value.msg
    assert config.get_instance(INST).primary_node == N1  # type: ignore[union-attr]
    assert _jobs(data_dir)[-1].status == "canceled"


def test_a_client_that_goes_away_does_not_stop_its_job(server: Any, data_dir: str) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(paths.masterd_socket(data_dir))
    op = OpTestDelay(duration=0.3, instance_names=[INST])
    sock.sendall(protocol.encode(protocol.submit_request([op], None, wait=True)))
    sock.close()
    wait_until(
        lambda: _jobs(data_dir) and _jobs(data_dir)[-1].status not in JOB_ACTIVE_STATUSES, 10
    )
    jobs = _jobs(data_dir)
    assert jobs and jobs[-1].status == "success"


@pytest.mark.parametrize(
    "line",
    [
        b"not json\n",
        b"\n",
        b'{"submit": 3}\n',  # no type
        b'{"type": "submit", "ops": []}\n',  # no protocol version
        b'{"v": 99, "type": "version"}\n',  # another protocol version
        b'{"v": 1, "type": "submit", "ops": []}\n',
        b'{"v": 1, "type": "submit", "ops": [{"OP_ID": "OP_NO_SUCH"}]}\n',
        b'{"v": 1, "type": "submit", "ops": [{"OP_ID": "OP_TEST_DELAY", "colour": 1}]}\n',
        b'{"v": 1, "type": "submit", "ops": [{"OP_ID": "OP_TEST_DELAY"}], "lock_timeout": "x"}\n',
        b'{"v": 1, "type": "submit", "ops": [{"OP_ID": "OP_TEST_DELAY"}], "lock_timeout": NaN}\n',
        b'{"v": 1, "type": "submit", "ops": [{"OP_ID": "OP_TEST_DELAY"}], "lock_timeout": -1}\n',
        b'{"v": 1, "type": "submit", "ops": [{"OP_ID": "OP_TEST_DELAY"}], "lock_timeout": '
        + b"9" * 400
        + b"}\n",  # an integer no float holds
        b'{"v": 1, "type": "watch", "job_id": "1"}\n',
        b'{"v": 1, "type": "query"}\n',
        b'{"v": 1, "type": "query", "op": {"OP_ID": "OP_NO_SUCH"}}\n',
        b'{"v": 1, "type": "query", "op": {"OP_ID": "OP_NODE_QUERY", "names": "x"}}\n',
        b'{"v": 1, "type": "frobnicate"}\n',
    ],
)
def test_malformed_requests_get_a_wrong_input_error(
    server: Any, data_dir: str, line: bytes
) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(paths.masterd_socket(data_dir))
    sock.sendall(line)
    answer = json.loads(sock.makefile("rb").readline())
    sock.close()
    assert answer["type"] == "error"
    err = protocol.decode_error(answer["error"])
    assert isinstance(err, OpPrereqError)
    assert err.ecode == ECODE_INVAL
    assert _jobs(data_dir) == []


def _answers(data_dir: str, line: bytes) -> list[dict[str, Any]]:
    """Every message the daemon sends for the request ``line``, until it closes."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.connect(paths.masterd_socket(data_dir))
    sock.sendall(line)
    with sock, sock.makefile("rb") as rfile:
        return [json.loads(raw) for raw in rfile]


def test_every_request_is_answered_also_when_serving_it_fails(
    server: Any, data_dir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # nested too deep for the decoder: malformed, nothing recorded
    (answer,) = _answers(data_dir, b"[" * 100_000 + b"\n")
    err = protocol.decode_error(answer["error"])
    assert (err.ecode, _jobs(data_dir)) == (ECODE_INVAL, [])
    # a parameter of the wrong type: the job is recorded and fails its validation
    bad = {"OP_ID": "OP_INSTANCE_QUERY_DATA", "instances": [1]}
    answers = _answers(data_dir, protocol.encode(protocol.request("submit", ops=[bad], wait=True)))
    assert answers[0]["type"] == "accepted" and answers[-1]["type"] == "end"
    (job,) = _jobs(data_dir)
    assert job.status == "error" and job.ops[0].error is not None
    assert job.ops[0].error["ecode"] == ECODE_INVAL
    assert job.ops[0].summary == "INSTANCE_QUERY_DATA(1)"

    # a fault while recording the job (a full disk): answered, not dropped
    def full(*_args: Any, **_kwargs: Any) -> Any:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(JobStore, "create_job", full)
    op = protocol.submit_request([OpTestDelay()], None, wait=True)
    (answer,) = _answers(data_dir, protocol.encode(op))
    err = protocol.decode_error(answer["error"])
    assert err.ecode == "internal_error" and "No space left on device" in err.msg


def test_unknown_error_classes_become_internal_errors() -> None:
    err = protocol.decode_error({"class": "KeyError", "msg": "'x'", "attrs": {}})
    assert isinstance(err, OpExecError)
    assert err.ecode == "internal_error"
    assert "KeyError" in err.msg


def test_gnt_lv_uses_the_daemon_when_it_runs(
    server: Any, data_dir: str, config: ConfigStore, fake_ops: FakeNodeOps, capsys: Any
) -> None:
    # no node_ops injected: gnt-lv would reach the real nodes itself, but the
    # daemon (on the fake nodes here) takes the job
    code = main(["--data-dir", data_dir, "instance", "migrate", "-f", "-n", N2, INST])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "STEP 4/4 Finalising" in out
    assert fake_ops.calls_to("migrate_instance")
    assert config.get_instance(INST).primary_node == N2  # type: ignore[union-attr]
    code = main(["--data-dir", data_dir, "instance", "migrate", "-f", "-n", N2, "ghost"])
    out, err = capsys.readouterr()
    assert code == 1
    assert "error type: unknown_entity" in err


# ------------------------------------------------------------------ the program


def test_program_starts_detached_refuses_a_second_and_stops(program: str) -> None:
    res = start_program(program)
    assert res.returncode == 0, res.stderr
    pid = masterd.read_pid(program)
    assert pid is not None and pid != os.getpid()
    sock_path = paths.masterd_socket(program)
    assert stat.S_IMODE(os.stat(sock_path).st_mode) & 0o077 == 0
    second = start_program(program)
    assert second.returncode == 1
    assert "already runs" in second.stderr
    assert masterd.read_pid(program) == pid
    assert masterd.stop(program) == pid
    assert not os.path.exists(sock_path)
    assert not os.path.exists(paths.masterd_pidfile(program))
    assert masterclient.connect(program) is None


def _low_open_files_limit() -> None:
    """In the child: the soft limit service managers set, below the hard limit."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))


def _open_files_limits(pid: int) -> list[str]:
    with open(f"/proc/{pid}/limits", encoding="ascii") as fh:
        line = next(line for line in fh if line.startswith("Max open files"))
    return line.split()[3:5]


def test_program_raises_its_open_files_limit_to_the_hard_limit(program: str) -> None:
    # a job taking every instance lock holds a file per instance name ever locked
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard <= 256 or hard == resource.RLIM_INFINITY:
        pytest.skip("no finite hard limit of open files above 256")
    argv = [sys.executable, "-m", "ganeti_lv.master.daemon", "--data-dir", program]
    res = subprocess.run(
        argv, capture_output=True, text=True, timeout=60, preexec_fn=_low_open_files_limit
    )
    assert res.returncode == 0, res.stderr
    pid = masterd.read_pid(program)
    assert pid is not None
    assert _open_files_limits(pid) == [str(hard), str(hard)]
    assert masterd.stop(program) == pid


def test_program_keeps_no_descriptor_of_its_starter(program: str, tmp_path: Any) -> None:
    """A lock its starter held (``flock FILE gnt-lv-masterd``) is free once the starter ends."""
    lock_path = str(tmp_path / "operator.lock")
    held = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(held, fcntl.LOCK_EX)
    try:
        argv = [sys.executable, "-m", "ganeti_lv.master.daemon", "--data-dir", program]
        res = subprocess.run(argv, capture_output=True, text=True, timeout=60, pass_fds=(held,))
        assert res.returncode == 0, res.stderr
        assert masterd.read_pid(program) is not None
    finally:
        os.close(held)
    probe = os.open(lock_path, os.O_RDWR)
    try:
        fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError if the daemon holds it
    finally:
        os.close(probe)
    assert masterd.stop(program) is not None


def _strict_umask() -> None:
    """In the child: an operator's umask stricter than the daemon's."""
    os.umask(0o077)


def _umask(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        return int(next(line for line in fh if line.startswith("Umask:")).split()[1], 8)


def test_program_detached_keeps_no_directory_busy_and_has_its_own_umask(program: str) -> None:
    """Started from a directory (one to unmount later) with a data dir relative to it."""
    starter_dir = os.path.dirname(program)
    package_root = os.path.dirname(os.path.dirname(ganeti_lv.__file__))
    env = dict(os.environ, PYTHONPATH=package_root)  # the package under test from any cwd
    argv = [sys.executable, "-m", "ganeti_lv.master.daemon", "--data-dir", "data"]
    res = subprocess.run(
        argv,
        cwd=starter_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=_strict_umask,
    )
    assert res.returncode == 0, res.stderr
    pid = masterd.read_pid(program)
    assert pid is not None
    assert os.readlink(f"/proc/{pid}/cwd") == "/"
    assert _umask(pid) == 0o022
    assert stat.S_IMODE(os.stat(paths.masterd_pidfile(program)).st_mode) == 0o644
    assert _client(program).version()["protocol"] == protocol.PROTOCOL_VERSION
    assert "serving" in _read(paths.masterd_log(program))
    assert masterd.stop(program) == pid
    assert not os.path.exists(paths.masterd_socket(program))
    assert not os.path.exists(paths.masterd_pidfile(program))


_SLOW_RAPI_START = """
import pathlib, sys, time
from ganeti_lv.master import daemon

def slow_start(server, opts):
    pathlib.Path(sys.argv[2]).touch()
    time.sleep(1.5)

daemon._start_rapi = slow_start
sys.exit(daemon.main(["--data-dir", sys.argv[1], "--foreground"]))
"""


def test_a_daemon_still_starting_is_found_and_stopped(program: str, tmp_path: Any) -> None:
    # once it holds the data dir's daemon lock, its pid file names it: a stop
    # meanwhile (its remote API still starting) stops it, rather than finding none
    marker = str(tmp_path / "starting")
    argv = [sys.executable, "-c", _SLOW_RAPI_START, program, marker]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_until(lambda: os.path.exists(marker), 30)
        assert masterd.stop(program, timeout=30) == proc.pid
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert not os.path.exists(paths.masterd_socket(program))
        assert not os.path.exists(paths.masterd_pidfile(program))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except FileNotFoundError:
        return ""


def test_sigterm_lets_the_running_job_finish(program: str) -> None:
    assert start_program(program).returncode == 0
    pid = masterd.read_pid(program)
    assert pid is not None
    result: list[Any] = []
    client = _client(program)
    # long enough that the signal still finds the job running on a loaded machine
    worker = threading.Thread(
        target=lambda: result.append(client.submit(OpTestDelay(duration=3.0)))
    )
    worker.start()
    log_path = paths.masterd_log(program)
    assert wait_until(lambda: "TEST_DELAY: started" in _read(log_path), 15)
    os.kill(pid, signal.SIGTERM)
    worker.join(15)
    assert result == [True]
    wait_until(lambda: masterd.read_pid(program) is None, 10)
    assert masterd.read_pid(program) is None
    text = _read(log_path)
    assert "signal 15: no new jobs; waiting for 1 running" in text
    assert "TEST_DELAY: succeeded" in text
    assert "stopped" in text


def test_a_second_sigterm_asks_the_running_job_to_stop(program: str) -> None:
    assert start_program(program).returncode == 0
    pid = masterd.read_pid(program)
    assert pid is not None
    client = _client(program)
    # runs ~40 s unless stopped: it still runs when the second signal comes on a
    # loaded machine, and a cancel stops it between two of its opcodes
    job_id = client.enqueue([OpTestDelay(duration=2.0) for _ in range(20)])
    log_path = paths.masterd_log(program)
    jobs = JobStore(paths.jobs_dir(program))
    assert wait_until(lambda: in_exec(jobs.get(job_id)), 15)  # its first delay runs
    os.kill(pid, signal.SIGTERM)
    assert wait_until(lambda: "signal 15: no new jobs" in _read(log_path), 10)
    assert jobs.get(job_id).cancel_ts is None  # the first signal lets it run on
    os.kill(pid, signal.SIGTERM)
    assert wait_until(
        lambda: "signal 15 again: asking the running jobs to stop" in _read(log_path), 10
    )
    # recorded as asked; the running delay ends as it would have (as Ganeti's),
    # the opcodes after it do not run
    assert wait_until(lambda: jobs.get(job_id).cancel_ts is not None, 10)
    assert wait_until(lambda: jobs.get(job_id).status == "canceled", 15)
    assert sum(op.status == "success" for op in jobs.get(job_id).ops) < 20
    wait_until(lambda: masterd.read_pid(program) is None, 15)
    assert masterd.read_pid(program) is None and "stopped" in _read(log_path)


def test_a_stopping_daemon_serves_cancels_and_leaves_new_jobs_to_their_clients(
    program: str,
) -> None:
    """While it waits for its running jobs, one of them can still be canceled on its
    own (not only all at once by a second signal), and a job submitted meanwhile runs
    in its client's process."""
    assert start_program(program).returncode == 0
    pid = masterd.read_pid(program)
    assert pid is not None
    long_id = Client(data_dir=program).enqueue([OpTestDelay(duration=2.0) for _ in range(20)])
    jobs = JobStore(paths.jobs_dir(program))
    assert wait_until(lambda: in_exec(jobs.get(long_id)), 15)
    os.kill(pid, signal.SIGTERM)
    log_path = paths.masterd_log(program)
    assert wait_until(lambda: "signal 15: no new jobs" in _read(log_path), 10)
    assert Client(data_dir=program).submit(OpTestDelay(duration=0)) is True
    new = jobs.list()[-1]
    assert new.id > long_id and new.pid == os.getpid() and new.status == "success"
    Client(data_dir=program).cancel(long_id, "maintenance")
    assert wait_until(lambda: jobs.get(long_id).status == "canceled", 15)
    assert jobs.get(long_id).cancel_ts is not None
    assert wait_until(lambda: masterd.read_pid(program) is None, 15)
    assert "stopped" in _read(log_path)


@pytest.mark.timeout(60)
def test_a_signal_while_the_main_thread_holds_the_daemons_lock_stops_the_daemon(
    data_dir: str, config: ConfigStore, inst1_running: FakeNodeOps
) -> None:
    """A signal handler interrupts the main thread anywhere, also inside the lock its work
    takes (a housekeeping pass holds the daemon's): the work is done by a thread of its
    own once the lock is free, instead of the main thread waiting for itself forever."""
    srv = masterd.serve(data_dir, node_ops=inst1_running)
    kept = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    serving = threading.Thread(target=srv.serve_forever, args=(0.1,), daemon=True)
    try:
        masterd._install_signals(srv)
        serving.start()
        with srv.daemon._lock:
            os.kill(os.getpid(), signal.SIGTERM)  # handled here, at the next bytecode
            time.sleep(0.1)
        serving.join(20)
        assert not serving.is_alive()  # the first signal: no new jobs, the loop ends
    finally:
        for sig, handler in kept.items():
            signal.signal(sig, handler)
        srv.server_close()
        srv.daemon.close()


def test_a_client_connected_when_the_daemon_stops_is_served(
    data_dir: str, config: ConfigStore, inst1_running: FakeNodeOps
) -> None:
    # the connect succeeds (the kernel holds it for the daemon) but the daemon
    # stops before it takes the connection: the job runs, no reset
    srv = masterd.serve(data_dir, node_ops=inst1_running)
    client = _client(data_dir)
    result: list[Any] = []
    worker = threading.Thread(
        target=lambda: result.append(
            client.submit(OpInstanceMigrate(instance_name=INST, target_node=N2))
        )
    )
    worker.start()
    time.sleep(0.2)  # the request is sent and waits in the socket's queue
    srv.server_close()
    worker.join(15)
    assert not worker.is_alive()
    assert len(result) == 1
    assert config.get_instance(INST).primary_node == N2  # type: ignore[union-attr]
    assert masterclient.connect(data_dir) is None


def test_a_client_coming_after_the_last_waiting_one_was_served_runs_its_job_itself(
    data_dir: str, inst1_running: FakeNodeOps, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The daemon stops: the clients waiting are served, and one that comes after finds
    no daemon (its job runs in its own process), not a connection reset unanswered."""
    srv = masterd.serve(data_dir, node_ops=inst1_running)
    late: list[Any] = []
    serve_waiting = srv._serve_waiting

    def then_a_client() -> None:
        serve_waiting()
        late.append(masterclient.connect(data_dir, timeout=1.0))

    monkeypatch.setattr(srv, "_serve_waiting", then_a_client)
    srv.server_close()
    srv.daemon.close()
    assert late == [None]


def _serving_a_client(
    data_dir: str, ops: FakeNodeOps, monkeypatch: Any
) -> tuple[Any, threading.Thread, socket.socket]:
    """A daemon serving in a thread (0.5 s for a request) and a client connected to it."""
    monkeypatch.setattr(masterd, "REQUEST_TIMEOUT", 0.5)
    srv = masterd.serve(data_dir, node_ops=ops)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.connect(paths.masterd_socket(data_dir))
    return srv, thread, client


def test_a_client_that_never_sends_its_request_does_not_keep_the_daemon_from_stopping(
    data_dir: str, config: ConfigStore, inst1_running: FakeNodeOps, monkeypatch: Any
) -> None:
    """A stopped gnt-lv (Ctrl-Z) connected to the daemon: the daemon stops all the same."""
    srv, thread, silent = _serving_a_client(data_dir, inst1_running, monkeypatch)
    try:
        time.sleep(0.1)  # taken by a handler, which waits for the request
        srv.shutdown()
        closed = threading.Thread(target=srv.server_close)
        closed.start()
        closed.join(10)
        assert not closed.is_alive(), "the daemon waited for the silent client"
        assert silent.recv(10) == b""  # let go without an answer
    finally:
        silent.close()
        thread.join(5)


def test_a_client_sending_its_request_a_byte_at_a_time_is_let_go_in_time(
    data_dir: str, config: ConfigStore, inst1_running: FakeNodeOps, monkeypatch: Any
) -> None:
    """Each byte comes before a read's timeout: the request as a whole has the same time."""
    srv, thread, slow = _serving_a_client(data_dir, inst1_running, monkeypatch)
    start = time.monotonic()
    try:
        with contextlib.suppress(OSError):  # refused once let go
            while time.monotonic() - start < 3.0:
                slow.sendall(b" ")
                time.sleep(0.1)
        assert time.monotonic() - start < 2.0, "the trickling client was kept"
        slow.settimeout(5)
        assert slow.recv(10) == b""  # let go without an answer
    finally:
        slow.close()
        srv.shutdown()
        srv.server_close()
        thread.join(5)


def test_a_reset_connection_is_a_typed_error(data_dir: str) -> None:
    # a daemon that closes the connection without reading the request resets it
    path = paths.masterd_socket(data_dir)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)

    def reset() -> None:
        conn, _ = listener.accept()
        time.sleep(0.2)  # the request has arrived, unread
        conn.close()

    closer = threading.Thread(target=reset)
    closer.start()
    try:
        with pytest.raises(OpExecError) as err:
            _client(data_dir).submit(OpTestDelay(duration=0))
    finally:
        closer.join(5)
        listener.close()
    assert err.value.ecode == ECODE_FAULT
    assert "closed the connection before the job ended" in err.value.msg


def test_devcluster_down_stops_the_clusters_daemon(tmp_path: Any) -> None:
    from ganeti_lv.devcluster.cluster import DevCluster
    from ganeti_lv.master.processes import process_alive

    cluster = DevCluster(str(tmp_path / "cl"))
    os.makedirs(cluster.data_dir)
    assert start_program(cluster.data_dir).returncode == 0
    pid = masterd.read_pid(cluster.data_dir)
    assert pid is not None
    try:
        cluster.down()
        assert not process_alive(pid)
    finally:
        if process_alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_the_daemon_closes_the_connection_after_the_outcome(server: Any, data_dir: str) -> None:
    """A client reading until EOF gets the outcome and then EOF (no hang)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.connect(paths.masterd_socket(data_dir))
    sock.sendall(protocol.encode(protocol.submit_request([OpTestDelay()], None, wait=True)))
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    sock.close()
    accepted, end = (json.loads(line) for line in data.splitlines())
    assert accepted["type"] == "accepted"
    assert end == {
        "type": "end",
        "job_id": accepted["job_id"],
        "status": "success",
        "results": [True],
        "error": None,
    }


def test_interrupted_client_cancels_its_job_waiting_for_a_lock(
    server: Any, data_dir: str, held_delays: threading.Event
) -> None:
    """Ctrl-C of any gnt-lv command: its job in the daemon does not go on later."""
    holder: list[Any] = []
    hold = threading.Thread(
        target=lambda: holder.append(
            _client(data_dir).submit(OpTestDelay(duration=1.5, instance_names=[INST]))
        )
    )
    hold.start()
    assert wait_until(lambda: _running(data_dir) == 1, 10)

    def interrupt_once_waiting() -> None:
        # Ctrl-C while the second job waits for the holder's lock
        if wait_until(lambda: _running(data_dir) == 2, 10):
            os.kill(os.getpid(), signal.SIGINT)
        else:  # the holder ends, the second job runs: the test fails without a Ctrl-C
            held_delays.set()

    interrupter = threading.Thread(target=interrupt_once_waiting)
    interrupter.start()
    with pytest.raises(KeyboardInterrupt):
        _client(data_dir).submit(OpTestDelay(duration=0, instance_names=[INST]))
    interrupter.join(10)
    held_delays.set()  # the holder's sleep ends; its lock becomes free
    hold.join(10)
    assert holder == [True]
    assert wait_until(lambda: _jobs(data_dir)[-1].status not in JOB_ACTIVE_STATUSES, 10)
    waiting = _jobs(data_dir)[-1]
    assert waiting.status == "canceled"  # never ran, though the lock became free


def test_a_killed_daemon_is_replaced_and_a_reused_pid_is_not_signalled(program: str) -> None:
    assert start_program(program).returncode == 0
    pid = masterd.read_pid(program)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    assert wait_until(lambda: masterd.read_pid(program) is None, 10)
    # its socket and pid file are left behind; a new daemon starts anyway
    assert os.path.exists(paths.masterd_socket(program))
    assert os.path.exists(paths.masterd_pidfile(program))
    assert start_program(program).returncode == 0
    assert masterd.read_pid(program) not in (None, pid)
    assert masterd.stop(program) is not None
    # a pid file naming a live process that is not the daemon (pid reused)
    with open(paths.masterd_pidfile(program), "w", encoding="ascii") as fh:
        fh.write(f"{os.getpid()} 1\n")
    assert masterd.read_pid(program) is None
    assert masterd.stop(program) is None  # and nothing is signalled


# ------------------------------------------------------------------ the job model


def test_a_job_submitted_without_waiting_is_watched_from_its_start(
    server: Any, data_dir: str
) -> None:
    op = OpTestDelay(duration=0.2, instance_names=[INST])
    job_id = _client(data_dir).enqueue([op])
    assert job_id == _jobs(data_dir)[-1].id
    records: list[Feedback] = []
    assert _client(data_dir).watch(job_id, records.append) == [True]
    assert [r.text for r in records] == ["Sleeping for 0.2 s"]
    # a job that ended is watched from the job log: its lines, then its outcome
    again: list[Feedback] = []
    assert _client(data_dir).watch(job_id, again.append) == [True]
    assert [r.text for r in again] == ["Sleeping for 0.2 s"]


def test_a_job_is_canceled_by_its_id_from_another_connection(
    server: Any, data_dir: str, config: ConfigStore, slow_migration: FakeNodeOps
) -> None:
    job_id = _client(data_dir).enqueue([OpInstanceMigrate(instance_name=INST, target_node=N2)])
    progress = threading.Event()
    outcome: list[BaseException] = []

    def watch() -> None:
        try:
            _client(data_dir).watch(
                job_id, lambda r: progress.set() if isinstance(r, Progress) else 0
            )
        except MigrationAborted as err:
            outcome.append(err)

    watcher = threading.Thread(target=watch)
    watcher.start()
    assert progress.wait(10)
    _client(data_dir).cancel(job_id, "stopped by the operator")
    watcher.join(15)
    assert outcome and "stopped by the operator" in outcome[0].msg
    assert config.get_instance(INST).primary_node == N1  # type: ignore[union-attr]
    assert _jobs(data_dir)[-1].status == "canceled"
    # a job that ended cannot be canceled; a job never recorded cannot be watched
    with pytest.raises(JobError) as err:
        _client(data_dir).cancel(job_id)
    assert err.value.ecode == ECODE_STATE
    with pytest.raises(JobError) as err:
        _client(data_dir).watch(9999)
    assert err.value.ecode == ECODE_NOENT


def test_a_job_listed_before_it_starts_is_canceled(
    server: Any, data_dir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new job's file is in place while it is synced (a busy disk): an ops tool that
    lists it and cancels it then gets the cancel, not a refusal, and the job stops."""
    from ganeti_lv.master import jobs as jobs_module

    synced = jobs_module.fsync_dir
    listed = threading.Event()

    def slow_sync(directory: str) -> None:
        listed.set()
        time.sleep(0.5)
        synced(directory)

    monkeypatch.setattr(jobs_module, "fsync_dir", slow_sync)
    before = {job.id for job in _jobs(data_dir)}
    job_ids: list[int] = []
    submitter = threading.Thread(
        target=lambda: job_ids.append(_client(data_dir).enqueue([OpTestDelay(duration=2.0)]))
    )
    submitter.start()
    assert listed.wait(10)
    monkeypatch.setattr(jobs_module, "fsync_dir", synced)
    (new,) = [job for job in _jobs(data_dir) if job.id not in before]
    assert not new.finished
    _client(data_dir).cancel(new.id, "stopped by the operator")
    submitter.join(10)
    assert job_ids == [new.id]
    store = JobStore(paths.jobs_dir(data_dir))
    assert wait_until(lambda: store.get(new.id).finished, 10)
    assert store.get(new.id).status == "canceled"


def test_a_cancel_request_is_recorded_and_shown_until_the_job_ends(
    server: Any, data_dir: str, config: ConfigStore, held_delays: threading.Event
) -> None:
    """Ganeti's canceling, from the job log (for gnt-lv and the remote API alike): a
    test delay holding its lock does not stop for the request and ends as it would."""
    store = JobStore(paths.jobs_dir(data_dir))
    job_id = _client(data_dir).enqueue([OpTestDelay(duration=1.5, instance_names=[INST])])
    assert wait_until(lambda: in_exec(store.get(job_id)), 10)
    assert store.get(job_id).cancel_ts is None and store.get(job_id).shown_status == "running"
    _client(data_dir).cancel(job_id, "stopped by the operator")
    job = store.get(job_id)  # recorded before the daemon answered
    assert job.shown_status == "canceling"
    assert job.status == JOB_STATUS_RUNNING and job.op_shown_status(job.ops[0]) == "canceling"
    held_delays.set()  # the delay's sleep ends
    assert wait_until(lambda: store.get(job_id).finished, 10)
    job = store.get(job_id)
    assert (job.status, job.shown_status) == ("success", "success")
    assert job.cancel_ts is not None and job.ops[0].exec_ts < job.cancel_ts < job.end_ts  # type: ignore[operator]


def test_a_job_end_the_job_log_did_not_take_is_recorded_later(
    server: Any, data_dir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk when a job ends: the job would read running for as long as the daemon
    lives; its end is written at the next periodic pass once there is room."""
    failures = end_writes_fail(monkeypatch, 1000)
    with pytest.raises(JobError, match="succeeded, but its end could not be written"):
        _client(data_dir).submit(OpTestDelay(duration=0))
    job_id = _jobs(data_dir)[-1].id
    store = JobStore(paths.jobs_dir(data_dir))
    assert store.get(job_id).status == JOB_STATUS_RUNNING
    server.daemon.housekeeper.run_pass()  # still full: nothing changes, nothing raised
    assert store.get(job_id).status == JOB_STATUS_RUNNING
    failures.clear()  # room again
    server.daemon.housekeeper.run_pass()
    job = store.get(job_id)
    assert job.status == "error" and job.ops[0].error is not None
    assert "succeeded, but its end could not be written" in job.ops[0].error["message"]
    end_writes_fail(monkeypatch, 1)
    server.daemon.housekeeper.run_pass()  # written once: not again
    assert store.get(job_id).end_ts == job.end_ts


def test_a_daemon_stopping_records_the_ends_not_recorded_yet(
    server: Any, data_dir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    failures = end_writes_fail(monkeypatch, 1000)
    with pytest.raises(JobError):
        _client(data_dir).submit(OpTestDelay(duration=0))
    failures.clear()
    server.daemon.close()
    assert _jobs(data_dir)[-1].status == "error"


def test_a_failed_job_watched_later_raises_its_typed_error(server: Any, data_dir: str) -> None:
    with pytest.raises(OpPrereqError):
        _client(data_dir).submit(OpInstanceMigrate(instance_name="ghost", target_node=N2))
    job_id = _jobs(data_dir)[-1].id
    with pytest.raises(OpPrereqError) as err:
        _client(data_dir).watch(job_id)
    assert err.value.ecode == ECODE_NOENT and "ghost" in err.value.msg


def test_a_lost_job_watched_through_the_daemon_is_an_error_as_without_it(
    server: Any, data_dir: str
) -> None:
    # a job of a gnt-lv process that was killed: "lost", with no error of its own
    store = JobStore(paths.jobs_dir(data_dir))
    job = store.create_job([OpTestDelay(duration=0)], start=True)
    job.pid, job.pid_start = 999999, 1
    store.save(job)
    with pytest.raises(OpExecError, match=f"Job {job.id} is lost"):
        _client(data_dir).watch(job.id)


@pytest.mark.parametrize("step", ["start_op", "finish_success"])
def test_a_job_whose_log_could_not_be_written_does_not_stay_running(
    server: Any, data_dir: str, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    # the disk filled up for one write of the job log: the job's end is recorded
    # once it can be, not left "running" under the daemon's pid
    real = getattr(JobStore, step)
    failed: list[int] = []

    def full_once(store: JobStore, job: Any, *args: Any, **kwargs: Any) -> None:
        if not failed:
            failed.append(job.id)
            raise OSError(28, "No space left on device")
        real(store, job, *args, **kwargs)

    monkeypatch.setattr(JobStore, step, full_once)
    # a success whose end could not be recorded says so (here the whole step fails once)
    error = JobError if step == "finish_success" else OpExecError
    with pytest.raises(error, match="No space left on device"):
        _client(data_dir).submit(OpTestDelay(duration=0))
    job = _jobs(data_dir)[-1]
    assert failed == [job.id]
    assert job.status == constants.JOB_STATUS_ERROR
    assert "No space left on device" in str(job.error)


def test_a_job_whose_thread_cannot_start_is_ended(
    data_dir: str, inst1_running: FakeNodeOps, monkeypatch: pytest.MonkeyPatch
) -> None:
    daemon = masterd.MasterDaemon(data_dir, node_ops=inst1_running)
    real = threading.Thread.start

    def no_thread(thread: threading.Thread) -> None:
        if thread.name.startswith("job-"):
            raise RuntimeError("can't start new thread")
        real(thread)

    monkeypatch.setattr(threading.Thread, "start", no_thread)
    with pytest.raises(JobError, match="could not start: can't start new thread") as err:
        daemon.submit([OpTestDelay(duration=0)])
    assert err.value.ecode == ECODE_FAULT
    job = _jobs(data_dir)[-1]
    assert job.status == constants.JOB_STATUS_ERROR
    assert daemon.running() == 0
    daemon.wait_jobs()  # nothing left to wait for
    # and the job log does not take its end either: written at the next pass
    failures = end_writes_fail(monkeypatch, 1000)
    with pytest.raises(JobError, match="could not start"):
        daemon.submit([OpTestDelay(duration=0)])
    assert _jobs(data_dir)[-1].status == constants.JOB_STATUS_QUEUED
    failures.clear()
    daemon.housekeeper.run_pass()
    assert _jobs(data_dir)[-1].status == constants.JOB_STATUS_ERROR


def test_opcodes_of_a_job_run_in_order_and_the_first_failure_ends_it(
    server: Any, data_dir: str
) -> None:
    ok = OpTestDelay(duration=0, instance_names=[INST])
    assert _client(data_dir).submit_job([ok, ok]) == [True, True]
    records: list[Feedback] = []
    failing = OpTestDelay(duration=0.1, fail=True)
    with pytest.raises(OpExecError, match="Failing as requested"):
        _client(data_dir).submit_job([ok, failing, ok], records.append)
    assert [(r.op, r.text) for r in records] == [(1, "Sleeping for 0.1 s")]
    job = _jobs(data_dir)[-1]
    assert job.status == "error"
    assert [op.status for op in job.ops] == ["success", "error", "error"]
    assert job.ops[0].result is True
    assert job.ops[1].error["message"] == "Failing as requested (OpTestDelay.fail)"  # type: ignore[index]
    assert "Not run" in job.ops[2].error["message"]  # type: ignore[index]
    assert job.ops[2].start_ts is None


def test_queries_answer_from_the_job_log(server: Any, data_dir: str) -> None:
    _client(data_dir).submit(OpTestDelay(duration=0))
    assert [j.to_dict() for j in _client(data_dir).jobs()] == [j.to_dict() for j in _jobs(data_dir)]
    job_id = _jobs(data_dir)[-1].id
    assert _client(data_dir).job(job_id).to_dict() == _jobs(data_dir)[-1].to_dict()
    with pytest.raises(JobError):
        _client(data_dir).job(9999)
    assert _client(data_dir).version() == {
        "protocol": protocol.PROTOCOL_VERSION,
        "version": constants.RELEASE_VERSION,
    }


def test_the_library_client_submits_to_the_daemon_when_it_runs(
    server: Any, data_dir: str, config: ConfigStore, fake_ops: FakeNodeOps
) -> None:
    # without node operations given, Client would reach the real nodes itself;
    # the daemon (on the fake nodes here) takes the job
    lines: list[str] = []
    with Client(data_dir=data_dir) as client:
        client.submit(OpInstanceMigrate(instance_name=INST, target_node=N2), lines.append)
        assert client.jobs()[-1].status == "success"
    assert fake_ops.calls_to("migrate_instance")
    assert config.get_instance(INST).primary_node == N2  # type: ignore[union-attr]
    assert "STEP 4/4 Finalising" in "\n".join(lines)
