"""Export directories on a node (run here with LocalRunner): atomic publish, stale leftovers."""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import threading

import pytest
from support.localrun import LocalRunner

from ganeti_lv.errors import NodeError
from ganeti_lv.hypervisor.export_types import PublishedExport
from ganeti_lv.node import exportdir

R = LocalRunner()


def _entries(base):
    """The export dir's entries but the scripts' lock files (``exportdir.lock_file``)."""
    return sorted(p.name for p in base.iterdir() if not re.fullmatch(r"\..+\.lock", p.name))


def _publish(base, name, marker):
    new = exportdir.prepare(R, "n", str(base), name)
    (base / f"{name}.new" / "disk0.img").write_text(marker)
    assert new == f"{base}/{name}.new"
    return exportdir.finalize(R, "n", str(base), name, f"[export]\nm = {marker}\n", "{}")


def test_publish_replaces_previous_and_lists(tmp_path):
    base = tmp_path / "export"
    assert exportdir.list_exports(R, "n", str(base)) == []
    assert _publish(base, "web1", "one") == PublishedExport(f"{base}/web1", [])
    assert (base / "web1" / "disk0.img").read_text() == "one"
    _publish(base, "web1", "two")
    assert _entries(base) == ["web1"]
    assert (base / "web1" / "disk0.img").read_text() == "two"
    data = exportdir.read(R, "n", f"{base}/web1")
    assert data.config_text == "[export]\nm = two\n" and data.manifest_text == "{}"
    assert data.files["disk0.img"].size == 3 and data.files["disk0.img"].head == "74776f"
    [entry] = exportdir.list_exports(R, "n", str(base))
    assert entry.instance == "web1" and entry.complete and not entry.stale
    assert entry.kind == "ganeti_lv"
    # an empty manifest.json is one (read as empty), not an export without one
    (base / "web1" / "manifest.json").write_text("")
    assert exportdir.read(R, "n", f"{base}/web1").manifest_text == ""


def test_interrupted_export_keeps_previous_and_is_stale(tmp_path):
    base = tmp_path / "export"
    _publish(base, "web1", "one")
    exportdir.prepare(R, "n", str(base), "web1")
    (base / "web1.new" / "disk0.img.part").write_text("partial")
    entries = {e.path: e for e in exportdir.list_exports(R, "n", str(base))}
    assert entries[f"{base}/web1"].complete
    assert entries[f"{base}/web1.new"].stale and not entries[f"{base}/web1.new"].complete
    exportdir.abort(R, "n", str(base), "web1")
    assert _entries(base) == ["web1"]
    with pytest.raises(NodeError, match="no export in progress"):
        exportdir.finalize(R, "n", str(base), "web1", "", "")


def test_a_script_on_an_export_waits_for_one_still_running_on_it(tmp_path):
    """A publish whose answer was lost may still run when the clean-up of the failed
    export starts: the clean-up (here the abort) waits for the export's lock."""
    base = tmp_path / "export"
    _publish(base, "web1", "one")
    exportdir.prepare(R, "n", str(base), "web1")
    fd = os.open(exportdir.lock_file(str(base), "web1"), os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)  # the publish still running
    aborted = threading.Thread(target=exportdir.abort, args=(R, "n", str(base), "web1"))
    try:
        aborted.start()
        aborted.join(1.0)
        assert aborted.is_alive() and (base / "web1.new").is_dir()
        # another export's scripts do not wait for it
        _publish(base, "db1", "x")
    finally:
        os.close(fd)
        aborted.join(30)
    assert not aborted.is_alive()
    assert _entries(base) == ["db1", "web1"]


def test_crash_between_renames_restores_old(tmp_path):
    base = tmp_path / "export"
    _publish(base, "web1", "one")
    (base / "web1").rename(base / "web1.old")  # crashed right after renaming aside
    exportdir.prepare(R, "n", str(base), "web1")
    assert (base / "web1" / "disk0.img").read_text() == "one"
    assert exportdir.remove(R, "n", str(base), "web1")
    assert not exportdir.remove(R, "n", str(base), "web1")
    assert _entries(base) == []


def test_bad_name_refused(tmp_path):
    with pytest.raises(NodeError):
        exportdir.prepare(R, "n", str(tmp_path), "../etc")
    with pytest.raises(NodeError, match="No export directory"):
        exportdir.read(R, "n", f"{tmp_path}/web1")
    (tmp_path / "web1").mkdir()
    with pytest.raises(NodeError, match="no config.ini"):
        exportdir.read(R, "n", f"{tmp_path}/web1")


