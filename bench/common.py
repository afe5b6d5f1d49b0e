"""What the cluster benchmarks share: a devcluster, the gnt-lv CLI, virsh, guests.

The benchmarks drive ganeti_lv the way an operator does (the ``gnt-lv``
command) and the baselines the way an operator would without it (``virsh``,
``ssh``, ``cp``), all from the host against the local cluster's nodes.
"""

from __future__ import annotations

import compileall
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ganeti_lv.devcluster import guest as devguest
from ganeti_lv.errors import GenericError

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DEFAULT_DIR = "/var/tmp/ganeti-lv-bench"
# A subnet of its own, so a test cluster may run at the same time.
DEFAULT_SUBNET = "10.250.9.0/24"
TICK_RE = re.compile(r"^tick (\d+)\s*$")

Feedback = Callable[[str], None]


class BenchError(Exception):
    """A benchmark step failed (command, guest, cluster)."""


def _quiet(_msg: str) -> None:
    """Feedback function dropping messages."""


def ensure_bytecode() -> None:
    """Compile ganeti_lv's modules to bytecode (``__pycache__``), as pip does on install.

    The benchmarks time ``gnt-lv`` as an installed program starts; the
    checkout's editable install leaves the bytecode to the first import,
    which never writes it where PYTHONDONTWRITEBYTECODE is set.
    """
    compileall.compile_dir(ROOT / "ganeti_lv", quiet=1)


