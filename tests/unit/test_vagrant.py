"""Checks of the Vagrant cluster definition (vagrant/).

``vagrant validate`` runs when vagrant is installed; the text checks run
everywhere: 3 nodes, nested KVM with host-passthrough, a dedicated private
network, provisioning scripts that parse and are wired into the Vagrantfile.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

VAGRANT_DIR = Path(__file__).resolve().parents[2] / "vagrant"
VAGRANTFILE = VAGRANT_DIR / "Vagrantfile"
PROVISION_DIR = VAGRANT_DIR / "provision"
SCRIPTS = sorted(PROVISION_DIR.glob("*.sh"))


def _text() -> str:
    return VAGRANTFILE.read_text(encoding="utf-8")


# The public box with nested KVM, and the box built by vagrant/box/build.sh
# with the nodes and their guests under TCG on a host-only network.
LOCAL_BOX_UNDER_TCG = {
    "GANETI_LV_VAGRANT_BOX": "ganeti-lv/bookworm",
    "GANETI_LV_VAGRANT_DOMAIN_TYPE": "qemu",
    "GANETI_LV_VAGRANT_MANAGEMENT_MODE": "none",
    "GANETI_LV_VAGRANT_NODES": "2",
}


@pytest.mark.skipif(shutil.which("vagrant") is None, reason="vagrant is not installed")
@pytest.mark.parametrize("settings", [{}, LOCAL_BOX_UNDER_TCG], ids=["default", "local-box-tcg"])
def test_vagrant_validate(tmp_path: Path, settings: dict[str, str]) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GANETI_LV_VAGRANT_")}
    env.update(settings, VAGRANT_HOME=str(tmp_path / "vagrant.d"))
    # Validation must not depend on local state: run it on a copy of vagrant/.
    work = tmp_path / "vagrant"
    shutil.copytree(VAGRANT_DIR, work, ignore=shutil.ignore_patterns(".vagrant", ".cluster", "out"))
    proc = subprocess.run(
        ["vagrant", "validate"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "validated successfully" in proc.stdout
    # Validation must not create the cluster key (only up/provision do).
    assert not (work / ".cluster").exists()


def test_provisioning_scripts_parse() -> None:
    names = {p.name for p in SCRIPTS}
    assert {"node.sh", "cluster-init.sh", "node-join.sh", "common.sh"} <= names
    for script in SCRIPTS:
        proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert proc.returncode == 0, f"{script.name}: {proc.stderr}"
        assert "set -euo pipefail" in script.read_text() or script.name == "common.sh"


def test_vagrantfile_defines_three_nodes_with_nested_kvm() -> None:
    text = _text()
    count = r'^NODE_COUNT = Integer\(ENV\.fetch\("GANETI_LV_VAGRANT_NODES", "3"\)\)$'
    assert re.search(count, text, re.M)
    assert 'name: "node#{i}"' in text
    assert "config.vm.define node[:name]" in text
    assert re.search(r"libvirt\.nested\s*=\s*true", text)
    assert re.search(r'libvirt\.cpu_mode\s*=\s*"host-passthrough"', text)
    assert "config.vm.provider :libvirt" in text


def test_vagrantfile_private_cluster_network() -> None:
    text = _text()
    subnet = re.search(r'GANETI_LV_VAGRANT_SUBNET",\s*"(\d+\.\d+\.\d+)"', text)
    assert subnet is not None
    # Not vagrant's management network, and not the local test cluster's subnet.
    assert subnet.group(1) not in ("192.168.121", "10.250.0")
    assert ":private_network" in text
    assert 'libvirt__forward_mode: "none"' in text


def test_vagrantfile_provisioners_reference_existing_scripts() -> None:
    referenced = set(re.findall(r'path:\s*"provision/([^"]+)"', _text()))
    assert referenced == {
        "node.sh",
        "storage-server.sh",
        "cluster-init.sh",
        "storage-client.sh",
        "node-join.sh",
    }
    for name in referenced:
        assert (PROVISION_DIR / name).is_file()


def test_provisioning_configures_libvirt_for_the_cluster() -> None:
    node = (PROVISION_DIR / "node.sh").read_text()
    assert "host_uuid" in node and "/proc/sys/kernel/random/uuid" in node
    assert "ListenStream=$NODE_ADDRESS:" in node  # TLS only on the private address
    assert "gnt-br0" in (PROVISION_DIR / "common.sh").read_text()
    init = (PROVISION_DIR / "cluster-init.sh").read_text()
    assert "cluster init" in init and '--domain-type "$DOMAIN_TYPE"' in init
    join = (PROVISION_DIR / "node-join.sh").read_text()
    assert "node add" in join and "--host-key" in join
    for text in (init, join):  # both write cluster.json with the Vagrantfile's scale
        assert '--timeout-scale "$TEST_TIMEOUT_SCALE"' in text


def test_cluster_json_describes_the_configuration(tmp_path: Path) -> None:
    import importlib.util
    import json

    from ganeti_lv.config import ConfigStore
    from ganeti_lv.objects import Cluster, ConfigData, Node

    nodes = {
        f"node{i}": Node(
            name=f"node{i}",
            address=f"10.251.0.1{i}",
            libvirt_uri=f"qemu+tcp://10.251.0.1{i}/system",
            peer_uri=f"qemu+tcp://10.251.0.1{i}/system",
            migration_address=f"10.251.0.1{i}",
        )
        for i in (2, 1, 3)
    }
    cluster = Cluster(name="vagrant-cluster", master_node="node1", default_bridge="gnt-br0")
    data_dir = str(tmp_path / "data")
    ConfigStore.initialize(data_dir, ConfigData(cluster=cluster, nodes=nodes))
    guest = tmp_path / "guest" / "guest-abc"
    guest.mkdir(parents=True)
    (guest / "vmlinuz").write_bytes(b"k")
    (guest / "initrd.gz").write_bytes(b"i")
    spec = importlib.util.spec_from_file_location("cluster_json", PROVISION_DIR / "cluster_json.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "cluster.json"
    argv = ["--data-dir", data_dir, "--guest-dir", str(tmp_path / "guest"), "--out", str(out)]
    assert module.main(argv) == 0
    info = json.loads(out.read_text())
    assert [n["name"] for n in info["nodes"]] == ["node1", "node2", "node3"]
    assert info["nodes"][0]["libvirt_uri"] == "qemu+tcp://10.251.0.11/system"
    assert info["nodes"][0]["ssh_port"] == 22
    assert info["data_dir"] == data_dir and info["master"] == "node1"
    assert info["guest"]["kernel"] == str(guest / "vmlinuz")
    assert info["guest"]["initrd"] == str(guest / "initrd.gz")
    assert info["storage"]["shared_file_storage_dir"] == cluster.shared_file_storage_dir
    assert info["supports_faults"] is False and info["kind"] == "vagrant"
    assert info["timeout_scale"] == 1.0  # as on the local cluster unless told
    assert module.main([*argv, "--timeout-scale", "4"]) == 0
    assert json.loads(out.read_text())["timeout_scale"] == 4.0
    for bad in ("0", "-1", "slow"):
        with pytest.raises(SystemExit):
            module.main([*argv, "--timeout-scale", bad])
    assert json.loads(out.read_text())["timeout_scale"] == 4.0  # the description kept


@pytest.mark.skipif(shutil.which("ruby") is None, reason="ruby is not installed")
def test_provisioning_writes_tls_credentials_and_settings(tmp_path: Path) -> None:
    """The host's CA (cluster_ca.rb) signs each node's first certificates (node_tls.py)."""
    import importlib.util

    from cryptography import x509

    from ganeti_lv import pki
    from ganeti_lv.hypervisor.libvirt import credentials

    keys = tmp_path / "keys"
    keys.mkdir()
    script = f'require "{VAGRANT_DIR / "cluster_ca.rb"}"; ClusterCA.ensure(ARGV[0], ARGV[1])'
    ruby = ["ruby", "-e", script, str(keys), "vagrant-cluster"]
    subprocess.run(ruby, check=True, timeout=60)
    ca_cert, ca_key = keys / "cacert.pem", keys / "cakey.pem"
    assert oct(ca_key.stat().st_mode & 0o777) == "0o600"
    first = ca_cert.read_bytes()
    subprocess.run(ruby, check=True, timeout=60)
    assert ca_cert.read_bytes() == first  # made once, kept on later provisioning runs
    authority = pki.parse_ca(first, ca_key.read_bytes(), "the Vagrant CA")

    spec = importlib.util.spec_from_file_location("node_tls", PROVISION_DIR / "node_tls.py")
    assert spec is not None and spec.loader is not None
    node_tls = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(node_tls)
    root = tmp_path / "node2"
    conf = root / "etc" / "libvirt" / "libvirtd.conf"
    conf.parent.mkdir(parents=True)
    conf.write_text('#listen_tls = 0\nauth_tcp = "none"\nlisten_tcp = 1\nmax_clients = 50\n')
    argv = [
        *("--ca-cert", str(ca_cert), "--ca-key", str(ca_key)),
        *("--cluster-name", "vagrant-cluster", "--node-name", "node2"),
        *("--address", "10.251.0.12", "--root", str(root)),
    ]
    assert node_tls.main(argv) == 0
    for path, (_, mode) in credentials.node_files(
        pki.issue_node_credentials(authority, "c", "n", [])
    ).items():
        local = root / path.lstrip("/")
        assert oct(local.stat().st_mode & 0o777) == oct(mode), path
    server = x509.load_pem_x509_certificate((root / "etc/pki/libvirt/servercert.pem").read_bytes())
    server.verify_directly_issued_by(authority.cert)
    alt = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(a) for a in alt.get_values_for_type(x509.IPAddress)] == ["10.251.0.12"]
    lines = conf.read_text().splitlines()
    assert "max_clients = 50" in lines and "listen_tls = 1" in lines and "listen_tcp = 0" in lines
    assert not any("auth_tcp" in line or line.startswith("#listen_tls") for line in lines)
    assert 'tls_allowed_dn_list = ["O=vagrant-cluster,OU=clients,CN=*"]' in lines
    before = (root / "etc/pki/libvirt/servercert.pem").read_bytes()
    assert node_tls.main(argv) == 0  # provisioning again keeps the node's certificates
    assert (root / "etc/pki/libvirt/servercert.pem").read_bytes() == before
    assert conf.read_text().splitlines() == lines


def test_the_cluster_speaks_tls_to_libvirtd() -> None:
    common = (PROVISION_DIR / "common.sh").read_text()
    assert 'echo "qemu+tls://$1/system"' in common
    node = (PROVISION_DIR / "node.sh").read_text()
    assert "libvirtd-tls.socket" in node and "disable libvirtd-tcp.socket" in node
    assert "auth_tcp" not in node
    assert (
        '--ca-cert "$CA_CERT" --ca-key "$CA_KEY"' in (PROVISION_DIR / "cluster-init.sh").read_text()
    )
    assert "ClusterCA.ensure(KEY_DIR, CLUSTER_NAME)" in _text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "name at least one test file"),
        (["test_nosuch.py"], "no test file tests/cluster/test_nosuch.py"),
        (["--budget", "soon", "test_migrate.py"], "--budget must be a whole number"),
        (["--reserve", "0", "test_migrate.py"], "--reserve must be a whole number"),
        (["--fast", "test_migrate.py"], "unknown option: --fast"),
    ],
)
def test_cluster_test_run_refuses_bad_arguments(
    tmp_path: Path, args: list[str], message: str
) -> None:
    """Refused before anything runs: no vagrant, no output directory, no destroy."""
    out = tmp_path / "run"
    proc = subprocess.run(
        ["bash", str(VAGRANT_DIR / "run-cluster-tests.sh"), "--out", str(out), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert not out.exists()


# A stand-in for vagrant (and virsh) recording its calls: two nodes whose
# libvirtd listens as $LISTEN says, pytest runs that leave a JUnit file.
FAKE_VAGRANT = r"""#!/bin/bash
echo "$*" >>"$FAKE_LOG"
case "$1" in
  up) [ -n "${UP_SLEEP:-}" ] && exec sleep "$UP_SLEEP"; exit "${UP_RC:-0}" ;;
  destroy) exit 0 ;;
  status) printf '1,node1,state,running\n1,node2,state,running\n' ;;
  ssh)
    node="$2" cmd="$4" n="${2#node}"
    case "$cmd" in
      *"/etc/hosts"*) echo "10.252.0.1$n" ;;
      *"ss -Hltn"*) printf 'LISTEN 0 128 0.0.0.0:22 0.0.0.0:*\n'
        for port in $LISTEN; do printf 'LISTEN 0 50 %s 0.0.0.0:*\n' "${port//N/$n}"; done ;;
      *'cat\ '*) [ -n "${ALL_PASS:-}" ] && { printf '%s' '<testsuites><testsuite>'\
'<testcase name="test_a" time="12.34"/></testsuite></testsuites>'; exit 0; }
        printf '%s' '<testsuites><testsuite><testcase name="test_a" time="12.34"/>'\
