"""Submit opcodes to the master daemon (``gnt-lv-masterd``) over its Unix socket.

The daemon runs jobs with its node connections already open, as Ganeti's
master daemon does; ``gnt-lv`` uses it whenever it runs and otherwise runs
the job in its own process (``ganeti_lv.client.Client``). Both give the same
feedback lines, the same result and the same typed errors.

The protocol is one JSON object per line. The client sends
``{"submit": <opcode dict>, "lock_timeout": <s or null>}`` and may later send
``{"cancel": <reason>}``; the daemon answers with any number of
``{"feedback": <line>}`` and then one ``{"result": ...}`` or
``{"error": {"class": ..., "msg": ..., "attrs": {...}}}``. A client that goes
away does not stop its job (it is in the job log); a cancel request does,
safely, as SIGINT does for a job run in-process; this client sends one when
it is interrupted (KeyboardInterrupt) while waiting.

Light on purpose (stdlib, errors, opcodes): the CLI imports it before
anything else.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import socket

from ganeti_lv import errors, paths
from ganeti_lv.cancel import Cancellation
from ganeti_lv.opcodes import OpCode

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

# How often a waiting client looks at its cancel request (s).
CANCEL_POLL = 0.1


def encode_line(obj: Any) -> bytes:
    """One protocol line."""
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


def _simple(value: Any) -> bool:
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_simple(v) for v in value)
    return False


def encode_error(err: BaseException) -> dict[str, Any]:
    """An error as the daemon sends it: class name, message, plain attributes."""
    attrs = {k: v for k, v in vars(err).items() if _simple(v)}
    return {"class": type(err).__name__, "msg": str(err), "attrs": attrs}


def decode_error(data: dict[str, Any]) -> errors.GenericError:
    """The typed error a daemon's ``encode_error`` describes.

    A class that is not one of ganeti_lv's errors (a bug in the daemon)
    becomes an ``OpExecError`` naming it, with ``ECODE_FAULT``.
    """
    name = str(data.get("class", ""))
    msg = str(data.get("msg", ""))
    cls = getattr(errors, name, None)
    if not (isinstance(cls, type) and issubclass(cls, errors.GenericError)):
        return errors.OpExecError(f"{name}: {msg}" if name else msg, errors.ECODE_FAULT)
    err = cls.__new__(cls)
    Exception.__init__(err, msg)
    err.msg = msg
    attrs = data.get("attrs") or {}
    for key, value in attrs.items():
        setattr(err, key, value)
    if err.ecode not in errors.ECODE_ALL:
        err.ecode = errors.ECODE_FAULT
    return err


def connect(data_dir: str | None = None, timeout: float = 5.0) -> MasterClient | None:
    """A client of the data dir's master daemon, or None when none runs there."""
    path = paths.masterd_socket(paths.data_dir(data_dir))
    if not os.path.exists(path):
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
    except OSError:
        sock.close()
        return None
    return MasterClient(path, sock)


class MasterClient:
    """Runs opcodes in the master daemon; the same ``submit`` as ``Client``."""

    ctx = None  # no local context: work done ahead (warm-ups) is the daemon's

    def __init__(self, path: str, sock: socket.socket | None = None) -> None:
        self.path = path
        self._sock = sock
        self.lock_timeout: float | None = None

    def _connection(self) -> socket.socket:
        sock, self._sock = self._sock, None
        if sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(self.path)
            except OSError as err:
                sock.close()
                raise errors.OpExecError(
                    f"Cannot reach the master daemon at {self.path}: {err}", errors.ECODE_ENVIRON
                ) from err
        sock.settimeout(None)
        return sock

    def submit(
        self,
        op: OpCode,
        feedback_fn: Callable[[str], None] | None = None,
        cancel: Cancellation | None = None,
    ) -> Any:
        """Run ``op`` in the daemon; its result, or its typed error raised here.

        ``cancel``, when set (a signal handler, another thread), is passed on
        to the daemon, which stops the job safely.
        """
        sock = self._connection()
        try:
            sock.sendall(encode_line({"submit": op.to_dict(), "lock_timeout": self.lock_timeout}))
            try:
                return self._wait(sock, feedback_fn, cancel)
            except KeyboardInterrupt:
                # as in-process: an interrupted command does not go on in the
                # background (a job past its point of no return still ends safely)
                with contextlib.suppress(OSError):
                    sock.sendall(encode_line({"cancel": "interrupted by the user"}))
                raise
        except OSError as err:  # a reset or a broken pipe: the daemon went away
            raise _gone(f": {err}") from err
        finally:
            sock.close()

    def _wait(
        self,
        sock: socket.socket,
        feedback_fn: Callable[[str], None] | None,
        cancel: Cancellation | None,
    ) -> Any:
        buf = b""
        cancel_sent = False
        while True:
            if cancel is not None and cancel.is_set() and not cancel_sent:
                sock.sendall(encode_line({"cancel": cancel.reason or "canceled by the client"}))
                cancel_sent = True
            ready, _, _ = select.select([sock], [], [], CANCEL_POLL if cancel is not None else None)
            if not ready:
                continue
            chunk = sock.recv(65536)
            if not chunk:
                raise _gone("")
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                msg = json.loads(line)
                if "feedback" in msg:
                    if feedback_fn is not None:
                        feedback_fn(msg["feedback"])
                elif "result" in msg:
                    return msg["result"]
                elif "error" in msg:
                    raise decode_error(msg["error"])

    def close(self) -> None:
        """Drop an unused connection."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> MasterClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _gone(detail: str) -> errors.OpExecError:
    return errors.OpExecError(
        f"The master daemon closed the connection before the job ended{detail} "
        "(see gnt-lv job list)",
        errors.ECODE_FAULT,
    )
