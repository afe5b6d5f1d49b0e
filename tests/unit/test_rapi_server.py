"""The remote API of the master daemon on the fake nodes: HTTP, auth, resources, jobs.

The daemon serves in a thread (the ``server`` fixture) with its remote API
on 127.0.0.1 (a port of its own); raw requests go through ``http.client``,
and Ganeti's own client (Debian's ``python3-ganeti-rapi``, run by Debian's
Python) drives what ops tooling does.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import ssl
import stat
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from functools import partial
from typing import Any

import pytest
from support.rapi import GanetiClient, ganeti_client_missing, request
from support.waiting import in_exec, wait_until

from ganeti_lv import paths
from ganeti_lv.config import ConfigStore
from ganeti_lv.errors import ECODE_ENVIRON, OpPrereqError
from ganeti_lv.hypervisor.fake import FakeNodeOps
from ganeti_lv.master.jobs import JobStore
from ganeti_lv.master.processes import process_start_time
from ganeti_lv.opcodes import OpTestDelay
from ganeti_lv.rapi import certs, queries, users
from ganeti_lv.rapi import server as rapi_server
from ganeti_lv.rapi import tls as rapi_tls

INST = "inst1.example.com"
N1, N2, N3 = "node1.example.com", "node2.example.com", "node3.example.com"
ADMIN, ADMIN_PW = "admin", "s3cret-admin-pw"
VIEWER, VIEWER_PW = "viewer", "s3cret-viewer-pw"

needs_ganeti_client = pytest.mark.skipif(
    ganeti_client_missing() is not None, reason=str(ganeti_client_missing())
)

# the keys of Ganeti 3.0's /2/info (luxid's QueryClusterInfo in its Query/Server.hs)
GANETI_INFO_KEYS = (
    "architecture beparams blacklisted_os candidate_pool_size compression_tools"
    " config_version ctime data_collector_interval default_hypervisor default_iallocator"
    " default_iallocator_params diskparams drbd_usermode_helper enabled_data_collectors"
    " enabled_disk_templates enabled_hypervisors enabled_user_shutdown export_version"
    " file_storage_dir gluster_storage_dir hidden_os hvparams install_image"
    " instance_communication_network ipolicy mac_prefix maintain_node_health master"
    " master_netdev master_netmask max_running_jobs max_tracked_jobs modify_ssh_setup mtime"
    " name ndparams nicparams os_api_version os_hvp osparams prealloc_wipe_disks"
    " primary_ip_version protocol_version reserved_lvs shared_file_storage_dir"
    " software_version ssh_key_bits ssh_key_type tags uid_pool use_external_mip_script uuid"
    " vcs_version volume_group_name zeroing_image"
)


def _setup_files(data_dir: str) -> None:
    certs.create_certificate(
        paths.rapi_cert_file(data_dir),
        "cluster.example.com",
        ["cluster.example.com"],
        ["127.0.0.1"],
    )
    path = paths.rapi_users_file(data_dir)
    users.add_user(path, users.user_line(ADMIN, ADMIN_PW, write=True))
    users.add_user(path, users.user_line(VIEWER, VIEWER_PW, write=False, plain=True))


@pytest.fixture
def rapi(server: Any, data_dir: str) -> Iterator[rapi_server.RapiServer]:
    """The remote API of the test daemon on 127.0.0.1, with an admin and a viewer."""
    _setup_files(data_dir)
    srv = rapi_server.start(server.daemon, data_dir, "127.0.0.1", 0)
    try:
        yield srv
    finally:
        srv.stop()


def _req(srv: rapi_server.RapiServer, method: str, path: str, **kwargs: Any) -> Any:
    host, port = srv.address
    return request(host, port, method, path, **kwargs)


def _admin(srv: rapi_server.RapiServer, method: str, path: str, **kwargs: Any) -> Any:
    return _req(srv, method, path, user=ADMIN, password=ADMIN_PW, **kwargs)


def _client(srv: rapi_server.RapiServer, data_dir: str, user: str = ADMIN) -> GanetiClient:
    host, port = srv.address
    password = {ADMIN: ADMIN_PW, VIEWER: VIEWER_PW}.get(user, "wrong")
    return GanetiClient(host, port, user, password, cafile=paths.rapi_cert_file(data_dir))


def _job(data_dir: str, job_id: int) -> Any:
    return JobStore(paths.jobs_dir(data_dir)).get(job_id)


def _wait_job(data_dir: str, job_id: int) -> Any:
    assert wait_until(lambda: _job(data_dir, job_id).finished, 30)
    return _job(data_dir, job_id)


# ------------------------------------------------------------------ HTTP and auth


def test_every_request_needs_credentials(rapi: rapi_server.RapiServer) -> None:
    for method, path in (
        ("GET", "/version"),
        ("GET", "/2/info"),
        ("PUT", f"/2/instances/{INST}/migrate"),
    ):
        code, headers, body = _req(rapi, method, path)
        assert code == 401
        assert headers["www-authenticate"] == 'Basic realm="Ganeti Remote API"'
        assert body["code"] == 401 and body["message"] == "Unauthorized" and body["explain"]


def test_an_unknown_resource_or_method_is_answered_before_credentials(
    rapi: rapi_server.RapiServer,
) -> None:
    # Ganeti finds the resource and its method before it asks who calls
    code, headers, _ = _req(rapi, "GET", "/nosuch")
    assert code == 404 and "www-authenticate" not in headers
    code, _, body = _req(rapi, "GET", f"/2/instances/{INST}/migrate")
    assert code == 501 and "Method GET is unsupported" in body["message"]
    assert _req(rapi, "GET", "/nosuch", user="ghost", password="x")[0] == 404


def test_wrong_password_and_unknown_user_are_refused(rapi: rapi_server.RapiServer) -> None:
    assert _req(rapi, "GET", "/version", user=ADMIN, password="nope")[0] == 401
    assert _req(rapi, "GET", "/version", user="ghost", password=ADMIN_PW)[0] == 401
    # the viewer's plain password is compared as it is written
    assert _req(rapi, "GET", "/version", user=VIEWER, password=VIEWER_PW)[:3:2] == (200, 2)
    assert _admin(rapi, "GET", "/version")[:3:2] == (200, 2)


def test_the_log_names_the_client_and_a_path_cannot_forge_a_line(
    rapi: rapi_server.RapiServer, caplog: pytest.LogCaptureFixture
) -> None:
    forged = "2026-01-01 00:00:00,000 INFO rapi: admin DELETE /2/instances/web1 -> 200"
    with caplog.at_level(logging.INFO, logger="ganeti_lv.rapi"):
        assert _req(rapi, "GET", "/2/x%0a" + forged.replace(" ", "%20"))[0] == 404
        assert _req(rapi, "GET", "/version", user="ghost", password="x")[0] == 401
    lines = [r.getMessage() for r in caplog.records]
    assert lines and not [line for line in lines if "\n" in line or "\r" in line]
    assert any("GET /2/x\\n2026-01-01" in line and "-> 404" in line for line in lines), lines
    refused = [line for line in lines if "authentication failed: unknown user" in line]
    assert len(refused) == 1 and refused[0].startswith("rapi: 127.0.0.1:")


def test_read_only_user_reads_but_may_not_change(
    rapi: rapi_server.RapiServer, config: ConfigStore
) -> None:
    code, _, nodes = _req(rapi, "GET", "/2/nodes", user=VIEWER, password=VIEWER_PW)
    assert code == 200 and [n["id"] for n in nodes] == [N1, N2, N3]
    body = {"target_node": N2}
    code, _, answer = _req(
        rapi, "PUT", f"/2/instances/{INST}/migrate", user=VIEWER, password=VIEWER_PW, body=body
    )
    assert code == 403 and answer["code"] == 403
    # a job wait holds a connection: write access, as in Ganeti
    wait = {"fields": ["status"], "previous_job_info": None, "previous_log_serial": None}
    assert _req(rapi, "GET", "/2/jobs/1/wait", user=VIEWER, password=VIEWER_PW, body=wait)[0] == 403
    assert config.get_instance(INST).primary_node == N1  # type: ignore[union-attr]
    assert JobStore(paths.jobs_dir(config.data_dir)).list() == []


def test_unknown_path_method_and_bodies(rapi: rapi_server.RapiServer, data_dir: str) -> None:
    assert _admin(rapi, "GET", "/2/nosuch")[0] == 404
    code, _, body = _admin(rapi, "GET", f"/2/instances/{INST}/migrate")
    assert code == 501 and "Method GET is unsupported" in body["message"]
    # Ganeti's methods: reboot is a POST, not a PUT
    assert _admin(rapi, "PUT", f"/2/instances/{INST}/reboot")[0] == 501
    code, _, body = _admin(rapi, "PUT", f"/2/instances/{INST}/migrate", raw_body=b"{nope")
    assert (code, body["message"]) == (400, "Unable to parse JSON data")
    # nested deeper than the decoder goes: malformed too, not an internal error
    deep = b"[" * 100_000
    code, _, body = _admin(rapi, "PUT", f"/2/instances/{INST}/migrate", raw_body=deep)
    assert (code, body["message"]) == (400, "Unable to parse JSON data")
    # numbers a JSON decoder lets through that no parameter takes
    for text in (b'{"progress_timeout": Infinity}', b'{"abort_timeout": NaN}'):
        code, _, body = _admin(rapi, "PUT", f"/2/instances/{INST}/migrate", raw_body=text)
        assert code == 400 and "fails validation" in body["message"], text
    code, _, body = _admin(rapi, "PUT", f"/2/instances/{INST}/migrate", body={"debug_level": -1})
    assert (
        code == 400
        and "'OP_INSTANCE_MIGRATE.debug_level' must not be negative" in (body["message"])
    )
    code, _, _ = _admin(
        rapi, "PUT", f"/2/instances/{INST}/migrate", raw_body=b"{}", content_type="text/plain"
    )
    assert code == 415
    code, _, body = _admin(rapi, "PUT", f"/2/instances/{INST}/migrate", body=[1, 2])
    assert code == 400 and body["message"] == (
        "Body contents: Type is 'list', but 'dict' is expected"
    )
    code, _, body = _admin(rapi, "PUT", f"/2/instances/{INST}/migrate", body={"mode": "fast"})
    assert code == 400 and "mode" in body["message"] and "fast" in body["message"]
    code, _, body = _admin(rapi, "PUT", f"/2/instances/{INST}/migrate", body={"bogus": 1})
    assert code == 400 and "'bogus'" in body["message"]
    code, _, body = _admin(rapi, "GET", "/2/nodes?bulk=yes")
    assert (code, body["message"]) == (400, "Invalid value for the 'bulk' parameter")
    # nothing was submitted
    assert JobStore(paths.jobs_dir(data_dir)).list() == []


def test_the_host_header_and_an_upgrade_mean_nothing(rapi: rapi_server.RapiServer) -> None:
    """As in Ganeti: a Host no name can have, or a websocket upgrade, gets the usual answers."""
    for headers in (
        {"Host": "a" * 64},
        {"Host": "a..b"},
        {"Connection": "upgrade", "Upgrade": "websocket"},
    ):
        assert _req(rapi, "GET", "/version", headers=headers)[0] == 401, headers
        assert _admin(rapi, "GET", "/version", headers=headers)[::2] == (200, 2), headers


def test_an_empty_query_value_is_left_out_as_in_ganeti(
    rapi: rapi_server.RapiServer, data_dir: str
) -> None:
    """``?dry-run=`` is no dry run, and no error (Ganeti's parser drops empty values)."""
    op = _job_params(rapi, data_dir, "POST", f"/2/nodes/{N1}/evacuate?dry-run=&dry-run=1",
                     body={"mode": "all"})  # fmt: skip
    assert op["dry_run"] is True
    code, _, nodes = _admin(rapi, "GET", "/2/nodes?bulk=")
    assert code == 200 and nodes and all(set(n) == {"id", "uri"} for n in nodes)  # not bulk


def test_unknown_instance_and_node_are_not_found(rapi: rapi_server.RapiServer) -> None:
    code, _, body = _admin(rapi, "GET", "/2/instances/ghost")
    assert code == 404 and "ghost" in body["message"]
    assert _admin(rapi, "GET", "/2/nodes/ghost")[0] == 404
    assert _admin(rapi, "GET", "/2/jobs/4242")[0] == 404
    assert _admin(rapi, "GET", "/2/jobs/abc")[0] == 404
    # an id too long for any file name is no job either (not a 500 naming the data dir)
    huge = "9" * 300
    assert _admin(rapi, "GET", f"/2/jobs/{huge}")[0] == 404
    assert _admin(rapi, "GET", f"/2/jobs/{huge}/wait", body={"fields": ["status"]})[0] == 404
    code, _, body = _admin(rapi, "DELETE", f"/2/jobs/{huge}")
    assert code == 200 and body[0] is False and "not found" in body[1]


def test_certificate_can_be_pinned(rapi: rapi_server.RapiServer, data_dir: str) -> None:
    code, _, body = _admin(rapi, "GET", "/version", cafile=paths.rapi_cert_file(data_dir))
    assert (code, body) == (200, 2)
    other = os.path.join(data_dir, "other.pem")
    certs.create_certificate(other, "other", ["other"], ["127.0.0.1"])
    with pytest.raises(OSError, match="CERTIFICATE_VERIFY_FAILED"):
        _admin(rapi, "GET", "/version", cafile=other)


def test_clients_that_connect_and_send_nothing_hold_nobody_up(
    rapi: rapi_server.RapiServer, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    """The TLS handshake is a worker's, within a deadline: idle connections cost no one.

    A handshake in the accepting thread made every request behind one silent
    connection wait for the server's 10 s timeout; more silent connections
    than workers, each held for that long, would do the same.
    """
    monkeypatch.setattr(rapi_tls, "HANDSHAKE_TIMEOUT", 0.5)
    host, port = rapi.address
    idle = [socket.create_connection((host, port)) for _ in range(rapi_server.WORKER_THREADS + 8)]
    plain = socket.create_connection((host, port))  # plain HTTP on the TLS port
    plain.sendall(b"GET /version HTTP/1.0\r\n\r\n")
    try:
        with caplog.at_level(logging.DEBUG):
            for _ in range(20):  # TCP probes (load balancers, port scans): connect, reset
                probe = socket.create_connection((host, port))
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                probe.close()
            time.sleep(1.0)  # past the handshake deadline: every silent client let go
            code, _, body = _admin(rapi, "GET", "/version", timeout=5)
            assert (code, body) == (200, 2)
            for sock in (idle[0], idle[-1], plain):
                sock.settimeout(5)
                assert sock.recv(100) == b""  # closed by the server, without an answer
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    finally:
        for sock in (*idle, plain):
            sock.close()


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        (f"Content-Length: {rapi_server.DRAIN_LIMIT + 1}", b"413"),
        # lengths the HTTP server reads as a number and the application may not
        (f"Content-Length: +{100 << 20}", b"413"),
        ("Content-Length: 100_000_000", b"413"),
        ("Content-Length: -1", b"413"),
        ("Transfer-Encoding: chunked", b"411"),  # chunks of any size
        ("X-Padding: " + "a" * (rapi_server.MAX_HEADERS + 1), b"4"),  # headers, unbounded
    ],
)
def test_a_large_body_is_refused_before_it_is_read_even_without_credentials(
    rapi: rapi_server.RapiServer, headers: str, status: bytes
) -> None:
    """Only the headers are sent: the answer comes at once, nothing waits for the body."""
    host, port = rapi.address
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    raw = socket.create_connection((host, port), timeout=5)
    with context.wrap_socket(raw) as tls:
        tls.sendall(
            b"POST /2/instances HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"{headers}\r\n\r\n".encode()
        )
        answer = tls.recv(200)  # a timeout here: the server waits for the body
    assert answer.startswith(b"HTTP/1.1 " + status), answer


