"""Node-side half of the disk copy engine (stdlib only, run with ``python3 -c``).

The master never relays disk data. It starts ``send`` on the source node over
one SSH exec; the sender reads the image sparse-aware, optionally
compresses, and streams to ``recv`` on the target node through the source
node's own OpenSSH client (faster than a Python SSH stack). The receiver
writes only the data it gets, so holes stay holes, into
``<dst>.part.<pid>``; it renames the file into place only once the whole
stream arrived, with as many data bytes as the sender sent, and (when one is
expected) with the expected checksum. The checksum is computed by the sender
alone; why that suffices is in ``diskcopy_stream``'s text ("Integrity").

Stopping a copy: the master writes ``CANCEL`` to the sender's stdin; the
sender (``MasterInput``) kills its transport and compressor, so the
receiver's stream ends and it removes its partial file, and reports
``ERROR`` of kind ``canceled``. A ``CANCEL`` that comes after the receiver
has renamed the complete copy into place (its answer has reached the
sender) is too late: the sender reports the copy's ``RESULT``. A copy
reported canceled may still land, though: once the receiver has read the
end of the stream it reads no more, so a transport killed while it syncs,
verifies and renames the file does not stop it (its answer is then lost).
Callers remove what a canceled copy was to write.

A cut link: the sender's ssh gives up within about 40 s (its
``ServerAlive`` options) and the sender reports the copy failed; the
receiver, whose sshd may not notice for much longer, gives up once its
stream has been silent for ``IDLE_LIMIT`` seconds (the sender keeps a live
stream from falling silent; see ``diskcopy_stream``, "Silence"), exits 1
and removes its partial file.

This module holds the commands (the processes around the copy, their
output lines, the partial file's life) and ``main``; the stream format, the
checksum and the data path are in ``diskcopy_stream``. Both use the
standard library only: their source text is shipped to the nodes
(``diskcopy.helper_source``), where ``diskcopy_stream`` is installed under
its package name before this module runs as ``__main__``. By hand:
``python3 -m ganeti_lv.node.diskcopy_helper checksum FILE`` prints
``<hex>  FILE`` like sha256sum.

Output lines of ``send`` on stdout: ``START {json}`` (pids), ``PROGRESS pos
sent read data`` (data: bytes to read, holes skipped), then ``RESULT {json}``
or ``ERROR {json}`` (``side``: receiver, or the sender's own); ``recv`` prints one
``RESULT``/``ERROR`` line. Exit status 0 on success, 3 for lack of space, 1 otherwise.
After that last line the sender exits only once the master has ended its
stdin (see ``MasterInput.wait_end``): what the master sends never meets a
sender that has gone (``ganeti_lv.node.ssh_channel``, "Sending").
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import sys
import threading
import time

from ganeti_lv.node.diskcopy_stream import (
    ALGORITHMS,
    COMPRESSORS,
    IDLE_LIMIT,
    TREE,
    CopyFailed,
    FdReader,
    StreamWriter,
    checksum_file,
    enlarge_pipe,
    read_header,
    receive_stream,
    split_checksum,
    stream_image,
)

EXIT_NORES = 3
# how long a sender whose copy began waits, after its last line, for the master
# to end its stdin (s); the master does so at once, unless its link is gone
MASTER_END_WAIT = 60.0


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
            raise CopyFailed(info["msg"], info.get("code", 1), info.get("kind"), "receiver")
    detail = err.decode(errors="replace").strip()[-2000:]
    ends = ", ".join(f"killed by signal {-c}" if c < 0 else f"exit {c}" for c in codes)
    raise CopyFailed(f"its connection ended ({ends}) {detail}", 1, "error", "receiver")


class MasterInput:
    """The master's lines on the sender's stdin (``GO``, ``CANCEL``) and their end, read
    by one thread.

    ``CANCEL`` kills the processes given to ``on_cancel`` (the transport and
    the compressor) and makes ``canceled`` true; the end of stdin is no
    cancel. After its last line the sender waits for the end of its stdin
    (``wait_end``), so that what the master sends never meets a sender that
    has gone (``ganeti_lv.node.ssh_channel``, "Sending").
    """

    def __init__(self, on_go: bool) -> None:
        self.canceled = False
        self._on_go = on_go
        self._go = False
        self._said = threading.Event()  # GO, CANCEL or the end came
        self._ended = threading.Event()
        self._lock = threading.Lock()
        self._procs: list = []
        threading.Thread(target=self._read, name="master-input", daemon=True).start()

    def _read(self) -> None:
        try:
            for line in sys.stdin:
                word = line.strip()
                if word == "GO":
                    self._go = True
                elif word == "CANCEL":
                    with self._lock:
                        self.canceled = True
                        procs = list(self._procs)
                    _kill_now(procs)
                self._said.set()
        except (OSError, ValueError):
            pass
        finally:
            self._ended.set()
            self._said.set()

    def wait_for_go(self) -> None:
        """In ``send-on-go``, block until the master says ``GO`` (``send`` goes at once)."""
        if not self._on_go:
            return
        self._said.wait()
        if self.canceled:  # GO and CANCEL may come together
            raise CopyFailed("the copy was canceled before it began", 4, "canceled")
        if not self._go:
            raise CopyFailed("the copy was called off before it began")

    def on_cancel(self, procs) -> None:
        """A ``CANCEL`` from now on (or one already read) kills ``procs``."""
        with self._lock:
            self._procs = list(procs)
            canceled = self.canceled
        if canceled:
            _kill_now(procs)

    def wait_end(self) -> None:
        """Wait until the master has ended our stdin.

        Once the copy began, at most ``MASTER_END_WAIT`` seconds (a master
        whose link is gone may never end it); a copy set up ahead that failed
        before its go waits for the master to use it or call it off, which
        may be long after (the disks before it are copied first).
        """
        self._ended.wait(None if self._on_go and not self._go else MASTER_END_WAIT)


def _kill_now(procs) -> None:
    for proc in procs:
        with contextlib.suppress(OSError):
            proc.kill()


def cmd_send(
    src: str,
    compress: str,
    bwlimit: float | None,
    algorithm: str,
    transport: list[str],
    master: MasterInput,
) -> dict:
    """Stream ``src`` through ``transport`` (which runs ``recv``); verify its result.

    The transport (and so the receiver) is set up first; in ``send-on-go``
    the source is only touched once the master says ``GO``.
    """
    if algorithm not in ALGORITHMS:
        raise CopyFailed(f"unknown checksum algorithm {algorithm!r}")
    stdin, procs = _start_pipeline(transport, compress, globals().get("STARTED_TRANSPORT"))
    # keepalives from now on: the receiver waits for the go too, and does not give up
    writer = StreamWriter(stdin.fileno())
    try:
        master.wait_for_go()
        size = os.stat(src).st_size
    except BaseException:
        writer.close()
        _kill(procs)
        raise
    master.on_cancel(procs)
    _emit("START", {"sender": os.getpid(), "pids": [p.pid for p in procs], "size": size})
    last = [0.0]
    told_all_read = [False]

    def progress(pos: int, sent: int, read: int, data: int) -> None:
        now = time.monotonic()
        # every half second, and at once when all the data is read (the master's stall
        # limit ends there: see diskcopy.STALL_LIMIT)
        all_read = read >= data and not told_all_read[0]
        if now - last[0] >= 0.5 or all_read:
            last[0] = now
            told_all_read[0] = told_all_read[0] or read >= data
            try:
                _emit("PROGRESS", f"{pos} {sent} {read} {data}")
            except OSError as err:
                raise CopyFailed(f"lost the connection to the master: {err}") from err

    try:
        enlarge_pipe(stdin.fileno())
        try:
            stats = stream_image(src, writer, bwlimit, progress, algorithm)
        except BrokenPipeError:
            stats = None
        finally:
            writer.close()  # before its file descriptor is closed
        out, err, codes = _reap(procs, stdin)
    except BaseException:
        _kill(procs)
        raise
    try:
        result = _receiver_result(out, err, codes)
        if stats is None:
            raise CopyFailed(f"it closed the stream early (exit {codes})", 1, "error", "receiver")
        _check_received(stats, result)
    except CopyFailed:
        if master.canceled:
            raise CopyFailed("the copy was canceled", 4, "canceled") from None
        raise
    # A cancel that came once the receiver had put the whole copy in place came
    # too late: the copy is done, and said so (the caller, told of its cancel
    # request some other way, decides what to do with it).
    stats["target_allocated"] = result.get("allocated", 0)
    return stats


def _check_received(stats: dict, result: dict) -> None:
    """The receiver's result must account for exactly what was sent (see
    ``diskcopy_stream``, "Integrity"); it checked the same itself before renaming."""
    got = (result.get("size"), result.get("written"), result.get("checksum"))
    if got != (stats["size"], stats["sent"], stats["checksum"]):
        raise CopyFailed(
            f"the target received {got[1]} bytes of data of a {got[0]}-byte disk with"
            f" checksum {got[2]}; sent were {stats['sent']} of {stats['size']} with"
            f" checksum {stats['checksum']}",
            1,
            "error",
            "receiver",
        )


def _open_input(compress: str, idle_limit: float):
    """The stream's reader (with ``idle_limit`` unless compressed: see ``diskcopy_stream``,
    "Silence") and the decompressor's process, if any."""
    tools = COMPRESSORS[compress]
    stdin = sys.stdin.fileno()
    enlarge_pipe(stdin)
    if tools is None:
        return FdReader(stdin, idle_limit), None
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


