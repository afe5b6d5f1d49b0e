"""The import mode of instance creation: an instance made from an export.

``OpInstanceCreate(mode="import")`` runs LUInstanceCreate with
``ImportModeHandler`` (registered here): the export is read on its node,
the new instance is shaped from it and every disk is copied node to node,
verified against the export's manifest. A cancel request (Ctrl-C, SIGTERM,
``job cancel``) stops the copy on both nodes; the new instance's disks are
removed and nothing is recorded (see ``LUInstanceCreate.Exec``).
"""

from __future__ import annotations

from typing import Any

from ganeti_lv import constants, exportcompat, exportinfo, locking
from ganeti_lv.cmdlib.base import FeedbackFn, LogicalUnit
from ganeti_lv.cmdlib.common import cancel_reason, check_node_online, copy_canceled, expand_node
from ganeti_lv.cmdlib.instance_create import CreateModeHandler, register_create_mode
from ganeti_lv.cmdlib.instance_nics import (
    check_nic_kind,
    check_unicast_mac,
    choosing_macs,
    take_mac,
)
from ganeti_lv.errors import (
    ECODE_INVAL,
    OperationCanceled,
    OpExecError,
    OpPrereqError,
)
from ganeti_lv.names import check_device_names, check_tags
from ganeti_lv.node import progress
from ganeti_lv.node.transport import node_call
from ganeti_lv.objects import Nic, disk_path
from ganeti_lv.units import MIB, coerce_beparams, coerce_hvparams, without_resets


