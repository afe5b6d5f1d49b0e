"""A real Ganeti 3.0 peer cluster beside the local cluster.

``PeerCluster(dir).up()`` installs Debian's ``ganeti`` and ``ganeti-os-noop``
when missing, builds two nodes (network, mount and UTS namespaces kept by a
holder process, per-node directories bind-mounted over Ganeti's and SSH's
directories, a ``gnt-br0`` bridge, an sshd each), initialises a Ganeti
cluster for TCG with the file and sharedfile disk templates on node 1 and
adds node 2. ``add_instance`` adds the local cluster's test guest as a
Ganeti instance and waits for its ready line. ``down`` stops every process
of the peer by PID (each checked to live in the peer's namespaces), removes
namespaces, links and the directory's state, and checks nothing is left.

Python API for tests and benchmarks::

    peer = PeerCluster("/var/tmp/my-peer")
    info = peer.up()                                  # DIR/peer.json
    peer.gnt(["gnt-node", "list"])                    # on the master
    peer.run("node2", ["cat", "/var/lib/ganeti/ssconf_node_list"])  # on any node
    peer.add_instance("inst1")                        # boots the test guest
    peer.down()

What ``up`` started is recorded in ``DIR/state.json``; all kernel object
names derive from a short id of DIR (``gpr<id>...``), so ``down`` cleans up
by PID and by name even after an interrupted ``up``.
"""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
import shutil
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any

from ganeti_lv.devcluster import daemons, files, guest, netns, peerinstall, peernode
from ganeti_lv.devcluster import peerlayout as pl
from ganeti_lv.devcluster.reaper import reaper_argv
from ganeti_lv.errors import (
    ECODE_EXISTS,
    ECODE_NOENT,
    ECODE_NORES,
    ECODE_STATE,
    OpExecError,
    OpPrereqError,
)

FeedbackFn = Callable[[str], None]
READY_RE = r"^GUEST-READY$"


# removes an instance, stopping it at once
_REMOVE_ARGV = ["gnt-instance", "remove", "-f", "--shutdown-timeout=0"]


