"""Names, addresses, paths and configuration texts of the Ganeti peer (pure logic).

The peer is a real 2-node Ganeti 3.0 cluster in network namespaces beside
the local cluster. Its kernel objects are named ``gpr<id>…`` (``id`` derived
from its directory, as the local cluster's ``glv<id>…``), its default subnet
is 10.251.0.0/24 (the local cluster uses 10.250.N.0/24), and its nodes and
cluster have fully qualified names that resolve only inside its nodes.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from typing import ClassVar

from ganeti_lv.devcluster import guest
from ganeti_lv.devcluster import layout as lay
from ganeti_lv.errors import ECODE_INVAL, ECODE_NOENT, OpPrereqError

DEFAULT_DIR = "/var/tmp/ganeti-lv-peer"
DEFAULT_SUBNET = "10.251.0.0/24"
SUBNET_BASE = "10.251"
NODES = 2
DOMAIN = "ganeti-peer.test"
CLUSTER_HOST = "cluster"
MASTER_IP_INDEX = 10  # the cluster (master) address: .10 of the subnet
NODE_BRIDGE = lay.NODE_BRIDGE
MASTER_NETDEV = "eth0"

FILE_STORAGE_DIR = "/srv/ganeti/file-storage"
SHARED_FILE_STORAGE_DIR = "/srv/ganeti/shared-file-storage"
SSHD_PIDFILE = "/run/sshd/sshd.pid"
SSH_HOST_KEY = "/etc/ssh/ssh_host_rsa_key"
RAPI_PORT = 5080
RAPI_USER = "glv-peer"
RAPI_USERS_FILE = "/var/lib/ganeti/rapi/users"
RAPI_CERT = "/var/lib/ganeti/rapi.pem"
GANETI_RUN_DIR = "/run/ganeti"
# Daemons gnt-cluster init starts on the master (kvmd exits by itself, metad
# starts on demand); a node added later runs noded only until the master
# distributes the configuration, then also confd and mond.
MASTER_DAEMONS = ("ganeti-noded", "ganeti-confd", "ganeti-wconfd", "ganeti-luxid", "ganeti-rapi")
NODE_DAEMONS = ("ganeti-noded",)

# Per-node directory (under the node's host directory) -> mount point on the
# node, mounted in this order (the shared storage goes inside /srv/ganeti).
NODE_MOUNTS: tuple[tuple[str, str], ...] = (
    ("etc-ganeti", "/etc/ganeti"),
    ("lib-ganeti", "/var/lib/ganeti"),
    ("run-ganeti", GANETI_RUN_DIR),
    ("log-ganeti", "/var/log/ganeti"),
    ("root-ssh", "/root/.ssh"),
    ("etc-ssh", "/etc/ssh"),
    ("run-sshd", "/run/sshd"),
    ("run-lock", "/run/lock"),
    ("srv-ganeti", "/srv/ganeti"),
)
# Per-node file -> file it replaces on the node.
NODE_FILES: tuple[tuple[str, str], ...] = (
    ("hosts", "/etc/hosts"),
    ("default-ganeti", "/etc/default/ganeti"),
)


def parse_subnet(cidr: str) -> ipaddress.IPv4Network:
    """Parse a peer subnet: it needs room for the nodes, the cluster address and the host."""
    try:
        net = ipaddress.IPv4Network(cidr, strict=True)
    except ValueError as err:
        raise OpPrereqError(f"Invalid subnet {cidr!r}: {err}", ECODE_INVAL) from err
    if net.num_addresses < 16:
        raise OpPrereqError(
            f"Subnet {cidr} too small for the Ganeti peer (at least a /28)", ECODE_INVAL
        )
    return net


def check_instance_name(name: str) -> str:
    """Refuse instance names Ganeti or the guest's kernel command line would not take."""
    ok = name and len(name) <= 63 and name[0].isalnum()
    if not ok or not all(c.isalnum() or c in "-." for c in name):
        raise OpPrereqError(
            f"Invalid instance name {name!r}: letters, digits, '-' and '.' only, "
            "starting with a letter or digit, at most 63 characters",
            ECODE_INVAL,
        )
    return name


