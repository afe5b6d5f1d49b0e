"""Node LUs: LUNodeAdd, LUNodeSetParams, LUNodeRemove, LUNodeQuery."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from ganeti_lv import bootstrap, constants, locking, paths, pki
from ganeti_lv.cmdlib.base import LogicalUnit, NoHooksLU, register_lu
from ganeti_lv.cmdlib.cluster_crypto import distribute
from ganeti_lv.cmdlib.common import ask_nodes, domain_active, expand_node, get_node
from ganeti_lv.config import match_name
from ganeti_lv.errors import (
    ECODE_EXISTS,
    ECODE_INVAL,
    ECODE_NOENT,
    ECODE_NOTUNIQUE,
    ECODE_STATE,
    OpPrereqError,
)
from ganeti_lv.hypervisor.base import NodeOps
from ganeti_lv.node import known_hosts
from ganeti_lv.node.transport import node_call
from ganeti_lv.objects import ConfigData, Node
from ganeti_lv.opcodes import OpNodeAdd, OpNodeQuery, OpNodeRemove, OpNodeSetParams

FeedbackFn = Callable[[str], None]


def _check_no_instances(data: ConfigData, node: str) -> None:
    """ECODE_STATE unless no instance uses ``node``: a node under instances stays vm_capable."""
    if any(node in inst.all_nodes for inst in data.instances.values()):
        raise OpPrereqError(
            f"Node {node} hosts instances, cannot unset the vm_capable flag", ECODE_STATE
        )


def _check_no_stray_guest(
    rpc: NodeOps, data: ConfigData, node: Node, doing: str, warn: Callable[[str], None]
) -> None:
    """ECODE_STATE when an instance whose primary is another node runs on ``node``.

    A migration cut short can leave a guest there (``cluster verify``'s
    ERROR_wrongnode). A node removed, offline or not vm_capable is no longer
    asked whether an instance runs on it: its primary's start would make a
    second copy. A node that does not answer is only warned about (a dead
    node can be removed).
    """
    if node.offline:
        return
    found = node_call(rpc.instance_list, node)
    if not found.ok:
        warn(f"Could not check which instances run on node {node.name}: {found.fail_msg}")
        return
    strays = sorted(
        name
        for name, dom in (found.payload or {}).items()
        if name in data.instances
        and data.instances[name].primary_node != node.name
        and domain_active(dom)
    )
    if strays:
        raise OpPrereqError(
            f"Instance(s) {', '.join(strays)} run on node {node.name}, not on their primary"
            f" node; refusing {doing}. Run 'gnt-lv instance migrate --cleanup' for each first",
            ECODE_STATE,
        )


def _leave(rpc: NodeOps, node: Node, warn: Callable[[str], None]) -> None:
    """Take the cluster's TLS keys and certificates off ``node`` (leaving the cluster, or
    never added): the other nodes' libvirtd would let them in. A node that cannot be
    asked is warned about: a copy of them is only made worthless by a new CA."""
    if node.offline:
        result_msg: str | None = "it is offline"
    else:
        result_msg = node_call(rpc.remove_tls_credentials, node).fail_msg
    if result_msg is not None:
        warn(
            f"The cluster's certificates could not be removed from node {node.name}"
            f" ({result_msg}); 'gnt-lv cluster renew-crypto --new-cluster-certificate'"
            " makes them worthless"
        )


@register_lu(OpNodeAdd)
class LUNodeAdd(LogicalUnit):
    """Add a node whose SSH host key the operator confirmed.

    Exec records the key in the cluster's known_hosts, checks that the node
    answers over SSH (``true``), gives it its TLS certificates from the
    cluster CA (over SSH; its libvirtd reloads them), checks libvirt (node
    facts) and only then adds it to the configuration; on failure the key
    is removed again and the node is not added.
    """

    HPATH = constants.HPATH_NODE_ADD
    HTYPE = constants.HTYPE_NODE
    REQ_BGL = True

    def CheckArguments(self) -> None:
        """A host key is mandatory and must be well-formed."""
        if not self.op.host_key:
            raise OpPrereqError(
                f"The SSH host key of node {self.op.node_name} must be confirmed and given "
                "(host_key); it is never accepted automatically",
                ECODE_INVAL,
            )
        self.host_key = " ".join(self.op.host_key.split()[:2])
        bootstrap.parse_host_key(self.host_key)

    def ExpandNames(self) -> None:
        """The exclusive BGL is enough: nodes are added one at a time."""
        self.needed_locks = {}

    def CheckPrereq(self) -> None:
        """Name and address are unique; readd only for a known node."""
        data = self.cfg.snapshot()  # read-only: lookups (the node changed below is a copy)
        self.cluster = data.cluster.copy()
        # a short name of a node is that node (as everywhere): never a second one
        known = match_name(self.op.node_name, list(data.nodes))
        if known is not None and not self.op.readd:
            raise OpPrereqError(f"Node {known} is already in the configuration", ECODE_EXISTS)
        name = self.op.node_name = known or self.op.node_name
        existing = data.nodes.get(name)
        # a node added again keeps what the opcode does not give anew
        address = self.op.primary_ip or (existing.address if existing else name)
        if existing is None and self.op.readd:
            raise OpPrereqError(f"Node {name} is not in the configuration", ECODE_NOENT)
        if existing is not None and name == data.cluster.master_node:
            raise OpPrereqError(f"Cannot readd the master node {name}", ECODE_STATE)
        if self.op.vm_capable is False:
            _check_no_instances(data, name)
        for other in data.nodes.values():
            if other.name != name and other.address == address:
                raise OpPrereqError(
                    f"The address {address} is already used by node {other.name}",
                    ECODE_NOTUNIQUE,
                )
        node = existing.copy() if existing is not None else Node(name=name, address=address)
        # a migration address of its own stays; one that was the node's address follows it
        own_migration = node.migration_address if node.migration_address != node.address else ""
        node.address = address
        if self.op.ssh_port is not None:
            node.ssh_port = self.op.ssh_port
        if self.op.ssh_user is not None:
            node.ssh_user = self.op.ssh_user
        # Empty URIs mean the node operations' defaults: the master reaches the node's
        # libvirtd over SSH with the cluster key, other nodes over TLS to its address.
        node.libvirt_uri = self.op.libvirt_uri or node.libvirt_uri
        node.peer_uri = self.op.peer_uri or node.peer_uri
        node.migration_address = self.op.migration_address or own_migration or address
        node.memory_cap = self.op.memory_cap if self.op.memory_cap is not None else node.memory_cap
        if self.op.vm_capable is not None:
            node.vm_capable = self.op.vm_capable
        node.offline = False
        node.drained = False
        node.mtime = time.time()
        self.new_node = node
        # the node's TLS certificates come from the cluster CA (a cluster without one,
        # made before there were certificates, gets them with renew-crypto)
        self.authority = None
        if os.path.exists(paths.ca_cert_file(self.ctx.data_dir)):
            self.authority = pki.load_ca(self.ctx.data_dir)

    def BuildHooksEnv(self) -> dict[str, Any]:
        """Ganeti's node-add keys."""
        return {
            "OP_TARGET": self.new_node.name,
            "NODE_NAME": self.new_node.name,
            "NODE_PIP": self.new_node.address,
            "NODE_SIP": self.new_node.address,
            "MASTER_CAPABLE": "True",
            "VM_CAPABLE": self.new_node.vm_capable,
        }

    def BuildHooksNodes(self) -> tuple[list[str], list[str]]:
        """Ganeti's: every node of the cluster; after, the new node too."""
        others = sorted(n for n in self.cfg.node_names() if n != self.new_node.name)
        return others, [*others, self.new_node.name]

    def Exec(self, feedback_fn: FeedbackFn) -> None:
        """Record the key, check SSH and libvirt, then add the node."""
        known_file = paths.known_hosts_file(self.ctx.data_dir)
        node = self.new_node
        previous = {
            h: bootstrap.lookup_known_host(known_file, h, node.ssh_port)
            for h in bootstrap.node_host_names(node)
        }
        bootstrap.record_node_host_key(known_file, node, self.host_key)
        certified = False  # the node may hold the cluster's certificates
        try:
            feedback_fn(f"* checking SSH connectivity to {node.address}:{node.ssh_port}")
            node_call(self.rpc.run_command, node, ["true"], timeout=30).Raise(
                f"Node {node.name} is not reachable over SSH with the cluster key"
            )
            if self.authority is not None:
                # a failed install left the node's own files as they were (staged ones aside)
                distribute(self.rpc, self.authority, self.cluster.name, node, feedback_fn)
                certified = True
            feedback_fn(f"* checking libvirt on {node.libvirt_uri or 'the default URI'}")
            facts = node_call(self.rpc.node_info, node).Raise(
                f"Cannot talk to libvirt on node {node.name}"
            )
            feedback_fn(
                f"* node {node.name}: {facts.memory_total} MiB memory, {facts.memory_free} MiB free"
            )
            with self.cfg.update() as data:
                data.nodes[node.name] = node
        except BaseException:
            if certified and not self.op.readd:  # a node not added keeps none of them
                _leave(self.rpc, node, self.LogWarning)
            bootstrap.forget_node_host_key(known_file, node)
            for host, key in previous.items():
                if key:  # a readd: put the old key back
                    known_hosts.known_hosts_add(known_file, host, node.ssh_port, key)
            raise
        feedback_fn(f"Node {node.name} added to the cluster")


