"""Cluster LUs: LUClusterSetParams and LUClusterVerify.

Cluster verify is a list of check functions run in order over one snapshot
of the configuration and of what every online node's libvirt reports
(``VerifyData``). Other modules add checks with ``@register_verify_check``;
a check may ``claim_file`` images it explains (an overlay, a copy target) so
the generic "image no instance owns" check, which runs last, skips them.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from ganeti_lv import constants, locking
from ganeti_lv.cmdlib.base import LogicalUnit, NoHooksLU, register_lu
from ganeti_lv.cmdlib.common import live_domains
from ganeti_lv.cmdlib.instance import memory_bounds_crossed
from ganeti_lv.errors import ECODE_INVAL, ECODE_STATE, OpPrereqError
from ganeti_lv.hypervisor.base import DomainInfo, NodeOps
from ganeti_lv.node.transport import node_call
from ganeti_lv.objects import DATA_DIR_FIELDS, Cluster, ConfigData, Node, disk_path
from ganeti_lv.opcodes import OpClusterSetParams, OpClusterVerify
from ganeti_lv.units import apply_changes, coerce_beparams, coerce_hvparams

FeedbackFn = Callable[[str], None]

# the directories the cluster replaces and deletes in by name (an instance's
# export, disk images), and with them the hooks' (read only)
_PATH_FIELDS = ("hooks_base_dir", *DATA_DIR_FIELDS)
_STORAGE_DIRS = {
    "file_storage_dir": constants.DT_FILE,
    "shared_file_storage_dir": constants.DT_SHARED_FILE,
}

# A directory the cluster replaces and deletes in by name may not be, lie in
# or contain one of the system's own trees (Ganeti refuses the same trees for
# file storage), nor be one of the places shared with the rest of the system.
_SYSTEM_TREES = (
    "/boot", "/dev", "/etc", "/home", "/proc", "/root", "/run", "/sys",
    *(f"{prefix}/{sub}" for prefix in ("", "/usr", "/usr/local")
      for sub in ("bin", "lib", "lib32", "lib64", "sbin")),
)  # fmt: skip
_SHARED_DIRS = ("/mnt", "/opt", "/srv", "/tmp", "/var", "/var/lib", "/var/tmp")


def _system_dir_problem(path: str) -> str | None:
    """Why the normalised absolute ``path`` cannot hold exports or disk images, or None."""
    for tree in _SYSTEM_TREES:
        if path == tree:
            return f"it is the system's {tree}"
        if path.startswith(tree + "/"):
            return f"it lies in the system's {tree}"
        if tree.startswith(path.rstrip("/") + "/"):
            return f"it holds the system's {tree}"
    if path in _SHARED_DIRS:
        return "it is a directory shared with the rest of the system"
    return None


# where anyone may write: a script put where the hooks are looked for would run as root
_WORLD_WRITABLE_TREES = ("/tmp", "/var/tmp", "/dev/shm")


def _hooks_dir_problem(path: str) -> str | None:
    """Why the normalised absolute ``path`` cannot hold the hook scripts, or None."""
    for tree in _WORLD_WRITABLE_TREES:
        if path == tree or path.startswith(tree + "/"):
            return f"it lies in {tree}, where anyone may write"
    if path in _SHARED_DIRS:
        return "it is a directory shared with the rest of the system"
    return None


def normalize_cluster_params(fields: dict[str, Any]) -> dict[str, Any]:
    """Validate and convert cluster settings (hvparams/beparams types, absolute dirs,
    data dirs outside the system's own: ``_system_dir_problem``, the hooks' outside
    the trees anyone may write to: ``_hooks_dir_problem``)."""
    out = dict(fields)
    if out.get("hvparams") is not None:
        out["hvparams"] = coerce_hvparams(out["hvparams"])
    if out.get("beparams") is not None:
        out["beparams"] = coerce_beparams(out["beparams"], dict(constants.BEC_DEFAULTS))
    for name in _PATH_FIELDS:
        value = out.get(name)
        if value is None:
            continue
        if not str(value).startswith("/"):
            raise OpPrereqError(f"The {name} must be an absolute path, got '{value}'", ECODE_INVAL)
        # one spelling per directory: paths under it are compared as text
        path = "/" + os.path.normpath(str(value)).lstrip("/")  # POSIX's "//x" too
        problem = (_system_dir_problem if name in DATA_DIR_FIELDS else _hooks_dir_problem)(path)
        if problem is not None:
            raise OpPrereqError(f"The {name} cannot be {path}: {problem}", ECODE_INVAL)
        out[name] = path
    domain_type = out.get("domain_type")
    if domain_type is not None and domain_type not in constants.DOMAIN_TYPES:
        raise OpPrereqError(f"Invalid domain type '{domain_type}'", ECODE_INVAL)
    bridge = out.get("default_bridge")
    if bridge is not None and not constants.BRIDGE_NAME_RE.match(str(bridge)):
        raise OpPrereqError(
            f"Invalid bridge name '{bridge}': at most 15 letters, digits or '_.:-'",
            ECODE_INVAL,
        )
    allocator = out.get("default_iallocator")
    if allocator and not constants.IALLOCATOR_NAME_RE.match(str(allocator)):
        raise OpPrereqError(
            f"Invalid instance allocator name '{allocator}' (\"\" for none)", ECODE_INVAL
        )
    timeout = out.get("hooks_timeout")
    if timeout is not None and not (math.isfinite(timeout) and timeout > 0):
        raise OpPrereqError("The hooks timeout must be a positive number", ECODE_INVAL)
    return out


@register_lu(OpClusterSetParams)
class LUClusterSetParams(LogicalUnit):
    """Change cluster-wide settings (hvparams/beparams are merged, not replaced)."""

    HPATH = constants.HPATH_CLUSTER_MODIFY
    HTYPE = constants.HTYPE_CLUSTER
    REQ_BGL = True

    _FIELDS = (
        "hvparams",
        "beparams",
        *_PATH_FIELDS,
        "compression_tools",
        "domain_type",
        "shared_storage_unsafe_ok",
        "hooks_timeout",
        "default_bridge",
        "default_iallocator",
        "max_parallel_source",
        "max_parallel_target",
    )

    def CheckArguments(self) -> None:
        """Convert and check the given values."""
        given = {f: getattr(self.op, f) for f in self._FIELDS if getattr(self.op, f) is not None}
        self.changes = normalize_cluster_params(given)
        if not self.changes:
            raise OpPrereqError("Please give at least one of the parameters", ECODE_INVAL)

    def ExpandNames(self) -> None:
        """No locks beyond the exclusive BGL."""
        self.needed_locks = {}

    def CheckPrereq(self) -> None:
        """Known compression tools; storage dirs change only while no instance uses them."""
        self.cluster = self.cfg.get_cluster()
        tools = self.changes.get("compression_tools")
        for tool in tools or []:
            if tool not in constants.IEC_ALL:
                raise OpPrereqError(f"Unknown compression tool '{tool}'", ECODE_INVAL)
        if tools is not None and constants.IEC_GZIP not in tools:
            # as Ganeti: its exports and moves may be compressed with gzip
            raise OpPrereqError(
                f"The compression tools must include {constants.IEC_GZIP}", ECODE_INVAL
            )
        self._check_apart_and_memory()
        # an instance's disk paths follow these dirs: moving one under existing
        # instances would point them at images that are not there
        for name, template in _STORAGE_DIRS.items():
            value = self.changes.get(name)
            # one stored before paths were normalised may end in a slash: the same dir
            if value is None or value == os.path.normpath(getattr(self.cluster, name)):
                continue
            instances = self.cfg.snapshot().instances.values()
            users = sorted(i.name for i in instances if i.disk_template == template)
            if users:
                raise OpPrereqError(
                    f"Cannot change the {name}: instances keep their disks in the current"
                    f" one ({', '.join(users)})",
                    ECODE_STATE,
                )

    def _check_apart_and_memory(self) -> None:
        """ECODE_INVAL when a changed data dir would overlap another
        (``Cluster.data_dirs_problem``), or a minimum memory above the maximum for
        itself or for an instance inheriting either (that no change of it could be
        recorded any more). Dirs that already overlap do not stop a change of
        anything else, a third data dir among it."""
        changed = self.cluster.copy()
        self._apply(changed)
        problem = changed.data_dirs_problem()
        if problem is not None and problem != self.cluster.data_dirs_problem():
            raise OpPrereqError(problem, ECODE_INVAL)
        if "beparams" not in self.changes:
            return
        filled = {**constants.BEC_DEFAULTS, **changed.beparams}
        if memory_bounds_crossed(filled):
            raise OpPrereqError(
                f"The cluster's minimum memory ({filled['minmem']} MiB) must not exceed its"
                f" maximum memory ({filled['maxmem']} MiB)",
                ECODE_INVAL,
            )
        instances = self.cfg.snapshot().instances.values()
        broken = sorted(
            i.name for i in instances if memory_bounds_crossed(changed.fill_beparams(i))
        )
        if broken:
            raise OpPrereqError(
                "With these memory defaults the minimum memory would exceed the maximum of"
                f" instance(s) {', '.join(broken)}: change theirs first",
                ECODE_INVAL,
            )

    def BuildHooksEnv(self) -> dict[str, Any]:
        """OP_TARGET plus the new values."""
        env: dict[str, Any] = {"OP_TARGET": self.cluster.name}
        for key, value in self.changes.items():
            if key in ("hvparams", "beparams"):
                for pkey, pval in value.items():
                    env[f"NEW_{key[:2].upper()}_{pkey}"] = pval
            else:
                env[f"NEW_{key.upper()}"] = value
        return env

    def BuildHooksNodes(self) -> tuple[list[str], list[str]]:
        """The master, before and after."""
        return [self.cluster.master_node], [self.cluster.master_node]

    def Exec(self, feedback_fn: FeedbackFn) -> Any:
        """Apply the changes in one configuration update."""
        with self.cfg.update() as data:
            self._apply(data.cluster)
            data.cluster.mtime = time.time()
        return sorted(self.changes)

    def _apply(self, cluster: Cluster) -> None:
        """Make the changes on ``cluster`` (parameter dicts merged, others replaced)."""
        for key, value in self.changes.items():
            if key in ("hvparams", "beparams"):
                value = apply_changes(getattr(cluster, key), value)
            setattr(cluster, key, value)


# ---------------------------------------------------------------- verify

_LIST_FILES_SCRIPT = 'if [ -d "$1" ]; then find "$1" -xdev \\( -type f -o -type l \\) -print; fi'


@dataclass
class VerifyProblem:
    """One finding: ``kind`` is cluster, node or instance; ``item`` its name."""

    code: str
    kind: str
    item: str
    message: str
    severity: str = constants.VERIFY_ERROR

    def format(self) -> str:
        """Ganeti's line: "ERROR: instance web1: message"."""
        return f"{self.severity}: {self.kind} {self.item}: {self.message}"

    def to_dict(self) -> dict[str, str]:
        """JSON form (the LU result is a list of these)."""
        return asdict(self)


