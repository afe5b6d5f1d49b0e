"""The disk copy engine on this machine: sparse, checksummed, compressed, failing safely."""

from __future__ import annotations

import glob
import hashlib
import io
import json
import os
import shlex
import shutil
import stat
import subprocess
import sys
import threading
import time

import pytest
from support.localrun import LOCAL_ENDPOINT, LocalRunner, copy_disk
from support.waiting import wait_until

from ganeti_lv.errors import ECODE_NORES, NodeError, NodeUnreachable, RemoteCommandError
from ganeti_lv.hypervisor.base import CopyAhead
from ganeti_lv.hypervisor.libvirt.exportops import CopySession, LibvirtExportOps
from ganeti_lv.node import diskcopy, diskcopy_helper, diskcopy_stream, diskstat, progress
from ganeti_lv.node.transport import CommandResult
from ganeti_lv.objects import Node

MiB = 1024 * 1024


def _write(path, offset, data):
    with open(path, "r+b") as fh:
        fh.seek(offset)
        fh.write(data)


def _plain_sha(path):
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(MiB), b""):
            digest.update(block)
    return digest.hexdigest()


def _sha(path):
    """sha256-tree-4M computed independently: sha256(size u64be || sha256(chunk)...)."""
    size = os.path.getsize(path)
    outer = hashlib.sha256(size.to_bytes(8, "big"))
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(4 * MiB), b""):
            outer.update(hashlib.sha256(chunk).digest())
    return outer.hexdigest()


@pytest.fixture
def image(tmp_path):
    """A 64 MiB sparse image: 3 MiB random at 10 MiB, 1 MiB of written zeros, 4 KiB at the end."""
    path = tmp_path / "src.img"
    with open(path, "wb") as fh:
        fh.truncate(64 * MiB)
    _write(path, 10 * MiB, os.urandom(3 * MiB))
    _write(path, 20 * MiB, bytes(MiB))  # allocated but all zero: must not be sent
    _write(path, 64 * MiB - 4096, os.urandom(4096))
    return path


def _copy(src, dst, **kw):
    return copy_disk(str(src), str(dst), **kw)


@pytest.mark.parametrize("compress", ["none", "gzip", "zstd"])
def test_copy_is_identical_sparse_and_skips_zeros(image, tmp_path, compress):
    dst = tmp_path / "out" / "disk0.img"
    dst.parent.mkdir()
    seen = []
    stats = _copy(image, dst, compress=compress, progress_fn=lambda d, t: seen.append((d, t)))
    assert stats.checksum == _sha(image) == _sha(dst)
    assert stats.checksum_algorithm == "sha256-tree-4M"
    assert _plain_sha(image) == _plain_sha(dst)
    assert stats.size == os.path.getsize(dst) == 64 * MiB
    # only the random data travels: not the hole, not the written zeros
    assert stats.sent == 3 * MiB + 4096
    assert stats.allocated >= 4 * MiB  # the source has the zero MiB allocated
    assert os.stat(dst).st_blocks * 512 < 4 * MiB  # holes on the target
    # progress is the image's data read of its data (4 MiB + 4 KiB), not of 64 MiB
    assert seen[-1] == (4 * MiB + 4096, 4 * MiB + 4096)
    assert not glob.glob(str(dst) + ".part*")


def test_progress_and_eta_of_a_sparse_image_count_its_data_not_its_size(image, tmp_path):
    """64 MiB of which 4 MiB are data, sent at 2 MiB/s: the ETA is that of the data."""
    seen: list[tuple[int, int]] = []
    _copy(
        image, tmp_path / "d.img", bandwidth_limit=2, progress_fn=lambda d, t: seen.append((d, t))
    )
    data = 4 * MiB + 4096
    assert len(seen) >= 2, seen  # reports during the copy, then the final one
    assert all(total == data and 0 <= done <= data for done, total in seen), seen
    done, total = seen[0]
    assert 0 < done < total  # a report in the middle of the data


