"""gnt-lv node migrate / node evacuate on the local cluster.

Three small instances (128 MiB, ``file``; two running and idle, one
stopped) are shared by the tests of this module, which run in order and
move them around:

1. ``node migrate`` of the first node moves only the running ones; memory
   caps on the other nodes (room for one guest each, the third node with
   more room) force the second instance onto the other node.
2. ``--submit`` then ``job watch``: the instances are gathered on the third node.
3. ``node evacuate`` of the third node moves all three off it.
4. ``job cancel`` during an evacuation with queued moves: the queued ones
   never start, the running migration (slowed by a bandwidth limit) is
   aborted with its instance still on its source, every instance's node is
   reported.

After each step every instance runs (or is stopped) on exactly one node,
the configuration says which, and ``cluster verify`` is clean.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
from gnt_helpers import Gnt
from migrate_helpers import GNT_LV, make_instance, remove_instance, where_running

from ganeti_lv import constants
from ganeti_lv.config import ConfigStore
from ganeti_lv.hypervisor.libvirt import LibvirtNodeOps

pytestmark = [pytest.mark.cluster, pytest.mark.min_nodes(3)]

EV1, EV2, EV3 = "ev1", "ev2", "ev3"
RUNNING = (EV1, EV2)


@pytest.fixture(scope="module")
def three(devcluster: Any) -> Iterator[tuple[Gnt, ConfigStore, LibvirtNodeOps, list[str]]]:
    """ev1, ev2 running (idle) and ev3 stopped, all on the first node."""
    config = ConfigStore(devcluster.data_dir)
    ops = LibvirtNodeOps(devcluster.data_dir)
    nodes = sorted(config.node_names())[:3]
    try:
        for idx, name in enumerate((EV1, EV2, EV3)):
            make_instance(
                config,
                ops,
                name,
                constants.DT_FILE,
                nodes[0],
                f"52:54:00:4e:45:3{idx}",
                dirtymb=0,
                start=name in RUNNING,
            )
        yield Gnt(devcluster.data_dir), config, ops, nodes
    finally:
        for name in (EV1, EV2, EV3):
            remove_instance(config, ops, name, constants.DT_FILE)
        for name in nodes:
            Gnt(devcluster.data_dir)("node", "modify", "--memory-cap", "none", name)
        ops.close()


def placed(config: ConfigStore, ops: LibvirtNodeOps) -> dict[str, str]:
    """Each instance's node, checked: the configuration's primary is the one node that
    has the domain (running for the running ones, no domain left elsewhere)."""
    out = {}
    for name in (EV1, EV2, EV3):
        inst = config.get_instance(name)
        assert inst is not None
        found = where_running(config, ops, name)
        if inst.admin_state == constants.ADMINST_UP:
            assert found == {inst.primary_node: constants.DOMSTATE_RUNNING}, (name, found)
        else:
            assert not any(s == constants.DOMSTATE_RUNNING for s in found.values()), found
        out[name] = inst.primary_node
    return out


def verify_clean(gnt: Gnt) -> None:
    code, out, err = gnt("cluster", "verify")
    assert code == 0, f"cluster verify:\n{out}\n{err}"


def test_node_migrate_moves_running_ones_and_caps_decide(three: Any) -> None:
    gnt, config, ops, (n1, n2, n3) = three
    # room for one 128 MiB guest on each; n3 has the more
    gnt.ok("node", "modify", "--memory-cap", "200M", n2)
    gnt.ok("node", "modify", "--memory-cap", "250M", n3)
    out = gnt.ok("node", "migrate", "--dry-run", n1)
    assert f"{EV1} (128 MiB): {n1} -> {n3}" in out
    assert f"{EV2} (128 MiB): {n1} -> {n2}" in out
    assert placed(config, ops) == {EV1: n1, EV2: n1, EV3: n1}
    begin = time.monotonic()
    out = gnt.ok("node", "migrate", "-f", n1)
    print(f"node migrate of 2 instances: {time.monotonic() - begin:.1f} s")
    assert "instances 2/2 finished: 2 done" in out
    # the plan put ev1 on n3; n3's cap leaves no room for ev2, which goes to n2
    assert placed(config, ops) == {EV1: n3, EV2: n2, EV3: n1}
    for name in (n2, n3):
        gnt.ok("node", "modify", "--memory-cap", "none", name)
    verify_clean(gnt)


def test_submit_then_job_watch(three: Any) -> None:
    gnt, config, ops, (n1, n2, n3) = three
    code, out, err = gnt("node", "evacuate", "-f", "--submit", "--target-node", n3, n2)
    match = re.fullmatch(r"JobID: (\d+)\n", err)  # on stderr, as Ganeti's
    assert code == 0 and match and not out, (out, err)
    out = gnt.ok("job", "watch", match.group(1))
    assert "instances 1/1 finished: 1 done" in out
    gnt.ok("node", "evacuate", "-f", "--target-node", n3, n1)  # the stopped one: a failover
    assert placed(config, ops) == {EV1: n3, EV2: n3, EV3: n3}
    out = gnt.ok("job", "list", "-o", "parent,summary", "--no-headers", "--separator", "|")
    rows = [line.split("|") for line in out.splitlines()]
    # the submitted evacuation's move of ev2 is its child
    assert [match.group(1), f"INSTANCE_MIGRATE({EV2})"] in rows
    verify_clean(gnt)


def test_node_evacuate_moves_all_three_off(three: Any) -> None:
    gnt, config, ops, (n1, n2, n3) = three
    begin = time.monotonic()
    out = gnt.ok("node", "evacuate", "-f", n3)
    print(f"node evacuate of 3 instances: {time.monotonic() - begin:.1f} s")
    assert "instances 3/3 finished: 3 done" in out
    where = placed(config, ops)
    assert all(node in (n1, n2) for node in where.values()), where
    inst3 = config.get_instance(EV3)
    assert inst3 is not None and inst3.admin_state == constants.ADMINST_DOWN
    verify_clean(gnt)
    # gathered on n1 again for the next test
    for node in (n2,):
        if node in where.values():
            gnt.ok("node", "evacuate", "-f", "--target-node", n1, node)
    assert set(placed(config, ops).values()) == {n1}


def test_job_cancel_during_an_evacuation_with_queued_moves(three: Any, devcluster: Any) -> None:
    """The queued moves never start; the running migration (slowed by a bandwidth
    limit) is aborted as Ctrl-C aborts a single one: ev1 keeps running on n1."""
    gnt, config, ops, (n1, n2, n3) = three
    gnt.ok("cluster", "modify", "-H", "migration_bandwidth=1")  # MiB/s
    proc = subprocess.Popen(
        [GNT_LV, "--data-dir", devcluster.data_dir, "node", "evacuate", "-f"]
        + ["--max-parallel", "1", n1],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        lines = []
        for raw in proc.stdout:
            lines.append(raw.decode(errors="replace"))
            # the first migration's libvirt job runs (a progress line of it)
            if re.search(rf" {EV1}: migration +\d+(\.\d+)?% of memory", lines[-1]):
                break
        jobs = gnt.ok("job", "list", "-o", "id,summary", "--no-headers", "--separator", "|")
        parent = [r.split("|")[0] for r in jobs.splitlines() if f"NODE_EVACUATE({n1})" in r][-1]
        begin = time.monotonic()
        gnt.ok("job", "cancel", parent)
        out, err = proc.communicate(timeout=240)
        stopped = time.monotonic() - begin
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        gnt.ok("cluster", "modify", "-H", "migration_bandwidth=0")
    text = "".join(lines) + out.decode(errors="replace") + err.decode(errors="replace")
    print(f"node evacuate ended {stopped:.1f} s after the cancel")
    assert proc.returncode == 1, text
    assert "canceled" in text
    # at 1 MiB/s the migration would take minutes: it was aborted, not left to finish
    assert f"{EV1}: canceled:" in text and f"keeps running on {n1}" in text, text
    assert stopped < 60, text
    where = placed(config, ops)  # ev1 runs on n1 only, its domain nowhere else
    assert where == {EV1: n1, EV2: n1, EV3: n1}, where
    # the report lists every instance's node, as the configuration has it
    for name in (EV1, EV2, EV3):
        assert f"{name} on {n1}" in text
    # the queued moves never started: one child job, the canceled migration
    code, jobs, _ = gnt(
        "job", "list", "-o", "parent,summary,status", "--no-headers", "--separator", "|"
    )
    children = [r for r in jobs.splitlines() if r.startswith(f"{parent}|")]
    assert len(children) == 1 and f"INSTANCE_MIGRATE({EV1})" in children[0], children
    assert children[0].endswith("canceled"), children
    verify_clean(gnt)
