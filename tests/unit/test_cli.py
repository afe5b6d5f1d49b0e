"""``gnt-lv`` end to end on a data dir with FakeNodeOps (``main(argv, node_ops=...)``)."""

from __future__ import annotations

import base64
import resource
import subprocess
import sys
from typing import Any

import pytest
import yaml
from support.waiting import wait_until

from ganeti_lv import constants, paths
from ganeti_lv.cli.main import main
from ganeti_lv.config import ConfigStore
from ganeti_lv.hypervisor.fake import FakeNodeOps
from ganeti_lv.hypervisor.fake_export import FakeExport
from ganeti_lv.master.jobs import JobStore

N1, N2, N3 = "node1.example.com", "node2.example.com", "node3.example.com"
INST = "inst1.example.com"

PREREQ = "Failure: prerequisites not met for this operation:\nerror type: {}, error details:\n"


def host_key(seed: int = 1) -> str:
    blob = len(b"ssh-ed25519").to_bytes(4, "big") + b"ssh-ed25519"
    blob += (32).to_bytes(4, "big") + bytes([seed]) * 32
    return "ssh-ed25519 " + base64.b64encode(blob).decode()


class Cli:
    """Runs gnt-lv on the test data dir and returns (exit code, stdout, stderr)."""

    def __init__(self, data_dir: str, ops: FakeNodeOps, capsys: Any) -> None:
        self.data_dir = data_dir
        self.ops = ops
        self.capsys = capsys

    def __call__(self, *argv: str, ask: Any = None) -> tuple[int, str, str]:
        self.capsys.readouterr()
        code = main(["--data-dir", self.data_dir, *argv], node_ops=self.ops, ask=ask)
        out, err = self.capsys.readouterr()
        return code, out, err


@pytest.fixture
def cli(config: ConfigStore, data_dir: str, fake_ops: FakeNodeOps, capsys: Any) -> Cli:
    return Cli(data_dir, fake_ops, capsys)


def serial(config: ConfigStore) -> int:
    return config.read().serial


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("argv", "ecode", "text"),
    [
        (["instance", "startup", "ghost"], "unknown_entity", "Instance 'ghost' not known"),
        (["instance", "remove", "-f", "ghost"], "unknown_entity", "Instance 'ghost' not known"),
        (
            ["instance", "add", "-t", "file", "--disk", "0:size=1G", "-n", "nosuch", "web9"],
            "unknown_entity",
            "Node 'nosuch' not known",
        ),
        (
            ["instance", "add", "-t", "file", "--disk", "0:size=1G", "-n", N2, INST],
            "already_exists",
            f"Instance '{INST}' is already in the cluster",
        ),
        (
            ["instance", "add", "-t", "file", "--disk", "0:size=huge", "-n", N2, "web9"],
            "wrong_input",
            "Invalid size of disk 0 'huge'",
        ),
        (
            [
                "instance",
                "add",
                "-t",
                "file",
                "--disk",
                "0:size=1G",
                "-n",
                N2,
                "-B",
                "memory=12X",
                "web9",
            ],
            "wrong_input",
            "Invalid backend parameter 'memory' '12X'",
        ),
        (
            [
                "instance",
                "add",
                "-t",
                "file",
                "--disk",
                "0:size=1G",
                "-n",
                N2,
                "-B",
                "colour=red",
                "web9",
            ],
            "wrong_input",
            "Unknown backend parameter 'colour'",
        ),
        (
            ["instance", "add", "-t", "file", "--disk", "1:size=1G", "-n", N2, "web9"],
            "wrong_input",
            "--disk indices must be 0..0",
        ),
        (["node", "modify", "--offline", "maybe", N2], "wrong_input", "use yes or no"),
        (["node", "remove", "-f", "nosuch"], "unknown_entity", "Node 'nosuch' not known"),
        (
            ["instance", "list", "-o", "name,colour"],
            "wrong_input",
            "Unknown output field(s): colour",
        ),
    ],
)
def test_bad_input_prints_ganeti_error(
    cli: Cli, config: ConfigStore, fake_ops: FakeNodeOps, argv: list[str], ecode: str, text: str
) -> None:
    before = serial(config)
    code, out, err = cli(*argv)
    assert code == (14 if "output field" in text else 1)  # Ganeti's EXIT_UNKNOWN_FIELD
    assert err.startswith(PREREQ.format(ecode)), err
    assert text in err
    assert "Traceback" not in err + out
    assert serial(config) == before
    assert not fake_ops.calls_to("create_disks") and not fake_ops.calls_to("start_instance")


