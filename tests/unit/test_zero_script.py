"""The node's zeroing script (run here on real ext4 images with mkfs.ext4, debugfs, zerofree)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from ganeti_lv.hypervisor.libvirt.exportops import _ZERO_SCRIPT

MiB = 1024 * 1024
JUNK = b"\xa5" * MiB  # the data of a file deleted before the export


def _image(tmp_path: Path, name: str) -> Path:
    """A 16 MiB ext4 image with a kept file and the blocks of a deleted one."""
    src = tmp_path / f"{name}-files"
    src.mkdir()
    (src / "junk").write_bytes(JUNK * 4)
    (src / "keep").write_text("keep\n")
    img = tmp_path / f"{name}.img"
    subprocess.run(["truncate", "-s", "16M", str(img)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(src), str(img)], check=True)
    _debugfs(img, "rm /junk")
    return img


def _debugfs(img: Path, request: str) -> None:
    subprocess.run(["debugfs", "-w", "-R", request, str(img)], check=True, capture_output=True)


def _zero(*images: Path) -> list[str]:
    res = subprocess.run(
        ["sh", "-c", _ZERO_SCRIPT, "sh", *map(str, images)],
        check=True,
        capture_output=True,
        text=True,
    )
    return res.stdout.splitlines()


def test_a_clean_filesystem_is_zeroed_and_keeps_its_files(tmp_path: Path) -> None:
    img = _image(tmp_path, "clean")
    assert JUNK in img.read_bytes()
    assert _zero(img) == [f"OK {img}"]
    assert JUNK not in img.read_bytes()
    out = subprocess.run(["debugfs", "-R", "cat /keep", str(img)], capture_output=True, text=True)
    assert out.stdout == "keep\n"


@pytest.mark.parametrize(
    "request_",
    [
        "feature needs_recovery",  # a journal to replay: the guest was forced off or crashed
        "ssv state 0",  # mounted, never unmounted (no journal: ext2's way)
        "ssv state 3",  # valid, but errors found
    ],
)
def test_a_filesystem_not_cleanly_unmounted_is_left_as_it_is(tmp_path: Path, request_: str) -> None:
    img = _image(tmp_path, "dirty")
    _debugfs(img, request_)
    before = img.read_bytes()
    [line] = _zero(img)
    assert line.startswith(f"SKIP {img} filesystem not cleanly unmounted")
    assert img.read_bytes() == before


def test_what_is_no_ext_filesystem_is_skipped(tmp_path: Path) -> None:
    raw = tmp_path / "raw.img"
    raw.write_bytes(JUNK * 2)
    clean = _image(tmp_path, "clean")
    assert _zero(raw, clean) == [f"SKIP {raw} not an ext2/3/4 filesystem image", f"OK {clean}"]
    assert raw.read_bytes() == JUNK * 2
