"""ganeti_lv.node.tcpinfo: the kernel's account of a TCP peer that does not answer."""

from __future__ import annotations

import socket

import pytest

from ganeti_lv.node import tcpinfo
from ganeti_lv.node.tcpinfo import TcpState


def test_a_live_loopback_connection_reads_as_answered() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    with server, socket.create_connection(server.getsockname()) as sock:
        peer, _ = server.accept()
        with peer:
            sock.sendall(b"x" * 1000)
            assert peer.recv(1000)
            state = tcpinfo.tcp_state(sock)
    assert state is not None
    assert state.unacked == 0 and state.backoff == 0
    # Linux's retransmission timeout starts at or above its 200 ms minimum
    assert 0.2 <= state.rto_s <= 3.0
    assert state.last_ack_s < 5.0
    assert state.unanswered_for == 0.0


def test_what_is_not_a_tcp_socket_has_no_state() -> None:
    assert tcpinfo.tcp_state(object()) is None
    assert tcpinfo.unanswered_for(None) == 0.0


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        # node away 14 s: six timeouts (0.2 s doubling to 12.8 s) cover 12.6 s
        (TcpState(backoff=6, rto_s=12.8, unacked=1, last_ack_s=14.012), 12.6),
        # away 90 s: eight timeouts cover 51 s, the last retransmission 39 s ago
        # (counted at 51 s only, a 60 s limit was crossed at 102 s)
        (TcpState(backoff=8, rto_s=51.2, unacked=1, last_ack_s=95.0, last_sent_s=39.0), 90.0),
        # one segment lost after a quiet minute: one interval, not the minute
        (TcpState(backoff=1, rto_s=0.4, unacked=1, last_ack_s=60.0), 0.2),
        # never longer than since the last acknowledgement
        (TcpState(backoff=8, rto_s=51.2, unacked=3, last_ack_s=20.0), 20.0),
        # nothing retransmitted, or nothing waiting: answered
        (TcpState(backoff=0, rto_s=0.2, unacked=2, last_ack_s=30.0), 0.0),
        (TcpState(backoff=3, rto_s=1.6, unacked=0, last_ack_s=30.0), 0.0),
    ],
)
def test_unanswered_for_is_the_retransmission_time_so_far(state: TcpState, expected: float) -> None:
    assert state.unanswered_for == pytest.approx(expected)