def test_offline_target_node(cli: Cli, config: ConfigStore, fake_ops: FakeNodeOps) -> None:
    with config.update() as data:
        data.nodes[N2].offline = True
    before = serial(config)
    code, _, err = cli("instance", "add", "-t", "file", "--disk", "0:size=1G", "-n", N2, "web9")
    assert code == 1 and err.startswith(PREREQ.format("wrong_state"))
    assert "offline" in err and serial(config) == before
    assert fake_ops.node(N2).files == {}


def test_argparse_usage_error_exits_2(cli: Cli) -> None:
    with pytest.raises(SystemExit) as info:
        cli("instance", "reboot", "--type", "gentle", INST)
    assert info.value.code == 2


def test_missing_cluster_gives_clear_error(tmp_path: Any, capsys: Any) -> None:
    code = main(["--data-dir", str(tmp_path), "instance", "list"], node_ops=FakeNodeOps())
    err = capsys.readouterr().err
    assert code == 1 and "not found; is the cluster initialised?" in err


# ---------------------------------------------------------------- instances


def test_instance_add_list_info_remove(
    cli: Cli, config: ConfigStore, fake_ops: FakeNodeOps
) -> None:
    fake_ops.node(N2).files["/k"] = 8  # the kernel it boots
    code, out, err = cli(
        "instance", "add", "-t", "sharedfile", "--disk", "0:size=1G", "--disk", "1:size=512M",
        "-n", "node2", "-B", "memory=128M,vcpus=1",
        "-H", 'kernel_path=/k,kernel_args="console=ttyS0 seed=x patmb=16",cpu_type=qemu64',
        "--net", "0:link=br0", "web9",
    )  # fmt: skip
    assert code == 0, err
    assert "starting instance" in out
    inst = config.get_instance("web9")
    assert inst is not None
    assert inst.hvparams == {
        "kernel_path": "/k",
        "kernel_args": "console=ttyS0 seed=x patmb=16",
        "cpu_type": "qemu64",
    }
    assert [d.size for d in inst.disks] == [1024, 512]
    assert fake_ops.node(N2).domains["web9"].state == constants.DOMSTATE_RUNNING

    code, out, _ = cli("instance", "list", "-o", "name,pnode,status,disks", "--no-headers",
                       "--separator", "|")  # fmt: skip
    assert code == 0
    lines = out.splitlines()
    assert "web9|node2.example.com|running|2" in lines
    assert f"{INST}|node1.example.com|ERROR_down|1" in lines

    code, out, _ = cli("instance", "list")
    # Ganeti's default columns ("Memory" is oper_ram, the live memory: - when not running)
    lines = [line.split() for line in out.splitlines()]
    assert lines[0] == ["Instance", "Hypervisor", "OS", "Primary_node", "Status", "Memory"]
    assert ["web9", "kvm", "debootstrap+default", "node2.example.com", "running", "128M"] in lines
    assert [INST, "kvm", "debootstrap+default", "node1.example.com", "ERROR_down", "-"] in lines

    code, out, _ = cli("instance", "info", "web9")
    shared = config.get_cluster().shared_file_storage_dir
    # read as Ganeti's QA reads gnt-instance info: YAML, a list of instances
    (info,) = yaml.safe_load(out)
    assert info["Instance name"] == "web9"
    assert info["Nodes"] == [{"primary": "node2.example.com"}, {"secondaries": None}]
    assert info["Disks"][1]["disk/1"] == "sharedfile, size 512M"
    assert info["Disks"][1]["on primary"] == f"{shared}/web9/disk1.img"
    hv = info["Hypervisor parameters"]
    assert hv["kernel_args"] == "console=ttyS0 seed=x patmb=16" and hv["cpu_type"] == "qemu64"
    assert hv["migration_downtime"].startswith("default (")
    assert info["Back-end parameters"]["vcpus"] == 1
    assert info["NICs"][0]["nic/0"] is None and info["NICs"][0]["link"] == "br0"
    assert "Console log" in info

    code, out, _ = cli("instance", "list", "--no-headers", "--separator=:", "--units", "m",
                       "-o", "name,be/maxmem,disk.count,disk.size/1,disk.size/2,nic.mode/0,"
                       "be/always_failover,admin_state_source", "web9")  # fmt: skip
    assert code == 0
    assert out == "web9:128:2:512:-:bridged:N:admin\n"
    # disk.sizes: MiB whatever the units, as Ganeti's gnt-instance list prints them
    for units in ("h", "g"):
        code, out, _ = cli("instance", "list", "--no-headers", "--units", units, "-o",
                           "disk.sizes,disk.size/0", "web9")  # fmt: skip
        assert out.split() == ["1024,512", "1.0G" if units == "h" else "1.0"]
    # Ganeti's cluster-wide hypervisor parameters are no instance fields there either
    for wrong in (
        "disk.size/x",
        "be/memroy",
        "hv/no_such_param",
        "hv/migration_mode",
        "hv/xen_cmd",
    ):
        code, _, err = cli("instance", "list", "-o", f"name,{wrong}", "web9")
        assert code == 14 and f"Unknown output field(s): {wrong}" in err
    code, out, _ = cli(
        "instance", "list", "--no-headers", "-o", "be/minmem,hv/acpi,be/memory", "web9"
    )
    assert code == 0 and out.split() == ["128M", "Y", "128M"]  # be/memory is be/maxmem
    # parameters Ganeti's KVM instances (or its other hypervisors') have and these
    # do not: known, without a value
    code, out, _ = cli("instance", "list", "--no-headers", "-o",
                       "be/spindle_use,hv/vnc_bind_address,hv/kvm_path,hv/bootloader_path",
                       "web9")  # fmt: skip
    assert code == 0 and out.split() == ["-", "-", "-", "-"]

    assert cli("instance", "remove", "web9", ask=lambda q: False)[0] == 1
    assert config.get_instance("web9") is not None
    # an instance the cluster does not know: refused before any question, as Ganeti's
    asked: list[str] = []
    for argv in (["instance", "remove"], ["instance", "migrate"], ["instance", "failover"]):
        code, _, err = cli(*argv, "ghost", ask=lambda q: asked.append(q) or True)
        assert code == 1 and "Instance 'ghost' not known" in err and "unknown_entity" in err
    assert asked == []
    code, _, err = cli("instance", "remove", "-f", "web9")
    assert code == 0, err
    assert config.get_instance("web9") is None and fake_ops.node(N2).files == {
        "/k": 8
    }  # its disks gone