SHARED_STORAGE = "(shared)"


@dataclass
class VerifyData:
    """A snapshot for the checks: config, each online node's domains, file listings."""

    config: ConfigData
    rpc: NodeOps
    feedback_fn: FeedbackFn
    domains: dict[str, dict[str, DomainInfo]] = field(default_factory=dict)
    unreachable: dict[str, str] = field(default_factory=dict)
    problems: list[VerifyProblem] = field(default_factory=list)
    claimed: set[tuple[str, str]] = field(default_factory=set)
    _listings: dict[tuple[str, str], list[str] | None] = field(default_factory=dict)

    def report(
        self, code: str, kind: str, item: str, message: str, severity: str = constants.VERIFY_ERROR
    ) -> None:
        """Record a problem and print it as Ganeti does ("  - ERROR: ...")."""
        problem = VerifyProblem(code, kind, item, message, severity)
        self.problems.append(problem)
        self.feedback_fn(f"  - {problem.format()}")

    def online_nodes(self) -> list[Node]:
        """Online nodes, sorted by name."""
        return [n for _, n in sorted(self.config.nodes.items()) if not n.offline]

    def running_on(self, name: str) -> list[str]:
        """Nodes whose libvirt runs (or has paused) a domain called ``name``."""
        return sorted(
            node
            for node, doms in self.domains.items()
            if name in doms and doms[name].state in constants.DOMSTATES_ACTIVE
        )

    def defined_on(self, name: str) -> list[str]:
        """Nodes whose libvirt knows a domain called ``name`` in any state."""
        return sorted(node for node, doms in self.domains.items() if name in doms)

    def list_files(self, node: Node, directory: str) -> list[str] | None:
        """Files under ``directory`` on ``node`` (cached); None when it cannot be listed."""
        key = (node.name, directory)
        if key not in self._listings:
            result = node_call(
                self.rpc.run_command,
                node,
                ["sh", "-c", _LIST_FILES_SCRIPT, "sh", directory],
                timeout=60,
            )
            listing: list[str] | None = None
            payload = result.payload
            if result.fail_msg is None and payload is not None and payload.exit_status == 0:
                listing = sorted(line for line in payload.stdout.splitlines() if line)
            if listing is None:
                why = result.fail_msg or (result.payload.output.strip() if result.payload else "")
                self.report("ENODEFILES", "node", node.name, f"cannot list {directory}: {why}")
            self._listings[key] = listing
        return self._listings[key]

    def claim_file(self, location: str, path: str) -> None:
        """Mark ``path`` (on node ``location`` or SHARED_STORAGE) as explained."""
        self.claimed.add((location, path))

    def is_claimed(self, location: str, path: str) -> bool:
        """True if a check explained this file."""
        return (location, path) in self.claimed