@register_lu(OpNodeSetParams)
class LUNodeSetParams(LogicalUnit):
    """Change a node's offline/drained/master_candidate/vm_capable flags and memory cap.

    Offline, drained and master candidate are Ganeti's node roles: at most one
    is set at once, and a node made a candidate leaves the other two.
    Result, as Ganeti's: list of (parameter, new value as Python's str), the
    other parameters asked for, then each role flag that changed
    (master_candidate, drained, offline, in that order): a candidate drained
    or offlined reports its demotion too, a node that leaves those roles as a
    candidate its return.
    """

    HPATH = constants.HPATH_NODE_MODIFY
    HTYPE = constants.HTYPE_NODE
    REQ_BGL = False

    def CheckArguments(self) -> None:
        """At least one change."""
        if (
            self.op.offline is None
            and self.op.drained is None
            and self.op.master_candidate is None
            and self.op.vm_capable is None
            and self.op.memory_cap is None
            and not self.op.clear_memory_cap
        ):
            raise OpPrereqError("Please pass at least one modification", ECODE_INVAL)
        if self.op.offline and self.op.drained:
            raise OpPrereqError(
                "Can't set the node into offline and drained state at the same time",
                ECODE_INVAL,
            )
        if self.op.master_candidate and (self.op.offline or self.op.drained):
            raise OpPrereqError(
                "Can't set the node into more than one state at the same time", ECODE_INVAL
            )

    def ExpandNames(self) -> None:
        """Lock the node (and its resources)."""
        self.op.node_name = expand_node(self.cfg, self.op.node_name)
        self.needed_locks = {
            locking.LEVEL_NODE: [self.op.node_name],
            locking.LEVEL_NODE_RES: [self.op.node_name],
        }

    def CheckPrereq(self) -> None:
        """The master stays online; a node with running instances is not offlined."""
        data = self.cfg.snapshot()  # read-only: lookups
        self.cluster = data.cluster.copy()
        self.node = get_node(self.cfg, self.op.node_name)
        for flag in ("offline", "drained", "master_candidate"):  # as Ganeti: no change, no key
            if getattr(self.op, flag) is False and not getattr(self.node, flag):
                self.LogInfo(f"Ignoring request to unset flag {flag}, already unset")
                setattr(self.op, flag, None)
        if self.op.offline and self.node.name == self.cluster.master_node:
            raise OpPrereqError(
                f"The master node {self.node.name} can't be set offline", ECODE_INVAL
            )
        if self.node.name == self.cluster.master_node and (
            self.op.drained or self.op.master_candidate is not None
        ):
            raise OpPrereqError(
                f"The master node {self.node.name} keeps its role: it is not drained and"
                " its master candidacy does not change",
                ECODE_INVAL,
            )
        if self.op.master_candidate:  # a candidate is neither offline nor drained (roles)
            for flag in ("offline", "drained"):
                if getattr(self.node, flag):
                    setattr(self.op, flag, False)
        if self.op.offline and not self.node.offline and not self.op.force:
            running = sorted(
                i.name
                for i in data.instances.values()
                if i.primary_node == self.node.name and i.admin_state == constants.ADMINST_UP
            )
            if running:
                raise OpPrereqError(
                    f"Node {self.node.name} is the primary of running instance(s) "
                    f"{', '.join(running)}; stop or move them first (or use --force)",
                    ECODE_STATE,
                )
        # back online (also into the drained role, as Ganeti): only a node that answers
        back = self.node.offline and (
            self.op.offline is False or (self.op.drained and self.op.offline is None)
        )
        if back:
            asked = self.node.copy()
            asked.offline = False  # node_call does not ask an offline node
            node_call(self.rpc.node_info, asked).Raise(
                f"Node {self.node.name} is being brought back online but does not answer",
                prereq=True,
                ecode=ECODE_STATE,
            )
        if self.op.vm_capable is False:
            _check_no_instances(data, self.node.name)
        if (self.op.offline and not self.node.offline) or (
            self.op.vm_capable is False and self.node.vm_capable
        ):
            what = "to set it offline" if self.op.offline else "to unset its vm_capable flag"
            _check_no_stray_guest(self.rpc, data, self.node, what, self.LogWarning)
        self.changes = self._attribute_changes(back)
        after = self.node.copy()
        for name, value in self.changes:
            setattr(after, name, value)
        if (
            after.is_master_candidate()
            and not self.node.is_master_candidate()
            and not self.op.master_candidate
        ):  # its candidacy was kept through the offline/drained role
            self.LogInfo(f"Node {self.node.name} is a master candidate again")
        # Ganeti's report: the other parameters asked for, then the role flags that
        # changed; the values as Python's str, as Ganeti's job result has them
        changed = [(n, v) for n, v in self.changes if n in ("vm_capable", "memory_cap")]
        changed += _role_changes(self.node, after)
        self.result = [(name, str(value)) for name, value in changed]
        self.dry_run_result = list(self.result)

    def _attribute_changes(self, back: bool) -> list[tuple[str, Any]]:
        """The node's attributes to set, in order (a later one wins)."""
        changes: list[tuple[str, Any]] = []
        for name in ("offline", "drained", "vm_capable"):
            value = getattr(self.op, name)
            if value is not None:
                changes.append((name, value))
        # asked to be a candidate, already one: no change (the hooks still say True)
        if self.op.master_candidate is False or (
            self.op.master_candidate and not self.node.is_master_candidate()
        ):
            changes.append(("master_candidate", self.op.master_candidate))
        if self.op.memory_cap is not None:
            changes.append(("memory_cap", self.op.memory_cap))
        elif self.op.clear_memory_cap:
            changes.append(("memory_cap", None))
        if self.op.offline:
            changes.append(("drained", False))
        if back and self.op.offline is None:
            changes.append(("offline", False))
        return changes

    def BuildHooksEnv(self) -> dict[str, Any]:
        """Ganeti's node-modify keys: OP_TARGET and the flags as asked, an unchanged
        one "None" (master capability is not set here)."""
        return {
            "OP_TARGET": self.node.name,
            "MASTER_CANDIDATE": str(self.op.master_candidate),
            "OFFLINE": str(self.op.offline),
            "DRAINED": str(self.op.drained),
            "MASTER_CAPABLE": "None",
            "VM_CAPABLE": str(self.op.vm_capable),
        }

    def BuildHooksNodes(self) -> tuple[list[str], list[str]]:
        """The master and the node; not the node's pre hooks when it is taken offline.

        Taking a node offline is how an operator declares it dead (then its
        instances fail over): an online node that cannot be reached fails the
        pre phase, so that phase must not need it. After the change the
        node is offline and its post hooks are skipped.
        """
        nodes = [self.cluster.master_node, self.node.name]
        pre = [self.cluster.master_node] if self.op.offline else nodes
        return pre, nodes

    def Exec(self, feedback_fn: FeedbackFn) -> list[tuple[str, str]]:
        """Apply the changes."""
        with self.cfg.update() as data:
            node = data.nodes[self.node.name]
            for name, value in self.changes:
                setattr(node, name, value)
            node.mtime = time.time()
        return list(self.result)


