"""Instance lifecycle LUs: startup, shutdown, reboot, remove (create: ``instance_create``).

``compute_instance_status`` is the pure function behind the status column
(Ganeti's values: running, ADMIN_down, ERROR_down, ERROR_up,
ERROR_wrongnode, ERROR_nodeoffline, ERROR_nodedown, ADMIN_offline);
LUInstanceQuery lives in ``instance_query``.

Startup, shutdown, reboot and remove first merge a snapshot overlay left by
an interrupted export (``common.repair_disk_chain``) and refuse, with nothing
changed, when that fails; they refuse an instance running on a node other
than its primary (``check_not_running_elsewhere``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Mapping
from typing import Any

from ganeti_lv import constants, locking
from ganeti_lv.cmdlib.base import LOCKS_REPLACE, LogicalUnit, register_lu
from ganeti_lv.cmdlib.common import (
    check_node_online,
    domain_active,
    expand_instance,
    get_instance,
    get_node,
    instance_domains,
    instance_hook_env,
    refuse_cluster_wide,
    removal_step,
    repair_disk_chain,
)
from ganeti_lv.cmdlib.migration_checks import missing_bridges
from ganeti_lv.errors import (
    ECODE_ENVIRON,
    ECODE_INVAL,
    ECODE_NORES,
    ECODE_STATE,
    OpPrereqError,
)
from ganeti_lv.hypervisor.base import DomainInfo, NodeFacts, NodeOps
from ganeti_lv.node.transport import node_call
from ganeti_lv.objects import Cluster, ConfigData, Instance, Node
from ganeti_lv.opcodes import (
    OpInstanceReboot,
    OpInstanceRemove,
    OpInstanceShutdown,
    OpInstanceStartup,
)
from ganeti_lv.units import coerce_beparams, coerce_hvparams

FeedbackFn = Callable[[str], None]


# ---------------------------------------------------------------- pure helpers


def compute_instance_status(
    admin_state: str,
    primary_node: str,
    running_on: list[str],
    offline_nodes: set[str] | frozenset[str] = frozenset(),
    bad_nodes: set[str] | frozenset[str] = frozenset(),
) -> str:
    """Ganeti's status of an instance.

    ``running_on``: nodes whose libvirt runs the domain; ``offline_nodes``:
    nodes marked offline; ``bad_nodes``: online nodes that could not be asked.
    The primary is looked at first, as Ganeti does: an instance running there is
    running while a live migration's paused domain waits on its target (a
    second copy is cluster verify's to report).
    """
    if primary_node in offline_nodes:
        return constants.INSTST_NODEOFFLINE
    if primary_node in bad_nodes:
        return constants.INSTST_NODEDOWN
    if running_on:
        if primary_node not in running_on:
            return constants.INSTST_WRONGNODE
        if admin_state == constants.ADMINST_UP:
            return constants.INSTST_RUNNING
        return constants.INSTST_ERRORUP
    if admin_state == constants.ADMINST_UP:
        return constants.INSTST_ERRORDOWN
    if admin_state == constants.ADMINST_DOWN:
        return constants.INSTST_ADMINDOWN
    return constants.INSTST_ADMINOFFLINE


def memory_bounds_crossed(beparams: Mapping[str, Any]) -> bool:
    """Whether filled ``beparams`` have a minimum memory above the maximum."""
    return int(beparams["minmem"]) > int(beparams["maxmem"])


def check_memory_bounds(beparams: dict[str, Any], name: str) -> None:
    """ECODE_INVAL when the filled ``beparams`` of instance ``name`` have a minimum memory
    above the maximum (no later change of the instance could be recorded)."""
    if memory_bounds_crossed(beparams):
        raise OpPrereqError(
            f"The minimum memory ({beparams['minmem']} MiB) of instance {name} must not"
            f" exceed its maximum memory ({beparams['maxmem']} MiB)",
            ECODE_INVAL,
        )


def check_kernel_files(rpc: NodeOps, node: Node, cluster: Cluster, instance: Instance) -> None:
    """ECODE_ENVIRON unless the kernel and initrd ``instance`` boots (``kernel_path``,
    ``initrd_path``; none when it boots from its disk) are files on ``node``, as Ganeti's
    hypervisor checks them on the instance's nodes: else its every start fails there."""
    hvp = cluster.fill_hvparams(instance)
    wanted = [str(hvp.get(key) or "") for key in ("kernel_path", "initrd_path")]
    wanted = [path for path in wanted if path]
    if not wanted:
        return
    usage = node_call(rpc.disk_usage, node, wanted).Raise(
        f"Cannot check the kernel files on {node.name}", prereq=True, ecode=ECODE_ENVIRON
    )
    missing = [u["path"] for u in usage if not u["exists"]]
    if missing:
        raise OpPrereqError(
            f"Instance {instance.name} boots {', '.join(missing)}, missing on node"
            f" {node.name}; give the kernel with -H kernel_path=...,initrd_path=... (or"
            " kernel_path= empty to boot from the disk)",
            ECODE_ENVIRON,
        )


