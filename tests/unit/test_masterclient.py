"""The master daemon's client: reaching the daemon, reading its answers, a daemon that hangs."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from support.manyfiles import holding_many_files

from ganeti_lv import paths
from ganeti_lv.cancel import Cancellation
from ganeti_lv.constants import JOB_STATUS_SUCCESS
from ganeti_lv.errors import ECODE_ENVIRON, ECODE_TEMP_NORES, OpExecError
from ganeti_lv.master import client as masterclient
from ganeti_lv.master import protocol
from ganeti_lv.opcodes import OpTestDelay

CLIENTS = 60


@pytest.fixture
def listener(data_dir: str) -> Iterator[socket.socket]:
    """A socket at the daemon's path that queues one connection and accepts none."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(paths.masterd_socket(data_dir))
    sock.listen(0)
    try:
        yield sock
    finally:
        sock.close()


def _fill_queue(data_dir: str) -> socket.socket:
    """Take the one place in the listener's queue (a further connect finds it full)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(paths.masterd_socket(data_dir))
    return sock


def test_a_socket_left_by_a_daemon_that_is_gone_means_no_daemon(data_dir: str) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(paths.masterd_socket(data_dir))
    sock.close()  # the file stays, nobody listens
    assert masterclient.connect(data_dir) is None


def test_every_client_of_a_burst_reaches_the_daemon(server: Any, data_dir: str) -> None:
    start = threading.Barrier(CLIENTS)
    answers: list[Any] = []
    failures: list[BaseException] = []

    def client() -> None:
        start.wait()
        try:
            master = masterclient.connect(data_dir)
            answers.append(None if master is None else master.version()["protocol"])
        except Exception as err:  # noqa: BLE001 - reported below
            failures.append(err)

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert failures == []
    assert answers == [1] * CLIENTS


def test_a_full_queue_of_connections_is_waited_out(listener: socket.socket, data_dir: str) -> None:
    queued = _fill_queue(data_dir)
    accepted: list[socket.socket] = []

    def accept_later() -> None:
        threading.Event().wait(0.3)
        for _ in range(2):
            accepted.append(listener.accept()[0])

    acceptor = threading.Thread(target=accept_later)
    acceptor.start()
    try:
        master = masterclient.connect(data_dir, timeout=10)
    finally:
        acceptor.join(10)
        queued.close()
        for sock in accepted:
            sock.close()
    assert master is not None
    master.close()


def test_a_queue_that_stays_full_is_an_error_not_no_daemon(
    listener: socket.socket, data_dir: str
) -> None:
    queued = _fill_queue(data_dir)
    try:
        with pytest.raises(OpExecError) as err:
            masterclient.connect(data_dir, timeout=0.3)
    finally:
        queued.close()
    assert err.value.ecode == ECODE_TEMP_NORES
    assert paths.masterd_socket(data_dir) in err.value.msg


class _CountingBuffer(bytearray):
    """A receive buffer counting the bytes its searches for a line's end look at."""

    def __init__(self) -> None:
        super().__init__()
        self.scanned = 0

    def find(self, sub: Any, start: Any = None, *args: Any) -> int:
        self.scanned += len(self) - (start or 0)
        return super().find(sub, start, *args)

    def __contains__(self, sub: Any) -> bool:
        self.scanned += len(self)
        return super().__contains__(sub)

    def split(self, *args: Any, **kwargs: Any) -> Any:
        self.scanned += len(self)
        return super().split(*args, **kwargs)


class _ChunkedSocket:
    """A daemon's side that is always ready and hands out ``data`` in 64 KiB chunks."""

    def __init__(self, data: bytes) -> None:
        self.chunks = [data[i : i + 65536] for i in range(0, len(data), 65536)]
        self._ready_r, self._ready_w = os.pipe()
        os.write(self._ready_w, b"x")  # never read: always found ready

    def fileno(self) -> int:
        return self._ready_r

    def recv(self, size: int) -> bytes:
        assert size >= 65536
        return self.chunks.pop(0) if self.chunks else b""

    def close(self) -> None:
        os.close(self._ready_r)
        os.close(self._ready_w)


def test_a_long_answer_is_read_in_the_time_of_its_length() -> None:
    # the whole job log is one line of many MB; searching all of it again for
    # its end after each chunk took minutes for 150 MB
    jobs = [{"id": n, "summary": f"INSTANCE_MIGRATE(web{n}) " + "x" * 200} for n in range(20000)]
    first = protocol.encode({"type": protocol.JOBS, "jobs": jobs})
    second = protocol.encode({"type": protocol.VERSION, "protocol": 1, "version": "x"})
    data = first + second
    sock = _ChunkedSocket(data)
    with masterclient._Exchange(sock, "masterd.sock") as exchange:  # type: ignore[arg-type]
        exchange.buf = buffer = _CountingBuffer()
        assert exchange.receive(None) == {"type": protocol.JOBS, "jobs": jobs}
        assert exchange.receive(None) == {"type": protocol.VERSION, "protocol": 1, "version": "x"}
    assert len(first) > 4 * 2**20
    assert buffer.scanned < 2 * len(data)


