"""Every retry policy of ganeti_lv, in one place.

Only idempotent calls are retried: opening an SSH or libvirt connection,
writing a job's final record (the same record again).
A policy is a ``tenacity.Retrying`` object; each one re-raises the last
error (``reraise=True``) so callers see the typed ganeti_lv error, never a
``tenacity.RetryError``. ``sleep`` is injectable so tests can run the
policies without waiting.

Usage::

    policy = ssh_connect_policy(sleep=fake_sleep)
    client = policy(connect_fn)          # or: call_with_retry(policy, connect_fn)
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from typing import Any, TypeVar

import tenacity

from ganeti_lv.errors import NodeUnreachable

T = TypeVar("T")
E = TypeVar("E", bound=BaseException)

SleepFn = Callable[[float], None]

# SSH connect: a node that is rebooting or whose sshd restarts comes back
# within seconds; a node that is down should fail fast enough for the CLI.
SSH_CONNECT_ATTEMPTS = 3
SSH_CONNECT_WAIT_MIN = 0.5
SSH_CONNECT_WAIT_MAX = 4.0

# libvirt connect: libvirtd may be restarting (socket activation).
LIBVIRT_CONNECT_ATTEMPTS = 3
LIBVIRT_CONNECT_WAIT_MIN = 0.5
LIBVIRT_CONNECT_WAIT_MAX = 4.0

# A job's final record: a disk full for a moment (logs rotated, a copy
# removed) must not turn an operation that succeeded into a failed job.
JOB_END_WRITE_ATTEMPTS = 3
JOB_END_WRITE_WAIT_MIN = 0.5
JOB_END_WRITE_WAIT_MAX = 2.0


def is_transient(err: BaseException) -> bool:
    """False for errors flagged ``transient = False`` (e.g. SSH authentication failures)."""
    return bool(getattr(err, "transient", True))


def not_retried(err: E) -> E:
    """Flag ``err`` as final (``transient = False``): no policy retries it; returns it."""
    err.transient = False  # type: ignore[attr-defined]
    return err


def _policy(
    attempts: int,
    wait_min: float,
    wait_max: float,
    retry_on: tuple[type[BaseException], ...],
    sleep: SleepFn,
) -> tenacity.Retrying:
    return tenacity.Retrying(
        stop=tenacity.stop_after_attempt(max(1, attempts)),
        wait=tenacity.wait_exponential(multiplier=wait_min, min=wait_min, max=wait_max),
        retry=tenacity.retry_if_exception(
            lambda err: isinstance(err, retry_on) and is_transient(err)
        ),
        reraise=True,
        sleep=sleep,
    )


def ssh_connect_policy(
    attempts: int = SSH_CONNECT_ATTEMPTS, sleep: SleepFn = time.sleep
) -> tenacity.Retrying:
    """Retry an SSH connect that failed with ``NodeUnreachable``.

    Host-key failures (``HostKeyError``) and authentication failures (flagged
    ``transient = False``) are not retried.
    """
    return _policy(attempts, SSH_CONNECT_WAIT_MIN, SSH_CONNECT_WAIT_MAX, (NodeUnreachable,), sleep)


def libvirt_connect_policy(
    attempts: int = LIBVIRT_CONNECT_ATTEMPTS,
    sleep: SleepFn = time.sleep,
    retry_on: tuple[type[BaseException], ...] = (NodeUnreachable,),
) -> tenacity.Retrying:
    """Retry opening a libvirt connection (the caller maps libvirt errors first)."""
    return _policy(attempts, LIBVIRT_CONNECT_WAIT_MIN, LIBVIRT_CONNECT_WAIT_MAX, retry_on, sleep)


def job_end_write_policy(
    attempts: int = JOB_END_WRITE_ATTEMPTS, sleep: SleepFn = time.sleep
) -> tenacity.Retrying:
    """Retry writing a job's final record that failed with ``OSError``."""
    return _policy(attempts, JOB_END_WRITE_WAIT_MIN, JOB_END_WRITE_WAIT_MAX, (OSError,), sleep)


class SharedFailure:
    """The failure of a connection attempt, shared with the callers that waited for it.

    Attempts are made one at a time, under the connection's lock. A caller
    takes a ``mark()`` before it waits for that lock; under it, ``check(mark)``
    raises (a copy of) the failure of an attempt that ended while it waited,
    instead of letting it make one of its own: a node that does not answer
    costs each caller about one attempt's time, not the sum of the attempts
    of the callers queued before it. ``attempt(fn)`` makes one and records
    how it ended.
    """

    def __init__(self) -> None:
        self._ended = 0
        self._failure: Exception | None = None

    def mark(self) -> int:
        """How many attempts have ended so far."""
        return self._ended

    def check(self, mark: int) -> None:
        """Raise the failure of the last attempt when one ended after ``mark``."""
        failure = self._failure
        if self._ended != mark and failure is not None:
            raise copy.copy(failure) from failure

    def attempt(self, fn: Callable[[], T]) -> T:
        """``fn()``, its failure recorded for the callers waiting meanwhile."""
        try:
            result = fn()
        except Exception as err:
            self._failure = err
            raise
        finally:
            self._ended += 1
        self._failure = None
        return result


def call_with_retry(
    policy: tenacity.Retrying, fn: Callable[..., T], *args: Any, **kwargs: Any
) -> T:
    """Call ``fn(*args, **kwargs)`` under ``policy``; the last error is re-raised."""
    return policy(fn, *args, **kwargs)
