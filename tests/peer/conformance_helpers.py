"""Both clusters behind one interface for the conformance tests, and what they compare.

``Side`` runs a gnt-* command line on a cluster and installs hook scripts
there: ``GanetiSide`` on the real Ganeti peer (commands on its master,
hooks under /etc/ganeti/hooks on every node), ``LocalSide`` on the local
ganeti_lv cluster (``gnt-lv`` in-process, hooks in every node's hooks
directory). The hook script dumps its environment into a host directory
both clusters' nodes see (/var/tmp is not a per-node mount on either).

``normalise`` replaces what necessarily differs between two clusters
(node, cluster and instance names, MACs, UUIDs, console paths) by
placeholders, so that the remaining differences are the behaviour's.
``documented_differences`` reads the README's table of intended
differences.
"""

from __future__ import annotations

import contextlib
import glob
import io
import json
import os
import re
import shutil
from typing import Any

import yaml

from ganeti_lv.config import ConfigStore
from ganeti_lv.devcluster.cluster import DevCluster
from ganeti_lv.devcluster.peer import PeerCluster

HOOK_NAME = "50-glvconformance"
# {node} is where the script is installed: <node1>, <node2> ... in the dump's name
HOOK_SCRIPT = """#!/bin/sh
env > "$(mktemp "{dump}/$GANETI_HOOKS_PATH-$GANETI_HOOKS_PHASE.{node}.XXXXXX")"
"""
PHASES = ("pre", "post")
UUID_RE = re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b")
MAC_RE = re.compile(r"\b[0-9a-f]{2}(?::[0-9a-f]{2}){5}\b")
ERROR_TYPE_RE = re.compile(r"^error type: (\w+), error details:$", re.M)
README = os.path.join(os.path.dirname(__file__), "..", "..", "README.md")
TABLE_TITLE = "### Intended differences in hook environments"


class Side:
    """One cluster: its name, nodes (as it names them) and a gnt-* command runner."""

    label = ""
    nodes: list[str]
    master: str
    cluster_name: str

    def gnt(self, *argv: str) -> tuple[int, str, str]:
        """Run ``gnt-instance``/``gnt-backup`` ``argv`` on the master: (code, stdout, stderr)."""
        raise NotImplementedError

    def ok(self, *argv: str) -> str:
        """Run and assert success; return stdout."""
        code, out, err = self.gnt(*argv)
        assert code == 0, f"{self.label}: {' '.join(argv)} failed ({code}):\n{out}\n{err}"
        return out

    def error_type(self, *argv: str) -> str | None:
        """The Ganeti error type a failing command prints (None when it did not fail so)."""
        code, out, err = self.gnt(*argv)
        found = ERROR_TYPE_RE.search(err + out)
        return found.group(1) if code != 0 and found else None

    def compression_tools(self) -> list[str]:
        """The cluster's export compression tools, as its configuration records them."""
        raise NotImplementedError

    def install_hooks(self, hpaths: list[str], dump: str, phases: tuple[str, ...] = PHASES) -> None:
        """The dumping hook script for ``hpaths`` and ``phases`` on every node."""
        raise NotImplementedError

    def remove_hooks(self, hpaths: list[str], phases: tuple[str, ...] = PHASES) -> None:
        """Remove what ``install_hooks`` installed."""
        raise NotImplementedError

    def placeholders(self, instance: str) -> dict[str, str]:
        """Values of this cluster and the placeholder each stands for."""
        out = {name: f"<node{i + 1}>" for i, name in enumerate(self.nodes)}
        out[self.cluster_name] = "<cluster>"
        out[instance] = "<instance>"
        return out


