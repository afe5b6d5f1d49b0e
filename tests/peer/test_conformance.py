"""ganeti_lv against the real Ganeti 3.0: the same commands, errors, outputs and hooks.

The same test guest runs as instance ``glvconf`` (sharedfile, 128 MiB, on
the first node) on the Ganeti peer and on the local cluster, one per
cluster: two running guests, the machine's limit, for about a minute. On
both, in the same order: the same bad inputs must fail with the same Ganeti
error type; ``gnt-instance list`` with the fields Ganeti's QA asks for and
``gnt-instance info`` must read the same through QA's own parsing; then,
with an environment-dumping hook installed for instance-migrate and
instance-export (pre and post) on every node, the instance is migrated to
the second node, shut down, exported to the first node and, stopped,
migrated back with --allow-failover (a failover, no guest starts). The hook
environments (GANETI_* variables, cluster-specific names replaced by
placeholders) must differ exactly in the keys the README lists as intended
differences, so a new divergence fails here until it is mended or
documented. Last, Ganeti's config-update hook: after a change of the
cluster's compression tools it runs on the master alone on both, with the
same environment but for cluster-modify's own keys; after a failover on
ganeti_lv only (Ganeti 3.0 does not count that write); after a refused
operation on neither.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator

import pytest
from conformance_helpers import (
    GanetiSide,
    LocalSide,
    Side,
    clear_dumps,
    differences,
    documented_differences,
    normalise,
    qa_instance_info,
    qa_list_fields,
    read_dumps,
    read_node_dumps,
)

from ganeti_lv.config import ConfigStore
from ganeti_lv.devcluster import guest
from ganeti_lv.devcluster.cluster import DevCluster
from ganeti_lv.devcluster.peer import PeerCluster

pytestmark = [pytest.mark.ganeti_peer, pytest.mark.cluster]

NAME = "glvconf"
HPATHS = ["instance-migrate", "instance-export"]
FALLBACK = "instance-migrate (failover fallback)"
CFGUPDATE = "config-update"
READY_RE = r"^GUEST-READY$"
# the fields Ganeti's QA reads from gnt-instance list (qa_instance.py, qa_utils.py)
QA_FIELDS = [
    "name",
    "pnode",
    "snodes",
    "status",
    "admin_state",
    "admin_state_source",
    "oper_state",
    "be/minmem",
    "be/maxmem",
    "vcpus",
    "disk.count",
    "disk.size/0",
    "disk.size/1",
    "disk.sizes",
    "nic.count",
    "nic.mode/0",
    "nic.ip/0",
    "nic.link/0",
    "nic.network.name/0",
    "be/always_failover",
    "disk_template",
    "os",
    "tags",
]
# parameters of Ganeti's other hypervisors: fields of a KVM instance too, without a value
OTHER_HV_FIELDS = ["hv/bootloader_path", "hv/viridian", "hv/init_script"]
NUMERIC = {"be/minmem", "be/maxmem", "vcpus", "disk.count", "disk.size/0", "nic.count"}
BOOLEAN = {"oper_state", "be/always_failover"}


class Pair:
    """Both sides with the instance and the hook dump directory."""

    def __init__(self, ganeti: GanetiSide, local: LocalSide, dump: str) -> None:
        self.ganeti = ganeti
        self.local = local
        self.dump = dump

    @property
    def sides(self) -> tuple[Side, Side]:
        return self.ganeti, self.local


def _add_local_instance(devcluster: DevCluster, local: LocalSide) -> None:
    image = guest.build_guest()
    args = guest.kernel_args(NAME, patmb=16, dirtymb=0)
    local.ok(
        "gnt-instance", "add", "-t", "sharedfile", "-o", "noop", "--disk", "0:size=128M",
        "-B", "maxmem=128,minmem=128,vcpus=1",
        "-H", f'kernel_path={image.kernel},initrd_path={image.initrd},kernel_args="{args}"',
        "--net", f"0:link={devcluster.info['bridge']}", "-n", local.nodes[0], NAME,
    )  # fmt: skip
    console = devcluster.host_path(local.nodes[0], f"/var/log/libvirt/qemu/{NAME}-console.log")
    guest.wait_console(console, READY_RE, 180)


@pytest.fixture(scope="module")
def pair(ganeti_peer: PeerCluster, devcluster: DevCluster) -> Iterator[Pair]:
    """The instance running on the first node of both clusters; removed afterwards."""
    if not isinstance(devcluster, DevCluster):
        pytest.skip("needs the local namespace cluster")
    local_devcluster = devcluster
    ganeti, local = GanetiSide(ganeti_peer), LocalSide(local_devcluster)
    dump = tempfile.mkdtemp(prefix="glv-conformance-", dir="/var/tmp")
    try:
        _add_local_instance(local_devcluster, local)
        ganeti_peer.add_instance(NAME, node="node1", template="sharedfile")
        yield Pair(ganeti, local, dump)
    finally:
        ganeti.remove_hooks(HPATHS)
        local.remove_hooks(HPATHS)
        if NAME in ganeti_peer.status().get("instances", []):
            ganeti_peer.remove_instance(NAME)
        ganeti.gnt("gnt-backup", "remove", NAME)
        local.gnt("gnt-instance", "remove", "-f", "--shutdown-timeout", "0", NAME)
        local.gnt("gnt-backup", "remove", NAME)
        shutil.rmtree(dump, ignore_errors=True)


def _same_error(pair: Pair, expected: str, *argv: str) -> None:
    serial = ConfigStore(pair.local.data_dir).read().serial
    got = {side.label: side.error_type(*argv) for side in pair.sides}
    assert got == {"Ganeti": expected, "ganeti_lv": expected}, " ".join(argv)
    assert ConfigStore(pair.local.data_dir).read().serial == serial  # nothing changed


def test_bad_inputs_give_the_same_error_type(pair: Pair) -> None:
    n1 = {side.label: side.nodes[0] for side in pair.sides}
    _same_error(pair, "unknown_entity", "gnt-instance", "migrate", "-f", "nosuch")
    _same_error(pair, "unknown_entity", "gnt-backup", "export", "-n", "x", "nosuch")
    for side in pair.sides:  # target = primary
        got = side.error_type("gnt-instance", "migrate", "-f", "-n", n1[side.label], NAME)
        assert got == "wrong_state", side.label
    for side in pair.sides:  # an unknown compression tool
        got = side.error_type(
            "gnt-backup", "export", "-n", side.nodes[1], "--transport-compression", "nosuch", NAME
        )
        assert got == "wrong_input", side.label
    for side in pair.sides:  # removing a running instance without shutting it down
        got = side.error_type(
            "gnt-backup", "export", "-n", side.nodes[1], "--noshutdown", "--remove-instance", NAME
        )
        assert got == "wrong_state", side.label


def _typed(field: str, text: str) -> object:
    """A list value as QA's _GetNumInstanceField/_GetBoolInstanceField take it."""
    if field in NUMERIC:
        return int(text)
    if field in BOOLEAN:
        assert text in ("Y", "N"), (field, text)
        return text == "Y"
    return text


