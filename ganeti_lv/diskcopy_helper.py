"""Node-side half of the disk copy engine (stdlib only, run with ``python3 -c``).

The master never relays disk data. It starts ``send`` on the source node over
one SSH exec; the sender reads the image sparse-aware (SEEK_DATA/SEEK_HOLE,
then all-zero blocks are skipped as well), optionally compresses, and streams
to ``recv`` on the target node through the source node's own OpenSSH client
(faster than a Python SSH stack). The receiver writes only the data it gets,
so holes stay holes, into ``<dst>.part``; it renames the file into place only
once the whole stream arrived and its sha256 matches the sender's.

This file must stay self-contained: its source text is shipped to the nodes.

Stream format (after optional compression)::

    b"GLVC1\\n" + JSON header line {"size": N, "allocated": A}
    b"D" + u64 offset + u32 length + data      (offsets strictly increasing)
    b"E" + u64 size + 64 hex chars sha256       (end of stream)

Output lines of ``send`` on stdout: ``START {json}`` (pids), ``PROGRESS pos
sent``, then ``RESULT {json}`` or ``ERROR {json}``; ``recv`` prints one
``RESULT``/``ERROR`` line. Exit status 0 on success, 3 for lack of space,
1 otherwise.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import struct
import subprocess
import sys
import time

MAGIC = b"GLVC1\n"
CHUNK = 1 << 20
SUBBLOCK = 64 << 10
ZERO = bytes(CHUNK)
EXIT_NORES = 3
COMPRESSORS = {
    "none": None,
    "gzip": (["gzip", "-c", "-1"], ["gzip", "-dc"]),
    "zstd": (["zstd", "-c", "-1", "-T0", "-q"], ["zstd", "-dc", "-q"]),
}
_D = struct.Struct(">QI")
_E = struct.Struct(">Q")


class CopyFailed(Exception):
    """A copy step failed; ``code`` is the process exit status to use."""

    def __init__(self, msg: str, code: int = 1, kind: str = "error") -> None:
        super().__init__(msg)
        self.code = code
        self.kind = kind


def file_stat(path: str) -> dict:
    """Size, allocated bytes and existence of ``path``."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return {"path": path, "exists": False, "size": 0, "allocated": 0}
    return {"path": path, "exists": True, "size": st.st_size, "allocated": st.st_blocks * 512}