VerifyCheck = Callable[[VerifyData], None]
_VERIFY_CHECKS: list[tuple[int, str, VerifyCheck]] = []


def register_verify_check(order: int = 50) -> Callable[[VerifyCheck], VerifyCheck]:
    """Decorator adding a cluster-verify check; lower ``order`` runs first.

    The built-in checks use 10 (nodes), 20 (instances), 30 (orphan domains)
    and 100 (image files no instance owns; keep claims before it).
    """

    def decorate(fn: VerifyCheck) -> VerifyCheck:
        if all(existing is not fn for _, _, existing in _VERIFY_CHECKS):
            _VERIFY_CHECKS.append((order, fn.__name__, fn))
            _VERIFY_CHECKS.sort(key=lambda item: (item[0], item[1]))
        return fn

    return decorate


def verify_checks() -> list[VerifyCheck]:
    """The registered checks in the order they run."""
    return [fn for _, _, fn in _VERIFY_CHECKS]


@register_verify_check(order=10)
def check_nodes(vd: VerifyData) -> None:
    """Online nodes that cannot be reached."""
    for name, msg in sorted(vd.unreachable.items()):
        vd.report("ENODERPC", "node", name, f"while contacting node: {msg}")


@register_verify_check(order=20)
def check_instances(vd: VerifyData) -> None:
    """Each instance runs on its primary and nowhere else, as its admin state says."""
    for name, inst in sorted(vd.config.instances.items()):
        pnode = vd.config.nodes.get(inst.primary_node)
        running = vd.running_on(name)
        if len(running) > 1:
            vd.report(
                "EINSTANCEMULTIRUNNING",
                "instance",
                name,
                f"instance running on multiple nodes: {', '.join(running)}",
            )
        wrong = [n for n in running if n != inst.primary_node]
        if wrong:
            vd.report(
                "EINSTANCEWRONGNODE",
                "instance",
                name,
                f"instance running on wrong node(s) {', '.join(wrong)} "
                f"(primary node {inst.primary_node})",
            )
        if pnode is None:
            vd.report("EINSTANCEBADNODE", "instance", name, "primary node not in configuration")
            continue
        if pnode.offline:
            if inst.admin_state == constants.ADMINST_UP:  # as Ganeti: a stopped one is fine
                vd.report(
                    "EINSTANCEBADNODE",
                    "instance",
                    name,
                    f"instance lives on offline node {pnode.name}",
                )
            continue
        if pnode.name not in vd.domains:
            continue  # unreachable: already reported for the node
        on_primary = pnode.name in running
        if inst.admin_state == constants.ADMINST_UP and not on_primary:
            vd.report(
                "EINSTANCEDOWN",
                "instance",
                name,
                f"instance not running on its primary node {pnode.name}",
            )
        elif inst.admin_state != constants.ADMINST_UP and on_primary:
            vd.report(
                "EINSTANCEUP",
                "instance",
                name,
                f"instance is marked {inst.admin_state} but running on {pnode.name}",
            )
        stale = [n for n in vd.defined_on(name) if n != inst.primary_node and n not in running]
        if stale:
            vd.report(
                "EINSTANCESTALEDEF",
                "instance",
                name,
                f"instance defined (not running) on non-primary node(s) {', '.join(stale)}",
            )


