"""Jobs submitted without waiting when no master daemon runs: a process of their own.

``start(data_dir, ops, lock_timeout)`` starts ``python -m
ganeti_lv.master.background`` in a new session, hands it the opcodes on
its stdin and returns the job id it answers on its stdout: the job is
recorded by that process (its pid is the job's), which then runs it to
its end with nobody reading its output (the job log has every line). As
for a job of ``gnt-lv``, SIGTERM asks it to stop safely
(``gnt-lv job cancel ID`` sends it), and sent again changes nothing;
SIGINT, sent after it, interrupts it at once.

With a master daemon the daemon runs such jobs instead
(``MasterClient.enqueue``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

from ganeti_lv import errors
from ganeti_lv.master.daemonize import raise_open_files_limit
from ganeti_lv.opcodes import OpCode

# how long the new process may take to record its job (s)
START_TIMEOUT = 60.0


def start(data_dir: str, ops: Sequence[OpCode], lock_timeout: float | None) -> int:
    """Start a job of ``ops`` in a process of its own; its id once it is recorded."""
    request = json.dumps(
        {
            "data_dir": data_dir,
            "ops": [op.to_dict() for op in ops],
            "lock_timeout": lock_timeout,
        }
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "ganeti_lv.master.background"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        close_fds=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(request.encode())
    proc.stdin.close()
    line = proc.stdout.readline().decode().strip()
    proc.stdout.close()
    if not line.isdigit():
        try:
            _, err = proc.communicate(timeout=START_TIMEOUT)
        except subprocess.TimeoutExpired:
            err = b""
        text = (err or b"").decode(errors="replace").strip().splitlines()
        raise errors.OpExecError(
            "Could not start the job in the background: "
            + (text[-1] if text else line or "no answer"),
            errors.ECODE_FAULT,
        )
    # the process goes on alone; its stderr is not read any more
    if proc.stderr is not None:
        proc.stderr.close()
    return int(line)


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