@register_lu(OpNodeRemove)
class LUNodeRemove(LogicalUnit):
    """Remove a node that is neither the master nor any instance's node."""

    HPATH = constants.HPATH_NODE_REMOVE
    HTYPE = constants.HTYPE_NODE
    REQ_BGL = True

    def ExpandNames(self) -> None:
        """Exclusive BGL; canonical name."""
        self.op.node_name = expand_node(self.cfg, self.op.node_name)
        self.needed_locks = {}

    def CheckPrereq(self) -> None:
        """Not the master, no instances."""
        data = self.cfg.snapshot()  # read-only: lookups
        self.cluster = data.cluster.copy()
        self.node = get_node(self.cfg, self.op.node_name)
        if self.node.name == self.cluster.master_node:
            raise OpPrereqError(
                "Node is the master node, failover to another node is required", ECODE_INVAL
            )
        for inst in sorted(data.instances.values(), key=lambda i: i.name):
            if self.node.name in inst.all_nodes:
                raise OpPrereqError(
                    f"Instance {inst.name} is still running on the node, please remove first",
                    ECODE_INVAL,
                )
        _check_no_stray_guest(self.rpc, data, self.node, "to remove it", self.LogWarning)

    def BuildHooksEnv(self) -> dict[str, Any]:
        """OP_TARGET and NODE_NAME."""
        return {"OP_TARGET": self.node.name, "NODE_NAME": self.node.name}

    def BuildHooksNodes(self) -> tuple[list[str], list[str]]:
        """Ganeti's: every node but the one removed (a dead node can then be removed)."""
        others = sorted(n for n in self.cfg.node_names() if n != self.node.name)
        return others, others

    def Exec(self, feedback_fn: FeedbackFn) -> None:
        """Run the post hooks on the node, remove it from the configuration, forget its host key.

        Ganeti runs the post hooks on the node it removes too, in Exec (not in
        the pre phase: a dead node could not be removed); here just before it
        leaves the configuration, where the hooks runner finds its address.
        """
        self.proc.RunPostHook(self, self.node.name)
        self.cfg.remove_node(self.node.name)
        _leave(self.rpc, self.node, self.LogWarning)
        bootstrap.forget_node_host_key(paths.known_hosts_file(self.ctx.data_dir), self.node)
        feedback_fn(f"Node {self.node.name} removed from the cluster")