def check_node_cpus(facts: NodeFacts, vcpus: int, reason: str) -> None:
    """ECODE_NORES when ``vcpus`` exceeds the node's physical CPUs (as Ganeti's CPU check).

    A guest with more vCPUs than its node has CPUs either fails to start
    (beyond the hypervisor's maximum) or runs its vCPUs in turn on fewer
    CPUs; neither is what was asked. A node that does not report its CPUs
    (0) is not judged.
    """
    if facts.cpu_count and vcpus > facts.cpu_count:
        raise OpPrereqError(
            f"Node {facts.name} has {facts.cpu_count} physical CPUs, but {reason} needs"
            f" {vcpus} (backend parameter vcpus); give at most {facts.cpu_count}",
            ECODE_NORES,
        )


def check_node_can_start(
    rpc: NodeOps,
    node: Node,
    cluster: Cluster,
    instance: Instance,
    freed: int = 0,
    beparams: Mapping[str, Any] | None = None,
) -> None:
    """What starting ``instance`` on ``node`` needs: its memory free (ECODE_NORES), as
    many CPUs as its vCPUs, and its NICs' bridges (ECODE_ENVIRON, as Ganeti's
    CheckInstanceBridgesExist); ECODE_ENVIRON if the node cannot tell.

    ``freed``: the MiB the instance gives back on the node before it starts
    (a full reboot: what it runs with, which a start with temporary
    parameters or a modification since may have made less than it needs).
    ``beparams``: a start's temporary backend parameters over the instance's.
    """
    reason = f"starting instance {instance.name}"
    facts = node_call(rpc.node_info, node).Raise(
        f"Can't compute free memory on node {node.name}", prereq=True, ecode=ECODE_ENVIRON
    )
    be = cluster.fill_beparams(instance, beparams)
    needed = max(0, int(be["maxmem"]) - freed)
    if facts.memory_free < needed:
        beyond = f" beyond the {freed} MiB it runs with" if freed else ""
        raise OpPrereqError(
            f"Not enough memory on node {node.name} for {reason}: needed {needed} MiB"
            f"{beyond}, available {facts.memory_free} MiB",
            ECODE_NORES,
        )
    check_node_cpus(facts, int(be["vcpus"]), reason)
    missing = missing_bridges(cluster, instance, facts)
    if missing:
        raise OpPrereqError(
            f"Missing bridges {', '.join(missing)} on node {node.name} for {reason}",
            ECODE_ENVIRON,
        )


def instance_domain(rpc: NodeOps, node: Node, name: str) -> DomainInfo | None:
    """What the node's libvirt says about the instance (ECODE_ENVIRON on failure)."""
    return node_call(rpc.instance_info, node, name).Raise(
        f"Error checking node {node.name}", prereq=True, ecode=ECODE_ENVIRON
    )