@dataclass(frozen=True)
class PeerNode(lay.NodeLayout):
    """Everything that names one node of the Ganeti peer."""

    @property
    def fqdn(self) -> str:
        """The node's fully qualified name (its host name and Ganeti node name)."""
        return f"{self.name}.{DOMAIN}"

    def host_path(self, node_path: str) -> str:
        """Host-side path backing a path inside one of the node's own mounts."""
        for sub, mount in NODE_MOUNTS:
            if node_path == mount or node_path.startswith(mount + "/"):
                return os.path.join(self.host_dir, sub) + node_path[len(mount) :]
        raise ValueError(f"{node_path} is not inside a node-local mount")


@dataclass(frozen=True)
class PeerLayout(lay.BridgedLayout):
    """Names and paths of a whole Ganeti peer."""

    KIND_PREFIX: ClassVar[str] = "gpr"

    nodes: tuple[PeerNode, ...]

    @classmethod
    def build(cls, directory: str, subnet: str = DEFAULT_SUBNET) -> PeerLayout:
        """Compute the layout of the peer in ``directory`` on ``subnet``."""
        directory = os.path.realpath(directory)
        net = parse_subnet(subnet)
        cid = lay.cluster_id(directory)
        nodes = lay.build_nodes(directory, net, f"{cls.KIND_PREFIX}{cid}", NODES, PeerNode)
        return cls(directory, cid, net, nodes)

    @property
    def master_ip(self) -> str:
        """The cluster's (master) address."""
        return str(self.subnet.network_address + MASTER_IP_INDEX)

    @property
    def cluster_fqdn(self) -> str:
        """The Ganeti cluster name."""
        return f"{CLUSTER_HOST}.{DOMAIN}"

    @property
    def master(self) -> PeerNode:
        """The node the cluster is initialised on."""
        return self.nodes[0]

    @property
    def shared_dir(self) -> str:
        """Host directory mounted as shared file storage on both nodes."""
        return os.path.join(self.directory, "shared")

    @property
    def console_dir(self) -> str:
        """Host directory of the instances' serial console logs (seen by both nodes)."""
        return os.path.join(self.directory, "consoles")

    @property
    def key_file(self) -> str:
        """The master's root SSH key (host side)."""
        return os.path.join(self.directory, "keys", "id_rsa")

    @property
    def host_key_file(self) -> str:
        """The nodes' SSH host key (host side; one key, as Ganeti's nodes share one)."""
        return os.path.join(self.directory, "keys", "ssh_host_rsa_key")

    @property
    def state_file(self) -> str:
        """Record of everything started, for ``down``."""
        return os.path.join(self.directory, "state.json")

    @property
    def info_file(self) -> str:
        """peer.json, the description tests and benchmarks read."""
        return os.path.join(self.directory, "peer.json")

    def node(self, name: str) -> PeerNode:
        """Layout of node ``name`` (short name or FQDN)."""
        for node in self.nodes:
            if name in (node.name, node.fqdn):
                return node
        raise OpPrereqError(f"Peer node '{name}' not known", ECODE_NOENT)

    def console_log(self, instance: str) -> str:
        """Host path of an instance's serial console log."""
        return os.path.join(self.console_dir, f"{instance}.log")

    def node_mounts(self, node: PeerNode) -> list[tuple[str, str]]:
        """(host path, node path) bind mounts of a node, in mount order."""
        mounts = [(os.path.join(node.host_dir, sub), mnt) for sub, mnt in NODE_MOUNTS]
        mounts.append((self.shared_dir, SHARED_FILE_STORAGE_DIR))
        mounts += [(os.path.join(node.host_dir, sub), path) for sub, path in NODE_FILES]
        return mounts


# --- configuration texts ------------------------------------------------------


def hosts_file(pl: PeerLayout) -> str:
    """/etc/hosts of every node: loopback, the nodes and the cluster name."""
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    lines += [f"{n.address}\t{n.fqdn} {n.name}" for n in pl.nodes]
    lines.append(f"{pl.master_ip}\t{pl.cluster_fqdn} {CLUSTER_HOST}")
    return "\n".join(lines) + "\n"


def file_storage_paths() -> str:
    """/etc/ganeti/file-storage-paths: the directories file disks may live in."""
    return f"{FILE_STORAGE_DIR}\n{SHARED_FILE_STORAGE_DIR}\n"


