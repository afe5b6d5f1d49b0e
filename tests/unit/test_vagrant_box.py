"""The Vagrant box builder (vagrant/box/) and the Vagrantfile's settings.

Checked without booting anything: the box builder's package list (every
package the provisioning installs is in the box), the box format pack.sh
writes and vagrant accepts (``vagrant box add`` into a scratch VAGRANT_HOME),
and the settings the Vagrantfile gives each node for a given environment
(read by loading the Vagrantfile in Ruby with a recording stand-in for
Vagrant's configuration objects).
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest

VAGRANT_DIR = Path(__file__).resolve().parents[2] / "vagrant"
BOX_DIR = VAGRANT_DIR / "box"
BUILD = BOX_DIR / "build.sh"
PACK = BOX_DIR / "pack.sh"

# Loads a Vagrantfile with Vagrant.configure replaced by a recorder of every
# setting, call and nested block, printed as JSON. Trigger bodies (`ruby`
# blocks) are recorded, not run.
RECORDER_RB = r"""
require "json"

class Recorder
  def initialize
    @values = {}
    @children = {}
    @calls = []
  end

  def method_missing(name, *args, **kw, &block)
    n = name.to_s
    if n.end_with?("=")
      @values[n.chomp("=")] = args[0]
      return args[0]
    end
    if args.empty? && kw.empty? && block.nil?
      return @children[n] ||= Recorder.new
    end
    call = { "name" => n, "args" => args, "kw" => kw }
    if block && n != "ruby"
      child = Recorder.new
      block.call(child)
      call["block"] = child.to_h
    end
    @calls << call
    nil
  end

  def respond_to_missing?(_name, _include_private = false)
    true
  end

  def to_h
    { "values" => @values, "children" => @children.transform_values(&:to_h), "calls" => @calls }
  end

  def to_json(*a)
    to_h.to_json(*a)
  end
end

module Vagrant
  def self.configure(_version)
    root = Recorder.new
    yield root
    puts JSON.generate(root.to_h)
  end
end

