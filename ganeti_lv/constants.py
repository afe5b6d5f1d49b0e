"""Constants shared across ganeti_lv: hooks, states, templates and defaults."""

from __future__ import annotations

import re

# defined beside the paths of the data dir
from ganeti_lv.paths import DATA_DIR_ENV as DATA_DIR_ENV
from ganeti_lv.paths import DEFAULT_DATA_DIR as DEFAULT_DATA_DIR

# The version of ganeti_lv (``gnt-lv --version``, the master daemon's version query).
RELEASE_VERSION = "0.1.0"

# Hooks
HOOKS_PHASE_PRE = "pre"
HOOKS_PHASE_POST = "post"
HOOKS_VERSION = 2
# The hooks path run on the master after an operation that wrote the configuration.
HOOKS_NAME_CFGUPDATE = "config-update"
HTYPE_CLUSTER = "CLUSTER"
HTYPE_NODE = "NODE"
HTYPE_INSTANCE = "INSTANCE"

# Ganeti's tag kinds (OP_TAGS_*); ganeti_lv has no node groups or networks to tag
TAG_CLUSTER = "cluster"
TAG_NODE = "node"
TAG_INSTANCE = "instance"
TAG_KINDS = (TAG_CLUSTER, TAG_NODE, TAG_INSTANCE)
GANETI_TAG_KINDS = (TAG_CLUSTER, "nodegroup", "node", "instance", "network")

HPATH_INSTANCE_MIGRATE = "instance-migrate"
HPATH_INSTANCE_FAILOVER = "instance-failover"
HPATH_INSTANCE_EXPORT = "instance-export"
HPATH_INSTANCE_ADD = "instance-add"
HPATH_INSTANCE_START = "instance-start"
HPATH_INSTANCE_STOP = "instance-stop"
HPATH_INSTANCE_REBOOT = "instance-reboot"
HPATH_INSTANCE_REMOVE = "instance-remove"
HPATH_INSTANCE_MODIFY = "instance-modify"
HPATH_NODE_ADD = "node-add"
HPATH_NODE_REMOVE = "node-remove"
HPATH_NODE_MODIFY = "node-modify"
HPATH_NODE_MIGRATE = "node-migrate"
HPATH_CLUSTER_MODIFY = "cluster-modify"
HOOKS_NAME_RE = re.compile(r"^[a-zA-Z0-9_-]+\Z")
HOOKS_DEFAULT_TIMEOUT = 60.0
HOOKS_PATH = "/sbin:/bin:/usr/sbin:/usr/bin"

HKR_SKIP = "SKIP"
HKR_FAIL = "FAIL"
HKR_SUCCESS = "SUCCESS"

# Job statuses (the job log, ``gnt-lv job list``, the master daemon, the remote API)
JOB_STATUS_QUEUED = "queued"
JOB_STATUS_RUNNING = "running"
JOB_STATUS_SUCCESS = "success"
JOB_STATUS_ERROR = "error"
JOB_STATUS_CANCELED = "canceled"
JOB_STATUS_LOST = "lost"
# shown, never recorded: a running opcode (and its job) that does not hold its locks yet
JOB_STATUS_WAITING = "waiting"
# shown, never recorded: a running job asked to stop (its cancel request recorded), until
# it ends (canceled, or as it ends when it does not stop)
JOB_STATUS_CANCELING = "canceling"
JOB_ACTIVE_STATUSES = (JOB_STATUS_QUEUED, JOB_STATUS_RUNNING)
# the statuses ``gnt-lv job list`` shows
JOB_STATUSES = (
    JOB_STATUS_QUEUED,
    JOB_STATUS_WAITING,
    JOB_STATUS_RUNNING,
    JOB_STATUS_CANCELING,
    JOB_STATUS_SUCCESS,
    JOB_STATUS_ERROR,
    JOB_STATUS_CANCELED,
    JOB_STATUS_LOST,
)

# Instance admin states and the status values shown to users (Ganeti's)
ADMINST_UP = "up"
ADMINST_DOWN = "down"
ADMINST_OFFLINE = "offline"
ADMINST_ALL = (ADMINST_UP, ADMINST_DOWN, ADMINST_OFFLINE)
# Who last changed an instance's admin state (Ganeti's): here always the
# administrator; Ganeti's "user" (the guest shut itself down, user shutdown
# enabled) has no counterpart
ADMIN_SOURCE = "admin"
USER_SOURCE = "user"
ADMIN_STATE_SOURCES = (ADMIN_SOURCE, USER_SOURCE)

# Ganeti's sources of reason trail entries (an opcode's ``reason``): the user's
# reason, a client ("gnt:client:gnt-lv"), the remote API's resource
# ("gnt:library:rlib2:instances_name_migrate"), the master ("gnt:opcode:node_evacuate")
OPCODE_REASON_SRC_USER = "gnt:user"
OPCODE_REASON_SRC_CLIENT = "gnt:client"
OPCODE_REASON_SRC_RLIB2 = "gnt:library:rlib2"
OPCODE_REASON_SRC_OPCODE = "gnt:opcode"