class GanetiSide(Side):
    """The real Ganeti 3.0 peer."""

    label = "Ganeti"
    HOOKS_DIR = "/etc/ganeti/hooks"

    def __init__(self, peer: PeerCluster) -> None:
        self.peer = peer
        layout = peer.layout()
        self.nodes = [n.fqdn for n in layout.nodes]
        self.master = layout.master.fqdn
        self.cluster_name = layout.cluster_fqdn
        self.short = [n.name for n in layout.nodes]

    def gnt(self, *argv: str) -> tuple[int, str, str]:
        res = self.peer.run(self.short[0], list(argv), check=False, timeout=600)
        return res.returncode, res.stdout, res.stderr

    def compression_tools(self) -> list[str]:
        config = self.peer.run(self.short[0], ["cat", "/var/lib/ganeti/config.data"]).stdout
        return list(json.loads(config)["cluster"]["compression_tools"])

    def install_hooks(self, hpaths: list[str], dump: str, phases: tuple[str, ...] = PHASES) -> None:
        for i, node in enumerate(self.short):
            script = HOOK_SCRIPT.format(dump=dump, node=f"node{i + 1}")
            for hpath in hpaths:
                for phase in phases:
                    where = f"{self.HOOKS_DIR}/{hpath}-{phase}.d"
                    self.peer.run(
                        node,
                        [
                            "sh",
                            "-c",
                            f"mkdir -p {where} && cat > {where}/{HOOK_NAME} && chmod 755 "
                            f"{where}/{HOOK_NAME}",
                        ],  # fmt: skip
                        input=script,
                    )

    def remove_hooks(self, hpaths: list[str], phases: tuple[str, ...] = PHASES) -> None:
        for node in self.short:
            for hpath in hpaths:
                for phase in phases:
                    path = f"{self.HOOKS_DIR}/{hpath}-{phase}.d/{HOOK_NAME}"
                    self.peer.run(node, ["rm", "-f", path], check=False)


class LocalSide(Side):
    """The local ganeti_lv cluster (``gnt-lv`` in-process on its data dir)."""

    label = "ganeti_lv"

    def __init__(self, cluster: DevCluster) -> None:
        self.cluster = cluster
        info = cluster.info
        self.data_dir = info["data_dir"]
        self.nodes = [n["name"] for n in info["nodes"]]
        self.master = info["master"]
        self.cluster_name = info["name"]
        self.hooks_dirs = [n["storage"]["hooks_base_dir"] for n in info["nodes"]]

    def gnt(self, *argv: str) -> tuple[int, str, str]:
        from ganeti_lv.cli.main import main

        tool, *rest = argv
        group = {"gnt-instance": "instance", "gnt-backup": "backup", "gnt-cluster": "cluster"}[tool]
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["--data-dir", self.data_dir, group, *rest])
        return code, out.getvalue(), err.getvalue()

    def compression_tools(self) -> list[str]:
        return list(ConfigStore(self.data_dir).get_cluster().compression_tools)

    def install_hooks(self, hpaths: list[str], dump: str, phases: tuple[str, ...] = PHASES) -> None:
        for i, base in enumerate(self.hooks_dirs):
            script = HOOK_SCRIPT.format(dump=dump, node=f"node{i + 1}")
            for hpath in hpaths:
                for phase in phases:
                    where = os.path.join(base, f"{hpath}-{phase}.d")
                    os.makedirs(where, exist_ok=True)
                    path = os.path.join(where, HOOK_NAME)
                    with open(path, "w", encoding="utf-8") as fh:
                        fh.write(script)
                    os.chmod(path, 0o755)

    def remove_hooks(self, hpaths: list[str], phases: tuple[str, ...] = PHASES) -> None:
        for base in self.hooks_dirs:
            for hpath in hpaths:
                for phase in phases:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(os.path.join(base, f"{hpath}-{phase}.d", HOOK_NAME))


# ------------------------------------------------------------------ hook dumps


def read_dumps(dump: str, hpath: str, phase: str) -> list[dict[str, str]]:
    """The GANETI_* environments the hook wrote for ``hpath``/``phase`` (one per node run)."""
    return [env for _, env in read_node_dumps(dump, hpath, phase)]


