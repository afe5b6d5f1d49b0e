"""NodeOps on libvirt-python (domains) and SSH (files, commands, hooks).

The master reaches each node's libvirtd at ``node.libvirt_uri`` (one
``Host`` per node, kept open) and the node's shell over SSH with the
cluster key and known_hosts (one ``SshClient`` per node, kept open).
Node-local files (disk images, hooks) are only touched through SSH.
Time and sleep are injectable so the shutdown timeout is testable.

The connections are shared by every job of the process (the master daemon
runs several at once); what one job begins ahead of need lives in its own
session (``open_session``: ``exportops.CopySession``). Everything an
operation needs comes in its arguments: the configuration is never read here.
"""

from __future__ import annotations

import contextlib
import shlex
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote

from ganeti_lv import constants, objects, paths
from ganeti_lv.errors import (
    ECODE_EXISTS,
    ECODE_INVAL,
    ECODE_STATE,
    HypervisorError,
    InstanceNotFound,
    NodeUnreachable,
)
from ganeti_lv.hypervisor.base import DomainInfo, NodeFacts, NodeOps, NodeSession
from ganeti_lv.hypervisor.libvirt import credentials
from ganeti_lv.hypervisor.libvirt.domxml import (
    CONSOLE_LOG_DIR,
    build_domain_xml,
    console_log_path,
    parse_acpi,
)
from ganeti_lv.hypervisor.libvirt.exportops import CopySession, LibvirtExportOps
from ganeti_lv.hypervisor.libvirt.guest import Guest
from ganeti_lv.hypervisor.libvirt.host import (
    ConnectRetry,
    Host,
    _default_connect_retry,
    uri_host,
)
from ganeti_lv.hypervisor.libvirt.migration import MigrationOpsMixin
from ganeti_lv.names import name_problem
from ganeti_lv.node.transport import CommandResult, HookScriptResult
from ganeti_lv.objects import Cluster, Instance, Node
from ganeti_lv.pki import NodeCredentials

if TYPE_CHECKING:
    from ganeti_lv.node.ssh import SshClient

SshFactory = Callable[[Node], "SshClient"]
T = TypeVar("T")

# Lists the bridges of a node: interfaces with a bridge/ directory in sysfs.
_LIST_BRIDGES = (
    'for d in /sys/class/net/*/bridge; do [ -d "$d" ] && basename "$(dirname "$d")"; done; true'
)
_DISK_EXISTS_STATUS = 17
# An instance's disk directory holds only files named after its disks (the
# images, their export overlays, copies being received: ``disk<N>.img*``).
# Those are removed, then the directory if nothing else is left in it (a
# symbolic link to it: the link); a directory named as the instance that
# holds more (a storage dir shared with other files) keeps what is not the
# instance's.
_REMOVE_DISKS = r"""
D="$1"
[ -d "$D" ] || exit 0
rm -f -- "$D"/disk[0-9]*.img "$D"/disk[0-9]*.img.* || exit 1
if [ -L "$D" ]; then rm -f -- "$D"; else rmdir -- "$D" 2>/dev/null || true; fi
"""
# seconds between ACPI power-button presses while a shutdown waits
POWER_BUTTON_INTERVAL = 5.0
# The commands on a node's storage and interfaces (mkdir, truncate, rm, ip) end
# at once on a healthy node; bounded, a hung mount (NFS) ends the job instead
# of holding its locks for ever (s).
NODE_COMMAND_TIMEOUT = 300.0


def default_libvirt_uri(node: Node, key_file: str, known_hosts_file: str) -> str:
    """The URI used when the node has no ``libvirt_uri``: SSH with the cluster key.

    libvirt's libssh transport, because it takes the cluster's known_hosts
    (the node's confirmed host key, checked strictly) besides the key; the
    ``ssh`` command would read the invoking user's own known_hosts.
    """
    port = f":{node.ssh_port}" if node.ssh_port != 22 else ""
    return (
        f"qemu+libssh://{node.ssh_user}@{uri_host(node.address)}{port}/system"
        f"?keyfile={_uri_path(key_file)}&known_hosts={_uri_path(known_hosts_file)}"
        "&known_hosts_verify=normal&sshauth=privkey"
    )


def _uri_path(path: str) -> str:
    """A file path as a URI query value (libvirt decodes it): a data dir with a space,
    ``&`` or ``#`` in its name must not break the URI or split the parameter."""
    return quote(path, safe="/")