def free_bytes(path: str) -> int:
    """Bytes available to the caller on the filesystem of ``path``."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def data_extents(fd: int, size: int):
    """Yield (start, end) of the data regions of ``fd`` (all of it without SEEK_DATA)."""
    pos = 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as err:
            if err.errno == errno.ENXIO:
                return
            if err.errno in (errno.EINVAL, errno.EOPNOTSUPP):
                yield pos, size
                return
            raise
        end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        if end > start:
            yield start, end
        pos = end


def nonzero_runs(buf: bytes, base: int):
    """Yield (offset, bytes) for the runs of ``buf`` that are not all zero."""
    if buf == ZERO[: len(buf)]:
        return
    run_start = -1
    for off in range(0, len(buf), SUBBLOCK):
        piece = buf[off : off + SUBBLOCK]
        zero = piece == ZERO[: len(piece)]
        if not zero and run_start < 0:
            run_start = off
        elif zero and run_start >= 0:
            yield base + run_start, buf[run_start:off]
            run_start = -1
    if run_start >= 0:
        yield base + run_start, buf[run_start:]


def hash_zeros(digest, count: int) -> None:
    """Feed ``count`` zero bytes into ``digest``."""
    while count > 0:
        step = min(count, CHUNK)
        digest.update(ZERO[:step])
        count -= step


class Throttle:
    """Sleep so that the bytes passed to ``add`` do not exceed ``limit`` per second."""

    def __init__(self, limit: float | None) -> None:
        self.limit = limit
        self.start = time.monotonic()
        self.total = 0

    def add(self, nbytes: int) -> None:
        """Account for ``nbytes`` sent and sleep if ahead of the limit."""
        if not self.limit:
            return
        self.total += nbytes
        ahead = self.total / self.limit - (time.monotonic() - self.start)
        if ahead > 0:
            time.sleep(ahead)


def _emit(kind: str, payload) -> None:
    text = payload if isinstance(payload, str) else json.dumps(payload, sort_keys=True)
    sys.stdout.write(f"{kind} {text}\n")
    sys.stdout.flush()


def _start_pipeline(transport: list[str], compress: str):
    """Start [compressor |] transport; return (stdin to write, processes)."""
    tools = COMPRESSORS[compress]
    if tools is None:
        proc = subprocess.Popen(
            transport, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        return proc.stdin, [proc]
    transport_proc = subprocess.Popen(
        transport,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    comp = subprocess.Popen(tools[0], stdin=subprocess.PIPE, stdout=transport_proc.stdin)
    transport_proc.stdin.close()  # type: ignore[union-attr]  # the compressor holds the write end now
    return comp.stdin, [comp, transport_proc]


def stream_image(src: str, out, bwlimit: float | None, progress) -> dict:
    """Write the stream of ``src`` to ``out``; return sha256, sizes and bytes sent."""
    digest = hashlib.sha256()
    throttle = Throttle(bwlimit)
    sent = 0
    fd = os.open(src, os.O_RDONLY)
    try:
        st = os.fstat(fd)
        size = st.st_size
        header = {"size": size, "allocated": st.st_blocks * 512}
        out.write(MAGIC + json.dumps(header).encode() + b"\n")
        hashed = 0
        for start, end in data_extents(fd, size):
            hash_zeros(digest, start - hashed)
            pos = start
            while pos < end:
                buf = os.pread(fd, min(CHUNK, end - pos), pos)
                if not buf:
                    raise CopyFailed(f"{src} shrank while being read")
                digest.update(buf)
                for off, data in nonzero_runs(buf, pos):
                    out.write(b"D" + _D.pack(off, len(data)))
                    out.write(data)
                    sent += len(data)
                    throttle.add(len(data))
                pos += len(buf)
                progress(pos, sent)
            hashed = end
        hash_zeros(digest, size - hashed)
        sha = digest.hexdigest()
        out.write(b"E" + _E.pack(size) + sha.encode())
        out.flush()
    finally:
        os.close(fd)
    return {"sha256": sha, "size": size, "allocated": header["allocated"], "sent": sent}


def _reap(procs, stdin) -> tuple[bytes, bytes, list[int]]:
    with contextlib.suppress(OSError):
        stdin.close()
    last = procs[-1]
    last.stdin = None
    out, err = last.communicate()
    codes = [p.wait() for p in procs]
    return out, err, codes


def _kill(procs) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
    for proc in procs:
        proc.wait()


def _receiver_result(out: bytes, err: bytes, codes: list[int]) -> dict:
    for line in out.decode(errors="replace").splitlines():
        kind, _, rest = line.partition(" ")
        if kind == "RESULT":
            return json.loads(rest)
        if kind == "ERROR":
            info = json.loads(rest)
            raise CopyFailed(info["msg"], info.get("code", 1), info.get("kind", "error"))
    detail = err.decode(errors="replace").strip()[-2000:]
    raise CopyFailed(f"receiver gave no result (exit {codes}): {detail}")


def cmd_send(src: str, compress: str, bwlimit: float | None, transport: list[str]) -> dict:
    """Stream ``src`` through ``transport`` (which runs ``recv``); verify its result."""
    size = os.stat(src).st_size
    stdin, procs = _start_pipeline(transport, compress)
    _emit("START", {"sender": os.getpid(), "pids": [p.pid for p in procs], "size": size})
    last = [0.0]

    def progress(pos: int, sent: int) -> None:
        now = time.monotonic()
        if now - last[0] >= 0.5:
            last[0] = now
            try:
                _emit("PROGRESS", f"{pos} {sent}")
            except OSError as err:
                raise CopyFailed(f"lost the connection to the master: {err}") from err

    try:
        try:
            stats = stream_image(src, stdin, bwlimit, progress)
        except BrokenPipeError:
            stats = None
        out, err, codes = _reap(procs, stdin)
    except BaseException:
        _kill(procs)
        raise
    result = _receiver_result(out, err, codes)
    if stats is None:
        raise CopyFailed(f"the receiver closed the stream early (exit {codes})")
    if result.get("sha256") != stats["sha256"]:
        raise CopyFailed(
            f"checksum mismatch: source {stats['sha256']}, target {result.get('sha256')}"
        )
    stats["target_allocated"] = result.get("allocated", 0)
    return stats


def _read_exact(inp, count: int) -> bytes:
    data = inp.read(count)
    if data is None or len(data) != count:
        raise CopyFailed("the stream ended early (connection lost?)")
    return data


def _open_input(compress: str):
    tools = COMPRESSORS[compress]
    if tools is None:
        return sys.stdin.buffer, None
    proc = subprocess.Popen(tools[1], stdin=sys.stdin.buffer, stdout=subprocess.PIPE)
    return proc.stdout, proc


def _check_space(dst: str, need: int) -> None:
    avail = free_bytes(os.path.dirname(os.path.abspath(dst)))
    if avail < need:
        raise CopyFailed(
            f"not enough space for {dst}: {need} bytes needed, {avail} available",
            EXIT_NORES,
            "nores",
        )


def receive_stream(inp, out_fd: int, on_header=None) -> dict:
    """Read a stream from ``inp`` and write its data into ``out_fd``; return its summary.

    ``on_header(header)`` runs before anything is written (the space check).
    """
    if inp.read(len(MAGIC)) != MAGIC:
        raise CopyFailed("bad stream header (connection lost?)")
    header = json.loads(inp.readline())
    if on_header is not None:
        on_header(header)
    size = int(header["size"])
    os.ftruncate(out_fd, size)
    digest = hashlib.sha256()
    pos = 0
    written = 0
    while True:
        kind = _read_exact(inp, 1)
        if kind == b"E":
            (end_size,) = _E.unpack(_read_exact(inp, _E.size))
            sha = _read_exact(inp, 64).decode()
            break
        if kind != b"D":
            raise CopyFailed(f"bad record type {kind!r}")
        off, length = _D.unpack(_read_exact(inp, _D.size))
        if off < pos or off + length > size:
            raise CopyFailed(f"bad record at offset {off}")
        hash_zeros(digest, off - pos)
        data = _read_exact(inp, length)
        digest.update(data)
        view = memoryview(data)
        while view:
            view = view[os.pwrite(out_fd, view, off + (length - len(view))) :]
        pos = off + length
        written += length
    hash_zeros(digest, size - pos)
    mine = digest.hexdigest()
    if end_size != size or sha != mine:
        raise CopyFailed(f"checksum mismatch: sender {sha}, received {mine}")
    return {"sha256": mine, "size": size, "written": written, "need": header["allocated"]}


def cmd_recv(dst: str, compress: str, expect: str | None) -> dict:
    """Receive a stream into ``dst`` (via ``dst.part``); verify and publish it."""
    part = dst + ".part"
    inp, proc = _open_input(compress)
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        result = receive_stream(inp, fd, lambda hdr: _check_space(part, int(hdr["allocated"])))
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(part)
        if proc is not None:
            proc.kill()
        raise
    os.close(fd)
    if proc is not None and proc.wait() != 0:
        os.unlink(part)
        raise CopyFailed(f"decompressor exited with status {proc.returncode}")
    if expect and result["sha256"] != expect:
        os.unlink(part)
        raise CopyFailed(f"checksum mismatch: expected {expect}, received {result['sha256']}")
    os.rename(part, dst)
    result["allocated"] = os.stat(dst).st_blocks * 512
    return result


def cmd_stat(paths: list[str]) -> list[dict]:
    """file_stat for each path."""
    return [file_stat(p) for p in paths]


def main(argv: list[str]) -> int:
    """Entry point: ``send SRC COMPRESS BWLIMIT TRANSPORT...``, ``recv DST COMPRESS [SHA]``,
    ``stat PATH...``, ``df PATH``."""
    try:
        mode = argv[0]
        if mode == "send":
            bwlimit = float(argv[3]) or None
            _emit("RESULT", cmd_send(argv[1], argv[2], bwlimit, argv[4:]))
        elif mode == "recv":
            _emit("RESULT", cmd_recv(argv[1], argv[2], argv[3] if len(argv) > 3 else None))
        elif mode == "stat":
            _emit("RESULT", cmd_stat(argv[1:]))
        elif mode == "df":
            _emit("RESULT", {"free": free_bytes(argv[1])})
        else:
            raise CopyFailed(f"unknown mode {mode!r}")
    except CopyFailed as err:
        _emit("ERROR", {"msg": str(err), "code": err.code, "kind": err.kind})
        return err.code
    except OSError as err:
        code, kind = (EXIT_NORES, "nores") if err.errno == errno.ENOSPC else (1, "error")
        _emit("ERROR", {"msg": str(err), "code": code, "kind": kind})
        return code
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
