"""Guest: every call on a domain, libvirt errors translated, job figures as plain values.

A stub virDomain (libvirt's method names) stands in for a real domain; the
migration monitor is driven through a Guest of it.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import libvirt
import pytest
from support.libvirt_errors import libvirt_error

from ganeti_lv.cancel import Cancellation
from ganeti_lv.errors import HypervisorError, InstanceNotFound, NodeUnreachable
from ganeti_lv.hypervisor.libvirt import host as hostmod
from ganeti_lv.hypervisor.libvirt import migration, snapshot
from ganeti_lv.hypervisor.libvirt.guest import Guest
from ganeti_lv.hypervisor.libvirt.nodeops import default_libvirt_uri
from ganeti_lv.hypervisor.migration_types import MigrationParams
from ganeti_lv.objects import Node


class Dom:
    """A stub virDomain recording its calls; ``fail`` maps a method to the error it raises."""

    def __init__(self, stats: dict[str, Any] | None = None) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.stats = stats if stats is not None else {"type": libvirt.VIR_DOMAIN_JOB_NONE}
        self.fail: dict[str, libvirt.libvirtError] = {}
        self.block_jobs = 0

    def _call(self, name: str, *args: Any) -> Any:
        self.calls.append((name, args))
        if name in self.fail:
            raise self.fail[name]
        return None

    def name(self) -> str:
        return "web1"

    def jobStats(self, flags: int = 0) -> dict[str, Any]:  # noqa: N802 - libvirt's names
        self._call("jobStats", flags)
        return dict(self.stats)

    def migrateSetMaxDowntime(self, ms: int, flags: int) -> None:  # noqa: N802
        self._call("migrateSetMaxDowntime", ms)

    def migrateStartPostCopy(self, flags: int) -> None:  # noqa: N802
        self._call("migrateStartPostCopy")

    def abortJob(self) -> None:  # noqa: N802
        self._call("abortJob")

    def snapshotCreateXML(self, xml: str, flags: int) -> None:  # noqa: N802
        self._call("snapshotCreateXML", flags)

    def isActive(self) -> int:  # noqa: N802
        return 1

    def XMLDesc(self, flags: int) -> str:  # noqa: N802
        agent = "<channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/>"
        return f"<domain><devices>{agent}</channel></devices></domain>"

    def blockJobInfo(self, target: str, flags: int) -> dict[str, int]:  # noqa: N802
        self._call("blockJobInfo", target)
        return {"cur": 1, "end": 2} if self.block_jobs else {}

    def blockCommit(self, *args: Any) -> None:  # noqa: N802
        self._call("blockCommit", *args)
        self.block_jobs = 1

    def blockJobAbort(self, target: str, flags: int) -> None:  # noqa: N802
        self._call("blockJobAbort", target, flags)
        self.block_jobs = 0


class Conn:
    def isAlive(self) -> bool:  # noqa: N802
        return True

    def setKeepAlive(self, interval: int, count: int) -> int:  # noqa: N802
        return 0

    def close(self) -> int:
        return 0


def _guest(monkeypatch: pytest.MonkeyPatch, dom: Dom) -> Guest:
    monkeypatch.setattr(hostmod.libvirt, "open", lambda uri: Conn())
    monkeypatch.setattr(hostmod, "ensure_event_loop", lambda: None)
    host = hostmod.Host("node1", "qemu+tcp://10.250.0.1/system", lambda fn: fn())
    return Guest(host, host.get_connection(), dom)  # type: ignore[arg-type]


def test_job_figures_are_plain_values_and_none_without_a_job(monkeypatch) -> None:
    dom = Dom()
    guest = _guest(monkeypatch, dom)
    assert guest.job_info() is None
    dom.stats = {
        "type": libvirt.VIR_DOMAIN_JOB_UNBOUNDED,
        "memory_total": 1000,
        "memory_remaining": 250,
        "memory_dirty_rate": 10,
        "memory_page_size": 8192,
    }
    job = guest.job_info()
    assert job is not None and (job.memory_total, job.memory_remaining) == (1000, 250)
    progress = migration.progress_from_job(job, 1.0, 300)
    assert progress.dirty_rate == 10 * 8192 and progress.percent == 75.0


def test_libvirt_errors_become_ganeti_lv_errors(monkeypatch) -> None:
    dom = Dom()
    guest = _guest(monkeypatch, dom)
    dom.fail["abortJob"] = libvirt_error(libvirt.VIR_ERR_NO_DOMAIN)
    with pytest.raises(InstanceNotFound, match="Cannot abort the job of web1"):
        guest.abort_job()
    dom.fail["migrateStartPostCopy"] = libvirt_error(libvirt.VIR_ERR_OPERATION_INVALID)
    with pytest.raises(HypervisorError, match="post-copy"):
        guest.start_postcopy()
    dom.fail["migrateSetMaxDowntime"] = libvirt_error(libvirt.VIR_ERR_RPC, libvirt.VIR_FROM_RPC)
    with pytest.raises(NodeUnreachable):
        guest.set_max_downtime(500)


def test_monitor_acts_through_the_guest_and_aborts_when_postcopy_is_refused(monkeypatch) -> None:
    dom = Dom({"type": libvirt.VIR_DOMAIN_JOB_UNBOUNDED, "memory_total": 100})
    guest = _guest(monkeypatch, dom)
    params = MigrationParams(
        downtime_ms=400, downtime_initial_ms=40, allow_postcopy=True, caps={"postcopy-ram": 1}
    )
    monitor = migration._Monitor(guest, params, lambda _p: None, threading.Event(), lambda: 0.0)
    monitor.poll()
    # the ramp's start, not the limit: set at the first poll when not set before
    assert ("migrateSetMaxDowntime", (40,)) in dom.calls
    dom.fail["migrateStartPostCopy"] = libvirt_error(libvirt.VIR_ERR_OPERATION_INVALID)
    monitor._act(migration.policy.Action(migration.policy.ActionKind.START_POSTCOPY, "slow"))
    assert monitor.aborted and "post-copy refused" in monitor.abort_reason
    assert ("abortJob", ()) in dom.calls and not monitor.postcopy


def test_a_non_live_migration_past_its_completion_timeout_is_aborted(monkeypatch) -> None:
    """Nothing to steer while the guest is paused, but the operator's limit still holds."""
    dom = Dom({"type": libvirt.VIR_DOMAIN_JOB_UNBOUNDED, "memory_total": 100})
    guest = _guest(monkeypatch, dom)
    params = MigrationParams(live=False, completion_timeout=5.0)
    now = [0.0]
    monitor = migration._Monitor(guest, params, lambda _p: None, threading.Event(), lambda: now[0])
    monitor.poll()
    assert ("abortJob", ()) not in dom.calls
    now[0] = 6.0
    monitor.poll()
    assert ("abortJob", ()) in dom.calls and monitor.aborted and not monitor.aborted_by_policy
    assert monitor.abort_reason == "the non-live migration did not complete within 5 s"