INSTST_RUNNING = "running"
INSTST_ADMINDOWN = "ADMIN_down"
INSTST_ADMINOFFLINE = "ADMIN_offline"
INSTST_ERRORDOWN = "ERROR_down"
INSTST_ERRORUP = "ERROR_up"
INSTST_WRONGNODE = "ERROR_wrongnode"
INSTST_NODEOFFLINE = "ERROR_nodeoffline"
INSTST_NODEDOWN = "ERROR_nodedown"

# A query row's ``live``: why its live fields have no value, as Ganeti's result
# statuses RS_OFFLINE and RS_NODATA (its lists print "*" and "?"): the node is
# marked offline, or it was not asked or did not answer. None: the node
# answered, and a live field without a value does not apply (Ganeti's "-").
LIVE_OFFLINE = "offline"
LIVE_NODATA = "nodata"

# Domain run states as the hypervisor layer reports them
DOMSTATE_RUNNING = "running"
DOMSTATE_PAUSED = "paused"
DOMSTATE_SHUTOFF = "shutoff"
DOMSTATE_CRASHED = "crashed"
DOMSTATE_OTHER = "other"
# a domain that holds the guest's memory, and one that holds none
DOMSTATES_ACTIVE = (DOMSTATE_RUNNING, DOMSTATE_PAUSED)
DOMSTATES_STOPPED = (DOMSTATE_SHUTOFF, DOMSTATE_CRASHED)

# Disk templates
DT_FILE = "file"
DT_SHARED_FILE = "sharedfile"
DISK_TEMPLATES = (DT_FILE, DT_SHARED_FILE)
DTS_MIRRORED_MIGRATABLE = (DT_FILE, DT_SHARED_FILE)  # file: with copy-storage

# Migration
HT_MIGRATION_LIVE = "live"
HT_MIGRATION_NONLIVE = "non-live"
HT_MIGRATION_MODES = (HT_MIGRATION_LIVE, HT_MIGRATION_NONLIVE)

# Export
EXPORT_MODE_LOCAL = "local"
EXPORT_MODE_REMOTE = "remote"
EXPORT_MODES = (EXPORT_MODE_LOCAL, EXPORT_MODE_REMOTE)
EXPORT_VERSION = 0
IEC_NONE = "none"
IEC_GZIP = "gzip"
IEC_ZSTD = "zstd"
IEC_ALL = (IEC_NONE, IEC_GZIP, IEC_ZSTD)
DEFAULT_SHUTDOWN_TIMEOUT = 120

# Domain types
DOMAIN_TYPE_KVM = "kvm"
DOMAIN_TYPE_QEMU = "qemu"
DOMAIN_TYPES = (DOMAIN_TYPE_KVM, DOMAIN_TYPE_QEMU)

HYPERVISOR_KVM = "kvm"

# Ganeti's node roles, as its node lists show them: M(aster), C(andidate),
# D(rained), O(ffline), R(egular)
NR_MASTER, NR_MCANDIDATE, NR_DRAINED, NR_OFFLINE, NR_REGULAR = "M", "C", "D", "O", "R"

# Default hypervisor parameters. Migration defaults are chosen to converge
# (Ganeti's 32 MiB/s and 30 ms rarely do): 0 bandwidth means unlimited.
# migration_downtime is the downtime limit (ms) a migration may reach: it
# starts at migration_downtime_initial and is raised in
# migration_downtime_steps steps of equal ratio, one each time
# migration_downtime_passes more passes over memory did not complete it.
HVC_DEFAULTS: dict[str, str | int | bool] = {
    "kernel_path": "",
    "initrd_path": "",
    "kernel_args": "",
    "cpu_type": "",
    "serial_console": True,
    "acpi": True,
    "migration_bandwidth": 0,
    "migration_downtime": 300,
    "migration_downtime_initial": 5,
    "migration_downtime_steps": 5,
    "migration_downtime_passes": 2,
    "migration_mode": HT_MIGRATION_LIVE,
    "migration_caps": "",
    # the migration stream over TLS with the nodes' certificates (libvirt's and qemu's)
    "migration_encryption": False,
}