def running_elsewhere(
    rpc: NodeOps,
    data: ConfigData,
    name: str,
    primary: str,
    warn_fn: FeedbackFn,
    skip: Collection[str] = (),
) -> list[str]:
    """The nodes but ``primary`` where a domain ``name`` runs (or is paused), sorted.

    Offline and non-vm_capable nodes are skipped, so are ``skip`` (asked
    already by the caller); an online node that cannot be asked only
    produces a warning through ``warn_fn``.
    """
    others = [
        node
        for node_name, node in sorted(data.nodes.items())
        if node_name != primary and node_name not in skip and not node.offline and node.vm_capable
    ]
    found, unasked = instance_domains(rpc, others, name)
    for node_name, why in sorted(unasked.items()):
        warn_fn(f"Could not check whether {name} runs on node {node_name}: {why}")
    return [node_name for node_name, dom in sorted(found.items()) if domain_active(dom)]


def check_not_running_elsewhere(
    rpc: NodeOps,
    data: ConfigData,
    instance: Instance,
    warn_fn: FeedbackFn,
    refusing: str = "to start a second copy",
    skip: Collection[str] = (),
) -> None:
    """ECODE_STATE if the instance runs on a node other than its primary (ERROR_wrongnode).

    ``refusing``: what the message says is refused; ``skip``: see ``running_elsewhere``.
    """
    elsewhere = running_elsewhere(rpc, data, instance.name, instance.primary_node, warn_fn, skip)
    if elsewhere:
        raise OpPrereqError(
            f"Instance {instance.name} is running on node(s) {', '.join(elsewhere)}, not"
            f" (only) on its primary node {instance.primary_node}; refusing"
            f" {refusing}. Run 'gnt-lv instance migrate --cleanup {instance.name}' to"
            " resolve it, or 'gnt-lv cluster verify' to see what runs where",
            ECODE_STATE,
        )


# ---------------------------------------------------------------- lifecycle


class InstanceLU(LogicalUnit):
    """Base for LUs on one existing instance: locks it and its primary node."""

    HTYPE = constants.HTYPE_INSTANCE
    REQ_BGL = False

    def ExpandNames(self) -> None:
        """Lock the instance, then its nodes (node and node-res)."""
        self.op.instance_name = expand_instance(self.cfg, self.op.instance_name)
        self.needed_locks = {
            locking.LEVEL_INSTANCE: [self.op.instance_name],
            locking.LEVEL_NODE: [],
            locking.LEVEL_NODE_RES: [],
        }
        self.recalculate_locks[locking.LEVEL_NODE] = LOCKS_REPLACE
        self.recalculate_locks[locking.LEVEL_NODE_RES] = LOCKS_REPLACE

    def DeclareLocks(self, level: int) -> None:
        """Nodes of the locked instance."""
        if level in (locking.LEVEL_NODE, locking.LEVEL_NODE_RES):
            self._LockInstancesNodes(primary_only=True, level=level)

    def _load(self) -> None:
        self.cluster: Cluster = self.cfg.get_cluster()
        self.instance: Instance = get_instance(self.cfg, self.op.instance_name)
        self.pnode: Node = get_node(self.cfg, self.instance.primary_node)

    def BuildHooksEnv(self) -> dict[str, Any]:
        """Instance keys."""
        env: dict[str, Any] = {"OP_TARGET": self.instance.name}
        env.update(instance_hook_env(self.cluster, self.instance))
        return env

    def BuildHooksNodes(self) -> tuple[list[str], list[str]]:
        """Master and primary node."""
        nodes = list(dict.fromkeys([self.cluster.master_node, self.pnode.name]))
        return nodes, nodes

    def _mark(self, state: str) -> None:
        """Record the admin state; the post hooks see the instance as recorded."""
        self.cfg.set_admin_state(self.instance.name, state)
        self.instance = get_instance(self.cfg, self.instance.name)


