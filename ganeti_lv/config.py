"""The cluster configuration store: one JSON file, atomic and serialised.

Reads are served from a per-store cache of the parsed file, checked against
the file on every read: the cache is keyed by the file's identity and
change stamps (device, inode, size, mtime and ctime in ns) and the store
keeps the cached file open, so its inode cannot be freed and reused by a
newer version (configuration files are only ever replaced by a rename, never
rewritten in place by ganeti_lv). A write by any other process is therefore
seen by the next read. Callers always get their own deep copies (whole
snapshot, or the one cluster/node/instance object they asked for), so they
may change what they got without touching the cache. Writes are read-modify-write cycles under
an exclusive ``flock`` on a separate lock file (``config.json.lock``; the
configuration file itself is replaced on every write, so it cannot carry the
lock). The new version is written to a temporary file in the same directory,
fsynced, renamed over the old file and the directory is fsynced: a process
killed at any point leaves either the old or the new version, never a mix.
Every write bumps the serial number. A read-modify-write checks the cache
against the file while holding the lock, so it never starts from a stale
version.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
import threading
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ganeti_lv import paths
from ganeti_lv.constants import ADMINST_ALL
from ganeti_lv.errors import (
    ECODE_EXISTS,
    ECODE_FAULT,
    ECODE_NOENT,
    ConfigurationError,
    ConfigVersionMismatch,
)
from ganeti_lv.objects import CONFIG_VERSION, Cluster, ConfigData, Instance, Node

_THREAD_STATE = threading.local()


def match_name(name: str, candidates: list[str]) -> str | None:
    """Return the candidate equal to ``name`` or the unique one starting with ``name.``.

    This is Ganeti's short-name expansion: ``web1`` matches ``web1.example.com``
    when no other candidate starts with ``web1.``; ambiguity gives None.
    """
    if name in candidates:
        return name
    prefix = name + "."
    matches = [c for c in candidates if c.startswith(prefix)]
    return matches[0] if len(matches) == 1 else None


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file_atomically(
    path: str, data: bytes, mode: int = 0o640, *, durable: bool = True
) -> None:
    """Write ``data`` to ``path`` via a temp file in the same dir and a rename.

    A process killed at any point leaves the old or the new content, never a
    mix (the rename is atomic and the page cache outlives the process). With
    ``durable`` (the default) the temp file and the directory are fsynced as
    well, so the new content also survives a power loss once this returns;
    without it a power loss may bring back the previous version (or, for a
    new file, an empty one).
    """
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(
        dir=directory, prefix="." + os.path.basename(path) + ".", suffix=".tmp"
    )
    try:
        with os.fdopen(fd, "wb") as fobj:
            fobj.write(data)
            fobj.flush()
            if durable:
                os.fsync(fobj.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if durable:
        _fsync_dir(directory)


_StatKey = tuple[int, int, int, int, int]


def _stat_key(st: os.stat_result) -> _StatKey:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


@dataclass
class _Cached:
    """The parsed configuration file, the open file it came from and its stat key."""

    fd: int
    key: _StatKey
    data: ConfigData


def _close_fd(holder: list[int]) -> None:
    for fd in holder:
        with contextlib.suppress(OSError):
            os.close(fd)
    holder.clear()


class ConfigStore:
    """Access to the cluster configuration file of a data dir.

    Example::

        store = ConfigStore("/var/lib/ganeti-lv")
        with store.update() as data:
            data.instances["web1"].admin_state = "up"
    """

    def __init__(self, data_dir: str) -> None:
        self.data_dir = data_dir
        self.path = paths.config_file(data_dir)
        self.lock_path = self.path + ".lock"
        self._cached: _Cached | None = None
        self._cache_lock = threading.Lock()
        # The cached file's descriptor is closed when the store goes away.
        self._cache_fds: list[int] = []
        weakref.finalize(self, _close_fd, self._cache_fds)

    # ------------------------------------------------------------ creation
    @classmethod
    def initialize(cls, data_dir: str, config_data: ConfigData) -> ConfigStore:
        """Create the configuration file; refuse if one exists already."""
        store = cls(data_dir)
        os.makedirs(data_dir, exist_ok=True)
        with store._exclusive():
            if os.path.exists(store.path):
                raise ConfigurationError(
                    f"Cluster configuration file {store.path} already exists", ECODE_EXISTS
                )
            config_data.serial = max(config_data.serial, 1)
            config_data.version = CONFIG_VERSION
            store._write(config_data)
        return store

    # ---------------------------------------------------------------- reads
    def read(self) -> ConfigData:
        """Return a snapshot of the whole configuration (the caller's own copy)."""
        return self._snapshot().copy()

    def snapshot(self) -> ConfigData:
        """The current configuration, shared and READ-ONLY: never modify it.

        Cheaper than :meth:`read` (no copy): for lookups only. The object is
        this store's cache of the file; changing anything in it (or in the
        objects it holds) would corrupt later reads of this process. To
        change the configuration use :meth:`update` or the helpers.
        """
        return self._snapshot()

    def _snapshot(self) -> ConfigData:
        """The cached configuration, refreshed if the file changed."""
        try:
            key = _stat_key(os.stat(self.path))
        except FileNotFoundError:
            raise self._not_found() from None
        except OSError as err:
            raise ConfigurationError(
                f"Cannot read cluster configuration file {self.path}: {err}"
            ) from err
        cached = self._cached
        if cached is not None and cached.key == key:
            return cached.data
        return self._load()

    def _not_found(self) -> ConfigurationError:
        return ConfigurationError(
            f"Cluster configuration file {self.path} not found; is the cluster "
            "initialised? (gnt-lv cluster init)",
            ECODE_NOENT,
        )

    def _load(self) -> ConfigData:
        """Read and parse the file now at the path and cache it (keeping it open)."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise self._not_found() from None
        except OSError as err:
            raise ConfigurationError(
                f"Cannot read cluster configuration file {self.path}: {err}"
            ) from err
        try:
            key = _stat_key(os.fstat(fd))
            with open(fd, "rb", closefd=False) as fobj:
                raw = fobj.read()
            data = self._parse(raw)
        except OSError as err:
            os.close(fd)
            raise ConfigurationError(
                f"Cannot read cluster configuration file {self.path}: {err}"
            ) from err
        except BaseException:
            os.close(fd)
            raise
        self._remember(fd, key, data)
        return data

    def _remember(self, fd: int, key: _StatKey, data: ConfigData) -> None:
        """Make (fd, key, data) the cache; close the previously cached file."""
        with self._cache_lock:
            old = self._cached
            self._cached = _Cached(fd, key, data)
            self._cache_fds.append(fd)
            if old is not None:
                self._cache_fds.remove(old.fd)
                os.close(old.fd)

    def _parse(self, raw: bytes) -> ConfigData:
        try:
            doc: Any = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as err:
            raise ConfigurationError(
                f"Cluster configuration file {self.path} is corrupt: {err}"
            ) from err
        if not isinstance(doc, dict):
            raise ConfigurationError(
                f"Cluster configuration file {self.path} is corrupt: not a JSON object"
            )
        version = doc.get("version")
        if version != CONFIG_VERSION:
            raise ConfigVersionMismatch(
                f"Cluster configuration file {self.path} has version {version!r}, "
                f"this ganeti_lv supports version {CONFIG_VERSION}"
            )
        try:
            return ConfigData.from_dict(doc)
        except ConfigurationError as err:
            raise ConfigurationError(
                f"Cluster configuration file {self.path} is corrupt: {err}"
            ) from err
        except (TypeError, AttributeError, KeyError) as err:
            raise ConfigurationError(
                f"Cluster configuration file {self.path} is corrupt: {err!r}"
            ) from err

    def get_cluster(self) -> Cluster:
        """The cluster settings (the caller's own copy)."""
        return self._snapshot().cluster.copy()

    def get_node(self, name: str) -> Node | None:
        """The node called ``name`` (exact name; the caller's own copy), or None."""
        node = self._snapshot().nodes.get(name)
        return None if node is None else node.copy()

    def get_instance(self, name: str) -> Instance | None:
        """The instance called ``name`` (exact name; the caller's own copy), or None."""
        inst = self._snapshot().instances.get(name)
        return None if inst is None else inst.copy()

    def node_names(self) -> list[str]:
        """Sorted names of all nodes."""
        return sorted(self._snapshot().nodes)

    def instance_names(self) -> list[str]:
        """Sorted names of all instances."""
        return sorted(self._snapshot().instances)

    def expand_node_name(self, name: str) -> str | None:
        """Full node name for ``name`` (exact or unique short name), or None."""
        return match_name(name, self.node_names())

    def expand_instance_name(self, name: str) -> str | None:
        """Full instance name for ``name`` (exact or unique short name), or None."""
        return match_name(name, self.instance_names())

    # --------------------------------------------------------------- writes
    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        key = os.path.realpath(self.lock_path)
        held: set[str] = _THREAD_STATE.__dict__.setdefault("held", set())
        if key in held:
            # flock would wait for ourselves forever; fail loudly instead.
            raise ConfigurationError(
                "Nested configuration update (the configuration lock is already held "
                "by this thread)",
                ECODE_FAULT,
            )
        os.makedirs(self.data_dir, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            held.add(key)
            try:
                yield
            finally:
                held.discard(key)
        finally:
            os.close(fd)  # closing drops the flock

    def _write(self, data: ConfigData) -> None:
        """Save ``data`` (lock held) and cache a copy of it as the file now on disk."""
        raw = json.dumps(data.to_dict(), separators=(",", ":")).encode()
        write_file_atomically(self.path, raw + b"\n")
        # Nobody else writes while we hold the lock: the path is our file. The
        # stat key is taken after the rename (a rename changes the ctime).
        fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            key = _stat_key(os.fstat(fd))
            snapshot = data.copy()
        except BaseException:
            os.close(fd)
            raise
        self._remember(fd, key, snapshot)

    @contextlib.contextmanager
    def update(self) -> Iterator[ConfigData]:
        """Read-modify-write: yield the configuration, save it if the block succeeds.

        The whole block holds the exclusive configuration lock, so keep it
        short (no node operations inside). The serial number is bumped on
        save; an exception inside the block discards the changes.
        """
        with self._exclusive():
            # _snapshot() checks the file under the lock: never a stale start.
            data = self._snapshot().copy()
            yield data
            data.serial += 1
            data.version = CONFIG_VERSION
            self._write(data)

    def add_node(self, node: Node) -> None:
        """Add a new node; ConfigurationError(ECODE_EXISTS) if the name is taken."""
        with self.update() as data:
            if node.name in data.nodes:
                raise ConfigurationError(f"Node '{node.name}' already exists", ECODE_EXISTS)
            data.nodes[node.name] = node

    def remove_node(self, name: str) -> None:
        """Remove a node; ConfigurationError(ECODE_NOENT) if unknown."""
        with self.update() as data:
            _require(data.nodes, name, "Node")
            del data.nodes[name]

    def update_node(self, node: Node) -> None:
        """Replace the stored node of the same name (mtime is refreshed)."""
        with self.update() as data:
            _require(data.nodes, node.name, "Node")
            node.mtime = time.time()
            data.nodes[node.name] = node

    def add_instance(self, inst: Instance) -> None:
        """Add a new instance; ConfigurationError(ECODE_EXISTS) if the name is taken."""
        with self.update() as data:
            if inst.name in data.instances:
                raise ConfigurationError(f"Instance '{inst.name}' already exists", ECODE_EXISTS)
            data.instances[inst.name] = inst

    def remove_instance(self, name: str) -> None:
        """Remove an instance; ConfigurationError(ECODE_NOENT) if unknown."""
        with self.update() as data:
            _require(data.instances, name, "Instance")
            del data.instances[name]

    def update_instance(self, inst: Instance) -> None:
        """Replace the stored instance of the same name (mtime is refreshed)."""
        with self.update() as data:
            _require(data.instances, inst.name, "Instance")
            inst.mtime = time.time()
            data.instances[inst.name] = inst

    def set_instance_primary(self, name: str, node_name: str) -> None:
        """Record that the instance's primary node is now ``node_name``."""
        with self.update() as data:
            inst = _require(data.instances, name, "Instance")
            _require(data.nodes, node_name, "Node")
            inst.primary_node = node_name
            inst.mtime = time.time()

    def set_admin_state(self, name: str, state: str) -> None:
        """Record the operator's wanted state (up/down/offline) of an instance."""
        if state not in ADMINST_ALL:
            raise ValueError(f"invalid admin state {state!r}")
        with self.update() as data:
            inst = _require(data.instances, name, "Instance")
            inst.admin_state = state
            inst.mtime = time.time()

    def update_cluster(self, cluster: Cluster) -> None:
        """Replace the cluster settings (mtime is refreshed)."""
        with self.update() as data:
            cluster.mtime = time.time()
            data.cluster = cluster


def _require(table: dict[str, Any], name: str, kind: str) -> Any:
    try:
        return table[name]
    except KeyError:
        raise ConfigurationError(f"{kind} '{name}' not known", ECODE_NOENT) from None
