"""Clean up after a test process that died without its own tear-down.

A crashed or killed pytest (a segfault in a C extension, SIGKILL from a
timeout) runs no ``finally`` and no ``atexit``: a cluster it brought up
would keep its guests, namespaces and daemons, and the next run on the
machine would find them.

``Guardian(argv)`` starts this file as a process of its own session that
waits on a pipe from the test process. ``release()`` says the tear-down ran
and the guardian ends without doing anything. If the pipe closes without
that (the test process is gone), the guardian runs ``argv`` (e.g.
``gnt-lv-devcluster down --dir D``) and removes ``remove_dir``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence

from ganeti_lv.master.processes import process_start_time

RELEASED = b"released"
# how long the clean-up command may take before the guardian gives up on it
CLEANUP_TIMEOUT = 300.0


class Guardian:
    """A process that runs ``argv`` if this process dies before ``release()``."""

    def __init__(self, argv: Sequence[str], remove_dir: str | None = None) -> None:
        cmd = [sys.executable, os.path.abspath(__file__)]
        if remove_dir:
            cmd += ["--remove-dir", remove_dir]
        self._proc = subprocess.Popen(
            [*cmd, "--", *argv],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            start_new_session=True,  # not in the test process's group, so not killed with it
        )

    def release(self) -> None:
        """The tear-down ran: end the guardian without its clean-up."""
        stdin = self._proc.stdin
        assert stdin is not None
        with contextlib.suppress(BrokenPipeError):
            stdin.write(RELEASED)
        with contextlib.suppress(BrokenPipeError):
            stdin.close()
        self._proc.wait(timeout=30)


@contextlib.contextmanager
def guarded(argv: Sequence[str], remove_dir: str | None = None) -> Iterator[None]:
    """Run the block with a ``Guardian(argv, remove_dir)``, released when the block
    ended without an error: a tear-down in it that failed leaves the guardian to
    try once more when this process has ended."""
    guardian = Guardian(argv, remove_dir)
    yield
    guardian.release()


def devcluster_down(directory: str) -> list[str]:
    """The command that brings the local cluster in ``directory`` down."""
    return [sys.executable, "-m", "ganeti_lv.devcluster.cli", "down", "--dir", directory]


def terminate_if_same(pid: int) -> list[str]:
    """The command that sends SIGTERM to ``pid`` only while it is the process that runs
    now (same start time): a PID given to another process since is left alone."""
    start = process_start_time(pid)
    program = (
        "import os, signal, sys\n"
        "from ganeti_lv.master.processes import process_alive\n"
        "pid, start = int(sys.argv[1]), int(sys.argv[2])\n"
        "if process_alive(pid, start):\n"
        "    os.kill(pid, signal.SIGTERM)\n"
    )
    return [sys.executable, "-c", program, str(pid), str(start)]


def peer_down(directory: str) -> list[str]:
    """The command that brings the Ganeti peer in ``directory`` down."""
    return [sys.executable, "-m", "ganeti_lv.devcluster.cli", "peer", "down", "--dir", directory]


def _say(msg: str) -> None:
    with contextlib.suppress(OSError):  # the test process's stderr may be gone with it
        print(f"test guardian: {msg}", file=sys.stderr, flush=True)


def main(args: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--remove-dir")
    parser.add_argument("argv", nargs="+")
    opts = parser.parse_args(args)
    # a Ctrl-C or hang-up meant for the test run must not end the guardian too
    for sig in (signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    # not to EOF: a child the test process forked holds the pipe's write end too
    if sys.stdin.buffer.read(len(RELEASED)) == RELEASED:
        return 0
    _say(f"the test process ended without its tear-down; running {' '.join(opts.argv)}")
    try:
        res = subprocess.run(
            opts.argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, timeout=CLEANUP_TIMEOUT
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        _say(f"clean-up failed: {err}")
        return 1
    if res.returncode:
        # the directory holds what a later clean-up by hand needs (its record)
        _say(f"clean-up exited with {res.returncode}; {opts.remove_dir or 'nothing'} kept")
        return res.returncode
    if opts.remove_dir:
        shutil.rmtree(opts.remove_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
