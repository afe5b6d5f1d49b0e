"""The test guest builder's pure parts: pattern, kernel arguments, initramfs, console waits."""

from __future__ import annotations

import gzip
import hashlib
import re
import subprocess

import pytest

from ganeti_lv.devcluster import guest
from ganeti_lv.errors import GenericError


def test_pattern_is_the_seed_repeated() -> None:
    data = guest.pattern_bytes("abc", 1)
    assert len(data) == 1024 * 1024
    assert data.startswith(b"abcabcabc") and data.endswith(b"abca")  # 1048576 = 3*349525+1
    assert guest.pattern_sha256("abc", 1) == hashlib.sha256(data).hexdigest()
    assert guest.pattern_bytes("abc", 0) == b""
    assert guest.pattern_sha256("abc", 1) != guest.pattern_sha256("abd", 1)


def test_kernel_args() -> None:
    args = guest.kernel_args("web1", patmb=8, dirtymb=0, writepat=False, ignoreacpi=True)
    assert args.split() == [
        "console=ttyS0",
        "seed=web1",
        "patmb=8",
        "dirtymb=0",
        "writepat=0",
        "ignoreacpi=1",
    ]
    assert "ignoreacpi" not in guest.kernel_args("x")


def test_init_script_follows_the_protocol() -> None:
    init = guest.INIT_SCRIPT
    for text in (
        "GUEST: PATTERN seed=$seed mb=$patmb sha256=",
        "GUEST-READY",
        'echo "tick $n"',
        "GUEST: POWEROFF",
        "seek=131072",
        "oflag=direct",
        "iflag=direct",
    ):
        assert text in init
    # Modules load in dependency order.
    order = [m.rsplit("/", 1)[1] for m in guest.GUEST_MODULES]
    assert order[:6] == [
        "virtio_ring.ko",
        "virtio.ko",
        "virtio_pci_legacy_dev.ko",
        "virtio_pci_modern_dev.ko",
        "virtio_pci.ko",
        "virtio_blk.ko",
    ]
    assert guest.TICK_OFFSET == 131072 * 512


def test_cache_key_depends_on_kernel_and_init() -> None:
    k = guest.cache_key("linux-image-1")
    assert k == guest.cache_key("linux-image-1")
    assert k != guest.cache_key("linux-image-2")
    assert k != guest.cache_key("linux-image-1", init=guest.INIT_SCRIPT + "\n")


def test_initramfs_is_a_valid_newc_archive(tmp_path) -> None:
    blob = guest.build_initramfs(b"BUSYBOX", {"kernel/a.ko": b"A", "kernel/x/b.ko": b"BB"})
    assert blob == guest.build_initramfs(
        b"BUSYBOX", {"kernel/a.ko": b"A", "kernel/x/b.ko": b"BB"}
    )  # reproducible
    raw = gzip.decompress(blob)
    listing = (
        subprocess.run(["cpio", "-t", "--quiet"], input=raw, capture_output=True, check=True)
        .stdout.decode()
        .split()
    )
    for name in (
        "init",
        "bin/busybox",
        "bin/sh",
        "dev/console",
        "modules.order",
        "lib/modules/kernel/x/b.ko",
    ):
        assert name in listing
    subprocess.run(["cpio", "-id", "--quiet"], input=raw, cwd=tmp_path, check=True)
    assert (tmp_path / "modules.order").read_text() == "kernel/a.ko\nkernel/x/b.ko\n"
    assert (tmp_path / "lib/modules/kernel/x/b.ko").read_bytes() == b"BB"
    assert (tmp_path / "init").read_text() == guest.INIT_SCRIPT
    assert (tmp_path / "init").stat().st_mode & 0o111
    assert (tmp_path / "bin/sh").is_symlink()


def test_domain_xml_boots_the_kernel_with_acpi_and_a_file_serial() -> None:
    img = guest.GuestImage("/k", "/i", "key")
    xml = guest.domain_xml("g1", "qemu", img, "console=ttyS0 seed=a&b", "/d.img", "/c.log")
    assert "<domain type='qemu'>" in xml and "<kernel>/k</kernel>" in xml
    assert "seed=a&amp;b" in xml and "<acpi/>" in xml
    assert "<source path='/c.log' append='on'/>" in xml and "<source file='/d.img'/>" in xml


def test_wait_console_finds_lines_after_offset(tmp_path) -> None:
    log = tmp_path / "console.log"
    log.write_text("boot\r\nGUEST-READY\r\ntick 1\n")
    start = guest.console_size(str(log))
    with log.open("a") as fh:
        fh.write("tick 2\n")
    m = guest.wait_console(str(log), r"^tick (\d+)$", timeout=1, start=start)
    assert m.group(1) == "2"
    assert guest.wait_console(str(log), re.compile("READY"), timeout=1).group(0) == "READY"


def test_wait_console_reads_a_replaced_log_from_its_start(tmp_path) -> None:
    log = tmp_path / "console.log"
    log.write_text("an earlier instance's boot, a long log\nGUEST-READY\n")
    start = guest.console_size(str(log))
    log.write_text("GUEST-READY\n")  # a new instance of the same name: a new, shorter log
    assert guest.read_console(str(log), start) == "GUEST-READY\n"
    assert guest.wait_console(str(log), "GUEST-READY", timeout=1, start=start)


def test_wait_console_times_out_with_the_tail(tmp_path) -> None:
    now = [0.0]

    def clock() -> float:
        now[0] += 1.0
        return now[0]

    log = tmp_path / "console.log"
    log.write_text("tick 1\n")
    with pytest.raises(GenericError) as err:
        guest.wait_console(str(log), "GUEST-READY", timeout=3, clock=clock, poll=0)
    assert "tick 1" in str(err.value)
    assert guest.read_console(str(tmp_path / "missing")) == ""
