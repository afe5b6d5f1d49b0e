"""Helpers shared by the LUs: name expansion, node checks, node calls at once, early work,
instance hook env, and how a disk copy stopped by the job's cancel request is recognised."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar, cast

from ganeti_lv import constants
from ganeti_lv.config import ConfigStore
from ganeti_lv.errors import (
    ECODE_INVAL,
    ECODE_NOENT,
    ECODE_STATE,
    ConfigurationError,
    NodeUnreachable,
    OpPrereqError,
)
from ganeti_lv.hooksmaster import hook_value
from ganeti_lv.node.transport import NodeResult, node_call
from ganeti_lv.objects import Cluster, ConfigData, Instance, Node

if TYPE_CHECKING:
    from ganeti_lv.cancel import Cancellation
    from ganeti_lv.cmdlib.base import LogicalUnit
    from ganeti_lv.hypervisor.base import DomainInfo, NodeOps


T = TypeVar("T")

# the most node calls ``concurrently`` runs at the same time
MAX_CONCURRENT_CALLS = 32


def concurrently(calls: list[Callable[[], T]]) -> list[T]:
    """Run independent node calls at once; their results in the order of ``calls``.

    Each call is a round trip to a node (SSH or libvirt), mostly waiting:
    several nodes (or several channels of one node's connection) answer in
    the time of the slowest instead of the sum; past ``MAX_CONCURRENT_CALLS``
    calls, the rest wait for a free thread. An exception of a call is raised
    once every call has ended.
    """
    if len(calls) <= 1:
        return [call() for call in calls]
    workers = min(len(calls), MAX_CONCURRENT_CALLS)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="node-call") as pool:
        futures = [pool.submit(call) for call in calls]
        return [future.result() for future in futures]


def ask_nodes(
    method: Callable[..., T], nodes: list[Node], *args: Any
) -> tuple[dict[str, T], dict[str, str]]:
    """``method(node, *args)`` on each of ``nodes`` at once (through ``node_call``).

    The answers by node name, and why each of the others failed; both in the
    order of ``nodes``.
    """
    results = concurrently([partial(node_call, method, node, *args) for node in nodes])
    answers: dict[str, T] = {}
    failed: dict[str, str] = {}
    for node, result in zip(nodes, results, strict=True):
        if result.fail_msg is None:  # the payload is what ``method`` returned
            answers[node.name] = cast(T, result.payload)
        else:
            failed[node.name] = result.fail_msg
    return answers, failed


def live_domains(
    rpc: NodeOps, nodes: list[Node]
) -> tuple[dict[str, dict[str, DomainInfo]], dict[str, str]]:
    """The domains of each of ``nodes``, asked at once, and why the others could not answer."""
    answers, failed = ask_nodes(rpc.instance_list, nodes)
    return {name: dict(doms or {}) for name, doms in answers.items()}, failed


def domain_active(dom: DomainInfo | None) -> bool:
    """True for a domain that runs (or is paused): it holds the instance's guest."""
    return dom is not None and dom.state in constants.DOMSTATES_ACTIVE


def instance_domains(
    rpc: NodeOps, nodes: list[Node], name: str
) -> tuple[dict[str, DomainInfo], dict[str, str]]:
    """Domain ``name`` on each of ``nodes`` that has it, asked at once, and why the
    others could not answer (the domain may be there)."""
    answers, failed = ask_nodes(rpc.instance_info, nodes, name)
    found = {node: dom for node, dom in answers.items() if dom is not None}
    return found, failed


def _known(found: T | None, kind: str, name: str) -> T:
    """``found``, or OpPrereqError(ECODE_NOENT) "<kind> '<name>' not known" when None."""
    if found is None:
        raise OpPrereqError(f"{kind} '{name}' not known", ECODE_NOENT)
    return found


def expand_instance(cfg: ConfigStore, name: str) -> str:
    """Full instance name for ``name``; OpPrereqError(ECODE_NOENT) if unknown."""
    return _known(cfg.expand_instance_name(name), "Instance", name)


def expand_node(cfg: ConfigStore, name: str) -> str:
    """Full node name for ``name``; OpPrereqError(ECODE_NOENT) if unknown."""
    return _known(cfg.expand_node_name(name), "Node", name)


def get_node(cfg: ConfigStore, name: str) -> Node:
    """The node ``name``; OpPrereqError(ECODE_NOENT) if unknown."""
    return _known(cfg.get_node(name), "Node", name)


def get_instance(cfg: ConfigStore, name: str) -> Instance:
    """The instance ``name``; OpPrereqError(ECODE_NOENT) if unknown."""
    return _known(cfg.get_instance(name), "Instance", name)


def check_node_online(cfg: ConfigStore, node_name: str, msg: str | None = None) -> None:
    """OpPrereqError(ECODE_STATE) if the node is offline."""
    node = get_node(cfg, node_name)
    if node.offline:
        text = msg or "Can't use offline node"
        raise OpPrereqError(f"{text} {node_name}", ECODE_STATE, node=node_name)


def check_node_not_drained(cfg: ConfigStore, node_name: str) -> None:
    """OpPrereqError(ECODE_STATE) if the node is drained."""
    node = get_node(cfg, node_name)
    if node.drained:
        raise OpPrereqError(f"Can't use drained node {node_name}", ECODE_STATE, node=node_name)


def check_node_vm_capable(cfg: ConfigStore, node_name: str) -> None:
    """OpPrereqError(ECODE_STATE) if the node may not run instances."""
    node = get_node(cfg, node_name)
    if not node.vm_capable:
        raise OpPrereqError(
            f"Can't use non-vm_capable node {node_name}", ECODE_STATE, node=node_name
        )


def check_node_takes_instances(cfg: ConfigStore, node_name: str) -> None:
    """The node is online, not drained and vm_capable (OpPrereqError naming it if not)."""
    check_node_online(cfg, node_name)
    check_node_not_drained(cfg, node_name)
    check_node_vm_capable(cfg, node_name)


def refuse_cluster_wide(hvparams: Mapping[str, Any]) -> None:
    """ECODE_INVAL for hypervisor parameters an instance cannot have its own of
    (``constants.HVC_GLOBALS``, Ganeti's cluster-wide ones)."""
    cluster_wide = sorted(set(hvparams) & set(constants.HVC_GLOBALS))
    if cluster_wide:
        raise OpPrereqError(
            f"The hypervisor parameter(s) {', '.join(cluster_wide)} can only be set for"
            " the whole cluster (gnt-lv cluster modify -H), as in Ganeti",
            ECODE_INVAL,
        )


def instance_nodes_ahead(
    cfg: ConfigStore, instance_name: str, target: str | None
) -> tuple[ConfigData, Instance, list[Node]] | None:
    """For ``EarlyWork``: the configuration, the instance and the nodes its job will use.

    The master (hooks), the instance's primary and ``target`` (when given),
    online ones only; looked up without locks, so only a hint: None when
    anything is unknown.
    """
    try:
        data = cfg.snapshot()  # read-only: lookups
    except ConfigurationError:
        return None
    inst = data.instances.get(instance_name)
    if inst is None:
        return None
    names = dict.fromkeys([data.cluster.master_node, inst.primary_node, target or ""])
    nodes = [data.nodes[n] for n in names if n in data.nodes and not data.nodes[n].offline]
    return data, inst, nodes


def unsettled_state(state: str, node: str) -> str:
    """ "it is paused on NODE" for a guest there but neither running nor stopped, else "".

    Such a guest (paused by its operator, or by qemu when its storage filled
    up) is neither migrated, failed over in a migration's stead (by
    ``--allow-failover`` or a node evacuation) nor exported: a shutdown of a
    paused guest ends in a destroy that loses its memory, and its disks are in
    use. Its operator decides (an explicit failover still shuts it down).
    """
    if state == constants.DOMSTATE_RUNNING or state in constants.DOMSTATES_STOPPED:
        return ""
    how = "in no known state" if state == constants.DOMSTATE_OTHER else state
    return f"it is {how} on {node}"


def repair_disk_chain(
    lu: LogicalUnit,
    node: Node,
    cluster: Cluster,
    instance: Instance,
    ignore_failures: bool = False,
    overlays: list[str] | None = None,
    unreachable_fallback: Node | None = None,
) -> list[str]:
    """Merge snapshot overlays an interrupted export left on ``node``, or refuse.

    Every operation that touches an instance's disks calls this first (under
    the instance lock, so any overlay found is a leftover). Each merged
    overlay is reported as a warning. When the chain cannot be repaired the
    operation stops with OpExecError before anything changed, unless
    ``ignore_failures`` turns the failure into a warning. Returns the
    overlays merged. ``overlays``: the node's answer to ``disk_overlays``
    when the LU asked it under the same lock (e.g. in CheckPrereq), so the
    directory is not listed twice. ``unreachable_fallback``: a node that
    reaches the same (shared) disks, where the chain is repaired instead
    when ``node`` does not answer (with a warning).
    """
    result = node_call(lu.rpc.repair_disk_chain, node, cluster, instance, overlays)
    unreachable = isinstance(result.error, NodeUnreachable)
    if unreachable and unreachable_fallback is not None:
        lu.LogWarning(
            f"Node {node.name} is unreachable: checking the disk chain of instance"
            f" {instance.name} from {unreachable_fallback.name}, which reaches the same disks"
            f" ({node.name} must be down: nothing stops it from using them)"
        )
        return repair_disk_chain(lu, unreachable_fallback, cluster, instance, ignore_failures)
    if unreachable:
        msg = (
            f"Cannot check the disk chain of instance {instance.name}: node {node.name} is"
            " unreachable"
        )
    else:
        msg = (
            f"Disk chain of instance {instance.name} on node {node.name} holds a snapshot"
            " overlay left by an interrupted export that could not be merged"
        )
    if not result.ok and ignore_failures:
        lu.LogWarning(f"{msg}: {result.fail_msg}; going on as failures are ignored")
        return []
    merged = result.Raise(f"{msg}; refusing to touch the disks (the operation goes no further)")
    for overlay in merged or []:
        lu.LogWarning(f"Merged leftover export overlay {overlay} on {node.name}")
    return list(merged or [])


def instance_hook_env(
    cluster: Cluster, instance: Instance, override: dict[str, Any] | None = None
) -> dict[str, str]:
    """Ganeti's INSTANCE_* hook keys for ``instance`` (without the GANETI_ prefix).

    ``override`` may replace beparams/hvparams values (keys as in the params)
    or any resulting key (e.g. ``{"INSTANCE_PRIMARY": ...}``).
    """
    override = dict(override or {})
    beparams = {**cluster.fill_beparams(instance)}
    hvparams = {**cluster.fill_hvparams(instance)}
    for key in list(override):
        if key in beparams:
            beparams[key] = override.pop(key)
        elif key in hvparams:
            hvparams[key] = override.pop(key)
    env: dict[str, str] = {
        # in every instance LU's environment, as in Ganeti's
        "OP_TARGET": instance.name,
        "INSTANCE_NAME": instance.name,
        "INSTANCE_PRIMARY": instance.primary_node,
        "INSTANCE_SECONDARIES": hook_value(instance.secondary_nodes),
        "INSTANCE_OS_TYPE": instance.os,
        "INSTANCE_STATUS": instance.admin_state,
        "INSTANCE_MINMEM": hook_value(beparams.get("minmem")),
        "INSTANCE_MAXMEM": hook_value(beparams.get("maxmem")),
        # Ganeti's backwards-compatible key: the maximum memory.
        "INSTANCE_MEMORY": hook_value(beparams.get("maxmem")),
        "INSTANCE_VCPUS": hook_value(beparams.get("vcpus")),
        "INSTANCE_DISK_TEMPLATE": instance.disk_template,
        "INSTANCE_HYPERVISOR": instance.hypervisor,
        "INSTANCE_TAGS": hook_value(sorted(instance.tags)),
        "INSTANCE_NIC_COUNT": str(len(instance.nics)),
        "INSTANCE_DISK_COUNT": str(len(instance.disks)),
    }
    for idx, nic in enumerate(instance.nics):
        prefix = f"INSTANCE_NIC{idx}_"
        env[prefix + "UUID"] = nic.uuid
        if nic.name:  # as Ganeti: only a named NIC has the key
            env[prefix + "NAME"] = nic.name
        env[prefix + "IP"] = hook_value(nic.ip)
        env[prefix + "MAC"] = nic.mac
        env[prefix + "MODE"] = nic.mode
        env[prefix + "LINK"] = nic.link
        env[prefix + "VLAN"] = nic.vlan
        if nic.network:  # as Ganeti: only a NIC in a network has the key
            env[prefix + "NETWORK_NAME"] = nic.network
        if nic.mode == "bridged":
            env[prefix + "BRIDGE"] = nic.link
    for idx, disk in enumerate(instance.disks):
        prefix = f"INSTANCE_DISK{idx}_"
        env[prefix + "UUID"] = disk.uuid
        if disk.name:  # as Ganeti: only a named disk has the key
            env[prefix + "NAME"] = disk.name
        env[prefix + "SIZE"] = str(disk.size)
        env[prefix + "MODE"] = disk.mode
        env[prefix + "DEV_TYPE"] = disk.dev_type
    for key, value in sorted(beparams.items()):
        env[f"INSTANCE_BE_{key}"] = hook_value(value)
    for key, value in sorted(hvparams.items()):
        env[f"INSTANCE_HV_{key}"] = hook_value(value)
    for key, value in override.items():
        env[key] = hook_value(value)
    return env


def removal_step(
    res: NodeResult[Any], msg: str, ignore_failures: bool, feedback_fn: Callable[[str], None]
) -> None:
    """The outcome of a step removing an instance (stop, undefine, disks): a failure
    raises ``msg``, or is a warning when failures are to be ignored or the node is
    offline. Steps run one after the other: a domain still defined keeps its disks."""
    if res.ok:
        return
    if ignore_failures or res.offline:
        res.Warn(msg, feedback_fn)
    else:
        res.Raise(msg)


def copy_canceled(res: NodeResult[Any], cancel: Cancellation) -> bool:
    """Whether the ``copy_disk`` result ``res`` is a copy stopped by the job's ``cancel``.

    Any failed copy of a job asked to stop counts: the engine's own
    ``CopyCanceled``, and a copy that failed in another way while the
    request was being sent (its connection closed under it). A copy that
    stopped without the job's request (``CopyCanceled`` from something else
    stopping the helper) is a failure, reported as one.
    """
    return not res.ok and cancel.is_set()


def cancel_reason(cancel: Cancellation) -> str:
    """Why the job was asked to stop, for its messages."""
    return cancel.reason or "on request"