# ------------------------------------------------------------------ the users file


def test_an_unsafe_users_file_is_refused_at_start_and_later(
    server: Any, data_dir: str, caplog: pytest.LogCaptureFixture
) -> None:
    _setup_files(data_dir)
    path = paths.rapi_users_file(data_dir)
    os.chmod(path, 0o644)
    with pytest.raises(users.UsersFileError, match="chmod 600"):
        rapi_server.start(server.daemon, data_dir, "127.0.0.1", 0)
    os.chmod(path, 0o600)
    srv = rapi_server.start(server.daemon, data_dir, "127.0.0.1", 0)
    try:
        assert _admin(srv, "GET", "/version")[0] == 200
        os.chmod(path, 0o604)
        with caplog.at_level(logging.ERROR, logger="ganeti_lv.rapi"):
            code, _, body = _admin(srv, "GET", "/version")
        assert code == 500 and "users file" in body["message"]
        assert "others may read" in caplog.text
        os.chmod(path, 0o600)
        assert _admin(srv, "GET", "/version")[0] == 200
    finally:
        srv.stop()


def test_a_user_added_while_serving_is_used_at_once(
    rapi: rapi_server.RapiServer, data_dir: str
) -> None:
    path = paths.rapi_users_file(data_dir)
    assert _req(rapi, "GET", "/version", user="late", password="pw-late")[0] == 401
    users.add_user(path, users.user_line("late", "pw-late", write=False))
    assert _req(rapi, "GET", "/version", user="late", password="pw-late")[0] == 200
    users.remove_user(path, "late")
    assert _req(rapi, "GET", "/version", user="late", password="pw-late")[0] == 401


