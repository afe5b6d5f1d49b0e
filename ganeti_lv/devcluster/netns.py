"""Processes, network namespaces, veths and bridges of a local cluster.

Processes are always addressed by PID; a process counts as gone when its
/proc entry is missing or it is a zombie (killed daemons linger as zombies
for a moment here, so ``kill -0`` is not a usable test).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import signal
import subprocess
import time
from collections.abc import Iterable, Sequence
from typing import Any

from ganeti_lv.errors import ECODE_ENVIRON, OpExecError, OpPrereqError
from ganeti_lv.master.processes import process_start_time

NETNS_DIR = "/run/netns"
# How many times a tear-down kills what is left in a cluster's namespaces.
DOWN_ROUNDS = 3
NODE_IFACE = "eth0"


def run(
    argv: Sequence[str], check: bool = True, input: bytes | None = None, timeout: float | None = 60
) -> subprocess.CompletedProcess:
    """Run a command and capture its output; OpExecError when ``check`` and it fails,
    or when it did not end within ``timeout`` seconds (it is killed then)."""
    try:
        res = subprocess.run(list(argv), capture_output=True, input=input, timeout=timeout)
    except subprocess.TimeoutExpired as err:
        raise OpExecError(f"{' '.join(argv)} did not end within {timeout:g} s") from err
    if check and res.returncode != 0:
        raise OpExecError(
            f"{' '.join(argv)} failed ({res.returncode}): "
            f"{res.stderr.decode(errors='replace').strip()}"
        )
    return res


# --- processes --------------------------------------------------------------


def proc_alive(pid: int) -> bool:
    """True when ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except (FileNotFoundError, ProcessLookupError):
        return False
    # The state follows the parenthesised command name.
    state = stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3]
    return state not in (b"Z", b"X")


def proc_parent(pid: int) -> int | None:
    """The parent PID of ``pid``, None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # state and parent PID follow the parenthesised command name
    return int(stat[stat.rfind(b")") + 2 :].split()[1])


def proc_ns(pid: int, kind: str) -> str | None:
    """The namespace link of ``pid`` (e.g. ``net:[4026532...]``), None if gone."""
    try:
        return os.readlink(f"/proc/{pid}/ns/{kind}")
    except OSError:
        return None


def proc_name(pid: int) -> str | None:
    """The process name (``comm``) of ``pid``, None if gone."""
    try:
        with open(f"/proc/{pid}/comm", encoding="utf-8", errors="replace") as fh:
            return fh.read().strip()
    except OSError:
        return None


def record_holder(state: dict[str, Any], node: str, pid: int) -> None:
    """Note node ``node``'s holder ``pid`` (and when it started) in a cluster's state."""
    state.setdefault("holders", {})[node] = pid
    state.setdefault("holder_starts", {})[node] = process_start_time(pid)


def is_holder(pid: int | None, start: int | None) -> bool:
    """True when ``pid`` still is the holder that started at ``start``.

    A PID reused since by another process is not. A record without its
    start (kept before they were) is taken for one when the process is a
    ``sleep``, as holders are.
    """
    if not pid or not proc_alive(int(pid)):
        return False
    if start is not None:
        return process_start_time(int(pid)) == start
    return proc_name(int(pid)) == "sleep"


def recorded_holders(state: dict[str, Any]) -> list[int]:
    """The holders a cluster's state records that still run (see ``is_holder``)."""
    starts = state.get("holder_starts", {})
    return [
        int(pid)
        for node, pid in state.get("holders", {}).items()
        if is_holder(pid, starts.get(node))
    ]


