"""Error tree of ganeti_lv, with Ganeti's error codes.

::

    GenericError
     +-- OpPrereqError(msg, ecode)     prerequisites not met; nothing changed
     +-- OpExecError(msg)              failure while executing (Exec)
     |    +-- MigrationAborted         a migration was aborted; instance still on source
     |    +-- OperationCanceled        stopped on request, its work rolled back
     +-- HooksAbort(results, nodes)    a pre hook failed (node, script, output) list
     +-- HooksFailure                  hooks could not run at all
     +-- ConfigurationError            configuration missing, corrupt or inconsistent
     |    +-- ConfigVersionMismatch
     +-- LockError                     lock could not be taken
     |    +-- LockTimeout
     +-- JobError                      unknown job, bad job file
     +-- NodeError                     an operation on a node failed
          +-- NodeUnreachable          SSH or libvirt could not connect
          +-- HostKeyError             node's SSH host key unknown or changed
          +-- HypervisorError          libvirt reported an error
               +-- InstanceNotFound    no such domain on the node
          +-- RemoteCommandError       a remote command exited non-zero

Every error that reaches a user carries an ``ecode`` (Ganeti's strings below);
``OpExecError`` and friends default to ``ECODE_FAULT`` unless told otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

ECODE_INVAL = "wrong_input"
ECODE_STATE = "wrong_state"
ECODE_NOENT = "unknown_entity"
ECODE_ENVIRON = "environment_error"
ECODE_NORES = "insufficient_resources"
ECODE_TEMP_NORES = "temp_insufficient_resources"
ECODE_EXISTS = "already_exists"
ECODE_NOTUNIQUE = "resource_not_unique"
ECODE_FAULT = "internal_error"

ECODE_ALL = frozenset(
    [
        ECODE_INVAL,
        ECODE_STATE,
        ECODE_NOENT,
        ECODE_ENVIRON,
        ECODE_NORES,
        ECODE_TEMP_NORES,
        ECODE_EXISTS,
        ECODE_NOTUNIQUE,
        ECODE_FAULT,
    ]
)


class GenericError(Exception):
    """Base of every ganeti_lv error; ``ecode`` tells the kind of failure.

    ``node``: the node the failure concerns, when one does (a node's
    answer, or its failure to answer).
    """

    ecode: str = ECODE_FAULT
    node: str | None = None

    def __init__(self, msg: str = "", ecode: str | None = None, node: str | None = None) -> None:
        super().__init__(msg)
        self.msg = msg
        if node is not None:
            self.node = node
        if ecode is not None:
            if ecode not in ECODE_ALL:
                raise ValueError(f"unknown error code {ecode!r}")
            self.ecode = ecode

    def __str__(self) -> str:
        return self.msg


class OpPrereqError(GenericError):
    """The operation's prerequisites are not met; nothing was changed.

    Unlike Ganeti, the error code is mandatory.
    """

    def __init__(self, msg: str, ecode: str, node: str | None = None) -> None:
        super().__init__(msg, ecode, node)


class NotEnoughSpace(OpPrereqError):
    """A node's free space cannot take what one job would write there (ECODE_NORES)."""

    def __init__(self, msg: str) -> None:
        super().__init__(msg, ECODE_NORES)


class OpExecError(GenericError):
    """The operation failed while executing."""


class MigrationAborted(OpExecError):
    """A migration was aborted; the instance keeps running on the source."""


class MigrationNotConverged(MigrationAborted):
    """The convergence policy aborted a migration: the guest dirtied its memory
    faster than the migration could send it (its own pace, not its target's)."""


class OperationCanceled(OpExecError):
    """The operation was stopped on request (Ctrl-C, SIGTERM, ``job cancel``).

    What it had begun was rolled back; the message says what is left.
    """


class HooksAbort(GenericError):
    """A pre-phase hook failed; ``results`` lists (node, script, output).

    ``nodes``: every node the phase ran on (those that failed among them).
    """

    def __init__(self, results: Sequence[tuple[str, str, str]], nodes: Sequence[str]) -> None:
        self.results = list(results)
        self.nodes = list(nodes)
        lines = ["Hook script failure(s), aborting:"]
        for node, script, output in self.results:
            lines.append(f"  node {node}, script {script}: {output.strip() or '(no output)'}")
        super().__init__("\n".join(lines), ECODE_ENVIRON)