@pytest.mark.parametrize("name", ["db.old", "web.new"])
def test_an_instance_name_ending_like_a_work_folder_is_refused_and_touches_nothing(tmp_path, name):
    """Else ``db``'s export would take ``db.old``'s, and ``web``'s would wipe ``web.new``'s."""
    base = tmp_path / "export"
    _publish(base, name.split(".")[0], "mine")
    for call in (exportdir.prepare, exportdir.remove, exportdir.remove_stale):
        with pytest.raises(NodeError, match=f"ends with '.{name.split('.')[1]}'"):
            call(R, "n", str(base), name)
    assert _entries(base) == [name.split(".")[0]]


def test_ganeti_export_is_complete_and_read_without_manifest(tmp_path):
    """Ganeti's layout: config.ini and dumps named by UUID, no manifest.json."""
    d = tmp_path / "alpha"
    d.mkdir()
    (d / "config.ini").write_text("[export]\nversion = 0\ntimestamp = 17\n")
    (d / "0f3c-uuid").write_bytes(b"\x1f\x8b" + b"x" * 100)
    (d / "link").symlink_to("/etc/hostname")
    (d / "sub").mkdir()
    [entry] = exportdir.list_exports(R, "n", str(tmp_path))
    assert (entry.instance, entry.complete, entry.kind, entry.timestamp) == (
        "alpha", True, "ganeti", 17,
    )  # fmt: skip
    data = exportdir.read(R, "n", str(d))
    assert data.manifest_text is None
    # only regular files: no symbolic link, no directory
    assert sorted(data.files) == ["0f3c-uuid", "config.ini"]
    dump = data.files["0f3c-uuid"]
    assert dump.size == 102 and dump.head.startswith("1f8b78") and len(dump.head) == 204


def test_publish_writes_manifest_and_config_exactly(tmp_path):
    base = tmp_path / "export"
    exportdir.prepare(R, "n", str(base), "web1")
    manifest = '{"disks": [], "note": "caf\u00e9\\n"}\n\n'
    config = "[instance]\nname = web1\ntags = a b\n\n"
    exportdir.finalize(R, "n", str(base), "web1", config, manifest)
    assert (base / "web1" / "manifest.json").read_text() == manifest
    assert (base / "web1" / "config.ini").read_text() == config
    assert sorted(p.name for p in (base / "web1").iterdir()) == ["config.ini", "manifest.json"]
    assert _entries(base) == ["web1"]


def test_remove_stale_removes_only_the_leftovers_and_keeps_the_export(tmp_path):
    base = tmp_path / "export"
    _publish(base, "web1", "one")
    exportdir.prepare(R, "n", str(base), "web1")  # an export interrupted: web1.new
    (base / "web1.new" / "disk0.img.part").write_text("partial")
    (base / "web1.old").mkdir()  # a leftover beside the complete export
    done = exportdir.remove_stale(R, "n", str(base), "web1")
    assert done == [f"removed {base}/web1.old", f"removed {base}/web1.new"]
    assert _entries(base) == ["web1"]
    assert (base / "web1" / "disk0.img").read_text() == "one"
    assert exportdir.remove_stale(R, "n", str(base), "web1") == []


def test_remove_stale_restores_an_old_export_that_lost_its_successor(tmp_path):
    base = tmp_path / "export"
    _publish(base, "web1", "one")
    (base / "web1").rename(base / "web1.old")  # crashed right after renaming aside
    exportdir.prepare(R, "n", str(base), "web2")
    assert exportdir.remove_stale(R, "n", str(base), "web1") == [f"restored {base}/web1"]
    assert (base / "web1" / "disk0.img").read_text() == "one"


