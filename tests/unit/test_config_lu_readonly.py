"""LUs looking things up in the shared configuration snapshot never change it.

Each opcode runs through the processor on the fake node operations; after
it, the store's cache must still equal the file (a fresh store's read), so
no LU changed an object it only looked up.
"""

from __future__ import annotations

from typing import Any

import pytest

from ganeti_lv import constants
from ganeti_lv.config import ConfigStore
from ganeti_lv.context import Context
from ganeti_lv.hypervisor.fake import FakeNodeOps
from ganeti_lv.mcpu import Processor
from ganeti_lv.objects import disk_path
from ganeti_lv.opcodes import (
    OpBackupExport,
    OpBackupQuery,
    OpBackupRemove,
    OpCode,
    OpInstanceCreate,
    OpInstanceQuery,
    OpInstanceShutdown,
    OpInstanceStartup,
    OpNodeQuery,
    OpNodeSetParams,
)

N1, N2 = "node1.example.com", "node2.example.com"
INST = "inst1.example.com"


def _ops() -> list[OpCode]:
    return [
        OpInstanceShutdown(instance_name=INST, timeout=1),
        OpInstanceStartup(instance_name=INST),
        OpInstanceQuery(names=[], live=True),
        OpNodeQuery(names=[], live=True),
        OpNodeSetParams(node_name="node3.example.com", drained=True),
        OpInstanceCreate(
            instance_name="web9",
            disk_template=constants.DT_FILE,
            pnode=N2,
            disks=[{"size": 1024}],
            nics=[{}],
            beparams={"memory": "256M", "vcpus": "1"},
        ),
        OpBackupExport(instance_name=INST, target_node=N2, shutdown=False),
        OpBackupQuery(nodes=[]),
        OpBackupRemove(instance_name=INST),
    ]


@pytest.mark.parametrize("index", range(len(_ops())))
def test_cache_equals_the_file_after_each_lu(
    ctx: Context, config: ConfigStore, fake_ops: FakeNodeOps, index: int
) -> None:
    inst = config.get_instance(INST)
    assert inst is not None
    path = disk_path(config.get_cluster(), inst, 0)
    fake_ops.add_domain(N1, INST, disk_paths=[path])  # inst1 runs on node1 with its disk
    fake_ops.node(N1).files[path] = 1024
    for op in _ops()[: index + 1]:
        result: Any = Processor(ctx).execute(op)
        fresh = ConfigStore(config.data_dir).read()
        assert ctx.config.snapshot() == fresh, f"{op.OP_ID} changed the shared snapshot"
        if isinstance(result, list):  # query rows are the caller's to change
            for row in result:
                if isinstance(row, dict):
                    for value in row.values():
                        if isinstance(value, (list, dict)):
                            value.clear()
            assert ctx.config.snapshot() == fresh
