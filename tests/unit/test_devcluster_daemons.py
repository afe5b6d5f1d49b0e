"""Starting a node daemon while another start of it is under way (a killed ``up``'s)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from ganeti_lv.devcluster import daemons
from ganeti_lv.devcluster.layout import NodeLayout
from ganeti_lv.errors import OpExecError


class FakeNode:
    """The processes of one node: name and parent per PID, and the pid file's PID.

    What our own start of a daemon does is set beforehand: its exit status and
    error output, the processes it leaves (``start_leaves``) and the PID it
    writes to the pid file (``start_writes``). ``pidfile_after`` polls of the
    pid file, ``pidfile_late`` appears in it (a start under way elsewhere).
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch, procs: dict[int, tuple[str, int]]):
        self.procs = procs
        self.pidfile_pid: int | None = None
        self.pidfile_late: int | None = None
        self.pidfile_after = 0
        self.polls = 0
        self.started: list[list[str]] = []
        self.start_status, self.start_stderr = 0, b""
        self.start_leaves: dict[int, tuple[str, int]] = {}
        self.start_writes: int | None = None
        net = daemons.netns
        monkeypatch.setattr(net, "pids_in_netns", lambda _ns: sorted(self.procs))
        monkeypatch.setattr(net, "proc_name", self._name)
        monkeypatch.setattr(net, "proc_parent", lambda pid: self.procs.get(pid, ("", 0))[1])
        monkeypatch.setattr(daemons, "daemon_pid", self._daemon_pid)
        monkeypatch.setattr(daemons, "_ready", lambda _node, _name: True)
        monkeypatch.setattr(daemons.time, "sleep", lambda _s: None)
        monkeypatch.setattr(subprocess, "run", self._run)

    def stalled_clock(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A clock that moves 5 s at each reading (waits run out at once)."""
        clock = iter(range(0, 1000, 5))
        monkeypatch.setattr(daemons.time, "monotonic", lambda: float(next(clock)))

    def _name(self, pid: int) -> str | None:
        return self.procs[pid][0] if pid in self.procs else ("reaper" if pid == 1 else None)

    def _daemon_pid(self, _node: Any, _name: str) -> int | None:
        self.polls += 1
        if self.pidfile_late is not None and self.polls > self.pidfile_after:
            self.pidfile_pid = self.pidfile_late
        return self.pidfile_pid

    def _run(self, argv: list[str], **_kw: Any) -> subprocess.CompletedProcess[bytes]:
        self.started.append(argv)
        self.procs.update(self.start_leaves)
        if self.start_writes is not None:
            self.pidfile_pid = self.start_writes
        return subprocess.CompletedProcess(argv, self.start_status, b"", self.start_stderr)


def _node(tmp_path: Path) -> NodeLayout:
    return NodeLayout(1, "node1", "10.0.0.1", 24, "ns1", "vh1", "vp1", str(tmp_path))


def test_a_daemon_still_starting_is_awaited_not_started_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # virtlogd 40 came up below the reaper; 41 is its own half of daemonising
    fake = FakeNode(monkeypatch, {40: ("virtlogd", 1), 41: ("virtlogd", 40)})
    fake.pidfile_late, fake.pidfile_after = 40, 2
    assert daemons.start_daemon(_node(tmp_path), 7, "virtlogd") == 40
    assert fake.started == []


def test_without_a_starting_daemon_a_new_one_is_started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # an SSH session of a gone sshd (now below the reaper) is no sshd starting
    fake = FakeNode(monkeypatch, {50: ("sshd", 1), 60: ("bash", 50)})
    fake.start_writes = 70
    assert daemons.start_daemon(_node(tmp_path), 7, "sshd") == 70
    assert len(fake.started) == 1


def test_a_start_that_lost_the_pid_file_to_another_start_takes_that_daemon(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeNode(monkeypatch, {})
    fake.start_status, fake.start_stderr = 1, b"Unable to obtain pidfile"
    fake.start_leaves, fake.start_writes = {80: ("libvirtd", 1)}, 80
    assert daemons.start_daemon(_node(tmp_path), 7, "libvirtd") == 80


def test_a_failed_start_with_no_other_daemon_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeNode(monkeypatch, {})
    fake.start_status, fake.start_stderr = 1, b"no config"
    with pytest.raises(OpExecError, match="libvirtd on node1 failed to start: no config"):
        daemons.start_daemon(_node(tmp_path), 7, "libvirtd")


def test_a_daemon_that_never_writes_its_pid_file_fails_in_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeNode(monkeypatch, {40: ("virtlogd", 1)})
    fake.stalled_clock(monkeypatch)
    with pytest.raises(OpExecError, match=r"virtlogd on node1 \(PIDs \[40\]\) did not become"):
        daemons.start_daemon(_node(tmp_path), 7, "virtlogd", timeout=30)
    assert fake.started == []


def test_the_half_of_a_daemon_going_to_the_background_is_not_a_second_daemon(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    FakeNode(monkeypatch, {40: ("virtlogd", 1), 41: ("virtlogd", 40), 50: ("sshd", 1)})
    assert daemons._starting(_node(tmp_path), "virtlogd") == [40]
    assert daemons._starting(_node(tmp_path), "sshd") == []  # sessions are named sshd too


def test_a_lost_race_with_a_start_that_never_ends_names_both(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeNode(monkeypatch, {})
    fake.stalled_clock(monkeypatch)
    fake.start_status, fake.start_stderr = 1, b"Unable to obtain pidfile"
    fake.start_leaves = {80: ("libvirtd", 1)}  # another start, never ready
    with pytest.raises(OpExecError) as err:
        daemons.start_daemon(_node(tmp_path), 7, "libvirtd", timeout=30)
    assert "(PIDs [80]) did not become ready" in str(err.value)
    assert str(err.value).endswith("this start of it failed: Unable to obtain pidfile")