def test_a_cancel_during_a_poll_is_not_overtaken_by_the_switch_to_post_copy(monkeypatch) -> None:
    """The cancel comes while the job's figures are asked, and the policy then wants post-copy:
    the guest stays on the source (the job is aborted), post-copy never starts."""
    dom = Dom({"type": libvirt.VIR_DOMAIN_JOB_UNBOUNDED, "memory_total": 100})
    cancel = Cancellation()
    asked = dom.jobStats

    def stats(flags: int = 0) -> dict[str, Any]:
        cancel.request("canceled by the operator")
        return asked(flags)

    dom.jobStats = stats  # type: ignore[method-assign]
    monitor = migration._Monitor(
        _guest(monkeypatch, dom),
        MigrationParams(allow_postcopy=True, caps={"postcopy-ram": 1}),
        lambda _p: None,
        cancel,
        lambda: 0.0,
    )
    policy = migration.policy
    postcopy = policy.Action(policy.ActionKind.START_POSTCOPY, reason="slow")
    switch = (postcopy, policy.initial_state())
    monkeypatch.setattr(policy, "decide", lambda *_a: switch)
    monitor.poll()
    assert ("migrateStartPostCopy", ()) not in dom.calls
    assert ("abortJob", ()) in dom.calls
    assert monitor.aborted and not monitor.postcopy
    assert monitor.abort_reason == "canceled by the operator" and not monitor.aborted_by_policy


def test_start_downtime_is_set_before_the_migration_and_once(monkeypatch) -> None:
    dom = Dom({"type": libvirt.VIR_DOMAIN_JOB_UNBOUNDED, "memory_total": 100})
    guest = _guest(monkeypatch, dom)
    params = MigrationParams(downtime_ms=300, downtime_initial_ms=30)
    monitor = migration._Monitor(guest, params, lambda _p: None, threading.Event(), lambda: 0.0)
    monitor.set_start_downtime()
    monitor.poll()
    assert [c for c in dom.calls if c[0] == "migrateSetMaxDowntime"] == [
        ("migrateSetMaxDowntime", (30,))
    ]


