"""Instance lifecycle through ``gnt-lv`` on the real cluster (libvirt, qemu, SSH).

One small guest at a time (128 MiB, no memory dirtier).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from gnt_helpers import (
    Gnt,
    cli_env_args,
    console,
    domain_state,
    interactive_console,
    node,
    purge_instance,
    wait_console,
)

from ganeti_lv import constants
from ganeti_lv.config import ConfigStore
from ganeti_lv.devcluster.guest import PATTERN_RE, kernel_args, pattern_sha256
from ganeti_lv.hypervisor.libvirt import LibvirtNodeOps
from ganeti_lv.objects import disk_path

pytestmark = pytest.mark.cluster

PREREQ = "Failure: prerequisites not met for this operation:\nerror type: {}, error details:\n"


@pytest.fixture
def env(devcluster: Any) -> Iterator[tuple[Gnt, ConfigStore, LibvirtNodeOps, dict[str, Any]]]:
    """gnt-lv runner, configuration, node operations and the cluster description."""
    config = ConfigStore(devcluster.data_dir)
    ops = LibvirtNodeOps(devcluster.data_dir)
    try:
        yield Gnt(devcluster.data_dir), config, ops, devcluster.info
    finally:
        ops.close()


@pytest.fixture
def cleanup(env: Any) -> Iterator[list[tuple[str, str]]]:
    """Instances (name, template) to purge after the test, whatever happened."""
    _, config, ops, _ = env
    names: list[tuple[str, str]] = []
    yield names
    for name, template in names:
        purge_instance(ops, config, name, template)


def ready_count(text: str) -> int:
    return text.count("GUEST-READY")


def test_lifecycle_two_disks_and_nic(env: Any, cleanup: list[tuple[str, str]]) -> None:
    gnt, config, ops, info = env
    name = "lc1"
    cleanup.append((name, constants.DT_FILE))
    nodes = sorted(config.node_names())
    pname = nodes[1]
    bridge = info["bridge"]
    gnt.ok(
        "instance", "add", "-t", "file", "--disk", "0:size=64M", "--disk", "1:size=32M",
        "-n", pname, "--net", f"0:link={bridge}", "--tags", "lcmany",
        *cli_env_args(info, name, patmb=4, dirtymb=0), name,
    )  # fmt: skip
    pnode = node(config, pname)
    text = wait_console(ops, pnode, name, lambda t: "GUEST-READY" in t)
    match = PATTERN_RE.search(text)
    assert match is not None, text
    assert match.groups() == (name, "4", pattern_sha256(name, 4))
    assert gnt.status(name) == constants.INSTST_RUNNING

    # two disks and the NIC as configured, defined only on the primary
    inst = config.get_instance(name)
    assert inst is not None
    domblk = ops.run_command(pnode, ["virsh", "-q", "domblklist", name]).stdout
    cluster = config.get_cluster()
    assert disk_path(cluster, inst, 0) in domblk and disk_path(cluster, inst, 1) in domblk
    domif = ops.run_command(pnode, ["virsh", "-q", "domiflist", name]).stdout
    assert inst.nics[0].mac in domif and bridge in domif
    assert inst.nics[0].mac.startswith("52:54:00:")
    for other in nodes:
        if other != pname:
            assert domain_state(ops, node(config, other), name) is None

    out = gnt.ok("instance", "info", name)
    assert f"on primary: {disk_path(cluster, inst, 1)}" in out and "Console log: /" in out

    # clean shutdown (ACPI)
    out = gnt.ok("instance", "shutdown", "--timeout", "60", name)
    assert "forcibly" not in out
    assert "GUEST: POWEROFF" in console(ops, pnode, name)
    assert domain_state(ops, pnode, name) == constants.DOMSTATE_SHUTOFF
    assert gnt.status(name) == constants.INSTST_ADMINDOWN

    # startup boots again: selected by tag, one job per instance in a process of its own
    before = ready_count(console(ops, pnode, name))
    out = gnt.ok("instance", "startup", "--tags", "lcmany", "--force-multiple")
    job = re.search(r"^Submitted jobs (\d+)$", out, re.M)
    assert job is not None and f"Waiting for job {job.group(1)} for {name} ..." in out, out
    wait_console(ops, pnode, name, lambda t: ready_count(t) > before)
    assert gnt.status(name) == constants.INSTST_RUNNING

    # its serial console as an operator reaches it: the guest's ticks on the terminal
    code, shown = interactive_console(gnt.data_dir, name, rb"tick \d+\r?\n", 60)
    assert code == 0 and f"Connected to domain '{name}'" in shown, shown
    assert re.search(r"tick \d+", shown.split("Connected to domain", 1)[1]), shown

    # a start with temporary parameters (-H, -B), paused: the guest waits for its
    # console, which resumes it; it boots with them, while the configuration and
    # the node's domain definition keep the instance's own
    gnt.ok("instance", "shutdown", "--timeout", "60", name)
    configured = config.get_instance(name)
    assert configured is not None
    temporary = kernel_args("lc1tmp", patmb=4, dirtymb=0)
    out = gnt.ok(
        "instance", "startup", "--paused", "-B", "memory=160M", "-H",
        f'kernel_args="{temporary}"', name,
    )  # fmt: skip
    assert f"Instance {name} is paused; its console" in out, out
    assert domain_state(ops, pnode, name) == constants.DOMSTATE_PAUSED
    assert gnt.status(name) == constants.INSTST_RUNNING
    dominfo = ops.run_command(pnode, ["virsh", "dominfo", name]).stdout
    assert re.search(r"Max memory:\s+163840 KiB", dominfo), dominfo
    defined = ops.run_command(pnode, ["virsh", "dumpxml", "--inactive", name]).stdout
    assert "<memory unit='KiB'>131072</memory>" in defined and "seed=lc1tmp" not in defined
    after = config.get_instance(name)
    assert after is not None and after.hvparams == configured.hvparams
    assert after.beparams == configured.beparams
    code, shown = interactive_console(gnt.data_dir, name, rb"GUEST-READY", 90)
    assert code == 0 and f"Instance {name} is paused, resuming it" in shown, shown
    booted = shown.split("resuming it", 1)[1]
    match = PATTERN_RE.search(booted.replace("\r", ""))
    assert match is not None and match.group(1) == "lc1tmp", shown
    assert domain_state(ops, pnode, name) == constants.DOMSTATE_RUNNING
    # modified while it runs: recorded, the running guest keeps what it has; a full
    # reboot starts it from the configuration again (the modification, no -H/-B)
    out = gnt.ok("instance", "modify", "-B", "memory=144M", name)
    assert " - be/maxmem -> 144" in out and "at its next start" in out, out
    dominfo = ops.run_command(pnode, ["virsh", "dominfo", name]).stdout
    assert re.search(r"Max memory:\s+163840 KiB", dominfo), dominfo
    before = ready_count(console(ops, pnode, name))
    gnt.ok("instance", "reboot", "--type", "full", name)
    text = wait_console(ops, pnode, name, lambda t: ready_count(t) > before)
    match = PATTERN_RE.findall(text)[-1]
    assert match[0] == name, text[-2000:]
    dominfo = ops.run_command(pnode, ["virsh", "dominfo", name]).stdout
    assert re.search(r"Max memory:\s+147456 KiB", dominfo), dominfo

    # hard reboot boots again
    before = ready_count(console(ops, pnode, name))
    gnt.ok("instance", "reboot", "--type", "hard", name)
    wait_console(ops, pnode, name, lambda t: ready_count(t) > before)
    assert domain_state(ops, pnode, name) == constants.DOMSTATE_RUNNING

    # paused by its operator: a shutdown stops it at once (libvirt refuses the power
    # button to a paused guest), says so, and records it down
    res = ops.run_command(pnode, ["virsh", "suspend", name])
    assert res.exit_status == 0, res.stderr
    out = gnt.ok("instance", "shutdown", "--timeout", "60", name)
    assert "was forcibly stopped (at once when paused" in out, out
    assert domain_state(ops, pnode, name) == constants.DOMSTATE_SHUTOFF
    assert gnt.status(name) == constants.INSTST_ADMINDOWN
    gnt.ok("instance", "startup", name)

    # destroyed behind ganeti_lv's back
    ops.run_command(pnode, ["virsh", "destroy", name])
    assert gnt.status(name) == constants.INSTST_ERRORDOWN

    # remove: domain, images and configuration gone
    gnt.ok("instance", "remove", "-f", name)
    assert config.get_instance(name) is None
    assert domain_state(ops, pnode, name) is None
    res = ops.run_command(pnode, ["ls", disk_path(cluster, inst, 0)])
    assert res.exit_status != 0


def test_shutdown_timeout_when_guest_ignores_acpi(env: Any, cleanup: list[tuple[str, str]]) -> None:
    gnt, config, ops, info = env
    name = "lc2"
    cleanup.append((name, constants.DT_SHARED_FILE))
    pname = sorted(config.node_names())[0]
    gnt.ok(
        "instance", "add", "-t", "sharedfile", "--disk", "0:size=16M", "-n", pname,
        *cli_env_args(info, name, patmb=1, dirtymb=0, ignoreacpi=True), name,
    )  # fmt: skip
    pnode = node(config, pname)
    wait_console(ops, pnode, name, lambda t: "GUEST-READY" in t)
    out = gnt.ok("instance", "shutdown", "--timeout", "3", name)
    assert re.search(r"did not shut down within 3 s and was forcibly stopped", out), out
    assert "GUEST: POWEROFF" not in console(ops, pnode, name)
    assert domain_state(ops, pnode, name) == constants.DOMSTATE_SHUTOFF
    assert gnt.status(name) == constants.INSTST_ADMINDOWN
    gnt.ok("instance", "remove", "-f", name)
    shared = config.get_cluster().shared_file_storage_dir
    assert ops.run_command(pnode, ["ls", f"{shared}/{name}"]).exit_status != 0


def _files_of(ops: LibvirtNodeOps, config: ConfigStore, name: str) -> list[str]:
    cluster = config.get_cluster()
    found = []
    for node_name in config.node_names():
        where = node(config, node_name)
        for base in (cluster.file_storage_dir, cluster.shared_file_storage_dir):
            res = ops.run_command(where, ["ls", "-d", f"{base}/{name}"])
            if res.exit_status == 0:
                found.append(f"{node_name}:{base}/{name}")
    return found


def test_bad_input_creates_nothing(env: Any, cleanup: list[tuple[str, str]]) -> None:
    gnt, config, ops, info = env
    nodes = sorted(config.node_names())
    base = ["instance", "add", "-t", "file", "--no-start"]
    existing = "lcdup"
    cleanup.append((existing, constants.DT_FILE))
    cleanup.append(("lcbad", constants.DT_FILE))
    out = gnt.ok(*base, "--disk", "0:size=7.5M", "-n", nodes[0], existing)
    assert "size of disk 0 7.5M is not a whole number of MiB: rounded up to 8 MiB" in out, out
    cases = [
        (["--disk", "0:size=8M", "-n", "nosuchnode", "lcbad"], "unknown_entity",
         "Node 'nosuchnode' not known"),
        (["--disk", "0:size=8M", "-n", nodes[1], existing], "already_exists",
         f"Instance '{existing}' is already in the cluster"),
        (["--disk", "0:size=8Q", "-n", nodes[1], "lcbad"], "wrong_input", "Invalid size"),
        (["--disk", "0:size=8M", "-B", "memory=lots", "-n", nodes[1], "lcbad"], "wrong_input",
         "Invalid backend parameter 'memory'"),
        (["--disk", "0:size=8M", "-B", "vcpus=999", "-n", nodes[1], "lcbad"],
         "insufficient_resources", "physical CPUs, but instance lcbad needs 999"),
        (["--disk", "0:size=1T", "-n", nodes[1], "lcbad"], "insufficient_resources",
         f"Not enough space for the disks of instance lcbad on node {nodes[1]} in"
         f" {config.get_cluster().file_storage_dir}/lcbad: 1048576 MiB needed"),
        (["--disk", "0:size=8M", "-n", nodes[1], "Lc_bad"], "wrong_input",
         "Invalid instance name 'Lc_bad': it contains 'L', '_'; a name is 1 to 63 characters"),
    ]  # fmt: skip
    serial = config.read().serial
    for extra, ecode, text in cases:
        code, _, err = gnt(*base, *extra)
        assert code == 1 and err.startswith(PREREQ.format(ecode)) and text in err, err
    last = nodes[-1]  # not the master (the first)
    gnt.ok("node", "modify", "--offline", "yes", last)
    try:
        serial = config.read().serial
        code, _, err = gnt(*base, "--disk", "0:size=8M", "-n", last, "lcbad")
        assert code == 1 and err.startswith(PREREQ.format("wrong_state")) and "offline" in err
    finally:
        gnt.ok("node", "modify", "--offline", "no", "-f", last)
    assert config.read().serial == serial + 1  # only the node flag changed back
    assert _files_of(ops, config, "lcbad") == []
    assert _files_of(ops, config, existing) == [
        f"{nodes[0]}:{config.get_cluster().file_storage_dir}/{existing}"
    ]
