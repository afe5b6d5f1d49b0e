"""Small files of the test clusters: atomic writes and SSH keys."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
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


class ClusterDirectory:
    """A test cluster kept in a directory: its record of what was started
    (``state.json``) and its description (``INFO_NAME``, written by ``up``)."""

    INFO_NAME = "cluster.json"

    def __init__(
        self,
        directory: str,
        cache_dir: str,
        feedback_fn: Callable[[str], None] = quiet,
    ) -> None:
        self.directory = os.path.realpath(directory)
        self.cache_dir = cache_dir
        self.feedback_fn = feedback_fn

    @property
    def state_file(self) -> str:
        """Path of the record of what was started."""
        return os.path.join(self.directory, "state.json")

    def _load_state(self) -> dict[str, Any]:
        return load_json(self.state_file)

    def _save_state(self, state: dict[str, Any]) -> None:
        save_json(self.state_file, state)

    @property
    def info_file(self) -> str:
        """Path of the description."""
        return os.path.join(self.directory, self.INFO_NAME)

    @property
    def info(self) -> dict[str, Any]:
        """The description (written by ``up``)."""
        with open(self.info_file, encoding="utf-8") as fh:
            return json.load(fh)
