"""Small files of the test clusters: atomic writes and SSH keys."""

from __future__ import annotations

import os

from ganeti_lv.devcluster import netns


def quiet(_msg: str) -> None:
    """Feedback function dropping messages."""


def write_file(path: str, text: str, mode: int = 0o644) -> None:
    """Write a small text file atomically with ``mode``."""
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def keygen(path: str, comment: str, kind: str = "ed25519") -> None:
    """Create an SSH key pair of type ``kind`` at ``path`` unless it exists."""
    if not os.path.exists(path):
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        argv = ["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", comment, "-f", path]
        if kind == "rsa":
            argv[4:4] = ["-b", "2048"]
        netns.run(argv)


def pubkey(path: str) -> str:
    """``"<type> <base64>"`` of a public key file."""
    with open(path, encoding="utf-8") as fh:
        fields = fh.read().split()
    return f"{fields[0]} {fields[1]}"
