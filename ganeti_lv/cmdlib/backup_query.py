"""LUBackupQuery and LUBackupRemove (the exports on the nodes), and verify's export checks.

Both read the export directories through the node operations; cluster
verify reports the snapshot overlays an interrupted export left and the
incomplete ``.new``/``.old`` export directories.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ganeti_lv import constants, locking
from ganeti_lv.cmdlib.base import FeedbackFn, NoHooksLU, register_lu
from ganeti_lv.cmdlib.cluster import VerifyData, register_verify_check
from ganeti_lv.cmdlib.common import ask_nodes, expand_node
from ganeti_lv.errors import ECODE_ENVIRON, ECODE_NOENT, OpExecError, OpPrereqError
from ganeti_lv.hypervisor.export_types import OVERLAY_SUFFIX
from ganeti_lv.names import check_instance_name
from ganeti_lv.opcodes import OpBackupQuery, OpBackupRemove


@register_lu(OpBackupQuery)
class LUBackupQuery(NoHooksLU):
    """List exports per node: {node: [instance, ...]} (False for unreachable nodes).

    Exports Ganeti wrote (config.ini without manifest.json) are complete too;
    with ``with_kind`` each entry says who wrote it, and what interrupted
    exports left (``NAME.new``, ``NAME.old``) follows as entries with
    ``stale`` set and their ``path`` (a list run as a query has no job log
    for the warnings that say so).
    """

    REQ_BGL = False
    QUERY = True

    def ExpandNames(self) -> None:
        """No locks: a read of node directories."""
        self.nodes = [expand_node(self.cfg, n) for n in self.op.nodes] or self.cfg.node_names()
        self.needed_locks = {}

    def Exec(self, feedback_fn: FeedbackFn) -> dict[str, Any]:
        """Complete exports by node; stale ones are reported as warnings."""
        data = self.cfg.snapshot()  # read-only: lookups
        out: dict[str, Any] = {}
        nodes = [data.nodes[name] for name in sorted(self.nodes)]
        answers, _failed = ask_nodes(self.rpc.export_list, nodes, data.cluster)
        for node in nodes:
            name = node.name
            if name not in answers:
                out[name] = False
                continue
            entries = answers[name] or []
            complete = sorted((e.instance, e.kind) for e in entries if e.complete)
            stale = sorted((e.instance, e.kind, e.path) for e in entries if e.stale)
            if self.op.with_kind:
                out[name] = [{"name": n, "kind": kind, "stale": False} for n, kind in complete]
                out[name] += [
                    {"name": n, "kind": kind, "stale": True, "path": path}
                    for n, kind, path in stale
                ]
            else:
                out[name] = [n for n, _ in complete]
            for _n, _kind, path in stale:
                self.LogWarning(f"Stale incomplete export {path} on {name}")
        return out


@register_lu(OpBackupRemove)
class LUBackupRemove(NoHooksLU):
    """Remove every export of an instance (the instance itself may be gone).

    A short name is expanded to the instance it names, as in Ganeti, unless
    an export has exactly that name (``backup list`` shows it so: the export
    of a removed instance ``web1`` beside an instance ``web1.example.com``):
    the name shown removes the export shown, never another instance's.
    """

    REQ_BGL = False

    def ExpandNames(self) -> None:
        """Lock the instance when it still exists (so no export of it runs) and its
        export (so no import reads it meanwhile); a short name's export too."""
        given = self.op.instance_name
        check_instance_name(given)  # refused here, not on each node
        name = self.cfg.expand_instance_name(given) or given
        self.short = given if name != given else None
        self.op.instance_name = name
        self.needed_locks = {
            locking.LEVEL_INSTANCE: [name],
            locking.LEVEL_EXPORT: sorted({name, given}),
        }

    def CheckPrereq(self) -> None:
        """A short name that is also an export's exact name removes that export."""
        if self.short is None:
            return
        data = self.cfg.snapshot()  # read-only: lookups
        online = [node for node in data.nodes.values() if not node.offline]
        answers, failed = ask_nodes(self.rpc.export_list, online, data.cluster)
        unasked = sorted(failed) + sorted(n.name for n in data.nodes.values() if n.offline)
        if any(e.instance == self.short for found in answers.values() for e in found or []):
            self.LogInfo(
                f"{self.short} is the name of an export: removing it, not the exports of"
                f" instance {self.op.instance_name}"
            )
            self.op.instance_name = self.short
        elif unasked:  # one of them may hold it: removing the instance's would be a guess
            raise OpPrereqError(
                f"Cannot tell whether {self.short} is the name of an export: node(s)"
                f" {', '.join(unasked)} did not answer or are offline; give the full name"
                f" ({self.op.instance_name}) to remove that instance's exports",
                ECODE_ENVIRON,
            )

    def Exec(self, feedback_fn: FeedbackFn) -> list[str]:
        """Remove the export from every node having one; payload: those nodes."""
        if self.op.stale:
            return self._remove_stale(feedback_fn)
        what = f"an export of {self.op.instance_name}"
        removed = [
            name for name, found in self._on_online_nodes(self.rpc.export_remove, what) if found
        ]
        if not removed:
            raise OpExecError(f"No exports found for instance {self.op.instance_name}", ECODE_NOENT)
        feedback_fn(f"Removed the export of {self.op.instance_name} on {', '.join(removed)}")
        return sorted(removed)

    def _on_online_nodes(self, method: Callable[..., Any], what: str) -> list[tuple[str, Any]]:
        """(node, payload) of ``method(node, cluster, instance)`` on every online node.

        A node where it fails, or that is offline, is warned about (``what``
        was not removed there) and left out. The online nodes are asked at
        once; the warnings and the answers come in the configuration's order.
        """
        data = self.cfg.snapshot()  # read-only: lookups
        nodes = list(data.nodes.values())
        online = [node for node in nodes if not node.offline]
        answers, failed = ask_nodes(method, online, data.cluster, self.op.instance_name)
        out = []
        for node in nodes:
            if node.offline:
                self.LogWarning(f"Node {node.name} is offline: {what} there, if any, stays")
            elif node.name in failed:
                self.LogWarning(f"Could not remove export on {node.name}: {failed[node.name]}")
            else:
                out.append((node.name, answers[node.name]))
        return out

    def _remove_stale(self, feedback_fn: FeedbackFn) -> list[str]:
        """Remove what an interrupted export left (``NAME.new``); complete exports stay."""
        touched = []
        what = f"what an interrupted export of {self.op.instance_name} left"
        for name, lines in self._on_online_nodes(self.rpc.export_remove_stale, what):
            for line in lines:
                feedback_fn(f"{name}: {line}")
            if lines:
                touched.append(name)
        if not touched:
            raise OpExecError(
                f"No incomplete export of instance {self.op.instance_name} found", ECODE_NOENT
            )
        return sorted(touched)


