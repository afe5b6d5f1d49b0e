"""Node-side half of the disk copy engine (stdlib only, run with ``python3 -c``).

The master never relays disk data. It starts ``send`` on the source node over
one SSH exec; the sender reads the image sparse-aware (SEEK_DATA/SEEK_HOLE,
then all-zero blocks are skipped as well), optionally compresses, and streams
to ``recv`` on the target node through the source node's own OpenSSH client
(faster than a Python SSH stack). The receiver writes only the data it gets,
so holes stay holes, into ``<dst>.part.<pid>``; it renames the file into place only
once the whole stream arrived and its checksum matches the sender's.

This file must stay self-contained: its source text is shipped to the nodes.

Checksum ``sha256-tree-4M`` (the default): the logical disk is split into
4 MiB chunks (the last one may be shorter); each chunk's digest is
sha256(chunk bytes, holes read as zeros); the disk checksum is the hex
sha256 of the disk size as 8 bytes big-endian followed by every chunk digest
in order. A chunk that is all hole or all zeros has the digest of a zero
chunk of its length, computed once, so holes cost nothing. ``sha256`` (a
plain sha256 of the whole disk) is still understood, for older exports. By
hand: ``python3 -m ganeti_lv.node.diskcopy_helper checksum FILE`` (or this file
run with python3) prints ``<hex>  FILE`` like sha256sum.

Stream format (after optional compression)::

    b"GLVC3\\n" + u32 length + JSON header {"size": N, "allocated": A, "algorithm": ALG}
    b"D" + u64 offset + u32 length + data      (offsets strictly increasing,
                                                never across a 4 MiB chunk boundary)
    b"E" + u64 size                             (no more data)
    64 hex chars checksum                       (end of stream)

Speed (the data path must keep up with OpenSSH): 4 MiB chunk-aligned reads
into reused buffers, hashing in a thread of its own at both ends (hashlib
releases the GIL), data written to and read from the pipes with raw fd calls
(no buffered copies), pipes enlarged so ssh keeps working while this side
hashes, and the receiver starts the writeback of what it wrote early so the
final fsync is short.

Output lines of ``send`` on stdout: ``START {json}`` (pids), ``PROGRESS pos
sent read data`` (data: bytes to read, holes skipped), then ``RESULT {json}``
or ``ERROR {json}``; ``recv`` prints one ``RESULT``/``ERROR`` line. Exit status
0 on success, 3 for lack of space, 1 otherwise.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import hashlib
import json
import os
import queue
import struct
import sys
import threading
import time

MAGIC = b"GLVC3\n"
CHUNK = 4 << 20
SUBBLOCK = 64 << 10
ZERO = bytes(CHUNK)
ZERO_VIEW = memoryview(ZERO)
ZERO_SUB = bytes(SUBBLOCK)
PIPE_SIZE = 1 << 20
HASH_QUEUE = 8
WRITEBACK_STEP = 32 << 20
EXIT_NORES = 3
TREE = "sha256-tree-4M"
PLAIN = "sha256"
ALGORITHMS = (TREE, PLAIN)
COMPRESSORS = {
    "none": None,
    "gzip": (["gzip", "-c", "-1"], ["gzip", "-dc"]),
    "zstd": (["zstd", "-c", "-1", "-T0", "-q"], ["zstd", "-dc", "-q"]),
}
_D = struct.Struct(">QI")
_E = struct.Struct(">Q")
_H = struct.Struct(">I")


class CopyFailed(Exception):
    """A copy step failed; ``code`` is the process exit status to use."""

    def __init__(self, msg: str, code: int = 1, kind: str = "error") -> None:
        super().__init__(msg)
        self.code = code
        self.kind = kind


def free_bytes(path: str) -> int:
    """Bytes available to the caller on the filesystem of ``path``.

    A path that does not exist yet (a fresh export dir) is measured at its
    nearest existing parent.
    """
    path = os.path.abspath(path)
    while not os.path.exists(path) and path != os.path.dirname(path):
        path = os.path.dirname(path)
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


def data_chunks(extents):
    """Group data extents by 4 MiB chunk: yield (chunk index, [(start, end), ...])."""
    current = -1
    ranges: list[tuple[int, int]] = []
    for start, end in extents:
        pos = start
        while pos < end:
            idx = pos // CHUNK
            stop = min((idx + 1) * CHUNK, end)
            if idx != current:
                if ranges:
                    yield current, ranges
                current, ranges = idx, []
            ranges.append((pos, stop))
            pos = stop
    if ranges:
        yield current, ranges


def _is_zero(buf, start: int, end: int) -> bool:
    """True if ``buf[start:end]`` is all zero (cheap for data that is not)."""
    head = min(end, start + 16)
    if buf[start:head] != ZERO[: head - start]:
        return False
    if end - start == SUBBLOCK:
        return buf[start:end] == ZERO_SUB
    return buf[start:end] == ZERO[: end - start]


def nonzero_runs(buf, base: int, length: int | None = None):
    """Yield (offset, data) for the runs of ``buf[:length]`` that are not all zero.

    ``data`` is a memoryview into ``buf`` (no copy).
    """
    size = len(buf) if length is None else length
    view = memoryview(buf)
    run_start = -1
    for off in range(0, size, SUBBLOCK):
        zero = _is_zero(buf, off, min(off + SUBBLOCK, size))
        if not zero and run_start < 0:
            run_start = off
        elif zero and run_start >= 0:
            yield base + run_start, view[run_start:off]
            run_start = -1
    if run_start >= 0:
        yield base + run_start, view[run_start:size]


@functools.lru_cache(maxsize=4)
def zero_digest(length: int) -> bytes:
    """sha256 digest of a zero chunk of ``length`` bytes (computed once per process)."""
    return hashlib.sha256(ZERO_VIEW[:length]).digest()


class Hasher:
    """The disk checksum, computed chunk by chunk in order in a thread of its own.

    ``algorithm`` is ``TREE`` (see the module text) or ``PLAIN`` (sha256 of
    the whole disk). Data chunks come in buffers of the hasher's pool
    (``buffer()``) through ``chunk(idx, buf, length)``, in increasing chunk
    order; the buffer returns to the pool once hashed, so no buffer is
    allocated (and faulted in) per chunk. Chunks never given are holes (zero
    chunks). ``hexdigest`` waits for the thread.
    """

    def __init__(self, size: int, algorithm: str = TREE) -> None:
        if algorithm not in ALGORITHMS:
            raise CopyFailed(f"unknown checksum algorithm {algorithm!r}")
        self.algorithm = algorithm
        self.size = size
        self.chunks = (size + CHUNK - 1) // CHUNK
        self.next = 0
        self.digest = hashlib.sha256()
        if algorithm == TREE:
            self.digest.update(_E.pack(size))
        self.queue: queue.Queue = queue.Queue(maxsize=HASH_QUEUE)
        self.free: queue.Queue = queue.Queue()
        for _ in range(HASH_QUEUE + 2):
            self.free.put(bytearray(CHUNK))
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def chunk_length(self, idx: int) -> int:
        """Length of chunk ``idx`` (the last one may be short)."""
        return min(CHUNK, self.size - idx * CHUNK)

    def _run(self) -> None:
        while True:
            item = self.queue.get()
            if item is None:
                return
            kind, buf, length = item
            if kind == "d":
                with memoryview(buf) as view:
                    if self.algorithm == TREE:
                        self.digest.update(hashlib.sha256(view[:length]).digest())
                    else:
                        self.digest.update(view[:length])
                self.free.put(buf)
            else:
                self._zero_chunks(buf, length)

    def _zero_chunks(self, first: int, count: int) -> None:
        """Hash ``count`` zero chunks from chunk ``first`` on (hasher thread)."""
        end = first + count
        if self.algorithm == PLAIN:  # zero bytes from memory, no disk I/O
            for pos in range(first * CHUNK, min(end * CHUNK, self.size), CHUNK):
                self.digest.update(ZERO_VIEW[: min(CHUNK, self.size - pos)])
            return
        last_short = end == self.chunks and self.size % CHUNK
        full = count - 1 if last_short else count
        while full > 0:
            step = min(full, 4096)
            self.digest.update(zero_digest(CHUNK) * step)
            full -= step
        if last_short:
            self.digest.update(zero_digest(self.size % CHUNK))

    def _skip_to(self, idx: int) -> None:
        if idx > self.next:
            self.queue.put(("z", self.next, idx - self.next))
        self.next = idx

    def buffer(self) -> bytearray:
        """A free buffer of the pool (blocks while all are queued for hashing)."""
        return self.free.get()

    def release(self, buf: bytearray) -> None:
        """Give back a buffer that is not to be hashed."""
        self.free.put(buf)

    def chunk(self, idx: int, buf: bytearray, length: int) -> None:
        """Queue chunk ``idx`` (``buf[:length]``) for hashing; chunks skipped are zeros."""
        if idx < self.next or length != self.chunk_length(idx):
            raise CopyFailed(f"chunk {idx} out of order or of a wrong length")
        self._skip_to(idx)
        self.queue.put(("d", buf, length))
        self.next = idx + 1

    def hexdigest(self) -> str:
        """The checksum of the disk (remaining chunks are zeros; waits for the thread)."""
        self._skip_to(self.chunks)
        self.queue.put(None)
        self.thread.join()
        return self.digest.hexdigest()


def write_all(fd: int, parts) -> None:
    """Write every buffer of ``parts`` to ``fd`` (handles short writes)."""
    views = [memoryview(p).cast("B") for p in parts]
    while views:
        done = os.writev(fd, views)
        while views and done >= len(views[0]):
            done -= len(views[0])
            views.pop(0)
        if views and done:
            views[0] = views[0][done:]


def enlarge_pipe(fd: int) -> None:
    """Give a pipe a larger buffer (no-op for other files)."""
    with contextlib.suppress(OSError, AttributeError):
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)  # type: ignore[attr-defined]


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


def _start_pipeline(transport: list[str], compress: str, started=None):
    """Start [compressor |] transport (``ssh target recv ...``); return (stdin to write, processes).

    ``started``: the transport process if it runs already (``SEND_PRELUDE``).
    """
    import subprocess  # here: the receiver does without it (start-up time)

    tools = COMPRESSORS[compress]
    transport_proc = started
    if transport_proc is None:
        pipe = subprocess.PIPE
        transport_proc = subprocess.Popen(transport, stdin=pipe, stdout=pipe, stderr=pipe)
    if tools is None:
        return transport_proc.stdin, [transport_proc]
    comp = subprocess.Popen(tools[0], stdin=subprocess.PIPE, stdout=transport_proc.stdin)
    transport_proc.stdin.close()  # type: ignore[union-attr]  # the compressor holds the write end now
    return comp.stdin, [comp, transport_proc]


def _read_chunk(fd: int, buf: bytearray, base: int, length: int, ranges) -> None:
    """Fill ``buf[:length]`` with chunk bytes at ``base``: the data ``ranges``, zeros between."""
    with memoryview(buf) as view:
        cursor = 0
        for start, end in ranges:
            rel, stop = start - base, end - base
            if rel > cursor:
                view[cursor:rel] = ZERO_VIEW[: rel - cursor]
            while rel < stop:
                count = os.preadv(fd, [view[rel:stop]], base + rel)
                if not count:
                    raise CopyFailed("the image shrank while being read")
                rel += count
            cursor = stop
        if cursor < length:
            view[cursor:length] = ZERO_VIEW[: length - cursor]


def scan_image(fd: int, size: int, hasher: Hasher, on_chunk=None) -> None:
    """Read the data chunks of ``fd`` and feed them to ``hasher``.

    ``on_chunk(pos, runs, read)`` gets, per data chunk, its end offset, its
    not-all-zero runs [(offset, memoryview)] (valid during the call) and its
    bytes of data read. All-zero chunks are hashed without a pass of sha256.
    """
    for idx, ranges in data_chunks(data_extents(fd, size)):
        base, length = idx * CHUNK, hasher.chunk_length(idx)
        buf = hasher.buffer()
        try:
            _read_chunk(fd, buf, base, length, ranges)
            runs = []
            with memoryview(buf) as view:
                for start, end in ranges:  # the gaps between them are holes
                    runs.extend(nonzero_runs(view[start - base : end - base], start))
            if on_chunk is not None:
                on_chunk(base + length, runs, sum(end - start for start, end in ranges))
        except BaseException:
            hasher.release(buf)
            raise
        if runs:
            hasher.chunk(idx, buf, length)
        else:
            hasher.release(buf)


def _open_image(src: str) -> int:
    fd = os.open(src, os.O_RDONLY)
    with contextlib.suppress(OSError):
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
    return fd


def stream_image(
    src: str, out_fd: int, bwlimit: float | None, progress, algorithm: str = TREE
) -> dict:
    """Write the stream of ``src`` to ``out_fd``; return checksum, sizes and bytes sent."""
    throttle = Throttle(bwlimit)
    sent = read = 0
    fd = _open_image(src)
    try:
        st = os.fstat(fd)
        size = st.st_size
        data = sum(end - start for start, end in data_extents(fd, size))
        hasher = Hasher(size, algorithm)
        header = {"size": size, "allocated": st.st_blocks * 512, "algorithm": algorithm}
        text = json.dumps(header).encode()
        write_all(out_fd, [MAGIC, _H.pack(len(text)), text])

        def send_chunk(end: int, runs, nread: int) -> None:
            nonlocal sent, read
            for off, run in runs:
                write_all(out_fd, [b"D" + _D.pack(off, len(run)), run])
                sent += len(run)
                throttle.add(len(run))
            read += nread
            progress(end, sent, read, data)

        scan_image(fd, size, hasher, send_chunk)
        write_all(out_fd, [b"E" + _E.pack(size)])
        checksum = hasher.hexdigest()
        write_all(out_fd, [checksum.encode()])
    finally:
        os.close(fd)
    return {
        "checksum": checksum,
        "algorithm": algorithm,
        "size": size,
        "allocated": st.st_blocks * 512,
        "data": data,
        "sent": sent,
    }


def checksum_file(path: str, algorithm: str = TREE) -> str:
    """The checksum of an image file (holes and zero chunks cost no sha256 pass)."""
    fd = _open_image(path)
    try:
        hasher = Hasher(os.fstat(fd).st_size, algorithm)
        scan_image(fd, hasher.size, hasher)
        return hasher.hexdigest()
    finally:
        os.close(fd)


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


def _wait_for_go() -> None:
    """Block until the master says ``GO`` on stdin (``send-on-go``)."""
    if sys.stdin.readline().strip() != "GO":
        raise CopyFailed("the copy was called off before it began")


def cmd_send(
    src: str,
    compress: str,
    bwlimit: float | None,
    algorithm: str,
    transport: list[str],
    wait: bool = False,
) -> dict:
    """Stream ``src`` through ``transport`` (which runs ``recv``); verify its result.

    ``wait``: the transport (and so the receiver) is set up first, then the
    source is only touched once the master says ``GO``.
    """
    if algorithm not in ALGORITHMS:
        raise CopyFailed(f"unknown checksum algorithm {algorithm!r}")
    stdin, procs = _start_pipeline(transport, compress, globals().get("STARTED_TRANSPORT"))
    try:
        if wait:
            _wait_for_go()
        size = os.stat(src).st_size
    except BaseException:
        _kill(procs)
        raise
    _emit("START", {"sender": os.getpid(), "pids": [p.pid for p in procs], "size": size})
    last = [0.0]

    def progress(pos: int, sent: int, read: int, data: int) -> None:
        now = time.monotonic()
        if now - last[0] >= 0.5:
            last[0] = now
            try:
                _emit("PROGRESS", f"{pos} {sent} {read} {data}")
            except OSError as err:
                raise CopyFailed(f"lost the connection to the master: {err}") from err

    try:
        enlarge_pipe(stdin.fileno())
        try:
            stats = stream_image(src, stdin.fileno(), bwlimit, progress, algorithm)
        except BrokenPipeError:
            stats = None
        out, err, codes = _reap(procs, stdin)
    except BaseException:
        _kill(procs)
        raise
    result = _receiver_result(out, err, codes)
    if stats is None:
        raise CopyFailed(f"the receiver closed the stream early (exit {codes})")
    if result.get("checksum") != stats["checksum"]:
        raise CopyFailed(
            f"checksum mismatch: source {stats['checksum']}, target {result.get('checksum')}"
        )
    stats["target_allocated"] = result.get("allocated", 0)
    return stats


class FdReader:
    """Exact-length reads from a file descriptor into fresh buffers (no buffered copies)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def exact(self, count: int) -> bytearray:
        """``count`` bytes; CopyFailed if the stream ends before."""
        buf = bytearray(count)
        with memoryview(buf) as view:
            self.fill_view(view)
        return buf

    def fill_view(self, view: memoryview) -> None:
        """Read exactly ``len(view)`` bytes into ``view``."""
        got, count = 0, len(view)
        while got < count:
            n = os.readv(self.fd, [view[got:]])
            if n == 0:
                raise CopyFailed("the stream ended early (connection lost?)")
            got += n