class ImportModeHandler(CreateModeHandler):
    """``OpInstanceCreate(mode="import")``: create an instance from an export.

    The export is read from ``src_node`` (config.ini, the manifest if any,
    the directory's files); disks, NICs and parameters come from it unless
    the opcode gives them; every disk is copied node to node and verified
    against the manifest's checksum (in the manifest's algorithm: older
    exports have a plain sha256).
    """

    # the export directory read on src_node (set in expand_names)
    path = ""

    def check_arguments(self) -> None:
        """Import needs the source node."""
        if not self.lu.op.src_node:
            raise OpPrereqError("Import requires a source node (src_node)", ECODE_INVAL)

    def expand_names(self) -> None:
        """Lock the source node and, for an export in the export dir, the export,
        shared (an export of the same name or ``backup remove`` would replace
        or remove it under the copy; other imports only read it)."""
        lu = self.lu
        lu.op.src_node = expand_node(lu.cfg, lu.op.src_node)
        locks = lu.needed_locks
        assert locks is not None
        nodes = locks.get(locking.LEVEL_NODE, [])
        if isinstance(nodes, list):  # else every node, the allocator's choice still open
            locks[locking.LEVEL_NODE] = sorted({*nodes, lu.op.src_node})
        export_dir = lu.cfg.get_cluster().export_dir.rstrip("/")
        self.path = exportcompat.resolve_src_path(export_dir, lu.op.src_path, lu.op.instance_name)
        folder, name = self.path.rsplit("/", 1)
        if folder == export_dir:
            # NAME.new and NAME.old are NAME's export being written or replaced
            locks[locking.LEVEL_EXPORT] = [exportinfo.export_dir_owner(name)[0]]
            lu.share_locks[locking.LEVEL_EXPORT] = 1

    def check_prereq(self) -> None:
        """Read and check the export; shape the instance from it (nothing is created yet)."""
        lu = self.lu
        src = lu.cfg.get_node(lu.op.src_node)
        assert src is not None
        check_node_online(lu.cfg, src.name)
        path = self.path
        data = node_call(lu.rpc.export_read, src, lu.cluster, path).Raise(
            f"Cannot read the export in {path} on {src.name}", prereq=True
        )
        # an empty or damaged manifest.json is refused (ECODE_INVAL), never taken for
        # an export without one (whose images get no checksum checks)
        manifest = (
            exportinfo.Manifest.from_json(data.manifest_text)
            if data.manifest_text is not None
            else None
        )
        escaped = manifest is None or manifest.config_escaped
        desc = exportinfo.describe(exportinfo.parse_config(data.config_text, escaped))
        if manifest is not None:
            exportinfo.restore_translated(desc.hvparams, manifest.translated)
        exportcompat.check_hypervisor(desc)
        checked = exportcompat.check_dumps(desc, data, manifest)
        self.foreign = manifest is None
        if self.foreign:
            lu.LogInfo(
                f"{path} on {src.name} is an export written by Ganeti (no manifest.json):"
                " sizes checked, checksums computed while copying"
            )
        for warning in checked.warnings:
            lu.LogWarning(warning)
        inst = lu.instance
        if not lu.op.disks:
            # the names an export gives follow the rule of the names given here
            check_device_names("disk", [d.name for d in desc.disks])
            inst.disks = desc.disks
            for disk in inst.disks:
                disk.dev_type = inst.disk_template
        else:
            _check_given_disks([d.size for d in inst.disks], [d.size for d in desc.disks])
        self.nics_from_export = not lu.op.nics and not inst.nics
        if self.nics_from_export:
            check_device_names("NIC", [n.name for n in desc.nics])
            inst.nics = _export_nics(lu, desc.nics)
        self._take_params(desc)
        inst.os = desc.os or inst.os
        if not lu.op.tags:
            check_tags(desc.tags, f"instance {inst.name} (from the export; give --tags)")
            inst.tags = list(desc.tags)
        self.src = src
        self.path = data.path
        self.sources = checked.paths
        self.dump_sizes = [d.size * MIB for d in desc.disks]  # what each copy must bring
        self.checksums: list[str | None] = (
            [d.checksum_text for d in manifest.disks] if manifest else [None] * len(desc.disks)
        )

    def _take_params(self, desc: exportinfo.ExportDescription) -> None:
        """The export's parameters as they mean here; the opcode's (-H/-B) win."""
        lu, inst = self.lu, self.lu.instance
        hv = exportcompat.translate_hvparams(desc.hvparams)
        be = exportcompat.translate_beparams(desc.beparams)
        dropped = [f"hypervisor: {', '.join(hv.dropped)}"] if hv.dropped else []
        dropped += [f"backend: {', '.join(be.dropped)}"] if be.dropped else []
        if self.foreign and dropped:
            lu.LogWarning(
                "Parameters of the export without meaning here were dropped"
                f" ({'; '.join(dropped)}); the cluster's migration settings apply"
            )
        differences = exportcompat.hardware_differences(desc.hvparams)
        if self.foreign and differences:
            lu.LogWarning(
                "The exported guest had other hardware than it gets here:"
                f" {', '.join(differences)}; it may not boot or find its disks and NICs"
                " unless it has the drivers and names them so"
            )
        exported = dict(be.params)
        if "memory" in lu.op.beparams:  # -B memory= sets both of the export's sizes
            exported.pop("maxmem", None)
            exported.pop("minmem", None)
        # an operator's -B/-H wins; "-key" takes the export's value away (the default applies)
        inst.beparams = without_resets(
            coerce_beparams({**exported, **lu.op.beparams}, dict(constants.BEC_DEFAULTS))
        )
        inst.hvparams = without_resets(coerce_hvparams({**hv.params, **lu.op.hvparams}))

    def missing_bridges_hint(self) -> str:
        """NIC links taken from the export: the operator gives them with --net."""
        if not self.nics_from_export:
            return ""
        return (
            " (NIC links of the export; give the NICs with --net 0:link=BRIDGE[,mac=...],"
            " one --net per NIC)"
        )

    def hooks_env(self) -> dict[str, Any]:
        """Ganeti's import keys."""
        # SRC_IMAGES as Ganeti's hooks get it: the text of a Python list of the dumps
        return {
            "SRC_NODE": self.src.name,
            "SRC_PATH": self.path,
            "SRC_IMAGES": str(list(self.sources)),
        }

    def fill_disks(self, feedback_fn: FeedbackFn) -> None:
        """Copy every exported disk onto the new disks, verifying or computing its checksum.

        The job's cancel request stops the running copy on both nodes
        (``OperationCanceled``); LUInstanceCreate then removes the new disks,
        and nothing was recorded.
        """
        lu = self.lu
        cancel = lu.proc.cancel
        for idx, (src_path, sha) in enumerate(zip(self.sources, self.checksums, strict=True)):
            if cancel.is_set():
                raise OperationCanceled(
                    f"{self._what()} canceled ({cancel_reason(cancel)}) before copying disk/{idx}"
                )
            feedback_fn(f"Importing disk/{idx} from {self.src.name}:{src_path}")
            res = node_call(
                lu.rpc.copy_disk,
                self.src,
                src_path,
                lu.pnode,
                disk_path(lu.cluster, lu.instance, idx),
                expect_sha256=sha,
                progress_fn=progress.ProgressReporter(feedback_fn, f"disk/{idx}"),
                cancel=cancel,
            )
            if copy_canceled(res, cancel):
                feedback_fn(f"Copy of disk/{idx} stopped on {self.src.name} and {lu.pnode.name}")
                raise OperationCanceled(
                    f"{self._what()} canceled ({cancel_reason(cancel)}) while copying disk/{idx}"
                )
            stats = res.Raise(f"Import of disk/{idx} failed")
            if stats.size != self.dump_sizes[idx]:  # changed since it was checked
                raise OpExecError(
                    f"Import of disk/{idx} failed: {src_path} on {self.src.name} held"
                    f" {stats.size} bytes, the export says {self.dump_sizes[idx]}"
                )
            if sha is None:
                feedback_fn(
                    f"disk/{idx}: {stats.checksum_text} computed on {self.src.name} while"
                    " copying (the export carries no checksum to verify against)"
                )
            else:
                feedback_fn(f"disk/{idx}: {stats.checksum_text} verified")

    def _what(self) -> str:
        return f"Import of {self.lu.instance.name} from {self.src.name}:{self.path}"


