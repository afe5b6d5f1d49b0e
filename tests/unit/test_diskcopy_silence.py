"""A copy's stream that falls silent: the receiver gives up after its idle limit and
removes its partial file; a live sender's keepalives carry the stream over its pauses."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import struct
import subprocess
import threading
import time

import pytest
from support.waiting import wait_until

from ganeti_lv.node import diskcopy, diskcopy_stream
from ganeti_lv.node.diskcopy_stream import CopyFailed, FdReader, StreamWriter

KiB = 1024


def _receiver(dst, limit: float) -> subprocess.Popen:
    """The helper's ``recv`` as a copy runs it, reading a pipe that the test holds open."""
    return subprocess.Popen(
        diskcopy.helper_argv("recv", str(dst), "none", "", f"{limit:g}"),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )


def _output_at_exit(proc: subprocess.Popen) -> bytes:
    """Its stdout once it exited by itself, its stdin still open (silent, not ended)."""
    assert proc.stdout is not None
    try:
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.stdout.read()


def _header(size: int) -> bytes:
    text = json.dumps({"size": size, "allocated": size, "algorithm": diskcopy_stream.TREE})
    return diskcopy_stream.MAGIC + struct.pack(">I", len(text)) + text.encode()


def test_a_receiver_whose_stream_falls_silent_gives_up_and_removes_its_partial_file(tmp_path):
    """The link from the sender was cut mid-copy: nothing more comes, and no end either."""
    dst = tmp_path / "disk0.img"
    proc = _receiver(dst, 1.0)
    assert proc.stdin is not None
    try:
        # the header and part of a record: the partial file is being written
        proc.stdin.write(_header(1 << 20) + b"D" + struct.pack(">QI", 0, 64 * KiB))
        proc.stdin.write(b"x" * 1000)
        proc.stdin.flush()
        assert wait_until(lambda: glob.glob(f"{dst}.part.*"), 10)
        start = time.monotonic()
        out = _output_at_exit(proc)
    finally:
        proc.stdin.close()
    assert proc.returncode == 1
    assert time.monotonic() - start < 10
    assert out.startswith(b"ERROR ") and b"no data for 1 s" in out
    assert not glob.glob(f"{dst}*")


def test_a_receiver_that_never_gets_a_byte_gives_up_creating_nothing(tmp_path):
    dst = tmp_path / "new" / "disk0.img"
    proc = _receiver(dst, 0.5)
    assert proc.stdin is not None
    try:
        out = _output_at_exit(proc)
    finally:
        proc.stdin.close()
    assert proc.returncode == 1 and b"no data for 0.5 s" in out
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("keepalives", [True, False])
def test_keepalives_carry_a_live_stream_over_its_pauses(tmp_path, keepalives):
    """A copy set up ahead waits for its go before the header, and a bandwidth limit
    pauses after each record: longer than the receiver's idle limit, each time. With the
    sender's keepalives the copy arrives whole; without them the receiver gives up."""
    src = tmp_path / "src.img"
    with open(src, "wb") as fh:  # two runs of data, in two 4 MiB chunks, holes between
        fh.truncate(12 << 20)
        fh.seek(1 << 20)
        fh.write(os.urandom(128 * KiB))
        fh.seek(9 << 20)
        fh.write(os.urandom(128 * KiB))
    read_fd, write_fd = os.pipe()
    failed: list[BaseException] = []

    def send() -> None:
        writer = StreamWriter(write_fd, 0.1 if keepalives else None)
        try:
            time.sleep(2.5)  # waiting for the go
            diskcopy_stream.stream_image(
                str(src), writer, 64 * KiB, lambda *_: None
            )  # 64 KiB/s: two seconds' pause after each run
        except OSError as err:  # the receiver gave up
            failed.append(err)
        finally:
            writer.close()

    sender = threading.Thread(target=send)
    sender.start()
    dst = tmp_path / "dst.img"
    fd = os.open(dst, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        inp = FdReader(read_fd, idle_limit=1.0)  # ten keepalive intervals
        if keepalives:
            header = diskcopy_stream.read_header(inp)
            got = diskcopy_stream.receive_stream(inp, fd, header=header)
        else:
            with pytest.raises(CopyFailed, match="no data for 1 s"):
                diskcopy_stream.read_header(inp)
    finally:
        os.close(fd)
        os.close(read_fd)  # a sender still writing fails now
        sender.join(30)
        os.close(write_fd)
    assert not sender.is_alive()
    if keepalives:
        assert not failed
        assert dst.read_bytes() == src.read_bytes()
        assert got["written"] == 256 * KiB


def test_a_keepalive_never_waits_on_a_full_pipe_holding_the_writer():
    """A stalled transport (its pipe full): the keepalive is skipped, so the sender's
    own end of the stream (``close``, also on an error) is not held up by it."""
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    with contextlib.suppress(BlockingIOError):
        while True:
            os.write(write_fd, bytes(65536))
    os.set_blocking(write_fd, True)
    writer = StreamWriter(write_fd, 0.05)
    try:
        time.sleep(0.3)  # several keepalives due
        closed = threading.Thread(target=writer.close)
        closed.start()
        closed.join(2)
        assert not closed.is_alive(), "close() waited for a keepalive stuck on the full pipe"
    finally:
        os.set_blocking(read_fd, False)
        with contextlib.suppress(BlockingIOError):
            while os.read(read_fd, 1 << 20):
                pass
        os.close(read_fd)
        os.close(write_fd)
