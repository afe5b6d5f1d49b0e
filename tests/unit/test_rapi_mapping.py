"""The remote API's pure parts: request bodies and arguments to opcodes, jobs to job fields."""

from __future__ import annotations

import ast
import os
from typing import Any

import pytest

from ganeti_lv import errors
from ganeti_lv.errors import ECODE_NOENT, MigrationAborted, OpPrereqError
from ganeti_lv.master.jobs import JobStore, error_record
from ganeti_lv.opcodes import (
    OpBackupExport,
    OpBackupPrepare,
    OpInstanceFailover,
    OpInstanceMigrate,
    OpInstanceShutdown,
    OpInstanceStartup,
    OpTestDelay,
)
from ganeti_lv.rapi import jobfields, params
from ganeti_lv.rapi.httperrors import HttpError

INST = "web1"


def _bad(fn: Any, *args: Any, **kwargs: Any) -> str:
    with pytest.raises(HttpError) as err:
        fn(*args, **kwargs)
    assert err.value.code == 400
    return err.value.message


# ------------------------------------------------------------------ parameters


def test_body_parameters_become_the_opcode() -> None:
    op = params.fill_opcode(
        OpInstanceMigrate,
        {"mode": "non-live", "cleanup": False, "target_node": "n2", "allow_failover": True},
        {"instance_name": INST},
    )
    assert isinstance(op, OpInstanceMigrate)
    assert (op.instance_name, op.mode, op.target_node, op.allow_failover) == (
        INST, "non-live", "n2", True
    )  # fmt: skip
    # no body: the opcode's defaults
    assert params.fill_opcode(OpInstanceMigrate, None, {"instance_name": INST}) == (
        OpInstanceMigrate(instance_name=INST)
    )


def test_parameters_the_master_sets_for_its_own_jobs_are_refused() -> None:
    # a node operation's moves share their node locks: a remote caller may not ask for that
    for opcls in (OpInstanceMigrate, OpInstanceFailover):
        msg = _bad(
            params.fill_opcode,
            opcls,
            {"planned_from": "n1", "target_node": "n2"},
            {"instance_name": INST},
        )
        assert msg == f"Invalid body parameters: {opcls.OP_ID} has no parameter 'planned_from'"


def test_renamed_and_common_parameters() -> None:
    body = {"destination": "n3", "mode": "local", "shutdown": False, "priority": 10}
    op = params.fill_opcode(
        OpBackupExport,
        {**body, "comment": "nightly", "depends": []},
        {"instance_name": INST},
        rename={"destination": "target_node"},
    )
    assert isinstance(op, OpBackupExport)
    assert (op.target_node, op.shutdown) == ("n3", False)
    msg = _bad(
        params.fill_opcode,
        OpBackupExport,
        {**body, "target_node": "n2"},
        {"instance_name": INST},
        rename={"destination": "target_node"},
    )
    assert msg == "Parameter 'destination' was renamed to 'target_node', but both are specified"
    msg = _bad(params.fill_opcode, OpBackupExport, {"depends": [[1, []]]}, {"instance_name": INST})
    assert "depends" in msg
    # checked as Ganeti checks them: the reason comes from ?reason=, a priority is one
    # of -10, 0 and 10, a comment a string
    static = {"instance_name": INST}
    for bad, text in (
        ({"reason": [["user", "x", 1]]}, "Can't overwrite static parameters ['reason']"),
        ({"priority": 5}, "priority 5 is none of -10, 0, 10"),
        ({"priority": True}, "priority True"),
        ({"comment": {"x": 1}}, "comment {'x': 1} is no string"),
    ):
        assert text in _bad(params.fill_opcode, OpBackupExport, {**body, **bad}, static)


