"""The master daemon started as an operator starts it, for the tests that need the program."""

from __future__ import annotations

import socket
import subprocess
import sys


def start_program(data_dir: str, *extra: str) -> subprocess.CompletedProcess[str]:
    """Run ``gnt-lv-masterd --data-dir DATA_DIR EXTRA...``; it returns once the daemon is up."""
    argv = [sys.executable, "-m", "ganeti_lv.master.daemon", "--data-dir", data_dir, *extra]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