_ROLE_FLAGS = ("master_candidate", "drained", "offline")  # Ganeti's order


def _role_flags(node: Node) -> tuple[bool, bool, bool]:
    """The node's role as Ganeti's flags: a candidate's kept flag counts only in that role."""
    return (node.is_master_candidate(), node.drained, node.offline)


def _role_changes(old: Node, new: Node) -> list[tuple[str, bool]]:
    """Each role flag that differs between ``old`` and ``new``, in Ganeti's order."""
    pairs = zip(_ROLE_FLAGS, _role_flags(old), _role_flags(new), strict=True)
    return [(name, now) for name, was, now in pairs if was != now]


def node_role(node: Node, master: str) -> str:
    """Ganeti's one-letter role of a node (constants.NR_*)."""
    if node.name == master:
        return constants.NR_MASTER
    if node.is_master_candidate():
        return constants.NR_MCANDIDATE
    if node.drained:
        return constants.NR_DRAINED
    if node.offline:
        return constants.NR_OFFLINE
    return constants.NR_REGULAR


def _node_memory(row: dict[str, Any], data: ConfigData) -> int | None:
    """Ganeti's ``mnode``: the memory the node itself uses, the total less what is
    free and what the instances marked up there take, so that tools that take
    the instances' memory off the total less ``mnode`` find what is free."""
    total, free = row["mtotal"], row["mfree"]
    if total is None or free is None:
        return None
    instances = sum(
        int(data.cluster.fill_beparams(inst)["maxmem"])
        for inst in data.instances.values()
        if inst.primary_node == row["name"] and inst.admin_state == constants.ADMINST_UP
    )
    return max(0, total - free - instances)


