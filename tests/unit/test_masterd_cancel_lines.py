"""The master daemon's reading of what a followed job's client sends after its request."""

from __future__ import annotations

import io

from support.waiting import wait_until

from ganeti_lv.master import daemon as masterd
from ganeti_lv.master import protocol


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
    sent = cancel + b"x" * (4 * masterd.CANCEL_LINE_MAX) + b"\n" + cancel
    rfile = _Once(sent)
    reasons: list[str] = []
    masterd.watch_cancel(rfile, reasons.append)
    assert wait_until(lambda: rfile.ended, 10)
    # the first cancel taken; the overlong line read no further than the limit, and
    # nothing after it
    assert reasons == ["interrupted by the user"]
    assert rfile.tell() <= len(cancel) + masterd.CANCEL_LINE_MAX
