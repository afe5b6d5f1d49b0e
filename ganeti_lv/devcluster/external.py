"""An existing cluster (e.g. the Vagrant one) described by a cluster.json.

Offers the part of DevCluster's test API that works without namespaces:
``info``, ``data_dir``, ``node_exec`` and ``virsh`` (over SSH with the
cluster key). Fault injection is not available.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from collections.abc import Sequence
from typing import Any

from ganeti_lv import paths
from ganeti_lv.errors import ECODE_ENVIRON, ECODE_NOENT, OpExecError, OpPrereqError


class ExternalCluster:
    """A cluster brought up elsewhere, reached over SSH."""

    supports_faults = False

    def __init__(self, info_file: str) -> None:
        self.info_file = os.path.realpath(info_file)
        self.directory = os.path.dirname(self.info_file)

    @property
    def info(self) -> dict[str, Any]:
        """The cluster description."""
        with open(self.info_file, encoding="utf-8") as fh:
            return json.load(fh)

    @property
    def data_dir(self) -> str:
        """The ganeti_lv data dir named in the description."""
        return str(self.info["data_dir"])

    def _node(self, name: str) -> dict[str, Any]:
        for node in self.info["nodes"]:
            if node["name"] == name:
                return node
        raise OpPrereqError(f"Node '{name}' not known", ECODE_NOENT)

    def node_exec(
        self,
        node: str,
        argv: Sequence[str],
        check: bool = True,
        input: bytes | None = None,
        timeout: float | None = 60,
    ) -> subprocess.CompletedProcess:
        """Run ``argv`` on the node over SSH with the cluster key."""
        n = self._node(node)
        ssh = [
            "ssh",
            "-i",
            paths.ssh_key_file(self.data_dir),
            "-o",
            f"UserKnownHostsFile={paths.known_hosts_file(self.data_dir)}",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "BatchMode=yes",
            "-p",
            str(n.get("ssh_port", 22)),
            f"{n.get('ssh_user', 'root')}@{n['address']}",
            shlex.join(argv),
        ]
        res = subprocess.run(ssh, capture_output=True, input=input, timeout=timeout)
        if check and res.returncode != 0:
            raise OpExecError(
                f"{shlex.join(argv)} on {node} failed ({res.returncode}): "
                f"{res.stderr.decode(errors='replace').strip()}"
            )
        return res

    def virsh(self, node: str, *args: str, check: bool = True) -> str:
        """Run ``virsh args`` on the node; return its stdout."""
        res = self.node_exec(node, ["virsh", "-q", *args], check=check)
        return res.stdout.decode(errors="replace")

    def _no_faults(self, *_args: object, **_kwargs: object) -> Any:
        raise OpPrereqError("fault injection needs the local namespace cluster", ECODE_ENVIRON)

    kill_daemon = restart_daemon = start_daemon = cut_link = restore_link = _no_faults
