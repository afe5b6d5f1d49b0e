"""Install Debian's Ganeti for the peer cluster without starting any service.

``ensure_packages()`` installs ``ganeti`` and ``ganeti-os-noop`` when one is
missing. While apt runs, a ``/usr/sbin/policy-rc.d`` that exits 101 forbids
every service start; it is created only if the machine has none, and only
the file created here is removed afterwards.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Callable, Iterator

from ganeti_lv.devcluster.debian import installed
from ganeti_lv.errors import ECODE_ENVIRON, OpExecError

PACKAGES = ("ganeti", "ganeti-os-noop")
POLICY_RC_D = "/usr/sbin/policy-rc.d"
POLICY_TEXT = (
    "#!/bin/sh\n# ganeti_lv peer install: no service starts while packages install\nexit 101\n"
)

FeedbackFn = Callable[[str], None]
# the longest an apt-get run of the install may take (its lock wait included)
APT_TIMEOUT = 1800


def _quiet(_msg: str) -> None:
    """Feedback function dropping messages."""


def missing_packages(packages: tuple[str, ...] = PACKAGES) -> list[str]:
    """The packages of ``packages`` not installed."""
    return [p for p in packages if not installed(p)]


@contextlib.contextmanager
def services_blocked(path: str = POLICY_RC_D) -> Iterator[bool]:
    """Make sure a policy-rc.d denying service starts exists while the block runs.

    Yields True when the file was created here (and is removed afterwards,
    unless someone changed it meanwhile); an existing file is left alone.
    """
    if os.path.lexists(path):
        yield False
        return
    with open(path, "x", encoding="utf-8") as fh:
        fh.write(POLICY_TEXT)
    os.chmod(path, 0o755)
    try:
        yield True
    finally:
        try:
            with open(path, encoding="utf-8") as fh:
                ours = fh.read() == POLICY_TEXT
        except OSError:
            ours = False
        if ours:
            os.unlink(path)


def ensure_packages(feedback_fn: FeedbackFn = _quiet) -> float | None:
    """Install the peer's Debian packages if missing; return the seconds apt took.

    None when everything was installed already.
    """
    missing = missing_packages()
    if not missing:
        return None
    feedback_fn(f"installing {' '.join(missing)} (no service starts)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    start = time.monotonic()
    # a fresh machine's daily apt run may hold dpkg's lock for a while: wait for it
    install = ["apt-get", "-o", "DPkg::Lock::Timeout=600", "install", "-y", "-q"]
    install += ["--no-install-recommends", *missing]
    try:
        with services_blocked():
            res = subprocess.run(install, capture_output=True, env=env, timeout=APT_TIMEOUT)
            if res.returncode != 0 and b"Unable to locate package" in res.stderr:
                update = ["apt-get", "update", "-q"]
                subprocess.run(update, capture_output=True, env=env, timeout=APT_TIMEOUT)
                res = subprocess.run(install, capture_output=True, env=env, timeout=APT_TIMEOUT)
    except subprocess.TimeoutExpired as err:
        raise OpExecError(
            f"apt-get did not end within {APT_TIMEOUT} s ({' '.join(err.cmd)}); run"
            " 'dpkg --configure -a' before trying again",
            ECODE_ENVIRON,
        ) from err
    if res.returncode != 0:
        raise OpExecError(
            f"apt-get install {' '.join(missing)} failed ({res.returncode}): "
            f"{res.stderr.decode(errors='replace').strip()[-2000:]}",
            ECODE_ENVIRON,
        )
    still = missing_packages()
    if still:
        raise OpExecError(f"packages still missing after install: {still}", ECODE_ENVIRON)
    return time.monotonic() - start