def run(
    argv: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    timeout: float = 600,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run a command, capture its output, raise BenchError on failure when ``check``."""
    proc = subprocess.run(
        list(argv), env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and proc.returncode != 0:
        raise BenchError(
            f"{shlex.join(argv)} failed ({proc.returncode}): "
            f"{(proc.stderr or proc.stdout).strip()[-1500:]}"
        )
    return proc


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """(seconds, result) of ``fn()``."""
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


@dataclass
class Guest:
    """Kernel arguments of the test guest (see ganeti_lv.devcluster.guest)."""

    seed: str
    patmb: int = 1
    dirtymb: int = 0
    writepat: int = 1
    extra: dict[str, str] = field(default_factory=dict)

    def kernel_args(self, base: str = "console=ttyS0") -> str:
        """The kernel command line."""
        parts = [
            base,
            f"seed={self.seed}",
            f"patmb={self.patmb}",
            f"dirtymb={self.dirtymb}",
            f"writepat={self.writepat}",
        ]
        parts += [f"{k}={v}" for k, v in self.extra.items()]
        return " ".join(parts)


class BenchCluster:
    """A devcluster for benchmarks, driven through ``gnt-lv`` and ``virsh``."""

    def __init__(
        self,
        directory: str = DEFAULT_DIR,
        subnet: str = DEFAULT_SUBNET,
        nodes: int = 3,
        feedback: Feedback = _quiet,
    ) -> None:
        from ganeti_lv.devcluster.cluster import DevCluster

        self.dev = DevCluster(directory, feedback_fn=feedback)
        self.subnet = subnet
        self.n_nodes = nodes
        self.feedback = feedback
        self.info: dict[str, Any] = {}

    # ------------------------------------------------------------ lifecycle
    def up(self, qemu: str | None = None) -> dict[str, Any]:
        """Bring the cluster up (idempotent) and return its description.

        ``qemu``: the nodes' qemu (``ganeti_lv.devcluster.emulator``; None: its default).
        """
        self.info = self.dev.up(nodes=self.n_nodes, subnet=self.subnet, qemu=qemu)
        # A real node has libvirt's qemu log directory from the package; the
        # local nodes start with an empty /var/log/libvirt, and a migration
        # target without it cannot open the guest's console log.
        for name in self.node_names:
            self.node_exec(name, ["mkdir", "-p", "/var/log/libvirt/qemu"])
        return self.info

    def down(self) -> None:
        """Stop every process of the cluster and remove its namespaces."""
        self.dev.down()

    # ------------------------------------------------------------ facts
    @property
    def data_dir(self) -> str:
        """The master's data dir."""
        return str(self.info["data_dir"])

    @property
    def node_names(self) -> list[str]:
        """Node names in order (node1 first)."""
        return [n["name"] for n in self.info["nodes"]]

    def node(self, name: str) -> dict[str, Any]:
        """The description of node ``name``."""
        for node in self.info["nodes"]:
            if node["name"] == name:
                return dict(node)
        raise BenchError(f"no node {name}")

    def uri(self, name: str) -> str:
        """libvirt URI of a node as the host reaches it."""
        return str(self.node(name)["libvirt_uri"])

    def host_path(self, node: str, node_path: str) -> str:
        """Host path backing a node-local (or the shared) path."""
        return self.dev.host_path(node, node_path)

    # ------------------------------------------------------------ commands
    def env(self) -> dict[str, str]:
        """Environment for gnt-lv: the cluster's data dir."""
        return dict(os.environ, GANETI_LV_DATA_DIR=self.data_dir)

    def gnt(
        self, *args: str, timeout: float = 600, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run ``gnt-lv args`` against the cluster."""
        return run([str(BIN / "gnt-lv"), *args], env=self.env(), timeout=timeout, check=check)

    def start_masterd(self) -> None:
        """Start the cluster's master daemon (gnt-lv then submits its jobs there)."""
        run([str(BIN / "gnt-lv-masterd"), "--data-dir", self.data_dir], timeout=60)

    def stop_masterd(self) -> None:
        """Stop the master daemon if it runs (gnt-lv then runs jobs in its own process)."""
        run([str(BIN / "gnt-lv-masterd"), "--data-dir", self.data_dir, "--stop"], timeout=120)

    def virsh(
        self, node: str, *args: str, timeout: float = 600, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run ``virsh -c <node uri> args`` from the host."""
        return run(["virsh", "-c", self.uri(node), *args], timeout=timeout, check=check)

    def node_exec(
        self, node: str, argv: Sequence[str], timeout: float = 600, check: bool = True
    ) -> subprocess.CompletedProcess[bytes]:
        """Run ``argv`` inside the node (its namespaces)."""
        try:
            proc = self.dev.node_exec(node, list(argv), check=False, timeout=timeout)
        except GenericError as err:  # it did not end in time
            raise BenchError(f"{node}: {err}") from err
        if check and proc.returncode != 0:
            raise BenchError(
                f"{node}: {shlex.join(argv)} failed ({proc.returncode}): "
                f"{proc.stderr.decode(errors='replace').strip()[-1500:]}"
            )
        return proc

    def hvparam(self, key: str) -> Any:
        """The cluster's hypervisor parameter ``key`` (its default when not set)."""
        from ganeti_lv import constants

        return self.config().cluster.hvparams.get(key, constants.HVC_DEFAULTS[key])

    def set_hvparam(self, key: str, value: Any) -> None:
        """Set the cluster's hypervisor parameter ``key`` with ``gnt-lv cluster modify``."""
        self.gnt("cluster", "modify", "-H", f"{key}={value}")

    # ------------------------------------------------------------ instances
    def config(self) -> Any:
        """The cluster configuration as stored now."""
        from ganeti_lv.config import ConfigStore

        return ConfigStore(self.data_dir).read()

    def primary(self, instance: str) -> str:
        """The instance's primary node according to the configuration."""
        return str(self.config().instances[instance].primary_node)

    def record_primary(self, instance: str, node: str) -> None:
        """Record in the configuration that the instance now runs on ``node``.

        Used after a baseline (virsh) migration, which ganeti_lv does not see.
        """
        from ganeti_lv.config import ConfigStore

        ConfigStore(self.data_dir).set_instance_primary(instance, node)

    def add_instance(
        self,
        name: str,
        node: str,
        guest: Guest,
        memory: int = 128,
        disk: str = "128M",
        template: str = "sharedfile",
        start: bool = True,
    ) -> None:
        """Create an instance of the test guest with ``gnt-lv instance add``."""
        kernel = self.info["guest"]["kernel"]
        initrd = self.info["guest"]["initrd"]
        args = [
            "instance",
            "add",
            "-t",
            template,
            "--disk",
            f"0:size={disk}",
            "-n",
            node,
            "-B",
            f"memory={memory}M,vcpus=1",
            "-H",
            f"kernel_path={kernel},initrd_path={initrd},kernel_args='{guest.kernel_args()}'",
            "--net",
            f"0:link={self.info.get('bridge', 'gnt-br0')}",
        ]
        if not start:
            args.append("--no-start")
        self.gnt(*args, name, timeout=300)

    def remove_instance(self, name: str) -> None:
        """Remove an instance, ignoring failures (clean-up path)."""
        self.gnt(
            "instance",
            "remove",
            "-f",
            "--ignore-failures",
            "--shutdown-timeout",
            "10",
            name,
            check=False,
            timeout=300,
        )

    def console_path(self, instance: str, node: str) -> str:
        """Host path of the instance's serial console log on ``node``."""
        from ganeti_lv.hypervisor.libvirt.domxml import console_log_path

        return self.host_path(node, console_log_path(instance))

    def cpu_seconds(self, instance: str, node: str) -> float:
        """CPU time the instance's qemu has used so far (libvirt's ``cpu.time``), in s."""
        out = self.virsh(node, "domstats", "--cpu-total", instance).stdout
        match = re.search(r"cpu\.time=(\d+)", out)
        if match is None:
            raise BenchError(f"no cpu.time for {instance} on {node}: {out.strip()[-300:]}")
        return int(match.group(1)) / 1e9

    def console_size(self, instance: str, node: str) -> int:
        """Current size of the instance's console log on ``node`` (0 if none)."""
        return devguest.console_size(self.console_path(instance, node))

    def wait_console(
        self, instance: str, node: str, text: str, timeout: float = 90, since: int = 0
    ) -> None:
        """Wait until the console log on ``node`` contains ``text`` after byte ``since``.

        The log is appended to across boots (and survives the instance's
        removal), so a caller waiting for this boot passes the size the log
        had before the start (``console_size``).
        """
        path = self.console_path(instance, node)
        try:
            devguest.wait_console(path, re.escape(text), timeout, start=since)
        except GenericError as err:
            why = f"{instance}: no '{text}' on the console within {timeout:g} s"
            raise BenchError(why) from err


class TickWatcher:
    """Follows a console log and records when each ``tick N`` line arrives.

    ``poll()`` reads what was appended since the last call; the largest gap
    between arrivals inside a window is the guest's longest heartbeat gap as
    seen from the host (resolution: the polling interval).
    """

    def __init__(self, path: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self.clock = clock
        self.offset = os.path.getsize(path) if os.path.exists(path) else 0
        self.partial = ""
        self.arrivals: list[float] = []

    def poll(self) -> int:
        """Read new console output; return how many ticks arrived."""
        try:
            with open(self.path, "rb") as fh:
                if os.fstat(fh.fileno()).st_size < self.offset:
                    # The log was replaced or truncated (domain re-created): start over.
                    self.offset, self.partial = 0, ""
                fh.seek(self.offset)
                data = fh.read()
        except FileNotFoundError:
            return 0
        self.offset += len(data)
        text = self.partial + data.decode(errors="replace")
        lines = text.split("\n")
        self.partial = lines.pop()
        now = self.clock()
        count = 0
        for line in lines:
            if TICK_RE.match(line.strip("\r")):
                self.arrivals.append(now)
                count += 1
        return count

    def longest_gap(self, start: float, end: float) -> float:
        """Longest interval without a tick between ``start`` and ``end``."""
        return longest_gap(self.arrivals, start, end)


def longest_gap(arrivals: Sequence[float], start: float, end: float) -> float:
    """Longest interval in [start, end] not containing an arrival time."""
    inside = sorted(t for t in arrivals if start <= t <= end)
    points = [start, *inside, end]
    return max((b - a for a, b in zip(points, points[1:], strict=False)), default=end - start)


def parse_jobinfo(text: str) -> dict[str, float]:
    """Numbers of ``virsh domjobinfo --completed`` output, keyed like 'time_elapsed_ms'.

    'Time elapsed: 1234 ms' -> {'time_elapsed_ms': 1234.0}; 'Data processed:
    1.5 GiB' -> {'data_processed_mib': 1536.0}.
    """
    units = {
        "ms": ("ms", 1.0),
        "b": ("mib", 1 / 2**20),
        "kib": ("mib", 1 / 1024),
        "mib": ("mib", 1.0),
        "gib": ("mib", 1024.0),
        "mib/s": ("mib_s", 1.0),
    }
    return parse_fields(text, units)


def parse_fields(text: str, units: dict[str, tuple[str, float]]) -> dict[str, float]:
    """Numbers of 'Key name: NUMBER [unit]' lines, keyed 'key_name[_suffix]'.

    ``units`` maps a (lower-case) unit to the key's suffix and the factor the
    number is multiplied by; a number with another unit or none keeps its
    bare key. Lines without a number are left out.
    """
    out: dict[str, float] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        fields = value.split()
        if not fields:
            continue
        try:
            number = float(fields[0])
        except ValueError:
            continue
        name = re.sub(r"[^a-z0-9]+", "_", key.strip().lower()).strip("_")
        unit = fields[1].lower() if len(fields) > 1 else ""
        if unit in units:
            suffix, factor = units[unit]
            out[f"{name}_{suffix}"] = number * factor
        else:
            out[name] = number
    return out
