"""The master daemon and the clients following a job: what they send after their
request, and their leaving."""

from __future__ import annotations

import io
import socket
import threading
from typing import Any

from support.waiting import in_exec, wait_until

from ganeti_lv import paths
from ganeti_lv.master import client as masterclient
from ganeti_lv.master import protocol, streams
from ganeti_lv.master.jobs import JobStore
from ganeti_lv.opcodes import OpTestDelay


class _Once(io.BytesIO):
    """A client's side: the lines it sent, then its end; says when all was read."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.ended = False

    def readline(self, size: int | None = -1) -> bytes:
        line = super().readline(size)
        self.ended = self.ended or not line.endswith(b"\n")
        return line


def test_cancel_lines_are_taken_and_a_line_past_any_cancel_s_ends_the_reading() -> None:
    cancel = protocol.encode(protocol.cancel_request(7, "interrupted by the user"))
    sent = cancel + b"x" * (4 * streams.CANCEL_LINE_MAX) + b"\n" + cancel
    rfile = _Once(sent)
    reasons: list[str] = []
    streams.watch_cancel(rfile, reasons.append)
    assert wait_until(lambda: rfile.ended, 10)
    # the first cancel taken; the overlong line read no further than the limit, and
    # nothing after it
    assert reasons == ["interrupted by the user"]
    assert rfile.tell() <= len(cancel) + streams.CANCEL_LINE_MAX


def test_clients_that_leave_a_silent_job_leave_nothing_behind_in_the_daemon(
    server: Any, data_dir: str, held_delays: threading.Event
) -> None:
    """Each client following a job costs a thread and a socket of the daemon's: one
    that leaves while the job says nothing (a killed watcher) gives them back then,
    not at the job's next line or end (the job goes on)."""
    store = JobStore(paths.jobs_dir(data_dir))
    job_id = masterclient.connect(data_dir).enqueue([OpTestDelay(duration=30)])
    assert wait_until(lambda: in_exec(store.get(job_id)), 10)
    before = threading.active_count()
    clients = []
    for _ in range(5):
        sock = socket.socket(socket.AF_UNIX)
        sock.connect(paths.masterd_socket(data_dir))
        sock.sendall(protocol.encode(protocol.request(protocol.WATCH, job_id=job_id)))
        sock.recv(65536)  # its first lines: it follows the job
        clients.append(sock)
    assert threading.active_count() >= before + 5
    for sock in clients:
        sock.close()
    assert wait_until(lambda: threading.active_count() <= before, 10)
    assert not store.get(job_id).finished  # the job still runs
    held_delays.set()
    assert wait_until(lambda: store.get(job_id).status == "success", 30)


def test_a_client_that_only_shuts_its_sending_side_gets_the_whole_stream(
    server: Any, data_dir: str
) -> None:
    """As socat or nc -N: the request, then the end of what it sends; it still reads."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(30)
        sock.connect(paths.masterd_socket(data_dir))
        request = protocol.submit_request([OpTestDelay(duration=0.5)], None, wait=True)
        sock.sendall(protocol.encode(request))
        sock.shutdown(socket.SHUT_WR)
        with sock.makefile("rb") as rfile:
            kinds = [protocol.decode(line)["type"] for line in rfile]
    assert kinds[0] == protocol.ACCEPTED and kinds[-1] == protocol.END