class PeerCluster(files.ClusterDirectory):
    """The Ganeti peer cluster kept in ``directory``."""

    INFO_NAME = "peer.json"

    def __init__(
        self,
        directory: str = pl.DEFAULT_DIR,
        cache_dir: str = guest.DEFAULT_CACHE_DIR,
        feedback_fn: FeedbackFn = files.quiet,
    ) -> None:
        super().__init__(directory, cache_dir, feedback_fn)

    def layout(self) -> pl.PeerLayout:
        """Layout of the peer as recorded (the default subnet if none)."""
        return pl.PeerLayout.build(
            self.directory, self._load_state().get("subnet", pl.DEFAULT_SUBNET)
        )

    # --- up ----------------------------------------------------------------

    def up(self, subnet: str | None = None, instance: str | None = None) -> dict[str, Any]:
        """Bring the peer up (a running one is kept) and return its description."""
        start = time.monotonic()
        state = self._load_state()
        if state.get("holders"):
            if subnet is not None and state.get("subnet") != subnet:
                raise OpPrereqError(
                    f"The peer in {self.directory} runs on {state.get('subnet')};"
                    " run 'peer down' first to change it",
                    ECODE_STATE,
                )
            if not self.status()["running"]:
                self.feedback_fn("the peer is not fully running: rebuilding it")
                subnet = state.get("subnet")
                self.down()
                state = {}
        layout = pl.PeerLayout.build(
            self.directory, subnet or state.get("subnet") or self._default_subnet()
        )
        if not state.get("initialised"):
            apt_s = peerinstall.ensure_packages(self.feedback_fn)
            netns.check_subnet_free(str(layout.subnet), layout.bridge)
            state = {"cid": layout.cid, "subnet": str(layout.subnet), "holders": {}}
            state["apt_seconds"] = apt_s
            self._save_state(state)
            self._build(layout, state)
            state["up_seconds"] = round(time.monotonic() - start, 1)
            self._save_state(state)
        image = guest.build_guest(self.cache_dir, self.feedback_fn)
        self._write_info(layout, image)
        if instance and instance not in state.get("instances", {}):
            self.add_instance(instance)
        return self.info

    def _default_subnet(self) -> str:
        """10.251.0.0/24, or a free 10.251.N.0/24 when an interface uses that."""
        bridge = pl.PeerLayout.build(self.directory).bridge
        try:
            netns.check_subnet_free(pl.DEFAULT_SUBNET, bridge)
            return pl.DEFAULT_SUBNET
        except OpPrereqError:
            return netns.free_subnet(base=pl.SUBNET_BASE)

    def _build(self, layout: pl.PeerLayout, state: dict[str, Any]) -> None:
        """Create both nodes, initialise the cluster on node 1 and add node 2."""
        peernode.prepare_files(layout)
        netns.ensure_bridge(layout.bridge, layout.bridge_address, layout.subnet.prefixlen)
        for node in layout.nodes:
            self.feedback_fn(f"creating {node.fqdn} ({node.address}, netns {node.netns})")
            peernode.create_node(layout, node, state, self._save_state)
            state.setdefault("sshd", {})[node.name] = self._start_sshd(node)
            self._save_state(state)
        self.feedback_fn(f"gnt-cluster init {layout.cluster_fqdn} (TCG, file + sharedfile)")
        self._reaped(layout.master.name, pl.cluster_init_argv(layout), timeout=300)
        password = secrets.token_hex(12)
        peernode.write_rapi_users(layout.master, password)
        state["rapi"] = {"user": pl.RAPI_USER, "password": password}
        self._save_state(state)
        for node in layout.nodes[1:]:
            self.feedback_fn(f"gnt-node add {node.fqdn}")
            self.gnt(["gnt-node", "add", "--no-ssh-key-check", node.fqdn], timeout=300)
        self._wait_rapi(layout)
        self._wait_rapi_user(layout, password)
        state["initialised"] = True
        self._save_state(state)

    def _start_sshd(self, node: pl.PeerNode, timeout: float = 30) -> int:
        """Start the node's sshd (below a reaper, as everything it starts); return its PID."""
        self._reaped(node.name, ["/usr/sbin/sshd", "-f", "/etc/ssh/sshd_config"], timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid = peernode.daemon_pid(node, pl.SSHD_PIDFILE)
            if pid is not None and daemons.port_open(node.address, 22):
                return pid
            time.sleep(0.05)
        raise OpExecError(f"sshd on {node.fqdn} did not become ready within {timeout}s")

    def _reaped(self, node: str, argv: Sequence[str], timeout: float) -> None:
        """Run ``argv`` on the node below a subreaper that stays for its daemons.

        Daemons started by it (sshd; Ganeti's daemons and, through them, qemu)
        are reaped as soon as they exit, as PID 1 does on a real node.
        """
        self.run(node, reaper_argv(list(argv)), timeout=timeout)

    def _wait_rapi(self, layout: pl.PeerLayout, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not daemons.port_open(layout.master_ip, pl.RAPI_PORT):
            if time.monotonic() > deadline:
                raise OpExecError(f"RAPI on {layout.master_ip}:{pl.RAPI_PORT} did not answer")
            time.sleep(0.1)

    def _wait_rapi_user(self, layout: pl.PeerLayout, password: str, timeout: float = 60) -> None:
        """Until ganeti-rapi takes the write user: the users file written again meanwhile.

        ganeti-rapi reads the file when it starts and when its file watch sees
        it change; a write that came before the watch was set up goes unseen
        (401 for the user). The check is a dry run of a tag change (a job that
        changes nothing), which needs the write user.
        """
        url = f"https://{layout.master_ip}:{pl.RAPI_PORT}/2/tags?tag=glv-rapi-check&dry-run=1"
        token = base64.b64encode(f"{pl.RAPI_USER}:{password}".encode()).decode()
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        # straight to the peer's address: a proxy set in the environment is not asked
        opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)
        )
        deadline = time.monotonic() + timeout
        while True:
            peernode.write_rapi_users(layout.master, password)
            request = urllib.request.Request(
                url, method="PUT", headers={"Authorization": f"Basic {token}"}
            )
            try:
                with opener.open(request, timeout=10):
                    return
            except urllib.error.HTTPError as err:
                if err.code != 401:
                    raise OpExecError(f"ganeti-rapi refused the user check: {err}") from err
            if time.monotonic() > deadline:
                raise OpExecError(f"ganeti-rapi did not take its users file within {timeout}s")
            time.sleep(1)

    def _write_info(self, layout: pl.PeerLayout, image: guest.GuestImage) -> None:
        state = self._load_state()
        files.save_json(self.info_file, peernode.describe(layout, state, image))

    # --- running commands ----------------------------------------------------------

    def holder(self, node: str) -> int:
        """PID of the process holding the node's namespaces."""
        nl = self.layout().node(node)
        pid = self._load_state().get("holders", {}).get(nl.name)
        if not netns.holder_ok(nl.netns, pid):
            raise OpPrereqError(f"Peer node '{node}' is not running", ECODE_STATE)
        return int(pid)

    def run(
        self,
        node: str,
        argv: Sequence[str],
        check: bool = True,
        input: str | None = None,
        timeout: float | None = 120,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside the node's namespaces, as root on that host would.

        The environment is a node's login one (PATH with the sbin directories,
        HOME=/root), not this process's. Output is captured as text;
        OpExecError when ``check`` and the command fails.
        """
        res = subprocess.run(
            netns.nsenter_argv(self.holder(node), argv),
            env=daemons.DAEMON_ENV,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and res.returncode != 0:
            raise OpExecError(
                f"{' '.join(argv)} on peer {node} failed ({res.returncode}): "
                f"{(res.stderr.strip() or res.stdout.strip())[-3000:]}"
            )
        return res

    def gnt(self, argv: Sequence[str], check: bool = True, timeout: float | None = 300) -> str:
        """Run a Ganeti command on the master; return its standard output."""
        return self.run(self.layout().master.name, argv, check=check, timeout=timeout).stdout

    # --- instances -------------------------------------------------------------

    def add_instance(
        self,
        name: str,
        node: str = "node1",
        template: str = "sharedfile",
        dirtymb: int = 0,
        boot_timeout: float = 180,
        memory_mb: int = 128,
        disk_mb: int = 128,
        start: bool = True,
    ) -> dict[str, Any]:
        """Add the test guest as Ganeti instance ``name`` on ``node``; wait for its ready line.

        With ``start=False`` it is created stopped (start it with
        ``gnt-instance startup``; its console log is then written anew).

        Refused (nothing changed) when the machine already runs its share of
        guests (``guest.MAX_RUNNING_GUESTS``, counting every cluster's).
        """
        layout = self.layout()
        pl.check_instance_name(name)
        target = layout.node(node)
        if name in self._load_state().get("instances", {}):
            raise OpPrereqError(f"Peer instance '{name}' exists already", ECODE_EXISTS)
        running = guest.running_guests()
        if len(running) >= guest.MAX_RUNNING_GUESTS:
            raise OpPrereqError(
                f"{len(running)} guests run on this machine already (qemu PIDs {running});"
                f" at most {guest.MAX_RUNNING_GUESTS} at once",
                ECODE_NORES,
            )
        image = guest.build_guest(self.cache_dir, self.feedback_fn)
        console = layout.console_log(name)
        if os.path.exists(console):
            os.unlink(console)
        argv = pl.instance_add_argv(
            layout,
            name,
            target,
            image,
            template,
            disk_mb=disk_mb,
            memory_mb=memory_mb,
            dirtymb=dirtymb,
            start=start,
        )
        self.feedback_fn(f"gnt-instance add {name} ({template}) on {target.fqdn}")
        state = self._load_state()
        state.setdefault("instances", {})[name] = {"template": template}
        self._save_state(state)
        try:
            self.gnt(argv, timeout=600)
            if start:
                guest.wait_console(console, READY_RE, boot_timeout)
        except BaseException:
            # not left running beside the next guests, nor recorded as there (a failed
            # add may have left nothing to remove: the error raised is the add's)
            with contextlib.suppress(Exception):
                self.gnt(_REMOVE_ARGV + [name], check=False)
            self._drop_record(name)
            raise
        self._write_info(layout, image)
        return {"name": name, "node": target.name, "console_log": console}

    def remove_instance(self, name: str) -> None:
        """Remove peer instance ``name`` (stopped at once)."""
        if name not in self._load_state().get("instances", {}):
            raise OpPrereqError(f"Peer instance '{name}' not known", ECODE_NOENT)
        self.gnt(_REMOVE_ARGV + [name])
        self._drop_record(name)
        layout = self.layout()
        console = layout.console_log(name)
        if os.path.exists(console):
            os.unlink(console)
        self._write_info(layout, guest.build_guest(self.cache_dir))

    def _drop_record(self, name: str) -> None:
        state = self._load_state()
        state.get("instances", {}).pop(name, None)
        self._save_state(state)

    def instance_node(self, name: str) -> str:
        """Short name of the node Ganeti runs instance ``name`` on."""
        out = self.gnt(["gnt-instance", "list", "--no-headers", "-o", "pnode", name])
        return self.layout().node(out.strip()).name

    def console_log(self, name: str) -> str:
        """Host path of the instance's serial console log."""
        return self.layout().console_log(name)

    # --- status ------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """What runs: per node the holder, sshd and Ganeti's daemons (None = not running)."""
        state = self._load_state()
        if not state:
            return {"directory": self.directory, "running": False, "nodes": {}}
        layout = self.layout()
        nodes: dict[str, Any] = {}
        for node in layout.nodes:
            holder = state.get("holders", {}).get(node.name)
            entry: dict[str, Any] = {
                "netns": node.netns if netns.netns_exists(node.netns) else None,
                "holder": holder if netns.holder_ok(node.netns, holder) else None,
                "link_up": netns.link_is_up(node.veth_host),
                "sshd": peernode.daemon_pid(node, pl.SSHD_PIDFILE),
            }
            wanted = pl.MASTER_DAEMONS if node == layout.master else pl.NODE_DAEMONS
            for name in wanted:
                entry[name] = peernode.daemon_pid(node, f"{pl.GANETI_RUN_DIR}/{name}.pid")
            nodes[node.name] = entry
        running = bool(state.get("initialised")) and all(
            all(v for v in e.values()) for e in nodes.values()
        )
        return {
            "directory": self.directory,
            "running": running,
            "subnet": str(layout.subnet),
            "bridge": layout.bridge if netns.link_exists(layout.bridge) else None,
            "cluster": layout.cluster_fqdn,
            "master": layout.master.fqdn,
            "instances": sorted(state.get("instances", {})),
            "nodes": nodes,
        }

    # --- down --------------------------------------------------------------------

    def down(self) -> None:
        """Stop everything of the peer by PID, remove namespaces, links and state.

        Every step is taken even when one before it failed; the peer's record
        (``state.json``) is removed only when nothing of it is left, so that
        ``down`` can be run again to finish. Raises OpExecError otherwise.
        """
        state = self._load_state()
        layout = self.layout()
        names = set(netns.list_netns(layout.prefix + "n")) | {n.netns for n in layout.nodes}
        sshds = [int(p) for p in state.get("sshd", {}).values() if p]
        problems = netns.take_down(names, layout.prefix, sshds, netns.recorded_holders(state))
        problems += peernode.mounts_left(layout)  # namespaces and links: checked by take_down
        if problems:
            raise OpExecError(
                f"The Ganeti peer in {self.directory} is not completely down: "
                + "; ".join(problems)
                + " (its record is kept: run down again)"
            )
        for sub in ("state.json", "peer.json"):
            path = os.path.join(self.directory, sub)
            if os.path.exists(path):
                os.unlink(path)
        for sub in ("nodes", "shared", "consoles", "keys"):
            shutil.rmtree(os.path.join(self.directory, sub), ignore_errors=True)
