"""Pure helpers of the migration LUs: versions, memory, bridges, paths, parameters."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ganeti_lv import constants
from ganeti_lv.errors import ECODE_NORES, OpPrereqError
from ganeti_lv.hypervisor.base import DomainInfo, NodeFacts
from ganeti_lv.hypervisor.migration_types import (
    CAP_AUTO_CONVERGE,
    CAP_POSTCOPY,
    MigrationParams,
)
from ganeti_lv.objects import Cluster, Instance, disk_dir, disk_paths
from ganeti_lv.units import check_hv_bounds, migration_caps


def format_version(version: int) -> str:
    """libvirt's integer version (major * 1e6 + minor * 1e3 + micro) as text."""
    return f"{version // 1_000_000}.{version // 1000 % 1000}.{version % 1000}"


def check_hv_versions(src: NodeFacts, dst: NodeFacts) -> tuple[list[str], list[str]]:
    """Compare libvirt/qemu versions of source and target: (warnings, errors).

    A target qemu older than the source's is unsafe (the older machine type
    or device state may not load); any other difference is a warning.
    """
    warnings: list[str] = []
    errors: list[str] = []
    for what, a, b in (
        ("qemu", src.qemu_version, dst.qemu_version),
        ("libvirt", src.libvirt_version, dst.libvirt_version),
    ):
        if not a or not b:
            warnings.append(f"Unknown {what} version on {src.name if not a else dst.name}")
            continue
        if a == b:
            continue
        text = (
            f"{what} versions differ: {format_version(a)} on {src.name},"
            f" {format_version(b)} on {dst.name}"
        )
        if what == "qemu" and b < a:
            errors.append(f"Unsafe migration: {text} (target is older)")
        else:
            warnings.append(text)
    return warnings, errors


def instance_memory(cluster: Cluster, instance: Instance) -> int:
    """Memory (MiB) the instance needs on a node: its maximum memory."""
    return int(cluster.fill_beparams(instance)["maxmem"])


def migrating_memory(cluster: Cluster, instance: Instance, dom: DomainInfo | None) -> int:
    """Memory (MiB) a migration of the instance needs on its target: what its domain
    ``dom`` runs with on the source, as Ganeti's (a start with temporary parameters
    may have given it more or less than configured); its configured maximum when
    the source does not say or the domain does not run (only a running guest
    migrates: any other is failed over, which starts it from the configuration)."""
    if dom is not None and dom.state == constants.DOMSTATE_RUNNING and dom.memory > 0:
        return int(dom.memory)
    return instance_memory(cluster, instance)


def instance_bridges(cluster: Cluster, instance: Instance) -> list[str]:
    """Bridges the instance's bridged NICs need on a node."""
    bridges: list[str] = []
    for nic in instance.nics:
        if nic.mode != "bridged":
            continue
        link = nic.link or cluster.default_bridge
        if link not in bridges:
            bridges.append(link)
    return bridges


def missing_bridges(cluster: Cluster, instance: Instance, facts: NodeFacts) -> list[str]:
    """The bridges of ``instance_bridges`` that the node of ``facts`` lacks."""
    return [b for b in instance_bridges(cluster, instance) if b not in facts.bridges]


def storage_paths(cluster: Cluster, instance: Instance, disks: bool = False) -> list[str]:
    """Paths that must exist on a migration target.

    ``sharedfile``: the disk images themselves (the storage is shared);
    ``file``: the storage directory the images are copied into. With
    ``disks``, the instance's own image paths (for leftover detection).
    """
    images = disk_paths(cluster, instance)
    if disks:
        return [disk_dir(cluster, instance), *images]
    if instance.disk_template == constants.DT_SHARED_FILE:
        return images
    return [cluster.file_storage_dir]


def requested_caps(cluster: Cluster, instance: Instance, op: Any) -> dict[str, int]:
    """The migration capabilities asked for (the call's, else the hvparam)."""
    hvp = cluster.fill_hvparams(instance)
    caps_text = op.migration_caps if op.migration_caps is not None else hvp.get("migration_caps")
    return migration_caps(str(caps_text or ""))


# the downtime ramp's hypervisor parameters, in the order ``downtime_ramp`` gives them
RAMP_KEYS = ("migration_downtime_initial", "migration_downtime_steps", "migration_downtime_passes")


def downtime_ramp(hvp: dict[str, Any]) -> tuple[int, int, int]:
    """(initial downtime ms, steps, passes per step) of the hvparams, checked."""
    values = []
    for key in RAMP_KEYS:
        raw = hvp.get(key)
        value = int(constants.HVC_DEFAULTS[key] if raw is None or raw == "" else raw)
        check_hv_bounds(key, value)
        values.append(value)
    return values[0], values[1], values[2]


