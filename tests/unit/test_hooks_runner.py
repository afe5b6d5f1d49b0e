"""ganeti_lv.node.hooks_runner and the example hooks, against a real sshd on loopback.

The sshd runs on this machine, so the "node's" hooks directory is a local
temporary directory the tests fill directly.
"""

from __future__ import annotations

import base64
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support.waiting import wait_dead, wait_until

from ganeti_lv import constants
from ganeti_lv.errors import HooksFailure, NodeError
from ganeti_lv.node import hooks_runner
from ganeti_lv.node.hooks_runner import (
    MAX_OUTPUT,
    build_runner_script,
    parse_runner_output,
    run_hooks_via_ssh,
    run_limit,
)
from ganeti_lv.node.ssh import SshClient

REPO_HOOKS = Path(__file__).resolve().parents[2] / "hooks"
BASE_ENV = {"PATH": constants.HOOKS_PATH, "GANETI_HOOKS_VERSION": "2"}


def _script(directory: Path, name: str, body: str, mode: int = 0o755) -> Path:
    path = directory / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(mode)
    return path


@pytest.fixture
def client(local_sshd: Any) -> Any:
    ssh = local_sshd.client()
    yield ssh
    ssh.close()


@pytest.fixture
def hooks_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "instance-migrate-pre.d"
    directory.mkdir()
    return directory


def _by_name(results: list[Any]) -> dict[str, tuple[str, str]]:
    return {r.script.split("/", 1)[1]: (r.status, r.output) for r in results}


def test_name_rules_and_sorted_order(client: SshClient, hooks_dir: Path, tmp_path: Path) -> None:
    record = tmp_path / "order"
    for name in ("b-2", "a_1", "10-x", "Z9"):
        _script(hooks_dir, name, f"echo {name} >> {record}\n")
    _script(hooks_dir, "x.sh", f"echo x.sh >> {record}\n")
    _script(hooks_dir, "30-noexec", f"echo noexec >> {record}\n", mode=0o644)
    _script(hooks_dir, ".hidden", f"echo hidden >> {record}\n")
    (hooks_dir / "20-dir").mkdir()

    results = run_hooks_via_ssh(client, str(hooks_dir), BASE_ENV, timeout=10)

    assert [(r.script, r.status) for r in results] == [
        ("instance-migrate-pre.d/10-x", "SUCCESS"),
        ("instance-migrate-pre.d/20-dir", "SKIP"),
        ("instance-migrate-pre.d/30-noexec", "SKIP"),
        ("instance-migrate-pre.d/Z9", "SUCCESS"),
        ("instance-migrate-pre.d/a_1", "SUCCESS"),
        ("instance-migrate-pre.d/b-2", "SUCCESS"),
        ("instance-migrate-pre.d/x.sh", "SKIP"),
    ]
    assert record.read_text().split() == ["10-x", "Z9", "a_1", "b-2"]


@dataclass
class Run:
    """One command the client ran on the node: the command, its keyword arguments and
    the length of its answer (None when it raised)."""

    cmd: Any
    kwargs: dict[str, Any]
    answer: int | None = None


def _text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:  # removed meanwhile
        return ""


def _recorded_runs(client: SshClient, monkeypatch: pytest.MonkeyPatch) -> list[Run]:
    """Every command the client runs on the node, recorded (and run)."""
    runs: list[Run] = []
    real_run = client.run

    def run(cmd: Any, **kwargs: Any) -> Any:
        runs.append(Run(cmd, kwargs))
        result = real_run(cmd, **kwargs)
        runs[-1].answer = len(result.stdout)
        return result

    monkeypatch.setattr(client, "run", run)
    return runs


def test_missing_dir_means_no_hooks(client: SshClient, tmp_path: Path) -> None:
    assert run_hooks_via_ssh(client, str(tmp_path / "absent.d"), BASE_ENV, timeout=5) == []


