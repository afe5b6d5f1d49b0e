"""ganeti_lv.node.ssh and ganeti_lv.retry against a real sshd on loopback."""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import paramiko
import pytest
import tenacity
from support.manyfiles import holding_many_files
from support.queued import queued_failures
from support.relay import VanishingRelay
from support.sshd import LocalSshd
from support.waiting import descendants, wait_dead

from ganeti_lv import retry
from ganeti_lv.errors import (
    ECODE_NOENT,
    HostKeyError,
    NodeError,
    NodeUnreachable,
    RemoteCommandError,
)
from ganeti_lv.node import ssh as ssh_module
from ganeti_lv.node import ssh_channel
from ganeti_lv.node.known_hosts import (
    key_fingerprint,
    known_hosts_add,
    known_hosts_name,
    known_hosts_remove,
)
from ganeti_lv.node.ssh import (
    CommandTimeout,
    SshClient,
    fetch_host_key,
    quote_command,
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def client(local_sshd: Any) -> Any:
    ssh = local_sshd.client()
    yield ssh
    ssh.close()


# -- commands ------------------------------------------------------------------


def test_run_argv_is_quoted(client: SshClient) -> None:
    result = client.run(["printf", "%s|", "a b", "$HOME", "it's", "x;y", ""])
    assert result.stdout == "a b|$HOME|it's|x;y||"
    assert result.exit_status == 0


def test_run_string_uses_shell_and_reports_status(client: SshClient) -> None:
    result = client.run("echo out; echo err >&2; exit 3", check=False)
    assert result.exit_status == 3
    assert result.failed
    assert result.stdout == "out\n"
    assert result.stderr == "err\n"


def test_run_nonzero_raises_remote_command_error(client: SshClient) -> None:
    with pytest.raises(RemoteCommandError) as info:
        client.run(["sh", "-c", "echo broken disk >&2; exit 5"])
    assert info.value.exit_status == 5
    assert "broken disk" in str(info.value)
    assert "exit status 5" in str(info.value)
    assert info.value.node == "127.0.0.1"


def test_run_big_input_and_output_do_not_deadlock(client: SshClient) -> None:
    data = os.urandom(3 * 1024 * 1024)
    result = client.run("sha256sum; head -c 3000000 /dev/zero | tr '\\0' x", input=data)
    assert result.stdout.split()[0] == hashlib.sha256(data).hexdigest()
    assert result.stdout.count("x") == 3000000


def test_run_without_input_sees_eof(client: SshClient) -> None:
    result = client.run("cat; echo done", timeout=10)
    assert result.stdout == "done\n"


def test_run_timeout_kills_remote_command(client: SshClient, tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    started = time.monotonic()
    with pytest.raises(CommandTimeout) as info:
        client.run(f"echo $$ > {pidfile}; sleep 60 & echo $! >> {pidfile}; wait", timeout=1)
    assert time.monotonic() - started < 8
    assert "timed out after 1 seconds" in str(info.value)
    assert isinstance(info.value, NodeError)
    pids = [int(p) for p in pidfile.read_text().split()]
    assert len(pids) == 2
    for pid in pids:
        assert wait_dead(pid), f"process {pid} survived the timeout"


def test_run_timeout_counts_from_the_commands_start_not_the_wait_for_a_channel(
    client: SshClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A call that first waits for its channel (another job setting up SFTP on this
    client, say) still gives its command the whole timeout."""
    from ganeti_lv.node import ssh as ssh_mod

    monkeypatch.setattr(ssh_mod, "TIMEOUT_KILL_GRACE", 0.2)
    monkeypatch.setattr(ssh_mod, "TIMEOUT_LOCAL_GRACE", 0.2)
    open_channel = client._open_channel

    def slow_open(command: str) -> Any:
        time.sleep(2.0)
        return open_channel(command)

    monkeypatch.setattr(client, "_open_channel", slow_open)
    assert client.run("echo done", timeout=1.5).stdout == "done\n"


def test_run_exit_124_without_timeout_is_not_a_timeout(client: SshClient) -> None:
    result = client.run("exit 124", timeout=30, check=False)
    assert result.exit_status == 124


def test_concurrent_runs_share_one_connection(client: SshClient) -> None:
    results: dict[int, str] = {}

    def work(idx: int) -> None:
        results[idx] = client.run(["echo", str(idx)]).stdout.strip()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert results == {i: str(i) for i in range(6)}


def _late_ends_of_input(monkeypatch: Any) -> None:
    """Every end of input (EOF) a caller's thread sends reaches the wire 0.3 s late.

    As when that thread loses the processor between paramiko making the
    message and sending it: the node's close of a command that ended at
    once is answered (by paramiko's own thread) before it (paramiko 1115).
    """
    send = paramiko.Transport._send_user_message
    eof = bytes([paramiko.common.MSG_CHANNEL_EOF])

    def late(transport: paramiko.Transport, data: Any) -> None:
        if data.asbytes()[:1] == eof and threading.current_thread() is not transport:
            time.sleep(0.3)
        send(transport, data)

    monkeypatch.setattr(paramiko.Transport, "_send_user_message", late)


def test_commands_that_end_at_once_leave_their_connection_up(
    client: SshClient, monkeypatch: Any
) -> None:
    """sshd ends a connection that sends anything for a channel it has closed."""
    client.run("true")
    transport = client._transport()[0]
    _late_ends_of_input(monkeypatch)
    assert client.run("true").exit_status == 0
    assert client.run(["true"], timeout=10).exit_status == 0
    # a command that reads none of its input, and one that reads some of it
    assert client.run("exit 3", input=b"x" * 300_000, check=False).exit_status == 3
    assert client.run("head -c 1", input=b"xyz").stdout == "x"
    assert client.run("LC_ALL=C exec sh -s", input=b"echo one; exit 0\necho two\n").stdout == (
        "one\n"
    )
    assert transport.is_active() and client._transport()[0] is transport


def test_reconnects_after_close(client: SshClient) -> None:
    assert client.run("echo one").stdout == "one\n"
    client.close()
    assert client.run("echo two").stdout == "two\n"


def test_quote_command() -> None:
    assert quote_command("ls -l") == "ls -l"
    assert quote_command(["rm", "-f", "a b"]) == "rm -f 'a b'"
    with pytest.raises(ValueError):
        quote_command([])


# -- host keys -----------------------------------------------------------------


def test_unknown_host_key_is_rejected(local_sshd: Any, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    sleeps: list[float] = []
    ssh = local_sshd.client(known_hosts_file=str(empty), sleep=sleeps.append)
    with pytest.raises(HostKeyError) as info:
        ssh.run("true")
    message = str(info.value)
    assert f"127.0.0.1:{local_sshd.port}" in message
    assert key_fingerprint(local_sshd.host_key_line) in message
    assert "not in the cluster's known_hosts" in message
    assert sleeps == []  # never retried


def test_missing_known_hosts_file_rejects(local_sshd: Any, tmp_path: Path) -> None:
    ssh = local_sshd.client(known_hosts_file=str(tmp_path / "absent"))
    with pytest.raises(HostKeyError):
        ssh.connect()


def test_changed_host_key_is_rejected(local_sshd: Any, tmp_path: Path) -> None:
    other = tmp_path / "otherkey"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)],
        check=True,
    )
    other_line = " ".join(Path(f"{other}.pub").read_text().split()[:2])
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{local_sshd.port} {other_line}\n")
    ssh = local_sshd.client(known_hosts_file=str(known))
    with pytest.raises(HostKeyError) as info:
        ssh.connect()
    assert "CHANGED" in str(info.value)
    assert key_fingerprint(other_line) in str(info.value)
    assert key_fingerprint(local_sshd.host_key_line) in str(info.value)


def test_fetch_host_key_then_known_hosts_add_allows_connect(
    local_sshd: Any, tmp_path: Path
) -> None:
    known = tmp_path / "ssh" / "known_hosts"
    key_line = fetch_host_key("127.0.0.1", local_sshd.port, timeout=5)
    assert key_line == local_sshd.host_key_line
    known_hosts_add(str(known), "127.0.0.1", local_sshd.port, key_line)
    known_hosts_add(str(known), "127.0.0.1", local_sshd.port, key_line)
    lines = known.read_text().splitlines()
    assert lines == [f"[127.0.0.1]:{local_sshd.port} {key_line}"]
    assert known.stat().st_mode & 0o777 == 0o600
    with local_sshd.client(known_hosts_file=str(known)) as ssh:
        assert ssh.run("echo ok").stdout == "ok\n"


def test_known_hosts_add_replaces_the_hosts_keys_of_any_type_and_remove(tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_text("other ssh-rsa AAAA\n")
    known_hosts_add(str(known), "node1", 22, "ecdsa-sha2-nistp256 QUFBQQ==")
    known_hosts_add(str(known), "node1", 22, "ssh-ed25519 QkJCQg==")  # reinstalled
    known_hosts_add(str(known), "node1", 2222, "ssh-ed25519 Q0NDQw==")
    assert known.read_text().splitlines() == [
        "other ssh-rsa AAAA",
        "node1 ssh-ed25519 QkJCQg==",
        "[node1]:2222 ssh-ed25519 Q0NDQw==",
    ]
    assert known_hosts_remove(str(known), "node1") == 1
    assert known.read_text().splitlines() == [
        "other ssh-rsa AAAA",
        "[node1]:2222 ssh-ed25519 Q0NDQw==",
    ]
    with pytest.raises(ValueError):
        known_hosts_add(str(known), "node1", 22, "garbage")


def test_key_fingerprint_matches_ssh_keygen(local_sshd: Any) -> None:
    out = subprocess.run(
        ["ssh-keygen", "-l", "-E", "sha256", "-f", local_sshd.host_key + ".pub"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert key_fingerprint(local_sshd.host_key_line) == out.split()[1]
    assert known_hosts_name("h", 22) == "h"
    assert known_hosts_name("h", 2022) == "[h]:2022"


# -- connect failures and retries ------------------------------------------------


def test_unreachable_port_raises_after_retries(local_sshd: Any) -> None:
    sleeps: list[float] = []
    ssh = local_sshd.client(port=_free_port(), sleep=sleeps.append)
    with pytest.raises(NodeUnreachable) as info:
        ssh.run("true")
    assert "127.0.0.1" in str(info.value)
    assert isinstance(info.value.__cause__, OSError)
    assert len(sleeps) == retry.SSH_CONNECT_ATTEMPTS - 1


def _silent_port(stack: contextlib.ExitStack) -> int:
    """A loopback port that never answers a new connection, like a node cut off.

    Its accept queue is full (backlog 0, connections never accepted), so the
    kernel drops every further SYN and a connect waits until it times out.
    """
    server = stack.enter_context(socket.socket())
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = int(server.getsockname()[1])
    for _ in range(3):
        filler = stack.enter_context(socket.socket())
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(("127.0.0.1", port))
    time.sleep(0.2)
    return port


def test_a_connect_without_answer_is_not_tried_again(local_sshd: Any) -> None:
    with contextlib.ExitStack() as stack:
        port = _silent_port(stack)
        sleeps: list[float] = []
        ssh = local_sshd.client(port=port, connect_timeout=1.0, sleep=sleeps.append)
        start = time.monotonic()
        with pytest.raises(NodeUnreachable, match="timed out") as info:
            ssh.run("true")
        # one attempt of 1 s: a node that does not answer is down, not restarting
        assert time.monotonic() - start < 4
        assert sleeps == []
        assert retry.is_transient(info.value) is False


def test_an_sftp_session_that_does_not_open_is_given_up(tmp_path: Path) -> None:
    """The node's sshd stops answering on a connection that is open (it is frozen)."""
    with LocalSshd(str(tmp_path / "sshd")) as sshd:
        client = sshd.client(connect_timeout=1.0)
        client.run("true")
        assert sshd.proc is not None
        frozen = descendants(sshd.proc.pid)  # the processes serving this connection
        assert frozen
        for pid in frozen:
            os.kill(pid, signal.SIGSTOP)
        try:
            start = time.monotonic()
            with pytest.raises(NodeError, match="sftp open"):
                client.listdir(str(tmp_path))
            assert time.monotonic() - start < 5
        finally:
            for pid in frozen:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
            client.close()


@contextlib.contextmanager
def _behind_relay(sshd: Any, tmp_path: Path, **overrides: Any) -> Any:
    """A client of ``sshd`` whose connections go through a VanishingRelay."""
    with VanishingRelay(sshd.port) as relay:
        known = tmp_path / "known_hosts_relay"
        known.write_text(f"[{sshd.host}]:{relay.port} {sshd.host_key_line}\n")
        client = sshd.client(port=relay.port, known_hosts_file=str(known), **overrides)
        try:
            yield relay, client
        finally:
            client.close()


def test_a_command_after_the_node_forgot_the_kept_connection_runs(
    local_sshd: Any, tmp_path: Path
) -> None:
    """The node rebooted while the connection sat idle: the next command still runs."""
    with _behind_relay(local_sshd, tmp_path) as (relay, client):
        assert client.run("echo one").stdout == "one\n"
        relay.vanish()
        assert client.connected  # nothing tells the client yet
        assert client.run("echo two").stdout == "two\n"
        assert relay.accepted == 2  # one new connection, no more


def test_sftp_after_the_node_forgot_the_kept_session_works(local_sshd: Any, tmp_path: Path) -> None:
    (tmp_path / "here").write_text("x")
    with _behind_relay(local_sshd, tmp_path) as (relay, client):
        assert "here" in client.listdir(str(tmp_path))  # the session is kept
        relay.vanish()
        assert client.connected
        assert "here" in client.listdir(str(tmp_path))
        client.put_bytes(b"data", str(tmp_path / "put"))
        assert (tmp_path / "put").read_bytes() == b"data"
        assert relay.accepted == 2


def _unacknowledged(monkeypatch: Any, transport: Any) -> None:
    """The kernel reports that the node left data sent on ``transport`` unanswered for 30 s.

    What TCP says of a connection to a node that went down while data was on
    its way (seen on the local cluster with its link cut); loopback always
    acknowledges, so the test says it instead.
    """
    real = ssh_module.unanswered_for
    monkeypatch.setattr(
        ssh_module, "unanswered_for", lambda sock: 30.0 if sock is transport.sock else real(sock)
    )


@pytest.mark.parametrize("call", ["command", "sftp"])
def test_a_kept_connection_the_node_no_longer_acknowledges_is_replaced(
    local_sshd: Any, tmp_path: Path, monkeypatch: Any, call: str
) -> None:
    """The node went down while TCP was sending to it, and came back (rebooted)."""
    with _behind_relay(local_sshd, tmp_path, connect_timeout=3.0) as (relay, client):
        client.run("true")
        client.listdir(str(tmp_path))
        relay.mute()  # nothing sent on the kept connection is answered now
        kept = client._transport()[0]
        _unacknowledged(monkeypatch, kept)
        assert not client.connected  # a warm-up would open a new one
        opened: list[Any] = []
        monkeypatch.setattr(kept, "open_session", lambda *a, **k: opened.append(a))
        if call == "command":
            assert client.run("echo x").stdout == "x\n"
        else:
            assert "known_hosts_relay" in client.listdir(str(tmp_path))
        assert opened == []  # not tried (and waited on): replaced before use
        assert relay.accepted == 2


@pytest.mark.parametrize("how", ["read", "wait"])
def test_a_command_whose_node_stops_answering_fails_in_seconds(
    client: SshClient, monkeypatch: Any, how: str
) -> None:
    """A disk copy or a hook run waits on its node's output: once TCP says the node left
    our data unanswered past the limit, the wait ends (TCP alone: some 15 minutes)."""
    monkeypatch.setattr(ssh_channel, "_WAIT_SLICE", 0.2)
    proc = client.open_exec("sleep 30")
    transport = client._transport()[0]
    gone = ssh_channel.STREAM_UNANSWERED_LIMIT + 1
    real = ssh_channel.unanswered_for
    monkeypatch.setattr(
        ssh_channel, "unanswered_for", lambda sock: gone if sock is transport.sock else real(sock)
    )
    start = time.monotonic()
    with pytest.raises(NodeUnreachable, match="left our data unanswered for 61 s"):
        proc.read() if how == "read" else proc.wait()
    assert time.monotonic() - start < 5
    proc.close()


@pytest.mark.parametrize("call", ["exec", "sftp open"])
def test_a_request_the_node_does_not_answer_fails_in_seconds(
    local_sshd: Any, tmp_path: Path, monkeypatch: Any, call: str
) -> None:
    """The channel opened, then the node answers nothing more (cut off at that moment, an
    sshd stuck setting up the session): paramiko alone would wait for ever."""

    def unanswered(channel: Any, *_args: Any) -> None:
        channel.event.clear()
        channel._wait_for_event()  # as paramiko's request does: until an answer or a close

    name = "exec_command" if call == "exec" else "invoke_subsystem"
    client = local_sshd.client(connect_timeout=1.0)
    client.run("true")  # connected: the time below is the request's alone
    monkeypatch.setattr(paramiko.Channel, name, unanswered)
    start = time.monotonic()
    with pytest.raises(NodeError, match=f"SSH {call} on .*: no answer within 1 s"):
        client.run("true") if call == "exec" else client.exists(str(tmp_path))
    assert time.monotonic() - start < 4
    monkeypatch.undo()
    assert client.run("echo again").stdout == "again\n"  # the node's other calls go on
    client.close()


class _NoChannelTransport:
    """A connection up on which the node opens no channel: paramiko's wait runs out, or
    the node refuses."""

    sock = None  # the kernel's account: nothing unanswered (the node acknowledges)

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.opened = 0

    def is_active(self) -> bool:
        return True

    def open_session(self, timeout: float | None = None) -> Any:
        self.opened += 1
        raise self.error


@pytest.mark.parametrize("kept", [False, True])
@pytest.mark.parametrize("call", ["run", "open_exec"])
def test_a_channel_the_node_does_not_open_in_time_is_unreachable(kept: bool, call: str) -> None:
    """As a connect without answer and a command whose node stops answering: the node
    does not answer, whatever the kind of call that found out."""
    transport = _NoChannelTransport(paramiko.SSHException("Timeout opening channel."))
    client = SshClient("192.0.2.1", connect_timeout=1.5, node_name="node2")
    client._transport = lambda: (transport, kept)  # type: ignore[method-assign]
    with pytest.raises(NodeUnreachable) as info:
        getattr(client, call)(["true"])
    assert info.value.node == "node2"
    assert "SSH exec on 192.0.2.1:22: no answer within 1.5 s" in info.value.msg
    assert transport.opened == 1  # a connection that acknowledges is not replaced


def test_callers_that_waited_for_a_failed_connect_share_its_failure() -> None:
    """Jobs queued behind one connect to a node that does not answer get its error at
    its end, instead of each making its own attempt in turn."""
    attempts: list[int] = []
    go = threading.Event()
    client = SshClient("192.0.2.1", node_name="node2", connect_attempts=1)

    def connect_once() -> paramiko.SSHClient:
        attempts.append(1)
        go.wait(10)
        raise NodeUnreachable("SSH connect to 192.0.2.1:22: timed out", "node2")

    client._connect_once = connect_once  # type: ignore[method-assign]
    failed = queued_failures(client._connect_failures, lambda: client.run(["true"]), go)
    assert len(failed) == 3 and len(attempts) == 1
    assert all(err.node == "node2" and "timed out" in err.msg for err in failed)


def test_a_channel_the_node_refuses_is_no_unreachable_node() -> None:
    transport = _NoChannelTransport(paramiko.ChannelException(1, "Administratively prohibited"))
    client = SshClient("192.0.2.1", node_name="node2")
    client._transport = lambda: (transport, False)  # type: ignore[method-assign]
    with pytest.raises(NodeError, match="Administratively prohibited") as info:
        client.run(["true"])
    assert not isinstance(info.value, NodeUnreachable)


def test_a_node_that_acknowledges_but_opens_no_channel_is_not_tried_again(
    local_sshd: Any, tmp_path: Path
) -> None:
    """sshd stopped answering but the node's TCP acknowledges: the call fails (the node
    did not answer), and the client does not try the node again on a new connection."""
    with _behind_relay(local_sshd, tmp_path, connect_timeout=1.0) as (relay, client):
        client.run("true")
        relay.mute()
        with pytest.raises(NodeUnreachable, match="exec"):
            client.run("true")
        assert relay.accepted == 1  # the call failed; nothing was opened again


def test_a_connection_replaced_as_dead_is_not_closed_under_a_running_stream(
    local_sshd: Any, tmp_path: Path, monkeypatch: Any
) -> None:
    """Judged dead, but only stalled: the stream on it goes on, and it is closed after."""
    with _behind_relay(local_sshd, tmp_path, connect_timeout=3.0) as (relay, client):
        proc = client.open_exec("cat")
        old = client._transport()[0]
        _unacknowledged(monkeypatch, old)
        assert client.run("echo x").stdout == "x\n"  # on a new connection
        assert relay.accepted == 2
        proc.write(b"still here\n")
        proc.close_stdin()
        assert proc.read() == b"still here\n"
        assert proc.wait(timeout=5).exit_status == 0
        assert old.is_active()  # not closed while the stream ran
        proc.close()
        assert not old.is_active()  # closed once nothing of ours used it


def test_a_node_at_its_session_limit_gets_a_second_connection(
    local_sshd: Any, tmp_path: Path
) -> None:
    """sshd's MaxSessions (Debian's default is 10) reached on the connection: the next
    channel opens on a new one, and what runs on the first goes on, SFTP included."""
    with LocalSshd(str(tmp_path / "sshd"), max_sessions=2) as sshd:
        client = sshd.client()
        try:
            client.put_bytes(b"one", str(tmp_path / "a"))  # the SFTP session: one of two
            proc = client.open_exec("cat")  # two of two
            first = client._transport()[0]
            assert client.run("echo x").stdout == "x\n"  # refused on the first
            assert client._transport()[0] is not first
            assert client.get_bytes(str(tmp_path / "a")) == b"one"  # its session goes on
            proc.write(b"still here\n")
            proc.close_stdin()
            assert proc.read() == b"still here\n"
            assert proc.wait(timeout=5).exit_status == 0
            proc.close()
            assert first.is_active()  # the SFTP session still uses it
        finally:
            client.close()
        assert not first.is_active()


def test_a_released_client_keeps_its_connection_for_a_running_stream(
    local_sshd: Any,
) -> None:
    """A client let go of (its node re-added, or found unreachable) ends no stream."""
    client = local_sshd.client()
    proc = client.open_exec("cat")
    transport = client._transport()[0]
    client.release()
    proc.write(b"on\n")
    proc.close_stdin()
    assert proc.read() == b"on\n"
    assert transport.is_active()
    proc.close()
    assert not transport.is_active()
    idle = local_sshd.client()
    idle.run("true")
    transport = idle._transport()[0]
    idle.release()  # nothing of ours on it: closed at once
    assert not transport.is_active()


def test_a_released_client_used_again_closes_what_it_opens(
    local_sshd: Any, monkeypatch: Any
) -> None:
    """A job still holding a client another job let go of (its node found unreachable)
    may use it; the connections it opens then are closed once its calls end."""
    client = local_sshd.client()
    opened: list[Any] = []
    connect_once = client._connect_once

    def connect() -> Any:
        opened.append(connect_once())
        return opened[-1]

    monkeypatch.setattr(client, "_connect_once", connect)
    client.run("true")
    client.release()
    assert client.run("echo again").stdout == "again\n"
    assert "tmp" in client.listdir("/")
    assert len(opened) >= 2
    assert [c for c in opened if c.get_transport() and c.get_transport().is_active()] == []


def test_a_released_client_keeps_the_connection_a_channel_is_being_opened_on(
    local_sshd: Any, monkeypatch: Any
) -> None:
    """Another job's call on it ends while this one opens its channel: that channel's
    connection stays until it is registered and used."""
    client = local_sshd.client()
    client.run("true")
    client.release()
    got, go = threading.Event(), threading.Event()
    transport_of = client._transport

    def slow() -> Any:
        found = transport_of()
        got.set()
        assert go.wait(10)
        return found

    monkeypatch.setattr(client, "_transport", slow)
    out: list[str] = []
    opener = threading.Thread(target=lambda: out.append(client.run("echo b").stdout))
    opener.start()
    assert got.wait(10)
    client.channel_closed()  # the other job's channel closed meanwhile
    go.set()
    opener.join(10)
    assert out == ["b\n"]


def test_fetch_host_key_unreachable() -> None:
    with pytest.raises(NodeUnreachable):
        fetch_host_key("127.0.0.1", _free_port(), timeout=2)


def test_auth_failure_is_not_retried(local_sshd: Any, tmp_path: Path) -> None:
    stranger = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    sleeps: list[float] = []
    ssh = local_sshd.client(key_file=str(stranger), sleep=sleeps.append)
    with pytest.raises(NodeUnreachable) as info:
        ssh.connect()
    assert "authentication" in str(info.value)
    assert sleeps == []


def test_retry_policies_reraise_and_filter() -> None:
    sleeps: list[float] = []
    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise NodeUnreachable("down")
        return "up"

    policy = retry.ssh_connect_policy(attempts=3, sleep=sleeps.append)
    assert retry.call_with_retry(policy, flaky) == "up"
    assert len(sleeps) == 2

    def hostkey() -> None:
        calls.append(1)
        raise HostKeyError("bad key")

    calls.clear()
    with pytest.raises(HostKeyError):
        retry.call_with_retry(retry.ssh_connect_policy(sleep=sleeps.append), hostkey)
    assert len(calls) == 1

    def always_down() -> None:
        raise NodeUnreachable("down")

    with pytest.raises(NodeUnreachable):  # reraise=True: never tenacity.RetryError
        retry.call_with_retry(retry.libvirt_connect_policy(sleep=lambda _s: None), always_down)
    assert not issubclass(NodeUnreachable, tenacity.RetryError)


# -- files and streaming -------------------------------------------------------------


def test_put_bytes_writes_a_private_file_where_no_one_else_can_open_it(
    client: SshClient, tmp_path: Path
) -> None:
    """While its data is written, the file (a private key) is in a directory only its
    owner may enter: one opened by another user before its chmod could be read later."""
    pki = tmp_path / "pki"  # readable by all, as /etc/pki/qemu is
    pki.mkdir()
    pki.chmod(0o755)
    seen: list[tuple[int, int, int]] = []  # (file mode, its directory's mode, size)
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            for root, _dirs, files in os.walk(pki):
                for name in files:
                    if ".tmp-" not in root + name:
                        continue
                    with contextlib.suppress(FileNotFoundError):
                        st, parent = os.stat(os.path.join(root, name)), os.stat(root)
                        seen.append((st.st_mode & 0o777, parent.st_mode & 0o777, st.st_size))

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        key = b"-----BEGIN PRIVATE KEY-----\n" + b"k" * (16 << 20)
        client.put_bytes(key, str(pki / "key.pem"), mode=0o600)
    finally:
        done.set()
        watcher.join()
    assert seen, "the temp file was never seen"
    assert all(parent == 0o700 for _mode, parent, size in seen if size), set(seen)
    assert (pki / "key.pem").stat().st_mode & 0o777 == 0o600
    assert os.listdir(pki) == ["key.pem"]  # no temp file or directory left


def test_an_sftp_session_the_server_ended_is_replaced(client: SshClient, tmp_path: Path) -> None:
    """Its sftp-server gone (killed, an idle timeout) on a live connection: the next
    request opens a new session instead of failing for as long as the client lives."""
    (tmp_path / "here").write_bytes(b"x")
    assert client.exists(str(tmp_path / "here"))
    ended = client._sftp
    assert ended is not None
    ended.sock.close()  # the session's channel is gone, the connection is not
    assert client.exists(str(tmp_path / "here"))
    assert client._sftp is not ended and client.get_bytes(str(tmp_path / "here")) == b"x"


def test_a_put_repeated_on_a_new_session_writes_the_file(
    client: SshClient, tmp_path: Path, monkeypatch: Any
) -> None:
    """The session ends after the put made its temp directory: the put is made again on a
    new session, in a directory of its own (the first one's name is taken)."""
    client.exists(str(tmp_path))
    real_open = paramiko.SFTPClient.open
    ended: list[str] = []

    def ends_once(sftp: Any, name: str, *args: Any, **kwargs: Any) -> Any:
        if not ended:
            ended.append(name)
            sftp.sock.close()  # the server ended the session
            raise OSError("Socket is closed")
        return real_open(sftp, name, *args, **kwargs)

    monkeypatch.setattr(paramiko.SFTPClient, "open", ends_once)
    client.put_bytes(b"second try", str(tmp_path / "file"), mode=0o600)
    assert (tmp_path / "file").read_bytes() == b"second try"
    assert ended and os.path.dirname(ended[0]) != str(tmp_path)  # written in its own dir


class _NodeFiles:
    """A node's files as SFTP sessions see them (``_FakeSftp``): directories and files."""

    def __init__(self, *dirs: str) -> None:
        self.dirs = set(dirs)
        self.made: list[str] = []  # directories made, in turn
        self.files: dict[str, bytes] = {}


class _FakeSftp:
    """An SFTP session on ``_NodeFiles``; with ``ends_at_open`` the server ends it as the
    put opens its temp file (the session's channel is closed, every request fails)."""

    def __init__(
        self,
        node: _NodeFiles,
        ends_at_open: bool = False,
        unanswered: tuple[str, ...] = (),
        refused_open: bool = False,
    ) -> None:
        self.node = node
        self.ends_at_open = ends_at_open
        self.unanswered = unanswered  # requests whose answer never comes
        self.refused_open = refused_open  # the server refuses the open (permission)
        self.requests: list[str] = []  # every request, in turn
        self.sock = self  # the session's channel
        self.closed = self.eof_received = False

    def get_transport(self) -> Any:
        return None

    def close(self) -> None:
        self.closed = True

    def _check(self, request: str = "") -> None:
        self.requests.append(request)
        if self.closed:
            raise OSError("Socket is closed")
        if request in self.unanswered:
            raise TimeoutError("no answer")

    def mkdir(self, path: str, mode: int) -> None:
        self._check("mkdir")
        self.node.dirs.add(path)
        self.node.made.append(path)

    def open(self, path: str, how: str) -> Any:
        self._check("open")
        if self.refused_open:
            raise PermissionError("Permission denied")
        if self.ends_at_open:
            self.closed = True
            raise OSError("Socket is closed")
        raise AssertionError("not reached in these tests")

    def remove(self, path: str) -> None:
        self._check("remove")
        if self.node.files.pop(path, None) is None:
            raise FileNotFoundError(path)

    def rmdir(self, path: str) -> None:
        self._check("rmdir")
        if path not in self.node.dirs:
            raise FileNotFoundError(path)
        self.node.dirs.remove(path)


def _client_with_sessions(
    monkeypatch: Any, sessions: list[tuple[_FakeSftp, bool]], connected: bool = True
) -> SshClient:
    """A client whose SFTP sessions are ``sessions`` in turn ((session, kept before))."""
    client = SshClient("192.0.2.1", node_name="node2")
    client._sftp_client = lambda: sessions.pop(0)  # type: ignore[method-assign]
    client._dead = lambda transport: False  # type: ignore[method-assign]
    monkeypatch.setattr(SshClient, "connected", property(lambda self: connected))
    return client


def test_a_put_whose_session_ended_leaves_no_temp_directory(monkeypatch: Any) -> None:
    """Its own session gone, the put fails (nothing was written); the temp directory it
    made is removed on a new session, and the error raised is the put's."""
    node = _NodeFiles("/etc/x")
    first = _FakeSftp(node, ends_at_open=True)
    client = _client_with_sessions(monkeypatch, [(first, False), (_FakeSftp(node), False)])
    with pytest.raises(NodeError, match="sftp put /etc/x/key.pem on .*Socket is closed"):
        client.put_bytes(b"k", "/etc/x/key.pem", mode=0o600)
    assert node.dirs == {"/etc/x"} and not node.files


def test_a_put_made_again_removes_the_temp_directory_of_the_first_try(monkeypatch: Any) -> None:
    """A kept session the server ended: the put is made again on a new session, which
    removes the first try's temp directory (here the second try fails as well)."""
    node = _NodeFiles("/etc/x")
    sessions = [(_FakeSftp(node, ends_at_open=True), True), (_FakeSftp(node, True), False)]
    client = _client_with_sessions(monkeypatch, sessions, connected=False)
    with pytest.raises(NodeError, match="Socket is closed"):
        client.put_bytes(b"k", "/etc/x/key.pem")
    first, second = node.made
    # the second try's stays: its connection is gone, nothing more is tried
    assert node.dirs == {"/etc/x", second}
    assert not sessions


def test_a_put_without_answer_asks_nothing_more_of_its_session(monkeypatch: Any) -> None:
    """The session is dropped unanswered (a late answer must not be taken for another
    request's): the temp directory is removed on a new session, not on that one."""
    node = _NodeFiles("/etc/x")
    silent = _FakeSftp(node, unanswered=("open",))
    client = _client_with_sessions(monkeypatch, [(silent, False), (_FakeSftp(node), False)])
    monkeypatch.setattr(client, "_drop_sftp", lambda: None)
    with pytest.raises(NodeError, match="no answer within"):
        client.put_bytes(b"k", "/etc/x/key.pem")
    assert silent.requests == ["mkdir", "open"]
    assert node.dirs == {"/etc/x"}


def test_a_put_whose_clean_up_gets_no_answer_drops_its_session(monkeypatch: Any) -> None:
    """The put failed (a refusal); removing its temp directory gets no answer: the session
    is dropped (nothing more asked of it) and the error raised is still the put's."""
    node = _NodeFiles("/etc/x")
    session = _FakeSftp(node, unanswered=("remove",), refused_open=True)
    client = _client_with_sessions(monkeypatch, [(session, False)], connected=False)
    dropped: list[bool] = []
    monkeypatch.setattr(client, "_drop_sftp", lambda: dropped.append(True))
    with pytest.raises(NodeError, match="Permission denied"):
        client.put_bytes(b"k", "/etc/x/key.pem")
    assert session.requests == ["mkdir", "open", "remove"] and dropped


def test_a_temp_directory_that_cannot_be_removed_does_not_hide_the_put_error(
    monkeypatch: Any,
) -> None:
    node = _NodeFiles("/etc/x")
    ended = _FakeSftp(node)
    ended.closed = True  # the session opened for the removal is gone as well
    sessions = [(_FakeSftp(node, ends_at_open=True), False), (ended, False)]
    client = _client_with_sessions(monkeypatch, sessions)
    with pytest.raises(NodeError, match="sftp put /etc/x/key.pem on .*Socket is closed"):
        client.put_bytes(b"k", "/etc/x/key.pem")
    assert len(node.dirs) == 2  # best effort: the directory stays


def test_a_request_answered_as_its_wait_ran_out_is_no_answer(
    client: SshClient, monkeypatch: Any
) -> None:
    """The timer closed the channel just as the answer came: the channel is gone all the
    same, so the call fails as unanswered (not as a command with exit status -1)."""

    class RanOut:
        def __init__(self, _seconds: float, give_up: Any) -> None:
            self.give_up = give_up
            self.daemon = True

        def start(self) -> None:
            pass

        def cancel(self) -> None:
            self.give_up()  # fires as the request returns

    monkeypatch.setattr(ssh_module.threading, "Timer", RanOut)
    with pytest.raises(NodeError, match="SSH exec on .*: no answer within"):
        client.run("true")


def test_put_and_get_bytes(client: SshClient, tmp_path: Path) -> None:
    data = bytes(range(256)) * 4096
    target = tmp_path / "sub" / "file.bin"
    target.parent.mkdir()
    client.put_bytes(data, str(target), mode=0o600)
    assert target.read_bytes() == data
    assert target.stat().st_mode & 0o777 == 0o600
    assert os.listdir(target.parent) == ["file.bin"]  # no temp file left
    assert client.get_bytes(str(target)) == data
    client.put_bytes(b"new", str(target))
    assert client.get_bytes(str(target)) == b"new"
    assert target.stat().st_mode & 0o777 == 0o644
    assert client.exists(str(target))
    assert not client.exists(str(tmp_path / "nothing"))


def test_listdir(client: SshClient, tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    for name in ("b", ".hidden", "a"):
        (tmp_path / "d" / name).write_text("")
    assert sorted(client.listdir(str(tmp_path / "d"))) == [".hidden", "a", "b"]
    assert client.listdir(str(tmp_path / "absent"), missing_ok=True) == []
    assert client.listdir(str(tmp_path / "d" / "a"), missing_ok=True) == []  # not a directory
    with pytest.raises(NodeError) as info:
        client.listdir(str(tmp_path / "absent"))
    assert info.value.ecode == ECODE_NOENT
    assert not isinstance(info.value, NodeUnreachable)


def test_an_sftp_request_without_answer_times_out_and_a_new_session_follows(
    local_sshd: Any, tmp_path: Path
) -> None:
    """A read of a FIFO blocks the node's sftp-server, as a stuck mount would."""
    fifo = tmp_path / "stuck"
    os.mkfifo(fifo)
    client = local_sshd.client(sftp_timeout=1.0)
    try:
        start = time.monotonic()
        with pytest.raises(NodeError) as info:
            client.get_bytes(str(fifo))
        assert "no answer within 1 s" in info.value.msg
        assert not isinstance(info.value, NodeUnreachable)
        assert time.monotonic() - start < 10
        # the hung session was dropped: the next request gets a new one
        assert client.exists(str(tmp_path))
    finally:
        # a writer lets the old sftp-server's open() return, and it ends
        with contextlib.suppress(OSError):
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        client.close()


def test_get_missing_file_is_noent(client: SshClient, tmp_path: Path) -> None:
    with pytest.raises(NodeError) as info:
        client.get_bytes(str(tmp_path / "missing"))
    assert info.value.ecode == ECODE_NOENT
    assert "missing" in str(info.value)


def test_put_into_missing_dir_fails_cleanly(client: SshClient, tmp_path: Path) -> None:
    with pytest.raises(NodeError):
        client.put_bytes(b"x", str(tmp_path / "no" / "such" / "file"))


def test_open_exec_streams_in_and_out(client: SshClient, tmp_path: Path) -> None:
    target = tmp_path / "stream.bin"
    chunks = [os.urandom(256 * 1024) for _ in range(8)]
    with client.open_exec(["sh", "-c", f"cat > {target}"]) as proc:
        for chunk in chunks:
            proc.write(chunk)
        proc.close_stdin()
        assert proc.wait(timeout=30).exit_status == 0
    assert target.read_bytes() == b"".join(chunks)

    received = bytearray()
    with client.open_exec(["cat", str(target)]) as proc:
        while True:
            data = proc.read()
            if not data:
                break
            received += data
        assert proc.wait(timeout=30).exit_status == 0
    assert bytes(received) == b"".join(chunks)


def test_open_exec_wait_reports_failure(client: SshClient) -> None:
    proc = client.open_exec("echo bad >&2; exit 7")
    with pytest.raises(RemoteCommandError) as info:
        proc.wait(timeout=30)
    assert info.value.exit_status == 7
    assert "bad" in str(info.value)


def test_open_exec_read_survives_chatty_stderr(client: SshClient) -> None:
    proc = client.open_exec("head -c 4000000 /dev/zero | tr '\\0' e >&2; echo done")
    received = bytearray()
    while chunk := proc.read():
        received += chunk
    result = proc.wait(timeout=30)
    assert bytes(received) == b"done\n"
    assert len(result.stderr) == 4000000
    assert result.stdout == ""


def test_put_get_from_several_threads(client: SshClient, tmp_path: Path) -> None:
    errors: list[BaseException] = []

    def work(idx: int) -> None:
        try:
            data = bytes([idx]) * (100000 + idx)
            path = str(tmp_path / f"f{idx}")
            client.put_bytes(data, path)
            assert client.get_bytes(path) == data
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert sorted(os.listdir(tmp_path)) == [f"f{i}" for i in range(5)]


# -- start-up speed --------------------------------------------------------------


def test_warm_up_opens_the_connection_used_by_later_calls(local_sshd: Any) -> None:
    ssh = local_sshd.client()
    try:
        assert ssh.warm_up() is True
        transport = ssh._transport()[0]
        assert ssh.run("echo hi").stdout == "hi\n"
        assert ssh._transport()[0] is transport  # no second handshake
    finally:
        ssh.close()


def test_warm_up_failure_is_silent_and_left_to_the_real_call(
    local_sshd: Any, tmp_path: Path
) -> None:
    sleeps: list[float] = []
    down = local_sshd.client(port=_free_port(), sleep=sleeps.append)
    assert down.warm_up() is False
    assert sleeps == []  # one attempt, no retry
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    stranger = local_sshd.client(known_hosts_file=str(empty))
    assert stranger.warm_up() is False
    with pytest.raises(HostKeyError):  # the real call still refuses the key
        stranger.run("true")


def test_connection_has_nagle_off(client: SshClient) -> None:
    sock = client._transport()[0].sock
    assert isinstance(sock, socket.socket)
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


def test_commands_run_and_stream_past_file_number_1024(local_sshd: Any) -> None:
    # the master daemon holds a file per lock taken: its SSH channels may get
    # numbers past select's limit while a job holds every lock of a level
    with holding_many_files():
        ssh = local_sshd.client()
        try:
            result = ssh.run("sleep 0.3; echo done")  # answered after a wait
            assert (result.exit_status, result.stdout) == (0, "done\n")
            proc = ssh.open_exec("sleep 0.3; echo streamed")
            assert proc.channel.fileno() > 1024
            assert proc.read() == b"streamed\n"
            proc.close()
        finally:
            ssh.close()