class _StopsOnDestroy(Dom):
    """A running domain whose destroy fails with ``error``; ``stops``: it powered off
    between the look and the call."""

    def __init__(self, error: int, stops: bool) -> None:
        super().__init__()
        self.active, self.error, self.stops = 1, error, stops

    def isActive(self) -> int:  # noqa: N802
        return self.active

    def destroy(self) -> None:
        if self.stops:
            self.active = 0
        raise libvirt_error(self.error)


def test_destroy_of_a_guest_that_stopped_just_before_is_no_error(monkeypatch) -> None:
    _guest(monkeypatch, _StopsOnDestroy(libvirt.VIR_ERR_OPERATION_INVALID, stops=True)).destroy()
    still = _StopsOnDestroy(libvirt.VIR_ERR_OPERATION_FAILED, stops=False)
    with pytest.raises(HypervisorError, match="Cannot destroy"):
        _guest(monkeypatch, still).destroy()


def test_abort_job_only_when_one_runs(monkeypatch) -> None:
    dom = Dom()
    guest = _guest(monkeypatch, dom)
    monkeypatch.setattr(guest.host, "find_guest", lambda name: guest)
    assert migration.abort_job(guest.host, "web1") is False
    dom.stats = {"type": libvirt.VIR_DOMAIN_JOB_UNBOUNDED}
    assert migration.abort_job(guest.host, "web1") is True
    assert [c[0] for c in dom.calls].count("abortJob") == 1


def test_abort_job_refused_while_the_job_runs_raises(monkeypatch) -> None:
    # the cleanup's "Could not abort" warning depends on it: a refused abort is not "no job"
    dom = Dom({"type": libvirt.VIR_DOMAIN_JOB_UNBOUNDED})
    guest = _guest(monkeypatch, dom)
    monkeypatch.setattr(guest.host, "find_guest", lambda name: guest)
    dom.fail["abortJob"] = libvirt_error(libvirt.VIR_ERR_OPERATION_FAILED)
    with pytest.raises(HypervisorError, match="Cannot abort the job of web1"):
        migration.abort_job(guest.host, "web1")

    def job_ended() -> None:  # the job completed just before the abort reached it
        dom.stats = {"type": libvirt.VIR_DOMAIN_JOB_NONE}
        raise libvirt_error(libvirt.VIR_ERR_OPERATION_INVALID)

    monkeypatch.setattr(dom, "abortJob", job_ended)
    assert migration.abort_job(guest.host, "web1") is False


def test_snapshot_quiesces_and_falls_back_when_the_agent_does_not_answer(monkeypatch) -> None:
    dom = Dom()
    guest = _guest(monkeypatch, dom)
    assert snapshot.create_snapshot(guest, [("vda", "/x/disk0.img.snap")], freeze=True) is True
    quiesce = libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_QUIESCE
    assert dom.calls[-1][1][0] & quiesce
    dom.calls.clear()
    dom.fail["snapshotCreateXML"] = libvirt_error(libvirt.VIR_ERR_AGENT_UNRESPONSIVE)
    with pytest.raises(HypervisorError):  # both attempts refused: the error is ours
        snapshot.create_snapshot(guest, [("vda", "/x/disk0.img.snap")], freeze=True)
    flags = [c[1][0] for c in dom.calls if c[0] == "snapshotCreateXML"]
    assert [bool(f & quiesce) for f in flags] == [True, False]


def test_active_commit_pivots_through_the_block_device(monkeypatch) -> None:
    dom = Dom()
    guest = _guest(monkeypatch, dom)
    ready = (
        "<domain><devices><disk><target dev='vda'/><mirror ready='yes'/></disk></devices></domain>"
    )
    monkeypatch.setattr(dom, "XMLDesc", lambda flags: ready)
    snapshot.active_commit(guest, "vda", sleep=lambda _s: None)
    names = [c[0] for c in dom.calls]
    assert names.index("blockCommit") < names.index("blockJobAbort")
    pivot = [c for c in dom.calls if c[0] == "blockJobAbort"][0]
    assert pivot[1] == ("vda", libvirt.VIR_DOMAIN_BLOCK_JOB_ABORT_PIVOT)