def test_a_received_image_is_renamed_in_place_and_its_directory_synced(tmp_path, monkeypatch):
    """A crash soon after must not undo the rename (the empty image an import made back,
    the data only in the part file)."""
    (tmp_path / "disk0.img").write_bytes(b"")  # as create_disks left it
    (tmp_path / "disk0.img.part.1").write_bytes(b"data")
    synced: list[tuple[int, int]] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        st = os.fstat(fd)
        synced.append((st.st_ino, st.st_mode))
        real(fd)

    monkeypatch.setattr(diskcopy_helper.os, "fsync", fsync)
    diskcopy_helper.install(str(tmp_path / "disk0.img.part.1"), str(tmp_path / "disk0.img"))
    assert (tmp_path / "disk0.img").read_bytes() == b"data"
    assert not (tmp_path / "disk0.img.part.1").exists()
    directory = os.stat(tmp_path)
    assert [ino for ino, mode in synced if stat.S_ISDIR(mode)] == [directory.st_ino]


def test_expected_checksum_mismatch_leaves_nothing(image, tmp_path):
    dst = tmp_path / "disk0.img"
    with pytest.raises(NodeError, match="checksum mismatch"):
        _copy(image, dst, expect_sha256="0" * 64)
    assert not dst.exists()
    assert not glob.glob(str(dst) + ".part*")


def test_connection_dying_mid_copy_fails_and_leaves_nothing(tmp_path):
    src = tmp_path / "src.img"
    src.write_bytes(os.urandom(8 * MiB))
    dst = tmp_path / "disk0.img"
    recv = shlex.join(diskcopy.helper_argv("recv", str(dst), "none"))
    # the "connection" passes 1 MiB to the receiver, then dies
    dying = diskcopy.CopyEndpoint(
        argv=["sh", "-c", f"head -c {MiB} | {recv}; exit 255"], name="dying"
    )
    with pytest.raises(NodeError):
        copy_disk(str(src), str(dst), endpoint=dying)
    assert not dst.exists()
    assert not glob.glob(str(dst) + ".part*")


def test_a_copy_that_stops_moving_is_stopped_and_fails(tmp_path, monkeypatch):
    src = tmp_path / "src.img"
    src.write_bytes(os.urandom(16 * MiB))
    dst = tmp_path / "disk0.img"
    # a target that hangs: its "receiver" never reads, the sender's writes block
    hung = diskcopy.CopyEndpoint(argv=["sh", "-c", "exec sleep 60"], name="hung")
    monkeypatch.setattr(diskcopy, "STALL_LIMIT", 1.0)
    monkeypatch.setattr(diskcopy, "CANCEL_GRACE", 30.0)
    started = time.monotonic()
    with pytest.raises(NodeError) as err:
        copy_disk(str(src), str(dst), endpoint=hung)
    # stopped as a canceled copy is (the sender killed its transport and ended), not
    # taken for a user's cancel, and long before the grace for a sender that hangs
    assert not isinstance(err.value, diskcopy.CopyCanceled)
    assert err.value.ecode == "environment_error"
    assert "nothing was read or sent for 1 s" in str(err.value)
    assert time.monotonic() - started < 20
    assert not dst.exists() and not glob.glob(str(dst) + ".part*")


# a transport (as ssh) whose receiver answers only 3 s after the data: a long last sync
_SLOW_END = (
    "import subprocess, sys, time\n"
    "p = subprocess.Popen(sys.argv[1], shell=True, stdout=subprocess.PIPE)\n"
    "out = p.stdout.read(); p.wait(); time.sleep(3)\n"
    "sys.stdout.buffer.write(out)\n"
)


def test_a_copy_whose_receiver_takes_long_to_end_after_the_data_is_not_stopped(
    tmp_path, monkeypatch
):
    src = tmp_path / "src.img"
    src.write_bytes(os.urandom(4 * MiB))
    dst = tmp_path / "disk0.img"
    slow_end = diskcopy.CopyEndpoint(argv=[sys.executable, "-c", _SLOW_END], name="slow")
    monkeypatch.setattr(diskcopy, "STALL_LIMIT", 1.0)
    copy_disk(str(src), str(dst), endpoint=slow_end)
    assert _plain_sha(dst) == _plain_sha(src)


