"""The cleanup half of the TLMigrateInstance tasklet (``instance_migration``).

Ganeti's ``migrate --cleanup``: after an interrupted migration, every online
node that runs guests is asked whether it knows the instance's domain, and
the configuration is made to say where it runs. Nothing is changed while a
node cannot be asked (it may run a copy) or a node holds the domain as a
post-copy migration's source (it holds memory the target still needs);
migration jobs still running are aborted first and the nodes asked again;
the copies beside the one that runs (definitions, ``file`` images) are
removed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ganeti_lv import constants
from ganeti_lv.cmdlib.common import instance_domains
from ganeti_lv.cmdlib.migration_checks import storage_paths
from ganeti_lv.config import ConfigStore
from ganeti_lv.errors import ECODE_ENVIRON, ECODE_STATE, OpExecError
from ganeti_lv.hypervisor.base import NodeOps
from ganeti_lv.node.transport import NodeResult, node_call
from ganeti_lv.objects import Cluster, Instance, Node

FeedbackFn = Callable[[str], None]

# what a post-copy's source still holding part of the guest's memory asks of its operator
POSTCOPY_ADVICE = (
    "If libvirt's job still runs there (virsh domjobinfo), let it end; if the post-copy"
    " failed, resume it (virsh migrate --postcopy-resume)."
)


@dataclass(frozen=True)
class _Scan:
    """What the online nodes said of the instance's domain."""

    states: dict[str, str]  # node -> the domain's state, for each node that knows it
    postcopy_sources: list[str]  # nodes holding it as a post-copy migration's source
    unasked: dict[str, str]  # node -> why it could not be asked (it may run a copy)