# Ganeti 3.0's KVM hypervisor parameters that libvirt's domain definition
# covers here (or that do not apply): known names, never set
GANETI_KVM_ONLY_HVPARAMS = frozenset(
    [
        "boot_order",
        "cdrom2_image_path",
        "cdrom_disk_type",
        "cdrom_image_path",
        "cpu_cores",
        "cpu_mask",
        "cpu_sockets",
        "cpu_threads",
        "disk_aio",
        "disk_cache",
        "disk_discard",
        "disk_type",
        "floppy_image_path",
        "keymap",
        "kvm_extra",
        "kvm_flag",
        "kvm_path",
        "kvm_pci_reservations",
        "machine_version",
        "mem_path",
        "migration_port",
        "nic_type",
        "reboot_behavior",
        "root_path",
        "scsi_controller_type",
        "security_domain",
        "security_model",
        "serial_speed",
        "soundhw",
        "spice_bind",
        "spice_image_compression",
        "spice_ip_version",
        "spice_jpeg_wan_compression",
        "spice_password_file",
        "spice_playback_compression",
        "spice_streaming_video",
        "spice_tls_ciphers",
        "spice_use_tls",
        "spice_use_vdagent",
        "spice_zlib_glz_wan_compression",
        "usb_devices",
        "usb_mouse",
        "use_chroot",
        "use_guest_agent",
        "use_localtime",
        "user_shutdown",
        "vga",
        "vhost_net",
        "virtio_net_queues",
        "vnc_bind_address",
        "vnc_password_file",
        "vnc_tls",
        "vnc_x509_path",
        "vnc_x509_verify",
        "vnet_hdr",
    ]
)
# Ganeti 3.0's parameters of its other hypervisors (Xen, LXC, chroot, fake):
# instance fields on a KVM cluster too, without a value; xen_cmd is global there
GANETI_OTHER_HVPARAMS = frozenset(
    [
        "blockdev_prefix",
        "bootloader_args",
        "bootloader_path",
        "cpu_cap",
        "cpu_weight",
        "cpuid",
        "device_model",
        "devices",
        "drop_capabilities",
        "extra_cgroups",
        "extra_config",
        "init_script",
        "num_ttys",
        "pae",
        "pci_pass",
        "startup_timeout",
        "use_bootloader",
        "vif_script",
        "vif_type",
        "viridian",
    ]
)
# Ganeti 3.0's backend parameters without a use here (no spindle accounting),
# with the value an export gives Ganeti
GANETI_ONLY_BEPARAMS: dict[str, int] = {"spindle_use": 1}

# hypervisor parameters set for the whole cluster only (Ganeti's HVC_GLOBALS of
# KVM; migration_port has no use here)
HVC_GLOBALS = ("migration_bandwidth", "migration_mode", "migration_port")

# the least value of the migration downtime ramp's parameters (see HVC_DEFAULTS)
HVC_MINIMUMS: dict[str, int] = {
    "migration_downtime_initial": 1,
    "migration_downtime_steps": 0,
    "migration_downtime_passes": 1,
}
# and at most (a ramp of a billion steps would be built in the master's memory)
HVC_MAXIMUMS: dict[str, int] = {
    "migration_downtime_steps": 100,
    "migration_downtime_passes": 1000,
}
# hypervisor parameters that name a file on the nodes: absolute, or empty for none
HVC_PATHS = ("kernel_path", "initrd_path")

# hypervisor parameters that take one of a few words
HVC_CHOICES: dict[str, tuple[str, ...]] = {"migration_mode": HT_MIGRATION_MODES}

BEC_DEFAULTS: dict[str, int | bool] = {
    "maxmem": 128,
    "minmem": 128,
    "vcpus": 1,
    "auto_balance": True,
    "always_failover": False,
}

# Names that end up in paths and remote commands: a DNS label's subset
MAX_NAME_LENGTH = 63
NAME_RE = re.compile(rf"^[a-z0-9]([a-z0-9.-]{{0,{MAX_NAME_LENGTH - 2}}}[a-z0-9])?\Z")
# An export dir keeps an export being written as <instance>.new and the one it
# replaces as <instance>.old: no instance name ends so
EXPORT_NEW_SUFFIX = ".new"
EXPORT_OLD_SUFFIX = ".old"

# node migrate/evacuate: default moves at once per source and per target node
DEFAULT_MAX_PARALLEL_SOURCE = 2
DEFAULT_MAX_PARALLEL_TARGET = 1

# Instance allocators: any name stands for the built-in one. A new cluster's
# default is Ganeti's hail (Ganeti's init picks it when it is installed);
# "." asks for the cluster's default; an allocator's name is Ganeti's form.
IALLOC_HAIL = "hail"
DEFAULT_IALLOCATOR_SHORTCUT = "."
IALLOCATOR_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,62}\Z")
# A Linux network interface name (IFNAMSIZ - 1 characters, no '/' or blanks): a bridge
BRIDGE_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,14}\Z")
# a node's SSH user: a login name (never read as an option or a URI part)
SSH_USER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,31}\Z")
# the libvirt URI schemes a node may be reached by (``qemu+ext`` would run a program
# on the master, the other drivers manage no guests of ours)
LIBVIRT_URI_SCHEMES = frozenset(
    {"qemu", "qemu+tls", "qemu+ssh", "qemu+libssh", "qemu+libssh2", "qemu+tcp", "qemu+unix"}
)

# severities of cluster verify's problems: only errors fail it (as in Ganeti)
VERIFY_ERROR = "ERROR"
VERIFY_WARNING = "WARNING"