def test_a_nameless_disk_is_listed_as_unavailable_and_its_info_says_none(cli: Cli) -> None:
    # as gnt-instance: list renders the missing name as any unavailable field,
    # info prints the value itself
    code, out, _ = cli("instance", "list", "--no-headers", "--separator=:", "-o",
                       "name,disk.name/0,disk.name/1", INST)  # fmt: skip
    assert code == 0 and out == f"{INST}:-:-\n"
    code, out, _ = cli("instance", "info", INST)
    (info,) = yaml.safe_load(out)
    assert info["Disks"][0]["name"] == "None"  # str(None), as Ganeti prints it


def test_instance_remove_without_tty_is_not_confirmed(
    cli: Cli, config: ConfigStore, monkeypatch: Any
) -> None:
    monkeypatch.setattr("sys.stdin.isatty", lambda: False, raising=False)
    code, _, err = cli("instance", "remove", INST)
    assert code == 1 and "use -f/--force" in err
    assert config.get_instance(INST) is not None


def test_hypervisor_parameters_in_ganetis_form(cli: Cli, config: ConfigStore) -> None:
    """-H kvm:k=v as gnt-instance add and gnt-cluster modify take it; another hypervisor: no."""
    base = ("instance", "add", "-t", "file", "--disk", "0:size=1G", "-n", N2, "--no-start")
    code, _, err = cli(*base, "-H", "kvm:cpu_type=qemu64,no_acpi", "web9")
    assert code == 0, err
    inst = config.get_instance("web9")
    assert inst is not None and inst.hvparams == {"cpu_type": "qemu64", "acpi": False}
    code, _, err = cli(*base, "-H", "kvm", "web10")  # the hypervisor alone: no parameters
    assert code == 0, err
    inst = config.get_instance("web10")
    assert inst is not None and inst.hvparams == {}
    before = serial(config)
    code, _, err = cli(*base, "-H", "xen-pvm:kernel_path=/x", "web11")
    assert code == 1
    assert err.startswith(PREREQ.format("wrong_input")) and "Hypervisor 'xen-pvm'" in err
    assert serial(config) == before
    code, _, err = cli("cluster", "modify", "-H", "kvm:migration_downtime=500")
    assert code == 0, err
    assert config.get_cluster().hvparams["migration_downtime"] == 500


