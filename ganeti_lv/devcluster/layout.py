"""Names, addresses, paths and configuration texts of a local cluster (pure logic).

Every name is derived from a short id of the cluster directory so several
clusters (different directories and subnets) can run side by side; kernel
interface names stay within 15 characters.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import uuid
from dataclasses import dataclass
from typing import ClassVar, TypeVar

from ganeti_lv import pki
from ganeti_lv.errors import ECODE_INVAL, OpPrereqError

DEFAULT_DIR = "/var/tmp/ganeti-lv-devcluster"
DEFAULT_SUBNET = "10.250.0.0/24"
MAX_NODES = 3
NODE_BRIDGE = "gnt-br0"
IFNAMSIZ = 15

# Node-local paths of the ganeti_lv cluster configuration (as seen on a node).
HOOKS_BASE_DIR = "/etc/ganeti-lv/hooks"
EXPORT_DIR = "/srv/ganeti-lv/export"
FILE_STORAGE_DIR = "/srv/ganeti-lv/file-storage"
SHARED_FILE_STORAGE_DIR = "/srv/ganeti-lv/shared-file-storage"

# The node's libvirt log directory (libvirtd's log, the reapers' records, the consoles).
NODE_LOG_DIR = "/var/log/libvirt"
# Per-node directory (under the node's host directory) -> mount point on the node.
NODE_MOUNTS: tuple[tuple[str, str], ...] = (
    ("etc-libvirt", "/etc/libvirt"),
    ("etc-pki", "/etc/pki"),
    ("run-libvirt", "/run/libvirt"),
    ("lib-libvirt", "/var/lib/libvirt"),
    ("log-libvirt", NODE_LOG_DIR),
    ("cache-libvirt", "/var/cache/libvirt"),
    ("root-ssh", "/root/.ssh"),
    ("run-sshd", "/run/sshd"),
    ("hooks", HOOKS_BASE_DIR),
    ("export", EXPORT_DIR),
    ("file-storage", FILE_STORAGE_DIR),
)
# Node-visible paths of daemon files (inside the node's /run/libvirt mount).
PIDFILES = {
    "virtlogd": "/run/libvirt/virtlogd.pid",
    "libvirtd": "/run/libvirt/libvirtd.pid",
    "sshd": "/run/libvirt/sshd.pid",
}
# Where the reapers below the node daemons record how each process they reaped ended.
REAPER_LOG = f"{NODE_LOG_DIR}/reaper.log"
LIBVIRT_SOCK = "/run/libvirt/libvirt-sock"
DAEMONS = ("virtlogd", "libvirtd", "sshd")
# How the master and the nodes reach a node's libvirtd: TLS with the cluster's
# certificates (the default), or plain TCP without authentication (debugging only).
TRANSPORT_TLS = "tls"
TRANSPORT_TCP = "tcp"
TRANSPORTS = (TRANSPORT_TLS, TRANSPORT_TCP)
LIBVIRT_PORTS = {TRANSPORT_TLS: 16514, TRANSPORT_TCP: 16509}


def cluster_id(directory: str) -> str:
    """Short id (6 hex digits) of a cluster directory."""
    return hashlib.sha1(os.path.realpath(directory).encode()).hexdigest()[:6]


def parse_subnet(cidr: str, nodes: int) -> ipaddress.IPv4Network:
    """Parse and check a subnet: room for ``nodes`` nodes (.1 ...) and the bridge."""
    try:
        net = ipaddress.IPv4Network(cidr, strict=True)
    except ValueError as err:
        raise OpPrereqError(f"Invalid subnet {cidr!r}: {err}", ECODE_INVAL) from err
    if net.num_addresses - 2 < nodes + 1:
        raise OpPrereqError(f"Subnet {cidr} too small for {nodes} nodes", ECODE_INVAL)
    return net


def parse_memory_caps(specs: list[str] | None) -> dict[str, int]:
    """Parse ``node=MiB`` items (MiB may end in M or G) into a dict."""
    caps: dict[str, int] = {}
    for spec in specs or []:
        name, sep, value = spec.partition("=")
        value = value.strip().upper()
        mult = 1
        if value.endswith("G"):
            mult, value = 1024, value[:-1]
        elif value.endswith("M"):
            value = value[:-1]
        if not sep or not name or not value.isdigit():
            raise OpPrereqError(f"Invalid memory cap {spec!r} (want node=MiB)", ECODE_INVAL)
        caps[name] = int(value) * mult
    return caps


@dataclass(frozen=True)
class NodeLayout:
    """Everything that names one node of a local cluster."""

    index: int
    name: str
    address: str
    prefixlen: int
    netns: str
    veth_host: str
    veth_peer: str
    host_dir: str

    def libvirt_uri(self, transport: str = TRANSPORT_TLS) -> str:
        """URI reaching this node's libvirtd (from the host or a peer) over ``transport``."""
        return f"qemu+{transport}://{self.address}/system"

    def host_path(self, node_path: str) -> str:
        """Host-side path backing a path inside one of the node's bind mounts."""
        for sub, mount in NODE_MOUNTS:
            if node_path == mount or node_path.startswith(mount + "/"):
                return os.path.join(self.host_dir, sub) + node_path[len(mount) :]
        raise ValueError(f"{node_path} is not inside a node-local mount")

    @property
    def host_uuid(self) -> str:
        """Stable, distinct libvirt host uuid of this node."""
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"ganeti-lv-devcluster/{self.netns}"))

    @property
    def sshd_dir(self) -> str:
        """Host directory with the node's sshd config and host key."""
        return os.path.join(self.host_dir, "sshd")


