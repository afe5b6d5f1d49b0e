"""Jobs submitted without waiting when no master daemon runs: a process of their own.

``start(data_dir, ops, lock_timeout)`` starts ``python -m
ganeti_lv.master.background`` in a new session, hands it the opcodes on
its stdin and returns the job id it answers on its stdout: the job is
recorded by that process (its pid is the job's), which then runs it to
its end with nobody reading its output (the job log has every line). A
process that records no job within START_TIMEOUT (say it waits for the
job log's lock, held by a stopped process) is stopped and an error raised. As
for a job of ``gnt-lv``, SIGTERM asks it to stop safely
(``gnt-lv job cancel ID`` sends it), and sent again changes nothing;
SIGINT, sent after it, interrupts it at once.

With a master daemon the daemon runs such jobs instead
(``MasterClient.enqueue``).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import IO, Any

from ganeti_lv import errors, paths
from ganeti_lv.master.daemonize import raise_open_files_limit
from ganeti_lv.opcodes import OpCode

# how long the new process may take to record its job (s): past it, it is
# stopped (it may wait for the job log's lock held by a stopped process)
START_TIMEOUT = 60.0

# how long a process stopped (SIGKILL) is waited for (s)
_STOP_WAIT = 5.0


def start(data_dir: str, ops: Sequence[OpCode], lock_timeout: float | None) -> int:
    """Start a job of ``ops`` in a process of its own; its id once it is recorded.

    A process that does not answer within START_TIMEOUT is stopped: an
    OpExecError (ECODE_ENVIRON). One that fails is an OpExecError with the
    last line of its error output.
    """
    request = json.dumps(
        {
            "data_dir": data_dir,
            "ops": [op.to_dict() for op in ops],
            "lock_timeout": lock_timeout,
        }
    )
    deadline = time.monotonic() + START_TIMEOUT
    proc = subprocess.Popen(
        [sys.executable, "-m", "ganeti_lv.master.background"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        close_fds=True,
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    proc.stdin.write(request.encode())
    proc.stdin.close()
    try:
        line = _read(proc.stdout, deadline, first_line=True).decode().strip()
    except TimeoutError:
        _stop(proc)
        proc.stderr.close()
        raise _no_answer(data_dir, proc.pid) from None
    finally:
        proc.stdout.close()
    if not line.isdigit():
        raise _failed(proc, deadline, line)
    # the process goes on alone; its stderr is not read any more
    proc.stderr.close()
    return int(line)


def _read(stream: IO[bytes], deadline: float, first_line: bool = False) -> bytes:
    """What the process writes to ``stream`` until it closes it (``first_line``:
    until the end of its first line, which is returned); TimeoutError past
    ``deadline`` (``time.monotonic``)."""
    fd = stream.fileno()
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    data = b""
    while not (first_line and b"\n" in data):
        left = max(deadline - time.monotonic(), 0)
        if not poller.poll(math.ceil(left * 1000)):  # what is written already is read
            raise TimeoutError
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        data += chunk
    return data.split(b"\n", 1)[0] if first_line else data


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop the process we started (its job, if recorded meanwhile, shows as lost)."""
    proc.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(_STOP_WAIT)


def _no_answer(data_dir: str, pid: int) -> errors.OpExecError:
    """The error of process ``pid``, stopped for recording no job in time."""
    lock = os.path.join(paths.jobs_dir(data_dir), ".lock")
    return errors.OpExecError(
        f"The background process (pid {pid}) did not record its job within"
        f" {START_TIMEOUT:g} s and was stopped; a process holding the job log's"
        f" lock {lock} may be stopped or stuck",
        errors.ECODE_ENVIRON,
    )


def _failed(proc: subprocess.Popen[bytes], deadline: float, line: str) -> errors.OpExecError:
    """The error of a process that answered no job id: the last line of its
    error output (read until the deadline; past it, the process is stopped)."""
    assert proc.stderr is not None
    err = b""
    try:
        err = _read(proc.stderr, deadline)
        proc.wait(max(deadline - time.monotonic(), 0))
    except (TimeoutError, subprocess.TimeoutExpired):
        _stop(proc)  # what it wrote before stays the message
    finally:
        proc.stderr.close()
    text = err.decode(errors="replace").strip().splitlines()
    return errors.OpExecError(
        "Could not start the job in the background: " + (text[-1] if text else line or "no answer"),
        errors.ECODE_FAULT,
    )


def _run(request: dict[str, Any]) -> int:
    from ganeti_lv.cancel import Cancellation
    from ganeti_lv.context import Context
    from ganeti_lv.master.runner import run_job

    ops = [OpCode.from_dict(op) for op in request["ops"]]
    ctx = Context.from_data_dir(request["data_dir"], lock_timeout=request.get("lock_timeout"))
    cancel = Cancellation()

    def on_signal(signum: int, _frame: Any) -> None:
        # a cancel sent again (SIGTERM) changes nothing; a second SIGINT interrupts
        if cancel.is_set():
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            return
        cancel.request("canceled by request")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    job = ctx.jobs.create_job(ops, start=True)
    sys.stdout.write(f"{job.id}\n")
    sys.stdout.flush()
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)
    try:
        run_job(ctx, job, ops, None, cancel)
    except BaseException:  # noqa: BLE001 - the job log has the outcome
        return 1
    finally:
        ctx.close()
    return 0


def main() -> int:
    """The background process: read the request, record and run the job."""
    raise_open_files_limit()  # a job taking every lock of a level holds a file per lock
    request = json.loads(sys.stdin.read())
    return _run(request)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
