"""Export directories on a node (run here with LocalRunner): atomic publish, stale leftovers."""

from __future__ import annotations

import pytest
from support.localrun import LocalRunner

from ganeti_lv.errors import NodeError
from ganeti_lv.node import exportdir

R = LocalRunner()


def _publish(base, name, marker):
    new = exportdir.prepare(R, "n", str(base), name)
    (base / f"{name}.new" / "disk0.img").write_text(marker)
    assert new == f"{base}/{name}.new"
    return exportdir.finalize(R, "n", str(base), name, f"[export]\nm = {marker}\n", "{}")


def test_publish_replaces_previous_and_lists(tmp_path):
    base = tmp_path / "export"
    assert exportdir.list_exports(R, "n", str(base)) == []
    path = _publish(base, "web1", "one")
    assert path == f"{base}/web1"
    assert (base / "web1" / "disk0.img").read_text() == "one"
    _publish(base, "web1", "two")
    assert sorted(p.name for p in base.iterdir()) == ["web1"]
    assert (base / "web1" / "disk0.img").read_text() == "two"
    data = exportdir.read(R, "n", str(base), "web1")
    assert data.config_text == "[export]\nm = two\n" and data.manifest_text == "{}"
    [entry] = exportdir.list_exports(R, "n", str(base))
    assert entry.instance == "web1" and entry.complete and not entry.stale


def test_interrupted_export_keeps_previous_and_is_stale(tmp_path):
    base = tmp_path / "export"
    _publish(base, "web1", "one")
    exportdir.prepare(R, "n", str(base), "web1")
    (base / "web1.new" / "disk0.img.part").write_text("partial")
    entries = {e.path: e for e in exportdir.list_exports(R, "n", str(base))}
    assert entries[f"{base}/web1"].complete
    assert entries[f"{base}/web1.new"].stale and not entries[f"{base}/web1.new"].complete
    exportdir.abort(R, "n", str(base), "web1")
    assert sorted(p.name for p in base.iterdir()) == ["web1"]
    with pytest.raises(NodeError, match="no export in progress"):
        exportdir.finalize(R, "n", str(base), "web1", "", "")


def test_crash_between_renames_restores_old(tmp_path):
    base = tmp_path / "export"
    _publish(base, "web1", "one")
    (base / "web1").rename(base / "web1.old")  # crashed right after renaming aside
    exportdir.prepare(R, "n", str(base), "web1")
    assert (base / "web1" / "disk0.img").read_text() == "one"
    assert exportdir.remove(R, "n", str(base), "web1")
    assert not exportdir.remove(R, "n", str(base), "web1")
    assert list(base.iterdir()) == []


def test_bad_name_refused(tmp_path):
    with pytest.raises(NodeError):
        exportdir.prepare(R, "n", str(tmp_path), "../etc")
    with pytest.raises(NodeError, match="No complete export"):
        exportdir.read(R, "n", str(tmp_path), "web1")


def test_publish_writes_manifest_and_config_exactly(tmp_path):
    base = tmp_path / "export"
    exportdir.prepare(R, "n", str(base), "web1")
    manifest = '{"disks": [], "note": "caf\u00e9\\n"}\n\n'
    config = "[instance]\nname = web1\ntags = a b\n\n"
    exportdir.finalize(R, "n", str(base), "web1", config, manifest)
    assert (base / "web1" / "manifest.json").read_text() == manifest
    assert (base / "web1" / "config.ini").read_text() == config
    assert sorted(p.name for p in (base / "web1").iterdir()) == ["config.ini", "manifest.json"]
    assert sorted(p.name for p in base.iterdir()) == ["web1"]