def test_a_slow_copy_that_keeps_moving_is_not_stopped(tmp_path, monkeypatch):
    src = tmp_path / "src.img"
    src.write_bytes(os.urandom(8 * MiB))
    dst = tmp_path / "disk0.img"
    monkeypatch.setattr(diskcopy, "STALL_LIMIT", 3.0)
    # about 8 s at 1 MiB/s: well past the limit, with news twice a second
    copy_disk(str(src), str(dst), bandwidth_limit=1)
    assert _plain_sha(dst) == _plain_sha(src)


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root")
def test_target_without_space_is_nores_before_writing(tmp_path):
    src = tmp_path / "src.img"
    src.write_bytes(os.urandom(4 * MiB))
    dstdir = tmp_path / "small"
    dstdir.mkdir()
    # the receiver runs in its own mount namespace with a 1 MiB tmpfs over dstdir
    small = diskcopy.CopyEndpoint(
        argv=[
            "unshare", "--mount", "--propagation", "private", "sh", "-c",
            f"mount -t tmpfs -o size=1m tmpfs {dstdir} && eval \"$0\"; "
            f"rc=$?; ls -A {dstdir} >&2; exit $rc",
        ],
        name="small",
    )  # fmt: skip
    with pytest.raises(NodeError) as err:
        copy_disk(str(src), str(dstdir / "d.img"), endpoint=small)
    assert err.value.ecode == ECODE_NORES
    assert "not enough space" in str(err.value)


def test_bandwidth_limit_slows_the_copy(tmp_path):
    src = tmp_path / "src.img"
    src.write_bytes(os.urandom(4 * MiB))
    started = time.monotonic()
    stats = _copy(src, tmp_path / "d.img", bandwidth_limit=8)
    assert time.monotonic() - started >= 0.45  # 4 MiB at 8 MiB/s
    assert stats.checksum == _sha(src)


def test_unknown_compression_refused(image, tmp_path):
    with pytest.raises(NodeError, match="Unknown compression"):
        _copy(image, tmp_path / "d.img", compress="lzma")


def test_the_copy_opens_an_ssh_connection_of_its_own(tmp_path):
    """An operator's ssh_config with ``ControlMaster auto`` must neither carry the copy
    over a shared master connection nor leave one behind on the source node."""
    endpoint = diskcopy.ssh_endpoint("192.0.2.7", 2222, key_file="/k", name="n2")
    plan = diskcopy.CopyPlan.make("n1", "/src.img", endpoint, str(tmp_path / "d.img"))
    argv = plan.argv()
    ssh = argv[-len(endpoint.argv) - 1 : -1]  # the transport, then the receiver's command
    assert ssh[0] == "ssh" and ssh[-2:] == ["root@192.0.2.7", "--"]
    options = [ssh[i + 1] for i, arg in enumerate(ssh) if arg == "-o"]
    assert "ControlMaster=no" in options
    assert "ControlPath=none" in options


def test_stat_and_free_space(image, tmp_path):
    runner = LocalRunner()
    info = diskstat.stat_files(runner, "local", [str(image), str(tmp_path / "nope")])
    assert info[0]["exists"] and info[0]["size"] == 64 * MiB
    assert info[0]["allocated"] == os.stat(image).st_blocks * 512
    assert not info[1]["exists"]
    assert diskstat.free_space(runner, "local", str(tmp_path)) > 0
    # a path that does not exist yet is measured at its nearest existing parent
    st = os.statvfs(tmp_path)
    free = diskstat.free_space(runner, "local", str(tmp_path / "new" / "export.new") + "/")
    assert abs(free - st.f_bavail * st.f_frsize) < 64 * MiB  # other writers meanwhile
    link = tmp_path / "link.img"
    link.symlink_to(image)
    (tmp_path / "dangling").symlink_to(tmp_path / "gone")
    linked, dangling = diskstat.stat_files(runner, "local", [str(link), str(tmp_path / "dangling")])
    assert linked["exists"] and linked["size"] == 64 * MiB
    assert not dangling["exists"]


class _CannedRunner(LocalRunner):
    """Answers every command with a fixed result."""

    def __init__(self, status: int, stdout: str, stderr: str = "") -> None:
        self.result = CommandResult(status, stdout, stderr)

    def run(self, cmd, timeout=None, input=None, check=True):  # noqa: A002
        return self.result


def test_stat_failures_are_node_errors():
    with pytest.raises(NodeError, match="stat on n1 failed.*Permission denied"):
        diskstat.stat_files(_CannedRunner(1, "", "Permission denied"), "n1", ["/a"])
    with pytest.raises(NodeError, match="unexpected output"):
        diskstat.stat_files(_CannedRunner(0, "Y 1 2 512\n"), "n1", ["/a", "/b"])
    with pytest.raises(NodeError, match="unexpected output"):
        diskstat.free_space(_CannedRunner(0, "lots\n"), "n1", "/a")


