"""The disk copy engine on this machine: a Runner that runs commands here, for tests.

``LocalRunner`` runs commands with subprocess (a ``node.transport.Runner``);
``LOCAL_ENDPOINT`` reaches the "target" with ``sh -c`` instead of ssh;
``copy_disk`` makes one copy between two local paths through the engine's
``CopyPlan``, exactly as a node's copy runs.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Sequence
from typing import Any

from ganeti_lv.errors import RemoteCommandError
from ganeti_lv.node.diskcopy import CopyEndpoint, CopyPlan, CopyStats
from ganeti_lv.node.transport import CommandResult


class _LocalProcess:
    def __init__(self, argv: Sequence[str]) -> None:
        self.proc = subprocess.Popen(
            list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.PIPE
        )

    def write(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def close_stdin(self) -> None:
        stdin, self.proc.stdin = self.proc.stdin, None  # communicate() would flush it
        if stdin is not None:
            with contextlib.suppress(OSError):
                stdin.close()

    def read(self, size: int = 65536) -> bytes:
        assert self.proc.stdout is not None
        return self.proc.stdout.read1(size)  # type: ignore[attr-defined]

    def wait(self, timeout: float | None = None, check: bool = True) -> CommandResult:
        out, err = self.proc.communicate(timeout=timeout)
        res = CommandResult(self.proc.returncode, out.decode(), err.decode())
        if check and res.failed:
            raise RemoteCommandError("command failed", "localhost", res.exit_status, res.output)
        return res

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


class LocalRunner:
    """``Runner`` on this machine (tests and single-host use)."""

    def run(
        self,
        cmd: str | Sequence[str],
        timeout: float | None = None,
        input: bytes | None = None,  # noqa: A002
        check: bool = True,
    ) -> CommandResult:
        """Run ``cmd`` (argv, or a string for sh -c) and return its result."""
        argv = ["sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)
        proc = subprocess.run(argv, input=input, capture_output=True, timeout=timeout)
        res = CommandResult(proc.returncode, proc.stdout.decode(), proc.stderr.decode())
        if check and res.failed:
            raise RemoteCommandError(
                f"command {argv[0]} failed", "localhost", res.exit_status, res.output
            )
        return res

    def open_exec(self, cmd: str | Sequence[str]) -> _LocalProcess:
        """Start ``cmd`` with stdout streamed."""
        return _LocalProcess(["sh", "-c", cmd] if isinstance(cmd, str) else cmd)


LOCAL_ENDPOINT = CopyEndpoint(argv=["sh", "-c"], name="localhost")


def copy_disk(
    src: str, dst: str, endpoint: CopyEndpoint = LOCAL_ENDPOINT, **kwargs: Any
) -> CopyStats:
    """Copy local file ``src`` to ``dst`` through the copy engine (``CopyPlan``'s arguments).

    ``endpoint``: how the "source" reaches the "target" (a test may put a
    faulty transport there).
    """
    run_kw = {k: kwargs.pop(k) for k in ("progress_fn", "start_fn") if k in kwargs}
    plan = CopyPlan.make("local", src, endpoint, dst, **kwargs)
    return plan.run(LocalRunner(), **run_kw)
