"""Cluster-verify checks for half-done migrations and leftover migration images."""

from __future__ import annotations

from typing import Any

from ganeti_lv import constants
from ganeti_lv.cmdlib.migration_verify import half_done_nodes
from ganeti_lv.config import ConfigStore
from ganeti_lv.context import Context
from ganeti_lv.hypervisor.fake import FakeNodeOps
from ganeti_lv.mcpu import Processor
from ganeti_lv.node.transport import CommandResult
from ganeti_lv.objects import disk_dir, disk_path
from ganeti_lv.opcodes import OpClusterVerify

N1, N2, N3 = "node1.example.com", "node2.example.com", "node3.example.com"
INST, INST2 = "inst1.example.com", "inst2.example.com"
RUN, PAUSED, OFF = constants.DOMSTATE_RUNNING, constants.DOMSTATE_PAUSED, constants.DOMSTATE_SHUTOFF


def verify(ctx: Context) -> list[dict[str, str]]:
    """Run cluster verify; return its problems."""
    return list(Processor(ctx).execute(OpClusterVerify(), feedback_fn=lambda _: None))


def of(problems: list[dict[str, str]], code: str) -> list[dict[str, str]]:
    return [p for p in problems if p["code"] == code]


def test_half_done_states() -> None:
    assert half_done_nodes({N1: RUN}, N1) == []
    assert half_done_nodes({N1: RUN, N2: PAUSED}, N1) == [N1, N2]  # incoming on the target
    assert half_done_nodes({N1: PAUSED, N2: RUN}, N1) == [N1, N2]  # switched over
    assert half_done_nodes({N1: OFF, N2: RUN}, N2) == [N1, N2]  # source not undefined
    assert half_done_nodes({N2: PAUSED}, N1) == [N2]  # lone paused incoming domain
    assert half_done_nodes({N1: PAUSED}, N1) == []  # paused on its primary: not a migration
    assert half_done_nodes({N1: RUN, N2: RUN}, N1) == []  # split brain, reported elsewhere
    assert half_done_nodes({N1: OFF, N2: OFF}, N1) == []  # nothing active


def test_verify_reports_half_done_migration(ctx: Context, fake_ops: FakeNodeOps) -> None:
    fake_ops.add_domain(N1, INST)
    fake_ops.add_domain(N2, INST, state=PAUSED)
    fake_ops.add_domain(N1, INST2)
    problems = verify(ctx)
    found = of(problems, "EINSTANCEMIGRATION")
    assert [p["item"] for p in found] == [INST]
    assert f"{N1} (running), {N2} (paused)" in found[0]["message"]
    assert f"gnt-lv instance migrate --cleanup {INST}" in found[0]["message"]
    fake_ops.remove_domain(N2, INST)
    assert of(verify(ctx), "EINSTANCEMIGRATION") == []


def test_verify_names_leftover_images_once(
    ctx: Context, fake_ops: FakeNodeOps, config: ConfigStore
) -> None:
    fake_ops.add_domain(N1, INST)
    fake_ops.add_domain(N1, INST2)
    cluster = config.get_cluster()
    inst = config.get_instance(INST)
    assert inst is not None and inst.disk_template == constants.DT_FILE
    left = disk_path(cluster, inst, 0)
    stray = f"{cluster.file_storage_dir}/gone/disk0.img"
    files: dict[str, list[str]] = {N1: [left], N2: [left, stray], N3: []}

    def command(node: str, argv: list[str]) -> Any:
        if argv[-1] != cluster.file_storage_dir:
            return CommandResult(0, "", "")
        return CommandResult(0, "".join(p + "\n" for p in files[node]), "")

    fake_ops.command_fn = command
    problems = of(verify(ctx), "ENODEORPHANFILE")
    assert sorted(p["item"] for p in problems) == [N2, N2]
    named = [p for p in problems if INST in p["message"]]
    assert len(named) == 1 and left in named[0]["message"]
    assert f"primary node {N1}" in named[0]["message"]
    assert disk_dir(cluster, inst) in named[0]["message"]
    assert "--cleanup" in named[0]["message"]
    generic = [p for p in problems if p is not named[0]]
    assert stray in generic[0]["message"] and left not in generic[0]["message"]
