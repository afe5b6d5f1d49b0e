"""The cluster's known_hosts file: the SSH host keys the master accepts.

Plain file handling (no SSH library): OpenSSH's format, one
``<host> <type> <base64>`` line per key, ``[host]:port`` for other ports
than 22. The SSH transport (``node.ssh``) only reads it, through paramiko;
a node's key is added here once the operator confirmed its fingerprint.
"""

from __future__ import annotations

import base64
import hashlib
import os

from ganeti_lv.config import write_file_atomically

DEFAULT_PORT = 22


def key_fingerprint(key_line: str) -> str:
    """OpenSSH-style ``SHA256:...`` fingerprint of a "<type> <base64>" key line."""
    parts = key_line.split()
    if len(parts) < 2:
        raise ValueError(f"not a public key line: {key_line!r}")
    blob = base64.b64decode(parts[1])
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    return f"SHA256:{digest}"


def known_hosts_name(host: str, port: int = DEFAULT_PORT) -> str:
    """The host field known_hosts uses: ``host`` on port 22, else ``[host]:port``."""
    return host if port == DEFAULT_PORT else f"[{host}]:{port}"


def _read_known_hosts(path: str) -> list[str]:
    try:
        with open(path) as fh:
            return fh.read().splitlines()
    except FileNotFoundError:
        return []


def known_hosts_add(path: str, host: str, port: int, key_line: str) -> None:
    """Record ``key_line`` ("<type> <base64>") as host:port's key in a known_hosts file.

    It replaces every entry of host:port, whatever its key type: a node that
    was re-installed with a key of another type must not keep its old one
    trusted (paramiko offers the server the first type it knows). The file
    is rewritten atomically with mode 0600.
    """
    parts = key_line.split()
    if len(parts) < 2:
        raise ValueError(f"not a public key line: {key_line!r}")
    keytype, b64 = parts[0], parts[1]
    base64.b64decode(b64, validate=True)
    name = known_hosts_name(host, port)
    kept = []
    for line in _read_known_hosts(path):
        fields = line.split()
        if len(fields) >= 2 and name in fields[0].split(","):
            continue
        kept.append(line)
    kept.append(f"{name} {keytype} {b64}")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    write_file_atomically(path, ("\n".join(kept) + "\n").encode(), mode=0o600)


def known_hosts_remove(path: str, host: str, port: int = DEFAULT_PORT) -> int:
    """Remove every entry for host:port; returns how many lines were removed."""
    name = known_hosts_name(host, port)
    lines = _read_known_hosts(path)
    kept = [ln for ln in lines if not (ln.split() and name in ln.split()[0].split(","))]
    if len(kept) != len(lines):
        write_file_atomically(path, "".join(ln + "\n" for ln in kept).encode(), mode=0o600)
    return len(lines) - len(kept)
