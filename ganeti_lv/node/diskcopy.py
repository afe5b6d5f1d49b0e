"""The disk copy engine: node-to-node, sparse-aware, checksummed, throttled.

Used by the export (source node -> export dir of the target), the import
(export dir -> new instance's disk dir) and the failover of stopped ``file``
instances. The master drives the copy with one SSH exec on the source node;
the data never passes through the master:

    master --paramiko--> source: python3 helper send
                           source --OpenSSH (cluster key)--> target: python3 helper recv

Why: measured between two nodes here, a Python SSH stack moves about
120 MiB/s while OpenSSH moves about 210 MiB/s; relaying through the master
would also cost a second hop. The node-side helper (``diskcopy_helper``, with
its data path library ``diskcopy_stream``) is shipped as ``python3 -c``
text (``helper_source``), so nodes need nothing but python3 and ssh.

The checksum (into an export's manifest, against it on import) is the
sender's, of the data it read; the receiver checks the stream's framing and
that it wrote every byte sent, and OpenSSH's authenticated transport that
what arrives is what was sent: why one sha256 pass suffices is in
``diskcopy_stream`` ("Integrity").

The engine needs little from a node connection (``node.transport.Runner``:
run a command, stream one); ``SshClient`` has it. ``CopyPlan`` is one copy
(checked arguments, the sender's command line) and runs it; ``PendingCopy``
is a copy set up ahead, waiting for go (a job's session keeps them, see
``hypervisor.libvirt.exportops.CopySession``). Next to it: ``diskstat``
(sizes and free space, asked with the node's shell), ``progress`` (the
progress lines, as Ganeti prints them) and ``diskcopy_helper`` with
``diskcopy_stream`` (the node-side helper and its stream format and data
path, standard library only).
"""

from __future__ import annotations

import contextlib
import json
import shlex
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from ganeti_lv import constants
from ganeti_lv.errors import (
    ECODE_ENVIRON,
    ECODE_INVAL,
    ECODE_NORES,
    NodeError,
    NodeUnreachable,
    RemoteCommandError,
)
from ganeti_lv.node import diskcopy_helper, diskcopy_stream
from ganeti_lv.node.transport import Runner, StreamProcess

MiB = 1024 * 1024
ProgressFn = Callable[[int, int], None]
# How long a canceled copy may take to end after the sender was told (s); then
# the master closes its channel, which ends the sender at its next line.
CANCEL_GRACE = 20.0
# How often the cancel watcher looks whether the copy ended meanwhile (s).
CANCEL_POLL = 0.2
# A copy whose sender says nothing new for this long before it has read all the
# data (no byte read or sent: a source or target on storage that hangs, a
# receiver that stopped reading) is stopped as a canceled one is and fails (s).
# The receiver's last sync and rename, after the data, have no limit.
STALL_LIMIT = 600.0


class CopyCanceled(NodeError):
    """The copy was stopped on request: the helpers at both ends ended.

    Its file did not land, unless the cancel came after the receiver had
    read the whole stream (see ``diskcopy_helper``, "Stopping a copy"):
    callers remove what a canceled copy was to write either way.
    """


# Prefer AES-GCM (hardware accelerated) over OpenSSH's default chacha20.
SSH_CIPHERS = "aes128-gcm@openssh.com,aes256-gcm@openssh.com,chacha20-poly1305@openssh.com"
# Key exchange: X25519. OpenSSH 9's default sntrup761x25519 hybrid costs about
# 0.2 s more per connection here (each disk copy opens one). Only names that
# OpenSSH has known since 7.4, so that older nodes accept the option.
SSH_KEX = "curve25519-sha256,curve25519-sha256@libssh.org,ecdh-sha2-nistp256"


