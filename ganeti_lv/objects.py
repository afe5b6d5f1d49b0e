"""Configuration objects: Cluster, Node, Instance, Disk, Nic, ConfigData.

Plain dataclasses with ``to_dict``/``from_dict``; unknown keys in stored data
are rejected so a typo in a hand-edited file is an error, not a silent drop.
Sizes are in MiB, times in seconds since the epoch.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
import uuid as uuid_mod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ganeti_lv import constants
from ganeti_lv.errors import ConfigurationError

T = TypeVar("T", bound="ConfigObject")

CONFIG_VERSION = 1


def new_uuid() -> str:
    """Return a fresh random UUID string."""
    return str(uuid_mod.uuid4())


_SCALARS = frozenset({str, int, float, bool, type(None)})


def _plain(value: Any) -> Any:
    """A deep copy of ``value`` as JSON data (config objects become dicts)."""
    kind = type(value)
    if kind is dict:
        return {k: (v if type(v) in _SCALARS else _plain(v)) for k, v in value.items()}
    if kind is list:
        return [v if type(v) in _SCALARS else _plain(v) for v in value]
    if isinstance(value, ConfigObject):
        return value.to_dict()
    return value


def copy_value(value: Any) -> Any:
    """A deep copy of ``value``: JSON data, config objects (via ``copy``) or both mixed."""
    kind = type(value)
    if kind is dict:
        return {k: (v if type(v) in _SCALARS else copy_value(v)) for k, v in value.items()}
    if kind is list:
        return [v if type(v) in _SCALARS else copy_value(v) for v in value]
    if isinstance(value, ConfigObject):
        return value.copy()
    return value


def json_default(value: Any) -> Any:
    """``default`` for ``json.dumps``/``JSONEncoder``: encode config objects by their fields.

    ``json.dumps(obj, default=json_default)`` writes the same JSON as
    ``json.dumps(obj.to_dict())`` without building the intermediate copy.
    """
    if isinstance(value, ConfigObject):
        return value.json_fields()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


_SCALAR_TYPE_NAMES = frozenset({"str", "int", "float", "bool", "None"})


class _Spec:
    """What (de)serialising one ConfigObject class needs, computed once per class."""

    __slots__ = ("names", "name_set", "containers", "copiers", "dumpers", "loaders", "fast")

    def __init__(self, cls: type[ConfigObject]) -> None:
        fields = dataclasses.fields(cls)  # type: ignore[arg-type]
        self.names: tuple[str, ...] = tuple(f.name for f in fields)
        self.name_set = frozenset(self.names)
        # Fields whose declared type may hold a list, dict or config object.
        self.containers: tuple[str, ...] = tuple(
            f.name
            for f in fields
            if not {part.strip() for part in str(f.type).split("|")} <= _SCALAR_TYPE_NAMES
        )
        # How copy() deep-copies each container field.
        self.copiers: tuple[tuple[str, Callable[[Any], Any]], ...] = tuple(
            (
                name,
                _list_copier
                if name in cls._NESTED_LISTS
                else _dict_copier
                if name in cls._NESTED_DICTS
                else copy_value,
            )
            for name in self.containers
        )
        # How to_dict() turns each container field into JSON data.
        self.dumpers: tuple[tuple[str, Callable[[Any], Any]], ...] = tuple(
            (
                name,
                _list_dumper
                if name in cls._NESTED_LISTS
                else _dict_dumper
                if name in cls._NESTED_DICTS
                else _plain,
            )
            for name in self.containers
        )
        # How from_dict() builds each container field from JSON data.
        loaders: dict[str, Callable[[Any], Any]] = dict.fromkeys(self.containers, _plain)
        for key, sub in cls._NESTED.items():
            loaders[key] = _nested_loader(sub)
        for key, sub in cls._NESTED_LISTS.items():
            loaders[key] = _list_loader(sub)
        for key, sub in cls._NESTED_DICTS.items():
            loaders[key] = _dict_loader(sub)
        self.loaders: tuple[tuple[str, Callable[[Any], Any]], ...] = tuple(loaders.items())
        # Objects may be built without __init__ when every field is given and
        # __init__ does nothing beyond storing them.
        self.fast = all(f.init for f in fields) and not hasattr(cls, "__post_init__")


def _list_copier(value: list[ConfigObject]) -> list[ConfigObject]:
    return [v.copy() for v in value]


def _dict_copier(value: dict[str, ConfigObject]) -> dict[str, ConfigObject]:
    return {k: v.copy() for k, v in value.items()}


def _list_dumper(value: list[ConfigObject]) -> list[dict[str, Any]]:
    return [v.to_dict() for v in value]


def _dict_dumper(value: dict[str, ConfigObject]) -> dict[str, dict[str, Any]]:
    return {k: v.to_dict() for k, v in value.items()}


def _nested_loader(sub: type[ConfigObject]) -> Callable[[Any], Any]:
    return lambda value: None if value is None else sub.from_dict(value)


def _list_loader(sub: type[ConfigObject]) -> Callable[[Any], Any]:
    return lambda value: [sub.from_dict(v) for v in value]


def _dict_loader(sub: type[ConfigObject]) -> Callable[[Any], Any]:
    return lambda value: {k: sub.from_dict(v) for k, v in value.items()}


class ConfigObject:
    """Mixin giving dataclasses a dict form (recursing into nested objects).

    ``to_dict``, ``from_dict`` and ``copy`` make deep copies of every list
    and dict: an object never shares one with the data it came from or went
    to. Fields declared with a scalar type (str, int, float, bool, None) are
    expected to hold such values; the per-class field tables are computed
    once, so these conversions stay cheap for thousands of objects.
    """

    _NESTED: dict[str, type[ConfigObject]] = {}
    _NESTED_LISTS: dict[str, type[ConfigObject]] = {}
    _NESTED_DICTS: dict[str, type[ConfigObject]] = {}

    @classmethod
    def _spec(cls) -> _Spec:
        spec = cls.__dict__.get("_spec_cache")
        if spec is None:
            spec = _Spec(cls)
            cls._spec_cache = spec  # type: ignore[attr-defined]
        return spec

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict of this object (a deep copy)."""
        cls = type(self)
        spec = cls.__dict__.get("_spec_cache") or cls._spec()
        attrs = self.__dict__
        if len(attrs) == len(spec.names):
            out = dict(attrs)
        else:  # extra attributes set on the object are not configuration
            out = {name: attrs[name] for name in spec.names}
        for name, dumper in spec.dumpers:
            value = out[name]
            if type(value) not in _SCALARS:
                out[name] = dumper(value)
        return out

    def json_fields(self) -> dict[str, Any]:
        """The object's fields, NOT copied: for an encoder that handles nested objects.

        Unlike :meth:`to_dict` nested config objects are left as they are;
        see :func:`json_default`. The result may be the object's own
        attribute dict: never modify it.
        """
        cls = type(self)
        spec = cls.__dict__.get("_spec_cache") or cls._spec()
        attrs = self.__dict__
        if len(attrs) == len(spec.names):
            return attrs
        return {name: attrs[name] for name in spec.names}

    @classmethod
    def from_dict(cls: type[T], data: dict[str, Any]) -> T:
        """Build an object from ``to_dict`` output; raise ConfigurationError on bad data."""
        if not isinstance(data, dict):
            raise ConfigurationError(
                f"{cls.__name__}: expected a mapping, got {type(data).__name__}"
            )
        spec = cls._spec()
        if not spec.name_set.issuperset(data):
            unknown = set(data) - spec.name_set
            raise ConfigurationError(f"{cls.__name__}: unknown keys {sorted(unknown)}")
        kwargs = dict(data)
        for key, loader in spec.loaders:
            if key in kwargs:
                kwargs[key] = loader(kwargs[key])
        if spec.fast and len(kwargs) == len(spec.names):
            obj = object.__new__(cls)
            obj.__dict__.update(kwargs)
            return obj
        try:
            return cls(**kwargs)
        except TypeError as err:
            raise ConfigurationError(f"{cls.__name__}: {err}") from err

    def copy(self: T) -> T:
        """Return a deep copy."""
        cls = type(self)
        spec = cls.__dict__.get("_spec_cache") or cls._spec()
        if not spec.fast:
            return cls.from_dict(self.to_dict())
        attrs = self.__dict__.copy()
        for name, copier in spec.copiers:
            value = attrs[name]
            if type(value) not in _SCALARS:
                attrs[name] = copier(value)
        new = object.__new__(cls)
        new.__dict__ = attrs
        return new


