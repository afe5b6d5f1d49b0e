"""The disk copy stream: its format and the data path at both ends (stdlib only).

The data path library of the node-side helper (``diskcopy_helper``, which
runs the ``send``/``recv``/``checksum`` commands): it is shipped to the
nodes as source text with it (see ``diskcopy.helper_source``), so it uses
the standard library only.

Checksum ``sha256-tree-4M`` (the default): the logical disk is split into
4 MiB chunks (the last one may be shorter); each chunk's digest is
sha256(chunk bytes, holes read as zeros); the disk checksum is the hex
sha256 of the disk size as 8 bytes big-endian followed by every chunk digest
in order. A chunk that is all hole or all zeros has the digest of a zero
chunk of its length, computed once, so holes cost nothing. ``sha256`` (a
plain sha256 of the whole disk) is still understood, for older exports.

Stream format (after optional compression)::

    b"GLVC5\\n" + u32 length + JSON header {"size": N, "allocated": A, "algorithm": ALG}
    b"D" + u64 offset + u32 length + data      (offsets strictly increasing, at most
                                                4 MiB each; the sender never lets one
                                                cross a 4 MiB chunk boundary, the
                                                receiver does not rely on it)
    b"E" + u64 size + u64 data bytes sent       (no more data)
    64 hex chars checksum                       (end of stream: the sender's)

and, before the header and between records (never between ``E`` and the
checksum), any number of ``b"K"``: keepalives, which carry nothing.

Silence: a stream has gaps that are no fault (a copy set up ahead waits for
its go before the header; reading long runs of zeros, or of holes with a
plain ``sha256``, sends nothing; a bandwidth limit sleeps), so the sender
(``StreamWriter``) writes a keepalive whenever it has written nothing for
``KEEPALIVE_INTERVAL`` seconds. The receiver's input waits at most
``IDLE_LIMIT`` seconds for a byte (``FdReader``): a sender whose link to
the target was cut sends nothing more, and the target's sshd may not notice
for a quarter of an hour (TCP's retransmissions) or two hours (TCP
keepalive), holding the receiver, its session and its partial file. A
compressed stream is not watched: the compressor keeps a keepalive in its
buffer until it has a block to write.

The sender's side reads the image sparse-aware (SEEK_DATA/SEEK_HOLE, then
all-zero blocks are skipped as well: ``data_extents``, ``nonzero_spans``,
``scan_image``), hashes it (``Hasher``) and writes the stream
(``stream_image``); the receiver's side writes only the data it gets, so
holes stay holes (``receive_stream``).

Integrity, and why the checksum is computed once, by the sender: the
checksum is the source's, of the data as read (the image is not written
during a copy: an export reads a snapshot's frozen base, an import an
export, a failover a stopped instance's disk, as a failover whose shutdown
failed copies nothing), and it goes into the
export's manifest. The stream reaches the receiver through OpenSSH, whose
transport authenticates every packet (AES-GCM or chacha20-poly1305, see
``diskcopy.SSH_CIPHERS``): a byte changed on the way ends the connection,
it is never handed to the receiver. What the receiver checks itself is
everything SSH cannot know: the stream's framing (magic, record types,
offsets increasing and within the disk), that the stream was not cut off
(the end record and the checksum must arrive), and that it wrote exactly
the data the sender sent (the end record carries the sender's count of
data bytes and the disk size; a difference fails the copy and the partial
file is removed). The sender checks the same count once more in the
receiver's result, and an expected checksum (``recv``'s, an import's
manifest) is compared with the source's before the file is renamed into
place. A second sha256 pass at the receiver would only check again what
SSH already guarantees, at about 0.65 s of a core per GiB on the nodes
that also run the guests, so there is none; ``checksum_file`` (the
helper's ``checksum`` command) checks a copy on its node by hand.

Speed (the data path must keep up with OpenSSH, on nodes whose cores also
run the guests): no data is copied by this process where it can be helped.
The sender splices the data runs from the image's page cache into the pipe
to ssh and hashes a read-only mapping of each 4 MiB chunk, in a thread of
its own (hashlib releases the GIL); the receiver splices each record from
its input pipe into the file (one copy, in the kernel) and starts the
writeback of what it wrote every few MiB (``Writeback``) so the final
fsync is short. The pipes are enlarged so ssh keeps working while the
sender hashes. Without splice (Python < 3.10, or an end that is not a
pipe) the data is read into buffers and written from them (the same
stream and checksum).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import hashlib
import json
import mmap
import os
import queue
import select
import stat
import struct
import threading
import time

MAGIC = b"GLVC5\n"
KEEPALIVE = b"K"
# the sender writes a keepalive after this long without a write (s)
KEEPALIVE_INTERVAL = 10.0
# the receiver gives up on a stream without a byte for this long (s): as long as
# the master waits for a node that leaves its data unanswered
# (``ssh_channel.STREAM_UNANSWERED_LIMIT``), several keepalive intervals
IDLE_LIMIT = 60.0
CHUNK = 4 << 20
SUBBLOCK = 64 << 10
ZERO = bytes(CHUNK)
ZERO_VIEW = memoryview(ZERO)
ZERO_SUB = bytes(SUBBLOCK)
PIPE_SIZE = 1 << 20
HASH_QUEUE = 8
WRITEBACK_STEP = 32 << 20
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
_END = struct.Struct(">QQ")
_H = struct.Struct(">I")


class CopyFailed(Exception):
    """A copy step failed; ``code``: the exit status; ``side``: which end failed."""

    def __init__(self, msg: str, code: int = 1, kind: str = "error", side: str = "") -> None:
        super().__init__(msg)
        self.code, self.kind, self.side = code, kind, side


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
    """True if ``buf[start:end]`` is all zero (cheap for data that is not).

    ``buf``: bytes, bytearray, mmap or memoryview; slices are compared as
    bytes (comparing a memoryview item by item is a hundred times slower).
    """
    head = min(end, start + 16)
    if bytes(buf[start:head]) != ZERO[: head - start]:
        return False
    if end - start == SUBBLOCK:
        return bytes(buf[start:end]) == ZERO_SUB
    return bytes(buf[start:end]) == ZERO[: end - start]


def nonzero_spans(buf, start: int, end: int):
    """Yield (start, end) of the runs of ``buf[start:end]`` that are not all zero.

    Subblocks of ``SUBBLOCK`` bytes (counted from ``start``) are the unit.
    """
    run_start = -1
    for off in range(start, end, SUBBLOCK):
        zero = _is_zero(buf, off, min(off + SUBBLOCK, end))
        if not zero and run_start < 0:
            run_start = off
        elif zero and run_start >= 0:
            yield run_start, off
            run_start = -1
    if run_start >= 0:
        yield run_start, end


@functools.lru_cache(maxsize=4)
def zero_digest(length: int) -> bytes:
    """sha256 digest of a zero chunk of ``length`` bytes (computed once per process)."""
    return hashlib.sha256(ZERO_VIEW[:length]).digest()


class Hasher:
    """The disk checksum, computed chunk by chunk in order in a thread of its own.

    ``algorithm`` is ``TREE`` (see the module text) or ``PLAIN`` (sha256 of
    the whole disk). Data chunks come through ``chunk(idx, buf, length)``,
    in increasing chunk order: ``buf`` is a buffer of the hasher's pool
    (``buffer()``), which returns to the pool once hashed, so no buffer is
    allocated (and faulted in) per chunk, or an ``mmap`` of the chunk in
    the file, which the thread closes once hashed. Chunks never given are
    holes (zero chunks). ``hexdigest`` waits for the thread.
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
        self.pool = 0
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
                self.release(buf)
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
        """A buffer of the pool (a new one while fewer than the queue can hold exist)."""
        try:
            return self.free.get_nowait()
        except queue.Empty:
            pass
        if self.pool < HASH_QUEUE + 2:
            self.pool += 1
            return bytearray(CHUNK)
        return self.free.get()

    def release(self, buf) -> None:
        """Give back a buffer (or close a mapping) that is not to be hashed (any more)."""
        if isinstance(buf, bytearray):
            self.free.put(buf)
        else:
            with contextlib.suppress(BufferError):  # a view still held: freed with it
                buf.close()

    def chunk(self, idx: int, buf, length: int) -> None:
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