def test_active_commit_polls_soon_then_less_often(monkeypatch) -> None:
    """A small overlay is ready within milliseconds: the first polls come soon
    (the export's job waits for the merge), later ones at the given interval."""
    dom = Dom()
    guest = _guest(monkeypatch, dom)
    polls: list[int] = []
    xml = "<domain><devices><disk><target dev='vda'/><mirror ready='{}'/></disk></devices></domain>"

    def desc(_flags: int) -> str:
        polls.append(1)
        return xml.format("yes" if len(polls) > 6 else "no")

    monkeypatch.setattr(dom, "XMLDesc", desc)
    slept: list[float] = []
    snapshot.active_commit(guest, "vda", sleep=slept.append, interval=0.05)
    assert slept == [0.005, 0.01, 0.02, 0.04, 0.05, 0.05]
    assert [c[0] for c in dom.calls].count("blockJobAbort") == 1


def test_policy_steps_and_the_abort_are_reported_as_lines_of_their_own(monkeypatch) -> None:
    dom = Dom({"type": libvirt.VIR_DOMAIN_JOB_UNBOUNDED, "memory_total": 100})
    guest = _guest(monkeypatch, dom)
    reports: list[Any] = []
    monitor = migration._Monitor(
        guest, MigrationParams(), reports.append, threading.Event(), lambda: 0.0
    )
    monitor.poll()
    policy = migration.policy
    monitor._act(policy.Action(policy.ActionKind.SET_DOWNTIME, 58, "slow: allowing 58 ms downtime"))
    monitor._act(policy.Action(policy.ActionKind.AUTO_CONVERGE, reason="relying on auto-converge"))
    monitor._act(policy.Action(policy.ActionKind.ABORT, reason="not completed within 120 s"))
    steps = [r.policy_step for r in reports if r.policy_step]
    assert steps == [
        "slow: allowing 58 ms downtime",
        "relying on auto-converge",
        "aborting the migration: convergence policy: not completed within 120 s",
    ]
    assert monitor.aborted and monitor.aborted_by_policy
    with pytest.raises(migration.MigrationFailed) as info:
        migration._raise_failure(HypervisorError("operation aborted"), monitor, "node1")
    assert info.value.aborted and info.value.by_policy


def test_the_policy_gets_the_memory_and_the_disks_apart(monkeypatch) -> None:
    """A copy-storage migration copying its disks: the disk figures are the disks'."""
    mib = 1 << 20
    dom = Dom(
        {
            "type": libvirt.VIR_DOMAIN_JOB_UNBOUNDED,
            "memory_total": 128 * mib,
            "disk_total": 64 * mib,
            "disk_processed": 16 * mib,
            "disk_remaining": 48 * mib,
        }
    )
    params = MigrationParams(memory_mib=128, disk_mib=64, copy_storage=True)
    assert migration.policy_config(params).disk_mib == 64
    monitor = migration._Monitor(
        _guest(monkeypatch, dom), params, lambda _p: None, threading.Event(), lambda: 1.0
    )
    monitor.poll()
    assert monitor.state.best_disk_remaining == 48 * mib
    assert monitor.state.best_remaining is None and monitor.state.memory_began_at is None


def test_a_user_abort_is_not_the_policys(monkeypatch) -> None:
    dom = Dom({"type": libvirt.VIR_DOMAIN_JOB_UNBOUNDED, "memory_total": 100})
    reports: list[Any] = []
    monitor = migration._Monitor(
        _guest(monkeypatch, dom), MigrationParams(), reports.append, threading.Event(), lambda: 0
    )
    monitor.abort("interrupted by the user")
    assert [r.policy_step for r in reports] == ["aborting the migration: interrupted by the user"]
    with pytest.raises(migration.MigrationFailed) as info:
        migration._raise_failure(HypervisorError("operation aborted"), monitor, "node1")
    assert info.value.aborted and not info.value.by_policy


def test_the_policys_abort_leaves_the_jobs_cancel_request_alone(monkeypatch) -> None:
    """A node operation shares its cancel request between its moves: an abort is its own."""
    dom = Dom({"type": libvirt.VIR_DOMAIN_JOB_UNBOUNDED, "memory_total": 100})
    cancel = Cancellation()
    monitor = migration._Monitor(
        _guest(monkeypatch, dom), MigrationParams(), lambda _p: None, cancel, lambda: 0.0
    )
    policy = migration.policy
    monitor._act(policy.Action(policy.ActionKind.ABORT, reason="not completed within 120 s"))
    assert monitor.aborted and ("abortJob", ()) in dom.calls
    assert not cancel.is_set()


