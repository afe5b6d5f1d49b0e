"""What the master gets back from the nodes, and how it reaches them.

- ``NodeResult``: the outcome of one node operation (Ganeti's RpcResult):
  payload, fail_msg, offline, with ``Raise`` and ``Warn`` for the caller to
  decide whether a failure is fatal.
- ``node_call(op, node, *args)``: the one place where node operations
  become ``NodeResult``: a node marked offline is never contacted, a
  ``NodeError`` becomes a failed result. The LUs call every node operation
  through it (``node_call(self.rpc.instance_info, node, name)``); mypy
  checks the arguments against the operation's own signature.
- ``CommandResult`` (a command's exit status and output) and
  ``HookScriptResult`` (one hook script's outcome on one node).
- ``Runner``: what the disk copy engine and the export directories need
  from a connection to a node (run a command, stream one); ``NodeTransport``
  adds files and directory listings. ``node.ssh.SshClient`` is both.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Concatenate, Generic, ParamSpec, Protocol, TypeVar

from ganeti_lv.errors import ECODE_ENVIRON, NodeError, OpExecError, OpPrereqError
from ganeti_lv.objects import Node

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

FeedbackFn = Callable[[str], None]

OFFLINE_MSG = "Node is marked offline"


class NodeResult(Generic[T]):
    """Outcome of one operation on one node (Ganeti's RpcResult)."""

    def __init__(
        self,
        node: str,
        payload: T | None = None,
        fail_msg: str | None = None,
        offline: bool = False,
        error: NodeError | None = None,
    ) -> None:
        self.node = node
        self.payload = payload
        self.fail_msg = fail_msg
        self.offline = offline
        self.error = error

    @property
    def ok(self) -> bool:
        """True when the operation succeeded."""
        return self.fail_msg is None

    def Raise(self, msg: str, prereq: bool = False, ecode: str | None = None) -> T:  # noqa: N802
        """Raise OpPrereqError (prereq) or OpExecError on failure; return the payload."""
        if self.fail_msg is None:
            return self.payload  # type: ignore[return-value]
        text = f"{msg}: {self.fail_msg}" if msg else self.fail_msg
        if prereq:
            raise OpPrereqError(text, ecode or ECODE_ENVIRON, node=self.node)
        raise OpExecError(text, ecode, node=self.node)

    def Warn(self, msg: str, feedback_fn: FeedbackFn) -> None:  # noqa: N802
        """Report a failure as a warning line instead of raising."""
        if self.fail_msg is not None:
            feedback_fn(f" - WARNING: {msg}: {self.fail_msg}")

    def __repr__(self) -> str:
        return f"NodeResult({self.node!r}, ok={self.ok}, fail_msg={self.fail_msg!r})"


def node_call(
    op: Callable[Concatenate[Node, P], R], node: Node, *args: P.args, **kwargs: P.kwargs
) -> NodeResult[R]:
    """``op(node, *args, **kwargs)`` as a ``NodeResult`` for ``node``.

    ``op`` is a node operation (a method of ``NodeOps``) whose first
    argument is the node it runs on. A node marked offline is not
    contacted; a ``NodeError`` becomes a failed result carrying the error
    (its ecode tells the LU why). Anything else is a bug and propagates.
    """
    if node.offline:
        return NodeResult(node.name, fail_msg=OFFLINE_MSG, offline=True)
    try:
        return NodeResult(node.name, payload=op(node, *args, **kwargs))
    except NodeError as err:
        return NodeResult(node.name, fail_msg=str(err), error=err)


@dataclass
class CommandResult:
    """Exit status and output of a command run on a node."""

    exit_status: int
    stdout: str
    stderr: str

    @property
    def failed(self) -> bool:
        """True if the command exited non-zero."""
        return self.exit_status != 0

    @property
    def output(self) -> str:
        """stdout and stderr together."""
        return self.stdout + self.stderr


@dataclass
class HookScriptResult:
    """One hook script's outcome on one node."""

    script: str
    status: str
    output: str


class StreamProcess(Protocol):
    """A running command whose stdout can be read while it runs."""

    def read(self, size: int = ...) -> bytes:
        """Up to ``size`` bytes of stdout; b"" at the end."""

    def write(self, data: bytes) -> None:
        """Send data to the command's stdin."""

    def close_stdin(self) -> None:
        """End the command's stdin (a command that waits for it: ``node.ssh``)."""

    def wait(self, timeout: float | None = None, check: bool = True) -> CommandResult:
        """Wait for the exit; the rest of stdout is in the result."""

    def close(self) -> None:
        """Stop reading; the command sees its stdout closed."""


class Runner(Protocol):
    """Commands on one node: run one to its end, or start one to stream."""

    def run(
        self,
        cmd: str | Sequence[str],
        timeout: float | None = None,
        input: bytes | None = None,  # noqa: A002 (subprocess' name)
        check: bool = True,
    ) -> CommandResult:
        """Run a command to completion (argv, or a string for the shell)."""

    def open_exec(self, cmd: str | Sequence[str]) -> StreamProcess:
        """Start a command for streaming."""


class NodeTransport(Runner, Protocol):
    """A node's commands, files and directory listings (``SshClient`` has them)."""

    node_name: str

    def put_bytes(self, data: bytes, path: str, mode: int = 0o644) -> None:
        """Write a file on the node atomically."""

    def get_bytes(self, path: str) -> bytes:
        """Read a whole file from the node."""

    def listdir(self, path: str, missing_ok: bool = False) -> list[str]:
        """Names in a directory of the node."""

    def exists(self, path: str) -> bool:
        """True if ``path`` exists on the node."""