def map_chunk(fd: int, base: int, length: int) -> mmap.mmap:
    """A read-only mapping of ``length`` bytes of ``fd`` at ``base`` (a chunk boundary)."""
    return mmap.mmap(fd, length, mmap.MAP_SHARED, mmap.PROT_READ, offset=base)


def can_splice(fd: int) -> bool:
    """True if data can be spliced to or from ``fd``: it is a pipe and the OS has splice."""
    if not hasattr(os, "splice"):
        return False
    try:
        return stat.S_ISFIFO(os.fstat(fd).st_mode)
    except OSError:
        return False


def can_map(fd: int, size: int) -> bool:
    """True if the file ``fd`` (``size`` bytes) can be mapped for reading, as the
    spliced sender hashes it (a filesystem without mmap: no)."""
    if size <= 0:
        return True
    try:
        map_chunk(fd, 0, min(size, mmap.PAGESIZE)).close()
    except (OSError, ValueError):
        return False
    return True


def splice_exact(src: int, dst: int, count: int, src_off=None, dst_off=None, ready=None) -> None:
    """Move ``count`` bytes from ``src`` to ``dst`` in the kernel (one of them a pipe).

    ``src_off``/``dst_off``: the file offset at the end that is not the pipe.
    ``ready()``, if given, returns once there is something to move (``FdReader.wait``).
    """
    while count > 0:
        step = min(count, PIPE_SIZE)
        if ready is not None:
            ready()
        if src_off is not None:
            moved = os.splice(src, dst, step, offset_src=src_off)  # type: ignore[attr-defined]
            src_off += moved
        else:
            moved = os.splice(src, dst, step, offset_dst=dst_off)  # type: ignore[attr-defined]
            dst_off += moved
        if not moved:
            raise CopyFailed(
                "the image shrank while being read"
                if src_off is not None
                else "the stream ended early (connection lost?)"
            )
        count -= moved


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