@register_lu(OpInstanceStartup)
class LUInstanceStartup(InstanceLU):
    """Start an instance (if it is not running) and mark it up.

    As Ganeti's, a start may take temporary parameters (``hvparams``,
    ``beparams``: ``-H``/``-B``) that override the instance's for this start
    only, and may leave the guest paused (``startup_paused``) until its
    console resumes it. The configuration keeps the instance's own parameters,
    and so does the domain defined on the node: the next start from them (a
    shutdown and startup, a full reboot, a failover) drops the temporary ones.
    A migration takes the running guest, and them, along (its target defines
    the domain as it runs).
    """

    HPATH = constants.HPATH_INSTANCE_START

    def CheckArguments(self) -> None:
        """The temporary parameters: known, of their types, none set back to a default."""
        self.beparams = coerce_beparams(self.op.beparams, dict(constants.BEC_DEFAULTS))
        self.hvparams = coerce_hvparams(self.op.hvparams)
        resets = sorted(k for k, v in {**self.hvparams, **self.beparams}.items() if v is None)
        if resets:
            raise OpPrereqError(
                f"Temporary parameters cannot be set back to their default: {', '.join(resets)}",
                ECODE_INVAL,
            )
        refuse_cluster_wide(self.hvparams)
        for_migrations = sorted(k for k in self.hvparams if k.startswith("migration_"))
        if for_migrations:
            raise OpPrereqError(
                f"{', '.join(for_migrations)} act on migrations, not on a start: give them to"
                " instance modify (or to a migration)",
                ECODE_INVAL,
            )

    def BuildHooksEnv(self) -> dict[str, Any]:
        """Instance keys plus FORCE."""
        env = super().BuildHooksEnv()
        env["FORCE"] = self.op.force
        return env

    def CheckPrereq(self) -> None:
        """Primary online (or ignored), enough free memory (with the temporary parameters)."""
        self._load()
        self.primary_offline = self.pnode.offline
        self.already_running = False
        if self.pnode.offline and not self.op.ignore_offline_nodes:
            raise OpPrereqError(
                f"Cannot start instance {self.instance.name}: its primary node "
                f"{self.pnode.name} is offline",
                ECODE_STATE,
            )
        # also with the primary offline: marked up, it must not run elsewhere
        check_not_running_elsewhere(self.rpc, self.cfg.snapshot(), self.instance, self.LogWarning)
        if self.pnode.offline:
            self._unused_start_options("its primary node is offline")
            return
        dom = instance_domain(self.rpc, self.pnode, self.instance.name)
        self.already_running = domain_active(dom)
        if self.already_running:
            self._unused_start_options("it runs already")
        else:
            hvp = self.cluster.fill_hvparams(self.instance, self.hvparams)
            if self.op.startup_paused and not hvp.get("serial_console", True):
                raise OpPrereqError(
                    f"A paused start of instance {self.instance.name} needs its serial console"
                    " (serial_console), which resumes it",
                    ECODE_INVAL,
                )
            if {"kernel_path", "initrd_path"} & set(self.hvparams):  # a kernel for this start
                booting = dataclasses.replace(
                    self.instance, hvparams={**self.instance.hvparams, **self.hvparams}
                )
                check_kernel_files(self.rpc, self.pnode, self.cluster, booting)
            check_node_can_start(
                self.rpc, self.pnode, self.cluster, self.instance, beparams=self.beparams
            )

    def _unused_start_options(self, why: str) -> None:
        """Warn that the temporary parameters and the paused start do nothing this time."""
        unused = ["the temporary parameters"] if self.hvparams or self.beparams else []
        unused += ["the paused start"] if self.op.startup_paused else []
        if unused:
            self.LogWarning(f"{' and '.join(unused).capitalize()} ignored: {why}")

    def Exec(self, feedback_fn: FeedbackFn) -> None:
        """Repair the disk chain, start, then record the admin state."""
        if self.primary_offline:
            feedback_fn("Primary node offline, marked instance as started")
        else:
            repair_disk_chain(self, self.pnode, self.cluster, self.instance)
            if self.already_running:
                feedback_fn(f"Instance {self.instance.name} is already running")
            else:
                node_call(
                    self.rpc.start_instance,
                    self.pnode,
                    self.cluster,
                    self.instance,
                    hvparams=self.hvparams,
                    beparams=self.beparams,
                    paused=self.op.startup_paused,
                ).Raise(f"Could not start instance {self.instance.name}")
                if self.op.startup_paused:
                    feedback_fn(
                        f"Instance {self.instance.name} is paused; its console"
                        f" (gnt-lv instance console {self.instance.name}) resumes it"
                    )
        if not self.op.no_remember:
            self._mark(constants.ADMINST_UP)


