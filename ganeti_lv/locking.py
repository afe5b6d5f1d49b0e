"""Lock levels and a lock manager that holds across processes.

Every lock is a POSIX advisory lock (``flock``) on a file
``<locks_dir>/<level>/<name>.lock``; locks die with their process, so a
``kill -9`` never leaves a stale lock. Each level also has a gate file
``<locks_dir>/<level>/.gate``:

* taking single names: the gate is held shared while the names are taken
  (sorted), then let go; an exclusive taker of the cluster level's one
  lock (the BGL) holds the gate exclusively instead, so the shared takers
  that come after it wait behind it (``flock`` itself grants a shared lock
  while an exclusive one waits: a busy cluster would starve node add,
  node remove or cluster modify);
* taking the whole level (``ALL_SET``): the gate is taken exclusively while
  the level's names are listed (all existing lock files plus the names the
  ``names_fn`` reports), then every name lock in sorted order. An exclusive
  ``ALL_SET`` keeps the gate exclusively, so nobody can lock a new name of
  the level meanwhile; a shared one lets it go before it waits for the
  names, so others take single names while it waits (a cluster verify
  waiting for one busy instance holds up no other job).

All acquisitions follow one global order (level, gate, sorted names) and a
holder never waits for something earlier in that order than what it holds,
so no set of lock managers can deadlock. Releasing part of an ``ALL_SET``
(``release(level, names)``) drops the gate, which downgrades the holder to
the names it keeps without a window in which they are unlocked.

``flock`` locks belong to an open file description: a ``LockManager`` keeps
one descriptor per lock and per thread, so two managers (or two threads of
one manager) exclude each other exactly as two processes do.

A level whose names ``names_fn`` lists (instances, nodes) keeps no lock
file of a name that is gone: the exclusive holder of a name ``names_fn``
does not list (an instance removed, one whose creation failed, a stale
file an exclusive ``ALL_SET`` took) deletes its file as it lets go. That
is safe because whoever takes a name checks, once it holds the lock, that
its descriptor is still the file at the name's path, and else opens the
name's file again: a holder of a deleted file's lock never shares the name
with a holder of the new file's. (A waiter may so create the file of a
name gone again; the next exclusive ``ALL_SET`` deletes it.) Every process
that takes locks must check so: upgrade with no job running.

Who holds a lock: a thread that set an owner (``set_owner``, a job's id and
summary) writes it into each lock file it takes and into a gate it keeps;
an exclusive holder empties the file again when it lets go. A thread that
waits (``set_wait_report``) reads the file of what it waits for and is told
every ``interval`` seconds how long it waited and who holds the lock (best
effort: several shared holders share one file, the last one's owner stays).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import threading
import time
import urllib.parse
from collections.abc import Callable, Collection, Iterable
from typing import Any, Final

from ganeti_lv.errors import ECODE_FAULT, LockError, LockTimeout

LEVEL_CLUSTER: Final = 0
LEVEL_INSTANCE: Final = 1
LEVEL_NODEGROUP: Final = 2
LEVEL_NODE: Final = 3
LEVEL_NODE_RES: Final = 4
LEVEL_NETWORK: Final = 5
# an export's name (its instance's): held by the export that writes it and by
# ``backup remove`` (exclusive), and by an import that reads it (shared)
LEVEL_EXPORT: Final = 6

LEVELS: Final = (
    LEVEL_CLUSTER,
    LEVEL_INSTANCE,
    LEVEL_NODEGROUP,
    LEVEL_NODE,
    LEVEL_NODE_RES,
    LEVEL_NETWORK,
    LEVEL_EXPORT,
)
LEVEL_NAMES: Final = {
    LEVEL_CLUSTER: "cluster",
    LEVEL_INSTANCE: "instance",
    LEVEL_NODEGROUP: "nodegroup",
    LEVEL_NODE: "node",
    LEVEL_NODE_RES: "node-res",
    LEVEL_NETWORK: "network",
    LEVEL_EXPORT: "export",
}

BGL_NAME: Final = "BGL"

_GATE = ".gate"
_SUFFIX = ".lock"
_POLL_MIN = 0.001
_POLL_MAX = 0.05
_OWNER_BYTES = 512  # a lock file's owner record: JSON, padded with spaces

# (level name, lock name or None for the level's gate, owner record or None, seconds waited)
WaitReportFn = Callable[[str, "str | None", "dict[str, Any] | None", float], None]


class _AllSet:
    """Type of the ``ALL_SET`` sentinel: every lock of a level."""

    _instance: _AllSet | None = None

    def __new__(cls) -> _AllSet:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "ALL_SET"

    def __reduce__(self) -> str:
        return "ALL_SET"


ALL_SET: Final = _AllSet()
"""Sentinel for ``needed_locks[level]``: the whole level."""

# the names of a level that exist (None: the level's names are not listed)
NamesFn = Callable[[int], "Collection[str] | None"]


def _file_name(name: str) -> str:
    return urllib.parse.quote(name, safe="") + _SUFFIX


def _is_at(fd: int, path: str) -> bool:
    """Whether ``fd`` is still the file at ``path``: not deleted since it was opened
    (nor renamed away, as an NFS client does with an open file it deletes). The open
    ``fd`` keeps its inode from being reused by a new file at ``path``."""
    try:
        there = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (there.st_ino, there.st_dev) == (mine.st_ino, mine.st_dev)


class _ThreadState:
    """Locks one thread holds through one manager."""

    def __init__(self) -> None:
        # level -> name -> (fd, shared)
        self.held: dict[int, dict[str, tuple[int, bool]]] = {}
        # level -> gate fd while the gate is kept (exclusive ALL_SET)
        self.gates: dict[int, int] = {}
        # level -> names locked only to cover the whole level (not reported)
        self.hidden: dict[int, set[str]] = {}
        # set (e.g. a job's cancel request) to stop waiting for a lock
        self.interrupt: threading.Event | None = None
        # who takes locks in this thread (written into the lock files), as padded JSON
        self.owner: bytes | None = None
        # told every wait_interval seconds while waiting for a lock
        self.wait_report: WaitReportFn | None = None
        self.wait_interval = 10.0


def _read_owner(fd: int) -> dict[str, Any] | None:
    """The owner record in a lock file, None when empty or unreadable (best effort)."""
    try:
        data = os.pread(fd, _OWNER_BYTES, 0).strip()
        record = json.loads(data) if data else None
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


class LockManager:
    """Cross-process shared/exclusive locks by (level, name); see the module docstring.

    ``names_fn(level)`` (optional) lists the names that exist at a level so
    that ``ALL_SET`` covers them even before anybody locked them once, and
    so that the files of names gone are deleted (None: not listed).
    ``clock`` and ``sleep`` are injectable for tests.
    """

    def __init__(
        self,
        locks_dir: str,
        names_fn: NamesFn | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.locks_dir = locks_dir
        self.names_fn = names_fn
        self._clock = clock
        self._sleep = sleep
        self._local = threading.local()
        # level -> its directory, once known to exist (see _open)
        self._dirs: dict[int, str] = {}

    # ------------------------------------------------------------ helpers
    @property
    def _state(self) -> _ThreadState:
        state = getattr(self._local, "state", None)
        if state is None:
            state = self._local.state = _ThreadState()
        return state

    def _level_dir(self, level: int) -> str:
        if level not in LEVEL_NAMES:
            raise LockError(f"Unknown lock level {level!r}", ECODE_FAULT)
        path = os.path.join(self.locks_dir, LEVEL_NAMES[level])
        os.makedirs(path, exist_ok=True)
        self._dirs[level] = path
        return path

    def _open(self, level: int, file_name: str) -> int:
        directory = self._dirs.get(level)
        if directory is not None:
            try:
                return os.open(
                    f"{directory}/{file_name}", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600
                )
            except FileNotFoundError:  # the directory went away: create it again
                pass
        path = os.path.join(self._level_dir(level), file_name)
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)

    def set_interrupt(self, event: threading.Event | None) -> None:
        """Stop this thread's lock waits once ``event`` is set (None: wait as asked).

        A job's cancel request: the wait then ends with LockError instead of
        lasting until the lock is free (or its timeout).
        """
        self._state.interrupt = event

    def set_owner(self, owner: dict[str, Any] | None) -> None:
        """Write ``owner`` (JSON-able: a job's id and summary) into the locks this thread takes."""
        if owner is None:
            self._state.owner = None
            return
        text = json.dumps(owner, separators=(",", ":")).encode()[: _OWNER_BYTES - 1]
        self._state.owner = text.ljust(_OWNER_BYTES - 1) + b"\n"

    def set_wait_report(self, report: WaitReportFn | None, interval: float = 10.0) -> None:
        """Call ``report`` every ``interval`` s while this thread waits for a lock (None: don't)."""
        state = self._state
        state.wait_report, state.wait_interval = report, interval

    def _mark_owner(self, fd: int) -> None:
        owner = self._state.owner
        if owner is not None:
            # the record is a courtesy to waiters, never a reason to fail
            with contextlib.suppress(OSError):
                os.pwrite(fd, owner, 0)

    @staticmethod
    def _clear_owner(fd: int, shared: bool) -> None:
        if not shared:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)

    def _lock_fd(
        self,
        fd: int,
        shared: bool,
        deadline: float | None,
        what: Callable[[], str],
        where: tuple[str, str | None] = ("", None),
    ) -> None:
        """flock ``fd``; wait until ``deadline`` (clock time) or forever when None.

        ``what()`` gives the LockTimeout message (built only on a timeout);
        ``where`` (level name, lock name or None for the gate) is what a wait
        report names.
        """
        op = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
        state = self._state
        interrupt, report = state.interrupt, state.wait_report
        if deadline is None and interrupt is None and report is None:
            fcntl.flock(fd, op)
            return
        delay = _POLL_MIN
        started = self._clock()
        next_report = started + state.wait_interval
        while True:
            try:
                fcntl.flock(fd, op | fcntl.LOCK_NB)
                return
            except OSError as err:
                if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise
            now = self._clock()
            if report is not None and now >= next_report:
                next_report = now + state.wait_interval
                report(where[0], where[1], _read_owner(fd), now - started)
            if interrupt is not None and interrupt.is_set():
                reason = getattr(interrupt, "reason", "") or "canceled"
                raise LockError(f"Stopped waiting for a lock: {reason}")
            wait = delay
            if deadline is not None:
                remaining = deadline - self._clock()
                if remaining <= 0:
                    raise LockTimeout(what())
                wait = min(delay, remaining)
            self._sleep(wait)
            delay = min(delay * 2, _POLL_MAX)

    # ------------------------------------------------------------- public
    def owned(self, level: int) -> set[str]:
        """Names this manager (in this thread) holds at ``level``."""
        state = self._state
        return set(state.held.get(level, {})) - state.hidden.get(level, set())

    def owns_all(self, level: int) -> bool:
        """True while an exclusive ``ALL_SET`` of ``level`` is held."""
        return level in self._state.gates

    def is_owned_shared(self, level: int, name: str) -> bool | None:
        """True/False for a shared/exclusive hold of (level, name); None if not held."""
        entry = self._state.held.get(level, {}).get(name)
        return None if entry is None else entry[1]

    def acquire(
        self,
        level: int,
        names: Iterable[str] | _AllSet,
        shared: bool = False,
        timeout: float | None = None,
        since: float | None = None,
    ) -> set[str]:
        """Take ``names`` (or ``ALL_SET``) at ``level``; return the names now held.

        Waits until ``timeout`` seconds (None: forever) after ``since`` (a
        time of ``now()``; default: the call's start, so several calls with
        one ``since`` share one timeout) and then raises LockTimeout naming
        the lock, having released whatever this call took. Names already
        held by this manager are skipped.
        """
        deadline = None if timeout is None else (self.now() if since is None else since) + timeout
        level_name = LEVEL_NAMES.get(level, str(level))
        state = self._state
        held = state.held.setdefault(level, {})
        if isinstance(names, _AllSet):
            return self._acquire_all(level, shared, deadline, timeout)
        wanted = sorted(set(names) - set(held))
        if not wanted:
            return self.owned(level)
        # Holding the whole level, our own exclusive gate already keeps others out.
        gate_fd = None if level in state.gates else self._open(level, _GATE)
        in_line = not shared and level == LEVEL_CLUSTER  # the shared ones after it wait
        gated = False
        try:
            if gate_fd is not None:
                self._lock_fd(
                    gate_fd,
                    not in_line,
                    deadline,
                    lambda: self._timeout_msg(level_name, None, timeout),
                    (level_name, None),
                )
                gated = True
                if in_line:
                    self._mark_owner(gate_fd)
            self._take(level, wanted, shared, deadline, timeout)
        finally:
            if gate_fd is not None:
                if gated and in_line:
                    self._clear_owner(gate_fd, False)
                os.close(gate_fd)
        return self.owned(level)

    def _take(
        self,
        level: int,
        names: Iterable[str],
        shared: bool,
        deadline: float | None,
        timeout: float | None,
    ) -> list[str]:
        """Lock each of ``names`` in order and record it as held; all or nothing.

        On any failure the names this call took are released again and the
        error (e.g. LockTimeout) propagates.
        """
        held = self._state.held.setdefault(level, {})
        taken: list[str] = []
        try:
            for name in names:
                fd = self._lock_name(level, name, shared, deadline, timeout)
                self._mark_owner(fd)
                held[name] = (fd, shared)
                taken.append(name)
        except BaseException:
            for name in taken:
                fd, was_shared = held.pop(name)
                self._clear_owner(fd, was_shared)
                os.close(fd)
            raise
        return taken

    def _lock_name(
        self, level: int, name: str, shared: bool, deadline: float | None, timeout: float | None
    ) -> int:
        """A descriptor of ``name``'s lock file, locked (a file deleted while this
        waited for it is opened again)."""
        level_name = LEVEL_NAMES.get(level, str(level))
        file_name = _file_name(name)
        while True:
            fd = self._open(level, file_name)
            try:
                self._lock_fd(
                    fd,
                    shared,
                    deadline,
                    lambda: self._timeout_msg(level_name, name, timeout),
                    (level_name, name),
                )
                if _is_at(fd, os.path.join(self._dirs[level], file_name)):
                    return fd
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)

    def _known_names(self, level: int) -> Collection[str] | None:
        """The names ``names_fn`` lists at ``level`` (None: not listed, or no ``names_fn``)."""
        return self.names_fn(level) if self.names_fn is not None else None

    def now(self) -> float:
        """The manager's clock, for ``acquire``'s ``since``."""
        return self._clock()

    @staticmethod
    def _timeout_msg(level_name: str, name: str | None, timeout: float | None) -> str:
        within = "in time" if timeout is None else f"within {timeout:g} s"
        if name is None:
            return (
                f"Could not acquire {level_name} locks {within}: another "
                f"operation holds the whole {level_name} level; try again later"
            )
        return (
            f"Could not acquire the {level_name} lock '{name}' {within}: "
            "another operation holds it; try again later"
        )

    def _acquire_all(
        self, level: int, shared: bool, deadline: float | None, timeout: float | None
    ) -> set[str]:
        state = self._state
        held = state.held.setdefault(level, {})
        if held:
            raise LockError(
                f"Cannot take all {LEVEL_NAMES[level]} locks while holding some of them",
                ECODE_FAULT,
            )
        level_name = LEVEL_NAMES[level]
        gate_fd = self._open(level, _GATE)
        try:
            # The gate is taken exclusively even for a shared ALL_SET, so the
            # list of names below is complete.
            self._lock_fd(
                gate_fd,
                False,
                deadline,
                lambda: self._timeout_msg(level_name, None, timeout),
                (level_name, None),
            )
            known = set(self._known_names(level) or ())
            existing = {
                urllib.parse.unquote(f[: -len(_SUFFIX)])
                for f in os.listdir(self._level_dir(level))
                if f.endswith(_SUFFIX)
            }
            if shared:
                os.close(gate_fd)
                gate_fd = -1
            taken = self._take(level, sorted(known | existing), shared, deadline, timeout)
        except BaseException:
            if gate_fd >= 0:
                os.close(gate_fd)
            raise
        if self.names_fn is not None:
            state.hidden[level] = set(taken) - known
        if not shared:
            self._mark_owner(gate_fd)
            state.gates[level] = gate_fd
        return self.owned(level)

    def release(self, level: int, names: Iterable[str] | None = None) -> None:
        """Release ``names`` (all of the level when None) held at ``level``."""
        state = self._state
        held = state.held.get(level, {})
        to_release = set(held) if names is None else set(names) & set(held)
        gate = state.gates.pop(level, None)
        if gate is not None:
            # The gate only guards a complete level; any release ends that,
            # together with the names that were locked only for completeness.
            self._clear_owner(gate, False)
            os.close(gate)
            to_release |= state.hidden.get(level, set())
        gone = self._gone(level, [n for n in to_release if not held[n][1]])
        for name in to_release:
            fd, was_shared = held.pop(name)
            self._clear_owner(fd, was_shared)
            if name in gone:
                with contextlib.suppress(OSError):  # a file left is only a file left
                    os.unlink(os.path.join(self._dirs[level], _file_name(name)))
            os.close(fd)
        hidden = state.hidden.get(level)
        if hidden:
            hidden -= to_release
        if not held:
            state.held.pop(level, None)
            state.hidden.pop(level, None)

    def _gone(self, level: int, exclusive: list[str]) -> set[str]:
        """Of the names held exclusively, those ``names_fn`` does not list (any more)."""
        if not exclusive:
            return set()
        try:
            known = self._known_names(level)
        except Exception:  # noqa: BLE001 - letting go never fails for a file left
            return set()
        return set() if known is None else {name for name in exclusive if name not in known}

    def release_all(self) -> None:
        """Release every lock this manager holds in this thread (highest level first)."""
        state = self._state
        for level in sorted(set(state.held) | set(state.gates), reverse=True):
            self.release(level)
