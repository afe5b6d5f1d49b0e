"""devcluster.debian: only a package dpkg calls installed counts (a fake dpkg-query)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ganeti_lv.devcluster.debian import installed


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("install ok installed", True),
        ("install reinstreq half-installed", False),  # an interrupted dpkg
        ("unknown ok not-installed", False),
        ("deinstall ok config-files", False),
    ],
)
def test_only_a_package_installed_counts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, status: str, expected: bool
) -> None:
    fake = tmp_path / "dpkg-query"
    fake.write_text(f"#!/bin/sh\nprintf '%s' '{status}'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    assert installed("libfoo1") is expected
