"""gnt-lv hands its command line to the master daemon (ganeti_lv.cli.entry / remote).

The daemon serves in a thread on the fake nodes; ``gnt-lv`` runs as a real
process (stdout a pipe), so the hand-over, the give-backs and the cancel go
through the real socket.
"""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
from typing import Any

import pytest

from ganeti_lv import paths
from ganeti_lv.cli import entry, remote
from ganeti_lv.config import ConfigStore
from ganeti_lv.hypervisor.fake import FakeNodeOps
from ganeti_lv.master.jobs import JobStore

INST = "inst1.example.com"
N1, N2 = "node1.example.com", "node2.example.com"
# what the hand-over must not import: the parser, JSON, regular expressions, the framework
NOT_IMPORTED = (
    "argparse",
    "json",
    "re",
    "typing",
    "ganeti_lv.cli.main",
    "ganeti_lv.config",
    "ganeti_lv.opcodes",
    "paramiko",
    "libvirt",
)
_GNT_LV = (
    "import atexit, sys\n"
    "def report():\n"
    "    mods = sorted(m for m in {mods!r} if m in sys.modules)\n"
    "    print('IMPORTED', mods, file=sys.stderr, flush=True)\n"
    "atexit.register(report)  # gnt-lv may leave with os._exit, after the atexit handlers\n"
    "from ganeti_lv.cli.entry import main\n"
    "sys.exit(main())\n"
)