def test_a_jobs_reason_trail_names_the_resource_as_ganetis_remote_api() -> None:
    """Ganeti's source of the entry is its resource class's name without ``R_2_``."""
    from ganeti_lv.rapi.resources import RESOURCES

    ganetis = {
        "/2/nodes/<name>/role": "nodes_name_role",
        "/2/nodes/<name>/modify": "nodes_name_modify",
        "/2/nodes/<name>/migrate": "nodes_name_migrate",
        "/2/nodes/<name>/evacuate": "nodes_name_evacuate",
        "/2/instances/<name>/info": "instances_name_info",
        "/2/instances/<name>/startup": "instances_name_startup",
        "/2/instances/<name>/shutdown": "instances_name_shutdown",
        "/2/instances/<name>/reboot": "instances_name_reboot",
        "/2/instances/<name>/migrate": "instances_name_migrate",
        "/2/instances/<name>/failover": "instances_name_failover",
        "/2/instances/<name>/export": "instances_name_export",
        "/2/instances/<name>/prepare-export": "instances_name_prepare_export",
        "/2/instances": "instances",
        "/2/instances/<name>": "instances_name",
        "/2/modify": "cluster_modify",  # R_2_cluster_modify
        "/2/tags": "tags",
    }
    # the resources that start a job, each one here
    assert set(ganetis) <= {res.rule for res in RESOURCES}
    assert {rule: params.ganeti_resource_name(rule) for rule in ganetis} == ganetis
    trail = params.reason_trail({"reason": ["disk swap"]}, "/2/instances/<name>/migrate")
    assert [entry[:2] for entry in trail] == [
        ["gnt:user", "disk swap"],
        ["gnt:library:rlib2:instances_name_migrate", ""],
    ]


def test_wrong_bodies_are_refused_with_a_message() -> None:
    static = {"instance_name": INST}
    assert _bad(params.fill_opcode, OpInstanceShutdown, "x", static) == (
        "Body contents: Type is 'str', but 'dict' is expected"
    )
    assert "'instance_name'" in _bad(
        params.fill_opcode, OpInstanceShutdown, {"instance_name": "other"}, static
    )
    assert "'foo', 'zap'" in _bad(
        params.fill_opcode, OpInstanceShutdown, {"zap": 1, "foo": 2}, static
    )
    assert "timeout" in _bad(params.fill_opcode, OpInstanceShutdown, {"timeout": "1m"}, static)
    assert "must not be negative" in _bad(
        params.fill_opcode, OpInstanceShutdown, {"timeout": -1}, static
    )
    assert "Only one of" in _bad(
        params.fill_opcode, OpInstanceMigrate, {"live": True, "mode": "live"}, static
    )
    assert "does not support dry-run" in _bad(
        params.fill_opcode, OpBackupPrepare, {"dry_run": True}, {**static, "mode": "local"}
    )


def test_remote_exports_are_refused() -> None:
    op = params.fill_opcode(
        OpBackupExport, {"mode": "remote", "target_node": "n3"}, {"instance_name": INST}
    )
    assert "not supported" in _bad(params.refuse_remote_export, op)
    params.refuse_remote_export(OpBackupExport(instance_name=INST))


def test_query_arguments() -> None:
    args = {"bulk": ["1"], "force": ["0"], "type": ["soft", "hard"], "x": ["y"], "empty": []}
    assert params.bool_arg(args, "bulk") and not params.bool_arg(args, "force")
    assert not params.bool_arg(args, "dry-run")
    assert params.str_arg(args, "type") == "soft"  # the first value, as Ganeti takes it
    assert params.str_arg(args, "empty", "d") == "d"
    assert _bad(params.int_arg, args, "x") == "Invalid value for the 'x' parameter"
    op = params.fill_opcode(OpInstanceStartup, None, {"instance_name": INST, "force": True})
    assert isinstance(op, OpInstanceStartup) and op.force


# ------------------------------------------------------------------ job fields


@pytest.fixture
def store(tmp_path: Any) -> JobStore:
    return JobStore(str(tmp_path / "jobs"))


def _two_op_job(store: JobStore) -> Any:
    ops = [OpTestDelay(duration=0), OpInstanceMigrate(instance_name=INST, target_node="n2")]
    return store.create_job(ops)


def test_split_time() -> None:
    assert jobfields.split_time(None) is None
    assert jobfields.split_time(1700000000.25) == [1700000000, 250000]
    assert jobfields.split_time(5.9999999) == [6, 0]


