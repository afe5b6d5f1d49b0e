"""Ganeti's own RAPI client against the master daemon's remote API, on the local cluster.

The master daemon (``gnt-lv-masterd --rapi``, started as an operator would)
serves the remote API on 127.0.0.1 (the master's address is inside the
cluster's namespaces) with the certificate ``cluster init`` made; Ganeti's
client (Debian's ``python3-ganeti-rapi``, run by Debian's Python) pins it.
One 128 MiB sharedfile guest, without the memory dirtier (a bandwidth limit
then sets how long a migration takes), is used by the tests of this module
in file order; each leaves it running on the node the configuration names.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
from gnt_helpers import node
from migrate_helpers import (
    GNT_LV,
    make_instance,
    remove_instance,
    ticks,
    wait_single,
    wait_tick_above,
    where_running,
)
from support.masterd import free_port, start_program
from support.rapi import GanetiClient, ganeti_client_missing

from ganeti_lv import constants, paths
from ganeti_lv.config import ConfigStore
from ganeti_lv.hypervisor.libvirt import LibvirtNodeOps
from ganeti_lv.master import daemon as masterd
from ganeti_lv.master.jobs import JobStore
from ganeti_lv.objects import disk_path
from ganeti_lv.rapi import users

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.skipif(ganeti_client_missing() is not None, reason=str(ganeti_client_missing())),
]

NAME = "rapiguest"
OPS, OPS_PW = "rapi-ops", "ops-secret-Xq7"
VIEWER, VIEWER_PW = "rapi-viewer", "viewer-secret-Zk3"


class Env:
    def __init__(self, devcluster: Any) -> None:
        self.data_dir = devcluster.data_dir
        self.config = ConfigStore(self.data_dir)
        self.ops = LibvirtNodeOps(self.data_dir)
        self.nodes = sorted(self.config.node_names())
        self.port = free_port()
        self.cert = paths.rapi_cert_file(self.data_dir)

    def start_daemon(self) -> None:
        res = start_program(
            self.data_dir, "--rapi", "--rapi-address", "127.0.0.1", "--rapi-port", str(self.port)
        )
        assert res.returncode == 0, res.stderr
        self.daemon_pid = masterd.read_pid(self.data_dir)

    def client(self, user: str = OPS, password: str = OPS_PW) -> GanetiClient:
        return GanetiClient("127.0.0.1", self.port, user, password, cafile=self.cert)

    def primary(self) -> str:
        """The guest's primary node, as the configuration names it."""
        return self.config.read().instances[NAME].primary_node

    def other(self) -> str:
        """A node that is not the guest's primary."""
        (first, *_) = sorted(set(self.nodes) - {self.primary()})
        return first

    def job(self, job_id: int) -> Any:
        return JobStore(paths.jobs_dir(self.data_dir)).get(job_id)

    def gnt(self, *argv: str) -> subprocess.CompletedProcess[str]:
        argv = (GNT_LV, "--data-dir", self.data_dir, *argv)
        return subprocess.run(argv, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def env(devcluster: Any) -> Iterator[Env]:
    """The daemon with its remote API, two users, and the guest running on the first node."""
    e = Env(devcluster)
    if not os.path.exists(e.cert):  # a cluster made before the remote API
        assert e.gnt("cluster", "renew-crypto", "-f", "--new-rapi-certificate").returncode == 0
    users_file = paths.rapi_users_file(e.data_dir)
    users.add_user(users_file, users.user_line(OPS, OPS_PW, write=True), replace=True)
    users.add_user(users_file, users.user_line(VIEWER, VIEWER_PW, write=False), replace=True)
    e.start_daemon()
    try:
        make_instance(
            e.config, e.ops, NAME, constants.DT_SHARED_FILE, e.nodes[0], "52:54:00:52:41:01",
            dirtymb=0,
        )  # fmt: skip
        wait_tick_above(e.ops, node(e.config, e.nodes[0]), NAME, 2)
        yield e
    finally:
        try:
            remove_instance(e.config, e.ops, NAME, constants.DT_SHARED_FILE)
        finally:
            masterd.stop(e.data_dir)
            e.ops.close()
            for name in (OPS, VIEWER):
                users.remove_user(users_file, name)


def _migrate(env: Env, target: str, bandwidth: int) -> int:
    """Submit a migration through Ganeti's client with a bandwidth limit (MiB/s); its job."""
    body = {"target_node": target, "mode": "live", "migration_bandwidth": bandwidth}
    path = f"/2/instances/{NAME}/migrate"
    return int(env.client().call("_SendRequest", "PUT", path, None, body))


def _wait_progress(env: Env, job_id: int, timeout: float = 120) -> list[Any]:
    """Poll the job through the client until its oplog shows migration progress; the oplog."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = env.client().call("GetJobStatus", job_id)
        entries = status["oplog"][0]
        if any("% of memory" in entry[3] for entry in entries):
            assert status["status"] == "running", status
            return list(entries)
        assert status["status"] in ("queued", "waiting", "running"), status
        time.sleep(0.5)
    raise AssertionError(f"no migration progress in job {job_id}")


def test_version_features_nodes_and_instances(env: Env) -> None:
    version, features, nodes, bulk_nodes, instances, bulk, one, console = env.client().run(
        [
            ["GetVersion", [], {}],
            ["GetFeatures", [], {}],
            ["GetNodes", [], {}],
            ["GetNodes", [], {"bulk": True}],
            ["GetInstances", [], {}],
            ["GetInstances", [], {"bulk": True}],
            ["GetInstance", [NAME], {}],
            ["GetInstanceConsole", [NAME], {}],
        ]
    )
    assert version == {"ok": 2}
    assert features == {"ok": ["instance-create-reqv1", "node-migrate-reqv1", "node-evac-res1"]}
    assert nodes["ok"] == env.nodes
    master = env.config.get_cluster().master_node
    assert {n["name"]: n["role"] for n in bulk_nodes["ok"]}[master] == "M"
    assert all(n["mtotal"] and n["mfree"] is not None for n in bulk_nodes["ok"])
    assert NAME in instances["ok"]
    (row,) = [i for i in bulk["ok"] if i["name"] == NAME]
    assert (row["pnode"], row["status"], row["oper_state"]) == (env.primary(), "running", True)
    assert row["disk_template"] == "sharedfile" and row["beparams"]["maxmem"] == 128
    assert one["ok"]["name"] == NAME and one["ok"]["oper_ram"] == 128
    primary = env.config.get_node(env.primary())
    assert primary is not None and console["ok"] == {
        "instance": NAME,
        "kind": "ssh",
        "host": primary.address,
        "port": primary.ssh_port,
        "user": primary.ssh_user,
        "command": env.ops.console_command(NAME),  # the node operations' (virsh console)
    }


def test_tags_through_ganetis_client(env: Env) -> None:
    """An instance's, a node's and the cluster's tags added and removed as jobs of the
    daemon, read by Ganeti's client and by gnt-lv alike."""
    client = env.client()
    tagged = env.other()
    for job in (
        client.call("AddInstanceTags", NAME, ["rapi-b", "rapi-a"]),
        client.call("AddClusterTags", ["rapi-site"]),
        client.call("AddNodeTags", tagged, ["rapi-rack"]),
    ):
        assert client.call("WaitForJobCompletion", job, period=1) is True
        assert env.job(job).pid == env.daemon_pid
    assert {"rapi-a", "rapi-b"} <= set(client.call("GetInstanceTags", NAME))
    listed = env.gnt("instance", "list-tags", NAME)
    assert "rapi-a\nrapi-b\n" in listed.stdout, listed.stdout + listed.stderr
    assert "rapi-site" in client.call("GetClusterTags")
    assert "rapi-rack" in client.call("GetNodeTags", tagged)
    assert "rapi-rack" in env.gnt("node", "list-tags", tagged).stdout.split()
    for job in (
        client.call("DeleteInstanceTags", NAME, ["rapi-a", "rapi-b"]),
        client.call("DeleteClusterTags", ["rapi-site"]),
        client.call("DeleteNodeTags", tagged, ["rapi-rack"]),
    ):
        assert client.call("WaitForJobCompletion", job, period=1) is True
    assert "rapi-rack" not in client.call("GetNodeTags", tagged)
    assert not {"rapi-a", "rapi-b"} & set(env.gnt("instance", "list-tags", NAME).stdout.split())
    assert "rapi-site" not in env.gnt("cluster", "list-tags").stdout.split()


def test_ganetis_client_creates_and_removes_an_instance(env: Env) -> None:
    """CreateInstance (request version 1) with neither a node nor an allocator: the
    cluster's default allocator (Ganeti's hail, as a new cluster's) chooses the node,
    the disks are made there and the instance recorded; DeleteInstance removes both.
    Not started: no second busy guest."""
    client = env.client()
    name = "rapinew"
    assert client.call("GetInfo")["default_iallocator"] == "hail"
    job = client.call(
        "CreateInstance", "create", name, "sharedfile", [{"size": 16}], [{}],
        beparams={"memory": 64, "vcpus": 1}, start=False,
        name_check=False, ip_check=False, os="noop",
    )  # fmt: skip
    try:
        assert client.call("WaitForJobCompletion", job, period=1) is True
        inst = env.config.get_instance(name)
        assert inst is not None and inst.primary_node in env.nodes
        target = inst.primary_node
        log = [entry[3] for entry in client.call("GetJobStatus", job)["oplog"][0]]
        assert any(f"Selected node {target} as primary" in line for line in log), log
        assert inst.admin_state == constants.ADMINST_DOWN  # start=False
        disk = disk_path(env.config.get_cluster(), inst, 0)
        on_node = env.ops.run_command(node(env.config, target), ["stat", "-c", "%s", disk])
        assert on_node.stdout.strip() == str(16 * 1024 * 1024), on_node
        row = client.call("GetInstance", name)
        assert (row["pnode"], row["status"]) == (target, "ADMIN_down")
        job = client.call("ModifyInstance", name, beparams={"memory": 96})
        assert client.call("WaitForJobCompletion", job, period=1) is True
        assert client.call("GetInstance", name)["beparams"]["maxmem"] == 96
    finally:  # removed through the client, also when a check above failed
        if env.config.get_instance(name) is not None:
            job = client.call("DeleteInstance", name)
            assert client.call("WaitForJobCompletion", job, period=1) is True
    assert env.config.get_instance(name) is None
    gone = env.ops.run_command(node(env.config, target), ["test", "-e", disk])
    assert gone.exit_status != 0


def test_migrate_export_shutdown_startup_as_jobs(env: Env) -> None:
    client = env.client()
    src, dst = env.primary(), env.other()
    before = max(ticks(env.ops, node(env.config, src), NAME))
    job = client.call("MigrateInstance", NAME, mode="live", target_node=dst)
    assert client.call("WaitForJobCompletion", job, period=1) is True
    status = client.call("GetJobStatus", job)
    assert status["status"] == "success" and status["opstatus"] == ["success"]
    messages = [entry[3] for entry in status["oplog"][0]]
    assert any(m.startswith("STEP 3/4 Migrating instance") for m in messages)
    # the same job as gnt-lv shows it, run by the daemon
    assert env.job(job).pid == env.daemon_pid
    info = env.gnt("job", "info", str(job))
    assert info.returncode == 0 and "Status: success" in info.stdout
    assert wait_single(env.config, env.ops, NAME) == dst == env.primary()
    wait_tick_above(env.ops, node(env.config, dst), NAME, before)

    export_node = next(n for n in env.nodes if n != dst)
    job = client.call("ExportInstance", NAME, "local", export_node, shutdown=False)
    assert client.call("WaitForJobCompletion", job, period=1) is True
    result = client.call("GetJobStatus", job)["opresult"][0]
    assert result[0] is True and all(result[1])
    listed = env.gnt("backup", "list", "--node", export_node, "-o", "export", "--no-headers")
    assert NAME in listed.stdout.split(), listed.stdout + listed.stderr
    assert env.gnt("backup", "remove", NAME).returncode == 0

    job = client.call("ShutdownInstance", NAME, timeout=60)
    assert client.call("WaitForJobCompletion", job, period=1) is True
    assert where_running(env.config, env.ops, NAME).get(dst) != constants.DOMSTATE_RUNNING
    row = client.call("GetInstance", NAME)
    assert (row["admin_state"], row["status"]) == ("down", "ADMIN_down")
    job = client.call("StartupInstance", NAME)
    assert client.call("WaitForJobCompletion", job, period=1) is True
    assert where_running(env.config, env.ops, NAME) == {dst: constants.DOMSTATE_RUNNING}
    wait_tick_above(env.ops, node(env.config, dst), NAME, 1)


def test_maintenance_drain_a_node_and_migrate_another_empty(env: Env) -> None:
    """What ops tooling does before a node's maintenance, through Ganeti's client."""
    client = env.client()
    src, master = env.primary(), env.config.get_cluster().master_node
    (drained, *_) = sorted(set(env.nodes) - {src, master})
    targets = set(env.nodes) - {src, drained}
    assert targets, "the test needs three nodes"
    role = client.call("GetNodeRole", drained)
    before = max(ticks(env.ops, node(env.config, src), NAME))
    job = client.call("SetNodeRole", drained, "drained")
    try:
        assert client.call("WaitForJobCompletion", job, period=1) is True
        assert client.call("GetNodeRole", drained) == "drained"
        job = client.call("MigrateNode", src, mode="live")
        assert client.call("WaitForJobCompletion", job, period=1) is True
        (result,) = client.call("GetJobStatus", job)["opresult"]
        ((submitted, move_job),) = result["jobs"]
        assert submitted and client.call("GetJobStatus", move_job)["status"] == "success"
        # not onto the drained node
        target = wait_single(env.config, env.ops, NAME)
        assert target in targets and target == env.primary()
        wait_tick_above(env.ops, node(env.config, target), NAME, before)
    finally:
        job = client.call("SetNodeRole", drained, role)
        assert client.call("WaitForJobCompletion", job, period=1) is True
    assert client.call("GetNodeRole", drained) == role


def test_delete_cancels_a_running_migration(env: Env) -> None:
    client = env.client()
    src, dst = env.primary(), env.other()
    serial = env.config.read().serial
    job = _migrate(env, dst, bandwidth=1)
    entries = _wait_progress(env, job)  # progress in the oplog while it runs
    assert [e[0] for e in entries] == list(range(1, len(entries) + 1))
    assert client.call("CancelJob", job) == [True, f"Job {job} will be canceled"]
    assert client.call("WaitForJobCompletion", job, period=1) is False
    status = client.call("GetJobStatus", job)
    assert status["status"] == "canceled" and status["opstatus"] == ["canceled"]
    name, (message,) = status["opresult"][0]
    assert name == "OpExecError" and "aborted" in message.lower()  # a MigrationAborted
    assert wait_single(env.config, env.ops, NAME) == src == env.primary()
    assert env.config.read().serial == serial
    before = max(ticks(env.ops, node(env.config, src), NAME))
    wait_tick_above(env.ops, node(env.config, src), NAME, before)


def test_refusals_as_ganeti_gives_them(env: Env) -> None:
    serial = env.config.read().serial
    assert env.client(OPS, "not-the-password").error("GetVersion")["code"] == 401
    assert env.client(VIEWER, VIEWER_PW).call("GetVersion") == 2
    denied = env.client(VIEWER, VIEWER_PW).error("MigrateInstance", NAME, target_node=env.other())
    assert denied["code"] == 403
    client = env.client()
    bad = client.error("_SendRequest", "PUT", f"/2/instances/{NAME}/migrate", None, {"mode": 1})
    assert bad["code"] == 400 and "mode" in bad["msg"]
    assert client.error("GetInstance", "ghost")["code"] == 404
    job = client.call("MigrateInstance", "ghost")
    assert client.call("WaitForJobCompletion", job, period=1) is False
    name, (message, ecode) = client.call("GetJobStatus", job)["opresult"][0]
    assert (name, ecode) == ("OpPrereqError", "unknown_entity") and "ghost" in message
    assert env.config.read().serial == serial


def test_twenty_concurrent_reads_while_a_migration_runs(env: Env) -> None:
    client = env.client()
    dst = env.other()
    job = _migrate(env, dst, bandwidth=4)
    _wait_progress(env, job)
    (reads,) = client.run([{"parallel": 20, "call": ["GetInstances", [], {"bulk": True}]}])
    answered = time.time()
    answers = reads["parallel"]
    assert len(answers) == 20 and all("ok" in a for a in answers), answers
    assert all(NAME in [i["name"] for i in a["ok"]] for a in answers)
    assert client.call("WaitForJobCompletion", job, period=1) is True
    assert env.job(job).end_ts > answered  # every read was answered while the job ran
    assert wait_single(env.config, env.ops, NAME) == dst == env.primary()


def test_the_daemon_log_holds_no_password(env: Env) -> None:
    env.client(OPS, "a-wrong-guess-Jj8").error("GetVersion")
    env.client(VIEWER, VIEWER_PW).call("GetVersion")
    with open(paths.masterd_log(env.data_dir), encoding="utf-8") as fobj:
        text = fobj.read()
    assert f"authentication failed: wrong password for user '{OPS}'" in text
    assert f"{VIEWER} GET /version -> 200" in text
    for secret in (OPS_PW, VIEWER_PW, "a-wrong-guess-Jj8"):
        assert secret not in text