def read_pidfile(path: str) -> int | None:
    """PID stored in a pid file, None when missing or unreadable."""
    try:
        with open(path) as fh:
            return int(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def wait_gone(pids: Sequence[int], timeout: float) -> list[int]:
    """Wait until every pid is gone (or a zombie); return those still alive."""
    deadline = time.monotonic() + timeout
    left = [p for p in pids if proc_alive(p)]
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = [p for p in left if proc_alive(p)]
    return left


def kill_pids(pids: Sequence[int], grace: float = 5.0) -> None:
    """SIGTERM the pids, then SIGKILL what is still alive after ``grace`` seconds."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        alive = [p for p in pids if proc_alive(p)]
        for pid in alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        pids = wait_gone(alive, wait)
        if not pids:
            return
    raise OpExecError(f"processes {list(pids)} did not die")


def all_pids() -> list[int]:
    """Every PID currently in /proc."""
    return [int(d) for d in os.listdir("/proc") if d.isdigit()]


# --- namespaces ----------------------------------------------------------------


def netns_exists(name: str) -> bool:
    """True when the named network namespace exists."""
    return os.path.exists(os.path.join(NETNS_DIR, name))


def netns_link(name: str) -> str | None:
    """The ``net:[inode]`` link text of a named network namespace."""
    try:
        return f"net:[{os.stat(os.path.join(NETNS_DIR, name)).st_ino}]"
    except OSError:
        return None


def list_netns(prefix: str) -> list[str]:
    """Named network namespaces starting with ``prefix``."""
    try:
        return sorted(n for n in os.listdir(NETNS_DIR) if n.startswith(prefix))
    except FileNotFoundError:
        return []


def pids_in_netns(name: str) -> list[int]:
    """Live processes whose network namespace is the named one."""
    link = netns_link(name)
    if link is None:
        return []
    return [p for p in all_pids() if proc_ns(p, "net") == link and proc_alive(p)]


def links(prefix: str) -> list[str]:
    """Network interfaces in the root namespace whose name starts with ``prefix``."""
    return sorted(n for n in os.listdir("/sys/class/net") if n.startswith(prefix))


def link_exists(name: str) -> bool:
    """True when the interface exists in the root namespace."""
    return os.path.exists(f"/sys/class/net/{name}")


def link_is_up(name: str) -> bool:
    """True when the interface is administratively up."""
    try:
        with open(f"/sys/class/net/{name}/flags") as fh:
            return bool(int(fh.read(), 16) & 1)
    except OSError:
        return False


# route types that claim no network: this machine's own addresses, and ``throw``
# (it sends nothing anywhere: the next table decides)
_UNCLAIMING_ROUTE_TYPES = frozenset({"local", "broadcast", "multicast", "anycast", "throw"})


def claimed_networks(bridge: str | None = None) -> list[tuple[ipaddress.IPv4Network, str]]:
    """The IPv4 networks this machine already sends somewhere, with what says so:
    its interfaces' addresses and its routes (any table; not the default route, nor
    one split in halves as VPNs set it),
    leaving out ``bridge``'s own. A cluster's bridge on one of them would take
    the traffic meant for real hosts there (its connected route is more specific)."""
    claimed = []
    for line in run(["ip", "-o", "-4", "addr", "show"]).stdout.decode().splitlines():
        parts = line.split()
        if len(parts) > 3 and parts[1] != bridge:
            claimed.append((ipaddress.IPv4Interface(parts[3]).network, f"{parts[1]} ({parts[3]})"))
    routes = run(["ip", "-o", "-4", "route", "show", "table", "all"]).stdout.decode()
    for line in routes.splitlines():
        parts = line.split()
        if parts and parts[0] in _UNCLAIMING_ROUTE_TYPES:
            continue
        if parts and parts[0] in ("unicast", "blackhole", "unreachable", "prohibit"):
            parts = parts[1:]
        device = parts[parts.index("dev") + 1] if "dev" in parts[:-1] else None
        if not parts or parts[0] == "default" or (bridge is not None and device == bridge):
            continue
        try:
            net = ipaddress.IPv4Network(parts[0], strict=False)
        except ValueError:
            continue
        if net.prefixlen <= 1:  # a default route in halves (a VPN's 0.0.0.0/1, 128.0.0.0/1)
            continue
        claimed.append((net, f"the route {line.strip()}"))
    return claimed


def check_subnet_free(subnet: str, bridge: str) -> None:
    """Refuse a subnet that an interface other than ``bridge`` or a route already claims."""
    net = ipaddress.IPv4Network(subnet)
    for used, what in claimed_networks(bridge):
        if used.overlaps(net):
            raise OpPrereqError(
                f"Subnet {subnet} already in use on this machine: {what}; "
                "choose another with --subnet",
                ECODE_ENVIRON,
            )


def free_subnet(first: int = 100, count: int = 150, base: str = "10.250") -> str:
    """A ``base``.N.0/24 (first <= N < first+count) no interface or route claims, starting
    at a PID-dependent N so concurrent test sessions tend to pick different ones."""
    used = [net for net, _what in claimed_networks()]
    start = os.getpid() % count
    for i in range(count):
        net = ipaddress.IPv4Network(f"{base}.{first + (start + i) % count}.0/24")
        if not any(net.overlaps(u) for u in used):
            return str(net)
    raise OpExecError(f"no free {base}.N.0/24 subnet")


def ensure_bridge(name: str, address: str, prefixlen: int) -> None:
    """Create the root-namespace bridge with its address, idempotently."""
    if not link_exists(name):
        run(["ip", "link", "add", name, "type", "bridge"])
    have = run(["ip", "-o", "-4", "addr", "show", "dev", name]).stdout.decode()
    if f" {address}/" not in have:
        run(["ip", "addr", "add", f"{address}/{prefixlen}", "dev", name])
    run(["ip", "link", "set", name, "up"])


def delete_link(name: str) -> None:
    """Delete an interface of the root namespace if present."""
    if link_exists(name):
        run(["ip", "link", "del", name], check=False)


def delete_netns(name: str) -> None:
    """Delete a named network namespace if present."""
    if netns_exists(name):
        run(["ip", "netns", "del", name], check=False)


def start_holder(netns: str, log_path: str) -> int:
    """Start the long-lived process owning a node's mount and UTS namespaces.

    Returns its PID once its private mount namespace exists.
    """
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                netns,
                "unshare",
                "--mount",
                "--uts",
                "--propagation",
                "private",
                "--",
                "sleep",
                "infinity",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
            close_fds=True,
        )
    own_mnt = proc_ns(os.getpid(), "mnt")
    want_net = netns_link(netns)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise OpExecError(f"namespace holder for {netns} exited ({proc.returncode})")
        mnt = proc_ns(proc.pid, "mnt")
        if (
            mnt
            and mnt != own_mnt
            and proc_ns(proc.pid, "net") == want_net
            and proc_ns(proc.pid, "uts") != proc_ns(os.getpid(), "uts")
        ):
            return proc.pid
        time.sleep(0.02)
    raise OpExecError(f"namespace holder for {netns} did not start")


def nsenter_argv(holder: int, argv: Sequence[str]) -> list[str]:
    """argv running ``argv`` inside the namespaces of a node's holder process."""
    return ["nsenter", "--target", str(holder), "--mount", "--uts", "--net", "--", *argv]