def test_statuses_as_ganeti_names_them(store: JobStore) -> None:
    job = _two_op_job(store)
    assert jobfields.job_status(job) == "queued"
    assert jobfields.job_field(job, "opstatus") == ["queued", "queued"]
    store.start_op(job, 0)
    # running but its locks not held yet: Ganeti's "waiting"
    assert jobfields.job_status(job) == "waiting"
    assert jobfields.job_field(job, "opstatus") == ["waiting", "queued"]
    store.record_cancel_request(job)  # asked to stop before it executes: it ends canceled
    assert jobfields.job_status(store.get(job.id)) == "canceling"
    assert jobfields.job_field(store.get(job.id), "opstatus") == ["canceling", "canceling"]
    store.mark_executing(job, 0)
    # executing now, the request recorded (the job log says canceling): it may still end
    # as it would have, and Ganeti's clients take canceling for the end
    assert store.get(job.id).shown_status == "canceling"
    assert jobfields.job_status(store.get(job.id)) == "running"
    assert jobfields.job_field(store.get(job.id), "opstatus") == ["running", "queued"]
    store.finish_success(job, {"slept": 0}, 0)
    assert jobfields.job_field(job, "opstatus") == ["success", "canceling"]
    store.start_op(job, 1)
    store.mark_executing(job, 1)
    store.finish_error(job, MigrationAborted("aborted, still on n1"), canceled=True, index=1)
    assert jobfields.job_status(job) == "canceled"
    assert jobfields.job_field(job, "opstatus") == ["success", "canceled"]
    assert jobfields.job_field(job, "opresult") == [
        {"slept": 0},
        # Ganeti's class (MigrationAborted is an OpExecError), its message alone
        ["OpExecError", ["aborted, still on n1"]],
    ]


def test_errors_not_run_opcodes_and_lost_jobs(store: JobStore) -> None:
    job = _two_op_job(store)
    store.start_op(job, 0)
    store.finish_error(job, OpPrereqError("Instance 'x' not known", ECODE_NOENT), index=0)
    fields = jobfields.render(job)
    assert fields["status"] == "error" and fields["opstatus"] == ["error", "error"]
    assert fields["opresult"][0] == ["OpPrereqError", ["Instance 'x' not known", "unknown_entity"]]
    assert fields["opresult"][1][0] == "OpExecError"
    canceled = _two_op_job(store)
    store.start_op(canceled, 0)
    store.finish_error(canceled, OpPrereqError("stop", "wrong_state"), canceled=True, index=0)
    # canceled before it executed (waiting for its locks): Ganeti's canceled result
    assert jobfields.job_field(canceled, "opresult") == [jobfields.CANCELED_RESULT] * 2
    lost = _two_op_job(store)
    store.start_op(lost, 0)
    data = lost.to_dict()
    data["pid"], data["pid_start"] = 2**22 + 7, None  # no such process
    path = os.path.join(store.jobs_dir, f"job-{lost.id}.json")
    store.save(type(lost).from_dict(data))
    reread = store.get(lost.id)
    assert reread.status == "lost" and os.path.exists(path)
    fields = jobfields.render(reread)
    assert fields["status"] == "error" and fields["opstatus"] == ["error", "error"]
    assert f"Job {lost.id} is lost" in fields["opresult"][0][1][0]


def test_oplog_serials_run_over_the_whole_job(store: JobStore) -> None:
    job = _two_op_job(store)
    store.start_op(job, 0)
    store.append_log(job, "first", index=0)
    store.append_log(job, "second", index=0)
    store.finish_success(job, None, 0)
    store.start_op(job, 1)
    store.append_log(job, "third", index=1)
    logs = jobfields.oplog(job)
    assert [[e[0] for e in op] for op in logs] == [[1, 2], [3]]
    assert [e[3] for e in logs[0]] == ["first", "second"] and logs[1][0][2] == "message"
    assert [e[3] for e in jobfields.log_entries(job, 1)] == ["second", "third"]
    assert jobfields.log_entries(job, None) == [e for op in logs for e in op]