def test_post_copy_is_waited_for_to_its_end_after_an_abort(monkeypatch) -> None:
    """libvirt cannot abort post-copy: the source holds memory the guest on the target needs."""
    dom = Dom({"type": libvirt.VIR_DOMAIN_JOB_UNBOUNDED, "memory_total": 100})
    reports: list[Any] = []
    now = [0.0]
    cancel = Cancellation()
    params = MigrationParams(poll_interval=0.001, abort_timeout=1.0)
    monitor = migration._Monitor(
        _guest(monkeypatch, dom), params, reports.append, cancel, lambda: now[0]
    )
    monitor.postcopy = True
    worker = migration._Worker(monitor.guest, "qemu+tls://node2/system", {}, 0)
    polls = [0]

    def poll() -> None:
        polls[0] += 1
        now[0] += 10.0  # far past the abort timeout at every poll
        if polls[0] == 2:
            cancel.request("canceled by request")
        if polls[0] == 6:
            worker.done.set()  # the post-copy ended

    monkeypatch.setattr(monitor, "poll", lambda: (migration._Monitor.poll(monitor), poll()))
    migration._wait(worker, monitor, params, lambda: now[0])
    assert polls[0] == 6 and monitor.aborted
    assert ("abortJob", ()) not in dom.calls
    assert [r.policy_step for r in reports if r.policy_step] == [
        "not aborting (canceled by request): post-copy runs, the guest runs on the target and"
        " still pulls memory from the source; waiting for it to end"
    ]


def test_a_policy_abort_that_does_not_stop_the_job_stays_the_policys(monkeypatch) -> None:
    """The wait's bound after an abort: the guest that did not converge is still said to,
    so a node operation does not blame the target for it."""
    dom = Dom({"type": libvirt.VIR_DOMAIN_JOB_UNBOUNDED, "memory_total": 100})
    now = [0.0]
    params = MigrationParams(poll_interval=0.001, abort_timeout=1.0)
    monitor = migration._Monitor(
        _guest(monkeypatch, dom), params, lambda _p: None, Cancellation(), lambda: now[0]
    )
    policy = migration.policy
    monitor._act(policy.Action(policy.ActionKind.ABORT, reason="not completed within 120 s"))
    worker = migration._Worker(monitor.guest, "qemu+tls://node2/system", {}, 0)

    def poll() -> None:
        now[0] += 10.0  # the job goes on past the bound

    monkeypatch.setattr(monitor, "poll", poll)
    with pytest.raises(migration.MigrationFailed) as info:
        migration._wait(worker, monitor, params, lambda: now[0])
    assert info.value.aborted and info.value.by_policy
    assert str(info.value).startswith("convergence policy: not completed within 120 s (the")


def test_an_abort_libvirt_did_not_take_is_asked_again_at_the_next_poll(monkeypatch) -> None:
    """A cancel that comes as libvirt starts the job ("no job is active") is not lost."""
    dom = Dom({"type": libvirt.VIR_DOMAIN_JOB_UNBOUNDED, "memory_total": 100})
    dom.fail["abortJob"] = libvirt_error(
        libvirt.VIR_ERR_OPERATION_INVALID,
        message="operation is not valid: no job is active on the domain",
    )
    cancel = Cancellation()
    monitor = migration._Monitor(
        _guest(monkeypatch, dom), MigrationParams(), lambda _p: None, cancel, lambda: 0.0
    )
    cancel.request("canceled by request")
    monitor.poll()
    assert monitor.aborted and not monitor.abort_sent
    del dom.fail["abortJob"]
    monitor.poll()
    monitor.poll()
    assert (
        monitor.abort_sent
        and [c for c in dom.calls if c[0] == "abortJob"] == [("abortJob", ())] * 2
    )


def test_a_cancel_before_the_start_starts_no_migration(monkeypatch) -> None:
    dom = Dom()
    guest = _guest(monkeypatch, dom)
    cancel = Cancellation()
    cancel.request("canceled by request")
    host = guest.host
    monkeypatch.setattr(host, "guest", lambda name: guest)
    with pytest.raises(migration.MigrationFailed, match="canceled by request") as info:
        migration.migrate(
            host, host, Node(name="n2", address="10.0.0.2"), "web1", MigrationParams(),
            lambda _p: None, cancel,
        )  # fmt: skip
    assert info.value.aborted and "migrateToURI3" not in [c[0] for c in dom.calls]


