"""The import mode of instance creation: an instance made from an export.

``OpInstanceCreate(mode="import")`` runs LUInstanceCreate with
``ImportModeHandler`` (registered here): the export is read on its node,
the new instance is shaped from it and every disk is copied node to node,
verified against the export's manifest.
"""

from __future__ import annotations

from typing import Any

from ganeti_lv import constants, exportinfo, locking
from ganeti_lv.cmdlib.base import FeedbackFn, LogicalUnit
from ganeti_lv.cmdlib.common import check_node_online, expand_node
from ganeti_lv.cmdlib.instance import CreateModeHandler, register_create_mode
from ganeti_lv.errors import ECODE_INVAL, OpPrereqError
from ganeti_lv.node import progress
from ganeti_lv.node.transport import node_call
from ganeti_lv.objects import disk_path
from ganeti_lv.units import coerce_beparams, coerce_params


class ImportModeHandler(CreateModeHandler):
    """``OpInstanceCreate(mode="import")``: create an instance from an export.

    The export is read from ``src_node`` (config.ini and manifest); disks,
    NICs and parameters come from it unless the opcode gives them; every
    disk is copied node to node and verified against the manifest's checksum
    (in the manifest's algorithm: older exports have a plain sha256).
    """

    def check_arguments(self) -> None:
        """Import needs the source node."""
        if not self.lu.op.src_node:
            raise OpPrereqError("Import requires a source node (src_node)", ECODE_INVAL)

    def expand_names(self) -> None:
        """Lock the source node (shared: only read)."""
        lu = self.lu
        lu.op.src_node = expand_node(lu.cfg, lu.op.src_node)
        locks = lu.needed_locks
        assert locks is not None
        nodes = locks.get(locking.LEVEL_NODE, [])
        assert isinstance(nodes, list)
        locks[locking.LEVEL_NODE] = sorted({*nodes, lu.op.src_node})

    def check_prereq(self) -> None:
        """Read and check the export; shape the instance from it."""
        lu = self.lu
        src = lu.cfg.get_node(lu.op.src_node)
        assert src is not None
        check_node_online(lu.cfg, src.name)
        name = (lu.op.src_path or lu.op.instance_name).rstrip("/").rsplit("/", 1)[-1]
        data = node_call(lu.rpc.export_read, src, lu.cluster, name).Raise(
            f"Cannot read the export of {name} on {src.name}", prereq=True
        )
        desc = exportinfo.describe(exportinfo.parse_config(data.config_text))
        manifest = exportinfo.Manifest.from_json(data.manifest_text)
        if len(manifest.disks) != len(desc.disks):
            raise OpPrereqError("Export manifest and config.ini disagree on disks", ECODE_INVAL)
        inst = lu.instance
        if not lu.op.disks:
            inst.disks = desc.disks
            for disk in inst.disks:
                disk.dev_type = inst.disk_template
        if not lu.op.nics and not inst.nics:
            inst.nics = [n for n in desc.nics if n.mac not in _used_macs(lu)]
        be = {k: v for k, v in desc.beparams.items() if k in constants.BEC_DEFAULTS}
        hv = {k: v for k, v in desc.hvparams.items() if k in constants.HVC_DEFAULTS}
        inst.beparams = coerce_beparams({**be, **lu.op.beparams}, dict(constants.BEC_DEFAULTS))
        inst.hvparams = coerce_params(
            {**hv, **lu.op.hvparams}, constants.HVC_DEFAULTS, "hypervisor"
        )
        inst.os = desc.os or inst.os
        self.src = src
        self.sources = [f"{data.path}/{d.file}" for d in manifest.disks]
        self.checksums = [d.checksum_text for d in manifest.disks]

    def hooks_env(self) -> dict[str, Any]:
        """Ganeti's import keys."""
        return {"SRC_NODE": self.src.name, "SRC_PATH": self.sources[0].rsplit("/", 1)[0]}

    def fill_disks(self, feedback_fn: FeedbackFn) -> None:
        """Copy every exported disk onto the new disks, verifying its checksum."""
        lu = self.lu
        for idx, (src_path, sha) in enumerate(zip(self.sources, self.checksums, strict=True)):
            feedback_fn(f"Importing disk/{idx} from {self.src.name}")
            res = node_call(
                lu.rpc.copy_disk,
                self.src,
                src_path,
                lu.pnode,
                disk_path(lu.cluster, lu.instance, idx),
                expect_sha256=sha,
                progress_fn=progress.ProgressReporter(feedback_fn, f"disk/{idx}"),
            )
            stats = res.Raise(f"Import of disk/{idx} failed")
            feedback_fn(f"disk/{idx}: {stats.checksum_text} verified")


def _used_macs(lu: LogicalUnit) -> set[str]:
    data = lu.cfg.snapshot()  # read-only: lookups
    return {n.mac for inst in data.instances.values() for n in inst.nics}


register_create_mode("import", ImportModeHandler)
