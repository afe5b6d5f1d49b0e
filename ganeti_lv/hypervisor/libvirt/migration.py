"""The libvirt migration driver: peer-to-peer migrateToURI3 with a monitor loop.

``migrate()`` runs the migration (``Guest.migrate``) in a worker thread
while the calling thread polls the job's figures (``Guest.job_info``) on the
same connection (libvirt's client takes calls from several threads at once,
as ``virsh migrate`` does when it watches its own job), feeds the samples to
the pure convergence policy (``ganeti_lv.hypervisor.migration_policy``),
acts on its decisions (downtime steps, post-copy switch, abort), reports
progress at a steady interval and honours an abort request
(``abort_event``, or Ctrl-C arriving in the calling thread) with
``Guest.abort_job``. Every call on the domain goes through ``Guest``; this
module builds the migration's flags and parameters and sees ganeti_lv
errors only.

The migration is peer to peer over the target's ``peer_uri`` (``peer_uri()``:
TLS to the node's address when it has none), so the source's libvirtd talks
to the target's, never through a socket only the master can reach; the
qemu stream goes to ``tcp://<migration_address>``, and the definition moves
with the guest (PERSIST_DEST | UNDEFINE_SOURCE).
With ``MigrationParams.encryption`` the stream (and a disk copy along with it)
is TLS (VIR_MIGRATE_TLS): qemu on both ends uses the node's certificates in
``/etc/pki/qemu`` and checks the peer's (qemu.conf ``migrate_tls_x509_verify``).

``MigrationOpsMixin`` gives ``LibvirtNodeOps`` the migration operations of
``NodeOps``; the logic lives here.

Capabilities probed under TCG (qemu 7.2, libvirt 9.0, the local cluster;
128 MiB guest dirtying 32 MiB in a loop, bandwidth 8 MiB/s):

- post-copy (``postcopy-ram`` + ``--allow-postcopy``): the policy's switch
  (``migrateStartPostCopy``) completed the migration in 6-18 s; libvirt
  reports no downtime for it.
- auto-converge: qemu's default throttle (20 % plus 10 % per pass) needs
  many passes at 8 MiB/s; with the 40 %/+20 % used here it converged in
  about 32-40 s. The capability must be set when the migration starts
  (qemu cannot enable it later), so it throttles as soon as qemu sees the
  guest outrun the link; the stats report the highest throttle.
- without either, such a guest never converges: the policy aborts it and
  it stays on the source.
- qemu 7.2 (Debian 12's) loses guest memory writes during a live
  migration under TCG: its bitmap sync clears a page's migration dirty bit
  without making the vCPU's TLB entry for the page trap the next write
  again, so a write after the clear is never sent. The guest kernel then
  oopses or locks up on the target (list corruption, general protection
  fault, soft lockup, silent hang), after migrations of four or more
  passes, plain ``virsh migrate`` as well as ganeti_lv. qemu fixed it in
  9.0 ("physmem: Fix migration dirty bitmap coherency with TCG memory
  access"); the local cluster runs Debian's backport (qemu 10) and loses
  no guest (README, "Guest safety under TCG migration"). KVM tracks dirty
  pages in the kernel; real nodes run ``kvm``.
"""

from __future__ import annotations

import contextlib
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import libvirt

from ganeti_lv.cancel import Cancellation
from ganeti_lv.errors import NodeError
from ganeti_lv.hypervisor import migration_policy as policy
from ganeti_lv.hypervisor.libvirt.guest import Guest, JobInfo
from ganeti_lv.hypervisor.libvirt.host import Host, uri_host
from ganeti_lv.hypervisor.migration_types import (
    CAP_AUTO_CONVERGE,
    CAP_COMPRESSION,
    CAP_PARALLEL,
    CAP_POSTCOPY,
    CAP_XBZRLE,
    MigrationFailed,
    MigrationParams,
    MigrationProgress,
    MigrationStats,
)
from ganeti_lv.objects import Cluster, Instance, Node

ProgressFn = Callable[[MigrationProgress], None]

# Auto-converge throttling (% of vCPU time taken from the guest): qemu starts
# once the guest dirtied more than half of what was sent in two passes in a
# row, then adds the increment per pass. qemu's 20/10 needs about eight more
# passes to reach 99 %, too slow once the policy has already given up waiting.
AUTO_CONVERGE_INITIAL = 40
AUTO_CONVERGE_INCREMENT = 20