def _open_input(compress: str):
    tools = COMPRESSORS[compress]
    stdin = sys.stdin.fileno()
    enlarge_pipe(stdin)
    if tools is None:
        return FdReader(stdin), None
    import subprocess

    proc = subprocess.Popen(tools[1], stdin=stdin, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    enlarge_pipe(proc.stdout.fileno())
    return FdReader(proc.stdout.fileno()), proc


def _check_space(dst: str, need: int) -> None:
    avail = free_bytes(os.path.dirname(os.path.abspath(dst)))
    if avail < need:
        raise CopyFailed(
            f"not enough space for {dst}: {need} bytes needed, {avail} available",
            EXIT_NORES,
            "nores",
        )


class Writeback:
    """Start the writeback of written data early so the final fsync is short."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.pending = 0
        self.start = -1
        self.end = 0

    def wrote(self, off: int, length: int) -> None:
        """Note ``length`` bytes written at ``off``; kick off writeback every few MiB."""
        if self.start < 0:
            self.start = off
        self.end = off + length
        self.pending += length
        if self.pending >= WRITEBACK_STEP:
            # DONTNEED starts asynchronous writeback of the dirty pages of the range
            with contextlib.suppress(OSError):
                os.posix_fadvise(self.fd, self.start, self.end - self.start, os.POSIX_FADV_DONTNEED)
            self.pending, self.start = 0, -1


def _read_header(inp: FdReader) -> dict:
    if bytes(inp.exact(len(MAGIC))) != MAGIC:
        raise CopyFailed("bad stream header (connection lost?)")
    (length,) = _H.unpack(inp.exact(_H.size))
    return json.loads(bytes(inp.exact(length)))


class ChunkAssembler:
    """Rebuilds the logical chunks of the disk from the data records, for the hasher.

    ``place(off, length)`` returns the view to read a record's data into: the
    chunk's buffer at the record's place, with the gap before it zeroed.
    A finished chunk (the next record is in a later one, or ``finish``) is
    zero-filled to its end and handed to the hasher.
    """

    def __init__(self, hasher: Hasher) -> None:
        self.hasher = hasher
        self.idx = -1
        self.buf: bytearray | None = None
        self.filled = 0
        self.length = 0

    def place(self, off: int, length: int) -> memoryview:
        """View of ``length`` bytes where the record at ``off`` goes."""
        idx = off // CHUNK
        if length <= 0 or (off + length - 1) // CHUNK != idx:
            raise CopyFailed(f"bad record at offset {off}")
        if idx != self.idx:
            self.finish()
            self.idx, self.buf, self.filled = idx, self.hasher.buffer(), 0
            self.length = self.hasher.chunk_length(idx)
        rel = off - idx * CHUNK
        assert self.buf is not None
        view = memoryview(self.buf)
        if rel > self.filled:
            view[self.filled : rel] = ZERO_VIEW[: rel - self.filled]
        self.filled = rel + length
        return view[rel : rel + length]

    def finish(self) -> None:
        """Hand the current chunk to the hasher."""
        if self.buf is None:
            return
        if self.filled < self.length:
            with memoryview(self.buf) as view:
                view[self.filled : self.length] = ZERO_VIEW[: self.length - self.filled]
        self.hasher.chunk(self.idx, self.buf, self.length)
        self.buf = None


def receive_stream(inp: FdReader, out_fd: int, on_header=None, header=None) -> dict:
    """Read a stream from ``inp`` and write its data into ``out_fd``; return its summary.

    ``on_header(header)`` runs before anything is written (the space check);
    ``header``: the stream's header when the caller has read it already.
    """
    if header is None:
        header = _read_header(inp)
    if on_header is not None:
        on_header(header)
    size = int(header["size"])
    algorithm = header.get("algorithm", TREE)
    os.ftruncate(out_fd, size)
    hasher = Hasher(size, algorithm)
    chunks = ChunkAssembler(hasher)
    writeback = Writeback(out_fd)
    pos = 0
    written = 0
    while True:
        kind = bytes(inp.exact(1))
        if kind == b"E":
            (end_size,) = _E.unpack(inp.exact(_E.size))
            break
        if kind != b"D":
            raise CopyFailed(f"bad record type {kind!r}")
        off, length = _D.unpack(inp.exact(_D.size))
        if off < pos or off + length > size:
            raise CopyFailed(f"bad record at offset {off}")
        view = chunks.place(off, length)
        inp.fill_view(view)
        done = 0
        while done < length:
            done += os.pwrite(out_fd, view[done:], off + done)
        view.release()
        writeback.wrote(off, length)
        pos = off + length
        written += length
    chunks.finish()
    mine = hasher.hexdigest()
    theirs = bytes(inp.exact(64)).decode(errors="replace")
    if end_size != size or theirs != mine:
        raise CopyFailed(f"checksum mismatch: sender {theirs}, received {mine}")
    return {
        "checksum": mine,
        "algorithm": algorithm,
        "size": size,
        "written": written,
        "need": header["allocated"],
    }


def _discard(path: str) -> None:
    """Remove a partial file; it may already be gone (its directory was replaced)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def cmd_recv(dst: str, compress: str, expect: str | None) -> dict:
    """Receive a stream into ``dst`` (via ``dst.part.<pid>``); verify and publish it.

    The partial file's name is this receiver's own: a receiver left over from
    an interrupted copy, cleaning up when it notices the dead stream, never
    touches the partial file of a newer copy to the same place.
    """
    part = f"{dst}.part.{os.getpid()}"
    inp, proc = _open_input(compress)
    try:
        # nothing is created before the sender's header arrives: a copy
        # abandoned before it began leaves no trace
        header = _read_header(inp)
        os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except BaseException:
        if proc is not None:
            proc.kill()
        raise
    try:
        _check_space(part, int(header["allocated"]))
        result = receive_stream(inp, fd, header=header)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        _discard(part)
        if proc is not None:
            proc.kill()
        raise
    os.close(fd)
    if proc is not None and proc.wait() != 0:
        _discard(part)
        raise CopyFailed(f"decompressor exited with status {proc.returncode}")
    if expect and split_checksum(expect) != (result["algorithm"], result["checksum"]):
        _discard(part)
        raise CopyFailed(
            f"checksum mismatch: expected {expect}, received {result['algorithm']}:"
            f"{result['checksum']}"
        )
    os.rename(part, dst)
    result["allocated"] = os.stat(dst).st_blocks * 512
    return result


def split_checksum(text: str) -> tuple[str, str]:
    """(algorithm, hex) of ``ALGORITHM:HEX``; a bare hex digest is ``TREE``."""
    algorithm, sep, digest = text.rpartition(":")
    return (algorithm if sep else TREE), digest


def cmd_checksum(args: list[str]) -> int:
    """``checksum [--algorithm ALG] FILE...``: print ``<hex>  FILE`` lines like sha256sum."""
    algorithm = TREE
    if args[:1] == ["--algorithm"] and len(args) > 1:
        algorithm, args = args[1], args[2:]
    if algorithm not in ALGORITHMS or not args:
        sys.stderr.write(f"usage: checksum [--algorithm {'|'.join(ALGORITHMS)}] FILE...\n")
        return 2
    status = 0
    for path in args:
        try:
            sys.stdout.write(f"{checksum_file(path, algorithm)}  {path}\n")
        except OSError as err:
            sys.stderr.write(f"{path}: {err.strerror}\n")
            status = 1
    return status


def main(argv: list[str]) -> int:
    """Entry point: ``send SRC COMPRESS BWLIMIT ALGORITHM TRANSPORT...`` (or
    ``send-on-go``, which waits for a ``GO`` line on stdin before the source is read),
    ``recv DST COMPRESS [ALGORITHM:HEX]``, and for operators
    ``checksum [--algorithm ALG] FILE...``."""
    if argv[:1] == ["checksum"]:
        return cmd_checksum(argv[1:])
    try:
        mode = argv[0]
        if mode in ("send", "send-on-go"):
            bwlimit = float(argv[3]) or None
            wait = mode == "send-on-go"
            _emit("RESULT", cmd_send(argv[1], argv[2], bwlimit, argv[4], argv[5:], wait))
        elif mode == "recv":
            _emit("RESULT", cmd_recv(argv[1], argv[2], argv[3] if len(argv) > 3 else None))
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
