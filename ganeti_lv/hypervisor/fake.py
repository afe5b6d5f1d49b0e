"""FakeNodeOps: an in-memory NodeOps for fast unit tests.

Every node has facts (memory, versions, bridges), domains (name ->
DomainInfo) and disk files (paths). Every call is recorded in ``calls`` as
``Call(method, node, args)``. Failures are injected per (method, node) with
``fail(...)``, a whole node is made unreachable with ``set_unreachable``.
Hooks return what ``hook_results`` says for (node, hooks_dir), or what
``hooks_fn(node, hooks_dir, env, timeout)`` returns when set. Every job's
session is kept in ``sessions`` (a ``FakeSession`` recording the work
begun ahead and whether the job closed it).

Example::

    ops = FakeNodeOps()
    ops.add_node("node1", memory_total=4096)
    ops.fail("start_instance", "node1", "no memory")
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ganeti_lv import constants, objects
from ganeti_lv.cancel import Cancellation
from ganeti_lv.errors import HypervisorError, InstanceNotFound, NodeError, NodeUnreachable
from ganeti_lv.hypervisor.base import CopyAhead, DomainInfo, NodeFacts, NodeOps, NodeSession
from ganeti_lv.hypervisor.fake_export import FakeExportOps
from ganeti_lv.hypervisor.migration_types import (
    MigrationFailed,
    MigrationParams,
    MigrationProgress,
    MigrationStats,
)
from ganeti_lv.node.transport import CommandResult, HookScriptResult
from ganeti_lv.objects import Cluster, Instance, Node
from ganeti_lv.pki import NodeCredentials

# the files of an instance's disk directory that remove_disks removes (its disks')
_DISK_FILE = re.compile(r"disk[0-9][^/]*\.img(\.[^/]*)?")

HooksFn = Callable[[str, str, dict[str, str], float], list[HookScriptResult]]
CommandFn = Callable[[str, list[str]], CommandResult]


@dataclass
class Call:
    """One recorded call: public method name, node name and the other arguments."""

    method: str
    node: str
    args: tuple[Any, ...] = ()


class FakeSession(NodeSession):
    """A job's session: records what was begun ahead (``events``) and ``closed``."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []
        self.closed = False

    def prewarm(self, nodes: Sequence[Node]) -> None:
        """Record ("prewarm", [node names])."""
        self.events.append(("prewarm", [n.name for n in nodes]))

    def prestart_copies(self, copies: Sequence[CopyAhead]) -> None:
        """Record ("prestart", copy) for each copy."""
        self.events.extend(("prestart", copy) for copy in copies)

    def close(self) -> None:
        """Record the close."""
        self.events.append(("close", None))
        self.closed = True


@dataclass
class _Failure:
    error: NodeError
    times: int | None  # None: forever


@dataclass
class FakeNode:
    """The in-memory state of one fake node."""

    facts: NodeFacts
    domains: dict[str, DomainInfo] = field(default_factory=dict)
    files: dict[str, int] = field(default_factory=dict)  # path -> size in MiB