class CleanupSteps:
    """The cleanup's Exec, for TLMigrateInstance (which provides what is declared here)."""

    rpc: NodeOps
    cfg: ConfigStore
    source: str
    target: str | None
    _inst: Callable[[], Instance]
    _cluster: Callable[[], Cluster]
    _node: Callable[[str], Node]

    def _scan(self) -> _Scan:
        """Ask every online node that runs guests (vm_capable) about the domain."""
        online = [self._node(n) for n in sorted(self.cfg.node_names())]
        online = [node for node in online if not node.offline and node.vm_capable]
        found, unasked = instance_domains(self.rpc, online, self._inst().name)
        return _Scan(
            states={name: dom.state for name, dom in found.items()},
            postcopy_sources=sorted(n for n, dom in found.items() if dom.postcopy_source),
            unasked=unasked,
        )

    def _decided_scan(self, scan: _Scan) -> dict[str, str]:
        """The scan's states; refused, changing nothing, when the nodes' answers cannot
        decide: a post-copy's source (it holds memory its target needs) or a node that
        did not answer."""
        inst = self._inst()
        if scan.postcopy_sources:
            raise OpExecError(
                f"Instance {inst.name} is paused on {', '.join(scan.postcopy_sources)} as a"
                " post-copy migration's source, which holds memory its target still needs:"
                f" nothing was changed. {POSTCOPY_ADVICE} Then run the cleanup again",
                ECODE_STATE,
            )
        if scan.unasked:
            # as Ganeti's cleanup, before anything: a node that does not answer may run
            # a copy too
            raise OpExecError(
                f"Cannot tell where instance {inst.name} runs: "
                + "; ".join(f"node {n} did not answer ({why})" for n, why in scan.unasked.items())
                + ". Nothing was changed; make the node reachable (its libvirtd), or mark"
                " it offline if it is down, and run the cleanup again",
                ECODE_ENVIRON,
            )
        return scan.states

    def _exec_cleanup(self, feedback_fn: FeedbackFn) -> None:
        """Ganeti's cleanup: make the configuration match where the instance runs."""
        inst = self._inst()
        scan = self._scan()
        feedback_fn(
            "Instance found on: "
            + (", ".join(f"{n} ({s})" for n, s in sorted(scan.states.items())) or "no node")
        )
        found = self._decided_scan(scan)
        running = sorted(n for n, s in found.items() if s == constants.DOMSTATE_RUNNING)
        paused = sorted(n for n, s in found.items() if s == constants.DOMSTATE_PAUSED)
        if len(running) > 1 or (paused and not running):
            # two copies running, or none but a paused one (a non-live migration's
            # source): abort the jobs that may still run, then look again
            for name in running or paused:
                node_call(self.rpc.abort_migration, self._node(name), inst.name).Warn(
                    f"Could not abort a migration job on {name}", feedback_fn
                )
            found = self._decided_scan(self._scan())  # a node may have stopped answering
            running = sorted(n for n, s in found.items() if s == constants.DOMSTATE_RUNNING)
            paused = sorted(n for n, s in found.items() if s == constants.DOMSTATE_PAUSED)
            if len(running) > 1:
                raise OpExecError(
                    f"The instance seems to be running on nodes {', '.join(running)};"
                    " manual intervention is needed"
                )
        if not running and paused:
            raise OpExecError(
                f"Instance {inst.name} runs nowhere: it is paused on {', '.join(paused)}."
                " Nothing was changed; resume it where its current state is (virsh resume)"
                " and run the cleanup again (a shutdown of a paused guest ends in a destroy"
                " that loses its memory)",
                ECODE_STATE,
            )
        if not running and inst.admin_state != constants.ADMINST_UP:
            # a stopped instance: when its primary holds it, any copy elsewhere is a leftover
            problem = self._stopped_elsewhere(found)
            if problem is not None:
                raise OpExecError(
                    f"Instance {inst.name} is stopped, but {problem}. Nothing was removed",
                    ECODE_STATE,
                )
            feedback_fn(f"Instance is stopped; its primary {self.source} holds it")
            self._clean_leftovers(self.source, found, feedback_fn)
            return
        if not running:
            raise OpExecError(
                "Instance does not seem to be running at all; in this case it's safer to"
                " repair by running 'gnt-lv instance shutdown' and then starting it again"
            )
        owner = running[0]
        if len(found) > 1:
            # an orphaned outgoing job (its ganeti_lv process died) still feeds the
            # leftover: abort it, then look again before anything is removed (a job
            # that could not be stopped may have moved the guest meanwhile)
            aborted = node_call(self.rpc.abort_migration, self._node(owner), inst.name)
            if aborted.ok and aborted.payload:
                feedback_fn(f"Aborted the migration job still running on {owner}")
            if not aborted.ok:
                # a job that may still complete onto what would be removed as leftovers
                raise OpExecError(
                    f"Instance {inst.name} runs on {owner}, but a migration job there could"
                    f" not be aborted ({aborted.fail_msg}). Nothing was changed; run the"
                    " cleanup again once the job has ended",
                    ECODE_STATE,
                )
            found = self._decided_scan(self._scan())
            now = sorted(n for n, s in found.items() if s == constants.DOMSTATE_RUNNING)
            if now != [owner]:
                raise OpExecError(
                    f"Instance {inst.name} ran on {owner} and now runs on"
                    f" {', '.join(now) or 'no node'}: a migration went on while the cleanup"
                    " looked. Nothing was changed; run the cleanup again",
                    ECODE_STATE,
                )
        if owner != self.source:
            self.cfg.set_instance_primary(inst.name, owner)
            feedback_fn(f"Instance runs on {owner}: configuration updated (was {self.source})")
            self.target = owner
        else:
            feedback_fn(f"Instance runs on its primary {owner}: configuration unchanged")
        self._clean_leftovers(owner, found, feedback_fn)

    def _stopped_elsewhere(self, found: dict[str, str]) -> str | None:
        """Why a stopped instance's primary may not hold its current copy (None: it does).

        Shared disks are the same on every node (a definition holds no data).
        Node-local disks: a primary that is offline or lacks the images
        cannot hold it, and a node that defines the domain while the primary
        does not may have received it (a migration whose configuration
        change was lost) or kept it (a failover interrupted before it
        removed the source's copy): only the operator can tell which.
        """
        inst = self._inst()
        if inst.disk_template != constants.DT_FILE:
            return None
        if self._node(self.source).offline:
            return f"its primary {self.source} is offline"
        others = sorted(n for n in found if n != self.source)
        if others and self.source not in found:
            where = " and ".join(others)
            return (
                f"it is defined on {where} and not on its primary {self.source}: it may have"
                " moved (a migration whose configuration change was lost), or a definition"
                " was kept from an interrupted failover. If the primary's disks are current,"
                " start the instance and run the cleanup again; if not, start the domain on"
                " the node that has the current disks (virsh start, on one node only) and run"
                " the cleanup, which then records it. Either way, shut the instance down"
                " afterwards (gnt-lv instance shutdown) if it should stay down"
            )
        res = self._disk_images_on(self._node(self.source))
        if res.ok and res.payload and all(res.payload.values()):
            return None
        return f"its primary {self.source} lacks its disk images ({res.fail_msg or 'missing'})"

    def _disk_images_on(self, node: Node) -> NodeResult[dict[str, bool]]:
        """Which of the instance's disk images exist on ``node``."""
        paths = storage_paths(self._cluster(), self._inst(), disks=True)
        return node_call(self.rpc.paths_exist, node, paths)

    def _clean_leftovers(self, owner: str, found: dict[str, str], feedback_fn: FeedbackFn) -> None:
        inst, cluster = self._inst(), self._cluster()
        for name in sorted(self.cfg.node_names()):
            node = self._node(name)
            if name == owner or node.offline:
                continue
            if name in found:
                feedback_fn(f"Removing the leftover domain on {name}")
                node_call(self.rpc.undefine_instance, node, inst.name).Warn(
                    f"Could not remove the leftover domain on {name}", feedback_fn
                )
            if inst.disk_template != constants.DT_FILE:
                continue
            images = self._disk_images_on(node)
            if images.ok and any((images.payload or {}).values()):
                feedback_fn(f"Removing leftover disk images on {name}")
                node_call(self.rpc.remove_disks, node, cluster, inst).Warn(
                    f"Could not remove leftover disk images on {name}", feedback_fn
                )