'<testcase name="test_b" time="1"><skipped/></testcase>'\
'<testcase name="test_c" time="3"><failure/></testcase><testcase time="0.5"/>'\
'</testsuite></testsuites>' ;;
    esac ;;
esac
"""


def _fake_env(
    tmp_path: Path, listen: str, up_rc: int = 0, all_pass: bool = False
) -> tuple[dict[str, str], Path]:
    """The stand-in vagrant on PATH; the environment and the file it logs its calls to."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(parents=True)
    for tool in ("vagrant", "virsh"):
        (bin_dir / tool).write_text(FAKE_VAGRANT if tool == "vagrant" else "#!/bin/sh\n")
        (bin_dir / tool).chmod(0o755)
    log = tmp_path / "calls.log"
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "FAKE_LOG": str(log),
        "LISTEN": listen,
        "UP_RC": str(up_rc),
        "ALL_PASS": "yes" if all_pass else "",
    }
    return env, log


def _fake_run(
    tmp_path: Path, listen: str, up_rc: int = 0, all_pass: bool = False
) -> tuple[int, Path, list[str]]:
    env, log = _fake_env(tmp_path, listen, up_rc, all_pass)
    out = tmp_path / "run"
    argv = [str(VAGRANT_DIR / "run-cluster-tests.sh"), "--out", str(out)]
    proc = subprocess.run(
        [*argv, "test_migrate.py", "test_export.py -k 'live or remove'"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return proc.returncode, out, log.read_text().splitlines()


def test_cluster_test_run_up_check_tests_destroy(tmp_path: Path) -> None:
    code, out, calls = _fake_run(tmp_path, "10.252.0.1N:16514")
    assert code == 1  # test_c failed, and one test was stopped at the limit
    assert calls[0] == "up --no-parallel" and calls[-1] == "destroy -f"
    pytest_calls = [c for c in calls if "pytest" in c]
    assert len(pytest_calls) == 2
    assert "GANETI_LV_TEST_CLUSTER=/root/cluster.json" in pytest_calls[0]
    # stopped at its limit like a ^C (fixtures torn down, JUnit file written)
    assert "timeout\\ -s\\ INT\\ -k\\ 60\\ " in pytest_calls[0]
    assert "tests/cluster/test_export.py\\ -k\\ \\'live\\ or\\ remove\\'" in pytest_calls[1]
    steps = {line.split("\t")[0]: line.split("\t")[2] for line in (out / "steps.tsv").open()}
    assert steps["tls-only"].strip() == "0" and steps["leftovers"].strip() == "0"
    assert "destroy" in steps and "tests-01-test_migrate.py" in steps
    # each node's mounts and libvirt logs are kept, before the destroy
    logs = [i for i, c in enumerate(calls) if c.startswith("ssh") and "journalctl" in c]
    assert [calls[i].split()[1] for i in logs] == ["node1", "node2"]
    assert logs[-1] < calls.index("destroy -f") and steps["node-logs"].strip() == "0"
    rows = (out / "tests.tsv").read_text().splitlines()
    assert rows[1:5] == [
        "test_migrate.py\ttest_a\tpassed\t12.3",
        "test_migrate.py\ttest_b\tskipped\t1.0",
        "test_migrate.py\ttest_c\tfailure\t3.0",
        "test_migrate.py\t(running at the limit)\tinterrupted\t0.5",
    ]
    assert len(rows) == 9


def test_cluster_test_run_passes_only_when_everything_did(tmp_path: Path) -> None:
    code, out, calls = _fake_run(tmp_path, "10.252.0.1N:16514", all_pass=True)
    assert code == 0, (out / "steps.tsv").read_text()
    assert calls[-1] == "destroy -f"
    rows = (out / "tests.tsv").read_text().splitlines()
    assert rows[1:] == [
        "test_migrate.py\ttest_a\tpassed\t12.3",
        "test_export.py\ttest_a\tpassed\t12.3",
    ]


def test_cluster_test_run_flags_tcp_and_still_destroys_after_a_failed_up(
    tmp_path: Path,
) -> None:
    code, out, _ = _fake_run(tmp_path / "tcp", "10.252.0.1N:16514 0.0.0.0:16509", all_pass=True)
    assert code == 1  # every test passed, but libvirtd listens on TCP
    tls = (out / "tls-only.log").read_text()
    assert "node1: a TCP listener on 16509" in tls and "node2: a TCP listener" in tls
    steps = [line.split("\t") for line in (out / "steps.tsv").read_text().splitlines()]
    assert [s[2] for s in steps if s[0] == "tls-only"] == ["1"]
    assert [s[0] for s in steps][-2:] == ["destroy", "leftovers"]
    code, out, calls = _fake_run(tmp_path / "down", "10.252.0.1N:16514", up_rc=1)
    assert code == 1
    assert calls == ["up --no-parallel", "destroy -f"]  # no tests, but destroyed


def test_provisioning_maps_node_names_to_cluster_addresses(tmp_path: Path) -> None:
    """vagrant maps the node's name to a loopback address; provisioning drops that."""
    text = (PROVISION_DIR / "node.sh").read_text()
    function = re.search(r"^configure_hosts\(\) \{\n.*?^\}\n", text, re.S | re.M)
    assert function is not None
    hosts = tmp_path / "hosts"
    hosts.write_text(
        "127.0.2.1 node1 node1\n127.0.0.1 localhost\n127.0.1.1 vagrant\n"
        "10.252.0.12 node2 # ganeti-lv cluster\n::1 localhost ip6-localhost\n"
    )
    script = f"log() {{ :; }}\n{function.group(0)}configure_hosts\n"
    env = {
        **os.environ,
        "HOSTS_FILE": str(hosts),
        "NODE_NAME": "node1",
        "HOSTS_LINES": "10.252.0.11 node1\n10.252.0.12 node2",
    }
    for _ in range(2):  # provisioning again changes nothing
        subprocess.run(["bash", "-c", script], env=env, check=True, timeout=30)
        assert hosts.read_text().splitlines() == [
            "127.0.0.1 localhost",
            "::1 localhost ip6-localhost",
            "10.252.0.11 node1 # ganeti-lv cluster",
            "10.252.0.12 node2 # ganeti-lv cluster",
        ]


def test_join_checks_that_the_shared_storage_is_the_masters(tmp_path: Path) -> None:
    """node-join.sh refuses a node whose shared file storage the master does not see."""
    join = (PROVISION_DIR / "node-join.sh").read_text()
    assert 'check_shared_storage "$SHARED_STORAGE_DIR"' in join
    shared = tmp_path / "shared"
    shared.mkdir()
    setup = (
        f"source {PROVISION_DIR / 'common.sh'}\n"
        "NODE_NAME=node2 MASTER_NAME=node1 MASTER_ADDRESS=10.252.0.11\n"
    )
    # on_node stand-ins: the master sees this node's directory (the NFS
    # share), or it does not (nothing mounted: the file is not there)
    for on_master, code in (('[ "$1" = 10.252.0.11 ] && shift && "$@"', 0), ("return 1", 1)):
        script = f'{setup}on_node() {{ {on_master}; }}\ncheck_shared_storage "$1"\n'
        proc = subprocess.run(
            ["bash", "-c", script, "check", str(shared)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert proc.returncode == code, proc.stderr
        assert ("is the NFS share mounted there?" in proc.stderr) == bool(code)
        assert list(shared.iterdir()) == []  # the probe file is gone either way


def test_on_node_leaves_the_callers_input_to_the_caller(tmp_path: Path) -> None:
    """node-join.sh calls on_node in a loop over the node list: each node is visited."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # an ssh that, like OpenSSH, reads its standard input unless given -n
    (bin_dir / "ssh").write_text(
        '#!/bin/bash\nfor a in "$@"; do [ "$a" = -n ] && exit 0; done\ncat >/dev/null\n'
    )
    (bin_dir / "ssh").chmod(0o755)
    script = (
        f"source {PROVISION_DIR / 'common.sh'}\n"
        'while read -r address name; do echo "visiting $name"; on_node "$address" true;'
        " done <<<$'10.252.0.11 node1\\n10.252.0.12 node2\\n10.252.0.13 node3'\n"
    )
    proc = subprocess.run(
        ["bash", "-c", script],
        env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.stdout.split("\n")[:3] == ["visiting node1", "visiting node2", "visiting node3"]


def test_cluster_test_run_stops_the_running_step_on_a_signal_and_destroys(
    tmp_path: Path,
) -> None:
    env, log = _fake_env(tmp_path, "10.252.0.1N:16514")
    env["UP_SLEEP"] = "300"  # a `vagrant up` that would hold its step for 5 minutes
    argv = [str(VAGRANT_DIR / "run-cluster-tests.sh"), "--out", str(tmp_path / "run")]
    proc = subprocess.Popen(
        [*argv, "test_migrate.py"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 30
        while not (log.exists() and "up --no-parallel" in log.read_text()):
            assert time.monotonic() < deadline, "vagrant up never started"
            time.sleep(0.05)
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == 130
    assert time.monotonic() - sent < 15  # not at the step's limit
    assert log.read_text().splitlines() == ["up --no-parallel", "destroy -f"]