def migration_flags(params: MigrationParams) -> int:
    """libvirt flags for ``params``."""
    flags = (
        libvirt.VIR_MIGRATE_PEER2PEER
        | libvirt.VIR_MIGRATE_PERSIST_DEST
        | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
    )
    if params.live:
        flags |= libvirt.VIR_MIGRATE_LIVE
    if params.copy_storage:
        flags |= libvirt.VIR_MIGRATE_NON_SHARED_DISK
    if params.unsafe:
        flags |= libvirt.VIR_MIGRATE_UNSAFE
    caps = params.caps
    if params.live and CAP_AUTO_CONVERGE in caps:
        flags |= libvirt.VIR_MIGRATE_AUTO_CONVERGE
    if params.live and params.allow_postcopy and CAP_POSTCOPY in caps:
        flags |= libvirt.VIR_MIGRATE_POSTCOPY
    if CAP_XBZRLE in caps or CAP_COMPRESSION in caps:
        flags |= libvirt.VIR_MIGRATE_COMPRESSED
    if CAP_PARALLEL in caps:
        flags |= libvirt.VIR_MIGRATE_PARALLEL
    if params.encryption:  # qemu's TLS with the nodes' certificates (/etc/pki/qemu)
        flags |= libvirt.VIR_MIGRATE_TLS
    return flags


def migration_uri_params(target: Node, params: MigrationParams) -> dict[str, Any]:
    """The typed parameters of migrateToURI3 (stream URI, bandwidth, caps)."""
    address = target.migration_address or target.address
    out: dict[str, Any] = {libvirt.VIR_MIGRATE_PARAM_URI: f"tcp://{uri_host(address)}"}
    if params.bandwidth > 0:
        out[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH] = int(params.bandwidth)
    methods = []
    if CAP_XBZRLE in params.caps:
        methods.append("xbzrle")
    if CAP_COMPRESSION in params.caps:
        methods.append("mt")
    if methods:
        out[libvirt.VIR_MIGRATE_PARAM_COMPRESSION] = methods
    if CAP_PARALLEL in params.caps:
        out[libvirt.VIR_MIGRATE_PARAM_PARALLEL_CONNECTIONS] = int(params.caps[CAP_PARALLEL])
    if params.live and CAP_AUTO_CONVERGE in params.caps:
        out[libvirt.VIR_MIGRATE_PARAM_AUTO_CONVERGE_INITIAL] = AUTO_CONVERGE_INITIAL
        out[libvirt.VIR_MIGRATE_PARAM_AUTO_CONVERGE_INCREMENT] = AUTO_CONVERGE_INCREMENT
    return out


def policy_config(params: MigrationParams) -> policy.PolicyConfig:
    """The convergence policy for ``params``."""
    kwargs: dict[str, Any] = {}
    if params.progress_timeout is not None:
        kwargs["progress_timeout"] = params.progress_timeout
    return policy.PolicyConfig(
        memory_mib=params.memory_mib,
        disk_mib=params.disk_mib,
        limit_ms=params.downtime_ms,
        ramp_start_ms=params.downtime_initial_ms,
        ramp_steps=params.downtime_steps,
        ramp_passes=params.downtime_passes,
        max_downtime_ms=max(policy.DEFAULT_MAX_DOWNTIME_MS, params.downtime_ms),
        completion_timeout=params.completion_timeout,
        escalate=params.escalate,
        auto_converge=params.live and CAP_AUTO_CONVERGE in params.caps,
        allow_postcopy=params.live and params.allow_postcopy and CAP_POSTCOPY in params.caps,
        **kwargs,
    )


def progress_from_job(job: JobInfo, elapsed: float, downtime_ms: int) -> MigrationProgress:
    """A MigrationProgress from the job's figures."""
    return MigrationProgress(
        elapsed=elapsed,
        memory_total=job.memory_total,
        memory_processed=job.memory_processed,
        memory_remaining=job.memory_remaining,
        bandwidth=job.memory_bps,
        dirty_rate=job.dirty_rate * job.page_size,
        iteration=job.iteration,
        disk_total=job.disk_total,
        disk_processed=job.disk_processed,
        disk_remaining=job.disk_remaining,
        downtime_ms=downtime_ms,
        throttle=job.throttle,
    )


@dataclass
class _Worker:
    """migrateToURI3 in a thread (the monitor polls on the same connection)."""

    guest: Guest
    peer_uri: str
    uri_params: dict[str, Any]
    flags: int
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        try:
            self.guest.migrate(self.peer_uri, self.uri_params, self.flags)
        except BaseException as err:  # noqa: BLE001 - handed to the monitor
            self.error = err
        finally:
            self.done.set()