def test_start_refuses_a_missing_certificate(server: Any, data_dir: str) -> None:
    _setup_files(data_dir)
    os.unlink(paths.rapi_cert_file(data_dir))
    with pytest.raises(OpPrereqError, match="renew-crypto") as err:
        rapi_server.start(server.daemon, data_dir, "127.0.0.1", 0)
    assert err.value.ecode == ECODE_ENVIRON


def test_passwords_never_reach_the_log(
    rapi: rapi_server.RapiServer, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        _req(rapi, "GET", "/version", user=ADMIN, password="wrong-guess-1")
        _req(rapi, "GET", "/version", user="wrong-guess-2", password="wrong-guess-3")
        _admin(rapi, "GET", "/2/info")
        _req(rapi, "PUT", f"/2/instances/{INST}/startup", user=VIEWER, password=VIEWER_PW)
    text = caplog.text
    assert "authentication failed" in text and f"{ADMIN} GET /2/info -> 200" in text
    for secret in (ADMIN_PW, VIEWER_PW, "wrong-guess-1", "wrong-guess-2", "wrong-guess-3"):
        assert secret not in text
    assert "Basic " not in text and "Authorization" not in text


# ------------------------------------------------------------------ resources


def test_lists_and_bulk_in_ganeti_fields(rapi: rapi_server.RapiServer) -> None:
    code, _, listed = _admin(rapi, "GET", "/2/instances")
    assert code == 200
    assert listed == [
        {"id": name, "uri": f"/2/instances/{name}"} for name in (INST, "inst2.example.com")
    ]
    code, _, bulk = _admin(rapi, "GET", "/2/instances?bulk=1")
    assert code == 200 and [i["name"] for i in bulk] == [INST, "inst2.example.com"]
    first = bulk[0]
    assert set(first) == set(queries.I_FIELDS)
    assert (first["pnode"], first["admin_state"], first["status"]) == (N1, "up", "running")
    assert (
        first["oper_state"] is True and first["beparams"]["memory"] == first["beparams"]["maxmem"]
    )
    assert bulk[1]["status"] == "ERROR_down"  # marked up, not running on the fake nodes
    code, _, nodes = _admin(rapi, "GET", "/2/nodes?bulk=1")
    assert code == 200
    roles = {n["name"]: n["role"] for n in nodes}
    assert roles == {N1: "M", N2: "C", N3: "C"}
    assert nodes[0]["pinst_cnt"] == 2 and nodes[0]["pinst_list"] == [INST, "inst2.example.com"]
    one = _admin(rapi, "GET", f"/2/nodes/{N2}")[2]
    assert one["name"] == N2 and one["secondary_ip"] == one["sip"] == "10.250.0.2"
    assert "secondary_ip" not in nodes[1]  # Ganeti's alias is the single node's only
    code, _, info = _admin(rapi, "GET", "/2/info")
    assert (info["name"], info["master"]) == ("cluster.example.com", N1)
    assert info["vg_name"] is None and info["enabled_hypervisors"] == ["kvm"]
    # every key of Ganeti 3.0's answer (luxid's QueryClusterInfo, Query/Server.hs) is there:
    # a client reading one of them (gnt-cluster info does) found none
    ganeti_keys = set(GANETI_INFO_KEYS.split())
    assert len(ganeti_keys) == 55 and ganeti_keys <= set(info), ganeti_keys - set(info)


def test_offline_and_drained_nodes_are_no_master_candidates(
    rapi: rapi_server.RapiServer, config: ConfigStore
) -> None:
    """Ganeti demotes them: tools that look for healthy candidates must not find them."""
    with config.update() as data:
        data.nodes[N2].drained = True
        data.nodes[N3].offline = True
    code, _, nodes = _admin(rapi, "GET", "/2/nodes?bulk=1")
    assert code == 200
    found = {n["name"]: (n["role"], n["master_candidate"]) for n in nodes}
    assert found == {N1: ("M", True), N2: ("D", False), N3: ("O", False)}
    # Ganeti's remote API gives null for the live fields of an offline node
    assert [n["mtotal"] is None for n in nodes] == [False, False, True]
    assert all(set(n) == set(queries.N_FIELDS) for n in nodes)


def test_a_change_is_a_job_of_the_daemon_in_ganeti_fields(
    rapi: rapi_server.RapiServer, data_dir: str, config: ConfigStore, server: Any
) -> None:
    code, _, job_id = _admin(rapi, "PUT", f"/2/instances/{INST}/migrate", body={"target_node": N2})
    assert code == 200 and isinstance(job_id, int)
    job = _wait_job(data_dir, job_id)
    assert job.status == "success" and job.pid == os.getpid()  # the daemon's job
    assert config.get_instance(INST).primary_node == N2  # type: ignore[union-attr]
    code, _, fields = _admin(rapi, "GET", f"/2/jobs/{job_id}")
    assert code == 200
    assert set(fields) == {
        "id", "ops", "status", "summary", "opstatus", "received_ts", "start_ts", "end_ts",
        "oplog", "opresult",
    }  # fmt: skip
    assert fields["id"] == job_id and fields["status"] == "success"
    assert fields["summary"] == [f"INSTANCE_MIGRATE({INST})"]
    assert fields["ops"][0]["OP_ID"] == "OP_INSTANCE_MIGRATE"
    assert fields["ops"][0]["target_node"] == N2
    assert fields["opstatus"] == ["success"]
    serials = [entry[0] for entry in fields["oplog"][0]]
    assert serials == list(range(1, len(serials) + 1)) and serials
    assert [e[3] for e in fields["oplog"][0]] == [e[2] for e in job.log]
    sec, usec = fields["received_ts"]
    assert abs(sec + usec / 1e6 - job.received_ts) < 1e-5
    code, _, listed = _admin(rapi, "GET", "/2/jobs")
    assert listed == [{"id": job_id, "uri": f"/2/jobs/{job_id}"}]


def test_a_change_while_the_daemon_stops_is_to_be_tried_later(
    rapi: rapi_server.RapiServer, server: Any
) -> None:
    """While the daemon finishes its jobs it takes no new one: 503, not a server error."""
    server.daemon.stop_taking_jobs()
    code, _, body = _admin(rapi, "PUT", f"/2/instances/{INST}/migrate", body={"target_node": N2})
    assert code == 503 and "stopping" in str(body)
    code, _, _ = _admin(rapi, "GET", "/2/instances")  # reads still answered
    assert code == 200


def test_job_errors_come_back_in_ganetis_encoding(
    rapi: rapi_server.RapiServer, data_dir: str
) -> None:
    code, _, job_id = _admin(rapi, "PUT", "/2/instances/ghost/migrate", body={})
    assert code == 200
    _wait_job(data_dir, job_id)
    fields = _admin(rapi, "GET", f"/2/jobs/{job_id}")[2]
    assert fields["status"] == "error" and fields["opstatus"] == ["error"]
    name, (message, ecode) = fields["opresult"][0]
    assert (name, ecode) == ("OpPrereqError", "unknown_entity") and "ghost" in message


def _job_params(
    srv: rapi_server.RapiServer, data_dir: str, method: str, path: str, **kwargs: Any
) -> dict[str, Any]:
    """The opcode parameters of the job a request started (once it ended)."""
    code, _, job_id = _admin(srv, method, path, **kwargs)
    assert code == 200, job_id
    return dict(_wait_job(data_dir, job_id).ops[0].params)


def test_resources_map_ganeti_parameters_to_opcodes(
    rapi: rapi_server.RapiServer, data_dir: str
) -> None:
    params_of = partial(_job_params, rapi, data_dir)
    base = f"/2/instances/{INST}"
    op = params_of(
        "PUT", f"{base}/shutdown?dry-run=1&no_remember=1", body={"timeout": 7, "force": True}
    )
    assert (op["OP_ID"], op["timeout"], op["no_remember"], op["dry_run"], op["force"]) == (
        "OP_INSTANCE_SHUTDOWN", 7, True, True, True
    )  # fmt: skip
    op = params_of("POST", f"{base}/reboot?type=soft&dry-run=1")
    assert (op["OP_ID"], op["reboot_type"], op["dry_run"]) == ("OP_INSTANCE_REBOOT", "soft", True)
    op = params_of("PUT", f"{base}/startup?force=1&dry-run=1")
    assert (op["OP_ID"], op["force"]) == ("OP_INSTANCE_STARTUP", True)
    body = {"destination": N3, "mode": "local", "shutdown": False, "compress": "gzip"}
    op = params_of("PUT", f"{base}/export?reason=backup", body={**body, "dry_run": True})
    assert (op["target_node"], op["shutdown"], op["compress"]) == (N3, False, "gzip")
    op = params_of("PUT", f"{base}/failover", body={"target_node": N2, "dry_run": True})
    assert (op["OP_ID"], op["target_node"]) == ("OP_INSTANCE_FAILOVER", N2)
    op = params_of("PUT", f"{base}/prepare-export?mode=local")
    assert (op["OP_ID"], op["mode"]) == ("OP_BACKUP_PREPARE", "local")
    # refused before any job: both names of a renamed parameter, remote exports, bad types
    code, _, answer = _admin(rapi, "PUT", f"{base}/export", body={**body, "target_node": N2})
    assert code == 400 and "renamed to 'target_node'" in answer["message"]
    code, _, answer = _admin(rapi, "PUT", f"{base}/export", body={**body, "mode": "remote"})
    assert code == 400 and "remote" in answer["message"]
    code, _, answer = _admin(rapi, "PUT", f"{base}/export", body={"mode": "local"})
    assert code == 400 and "needs a 'destination'" in answer["message"]
    assert _admin(rapi, "PUT", f"{base}/prepare-export")[0] == 400
    assert _admin(rapi, "PUT", f"{base}/shutdown", body={"timeout": "soon"})[0] == 400
    assert _admin(rapi, "POST", f"{base}/reboot?type=sideways")[0] == 400
    assert _admin(rapi, "PUT", f"{base}/migrate", body={"depends": [[1, []]]})[0] == 400


def test_node_resources_map_ganeti_parameters_to_opcodes(
    rapi: rapi_server.RapiServer, data_dir: str
) -> None:
    params_of = partial(_job_params, rapi, data_dir)
    # Ganeti's requests from before the body: live or mode as query arguments
    op = params_of("POST", f"/2/nodes/{N1}/migrate?live=0&dry-run=1")
    assert (op["OP_ID"], op["mode"], op["dry_run"]) == ("OP_NODE_MIGRATE", "non-live", True)
    op = params_of("POST", f"/2/nodes/{N1}/migrate?mode=non-live&dry-run=1")
    assert op["mode"] == "non-live"
    body = {"mode": "live", "target_node": N2, "dry_run": True}
    op = params_of("POST", f"/2/nodes/{N1}/migrate", body=body)
    assert (op["mode"], op["target_node"]) == ("live", N2)
    body = {"mode": "all", "remote_node": N3, "early_release": True}
    op = params_of("POST", f"/2/nodes/{N1}/evacuate?dry-run=1", body=body)
    assert (op["target_node"], op["primary_only"], op["secondary_only"]) == (N3, False, False)
    body = {"mode": "primary-only", "iallocator": "hail"}
    op = params_of("POST", f"/2/nodes/{N1}/evacuate?dry-run=1", body=body)
    assert (op["iallocator"], op["primary_only"]) == ("hail", True)
    op = params_of("PUT", f"/2/nodes/{N3}/role?force=1", body="offline")
    assert (op["offline"], op["drained"], op["master_candidate"], op["force"]) == (
        True, None, None, True
    )  # fmt: skip
    # refused before any job
    path = f"/2/nodes/{N1}/migrate?live=1&mode=live"
    assert _admin(rapi, "POST", path)[0] == 400
    assert _admin(rapi, "PUT", f"/2/nodes/{N3}/role", body={"role": "offline"})[0] == 400
    path = f"/2/nodes/{N1}/evacuate"
    assert _admin(rapi, "POST", path, body={"mode": "all", "early_release": "soon"})[0] == 400
    # no mode: refused as Ganeti refuses it (Ganeti's client sends none unless told),
    # never an evacuation of everything
    jobs = len(JobStore(paths.jobs_dir(data_dir)).list())
    for query in ("", "?remote_node=" + N3):
        code, _, answer = _admin(rapi, "POST", path + query)
        assert code == 400 and "evacuation mode None is not one of" in answer["message"]
    assert len(JobStore(paths.jobs_dir(data_dir)).list()) == jobs
    code, _, answer = _admin(rapi, "POST", f"/2/nodes/{N3}/modify", body={"powered": True})
    assert code == 400 and "'powered'" in answer["message"]
    # a viewer reads the role but may not set it
    viewer = {"user": VIEWER, "password": VIEWER_PW}
    assert _req(rapi, "GET", f"/2/nodes/{N3}/role", **viewer)[::2] == (200, "offline")
    assert _req(rapi, "PUT", f"/2/nodes/{N3}/role", body="drained", **viewer)[0] == 403


def test_instance_info_is_a_job_with_ganetis_result(
    rapi: rapi_server.RapiServer, data_dir: str
) -> None:
    code, _, job_id = _admin(rapi, "GET", f"/2/instances/{INST}/info")
    assert code == 200
    assert _wait_job(data_dir, job_id).status == "success"
    result = _admin(rapi, "GET", f"/2/jobs/{job_id}")[2]["opresult"][0]
    data = result[INST]
    assert (data["config_state"], data["run_state"], data["pnode"]) == ("up", "up", N1)
    assert data["disks"][0]["iv_name"] == "disk/0" and data["disks"][0]["size"] == 1024
    # Ganeti's NIC tuple: name, uuid, ip, mac, mode, link, vlan, network, netinfo
    (nic,) = data["nics"]
    assert len(nic) == 9 and nic[4:6] == ["bridged", "br0"] and nic[8] is None
    code, _, job_id = _admin(rapi, "GET", f"/2/instances/{INST}/info?static=1")
    _wait_job(data_dir, job_id)
    assert _admin(rapi, "GET", f"/2/jobs/{job_id}")[2]["opresult"][0][INST]["run_state"] is None


def test_a_node_role_change_has_ganetis_result(rapi: rapi_server.RapiServer, data_dir: str) -> None:
    """The flags that changed, in Ganeti's order, the values as Ganeti's str."""
    code, _, job_id = _admin(rapi, "PUT", f"/2/nodes/{N3}/role", body="drained")
    assert code == 200 and _wait_job(data_dir, job_id).status == "success"
    result = _admin(rapi, "GET", f"/2/jobs/{job_id}")[2]["opresult"][0]
    assert result == [["master_candidate", "False"], ["drained", "True"]]
    code, _, job_id = _admin(rapi, "PUT", f"/2/nodes/{N3}/role", body="offline")
    assert code == 200 and _wait_job(data_dir, job_id).status == "success"
    result = _admin(rapi, "GET", f"/2/jobs/{job_id}")[2]["opresult"][0]
    assert result == [["drained", "False"], ["offline", "True"]]


def test_a_dry_run_has_no_result_as_in_ganeti(
    rapi: rapi_server.RapiServer, data_dir: str, config: ConfigStore
) -> None:
    # Ganeti's LUs of these opcodes set no dry-run result (a node operation's
    # returns before submitting the moves' jobs); ganeti_lv's LUs return one
    export = {"destination": N3, "mode": "local", "shutdown": False, "dry_run": True}
    for method, path, body in (
        ("POST", f"/2/nodes/{N1}/migrate?dry-run=1", {}),
        ("POST", f"/2/nodes/{N1}/evacuate?dry-run=1", {"mode": "all"}),
        ("POST", f"/2/nodes/{N3}/modify", {"drained": True, "dry_run": True}),
        ("PUT", f"/2/instances/{INST}/export", export),
    ):
        code, _, job_id = _admin(rapi, method, path, body=body)
        assert code == 200, job_id
        job = _wait_job(data_dir, job_id)
        assert job.status == "success" and job.ops[0].params["dry_run"] is True
        assert job.ops[0].result is not None  # what the Python API gets
        assert _admin(rapi, "GET", f"/2/jobs/{job_id}")[2]["opresult"] == [None], path
    assert config.get_instance(INST).primary_node == N1  # type: ignore[union-attr]
    assert not config.get_node(N3).drained  # type: ignore[union-attr]


def _sources(trail: list[list[Any]]) -> list[tuple[str, str]]:
    """A reason trail's (source, text) pairs; its timestamps are nanoseconds, in order."""
    stamps = [entry[2] for entry in trail]
    assert stamps == sorted(stamps) and all(isinstance(s, int) for s in stamps), trail
    assert all(abs(time.time_ns() - s) < 60 * 10**9 for s in stamps), trail
    return [(source, text) for source, text, _ in trail]


def test_the_reason_argument_starts_the_jobs_reason_trail_as_ganetis(
    rapi: rapi_server.RapiServer, data_dir: str
) -> None:
    """As Ganeti's remote API: ``?reason=`` ("gnt:user"), the resource by Ganeti's
    name of it, then the master's entry; /2/jobs/N has it in the opcode's input."""
    base = f"/2/instances/{INST}"
    code, _, job_id = _admin(rapi, "PUT", f"{base}/shutdown?dry-run=1&reason=planned%20work")
    assert code == 200, job_id
    trail = _wait_job(data_dir, job_id).ops[0].params["reason"]
    assert _sources(trail) == [
        ("gnt:user", "planned work"),
        ("gnt:library:rlib2:instances_name_shutdown", ""),
        ("gnt:opcode:instance_shutdown", f"job={job_id};index=0"),
    ]
    assert _admin(rapi, "GET", f"/2/jobs/{job_id}")[2]["ops"][0]["reason"] == trail
    # no reason, or an empty one (as Ganeti's): the resource's entry and the master's
    for path in (f"{base}/info", f"{base}/info?reason="):
        code, _, job_id = _admin(rapi, "GET", path)
        assert code == 200, job_id
        assert _sources(_wait_job(data_dir, job_id).ops[0].params["reason"]) == [
            ("gnt:library:rlib2:instances_name_info", ""),
            ("gnt:opcode:instance_query_data", f"job={job_id};index=0"),
        ]
    # the body may not set it: a static parameter, as in Ganeti
    code, _, answer = _admin(
        rapi, "PUT", f"{base}/migrate", body={"reason": [["gnt:user", "x", 1]]}
    )
    assert code == 400 and "static parameters ['reason']" in answer["message"]


# ------------------------------------------------------------------ Ganeti's client


@needs_ganeti_client
def test_ganetis_client_reads_migrates_and_follows_the_job(
    rapi: rapi_server.RapiServer, data_dir: str, config: ConfigStore
) -> None:
    client = _client(rapi, data_dir)
    version, features, nodes, instances, job_id = client.run(
        [
            ["GetVersion", [], {}],
            ["GetFeatures", [], {}],
            ["GetNodes", [], {}],
            ["GetInstances", [], {"bulk": True}],
            ["MigrateInstance", [INST], {"target_node": N2, "mode": "live"}],
        ]
    )
    assert version == {"ok": 2}
    assert features == {"ok": ["instance-create-reqv1", "node-migrate-reqv1", "node-evac-res1"]}
    assert nodes == {"ok": [N1, N2, N3]}
    assert [i["name"] for i in instances["ok"]] == [INST, "inst2.example.com"]
    job = job_id["ok"]
    assert client.call("WaitForJobCompletion", job, period=0) is True
    status = client.call("GetJobStatus", job)
    assert status["status"] == "success" and status["opstatus"] == ["success"]
    assert any("Migrating instance" in entry[3] for entry in status["oplog"][0])
    assert config.get_instance(INST).primary_node == N2  # type: ignore[union-attr]
    change = client.call("WaitForJobChange", job, ["status"], None, None)
    assert change["job_info"] == ["success"] and change["log_entries"]
    assert client.call("GetJobs") == [job]


def _node_job(client: GanetiClient, job: int) -> dict[str, Any]:
    """The node operation's result once its job ended, each of its jobs ended too."""
    assert client.call("WaitForJobCompletion", job, period=0) is True
    (result,) = client.call("GetJobStatus", job)["opresult"]
    for submitted, child in result["jobs"]:
        assert submitted and client.call("WaitForJobCompletion", child, period=0) is True
    return dict(result)


@needs_ganeti_client
def test_ganetis_client_drains_a_node_and_moves_instances_off_nodes(
    rapi: rapi_server.RapiServer, data_dir: str, config: ConfigStore
) -> None:
    with config.update() as data:
        data.instances["inst2.example.com"].admin_state = "down"
    client = _client(rapi, data_dir)
    roles = client.run([["GetNodeRole", [name], {}] for name in (N1, N2, N3)])
    assert roles == [{"ok": "master"}, {"ok": "master-candidate"}, {"ok": "master-candidate"}]
    job = client.call("SetNodeRole", N2, "drained")
    assert client.call("WaitForJobCompletion", job, period=0) is True
    assert client.call("GetNodeRole", N2) == "drained"
    # a dry run plans only; then the running instance goes where it may: not the drained node
    job = client.call("MigrateNode", N1, dry_run=True)
    assert client.call("WaitForJobCompletion", job, period=0) is True
    assert client.call("GetJobStatus", job)["opresult"] == [None]  # as Ganeti's dry run
    assert config.get_instance(INST).primary_node == N1  # type: ignore[union-attr]
    result = _node_job(client, client.call("MigrateNode", N1, mode="live"))
    assert list(result) == ["jobs"] and len(result["jobs"]) == 1
    assert config.get_instance(INST).primary_node == N3  # type: ignore[union-attr]
    # back into service: regular, then a candidate again (through modify)
    job = client.call("SetNodeRole", N2, "regular")
    assert client.call("WaitForJobCompletion", job, period=0) is True
    assert client.call("GetNodeRole", N2) == "regular"
    job = client.call("ModifyNode", N2, master_candidate=True)
    assert client.call("WaitForJobCompletion", job, period=0) is True
    assert client.call("GetNodeRole", N2) == "master-candidate"
    # an evacuation to a given node
    job = client.call("EvacuateNode", N3, remote_node=N2, mode="primary-only")
    assert len(_node_job(client, job)["jobs"]) == 1
    assert config.get_instance(INST).primary_node == N2  # type: ignore[union-attr]
    # no secondaries to evacuate: a job that moves nothing, as Ganeti's
    job = client.call("EvacuateNode", N2, mode="secondary-only")
    assert _node_job(client, job) == {"jobs": []}
    assert config.get_instance(INST).primary_node == N2  # type: ignore[union-attr]
    # refused before any job: a role Ganeti cannot set either
    assert client.error("SetNodeRole", N2, "master")["code"] == 400
    assert client.error("GetNodeRole", "ghost")["code"] == 404


@needs_ganeti_client
def test_ganetis_client_gives_a_reason_and_the_moves_of_a_node_carry_it(
    rapi: rapi_server.RapiServer, data_dir: str, config: ConfigStore
) -> None:
    with config.update() as data:
        data.instances["inst2.example.com"].admin_state = "down"
    client = _client(rapi, data_dir)
    job = client.call("MigrateNode", N1, mode="live", reason="rack 4 power work")
    ((_, child),) = _node_job(client, job)["jobs"]
    trail = client.call("GetJobStatus", job)["ops"][0]["reason"]
    assert _sources(trail) == [
        ("gnt:user", "rack 4 power work"),
        ("gnt:library:rlib2:nodes_name_migrate", ""),
        ("gnt:opcode:node_migrate", f"job={job};index=0"),
    ]
    # the move's job: the node job's trail, then the master's entry of its own
    child_trail = client.call("GetJobStatus", child)["ops"][0]["reason"]
    assert child_trail[:3] == trail
    assert _sources(child_trail)[3:] == [("gnt:opcode:instance_migrate", f"job={child};index=0")]


@needs_ganeti_client
def test_a_failed_node_migration_is_ganetis_error_naming_the_job_of_every_move(
    rapi: rapi_server.RapiServer, data_dir: str, config: ConfigStore
) -> None:
    """Ganeti's client reads a failed opcode's result as an error (``errors.MaybeRaise``),
    never as a ``jobs`` list: the error names the job of each move that ran as one."""
    client = _client(rapi, data_dir)
    # inst2 is marked up but runs nowhere: its migration fails, inst1's succeeds
    job = client.call("MigrateNode", N1, mode="live")
    assert client.call("WaitForJobCompletion", job, period=0) is False
    status = client.call("GetJobStatus", job)
    assert (status["status"], status["opstatus"]) == ("error", ["error"])
    ((name, (message,)),) = status["opresult"]
    assert name == "OpExecError" and "1 of 2 instance(s)" in message
    moves = {
        j.ops[0].params["instance_name"]: j
        for j in JobStore(paths.jobs_dir(data_dir)).list()
        if j.parent == job
    }
    assert set(moves) == {INST, "inst2.example.com"}
    for inst, move in moves.items():
        node = config.get_instance(inst).primary_node  # type: ignore[union-attr]
        assert f"{inst} on {node} (job {move.id})" in message
        # each is a job Ganeti's client follows
        assert client.call("GetJobStatus", move.id)["status"] == move.status
    assert {m.status for m in moves.values()} == {"success", "error"}


@needs_ganeti_client
def test_ganetis_parameters_with_nothing_to_change_here_are_taken(
    rapi: rapi_server.RapiServer, data_dir: str, config: ConfigStore
) -> None:
    """No instance policy, no soft placement rules, every stop the administrator's:
    ``ignore_ipolicy``, ``ignore_soft_errors`` and ``admin_state_source`` "admin"
    are honoured as they are, and reach the jobs as in Ganeti."""
    with config.update() as data:
        data.instances["inst2.example.com"].admin_state = "down"
    client = _client(rapi, data_dir)
    # Ganeti's node migration passes ignore_ipolicy on to each instance's migration
    body = {"mode": "live", "ignore_ipolicy": True}
    job = client.call("_SendRequest", "POST", f"/2/nodes/{N1}/migrate", None, body)
    ((_, move),) = _node_job(client, job)["jobs"]
    assert _job(data_dir, job).ops[0].params["ignore_ipolicy"] is True
    assert _job(data_dir, move).ops[0].params["ignore_ipolicy"] is True
    moved_to = config.get_instance(INST).primary_node  # type: ignore[union-attr]
    assert moved_to != N1
    body = {"mode": "all", "ignore_soft_errors": True}
    job = client.call("_SendRequest", "POST", f"/2/nodes/{moved_to}/evacuate", None, body)
    assert len(_node_job(client, job)["jobs"]) == 1
    assert _job(data_dir, job).ops[0].params["ignore_soft_errors"] is True
    assert config.get_instance(INST).primary_node != moved_to  # type: ignore[union-attr]
    # the client's ShutdownInstance sends its extra arguments in the body
    job = client.call("ShutdownInstance", INST, admin_state_source="admin")
    assert client.call("WaitForJobCompletion", job, period=0) is True
    assert _job(data_dir, job).ops[0].params["admin_state_source"] == "admin"
    assert config.get_instance(INST).admin_state == "down"  # type: ignore[union-attr]


@needs_ganeti_client
def test_ganetis_parameters_that_cannot_be_honoured_here_are_refused(
    rapi: rapi_server.RapiServer, data_dir: str, config: ConfigStore
) -> None:
    client = _client(rapi, data_dir)
    # a stop by the instance's user: ganeti_lv has no user shutdown to record
    refused = client.error("ShutdownInstance", INST, admin_state_source="user")
    assert refused["code"] == 400
    assert "'OP_INSTANCE_SHUTDOWN.admin_state_source'" in refused["msg"]
    assert "user shutdown" in refused["msg"]
    bad = client.error("ShutdownInstance", INST, admin_state_source="root")
    assert bad["code"] == 400 and "must be one of admin, user, got 'root'" in bad["msg"]
    for path, body in (
        (f"/2/nodes/{N1}/migrate", {"ignore_ipolicy": "yes"}),
        (f"/2/nodes/{N1}/evacuate", {"mode": "all", "ignore_soft_errors": 1}),
    ):
        bad = client.error("_SendRequest", "POST", path, None, body)
        assert bad["code"] == 400 and "fails validation" in bad["msg"], body
    assert JobStore(paths.jobs_dir(data_dir)).list() == []
    assert config.get_instance(INST).admin_state == "up"  # type: ignore[union-attr]


@needs_ganeti_client
def test_the_one_node_group_and_the_instance_policy_as_ganetis_tools_read_them(
    rapi: rapi_server.RapiServer, data_dir: str, inst1_running: FakeNodeOps
) -> None:
    """What htools load (tests/peer/test_htools.py runs them): groups, policy, node figures."""
    inst1_running.node(N2).facts.memory_free = 3000  # the node itself takes 1096 MiB
    client = _client(rapi, data_dir)
    names, groups, one, nodes, info = client.run(
        [
            ["GetGroups", [], {}],
            ["GetGroups", [], {"bulk": True}],
            ["GetGroup", ["default"], {}],
            ["GetNodes", [], {"bulk": True}],
            ["GetInfo", [], {}],
        ]
    )
    assert names == {"ok": ["default"]}
    (group,) = groups["ok"]
    assert one["ok"] == group and group["name"] == "default"
    assert group["node_list"] == [N1, N2, N3] and group["alloc_policy"] == "preferred"
    assert {n["group.uuid"] for n in nodes["ok"]} == {group["uuid"]}
    assert client.call("GetGroup", group["uuid"])["name"] == "default"
    assert client.error("GetGroup", "ghost")["code"] == 404
    policy = info["ok"]["ipolicy"]
    assert policy == group["ipolicy"]
    assert set(policy) == {"minmax", "std", "disk-templates", "vcpu-ratio", "spindle-ratio"}
    # the node's own memory: what is neither free nor its instances'
    assert {n["name"]: n["mnode"] for n in nodes["ok"]} == {N1: 0, N2: 1096, N3: 0}
    assert all(n["ndparams"]["spindle_count"] == 1 for n in nodes["ok"])


@needs_ganeti_client
def test_ganetis_client_sees_errors_as_ganeti_gives_them(
    rapi: rapi_server.RapiServer, data_dir: str
) -> None:
    assert _client(rapi, data_dir, user="ghost").error("GetVersion")["code"] == 401
    assert _client(rapi, data_dir, user=ADMIN).call("GetVersion") == 2
    denied = _client(rapi, data_dir, user=VIEWER).error("MigrateInstance", INST)
    assert denied["code"] == 403
    client = _client(rapi, data_dir)
    bad = client.error("_SendRequest", "PUT", f"/2/instances/{INST}/migrate", None, {"x": 1})
    assert bad["code"] == 400 and "'x'" in bad["msg"]
    assert client.error("GetInstance", "ghost")["code"] == 404
    for size in (rapi_server.MAX_BODY, 8 * rapi_server.MAX_BODY):
        big = {"target_node": N2, "x": "a" * size}
        path = f"/2/instances/{INST}/migrate"
        too_large = client.error("_SendRequest", "PUT", path, None, big)
        assert too_large["code"] == 413 and "larger than" in too_large["msg"]


@needs_ganeti_client
def test_cancel_through_delete_stops_a_running_migration(
    slow_migration: FakeNodeOps, rapi: rapi_server.RapiServer, data_dir: str, config: ConfigStore
) -> None:
    client = _client(rapi, data_dir)
    job = client.call("MigrateInstance", INST, target_node=N2)
    assert wait_until(lambda: any("migration" in e[2] for e in _job(data_dir, job).log), 20)
    status = client.call("GetJobStatus", job)
    assert status["status"] == "running" and status["opstatus"] == ["running"]
    assert client.call("CancelJob", job) == [True, f"Job {job} will be canceled"]
    assert client.call("WaitForJobCompletion", job, period=0) is False
    status = client.call("GetJobStatus", job)
    # Ganeti's class for it: a MigrationAborted is an OpExecError
    assert status["status"] == "canceled" and status["opresult"][0][0] == "OpExecError"
    assert "aborted" in status["opresult"][0][1][0].lower()
    assert config.get_instance(INST).primary_node == N1  # type: ignore[union-attr]
    assert slow_migration.node(N1).domains[INST].state == "running"
    assert client.call("CancelJob", job) == [False, f"Job {job} has already finished (canceled)"]
    assert client.call("CancelJob", 999) == [False, "Job 999 not found"]


@needs_ganeti_client
def test_ganetis_client_modifies_the_cluster(
    rapi: rapi_server.RapiServer, data_dir: str, config: ConfigStore
) -> None:
    """PUT /2/modify: Ganeti's per-hypervisor and per-group forms, a job of the daemon."""
    client = _client(rapi, data_dir)
    job = client.call(
        "ModifyCluster",
        reason="maintenance window",
        default_iallocator="hail",
        hvparams={"kvm": {"migration_downtime": 500}},
        beparams={"default": {"vcpus": 2}},
        nicparams={"default": {"mode": "bridged", "link": "br7"}},
    )
    assert client.call("WaitForJobCompletion", job, period=0) is True
    info = client.call("GetInfo")
    assert info["default_iallocator"] == "hail"
    assert info["hvparams"]["kvm"]["migration_downtime"] == 500
    assert info["beparams"]["default"]["vcpus"] == 2
    assert info["nicparams"]["default"]["link"] == "br7"
    assert _job(data_dir, job).ops[0].params["reason"][0][1] == "maintenance window"
    job = client.call("ModifyCluster", hvparams={"migration_downtime": 400})  # ganeti_lv's form
    assert client.call("WaitForJobCompletion", job, period=0) is True
    assert client.call("GetInfo")["hvparams"]["kvm"]["migration_downtime"] == 400
    serial = config.read().serial
    for kwargs, says in (
        ({"hvparams": {"xen-pvm": {"kernel_path": "/x"}}}, "only 'kvm' is here, not xen-pvm"),
        ({"nicparams": {"default": {"mode": "routed"}}}, "NICs here are bridged"),
        ({"uid_pool": "1-2"}, "has no parameter 'uid_pool'"),
    ):
        refused = client.error("ModifyCluster", **kwargs)
        assert refused["code"] == 400 and says in refused["msg"], refused
    for forbidden in ("export_dir", "hooks_base_dir", "compression_tools"):  # root's, on the master
        refused = client.error("ModifyCluster", **{forbidden: "/"})
        assert refused["code"] == 403, refused
        assert f"The parameter {forbidden} cannot be set via RAPI" in refused["msg"]
    job = client.call("ModifyCluster", file_storage_dir="/")  # Ganeti's setting, checked by the job
    assert client.call("WaitForJobCompletion", job, period=0) is False
    assert "it holds the system's" in str(client.call("GetJobStatus", job)["opresult"])
    job = client.call("ModifyCluster", default_iallocator="bad name")  # the job's check, as Ganeti
    assert client.call("WaitForJobCompletion", job, period=0) is False
    assert "Invalid instance allocator name" in str(client.call("GetJobStatus", job)["opresult"])
    assert config.read().serial == serial
    assert _client(rapi, data_dir, user=VIEWER).error("ModifyCluster", vcpus=1)["code"] == 403


@needs_ganeti_client
def test_a_job_asked_to_stop_in_exec_runs_on_until_it_ends(
    rapi: rapi_server.RapiServer, data_dir: str, held_delays: threading.Event
) -> None:
    """A test delay holding its lock does not stop for the request and ends as it would
    have: it shows running, not Ganeti's canceling (which Ganeti's clients take for
    the end: a job that is canceling there always ends canceled)."""
    from ganeti_lv.client import Client

    job = Client(data_dir=data_dir).enqueue([OpTestDelay(duration=1.5, instance_names=[INST])])
    client = _client(rapi, data_dir)
    assert wait_until(lambda: in_exec(_job(data_dir, job)), 10)
    assert client.call("CancelJob", job) == [True, f"Job {job} will be canceled"]
    assert _job(data_dir, job).cancel_ts is not None  # recorded before the answer
    status = client.call("GetJobStatus", job)
    assert (status["status"], status["opstatus"]) == ("running", ["running"])
    held_delays.set()  # the delay's sleep ends
    assert client.call("WaitForJobCompletion", job, period=0) is True
    assert client.call("GetJobStatus", job)["opstatus"] == ["success"]


def test_delete_cancels_a_job_running_outside_the_daemon(
    rapi: rapi_server.RapiServer, data_dir: str
) -> None:
    """A job gnt-lv ran in its own process (no daemon then) is asked to stop as gnt-lv asks."""
    proc = subprocess.Popen(["bash", "-c", "exec -a /opt/glv/bin/gnt-lv sleep 30"])
    try:
        assert wait_until(lambda: _cmdline(proc.pid).startswith(b"/opt/glv/bin/gnt-lv"), 5)
        store = JobStore(paths.jobs_dir(data_dir))
        job = store.create_job([OpTestDelay(duration=30)], start=True)
        job.pid, job.pid_start = proc.pid, process_start_time(proc.pid)
        store.save(job)
        code, _, answer = _admin(rapi, "DELETE", f"/2/jobs/{job.id}")
        assert (code, answer) == (200, [True, f"Job {job.id} will be canceled"])
        assert proc.wait(5) == -signal.SIGTERM
        code, _, answer = _admin(rapi, "DELETE", f"/2/jobs/{job.id}")
        assert answer == [False, f"Job {job.id} has already finished (error)"]  # lost
    finally:
        proc.kill()
        proc.wait()


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fobj:
            return fobj.read()
    except OSError:
        return b""


@needs_ganeti_client
def test_twenty_concurrent_reads_while_a_migration_runs(
    slow_migration: FakeNodeOps, rapi: rapi_server.RapiServer, data_dir: str, config: ConfigStore
) -> None:
    client = _client(rapi, data_dir)
    job = client.call("MigrateInstance", INST, target_node=N2)
    (reads,) = client.run([{"parallel": 20, "call": ["GetInstances", [], {"bulk": True}]}])
    answers = reads["parallel"]
    assert len(answers) == 20 and all("ok" in a for a in answers), answers
    assert all([i["name"] for i in a["ok"]] == [INST, "inst2.example.com"] for a in answers)
    assert not _job(data_dir, job).finished  # the reads came while it ran
    assert client.call("WaitForJobCompletion", job, period=0) is True
    assert config.get_instance(INST).primary_node == N2  # type: ignore[union-attr]


def test_users_file_mode_is_private(rapi: rapi_server.RapiServer, data_dir: str) -> None:
    mode = stat.S_IMODE(os.stat(paths.rapi_users_file(data_dir)).st_mode)
    assert mode == 0o600
    assert stat.S_IMODE(os.stat(paths.rapi_cert_file(data_dir)).st_mode) == 0o600


@needs_ganeti_client
def test_ganetis_client_gets_the_console_of_a_running_instance(
    rapi: rapi_server.RapiServer, data_dir: str, inst1_running: FakeNodeOps
) -> None:
    inst1_running.node(N1).domains[INST].serial_tty = True
    client = _client(rapi, data_dir)
    assert client.call("GetInstanceConsole", INST) == {
        "instance": INST,
        "kind": "ssh",
        "host": "10.250.0.1",
        "port": 22,
        "user": "root",
        "command": ["fake-console", INST],
    }
    # as Ganeti's: a user with the option read (or write) gets it, one with neither not
    assert _client(rapi, data_dir, user=VIEWER).error("GetInstanceConsole", INST)["code"] == 403
    line = users.user_line("reader", "s3cret-reader-pw", write=False, plain=True, read=True)
    users.add_user(paths.rapi_users_file(data_dir), line)
    host, port = rapi.address
    reader = GanetiClient(host, port, "reader", "s3cret-reader-pw", paths.rapi_cert_file(data_dir))
    assert reader.call("GetInstanceConsole", INST)["kind"] == "ssh"
    assert reader.error("MigrateInstance", INST)["code"] == 403  # read is no write
    assert client.error("GetInstanceConsole", "ghost")["code"] == 404
    stopped = client.error("GetInstanceConsole", "inst2.example.com")  # up, not running
    assert stopped["code"] == 503 and "is not running (state ERROR_down)" in stopped["msg"]
    inst1_running.set_unreachable(N1)  # not known to run: no console either
    silent = client.error("GetInstanceConsole", INST)
    assert silent["code"] == 503 and f"Error checking node {N1}" in silent["msg"]


@needs_ganeti_client
def test_ganetis_client_adds_reads_and_removes_tags(
    rapi: rapi_server.RapiServer, data_dir: str, config: ConfigStore
) -> None:
    """An instance's, a node's and the cluster's tags, each change a job of the daemon."""
    client = _client(rapi, data_dir)
    added, cluster_added, node_added = client.run(
        [
            ["AddInstanceTags", [INST, ["b", "a"]], {"reason": "sorting"}],
            ["AddClusterTags", [["site:ams"]], {}],
            ["AddNodeTags", [N2, ["rack:7", "ssd"]], {}],
        ]
    )
    for answer in (added, cluster_added, node_added):
        assert client.call("WaitForJobCompletion", answer["ok"], period=0) is True
    assert client.call("GetInstanceTags", INST) == ["a", "b", "web"]
    assert client.call("GetClusterTags") == ["site:ams"]
    assert client.call("GetNodeTags", N2) == ["rack:7", "ssd"]
    assert client.call("GetNode", N2)["tags"] == ["rack:7", "ssd"]  # Ganeti's node field too
    assert client.call("GetNodeTags", N3) == [] and config.get_node(N3).tags == []  # type: ignore[union-attr]
    job_id = client.call("DeleteNodeTags", N2, ["ssd"])
    assert client.call("WaitForJobCompletion", job_id, period=0) is True
    assert config.get_node(N2).tags == ["rack:7"]  # type: ignore[union-attr]
    assert client.error("GetNodeTags", "ghost")["code"] == 404
    job = JobStore(paths.jobs_dir(data_dir)).get(added["ok"])
    assert job.ops[0].params["reason"][0][1] == "sorting"
    dry = client.call("DeleteInstanceTags", INST, ["web"], dry_run=True)
    assert client.call("WaitForJobCompletion", dry, period=0) is True
    assert config.get_instance(INST).tags == ["web", "b", "a"]  # type: ignore[union-attr]
    # a tag the instance does not have: the job fails, nothing is removed
    job_id = client.call("DeleteInstanceTags", INST, ["web", "nope"])
    assert client.call("WaitForJobCompletion", job_id, period=0) is False
    status = client.call("GetJobStatus", job_id)
    assert "Tag(s) 'nope' not found" in str(status["opresult"])
    job_id = client.call("DeleteInstanceTags", INST, ["web", "b"])
    assert client.call("WaitForJobCompletion", job_id, period=0) is True
    assert config.get_instance(INST).tags == ["a"]  # type: ignore[union-attr]
    assert client.error("GetInstanceTags", "ghost")["code"] == 404
    # no tag given: as Ganeti's, a job that changes nothing (a script's empty list)
    for call in ("AddInstanceTags", "DeleteInstanceTags"):
        assert client.call("WaitForJobCompletion", client.call(call, INST, []), period=0) is True
    assert config.get_instance(INST).tags == ["a"]  # type: ignore[union-attr]
    viewer = _client(rapi, data_dir, user=VIEWER)
    assert viewer.call("GetClusterTags") == ["site:ams"]
    assert viewer.error("AddClusterTags", ["x"])["code"] == 403


@needs_ganeti_client
def test_ganetis_client_creates_and_removes_an_instance(
    rapi: rapi_server.RapiServer, data_dir: str, config: ConfigStore, inst1_running: FakeNodeOps
) -> None:
    """CreateInstance (request version 1) and DeleteInstance, each a job of the daemon."""
    client = _client(rapi, data_dir)
    name = "new1.example.com"
    spec: dict[str, Any] = {
        "pnode": N2,
        "beparams": {"memory": 128, "vcpus": 1},
        "os": "noop",
        "name_check": False,
        "ip_check": False,
        "no_install": True,
        "tags": ["from-rapi"],
    }
    args = ["create", name, "sharedfile", [{"size": 64}], [{}]]
    dry = client.call("CreateInstance", *args, dry_run=True, **spec)
    assert client.call("WaitForJobCompletion", dry, period=0) is True
    assert config.get_instance(name) is None  # a dry run
    job = client.call("CreateInstance", *args, reason="for the test", **spec)
    assert client.call("WaitForJobCompletion", job, period=0) is True
    inst = config.get_instance(name)
    assert inst is not None and (inst.primary_node, inst.os, inst.tags) == (
        N2,
        "noop",
        ["from-rapi"],
    )
    assert [d.size for d in inst.disks] == [64] and len(inst.nics) == 1
    assert inst1_running.node(N2).domains[name].state == "running"
    assert _job(data_dir, job).ops[0].params["reason"][0][1] == "for the test"
    # Ganeti's result of a creation, as its client reads it: the names of the nodes
    assert client.call("GetJobStatus", job)["opresult"] == [[N2]]
    # refused before any job: what cannot be done here, a request of version 0
    refused = client.error("CreateInstance", *args, **{**spec, "name_check": True})
    assert refused["code"] == 400 and "not looked up in DNS" in refused["msg"]
    refused = client.error("CreateInstance", *args, **{**spec, "snode": N3})
    assert refused["code"] == 400 and "snode" in refused["msg"]
    old = client.error("_SendRequest", "POST", "/2/instances", None, {"name": "x"})
    assert old["code"] == 400 and "request version 0" in old["msg"]
    # modified: Ganeti's body, Ganeti's result; what cannot be changed here is refused
    job = client.call("ModifyInstance", name, beparams={"vcpus": 2}, hvparams={"acpi": False})
    assert client.call("WaitForJobCompletion", job, period=0) is True
    assert client.call("GetJobStatus", job)["opresult"] == [[["hv/acpi", False], ["be/vcpus", 2]]]
    inst = config.get_instance(name)
    assert inst is not None and inst.beparams["vcpus"] == 2 and inst.hvparams["acpi"] is False
    job = client.call("ModifyInstance", name, custom_beparams={"vcpus": 1})  # Ganeti's old name
    assert client.call("WaitForJobCompletion", job, period=0) is True
    assert config.get_instance(name).beparams["vcpus"] == 1  # type: ignore[union-attr]
    refused = client.error("ModifyInstance", name, nics=[["add", {}]])
    assert refused["code"] == 400 and "has no parameter 'nics'" in refused["msg"]
    # removed: gone from the configuration and the node
    job = client.call("DeleteInstance", name, shutdown_timeout=10)
    assert client.call("WaitForJobCompletion", job, period=0) is True
    assert config.get_instance(name) is None and name not in inst1_running.node(N2).domains
    assert _job(data_dir, job).ops[0].params["shutdown_timeout"] == 10
    failed = client.call("DeleteInstance", name)  # unknown now: the job fails
    assert client.call("WaitForJobCompletion", failed, period=0) is False
    assert _client(rapi, data_dir, user=VIEWER).error("DeleteInstance", INST)["code"] == 403


@needs_ganeti_client
def test_ganetis_client_creates_an_instance_with_the_clusters_default_allocator(
    rapi: rapi_server.RapiServer, data_dir: str, config: ConfigStore, fake_ops: FakeNodeOps
) -> None:
    """Neither pnode nor iallocator: the cluster's default allocator, shown by /2/info."""
    client = _client(rapi, data_dir)
    spec: dict[str, Any] = {"name_check": False, "ip_check": False, "no_install": True}
    args = ["create", "new1.example.com", "file", [{"size": 64}], [{}]]
    job = client.call("CreateInstance", *args, start=False, **spec)
    assert client.call("WaitForJobCompletion", job, period=0) is False  # the cluster has none
    assert "no default allocator" in str(client.call("GetJobStatus", job)["opresult"])
    assert client.call("GetInfo")["default_iallocator"] == ""
    with config.update() as data:
        data.cluster.default_iallocator = "hail"
    fake_ops.node(N3).facts.memory_free = 9000
    assert client.call("GetInfo")["default_iallocator"] == "hail"
    job = client.call("CreateInstance", *args, start=False, **spec)
    assert client.call("WaitForJobCompletion", job, period=0) is True
    inst = config.get_instance("new1.example.com")
    assert inst is not None and inst.primary_node == N3
