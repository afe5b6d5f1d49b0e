"""``gnt-lv cluster modify --default-bridge`` and OpClusterSetParams(default_bridge=...)."""

from __future__ import annotations

from typing import Any

import pytest

from ganeti_lv.cli.main import main
from ganeti_lv.config import ConfigStore
from ganeti_lv.context import Context
from ganeti_lv.errors import ECODE_INVAL, OpPrereqError
from ganeti_lv.hypervisor.fake import FakeNodeOps
from ganeti_lv.mcpu import Processor
from ganeti_lv.opcodes import OpClusterSetParams, OpInstanceCreate

N1, N2 = "node1.example.com", "node2.example.com"


def test_set_default_bridge_used_by_new_instances(
    ctx: Context, fake_ops: FakeNodeOps, config: ConfigStore
) -> None:
    fake_ops.node(N2).facts.bridges = ["br0", "gnt-br1"]
    result = Processor(ctx).execute(OpClusterSetParams(default_bridge="gnt-br1"))
    assert result == ["default_bridge"]
    assert config.get_cluster().default_bridge == "gnt-br1"
    pre_env = fake_ops.calls_to("run_hooks", N1)[0].args[1]
    assert pre_env["GANETI_NEW_DEFAULT_BRIDGE"] == "gnt-br1"
    create = OpInstanceCreate(
        instance_name="web9", disk_template="file", pnode=N2, disks=[{"size": 64}], nics=[{}]
    )
    Processor(ctx).execute(create)
    inst = config.get_instance("web9")
    assert inst is not None and inst.nics[0].link == "gnt-br1"
    old = config.get_instance("inst1.example.com")
    assert old is not None and old.nics[0].link == "br0"  # existing NICs keep theirs


@pytest.mark.parametrize("name", ["", "has space", "a/b", "much-too-long-bridge", "-lead"])
def test_invalid_bridge_name_refused(ctx: Context, config: ConfigStore, name: str) -> None:
    serial = config.read().serial
    with pytest.raises(OpPrereqError) as info:
        Processor(ctx).execute(OpClusterSetParams(default_bridge=name))
    assert info.value.ecode == ECODE_INVAL and "Invalid bridge name" in info.value.msg
    assert config.read().serial == serial
    assert config.get_cluster().default_bridge == "br0"


def test_cli_cluster_modify_default_bridge(
    config: ConfigStore, data_dir: str, fake_ops: FakeNodeOps, capsys: Any
) -> None:
    def cli(*argv: str) -> tuple[int, str, str]:
        code = main(["--data-dir", data_dir, *argv], node_ops=fake_ops)
        out, err = capsys.readouterr()
        return code, out, err

    code, _, err = cli("cluster", "modify", "--default-bridge", "vmbr7")
    assert code == 0, err
    assert config.get_cluster().default_bridge == "vmbr7"
    code, out, _ = cli("cluster", "info")
    assert code == 0 and "Default bridge: vmbr7" in out
    serial = config.read().serial
    code, _, err = cli("cluster", "modify", "--default-bridge", "bad/name")
    assert code == 1
    assert "error type: wrong_input" in err and "Invalid bridge name 'bad/name'" in err
    assert config.read().serial == serial
