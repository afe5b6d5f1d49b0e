"""Arguments and output shared by ``gnt-lv-devcluster`` and its ``peer`` command.

Both manage a cluster kept in a directory, with the test guest cached
elsewhere, and report the same kind of per-node status.
"""

from __future__ import annotations

import argparse
from typing import Any


def add_commands(
    sub: Any,
    commands: tuple[tuple[str, str], ...],
    *,
    what: str,
    default_dir: str,
    env: str,
    default_cache_dir: str,
    cache_help: str,
) -> dict[str, argparse.ArgumentParser]:
    """Add one subcommand per (name, help) with ``--dir`` and ``--cache-dir``.

    ``status`` also gets ``--json``. Returns the parsers by name, for the
    options of each command.
    """
    parsers = {}
    for name, help_text in commands:
        p = sub.add_parser(name, help=help_text)
        p.add_argument(
            "--dir",
            default=default_dir,
            help=f"{what} directory (default {default_dir}, env {env})",
        )
        p.add_argument("--cache-dir", default=default_cache_dir, help=cache_help)
        if name == "status":
            p.add_argument("--json", action="store_true", help="machine-readable output")
        parsers[name] = p
    return parsers


def node_lines(status: dict[str, Any]) -> list[str]:
    """One line per node of a status: its name and each ``key=value``."""
    lines = []
    for name, entry in status.get("nodes", {}).items():
        parts = [f"{k}={v if v is not None else '-'}" for k, v in entry.items()]
        lines.append(f"  {name}: {' '.join(parts)}")
    return lines
