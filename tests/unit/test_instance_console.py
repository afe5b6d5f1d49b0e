"""gnt-lv instance console and the console query (OpInstanceConsole) on the fake nodes."""

from __future__ import annotations

import shlex
import subprocess
from typing import Any

import pytest

from ganeti_lv import paths
from ganeti_lv.cli import instance_console
from ganeti_lv.cli.main import main
from ganeti_lv.config import ConfigStore
from ganeti_lv.context import Context
from ganeti_lv.errors import ECODE_NOENT, ECODE_STATE, OpPrereqError
from ganeti_lv.hypervisor.fake import FakeNodeOps
from ganeti_lv.mcpu import run_query
from ganeti_lv.opcodes import OpInstanceConsole

N1 = "node1.example.com"
I1, I2 = "inst1.example.com", "inst2.example.com"


def _console(ctx: Context, name: str) -> Any:
    return run_query(ctx, OpInstanceConsole(instance_name=name))


@pytest.fixture
def with_tty(inst1_running: FakeNodeOps) -> FakeNodeOps:
    """inst1 runs on node1 with a serial terminal."""
    inst1_running.node(N1).domains[I1].serial_tty = True
    return inst1_running


def test_the_console_of_a_running_instance_is_reached_over_ssh_on_its_primary(
    ctx: Context, with_tty: FakeNodeOps, config: ConfigStore
) -> None:
    with config.update() as data:
        data.nodes[N1].ssh_port = 2222
        data.nodes[N1].ssh_user = "glv"
    assert _console(ctx, "inst1") == {
        "instance": I1,
        "kind": "ssh",
        "host": "10.250.0.1",
        "port": 2222,
        "user": "glv",  # the node's SSH user, as every SSH session to it
        "command": ["fake-console", I1],  # the node operations' command
    }
    assert ctx.jobs.list() == []  # a query, not a job


_FAKE_VIRSH = """#!/bin/sh
echo "$*" >> "$CALLS"
case "$3" in
  domstate) echo "$DOMSTATE" ;;
  console) echo "console of $4" ;;
esac
"""


def _run_console_command(tmp_path: Any, domstate: str) -> tuple[str, list[str]]:
    """The libvirt console command run by sh, with a ``virsh`` that records its calls and
    says the domain is ``domstate``; what it printed and the calls, once all ended."""
    from ganeti_lv.hypervisor.libvirt import LibvirtNodeOps
    from ganeti_lv.hypervisor.libvirt.nodeops import CONSOLE_RESUME_DELAY

    virsh = tmp_path / "virsh"
    virsh.write_text(_FAKE_VIRSH)
    virsh.chmod(0o755)
    calls = tmp_path / "calls"
    command = LibvirtNodeOps.console_command(None, "web1")  # type: ignore[arg-type]
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin", "CALLS": str(calls), "DOMSTATE": domstate}
    # bytes: the notice ends in CR LF, for the console's raw terminal
    out = subprocess.run(command, env=env, capture_output=True, timeout=30).stdout.decode()
    # the resume comes after the console attached: wait for a late one too
    subprocess.run(["sleep", str(CONSOLE_RESUME_DELAY + 1)], check=True)
    return out, calls.read_text().splitlines()


def test_the_libvirt_console_command_attaches_to_the_system_libvirtd(tmp_path: Any) -> None:
    out, calls = _run_console_command(tmp_path, "running (booted)")
    assert out == "console of web1\n"
    assert calls == [
        "-c qemu:///system domstate --reason web1",
        "-c qemu:///system console web1",
    ]


def test_the_console_resumes_a_guest_its_user_paused_and_no_other(tmp_path: Any) -> None:
    out, calls = _run_console_command(tmp_path, "paused (user)")  # instance startup --paused
    assert calls[:2] == [
        "-c qemu:///system domstate --reason web1",
        "-c qemu:///system console web1",
    ]
    # after the console attached, once the guest is seen still paused
    assert calls[2:] == [
        "-c qemu:///system domstate --reason web1",
        "-c qemu:///system resume web1",
    ]
    assert "Instance web1 is paused, resuming it\r\n" in out
    # paused by a migration (its source's last pass) or by qemu on an I/O error: left paused
    for state in ("paused (migration)", "paused (I/O error)"):
        (tmp_path / "calls").unlink()
        out, calls = _run_console_command(tmp_path, state)
        assert "resume" not in " ".join(calls) and "resuming" not in out