class _Monitor:
    """The polling side of one migration (policy, progress, abort)."""

    def __init__(
        self,
        guest: Guest,
        params: MigrationParams,
        progress_fn: ProgressFn,
        abort_event: Cancellation,
        clock: Callable[[], float],
    ) -> None:
        self.guest = guest
        self.params = params
        self.progress_fn = progress_fn
        self.abort_event = abort_event
        self.clock = clock
        self.config = policy_config(params)
        self.state = policy.initial_state()
        self.downtime_ms = policy.start_downtime_ms(self.config)
        self.start = clock()
        self.last_report = -1e9
        self.abort_reason = ""
        self.aborted = False
        self.abort_sent = False  # libvirt took the abort (else asked again at every poll)
        self.aborted_by_policy = False
        self.postcopy = False
        self.downtime_set = False
        self.last_progress: MigrationProgress | None = None
        self.max_throttle = 0

    def poll(self) -> None:
        """One round: sample, decide, act, report."""
        if self.abort_event.is_set() and not self.aborted:
            reason = self.abort_event.reason
            self.abort(self.abort_reason or reason or "abort requested")
        elif self.aborted and not self.abort_sent and not self.postcopy:
            self._send_abort()
        try:
            job = self.guest.job_info()
        except NodeError:
            return  # the job may be finishing; the worker tells the outcome
        if job is None:
            return
        if not self.downtime_set:
            self._set_downtime(self.downtime_ms)
            self.downtime_set = True
        elapsed = self.clock() - self.start
        report = progress_from_job(job, elapsed, self.downtime_ms)
        report.postcopy = self.postcopy
        self.last_progress = report
        self.max_throttle = max(self.max_throttle, report.throttle)
        if self.params.live and not self.aborted:
            sample = policy.Sample(
                elapsed=elapsed,
                memory_total=report.memory_total,
                memory_processed=report.memory_processed,
                memory_remaining=report.memory_remaining,
                disk_remaining=report.disk_remaining,
                dirty_rate=int(report.dirty_rate),
                iteration=report.iteration,
                postcopy=self.postcopy,
            )
            action, self.state = policy.decide(self.config, self.state, sample)
            self._act(action)
            if self.aborted:
                return  # no progress line after the abort's
        elif not self.aborted:  # non-live: nothing to steer, but it ends in time
            deadline = policy.completion_deadline(self.config, self.state)
            if elapsed > deadline:  # an abort of its own, not the policy's (no convergence)
                self.abort(f"the non-live migration did not complete within {deadline:g} s")
                return
        if elapsed - self.last_report >= self.params.report_interval:
            self.last_report = elapsed
            self.progress_fn(report)

    def set_start_downtime(self) -> None:
        """The ramp's start, set before the migration starts (else at the first poll).

        A short migration can end before the first poll: qemu would then
        switch over with its default limit (300 ms) instead of the ramp's.
        """
        try:
            self.guest.set_max_downtime(int(self.downtime_ms))
            self.downtime_set = True
        except NodeError:
            self.downtime_set = False

    def _set_downtime(self, ms: int) -> None:
        with contextlib.suppress(NodeError):
            self.guest.set_max_downtime(int(ms))
        self.downtime_ms = ms

    def _say(self, step: str) -> None:
        """Report a step of the policy (or the abort) as a line of its own, at once."""
        base = self.last_progress or MigrationProgress(elapsed=self.clock() - self.start)
        self.progress_fn(replace(base, policy_step=step))

    def _act(self, action: policy.Action) -> None:
        kind = action.kind
        if kind is policy.ActionKind.SET_DOWNTIME and action.downtime_ms is not None:
            self._say(action.reason)
            self._set_downtime(action.downtime_ms)
        elif kind is policy.ActionKind.AUTO_CONVERGE:
            self._say(action.reason)
        elif kind is policy.ActionKind.START_POSTCOPY:
            if self.abort_event.is_set():  # asked for during this poll: the guest stays
                self.abort(self.abort_event.reason or "abort requested")
                return
            self._say(f"switching to post-copy: {action.reason}")
            try:
                self.guest.start_postcopy()
                self.postcopy = True
            except NodeError as err:
                self.aborted_by_policy = not self.aborted
                self.abort(f"{action.reason}; post-copy refused: {err}")
        elif kind is policy.ActionKind.ABORT:
            self.aborted_by_policy = not self.aborted
            self.abort(f"convergence policy: {action.reason}")

    def abort(self, reason: str) -> None:
        """Abort the libvirt job, unless post-copy runs.

        The abort is this migration's own: the job's cancel request
        (``abort_event``, which a node operation shares between its moves) is
        read, never set, so a guest the policy gives up on stops no other
        move. Once post-copy runs, the guest runs on the target and pulls
        the memory it still lacks from the source: libvirt cannot abort
        that, and the migration is left to end.
        """
        self.abort_reason = self.abort_reason or reason
        if self.aborted:
            return
        self.aborted = True
        if self.postcopy:
            self._say(
                f"not aborting ({self.abort_reason}): post-copy runs, the guest runs on the"
                " target and still pulls memory from the source; waiting for it to end"
            )
            return
        self._say(f"aborting the migration: {self.abort_reason}")
        self._send_abort()

    def _send_abort(self) -> None:
        """Ask libvirt to abort the job; one not started yet, or a call that failed, is
        asked again at the next poll."""
        with contextlib.suppress(NodeError):
            self.guest.abort_job()
            self.abort_sent = True