def read_node_dumps(dump: str, hpath: str, phase: str) -> list[tuple[str, dict[str, str]]]:
    """(node placeholder, GANETI_* environment) of each run for ``hpath``/``phase``."""
    runs = []
    for path in sorted(glob.glob(os.path.join(dump, f"{hpath}-{phase}.*"))):
        node = os.path.basename(path).split(".")[1]
        with open(path, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
        env = dict(
            line.split("=", 1) for line in lines if line.startswith("GANETI_") and "=" in line
        )
        runs.append((f"<{node}>", env))
    return runs


def clear_dumps(dump: str) -> None:
    """Empty the dump directory (kept: the hook scripts name it)."""
    shutil.rmtree(dump, ignore_errors=True)
    os.makedirs(dump)
    os.chmod(dump, 0o777)


def normalise(env: dict[str, str], placeholders: dict[str, str]) -> dict[str, str]:
    """``env`` with cluster-specific values (names, MACs, UUIDs) as placeholders."""
    out = {}
    # longest first: a node's FQDN before the cluster's domain part of it
    names = sorted(placeholders, key=len, reverse=True)
    for key, value in env.items():
        value = UUID_RE.sub("<uuid>", value)
        value = MAC_RE.sub("<mac>", value)
        words = []
        for word in value.split(" "):
            for name in names:
                if word == name:
                    word = placeholders[name]
                    break
            words.append(word)
        out[key] = " ".join(words)
    return out


def differences(ganeti: dict[str, str], local: dict[str, str]) -> dict[str, tuple[Any, Any]]:
    """Keys whose values differ (None: the key is missing on that side)."""
    return {
        key: (ganeti.get(key), local.get(key))
        for key in sorted(set(ganeti) | set(local))
        if ganeti.get(key) != local.get(key)
    }


def expand(key: str) -> list[str]:
    """Brace groups as the shell expands them: ``A_{,B_}C_{x,y}`` -> 4 keys."""
    match = re.match(r"^([^{]*)\{([^}]*)\}(.*)$", key)
    if not match:
        return [key]
    head, alternatives, tail = match.groups()
    return [k for alt in alternatives.split(",") for k in expand(f"{head}{alt.strip()}{tail}")]


def documented_differences(readme: str = README) -> dict[str, str]:
    """The README's intended differences: key -> why (brace groups expanded)."""
    with open(readme, encoding="utf-8") as fh:
        text = fh.read()
    start = text.index(TABLE_TITLE)
    rows: dict[str, str] = {}
    in_table = False
    for line in text[start:].splitlines()[1:]:
        if line.startswith("|"):
            in_table = True
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            key = cells[0].strip("`")
            if not key.startswith("GANETI_"):
                continue  # header and separator rows
            for name in expand(key):
                assert name not in rows, f"{name} listed twice in the README"
                rows[name] = cells[-1]
        elif in_table:
            break
    return rows


# ------------------------------------------------------------------ QA's parsers


def qa_list_fields(output: str) -> tuple[str, ...]:
    """``gnt-instance list --no-headers --separator=: --units m -o F`` as Ganeti's QA reads it."""
    return tuple(output.strip().split(":"))


def qa_instance_info(output: str) -> dict[str, Any]:
    """``gnt-instance info`` read as Ganeti's QA reads it (qa_instance.GetInstanceInfo)."""
    info = yaml.safe_load(output)[0]
    nodes = []
    for entry in info["Nodes"]:
        if "primary" in entry:
            nodes.append(entry["primary"])
        elif entry.get("secondaries"):
            nodes.extend(n.split(" (")[0] for n in str(entry["secondaries"]).split(","))
    dtypes = []
    for count, disk in enumerate(info["Disks"]):
        dtype, _ = disk[f"disk/{count}"].split(",", 1)
        dtypes.append(dtype)
    hvparams = {}
    for param, value in (info["Hypervisor parameters"] or {}).items():
        if isinstance(value, str) and value.startswith("default ("):
            inner = re.search(r"^default \((.*)\)$", value)
            assert inner is not None
            try:
                value = yaml.safe_load(inner.group(1))
            except yaml.YAMLError:
                value = ""
        hvparams[param] = value
    return {
        "name": info["Instance name"],
        "state": info["State"],
        "nodes": nodes,
        "disk-template": dtypes[0] if len(set(dtypes)) == 1 else "mixed",
        "hypervisor-parameters": hvparams,
        "backend-parameters": info["Back-end parameters"],
        "nics": info["NICs"],
    }