@dataclass
class Disk(ConfigObject):
    """One instance disk; ``size`` in MiB.

    ``name`` is the operator's optional name for it, Ganeti's disk name (""
    for none); the image file on the node is named by the disk's index
    (``disk_path``), never by ``name``.
    """

    size: int
    uuid: str = field(default_factory=new_uuid)
    mode: str = "rw"
    name: str = ""
    dev_type: str = constants.DT_FILE


@dataclass
class Nic(ConfigObject):
    """One network interface, bridged to ``link`` on the node."""

    mac: str
    uuid: str = field(default_factory=new_uuid)
    ip: str | None = None
    mode: str = "bridged"
    link: str = ""
    vlan: str = ""
    name: str = ""
    network: str = ""


@dataclass
class Node(ConfigObject):
    """A cluster node.

    ``libvirt_uri`` is how the master reaches the node's libvirtd;
    ``peer_uri`` is how other nodes reach it (used for peer-to-peer
    migration); ``migration_address`` is where qemu's migration stream goes.
    ``memory_cap`` (MiB), when set, caps the memory the node offers to
    instances below what libvirt reports.
    """

    name: str
    address: str
    libvirt_uri: str = ""
    peer_uri: str = ""
    migration_address: str = ""
    ssh_port: int = 22
    ssh_user: str = "root"
    uuid: str = field(default_factory=new_uuid)
    offline: bool = False
    drained: bool = False
    vm_capable: bool = True
    master_candidate: bool = True
    memory_cap: int | None = None
    tags: list[str] = field(default_factory=list)
    ctime: float = field(default_factory=time.time)
    mtime: float = field(default_factory=time.time)

    def is_master_candidate(self) -> bool:
        """In Ganeti's candidate role: offline and drained nodes are none (Ganeti demotes them)."""
        return self.master_candidate and not self.offline and not self.drained


