"""Instance creation: LUInstanceCreate and its creation modes.

``LUInstanceCreate`` handles ``mode="create"``; another mode (``import``)
plugs in with ``register_create_mode(name, handler_cls)``: the handler adds
locks, checks its prerequisites and fills the disks after they were created.
A name a domain already has (defined on the primary, running elsewhere) is
refused before anything. A cancel request while the disks are filled (an
import's copies) or before the start removes the disks made and records
nothing (``OperationCanceled``); from the start on, the creation finishes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from typing import Any

from ganeti_lv import constants, locking
from ganeti_lv.cmdlib.base import LogicalUnit, register_lu
from ganeti_lv.cmdlib.common import (
    cancel_reason,
    check_node_not_drained,
    check_node_online,
    check_node_vm_capable,
    concurrently,
    expand_node,
    get_node,
    instance_hook_env,
    refuse_cluster_wide,
)
from ganeti_lv.cmdlib.instance import (
    check_kernel_files,
    check_memory_bounds,
    check_node_cpus,
    instance_domain,
    running_elsewhere,
)
from ganeti_lv.cmdlib.instance_nics import (
    check_nics,
    choosing_macs,
    nic_ip,
    take_mac,
    used_macs,
)
from ganeti_lv.cmdlib.migration_checks import missing_bridges
from ganeti_lv.errors import (
    ECODE_ENVIRON,
    ECODE_EXISTS,
    ECODE_INVAL,
    ECODE_NORES,
    ECODE_NOTUNIQUE,
    OperationCanceled,
    OpExecError,
    OpPrereqError,
)
from ganeti_lv.hypervisor.base import NodeFacts
from ganeti_lv.names import check_device_names, device_name
from ganeti_lv.node.transport import node_call
from ganeti_lv.objects import ConfigData, Disk, Instance, Nic, Node, disk_dir
from ganeti_lv.opcodes import OpInstanceCreate
from ganeti_lv.units import coerce_beparams, coerce_hvparams, parse_size, without_resets

FeedbackFn = Callable[[str], None]

MIB = 1024 * 1024


class CreateModeHandler:
    """How one creation mode prepares an instance; ``create`` needs nothing extra.

    Subclasses (e.g. import from an export) override the hooks; ``lu`` is the
    LUInstanceCreate running them.
    """

    def __init__(self, lu: LUInstanceCreate) -> None:
        self.lu = lu

    def check_arguments(self) -> None:
        """Parameter checks of the mode."""

    def expand_names(self) -> None:
        """Add locks to ``lu.needed_locks`` (e.g. the source node)."""

    def check_prereq(self) -> None:
        """Check the mode's prerequisites; may adjust ``lu.instance`` (disks, params)."""

    def check_primary(self, node: Node) -> None:
        """Check what the mode needs on the primary ``node`` (given, or one of the
        allocator's candidates, asked at once: change nothing)."""

    def hooks_env(self) -> dict[str, Any]:
        """Extra hook keys."""
        return {}

    def missing_bridges_hint(self) -> str:
        """Added to the error for NIC links missing on the primary node."""
        return ""

    def fill_disks(self, feedback_fn: FeedbackFn) -> None:
        """Put data on the freshly created disks (before the first start)."""


CREATE_MODE_HANDLERS: dict[str, type[CreateModeHandler]] = {"create": CreateModeHandler}


def register_create_mode(mode: str, handler: type[CreateModeHandler]) -> None:
    """Make ``OpInstanceCreate(mode=mode)`` use ``handler``."""
    CREATE_MODE_HANDLERS[mode] = handler


def _build_disks(op_disks: list[dict[str, Any]], template: str, notes: list[str]) -> list[Disk]:
    disks = []
    for idx, spec in enumerate(op_disks):
        unknown = set(spec) - {"size", "mode", "name"}
        if unknown:
            raise OpPrereqError(
                f"Unknown disk parameter(s) {', '.join(sorted(unknown))} for disk {idx}",
                ECODE_INVAL,
            )
        size = spec.get("size")
        if isinstance(size, str):
            size = parse_size(size, f"size of disk {idx}", notes)
        if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
            raise OpPrereqError(f"Invalid size for disk {idx}: {size!r}", ECODE_INVAL)
        mode = spec.get("mode", "rw")
        if mode not in ("rw", "ro"):
            raise OpPrereqError(f"Invalid mode '{mode}' for disk {idx}", ECODE_INVAL)
        # a disk given without a name has none, as in Ganeti (its image file is
        # disk<idx>.img whatever its name)
        name = device_name(spec.get("name"))
        disks.append(Disk(size=size, mode=mode, name=name, dev_type=template))
    return disks