def test_ipv6_addresses_are_bracketed_in_every_uri() -> None:
    node = Node(name="n6", address="fd00::6", ssh_port=2222)
    stream = migration.migration_uri_params(node, MigrationParams())
    assert stream[libvirt.VIR_MIGRATE_PARAM_URI] == "tcp://[fd00::6]"
    assert default_libvirt_uri(node, "k", "h").startswith("qemu+libssh://root@[fd00::6]:2222/")
    given = Node(name="n7", address="fd00::7", migration_address="[fd00::77]")  # by hand
    assert (
        migration.migration_uri_params(given, MigrationParams())[libvirt.VIR_MIGRATE_PARAM_URI]
        == "tcp://[fd00::77]"
    )
    plain = Node(name="n4", address="10.0.0.4", migration_address="10.1.0.4")
    assert (
        migration.migration_uri_params(plain, MigrationParams())[libvirt.VIR_MIGRATE_PARAM_URI]
        == "tcp://10.1.0.4"
    )


def test_a_node_without_a_peer_uri_is_reached_over_tls_at_its_address() -> None:
    """A node added without --peer-uri can be a migration target (libvirtd on TLS there)."""
    assert migration.peer_uri(Node(name="n2", address="10.0.0.2")) == "qemu+tls://10.0.0.2/system"
    assert migration.peer_uri(Node(name="n6", address="fd00::6")) == "qemu+tls://[fd00::6]/system"
    given = Node(name="n3", address="10.0.0.3", peer_uri="qemu+ssh://root@n3/system")
    assert migration.peer_uri(given) == "qemu+ssh://root@n3/system"


def test_the_migration_goes_to_the_targets_peer_uri(monkeypatch) -> None:
    dom = Dom()
    guest = _guest(monkeypatch, dom)
    called: list[str] = []
    monkeypatch.setattr(guest, "migrate", lambda uri, params, flags: called.append(uri))

    class Source:
        node = "node1"

        def guest(self, name: str) -> Guest:
            return guest

    target = Node(name="node2", address="10.0.0.2")
    migration.migrate(
        Source(),
        Source(),
        target,
        "web1",
        MigrationParams(),
        lambda _p: None,
        Cancellation(),  # type: ignore[arg-type]
    )
    assert called == ["qemu+tls://10.0.0.2/system"]


BASE_FLAGS = (
    libvirt.VIR_MIGRATE_PEER2PEER
    | libvirt.VIR_MIGRATE_PERSIST_DEST
    | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
)