class StreamWriter:
    """The sender's writes to the stream: whole records, and keepalives in the gaps.

    Each record is written holding ``record()``; a thread writes a keepalive
    whenever nothing was written for ``interval`` seconds (None: no thread),
    from its start on, also before the header. ``close`` ends the keepalives
    (after writing its ``final`` bytes): nothing is written after it returns.
    """

    def __init__(self, fd: int, interval: float | None = KEEPALIVE_INTERVAL) -> None:
        self.fd = fd
        self.lock = threading.Lock()
        self.last = time.monotonic()
        self.stopped = threading.Event()
        if interval is not None:
            thread = threading.Thread(target=self._keepalive, args=(interval,), daemon=True)
            thread.start()

    def _keepalive(self, interval: float) -> None:
        while not self.stopped.wait(interval / 2):
            with self.lock:
                if self.stopped.is_set():
                    return
                if time.monotonic() - self.last < interval:
                    continue
                # never wait holding the lock: a full pipe (a stalled transport)
                # would keep a keepalive from the receiver anyway
                if not select.select([], [self.fd], [], 0)[1]:
                    continue
                try:
                    write_all(self.fd, [KEEPALIVE])
                except OSError:  # the transport is gone: the copy fails on its own
                    return
                self.last = time.monotonic()

    @contextlib.contextmanager
    def record(self):
        """Hold while writing one record: no keepalive comes in between."""
        with self.lock:
            yield
            self.last = time.monotonic()

    def close(self, final: bytes = b"") -> None:
        """Write ``final`` (the end of the stream), then no keepalive any more."""
        with self.lock:
            try:
                if final:
                    write_all(self.fd, [final])
            finally:
                self.stopped.set()


def _read_chunk(fd: int, buf, base: int, length: int, ranges) -> None:
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


def scan_image(fd: int, size: int, hasher: Hasher, on_chunk=None, mapped: bool = False) -> None:
    """Read the data chunks of ``fd`` and feed them to ``hasher``.

    ``on_chunk(pos, runs, buf, read)`` gets, per data chunk, its end offset,
    its not-all-zero runs [(offset, length)], the chunk's bytes
    (``buf[offset - chunk start:]``, valid during the call) and its bytes of
    data read. All-zero chunks are hashed without a pass of sha256.
    ``mapped``: the chunks are mappings of the file (``map_chunk``: no copy
    of the data into this process; holes read as zeros), else they are read
    into the hasher's buffers.
    """
    for idx, ranges in data_chunks(data_extents(fd, size)):
        base, length = idx * CHUNK, hasher.chunk_length(idx)
        buf = map_chunk(fd, base, length) if mapped else hasher.buffer()
        try:
            if not mapped:
                _read_chunk(fd, buf, base, length, ranges)
            runs = []
            for start, end in ranges:  # the gaps between them are holes
                for rel, stop in nonzero_spans(buf, start - base, end - base):
                    runs.append((base + rel, stop - rel))
            if on_chunk is not None:
                nread = sum(end - start for start, end in ranges)
                on_chunk(base + length, runs, buf, nread)
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
    src: str,
    writer: StreamWriter,
    bwlimit: float | None,
    progress,
    algorithm: str = TREE,
) -> dict:
    """Write the stream of ``src`` through ``writer``; return checksum, sizes and bytes sent.

    ``writer``: the stream's writer on its output (started by the caller,
    with keepalives or without); it is closed with the end of the stream.
    Into a pipe the data goes from the file's page cache by ``splice`` and
    is hashed from a mapping of the file: this process copies none of it.
    """
    out_fd = writer.fd
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
        with writer.record():
            write_all(out_fd, [MAGIC, _H.pack(len(text)), text])
        spliced = can_splice(out_fd) and can_map(fd, size)

        def send_chunk(end: int, runs, buf, nread: int) -> None:
            nonlocal sent, read
            base = (end - 1) // CHUNK * CHUNK
            for off, length in runs:
                record = b"D" + _D.pack(off, length)
                with writer.record():
                    if spliced:
                        write_all(out_fd, [record])
                        splice_exact(fd, out_fd, length, src_off=off)
                    else:
                        with memoryview(buf) as view:
                            write_all(out_fd, [record, view[off - base : off - base + length]])
                sent += length
                throttle.add(length)
            read += nread
            progress(end, sent, read, data)

        scan_image(fd, size, hasher, send_chunk, mapped=spliced)
        checksum = hasher.hexdigest()  # may take a while (keepalives meanwhile)
        writer.close(b"E" + _END.pack(size, sent) + checksum.encode())
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
        scan_image(fd, hasher.size, hasher, mapped=True)
        return hasher.hexdigest()
    finally:
        os.close(fd)