def _check_given_disks(given: list[int], exported: list[int]) -> None:
    """Disks given for an import start with the export's, of the same sizes (MiB).

    Each exported disk is copied as it is onto the disk of its index; more
    disks than the export has are created empty.
    """
    if given[: len(exported)] != exported:
        raise OpPrereqError(
            "The disks given for the import do not start with the export's"
            f" ({', '.join(f'{s} MiB' for s in exported) or 'none'}): an import copies the"
            " export's disks as they are; give no disks to take them from the export",
            ECODE_INVAL,
        )


def _export_nics(lu: LogicalUnit, nics: list[Nic]) -> list[Nic]:
    """The export's NICs; one whose MAC address is in use in the cluster gets a new one.

    A NIC that cannot be given here as it was (another mode, a VLAN, a
    Ganeti network) is refused, with the way on: NICs given with ``--net``.

    An instance restored beside the one it was exported from would
    otherwise share its address on the same network.
    """
    for idx, nic in enumerate(nics):
        way_on = "; give the instance's NICs with --net"
        check_nic_kind(f"NIC {idx} of the export", nic.mode, nic.vlan, nic.network, way_on)
        check_unicast_mac(nic.mac, f"of the export's NIC {idx}{way_on}")
    out, renewed = [], []
    with choosing_macs(lu, lu.cfg.snapshot()) as used:
        for idx, nic in enumerate(nics):
            copy = nic.copy()
            mac = take_mac(nic.mac, used)
            if mac is None:
                mac = take_mac("generate", used)
                renewed.append((idx, nic.mac.lower(), mac))
            copy.mac = str(mac)
            out.append(copy)
    for idx, old, new in renewed:  # said once the ledger's lock is released
        lu.LogWarning(
            f"MAC address {old} of the export's NIC {idx} is in use in the cluster:"
            f" the NIC gets the new address {new}"
        )
    return out


register_create_mode("import", ImportModeHandler)
