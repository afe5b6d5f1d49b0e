"""``gnt-lv node add`` against a real sshd on loopback: host-key confirmation and SSH check.

The node operations are fake except ``run_command``, which runs over real SSH
with the cluster key and the cluster's known_hosts, so the host key recorded
by ``node add`` is what makes the reachability check pass or fail.
"""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from ganeti_lv import bootstrap, paths
from ganeti_lv.cli.main import main
from ganeti_lv.config import ConfigStore
from ganeti_lv.hypervisor.fake import FakeNodeOps
from ganeti_lv.node.ssh import SshClient
from ganeti_lv.node.transport import CommandResult
from ganeti_lv.objects import Node


class SshCommandOps(FakeNodeOps):
    """FakeNodeOps whose run_command really runs over SSH."""

    def __init__(self, data_dir: str) -> None:
        super().__init__()
        self.data_dir = data_dir

    def run_command(
        self, node: Node, argv: list[str], timeout: float | None = None
    ) -> CommandResult:
        self._enter("run_command", node, list(argv), timeout)
        client = SshClient(
            node.address,
            port=node.ssh_port,
            key_file=paths.ssh_key_file(self.data_dir),
            known_hosts_file=paths.known_hosts_file(self.data_dir),
            connect_timeout=5,
        )
        try:
            result = client.run(argv, timeout=timeout, check=False)
        finally:
            client.close()
        return CommandResult(result.exit_status, result.stdout, result.stderr)


@pytest.fixture
def ssh_cluster(tmp_path: Any, local_sshd: Any) -> str:
    """A cluster whose SSH key is authorized on the test sshd."""
    ddir = str(tmp_path / "data")
    bootstrap.init_cluster(
        ddir,
        cluster_name="c1",
        master=Node(name="master1", address="127.0.0.2"),
        master_host_key=None,
        ssh_key_file=local_sshd.key_file,
    )
    return ddir


def gnt(ddir: str, argv: list[str], ask: Any, capsys: Any) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["--data-dir", ddir, *argv], node_ops=SshCommandOps(ddir), ask=ask)
    out, err = capsys.readouterr()
    return code, out, err


def add_argv(sshd: Any, *extra: str) -> list[str]:
    return ["node", "add", "--address", sshd.host, "--ssh-port", str(sshd.port), *extra, "node2"]


def test_node_add_confirms_fetched_key(ssh_cluster: str, local_sshd: Any, capsys: Any) -> None:
    questions: list[str] = []

    def ask(question: str) -> bool:
        questions.append(question)
        return True

    code, out, err = gnt(ssh_cluster, add_argv(local_sshd), ask, capsys)
    assert code == 0, err
    expected_fp = subprocess.run(
        ["ssh-keygen", "-l", "-f", local_sshd.host_key + ".pub"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()[1]
    assert f"key fingerprint is {expected_fp}." in out
    assert len(questions) == 1
    assert "checking SSH connectivity" in out
    node = ConfigStore(ssh_cluster).get_node("node2")
    assert node is not None and node.ssh_port == local_sshd.port
    known = paths.known_hosts_file(ssh_cluster)
    assert (
        bootstrap.lookup_known_host(known, local_sshd.host, local_sshd.port)
        == local_sshd.host_key_line
    )


def test_node_add_declined_key_adds_nothing(ssh_cluster: str, local_sshd: Any, capsys: Any) -> None:
    serial = ConfigStore(ssh_cluster).read().serial
    code, _, err = gnt(ssh_cluster, add_argv(local_sshd, "-f"), lambda q: False, capsys)
    assert code == 1 and "not confirmed" in err
    assert ConfigStore(ssh_cluster).read().serial == serial


def test_node_add_wrong_key_fails_ssh_check(
    ssh_cluster: str, local_sshd: Any, capsys: Any, tmp_path: Any
) -> None:
    other = str(tmp_path / "other_key")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", other], check=True)
    with open(other + ".pub") as fh:
        wrong = " ".join(fh.read().split()[:2])
    serial = ConfigStore(ssh_cluster).read().serial
    code, _, err = gnt(ssh_cluster, add_argv(local_sshd, "--host-key", wrong), None, capsys)
    assert code == 1
    assert err.startswith("Failure: command execution error:")
    assert "not reachable over SSH" in err and "CHANGED" in err
    assert ConfigStore(ssh_cluster).read().serial == serial
    known = paths.known_hosts_file(ssh_cluster)
    assert bootstrap.lookup_known_host(known, local_sshd.host, local_sshd.port) is None


def test_node_add_of_a_known_node_is_refused_before_its_key_is_fetched(
    ssh_cluster: str, local_sshd: Any, capsys: Any
) -> None:
    questions: list[str] = []
    argv = ["node", "add", "--address", local_sshd.host, "--ssh-port", str(local_sshd.port)]
    code, out, err = gnt(ssh_cluster, [*argv, "master1"], questions.append, capsys)
    assert code == 1 and "already_exists" in err
    assert "Node master1 is already in the configuration (--readd adds it again)" in err
    assert questions == [] and "fingerprint" not in out  # the node was not contacted