@register_lu(OpInstanceShutdown)
class LUInstanceShutdown(InstanceLU):
    """Stop an instance (ACPI, forced after the timeout) and mark it down."""

    HPATH = constants.HPATH_INSTANCE_STOP

    def ExpandNames(self) -> None:
        """The instance alone, as Ganeti's: a stop takes nothing from its node, so the
        other instances' operations there do not wait out its timeout."""
        self.op.instance_name = expand_instance(self.cfg, self.op.instance_name)
        self.needed_locks = {locking.LEVEL_INSTANCE: [self.op.instance_name]}

    def CheckArguments(self) -> None:
        """Warn, as Ganeti does, of an admin state source that no_remember makes moot."""
        if self.op.no_remember and self.op.admin_state_source is not None:
            self.LogWarning(
                "'admin_state_source' is ignored: with 'no_remember' the instance's"
                " admin state is not recorded"
            )

    def CheckPrereq(self) -> None:
        """Primary online (or ignored); the instance runs on no other node (the
        primary's shutdown would leave it running there, marked down)."""
        self._load()
        if self.op.force:  # Ganeti's words; no instance here is offline
            self.LogWarning("Ignoring offline instance check")
        self.primary_offline = self.pnode.offline
        if self.pnode.offline and not self.op.ignore_offline_nodes:
            raise OpPrereqError(
                f"Cannot shut down instance {self.instance.name}: its primary node "
                f"{self.pnode.name} is offline",
                ECODE_STATE,
            )
        check_not_running_elsewhere(
            self.rpc,
            self.cfg.snapshot(),
            self.instance,
            self.LogWarning,
            "to mark it down while it runs there",
        )

    def BuildHooksEnv(self) -> dict[str, Any]:
        """Instance keys plus TIMEOUT."""
        env = super().BuildHooksEnv()
        env["TIMEOUT"] = self.op.timeout
        return env

    def Exec(self, feedback_fn: FeedbackFn) -> None:
        """Repair the disk chain, shut down, then record the admin state."""
        if self.primary_offline:
            feedback_fn("Primary node offline, marked instance as stopped")
        else:
            repair_disk_chain(self, self.pnode, self.cluster, self.instance)
            clean = node_call(
                self.rpc.shutdown_instance, self.pnode, self.instance, float(self.op.timeout)
            ).Raise(f"Could not shutdown instance {self.instance.name}")
            if clean is False:
                self.LogWarning(
                    f"Instance {self.instance.name} did not shut down within "
                    f"{self.op.timeout} s and was forcibly stopped (at once when paused"
                    " or without ACPI)"
                )
        if not self.op.no_remember:
            self._mark(constants.ADMINST_DOWN)


