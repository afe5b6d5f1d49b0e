"""Configuration objects: Cluster, Node, Instance, Disk, Nic, ConfigData.

Plain dataclasses with ``to_dict``/``from_dict``; unknown keys in stored data
are rejected so a typo in a hand-edited file is an error, not a silent drop.
Sizes are in MiB, times in seconds since the epoch.
"""

from __future__ import annotations

import dataclasses
import time
import uuid as uuid_mod
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ganeti_lv import constants
from ganeti_lv.errors import ConfigurationError

T = TypeVar("T", bound="ConfigObject")

CONFIG_VERSION = 1


def new_uuid() -> str:
    """Return a fresh random UUID string."""
    return str(uuid_mod.uuid4())


class ConfigObject:
    """Mixin giving dataclasses a dict form (recursing into nested objects)."""

    _NESTED: dict[str, type[ConfigObject]] = {}
    _NESTED_LISTS: dict[str, type[ConfigObject]] = {}
    _NESTED_DICTS: dict[str, type[ConfigObject]] = {}

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict of this object."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if isinstance(value, ConfigObject):
                value = value.to_dict()
            elif isinstance(value, list):
                value = [v.to_dict() if isinstance(v, ConfigObject) else v for v in value]
            elif isinstance(value, dict):
                value = {
                    k: (v.to_dict() if isinstance(v, ConfigObject) else v) for k, v in value.items()
                }
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls: type[T], data: dict[str, Any]) -> T:
        """Build an object from ``to_dict`` output; raise ConfigurationError on bad data."""
        if not isinstance(data, dict):
            raise ConfigurationError(
                f"{cls.__name__}: expected a mapping, got {type(data).__name__}"
            )
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = set(data) - names
        if unknown:
            raise ConfigurationError(f"{cls.__name__}: unknown keys {sorted(unknown)}")
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key in cls._NESTED and value is not None:
                value = cls._NESTED[key].from_dict(value)
            elif key in cls._NESTED_LISTS:
                value = [cls._NESTED_LISTS[key].from_dict(v) for v in value]
            elif key in cls._NESTED_DICTS:
                value = {k: cls._NESTED_DICTS[key].from_dict(v) for k, v in value.items()}
            kwargs[key] = value
        try:
            return cls(**kwargs)
        except TypeError as err:
            raise ConfigurationError(f"{cls.__name__}: {err}") from err

    def copy(self: T) -> T:
        """Return a deep copy."""
        return type(self).from_dict(self.to_dict())


@dataclass
class Disk(ConfigObject):
    """One instance disk; ``size`` in MiB. ``name`` is the file name on the node."""

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
    ctime: float = field(default_factory=time.time)
    mtime: float = field(default_factory=time.time)


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
    hooks_timeout: float = constants.HOOKS_DEFAULT_TIMEOUT
    tags: list[str] = field(default_factory=list)
    ctime: float = field(default_factory=time.time)
    mtime: float = field(default_factory=time.time)

    def fill_hvparams(self, instance: Instance) -> dict[str, Any]:
        """Cluster defaults overlaid with the instance's own hvparams."""
        return {**constants.HVC_DEFAULTS, **self.hvparams, **instance.hvparams}

    def fill_beparams(self, instance: Instance) -> dict[str, Any]:
        """Cluster defaults overlaid with the instance's own beparams."""
        return {**constants.BEC_DEFAULTS, **self.beparams, **instance.beparams}


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