def add_node_netns(
    name: str, veth_host: str, veth_peer: str, bridge: str, address: str, prefixlen: int
) -> None:
    """Create network namespace ``name`` joined to ``bridge`` by a veth.

    Inside, the veth is ``eth0`` with ``address``/``prefixlen`` and ``lo`` is
    up; there is no default route, so nothing leaves the machine.
    """
    run(["ip", "netns", "add", name])
    run(["ip", "link", "add", veth_host, "type", "veth", "peer", "name", veth_peer])
    run(["ip", "link", "set", veth_peer, "netns", name])
    run(["ip", "link", "set", veth_host, "master", bridge, "up"])
    in_ns = ["ip", "-n", name]
    run([*in_ns, "link", "set", veth_peer, "name", NODE_IFACE])
    run([*in_ns, "addr", "add", f"{address}/{prefixlen}", "dev", NODE_IFACE])
    run([*in_ns, "link", "set", NODE_IFACE, "up"])
    run([*in_ns, "link", "set", "lo", "up"])


def node_setup_script(
    hostname: str, mounts: Sequence[tuple[str, str]], bridge: str, empty_rc: str
) -> str:
    """Shell script run inside a fresh node: host name, bind mounts, guest bridge.

    ``mounts`` are (host path, node path) pairs mounted in order. A node is a
    fresh host: the machine's own shell start-up file (which bash reads for
    every SSH command) is replaced by ``empty_rc``.
    """
    script = ["set -e", f"hostname {hostname}"]
    script += [f"mount --bind '{src}' '{dst}'" for src, dst in mounts]
    script.append(f"[ ! -e /root/.bashrc ] || mount --bind '{empty_rc}' /root/.bashrc")
    script.append(f"ip link add {bridge} type bridge")
    script.append(f"ip link set {bridge} up")
    return "\n".join(script)


