"""What dpkg says of this machine's Debian packages."""

from __future__ import annotations

import subprocess


def installed(package: str) -> bool:
    """True when dpkg reports ``package`` as installed (not half-installed, not removed)."""
    res = subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True, check=False
    )
    return res.returncode == 0 and res.stdout.strip() == "install ok installed"