@register_verify_check(order=30)
def check_orphan_domains(vd: VerifyData) -> None:
    """Domains that no instance of the configuration owns."""
    for node, doms in sorted(vd.domains.items()):
        for dom_name, dom in sorted(doms.items()):
            if dom_name not in vd.config.instances:
                vd.report(
                    "ENODEORPHANINSTANCE",
                    "node",
                    node,
                    f"domain '{dom_name}' ({dom.state}) is not owned by any instance",
                )


def _expected_files(vd: VerifyData) -> tuple[dict[str, set[str]], set[str]]:
    cluster = vd.config.cluster
    per_node: dict[str, set[str]] = {}
    shared: set[str] = set()
    for inst in vd.config.instances.values():
        paths = {disk_path(cluster, inst, idx) for idx in range(len(inst.disks))}
        if inst.disk_template == constants.DT_SHARED_FILE:
            shared |= paths
        else:
            per_node.setdefault(inst.primary_node, set()).update(paths)
    return per_node, shared


@register_verify_check(order=100)
def check_orphan_files(vd: VerifyData) -> None:
    """Image files in the storage dirs that no instance owns (shared dir listed once)."""
    cluster = vd.config.cluster
    per_node, shared = _expected_files(vd)
    reachable = [n for n in vd.online_nodes() if n.name in vd.domains]
    for node in reachable:
        for path in vd.list_files(node, cluster.file_storage_dir) or []:
            if path not in per_node.get(node.name, set()) and not vd.is_claimed(node.name, path):
                vd.report(
                    "ENODEORPHANFILE",
                    "node",
                    node.name,
                    f"file {path} is not owned by any instance",
                )
    if not reachable:
        return
    master = vd.config.nodes.get(cluster.master_node)
    lister = master if master is not None and master in reachable else reachable[0]
    for path in vd.list_files(lister, cluster.shared_file_storage_dir) or []:
        if path not in shared and not vd.is_claimed(SHARED_STORAGE, path):
            vd.report(
                "ECLUSTERORPHANFILE",
                "cluster",
                cluster.name,
                f"shared file {path} is not owned by any instance",
            )