def test_list_and_info_read_alike(pair: Pair) -> None:
    rows = {}
    infos = {}
    for side in pair.sides:
        out = side.ok(
            "gnt-instance", "list", "--no-headers", "--separator=:", "--units", "m",
            "-o", ",".join(QA_FIELDS), NAME,
        )  # fmt: skip
        values = qa_list_fields(out)
        assert len(values) == len(QA_FIELDS), (side.label, out)
        row = {f: _typed(f, v) for f, v in zip(QA_FIELDS, values, strict=True)}
        row["pnode"] = side.placeholders(NAME).get(str(row["pnode"]), row["pnode"])
        rows[side.label] = row
        infos[side.label] = qa_instance_info(side.ok("gnt-instance", "info", NAME))
        other = side.ok(
            "gnt-instance", "list", "--no-headers", "--separator=:",
            "-o", ",".join(OTHER_HV_FIELDS), NAME,
        )  # fmt: skip
        row.update(zip(OTHER_HV_FIELDS, qa_list_fields(other), strict=True))
    assert rows["ganeti_lv"] == rows["Ganeti"]
    assert rows["Ganeti"]["status"] == "running" and rows["Ganeti"]["disk.size/1"] == "-"
    # the default columns (no -o): scripts read them by position
    titles = {
        s.label: s.ok("gnt-instance", "list", NAME).splitlines()[0].split() for s in pair.sides
    }
    assert titles["ganeti_lv"] == titles["Ganeti"], titles
    assert [rows["Ganeti"][f] for f in OTHER_HV_FIELDS] == ["-"] * len(OTHER_HV_FIELDS)

    ganeti, local = infos["Ganeti"], infos["ganeti_lv"]
    assert [pair.ganeti.placeholders(NAME)[n] for n in ganeti["nodes"]] == ["<node1>"]
    assert [pair.local.placeholders(NAME)[n] for n in local["nodes"]] == ["<node1>"]
    for key in ("name", "state", "disk-template"):
        assert local[key] == ganeti[key], key
    for param in ("kernel_path", "initrd_path", "kernel_args"):
        assert local["hypervisor-parameters"][param] == ganeti["hypervisor-parameters"][param]
    for param in ("maxmem", "minmem", "vcpus"):
        assert local["backend-parameters"][param] == ganeti["backend-parameters"][param]

    # NIC entries alike but for the MAC and UUID each cluster chose
    def nic(entry: dict[str, object]) -> dict[str, object]:
        return {k: v for k, v in entry.items() if k not in ("MAC", "UUID")}

    assert [nic(n) for n in local["nics"]] == [nic(n) for n in ganeti["nics"]]
    assert ganeti["nics"][0]["mode"] == "bridged"


