"""Building blocks of the Ganeti peer's nodes and its description (see peer.py)."""

from __future__ import annotations

import grp
import os
import pwd
import shutil
from collections.abc import Callable, Sequence
from typing import Any

from ganeti_lv.devcluster import files, guest, netns
from ganeti_lv.devcluster import peerlayout as pl


def prepare_files(layout: pl.PeerLayout) -> None:
    """Keys and every node's directories and configuration files."""
    files.keygen(layout.key_file, f"root@{layout.master.fqdn}", "rsa")
    files.keygen(layout.host_key_file, f"host@{pl.DOMAIN}", "rsa")
    for path in (layout.shared_dir, layout.console_dir):
        os.makedirs(path, exist_ok=True)
    with open("/etc/default/ganeti", encoding="utf-8") as fh:
        defaults = pl.default_ganeti(fh.read())
    root_pub = files.pubkey(layout.key_file + ".pub") + "\n"
    host_pub = files.pubkey(layout.host_key_file + ".pub")
    names = [n for node in layout.nodes for n in (node.fqdn, node.name, node.address)]
    names += [layout.cluster_fqdn, layout.master_ip]
    known = f"{','.join(names)} {host_pub}\n"
    for node in layout.nodes:
        for sub, mount in pl.NODE_MOUNTS:
            os.makedirs(os.path.join(node.host_dir, sub), exist_ok=True)
            os.makedirs(mount, exist_ok=True)  # the mount point on the machine
        etc = node.host_path("/etc/ganeti")
        shutil.copytree("/etc/ganeti", etc, symlinks=True, dirs_exist_ok=True)
        files.write_file(os.path.join(etc, "file-storage-paths"), pl.file_storage_paths())
        srv = node.host_path("/srv/ganeti")
        for sub in ("file-storage", "shared-file-storage"):
            os.makedirs(os.path.join(srv, sub), exist_ok=True)
        ssh_etc = node.host_path("/etc/ssh")
        files.write_file(os.path.join(ssh_etc, "sshd_config"), pl.sshd_config(node))
        for suffix, mode in (("", 0o600), (".pub", 0o644)):
            dst = os.path.join(ssh_etc, "ssh_host_rsa_key" + suffix)
            shutil.copyfile(layout.host_key_file + suffix, dst)
            os.chmod(dst, mode)
        os.chmod(node.host_path("/run/sshd"), 0o755)
        ssh = node.host_path("/root/.ssh")
        os.chmod(ssh, 0o700)
        for suffix, mode in (("", 0o600), (".pub", 0o644)):
            dst = os.path.join(ssh, "id_rsa" + suffix)
            shutil.copyfile(layout.key_file + suffix, dst)
            os.chmod(dst, mode)
        files.write_file(os.path.join(ssh, "authorized_keys"), root_pub, 0o600)
        files.write_file(os.path.join(ssh, "known_hosts"), known)
        files.write_file(os.path.join(node.host_dir, "hosts"), pl.hosts_file(layout))
        files.write_file(os.path.join(node.host_dir, "default-ganeti"), defaults)
        files.write_file(
            os.path.join(node.host_dir, "bashrc"), "# node shell start-up file (empty)\n"
        )


def create_node(
    layout: pl.PeerLayout,
    node: pl.PeerNode,
    state: dict[str, Any],
    save_state: Callable[[dict[str, Any]], None],
) -> None:
    """Namespaces, veth, holder, bind mounts, host name and guest bridge of a node.

    The holder's PID goes into ``state`` (saved at once, for ``down``).
    """
    netns.teardown_netns(node.netns, node.veth_host, None)
    netns.add_node_netns(
        node.netns, node.veth_host, node.veth_peer, layout.bridge, node.address, node.prefixlen
    )
    holder = netns.start_holder(node.netns, os.path.join(node.host_dir, "holder.log"))
    netns.record_holder(state, node.name, holder)
    save_state(state)
    script = netns.node_setup_script(
        node.fqdn,
        layout.node_mounts(node),
        pl.NODE_BRIDGE,
        os.path.join(node.host_dir, "bashrc"),
    )
    netns.run(netns.nsenter_argv(holder, ["sh", "-c", script]))