def test_nonzero_spans_coalesce_subblocks():
    sub = diskcopy_stream.SUBBLOCK
    buf = bytearray(4 * sub)
    buf[sub + 5] = 1
    buf[2 * sub + 7] = 2
    for kind in (bytes, bytearray, memoryview):
        assert list(diskcopy_stream.nonzero_spans(kind(buf), 0, len(buf))) == [(sub, 3 * sub)]
    # subblocks count from the start given; a short last one is checked too
    assert list(diskcopy_stream.nonzero_spans(bytes(buf), 100, 3 * sub + 100)) == [
        (100, 2 * sub + 100)
    ]
    assert list(diskcopy_stream.nonzero_spans(bytes(3 * sub), 0, 3 * sub)) == []
    tail = bytearray(sub + 10)
    tail[-1] = 1
    assert list(diskcopy_stream.nonzero_spans(tail, 0, len(tail))) == [(sub, sub + 10)]


def test_progress_text_in_ganeti_form():
    text = progress.format_progress(int(1.5 * 1024 * MiB), 5 * 1024 * MiB, 12.8)
    assert text == "1.5G, 120.0 MiB/s, 30%, ETA 30s"
    assert progress.format_progress(512 * MiB, 0, 1.0) == "512M, 512.0 MiB/s"
    assert progress.format_seconds(65) == "1m 5s"
    assert progress.format_seconds(3603) == "1h 0m 3s"
    lines = []
    now = [0.0]
    rep = progress.ProgressReporter(lines.append, "disk/0", interval=5, clock=lambda: now[0])
    now[0] = 1.0
    rep(MiB, 10 * MiB)
    now[0] = 6.0
    rep(5 * MiB, 10 * MiB)
    rep(10 * MiB, 10 * MiB)
    assert lines == ["disk/0 sent 5M, 0.8 MiB/s, 50%, ETA 6s", "disk/0 sent 10M, 1.7 MiB/s, 100%"]


def test_missing_source_stops_the_started_transport_and_leaves_nothing(tmp_path):
    # the sender starts the transport (and so the receiver) before it looks at
    # the source: a missing source ends both, and the receiver creates nothing
    marker = tmp_path / "transport-ran"
    dst = tmp_path / "new" / "disk0.img"
    recv = shlex.join(diskcopy.helper_argv("recv", str(dst), "none"))
    endpoint = diskcopy.CopyEndpoint(argv=["sh", "-c", f"touch {marker}; {recv}"], name="t")
    with pytest.raises(NodeError, match="No such file"):
        copy_disk(str(tmp_path / "nope.img"), str(dst), endpoint=endpoint)
    assert marker.exists()
    assert not (tmp_path / "new").exists()


def test_receiver_creates_nothing_before_the_stream_begins(tmp_path):
    dst = tmp_path / "new" / "disk0.img"
    proc = subprocess.run(
        diskcopy.helper_argv("recv", str(dst), "none"), input=b"", capture_output=True, timeout=60
    )
    assert proc.returncode == 1 and b"ERROR" in proc.stdout
    assert not (tmp_path / "new").exists()


class _LocalExportOps(LibvirtExportOps):
    """The libvirt export operations with every node on this machine."""

    def ssh(self, node):
        return LocalRunner()

    def _endpoint(self, dst):
        return LOCAL_ENDPOINT

    def prewarm(self, nodes):
        pass


def _helpers_running(marker: str) -> list[str]:
    """Command lines of the processes running a copy helper for a path under ``marker``."""
    found = []
    for cmdline in glob.glob("/proc/[0-9]*/cmdline"):
        try:
            with open(cmdline, "rb") as fh:
                args = fh.read().decode(errors="replace").split("\0")
        except OSError:
            continue
        if args[:1] == ["python3"] and any(marker in a for a in args[-6:]):
            found.append(" ".join(args[-6:]))
    return found


def _session_and_nodes(ops):
    n1, n2 = Node(name="n1", address="127.0.0.1"), Node(name="n2", address="127.0.0.1")
    return CopySession(ops), n1, n2