load ARGV[0]
"""


def _env(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GANETI_LV_VAGRANT_")}
    env.update(overrides)
    return env


def _vagrantfile(tmp_path: Path, **env: str) -> dict[str, Any]:
    """The Vagrantfile's configuration under ``env``, as recorded."""
    recorder = tmp_path / "recorder.rb"
    recorder.write_text(RECORDER_RB, encoding="utf-8")
    proc = subprocess.run(
        ["ruby", str(recorder), str(VAGRANT_DIR / "Vagrantfile")],
        env=_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _calls(rec: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [c for c in rec["calls"] if c["name"] == name]


def _libvirt(conf: dict[str, Any]) -> dict[str, Any]:
    (provider,) = _calls(conf["children"]["vm"], "provider")
    assert provider["args"] == ["libvirt"]
    return provider["block"]["values"]


def _nodes(conf: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["args"][0]: c["block"] for c in _calls(conf["children"]["vm"], "define")}


needs_ruby = pytest.mark.skipif(shutil.which("ruby") is None, reason="ruby is not installed")


@needs_ruby
def test_vagrantfile_defaults_public_box_and_nested_kvm(tmp_path: Path) -> None:
    conf = _vagrantfile(tmp_path)
    assert conf["children"]["vm"]["values"]["box"] == "debian/bookworm64"
    libvirt = _libvirt(conf)
    assert libvirt["driver"] == "kvm"
    assert libvirt["nested"] is True and libvirt["cpu_mode"] == "host-passthrough"
    assert libvirt["management_network_mode"] == "nat"
    nodes = _nodes(conf)
    assert sorted(nodes) == ["node1", "node2", "node3"]
    (net,) = _calls(nodes["node1"]["children"]["vm"], "network")
    # Not the local test cluster's (10.250.x) nor the Ganeti peer's (10.251.x).
    assert net["kw"]["ip"] == "10.252.0.11"
    assert net["kw"]["libvirt__forward_mode"] == "none"


@needs_ruby
def test_vagrantfile_local_box_under_tcg(tmp_path: Path) -> None:
    conf = _vagrantfile(
        tmp_path,
        GANETI_LV_VAGRANT_BOX="ganeti-lv/bookworm",
        GANETI_LV_VAGRANT_DOMAIN_TYPE="qemu",
        GANETI_LV_VAGRANT_MANAGEMENT_MODE="none",
        GANETI_LV_VAGRANT_NODES="2",
    )
    assert conf["children"]["vm"]["values"]["box"] == "ganeti-lv/bookworm"
    libvirt = _libvirt(conf)
    # TCG nodes: no nested KVM, no host CPU passthrough (TCG has none).
    assert libvirt["driver"] == "qemu"
    assert "nested" not in libvirt
    assert libvirt["cpu_mode"] == "custom" and libvirt["cpu_model"] == "qemu64"
    assert libvirt["management_network_mode"] == "none"
    nodes = _nodes(conf)
    assert sorted(nodes) == ["node1", "node2"]
    for name, node in nodes.items():
        for prov in _calls(node["children"]["vm"], "provision"):
            env = prov["kw"]["env"]
            assert env["DOMAIN_TYPE"] == "qemu" and env["NODE_NAME"] == name
            assert env["HOSTS_LINES"] == "10.252.0.11 node1\n10.252.0.12 node2"
            # guests under TCG inside nodes under TCG: the tests wait longer
            assert env["TEST_TIMEOUT_SCALE"] == "4"


@needs_ruby
def test_vagrantfile_kvm_nodes_with_tcg_guests(tmp_path: Path) -> None:
    conf = _vagrantfile(
        tmp_path, GANETI_LV_VAGRANT_DOMAIN_TYPE="qemu", GANETI_LV_VAGRANT_NODE_DRIVER="kvm"
    )
    libvirt = _libvirt(conf)
    assert libvirt["driver"] == "kvm" and libvirt["nested"] is True
    assert {p["kw"]["env"]["TEST_TIMEOUT_SCALE"] for p in _provisions(conf)} == {"1"}
    told = _vagrantfile(
        tmp_path,
        GANETI_LV_VAGRANT_DOMAIN_TYPE="qemu",
        GANETI_LV_VAGRANT_TEST_TIMEOUT_SCALE="2.5",
    )
    assert {p["kw"]["env"]["TEST_TIMEOUT_SCALE"] for p in _provisions(told)} == {"2.5"}


def _provisions(conf: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        prov
        for node in _nodes(conf).values()
        for prov in _calls(node["children"]["vm"], "provision")
    ]


@needs_ruby
@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("GANETI_LV_VAGRANT_DOMAIN_TYPE", "xen"),
        ("GANETI_LV_VAGRANT_NODE_DRIVER", "lxc"),
        ("GANETI_LV_VAGRANT_MANAGEMENT_MODE", "open"),
        ("GANETI_LV_VAGRANT_NODES", "0"),
        ("GANETI_LV_VAGRANT_TEST_TIMEOUT_SCALE", "0"),
        ("GANETI_LV_VAGRANT_TEST_TIMEOUT_SCALE", "slow"),
    ],
)
def test_vagrantfile_rejects_bad_settings(tmp_path: Path, var: str, value: str) -> None:
    recorder = tmp_path / "recorder.rb"
    recorder.write_text(RECORDER_RB, encoding="utf-8")
    proc = subprocess.run(
        ["ruby", str(recorder), str(VAGRANT_DIR / "Vagrantfile")],
        env=_env(**{var: value}),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode != 0
    assert var in proc.stderr


def _apt_args(provision_dir: Path, *options: str) -> set[str]:
    """What build.sh gives apt to install: NAME or NAME/SUITE."""
    proc = subprocess.run(
        ["bash", str(BUILD), *options, "--print-packages"],
        env=dict(os.environ, PROVISION_DIR=str(provision_dir)),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return set(proc.stdout.split())


def _packages(provision_dir: Path, *options: str) -> set[str]:
    """The names of the packages build.sh installs."""
    return {arg.split("/")[0] for arg in _apt_args(provision_dir, *options)}


def test_box_has_every_package_the_provisioning_installs() -> None:
    packages = _packages(VAGRANT_DIR / "provision")
    assert packages == _packages(VAGRANT_DIR / "provision", "--qemu", "system") | {
        "qemu-system-common",
        "qemu-system-data",
        "seabios",
    }
    # node.sh, storage-server.sh, storage-client.sh, and what the box boots with.
    assert {"libvirt-daemon-system", "qemu-system-x86", "libvirt-dev", "python3-venv"} <= packages
    assert {"nfs-kernel-server", "nfs-common", "rsync", "busybox-static"} <= packages
    assert {"linux-image-amd64", "openssh-server", "sudo", "systemd-sysv"} <= packages


def test_box_package_list_follows_the_provisioning(tmp_path: Path) -> None:
    prov = tmp_path / "provision"
    shutil.copytree(VAGRANT_DIR / "provision", prov)
    (prov / "extra.sh").write_text(
        "#!/usr/bin/env bash\nset -euo pipefail\n"
        'apt-get install -y -qq --no-install-recommends gnutls-bin \\\n  "${more[@]}" \\\n'
        "  libgnutls30 >/dev/null 2>&1\n"
        "echo apt-get install-like text is-not-a-package\n",
        encoding="utf-8",
    )
    packages = _packages(prov)
    assert {"gnutls-bin", "libgnutls30"} <= packages
    assert packages - _packages(VAGRANT_DIR / "provision") == {"gnutls-bin", "libgnutls30"}
    assert not any(p.startswith(("-", ">", '"')) for p in packages)


def test_box_qemu_from_backports_unless_told_otherwise() -> None:
    """Under TCG Debian 12's qemu 7.2 kills migrating guests: the box takes qemu 10."""
    prov = VAGRANT_DIR / "provision"
    qemu = {"qemu-system-x86", "qemu-system-common", "qemu-system-data", "qemu-utils", "seabios"}
    backports = _apt_args(prov)
    assert {f"{name}/bookworm-backports" for name in qemu} <= backports
    assert not qemu & backports  # no second, plain request for the same package
    assert "libvirt-daemon-system" in backports  # everything else from bookworm itself
    system = _apt_args(prov, "--qemu", "system")
    assert {"qemu-system-x86", "qemu-utils"} <= system
    assert not any("/" in arg for arg in system)


@pytest.mark.parametrize("value", ["sid", ""])
def test_build_rejects_an_unknown_qemu(value: str) -> None:
    proc = subprocess.run(
        ["bash", str(BUILD), "--qemu", value, "--print-packages"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0 and proc.stdout == ""
    assert f"--qemu must be backports or system, not '{value}'" in proc.stderr


def test_build_rejects_unknown_arguments() -> None:
    proc = subprocess.run(
        ["bash", str(BUILD), "--frobnicate"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode != 0 and "unknown argument: --frobnicate" in proc.stderr


needs_qemu_img = pytest.mark.skipif(
    shutil.which("qemu-img") is None, reason="qemu-img is not installed"
)


def _pack(tmp_path: Path) -> tuple[Path, Path]:
    """A box packed from a new 2.5 GiB qcow2 image: (the image's path, the box)."""
    image = tmp_path / "disk.qcow2"
    # 2.5 GiB virtual: vagrant-libvirt's size is whole GiB, rounded up.
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "2560M"], check=True)
    box = tmp_path / "test.box"
    subprocess.run(["bash", str(PACK), str(image), str(box)], check=True, timeout=60)
    return image, box


@needs_qemu_img
def test_pack_writes_a_libvirt_box(tmp_path: Path) -> None:
    image, box = _pack(tmp_path)
    assert not image.exists()  # moved into the box
    with tarfile.open(box) as tar:
        assert sorted(tar.getnames()) == ["Vagrantfile", "box.img", "metadata.json"]
        meta_fh = tar.extractfile("metadata.json")
        assert meta_fh is not None
        meta = json.load(meta_fh)
        img_fh = tar.extractfile("box.img")
        assert img_fh is not None
        assert img_fh.read(4) == b"QFI\xfb"  # qcow2 magic
    assert meta == {"provider": "libvirt", "format": "qcow2", "virtual_size": 3}
    assert not list(tmp_path.glob("pack.*"))  # staging directory removed


@needs_qemu_img
@pytest.mark.skipif(shutil.which("vagrant") is None, reason="vagrant is not installed")
def test_vagrant_takes_the_packed_box(tmp_path: Path) -> None:
    _, box = _pack(tmp_path)
    env = _env(VAGRANT_HOME=str(tmp_path / "vagrant.d"))
    add = subprocess.run(
        ["vagrant", "box", "add", "--name", "glv-test/box", str(box)],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert add.returncode == 0, add.stdout + add.stderr
    listing = subprocess.run(
        ["vagrant", "box", "list"], env=env, capture_output=True, text=True, timeout=120
    )
    assert "glv-test/box" in listing.stdout and "(libvirt," in listing.stdout


@needs_qemu_img
def test_pack_refuses_a_raw_image(tmp_path: Path) -> None:
    image = tmp_path / "disk.raw"
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", str(image), "16M"], check=True)
    box = tmp_path / "test.box"
    proc = subprocess.run(
        ["bash", str(PACK), str(image), str(box)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode != 0 and "not a qcow2 image (format: raw)" in proc.stderr
    assert image.exists() and not box.exists()


def _grub_mbr() -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location("grub_mbr", BOX_DIR / "grub_mbr.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _mbr_disk(path: Path, first_sector: int) -> bytes:
    """A 4 MiB disk image with one partition at ``first_sector``; its sector 0."""
    mbr = bytearray(512)
    mbr[0x1B8:0x1BC] = b"\x12\x34\x56\x78"  # disk signature
    entry = struct.pack("<B3sB3sII", 0x80, b"\0\0\0", 0x83, b"\0\0\0", first_sector, 4096)
    mbr[0x1BE : 0x1BE + 16] = entry
    mbr[510:512] = b"\x55\xaa"
    with open(path, "wb") as fh:
        fh.write(mbr)
        fh.truncate(4 << 20)
    return bytes(mbr)


def test_grub_mbr_embeds_boot_and_core(tmp_path: Path) -> None:
    grub_mbr = _grub_mbr()
    disk = tmp_path / "disk.raw"
    old = _mbr_disk(disk, 2048)
    boot = bytes(range(256)) * 2
    core = b"C" * 512 + b"D" * 700  # three sectors once padded
    grub_mbr.embed(str(disk), boot, core)
    data = disk.read_bytes()
    # Boot code from boot.img, the disk signature and partition table kept.
    assert data[0x1B8:512] == old[0x1B8:512]
    assert data[:0x5C] == boot[:0x5C]
    assert struct.unpack_from("<Q", data, 0x5C)[0] == 1  # core.img at sector 1
    assert data[0x64] == 0xFF and data[0x66:0x68] == b"\x90\x90"
    assert data[0x68:0x1B8] == boot[0x68:0x1B8]
    # core.img from sector 1; its block list loads the other two sectors.
    first = data[512:1024]
    assert first[: 512 - 12] == b"C" * (512 - 12)
    assert struct.unpack("<QHH", first[500:512]) == (2, 2, 0x820)
    assert data[1024 : 1024 + 700] == b"D" * 700
    assert data[1024 + 700 : 2048] == b"\0" * (1024 - 700)


def test_grub_mbr_refuses_what_does_not_fit(tmp_path: Path) -> None:
    grub_mbr = _grub_mbr()
    disk = tmp_path / "disk.raw"
    old = _mbr_disk(disk, 3)  # room for two sectors only
    with pytest.raises(grub_mbr.SetupError, match="needs 3 sectors"):
        grub_mbr.embed(str(disk), b"\0" * 512, b"x" * 1500)
    assert disk.read_bytes()[:512] == old  # nothing written
    plain = tmp_path / "plain.raw"
    plain.write_bytes(b"\0" * 4096)
    with pytest.raises(grub_mbr.SetupError, match="no MBR partition table"):
        grub_mbr.embed(str(plain), b"\0" * 512, b"x" * 1500)
    with pytest.raises(grub_mbr.SetupError, match="boot.img is 100 bytes"):
        grub_mbr.embed(str(disk), b"\0" * 100, b"x" * 1500)