def test_add_dry_run(cli: Cli, config: ConfigStore, fake_ops: FakeNodeOps) -> None:
    before = serial(config)
    code, out, _ = cli("instance", "add", "-t", "file", "--disk", "0:size=1G", "-n", N2,
                       "--dry-run", "web9")  # fmt: skip
    assert code == 0 and "dry-run mode requested" in out
    assert serial(config) == before and not fake_ops.calls_to("create_disks")


def test_add_without_net_gets_one_nic_on_the_default_bridge_as_ganeti(
    cli: Cli, config: ConfigStore
) -> None:
    base = ("instance", "add", "-t", "file", "--disk", "0:size=1G", "-n", N2, "--no-start")
    assert cli(*base, "web9")[0] == 0
    inst = config.get_instance("web9")
    assert inst is not None and len(inst.nics) == 1
    assert inst.nics[0].link == config.get_cluster().default_bridge
    assert inst.nics[0].mac.startswith("52:54:00:")
    assert cli(*base, "--no-nics", "web10")[0] == 0
    assert config.get_instance("web10").nics == []  # type: ignore[union-attr]
    code, _, err = cli(*base, "--no-nics", "--net", "0:link=br0", "web11")
    assert code == 1 and "cannot be given together" in err
    assert config.get_instance("web11") is None
    # a default bridge missing on the node: the error says where the NIC came from
    with config.update() as data:
        data.cluster.default_bridge = "br-missing"
    code, _, err = cli(*base, "web12")
    assert code == 1 and "br-missing is the cluster's default bridge" in err and "--no-nics" in err


def test_shutdown_startup_reboot(cli: Cli, config: ConfigStore, fake_ops: FakeNodeOps) -> None:
    fake_ops.add_domain(N1, INST)
    assert cli("instance", "shutdown", "--timeout", "5", "inst1")[0] == 0
    inst = config.get_instance(INST)
    assert inst is not None and inst.admin_state == "down"
    assert fake_ops.calls_to("shutdown_instance")[-1].args[-1] == 5.0
    assert cli("instance", "startup", INST)[0] == 0
    assert cli("instance", "reboot", "--type", "soft", INST)[0] == 0
    assert fake_ops.calls_to("reboot_instance")[-1].args[1] == "soft"
    assert cli("instance", "reboot", "-t", "full", INST)[0] == 0  # gnt-instance's short form
    assert fake_ops.calls_to("reboot_instance")[-1].args[1] == "full"
    # gnt-instance's -f: Ganeti's warning that the offline instance check is skipped
    code, out, err = cli("instance", "shutdown", "-f", INST)
    assert code == 0 and "Ignoring offline instance check" in out + err


# ---------------------------------------------------------------- nodes, cluster, jobs