@register_lu(OpInstanceCreate)
class LUInstanceCreate(LogicalUnit):
    """Create an instance: disks on the primary, MACs, config entry, optional start.

    Nothing half-made remains on failure: the disks and the domain created so
    far are removed and the configuration is only written once everything
    else succeeded.
    """

    HPATH = constants.HPATH_INSTANCE_ADD
    HTYPE = constants.HTYPE_INSTANCE
    REQ_BGL = False

    def CheckArguments(self) -> None:
        """Parameter checks: mode, allocator, beparams, hvparams, disks, NICs."""
        handler_cls = CREATE_MODE_HANDLERS.get(self.op.mode)
        if handler_cls is None:
            raise OpPrereqError(f"Creation mode '{self.op.mode}' is not supported", ECODE_INVAL)
        self.handler = handler_cls(self)
        self._choose_allocator()
        notes: list[str] = []
        beparams = coerce_beparams(self.op.beparams, dict(constants.BEC_DEFAULTS), notes)
        self.beparams = without_resets(beparams)
        self.hvparams = without_resets(coerce_hvparams(self.op.hvparams))
        refuse_cluster_wide(self.hvparams)
        check_device_names("disk", [spec.get("name") for spec in self.op.disks])
        self.disks = _build_disks(self.op.disks, self.op.disk_template, notes)
        for note in notes:
            self.LogInfo(note)
        check_nics(self.op.nics)
        check_device_names("NIC", [spec.get("name") for spec in self.op.nics])
        self.handler.check_arguments()

    def _choose_allocator(self) -> None:
        """The primary or an allocator, not both; neither (or Ganeti's ".") is the
        cluster's default allocator, ECODE_INVAL when it has none."""
        if self.op.pnode and self.op.iallocator:
            raise OpPrereqError("Do not specify both, iallocator and node", ECODE_INVAL)
        if self.op.pnode:
            return
        if self.op.iallocator in (None, "", constants.DEFAULT_IALLOCATOR_SHORTCUT):
            default = self.cfg.get_cluster().default_iallocator
            if not default:
                raise OpPrereqError(
                    "Give the primary node (pnode) or an instance allocator (iallocator):"
                    " the cluster has no default allocator ('gnt-lv cluster modify"
                    " --default-iallocator hail' sets one)",
                    ECODE_INVAL,
                )
            self.op.iallocator = default

    def ExpandNames(self) -> None:
        """The name must be new; lock it, the primary node and its resources (with an
        allocator every node's, until it has chosen)."""
        name = self.op.instance_name
        if self.cfg.get_instance(name) is not None:
            raise OpPrereqError(f"Instance '{name}' is already in the cluster", ECODE_EXISTS)
        self.needed_locks = {
            locking.LEVEL_INSTANCE: [name],
            locking.LEVEL_NODE: locking.ALL_SET,
            locking.LEVEL_NODE_RES: locking.ALL_SET,
        }
        if not self.op.iallocator:
            self.op.pnode = expand_node(self.cfg, self.op.pnode)
            self.needed_locks[locking.LEVEL_NODE] = [self.op.pnode]
            self.needed_locks[locking.LEVEL_NODE_RES] = [self.op.pnode]
        self.handler.expand_names()

    def CheckPrereq(self) -> None:
        """Node usable, memory and bridges available, MACs unique; build the instance."""
        data = self.cfg.snapshot()  # read-only: lookups
        self.cluster = data.cluster.copy()
        if self.op.instance_name in data.instances:
            raise OpPrereqError(
                f"Instance '{self.op.instance_name}' is already in the cluster", ECODE_EXISTS
            )
        self.instance = Instance(
            name=self.op.instance_name,
            primary_node=self.op.pnode or "",
            disk_template=self.op.disk_template,
            disks=self.disks,
            nics=self._build_nics(data),
            beparams=self.beparams,
            hvparams=self.hvparams,
            os=self.op.os_type,
            tags=list(dict.fromkeys(self.op.tags)),  # a set, as in Ganeti
            admin_state=constants.ADMINST_UP if self.op.start else constants.ADMINST_DOWN,
        )
        self.handler.check_prereq()  # an import takes the export's parameters
        check_memory_bounds(self.cluster.fill_beparams(self.instance), self.instance.name)
        if self.op.iallocator:
            self.op.pnode = self._allocate()
        else:
            self._check_primary(self.op.pnode)
        self.pnode = get_node(self.cfg, self.op.pnode)
        self.instance.primary_node = self.pnode.name
        self._check_no_domain(data)
        self.dry_run_result = [self.instance.primary_node]

    def _check_primary(self, name: str) -> NodeFacts:
        """``name`` can be the primary: online, not drained, vm-capable, room; its facts.

        Changes nothing of the LU: the allocator asks every node at once.
        """
        check_node_online(self.cfg, name, "Cannot use offline primary node")
        check_node_not_drained(self.cfg, name)
        check_node_vm_capable(self.cfg, name)
        node = get_node(self.cfg, name)
        self.handler.check_primary(node)
        check_kernel_files(self.rpc, node, self.cluster, self.instance)
        return self._check_node_resources(node)

    def _allocate(self) -> str:
        """The built-in allocator (whatever ``iallocator`` names): of the nodes that can
        be the primary (all asked at once), the one with the most free memory; the
        others' locks go. ECODE_NORES, with each node's reason, when none can."""

        def fits(name: str) -> tuple[NodeFacts | None, str]:
            try:
                return self._check_primary(name), ""
            except OpPrereqError as err:
                return None, f"{name}: {err.msg}"

        names = sorted(self.cfg.node_names())  # every one locked
        answers = concurrently([partial(fits, name) for name in names])
        candidates = [
            (facts.memory_free, name)
            for name, (facts, _) in zip(names, answers, strict=True)
            if facts is not None
        ]
        if not candidates:
            raise OpPrereqError(
                f"No node can be the primary of instance {self.op.instance_name}: "
                + "; ".join([why for _, why in answers] or ["no node"]),
                ECODE_NORES,
            )
        chosen = min(candidates, key=lambda c: (-c[0], c[1]))[1]
        self.LogInfo(f"Selected node {chosen} as primary (most free memory)")
        keep = [chosen, *([self.op.src_node] if self.op.src_node else [])]
        self.ReleaseLocks(locking.LEVEL_NODE, keep=keep)
        self.ReleaseLocks(locking.LEVEL_NODE_RES, keep=[chosen])
        return chosen

    def _check_no_domain(self, data: ConfigData) -> None:
        """ECODE_EXISTS when a domain of the new name is defined on the primary or runs
        on another node: not this cluster's (a leftover, another tool's), it would be
        taken over, and removed by the create's clean-up after a failure."""
        name = self.instance.name
        if instance_domain(self.rpc, self.pnode, name) is not None:
            raise OpPrereqError(
                f"A domain named {name} is already defined on node {self.pnode.name} and is"
                " no instance of this cluster: remove it (virsh undefine) or choose another"
                " name",
                ECODE_EXISTS,
            )
        running = running_elsewhere(self.rpc, data, name, self.pnode.name, self.LogWarning)
        if running:
            raise OpPrereqError(
                f"A domain named {name} runs on node(s) {', '.join(running)} and is no"
                " instance of this cluster: stop and remove it there, or choose another name",
                ECODE_EXISTS,
            )

    def _build_nics(self, data: ConfigData) -> list[Nic]:
        """The NICs, each with its MAC address (reserved for this job: ``choosing_macs``)."""
        nics = []
        with choosing_macs(self, data) as used:
            for idx, spec in enumerate(self.op.nics):
                mac = take_mac(spec.get("mac"), used)
                if mac is None:
                    raise OpPrereqError(
                        f"MAC address {str(spec['mac']).lower()} of NIC {idx} is already in use",
                        ECODE_NOTUNIQUE,
                    )
                nics.append(
                    Nic(
                        mac=mac,
                        ip=nic_ip(spec),
                        link=spec.get("link") or data.cluster.default_bridge,
                        vlan=str(spec.get("vlan") or ""),
                        name=device_name(spec.get("name")),
                    )
                )
        return nics

    def _check_disk_space(self, node: Node) -> None:
        """Room for the disks at their full size in their directory on the primary.

        The images are created sparse, but the guest may fill them: a disk
        that does not fit is refused now rather than failing with ENOSPC
        inside the guest later (Ganeti checks its volume groups the same way).
        """
        directory = disk_dir(self.cluster, self.instance)
        need = sum(int(d.size) for d in self.instance.disks)
        free = node_call(self.rpc.free_space, node, directory).Raise(
            f"Cannot check the free space in {directory} on node {node.name}",
            prereq=True,
            ecode=ECODE_ENVIRON,
        )
        if free // MIB < need:
            sizes = " + ".join(f"{int(d.size)} MiB" for d in self.instance.disks)
            raise OpPrereqError(
                f"Not enough space for the disks of instance {self.instance.name} on node"
                f" {node.name} in {directory}: {need} MiB needed"
                f"{f' ({sizes})' if len(self.instance.disks) > 1 else ''},"
                f" {free // MIB} MiB free",
                ECODE_NORES,
            )

    def _check_node_resources(self, node: Node) -> NodeFacts:
        facts = node_call(self.rpc.node_info, node).Raise(
            f"Cannot get node information from {node.name}",
            prereq=True,
            ecode=ECODE_ENVIRON,
        )
        self._check_disk_space(node)
        missing = missing_bridges(self.cluster, self.instance, facts)
        if missing:
            hint = self.handler.missing_bridges_hint()
            default = self.cluster.default_bridge
            if not hint and default in missing and any(not n.get("link") for n in self.op.nics):
                hint = (
                    f" ({default} is the cluster's default bridge, for NICs given without"
                    " link=: give --net N:link=BRIDGE"
                    + (", or --no-nics)" if self.op.mode == "create" else ")")
                )
            raise OpPrereqError(
                f"Missing bridges {', '.join(missing)} on node {node.name}{hint}",
                ECODE_ENVIRON,
            )
        # refused even with --no-start: the instance could never start on this node
        vcpus = int(self.cluster.fill_beparams(self.instance)["vcpus"])
        check_node_cpus(facts, vcpus, f"instance {self.instance.name}")
        if self.op.start:
            needed = int(self.cluster.fill_beparams(self.instance)["maxmem"])
            if facts.memory_free < needed:
                raise OpPrereqError(
                    f"Not enough memory on node {node.name} for starting instance "
                    f"{self.instance.name}: needed {needed} MiB, available "
                    f"{facts.memory_free} MiB",
                    ECODE_NORES,
                )
        return facts

    def BuildHooksEnv(self) -> dict[str, Any]:
        """Instance keys plus ADD_MODE; INSTANCE_STATUS says whether it is started
        (True/False), as in Ganeti."""
        env: dict[str, Any] = {"OP_TARGET": self.instance.name, "ADD_MODE": self.op.mode}
        env.update(instance_hook_env(self.cluster, self.instance))
        env["INSTANCE_STATUS"] = self.op.start
        env.update(self.handler.hooks_env())
        return env

    def BuildHooksNodes(self) -> tuple[list[str], list[str]]:
        """Master and primary node."""
        nodes = list(dict.fromkeys([self.cluster.master_node, self.pnode.name]))
        return nodes, nodes

    def _rollback(self, feedback_fn: FeedbackFn, started: bool, disks: bool) -> bool:
        """Remove the domain and the disks made so far; whether the disks are gone."""
        if started:
            node_call(self.rpc.undefine_instance, self.pnode, self.instance.name).Warn(
                "Could not remove the domain while cleaning up", feedback_fn
            )
        if not disks:
            return True
        res = node_call(self.rpc.remove_disks, self.pnode, self.cluster, self.instance)
        res.Warn("Could not remove the disks while cleaning up", feedback_fn)
        return res.ok

    def _add_to_config(self) -> None:
        """Record the instance; name and MACs are re-checked under the config lock."""
        inst = self.instance
        inst.ctime = inst.mtime = time.time()
        with self.cfg.update() as data:
            if inst.name in data.instances:
                raise OpExecError(f"Instance '{inst.name}' appeared meanwhile", ECODE_EXISTS)
            clash = {n.mac for n in inst.nics} & used_macs(data)
            if clash:
                raise OpExecError(
                    f"MAC address(es) {', '.join(sorted(clash))} taken meanwhile", ECODE_NOTUNIQUE
                )
            data.instances[inst.name] = inst

    def Exec(self, feedback_fn: FeedbackFn) -> list[str]:
        """Create disks, fill them (mode), start, then record the instance."""
        inst = self.instance
        feedback_fn("* creating instance disks...")
        result = node_call(self.rpc.create_disks, self.pnode, self.cluster, inst)
        if result.fail_msg is not None:
            exists = result.error is not None and result.error.ecode == ECODE_EXISTS
            self._rollback(feedback_fn, started=False, disks=not exists)
            result.Raise(
                f"Could not create the disks of instance {inst.name}",
                ecode=result.error.ecode if result.error is not None else None,
            )
        started = False
        cancel = self.proc.cancel
        try:
            try:
                self.handler.fill_disks(feedback_fn)
                if cancel.is_set():
                    raise OperationCanceled(
                        f"Creation of {inst.name} canceled ({cancel_reason(cancel)}) before"
                        " it was started and recorded"
                    )
            except OperationCanceled as err:
                feedback_fn("* cleaning up after the cancel...")
                removed = self._rollback(feedback_fn, started=False, disks=True)
                where = f"{self.pnode.name}:{disk_dir(self.cluster, inst)}"
                raise OperationCanceled(
                    f"{err}; {where} {'removed' if removed else 'could not be removed'},"
                    f" {inst.name} is not in the configuration"
                ) from err
            if self.op.start:
                feedback_fn("* starting instance...")
                node_call(self.rpc.start_instance, self.pnode, self.cluster, inst).Raise(
                    f"Could not start instance {inst.name}"
                )
                started = True
            self._add_to_config()
        except OperationCanceled:
            raise
        except BaseException:
            feedback_fn("* cleaning up after the failure...")
            self._rollback(feedback_fn, started=started or self.op.start, disks=True)
            raise
        # Ganeti's result: the names of the instance's nodes (no secondaries here)
        return [inst.primary_node]
