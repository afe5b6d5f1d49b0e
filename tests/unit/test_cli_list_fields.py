"""``gnt-lv node list`` and ``instance list`` in Ganeti 3.0's field language:
Ganeti's names, titles and renderings (``--units`` for its unit fields)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from support.ganeti_package import ganeti_json

from ganeti_lv.cli import instance_fields
from ganeti_lv.cli.main import main
from ganeti_lv.config import ConfigStore
from ganeti_lv.hypervisor.fake import FakeNodeOps
from ganeti_lv.objects import Disk, Nic

N1, N2, N3 = "node1.example.com", "node2.example.com", "node3.example.com"


def _ganeti_fields(kind: str) -> dict[str, tuple[str, str]]:
    """Ganeti's list fields of ``kind`` (NODE, INSTANCE): name -> (title, kind)."""
    program = (
        "import json; from ganeti import query;"
        f"print(json.dumps({{n: (f.title, f.kind) for n, (f, _, _, _)"
        f" in query.{kind}_FIELDS.items()}}))"
    )
    fields = ganeti_json(program, "query")
    return {name: (title, kind) for name, (title, kind) in fields.items()}


@pytest.fixture
def gnt(config: ConfigStore, data_dir: str, fake_ops: FakeNodeOps, capsys: Any) -> Any:
    """Runs gnt-lv on the small cluster; returns (exit code, stdout lines)."""

    def run(*argv: str) -> tuple[int, list[str]]:
        capsys.readouterr()
        code = main(["--data-dir", data_dir, *argv], node_ops=fake_ops)
        return code, capsys.readouterr().out.splitlines()

    return run


def _known(group: str, names: list[str], gnt: Any) -> list[str]:
    """Those of ``names`` the list of ``group`` knows (asked one by one)."""
    return [n for n in names if gnt(group, "list", "--no-headers", "-o", n)[0] == 0]


# ---------------------------------------------------------------- nodes


def test_node_fields_ganeti_has_carry_its_titles(gnt: Any) -> None:
    ganeti = _ganeti_fields("NODE")
    shared = _known("node", sorted(ganeti), gnt)
    for wanted in ("master", "pip", "sip", "role", "master_candidate", "sinst_cnt",
                   "sinst_list", "pinst_list", "ctotal", "mnode", "uuid", "vm_capable",
                   "master_capable", "ctime", "mtime", "ndp/ssh_port"):  # fmt: skip
        assert wanted in shared
    code, lines = gnt("node", "list", "--separator", "|", "-o", ",".join(shared), N1)
    assert code == 0
    assert lines[0].split("|") == [ganeti[name][0] for name in shared]


def test_node_list_formats_its_unit_fields_with_units(
    gnt: Any, fake_ops: FakeNodeOps, config: ConfigStore
) -> None:
    fake_ops.node(N2).facts.memory_total = 8000
    fake_ops.node(N2).facts.memory_free = 6000
    with config.update() as data:
        data.nodes[N2].memory_cap = 10000  # above the total: caps nothing
    fields = ("-o", "mtotal,mfree,mnode,memory_cap")
    assert gnt("node", "list", "--no-headers", *fields, N2) == (0, ["7.8G 5.9G 2.0G 9.8G"])
    assert gnt("node", "list", "--no-headers", "--units", "g", *fields, N2)[1] == [
        "7.8 5.9 2.0 9.8"
    ]
    # MiB with a separator, as Ganeti's
    code, lines = gnt("node", "list", "--no-headers", "--separator", ":", *fields, N2)
    assert lines == ["8000:6000:2000:10000"]
    # the default columns: MTotal and MFree in units too
    code, lines = gnt("node", "list", N2)
    assert lines[0].split() == ["Node", "Address", "MTotal", "MFree", "Pinst", "Offline", "Drained"]
    assert lines[1].split() == [N2, "10.250.0.2", "7.8G", "5.9G", "0", "N", "N"]


def test_node_list_has_ganetis_node_fields(gnt: Any, config: ConfigStore) -> None:
    with config.update() as data:
        data.nodes[N2].drained = True
        created = data.nodes[N1].ctime
    code, lines = gnt(
        "node", "list", "--no-headers", "--separator", "|", "-o",
        "name,pip,sip,role,master,master_candidate,master_capable,vm_capable,"
        "pinst_cnt,pinst_list,sinst_cnt,sinst_list,ctotal,ndp/ssh_port,ctime",
    )  # fmt: skip
    assert code == 0
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(created))
    pinst = "inst1.example.com,inst2.example.com"
    assert lines[0] == f"{N1}|10.250.0.1|10.250.0.1|M|Y|Y|Y|Y|2|{pinst}|0||2|22|{stamp}"
    assert lines[1].split("|")[3:6] == ["D", "N", "N"]  # drained: no candidate (Ganeti's)
    assert lines[2].split("|")[3] == "C"