def test_node_list_and_modify(cli: Cli, config: ConfigStore) -> None:
    code, out, _ = cli("node", "list", "-o", "name,pinst_cnt,offline,master", "--no-headers")
    assert code == 0
    assert out.splitlines()[0].split() == [N1, "2", "N", "Y"]
    code, out, _ = cli("node", "modify", "--drained", "yes", "--memory-cap", "1G", "node3")
    # gnt-node modify's lines: the values as Python's str; the candidate's demotion too
    assert code == 0 and out.splitlines()[1:] == [
        " - memory_cap -> 1024",
        " - master_candidate -> False",
        " - drained -> True",
    ]
    node = config.get_node(N3)
    assert node is not None and node.drained and node.memory_cap == 1024
    code, out, _ = cli("node", "modify", "--memory-cap", "none", "-O", "yes", "node3")
    assert code == 0 and out.splitlines()[1:] == [
        " - memory_cap -> None",
        " - drained -> False",
        " - offline -> True",
    ]


def test_bringing_a_node_online_by_hand_is_asked_first(cli: Cli, config: ConfigStore) -> None:
    """As Ganeti's node modify: guests failed over away from it may still run there."""
    assert cli("node", "modify", "-O", "yes", "node3")[0] == 0
    asked: list[str] = []
    code, _, _ = cli("node", "modify", "-O", "no", "node3", ask=lambda q: asked.append(q) or False)
    assert code == 1 and "back online by hand" in asked[0]
    assert config.get_node(N3).offline  # type: ignore[union-attr]
    assert cli("node", "modify", "-O", "no", "-f", "node3")[0] == 0
    assert not config.get_node(N3).offline  # type: ignore[union-attr]
    assert (
        cli("node", "modify", "-O", "yes", "node3", ask=lambda q: asked.append(q) or False)[0] == 0
    )
    assert len(asked) == 1  # taking it offline is not asked


def test_node_remove_asks_nothing_as_ganeti(
    cli: Cli, config: ConfigStore, monkeypatch: Any
) -> None:
    """Without a terminal and without -f; -f is still accepted."""
    monkeypatch.setattr("sys.stdin.isatty", lambda: False, raising=False)
    code, _, err = cli("node", "remove", N3)
    assert code == 0, err
    assert config.get_node(N3) is None
    code, _, err = cli("node", "remove", "-f", N1)  # the master (with instances): refused
    assert code == 1 and "Node is the master node" in err
    assert config.get_node(N1) is not None


def test_node_add_refuses_without_confirmed_key(
    cli: Cli, config: ConfigStore, monkeypatch: Any
) -> None:
    monkeypatch.setattr("sys.stdin.isatty", lambda: False, raising=False)
    before = serial(config)
    code, _, err = cli("node", "add", "-f", "--address", "10.250.0.9", "node9")
    assert code == 1 and "must be confirmed" in err and "--host-key" in err
    assert serial(config) == before


def test_node_add_with_key(cli: Cli, config: ConfigStore, data_dir: str) -> None:
    code, out, err = cli(
        "node", "add", "--address", "10.250.0.9", "--ssh-port", "2222",
        "--host-key", host_key(), "node9",
    )  # fmt: skip
    assert code == 0, err
    assert config.get_node("node9") is not None
    with open(paths.known_hosts_file(data_dir)) as fh:
        assert f"[10.250.0.9]:2222 {host_key()}" in fh.read()
    # added again without --address and --ssh-port: they stay (not its name and 22)
    jobs = JobStore(paths.jobs_dir(data_dir))
    before = len(jobs.list())
    code, _, err = cli("node", "add", "--readd", "--host-key", host_key(), "node9")
    assert code == 0, err
    node = config.get_node("node9")
    assert node is not None and (node.address, node.ssh_port) == ("10.250.0.9", 2222)
    # read by a query, as gnt-node add's: the add is the one job
    assert [job.summary for job in jobs.list()[before:]] == ["NODE_ADD(node9)"]