@dataclass
class CopyStats:
    """Outcome of one disk copy; sizes in bytes.

    ``checksum`` is the hex digest of the disk in ``checksum_algorithm``
    (``sha256-tree-4M`` unless a plain ``sha256`` was asked for, see
    ``diskcopy_helper``). ``sent`` counts the data bytes streamed (before
    compression): holes and all-zero blocks are not sent. ``allocated`` is
    the source's allocated size, ``target_allocated`` the copy's.
    """

    checksum: str
    size: int
    sent: int
    allocated: int
    target_allocated: int
    seconds: float
    compress: str = constants.IEC_NONE
    checksum_algorithm: str = diskcopy_stream.TREE

    @property
    def checksum_text(self) -> str:
        """``ALGORITHM:HEX``, as ``copy_disk(expect_sha256=...)`` takes it."""
        return f"{self.checksum_algorithm}:{self.checksum}"


@dataclass
class CopyEndpoint:
    """How the source node reaches the target: argv prefix taking one command string.

    For node-to-node SSH see ``ssh_endpoint``; tests that copy on one
    machine use ``["sh", "-c"]``.
    """

    argv: list[str]
    name: str = ""


@dataclass
class StartInfo:
    """Process ids on the source node, reported when a copy starts."""

    sender: int
    pids: list[int] = field(default_factory=list)


def ssh_endpoint(
    address: str,
    port: int = 22,
    user: str = "root",
    key_file: str | None = None,
    known_hosts_file: str | None = None,
    connect_timeout: int = 10,
    name: str = "",
    identities_only: bool = True,
) -> CopyEndpoint:
    """The OpenSSH command a source node uses to reach ``address`` (no host-key prompts).

    A connection of its own, whatever the node's ssh_config says: an operator's
    ``ControlMaster auto`` would otherwise let the copy ride on a shared master
    connection (its cipher and lifetime not the copy's) or leave one behind.

    With ``identities_only=False`` the key file is tried first but OpenSSH
    falls back to the node's default keys (a missing key file is only a
    warning), so the caller need not check first whether the node has it.
    """
    argv = [
        "ssh",
        "-o", "BatchMode=yes",
        "-o", "StrictHostKeyChecking=yes",
        "-o", f"ConnectTimeout={connect_timeout}",
        "-o", "ServerAliveInterval=10",
        "-o", "ServerAliveCountMax=3",
        "-o", "Compression=no",
        "-o", f"Ciphers={SSH_CIPHERS}",
        "-o", f"KexAlgorithms={SSH_KEX}",
        "-o", "GSSAPIAuthentication=no",
        "-o", "ControlMaster=no",
        "-o", "ControlPath=none",
        "-p", str(port),
    ]  # fmt: skip
    if key_file:
        argv += ["-i", key_file]
        if identities_only:
            argv += ["-o", "IdentitiesOnly=yes"]
    if known_hosts_file:
        argv += ["-o", f"UserKnownHostsFile={known_hosts_file}"]
    argv += [f"{user}@{address}", "--"]
    return CopyEndpoint(argv=argv, name=name or address)


# The node-side helper's modules, shipped as source text: the library modules
# (installed on the node under their package names, in this order), then the
# helper itself, run as ``__main__``.
_SHIPPED_MODULES = (diskcopy_stream,)
_SHIPPED_MAIN = diskcopy_helper

# The start of the shipped program: ``_install(name, source)`` runs ``source``
# as module ``name`` in ``sys.modules`` (creating its parent packages, empty,
# where missing), so that the helper's ordinary imports of its library modules
# work on a node as they do in the package.
_LOADER = """\
import sys


def _install(name, source=None):
    parent, _, child = name.rpartition(".")
    if parent and parent not in sys.modules:
        _install(parent)
    module = type(sys)(name)
    if source is None:
        module.__path__ = []
    sys.modules[name] = module
    if parent:
        setattr(sys.modules[parent], child, module)
    if source is not None:
        module.__file__ = name.replace(".", "/") + ".py"
        exec(compile(source, module.__file__, "exec"), module.__dict__)


"""


