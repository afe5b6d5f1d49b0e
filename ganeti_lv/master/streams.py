"""A job's messages to the clients of the master daemon that follow it.

``RunningJob`` keeps a running job's records and its end for any number of
followers, each from the job's start; ``logged`` tells a job that ended from
its job log. ``Sender`` writes to one client (a client gone just stops
receiving). ``watch_cancel`` reads what a follower sends after its request:
its cancel messages, a bounded line at a time, and its leaving, which ends
its stream (the job goes on).
"""

from __future__ import annotations

import contextlib
import logging
import select
import threading
from collections.abc import Callable, Iterator
from typing import BinaryIO

from ganeti_lv.cancel import Cancellation
from ganeti_lv.errors import GenericError
from ganeti_lv.master import protocol
from ganeti_lv.master.follow import end_error
from ganeti_lv.master.jobs import Job, JobStore
from ganeti_lv.master.protocol import Feedback, Message

log = logging.getLogger(__name__)

# how often a client's stream of a silent job looks whether the client left (s)
CLIENT_CHECK = 1.0
# the longest line a followed job's client may send after its request (a cancel
# with its reason): the daemon stops reading a client that sends a longer one
CANCEL_LINE_MAX = 64 << 10


class RunningJob:
    """A job the daemon runs: its records so far, its end, its cancel request.

    Any number of connections follow it (``follow``), each from the job's
    start; none of them is needed for the job to run.
    """

    def __init__(self, job: Job, jobs: JobStore) -> None:
        self.job_id = job.id
        self.cancel = Cancellation()
        self._job, self._jobs = job, jobs
        self._messages: list[Message] = []
        self._end: Message | None = None
        self._cond = threading.Condition()

    def request_cancel(self, reason: str) -> None:
        """Ask the job to stop safely, recorded in the job log before this returns
        (as Ganeti's, a client reading the job next sees it canceling; a job that
        ends canceled first records the request with its end)."""
        self.cancel.request(reason)
        try:
            self._jobs.record_cancel_request(self._job)
        except (OSError, GenericError) as err:  # the job's own thread records it again
            log.warning("job %s: cancel request not recorded: %s", self.job_id, err)

    def publish(self, record: Feedback) -> None:
        """Add one record of the job."""
        with self._cond:
            self._messages.append(protocol.record_message(record))
            self._cond.notify_all()

    def finish(self, end: Message) -> None:
        """Record the job's end (its last message)."""
        with self._cond:
            self._end = end
            self._cond.notify_all()

    def follow(self, gone: threading.Event | None = None) -> Iterator[Message]:
        """The job's messages from its start, waiting for new ones, up to its end;
        or until ``gone`` is set (the client following it left: the job goes on)."""
        seen = 0
        while True:
            with self._cond:
                while seen >= len(self._messages) and self._end is None:
                    if gone is not None and gone.is_set():
                        return
                    self._cond.wait(None if gone is None else CLIENT_CHECK)
                batch, end = self._messages[seen:], self._end
            seen += len(batch)
            yield from batch
            if end is not None and not batch:
                yield end
                return


def reason_of(msg: Message) -> str:
    """A cancel request's reason (a default when it gives none)."""
    return str(msg.get("reason") or "canceled by the client")


def logged(job: Job) -> Iterator[Message]:
    """A job that ended, from its job log record: its lines, then its end."""
    for index, op in enumerate(job.ops):
        for ts, _kind, text in op.log:
            yield protocol.record_message(protocol.make_record(job.id, index, text, ts))
    yield protocol.end_message(job.id, job.status, job.results, end_error(job))


class Sender:
    """Writes messages to a client; a client gone just stops receiving them."""

    def __init__(self, wfile: BinaryIO) -> None:
        self._wfile = wfile
        self._lock = threading.Lock()
        self._gone = False

    def __call__(self, msg: Message) -> bool:
        """Send ``msg``; False once the client is gone."""
        with self._lock:
            if not self._gone:
                try:
                    self._wfile.write(protocol.encode(msg))
                    self._wfile.flush()
                except (OSError, ValueError):
                    self._gone = True
            return not self._gone


def watch_cancel(
    rfile: BinaryIO,
    cancel: Callable[[str], None],
    gone: threading.Event | None = None,
    done: threading.Event | None = None,
) -> None:
    """Start a thread calling ``cancel(reason)`` for each cancel message the client sends.

    The thread ends with the client's side of the connection, and then sets
    ``gone``: at once on an error reading it or a line longer than a cancel's;
    at the end of what it sends, once it has hung up altogether (a client that
    only shut its sending side still reads the job's messages) or ``done`` is
    set (the messages ended).
    """

    def watch() -> None:
        try:
            if _read_cancels(rfile, cancel):
                _wait_hang_up(rfile, done)
        finally:
            if gone is not None:
                gone.set()

    threading.Thread(target=watch, name="masterd-cancel", daemon=True).start()


def _read_cancels(rfile: BinaryIO, cancel: Callable[[str], None]) -> bool:
    """Take the client's cancel messages; True at the end of what it sends, False
    on an error reading or a line past any cancel's."""
    with contextlib.suppress(OSError, ValueError):
        while True:
            line = rfile.readline(CANCEL_LINE_MAX)
            if not line:
                return True
            if not line.endswith(b"\n"):
                return False
            try:
                msg = protocol.decode(line)
            except GenericError:
                continue
            if msg["type"] == protocol.CANCEL:
                cancel(reason_of(msg))
    return False


def _wait_hang_up(rfile: BinaryIO, done: threading.Event | None) -> None:
    """Until the client hung up (or ``done`` is set), looking every CLIENT_CHECK."""
    try:
        fd = rfile.fileno()
    except (OSError, ValueError):  # no socket under it: nothing to wait for
        return
    poller = select.poll()
    poller.register(fd, 0)  # a hang-up and errors are reported whatever the mask
    while done is None or not done.is_set():
        if poller.poll(CLIENT_CHECK * 1000):
            return
