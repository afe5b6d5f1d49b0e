"""Space reservations: two exports to one node cannot both pass the check and then run out.

``ganeti_lv.reservations`` on its own (held, released, a dead holder's), and
two exports through the processor on the fake nodes, one held in its copy
while the second asks for the same node's space.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

import pytest

from ganeti_lv.config import ConfigStore
from ganeti_lv.context import Context
from ganeti_lv.errors import ECODE_NORES, OpPrereqError
from ganeti_lv.hypervisor.fake import FakeNodeOps
from ganeti_lv.mcpu import Processor
from ganeti_lv.objects import disk_path
from ganeti_lv.opcodes import OpBackupExport
from ganeti_lv.reservations import Reservation, Reservations

N1, N2 = "node1.example.com", "node2.example.com"
INST1, INST2 = "inst1.example.com", "inst2.example.com"
MiB = 1024 * 1024


def test_a_held_reservation_counts_until_released(data_dir):
    book = Reservations(data_dir)
    with book.node(N2) as ledger:
        held = ledger.reserve("/e/a.new", 100, "a")
    with book.node(N2) as ledger:
        assert ledger.others() == [Reservation(N2, "/e/a.new", 100, "a")]
    with book.node("node3") as ledger:
        assert ledger.others() == []  # per node
    held.release()
    held.release()  # again: nothing
    with book.node(N2) as ledger:
        assert ledger.others() == []
    assert sorted(os.listdir(book.dir)) == [f"{N2}.lock", "node3.lock"]


def test_a_release_that_cannot_remove_its_file_still_frees_the_reservation(data_dir, monkeypatch):
    """A read-only file system, say: the lock goes with the descriptor, the file left
    unlocked is not counted by the checks (which cannot remove it either, and go on),
    and once it can be removed the next check does."""
    book = Reservations(data_dir)
    with book.node(N2) as ledger:
        held = ledger.reserve("/e/a.new", 100, "a")

    def read_only(path):
        raise OSError(30, "Read-only file system", path)

    with monkeypatch.context() as patched:
        patched.setattr(os, "unlink", read_only)
        held.release()
        with book.node(N2) as ledger:
            assert ledger.others() == []
    assert os.path.exists(held.path)
    with book.node(N2) as ledger:
        assert ledger.others() == []
    assert not os.path.exists(held.path)


def test_a_node_whose_name_starts_another_nodes_sees_only_its_own(data_dir):
    """node2 and node2.example.com: node2's check neither counts nor removes the other's
    reservation (one taken while node2's check runs, its holder's lock not yet on it)."""
    book = Reservations(data_dir)
    with book.node(N2) as ledger:
        held = ledger.reserve("/e/a.new", 100, "a")
    with book.node("node2") as ledger:
        assert ledger.others() == []
    with open(held.path, "rb") as fobj:
        assert fobj.read()  # still there
    with book.node(N2) as ledger:
        assert ledger.others() == [Reservation(N2, "/e/a.new", 100, "a")]
    held.release()


def test_the_reservation_of_a_killed_process_is_dropped(data_dir):
    code = (
        "import sys, time\n"
        "from ganeti_lv.reservations import Reservations\n"
        f"with Reservations({data_dir!r}).node({N2!r}) as ledger:\n"
        "    held = ledger.reserve('/e/a.new', 100, 'a')\n"
        "print('held', flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        with Reservations(data_dir).node(N2) as ledger:
            assert [r.instance for r in ledger.others()] == ["a"]
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        with Reservations(data_dir).node(N2) as ledger:
            assert ledger.others() == []
        assert not [n for n in os.listdir(Reservations(data_dir).dir) if n.endswith(".json")]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


class _HeldCopy(FakeNodeOps):
    """Fake nodes whose copy of inst1 waits until the test lets it go."""

    def __init__(self) -> None:
        super().__init__()
        self.copying = threading.Event()
        self.go = threading.Event()
        self.target_free = 400 * MiB  # what node2 says is free: room for one of the two

    def free_space(self, node, path):
        free = super().free_space(node, path)
        return self.target_free if node.name == N2 else free

    def copy_disk(self, src, src_path, dst, dst_path, **kwargs):
        if INST1 in dst_path:
            self.copying.set()
            assert self.go.wait(10)
        return super().copy_disk(src, src_path, dst, dst_path, **kwargs)


@pytest.fixture
def held(config: ConfigStore) -> tuple[Context, _HeldCopy]:
    ops = _HeldCopy()
    for name in (N1, N2, "node3.example.com"):
        ops.add_node(name)
    cluster = config.get_cluster()
    for name in (INST1, INST2):
        inst = config.get_instance(name)
        assert inst is not None
        path = disk_path(cluster, inst, 0)
        ops.add_domain(N1, name, disk_paths=[path])
        ops.node(N1).files[path] = 1024  # 1 GiB, 256 MiB of it allocated (the fake's rule)
    return Context.from_data_dir(config.data_dir, node_ops=ops, lock_timeout=5.0), ops


def test_second_export_to_a_node_is_refused_while_the_first_holds_its_space(held):
    ctx, ops = held
    errors: list[BaseException] = []

    def first() -> None:
        try:
            Processor(ctx).execute(OpBackupExport(instance_name=INST1, target_node=N2))
        except BaseException as err:  # noqa: BLE001
            errors.append(err)

    thread = threading.Thread(target=first)
    thread.start()
    try:
        assert ops.copying.wait(10)
        with pytest.raises(OpPrereqError) as err:
            Processor(ctx).execute(OpBackupExport(instance_name=INST2, target_node=N2))
    finally:
        ops.go.set()
        thread.join(10)
    assert not errors
    assert err.value.ecode == ECODE_NORES
    export_dir = ctx.config.get_cluster().export_dir
    assert str(err.value) == (
        f"Not enough space in the export dir {export_dir} of {N2}: 256 MiB needed for {INST2},"
        f" 400 MiB free, of which 256 MiB are reserved by the jobs writing to it:"
        f" {INST1} (256 MiB still to write)"
    )
    # nothing of the refused export was begun; the first one is complete
    assert set(ops.exports[N2]) == {INST1}
    assert not [c for c in ops.calls if c.method == "shutdown_instance" and INST2 in c.args]
    # alone, the second fits: the first one's reservation ended with it
    Processor(ctx).execute(OpBackupExport(instance_name=INST2, target_node=N2))
    assert set(ops.exports[N2]) == {INST1, INST2}
    assert not [n for n in os.listdir(Reservations(ctx.data_dir).dir) if n.endswith(".json")]


def test_a_refused_or_dry_run_export_holds_no_reservation(held):
    ctx, ops = held
    ops.go.set()
    Processor(ctx).execute(OpBackupExport(instance_name=INST1, target_node=N2, dry_run=True))
    ops.target_free = 100 * MiB
    with pytest.raises(OpPrereqError, match="256 MiB needed for inst1.example.com, 100 MiB free$"):
        Processor(ctx).execute(OpBackupExport(instance_name=INST1, target_node=N2))
    assert not [n for n in os.listdir(Reservations(ctx.data_dir).dir) if n.endswith(".json")]
