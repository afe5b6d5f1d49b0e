"""Small files of the test clusters: atomic writes and SSH keys."""

from __future__ import annotations

import json
import os
from typing import Any

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


def load_json(path: str) -> dict[str, Any]:
    """A JSON object from ``path``; empty when the file is missing or unreadable."""
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (FileNotFoundError, ValueError):
        return {}


def save_json(path: str, data: dict[str, Any]) -> None:
    """Write ``data`` as JSON to ``path`` atomically (its directory is created)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    write_file(path, json.dumps(data, indent=2, sort_keys=True) + "\n")
