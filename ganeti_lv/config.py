"""The cluster configuration store: one JSON file, atomic and serialised.

Reads are served from a per-store cache of the parsed file, checked against
the file on every read: the cache is keyed by the file's identity and
change stamps (device, inode, size, mtime and ctime in ns) and the store
keeps the cached file open, so its inode cannot be freed and reused by a
newer version (configuration files are only ever replaced by a rename, never
rewritten in place by ganeti_lv). A write by any other process is therefore
seen by the next read. Callers always get their own deep copies (whole
snapshot, or the one cluster/node/instance object they asked for), so they
may change what they got without touching the cache (``snapshot()`` is the
read-only exception). Writes are read-modify-write cycles under
an exclusive ``flock`` on a separate lock file (``config.json.lock``; the
configuration file itself is replaced on every write, so it cannot carry the
lock). The new version is written to a temporary file in the same directory,
fsynced, renamed over the old file and the directory is fsynced: a process
killed at any point leaves either the old or the new version, never a mix.
Every write bumps the serial number. A read-modify-write checks the cache
against the file while holding the lock, so it never starts from a stale
version.

A save costs what it changes, not the size of the configuration: the block
of ``update()`` gets node and instance tables that copy an object only when
the block takes it out, and the JSON text of every table entry this process
wrote is kept with the cache, so the untouched entries (the very objects of
the cache, never changed) are not encoded again. The new cache shares those
objects and copies the few the caller may still hold. A file written by
another process is parsed afresh and has no such text: its first save here
encodes everything. A plain store (a deep copy to change, everything encoded,
a deep copy for the cache) misses the 50 ms target with 1,000 instances
(55 ms, where this one takes 6 ms; see bench/README.md).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import stat
import tempfile
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ganeti_lv import paths
from ganeti_lv.constants import ADMINST_ALL
from ganeti_lv.errors import (
    ECODE_EXISTS,
    ECODE_FAULT,
    ECODE_NOENT,
    ConfigurationError,
    ConfigVersionMismatch,
)
from ganeti_lv.objects import (
    CONFIG_VERSION,
    Cluster,
    ConfigData,
    ConfigObject,
    Instance,
    Node,
    copy_value,
    json_default,
)

log = logging.getLogger(__name__)

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


def fsync_dir(path: str) -> None:
    """fsync the directory ``path`` (makes renames and new names in it durable)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def exclusive_file_lock(path: str) -> Iterator[None]:
    """An exclusive flock on the file ``path`` (created 0600, its directory too) for the
    block; waits for another holder. Closing the file releases it, also in a child
    process: the descriptor is not inherited."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
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
    new file, an empty one). A process killed mid-write leaves its temp file
    (``atomic_temp_pattern``) for ``remove_stale_temp_files``.
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
        try:
            fsync_dir(directory)
        except OSError as err:
            # the new file is in place, every reader sees it: raising would tell the
            # caller that nothing was written
            log.warning("%s is written, but its directory could not be synced: %s", path, err)


def atomic_temp_pattern(name_re: str) -> re.Pattern[str]:
    """The names of ``write_file_atomically``'s temp files for files named as the
    regular expression ``name_re`` says: ``.<name>.<8 characters of mkstemp>.tmp``."""
    return re.compile(rf"^\.{name_re}\.[a-z0-9_]{{8}}\.tmp\Z")


def remove_stale_temp_files(
    directory: str,
    patterns: Sequence[re.Pattern[str]],
    min_age: float,
    now: float | None = None,
) -> list[str]:
    """Remove the temp files killed writers left in ``directory``; their names.

    Only regular files whose name matches one of ``patterns`` (a writer's
    temp-file names, ``atomic_temp_pattern``) and that were last written
    ``min_age`` seconds ago or earlier: a writer in another process may be
    writing a younger one right now. A writer stalled for longer (an fsync
    waiting that long) fails its write with the file gone: ``min_age`` must
    be far longer than any write takes.
    """
    now = time.time() if now is None else now
    removed = []
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    for name in names:
        if not any(pattern.match(name) for pattern in patterns):
            continue
        path = os.path.join(directory, name)
        try:
            st = os.lstat(path)
            if stat.S_ISREG(st.st_mode) and now - st.st_mtime >= min_age:
                os.unlink(path)
                removed.append(name)
        except FileNotFoundError:
            continue  # its writer renamed or removed it meanwhile
    return removed


_StatKey = tuple[int, int, int, int, int]


def _stat_key(st: os.stat_result) -> _StatKey:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


# The JSON text of one entry of an object table ('"name":{...}'), by the id of
# the cached object it encodes (see ConfigStore._write).
_Fragments = dict[int, str]


@dataclass
class _Cached:
    """The parsed configuration file, the open file it came from and its stat key.

    ``fragments`` holds the JSON text of cached table entries known to match
    the file (those this process wrote), so saving does not encode them again.
    """

    fd: int
    key: _StatKey
    data: ConfigData
    fragments: _Fragments = field(default_factory=dict)


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
        return self._current().data

    def _current(self) -> _Cached:
        """The cache entry of the file now at the path (re-read if the file changed)."""
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
            return cached
        return self._load()

    def _not_found(self) -> ConfigurationError:
        return ConfigurationError(
            f"Cluster configuration file {self.path} not found; is the cluster "
            "initialised? (gnt-lv cluster init)",
            ECODE_NOENT,
        )

    def _load(self) -> _Cached:
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
        return self._remember(_Cached(fd, key, data))

    def _remember(self, entry: _Cached) -> _Cached:
        """Make ``entry`` the cache; close the previously cached file."""
        fd = entry.fd
        with self._cache_lock:
            old = self._cached
            self._cached = entry
            self._cache_fds.append(fd)
            if old is not None:
                self._cache_fds.remove(old.fd)
                os.close(old.fd)
        return entry

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
        with exclusive_file_lock(self.lock_path):
            held.add(key)
            try:
                yield
            finally:
                held.discard(key)

    def _write(self, data: ConfigData, base: _Cached | None = None) -> None:
        """Save ``data`` (lock held) and cache it as the file now on disk.

        ``data`` may be a working copy of ``base`` (the cache it was made
        from, see :meth:`update`): table entries it still shares with
        ``base`` are unchanged, so their JSON text is taken from
        ``base.fragments`` instead of being encoded again, and the new cache
        copies only the entries the caller took out or put in (it never
        shares an object the caller can still reach).
        """
        text, entries = _encode(data, base.fragments if base is not None else {})
        write_file_atomically(self.path, text.encode() + b"\n")
        # Saved. What follows only caches it: when that fails, the next read
        # loads the file (the cache's stat key no longer matches), and no error
        # tells the caller that nothing was saved. Nobody else writes while we
        # hold the lock: the path is our file. The stat key is taken after the
        # rename (a rename changes the ctime).
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return
        try:
            key = _stat_key(os.fstat(fd))
            snapshot, fragments = _settled_copy(data, entries)
        except Exception:  # noqa: BLE001 - saved all the same (see above)
            os.close(fd)
            return
        except BaseException:
            os.close(fd)
            raise
        self._remember(_Cached(fd, key, snapshot, fragments))

    @contextlib.contextmanager
    def update(self) -> Iterator[ConfigData]:
        """Read-modify-write: yield the configuration, save it if the block succeeds.

        The whole block holds the exclusive configuration lock, so keep it
        short (no node operations inside). The serial number is bumped on
        save; an exception inside the block discards the changes. The
        yielded data is the caller's to change; its node and instance
        tables copy an object the first time the block takes it out of
        them, so a block touching one instance copies (and encodes) one
        instance.
        """
        with self._exclusive():
            # _current() checks the file under the lock: never a stale start.
            base = self._current()
            data = _working_copy(base.data)
            yield data
            data.serial += 1
            data.version = CONFIG_VERSION
            self._write(data, base)

    def _add(self, table: str, kind: str, obj: Node | Instance) -> None:
        with self.update() as data:
            objs: dict[str, Any] = getattr(data, table)
            if obj.name in objs:
                raise ConfigurationError(f"{kind} '{obj.name}' already exists", ECODE_EXISTS)
            objs[obj.name] = obj

    def _remove(self, table: str, kind: str, name: str) -> None:
        with self.update() as data:
            objs: dict[str, Any] = getattr(data, table)
            _require(objs, name, kind)
            del objs[name]

    def _replace(self, table: str, kind: str, obj: Node | Instance) -> None:
        with self.update() as data:
            objs: dict[str, Any] = getattr(data, table)
            if obj.name not in objs:
                raise ConfigurationError(f"{kind} '{obj.name}' not known", ECODE_NOENT)
            obj.mtime = time.time()
            objs[obj.name] = obj

    def add_node(self, node: Node) -> None:
        """Add a new node; ConfigurationError(ECODE_EXISTS) if the name is taken."""
        self._add("nodes", "Node", node)

    def remove_node(self, name: str) -> None:
        """Remove a node; ConfigurationError(ECODE_NOENT) if unknown."""
        self._remove("nodes", "Node", name)

    def update_node(self, node: Node) -> None:
        """Replace the stored node of the same name (mtime is refreshed)."""
        self._replace("nodes", "Node", node)

    def add_instance(self, inst: Instance) -> None:
        """Add a new instance; ConfigurationError(ECODE_EXISTS) if the name is taken."""
        self._add("instances", "Instance", inst)

    def remove_instance(self, name: str) -> None:
        """Remove an instance; ConfigurationError(ECODE_NOENT) if unknown."""
        self._remove("instances", "Instance", name)

    def update_instance(self, inst: Instance) -> None:
        """Replace the stored instance of the same name (mtime is refreshed)."""
        self._replace("instances", "Instance", inst)

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


# ------------------------------------------------------ working copies


_C = TypeVar("_C", bound=ConfigObject)


class _CopyOnAccess(dict[str, _C]):
    """A table of configuration objects that copies each one when first handed out.

    It starts with the cached (shared, read-only) objects; every way of
    getting an object out of it (``t[k]``, ``get``, ``values``, ``items``,
    ``pop``, ``dict(t)``, ``{**t}``, copies) first replaces that entry by its
    own copy, and an object put in is the caller's. ``fresh`` names those
    entries: the only ones a caller may hold and change. Every other entry
    is still the shared object, unchanged.
    """

    def __init__(self, shared: dict[str, _C]) -> None:
        super().__init__(shared)
        self.fresh: set[str] = set()

    def _own(self, key: str, value: _C) -> _C:
        if key not in self.fresh:
            value = value.copy()
            dict.__setitem__(self, key, value)
            self.fresh.add(key)
        return value

    def _own_all(self) -> None:
        if len(self.fresh) < len(self):
            for key, value in list(dict.items(self)):
                self._own(key, value)

    def __getitem__(self, key: str) -> _C:
        return self._own(key, dict.__getitem__(self, key))

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        """The (own copy of the) object under ``key``, or ``default``."""
        if key not in self:
            return default
        return self[key]

    def __setitem__(self, key: str, value: _C) -> None:
        dict.__setitem__(self, key, value)
        self.fresh.add(key)

    def __delitem__(self, key: str) -> None:
        dict.__delitem__(self, key)
        self.fresh.discard(key)

    def __iter__(self) -> Iterator[str]:
        # Defined so that dict(t) and {**t} take values through __getitem__.
        return dict.__iter__(self)

    def pop(self, key: str, *default: Any) -> Any:  # type: ignore[override]
        """Remove ``key`` and return its (own copy of the) object."""
        if key not in self:
            if default:
                return default[0]
            raise KeyError(key)
        value = self[key]
        del self[key]
        return value

    def popitem(self) -> tuple[str, _C]:
        """Remove and return the last entry (the object being the caller's own copy)."""
        key = next(reversed(dict.keys(self)))
        return key, self.pop(key)

    def setdefault(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        """``t[key]`` if present, else store and return ``default``."""
        if key not in self:
            self[key] = default
        return self[key]

    def values(self) -> Any:
        """The objects (each the caller's own copy)."""
        self._own_all()
        return dict.values(self)

    def items(self) -> Any:
        """(name, object) pairs (each object the caller's own copy)."""
        self._own_all()
        return dict.items(self)

    def update(self, *args: Any, **kwargs: Any) -> None:
        """Store every entry given (they become the caller's objects in this table)."""
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def __ior__(self, other: Any) -> _CopyOnAccess[_C]:  # type: ignore[override,misc]
        self.update(other)
        return self

    def __or__(self, other: Any) -> dict[str, _C]:  # type: ignore[override]
        merged = dict(self)
        merged.update(other)
        return merged

    def copy(self) -> dict[str, _C]:
        """A plain dict of the entries (objects are the caller's own copies)."""
        return dict(self)

    def clear(self) -> None:
        """Remove every entry."""
        dict.clear(self)
        self.fresh.clear()

    def __reduce__(self) -> Any:
        return (dict, (self.copy(),))

    def stored(self) -> dict[str, _C]:
        """The entries as they are now, without copying (for saving them)."""
        return dict(dict.items(self))


def _working_copy(cached: ConfigData) -> ConfigData:
    """A ConfigData the caller may change, built from the cached one cheaply.

    Every field is copied, except that the object tables become
    copy-on-access tables over the cached objects.
    """
    work = object.__new__(type(cached))
    attrs = {}
    for name, value in cached.__dict__.items():
        if name in cached._NESTED_DICTS:
            attrs[name] = _CopyOnAccess(value)
        else:
            attrs[name] = copy_value(value)
    work.__dict__.update(attrs)
    return work


def _table_entries(value: Any) -> tuple[dict[str, Any], set[str] | None]:
    """A table's entries as stored (no copies) and which are the caller's (None: all)."""
    if isinstance(value, _CopyOnAccess):
        return value.stored(), value.fresh
    return value, None


def _encode(data: ConfigData, fragments: _Fragments) -> tuple[str, dict[str, list[str]]]:
    """The JSON text of ``data`` and, per object table, the text of each entry.

    Entries not taken out of a copy-on-access table are the very objects of
    the cache whose ``fragments`` are given: their text is reused.
    """
    parts = []
    entries: dict[str, list[str]] = {}
    for name, value in data.json_fields().items():
        if name in data._NESTED_DICTS and isinstance(value, dict):
            stored, fresh = _table_entries(value)
            texts = []
            for key, obj in stored.items():
                text = None if fresh is None or key in fresh else fragments.get(id(obj))
                if text is None:
                    text = f"{_encode_str(key)}:{_ENCODER.encode(obj)}"
                texts.append(text)
            entries[name] = texts
            value_text = "{" + ",".join(texts) + "}"
        else:
            value_text = _ENCODER.encode(value)
        parts.append(f"{_encode_str(name)}:{value_text}")
    return "{" + ",".join(parts) + "}", entries


def _settled_copy(data: ConfigData, entries: dict[str, list[str]]) -> tuple[ConfigData, _Fragments]:
    """The new cache after saving ``data``: a copy sharing nothing the caller can change.

    Returns it with the fragments of its table entries (``entries`` as
    returned by :func:`_encode` for ``data``).
    """
    snap = object.__new__(type(data))
    attrs = {}
    fragments: _Fragments = {}
    for name, value in data.__dict__.items():
        if name in entries:
            stored, fresh = _table_entries(value)
            table = {
                k: (v if fresh is not None and k not in fresh else v.copy())
                for k, v in stored.items()
            }
            for obj, text in zip(table.values(), entries[name], strict=True):
                fragments[id(obj)] = text
            attrs[name] = table
        else:
            attrs[name] = copy_value(value)
    snap.__dict__.update(attrs)
    return snap, fragments


# C-accelerated; config objects are encoded straight from their fields, without
# building a dict copy of the whole configuration first.
_ENCODER = json.JSONEncoder(separators=(",", ":"), default=json_default)
_encode_str = json.encoder.encode_basestring_ascii  # type: ignore[attr-defined]