@register_lu(OpInstanceReboot)
class LUInstanceReboot(InstanceLU):
    """Reboot: soft in the guest; hard (Ganeti's: a clean shutdown and a start on the
    node) and full stop and start it; a stopped instance is started."""

    HPATH = constants.HPATH_INSTANCE_REBOOT

    def CheckPrereq(self) -> None:
        """Primary online; what a start needs when the instance is started (not
        running, or a hard or full reboot)."""
        self._load()
        check_node_online(self.cfg, self.pnode.name, "Instance primary node offline:")
        dom = instance_domain(self.rpc, self.pnode, self.instance.name)
        self.running = domain_active(dom)
        check_not_running_elsewhere(self.rpc, self.cfg.snapshot(), self.instance, self.LogWarning)
        if not self.running or self.op.reboot_type != "soft":
            freed = dom.memory if dom is not None and self.running else 0
            check_node_can_start(self.rpc, self.pnode, self.cluster, self.instance, freed=freed)

    def BuildHooksEnv(self) -> dict[str, Any]:
        """Instance keys plus REBOOT_TYPE and SHUTDOWN_TIMEOUT."""
        env = super().BuildHooksEnv()
        env["REBOOT_TYPE"] = self.op.reboot_type
        env["SHUTDOWN_TIMEOUT"] = self.op.shutdown_timeout
        env["IGNORE_SECONDARIES"] = self.op.ignore_secondaries
        return env

    def Exec(self, feedback_fn: FeedbackFn) -> None:
        """Repair the disk chain, reboot (or start) and mark the instance up."""
        name = self.instance.name
        repair_disk_chain(self, self.pnode, self.cluster, self.instance)
        if self.running:
            node_call(
                self.rpc.reboot_instance,
                self.pnode,
                self.cluster,
                self.instance,
                self.op.reboot_type,
                float(self.op.shutdown_timeout),
            ).Raise(f"Could not reboot instance {name}")
        else:
            feedback_fn(f"Instance {name} was not running, starting it")
            node_call(self.rpc.start_instance, self.pnode, self.cluster, self.instance).Raise(
                f"Could not start instance {name} for a full reboot"
            )
        # recorded up; as in Ganeti, the post hooks see the instance as it was
        # before (a stopped instance rebooted: status down)
        self.cfg.set_admin_state(name, constants.ADMINST_UP)


@register_lu(OpInstanceRemove)
class LUInstanceRemove(InstanceLU):
    """Remove an instance: stop and undefine the domain, delete disks, drop config."""

    HPATH = constants.HPATH_INSTANCE_REMOVE

    def CheckPrereq(self) -> None:
        """An offline primary needs ignore_failures (its disks stay behind); the
        instance runs on no other node (whose guest would keep running on disks
        removed under it), even with ignore_failures."""
        self._load()
        if self.pnode.offline and not self.op.ignore_failures:
            raise OpPrereqError(
                f"Primary node {self.pnode.name} of instance {self.instance.name} is offline; "
                "use ignore_failures to remove the instance anyway",
                ECODE_STATE,
            )
        check_not_running_elsewhere(
            self.rpc, self.cfg.snapshot(), self.instance, self.LogWarning, "to remove it"
        )

    def BuildHooksEnv(self) -> dict[str, Any]:
        """Instance keys plus SHUTDOWN_TIMEOUT."""
        env = super().BuildHooksEnv()
        env["SHUTDOWN_TIMEOUT"] = self.op.shutdown_timeout
        return env

    def BuildHooksNodes(self) -> tuple[list[str], list[str]]:
        """Pre: master; post: master and primary."""
        master = self.cluster.master_node
        return [master], list(dict.fromkeys([master, self.pnode.name]))

    def Exec(self, feedback_fn: FeedbackFn) -> None:
        """Repair, stop, undefine, remove disks (failures fatal unless ignored), drop config."""
        inst, node = self.instance, self.pnode
        if not node.offline:
            repair_disk_chain(
                self, node, self.cluster, inst, ignore_failures=self.op.ignore_failures
            )
        feedback_fn(f"* shutting down instance {inst.name} on node {node.name}")
        removal_step(
            node_call(self.rpc.shutdown_instance, node, inst, float(self.op.shutdown_timeout)),
            f"Could not shutdown instance {inst.name} on node {node.name}",
            self.op.ignore_failures,
            feedback_fn,
        )
        if inst.admin_state == constants.ADMINST_UP:
            # stopped: a later step that fails leaves the configuration true
            self.cfg.set_admin_state(inst.name, constants.ADMINST_DOWN)
        removal_step(
            node_call(self.rpc.undefine_instance, node, inst.name),
            f"Could not undefine instance {inst.name} on node {node.name}",
            self.op.ignore_failures,
            feedback_fn,
        )
        feedback_fn("* removing instance disks")
        removal_step(
            node_call(self.rpc.remove_disks, node, self.cluster, inst),
            f"Could not remove the disks of instance {inst.name}",
            self.op.ignore_failures,
            feedback_fn,
        )
        feedback_fn(f"* removing instance {inst.name} from the configuration")
        self.cfg.remove_instance(inst.name)
