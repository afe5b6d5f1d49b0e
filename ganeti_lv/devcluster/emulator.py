"""The qemu the local cluster's nodes run: the system's, or Debian's backport.

Debian 12's qemu 7.2 loses guest memory writes during a live migration under
TCG (no KVM): the guest kernel then crashes or hangs on the target. Plain
``virsh migrate`` does the same (see "Guest safety under TCG migration" in
the README and ``bench/guest_safety.py``). qemu 7.2's TCG clears a page's
migration dirty bit without making the vCPU's TLB entry for it trap the
next write again, so a write after the clear is not sent; later qemu (9.0
on) resets those entries, and the fault is gone with the backport.

So on Debian 12 the local cluster runs qemu from ``bookworm-backports``,
for the local cluster only: the packages are fetched with ``apt-get
download`` through a private apt configuration in the cache directory
(nothing is added to the machine's apt sources, nothing is installed
system-wide) and unpacked there, with a small ``qemu-system-x86_64``
wrapper pointing qemu at its own firmware and modules. Each node's libvirtd
runs with the wrapper's directory first on its PATH, so libvirt probes it
and defines every domain with it; libvirt itself stays the system's.
Shared libraries the newer qemu needs and the machine lacks are installed
from the regular Debian 12 archive with apt-get.

``mode`` is ``system``, ``backports`` or ``auto`` (backports on Debian 12,
the system's qemu elsewhere).
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable

from ganeti_lv.devcluster.debian import installed
from ganeti_lv.errors import ECODE_INVAL, OpExecError, OpPrereqError

MODES = ("auto", "system", "backports")
SUITE = "bookworm-backports"
MIRROR = "http://deb.debian.org/debian"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
# qemu-system-common and -data must match qemu-system-x86's version; seabios
# is the firmware that version expects (it depends on a newer one than 12's).
CORE_PACKAGES = ("qemu-system-x86", "qemu-system-common", "qemu-system-data", "seabios")
# The rest of that build's loadable modules. qemu looks for a module in its
# own directory first, then in the system's; the system's qemu 7.2 modules of
# the same name abort a newer qemu (libvirt's probe loads every QOM module).
# With all of them unpacked here that never happens; their libraries are not
# installed, so they do not load: no display, spice or extra block drivers.
MODULE_PACKAGES = (
    "qemu-system-gui",
    "qemu-system-modules-opengl",
    "qemu-system-modules-spice",
    "qemu-block-extra",
)
BINARY = "qemu-system-x86_64"

FeedbackFn = Callable[[str], None]


def _quiet(_msg: str) -> None:
    """Feedback function dropping messages."""


def _run(argv: list[str], **kwargs) -> str:
    res = subprocess.run(argv, capture_output=True, text=True, check=False, **kwargs)
    if res.returncode != 0:
        raise OpExecError(
            f"{' '.join(argv)} failed ({res.returncode}): {res.stderr.strip()[-800:]}"
        )
    return res.stdout


def os_codename(path: str = "/etc/os-release") -> str:
    """The Debian release's code name ('' when unknown)."""
    try:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                key, _, value = line.strip().partition("=")
                if key == "VERSION_CODENAME":
                    return value.strip('"')
    except OSError:
        pass
    return ""


def resolve_mode(mode: str, codename: str | None = None) -> str:
    """``system`` or ``backports`` for ``mode`` on this machine."""
    if mode not in MODES:
        raise OpPrereqError(
            f"Unknown qemu choice {mode!r} (one of {', '.join(MODES)})", ECODE_INVAL
        )
    if mode != "auto":
        return mode
    release = codename if codename is not None else os_codename()
    return "backports" if release == "bookworm" else "system"


