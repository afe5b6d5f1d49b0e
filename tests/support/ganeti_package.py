"""Facts read from the installed Ganeti 3.0 (Debian's ganeti, which the Ganeti peer installs)."""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

import pytest

GANETI_PACKAGE = "/usr/share/ganeti/3.0"


def ganeti_json(program: str, module: str) -> Any:
    """What ``program`` prints as JSON, run by the system's Python with Ganeti's package
    importable (skipped where Ganeti's ``module``, e.g. ``query``, is not installed)."""
    if not os.path.exists(os.path.join(GANETI_PACKAGE, "ganeti", f"{module}.py")):
        pytest.skip("Ganeti 3.0 is not installed here")
    proc = subprocess.run(
        ["/usr/bin/python3", "-c", program],
        capture_output=True,
        text=True,
        cwd="/",
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": GANETI_PACKAGE},
        check=True,
    )
    return json.loads(proc.stdout)
