"""Tearing a local cluster down: every step is taken, the record kept until all went well."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ganeti_lv import paths
from ganeti_lv.devcluster import cluster as cluster_mod
from ganeti_lv.devcluster import netns, peernode
from ganeti_lv.devcluster.peer import PeerCluster
from ganeti_lv.errors import OpExecError
from ganeti_lv.master import daemon
from ganeti_lv.master.processes import process_alive, process_start_time


def _fake_nodes(
    monkeypatch: pytest.MonkeyPatch,
    prefix: str,
    kill_error: str | None,
    rounds: list[list[int]] | None = None,
    killed: list[list[int]] | None = None,
) -> list[str]:
    """Fake namespaces whose processes are ``rounds[k]`` after k kills (then none)."""
    deleted: list[str] = []
    rounds = [[101, 102]] if rounds is None else rounds
    kills = killed if killed is not None else []
    monkeypatch.setattr(netns, "list_netns", lambda p: [f"{prefix}n1", f"{prefix}n2"])

    def pids_in_netns(name: str) -> list[int]:
        return rounds[len(kills)] if len(kills) < len(rounds) else []

    monkeypatch.setattr(netns, "pids_in_netns", pids_in_netns)
    monkeypatch.setattr(netns, "is_ours", lambda pid, names, holders=(): True)

    def kill_pids(pids: list[int], grace: float = 5.0) -> None:
        kills.append(list(pids))
        if kill_error:
            raise OpExecError(kill_error)

    monkeypatch.setattr(netns, "kill_pids", kill_pids)
    monkeypatch.setattr(netns, "delete_netns", deleted.append)
    monkeypatch.setattr(netns, "links", lambda p: [f"{p}br"] if f"{p}br" not in deleted else [])
    monkeypatch.setattr(netns, "delete_link", deleted.append)
    return deleted


def _cluster(tmp_path: Path) -> cluster_mod.DevCluster:
    cl = cluster_mod.DevCluster(str(tmp_path))
    (tmp_path / "state.json").write_text(json.dumps({"holders": {}, "daemons": {}}))
    return cl


def test_down_after_a_failed_kill_still_removes_the_namespaces_and_keeps_the_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cl = _cluster(tmp_path)
    prefix = f"glv{cl.cid}"
    deleted = _fake_nodes(monkeypatch, prefix, kill_error="processes [102] did not die")
    monkeypatch.setattr(daemon, "stop", lambda data_dir, force=False: None)
    with pytest.raises(OpExecError, match=r"not completely down: processes \[102\] did not die"):
        cl.down()
    assert f"{prefix}n1" in deleted and f"{prefix}n2" in deleted and f"{prefix}br" in deleted
    assert (tmp_path / "state.json").exists()  # `down` again can finish the job


def test_down_with_a_link_that_will_not_go_keeps_the_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cl = _cluster(tmp_path)
    prefix = f"glv{cl.cid}"
    _fake_nodes(monkeypatch, prefix, kill_error=None)
    monkeypatch.setattr(netns, "delete_link", lambda name: None)  # `ip link del` failed
    monkeypatch.setattr(daemon, "stop", lambda data_dir, force=False: None)
    with pytest.raises(OpExecError, match=f"still there: link {prefix}br"):
        cl.down()
    assert (tmp_path / "state.json").exists()


def test_down_goes_on_when_the_master_daemon_does_not_stop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cl = _cluster(tmp_path)
    deleted = _fake_nodes(monkeypatch, f"glv{cl.cid}", kill_error=None)
    asked: list[bool] = []

    def stop(data_dir: str, force: bool = False) -> None:
        asked.append(force)
        raise OpExecError("The master daemon (4242) did not stop within 60 s")

    monkeypatch.setattr(daemon, "stop", stop)
    with pytest.raises(OpExecError, match="did not stop within 60 s"):
        cl.down()
    assert asked == [True]
    prefix = f"glv{cl.cid}"
    assert {f"{prefix}n1", f"{prefix}n2", f"{prefix}br"} <= set(deleted)
    assert (tmp_path / "state.json").exists()


def test_down_that_went_well_removes_the_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cl = _cluster(tmp_path)
    _fake_nodes(monkeypatch, f"glv{cl.cid}", kill_error=None)
    monkeypatch.setattr(daemon, "stop", lambda data_dir, force=False: None)
    cl.down()
    assert not (tmp_path / "state.json").exists()


def _peer(tmp_path: Path, sshd: dict[str, int]) -> PeerCluster:
    peer = PeerCluster(str(tmp_path))
    (tmp_path / "state.json").write_text(json.dumps({"holders": {}, "sshd": sshd}))
    (tmp_path / "nodes").mkdir()
    return peer


def test_the_peers_down_after_a_failed_kill_still_removes_the_namespaces_and_keeps_the_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Ganeti peer's tear-down is the local cluster's: every step, the record kept."""
    peer = _peer(tmp_path, {"node1": 103})
    prefix = peer.layout().prefix
    killed: list[list[int]] = []
    deleted = _fake_nodes(
        monkeypatch, prefix, kill_error="processes [102] did not die", killed=killed
    )
    monkeypatch.setattr(peernode, "mounts_left", lambda layout: [])
    with pytest.raises(OpExecError, match=r"not completely down: processes \[102\] did not die"):
        peer.down()
    assert killed == [[101, 102, 103]]  # the namespaces' processes and the recorded sshd
    assert f"{prefix}n1" in deleted and f"{prefix}n2" in deleted and f"{prefix}br" in deleted
    assert (tmp_path / "state.json").exists() and (tmp_path / "nodes").exists()