class BackportsQemu:
    """qemu from bookworm-backports, unpacked below ``<cache dir>/qemu-backports``."""

    def __init__(self, cache_dir: str, feedback_fn: FeedbackFn = _quiet) -> None:
        self.base = os.path.join(cache_dir, "qemu-backports")
        self.feedback_fn = feedback_fn

    @property
    def apt_dir(self) -> str:
        return os.path.join(self.base, "apt")

    def _apt_options(self) -> list[str]:
        return [
            "-o", f"Dir::Etc::SourceList={os.path.join(self.apt_dir, 'sources.list')}",
            "-o", f"Dir::Etc::SourceParts={os.path.join(self.apt_dir, 'parts')}",
            "-o", f"Dir::State::Lists={os.path.join(self.apt_dir, 'lists')}",
            "-o", f"Dir::Cache={os.path.join(self.apt_dir, 'cache')}",
        ]  # fmt: skip

    def installed(self) -> str | None:
        """The bin directory of an unpacked qemu that runs, else None."""
        for bindir in sorted(glob.glob(os.path.join(self.base, "*", "bin")), reverse=True):
            wrapper = os.path.join(bindir, BINARY)
            if os.access(wrapper, os.X_OK) and self._runs(wrapper):
                return bindir
        return None

    @staticmethod
    def _runs(wrapper: str) -> bool:
        res = subprocess.run([wrapper, "--version"], capture_output=True, check=False)
        return res.returncode == 0

    def ensure(self) -> str:
        """Unpack the backport once (download only when missing); return its bin directory."""
        bindir = self.installed()
        if bindir is not None:
            return bindir
        self.feedback_fn(f"fetching qemu from {SUITE} for the local cluster")
        for sub in ("parts", "lists/partial", "cache/archives/partial"):
            os.makedirs(os.path.join(self.apt_dir, sub), exist_ok=True)
        with open(os.path.join(self.apt_dir, "sources.list"), "w", encoding="utf-8") as fh:
            fh.write(f"deb [signed-by={KEYRING}] {MIRROR} {SUITE} main\n")
        _run(["apt-get", *self._apt_options(), "update"], timeout=600)
        with tempfile.TemporaryDirectory(dir=self.base) as tmp:
            # apt's download user cannot write into root's directories
            os.chmod(tmp, 0o755)
            _run(
                [
                    "apt-get",
                    *self._apt_options(),
                    "download",
                    *[f"{p}/{SUITE}" for p in CORE_PACKAGES + MODULE_PACKAGES],
                ],
                cwd=tmp,
                timeout=900,
            )
            debs = sorted(glob.glob(os.path.join(tmp, "*.deb")))
            version = self._version(debs)
            core = [d for d in debs if os.path.basename(d).split("_")[0] in CORE_PACKAGES]
            self._install_libraries(core)
            target = os.path.join(self.base, re.sub(r"[^A-Za-z0-9.+~-]", "_", version))
            shutil.rmtree(target, ignore_errors=True)
            root = os.path.join(target, "root")
            os.makedirs(root)
            for deb in debs:
                _run(["dpkg-deb", "-x", deb, root])
            bindir = os.path.join(target, "bin")
            os.makedirs(bindir)
            write_wrapper(os.path.join(bindir, BINARY), root)
        if not self._runs(os.path.join(bindir, BINARY)):
            raise OpExecError(f"the qemu unpacked in {target} does not run")
        self.feedback_fn(f"qemu {version} from {SUITE} unpacked in {target}")
        return bindir

    @staticmethod
    def _version(debs: list[str]) -> str:
        for deb in debs:
            if os.path.basename(deb).startswith("qemu-system-x86_"):
                return _run(["dpkg-deb", "-f", deb, "Version"]).strip()
        raise OpExecError(f"apt-get download brought no qemu-system-x86 from {SUITE}")

    def _install_libraries(self, debs: list[str]) -> None:
        """apt-get install the shared libraries the packages depend on and the machine lacks."""
        wanted: set[str] = set()
        for deb in debs:
            for dep in _run(["dpkg-deb", "-f", deb, "Depends"]).split(","):
                name = dep.split("|")[0].split("(")[0].strip()
                if name.startswith("lib"):
                    wanted.add(name)
        missing = [name for name in sorted(wanted) if not installed(name)]
        if missing:
            self.feedback_fn(f"installing libraries for the newer qemu: {' '.join(missing)}")
            _run(
                # a fresh machine's daily apt run may hold dpkg's lock: wait for it
                ["apt-get", "-o", "DPkg::Lock::Timeout=600", "install", "-y"]
                + ["--no-install-recommends", *missing],
                env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
                timeout=900,
            )


def write_wrapper(path: str, root: str) -> None:
    """A ``qemu-system-x86_64`` running the unpacked qemu with its own firmware and modules.

    Debian's qemu looks for them at fixed paths below /usr, where the
    system's (older) qemu keeps its own: ``-L`` puts the unpacked data
    first, and QEMU_MODULE_DIR its modules.
    """
    usr = os.path.join(root, "usr")
    text = (
        "#!/bin/sh\n"
        "# qemu from Debian's bookworm-backports for the local cluster (ganeti_lv.devcluster)\n"
        f"QEMU_MODULE_DIR='{usr}/lib/x86_64-linux-gnu/qemu'\n"
        "export QEMU_MODULE_DIR\n"
        f"exec '{usr}/bin/{BINARY}' -L '{usr}/share/qemu' -L '{usr}/share/seabios' \"$@\"\n"
    )
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.chmod(path, 0o755)


def emulator_dir(mode: str, cache_dir: str, feedback_fn: FeedbackFn = _quiet) -> str | None:
    """The directory to put first on the nodes' libvirtd PATH (None: the system's qemu)."""
    if resolve_mode(mode) == "system":
        return None
    return BackportsQemu(cache_dir, feedback_fn).ensure()