def _config_row(node: Node, data: ConfigData) -> dict[str, Any]:
    """A node's query row from the configuration: ganeti_lv's fields and Ganeti's."""
    name = node.name
    pinst = sorted(i.name for i in data.instances.values() if i.primary_node == name)
    sinst = sorted(i.name for i in data.instances.values() if name in i.secondary_nodes)
    return {
        **{
            k: getattr(node, k)
            for k in (
                "name",
                "address",
                "ssh_port",
                "libvirt_uri",
                "peer_uri",
                "migration_address",
                "offline",
                "drained",
                "vm_capable",
                "memory_cap",
                "uuid",
                "ctime",
                "mtime",
            )
        },
        "master": name == data.cluster.master_node,
        "master_candidate": node.is_master_candidate(),
        "master_capable": True,  # every node may be the master (master-failover)
        "role": node_role(node, data.cluster.master_node),
        "tags": list(node.tags),
        # one address for everything: Ganeti's primary and secondary IP
        "pip": node.address,
        "sip": node.address,
        "pinst_cnt": len(pinst),
        "pinst_list": pinst,
        "sinst_cnt": len(sinst),
        "sinst_list": sinst,
        "mtotal": None,
        "mfree": None,
        "mnode": None,
        "ctotal": None,
        # no live facts yet: the node's answer clears this (LUNodeQuery)
        "live": constants.LIVE_OFFLINE if node.offline else constants.LIVE_NODATA,
    }


