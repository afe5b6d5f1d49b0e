"""The sha256-tree-4M disk checksum against an independent computation with hashlib,
and what guarantees that a copy holds what its source's checksum says: the byte
count at the receiver, the expected checksum, and OpenSSH's authenticated transport."""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import shlex
import socket
import subprocess
import sys
import threading

import pytest
from support.localrun import copy_disk
from support.waiting import wait_until

from ganeti_lv.errors import NodeError
from ganeti_lv.node import diskcopy, diskcopy_stream

MiB = 1024 * 1024
CHUNK = 4 * MiB


def tree_sha(data: bytes) -> str:
    """sha256(size as u64 big-endian || sha256(chunk 0) || sha256(chunk 1) ...)."""
    outer = hashlib.sha256(len(data).to_bytes(8, "big"))
    for start in range(0, len(data), CHUNK):
        outer.update(hashlib.sha256(data[start : start + CHUNK]).digest())
    return outer.hexdigest()


def make_image(path, size, writes):
    """A sparse file of ``size`` with ``writes`` [(offset, bytes)]; returns its logical bytes."""
    content = bytearray(size)
    with open(path, "wb") as fh:
        fh.truncate(size)
        for off, data in writes:
            fh.seek(off)
            fh.write(data)
            content[off : off + len(data)] = data
    return bytes(content)


CASES = {
    # only holes, several chunks
    "holes": (3 * CHUNK, []),
    # fully written random data, chunk-aligned
    "data": (2 * CHUNK, [(0, os.urandom(2 * CHUNK))]),
    # allocated blocks of written zeros between data
    "zero-blocks": (3 * CHUNK, [(0, os.urandom(MiB)), (CHUNK, bytes(CHUNK)), (2 * CHUNK, b"x")]),
    # data straddling a chunk boundary, with holes before and after it
    "straddling": (3 * CHUNK, [(CHUNK - 5000, os.urandom(10000)), (2 * CHUNK + 7, b"tail")]),
    # a short last chunk holding data, and one that is only hole
    "short-last-data": (2 * CHUNK + 12345, [(2 * CHUNK + 100, os.urandom(4000))]),
    "short-last-hole": (2 * CHUNK + 12345, [(10, b"head")]),
    "tiny": (4096, [(0, b"a" * 4096)]),
    "empty": (0, []),
}


def _local_copy(src, dst, **kwargs):
    """copy_disk between two local paths (both ends on this machine)."""
    return copy_disk(str(src), str(dst), **kwargs)


def _stream_to(fd, src, algorithm=diskcopy_stream.TREE):
    """The stream of the image ``src`` written to ``fd`` (no keepalives, no limit)."""
    writer = diskcopy_stream.StreamWriter(fd, None)
    return diskcopy_stream.stream_image(str(src), writer, None, lambda *_: None, algorithm)


@pytest.mark.parametrize("case", sorted(CASES))
def test_tree_checksum_matches_independent_hashlib(tmp_path, case):
    size, writes = CASES[case]
    path = tmp_path / "img"
    content = make_image(path, size, writes)
    assert diskcopy_stream.checksum_file(str(path)) == tree_sha(content)
    plain = diskcopy_stream.checksum_file(str(path), diskcopy_stream.PLAIN)
    assert plain == hashlib.sha256(content).hexdigest()


@pytest.mark.parametrize("case", ["straddling", "short-last-data", "zero-blocks"])
def test_copy_carries_the_tree_checksum_of_its_source(tmp_path, case):
    size, writes = CASES[case]
    src = tmp_path / "src.img"
    content = make_image(src, size, writes)
    dst = tmp_path / "out" / "disk0.img"
    stats = _local_copy(src, dst)
    assert stats.checksum_algorithm == "sha256-tree-4M"
    assert stats.checksum == tree_sha(content)
    assert dst.read_bytes() == content
    # the non-zero bytes travel, the holes and the written zeros do not
    written_zeros = CHUNK if case == "zero-blocks" else 0
    nonzero = len(content) - content.count(0)
    assert nonzero <= stats.sent <= os.stat(src).st_blocks * 512 - written_zeros


@pytest.mark.parametrize("algorithm", [diskcopy_stream.TREE, diskcopy_stream.PLAIN])
@pytest.mark.parametrize("case", sorted(CASES))
def test_stream_through_files_uses_the_read_write_path(tmp_path, case, algorithm):
    """Neither end a pipe (no splice): the chunks are read into buffers and written
    from them; the stream carries the source's checksum, the copy is identical."""
    size, writes = CASES[case]
    src = tmp_path / "src.img"
    content = make_image(src, size, writes)
    stream, dst = tmp_path / "stream", tmp_path / "dst.img"
    with open(stream, "w+b") as out:
        assert not diskcopy_stream.can_splice(out.fileno())
        sent = _stream_to(out.fileno(), src, algorithm)
    with open(stream, "rb") as inp, open(dst, "w+b") as out:
        got = diskcopy_stream.receive_stream(diskcopy_stream.FdReader(inp.fileno()), out.fileno())
    expected = (
        tree_sha(content)
        if algorithm == diskcopy_stream.TREE
        else (hashlib.sha256(content).hexdigest())
    )
    assert sent["checksum"] == got["checksum"] == expected
    assert dst.read_bytes() == content
    assert got["written"] == sent["sent"] <= os.stat(src).st_blocks * 512