class HooksFailure(GenericError):
    """Hooks could not be run at all (not a script failure)."""


class ConfigurationError(GenericError):
    """The configuration is missing, corrupt or inconsistent."""


class ConfigVersionMismatch(ConfigurationError):
    """The configuration file was written by an incompatible version."""


class LockError(GenericError):
    """A lock could not be acquired."""

    ecode = ECODE_TEMP_NORES


class LockTimeout(LockError):
    """Timed out while waiting for a lock."""


class JobError(GenericError):
    """Unknown job, a job file that cannot be read, or a job's end that cannot be written."""

    ecode = ECODE_NOENT


class MasterStopping(JobError):
    """The master daemon is stopping: it takes no new job (its client runs it itself)."""

    ecode = ECODE_STATE


class NodeError(GenericError):
    """An operation on a node failed."""

    ecode = ECODE_ENVIRON

    def __init__(self, msg: str, node: str | None = None, ecode: str | None = None) -> None:
        super().__init__(msg, ecode, node)


class NodeUnreachable(NodeError):
    """The node could not be reached over SSH or libvirt."""


class HostKeyError(NodeError):
    """The node's SSH host key is unknown or does not match known_hosts."""


class HypervisorError(NodeError):
    """libvirt reported an error."""


class InstanceNotFound(HypervisorError):
    """The domain does not exist on the node."""

    ecode = ECODE_NOENT


class RemoteCommandError(NodeError):
    """A command run on a node exited with a non-zero status."""

    def __init__(
        self,
        msg: str,
        node: str | None = None,
        exit_status: int | None = None,
        output: str = "",
    ) -> None:
        super().__init__(msg, node)
        self.exit_status = exit_status
        self.output = output


def _plain(value: Any) -> bool:
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    return False


def plain_attrs(err: BaseException) -> dict[str, Any]:
    """The attributes of ``err`` that are plain data (None, bools, numbers, strings and
    lists of them), with its ``ecode`` when it is one of ours: what rebuilds the error
    in another process (the master daemon's protocol, a job's record)."""
    attrs = {k: v for k, v in vars(err).items() if _plain(v)}
    if isinstance(err, GenericError):
        attrs["ecode"] = err.ecode  # a class attribute unless set on the error
    return attrs


def format_error(err: BaseException) -> str:
    """Return the text the CLI prints for an error, in Ganeti's wording."""
    if isinstance(err, OpPrereqError):
        return (
            "Failure: prerequisites not met for this operation:\n"
            f"error type: {err.ecode}, error details:\n{err.msg}"
        )
    if isinstance(err, HooksAbort):
        return f"Failure: hooks execution failed:\n{err.msg}"
    if isinstance(err, OpExecError):
        return f"Failure: command execution error:\n{err.msg}"
    if isinstance(err, GenericError):
        return f"Failure: {err.ecode}:\n{err.msg}"
    return f"Unhandled error: {err!r}"


# the classes of this module that Ganeti's errors module has too and puts in a
# job's result; every other error is reported there as an OpExecError (Ganeti
# raises node and hypervisor failures on the master as OpExecError)
GANETI_RESULT_CLASSES = frozenset(
    {
        "OpPrereqError",
        "OpExecError",
        "HooksAbort",
        "HooksFailure",
        "ConfigurationError",
        "ConfigVersionMismatch",
    }
)


def ganeti_class(cls: type) -> str:
    """The class of Ganeti's errors module a job of Ganeti's would show an error of ``cls`` as.

    The nearest of ``GANETI_RESULT_CLASSES`` it derives from; any other
    exception is an OpExecError, as Ganeti's job queue wraps it.
    """
    for base in cls.__mro__:
        if base.__name__ in GANETI_RESULT_CLASSES and issubclass(base, GenericError):
            return base.__name__
    return "OpExecError"