def _module_source(module: ModuleType) -> str:
    path = module.__file__
    assert path is not None
    with open(path, encoding="utf-8") as fh:
        return fh.read()


def helper_source() -> str:
    """The program shipped to the nodes: the helper and the modules it imports.

    It installs the library modules (``_LOADER``), then runs the helper's
    text in the program's global scope: ``__main__`` (``python3 -c``) or the
    scope the sender's prelude runs it in (``_SEND_PRELUDE``).
    """
    parts = [_LOADER]
    parts += [f"_install({m.__name__!r}, {_module_source(m)!r})\n" for m in _SHIPPED_MODULES]
    name = _SHIPPED_MAIN.__name__.replace(".", "/") + ".py"
    parts.append("del _install\n")
    parts.append(f"exec(compile({_module_source(_SHIPPED_MAIN)!r}, {name!r}, 'exec'))\n")
    return "".join(parts)


def helper_argv(*args: str) -> list[str]:
    """argv running the helper with ``args`` on a node.

    ``-S``: the helper needs the standard library only; site-packages hooks
    (``.pth`` files) can cost a tenth of a second at every start.
    """
    return ["python3", "-S", "-c", helper_source(), *args]


# Disk copies of one export set up ahead at most (``PendingCopy``; each holds an
# SSH connection from the source to the target: well below sshd's MaxStartups).
PRESTART_COPIES = 4

# The sender's first lines: start the transport (ssh to the target, which starts
# the receiver there) before the helper is compiled and its modules imported, so
# that the connection's set-up overlaps the sender's start-up. The helper's text
# follows as the first argument; the transport's argv is at the end (see main).
# The helper's ``send`` takes the started transport from ``STARTED_TRANSPORT``.
_SEND_PRELUDE = """\
import subprocess, sys
helper = sys.argv.pop(1)
transport = subprocess.Popen(
    sys.argv[6:], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
)
try:
    code = compile(helper, "diskcopy_helper", "exec")
    exec(code, {"__name__": "__main__", "STARTED_TRANSPORT": transport})
finally:
    if transport.poll() is None:
        transport.kill()
        transport.wait()
"""


def send_argv(
    src_path: str,
    compress: str,
    limit: str,
    algorithm: str,
    transport: Sequence[str],
    mode: str = "send",
) -> list[str]:
    """argv of the helper's ``send`` (or ``send-on-go``) on the source node.

    The transport is started first (see ``_SEND_PRELUDE``).
    """
    return [
        "python3",
        "-S",
        "-c",
        _SEND_PRELUDE,
        helper_source(),
        mode,
        src_path,
        compress,
        limit,
        algorithm,
        *transport,
    ]


def _parse_line(line: str) -> tuple[str, Any]:
    kind, _, rest = line.partition(" ")
    if kind in ("RESULT", "ERROR", "START"):
        return kind, json.loads(rest)
    if kind == "PROGRESS":
        return kind, tuple(int(field) for field in rest.split())
    return "OTHER", line


def _error_from(info: dict[str, Any], plan: CopyPlan) -> NodeError:
    """The helper's ERROR as a NodeError naming the node, the file and what happened."""
    msg = str(info.get("msg", "copy failed"))
    kind = info.get("kind")
    if kind == "canceled":
        return CopyCanceled(f"{plan.what} canceled: {msg}", plan.src_node)
    if info.get("side") == "receiver":
        node, path, side = plan.dst.name, plan.dst_path, "receiving"
    else:
        node, path, side = plan.src_node, plan.src_path, "sending"
    ecode = ECODE_NORES if kind == "nores" else None
    return NodeError(
        f"{side} {path} on {node} failed: {msg} ({plan.what})",
        node,
        ecode=ecode,
    )