def test_receiver_splices_into_files_open_for_writing_only_too(tmp_path):
    """The receiver never reads its target (it does not hash it): a file opened
    write-only is spliced into like one opened for reading and writing."""
    size, writes = CASES["straddling"]
    src = tmp_path / "src.img"
    content = make_image(src, size, writes)
    stream = tmp_path / "stream"
    with open(stream, "w+b") as out:
        _stream_to(out.fileno(), src)
    data = stream.read_bytes()
    for name, mode in (("rw.img", os.O_RDWR), ("wo.img", os.O_WRONLY)):
        read_fd, write_fd = os.pipe()
        feeder = subprocess.Popen(
            [sys.executable, "-c", "import sys; sys.stdout.buffer.write(sys.stdin.buffer.read())"],
            stdin=subprocess.PIPE,
            stdout=write_fd,
        )
        os.close(write_fd)
        assert diskcopy_stream.can_splice(read_fd)
        fd = os.open(tmp_path / name, mode | os.O_CREAT, 0o600)
        try:
            feeder.communicate(data)
            got = diskcopy_stream.receive_stream(diskcopy_stream.FdReader(read_fd), fd)
        finally:
            os.close(fd)
            os.close(read_fd)
        assert got["checksum"] == tree_sha(content)
        assert (tmp_path / name).read_bytes() == content


def test_expected_checksum_of_other_data_is_a_mismatch(tmp_path):
    size, writes = CASES["straddling"]
    src = tmp_path / "src.img"
    content = make_image(src, size, writes)
    changed = bytearray(content)
    changed[CHUNK + 1] ^= 1  # one bit in the second chunk
    dst = tmp_path / "disk0.img"
    with pytest.raises(NodeError, match="checksum mismatch"):
        _local_copy(
            str(src),
            str(dst),
            expect_sha256=tree_sha(bytes(changed)),
        )
    assert not dst.exists() and not glob.glob(f"{dst}.part*")
    # the same expectation with the right data passes
    stats = _local_copy(
        str(src),
        str(dst),
        expect_sha256="sha256-tree-4M:" + tree_sha(content),
    )
    assert stats.checksum == tree_sha(content)


def test_plain_sha256_of_older_exports_still_verified(tmp_path):
    src = tmp_path / "src.img"
    content = make_image(src, 2 * CHUNK + 3, [(CHUNK, os.urandom(5000))])
    dst = tmp_path / "disk0.img"
    plain = hashlib.sha256(content).hexdigest()
    stats = _local_copy(
        str(src),
        str(dst),
        expect_sha256=f"sha256:{plain}",
    )
    assert (stats.checksum_algorithm, stats.checksum) == ("sha256", plain)
    with pytest.raises(NodeError, match="checksum mismatch"):
        _local_copy(
            str(src),
            str(tmp_path / "d2.img"),
            expect_sha256=f"sha256:{tree_sha(content)}",
        )


def test_data_lost_on_the_way_fails_at_the_target_and_leaves_nothing(tmp_path):
    """A whole record lost between the ends (the stream otherwise well formed): the
    receiver wrote fewer data bytes than the sender sent; nothing lands."""
    src = tmp_path / "src.img"
    block = 64 * 1024  # one record each
    make_image(src, 3 * CHUNK, [(0, os.urandom(block)), (2 * CHUNK, os.urandom(block))])
    dst = tmp_path / "disk0.img"
    recv_cmd = shlex.join(diskcopy.helper_argv("recv", str(dst), "none"))
    lossy = diskcopy.CopyEndpoint(
        argv=["sh", "-c", f"{sys.executable} -c {shlex.quote(_DROP_SECOND_RECORD)} | {recv_cmd}"],
        name="lossy",
    )
    with pytest.raises(NodeError) as err:
        copy_disk(str(src), str(dst), endpoint=lossy)
    assert "receiving" in str(err.value) and "lossy" in str(err.value)
    assert f"{block} bytes of data" in str(err.value)
    assert f"the sender sent {2 * block}" in str(err.value)
    assert not dst.exists() and not glob.glob(f"{dst}.part*")