# ---------------------------------------------------------------- cluster verify


@register_verify_check(order=60)
def check_export_overlays(vd: VerifyData) -> None:
    """Snapshot overlays of an interrupted export, live or as files on a node."""
    cluster = vd.config.cluster
    for node_name, doms in sorted(vd.domains.items()):
        for name, dom in sorted(doms.items()):
            for overlay in dom.overlays:
                vd.report(
                    "EINSTANCEOVERLAY",
                    "instance",
                    name,
                    f"runs on the snapshot overlay {overlay} on {node_name} (an interrupted"
                    " export); the next operation on the instance merges it",
                )
    for node in vd.online_nodes():
        if node.name not in vd.domains:
            continue
        for path in vd.list_files(node, cluster.file_storage_dir) or []:
            if path.endswith(OVERLAY_SUFFIX):
                vd.claim_file(node.name, path)
                vd.report(
                    "ENODEOVERLAY",
                    "node",
                    node.name,
                    f"leftover export snapshot overlay {path}",
                )


@register_verify_check(order=61)
def check_stale_exports(vd: VerifyData) -> None:
    """Incomplete exports (``.new``/``.old``) left by a failed or killed export."""
    nodes = [node for node in vd.online_nodes() if node.name in vd.domains]
    answers, _failed = ask_nodes(vd.rpc.export_list, nodes, vd.config.cluster)
    for node in nodes:
        for entry in answers.get(node.name) or []:
            if entry.stale:
                vd.report(
                    "ENODESTALEEXPORT",
                    "node",
                    node.name,
                    f"incomplete export {entry.path}, left by an interrupted export (remove"
                    f" only it with 'gnt-lv backup remove --stale {entry.instance}', which"
                    f" keeps the complete export {entry.instance}, or export again)",
                    severity=constants.VERIFY_WARNING,
                )