def write_rapi_users(master: pl.PeerNode, password: str) -> None:
    """The RAPI users file on the master: one user with write access."""
    path = master.host_path(pl.RAPI_USERS_FILE)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    files.write_file(path, pl.rapi_users(pl.RAPI_USER, password), 0o640)
    os.chown(path, pwd.getpwnam("gnt-rapi").pw_uid, grp.getgrnam("gnt-masterd").gr_gid)


def daemon_pid(node: pl.PeerNode, pidfile: str) -> int | None:
    """PID from a node's pid file when that process runs in the node's netns."""
    pid = netns.read_pidfile(node.host_path(pidfile))
    if pid is None or not netns.proc_alive(pid):
        return None
    return pid if netns.proc_ns(pid, "net") == netns.netns_link(node.netns) else None


def leftovers(layout: pl.PeerLayout, pids: Sequence[int] = ()) -> list[str]:
    """What of the peer still exists: namespaces, links, processes, mounts."""
    left = [f"netns {n}" for n in netns.list_netns(layout.prefix)]
    left += [f"link {n}" for n in netns.links(layout.prefix)]
    left += [f"process {p}" for p in pids if netns.proc_alive(p)]
    return left + mounts_left(layout)


def mounts_left(layout: pl.PeerLayout) -> list[str]:
    """The processes that still see a mount of the peer's directory."""
    left = []
    for pid in netns.all_pids():
        try:
            with open(f"/proc/{pid}/mountinfo", encoding="utf-8", errors="replace") as fh:
                mounts = fh.read()
        except OSError:
            continue
        if layout.directory + "/" in mounts:
            left.append(f"mounts of {layout.directory} seen by process {pid}")
    return left


def describe(
    layout: pl.PeerLayout, state: dict[str, Any], image: guest.GuestImage
) -> dict[str, Any]:
    """The peer's description (peer.json)."""
    nodes = [
        {
            "name": n.name,
            "fqdn": n.fqdn,
            "address": n.address,
            "netns": n.netns,
            "veth": n.veth_host,
            "holder_pid": state.get("holders", {}).get(n.name),
            "host_dir": n.host_dir,
            "run": netns.nsenter_argv(state.get("holders", {}).get(n.name, 0), []),
        }
        for n in layout.nodes
    ]
    rapi = state.get("rapi", {})
    return {
        "kind": "ganeti-peer",
        "directory": layout.directory,
        "cluster_name": layout.cluster_fqdn,
        "master": layout.master.fqdn,
        "master_ip": layout.master_ip,
        "subnet": str(layout.subnet),
        "host_bridge": layout.bridge,
        "bridge": pl.NODE_BRIDGE,
        "hypervisor": "kvm (kvm_flag=disabled: TCG)",
        "disk_templates": ["file", "sharedfile"],
        "os": "noop",
        "nodes": nodes,
        "rapi": {
            "host": layout.master_ip,
            "port": pl.RAPI_PORT,
            "user": rapi.get("user"),
            "password": rapi.get("password"),
            "cert_file": layout.master.host_path(pl.RAPI_CERT),
        },
        "storage": {
            "file_storage_dir": pl.FILE_STORAGE_DIR,
            "shared_file_storage_dir": pl.SHARED_FILE_STORAGE_DIR,
            "host_shared_dir": layout.shared_dir,
            "export_dir": "/var/lib/ganeti/export",
        },
        "guest": {"kernel": image.kernel, "initrd": image.initrd},
        "instances": {
            name: {**entry, "console_log": layout.console_log(name)}
            for name, entry in sorted(state.get("instances", {}).items())
        },
        "timings": {"apt_seconds": state.get("apt_seconds"), "up_seconds": state.get("up_seconds")},
    }