def _failing(monkeypatch, tmp_path, tool: str, when: str) -> None:
    """Make ``tool`` (found in PATH) fail when it is given an existing ``*when`` path."""
    real = shutil.which(tool)
    assert real is not None
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    fake = bindir / tool
    fake.write_text(
        "#!/bin/sh\n"
        f'for a; do case "$a" in *{when}) [ -e "$a" ] && {{ echo "{tool}: I/O error" >&2;'
        f' exit 1; }};; esac; done\nexec {real} "$@"\n'
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")


@pytest.mark.parametrize(
    "tool, when, said",
    [("sync", "/export", "not synced after the rename"), ("rm", ".old", "web1.old not removed")],
)
def test_a_failure_after_the_rename_is_reported_and_the_export_stays_published(
    tmp_path, monkeypatch, tool, when, said
):
    base = tmp_path / "export"
    _publish(base, "web1", "one")
    _failing(monkeypatch, tmp_path, tool, when)
    published = _publish(base, "web1", "two")
    assert published.path == f"{base}/web1"
    assert len(published.left) == 1 and said in published.left[0]
    assert f"{tool}: I/O error" in published.left[0]
    assert (base / "web1" / "disk0.img").read_text() == "two"
    [entry] = [e for e in exportdir.list_exports(R, "n", str(base)) if e.complete]
    assert entry.path == f"{base}/web1"


@pytest.mark.parametrize("tool, when", [("sync", "manifest.json.tmp"), ("mv", "web1.new")])
def test_a_failure_before_the_rename_publishes_nothing_and_abort_keeps_the_previous(
    tmp_path, monkeypatch, tool, when
):
    base = tmp_path / "export"
    _publish(base, "web1", "one")
    _failing(monkeypatch, tmp_path, tool, when)
    with pytest.raises(NodeError, match=f"Publishing the export on n failed: {tool}: I/O error"):
        _publish(base, "web1", "two")
    # the new export is not visible as complete (a failed mv left the previous one aside)
    complete = [e.path for e in exportdir.list_exports(R, "n", str(base)) if e.complete]
    assert complete in ([], [f"{base}/web1"])
    assert not (base / "web1").exists() or (base / "web1" / "disk0.img").read_text() == "one"
    exportdir.abort(R, "n", str(base), "web1")
    assert _entries(base) == ["web1"]
    assert (base / "web1" / "disk0.img").read_text() == "one"


def test_a_directory_that_holds_no_export_is_neither_replaced_nor_removed(tmp_path):
    """An export dir shared with other files: an instance named as one of its directories."""
    base = tmp_path / "export"
    base.mkdir()
    (base / "lib").mkdir()
    (base / "lib" / "keep").write_text("precious")
    with pytest.raises(NodeError, match=f"{base}/lib holds no export .no config.ini.: left"):
        exportdir.prepare(R, "n", str(base), "lib")  # before anything is copied
    assert not (base / "lib.new").exists()
    (base / "lib.new").mkdir()  # and had it been made before the directory came
    (base / "lib.new" / "disk0.img").write_text("new")
    with pytest.raises(NodeError, match="move or remove it by hand"):
        exportdir.finalize(R, "n", str(base), "lib", "[export]\n", "{}")
    with pytest.raises(NodeError, match="holds no export"):
        exportdir.remove(R, "n", str(base), "lib")
    assert (base / "lib" / "keep").read_text() == "precious"
    assert sorted(p.name for p in (base / "lib").iterdir()) == ["keep"]


def test_a_removal_cut_short_leaves_no_export_listed_complete(tmp_path, monkeypatch):
    base = tmp_path / "export"
    _publish(base, "web1", "one")
    _failing(monkeypatch, tmp_path, "rm", "web1.new")  # the deletion fails half-way
    with pytest.raises(NodeError, match="Removing the export on n failed"):
        exportdir.remove(R, "n", str(base), "web1")
    entries = exportdir.list_exports(R, "n", str(base))
    assert [(e.path, e.complete, e.stale) for e in entries] == [(f"{base}/web1.new", False, True)]
    monkeypatch.undo()
    assert not exportdir.remove(R, "n", str(base), "web1")  # no export left, only its leftover
    assert _entries(base) == []


def test_a_removal_of_a_previous_export_put_aside_cut_short_is_never_put_back(
    tmp_path, monkeypatch
):
    """A publish that crashed between its renames left web1.old alone; its removal is cut."""
    base = tmp_path / "export"
    _publish(base, "web1", "one")
    (base / "web1").rename(base / "web1.old")
    _failing(monkeypatch, tmp_path, "rm", "web1.new")
    with pytest.raises(NodeError, match="Removing the export on n failed"):
        exportdir.remove(R, "n", str(base), "web1")
    monkeypatch.undo()
    exportdir.prepare(R, "n", str(base), "web1")  # puts back a lone .old: none is left
    assert _entries(base) == ["web1.new"]
    assert not [e for e in exportdir.list_exports(R, "n", str(base)) if e.complete]


def test_a_removal_cut_short_never_brings_back_the_export_before(tmp_path, monkeypatch):
    """A publish whose last step (deleting .old) failed left both; the removal is cut."""
    base = tmp_path / "export"
    _publish(base, "web1", "one")
    shutil.copytree(base / "web1", base / "web1.old")
    (base / "web1.old" / "disk0.img").write_text("older")
    _failing(monkeypatch, tmp_path, "rm", "web1.new")
    with pytest.raises(NodeError, match="Removing the export on n failed"):
        exportdir.remove(R, "n", str(base), "web1")
    monkeypatch.undo()
    exportdir.prepare(R, "n", str(base), "web1")
    web1 = base / "web1"
    assert not web1.exists() or (web1 / "disk0.img").read_text() == "one"