def _wait(worker: _Worker, monitor: _Monitor, params: MigrationParams, clock: Any) -> None:
    """Poll until the worker ends; Ctrl-C cancels the job.

    After an abort the wait is bounded (``params.abort_timeout``), except in
    post-copy: the source holds memory the guest on the target still needs,
    so the migration is always waited for to its end.
    """
    abort_deadline: float | None = None
    while not worker.done.is_set():
        try:
            worker.done.wait(params.poll_interval)
            monitor.poll()
        except KeyboardInterrupt:
            monitor.abort_event.request("interrupted by the user")
            monitor.abort("interrupted by the user")
        if monitor.aborted and abort_deadline is None:
            abort_deadline = clock() + params.abort_timeout
        if monitor.postcopy:
            continue
        if abort_deadline is not None and clock() > abort_deadline and not worker.done.is_set():
            raise MigrationFailed(
                f"{monitor.abort_reason} (the migration job did not stop within"
                f" {params.abort_timeout:g} s of the abort)",
                aborted=True,
                by_policy=monitor.aborted_by_policy,
            )


def completed_job(target_host: Host, name: str) -> JobInfo | None:
    """The destination's figures of the completed migration job (None if unavailable).

    libvirt keeps them for operators (``virsh domjobinfo --completed``) and
    benchmarks after us.
    """
    try:
        return target_host.guest(name).job_info(completed=True)
    except NodeError:
        return None


def migrate(
    source_host: Host,
    target_host: Host,
    target: Node,
    name: str,
    params: MigrationParams,
    progress_fn: ProgressFn,
    abort_event: Cancellation,
    clock: Callable[[], float] = time.monotonic,
) -> MigrationStats:
    """Migrate domain ``name`` from ``source_host`` to ``target``; see the module docstring."""
    if abort_event.is_set():  # asked for while the migration was prepared
        raise MigrationFailed(
            abort_event.reason or "abort requested", node=source_host.node, aborted=True
        )
    guest = source_host.guest(name)
    worker = _Worker(
        guest,
        peer_uri(target),
        migration_uri_params(target, params),
        migration_flags(params),
    )
    monitor = _Monitor(guest, params, progress_fn, abort_event, clock)
    if params.live:
        monitor.set_start_downtime()
    thread = threading.Thread(target=worker.run, name=f"migrate-{name}", daemon=True)
    start = clock()
    thread.start()
    _wait(worker, monitor, params, clock)
    thread.join()
    total = clock() - start
    if worker.error is not None:
        _raise_failure(worker.error, monitor, source_host.node)
    done = completed_job(target_host, name)
    last = monitor.last_progress
    elapsed_ms = done.time_elapsed_ms if done is not None else None
    return MigrationStats(
        # libvirt's own figure of the job when it has one, else our clock around it
        total_time=float(elapsed_ms) / 1000 if elapsed_ms is not None else total,
        downtime_ms=done.downtime_ms if done is not None else None,
        memory_transferred=(
            done.memory_processed if done is not None else (last.memory_processed if last else 0)
        ),
        disk_transferred=last.disk_processed if last else 0,
        iterations=done.iteration if done is not None else (last.iteration if last else 0),
        postcopy=monitor.postcopy,
        policy_steps=list(monitor.state.history),
        abort_requested=monitor.aborted,
        max_throttle=monitor.max_throttle,
        wall_time=total,
    )


def peer_uri(node: Node) -> str:
    """How a source node's libvirtd reaches ``node``'s for a migration.

    The node's ``peer_uri``, else TLS to its address: libvirtd listens on
    TLS on the node's cluster address, and ``node add`` gives every node its
    client certificate.
    """
    if node.peer_uri:
        return node.peer_uri
    return f"qemu+tls://{uri_host(node.address)}/system"