def migration_params(
    cluster: Cluster,
    instance: Instance,
    op: Any,
    live: bool,
    warn: Callable[[str], None],
    memory_mib: int,
) -> MigrationParams:
    """hvparams overlaid with the opcode's per-call overrides; ``memory_mib``: the
    memory the guest runs with (its policy's completion timeout scales with it).

    Without ``allow_runtime_changes`` the instance is not changed while it
    runs: auto-converge (which throttles its vCPUs) is dropped, and ``warn``
    is told when it was asked for a live migration.
    """
    hvp = cluster.fill_hvparams(instance)
    bandwidth = op.migration_bandwidth
    if bandwidth is None:
        bandwidth = int(hvp.get("migration_bandwidth") or 0)
    downtime = op.migration_downtime
    if downtime is None:
        downtime = int(
            hvp.get("migration_downtime") or constants.HVC_DEFAULTS["migration_downtime"]
        )
    ramp = downtime_ramp(hvp)
    caps = requested_caps(cluster, instance, op)
    allow_postcopy = bool(op.allow_postcopy)
    if allow_postcopy:
        caps[CAP_POSTCOPY] = 1
    if not getattr(op, "allow_runtime_changes", True) and CAP_AUTO_CONVERGE in caps:
        # auto-converge throttles the guest's vCPUs while it runs: a runtime change
        del caps[CAP_AUTO_CONVERGE]
        if live:
            warn(
                "auto-converge not used: it throttles the instance's vCPUs and runtime"
                " changes are not allowed"
            )
    if not live:
        caps.pop(CAP_POSTCOPY, None)
        caps.pop(CAP_AUTO_CONVERGE, None)
        allow_postcopy = False
    copy_storage = instance.disk_template == constants.DT_FILE
    params = MigrationParams(
        live=live,
        bandwidth=bandwidth,
        downtime_ms=downtime,
        downtime_initial_ms=ramp[0],
        downtime_steps=ramp[1],
        downtime_passes=ramp[2],
        caps=caps,
        allow_postcopy=allow_postcopy and CAP_POSTCOPY in caps,
        escalate=bool(op.escalate),
        copy_storage=copy_storage,
        unsafe=(
            instance.disk_template == constants.DT_SHARED_FILE and cluster.shared_storage_unsafe_ok
        ),
        progress_timeout=op.progress_timeout,
        completion_timeout=op.completion_timeout,
        memory_mib=memory_mib,
        disk_mib=sum(disk.size for disk in instance.disks) if copy_storage else 0,
        encryption=(
            bool(hvp.get("migration_encryption"))
            if op.migration_encryption is None
            else op.migration_encryption
        ),
    )
    if op.abort_timeout is not None:
        params.abort_timeout = op.abort_timeout
    return params


def check_target_memory(
    node: str,
    instance: Instance,
    cluster: Cluster,
    free: int,
    needed: int,
    failover: bool,
    allow_runtime_changes: bool,
) -> None:
    """ECODE_NORES unless ``free`` MiB on ``node`` hold the ``needed`` MiB of the instance.

    Ganeti fits an instance onto a target with less free memory by
    ballooning it down towards its minimum memory when runtime changes
    are allowed. ganeti_lv guests have no balloon device, so their
    runtime memory is their maximum memory and is never changed: such a
    target is refused either way; the message says what would have been
    needed (``--no-runtime-changes`` forbids the shrinking outright).
    """
    if free >= needed:
        return
    if failover:
        raise OpPrereqError(
            f"Not enough memory on node {node} for starting instance {instance.name}:"
            f" needed {needed} MiB, available {free} MiB",
            ECODE_NORES,
        )
    if not allow_runtime_changes:
        raise OpPrereqError(
            f"Memory ballooning not allowed and not enough free memory to fit instance"
            f" {instance.name} on target node {node} (have {free} MiB, need {needed} MiB)",
            ECODE_NORES,
        )
    minmem = int(cluster.fill_beparams(instance)["minmem"])
    hint = (
        f"; shrinking it towards its minimum memory ({minmem} MiB) would need memory"
        " ballooning, which ganeti_lv does not do"
        if free >= minmem
        else ""
    )
    raise OpPrereqError(
        f"Not enough memory on node {node} for migrating instance {instance.name}:"
        f" needed {needed} MiB, available {free} MiB{hint}",
        ECODE_NORES,
    )