def test_no_console_for_an_instance_that_does_not_run_or_is_unknown(
    ctx: Context, inst1_running: FakeNodeOps, config: ConfigStore
) -> None:
    with pytest.raises(OpPrereqError) as err:
        _console(ctx, I2)
    assert err.value.ecode == ECODE_STATE
    assert f"Instance {I2} is not running (state ERROR_down)" in err.value.msg
    with config.update() as data:
        data.instances[I2].admin_state = "down"
    with pytest.raises(OpPrereqError, match=r"\(state ADMIN_down\)"):
        _console(ctx, I2)
    with pytest.raises(OpPrereqError) as err:
        _console(ctx, "ghost")
    assert err.value.ecode == ECODE_NOENT


def test_no_console_through_an_offline_or_silent_primary(
    ctx: Context, inst1_running: FakeNodeOps, config: ConfigStore
) -> None:
    inst1_running.set_unreachable(N1)
    with pytest.raises(OpPrereqError, match=f"Error checking node {N1}"):
        _console(ctx, I1)
    inst1_running.set_unreachable(N1, False)
    with config.update() as data:
        data.nodes[N1].offline = True
    with pytest.raises(OpPrereqError, match="Instance primary node offline"):
        _console(ctx, I1)


def test_a_domain_without_a_serial_terminal_gets_a_message(
    ctx: Context, inst1_running: FakeNodeOps
) -> None:
    """Started by an older ganeti_lv (its serial port writes a file) or with serial_console
    off: what the running domain has counts, not the configuration."""
    console = _console(ctx, I1)
    assert console["kind"] == "msg" and "has no serial terminal" in console["message"]
    assert "starting it again" in console["message"]


def test_a_started_domain_has_a_terminal_unless_serial_console_is_off(
    ctx: Context, fake_ops: FakeNodeOps, config: ConfigStore
) -> None:
    cluster, inst = config.get_cluster(), config.get_instance(I1)
    assert inst is not None
    node = config.get_node(N1)
    assert node is not None
    fake_ops.start_instance(node, cluster, inst)
    assert _console(ctx, I1)["kind"] == "ssh"
    fake_ops.remove_domain(N1, I1)
    inst.hvparams["serial_console"] = False
    fake_ops.start_instance(node, cluster, inst)
    assert _console(ctx, I1)["kind"] == "msg"


def test_show_cmd_prints_the_ssh_command_with_the_clusters_key_and_known_hosts(
    data_dir: str, with_tty: FakeNodeOps, capsys: Any
) -> None:
    code = main(["--data-dir", data_dir, "instance", "console", "--show-cmd", "inst1"],
                node_ops=with_tty)  # fmt: skip
    out, err = capsys.readouterr()
    assert (code, err) == (0, "")
    argv = shlex.split(out)
    assert argv[:2] == ["ssh", "-t"]
    assert f"-oUserKnownHostsFile={paths.known_hosts_file(data_dir)}" in argv
    assert "-oStrictHostKeyChecking=yes" in argv and "-oBatchMode=yes" in argv
    assert argv[argv.index("-i") + 1] == paths.ssh_key_file(data_dir)
    # the remote command as one word, which the node's shell splits
    assert argv[-6:] == ["-p", "22", "-l", "root", "10.250.0.1", f"fake-console {I1}"]


def test_console_of_a_stopped_instance_fails_with_its_state(
    data_dir: str, inst1_running: FakeNodeOps, capsys: Any
) -> None:
    code = main(["--data-dir", data_dir, "instance", "console", I2], node_ops=inst1_running)
    _, err = capsys.readouterr()
    assert code == 1
    assert "error type: wrong_state" in err and "is not running (state ERROR_down)" in err


def test_console_runs_ssh_on_this_terminal_and_reports_its_failure(
    data_dir: str, with_tty: FakeNodeOps, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran: list[list[str]] = []
    exits = [0, 255]

    def run(argv: list[str], check: bool) -> Any:
        ran.append(argv)
        return subprocess.CompletedProcess(argv, exits.pop(0))

    monkeypatch.setattr(instance_console.subprocess, "run", run)
    argv = ["--data-dir", data_dir, "instance", "console", I1]
    assert main(argv, node_ops=with_tty) == 0
    assert ran[0][:2] == ["ssh", "-t"] and ran[0][-1] == f"fake-console {I1}"
    assert main(argv, node_ops=with_tty) == 1
    _, err = capsys.readouterr()
    assert f"Connection to the console of instance {I1} failed, exit code 255" in err
