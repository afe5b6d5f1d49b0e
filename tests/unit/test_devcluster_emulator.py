"""The local cluster's choice of qemu (ganeti_lv.devcluster.emulator), without downloads."""

from __future__ import annotations

import os
import subprocess

import pytest

from ganeti_lv.devcluster import daemons, emulator
from ganeti_lv.errors import OpPrereqError


@pytest.mark.parametrize(
    ("mode", "codename", "expected"),
    [
        ("auto", "bookworm", "backports"),
        ("auto", "trixie", "system"),
        ("auto", "", "system"),
        ("system", "bookworm", "system"),
        ("backports", "trixie", "backports"),
    ],
)
def test_resolve_mode(mode: str, codename: str, expected: str) -> None:
    assert emulator.resolve_mode(mode, codename) == expected


def test_unknown_mode_is_refused_with_an_error_code() -> None:
    with pytest.raises(OpPrereqError) as err:
        emulator.resolve_mode("newest", "bookworm")
    assert err.value.ecode == "wrong_input"


def test_os_codename(tmp_path) -> None:
    path = tmp_path / "os-release"
    path.write_text('NAME="Debian GNU/Linux"\nVERSION_CODENAME=bookworm\nID=debian\n')
    assert emulator.os_codename(str(path)) == "bookworm"
    assert emulator.os_codename(str(tmp_path / "missing")) == ""


def test_wrapper_runs_the_unpacked_binary_with_its_data_first(tmp_path) -> None:
    """The wrapper passes its own -L directories before the caller's arguments."""
    root = tmp_path / "root"
    bindir = root / "usr" / "bin"
    bindir.mkdir(parents=True)
    fake = bindir / emulator.BINARY
    fake.write_text(
        '#!/bin/sh\necho "modules=$QEMU_MODULE_DIR"\nfor a in "$@"; do echo "$a"; done\n'
    )
    fake.chmod(0o755)
    wrapper = tmp_path / "bin" / emulator.BINARY
    wrapper.parent.mkdir()
    emulator.write_wrapper(str(wrapper), str(root))
    assert os.access(wrapper, os.X_OK)
    out = subprocess.run([str(wrapper), "-machine", "none"], capture_output=True, text=True)
    lines = out.stdout.splitlines()
    usr = root / "usr"
    assert lines == [
        f"modules={usr}/lib/x86_64-linux-gnu/qemu",
        "-L",
        f"{usr}/share/qemu",
        "-L",
        f"{usr}/share/seabios",
        "-machine",
        "none",
    ]


def test_installed_finds_only_a_wrapper_that_runs(tmp_path) -> None:
    qemu = emulator.BackportsQemu(str(tmp_path))
    assert qemu.installed() is None
    broken = tmp_path / "qemu-backports" / "1_9" / "bin"
    broken.mkdir(parents=True)
    (broken / emulator.BINARY).write_text("#!/bin/sh\nexit 1\n")
    (broken / emulator.BINARY).chmod(0o755)
    assert qemu.installed() is None
    good = tmp_path / "qemu-backports" / "1_10" / "bin"
    good.mkdir(parents=True)
    (good / emulator.BINARY).write_text("#!/bin/sh\nexit 0\n")
    (good / emulator.BINARY).chmod(0o755)
    assert qemu.installed() == str(good)


def test_system_mode_needs_no_emulator_dir(tmp_path) -> None:
    assert emulator.emulator_dir("system", str(tmp_path)) is None
    assert not os.listdir(tmp_path)


def test_daemon_path_puts_the_emulator_first() -> None:
    assert daemons.daemon_env(None) == daemons.DAEMON_ENV
    env = daemons.daemon_env("/cache/qemu/bin")
    assert env["PATH"] == "/cache/qemu/bin:" + daemons.DAEMON_ENV["PATH"]
    assert daemons.DAEMON_ENV["PATH"].split(":")[0] != "/cache/qemu/bin"