def _check_name(name: str) -> None:
    problem = name_problem(name, "instance")
    if problem is not None:
        raise HypervisorError(problem, ecode=ECODE_INVAL)


class LibvirtNodeOps(MigrationOpsMixin, LibvirtExportOps, NodeOps):
    """Node operations on real nodes (see the module docstring)."""

    def __init__(
        self,
        data_dir: str,
        *,
        ssh_factory: SshFactory | None = None,
        connect_retry: ConnectRetry = _default_connect_retry,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        poll_interval: float = 0.5,
    ) -> None:
        self.data_dir = data_dir
        self._ssh_factory = ssh_factory or self._default_ssh
        self._connect_retry = connect_retry
        self._clock = clock
        self._sleep = sleep
        self._poll_interval = poll_interval
        self._hosts: dict[str, Host] = {}
        self._ssh: dict[str, SshClient] = {}
        # directories and files made on each node (by this NodeOps, over its current SSH client);
        # a node's set is replaced under the lock, and only added to or taken from outside it
        self._prepared: dict[str, set[str]] = {}
        # guards the three maps above (jobs of the master daemon share this object)
        self._conn_lock = threading.Lock()

    # -- connections ---------------------------------------------------------
    def libvirt_uri(self, node: Node) -> str:
        """The URI the master uses for the node's libvirtd.

        A ``qemu+tls`` URI without ``pkipath`` gets the master's client
        certificate of the data dir (``pki/libvirt``).
        """
        uri = node.libvirt_uri or default_libvirt_uri(
            node, paths.ssh_key_file(self.data_dir), paths.known_hosts_file(self.data_dir)
        )
        if uri.startswith("qemu+tls://") and "pkipath=" not in uri:
            sep = "&" if "?" in uri else "?"
            uri = f"{uri}{sep}pkipath={_uri_path(paths.libvirt_pki_dir(self.data_dir))}"
        return uri

    def host(self, node: Node) -> Host:
        """The node's Host (one per node, reused; replaced if the URI changed)."""
        uri = self.libvirt_uri(node)
        old = None
        with self._conn_lock:
            host = self._hosts.get(node.name)
            if host is None or host.uri != uri:
                old, host = host, Host(node.name, uri, self._connect_retry)
                self._hosts[node.name] = host
        if old is not None:  # other jobs' calls may be in flight on its connection
            old.release()
        return host

    def _default_ssh(self, node: Node) -> SshClient:
        from ganeti_lv.node.ssh import SshClient

        return SshClient(
            node.address,
            port=node.ssh_port,
            user=node.ssh_user,
            key_file=paths.ssh_key_file(self.data_dir),
            known_hosts_file=paths.known_hosts_file(self.data_dir),
            node_name=node.name,
        )

    def ssh(self, node: Node) -> SshClient:
        """The node's SshClient (one per node, reused; replaced if its address changed).

        The master daemon keeps these for as long as it runs: a node that was
        re-added with another address or port gets a new client.
        """
        stale = None
        with self._conn_lock:
            client = self._ssh.get(node.name)
            if client is not None and _ssh_target(client) not in (None, _node_target(node)):
                stale, client = client, None
                self._prepared.pop(node.name, None)
            if client is None:
                client = self._ssh_factory(node)
                self._ssh[node.name] = client
        if stale is not None:
            stale.release()
        return client

    def prewarm(self, nodes: Sequence[Node]) -> None:
        """Start opening the SSH connections to ``nodes`` in the background.

        A hint for a caller that knows which nodes an operation will use
        (hooks, checks): each online node's connection not open yet is
        opened in a daemon thread while the caller goes on; the operation's
        calls then find it open (or wait for it). Failures are left to
        those calls.
        """
        for node in nodes:
            if node.offline:
                continue
            client = self.ssh(node)
            if not client.connected:
                warm = threading.Thread(
                    target=client.warm_up, name=f"ssh-warm-{node.name}", daemon=True
                )
                with contextlib.suppress(RuntimeError):  # no thread to be had: a hint only
                    warm.start()

    def open_session(self) -> NodeSession:
        """A job's session: its warm-ups and the disk copies set up ahead for it."""
        return CopySession(self)

    def console_log_path(self, instance_name: str) -> str:
        """The console log a domain built by ``domxml`` writes on its node."""
        return console_log_path(instance_name)

    def console_command(self, instance_name: str) -> list[str]:
        """``virsh console`` on the node's system libvirtd (Ctrl-] leaves it).

        A guest paused by a user (``instance startup --paused``, ``virsh
        suspend``) is resumed once the console had time to attach, so its
        operator sees it boot from the start, as Ganeti's console does; a
        guest paused for any other reason (a migration, an I/O error) is not.
        """
        return ["sh", "-c", _CONSOLE_SCRIPT, "console", instance_name]

    def _over_ssh(self, node: Node, fn: Callable[[SshClient], T]) -> T:
        """``fn(client)`` with the node's SSH client; a client found unreachable is dropped
        (its node did not connect, open a channel or answer in time: the next call
        connects anew, to a new sshd process)."""
        client = self.ssh(node)
        try:
            return fn(client)
        except NodeUnreachable:
            self._drop_ssh(node.name, client)
            raise

    def _ssh_run(self, node: Node, cmd: list[str] | str, **kwargs: Any) -> CommandResult:
        return self._over_ssh(node, lambda client: client.run(cmd, **kwargs))

    def _drop_ssh(self, name: str, client: SshClient | None = None) -> None:
        """Forget (and release) the node's SSH client; with ``client``, only if it is that one.

        Jobs of the master daemon share the clients: one whose command failed
        must not close the client another job has opened since.
        """
        with self._conn_lock:
            current = self._ssh.get(name)
            if current is None or (client is not None and current is not client):
                return
            del self._ssh[name]
            # a node reached anew may have been reinstalled: prepare its directories again
            self._prepared.pop(name, None)
        current.release()

    def close(self) -> None:
        """Close every libvirt and SSH connection."""
        with self._conn_lock:
            hosts = list(self._hosts.values())
            self._hosts.clear()
        for host in hosts:
            host.close()
        for name in list(self._ssh):
            self._drop_ssh(name)

    # -- facts ---------------------------------------------------------------
    def node_info(self, node: Node) -> NodeFacts:
        host = self.host(node)
        info = host.node_info()
        caps = host.capabilities()
        libvirt_version, qemu_version = host.versions()
        total = int(info[1])
        free = host.free_memory_mib()
        capped = False
        if node.memory_cap is not None:
            used = sum(
                d.memory
                for d in self.instance_list(node).values()
                if d.state in constants.DOMSTATES_ACTIVE
            )
            total = min(total, node.memory_cap)
            within_cap = max(0, node.memory_cap - used)
            capped = within_cap <= free
            free = min(free, within_cap)
        return NodeFacts(
            name=node.name,
            memory_total=total,
            memory_free=free,
            memory_free_capped=capped,
            cpu_model=caps.cpu_model or str(info[0]),
            cpu_arch=caps.arch or str(info[0]),
            cpu_count=int(info[2]),
            libvirt_version=libvirt_version,
            qemu_version=qemu_version,
            hostname=host.hostname(),
            host_uuid=caps.uuid,
            bridges=self._bridges(node),
        )

    def _bridges(self, node: Node) -> list[str]:
        listed = self.host(node).bridges()
        if listed is not None:
            return listed
        result = self._ssh_run(node, _LIST_BRIDGES, check=True, timeout=NODE_COMMAND_TIMEOUT)
        return sorted(line.strip() for line in result.stdout.splitlines() if line.strip())

    def instance_list(self, node: Node) -> dict[str, DomainInfo]:
        out: dict[str, DomainInfo] = {}
        for guest in self.host(node).list_guests():
            try:
                out[guest.name] = guest.info()
            except InstanceNotFound:
                continue  # a transient domain went away while listing
        return out

    def instance_info(self, node: Node, name: str) -> DomainInfo | None:
        guest = self.host(node).find_guest(name)
        if guest is None:
            return None
        try:
            return guest.info()
        except InstanceNotFound:
            return None

    # -- disks ---------------------------------------------------------------
    def create_disks(self, node: Node, cluster: Cluster, instance: Instance) -> None:
        _check_name(instance.name)
        directory = objects.disk_dir(cluster, instance)
        lines = ["set -e", f"mkdir -p -- {shlex.quote(directory)}"]
        paths = [shlex.quote(path) for path in objects.disk_paths(cluster, instance)]
        # every image is checked before any is made: a refusal leaves nothing new behind
        for path in paths:
            lines.append(f"if [ -e {path} ]; then echo {path} >&2; exit {_DISK_EXISTS_STATUS}; fi")
        for path, disk in zip(paths, instance.disks, strict=True):
            lines.append(f"truncate -s {int(disk.size)}M -- {path}")
        # a new instance starts a new console log (not an older namesake's)
        log = console_log_path(instance.name)
        lines.append(f"rm -f -- {shlex.quote(log)}")
        self._prepared.get(node.name, set()).discard(log)
        result = self._ssh_run(node, "\n".join(lines), check=False, timeout=NODE_COMMAND_TIMEOUT)
        if result.exit_status == _DISK_EXISTS_STATUS:
            raise HypervisorError(
                f"Disk image {result.stderr.strip()} already exists on {node.name}",
                node=node.name,
                ecode=ECODE_EXISTS,
            )
        if result.exit_status != 0:
            raise HypervisorError(
                f"Cannot create the disks of {instance.name} on {node.name}:"
                f" {(result.stdout + result.stderr).strip()}",
                node=node.name,
            )

    def remove_disks(self, node: Node, cluster: Cluster, instance: Instance) -> None:
        _check_name(instance.name)
        directory = objects.disk_dir(cluster, instance)
        self._ssh_run(
            node,
            ["sh", "-c", _REMOVE_DISKS, "sh", directory],
            check=True,
            timeout=NODE_COMMAND_TIMEOUT,
        )

    # -- lifecycle -----------------------------------------------------------
    def start_instance(
        self,
        node: Node,
        cluster: Cluster,
        instance: Instance,
        *,
        hvparams: Mapping[str, Any] | None = None,
        beparams: Mapping[str, Any] | None = None,
        paused: bool = False,
    ) -> None:
        _check_name(instance.name)
        xml = build_domain_xml(cluster, instance)
        host = self.host(node)
        existing = host.find_guest(instance.name)
        if existing is not None and _is_running(existing):
            return
        self.prepare_node_dirs(node)
        guest = host.define(xml)
        if not hvparams and not beparams:
            guest.start(paused=paused)
            return
        host.start_once(build_domain_xml(cluster, instance, hvparams, beparams), paused=paused)

    def prepare_node_dirs(self, node: Node, files: Sequence[str] = ()) -> None:
        """Create the node-local directories a domain needs (its console log's), and ``files``.

        Call before starting or receiving a domain on ``node``. ``files``
        (the serial logs a migrating domain writes) are created empty, with
        their directories: libvirt creates a missing one itself, but that
        made the incoming migration some 40 ms slower on the local cluster
        (measured with virsh alone, alternating, 12 pairs). Each directory
        and file is made once per node and LibvirtNodeOps, and again once
        the node's SSH client was replaced (a node re-added, perhaps
        reinstalled), so a long-lived master daemon does not ask the node
        again at every migration.
        """
        done = self._prepared.setdefault(node.name, set())
        wanted = dict.fromkeys([CONSOLE_LOG_DIR, *(p.rsplit("/", 1)[0] or "/" for p in files)])
        dirs = [d for d in wanted if d not in done]
        new_files = [p for p in dict.fromkeys(files) if p not in done]
        if not dirs and not new_files:
            return
        steps = []
        if dirs:
            steps.append(f"mkdir -p -- {' '.join(shlex.quote(d) for d in dirs)}")
        if new_files:
            steps.append(f"touch -- {' '.join(shlex.quote(p) for p in new_files)}")
        self._ssh_run(node, " && ".join(steps), check=True, timeout=NODE_COMMAND_TIMEOUT)
        done.update(dirs)
        done.update(new_files)

    def shutdown_instance(self, node: Node, instance: Instance, timeout: float) -> bool:
        guest = self.host(node).find_guest(instance.name)
        if guest is None or not _is_running(guest):
            return True
        try:
            pressed = timeout > 0 and _has_power_button(guest)
            if pressed and self._press_power_until_stopped(guest, timeout):
                return True
            guest.destroy()
        except InstanceNotFound:  # a transient domain that stopped meanwhile is gone
            return True
        return False

    def _press_power_until_stopped(self, guest: Guest, timeout: float) -> bool:
        """Press the power button every few seconds until the guest stops.

        A guest still booting, or one that missed the press, gets another
        chance (as Ganeti re-sends system_powerdown); True if it stopped
        within ``timeout`` seconds.
        """
        deadline = self._clock() + timeout
        next_press = self._clock()
        while True:
            if not _is_running(guest):
                return True
            now = self._clock()
            if now >= next_press:
                if not self._press_power_button(guest):
                    return False  # paused since the last press: no press can stop it
                next_press = now + POWER_BUTTON_INTERVAL
            remaining = deadline - self._clock()
            if remaining <= 0:
                return False
            self._sleep(min(self._poll_interval, remaining))

    @staticmethod
    def _press_power_button(guest: Guest) -> bool:
        """One ACPI power-button press; a guest that stopped meanwhile is fine. False
        when the guest was paused meanwhile (qemu pauses it on a full disk while it
        shuts down, say): libvirt refuses the press to a paused guest."""
        try:
            guest.shutdown()
        except HypervisorError:
            if not _is_running(guest):
                return True
            if guest.state() == constants.DOMSTATE_PAUSED:
                return False
            raise
        return True

    def reboot_instance(
        self, node: Node, cluster: Cluster, instance: Instance, reboot_type: str, timeout: float
    ) -> None:
        if reboot_type in ("hard", "full"):
            # Ganeti's hard reboot too: a clean shutdown (a stop after the timeout), a start
            self.shutdown_instance(node, instance, timeout)
            self.start_instance(node, cluster, instance)
            return
        if reboot_type != "soft":
            raise HypervisorError(f"Unknown reboot type {reboot_type!r}", ecode=ECODE_INVAL)
        guest = self.host(node).guest(instance.name)
        if not _is_running(guest):
            raise HypervisorError(
                f"Instance {instance.name} is not running on {node.name}",
                node=node.name,
                ecode=ECODE_STATE,
            )
        guest.reboot()

    def undefine_instance(self, node: Node, name: str) -> None:
        guest = self.host(node).find_guest(name)
        if guest is None:
            return
        guest.destroy()
        guest.undefine()

    # -- commands and hooks ----------------------------------------------------
    def run_command(
        self, node: Node, argv: list[str], timeout: float | None = None
    ) -> CommandResult:
        result = self._ssh_run(node, argv, timeout=timeout, check=False)
        return CommandResult(result.exit_status, result.stdout, result.stderr)

    def install_tls_credentials(self, node: Node, creds: NodeCredentials) -> bool:
        return self._over_ssh(node, lambda client: credentials.install(client, creds))

    def remove_tls_credentials(self, node: Node) -> None:
        self._over_ssh(node, credentials.uninstall)

    def run_hooks(
        self, node: Node, hooks_dir: str, env: dict[str, str], timeout: float
    ) -> list[HookScriptResult]:
        from ganeti_lv.node.hooks_runner import run_hooks_via_ssh

        return self._over_ssh(
            node, lambda client: list(run_hooks_via_ssh(client, hooks_dir, env, timeout))
        )