@pytest.mark.parametrize(
    ("params", "flags", "typed"),
    [
        (MigrationParams(), BASE_FLAGS | libvirt.VIR_MIGRATE_LIVE, {}),
        (MigrationParams(live=False), BASE_FLAGS, {}),
        (
            MigrationParams(copy_storage=True, unsafe=True, bandwidth=64),
            BASE_FLAGS
            | libvirt.VIR_MIGRATE_LIVE
            | libvirt.VIR_MIGRATE_NON_SHARED_DISK
            | libvirt.VIR_MIGRATE_UNSAFE,
            {libvirt.VIR_MIGRATE_PARAM_BANDWIDTH: 64},
        ),
        (
            MigrationParams(
                caps={"auto-converge": 1, "postcopy-ram": 1, "xbzrle": 1, "parallel": 4},
                allow_postcopy=True,
                encryption=True,
            ),
            BASE_FLAGS
            | libvirt.VIR_MIGRATE_LIVE
            | libvirt.VIR_MIGRATE_AUTO_CONVERGE
            | libvirt.VIR_MIGRATE_POSTCOPY
            | libvirt.VIR_MIGRATE_COMPRESSED
            | libvirt.VIR_MIGRATE_PARALLEL
            | libvirt.VIR_MIGRATE_TLS,
            {
                libvirt.VIR_MIGRATE_PARAM_COMPRESSION: ["xbzrle"],
                libvirt.VIR_MIGRATE_PARAM_PARALLEL_CONNECTIONS: 4,
                libvirt.VIR_MIGRATE_PARAM_AUTO_CONVERGE_INITIAL: migration.AUTO_CONVERGE_INITIAL,
                libvirt.VIR_MIGRATE_PARAM_AUTO_CONVERGE_INCREMENT: (
                    migration.AUTO_CONVERGE_INCREMENT
                ),
            },
        ),
        # a non-live migration throttles nothing and has no post-copy to switch to
        (
            MigrationParams(
                live=False, caps={"auto-converge": 1, "postcopy-ram": 1}, allow_postcopy=True
            ),
            BASE_FLAGS,
            {},
        ),
        # post-copy only when allowed, whatever the capabilities say
        (
            MigrationParams(caps={"postcopy-ram": 1, "compression": 1}),
            BASE_FLAGS | libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_COMPRESSED,
            {libvirt.VIR_MIGRATE_PARAM_COMPRESSION: ["mt"]},
        ),
    ],
)
def test_the_migration_call_gets_the_flags_and_parameters_asked_for(
    monkeypatch, params: MigrationParams, flags: int, typed: dict[str, Any]
) -> None:
    guest = _guest(monkeypatch, Dom())
    called: list[tuple[str, dict[str, Any], int]] = []
    monkeypatch.setattr(
        guest, "migrate", lambda uri, uri_params, fl: called.append((uri, uri_params, fl))
    )

    class Source:
        node = "node1"

        def guest(self, name: str) -> Guest:
            return guest

    target = Node(
        name="node2",
        address="10.0.0.2",
        peer_uri="qemu+ssh://root@node2/system",
        migration_address="192.168.9.2",
    )
    migration.migrate(
        Source(),
        Source(),
        target,
        "web1",
        params,
        lambda _p: None,
        Cancellation(),  # type: ignore[arg-type]
    )
    [(uri, uri_params, got)] = called
    assert uri == "qemu+ssh://root@node2/system"  # the node's own peer URI
    assert got == flags
    assert uri_params == {libvirt.VIR_MIGRATE_PARAM_URI: "tcp://192.168.9.2", **typed}


def test_ctrl_c_while_the_monitor_waits_cancels_the_job(monkeypatch) -> None:
    """In-process gnt-lv: the interrupt reaches the monitor's thread; the job is canceled."""
    dom = Dom({"type": libvirt.VIR_DOMAIN_JOB_UNBOUNDED, "memory_total": 100})
    cancel = Cancellation()
    params = MigrationParams(poll_interval=0.001)
    monitor = migration._Monitor(
        _guest(monkeypatch, dom), params, lambda _p: None, cancel, time.monotonic
    )
    worker = migration._Worker(monitor.guest, "qemu+tls://node2/system", {}, 0)
    polls = [0]

    def poll() -> None:
        polls[0] += 1
        if polls[0] == 1:
            raise KeyboardInterrupt
        worker.done.set()

    monkeypatch.setattr(monitor, "poll", poll)
    migration._wait(worker, monitor, params, time.monotonic)
    assert cancel.is_set() and cancel.reason == "interrupted by the user"
    assert monitor.aborted and ("abortJob", ()) in dom.calls


class _StateDom(Dom):
    """A stub virDomain in ``state`` for ``reason``."""

    def __init__(self, state: int, reason: int) -> None:
        super().__init__()
        self.state_and_reason = [state, reason]

    def info(self) -> list[int]:
        return [self.state_and_reason[0], 262144, 262144, 1, 0]

    def state(self, flags: int = 0) -> list[int]:
        self._call("state")
        return list(self.state_and_reason)

    def isPersistent(self) -> int:  # noqa: N802 - libvirt's names
        return 1


@pytest.mark.parametrize(
    "state, reason, postcopy_source",
    [
        (libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_POSTCOPY, True),
        (libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_POSTCOPY_FAILED, True),
        (libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_MIGRATION, False),
        (libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_USER, False),
        (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_RUNNING_POSTCOPY, False),
    ],
)
def test_a_post_copy_migrations_paused_source_says_so(
    monkeypatch: pytest.MonkeyPatch, state: int, reason: int, postcopy_source: bool
) -> None:
    """Its state's reason is asked of paused domains only (one more call, when paused)."""
    dom = _StateDom(state, reason)
    info = _guest(monkeypatch, dom).info()
    assert info.postcopy_source is postcopy_source
    paused = state == libvirt.VIR_DOMAIN_PAUSED
    assert info.state == ("paused" if paused else "running")
    assert [c for c in dom.calls if c[0] == "state"] == ([("state", ())] if paused else [])