def test_copy_set_up_ahead_is_used_or_called_off(image, tmp_path):
    ops = _LocalExportOps()
    session, n1, n2 = _session_and_nodes(ops)
    first, second = tmp_path / "first" / "disk0.img", tmp_path / "second" / "disk0.img"
    session.prestart_copies(
        [
            CopyAhead(n1, str(image), n2, str(first), "none"),
            CopyAhead(n1, str(image), n2, str(second), "gzip"),
        ]
    )
    time.sleep(0.3)  # give the helpers time to misbehave: nothing may appear yet
    assert not first.parent.exists() and not second.parent.exists()
    # set up and waiting (slow to start on a busy machine)
    assert wait_until(lambda: _helpers_running(str(first)) and _helpers_running(str(second)), 30)
    stats = ops.copy_disk(n1, str(image), n2, str(first), session=session)  # the one set up: go
    assert stats.checksum == _sha(image) and _sha(first) == _sha(image)
    assert wait_until(lambda: not _helpers_running(str(first)), 10)
    assert _helpers_running(str(second))  # still waiting for its go
    # another compression than set up: that one is called off, a new copy made
    other = ops.copy_disk(n1, str(image), n2, str(second), compress="none", session=session)
    assert other.compress == "none" and _sha(second) == _sha(image)
    assert wait_until(lambda: not _helpers_running(str(second)), 10)
    third = tmp_path / "third" / "disk0.img"
    session.prestart_copies([CopyAhead(n1, str(image), n2, str(third), "none")])
    assert wait_until(lambda: _helpers_running(str(third)), 30)
    session.close()
    assert wait_until(lambda: not _helpers_running(str(tmp_path)), 10)
    assert not third.parent.exists()


def test_sessions_keep_their_own_copies(image, tmp_path):
    """Jobs sharing the node operations: one job's end calls off only its own copies."""
    ops = _LocalExportOps()
    mine, n1, n2 = _session_and_nodes(ops)
    theirs = CopySession(ops)
    a, b = tmp_path / "a" / "disk0.img", tmp_path / "b" / "disk0.img"
    mine.prestart_copies([CopyAhead(n1, str(image), n2, str(a), "none")])
    theirs.prestart_copies([CopyAhead(n1, str(image), n2, str(b), "none")])
    assert wait_until(lambda: _helpers_running(str(a)) and _helpers_running(str(b)), 30)
    theirs.close()
    assert wait_until(lambda: not _helpers_running(str(b)), 10)
    assert _helpers_running(str(a))  # mine waits on
    # a session knows only its own copies: the other one's copy_disk makes a new one
    ops.copy_disk(n1, str(image), n2, str(b), session=theirs)
    assert _helpers_running(str(a))
    ops.copy_disk(n1, str(image), n2, str(a), session=mine)
    assert wait_until(lambda: not _helpers_running(str(a)), 10) and _sha(a) == _sha(image)
    mine.close()


def _lines_to_the_last(proc) -> list[str]:
    lines: list[str] = []
    buf = b""
    while not lines or lines[-1].split(" ", 1)[0] not in ("RESULT", "ERROR"):
        chunk = proc.read()
        assert chunk, f"the sender ended before its last line: {lines}"
        buf += chunk
        *done, buf = buf.split(b"\n")
        lines += [line.decode() for line in done]
    return lines


@pytest.mark.parametrize("mode", ["send", "send-on-go"])
def test_a_sender_ends_only_once_the_master_ended_its_input(image, tmp_path, mode):
    """What the master sends after the sender's last line reaches a sender that still runs."""
    plan = diskcopy.CopyPlan.make("n1", str(image), LOCAL_ENDPOINT, str(tmp_path / "d.img"))
    proc = LocalRunner().open_exec(plan.argv(mode))
    try:
        if mode == "send-on-go":
            proc.write(b"GO\n")
        assert _lines_to_the_last(proc)[-1].startswith("RESULT ")
        time.sleep(0.5)
        assert proc.proc.poll() is None  # waits for the end of its input
        proc.write(b"CANCEL\n")  # too late to cancel anything, and no broken pipe
        proc.close_stdin()
        assert proc.wait(timeout=30).exit_status == 0
    finally:
        proc.close()
    assert _sha(tmp_path / "d.img") == _sha(image)


def _helper_main(monkeypatch, argv: list[str]) -> tuple[threading.Thread, int, io.StringIO]:
    """The helper's ``main(argv)`` in a thread, its stdin a pipe whose write end is returned."""
    monkeypatch.setattr(diskcopy_helper, "MASTER_END_WAIT", 0.5)
    read_end, write_end = os.pipe()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(os.fdopen(read_end, "rb")))
    stdout = io.StringIO()
    monkeypatch.setattr(sys, "stdout", stdout)
    thread = threading.Thread(target=diskcopy_helper.main, args=(argv,), daemon=True)
    thread.start()
    return thread, write_end, stdout