class FakeNodeOps(FakeExportOps, NodeOps):
    """In-memory node operations; see the module docstring."""

    def __init__(self) -> None:
        self.nodes: dict[str, FakeNode] = {}
        self.calls: list[Call] = []
        self.failures: dict[tuple[str, str], _Failure] = {}
        self.unreachable: set[str] = set()
        self.hook_results: dict[tuple[str, str], list[HookScriptResult]] = {}
        self.hooks_fn: HooksFn | None = None
        self.command_fn: CommandFn | None = None
        self.closed = False
        self.sessions: list[FakeSession] = []
        self.prewarmed: list[list[str]] = []
        self._lock = threading.Lock()
        self._init_export_state()
        # migration (issue 4): progress reports fed to progress_fn, CPU
        # comparison per target node, paths present on every node
        self.migration_reports: list[MigrationProgress] = []
        self.migration_stats = MigrationStats(total_time=1.0, downtime_ms=42)
        self.cpu_compat: dict[str, tuple[bool, str]] = {}
        self.present_paths: set[str] = set()
        self.tls_credentials: dict[str, NodeCredentials] = {}
        self.missing_paths: dict[str, set[str]] = {}

    # ------------------------------------------------------------ set-up
    def add_node(
        self,
        name: str,
        memory_total: int = 4096,
        memory_free: int | None = None,
        bridges: list[str] | None = None,
        **facts: Any,
    ) -> FakeNode:
        """Create (or replace) a fake node with the given facts."""
        node = FakeNode(
            NodeFacts(
                name=name,
                memory_total=memory_total,
                memory_free=memory_total if memory_free is None else memory_free,
                cpu_model=facts.pop("cpu_model", "Fake CPU"),
                cpu_arch=facts.pop("cpu_arch", "x86_64"),
                cpu_count=facts.pop("cpu_count", 2),
                libvirt_version=facts.pop("libvirt_version", 9000000),
                qemu_version=facts.pop("qemu_version", 7002000),
                hostname=facts.pop("hostname", name),
                host_uuid=facts.pop("host_uuid", objects.new_uuid()),
                bridges=list(bridges if bridges is not None else ["br0"]),
                **facts,
            )
        )
        self.nodes[name] = node
        return node

    def node(self, name: str) -> FakeNode:
        """The fake node ``name``, created with defaults on first use."""
        if name not in self.nodes:
            self.add_node(name)
        return self.nodes[name]

    def add_domain(
        self,
        node: str,
        name: str,
        state: str = constants.DOMSTATE_RUNNING,
        memory: int = 128,
        vcpus: int = 1,
        **kwargs: Any,
    ) -> DomainInfo:
        """Put a domain on a node (taking its memory when running)."""
        dom = DomainInfo(name=name, state=state, memory=memory, vcpus=vcpus, **kwargs)
        fake = self.node(node)
        fake.domains[name] = dom
        if state == constants.DOMSTATE_RUNNING:
            fake.facts.memory_free -= memory
        return dom

    def remove_domain(self, node: str, name: str) -> None:
        """Drop a domain from a node (giving back its memory when running)."""
        fake = self.node(node)
        dom = fake.domains.pop(name, None)
        if dom is not None and dom.state == constants.DOMSTATE_RUNNING:
            fake.facts.memory_free += dom.memory

    def fail(
        self,
        method: str,
        node: str,
        error: NodeError | str = "injected failure",
        times: int | None = None,
    ) -> None:
        """Make ``method`` on ``node`` fail (``times`` times, or always when None)."""
        err = error if isinstance(error, NodeError) else HypervisorError(error, node=node)
        self.failures[(method, node)] = _Failure(err, times)

    def clear_failures(self) -> None:
        """Remove every injected failure and unreachable node."""
        self.failures.clear()
        self.unreachable.clear()

    def set_unreachable(self, node: str, unreachable: bool = True) -> None:
        """Make every operation on ``node`` fail with NodeUnreachable."""
        if unreachable:
            self.unreachable.add(node)
        else:
            self.unreachable.discard(node)

    def set_hook_results(self, node: str, hooks_dir: str, results: list[HookScriptResult]) -> None:
        """What run_hooks returns for (node, hooks_dir)."""
        self.hook_results[(node, hooks_dir)] = list(results)

    def calls_to(self, method: str, node: str | None = None) -> list[Call]:
        """Recorded calls of ``method`` (on ``node`` when given)."""
        return [c for c in self.calls if c.method == method and (node is None or c.node == node)]

    # ------------------------------------------------------------ plumbing
    def _enter(self, method: str, node: Node, *args: Any) -> FakeNode:
        """Record the call, apply injected failures, return the node's state."""
        with self._lock:
            self.calls.append(Call(method, node.name, args))
            if node.name in self.unreachable:
                raise NodeUnreachable(f"Node {node.name} is unreachable", node=node.name)
            failure = self.failures.get((method, node.name))
            if failure is not None:
                if failure.times is not None:
                    failure.times -= 1
                    if failure.times <= 0:
                        del self.failures[(method, node.name)]
                raise failure.error
            return self.node(node.name)

    @staticmethod
    def _domain(fake: FakeNode, node: Node, name: str) -> DomainInfo:
        dom = fake.domains.get(name)
        if dom is None:
            raise InstanceNotFound(f"Domain {name} not found on {node.name}", node=node.name)
        return dom

    # ------------------------------------------------------------ NodeOps
    def node_info(self, node: Node) -> NodeFacts:
        fake = self._enter("node_info", node)
        facts = NodeFacts(**{**fake.facts.__dict__, "bridges": list(fake.facts.bridges)})
        if node.memory_cap is not None:
            # as libvirt's node_info: the cap counts a paused (arriving) domain's
            # memory too, which the host's free memory does not count yet
            used = facts.memory_total - facts.memory_free
            used += sum(
                d.memory for d in fake.domains.values() if d.state == constants.DOMSTATE_PAUSED
            )
            within_cap = max(0, node.memory_cap - used)
            facts.memory_total = min(facts.memory_total, node.memory_cap)
            facts.memory_free_capped = within_cap <= facts.memory_free
            facts.memory_free = min(facts.memory_free, within_cap)
        return facts

    def instance_list(self, node: Node) -> dict[str, DomainInfo]:
        fake = self._enter("instance_list", node)
        return {name: _copy_domain(d) for name, d in fake.domains.items()}

    def instance_info(self, node: Node, name: str) -> DomainInfo | None:
        fake = self._enter("instance_info", node, name)
        dom = fake.domains.get(name)
        return None if dom is None else _copy_domain(dom)

    def console_command(self, instance_name: str) -> list[str]:
        return ["fake-console", instance_name]

    def create_disks(self, node: Node, cluster: Cluster, instance: Instance) -> None:
        fake = self._enter("create_disks", node, instance.name)
        for idx, disk in enumerate(instance.disks):
            fake.files[objects.disk_path(cluster, instance, idx)] = disk.size

    def remove_disks(self, node: Node, cluster: Cluster, instance: Instance) -> None:
        fake = self._enter("remove_disks", node, instance.name)
        prefix = objects.disk_dir(cluster, instance) + "/"
        for path in [p for p in fake.files if p.startswith(prefix)]:
            if _DISK_FILE.fullmatch(path.removeprefix(prefix)):  # as the node's script
                del fake.files[path]

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
        """Start the domain (paused with ``paused``); the temporary parameters are
        recorded with the call and give the domain its memory and vCPUs."""
        temporary = (dict(hvparams or {}), dict(beparams or {}), paused)
        fake = self._enter("start_instance", node, instance.name, *temporary)
        be = cluster.fill_beparams(instance, beparams)
        memory, vcpus = int(be["maxmem"]), int(be["vcpus"])
        dom = fake.domains.get(instance.name)
        if dom is not None and dom.state in constants.DOMSTATES_ACTIVE:
            return
        if fake.facts.memory_free < memory:
            raise HypervisorError(
                f"Not enough memory on {node.name} to start {instance.name}", node=node.name
            )
        paths = objects.disk_paths(cluster, instance)
        self.remove_domain(node.name, instance.name)
        tty = bool(cluster.fill_hvparams(instance, hvparams).get("serial_console", True))
        self.add_domain(
            node.name,
            instance.name,
            state=constants.DOMSTATE_PAUSED if paused else constants.DOMSTATE_RUNNING,
            memory=memory,
            vcpus=vcpus,
            disk_paths=paths,
            serial_tty=tty,
        )

    def shutdown_instance(self, node: Node, instance: Instance, timeout: float) -> bool:
        fake = self._enter("shutdown_instance", node, instance.name, timeout)
        dom = fake.domains.get(instance.name)
        if dom is None or dom.state not in constants.DOMSTATES_ACTIVE:
            return True
        if dom.state == constants.DOMSTATE_RUNNING:  # memory of running domains only counts
            fake.facts.memory_free += dom.memory
        # a paused one, or one without ACPI, is destroyed (the power button cannot stop it)
        clean = dom.state == constants.DOMSTATE_RUNNING and instance.hvparams.get("acpi", True)
        dom.state = constants.DOMSTATE_SHUTOFF
        return bool(clean)

    def reboot_instance(
        self, node: Node, cluster: Cluster, instance: Instance, reboot_type: str, timeout: float
    ) -> None:
        fake = self._enter("reboot_instance", node, instance.name, reboot_type, timeout)
        dom = self._domain(fake, node, instance.name)
        if reboot_type == "soft" and dom.state != constants.DOMSTATE_RUNNING:
            raise HypervisorError(f"Domain {instance.name} is not running", node=node.name)
        if reboot_type != "soft":  # a shutdown and a start from the configuration
            self.shutdown_instance(node, instance, timeout)
            self.start_instance(node, cluster, instance)
            del self.calls[-2:]  # recorded as reboot_instance

    def undefine_instance(self, node: Node, name: str) -> None:
        self._enter("undefine_instance", node, name)
        self.remove_domain(node.name, name)

    def run_command(
        self, node: Node, argv: list[str], timeout: float | None = None
    ) -> CommandResult:
        self._enter("run_command", node, list(argv), timeout)
        if self.command_fn is not None:
            return self.command_fn(node.name, list(argv))
        return CommandResult(0, "", "")

    def install_tls_credentials(self, node: Node, creds: NodeCredentials) -> bool:
        self._enter("install_tls_credentials", node, creds)
        self.tls_credentials[node.name] = creds
        return True

    def remove_tls_credentials(self, node: Node) -> None:
        self._enter("remove_tls_credentials", node)
        self.tls_credentials.pop(node.name, None)

    def run_hooks(
        self, node: Node, hooks_dir: str, env: dict[str, str], timeout: float
    ) -> list[HookScriptResult]:
        self._enter("run_hooks", node, hooks_dir, dict(env), timeout)
        if self.hooks_fn is not None:
            return self.hooks_fn(node.name, hooks_dir, dict(env), timeout)
        return list(self.hook_results.get((node.name, hooks_dir), []))

    # -- migration (issue 4) ----------------------------------------
    def migrate_instance(
        self,
        source: Node,
        target: Node,
        cluster: Cluster,
        instance: Instance,
        params: MigrationParams,
        progress_fn: Callable[[MigrationProgress], None],
        abort_event: Cancellation,
    ) -> MigrationStats:
        """Move the running domain; reports ``migration_reports``; honours ``abort_event``."""
        fake = self._enter("migrate_instance", source, instance.name, target.name, params)
        dom = fake.domains.get(instance.name)
        if dom is None or dom.state != constants.DOMSTATE_RUNNING:
            raise MigrationFailed(f"Domain {instance.name} is not running", node=source.name)
        dst = self._enter("migrate_incoming", target, instance.name)
        for report in self.migration_reports:
            progress_fn(report)
            if abort_event.is_set():
                reason = abort_event.reason or "abort requested"
                raise MigrationFailed(
                    f"{reason} (migration aborted)", node=source.name, aborted=True
                )
        if params.copy_storage:
            for idx, disk in enumerate(instance.disks):
                dst.files[objects.disk_path(cluster, instance, idx)] = disk.size
        self.remove_domain(source.name, instance.name)
        self.add_domain(target.name, instance.name, memory=dom.memory, vcpus=dom.vcpus)
        return self.migration_stats

    def abort_migration(self, node: Node, name: str) -> bool:
        self._enter("abort_migration", node, name)
        return False

    def compare_cpu(self, target: Node, source: Node, instance: Instance) -> tuple[bool, str]:
        self._enter("compare_cpu", target, source.name, instance.name)
        return self.cpu_compat.get(target.name, (True, "identical"))

    def paths_exist(self, node: Node, paths: list[str]) -> dict[str, bool]:
        fake = self._enter("paths_exist", node, list(paths))
        missing = self.missing_paths.get(node.name, set())
        out = {}
        for path in paths:
            in_files = path in fake.files or any(f.startswith(path + "/") for f in fake.files)
            out[path] = path not in missing and (in_files or path in self.present_paths)
        return out

    # repair_disk_chain, copy_disk and the export operations: FakeExportOps

    def prewarm(self, nodes: Sequence[Node]) -> None:
        """Record the node names in ``prewarmed``."""
        self.prewarmed.append([n.name for n in nodes])

    def open_session(self) -> FakeSession:
        """A new FakeSession, kept in ``sessions``."""
        session = FakeSession()
        with self._lock:
            self.sessions.append(session)
        return session

    def close(self) -> None:
        """Mark closed (nothing to release)."""
        self.closed = True


def _copy_domain(dom: DomainInfo) -> DomainInfo:
    return DomainInfo(
        **{**dom.__dict__, "disk_paths": list(dom.disk_paths), "overlays": list(dom.overlays)}
    )