def default_ganeti(original: str) -> str:
    """/etc/default/ganeti of a node: the package's, with RAPI on every address.

    The package binds RAPI to 127.0.0.1, which only the node itself reaches;
    the peer's RAPI must answer the host (still with authentication).
    """
    out = [ln for ln in original.splitlines() if not ln.startswith("RAPI_ARGS=")]
    out.append('RAPI_ARGS="-b 0.0.0.0 --require-authentication"')
    return "\n".join(out) + "\n"


def rapi_users(user: str, password: str) -> str:
    """RAPI users file: one user with write access."""
    if not user or any(c.isspace() for c in user + password) or not password:
        raise OpPrereqError("RAPI user and password must be non-empty words", ECODE_INVAL)
    return f"{user} {password} write\n"


def sshd_config(node: PeerNode) -> str:
    """sshd_config of a peer node (node paths: /etc/ssh is the node's own)."""
    return lay.sshd_config_text(node.address, SSH_HOST_KEY, SSHD_PIDFILE)


def cluster_init_argv(pl: PeerLayout) -> list[str]:
    """``gnt-cluster init`` for TCG (kvm_flag=disabled) with file and sharedfile disks."""
    hv = "kvm:kvm_path=/usr/bin/qemu-system-x86_64,kvm_flag=disabled,kernel_path=,initrd_path="
    return [
        "gnt-cluster",
        "init",
        "--no-etc-hosts",
        "--no-ssh-init",
        "--master-netdev",
        MASTER_NETDEV,
        "--enabled-hypervisors",
        "kvm",
        "-H",
        hv,
        "--enabled-disk-templates",
        "file,sharedfile",
        "--file-storage-dir",
        FILE_STORAGE_DIR,
        "--shared-file-storage-dir",
        SHARED_FILE_STORAGE_DIR,
        "-N",
        f"link={NODE_BRIDGE}",
        pl.cluster_fqdn,
    ]


def _escape_commas(value: str) -> str:
    """Escape commas for a Ganeti ``key=value,...`` option."""
    return value.replace(",", "\\,")


def instance_kvm_params(
    pl: PeerLayout,
    name: str,
    image: guest.GuestImage,
    dirtymb: int = 0,
    seed: str | None = None,
    writepat: bool = True,
) -> str:
    """The ``-H kvm:...`` value of the test guest.

    The serial port goes to a file on storage both nodes see (appending, so
    the migration target continues the log), as the local cluster's guests
    do. Ganeti's own serial socket is switched off (it passes ``-serial
    none``, which leaves qemu without any serial port), and the port is added
    as a device of its own through ``kvm_extra``. ``seed`` (default: the
    name) and ``writepat`` are the guest's pattern settings (``writepat``
    False: the guest only reads and reports the pattern, e.g. of an
    imported disk).
    """
    args = guest.kernel_args(seed or name, patmb=16, dirtymb=dirtymb, writepat=writepat)
    extra = (
        f"-chardev file,id=glvconsole,path={pl.console_log(name)},append=on "
        "-device isa-serial,chardev=glvconsole"
    )
    params = [
        f"kernel_path={image.kernel}",
        f"initrd_path={image.initrd}",
        f"kernel_args={args}",
        "serial_console=false",
        f"kvm_extra={extra}",
    ]
    return "kvm:" + ",".join(_escape_commas(p) for p in params)


def instance_add_argv(
    pl: PeerLayout,
    name: str,
    node: PeerNode,
    image: guest.GuestImage,
    template: str = "sharedfile",
    disk_mb: int = 128,
    memory_mb: int = 128,
    dirtymb: int = 0,
    start: bool = True,
) -> list[str]:
    """``gnt-instance add`` of the test guest as a Ganeti instance on ``node``.

    Without ``start`` the instance is created stopped (``--no-start``).
    """
    check_instance_name(name)
    if template not in ("file", "sharedfile"):
        raise OpPrereqError(
            f"Disk template {template!r} not enabled on the peer (file, sharedfile)", ECODE_INVAL
        )
    return [
        "gnt-instance",
        "add",
        "--ignore-ipolicy",
        "-t",
        template,
        "-o",
        "noop",
        "--disk",
        f"0:size={disk_mb}M",
        "-B",
        f"maxmem={memory_mb},minmem={memory_mb},vcpus=1",
        "-H",
        instance_kvm_params(pl, name, image, dirtymb),
        "--net",
        f"0:link={NODE_BRIDGE}",
        "-n",
        node.fqdn,
        "--no-name-check",
        "--no-ip-check",
        *([] if start else ["--no-start"]),
        name,
    ]