def test_node_list_marks_live_fields_of_offline_and_silent_nodes(
    gnt: Any, fake_ops: FakeNodeOps, config: ConfigStore
) -> None:
    """As Ganeti's: "*" for a node marked offline, "?" for one that did not answer."""
    with config.update() as data:
        data.nodes[N3].offline = True
    fake_ops.set_unreachable(N2)
    fields = ("-o", "name,mtotal,mfree,mnode,ctotal,pinst_cnt")
    code, lines = gnt("node", "list", "--no-headers", "--separator", "|", *fields)
    assert code == 0
    assert lines[1:] == [f"{N2}|?|?|?|?|0", f"{N3}|*|*|*|*|0"]
    assert lines[0].split("|")[1] not in ("*", "?", "-")  # the master answered


# ---------------------------------------------------------------- instances

INST1, INST2 = "inst1.example.com", "inst2.example.com"


def test_instance_fields_ganeti_has_carry_its_titles(gnt: Any) -> None:
    ganeti = _ganeti_fields("INSTANCE")
    shared = [name for name in sorted(ganeti) if instance_fields.is_known(name)]
    for wanted in ("hypervisor", "oper_ram", "oper_vcpus", "vcpus", "be/memory", "be/maxmem",
                   "ctime", "mtime", "ip", "mac", "bridge", "nic_mode", "nic_link",
                   "sda_size", "sdb_size", "admin_up", "disk_usage", "nic.bridge/0",
                   "nic.ips", "nic.modes", "nic.bridges"):  # fmt: skip
        assert wanted in shared
    code, lines = gnt("instance", "list", "--separator", "|", "-o", ",".join(shared), INST1)
    assert code == 0
    assert lines[0].split("|") == [ganeti[name][0] for name in shared]


def test_instance_memory_fields_mean_what_ganetis_do(gnt: Any, fake_ops: FakeNodeOps) -> None:
    fake_ops.add_domain(N1, INST1, memory=100, vcpus=2)  # running with less than its maxmem
    fields = "name,oper_ram,oper_vcpus,memory,be/memory,be/maxmem,maxmem,minmem,vcpus"
    code, lines = gnt("instance", "list", "-o", fields)
    assert code == 0
    config_titles = ["ConfigMaxMem"] * 4 + ["ConfigMinMem", "ConfigVCPUs"]
    assert lines[0].split() == ["Instance", "Memory", "VCPUs", *config_titles]
    assert lines[1].split() == [INST1, "100M", "2", "128M", "128M", "128M", "128M", "128M", "1"]
    # not running: no live memory or vCPUs
    assert lines[2].split() == [INST2, "-", "-", "128M", "128M", "128M", "128M", "128M", "1"]


def test_instance_list_has_ganetis_fields_and_aliases(gnt: Any, config: ConfigStore) -> None:
    with config.update() as data:
        inst = data.instances[INST1]
        inst.disks[0].size = 2048
        inst.disks.append(Disk(size=512))
        inst.nics[0].ip = "10.0.0.9"
        inst.nics.append(Nic(mac="aa:00:00:00:01:00", mode="routed", link="rt0"))
        inst.admin_state = "down"
        created, modified = inst.ctime, inst.mtime
    code, lines = gnt(
        "instance", "list", "--no-headers", "--separator", "|", "-o",
        "hypervisor,admin_up,disk_usage,sda_size,sdb_size,ip,mac,bridge,nic_mode,nic_link,"
        "nic.bridge/1,nic.ips,nic.modes,nic.bridges,ctime,mtime", INST1,
    )  # fmt: skip
    assert code == 0
    stamps = [time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) for t in (created, modified)]
    assert lines[0].split("|") == [
        "kvm", "N", "2560", "2048", "512", "10.0.0.9", "aa:00:00:00:00:00", "br0",
        "bridged", "br0", "-", "10.0.0.9,None", "bridged,routed", "br0,None", *stamps,
    ]  # fmt: skip
    assert gnt("instance", "list", "--no-headers", "-o", "disk_usage,sda_size", INST1)[1] == [
        "2.5G 2.0G"
    ]


def test_instance_list_marks_live_fields_without_the_primarys_answer(
    gnt: Any, fake_ops: FakeNodeOps, config: ConfigStore
) -> None:
    """As Ganeti 3.0's: oper_ram/oper_vcpus "*" for an offline primary, "?" for one
    that did not answer; oper_state "?" both; "-" for a stopped instance."""
    fake_ops.add_domain(N1, INST1, memory=100, vcpus=2)
    fields = ("-o", "name,status,oper_state,oper_ram,oper_vcpus", "--separator", "|")
    assert gnt("instance", "list", "--no-headers", *fields)[1] == [
        f"{INST1}|running|Y|100|2",
        f"{INST2}|ERROR_down|N|-|-",  # marked up, not running
    ]
    fake_ops.set_unreachable(N1)
    assert gnt("instance", "list", "--no-headers", *fields, INST1)[1] == [
        f"{INST1}|ERROR_nodedown|?|?|?"
    ]
    with config.update() as data:
        data.nodes[N1].offline = True
    assert gnt("instance", "list", "--no-headers", *fields, INST1)[1] == [
        f"{INST1}|ERROR_nodeoffline|?|*|*"
    ]