@dataclass
class Instance(ConfigObject):
    """An instance. ``admin_state`` is what the operator wants (up/down/offline)."""

    name: str
    primary_node: str
    disk_template: str
    uuid: str = field(default_factory=new_uuid)
    disks: list[Disk] = field(default_factory=list)
    nics: list[Nic] = field(default_factory=list)
    beparams: dict[str, Any] = field(default_factory=dict)
    hvparams: dict[str, Any] = field(default_factory=dict)
    admin_state: str = constants.ADMINST_DOWN
    os: str = "debootstrap+default"
    tags: list[str] = field(default_factory=list)
    hypervisor: str = constants.HYPERVISOR_KVM
    ctime: float = field(default_factory=time.time)
    mtime: float = field(default_factory=time.time)

    _NESTED_LISTS = {"disks": Disk, "nics": Nic}

    @property
    def secondary_nodes(self) -> list[str]:
        """Secondary nodes (none for the file templates)."""
        return []

    @property
    def all_nodes(self) -> list[str]:
        """Primary and secondary nodes."""
        return [self.primary_node, *self.secondary_nodes]


# the cluster's dirs of instance and export data on the nodes
DATA_DIR_FIELDS = ("export_dir", "file_storage_dir", "shared_file_storage_dir")


@dataclass
class Cluster(ConfigObject):
    """Cluster-wide settings.

    ``shared_storage_unsafe_ok`` declares that the shared file storage is
    coherent across nodes, so libvirt's UNSAFE migration flag may be passed
    for ``sharedfile`` instances.
    """

    name: str
    master_node: str
    uuid: str = field(default_factory=new_uuid)
    hooks_base_dir: str = "/etc/ganeti-lv/hooks"
    export_dir: str = "/srv/ganeti-lv/export"
    file_storage_dir: str = "/srv/ganeti-lv/file-storage"
    shared_file_storage_dir: str = "/srv/ganeti-lv/shared-file-storage"
    hvparams: dict[str, Any] = field(default_factory=lambda: dict(constants.HVC_DEFAULTS))
    beparams: dict[str, Any] = field(default_factory=lambda: dict(constants.BEC_DEFAULTS))
    compression_tools: list[str] = field(default_factory=lambda: list(constants.IEC_ALL))
    domain_type: str = constants.DOMAIN_TYPE_KVM
    default_bridge: str = "br0"
    shared_storage_unsafe_ok: bool = False
    # the allocator of a new instance given no primary ("" none; a new cluster's: hail)
    default_iallocator: str = ""
    hooks_timeout: float = constants.HOOKS_DEFAULT_TIMEOUT
    # node migrate/evacuate: moves at once off one node, and onto one node
    max_parallel_source: int = constants.DEFAULT_MAX_PARALLEL_SOURCE
    max_parallel_target: int = constants.DEFAULT_MAX_PARALLEL_TARGET
    tags: list[str] = field(default_factory=list)
    ctime: float = field(default_factory=time.time)
    mtime: float = field(default_factory=time.time)

    def data_dirs_problem(self) -> str | None:
        """None when the export, file storage and shared file storage dirs are apart,
        else what is wrong: one dir for two uses, or one in another, would make an
        export's folder an instance's disk folder (removing either removes both)."""
        dirs = [(n, getattr(self, n).rstrip("/") or "/") for n in DATA_DIR_FIELDS]
        for (name, path), (other, other_path) in itertools.combinations(dirs, 2):
            one, two = path.rstrip("/") + "/", other_path.rstrip("/") + "/"
            if one.startswith(two) or two.startswith(one):  # the same, or one in the other
                return (
                    f"The {name} ({path}) and the {other} ({other_path}) must be apart:"
                    " neither the same directory nor one inside the other"
                )
        return None

    def fill_hvparams(
        self, instance: Instance, temporary: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """Cluster defaults overlaid with the instance's own hvparams (and, for one
        start, ``temporary`` ones, as ``instance startup -H``)."""
        return {**constants.HVC_DEFAULTS, **self.hvparams, **instance.hvparams, **(temporary or {})}

    def fill_beparams(
        self, instance: Instance, temporary: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """Cluster defaults overlaid with the instance's own beparams (and, for one
        start, ``temporary`` ones, as ``instance startup -B``)."""
        return {**constants.BEC_DEFAULTS, **self.beparams, **instance.beparams, **(temporary or {})}


@dataclass
class ConfigData(ConfigObject):
    """The whole configuration: one file, one serial number."""

    cluster: Cluster
    version: int = CONFIG_VERSION
    serial: int = 0
    nodes: dict[str, Node] = field(default_factory=dict)
    instances: dict[str, Instance] = field(default_factory=dict)

    _NESTED = {"cluster": Cluster}
    _NESTED_DICTS = {"nodes": Node, "instances": Instance}


def disk_dir(cluster: Cluster, instance: Instance) -> str:
    """Directory holding the instance's disk images on its node(s)."""
    base = (
        cluster.shared_file_storage_dir
        if instance.disk_template == constants.DT_SHARED_FILE
        else cluster.file_storage_dir
    )
    return f"{base}/{instance.name}"


def disk_path(cluster: Cluster, instance: Instance, idx: int) -> str:
    """Path of disk ``idx`` of the instance on its node."""
    return f"{disk_dir(cluster, instance)}/disk{idx}.img"


def disk_paths(cluster: Cluster, instance: Instance) -> list[str]:
    """Paths of every disk of the instance on its node, in order."""
    return [disk_path(cluster, instance, idx) for idx in range(len(instance.disks))]