@pytest.fixture
def hung_daemon(data_dir: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A daemon's socket whose connections the kernel takes and nobody answers.

    It goes away after a few seconds, so that a client without a timeout
    fails (its connection reset) rather than hanging the test run.
    """
    monkeypatch.setattr(masterclient, "ANSWER_TIMEOUT", 0.3)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(paths.masterd_socket(data_dir))
    sock.listen(16)
    closer = threading.Timer(5, sock.close)
    closer.start()
    try:
        yield
    finally:
        closer.cancel()
        sock.close()


REQUESTS: dict[str, Callable[[masterclient.MasterClient], Any]] = {
    "version": lambda master: master.version(),
    "jobs": lambda master: master.jobs(),
    "job": lambda master: master.job(1),
    "cancel": lambda master: master.cancel(1),
    "enqueue": lambda master: master.enqueue([OpTestDelay(duration=0)]),
    "submit": lambda master: master.submit(OpTestDelay(duration=0)),
}


@pytest.mark.parametrize("request_name", sorted(REQUESTS))
def test_a_daemon_that_does_not_answer_is_a_typed_error_naming_it(
    hung_daemon: None, data_dir: str, request_name: str
) -> None:
    master = masterclient.connect(data_dir)
    assert master is not None
    with pytest.raises(OpExecError) as err:
        REQUESTS[request_name](master)
    assert err.value.ecode == ECODE_ENVIRON
    assert f"(pid {os.getpid()}) at {paths.masterd_socket(data_dir)}" in err.value.msg
    assert "did not answer within 0.3 s" in err.value.msg


def _silent_job_daemon(data_dir: str, first: list[dict[str, Any]]) -> threading.Thread:
    """A daemon serving one connection: ``first`` at once, then after a silence
    longer than ANSWER_TIMEOUT, the job's end."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(paths.masterd_socket(data_dir))
    sock.listen(1)

    def serve() -> None:
        with sock, sock.accept()[0] as conn, conn.makefile("rwb") as stream:
            stream.readline()
            for msg in first:
                stream.write(protocol.encode(msg))
            stream.flush()
            threading.Event().wait(1.0)
            stream.write(protocol.encode(protocol.end_message(7, JOB_STATUS_SUCCESS, [42], None)))
            stream.flush()
            stream.readline()  # until the client closes

    thread = threading.Thread(target=serve)
    thread.start()
    return thread


@pytest.mark.parametrize("submitted", [True, False])
def test_a_followed_job_may_be_silent_longer_than_an_answer_may_take(
    data_dir: str, monkeypatch: pytest.MonkeyPatch, submitted: bool
) -> None:
    monkeypatch.setattr(masterclient, "ANSWER_TIMEOUT", 0.3)
    accepted = [{"type": protocol.ACCEPTED, "job_id": 7}] if submitted else []
    daemon = _silent_job_daemon(data_dir, accepted)
    master = masterclient.connect(data_dir)
    assert master is not None
    try:
        if submitted:
            assert master.submit(OpTestDelay(duration=0)) == 42
        else:
            assert master.watch(7) == [42]
    finally:
        daemon.join(10)


def test_ctrl_c_while_following_a_job_of_a_daemon_gone_is_still_an_interrupt(
    data_dir: str,
) -> None:
    # the cancel the interrupt sends cannot reach a daemon gone: the interrupt stands
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(paths.masterd_socket(data_dir))
    sock.listen(1)
    gone = threading.Event()

    def serve() -> None:
        with sock, sock.accept()[0] as conn, conn.makefile("rwb") as stream:
            stream.readline()
            stream.write(protocol.encode(protocol.record_message(protocol.make_record(7, 0, "x"))))
            stream.flush()
        gone.set()

    def interrupted(_record: Any) -> None:
        gone.wait(10)
        raise KeyboardInterrupt

    daemon = threading.Thread(target=serve)
    daemon.start()
    master = masterclient.connect(data_dir)
    assert master is not None
    try:
        with pytest.raises(KeyboardInterrupt):
            master.watch(7, on_record=interrupted)
    finally:
        daemon.join(10)


def test_a_connection_past_file_number_1024_is_read() -> None:
    # the daemon and gnt-lv hold a file per lock taken: a job taking every
    # instance lock of a large cluster puts later sockets past 1024
    with holding_many_files():
        ours, theirs = socket.socketpair()
        with ours, theirs:
            assert ours.fileno() > 1024
            theirs.sendall(protocol.encode({"type": protocol.VERSION, "protocol": 1}))
            with masterclient._Exchange(ours, "masterd.sock") as exchange:
                assert exchange.receive(5) == {"type": protocol.VERSION, "protocol": 1}
                assert exchange.receive(0.05) is None  # nothing more: the wait ends


def test_a_job_that_ended_before_its_cancel_was_sent_returns_its_result() -> None:
    # the daemon sent the job's end and closed; Ctrl-C came before the client
    # read it: the cancel cannot be sent (a broken pipe) but the end is there
    ours, theirs = socket.socketpair()
    with ours:
        with theirs:
            theirs.sendall(protocol.encode(protocol.end_message(7, JOB_STATUS_SUCCESS, [42], None)))
        cancel = Cancellation()
        cancel.request("interrupted by the user")
        with masterclient._Exchange(ours, "masterd.sock") as exchange:
            assert masterclient._wait(exchange, None, cancel) == [42]
            assert exchange.cancel_sent


def test_a_cancel_that_cannot_be_sent_to_a_daemon_gone_is_the_daemon_gone() -> None:
    ours, theirs = socket.socketpair()
    theirs.close()
    cancel = Cancellation()
    cancel.request("interrupted by the user")
    with (
        masterclient._Exchange(ours, "masterd.sock") as exchange,
        pytest.raises(OpExecError) as err,
    ):
        masterclient._wait(exchange, None, cancel)
    assert "closed the connection before the job ended" in err.value.msg
