"""Import trusts nothing it reads (local cluster, no guest runs).

An export of a stopped instance is tampered with on its node: a larger
``disk0_size`` in config.ini, a manifest naming a file outside the export,
a ``--src-dir`` leaving the export dir. Each import is refused before
anything is created; the untouched export still imports.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterator
from typing import Any

import pytest
from gnt_helpers import Gnt, node, purge_instance

from ganeti_lv.config import ConfigStore
from ganeti_lv.hypervisor.libvirt import LibvirtNodeOps
from ganeti_lv.objects import Instance, disk_dir

pytestmark = [pytest.mark.cluster]

SRC = "impchk1"
NEW = "impchk2"


@pytest.fixture
def exported(devcluster: Any) -> Iterator[tuple[Gnt, ConfigStore, LibvirtNodeOps, str, str]]:
    """SRC (16 MiB, never started) exported to the second node: (gnt, config, ops, n1, n2)."""
    gnt, config = Gnt(devcluster.data_dir), ConfigStore(devcluster.data_dir)
    ops = LibvirtNodeOps(devcluster.data_dir)
    n1, n2 = sorted(config.node_names())[:2]
    names = (SRC, NEW)
    try:
        for name in names:
            purge_instance(ops, config, name, "file")
        gnt.ok("instance", "add", "-t", "file", "--disk", "0:size=16M", "-n", n1, "--no-start", SRC)
        gnt.ok("backup", "export", "-n", n2, SRC)
        yield gnt, config, ops, n1, n2
    finally:
        for name in names:
            purge_instance(ops, config, name, "file")
        gnt("backup", "remove", SRC)
        ops.close()


def _sh(ops: LibvirtNodeOps, config: ConfigStore, where: str, script: str) -> str:
    res = ops.run_command(node(config, where), ["sh", "-c", script])
    assert res.exit_status == 0, res.output
    return res.stdout


def _refused(gnt: Gnt, n1: str, n2: str, src_dir: str) -> str:
    code, out, err = gnt("backup", "import", "-n", n1, "--src-node", n2, "--src-dir", src_dir, NEW)
    assert code != 0, out
    return out + err


def _nothing_created(config: ConfigStore, ops: LibvirtNodeOps, n1: str) -> None:
    assert config.get_instance(NEW) is None
    probe = Instance(name=NEW, primary_node=n1, disk_template="file")
    path = disk_dir(config.get_cluster(), probe)
    res = ops.run_command(node(config, n1), ["test", "-e", path])
    assert res.exit_status != 0, f"{path} created"


def test_tampered_exports_refused_and_nothing_created(exported) -> None:
    gnt, config, ops, n1, n2 = exported
    export_dir = config.get_cluster().export_dir
    d = shlex.quote(f"{export_dir}/{SRC}")

    # config.ini says 512 MiB over a 16 MiB image
    _sh(ops, config, n2, f"cp {d}/config.ini /tmp/{SRC}.ini")
    _sh(ops, config, n2, f"sed -i 's/^disk0_size = 16$/disk0_size = 512/' {d}/config.ini")
    out = _refused(gnt, n1, n2, SRC)
    assert "config.ini gives 512 MiB, the manifest 16777216 bytes" in out
    _nothing_created(config, ops, n1)
    _sh(ops, config, n2, f"mv /tmp/{SRC}.ini {d}/config.ini")

    # the manifest names a file outside the export
    manifest = json.loads(_sh(ops, config, n2, f"cat {d}/manifest.json"))
    original = json.dumps(manifest)
    manifest["disks"][0]["file"] = "../other/disk0.img"
    _sh(ops, config, n2, f"printf %s {shlex.quote(json.dumps(manifest))} > {d}/manifest.json")
    out = _refused(gnt, n1, n2, SRC)
    assert "the manifest names '../other/disk0.img'" in out
    _nothing_created(config, ops, n1)
    _sh(ops, config, n2, f"printf %s {shlex.quote(original)} > {d}/manifest.json")

    # a relative path out of the export dir is not an export name
    out = _refused(gnt, n1, n2, f"../file-storage/{SRC}")
    assert "neither an export name" in out
    _nothing_created(config, ops, n1)

    # the same export, untouched, imports (by its absolute path too)
    gnt.ok("backup", "import", "-n", n1, "--src-node", n2, "--src-dir", f"{export_dir}/{SRC}/", NEW)
    inst = config.get_instance(NEW)
    assert inst is not None and [d.size for d in inst.disks] == [16]
