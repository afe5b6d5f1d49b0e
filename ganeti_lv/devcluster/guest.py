"""The test guest: a Debian kernel plus a busybox initramfs with a known protocol.

The guest's init reads its parameters from the kernel command line:

``seed=S``
    the pattern seed (default ``guest``; ganeti_lv passes the instance name);
``patmb=N``
    MiB of pattern at the start of /dev/vda (default 16);
``dirtymb=N``
    MiB of memory rewritten continuously (default 32, 0 = idle);
``writepat=0|1``
    1 (the default) writes ``S`` repeated over the first ``patmb`` MiB of
    /dev/vda; 0 only reads and reports them;
``ignoreacpi=1``
    ignore the ACPI power button (exercises shutdown timeouts).

On the serial console (ttyS0) it prints ``GUEST: PATTERN seed=S mb=N sha256=H``
(direct I/O read of the first N MiB of /dev/vda), ``GUEST-READY``, then
``tick N`` every second; each tick is also written to the sector at 64 MiB of
/dev/vda when the disk is large enough. On a power-button press it prints
``GUEST: POWEROFF``, syncs and powers off.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from xml.sax.saxutils import escape

from ganeti_lv.devcluster import netns
from ganeti_lv.errors import GenericError, OpExecError

DEFAULT_CACHE_DIR = "/var/cache/ganeti-lv-devcluster"
KERNEL_META_PACKAGE = "linux-image-amd64"
BUILDER_VERSION = "1"
TICK_OFFSET = 64 * 1024 * 1024
DEFAULT_CMDLINE = "console=ttyS0"

# Load order matters: each module only needs the ones before it.
GUEST_MODULES = (
    "kernel/drivers/virtio/virtio_ring.ko",
    "kernel/drivers/virtio/virtio.ko",
    "kernel/drivers/virtio/virtio_pci_legacy_dev.ko",
    "kernel/drivers/virtio/virtio_pci_modern_dev.ko",
    "kernel/drivers/virtio/virtio_pci.ko",
    "kernel/drivers/block/virtio_blk.ko",
    "kernel/net/core/failover.ko",
    "kernel/drivers/net/net_failover.ko",
    "kernel/drivers/net/virtio_net.ko",
    "kernel/drivers/acpi/button.ko",
    "kernel/drivers/input/evdev.ko",
)

INIT_SCRIPT = r"""#!/bin/sh
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo 4 > /proc/sys/kernel/printk  # errors and worse reach the console
while read -r mod; do insmod "/lib/modules/$mod" 2>/dev/null; done < /modules.order
seed=guest; patmb=16; dirtymb=32; writepat=1; ignoreacpi=0
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    seed=*) seed="${arg#seed=}" ;;
    patmb=*) patmb="${arg#patmb=}" ;;
    dirtymb=*) dirtymb="${arg#dirtymb=}" ;;
    writepat=*) writepat="${arg#writepat=}" ;;
    ignoreacpi=*) ignoreacpi="${arg#ignoreacpi=}" ;;
  esac