def test_nothing_to_run_starts_no_process_on_the_node(
    client: SshClient, hooks_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Missing, empty, dotfiles only, or a file: listed over SFTP, no runner started."""
    runs = _recorded_runs(client, monkeypatch)
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    assert run_hooks_via_ssh(client, str(tmp_path / "absent.d"), BASE_ENV, timeout=5) == []
    assert run_hooks_via_ssh(client, str(hooks_dir), BASE_ENV, timeout=5) == []
    assert run_hooks_via_ssh(client, str(a_file), BASE_ENV, timeout=5) == []
    _script(hooks_dir, ".hidden", "exit 1\n")
    assert run_hooks_via_ssh(client, str(hooks_dir), BASE_ENV, timeout=5) == []
    assert runs == []
    # one visible entry: the runner runs and reports it
    _script(hooks_dir, "10-ok", "exit 0\n")
    results = run_hooks_via_ssh(client, str(hooks_dir), BASE_ENV, timeout=5)
    assert _by_name(results) == {"10-ok": ("SUCCESS", "")}
    assert len(runs) == 1


def test_empty_dir_and_a_dir_of_one_dangling_link(client: SshClient, hooks_dir: Path) -> None:
    """An empty directory gives no hooks; a lone dangling symlink is still reported."""
    assert run_hooks_via_ssh(client, str(hooks_dir), BASE_ENV, timeout=5) == []
    (hooks_dir / "10-gone").symlink_to(hooks_dir / "nowhere")
    results = run_hooks_via_ssh(client, str(hooks_dir), BASE_ENV, timeout=5)
    assert _by_name(results) == {"10-gone": ("SKIP", "")}


def test_success_and_failure_with_combined_output(client: SshClient, hooks_dir: Path) -> None:
    _script(hooks_dir, "10-good", "echo to-stdout; echo to-stderr >&2\n")
    _script(hooks_dir, "20-bad", "echo refusing >&2; exit 3\n")
    results = _by_name(run_hooks_via_ssh(client, str(hooks_dir), BASE_ENV, timeout=10))
    assert results["10-good"] == ("SUCCESS", "to-stdout\nto-stderr\n")
    assert results["20-bad"] == ("FAIL", "refusing\n")


def test_env_is_exactly_the_given_one(client: SshClient, hooks_dir: Path, tmp_path: Path) -> None:
    dump = tmp_path / "environ"
    _script(hooks_dir, "10-env", f"cat /proc/$$/environ > {dump}\nenv\n")
    env = dict(BASE_ENV)
    env["GANETI_INSTANCE_NAME"] = "inst1.example.com"
    env["GANETI_TRICKY"] = "two\nlines 'single' \"double\" $HOME `id` \\ ; | &"
    env["GANETI_EMPTY"] = ""

    results = _by_name(run_hooks_via_ssh(client, str(hooks_dir), env, timeout=10))

    assert results["10-env"][0] == "SUCCESS"
    entries = [e for e in dump.read_bytes().split(b"\0") if e]
    got = dict(e.decode().split("=", 1) for e in entries)
    assert got == env
    shown = results["10-env"][1]
    for leak in ("HOME=", "USER=", "SSH_CONNECTION=", "SSH_CLIENT=", "LOGNAME=", "MAIL="):
        assert f"\n{leak}" not in "\n" + shown


def test_stdin_is_dev_null_and_cwd_is_root(client: SshClient, hooks_dir: Path) -> None:
    _script(hooks_dir, "10-stdin", 'readlink /proc/$$/fd/0; cat; pwd; echo "args=$#"\n')
    results = _by_name(run_hooks_via_ssh(client, str(hooks_dir), BASE_ENV, timeout=10))
    assert results["10-stdin"] == ("SUCCESS", "/dev/null\n/\nargs=0\n")


def test_timeout_kills_process_group(client: SshClient, hooks_dir: Path, tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    _script(
        hooks_dir,
        "10-hang",
        f"echo started\nsleep 300 &\necho $! >> {pids}\necho $$ >> {pids}\nsleep 300\n",
    )
    _script(
        hooks_dir,
        "20-stubborn",
        f"trap '' TERM\n(trap '' TERM; sleep 300) &\necho $! >> {pids}\nsleep 300\n",
    )
    # the script dies of TERM at once; only its child ignores TERM
    _script(
        hooks_dir,
        "25-orphan",
        f"(trap '' TERM; sleep 300) &\necho $! >> {pids}\nsleep 300\n",
    )
    _script(hooks_dir, "30-after", "echo still runs\n")
    started = time.monotonic()

    results = _by_name(run_hooks_via_ssh(client, str(hooks_dir), BASE_ENV, timeout=1))

    # three timeouts of 1 s, the stubborn one needs the KILL grace as well
    assert time.monotonic() - started < 20
    status, output = results["10-hang"]
    assert status == "FAIL"
    assert output.startswith("started\n")
    assert "timed out after 1 seconds" in output
    assert results["20-stubborn"][0] == "FAIL"
    assert results["25-orphan"][0] == "FAIL"
    assert results["30-after"] == ("SUCCESS", "still runs\n")
    recorded = [int(p) for p in pids.read_text().split()]
    assert len(recorded) == 4
    for pid in recorded:
        assert wait_dead(pid), f"process {pid} of a timed-out hook survived"


def test_arbitrary_output_cannot_break_framing(client: SshClient, hooks_dir: Path) -> None:
    _script(hooks_dir, "10-noise", "printf 'HOOK a b c\\nEND\\n\\001\\377 tail'\n")
    results = _by_name(run_hooks_via_ssh(client, str(hooks_dir), BASE_ENV, timeout=10))
    status, output = results["10-noise"]
    assert status == "SUCCESS"
    assert output.startswith("HOOK a b c\nEND\n\x01")
    assert output.endswith(" tail")


def test_invalid_env_rejected_before_contacting_node() -> None:
    with pytest.raises(HooksFailure):
        build_runner_script("/x", {"BAD-NAME": "1"}, 5)
    with pytest.raises(HooksFailure):
        build_runner_script("/x", {"OK": "nul\0byte"}, 5)
    with pytest.raises(HooksFailure):
        build_runner_script("/x", {"OK": "1"}, 0)


def test_parse_runner_output_detects_garbage_and_truncation() -> None:
    name = base64.b64encode(b"10-a").decode()
    out = base64.b64encode(b"hi\n").decode()
    ok = f"HOOK {name} SUCCESS 3 {out}\nHOOK {name} SKIP 0 \nEND\n"
    parsed = parse_runner_output(ok, "d.d")
    assert [(r.script, r.status, r.output) for r in parsed] == [
        ("d.d/10-a", "SUCCESS", "hi\n"),
        ("d.d/10-a", "SKIP", ""),
    ]
    with pytest.raises(NodeError, match="cut short"):
        parse_runner_output(f"HOOK {name} SUCCESS 3 {out}\n", "d.d")
    with pytest.raises(NodeError):
        parse_runner_output("motd line\nEND\n", "d.d")
    with pytest.raises(NodeError):
        parse_runner_output(f"HOOK {name} MAYBE 3 {out}\nEND\n", "d.d")
    with pytest.raises(NodeError):
        parse_runner_output(f"HOOK {name} SUCCESS {out}\nEND\n", "d.d")  # no size


def test_a_chatty_scripts_output_is_cut_on_the_node(
    client: SshClient, hooks_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only the tail crosses the network: the master never holds the whole output."""
    runs = _recorded_runs(client, monkeypatch)
    # 2 MiB of "x", then a last line
    _script(hooks_dir, "10-chatty", "head -c 2097152 /dev/zero | tr '\\0' x; echo; echo last\n")
    results = _by_name(run_hooks_via_ssh(client, str(hooks_dir), BASE_ENV, timeout=30))
    status, output = results["10-chatty"]
    assert status == "SUCCESS"
    total = 2097152 + len("\nlast\n")
    assert output == f"[... {total - MAX_OUTPUT} bytes cut ...]\n" + (
        "x" * (MAX_OUTPUT - 6) + "\nlast\n"
    )
    # base64 of the tail crossed the network, not of 2 MiB
    assert runs and all(r.answer is not None and r.answer < 2 * MAX_OUTPUT for r in runs)


def test_the_whole_run_has_a_limit(
    client: SshClient, hooks_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run past its limit (a script that outlived its own kill) fails the node's run."""
    runs = _recorded_runs(client, monkeypatch)
    _script(hooks_dir, "10-a", "exit 0\n")
    _script(hooks_dir, "20-b", "exit 0\n")
    _script(hooks_dir, ".hidden", "exit 0\n")
    run_hooks_via_ssh(client, str(hooks_dir), BASE_ENV, timeout=7)
    assert [r.kwargs.get("timeout") for r in runs] == [run_limit(2, 7)]
    marker = f"marker-{uuid.uuid4().hex}"
    _script(hooks_dir, "30-slow", f"echo {marker}; sleep 8\n")
    monkeypatch.setattr(hooks_runner, "run_limit", lambda entries, timeout: 1.0)
    started = time.monotonic()
    with pytest.raises(NodeError, match="timed out"):
        run_hooks_via_ssh(client, str(hooks_dir), BASE_ENV, timeout=30)
    assert time.monotonic() - started < 7
    # the runner, stopped, removed its files (the script's output among them)

    def left() -> list[Path]:
        return [p for p in Path(tempfile.gettempdir()).glob("tmp.*/out") if marker in _text(p)]

    assert wait_until(lambda: not left(), 5), left()


# -- the example hooks in hooks/ -------------------------------------------------------


def _install(tmp_path: Path, subdir: str) -> Path:
    target = tmp_path / "hooks" / subdir
    shutil.copytree(REPO_HOOKS / subdir, target)
    return target


@pytest.mark.parametrize(
    ("subdir", "opcode"),
    [
        ("instance-migrate-pre.d", "OP_INSTANCE_MIGRATE"),
        ("instance-export-pre.d", "OP_BACKUP_EXPORT"),
    ],
)
def test_example_maintenance_flag(
    client: SshClient, tmp_path: Path, subdir: str, opcode: str
) -> None:
    directory = _install(tmp_path, subdir)
    flag = tmp_path / "maintenance"
    env = dict(BASE_ENV)
    env.update(
        GANETI_OP_CODE=opcode,
        GANETI_HOOKS_PHASE="pre",
        GANETI_INSTANCE_NAME="inst1.example.com",
        GANETI_LV_MAINTENANCE_FLAG=str(flag),
    )
    flag.write_text("RAM replacement, ticket 1234\n")
    (result,) = run_hooks_via_ssh(client, str(directory), env, timeout=10)
    assert result.script == f"{subdir}/10-maintenance-flag"
    assert result.status == "FAIL"
    assert "in maintenance" in result.output
    assert "RAM replacement, ticket 1234" in result.output
    assert f"refusing {opcode} of instance inst1.example.com" in result.output

    flag.unlink()
    (result,) = run_hooks_via_ssh(client, str(directory), env, timeout=10)
    assert result.status == "SUCCESS"


def test_example_audit_migrate(client: SshClient, tmp_path: Path) -> None:
    directory = _install(tmp_path, "instance-migrate-post.d")
    log = tmp_path / "log" / "audit.log"
    env = dict(BASE_ENV)
    env.update(
        GANETI_OP_CODE="OP_INSTANCE_MIGRATE",
        GANETI_HOOKS_PHASE="post",
        GANETI_INSTANCE_NAME="inst1.example.com",
        GANETI_OLD_PRIMARY="node1",
        GANETI_NEW_PRIMARY="node2",
        GANETI_POST_OLD_PRIMARY="node1.example.com",
        GANETI_POST_NEW_PRIMARY="node2.example.com",
        GANETI_LV_AUDIT_LOG=str(log),
    )
    for _ in range(2):
        (result,) = run_hooks_via_ssh(client, str(directory), env, timeout=10)
        assert result.status == "SUCCESS", result.output
    lines = log.read_text().splitlines()
    assert len(lines) == 2
    fields = lines[0].split(" ")
    assert fields[0].endswith("Z") and "T" in fields[0]
    assert fields[2:] == [
        "op=OP_INSTANCE_MIGRATE",
        "phase=post",
        "instance=inst1.example.com",
        "old_primary=node1.example.com",
        "new_primary=node2.example.com",
    ]


def test_example_audit_export(client: SshClient, tmp_path: Path) -> None:
    directory = _install(tmp_path, "instance-export-post.d")
    log = tmp_path / "audit.log"
    env = dict(BASE_ENV)
    env.update(
        GANETI_OP_CODE="OP_BACKUP_EXPORT",
        GANETI_HOOKS_PHASE="post",
        GANETI_INSTANCE_NAME="inst 1\nodd",
        GANETI_INSTANCE_PRIMARY="node1",
        GANETI_EXPORT_NODE="node3",
        GANETI_EXPORT_MODE="local",
        GANETI_LV_AUDIT_LOG=str(log),
    )
    (result,) = run_hooks_via_ssh(client, str(directory), env, timeout=10)
    assert result.status == "SUCCESS", result.output
    (line,) = log.read_text().splitlines()
    assert line.split(" ")[2:] == [
        "op=OP_BACKUP_EXPORT",
        "phase=post",
        "instance=inst_1_odd",
        "primary=node1",
        "export_node=node3",
        "mode=local",
    ]


def test_example_hooks_are_posix_sh_and_executable() -> None:
    scripts = sorted(p for p in REPO_HOOKS.glob("*.d/*"))
    assert len(scripts) == 4
    for path in scripts:
        assert path.read_text().startswith("#!/bin/sh\n")
        assert path.stat().st_mode & 0o111
        assert constants.HOOKS_NAME_RE.match(path.name)


def test_hooks_dir_with_shell_characters(client: SshClient, tmp_path: Path) -> None:
    directory = tmp_path / "odd $(dir) 'q'" / "instance-export-post.d"
    directory.mkdir(parents=True)
    _script(directory, "10-ok", "echo fine\n")
    (result,) = run_hooks_via_ssh(client, str(directory) + "/", BASE_ENV, timeout=10)
    assert (result.script, result.status, result.output) == (
        "instance-export-post.d/10-ok",
        "SUCCESS",
        "fine\n",
    )