class _Watch:
    """What the copy's watcher knows: when the sender last said something new,
    whether it has read all the data (then only the receiver's last sync and
    rename are left, however long they take), and whether the watcher told it
    to stop, and why."""

    def __init__(self) -> None:
        self.news_at = time.monotonic()
        self.all_read = False
        self.sent = False  # the sender was told to stop
        self.stalled = False  # ... because it said nothing new for STALL_LIMIT

    def news(self, kind: str, payload: Any) -> None:
        self.news_at = time.monotonic()
        if kind == "PROGRESS" and len(payload) > 3 and payload[2] >= payload[3]:
            self.all_read = True


@contextlib.contextmanager
def _watched(
    proc: StreamProcess, cancel: threading.Event | None, plan: CopyPlan
) -> Iterator[_Watch]:
    """While the copy runs: a set ``cancel``, or no news from the sender for
    ``STALL_LIMIT``, tells the sender to stop (``CANCEL``).

    A thread watches and writes the line; the sender kills its transport, the
    receiver removes its partial file, the sender reports the cancel and the
    copy's reading ends. A sender that does not end within ``CANCEL_GRACE``
    seconds has its channel closed. The caller reports news (``_Watch.news``);
    the yielded ``_Watch`` says whether the sender was told to stop, and why.
    """
    watch = _Watch()
    done = threading.Event()
    limit = STALL_LIMIT

    def stop_asked() -> bool:
        if cancel is not None and cancel.is_set():
            return True
        watch.stalled = not watch.all_read and time.monotonic() - watch.news_at > limit
        return watch.stalled

    def run() -> None:
        while not done.wait(CANCEL_POLL):
            if stop_asked():
                break
        if done.is_set():
            return
        watch.sent = True
        try:
            proc.write(b"CANCEL\n")
        except Exception:  # noqa: BLE001 - a channel already gone ends the copy anyway
            proc.close()
            return
        if not done.wait(CANCEL_GRACE):
            proc.close()

    thread = threading.Thread(target=run, name=f"copy-watch-{plan.src_node}", daemon=True)
    thread.start()
    try:
        yield watch
    finally:
        done.set()
        thread.join()


def _read_lines(proc: StreamProcess):
    """Yield stdout lines of ``proc`` as they arrive."""
    buf = b""
    while True:
        chunk = proc.read(65536)
        if not chunk:
            break
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            yield line.decode("utf-8", "replace")
    if buf:
        yield buf.decode("utf-8", "replace")