def _node_target(node: Node) -> tuple[str, int, str]:
    return (node.address, node.ssh_port, node.ssh_user)


def _ssh_target(client: SshClient) -> tuple[str, int, str] | None:
    """(address, port, user) an SshClient connects to; None for other runners."""
    try:
        return (client.host, client.port, client.user)
    except AttributeError:
        return None


# ``sh -c`` script of ``console_command`` ($1: the domain); a paused guest is
# resumed CONSOLE_RESUME_DELAY s after the console started, time for it to attach
CONSOLE_RESUME_DELAY = 2
_VIRSH = "virsh -c qemu:///system"
_CONSOLE_SCRIPT = (
    f'paused() {{ [ "$(LC_ALL=C {_VIRSH} domstate --reason "$1" 2>/dev/null)"'
    ' = "paused (user)" ]; };'
    f' if paused "$1"; then (sleep {CONSOLE_RESUME_DELAY}; paused "$1" &&'
    f" {{ printf 'Instance %s is paused, resuming it\\r\\n' \"$1\";"
    f' {_VIRSH} resume "$1" >/dev/null 2>&1'
    f" || printf 'Instance %s could not be resumed\\r\\n' \"$1\"; }}) & fi;"
    f' exec {_VIRSH} console "$1"'
)


def _has_power_button(guest: Guest) -> bool:
    """Whether a press of the power button can stop the guest: it runs (libvirt refuses
    the press to a paused one) and has ACPI (qemu ignores it without; Ganeti stops such
    a guest at once too)."""
    return guest.state() == constants.DOMSTATE_RUNNING and parse_acpi(guest.xml())


def _is_running(guest: Guest) -> bool:
    try:
        return guest.is_active()
    except InstanceNotFound:
        return False