done
i=0
while [ ! -b /dev/vda ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
ticks=0
if [ -b /dev/vda ]; then
  sectors=$(cat /sys/block/vda/size)
  if [ "$writepat" = 1 ] && [ "$patmb" -gt 0 ]; then
    yes "$seed" | tr -d '\n' | \
      dd of=/dev/vda bs=1M count="$patmb" iflag=fullblock oflag=direct 2>/dev/null
  fi
  h=$(dd if=/dev/vda bs=1M count="$patmb" iflag=direct 2>/dev/null | sha256sum)
  echo "GUEST: PATTERN seed=$seed mb=$patmb sha256=${h%% *}"
  [ "$sectors" -gt 131073 ] && ticks=1
else
  echo "GUEST: NODISK"
fi
if [ "$dirtymb" -gt 0 ]; then
  mkdir -p /dirt
  mount -t tmpfs -o size=$((dirtymb + 1))m tmpfs /dirt
  (while :; do dd if=/dev/urandom of=/dirt/blob bs=1M count="$dirtymb" 2>/dev/null; done) &
fi
if [ "$ignoreacpi" != 1 ]; then
  for ev in /sys/class/input/event*; do
    [ "$(cat "$ev/device/name" 2>/dev/null)" = "Power Button" ] || continue
    # opened here, before GUEST-READY, so no early press is lost
    exec 3<"/dev/input/${ev##*/}"
    (dd of=/dev/null bs=24 count=1 <&3 2>/dev/null
     echo "GUEST: POWEROFF"; sync; poweroff -f) &
    exec 3<&-
  done
fi
echo "GUEST-READY"
n=0
while :; do
  n=$((n+1))
  echo "tick $n"
  if [ $ticks = 1 ]; then
    echo "tick $n" | dd of=/dev/vda bs=512 seek=131072 count=1 conv=sync,notrunc \
      oflag=direct 2>/dev/null
  fi
  sleep 1
done
"""


@dataclass(frozen=True)
class GuestImage:
    """A built test guest: kernel and initramfs paths and the cache key."""

    kernel: str
    initrd: str
    key: str
    cmdline: str = DEFAULT_CMDLINE


FeedbackFn = Callable[[str], None]


def _quiet(_msg: str) -> None:
    """Feedback function that drops messages."""


def pattern_bytes(seed: str, mb: int) -> bytes:
    """The pattern the guest writes: ``seed`` repeated, cut at ``mb`` MiB."""
    size = mb * 1024 * 1024
    if size == 0:
        return b""
    unit = seed.encode()
    return (unit * (size // len(unit) + 1))[:size]


def pattern_sha256(seed: str, mb: int) -> str:
    """The sha256 the guest reports for a freshly written pattern."""
    return hashlib.sha256(pattern_bytes(seed, mb)).hexdigest()


PATTERN_RE = re.compile(r"GUEST: PATTERN seed=(\S+) mb=(\d+) sha256=([0-9a-f]{64})")

# What the guest kernel prints (errors and worse reach the console) when its
# memory or CPU state went wrong, e.g. after a migration lost memory writes.
KERNEL_FAULT_RE = re.compile(
    r"BUG: |Oops|Kernel panic|panic|corruption|NX-protected|general protection"
    r"|invalid opcode|Unable to handle|unable to handle|double fault|stack guard"
    r"|rcu: .*stall|soft lockup|hard LOCKUP|Attempted to kill init|WARNING: CPU"
)


def kernel_faults(text: str) -> list[str]:
    """Lines of a console log in which the guest kernel reports an error."""
    return [line for line in text.splitlines() if KERNEL_FAULT_RE.search(line)]


def kernel_args(
    seed: str,
    patmb: int = 16,
    dirtymb: int = 32,
    writepat: bool = True,
    ignoreacpi: bool = False,
) -> str:
    """Kernel command line for the test guest (console on ttyS0)."""
    args = [DEFAULT_CMDLINE, f"seed={seed}", f"patmb={patmb}", f"dirtymb={dirtymb}"]
    args.append(f"writepat={1 if writepat else 0}")
    if ignoreacpi:
        args.append("ignoreacpi=1")
    return " ".join(args)


# --- cpio (newc) writer -----------------------------------------------------


class CpioWriter:
    """Minimal cpio "newc" archive writer (what the kernel unpacks as initramfs)."""

    def __init__(self) -> None:
        self._buf = io.BytesIO()
        self._ino = 1

    def _entry(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)):
        """Append one entry; ``mode`` includes the file type bits."""
        encoded = name.encode() + b"\0"
        fields = [self._ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(encoded), 0]
        self._ino += 1
        header = b"070701" + b"".join(b"%08X" % v for v in fields)
        self._buf.write(header + encoded)
        self._pad()
        self._buf.write(data)
        self._pad()

    def _pad(self) -> None:
        self._buf.write(b"\0" * (-self._buf.tell() % 4))

    def add_dir(self, name: str, perm: int = 0o755) -> None:
        """Add a directory."""
        self._entry(name, 0o040000 | perm)

    def add_file(self, name: str, data: bytes, perm: int = 0o644) -> None:
        """Add a regular file."""
        self._entry(name, 0o100000 | perm, data)

    def add_symlink(self, name: str, target: str) -> None:
        """Add a symbolic link."""
        self._entry(name, 0o120777, target.encode())

    def add_chardev(self, name: str, major: int, minor: int, perm: int = 0o600) -> None:
        """Add a character device node."""
        self._entry(name, 0o020000 | perm, rdev=(major, minor))

    def finish(self) -> bytes:
        """Return the archive with its trailer."""
        self._entry("TRAILER!!!", 0)
        self._buf.write(b"\0" * (-self._buf.tell() % 512))
        return self._buf.getvalue()


def build_initramfs(busybox: bytes, modules: dict[str, bytes], init: str = INIT_SCRIPT) -> bytes:
    """Return a gzip-compressed initramfs with busybox, ``modules`` and ``init``.

    ``modules`` maps paths relative to /lib/modules to module contents, in
    load order.
    """
    cpio = CpioWriter()
    for d in ("bin", "dev", "proc", "sys", "tmp", "lib", "lib/modules"):
        cpio.add_dir(d)
    cpio.add_chardev("dev/console", 5, 1)
    cpio.add_chardev("dev/null", 1, 3, 0o666)
    cpio.add_file("bin/busybox", busybox, 0o755)
    for applet in (
        "sh",
        "mount",
        "insmod",
        "cat",
        "dd",
        "sha256sum",
        "tr",
        "yes",
        "sleep",
        "mkdir",
        "sync",
        "poweroff",
        "echo",
        "cut",
        "ls",
    ):
        cpio.add_symlink(f"bin/{applet}", "busybox")
    made: set[str] = set()
    for rel, data in modules.items():
        parent = os.path.dirname(rel)
        parts = parent.split("/") if parent else []
        for i in range(1, len(parts) + 1):
            sub = "/".join(parts[:i])
            if sub not in made:
                cpio.add_dir(f"lib/modules/{sub}")
                made.add(sub)
        cpio.add_file(f"lib/modules/{rel}", data)
    cpio.add_file("modules.order", "".join(f"{m}\n" for m in modules).encode())
    cpio.add_file("init", init.encode(), 0o755)
    return gzip.compress(cpio.finish(), mtime=0)


# --- building and caching ----------------------------------------------------


def _run(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    """Run a command, raising OpExecError with its output on failure."""
    res = subprocess.run(argv, capture_output=True, **kwargs)
    if res.returncode != 0:
        err = res.stderr.decode(errors="replace") if isinstance(res.stderr, bytes) else res.stderr
        raise OpExecError(f"{' '.join(argv)} failed ({res.returncode}): {err.strip()}")
    return res


def kernel_package() -> str:
    """Name of the versioned kernel package the Debian meta package depends on."""
    out = _run(["apt-cache", "depends", KERNEL_META_PACKAGE], text=True).stdout
    for line in out.splitlines():
        m = re.match(r"\s*Depends:\s*(linux-image-\S+)", line)
        if m:
            return m.group(1)
    raise OpExecError(f"cannot find the kernel package behind {KERNEL_META_PACKAGE}")


def cache_key(package: str, init: str = INIT_SCRIPT) -> str:
    """Cache key of a guest: kernel package, init script, modules and builder version."""
    h = hashlib.sha256()
    for part in (BUILDER_VERSION, package, init, *GUEST_MODULES):
        h.update(part.encode() + b"\0")
    return h.hexdigest()[:16]


def _download_deb(package: str, debs_dir: str, feedback_fn: FeedbackFn) -> str:
    """Return the path of ``package``'s .deb, downloading it with apt-get once."""
    os.makedirs(debs_dir, exist_ok=True)
    for name in os.listdir(debs_dir):
        if name.startswith(package + "_") and name.endswith(".deb"):
            return os.path.join(debs_dir, name)
    feedback_fn(f"downloading {package}")
    _run(["apt-get", "download", package], cwd=debs_dir)
    for name in os.listdir(debs_dir):
        if name.startswith(package + "_") and name.endswith(".deb"):
            return os.path.join(debs_dir, name)
    raise OpExecError(f"apt-get download {package} produced no .deb")


def _extract(deb: str, dest: str) -> None:
    """Extract the kernel image and the guest modules from a kernel .deb."""
    tar_in = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", deb], stdout=subprocess.PIPE)
    try:
        _run(
            [
                "tar",
                "-x",
                "-C",
                dest,
                "--wildcards",
                "./boot/vmlinuz-*",
                *[f"./lib/modules/*/{m}" for m in GUEST_MODULES],
            ],
            stdin=tar_in.stdout,
        )
    finally:
        if tar_in.stdout:
            tar_in.stdout.close()
        tar_in.wait()


def build_guest(cache_dir: str = DEFAULT_CACHE_DIR, feedback_fn: FeedbackFn = _quiet) -> GuestImage:
    """Build the test guest once and return it from ``cache_dir`` afterwards."""
    package = kernel_package()
    key = cache_key(package)
    out_dir = os.path.join(cache_dir, f"guest-{key}")
    image = GuestImage(os.path.join(out_dir, "vmlinuz"), os.path.join(out_dir, "initrd.gz"), key)
    if os.path.exists(image.kernel) and os.path.exists(image.initrd):
        return image
    feedback_fn(f"building the test guest from {package}")
    deb = _download_deb(package, os.path.join(cache_dir, "debs"), feedback_fn)
    os.makedirs(cache_dir, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
        _extract(deb, tmp)
        boot = os.path.join(tmp, "boot")
        vmlinuz = [n for n in os.listdir(boot) if n.startswith("vmlinuz-")]
        moddirs = os.listdir(os.path.join(tmp, "lib", "modules"))
        if len(vmlinuz) != 1 or len(moddirs) != 1:
            raise OpExecError(f"unexpected kernel package layout in {deb}")
        modules: dict[str, bytes] = {}
        for rel in GUEST_MODULES:
            with open(os.path.join(tmp, "lib", "modules", moddirs[0], rel), "rb") as fh:
                modules[rel] = fh.read()
        busybox_path = shutil.which("busybox") or "/bin/busybox"
        with open(busybox_path, "rb") as fh:
            initrd = build_initramfs(fh.read(), modules)
        stage = os.path.join(tmp, "out")
        os.makedirs(stage)
        shutil.copyfile(os.path.join(boot, vmlinuz[0]), os.path.join(stage, "vmlinuz"))
        with open(os.path.join(stage, "initrd.gz"), "wb") as fh:
            fh.write(initrd)
        for name in os.listdir(stage):
            os.chmod(os.path.join(stage, name), 0o644)
        if not os.path.exists(out_dir):
            os.rename(stage, out_dir)
    return image


# --- running it ----------------------------------------------------------------


def domain_xml(
    name: str,
    domain_type: str,
    image: GuestImage,
    cmdline: str,
    disk: str | None,
    console_log: str,
    memory_mib: int = 128,
    bridge: str | None = None,
) -> str:
    """Domain XML booting the test guest (for probes and harness tests)."""
    disk_xml = ""
    if disk:
        disk_xml = (
            "<disk type='file' device='disk'><driver name='qemu' type='raw' cache='none'/>"
            f"<source file='{escape(disk)}'/><target dev='vda' bus='virtio'/></disk>"
        )
    nic_xml = ""
    if bridge:
        nic_xml = (
            f"<interface type='bridge'><source bridge='{escape(bridge)}'/>"
            "<model type='virtio'/></interface>"
        )
    return (
        f"<domain type='{escape(domain_type)}'><name>{escape(name)}</name>"
        f"<memory unit='MiB'>{memory_mib}</memory><vcpu>1</vcpu>"
        f"<os><type arch='x86_64' machine='pc'>hvm</type><kernel>{escape(image.kernel)}</kernel>"
        f"<initrd>{escape(image.initrd)}</initrd><cmdline>{escape(cmdline)}</cmdline></os>"
        "<features><acpi/></features><on_poweroff>destroy</on_poweroff>"
        "<on_reboot>restart</on_reboot><on_crash>destroy</on_crash>"
        f"<devices>{disk_xml}{nic_xml}"
        f"<serial type='file'><source path='{escape(console_log)}' append='on'/>"
        "<target port='0'/></serial><memballoon model='none'/></devices></domain>"
    )


def wait_console(
    path: str,
    regex: str | re.Pattern[str],
    timeout: float,
    start: int = 0,
    clock: Callable[[], float] = time.monotonic,
    poll: float = 0.2,
) -> re.Match[str]:
    """Wait until a line of the console log at ``path`` matches ``regex``.

    Only text after byte offset ``start`` counts. Raises GenericError on
    timeout, quoting the log's tail.
    """
    pattern = re.compile(regex) if isinstance(regex, str) else regex
    deadline = clock() + timeout
    text = ""
    while True:
        text = read_console(path, start)
        for line in text.splitlines():
            m = pattern.search(line)
            if m:
                return m
        if clock() >= deadline:
            tail = "\n".join(text.splitlines()[-10:])
            raise GenericError(
                f"{pattern.pattern!r} not seen in {path} within {timeout}s; last lines:\n{tail}"
            )
        time.sleep(poll)


def read_console(path: str, start: int = 0) -> str:
    """Text of a console log from byte offset ``start`` ('' when missing).

    A log shorter than ``start`` was replaced by a new one (a new instance
    of the same name): all of it counts.
    """
    try:
        with open(path, "rb") as fh:
            if os.fstat(fh.fileno()).st_size >= start:
                fh.seek(start)
            return fh.read().decode(errors="replace").replace("\r", "")
    except FileNotFoundError:
        return ""


def console_size(path: str) -> int:
    """Current size of a console log (0 when missing), to wait for new lines only."""
    try:
        return os.path.getsize(path)
    except FileNotFoundError:
        return 0


# --- the machine's guest budget --------------------------------------------------

MAX_RUNNING_GUESTS = 2


def running_guests() -> list[int]:
    """PIDs of the qemu system emulators running on this machine (any cluster)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            exe = os.path.basename(os.readlink(f"/proc/{entry}/exe"))
        except OSError:
            continue
        if exe.startswith("qemu-system-") and netns.proc_alive(int(entry)):
            pids.append(int(entry))
    return sorted(pids)