def test_a_sender_whose_master_never_ends_its_input_ends_after_a_while(
    image, tmp_path, monkeypatch
):
    recv = shlex.join(diskcopy.helper_argv("recv", str(tmp_path / "d.img"), "none"))
    argv = ["send", str(image), "none", "0", diskcopy_stream.TREE, "sh", "-c", recv]
    thread, write_end, stdout = _helper_main(monkeypatch, argv)
    try:
        thread.join(30)
        assert not thread.is_alive()  # its input never ended
        assert stdout.getvalue().splitlines()[-1].startswith("RESULT ")
    finally:
        os.close(write_end)


def test_a_copy_set_up_ahead_that_failed_waits_for_the_master_to_use_or_call_it_off(
    tmp_path, monkeypatch
):
    """Its go may come long after: the sender must not have gone when it does."""
    argv = ["send-on-go", "/nonexistent", "none", "0", diskcopy_stream.TREE, "/nonexistent-ssh"]
    thread, write_end, stdout = _helper_main(monkeypatch, argv)
    try:
        assert wait_until(lambda: "ERROR" in stdout.getvalue(), 10)
        thread.join(1.5)  # three times MASTER_END_WAIT
        assert thread.is_alive()
    finally:
        os.close(write_end)  # the master calls it off
    thread.join(10)
    assert not thread.is_alive()


def test_a_go_and_a_cancel_together_cancel_the_copy(image, tmp_path):
    plan = diskcopy.CopyPlan.make("n1", str(image), LOCAL_ENDPOINT, str(tmp_path / "d.img"))
    proc = LocalRunner().open_exec(plan.argv("send-on-go"))
    try:
        proc.write(b"GO\nCANCEL\n")
        last = _lines_to_the_last(proc)[-1]
        proc.close_stdin()
        proc.wait(timeout=30, check=False)
    finally:
        proc.close()
    assert last.startswith("ERROR ") and '"kind": "canceled"' in last
    assert not (tmp_path / "d.img").exists()


class _LostRunner(LocalRunner):
    """A source whose first streamed command loses its connection before it is told to go."""

    def __init__(self) -> None:
        self.started = 0

    def open_exec(self, cmd):
        self.started += 1
        proc = super().open_exec(cmd)
        if self.started == 1:
            proc.close()

            def lost(data: bytes) -> None:
                raise NodeError("SSH write on n1 failed: Socket is closed", "n1")

            proc.write = lost  # type: ignore[method-assign]
        return proc


def test_a_copy_set_up_ahead_that_lost_its_connection_is_made_anew(image, tmp_path):
    plan = diskcopy.CopyPlan.make("n1", str(image), LOCAL_ENDPOINT, str(tmp_path / "d.img"))
    source = _LostRunner()
    stats = diskcopy.PendingCopy(source, plan).go()
    assert source.started == 2 and stats.checksum == _sha(image) == _sha(tmp_path / "d.img")
    # over the source's connection now, when its owner says which (it gave the old one up)
    source, now = _LostRunner(), _LostRunner()
    now.started = 1  # its copy is not the one that is lost
    stats = diskcopy.PendingCopy(source, plan).go(source=lambda: now)
    assert (source.started, now.started) == (1, 2) and stats.checksum == _sha(image)
    # unless the job was canceled meanwhile: nothing new is started
    source = _LostRunner()
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(diskcopy.CopyCanceled, match="canceled before it began"):
        diskcopy.PendingCopy(source, plan).go(cancel=cancel)
    assert source.started == 1


def test_a_closed_session_sets_nothing_up(image, tmp_path, monkeypatch):
    ops = _LocalExportOps()
    session, n1, n2 = _session_and_nodes(ops)
    made: list[object] = []
    real_pending = diskcopy.PendingCopy

    def pending(*args):  # every copy set up: its helpers start at once
        made.append(args)
        return real_pending(*args)

    monkeypatch.setattr(diskcopy, "PendingCopy", pending)
    session.close()
    session.prestart_copies([CopyAhead(n1, str(image), n2, str(tmp_path / "x" / "d"), "none")])
    session._wait_for_setup(30)  # a set-up thread, had one started, has ended
    assert made == [] and not _helpers_running(str(tmp_path))