NodeT = TypeVar("NodeT", bound=NodeLayout)


def build_nodes(
    directory: str,
    net: ipaddress.IPv4Network,
    prefix: str,
    count: int,
    node_cls: type[NodeT],
) -> tuple[NodeT, ...]:
    """Layouts of nodes node1..node<count>: addresses .1, .2 ... of ``net``, kernel
    object names starting with ``prefix``, host directories under ``directory``/nodes."""
    return tuple(
        node_cls(
            index=i,
            name=f"node{i}",
            address=str(net.network_address + i),
            prefixlen=net.prefixlen,
            netns=f"{prefix}n{i}",
            veth_host=f"{prefix}v{i}",
            veth_peer=f"{prefix}p{i}",
            host_dir=os.path.join(directory, "nodes", f"node{i}"),
        )
        for i in range(1, count + 1)
    )


@dataclass(frozen=True)
class BridgedLayout:
    """A set of namespace nodes on a subnet, joined by a bridge of the root namespace."""

    KIND_PREFIX: ClassVar[str] = "glv"

    directory: str
    cid: str
    subnet: ipaddress.IPv4Network

    @property
    def prefix(self) -> str:
        """Prefix shared by every kernel object name of this cluster."""
        return f"{self.KIND_PREFIX}{self.cid}"

    @property
    def bridge(self) -> str:
        """Bridge in the root namespace joining the nodes' veths."""
        return f"{self.prefix}br"

    @property
    def bridge_address(self) -> str:
        """Host address on the bridge (the last usable one, .254 of a /24)."""
        return str(self.subnet.broadcast_address - 1)


@dataclass(frozen=True)
class ClusterLayout(BridgedLayout):
    """Names and paths of a whole local cluster."""

    nodes: tuple[NodeLayout, ...]

    @classmethod
    def build(cls, directory: str, nodes: int, subnet: str = DEFAULT_SUBNET) -> ClusterLayout:
        """Compute the layout of a ``nodes``-node cluster in ``directory``."""
        if not 1 <= nodes <= MAX_NODES:
            raise OpPrereqError(f"Between 1 and {MAX_NODES} nodes, not {nodes}", ECODE_INVAL)
        directory = os.path.realpath(directory)
        net = parse_subnet(subnet, nodes)
        cid = cluster_id(directory)
        layouts = build_nodes(directory, net, f"{cls.KIND_PREFIX}{cid}", nodes, NodeLayout)
        return cls(directory, cid, net, layouts)

    @property
    def shared_dir(self) -> str:
        """Host directory bind-mounted as shared storage on every node."""
        return os.path.join(self.directory, "shared")

    @property
    def data_dir(self) -> str:
        """The ganeti_lv data dir of this cluster (master side)."""
        return os.path.join(self.directory, "data")

    @property
    def state_file(self) -> str:
        """Record of everything started, for ``down``."""
        return os.path.join(self.directory, "state.json")

    @property
    def info_file(self) -> str:
        """cluster.json, the description tests and scripts read."""
        return os.path.join(self.directory, "cluster.json")

    @property
    def key_file(self) -> str:
        """The cluster's SSH private key (host side)."""
        return os.path.join(self.directory, "keys", "id_cluster")

    @property
    def ca_files(self) -> tuple[str, str]:
        """The harness's CA (certificate, key), given to ``cluster init`` as the operator's."""
        ca_dir = os.path.join(self.directory, "keys", "ca")
        return os.path.join(ca_dir, "cacert.pem"), os.path.join(ca_dir, "cakey.pem")

    @property
    def cluster_name(self) -> str:
        """The ganeti_lv cluster's name."""
        return f"devcluster-{self.cid}"

    def node(self, name: str) -> NodeLayout:
        """Layout of node ``name``."""
        for node in self.nodes:
            if node.name == name:
                return node
        raise OpPrereqError(f"Node '{name}' not known", "unknown_entity")

    def node_mounts(self, node: NodeLayout) -> list[tuple[str, str]]:
        """(host dir, node mount point) bind mounts of a node, shared storage included."""
        mounts = [(os.path.join(node.host_dir, sub), mnt) for sub, mnt in NODE_MOUNTS]
        mounts.append((self.shared_dir, SHARED_FILE_STORAGE_DIR))
        return mounts


