"""``gnt-lv-masterd --rapi`` as an operator starts it: refusals, serving, its log.

The daemon runs detached on a data dir without a cluster (so it opens no
node connection), with its remote API on 127.0.0.1.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
from support.masterd import free_port, start_program
from support.rapi import request

from ganeti_lv import paths
from ganeti_lv.master import daemon as masterd
from ganeti_lv.rapi import certs, users

USER, PASSWORD = "ops", "correct-horse-battery"


def _start(ddir: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return start_program(ddir, "--rapi", *extra)


@pytest.fixture
def ddir(tmp_path: Any) -> Iterator[str]:
    """A data dir with the remote API's certificate and one user with write access."""
    path = str(tmp_path / "data")
    os.mkdir(path)
    certs.create_certificate(paths.rapi_cert_file(path), "c1", ["c1"], ["127.0.0.1"])
    users.add_user(paths.rapi_users_file(path), users.user_line(USER, PASSWORD, write=True))
    try:
        yield path
    finally:
        pid = masterd.read_pid(path)
        if pid is not None:
            os.kill(pid, signal.SIGKILL)


def test_serves_and_never_logs_a_password(ddir: str) -> None:
    port = free_port()
    res = _start(ddir, "--rapi-address", "127.0.0.1", "--rapi-port", str(port))
    assert res.returncode == 0, res.stderr
    try:
        assert request("127.0.0.1", port, "GET", "/version")[0] == 401
        assert request("127.0.0.1", port, "GET", "/version", USER, "guess-number-one")[0] == 401
        assert request("127.0.0.1", port, "GET", "/version", "guess-number-two", "x")[0] == 401
        code, _, body = request("127.0.0.1", port, "GET", "/version", USER, PASSWORD)
        assert (code, body) == (200, 2)
        code, _, body = request("127.0.0.1", port, "GET", "/2/jobs", USER, PASSWORD)
        assert (code, body) == (200, [])
    finally:
        assert masterd.stop(ddir) is not None
    with open(paths.masterd_log(ddir), encoding="utf-8") as fobj:
        log = fobj.read()
    assert f"serving Ganeti's remote API on https://127.0.0.1:{port}" in log
    assert "authentication failed: wrong password for user 'ops'" in log
    assert f"{USER} GET /version -> 200" in log
    for secret in (PASSWORD, "guess-number-one", "guess-number-two"):
        assert secret not in log
    assert "Basic " not in log


def test_refuses_to_start_with_an_unsafe_users_file(ddir: str) -> None:
    os.chmod(paths.rapi_users_file(ddir), 0o644)
    res = _start(ddir, "--rapi-address", "127.0.0.1", "--rapi-port", str(free_port()))
    assert res.returncode == 1
    assert "others may read or change it" in res.stderr and "chmod 600" in res.stderr
    assert masterd.read_pid(ddir) is None
    assert not os.path.exists(paths.masterd_socket(ddir))


def test_refuses_to_start_on_a_busy_port(ddir: str) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        res = _start(ddir, "--rapi-address", "127.0.0.1", "--rapi-port", str(port))
    assert res.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in res.stderr
    assert masterd.read_pid(ddir) is None


def test_without_a_cluster_the_master_address_is_unknown(ddir: str) -> None:
    res = _start(ddir, "--rapi-port", str(free_port()))
    assert res.returncode == 1 and "gnt-lv-masterd:" in res.stderr
    assert masterd.read_pid(ddir) is None