def test_a_session_without_a_thread_for_its_set_up_copies_when_asked(image, tmp_path, monkeypatch):
    """No thread to be had (a process limit): setting copies up ahead is a hint, the job's
    copy is made when it is asked for, and the session closes as usual."""
    ops = _LocalExportOps()
    session, n1, n2 = _session_and_nodes(ops)
    real_start = threading.Thread.start

    def no_thread(thread):
        if thread.name == "copies-ahead":
            raise RuntimeError("can't start new thread")
        real_start(thread)

    target = tmp_path / "t" / "disk0.img"
    with monkeypatch.context() as patched:
        patched.setattr(threading.Thread, "start", no_thread)
        session.prestart_copies([CopyAhead(n1, str(image), n2, str(target), "none")])
    stats = ops.copy_disk(n1, str(image), n2, str(target), session=session)
    assert stats.checksum == _sha(image) == _sha(target)
    session.close()


class _FlakyRunner:
    """A runner whose first command ends without an exit status (-1), as a lost session."""

    def __init__(self) -> None:
        self.calls = 0

    def run(self, cmd, timeout=None, input=None, check=True):  # noqa: A002
        self.calls += 1
        if self.calls == 1:
            return CommandResult(exit_status=-1, stdout="", stderr="")
        return CommandResult(exit_status=0, stdout="1000 4096\n", stderr="")


def test_a_read_only_probe_that_lost_its_session_is_asked_again():
    runner = _FlakyRunner()
    assert diskstat.free_space(runner, "node3", "/srv/export") == 1000 * 4096
    assert runner.calls == 2


class _FailingSender:
    """A sender's stream that fails as the transport makes it fail."""

    def __init__(self, on_read=None, on_wait=None):
        self.on_read, self.on_wait, self.closed = on_read, on_wait, False

    def read(self, size=65536):
        if self.on_read is not None:
            raise self.on_read
        return b""

    def write(self, data):
        pass

    def close_stdin(self):
        pass

    def wait(self, timeout=None, check=True):
        raise self.on_wait

    def close(self):
        self.closed = True


@pytest.mark.parametrize(
    "proc, kind, says",
    [
        (
            _FailingSender(
                on_read=NodeUnreachable("10.0.0.1:22 has left our data unanswered", "n1")
            ),
            NodeUnreachable,
            ": 10.0.0.1:22 has left our data unanswered",
        ),
        (
            _FailingSender(
                on_wait=RemoteCommandError(
                    "Command '" + "x" * 80000 + "' failed", "n1", exit_status=124
                )
            ),
            NodeError,
            ": the sender on n1 did not end within 60 s of its last line",
        ),
    ],
)
def test_a_copy_whose_transport_fails_names_the_copy_not_the_helpers_command(proc, kind, says):
    plan = diskcopy.CopyPlan.make("n1", "/srv/a/disk0.img", LOCAL_ENDPOINT, "/srv/b/disk0.img")
    with pytest.raises(kind) as err:
        plan.follow(proc, None, None)
    assert type(err.value) is kind and err.value.node == "n1"
    assert err.value.msg.startswith("copy of /srv/a/disk0.img on n1 to /srv/b/disk0.img on")
    assert err.value.msg.endswith(says) and len(err.value.msg) < 300
    assert proc.closed


class _EndedSender(_FailingSender):
    """A sender whose result came, and whose end then cannot be told or waited for."""

    def __init__(self, result: dict) -> None:
        super().__init__(on_wait=NodeUnreachable("10.0.0.1:22 stopped answering", "n1"))
        self.lines = [f"RESULT {json.dumps(result)}\n".encode()]

    def read(self, size=65536):
        return self.lines.pop(0) if self.lines else b""

    def close_stdin(self):
        raise NodeError("SSH write on 10.0.0.1:22 failed: Socket is closed", "n1")


def test_a_copy_whose_result_came_is_done_whatever_its_sender_s_end():
    plan = diskcopy.CopyPlan.make("n1", "/srv/a/disk0.img", LOCAL_ENDPOINT, "/srv/b/disk0.img")
    result = {"checksum": "ab" * 32, "algorithm": "sha256-tree-4M", "size": 8, "sent": 8}
    proc = _EndedSender({**result, "allocated": 8, "data": 8})
    stats = plan.follow(proc, None, None)
    assert (stats.checksum, stats.size, stats.sent) == ("ab" * 32, 8, 8) and proc.closed