def libvirtd_conf(node: NodeLayout, transport: str, cluster_name: str) -> str:
    """libvirtd.conf of a node, listening on the node address only.

    TLS: client certificates of the cluster's CA verified, no TCP listener;
    TCP: without authentication (debugging only).
    """
    if transport == TRANSPORT_TLS:
        listen = pki.libvirtd_tls_settings(cluster_name)
    else:
        listen = 'listen_tls = 0\nlisten_tcp = 1\nauth_tcp = "none"\n'
    return (
        listen + f'listen_addr = "{node.address}"\n'
        'auth_unix_rw = "none"\n'
        'auth_unix_ro = "none"\n'
        f'host_uuid = "{node.host_uuid}"\n'
        f'log_outputs = "3:file:{NODE_LOG_DIR}/libvirtd.log"\n'
        "max_clients = 200\n"
        "max_workers = 40\n"
    )


def qemu_conf(node: NodeLayout) -> str:
    """qemu.conf of a node: root, no security driver or cgroups, node migration address."""
    return (
        'user = "root"\n'
        'group = "root"\n'
        "dynamic_ownership = 0\n"
        "remember_owner = 0\n"
        'security_driver = "none"\n'
        "cgroup_controllers = [ ]\n"
        f'migration_address = "{node.address}"\n'
        f'migration_host = "{node.address}"\n'
        # TLS migration streams (on request) check the peer's certificate
        "migrate_tls_x509_verify = 1\n"
    )


def sshd_config(node: NodeLayout) -> str:
    """sshd_config of a node: its own host key, listening on the node address only."""
    return sshd_config_text(node.address, f"{node.sshd_dir}/ssh_host_ed25519_key", PIDFILES["sshd"])


def sshd_config_text(address: str, host_key: str, pidfile: str) -> str:
    """sshd_config of a test node: root by key only, on ``address`` only."""
    return (
        f"ListenAddress {address}\n"
        "Port 22\n"
        f"HostKey {host_key}\n"
        f"PidFile {pidfile}\n"
        "PermitRootLogin prohibit-password\n"
        "PubkeyAuthentication yes\n"
        "PasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\n"
        "AuthorizedKeysFile /root/.ssh/authorized_keys\n"
        "StrictModes no\n"
        "UsePAM no\n"
        "UseDNS no\n"
        "PrintMotd no\n"
        "MaxStartups 100:30:200\n"
        "MaxSessions 100\n"
        "Subsystem sftp internal-sftp\n"
    )


def ssh_client_config() -> str:
    """root's ~/.ssh/config on every node: the cluster key and the node known_hosts."""
    return (
        "Host *\n"
        "  IdentityFile /root/.ssh/id_cluster\n"
        "  UserKnownHostsFile /root/.ssh/known_hosts\n"
        "  StrictHostKeyChecking yes\n"
        "  BatchMode yes\n"
    )


def hosts_file(layout: ClusterLayout) -> str:
    """/etc/hosts of every node: loopback and all node names."""
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    lines += [f"{n.address}\t{n.name}" for n in layout.nodes]
    return "\n".join(lines) + "\n"


def known_hosts(layout: ClusterLayout, host_keys: dict[str, str]) -> str:
    """known_hosts naming every node by name and address with its host key."""
    return "".join(
        f"{n.name},{n.address} {host_keys[n.name]}\n" for n in layout.nodes if n.name in host_keys
    )