def test_the_peers_down_keeps_the_record_while_something_is_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    peer = _peer(tmp_path, {})
    _fake_nodes(monkeypatch, peer.layout().prefix, kill_error=None)
    left = ["mounts of /x seen by process 7"]
    monkeypatch.setattr(peernode, "mounts_left", lambda layout: left)
    with pytest.raises(OpExecError, match="mounts of /x seen by process 7"):
        peer.down()
    assert (tmp_path / "state.json").exists()
    left.clear()
    peer.down()  # run again, it finishes
    assert not (tmp_path / "state.json").exists() and not (tmp_path / "nodes").exists()


def _daemon_ignoring_sigterm(data_dir: Path) -> subprocess.Popen[bytes]:
    """A process that ignores SIGTERM, recorded in ``data_dir``'s master daemon pid file."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "print('ready', flush=True); time.sleep(120)",
        ],
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
    Path(paths.masterd_pidfile(str(data_dir))).write_text(
        f"{proc.pid} {process_start_time(proc.pid)}\n"
    )
    threading.Thread(target=proc.wait, daemon=True).start()  # reaped once it ends
    return proc


def test_a_forced_stop_kills_a_daemon_that_does_not_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    proc = _daemon_ignoring_sigterm(tmp_path)
    start = process_start_time(proc.pid)
    try:
        with pytest.raises(OpExecError, match="did not stop within 0.2 s"):
            daemon.stop(str(tmp_path), timeout=0.2)
        assert process_alive(proc.pid, start)  # a plain stop leaves it running
        monkeypatch.setattr(daemon, "FORCED_STOP_GRACE", 0.3)
        assert daemon.stop(str(tmp_path), timeout=0.2, force=True) == proc.pid
        assert not process_alive(proc.pid, start)
    finally:
        proc.kill()


@pytest.fixture
def foreign_sleep() -> Iterator[int]:
    """A ``sleep`` in a network namespace of its own, not started by any cluster."""
    if os.geteuid() != 0:
        pytest.skip("needs root for a network namespace")
    proc = subprocess.Popen(["unshare", "--net", "sleep", "60"])
    deadline = time.monotonic() + 10
    while netns.proc_name(proc.pid) != "sleep" and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        assert netns.proc_name(proc.pid) == "sleep"
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


def test_a_sleep_in_a_namespace_of_its_own_is_not_taken_for_a_holder(foreign_sleep: int) -> None:
    # the PID a dead holder had, since given to someone else's process
    assert not netns.is_ours(foreign_sleep, set())
    recorded_start = netns.process_start_time(foreign_sleep)
    assert recorded_start is not None
    assert not netns.is_holder(foreign_sleep, recorded_start - 1)
    state = {"holders": {"node1": foreign_sleep}, "holder_starts": {"node1": recorded_start - 1}}
    assert netns.recorded_holders(state) == []
    # the holder itself (its start as recorded) and what runs in its namespace are ours
    assert netns.is_holder(foreign_sleep, recorded_start)
    state["holder_starts"]["node1"] = recorded_start
    assert netns.recorded_holders(state) == [foreign_sleep]
    assert netns.is_ours(foreign_sleep, set(), [foreign_sleep])


def test_a_holder_recorded_without_its_start_must_be_a_sleep() -> None:
    me = os.getpid()
    assert not netns.is_holder(me, None)  # python, not a holder's sleep
    assert netns.is_holder(me, netns.process_start_time(me))


def test_a_command_that_does_not_end_in_time_is_a_clear_error() -> None:
    with pytest.raises(OpExecError, match="did not end within 0.2 s"):
        netns.run(["sleep", "30"], timeout=0.2)


def test_the_warm_up_leaves_no_virsh_running_when_a_node_does_not_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cl = cluster_mod.DevCluster(str(tmp_path))
    started: list[subprocess.Popen[bytes]] = []
    real_popen = subprocess.Popen

    def popen(argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        proc = real_popen(["sleep", "30"], **kwargs)  # a libvirtd that never answers
        started.append(proc)
        return proc

    class Node:
        name = "node1"

    class Layout:
        nodes = [Node()]

    real_wait = subprocess.Popen.wait

    def short_wait(self: subprocess.Popen[bytes], timeout: float | None = None) -> int:
        return real_wait(self, timeout=None if timeout is None else min(timeout, 0.2))

    monkeypatch.setattr(cluster_mod.subprocess, "Popen", popen)
    monkeypatch.setattr(real_popen, "wait", short_wait)
    monkeypatch.setattr(cl, "_exec_argv", lambda node, argv: argv)
    with pytest.raises(OpExecError, match="did not answer"):
        cl._warm_up(Layout())  # type: ignore[arg-type]
    assert started and all(p.poll() is not None for p in started)


def test_down_kills_what_started_while_the_others_were_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cl = _cluster(tmp_path)
    killed: list[list[int]] = []
    # an sshd session forked during the first round
    _fake_nodes(monkeypatch, f"glv{cl.cid}", None, rounds=[[101, 102], [103]], killed=killed)
    monkeypatch.setattr(daemon, "stop", lambda data_dir, force=False: None)
    cl.down()
    assert killed == [[101, 102], [103]]
    assert not (tmp_path / "state.json").exists()


def test_down_with_processes_that_keep_coming_back_keeps_the_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cl = _cluster(tmp_path)
    rounds = [[100 + i] for i in range(netns.DOWN_ROUNDS + 1)]
    _fake_nodes(monkeypatch, f"glv{cl.cid}", None, rounds=rounds)
    monkeypatch.setattr(daemon, "stop", lambda data_dir, force=False: None)
    with pytest.raises(OpExecError, match="kept coming back"):
        cl.down()
    assert (tmp_path / "state.json").exists()