def test_wait_returns_changes_or_none(store: JobStore) -> None:
    job = _two_op_job(store)
    store.start_op(job, 0)
    store.mark_executing(job, 0)
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    def wait(prev_info: Any, prev_serial: Any) -> Any:
        return jobfields.wait_for_change(
            lambda: job, ["status"], prev_info, prev_serial, 10.0, lambda: now[0], sleep
        )

    assert wait(None, None) == {"job_info": ["running"], "log_entries": []}
    assert wait(["running"], None) is None and now[0] >= 10.0  # nothing changed in 10 s
    store.append_log(job, "news", index=0)
    found = wait(["running"], None)
    assert found is not None and [e[3] for e in found["log_entries"]] == ["news"]
    assert wait(["running"], 1) is None
    store.finish_success(job, None, 0)
    store.start_op(job, 1)
    store.finish_success(job, None, 1)
    # an ended job answers at once, changed or not
    now[0] = 0.0
    assert wait(["success"], 1) == {"job_info": ["success"], "log_entries": []} and now[0] == 0
    # so does a canceling one, as Ganeti's (its clients take it for the end)
    job = _two_op_job(store)
    store.start_op(job, 0)  # waiting for its locks
    store.record_cancel_request(job)
    assert wait(["canceling"], None) == {"job_info": ["canceling"], "log_entries": []}
    assert now[0] == 0


def test_wait_body_is_checked() -> None:
    good = {"fields": ["status", "oplog"], "previous_job_info": None, "previous_log_serial": 3}
    assert jobfields.check_wait_body(good) == (["status", "oplog"], None, 3)
    assert "fields" in _bad(jobfields.check_wait_body, {})
    assert "list" in _bad(jobfields.check_wait_body, {"fields": "status"})
    assert "nosuch" in _bad(jobfields.check_wait_body, {"fields": ["nosuch"]})
    assert "previous_job_info" in _bad(
        jobfields.check_wait_body, {"fields": [], "previous_job_info": "x"}
    )
    assert "previous_log_serial" in _bad(
        jobfields.check_wait_body, {"fields": [], "previous_log_serial": "1"}
    )


GANETI_ERRORS_PY = "/usr/share/ganeti/3.0/ganeti/errors.py"


@pytest.mark.parametrize(
    ("err", "shown"),
    [
        (OpPrereqError("no", ECODE_NOENT), "OpPrereqError"),
        (errors.OpExecError("failed"), "OpExecError"),
        (MigrationAborted("aborted"), "OpExecError"),
        (errors.OperationCanceled("canceled"), "OpExecError"),
        (errors.LockTimeout("busy"), "OpExecError"),
        (errors.NodeUnreachable("gone", node="n1"), "OpExecError"),
        (errors.InstanceNotFound("no domain"), "OpExecError"),
        (errors.ConfigurationError("bad"), "ConfigurationError"),
        (ValueError("a bug"), "OpExecError"),  # wrapped, as Ganeti's job queue does
    ],
)
def test_errors_are_shown_by_the_class_ganeti_would_show(err: Exception, shown: str) -> None:
    record = error_record(err)
    assert record["ganeti_class"] == shown
    assert jobfields.encode_error(record)[0] == shown
    # a record written before the class was kept: found by its class name
    old = {k: v for k, v in record.items() if k != "ganeti_class"}
    assert jobfields.encode_error(old)[0] == shown


def test_a_failed_pre_hook_is_encoded_with_ganetis_arguments() -> None:
    err = errors.HooksAbort([("n1", "10-check", "refused\n")], ["n1", "n2"])
    assert jobfields.encode_error(error_record(err)) == [
        "HooksAbort",
        [[["n1", "10-check", "refused\n"]]],
    ]
    # without the failures (an older record) it cannot be Ganeti's HooksAbort
    old = {"class": "HooksAbort", "ecode": "environment_error", "message": str(err)}
    assert jobfields.encode_error(old)[0] == "OpExecError"


def test_the_classes_shown_are_ganetis() -> None:
    for name in errors.GANETI_RESULT_CLASSES:
        assert issubclass(getattr(errors, name), errors.GenericError), name
    if not os.path.exists(GANETI_ERRORS_PY):
        pytest.skip("Ganeti's errors module is not installed here")  # the peer's package
    with open(GANETI_ERRORS_PY, encoding="utf-8") as fobj:
        tree = ast.parse(fobj.read())
    ganeti = {node.name for node in tree.body if isinstance(node, ast.ClassDef)}
    assert not errors.GANETI_RESULT_CLASSES - ganeti