def _gnt_lv(data_dir: str, *argv: str, **kwargs: Any) -> subprocess.Popen[str]:
    code = _GNT_LV.format(mods=NOT_IMPORTED)
    return subprocess.Popen(
        [sys.executable, "-c", code, "--data-dir", data_dir, *argv],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def _run(data_dir: str, *argv: str) -> tuple[int, str, str, list[str]]:
    """gnt-lv's exit code, stdout, stderr (without the import report) and heavy imports."""
    proc = _gnt_lv(data_dir, *argv)
    out, err = proc.communicate(timeout=60)
    lines = err.splitlines()
    imported = [line for line in lines if line.startswith("IMPORTED ")]
    assert imported, err
    rest = "".join(line + "\n" for line in lines if not line.startswith("IMPORTED "))
    return proc.returncode, out, rest, eval(imported[-1].split(" ", 1)[1])  # noqa: S307


def _close_stdin() -> None:
    os.close(0)


def _imported(err: str) -> list[str]:
    lines = [line for line in err.splitlines() if line.startswith("IMPORTED ")]
    assert lines, err
    return list(eval(lines[-1].split(" ", 1)[1]))  # noqa: S307


def _untimed(text: str) -> list[str]:
    """Feedback lines without their ctime() stamp (24 characters and a space)."""
    return [
        line[25:] if line[:3].isalpha() and line[24:25] == " " else line
        for line in text.splitlines()
    ]


def test_a_migration_is_handed_to_the_daemon_and_imports_nothing_heavy(
    server: Any, data_dir: str, config: ConfigStore, fake_ops: FakeNodeOps
) -> None:
    # stdin closed (no sys.stdin at all): still no terminal, still handed over
    proc = _gnt_lv(data_dir, "instance", "migrate", "-f", "-n", N2, INST, preexec_fn=_close_stdin)
    out, err = proc.communicate(timeout=60)
    code, heavy = proc.returncode, _imported(err)
    assert code == 0, err
    assert heavy == []  # the daemon parsed the line and ran the job
    assert "STEP 4/4 Finalising" in out
    assert fake_ops.calls_to("migrate_instance")
    assert config.get_instance(INST).primary_node == N2  # type: ignore[union-attr]
    assert JobStore(paths.jobs_dir(data_dir)).list()[-1].status == "success"


def test_errors_read_as_when_gnt_lv_runs_the_command_itself(
    server: Any, data_dir: str, tmp_path: Any
) -> None:
    argv = ("instance", "migrate", "-f", "-n", N2, "ghost")
    code, out, err, heavy = _run(data_dir, *argv)
    assert (code, heavy) == (1, [])
    assert "error type: unknown_entity" in err
    # the same command in gnt-lv's own process (through the daemon's JSON protocol)
    local = subprocess.run(
        [sys.executable, "-m", "ganeti_lv.cli.main", "--data-dir", data_dir, *argv],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (local.returncode, _untimed(local.stdout), local.stderr) == (1, _untimed(out), err)


@pytest.mark.parametrize(
    ("argv", "code", "expected"),
    [
        # a usage error: the whole parser's message, from gnt-lv
        (("instance", "migrate", "-f"), 2, "the following arguments are required: INSTANCE"),
        # help and a command the daemon does not run for gnt-lv
        (("instance", "migrate", "-h"), 0, "--migration-downtime"),
        (("instance", "list", "--no-headers"), 0, INST),
        # --debug stays with gnt-lv (tracebacks)
        (("--debug", "instance", "list", "--no-headers"), 0, INST),
    ],
)
def test_what_the_daemon_gives_back_runs_in_gnt_lv(
    server: Any, data_dir: str, argv: tuple[str, ...], code: int, expected: str
) -> None:
    got, out, err, heavy = _run(data_dir, *argv)
    assert got == code, err
    assert expected in out + err
    assert "argparse" in heavy  # parsed in gnt-lv's own process


def test_a_question_for_a_terminal_is_given_back(
    server: Any, data_dir: str, config: ConfigStore, fake_ops: FakeNodeOps
) -> None:
    """Without -f and with a terminal on stdin, gnt-lv asks: the daemon did nothing."""
    jobs = len(JobStore(paths.jobs_dir(data_dir)).list())
    request = entry.encode_request(data_dir, True, ["instance", "migrate", "-n", N2, INST])
    assert _serve(server.daemon, request) == [(entry.TAG_LOCAL, b"")]
    assert not fake_ops.calls_to("migrate_instance")
    assert len(JobStore(paths.jobs_dir(data_dir)).list()) == jobs
    # no terminal: refused, as gnt-lv refuses without one
    request = entry.encode_request(data_dir, False, ["instance", "migrate", "-n", N2, INST])
    frames = _serve(server.daemon, request)
    assert frames[-1] == (entry.TAG_EXIT, b"1")
    stderr = b"".join(p for t, p in frames if t == entry.TAG_STDERR).decode()
    assert "not confirmed (no terminal); use -f/--force" in stderr
    assert not fake_ops.calls_to("migrate_instance")


def test_another_data_dir_or_protocol_is_given_back(server: Any, data_dir: str) -> None:
    argv = ["instance", "startup", INST]
    other = entry.encode_request(data_dir + "-other", False, argv)
    assert _serve(server.daemon, other) == [(entry.TAG_LOCAL, b"")]
    payload = b"\0".join([b"9", data_dir.encode(), b"0", *(a.encode() for a in argv)])
    newer = entry.REQUEST_START + entry.frame(entry.TAG_ARGV, payload) + b"\n"
    assert _serve(server.daemon, newer) == [(entry.TAG_LOCAL, b"")]
    assert _serve(server.daemon, b"\0A\0\0\0\x05ab") == [(entry.TAG_LOCAL, b"")]  # cut short


def _serve(daemon: Any, request: bytes) -> list[tuple[bytes, bytes]]:
    """The frames the daemon answers ``request`` with."""
    out = io.BytesIO()
    remote.serve(daemon, io.BufferedReader(io.BytesIO(request)), out)  # type: ignore[arg-type]
    sock_a, sock_b = socket.socketpair()
    with sock_a, sock_b:
        sock_a.sendall(out.getvalue())
        sock_a.shutdown(socket.SHUT_WR)
        reader = entry._Follower(sock_b, entry._Signals())
        frames = []
        while (got := reader.next_frame()) is not None:
            frames.append(got)
    return frames


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_or_sigterm_cancels_the_handed_over_migration(
    server: Any, data_dir: str, config: ConfigStore, slow_migration: FakeNodeOps, sig: int
) -> None:
    proc = _gnt_lv(data_dir, "instance", "migrate", "-f", "-n", N2, INST)
    assert proc.stdout is not None
    for line in proc.stdout:  # wait until the migration runs
        if "migration " in line:
            break
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, out + err
    assert entry.ABORT_REQUESTED in err
    assert "interrupted by the user" in err
    assert config.get_instance(INST).primary_node == N1  # type: ignore[union-attr]
    assert JobStore(paths.jobs_dir(data_dir)).list()[-1].status == "canceled"


def test_no_daemon_runs_the_command_here(data_dir: str, inst1_running: FakeNodeOps) -> None:
    assert not os.path.exists(paths.masterd_socket(data_dir))
    code, out, err, heavy = _run(data_dir, "job", "list")
    assert code == 0, err
    assert "argparse" in heavy


def _follow(
    data: bytes, signals: int = 0, stdout: Any = None, capsys: Any = None
) -> tuple[int | None, bytes]:
    """gnt-lv following ``data`` from a daemon; its outcome and what it sent back."""
    sock_a, sock_b = socket.socketpair()
    with sock_a, sock_b:
        sock_a.sendall(data)
        sock_a.shutdown(socket.SHUT_WR)
        pending = entry._Signals()
        pending.count = signals
        follower = entry._Follower(sock_b, pending)
        old = sys.stdout
        if stdout is not None:
            sys.stdout = stdout
        try:
            outcome = follower.follow()
        except entry._Leave as leave:
            outcome = leave.code
        finally:
            sys.stdout = old
        sock_b.shutdown(socket.SHUT_WR)
        return outcome, sock_a.recv(100)


def test_follow_ends_cleanly_and_never_runs_a_started_command_again(capsys: Any) -> None:
    """Only a daemon that did nothing (no frame, "l", an older one's JSON) leaves it to gnt-lv."""
    out, exit3 = entry.frame(entry.TAG_STDOUT, b"line\n"), entry.frame(entry.TAG_EXIT, b"3")
    assert _follow(b"")[0] is None
    assert _follow(b'{"error": {}}\n')[0] is None
    assert _follow(entry.frame(entry.TAG_LOCAL, b""))[0] is None
    assert _follow(out + exit3)[0] == 3
    assert capsys.readouterr().out == "line\n"
    # the daemon went away in the middle of a command: an error, never a second run
    assert _follow(out)[0] == 1
    assert "closed the connection before the command ended" in capsys.readouterr().err
    # our own stdout broken (gnt-lv ... | head -1): an error, never a second run
    broken = io.TextIOWrapper(io.BufferedWriter(io.BytesIO()))
    broken.close()
    assert _follow(out + exit3, stdout=broken)[0] == 1


def test_follow_an_interruption_asks_the_job_to_stop_a_second_leaves(capsys: Any) -> None:
    answer = entry.frame(entry.TAG_STDERR, b"stopped\n") + entry.frame(entry.TAG_EXIT, b"1")
    assert _follow(answer, signals=1) == (1, entry.CANCEL)
    assert entry.ABORT_REQUESTED in capsys.readouterr().err
    code, sent = _follow(answer, signals=2)
    assert (code, sent) == (1, entry.CANCEL)
    assert capsys.readouterr().err.endswith("Aborted.\n")
    # interrupted, then given back: nothing is run here
    assert _follow(entry.frame(entry.TAG_LOCAL, b""), signals=1)[0] == 1


@pytest.mark.parametrize(
    ("argv", "wanted"),
    [
        (["instance", "list"], "DEFAULT"),
        (["--data-dir", "/d", "instance", "list"], "/d"),
        (["--data-dir=/d", "--lock-timeout", "3", "instance", "list"], "/d"),
        (["--debug", "instance", "list"], None),
        (["--data", "/d", "instance", "list"], None),  # an abbreviation: the parser's call
        (["--version"], None),
        (["--data-dir", "/d"], None),
        ([], None),
    ],
)
def test_data_dir_of_the_command_line(
    argv: list[str], wanted: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GANETI_LV_DATA_DIR", "/env/dir")
    expected = "/env/dir" if wanted == "DEFAULT" else wanted
    assert entry.data_dir_of(argv) == expected