def holder_ok(netns_name: str, pid: int | None) -> bool:
    """True when ``pid`` runs and lives in network namespace ``netns_name``."""
    return (
        bool(pid)
        and proc_alive(int(pid or 0))
        and (proc_ns(int(pid or 0), "net") == netns_link(netns_name))
    )


def teardown_netns(
    name: str, veth_host: str, holder: int | None, holder_start: int | None = None
) -> None:
    """Kill every process of namespace ``name`` and its holder (the one that started
    at ``holder_start``, see ``is_holder``); delete netns and veth."""
    pids = set(pids_in_netns(name))
    if (
        holder
        and is_holder(holder, holder_start)
        and proc_ns(int(holder), "net") != proc_ns(os.getpid(), "net")
    ):
        pids.add(int(holder))
    kill_pids(sorted(pids))
    delete_netns(name)
    delete_link(veth_host)


def take_down(
    names: set[str],
    link_prefix: str,
    recorded: Iterable[int],
    holders: Sequence[int],
) -> list[str]:
    """Stop a cluster's processes and remove its namespaces and links; the problems met.

    The processes are those in the namespaces ``names``, the ``recorded``
    ones (daemons by the PID their cluster wrote down) and the verified
    ``holders``, each only when ``is_ours``. They are killed again while some
    are left, up to ``DOWN_ROUNDS`` times: a daemon may start one (an SSH
    session, a qemu) while the others are stopped. Every step is taken even
    when one before it failed: the namespaces and the links (named
    ``link_prefix``...) are removed in any case, and checked to be gone.
    """
    problems: list[str] = []
    recorded = list(recorded)

    def ours() -> list[int]:
        pids = set(recorded) | set(holders)
        for name in names:
            pids.update(pids_in_netns(name))
        pids.discard(os.getpid())
        return sorted(p for p in pids if is_ours(p, names, holders))

    for _ in range(DOWN_ROUNDS):
        pids = ours()
        if not pids:
            break
        try:
            kill_pids(pids)
        except OpExecError as err:
            problems.append(str(err))
            break
    else:
        left = ours()
        if left:
            problems.append(f"processes {left} kept coming back")
    for name in sorted(names):
        delete_netns(name)
    for link in links(link_prefix):
        delete_link(link)
    remaining = [f"netns {n}" for n in sorted(names) if netns_exists(n)]
    remaining += [f"link {link}" for link in links(link_prefix)]
    if remaining:
        problems.append(f"still there: {', '.join(remaining)}")
    return problems


def is_ours(pid: int, names: set[str], holders: Sequence[int] = ()) -> bool:
    """True if ``pid`` lives in one of the named network namespaces, or in the
    unnamed one of one of our ``holders`` (checked with ``is_holder``): a node
    whose namespace file is gone. One still named belongs to someone else."""
    link = proc_ns(pid, "net")
    if link is None:
        return False
    ours = {netns_link(n) for n in names} - {None}
    if link in ours:
        return True
    named = {netns_link(n) for n in list_netns("")}
    if link in named or link == proc_ns(os.getpid(), "net"):
        return False
    return link in {proc_ns(h, "net") for h in holders}
