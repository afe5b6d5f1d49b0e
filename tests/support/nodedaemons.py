"""After a test on the local cluster every node daemon runs again.

Tests that stop a node daemon start it again themselves, so a daemon found
gone after a test died on its own (a crash) or by mistake. ``restart_gone``
tells how each one ended (its reaper's record, the end of its log) and starts
it again: one death is reported once, with its cause, instead of failing
every later test that needs the node. A libvirtd that crashed is started
again by its reaper at once, as init does on a real node
(``ganeti_lv.devcluster.reaper``); ``restarted_after_crash`` tells how such
a daemon ended.
"""

from __future__ import annotations

import os
from typing import Any

from ganeti_lv.devcluster.layout import DAEMONS, NODE_LOG_DIR
from ganeti_lv.devcluster.reaper import STARTED_AGAIN

Daemon = tuple[str, str]  # (node, daemon name)


def running_daemons(cluster: Any) -> dict[Daemon, int]:
    """The PID of every node daemon that runs now."""
    return {
        (node, name): entry[name]
        for node, entry in cluster.status()["nodes"].items()
        for name in DAEMONS
        if entry[name] is not None
    }


def restart_gone(cluster: Any, before: dict[Daemon, int]) -> str | None:
    """Start again each daemon of ``before`` that no longer runs; a report of them (None: none)."""
    now = running_daemons(cluster)
    gone = [daemon for daemon in before if daemon not in now]  # virtlogd before libvirtd
    if not gone:
        return None
    report = []
    for node, name in gone:
        report.append(_how_it_ended(cluster, node, name, before[(node, name)]))
        try:
            cluster.start_daemon(node, name)
        except Exception as err:  # noqa: BLE001 - reported with the rest
            report.append(f"  starting it again failed: {err}")
    return "\n".join(report)


def restarted_after_crash(cluster: Any, before: dict[Daemon, int]) -> list[str]:
    """How each daemon of ``before`` that crashed and was started again by its reaper
    ended (a daemon a test stopped and started runs with another PID too)."""
    now = running_daemons(cluster)
    return [
        _how_it_ended(cluster, node, name, pid)
        for (node, name), pid in before.items()
        if now.get((node, name)) not in (None, pid)
        and (cluster.daemon_end(node, name, pid) or "").endswith(STARTED_AGAIN)
    ]


def _how_it_ended(cluster: Any, node: str, name: str, pid: int) -> str:
    """The reaper's record of ``pid``'s end, and the tail of the daemon's log if it has one."""
    end = cluster.daemon_end(node, name, pid) or f"{name}[{pid}]: no record of its end"
    lines = [f"{name} on {node}: {end}"]
    log = cluster.host_path(node, f"{NODE_LOG_DIR}/{name}.log")
    if os.path.exists(log):
        with open(log, encoding="utf-8", errors="replace") as fh:
            tail = fh.read().splitlines()[-15:]
        lines += [f"  {log}:", *(f"    {line}" for line in tail)]
    return "\n".join(lines)