def _hook_envs(pair: Pair, side: Side, hpath: str) -> dict[str, dict[str, str]]:
    """Per phase the normalised environment, the same on every node that ran the hook."""
    out = {}
    for phase in ("pre", "post"):
        envs = [normalise(e, side.placeholders(NAME)) for e in read_dumps(pair.dump, hpath, phase)]
        assert envs, (side.label, hpath, phase)  # the hook ran (on master and more)
        assert all(e == envs[0] for e in envs), (side.label, hpath, phase)
        out[phase] = envs[0]
    return out


def test_hook_environments_differ_only_as_documented(pair: Pair) -> None:
    found: dict[str, dict[str, tuple[object, object]]] = {}
    envs: dict[str, dict[str, dict[str, dict[str, str]]]] = {}
    for side in pair.sides:
        clear_dumps(pair.dump)
        side.install_hooks(HPATHS, pair.dump)
        side.ok("gnt-instance", "migrate", "-f", "-n", side.nodes[1], NAME)
        side.ok("gnt-instance", "shutdown", "--timeout=0", NAME)
        # a stopped instance is not migrated without --allow-failover
        assert side.error_type("gnt-instance", "migrate", "-f", NAME) == "wrong_state"
        side.ok("gnt-backup", "export", "-n", side.nodes[0], NAME)
        envs[side.label] = {h: _hook_envs(pair, side, h) for h in HPATHS}
        # with --allow-failover the stopped instance fails over (no guest starts)
        clear_dumps(pair.dump)
        side.ok("gnt-instance", "migrate", "-f", "--allow-failover", "-n", side.nodes[0], NAME)
        envs[side.label][FALLBACK] = _hook_envs(pair, side, "instance-migrate")
        side.remove_hooks(HPATHS)
    for hpath in [*HPATHS, FALLBACK]:
        for phase in ("pre", "post"):
            diff = differences(envs["Ganeti"][hpath][phase], envs["ganeti_lv"][hpath][phase])
            for key, values in diff.items():
                found.setdefault(key, {})[f"{hpath}-{phase}"] = values
    documented = documented_differences()
    report = "\n".join(f"{k}: {v}" for k, v in sorted(found.items()))
    assert sorted(found) == sorted(documented), (
        f"undocumented: {sorted(set(found) - set(documented))}\n"
        f"documented but equal now: {sorted(set(documented) - set(found))}\n{report}"
    )
    # the keys both share carry the same meaning, e.g.
    migrate = envs["ganeti_lv"]["instance-migrate"]
    assert migrate["pre"]["GANETI_MIGRATE_LIVE"] == "True"
    assert migrate["pre"]["GANETI_NEW_PRIMARY"] == "<node2>"
    export = envs["ganeti_lv"]["instance-export"]["post"]
    assert export["GANETI_EXPORT_NODE"] == "<node1>" and export["GANETI_INSTANCE_STATUS"] == "down"
    for side in pair.sides:  # a failover is never live
        assert envs[side.label][FALLBACK]["pre"]["GANETI_MIGRATE_LIVE"] == "False", side.label


