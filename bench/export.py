"""Export benchmark: ``gnt-lv backup export --noshutdown`` against raw copies.

Two disks of a running guest on node1 are exported to node3:

* ``full``: 1 GiB written completely with random (incompressible) data;
* ``sparse``: 4 GiB with 256 MiB of random data, the rest a hole.

Baselines, on the same image between the same nodes, while the guest runs:

* a raw OpenSSH pipe node to node: ``ssh node1 "cat IMG | ssh node3 'cat > FILE'"``
  (measured alternately with ganeti_lv: A, B, A, B ...);
* a local ``cp --sparse=always`` on node1 (what a copy costs without a network).

``gnt-lv`` submits to the cluster's master daemon (``gnt-lv-masterd``), as on
a Ganeti master.

Reported: wall time, MiB/s of allocated data, ratio to the raw pipe (median of
the pairs), bytes that crossed the wire (the source node's link counters),
the allocated size on the target, and the longest gap in the guest's
heartbeat (``tick N`` on its console, seen from the host) during each copy.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

from bench import stats
from bench.common import BenchCluster, BenchError, Feedback, Guest, TickWatcher, run

MIB = 1 << 20
SRC, DST = "node1", "node3"
CASES = {
    "full": {"size": "1G", "size_mib": 1024, "written_mib": 1024},
    "sparse": {"size": "4G", "size_mib": 4096, "written_mib": 256},
}
RAW_NAME = "bench-raw.img"
CP_NAME = "bench-cp.img"


def allocated_bytes(path: str) -> int:
    """Allocated bytes of a file, or of every file under a directory."""
    if os.path.isdir(path):
        total = 0
        for root, _dirs, files in os.walk(path):
            for name in files:
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
        return total
    return os.stat(path).st_blocks * 512


def link_bytes(veth: str) -> int:
    """Bytes the node sent: received by the host side of its veth."""
    with open(f"/sys/class/net/{veth}/statistics/rx_bytes", encoding="ascii") as fh:
        return int(fh.read())


class Heartbeat:
    """Polls the guest console in a thread while a copy runs."""

    def __init__(self, path: str, interval: float = 0.05) -> None:
        self.watcher = TickWatcher(path)
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.watcher.poll()
            self._stop.wait(self.interval)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.watcher.poll()


class ExportBench:
    """One benchmark disk on a running guest; runs the three kinds of copy."""

    def __init__(self, cl: BenchCluster, case: str, feedback: Feedback) -> None:
        self.cl = cl
        self.case = case
        self.spec = CASES[case]
        self.name = f"bx{case}"
        self.feedback = feedback
        self.veth = str(cl.node(SRC)["veth"])
        storage = cl.info["storage"]
        self.export_dir = str(storage["export_dir"])
        self.file_dir = str(storage["file_storage_dir"])
        self.disk_node_path = ""
        self.disk_host_path = ""
        self.source_allocated = 0

    # ------------------------------------------------------------ set-up
    def setup(self) -> None:
        """Create the instance, fill its disk with random data, start it."""
        from ganeti_lv import objects

        self.teardown()
        self.cl.add_instance(
            self.name,
            SRC,
            Guest(seed=self.name, patmb=1, dirtymb=0),
            memory=128,
            disk=str(self.spec["size"]),
            template="file",
            start=False,
        )
        cfg = self.cl.config()
        self.disk_node_path = objects.disk_path(cfg.cluster, cfg.instances[self.name], 0)
        self.disk_host_path = self.cl.host_path(SRC, self.disk_node_path)
        self.feedback(f"export: writing {self.spec['written_mib']} MiB of random data")
        run(
            [
                "dd",
                "if=/dev/urandom",
                f"of={self.disk_host_path}",
                "bs=1M",
                f"count={self.spec['written_mib']}",
                "conv=notrunc,fsync",
                "status=none",
            ],
            timeout=300,
        )
        # The console log of an earlier instance of the same name may still hold
        # a GUEST-READY: wait for the one of this boot.
        since = self.cl.console_size(self.name, SRC)
        self.cl.gnt("instance", "startup", self.name, timeout=300)
        self.cl.wait_console(self.name, SRC, "GUEST-READY", timeout=120, since=since)
        self.source_allocated = allocated_bytes(self.disk_host_path)

    def teardown(self) -> None:
        """Remove the export, the baseline copies and the instance."""
        self.cl.gnt("backup", "remove", self.name, check=False, timeout=120)
        for node, directory, fname in (
            (DST, self.export_dir, RAW_NAME),
            (SRC, self.file_dir, CP_NAME),
        ):
            path = self.cl.host_path(node, f"{directory}/{fname}")
            if os.path.exists(path):
                os.unlink(path)
        self.cl.remove_instance(self.name)

    # ------------------------------------------------------------ one copy
    def _measure(self, copy: Callable[[], object], target_host_path: str) -> dict[str, Any]:
        console = self.cl.console_path(self.name, SRC)
        before = link_bytes(self.veth)
        with Heartbeat(console) as hb:
            start = time.monotonic()
            copy()
            end = time.monotonic()
        wall = end - start
        return {
            "wall": wall,
            "mib_s": self.source_allocated / MIB / wall if wall > 0 else float("nan"),
            "wire_bytes": link_bytes(self.veth) - before,
            "target_allocated": allocated_bytes(target_host_path),
            "heartbeat_gap": hb.watcher.longest_gap(start, end),
        }

    def export_gnt(self, _i: int = 0) -> dict[str, Any]:
        """``gnt-lv backup export --noshutdown`` to node3."""
        self.cl.gnt("backup", "remove", self.name, check=False, timeout=120)
        target = self.cl.host_path(DST, f"{self.export_dir}/{self.name}")
        result = self._measure(
            lambda: self.cl.gnt(
                "backup", "export", "--noshutdown", "-n", DST, self.name, timeout=900
            ),
            target,
        )
        self.cl.gnt("backup", "remove", self.name, check=False, timeout=120)
        return result

    def raw_pipe(self, _i: int = 0) -> dict[str, Any]:
        """``cat IMG | ssh node3 'cat > FILE'`` run on node1 (OpenSSH, node to node)."""
        dst_file = f"{self.export_dir}/{RAW_NAME}"
        dst_addr = str(self.cl.node(DST)["address"])
        remote = shlex.quote(f"cat > {shlex.quote(dst_file)}")
        script = f"cat {shlex.quote(self.disk_node_path)} | ssh root@{dst_addr} {remote}"
        target = self.cl.host_path(DST, dst_file)
        result = self._measure(
            lambda: self.cl.node_exec(SRC, ["sh", "-c", script], timeout=900), target
        )
        os.unlink(target)
        self._settle()
        return result

    def local_cp(self, _i: int = 0) -> dict[str, Any]:
        """``cp --sparse=always`` on node1 into its own storage."""
        dst_file = f"{self.file_dir}/{CP_NAME}"
        target = self.cl.host_path(SRC, dst_file)
        result = self._measure(
            lambda: self.cl.node_exec(
                SRC, ["cp", "--sparse=always", self.disk_node_path, dst_file], timeout=900
            ),
            target,
        )
        os.unlink(target)
        self._settle()
        return result

    def _settle(self) -> None:
        """Write back, untimed, what a baseline's copy left in the page cache: the export
        syncs its files before it ends, so the next copy would otherwise pay for it."""
        self.cl.node_exec(SRC, ["sync"], timeout=300)

    def run(self, pairs: int) -> dict[str, Any]:
        """Alternating pairs export / raw pipe, then local copies."""
        self.feedback(f"export: {self.case} disk, {pairs} pairs")
        gnt, pipe = stats.alternate(self.export_gnt, self.raw_pipe, pairs)
        cps = [self.local_cp(i) for i in range(pairs)]
        return {
            "disk_mib": self.spec["size_mib"],
            "written_mib": self.spec["written_mib"],
            "source_allocated": self.source_allocated,
            "pairs": pairs,
            "ganeti_lv": _summary(gnt),
            "raw_pipe": _summary(pipe),
            "local_cp": _summary(cps),
            # Throughput ratio: time of the pipe over time of the export, pair by pair.
            "ratio_to_pipe": stats.median_pair_ratio(
                [p["wall"] for p in pipe], [g["wall"] for g in gnt]
            ),
            "runs": {"ganeti_lv": gnt, "raw_pipe": pipe, "local_cp": cps},
        }


def _summary(runs: list[dict[str, Any]]) -> dict[str, float]:
    keys = ("wall", "mib_s", "wire_bytes", "target_allocated", "heartbeat_gap")
    out = {k: stats.median(r[k] for r in runs) for k in keys}
    out["heartbeat_gap_max"] = max((r["heartbeat_gap"] for r in runs), default=float("nan"))
    return out


def run_all(cl: BenchCluster, quick: bool, feedback: Feedback) -> dict[str, Any]:
    """Both disks on a cluster that is up; returns the results."""
    pairs = 1 if quick else 3
    out: dict[str, Any] = {}
    cl.start_masterd()
    try:
        for case in CASES:
            bench = ExportBench(cl, case, feedback)
            try:
                bench.setup()
                out[case] = bench.run(pairs if case == "full" else max(1, pairs - 1))
            except (BenchError, subprocess.TimeoutExpired, OSError) as err:
                out[case] = {"error": str(err)}
            finally:
                bench.teardown()
    finally:
        cl.stop_masterd()
    return out


def targets(results: dict[str, Any]) -> list[stats.Target]:
    """The export targets (issue 6; the throughput ratio raised to 0.9 by issue 15)."""
    nan = float("nan")
    full = results.get("full", {})
    sparse = results.get("sparse", {})
    full_rate = full.get("ganeti_lv", {}).get("mib_s", nan)
    sparse_alloc_mib = sparse.get("source_allocated", 0) / MIB
    sparse_wall = sparse.get("ganeti_lv", {}).get("wall", nan)
    alone = sparse_alloc_mib / full_rate if full_rate and full_rate == full_rate else nan
    source_alloc = sparse.get("source_allocated") or nan
    target_alloc = sparse.get("ganeti_lv", {}).get("target_allocated", nan)
    gaps = [
        r.get("ganeti_lv", {}).get("heartbeat_gap_max", nan)
        for r in (full, sparse)
        if "ganeti_lv" in r
    ]
    return [
        stats.Target(
            "export of fully written data vs raw OpenSSH pipe (throughput ratio)",
            full.get("ratio_to_pipe", nan),
            0.9,
            ">=",
        ),
        stats.Target(
            "sparse export time / time of its allocated data alone",
            sparse_wall / alone if alone else nan,
            1.5,
            "<=",
        ),
        stats.Target(
            "sparse export stays sparse (allocated on target / on source)",
            target_alloc / source_alloc,
            1.1,
            "<=",
        ),
        stats.Target(
            "longest heartbeat gap during a live export",
            max(gaps) if gaps else nan,
            2.0,
            "<=",
            "s",
        ),
    ]


def markdown(results: dict[str, Any], extra_full: list[list[Any]] | None = None) -> str:
    """The export results as a markdown table.

    ``extra_full``: more rows for the fully written disk (Ganeti's export of
    the same disk, measured by the Ganeti comparison).
    """
    rows: list[list[Any]] = []
    for case, res in results.items():
        if case not in CASES:
            continue
        if "error" in res:
            rows.append([case, "error", res["error"][-200:], "", "", "", "", "", ""])
            continue
        label = f"{case}: {res['disk_mib']} MiB disk, {res['written_mib']} MiB random"
        for tool in ("ganeti_lv", "raw_pipe", "local_cp"):
            r = res[tool]
            ratio = (
                res["ratio_to_pipe"]
                if tool == "ganeti_lv"
                else (1.0 if tool == "raw_pipe" else float("nan"))
            )
            rows.append(
                [
                    label if tool == "ganeti_lv" else "",
                    tool.replace("_", " "),
                    r["wall"],
                    r["mib_s"],
                    ratio,
                    r["wire_bytes"] / MIB,
                    r["target_allocated"] / MIB,
                    r["heartbeat_gap_max"],
                    ", ".join(
                        stats.fmt(x["heartbeat_gap"], 1) for x in res.get("runs", {}).get(tool, [])
                    ),
                ]
            )
        if case == "full":
            rows += extra_full or []
    headers = [
        "disk",
        "copy",
        "wall s",
        "MiB/s allocated",
        "ratio to raw pipe",
        "wire MiB",
        "allocated on target MiB",
        "longest heartbeat gap s",
        "gap per run s",
    ]
    return stats.markdown_table(headers, rows)