def _discard(path: str) -> None:
    """Remove a partial file; it may already be gone (its directory was replaced)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def cmd_recv(dst: str, compress: str, expect: str | None, idle_limit: float = IDLE_LIMIT) -> dict:
    """Receive a stream into ``dst`` (via ``dst.part.<pid>``); verify and publish it.

    A stream silent for ``idle_limit`` seconds fails the copy (its sender or
    link is gone), as any other fault does: the partial file is removed.

    The partial file's name is this receiver's own: a receiver left over from
    an interrupted copy, cleaning up when it notices the dead stream, never
    touches the partial file of a newer copy to the same place.
    """
    part = f"{dst}.part.{os.getpid()}"
    inp, proc = _open_input(compress, idle_limit)
    try:
        # nothing is created before the sender's header arrives: a copy
        # abandoned before it began leaves no trace
        header = read_header(inp)
        os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
        fd = os.open(part, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
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
            f"checksum mismatch: expected {expect}, the source's is {result['algorithm']}:"
            f"{result['checksum']}"
        )
    install(part, dst)
    result["allocated"] = os.stat(dst).st_blocks * 512
    return result


def install(part: str, dst: str) -> None:
    """Rename the verified ``part`` (fsynced) to ``dst``, and fsync their directory.

    Without the directory's sync a crash soon after could undo the rename:
    ``dst`` back to what it was (the empty image an import created), the data
    only in ``part``.
    """
    os.rename(part, dst)
    dfd = os.open(os.path.dirname(dst) or ".", os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


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
    ``recv DST COMPRESS [ALGORITHM:HEX [IDLE_LIMIT]]`` (an empty checksum: none
    expected; the limit in seconds, ``diskcopy_stream.IDLE_LIMIT`` if not
    given), and for operators
    ``checksum [--algorithm ALG] FILE...``."""
    if argv[:1] == ["checksum"]:
        return cmd_checksum(argv[1:])
    mode = argv[0] if argv else ""
    master = MasterInput(mode == "send-on-go") if mode in ("send", "send-on-go") else None
    status = _run_mode(mode, argv, master)
    if master is not None:
        master.wait_end()
    return status


def _run_mode(mode: str, argv: list[str], master: MasterInput | None) -> int:
    """Run ``mode``; its RESULT or ERROR line is written, the exit status returned."""
    try:
        if master is not None:
            bwlimit = float(argv[3]) or None
            _emit("RESULT", cmd_send(argv[1], argv[2], bwlimit, argv[4], argv[5:], master))
        elif mode == "recv":
            expect = argv[3] if len(argv) > 3 else None
            idle_limit = float(argv[4]) if len(argv) > 4 else IDLE_LIMIT
            _emit("RESULT", cmd_recv(argv[1], argv[2], expect, idle_limit))
        else:
            raise CopyFailed(f"unknown mode {mode!r}")
    except CopyFailed as err:
        _emit("ERROR", {"msg": str(err), "code": err.code, "kind": err.kind, "side": err.side})
        return err.code
    except OSError as err:
        code, kind = (EXIT_NORES, "nores") if err.errno == errno.ENOSPC else (1, "error")
        _emit("ERROR", {"msg": str(err), "code": code, "kind": kind})
        return code
    except Exception as err:  # noqa: BLE001 - a bug, garbled output: still the one last line
        _emit("ERROR", {"msg": f"{type(err).__name__}: {err}", "code": 1, "kind": "error"})
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
