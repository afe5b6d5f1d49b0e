"""A node's resources reserved by the jobs that will use them, from their check to their end.

Three kinds: disk space (``SPACE``), reserved by the exports writing to a
node and the moves copying a ``file`` instance's images to it
(``ganeti_lv.cmdlib.space_reservation``), and memory (``MEMORY``),
reserved by the migrations and failovers starting an instance on it (the
moves of node operations share the node's resource lock, so two of them
could otherwise both count the same free memory), and the MAC addresses
(``MACS``) that instance creations and imports chose, until they are recorded
(two creations could otherwise give one address to two guests on one
network, and the second learn of it only after its disks were filled and
its guest started). What follows speaks of
exports; moves and memory work the same way (memory in a directory of its
own).

Two exports to one node each check the free space before they copy; without
a reservation both may pass and one then dies of ENOSPC halfway. Here an
export checks under the node's reservation lock, counting what the exports
already running to that node still have to write, and reserves its own
need before the lock is released.

On the master, in ``<data dir>/reservations/``: ``<node>.lock`` serialises
the checks for one node across every process of the master (the daemon,
``gnt-lv`` running a job itself, background jobs); each reservation is a
file ``<node>@<instance>.<unique>.json`` (node, the directory being
written, bytes, instance; ``@`` is in no node name, so node ``node1``'s
files are never taken for ``node1.example.com``'s). Its holder keeps an
exclusive ``flock`` on it while it lives: a reservation whose holder died
(a killed process) is no longer locked, is not counted and is removed by
the next check. ``flock`` locks belong to an
open file description, so the jobs of one daemon (threads of one process)
see each other's reservations too.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

from ganeti_lv import paths

SPACE = "space"
MEMORY = "memory"
# MAC addresses chosen by the creations and imports under way (the configuration
# has them only once the instance is recorded): one ledger for the cluster, each
# reservation's ``directory`` the address
MACS = "macs"
MAC_LEDGER = "cluster"


@dataclass(frozen=True)
class Reservation:
    """``size`` bytes on ``node`` for the files being written into ``directory``.

    A memory reservation (``MEMORY``) has no directory (""): ``size`` bytes
    of the node's memory for ``instance``.
    """

    node: str
    directory: str
    size: int
    instance: str


class Held:
    """A reservation of this process; ``release`` (or the process's end) frees it."""

    def __init__(self, path: str, fd: int, reservation: Reservation) -> None:
        self.path = path
        self.reservation = reservation
        self._fd: int | None = fd

    def release(self) -> None:
        """Free the reservation (again: nothing)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        # a file left behind is unlocked, so no reservation: the next check removes it
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        os.close(fd)

    def __enter__(self) -> Held:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class NodeLedger:
    """The reservations of one node, read and changed under its lock (``Reservations.node``)."""

    def __init__(self, directory: str, node: str) -> None:
        self._dir = directory
        self.node = node

    def _files(self) -> list[str]:
        prefix = f"{self.node}@"
        return sorted(
            os.path.join(self._dir, name)
            for name in os.listdir(self._dir)
            if name.startswith(prefix) and name.endswith(".json")
        )

    def others(self) -> list[Reservation]:
        """The live reservations on the node; those whose holder is gone are removed."""
        found = []
        for path in self._files():
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError as err:
                    if err.errno not in (errno.EAGAIN, errno.EACCES):
                        raise
                    found.append(_read(fd))  # its holder still runs
                    continue
                # nobody holds it: its export died (a file that cannot be removed, on a
                # read-only file system say, is still no reservation)
                with contextlib.suppress(OSError):
                    os.unlink(path)
            finally:
                os.close(fd)
        return found

    def reserve(self, directory: str, size: int, instance: str) -> Held:
        """Reserve ``size`` bytes for ``directory``; held until released."""
        reservation = Reservation(self.node, directory, size, instance)
        path = os.path.join(self._dir, f"{self.node}@{instance}.{uuid.uuid4().hex}.json")
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            data = {"node": self.node, "directory": directory, "size": size, "instance": instance}
            os.write(fd, json.dumps(data).encode())
        except BaseException:
            os.close(fd)
            os.unlink(path)
            raise
        return Held(path, fd, reservation)


def _read(fd: int) -> Reservation:
    data = json.loads(os.pread(fd, 65536, 0) or b"{}")
    return Reservation(
        str(data.get("node", "")),
        str(data.get("directory", "")),
        int(data.get("size", 0)),
        str(data.get("instance", "")),
    )


class Reservations:
    """The reservations of one kind (``SPACE``, ``MEMORY``) of the master's data dir."""

    def __init__(self, data_dir: str, kind: str = SPACE) -> None:
        base = paths.reservations_dir(data_dir)
        self.dir = base if kind == SPACE else os.path.join(base, kind)

    @contextlib.contextmanager
    def node(self, node: str) -> Iterator[NodeLedger]:
        """The node's ledger, under the node's lock (held for the check only)."""
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        fd = os.open(os.path.join(self.dir, f"{node}.lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield NodeLedger(self.dir, node)
        finally:
            os.close(fd)