def test_cluster_modify_info_verify(cli: Cli, config: ConfigStore, fake_ops: FakeNodeOps) -> None:
    code, _, err = cli("cluster", "modify", "-H", "kernel_args='a=b,c=d'", "--domain-type", "qemu")
    assert code == 0, err
    assert config.get_cluster().hvparams["kernel_args"] == "a=b,c=d"
    code, out, _ = cli("cluster", "info")
    assert "Domain type: qemu" in out and "  kernel_args: a=b,c=d" in out
    fake_ops.add_domain(N1, INST)
    fake_ops.add_domain(N1, "inst2.example.com")
    assert cli("cluster", "verify")[0] == 0
    fake_ops.add_domain(N2, "rogue")
    code, out, err = cli("cluster", "verify")
    assert code == 1 and "domain 'rogue'" in out and "1 problem(s)" in err


def test_cluster_verify_with_warnings_only_succeeds(cli: Cli, inst1_running: FakeNodeOps) -> None:
    """As in Ganeti: warnings are reported, only errors fail the verify."""
    inst1_running.add_domain(N1, "inst2.example.com")
    inst1_running.exports.setdefault(N2, {})["web1.new"] = FakeExport()  # an interrupted export
    code, out, err = cli("cluster", "verify")
    assert "WARNING: node node2.example.com: incomplete export" in out
    assert code == 0 and "1 problem(s) (0 error(s))" in err, out + err
    inst1_running.add_domain(N2, "rogue")
    code, out, err = cli("cluster", "verify")
    assert code == 1 and "2 problem(s) (1 error(s))" in err


def test_migration_encryption_on_the_cluster_and_per_call(
    cli: Cli, config: ConfigStore, inst1_running: FakeNodeOps
) -> None:
    fake_ops = inst1_running
    assert cli("cluster", "modify", "--migration-encryption", "yes")[0] == 0
    assert config.get_cluster().hvparams["migration_encryption"] is True
    assert config.get_cluster().hvparams["kernel_args"] == ""  # merged, not replaced
    code, _, err = cli("cluster", "modify", "--migration-encryption", "maybe")
    assert code != 0 and "--migration-encryption" in err
    assert config.get_cluster().hvparams["migration_encryption"] is True
    assert "  migration_encryption: Y" in cli("cluster", "info")[1]
    assert "Cluster CA: (none" in cli("cluster", "info")[1]
    code, out, err = cli(
        "instance", "migrate", "-f", "--migration-encryption", "no", "-n", N2, INST
    )
    assert code == 0, err
    assert not fake_ops.calls_to("migrate_instance", N1)[0].args[2].encryption


def test_job_list_and_info(cli: Cli) -> None:
    cli("instance", "startup", "ghost")
    cli("node", "modify", "--drained", "yes", N3)
    code, out, _ = cli("job", "list", "--no-headers", "--separator", ",")
    assert code == 0
    rows = [line.split(",") for line in out.splitlines()]
    assert ["error", "INSTANCE_STARTUP(ghost)"] in [r[1:] for r in rows]
    assert ["success", f"NODE_SET_PARAMS({N3})"] in [r[1:] for r in rows]
    job_id = [r[0] for r in rows if r[1] == "error"][0]
    code, out, _ = cli("job", "info", job_id)
    assert "OpPrereqError (unknown_entity): Instance 'ghost' not known" in out
    # as Ganeti's: an unknown id is said so, the others are shown, exit 0
    code, out, _ = cli("job", "info", "99999", job_id)
    assert code == 0 and out.startswith("Job ID 99999 not found\n\n")
    assert "Instance 'ghost' not known" in out


def test_cluster_init_via_cli(tmp_path: Any, capsys: Any) -> None:
    ddir = str(tmp_path / "new")
    argv = ["--data-dir", ddir, "cluster", "init", "--master-name", "m1", "--master-address",
            "127.0.0.1", "--master-host-key", host_key(), "--domain-type", "qemu",
            "--file-storage-dir", "/srv/x", "-B", "memory=256M", "c1"]  # fmt: skip
    assert main(argv) == 0
    data = ConfigStore(ddir).read()
    assert data.cluster.file_storage_dir == "/srv/x"
    assert data.cluster.beparams["maxmem"] == 256
    assert data.cluster.default_iallocator == "hail"  # as Ganeti's init with hail installed
    assert main(argv) == 1
    assert "already initialised" in capsys.readouterr().err


