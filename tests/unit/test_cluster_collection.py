"""How the cluster tests adapt to the cluster they run against (no cluster needed).

tests/support/timeouts.py: the timeout scale from the environment or the
external cluster's description. tests/cluster/conftest.py, run by a real
pytest over the real cluster test files with a recording plugin: every
test's timeout scaled, tests needing three nodes or fault injection skipped
on a 2-node external cluster, nothing skipped for the node count locally.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from support.timeouts import (
    EXTERNAL_ENV,
    SCALE_ENV,
    parse_scale,
    read_scale,
    scaled_timeout_mark,
)

ROOT = Path(__file__).resolve().parents[2]


def _describe(tmp_path: Path, nodes: int, **extra: Any) -> str:
    path = tmp_path / "cluster.json"
    info = {
        "data_dir": str(tmp_path / "data"),
        "nodes": [{"name": f"node{i}", "address": f"10.252.0.1{i}"} for i in range(1, nodes + 1)],
        "guest": {"kernel": "/srv/k", "initrd": "/srv/i"},
        **extra,
    }
    path.write_text(json.dumps(info), encoding="utf-8")
    return str(path)


def test_scale_from_the_environment_then_the_description(tmp_path: Path) -> None:
    described = _describe(tmp_path, 2, timeout_scale=4)
    assert read_scale({}) == 1.0
    assert read_scale({EXTERNAL_ENV: _describe(tmp_path / "..", 2)}) == 1.0
    assert read_scale({EXTERNAL_ENV: described}) == 4.0
    assert read_scale({EXTERNAL_ENV: described, SCALE_ENV: "2.5"}) == 2.5
    assert read_scale({SCALE_ENV: "3"}) == 3.0


@pytest.mark.parametrize("value", ["0", "-2", "fast", "nan", "inf", True, None])
def test_bad_scales_are_refused(value: object) -> None:
    with pytest.raises(ValueError, match=f"^where must be a number above 0, not {value!r}$"):
        parse_scale(value, "where")


def test_bad_scale_in_the_description_names_the_file(tmp_path: Path) -> None:
    described = _describe(tmp_path, 2, timeout_scale="slow")
    with pytest.raises(ValueError, match=f"timeout_scale in {described} must be"):
        read_scale({EXTERNAL_ENV: described})


def test_timeout_marks_scale_and_keep_their_method() -> None:
    assert scaled_timeout_mark(None, 300, 4).mark.args == (1200.0,)
    plain = pytest.mark.timeout(420).mark
    assert scaled_timeout_mark(plain, 300, 2).mark.args == (840.0,)
    with_method = pytest.mark.timeout(60, "thread").mark
    assert scaled_timeout_mark(with_method, 300, 1.5).mark.args == (90.0, "thread")
    keyword = pytest.mark.timeout(timeout=10, method="signal").mark
    scaled = scaled_timeout_mark(keyword, 300, 3).mark
    assert scaled.args == (30.0,) and scaled.kwargs == {"method": "signal"}
    assert scaled_timeout_mark(pytest.mark.timeout(0).mark, 300, 3).mark.args == (0,)


# Prints, after collection (and the conftest's changes), each cluster test's
# timeout and skip reason as JSON lines.
PROBE = """
import json


def pytest_collection_finish(session):
    for item in session.items:
        timeout = item.get_closest_marker("timeout")
        skip = item.get_closest_marker("skip")
        print("PROBE " + json.dumps({
            "id": item.nodeid,
            "timeout": timeout.args[0] if timeout and timeout.args else None,
            "skip": skip.kwargs.get("reason") if skip else None,
        }))
"""

FILES = [
    "tests/cluster/test_node_evacuate.py",
    "tests/cluster/test_migrate_shared.py",
    "tests/cluster/test_export.py",
]


def _collect(tmp_path: Path, env: dict[str, str]) -> dict[str, dict[str, Any]]:
    (tmp_path / "timeoutprobe.py").write_text(PROBE, encoding="utf-8")
    clean = {k: v for k, v in os.environ.items() if k not in (EXTERNAL_ENV, SCALE_ENV)}
    clean["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tmp_path), clean.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "timeoutprobe", "--collect-only", "-q", *FILES],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    found = [json.loads(line[6:]) for line in proc.stdout.splitlines() if line.startswith("PROBE ")]
    return {f["id"]: f for f in found}


def _test(items: dict[str, dict[str, Any]], name: str) -> dict[str, Any]:
    (found,) = [v for k, v in items.items() if k.endswith(f"::{name}")]
    return found


def test_two_node_external_cluster_skips_and_scales(tmp_path: Path) -> None:
    described = _describe(tmp_path, 2, timeout_scale=4)
    items = _collect(tmp_path, {EXTERNAL_ENV: described})
    evacuate = [v for k, v in items.items() if k.startswith(FILES[0])]
    assert len(evacuate) == 4 and all(
        v["skip"] == f"needs 3 nodes; the cluster in {described} has 2" for v in evacuate
    )
    faults = _test(items, "test_target_link_cut_mid_migration")
    assert faults["skip"].startswith("fault injection needs the local cluster")
    live = _test(items, "test_live_migration_and_back_non_live")
    assert live["skip"] is None and live["timeout"] == 420 * 4
    assert _test(items, "test_memory_cap_and_missing_bridge_are_refused")["timeout"] == 300 * 4
    removal = _test(items, "test_export_with_remove_instance")
    assert removal["skip"] is None and removal["timeout"] == 600 * 4  # the module's mark
    # the environment wins over the description
    items = _collect(tmp_path, {EXTERNAL_ENV: described, SCALE_ENV: "1.5"})
    assert _test(items, "test_live_migration_and_back_non_live")["timeout"] == 420 * 1.5


def test_three_node_external_cluster_runs_everything_but_faults(tmp_path: Path) -> None:
    items = _collect(tmp_path, {EXTERNAL_ENV: _describe(tmp_path, 3)})
    skipped = [v["skip"] for v in items.values() if v["skip"]]
    assert skipped and all(reason.startswith("fault injection") for reason in skipped)
    assert _test(items, "test_live_migration_and_back_non_live")["timeout"] == 420
    assert _test(items, "test_memory_cap_and_missing_bridge_are_refused")["timeout"] == 300


def test_bad_scale_stops_the_session(tmp_path: Path) -> None:
    (tmp_path / "timeoutprobe.py").write_text(PROBE, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in (EXTERNAL_ENV, SCALE_ENV)}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", FILES[1]],
        cwd=ROOT,
        env={**env, SCALE_ENV: "0"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode != 0
    assert f"{SCALE_ENV} must be a number above 0, not '0'" in proc.stdout + proc.stderr
