"""What the kernel knows of a TCP connection's peer: how long it has left our data unanswered.

Linux keeps, for every TCP socket, the segments sent and not yet
acknowledged, how many times in a row the retransmission timer has fired
for them (each time doubling its interval, ``backoff``), the current
interval (``rto``) and the time since the last acknowledgement arrived;
``getsockopt(TCP_INFO)`` returns them. A peer that is cut off, or that
rebooted and forgot the connection, acknowledges nothing while TCP goes on
retransmitting, for up to a quarter of an hour; a peer that is only slow to
answer (a busy server) still acknowledges what arrives.

``unanswered_for`` turns this into how long our oldest unacknowledged data
has waited: the retransmission intervals up to the last retransmission add
up to ``rto * (1 - 2**-backoff)`` (a single lost segment after a quiet
minute counts for one interval, not for the minute), then the time since
that retransmission (the last data sent); never more than the time since
the last acknowledgement. Without the time since the last retransmission,
the figure would lag behind by up to one interval, as long as all before
it (a 60 s limit was crossed only after some 100 s).
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

# struct tcp_info (linux/tcp.h): the offsets of the fields read, and the
# length that covers them
_BACKOFF = 4  # u8
_RTO = 8  # u32, microseconds
_UNACKED = 24  # u32, segments
_LAST_DATA_SENT = 44  # u32, milliseconds
_LAST_ACK_RECV = 56  # u32, milliseconds
_LENGTH = 60


@dataclass(frozen=True)
class TcpState:
    """The fields of TCP_INFO that tell whether the peer answers."""

    backoff: int
    rto_s: float
    unacked: int
    last_ack_s: float
    last_sent_s: float = 0.0

    @classmethod
    def decode(cls, info: bytes) -> TcpState:
        """The fields of a ``getsockopt(IPPROTO_TCP, TCP_INFO)`` result."""
        return cls(
            backoff=info[_BACKOFF],
            rto_s=struct.unpack_from("I", info, _RTO)[0] / 1e6,
            unacked=struct.unpack_from("I", info, _UNACKED)[0],
            last_ack_s=struct.unpack_from("I", info, _LAST_ACK_RECV)[0] / 1e3,
            last_sent_s=struct.unpack_from("I", info, _LAST_DATA_SENT)[0] / 1e3,
        )

    @property
    def unanswered_for(self) -> float:
        """Seconds our oldest unacknowledged data has waited (0: none waits)."""
        if not self.unacked or not self.backoff:
            return 0.0
        retransmitting = self.rto_s * (1.0 - 2.0**-self.backoff) + self.last_sent_s
        return min(retransmitting, self.last_ack_s)


def tcp_state(sock: object) -> TcpState | None:
    """The kernel's TCP state of ``sock`` (None: not a TCP socket here, or not Linux)."""
    option = getattr(socket, "TCP_INFO", None)
    if not isinstance(sock, socket.socket) or option is None:
        return None
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, option, _LENGTH)
    except OSError:
        return None
    return TcpState.decode(info) if len(info) >= _LENGTH else None


def unanswered_for(sock: object) -> float:
    """Seconds the peer of ``sock`` has left our data unanswered, at least (0: none waits)."""
    state = tcp_state(sock)
    return 0.0 if state is None else state.unanswered_for
