"""The local multi-node cluster: ``DevCluster(dir).up() / .down() / .status()``.

Each node is a network namespace plus private mount and UTS namespaces (kept
alive by a holder process) running its own virtlogd, libvirtd and sshd, with
per-node directories bind-mounted over libvirt's directories, root's .ssh,
/etc/hosts and the node-local ganeti_lv paths; one shared directory is
mounted as shared file storage on every node. Everything started is recorded
in ``DIR/state.json`` and all kernel object names derive from a short id of
DIR, so ``down`` cleans up by PID and by name even after a crashed ``up``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from collections.abc import Callable, Sequence
from typing import Any

from ganeti_lv import paths
from ganeti_lv.devcluster import clusterinit, daemons, emulator, files, guest, netns
from ganeti_lv.devcluster import layout as lay
from ganeti_lv.errors import ECODE_INVAL, ECODE_STATE, GenericError, OpExecError, OpPrereqError

FeedbackFn = Callable[[str], None]


class DevCluster(files.ClusterDirectory):
    """A local cluster of network-namespace nodes in ``directory``."""

    INFO_NAME = "cluster.json"

    def __init__(
        self,
        directory: str = lay.DEFAULT_DIR,
        cache_dir: str = guest.DEFAULT_CACHE_DIR,
        feedback_fn: FeedbackFn = files.quiet,
    ) -> None:
        super().__init__(directory, cache_dir, feedback_fn)
        self.cid = lay.cluster_id(self.directory)

    def layout(self) -> lay.ClusterLayout:
        """Layout of the cluster as recorded (ConfigurationError-free: defaults if none)."""
        state = self._load_state()
        return lay.ClusterLayout.build(
            self.directory, state.get("nodes", 2), state.get("subnet", lay.DEFAULT_SUBNET)
        )

    @property
    def data_dir(self) -> str:
        """The ganeti_lv data dir of this cluster (GANETI_LV_DATA_DIR)."""
        return os.path.join(self.directory, "data")

    # --- up ----------------------------------------------------------------

    def up(
        self,
        nodes: int | None = None,
        subnet: str | None = None,
        domain_type: str | None = None,
        memory_caps: dict[str, int] | None = None,
        qemu: str | None = None,
        transport: str | None = None,
    ) -> dict[str, Any]:
        """Bring the cluster up (idempotent) and return its description.

        ``qemu`` (see ``ganeti_lv.devcluster.emulator``): ``auto`` (the
        default), ``system`` or ``backports``. ``transport``: how libvirtd
        is reached, ``tls`` (the default: the cluster's certificates,
        verified) or ``tcp`` (no authentication at all; debugging only).
        """
        if transport is not None and transport not in lay.TRANSPORTS:
            raise OpPrereqError(
                f"Unknown libvirt transport {transport!r} (want {' or '.join(lay.TRANSPORTS)})",
                ECODE_INVAL,
            )
        state = self._load_state()
        if state.get("holders"):
            # a cluster brought up before the choice existed runs the system's qemu
            state.setdefault("qemu", "system")
        mode = emulator.resolve_mode(qemu or state.get("qemu") or "auto")
        if state.get("holders"):
            # a cluster brought up before TLS existed listens on TCP
            state.setdefault("transport", lay.TRANSPORT_TCP)
            for key, want in (
                ("nodes", nodes),
                ("subnet", subnet),
                ("qemu", mode),
                ("transport", transport),
            ):
                if want is not None and state.get(key) not in (None, want):
                    raise OpPrereqError(
                        f"The cluster in {self.directory} runs with {key}={state[key]};"
                        " run 'down' first to change it",
                        ECODE_STATE,
                    )
        n_nodes = nodes or state.get("nodes") or 2
        cidr = subnet or state.get("subnet") or lay.DEFAULT_SUBNET
        cl = lay.ClusterLayout.build(self.directory, n_nodes, cidr)
        for name in memory_caps or {}:
            cl.node(name)  # unknown node -> OpPrereqError
        netns.check_subnet_free(str(cl.subnet), cl.bridge)
        state.update(cid=cl.cid, nodes=n_nodes, subnet=str(cl.subnet), bridge=cl.bridge)
        state.setdefault("holders", {})
        state["qemu"] = mode
        state["transport"] = transport or state.get("transport") or lay.TRANSPORT_TLS
        state["emulator_dir"] = emulator.emulator_dir(mode, self.cache_dir, self.feedback_fn)
        self._save_state(state)
        host_keys = self._prepare_files(cl, state["transport"])
        netns.ensure_bridge(cl.bridge, cl.bridge_address, cl.subnet.prefixlen)
        for node in cl.nodes:
            self._ensure_node(cl, node, state)
        self._warm_up(cl)
        image = guest.build_guest(self.cache_dir, self.feedback_fn)
        dtype = domain_type or state.get("domain_type") or self._probe_domain_type(cl, image)
        state["domain_type"] = dtype
        self._save_state(state)
        caps = memory_caps if memory_caps is not None else state.get("memory_caps", {})
        state["memory_caps"] = caps
        self._save_state(state)
        clusterinit.ensure_cluster(cl, host_keys, dtype, caps, self.feedback_fn, state["transport"])
        info = self._describe(cl, image, dtype)
        files.save_json(cl.info_file, info)
        return info

    def _prepare_files(self, cl: lay.ClusterLayout, transport: str) -> dict[str, str]:
        """Write keys and per-node configuration; return each node's host key."""
        files.keygen(cl.key_file, f"ganeti-lv-devcluster@{cl.cid}")
        if transport == lay.TRANSPORT_TLS:
            self._bootstrap_certificates(cl)
        host_keys: dict[str, str] = {}
        for node in cl.nodes:
            for sub, mount in lay.NODE_MOUNTS:
                os.makedirs(os.path.join(node.host_dir, sub), exist_ok=True)
                os.makedirs(mount, exist_ok=True)
            os.makedirs(node.sshd_dir, exist_ok=True)
            # As the libvirt package leaves it on a real host: qemu's log
            # directory exists before the first domain arrives (also by migration).
            os.makedirs(os.path.join(node.host_dir, "log-libvirt", "qemu"), exist_ok=True)
            key = os.path.join(node.sshd_dir, "ssh_host_ed25519_key")
            files.keygen(key, f"root@{node.name}")
            host_keys[node.name] = files.pubkey(key + ".pub")
        os.makedirs(cl.shared_dir, exist_ok=True)
        os.makedirs(lay.SHARED_FILE_STORAGE_DIR, exist_ok=True)
        known = lay.known_hosts(cl, host_keys)
        for node in cl.nodes:
            self._write_node_files(cl, node, known, transport)
        return host_keys

    def _bootstrap_certificates(self, cl: lay.ClusterLayout) -> None:
        """The harness's CA, and first certificates from it for nodes that have none.

        As an operator with a CA of their own would: libvirtd needs a
        certificate before it listens on TLS. ``cluster init`` takes this CA
        (``--ca-cert/--ca-key``), and ``node add`` replaces the certificates
        with ones it issues.
        """
        from ganeti_lv import pki
        from ganeti_lv.hypervisor.libvirt import credentials

        cert_file, key_file = cl.ca_files
        if os.path.exists(cert_file):
            authority = pki.parse_ca(
                pki.read_file(cert_file), pki.read_file(key_file), f"The CA {cert_file}"
            )
        else:
            authority = pki.create_ca(cert_file, key_file, cl.cluster_name)
        for node in cl.nodes:
            credentials.write_first(
                authority, cl.cluster_name, node.name, [node.address], node.host_path
            )

    def _write_node_files(
        self, cl: lay.ClusterLayout, node: lay.NodeLayout, known: str, transport: str
    ) -> None:
        etc = node.host_path("/etc/libvirt")
        files.write_file(
            os.path.join(etc, "libvirtd.conf"), lay.libvirtd_conf(node, transport, cl.cluster_name)
        )
        files.write_file(os.path.join(etc, "qemu.conf"), lay.qemu_conf(node))
        files.write_file(os.path.join(node.sshd_dir, "sshd_config"), lay.sshd_config(node))
        ssh = node.host_path("/root/.ssh")
        os.chmod(ssh, 0o700)
        shutil.copyfile(cl.key_file, os.path.join(ssh, "id_cluster"))
        os.chmod(os.path.join(ssh, "id_cluster"), 0o600)
        pub = files.pubkey(cl.key_file + ".pub")
        files.write_file(os.path.join(ssh, "id_cluster.pub"), pub + "\n")
        files.write_file(os.path.join(ssh, "authorized_keys"), pub + "\n", 0o600)
        files.write_file(os.path.join(ssh, "known_hosts"), known)
        files.write_file(os.path.join(ssh, "config"), lay.ssh_client_config(), 0o600)
        files.write_file(os.path.join(node.host_dir, "hosts"), lay.hosts_file(cl))

    def _holder_ok(self, node: lay.NodeLayout, pid: int | None) -> bool:
        return netns.holder_ok(node.netns, pid)

    def _ensure_node(
        self, cl: lay.ClusterLayout, node: lay.NodeLayout, state: dict[str, Any]
    ) -> None:
        """Create the node's namespaces unless they run, then start its daemons."""
        holder = state["holders"].get(node.name)
        set_up = node.name in state.get("set_up", [])
        if not (set_up and self._holder_ok(node, holder)):
            self.feedback_fn(f"creating {node.name} ({node.address}, netns {node.netns})")
            self._teardown_node(node, holder, state.get("holder_starts", {}).get(node.name))
            state["set_up"] = [n for n in state.get("set_up", []) if n != node.name]
            holder = self._create_node(cl, node, state)
        for name in lay.DAEMONS:
            pid = daemons.start_daemon(
                node, int(holder), name, emulator_dir=state.get("emulator_dir")
            )
            state.setdefault("daemons", {}).setdefault(node.name, {})[name] = pid
        self._save_state(state)

    def _create_node(
        self, cl: lay.ClusterLayout, node: lay.NodeLayout, state: dict[str, Any]
    ) -> int:
        netns.add_node_netns(
            node.netns, node.veth_host, node.veth_peer, cl.bridge, node.address, node.prefixlen
        )
        holder = netns.start_holder(node.netns, os.path.join(node.host_dir, "holder.log"))
        netns.record_holder(state, node.name, holder)
        self._save_state(state)
        mounts = [*cl.node_mounts(node), (os.path.join(node.host_dir, "hosts"), "/etc/hosts")]
        empty_rc = os.path.join(node.host_dir, "bashrc")
        with open(empty_rc, "w", encoding="utf-8") as rc:
            rc.write("# node shell start-up file (empty)\n")
        script = netns.node_setup_script(node.name, mounts, lay.NODE_BRIDGE, empty_rc)
        netns.run(netns.nsenter_argv(holder, ["sh", "-c", script]))
        state["set_up"] = sorted({*state.get("set_up", []), node.name})
        self._save_state(state)
        return holder

    def _teardown_node(
        self, node: lay.NodeLayout, holder: int | None, holder_start: int | None
    ) -> None:
        """Remove what is left of a node (processes, netns, veth) before recreating it."""
        netns.teardown_netns(node.netns, node.veth_host, holder, holder_start)

    def _warm_up(self, cl: lay.ClusterLayout) -> None:
        """Let every libvirtd probe qemu's capabilities now, in parallel."""
        procs = [
            subprocess.Popen(
                self._exec_argv(n.name, ["virsh", "-q", "domcapabilities", "--virttype", "qemu"]),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for n in cl.nodes
        ]
        try:
            for proc in procs:
                proc.wait(timeout=120)
        except subprocess.TimeoutExpired as err:
            raise OpExecError(f"a node's libvirtd did not answer within {err.timeout:g} s") from err
        finally:
            for proc in procs:  # none is left running, whatever happened
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()

    # --- domain type probe ---------------------------------------------------

    def _probe_domain_type(self, cl: lay.ClusterLayout, image: guest.GuestImage) -> str:
        """kvm if a kvm guest really boots here, else qemu; cached in the cache dir."""
        cache = os.path.join(self.cache_dir, "domain-type.json")
        key = f"{os.uname().release}/{image.key}"
        try:
            with open(cache, encoding="utf-8") as fh:
                known = json.load(fh)
        except (FileNotFoundError, ValueError):
            known = {}
        if key in known:
            return str(known[key])
        node = cl.nodes[0]
        result = "qemu"
        self.feedback_fn("probing whether kvm guests boot here (up to 20 s)")
        if self.boot_probe(node.name, "kvm", image, timeout=20):
            result = "kvm"
        elif not self.boot_probe(node.name, "qemu", image, timeout=90):
            raise OpExecError("the test guest boots neither under kvm nor under qemu (TCG)")
        self.feedback_fn(f"domain type: {result}")
        known[key] = result
        os.makedirs(self.cache_dir, exist_ok=True)
        files.write_file(cache, json.dumps(known, indent=2) + "\n")
        return result

    def boot_probe(
        self, node: str, domain_type: str, image: guest.GuestImage, timeout: float
    ) -> bool:
        """Boot a transient diskless test guest; True if it printed GUEST-READY."""
        nl = self.layout().node(node)
        name = f"{self.cid}-probe-{domain_type}"
        log = os.path.join(nl.host_dir, f"probe-{domain_type}.log")
        xml_file = os.path.join(nl.host_dir, f"probe-{domain_type}.xml")
        if os.path.exists(log):
            os.unlink(log)
        cmdline = guest.kernel_args(name, patmb=0, dirtymb=0)
        files.write_file(xml_file, guest.domain_xml(name, domain_type, image, cmdline, None, log))
        try:
            res = self.node_exec(node, ["virsh", "create", xml_file], check=False)
            if res.returncode != 0:
                return False
            try:
                guest.wait_console(log, r"^GUEST-READY$", timeout)
                return True
            except GenericError:
                return False
        finally:
            self.node_exec(node, ["virsh", "destroy", name], check=False)

    # --- description -------------------------------------------------------------

    def _describe(
        self, cl: lay.ClusterLayout, image: guest.GuestImage, dtype: str
    ) -> dict[str, Any]:
        state = self._load_state()
        transport = state.get("transport", lay.TRANSPORT_TCP)
        nodes = []
        for n in cl.nodes:
            uri = n.libvirt_uri(transport)
            nodes.append(
                {
                    "name": n.name,
                    "address": n.address,
                    # as the master reaches it: with its client certificate
                    "libvirt_uri": clusterinit.master_uri(cl, n, transport),
                    # as the other nodes' libvirtd reach it: with their own certificates
                    "peer_uri": uri,
                    "migration_address": n.address,
                    "ssh_port": 22,
                    "ssh_user": "root",
                    "netns": n.netns,
                    "veth": n.veth_host,
                    "holder_pid": state["holders"].get(n.name),
                    "host_dir": n.host_dir,
                    "unix_uri": f"qemu+unix:///system?socket={n.host_path(lay.LIBVIRT_SOCK)}",
                    "storage": {
                        "file_storage_dir": n.host_path(lay.FILE_STORAGE_DIR),
                        "export_dir": n.host_path(lay.EXPORT_DIR),
                        "hooks_base_dir": n.host_path(lay.HOOKS_BASE_DIR),
                        "libvirt_log_dir": n.host_path(lay.NODE_LOG_DIR),
                    },
                }
            )
        return {
            "kind": "devcluster",
            "name": f"devcluster-{cl.cid}",
            "master": cl.nodes[0].name,
            "directory": cl.directory,
            "data_dir": cl.data_dir,
            "ssh_key_file": paths.ssh_key_file(cl.data_dir),
            "known_hosts_file": paths.known_hosts_file(cl.data_dir),
            "domain_type": dtype,
            "libvirt_transport": transport,
            "ca_cert_file": paths.ca_cert_file(cl.data_dir),
            "bridge": lay.NODE_BRIDGE,
            "host_bridge": cl.bridge,
            "subnet": str(cl.subnet),
            "nodes": nodes,
            "storage": {
                "file_storage_dir": lay.FILE_STORAGE_DIR,
                "shared_file_storage_dir": lay.SHARED_FILE_STORAGE_DIR,
                "export_dir": lay.EXPORT_DIR,
                "hooks_base_dir": lay.HOOKS_BASE_DIR,
            },
            "host_shared_dir": cl.shared_dir,
            "guest": {"kernel": image.kernel, "initrd": image.initrd, "cmdline": image.cmdline},
            "qemu": state.get("qemu", "system"),
            "emulator_dir": state.get("emulator_dir"),
            "supports_faults": True,
        }

    # --- down --------------------------------------------------------------------

    def down(self) -> None:
        """Stop everything of this cluster by PID and remove its namespaces and links.

        A master daemon running for the cluster's data dir is stopped first
        (by its pid file; its running jobs end before it does, or are canceled
        after a minute). Every step is taken even when one before it failed;
        the cluster's record (``state.json``) is removed only when all went
        well, so that ``down`` can be run again to finish.
        """
        from ganeti_lv.master import daemon as masterd

        problems: list[str] = []
        try:
            masterd.stop(self.data_dir, force=True)
        except (OSError, OpExecError) as err:
            problems.append(str(err))
        state = self._load_state()
        prefix = f"glv{self.cid}"
        names = set(netns.list_netns(prefix + "n"))
        for i in range(1, lay.MAX_NODES + 1):
            names.add(f"{prefix}n{i}")
        daemons = [int(p) for d in state.get("daemons", {}).values() for p in d.values() if p]
        problems += netns.take_down(names, prefix, daemons, netns.recorded_holders(state))
        if problems:
            raise OpExecError(
                f"The cluster in {self.directory} is not completely down: "
                + "; ".join(problems)
                + " (its record is kept: run down again)"
            )
        for sub in ("state.json", "cluster.json"):
            path = os.path.join(self.directory, sub)
            if os.path.exists(path):
                os.unlink(path)
        for sub in ("nodes", "data", "shared", "keys"):
            shutil.rmtree(os.path.join(self.directory, sub), ignore_errors=True)

    # --- status ------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """What runs: per node the holder and each daemon's PID (None = not running)."""
        state = self._load_state()
        if not state:
            return {"directory": self.directory, "running": False, "nodes": {}}
        cl = self.layout()
        nodes: dict[str, Any] = {}
        for node in cl.nodes:
            holder = state.get("holders", {}).get(node.name)
            entry: dict[str, Any] = {
                "netns": node.netns if netns.netns_exists(node.netns) else None,
                "holder": holder if self._holder_ok(node, holder) else None,
                "link_up": netns.link_is_up(node.veth_host),
            }
            for name in lay.DAEMONS:
                entry[name] = daemons.daemon_pid(node, name)
            nodes[node.name] = entry
        running = all(all(v for v in e.values()) for e in nodes.values())
        return {
            "directory": self.directory,
            "running": running,
            "subnet": str(cl.subnet),
            "bridge": cl.bridge if netns.link_exists(cl.bridge) else None,
            "domain_type": state.get("domain_type"),
            "qemu": state.get("qemu"),
            "nodes": nodes,
        }

    # --- helpers for tests and benchmarks ------------------------------------------

    def holder(self, node: str) -> int:
        """PID of the process holding the node's namespaces."""
        pid = self._load_state().get("holders", {}).get(node)
        if not pid or not self._holder_ok(self.layout().node(node), pid):
            raise OpPrereqError(f"Node '{node}' is not running", ECODE_STATE)
        return int(pid)

    def _exec_argv(self, node: str, argv: Sequence[str]) -> list[str]:
        return netns.nsenter_argv(self.holder(node), argv)

    def node_exec(
        self,
        node: str,
        argv: Sequence[str],
        check: bool = True,
        input: bytes | None = None,
        timeout: float | None = 60,
    ) -> subprocess.CompletedProcess:
        """Run ``argv`` inside the node's namespaces; output captured as bytes."""
        return netns.run(self._exec_argv(node, argv), check=check, input=input, timeout=timeout)

    def virsh(self, node: str, *args: str, check: bool = True) -> str:
        """Run ``virsh args`` on the node's libvirtd; return its stdout."""
        res = self.node_exec(node, ["virsh", "-q", *args], check=check)
        return res.stdout.decode(errors="replace")

    def daemon_pid(self, node: str, name: str) -> int | None:
        """PID of a node daemon (virtlogd, libvirtd, sshd) if it runs."""
        return daemons.daemon_pid(self.layout().node(node), name)

    def daemon_end(self, node: str, name: str, pid: int) -> str | None:
        """How a node daemon that ran as ``pid`` ended, as recorded below it (None: not known)."""
        return daemons.daemon_end(self.layout().node(node), name, pid)

    def kill_daemon(self, node: str, name: str, sig: int = signal.SIGKILL) -> int | None:
        """Kill a node daemon and wait until it is gone; return its former PID."""
        return daemons.stop_daemon(self.layout().node(node), name, sig)

    def start_daemon(self, node: str, name: str) -> int:
        """Start a node daemon if it is not running; return its PID once ready."""
        return daemons.start_daemon(
            self.layout().node(node),
            self.holder(node),
            name,
            emulator_dir=self._load_state().get("emulator_dir"),
        )

    def restart_daemon(self, node: str, name: str) -> int:
        """Stop (SIGTERM) and start a node daemon; return the new PID."""
        daemons.stop_daemon(self.layout().node(node), name)
        return self.start_daemon(node, name)

    def cut_link(self, node: str) -> None:
        """Take the node's veth down: the node becomes unreachable from host and peers."""
        netns.run(["ip", "link", "set", self.layout().node(node).veth_host, "down"])

    def restore_link(self, node: str) -> None:
        """Bring the node's veth back up."""
        netns.run(["ip", "link", "set", self.layout().node(node).veth_host, "up"])

    def host_path(self, node: str, node_path: str) -> str:
        """Host path backing ``node_path`` (a node-local path) of ``node``."""
        if node_path.startswith(lay.SHARED_FILE_STORAGE_DIR):
            return self.layout().shared_dir + node_path[len(lay.SHARED_FILE_STORAGE_DIR) :]
        return self.layout().node(node).host_path(node_path)


wait_console = guest.wait_console