def _raise_failure(error: BaseException, monitor: _Monitor, node: str) -> None:
    detail = str(error) if isinstance(error, NodeError) else f"migration failed: {error!r}"
    if monitor.aborted:
        detail = f"{monitor.abort_reason} ({detail})"
    raise MigrationFailed(
        detail,
        node=node,
        aborted=monitor.aborted,
        switched_over=monitor.postcopy,
        by_policy=monitor.aborted_by_policy,
    )


# ---------------------------------------------------------------- other ops


def abort_job(host: Host, name: str) -> bool:
    """Abort a running job of the domain; True if there was one.

    A job that ends between the look and the abort is no job; an abort
    refused while the job still runs raises (the caller says it failed).
    """
    guest = host.find_guest(name)
    if guest is None or guest.job_info() is None:
        return False
    try:
        guest.abort_job()
    except NodeError:
        if guest.job_info() is None:
            return False
        raise
    return True


def guest_cpu_xml(domain_xml: str) -> tuple[str | None, str, str]:
    """(the domain's <cpu> element with a model, or None; arch; virt type)."""
    root = ET.fromstring(domain_xml)
    virttype = root.get("type", "kvm")
    os_type = root.find("os/type")
    arch = os_type.get("arch", "x86_64") if os_type is not None else "x86_64"
    cpu = root.find("cpu")
    if cpu is None or cpu.find("model") is None:
        return None, arch, virttype
    return ET.tostring(cpu, encoding="unicode"), arch, virttype


def compare_cpu(source_host: Host, target_host: Host, name: str) -> tuple[bool, str]:
    """Can the guest's CPU definition run on the target host's hypervisor?"""
    xml = source_host.guest(name).xml()
    cpu, arch, virttype = guest_cpu_xml(xml)
    if cpu is None:
        return True, "the guest requests no CPU model"
    result = target_host.call(
        "Cannot compare CPUs",
        lambda c: c.compareHypervisorCPU(None, arch, None, virttype, cpu, 0),
    )
    if result == libvirt.VIR_CPU_COMPARE_INCOMPATIBLE:
        return False, "libvirt reports the guest CPU incompatible with the target host"
    return True, "identical" if result == libvirt.VIR_CPU_COMPARE_IDENTICAL else "superset"


def serial_files(domain_xml: str) -> list[str]:
    """Paths of the files the domain's serial and console devices write: a file-backed
    device's file, a terminal's log."""
    root = ET.fromstring(domain_xml)
    out: list[str] = []
    for dev in [*root.findall("devices/serial"), *root.findall("devices/console")]:
        src, log = dev.find("source"), dev.find("log")
        if dev.get("type") == "file" and src is not None and src.get("path"):
            out.append(src.get("path", ""))
        if log is not None and log.get("file"):
            out.append(log.get("file", ""))
    return list(dict.fromkeys(out))


class MigrationOpsMixin:
    """The migration operations of LibvirtNodeOps.

    Needs ``host()``, ``_over_ssh()`` and ``prepare_node_dirs()`` of the node operations.
    """

    host: Callable[[Node], Host]
    _over_ssh: Callable[..., Any]
    prepare_node_dirs: Callable[..., None]

    def migrate_instance(
        self,
        source: Node,
        target: Node,
        cluster: Cluster,
        instance: Instance,
        params: MigrationParams,
        progress_fn: ProgressFn,
        abort_event: Cancellation,
    ) -> MigrationStats:
        self._prepare_target_files(source, target, instance.name)
        return migrate(
            self.host(source),
            self.host(target),
            target,
            instance.name,
            params,
            progress_fn,
            abort_event,
        )

    def _prepare_target_files(self, source: Node, target: Node, name: str) -> None:
        """The files the domain's serial port writes and their directories, on the target.

        A fresh node may lack libvirt's log directory, and the incoming
        domain cannot open its console log then; a log libvirt must create
        itself slows the migration down. One command on the target, only
        for what was not made there before (``prepare_node_dirs``).
        """
        files = serial_files(self.host(source).guest(name).xml())
        self.prepare_node_dirs(target, files)

    def abort_migration(self, node: Node, name: str) -> bool:
        return abort_job(self.host(node), name)

    def compare_cpu(self, target: Node, source: Node, instance: Instance) -> tuple[bool, str]:
        return compare_cpu(self.host(source), self.host(target), instance.name)

    def paths_exist(self, node: Node, paths: list[str]) -> dict[str, bool]:
        if not paths:
            return {}
        # SFTP stat on the node's open session (as ``[ -e ]``: symlinks followed)
        return self._over_ssh(node, lambda client: {p: client.exists(p) for p in paths})