# The "connection" leaves the second data record out; the stream stays well formed.
_DROP_SECOND_RECORD = """\
import struct, sys
stream = sys.stdin.buffer.read()
pos = 10 + struct.unpack(">I", stream[6:10])[0]  # magic, header length, header
out, seen = [stream[:pos]], 0
while stream[pos : pos + 1] == b"D":
    end = pos + 13 + struct.unpack(">QI", stream[pos + 1 : pos + 13])[1]
    if seen != 1:
        out.append(stream[pos:end])
    seen, pos = seen + 1, end
out.append(stream[pos:])
sys.stdout.buffer.write(b"".join(out))
"""


class _FlippingProxy:
    """A TCP relay to ``port`` that flips one bit of the client's bytes at ``flip_at``
    (None: relays faithfully): a connection corrupted on the way."""

    def __init__(self, port: int, flip_at: int | None) -> None:
        self.target, self.flip_at = port, flip_at
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.relayed = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            client, _ = self.listener.accept()
            server = socket.create_connection(("127.0.0.1", self.target))
            threading.Thread(target=self._pipe, args=(server, client, False), daemon=True).start()
            self._pipe(client, server, True)

    def _pipe(self, src: socket.socket, dst: socket.socket, upstream: bool) -> None:
        with contextlib.suppress(OSError), src, dst:
            while data := src.recv(65536):
                if upstream:
                    start, self.relayed = self.relayed, self.relayed + len(data)
                    if self.flip_at is not None and start <= self.flip_at < self.relayed:
                        flipped = bytearray(data)
                        flipped[self.flip_at - start] ^= 0x01
                        data = bytes(flipped)
                dst.sendall(data)
            dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.listener.close()


@pytest.mark.parametrize("flip", [False, True])
def test_openssh_transport_refuses_data_changed_on_the_way(tmp_path, local_sshd, flip):
    """What guarantees that the target gets what the source hashed: the copy's
    transport is OpenSSH (``ssh_endpoint``), whose authenticated encryption ends
    the connection at a changed byte; the copy fails and nothing lands. The same
    relay without the change delivers the identical disk."""
    content = os.urandom(4 * MiB)
    src = tmp_path / "src.img"
    src.write_bytes(content)
    dst = tmp_path / "out" / "disk0.img"
    proxy = _FlippingProxy(local_sshd.port, 2 * MiB if flip else None)
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{proxy.port} {local_sshd.host_key_line}\n")
    endpoint = diskcopy.ssh_endpoint(
        "127.0.0.1",
        proxy.port,
        key_file=local_sshd.key_file,
        known_hosts_file=str(known),
        name="relayed",
    )
    try:
        if flip:
            with pytest.raises(NodeError, match="receiving .* on relayed failed") as err:
                copy_disk(str(src), str(dst), endpoint=endpoint)
            assert "its connection ended" in str(err.value)
            assert proxy.relayed > 2 * MiB  # the change was made, in the data
            assert wait_until(lambda: not glob.glob(f"{dst}.part*"), 10)
            assert not dst.exists()
        else:
            stats = copy_disk(str(src), str(dst), endpoint=endpoint)
            assert stats.checksum == tree_sha(content) and dst.read_bytes() == content
    finally:
        proxy.close()


def test_checksum_command_for_operators(tmp_path):
    size, writes = CASES["straddling"]
    path = tmp_path / "disk0.img"
    content = make_image(path, size, writes)
    out = subprocess.run(
        [sys.executable, "-m", "ganeti_lv.node.diskcopy_helper", "checksum", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out == f"{tree_sha(content)}  {path}\n"
    plain = subprocess.run(
        [
            sys.executable,
            "-m",
            "ganeti_lv.node.diskcopy_helper",
            "checksum",
            "--algorithm",
            "sha256",
        ]
        + [str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert plain.split()[0] == hashlib.sha256(content).hexdigest()
    bad = subprocess.run(
        [sys.executable, "-m", "ganeti_lv.node.diskcopy_helper", "checksum", str(tmp_path / "no")],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 1 and "No such file" in bad.stderr


def test_shipped_program_runs_without_the_package(tmp_path):
    """The program shipped to the nodes carries the helper's library modules:
    it runs where ``ganeti_lv`` cannot be imported (``-S``, another cwd)."""
    size, writes = CASES["straddling"]
    path = tmp_path / "disk0.img"
    content = make_image(path, size, writes)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    argv = diskcopy.helper_argv("checksum", str(path))
    assert argv[:3] == ["python3", "-S", "-c"]
    probe = subprocess.run(
        ["python3", "-S", "-c", "import ganeti_lv"], cwd=tmp_path, env=env, capture_output=True
    )
    assert probe.returncode != 0  # the package is not there for the helper
    out = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, check=True)
    assert out.stdout == f"{tree_sha(content)}  {path}\n"