@register_lu(OpClusterVerify)
class LUClusterVerify(NoHooksLU):
    """Compare the configuration with what every online node really runs.

    Result: a list of problem dicts (code, kind, item, message, severity);
    empty when everything matches.
    """

    REQ_BGL = False

    def ExpandNames(self) -> None:
        """Everything, shared: verify changes nothing."""
        self.needed_locks = {
            locking.LEVEL_INSTANCE: locking.ALL_SET,
            locking.LEVEL_NODE: locking.ALL_SET,
        }
        self.share_locks = dict.fromkeys(locking.LEVELS, 1)

    def CheckPrereq(self) -> None:
        """Take the configuration snapshot."""
        self.config = self.cfg.read()

    def _gather(self, vd: VerifyData) -> None:
        vd.domains, vd.unreachable = live_domains(self.rpc, vd.online_nodes())

    def Exec(self, feedback_fn: FeedbackFn) -> list[dict[str, str]]:
        """Run every registered check; return the problems found."""
        vd = VerifyData(config=self.config, rpc=self.rpc, feedback_fn=feedback_fn)
        feedback_fn("* Gathering data from the nodes")
        self._gather(vd)
        feedback_fn("* Verifying nodes, instances, domains and storage")
        for check in verify_checks():
            check(vd)
        if not vd.problems:
            feedback_fn("* No problems found")
        return [p.to_dict() for p in vd.problems]
