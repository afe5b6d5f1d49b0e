"""The cluster tests' check that every node daemon runs after a test (a fake cluster)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from support.nodedaemons import restart_gone, running_daemons

from ganeti_lv.devcluster.layout import DAEMONS


class FakeCluster:
    """Node daemons by PID; ``start_daemon`` gives a daemon a new PID (or fails)."""

    def __init__(self, tmp_path: Path, failing: tuple[str, str] | None = None) -> None:
        self.pids: dict[tuple[str, str], int | None] = {
            (node, name): 100 * i + j
            for i, node in enumerate(("node1", "node2"), 1)
            for j, name in enumerate(DAEMONS)
        }
        self.records: dict[int, str] = {}
        self.started: list[tuple[str, str]] = []
        self.failing = failing
        self.logs = tmp_path

    def status(self) -> dict[str, Any]:
        nodes: dict[str, dict[str, int | None]] = {}
        for (node, name), pid in self.pids.items():
            nodes.setdefault(node, {"holder": 1})[name] = pid
        return {"nodes": nodes}

    def die(self, node: str, name: str, how: str) -> None:
        pid = self.pids[(node, name)]
        assert pid is not None
        self.records[pid] = f"2026-12-05T00:10:45Z {name}[{pid}] {how}"
        self.pids[(node, name)] = None

    def daemon_end(self, node: str, name: str, pid: int) -> str | None:
        return self.records.get(pid)

    def host_path(self, node: str, path: str) -> str:
        return str(self.logs / node / Path(path).name)

    def start_daemon(self, node: str, name: str) -> int:
        self.started.append((node, name))
        if (node, name) == self.failing:
            raise RuntimeError(f"{name} on {node} did not become ready within 30s")
        self.pids[(node, name)] = 999
        return 999


def test_nothing_is_reported_or_started_while_every_daemon_runs(tmp_path: Path) -> None:
    cluster = FakeCluster(tmp_path)
    before = running_daemons(cluster)
    assert len(before) == 2 * len(DAEMONS)
    assert restart_gone(cluster, before) is None
    assert cluster.started == []


def test_a_daemon_gone_is_reported_with_its_end_and_log_and_started_again(tmp_path: Path) -> None:
    cluster = FakeCluster(tmp_path)
    log = tmp_path / "node2" / "libvirtd.log"
    log.parent.mkdir()
    log.write_text("".join(f"line {i}\n" for i in range(40)))
    before = running_daemons(cluster)
    pid = before[("node2", "libvirtd")]
    cluster.die("node2", "libvirtd", "killed by signal 11 (SIGSEGV)")
    report = restart_gone(cluster, before)
    assert report is not None
    assert report.splitlines()[0] == (
        f"libvirtd on node2: 2026-12-05T00:10:45Z libvirtd[{pid}] killed by signal 11 (SIGSEGV)"
    )
    assert "line 39" in report and "line 25" in report and "line 24" not in report  # the tail
    assert cluster.started == [("node2", "libvirtd")]
    assert restart_gone(cluster, running_daemons(cluster)) is None


def test_a_failed_restart_is_reported_and_the_next_daemons_still_start(tmp_path: Path) -> None:
    cluster = FakeCluster(tmp_path, failing=("node1", "virtlogd"))
    before = running_daemons(cluster)
    cluster.die("node1", "virtlogd", "exited 1")
    cluster.pids[("node1", "libvirtd")] = None  # vanished without a record
    report = restart_gone(cluster, before)
    assert report is not None
    assert "virtlogd on node1: " in report and "exited 1" in report
    assert "did not become ready within 30s" in report
    assert f"libvirtd[{before[('node1', 'libvirtd')]}]: no record of its end" in report
    assert cluster.started == [("node1", "virtlogd"), ("node1", "libvirtd")]


def test_a_daemon_that_was_not_running_before_the_test_is_not_reported(tmp_path: Path) -> None:
    cluster = FakeCluster(tmp_path)
    cluster.pids[("node1", "sshd")] = None
    before = running_daemons(cluster)
    assert ("node1", "sshd") not in before
    assert restart_gone(cluster, before) is None
    assert cluster.started == []