class FdReader:
    """Exact-length reads from a file descriptor into fresh buffers (no buffered copies).

    ``idle_limit``: seconds a read waits for a byte at most, then CopyFailed
    (None: no limit).
    """

    def __init__(self, fd: int, idle_limit: float | None = None) -> None:
        self.fd = fd
        self.idle_limit = idle_limit
        self._poll = select.poll()
        self._poll.register(fd, select.POLLIN)

    def wait(self) -> None:
        """Return once ``fd`` has a byte (or its end) to read; CopyFailed after ``idle_limit`` s."""
        if self.idle_limit is None:
            return
        if not self._poll.poll(self.idle_limit * 1000):
            raise CopyFailed(
                f"no data for {self.idle_limit:g} s: the sender, or its link to this node, is gone"
            )

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
            self.wait()
            n = os.readv(self.fd, [view[got:]])
            if n == 0:
                raise CopyFailed("the stream ended early (connection lost?)")
            got += n


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


def read_header(inp: FdReader) -> dict:
    """The JSON header at the start of a stream (after any keepalives)."""
    first = bytes(inp.exact(1))
    while first == KEEPALIVE:
        first = bytes(inp.exact(1))
    if first + bytes(inp.exact(len(MAGIC) - 1)) != MAGIC:
        raise CopyFailed("bad stream header (connection lost?)")
    (length,) = _H.unpack(inp.exact(_H.size))
    return json.loads(bytes(inp.exact(length)))


def receive_stream(inp: FdReader, out_fd: int, on_header=None, header=None) -> dict:
    """Read a stream from ``inp`` and write its data into ``out_fd``; return its summary.

    ``on_header(header)`` runs before anything is written (the space check);
    ``header``: the stream's header when the caller has read it already.
    From a pipe the data is spliced into the file (one copy, in the kernel);
    otherwise it is read into a buffer and written from there. CopyFailed
    when the stream is malformed, cut off, or carried a different number of
    data bytes than the sender sent or a different size than its header
    (see the module text: the checksum in the summary is the sender's).
    """
    if header is None:
        header = read_header(inp)
    if on_header is not None:
        on_header(header)
    size = int(header["size"])
    algorithm = header.get("algorithm", TREE)
    if algorithm not in ALGORITHMS:
        raise CopyFailed(f"unknown checksum algorithm {algorithm!r}")
    os.ftruncate(out_fd, size)
    writeback = Writeback(out_fd)
    spliced = can_splice(inp.fd)
    buf = None if spliced else bytearray(CHUNK)
    pos = written = 0
    while True:
        kind = bytes(inp.exact(1))
        if kind == KEEPALIVE:
            continue
        if kind == b"E":
            end_size, sent = _END.unpack(inp.exact(_END.size))
            break
        if kind != b"D":
            raise CopyFailed(f"bad record type {kind!r}")
        off, length = _D.unpack(inp.exact(_D.size))
        if off < pos or length <= 0 or off + length > size or length > CHUNK:
            raise CopyFailed(f"bad record at offset {off}")
        if buf is None:
            splice_exact(inp.fd, out_fd, length, dst_off=off, ready=inp.wait)
        else:
            with memoryview(buf) as full, full[:length] as view:
                inp.fill_view(view)
                done = 0
                while done < length:
                    done += os.pwrite(out_fd, view[done:], off + done)
        writeback.wrote(off, length)
        pos = off + length
        written += length
    checksum = bytes(inp.exact(64)).decode(errors="replace")
    if end_size != size or sent != written:
        raise CopyFailed(
            f"the stream does not add up: {written} bytes of data of a {size}-byte disk"
            f" arrived, the sender sent {sent} of a {end_size}-byte disk"
        )
    if len(checksum) != 64 or any(c not in "0123456789abcdef" for c in checksum):
        raise CopyFailed(f"bad checksum at the end of the stream: {checksum!r}")
    return {
        "checksum": checksum,
        "algorithm": algorithm,
        "size": size,
        "written": written,
        "need": header["allocated"],
    }


def split_checksum(text: str) -> tuple[str, str]:
    """(algorithm, hex) of ``ALGORITHM:HEX``; a bare hex digest is ``TREE``."""
    algorithm, sep, digest = text.rpartition(":")
    return (algorithm if sep else TREE), digest