def test_instance_info_needs_names_or_all_as_gnt_instance_info(
    cli: Cli, config: ConfigStore
) -> None:
    code, out, err = cli("instance", "info")
    assert (code, out) == (1, "") and "give --all" in err
    code, out, err = cli("instance", "info", "--all", INST)
    assert (code, out) == (1, "") and "not both" in err
    code, out, _ = cli("instance", "info", "--all")
    names = [line.split(": ", 1)[1] for line in out.splitlines() if "Instance name:" in line]
    assert code == 0 and names == sorted(config.read().instances)


def test_instance_info_says_no_actual_state_when_the_primary_cannot_be_asked(
    cli: Cli, inst1_running: FakeNodeOps
) -> None:
    code, out, _ = cli("instance", "info", INST)
    assert code == 0 and "State: configured to be up, actual state is up\n" in out
    inst1_running.set_unreachable(N1)
    code, out, _ = cli("instance", "info", INST)
    assert code == 0 and "State: configured to be up\n" in out
    assert "Status: ERROR_nodedown" in out
    code, out, _ = cli("instance", "list", "--no-headers", "-o", "name,oper_state", INST)
    assert out.split() == [INST, "?"]  # not known, as Ganeti's


def test_cluster_verify_of_an_offline_node_judges_only_instances_marked_up(
    cli: Cli, config: ConfigStore, inst1_running: FakeNodeOps
) -> None:
    """As Ganeti: an instance on an offline node is an error only when it should run."""
    inst1_running.add_domain(N1, "inst2.example.com")
    with config.update() as data:
        data.nodes[N1].offline = True
        data.instances[INST].admin_state = "down"
    code, out, _ = cli("cluster", "verify")
    assert f"instance {INST}: instance lives on offline node" not in out
    assert "instance inst2.example.com: instance lives on offline node" in out
    assert code == 1


def _low_open_files_limit() -> None:
    """In the child: the soft limit service managers set, below the hard limit."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))


def _run_with_a_low_open_files_limit(script: str, *args: str) -> tuple[int, str]:
    """The hard limit of open files, and the output of ``script`` run in a Python
    started with the soft limit below it (skipped without a finite hard limit above)."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard <= 256 or hard == resource.RLIM_INFINITY:
        pytest.skip("no finite hard limit of open files above 256")
    res = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=_low_open_files_limit,
    )
    assert res.returncode == 0, res.stderr
    return hard, res.stdout


def test_gnt_lv_raises_its_open_files_limit_to_the_hard_limit(tmp_path: Any) -> None:
    # a job taking every instance lock holds a file per instance name ever locked
    script = (
        "import resource, sys\n"
        "from ganeti_lv.cli.main import main\n"
        "code = main(['--data-dir', sys.argv[1], 'job', 'list'])\n"
        "print(code, *resource.getrlimit(resource.RLIMIT_NOFILE))\n"
    )
    hard, out = _run_with_a_low_open_files_limit(script, str(tmp_path))
    assert out.split()[-3:] == ["0", str(hard), str(hard)]


def test_a_background_job_raises_its_open_files_limit_to_the_hard_limit(
    config: ConfigStore, data_dir: str
) -> None:
    # a job submitted without waiting and without a daemon runs in a process of its own
    script = (
        "import sys\n"
        "from ganeti_lv.master import background\n"
        "from ganeti_lv.opcodes import OpTestDelay\n"
        "print(background.start(sys.argv[1], [OpTestDelay(duration=3)], None))\n"
    )
    hard, out = _run_with_a_low_open_files_limit(script, data_dir)
    jobs = JobStore(paths.jobs_dir(data_dir))
    job = jobs.get(int(out))
    with open(f"/proc/{job.pid}/limits") as fh:
        line = next(row for row in fh if row.startswith("Max open files"))
    assert line.split()[3:5] == [str(hard), str(hard)]
    assert wait_until(lambda: jobs.get(job.id).status == constants.JOB_STATUS_SUCCESS, 30)