def _config_update_runs(pair: Pair, side: Side, opcode: str) -> list[tuple[str, dict[str, str]]]:
    """(node, normalised environment) of each config-update run for ``opcode``
    (on Ganeti a job of its own daemons may have run it too)."""
    runs = read_node_dumps(pair.dump, CFGUPDATE, "post")
    return [
        (node, normalise(env, side.placeholders(NAME)))
        for node, env in runs
        if env.get("GANETI_OP_CODE") == opcode
    ]


def test_config_update_hook_as_ganetis(pair: Pair) -> None:
    """Ganeti 3.0 runs config-update after the writes made under its configuration lock
    (node add/remove, a cluster's compression tools, ...); most of its operations write
    through the configuration daemon's own calls, which it does not count. ganeti_lv runs
    it after every operation that wrote (README "Hooks")."""
    runs: dict[str, dict[str, list[tuple[str, dict[str, str]]]]] = {}
    for side in pair.sides:
        tools = ",".join(side.compression_tools())
        side.install_hooks([CFGUPDATE], pair.dump, phases=("post",))
        try:
            clear_dumps(pair.dump)
            side.ok("gnt-cluster", "modify", "--compression-tools", tools)  # the same tools
            modify = _config_update_runs(pair, side, "OP_CLUSTER_SET_PARAMS")
            clear_dumps(pair.dump)
            # the instance is stopped: a failover, which records the new primary
            side.ok("gnt-instance", "migrate", "-f", "--allow-failover", "-n", side.nodes[1], NAME)
            failover = _config_update_runs(pair, side, "OP_INSTANCE_MIGRATE")
            clear_dumps(pair.dump)
            assert side.error_type("gnt-instance", "migrate", "-f", NAME) == "wrong_state"
            refused = _config_update_runs(pair, side, "OP_INSTANCE_MIGRATE")
        finally:
            side.remove_hooks([CFGUPDATE], phases=("post",))
        runs[side.label] = {"modify": modify, "failover": failover, "refused": refused}
    ganeti, local = runs["Ganeti"], runs["ganeti_lv"]
    for side in pair.sides:  # on the master alone, with the pre-hook environment
        (node, env), *more = runs[side.label]["modify"]
        assert (node, more) == ("<node1>", []), side.label
        assert env["GANETI_HOOKS_PATH"] == CFGUPDATE and env["GANETI_HOOKS_PHASE"] == "post"
        assert env["GANETI_OBJECT_TYPE"] == "CLUSTER" and env["GANETI_OP_TARGET"] == "<cluster>"
        assert not [k for k in env if k.startswith("GANETI_POST_")], side.label
        assert runs[side.label]["refused"] == [], side.label  # nothing written, nothing run
    # cluster-modify's own keys: Ganeti's volume group, ganeti_lv's changed settings
    assert sorted(differences(ganeti["modify"][0][1], local["modify"][0][1])) == [
        "GANETI_DATA_DIR",
        "GANETI_NEW_COMPRESSION_TOOLS",
        "GANETI_NEW_VG_NAME",
    ]
    assert ganeti["failover"] == []  # written through the configuration daemon's calls
    ((node, env),) = local["failover"]
    assert node == "<node1>" and env["GANETI_INSTANCE_NAME"] == "<instance>"
    assert env["GANETI_NEW_PRIMARY"] == "<node2>" and "GANETI_POST_NEW_PRIMARY" not in env