@dataclass
class CopyPlan:
    """What one copy is: checked arguments and the sender's argv.

    Two plans are equal when they make the same copy: a copy set up ahead
    (``PendingCopy``) is used only for an equal plan.
    """

    src_node: str
    src_path: str
    dst: CopyEndpoint
    dst_path: str
    compress: str
    bandwidth_limit: float | None
    expect_sha256: str | None
    algorithm: str
    expect_hex: str

    @property
    def what(self) -> str:
        """``copy of SRC on NODE to DST on NODE``, for messages."""
        return f"copy of {self.src_path} on {self.src_node} to {self.dst_path} on {self.dst.name}"

    @classmethod
    def make(
        cls,
        src_node: str,
        src_path: str,
        dst: CopyEndpoint,
        dst_path: str,
        *,
        compress: str = constants.IEC_NONE,
        bandwidth_limit: float | None = None,
        expect_sha256: str | None = None,
    ) -> CopyPlan:
        """The plan of a copy of ``src_path`` on ``src_node`` to ``dst_path`` on ``dst``.

        ``bandwidth_limit`` is in MiB/s of data sent (None: unlimited).
        ``expect_sha256`` is the expected checksum, ``ALGORITHM:HEX`` (a bare
        hex digest is ``sha256-tree-4M``); its algorithm is the one computed.
        The copy lands in ``dst_path`` only when complete and verified
        (every byte sent arrived, and the source's checksum is the expected
        one if given; see ``diskcopy_stream``, "Integrity"); otherwise
        nothing is left at ``dst_path`` and ``run`` raises a ``NodeError``
        (ECODE_NORES when the target lacks space). NodeError (ECODE_INVAL)
        here if the arguments are bad.
        """
        if compress not in diskcopy_stream.COMPRESSORS:
            raise NodeError(f"Unknown compression tool {compress!r}", src_node, ecode=ECODE_INVAL)
        algorithm, expect_hex = diskcopy_stream.split_checksum(expect_sha256 or "")
        if algorithm not in diskcopy_stream.ALGORITHMS:
            raise NodeError(
                f"Unknown checksum algorithm {algorithm!r}", src_node, ecode=ECODE_INVAL
            )
        return cls(
            src_node,
            src_path,
            dst,
            dst_path,
            compress,
            bandwidth_limit,
            expect_sha256,
            algorithm,
            expect_hex,
        )

    def argv(self, mode: str = "send") -> list[str]:
        expect = f"{self.algorithm}:{self.expect_hex}" if self.expect_sha256 else ""
        recv_cmd = shlex.join(helper_argv("recv", self.dst_path, self.compress, expect))
        limit = str(self.bandwidth_limit * MiB) if self.bandwidth_limit else "0"
        return send_argv(
            self.src_path,
            self.compress,
            limit,
            self.algorithm,
            [*self.dst.argv, recv_cmd],
            mode=mode,
        )

    def run(
        self,
        src: Runner,
        progress_fn: ProgressFn | None = None,
        start_fn: Callable[[StartInfo], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        cancel: threading.Event | None = None,
    ) -> CopyStats:
        """Make the copy now: start the sender on ``src`` and follow it to the end.

        ``cancel``, once set, stops the copy (``CopyCanceled``; see
        ``follow``).
        """
        return self.follow(src.open_exec(self.argv()), progress_fn, start_fn, clock, cancel)

    def follow(
        self,
        proc: StreamProcess,
        progress_fn: ProgressFn | None,
        start_fn: Callable[[StartInfo], None] | None,
        clock: Callable[[], float] = time.monotonic,
        cancel: threading.Event | None = None,
    ) -> CopyStats:
        """Read the sender's lines to the end; the copy's stats or NodeError.

        Progress counts the bytes of data read of the bytes of data the
        image has: a sparse image's holes cost no time, so its logical size
        would make the rate and the ETA wrong.

        Setting ``cancel`` while the copy runs stops it at both ends: the
        sender kills its transport, the receiver removes its partial file,
        and this raises ``CopyCanceled`` (see that class for what may have landed).
        A cancel that reaches the sender after the receiver put the whole
        copy at ``dst_path`` is too late: the copy's stats are returned (the
        caller sees its ``cancel`` set and decides what to do with the copy).
        """
        started = clock()
        status = None
        try:
            with _watched(proc, cancel, self) as watch:
                error, result, _size = self._read_to_end(proc, progress_fn, start_fn, watch)
            if error is None and result is None:
                status = proc.wait(timeout=60, check=False)
            else:  # the copy's outcome is known: the sender's end only follows it
                with contextlib.suppress(NodeError):
                    proc.close_stdin()  # the sender waits for it after its last line
                    proc.wait(timeout=60, check=False)
        except RemoteCommandError as err:  # its text is the helper's whole command line
            raise NodeError(
                f"{self.what}: the sender on {self.src_node} did not end within 60 s of its"
                " last line",
                self.src_node,
            ) from err
        except NodeUnreachable as err:  # a node that stopped answering: the copy it was in
            raise NodeUnreachable(f"{self.what}: {err.msg}", err.node, err.ecode) from err
        finally:
            proc.close()
        if watch.stalled and result is None:
            raise NodeError(
                f"{self.what}: nothing was read or sent for {STALL_LIMIT:g} s (storage or"
                " a node that hangs?); the copy was stopped",
                self.src_node,
                ecode=ECODE_ENVIRON,
            )
        if error is not None:
            raise _error_from(error, self)
        if result is None:
            assert status is not None
            if watch.sent:
                raise CopyCanceled(
                    f"{self.what} canceled; the sender ended (exit {status.exit_status})",
                    self.src_node,
                )
            raise NodeError(
                f"{self.what}: the sender on {self.src_node} ended without a result"
                f" (exit {status.exit_status}): {status.stderr.strip()[-1000:]}",
                self.src_node,
            )
        if self.expect_sha256 and result["checksum"] != self.expect_hex:
            raise NodeError(
                f"checksum mismatch for {self.src_path}: {self.algorithm}:{result['checksum']}",
                self.src_node,
            )
        if progress_fn is not None:
            data = int(result.get("data", result["size"]))
            progress_fn(data, data)
        return CopyStats(
            checksum=result["checksum"],
            checksum_algorithm=result["algorithm"],
            size=result["size"],
            sent=result["sent"],
            allocated=result["allocated"],
            target_allocated=result.get("target_allocated", 0),
            seconds=clock() - started,
            compress=self.compress,
        )

    @staticmethod
    def _read_to_end(
        proc: StreamProcess,
        progress_fn: ProgressFn | None,
        start_fn: Callable[[StartInfo], None] | None,
        watch: _Watch,
    ) -> tuple[dict[str, Any] | None, dict[str, Any] | None, int]:
        """The sender's lines up to its last: (its error, its result, the disk's size)."""
        size = 0
        result: dict[str, Any] | None = None
        error: dict[str, Any] | None = None
        last: Any = None
        for line in _read_lines(proc):
            kind, payload = _parse_line(line)
            if (kind, payload) != last:  # a repeated progress line is no news
                watch.news(kind, payload)
                last = (kind, payload)
            if kind == "START":
                size = int(payload["size"])
                if start_fn is not None:
                    start_fn(StartInfo(payload["sender"], list(payload["pids"])))
            elif kind == "PROGRESS" and progress_fn is not None:
                if len(payload) > 3:  # bytes of data read, of those to read
                    progress_fn(min(payload[2], payload[3]), payload[3])
                else:
                    progress_fn(payload[0], size)
            elif kind == "RESULT":
                result = payload
                break
            elif kind == "ERROR":
                error = payload
                break
        return error, result, size


class PendingCopy:
    """A copy set up ahead: sender, transport and receiver run but wait for ``go``.

    The connection to the target and both helpers start while the caller
    does other work (the snapshot); nothing is read from the source before
    ``go`` and nothing is created on the target before the data's header
    arrives. ``cancel`` (or the master going away) ends all of it without a
    trace.
    """

    def __init__(self, src: Runner, plan: CopyPlan) -> None:
        self.plan = plan
        self._src = src
        self._proc: StreamProcess | None = src.open_exec(plan.argv("send-on-go"))

    def go(
        self,
        progress_fn: ProgressFn | None = None,
        start_fn: Callable[[StartInfo], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        cancel: threading.Event | None = None,
        source: Callable[[], Runner] | None = None,
    ) -> CopyStats:
        """Start the data flowing and wait for the end, as ``copy_disk``.

        A sender that can no longer be told (its connection was lost while it
        waited) has read nothing: the copy is then made by a new one, over
        ``source()`` (the source's connection now; by default the one the copy
        was set up on, which its owner may have given up meanwhile).
        """
        proc, self._proc = self._proc, None
        if proc is None:
            raise NodeError("this copy was already used or called off", self.plan.src_node)
        try:
            proc.write(b"GO\n")
        except NodeError:
            proc.close()
            if cancel is not None and cancel.is_set():
                raise CopyCanceled(
                    f"{self.plan.what} canceled before it began", self.plan.src_node
                ) from None
            runner = source() if source is not None else self._src
            return self.plan.run(runner, progress_fn, start_fn, clock, cancel)
        except BaseException:
            proc.close()
            raise
        return self.plan.follow(proc, progress_fn, start_fn, clock, cancel)

    def cancel(self) -> None:
        """Call the copy off: the helpers end, nothing was read or written."""
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.close()