@register_lu(OpNodeQuery)
class LUNodeQuery(NoHooksLU):
    """Rows (dicts) describing nodes, with live memory where reachable.

    A row has ganeti_lv's node fields and Ganeti's (``pip``, ``role``,
    ``sinst_list``, ``mnode`` ...) by Ganeti's names, for ``gnt-lv node
    list`` and the remote API alike. Its live fields (``mtotal``, ``mfree``,
    ``mnode``, ``ctotal``) are None without the node's answer, and ``live``
    says why: ``constants.LIVE_OFFLINE`` (the node is marked offline, so it
    is not asked), ``constants.LIVE_NODATA`` (not asked, as without ``live``,
    or it did not answer) or None (it answered; a live field that is None
    then has no value there).
    """

    REQ_BGL = False
    QUERY = True

    def ExpandNames(self) -> None:
        """No locks: a query reads a snapshot."""
        self.wanted = [expand_node(self.cfg, n) for n in self.op.names]
        self.needed_locks = {}

    def Exec(self, feedback_fn: FeedbackFn) -> list[dict[str, Any]]:
        """One row per node, sorted by name; the live facts asked of every node at once
        (nodes down but not marked offline each take their connect timeouts)."""
        data = self.cfg.snapshot()  # read-only: the rows hold scalars and new lists
        nodes = [data.nodes[name] for name in self.wanted or sorted(data.nodes)]
        asked = [node for node in nodes if self.op.live and not node.offline]
        facts, _failed = ask_nodes(self.rpc.node_info, asked)
        rows = []
        for node in nodes:
            row = _config_row(node, data)
            info = facts.get(node.name)
            if info is not None:
                row["mtotal"] = info.memory_total
                row["mfree"] = info.memory_free
                row["ctotal"] = info.cpu_count or None
                row["mnode"] = _node_memory(row, data)
                row["live"] = None
            rows.append(row)
        return rows
