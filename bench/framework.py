"""Framework benchmark: processor, locks and configuration, each against a bare baseline.

* processor: opcodes per second through ``Processor.execute`` with the fake
  node operations (``OpTestDelay(duration=0)``, without locks and holding
  an instance and a node lock), against a bare function-call loop and a
  bare durable job record (three durable atomic JSON writes: queued,
  running, success);
* locks: acquire + release of single instance locks per second with 10,000
  instances known, and the whole level (ALL_SET) at once, against a bare
  open + flock + unlock + close loop over the same files;
* config: saving the configuration with 1,000 instances and 100 nodes
  (``ConfigStore.update()``: read, modify, write with fsync and rename)
  against a bare ``json.dump`` + fsync + rename of the same data.

Each part runs in its own subprocess, so its memory peak (``ru_maxrss``) and
the Python heap peak (tracemalloc, measured in a separate untimed pass) are
its own. Run directly: ``python -m bench.framework [--quick]``.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import stats  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("processor", "locks", "config")

# Bounded counts: the whole framework benchmark takes well under a minute.
FULL = {"runs": 5, "ops": 200, "lock_names": 10_000, "lock_rounds": 2_000, "saves": 20}
QUICK = {"runs": 3, "ops": 30, "lock_names": 10_000, "lock_rounds": 300, "saves": 5}


# ------------------------------------------------------------------ fixtures


def make_config(n_nodes: int, n_instances: int) -> Any:
    """A ConfigData with ``n_nodes`` nodes and ``n_instances`` realistic instances."""
    from ganeti_lv import constants
    from ganeti_lv.objects import Cluster, ConfigData, Disk, Instance, Nic, Node

    nodes = {
        f"node{i:03d}.example.com": Node(
            name=f"node{i:03d}.example.com",
            address=f"10.250.{i // 250}.{i % 250 + 1}",
            libvirt_uri=f"qemu+tcp://10.250.{i // 250}.{i % 250 + 1}/system",
        )
        for i in range(n_nodes)
    }
    names = sorted(nodes)
    instances = {}
    for i in range(n_instances):
        name = f"inst{i:05d}.example.com"
        instances[name] = Instance(
            name=name,
            primary_node=names[i % len(names)],
            disk_template=constants.DT_FILE,
            disks=[Disk(size=10240), Disk(size=2048)],
            nics=[Nic(mac=f"aa:00:00:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}")],
            beparams={"maxmem": 1024, "minmem": 1024, "vcpus": 2},
            hvparams={"kernel_args": "console=ttyS0"},
            admin_state=constants.ADMINST_UP,
            tags=["bench", f"group{i % 10}"],
        )
    cluster = Cluster(name="bench.example.com", master_node=names[0])
    return ConfigData(cluster=cluster, nodes=nodes, instances=instances)


def _timed(fn: Callable[[], Any], count: int) -> float:
    """Seconds per call of ``fn`` over ``count`` calls."""
    start = time.perf_counter()
    for _ in range(count):
        fn()
    return (time.perf_counter() - start) / count


def _heap_peak(fn: Callable[[], Any]) -> int:
    """Peak Python heap (bytes) allocated while ``fn`` runs."""
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def atomic_json_write(path: str, data: Any) -> None:
    """The bare baseline of a durable save: dump, fsync, rename, fsync the dir.

    ``json.dumps`` without indentation uses CPython's C encoder: the fastest
    plain-JSON save a bare script would do.
    """
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fobj:
        fobj.write(json.dumps(data))
        fobj.flush()
        os.fsync(fobj.fileno())
    os.rename(tmp, path)
    dfd = os.open(os.path.dirname(path), os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


# ------------------------------------------------------------------ processor


def _fake_processor(workdir: str, sub: str, n_nodes: int, n_instances: int) -> tuple[Any, Any]:
    """A Processor on a fresh data dir with fake node operations; (processor, config)."""
    from ganeti_lv import constants
    from ganeti_lv.config import ConfigStore
    from ganeti_lv.context import Context
    from ganeti_lv.hypervisor.fake import FakeNodeOps
    from ganeti_lv.mcpu import Processor

    data = make_config(n_nodes, n_instances)
    for inst in data.instances.values():
        inst.admin_state = constants.ADMINST_DOWN
    ddir = os.path.join(workdir, sub)
    ConfigStore.initialize(ddir, data)
    fake = FakeNodeOps()
    for name in data.nodes:
        fake.add_node(name, memory_total=65536, bridges=[data.cluster.default_bridge])
    ctx = Context.from_data_dir(ddir, node_ops=fake, lock_timeout=10.0)
    return Processor(ctx), data


def _startup_shutdown(proc: Any, instance: str) -> Callable[[], None]:
    """One instance startup and one shutdown through the processor (hooks on the fake)."""
    from ganeti_lv.opcodes import OpInstanceShutdown, OpInstanceStartup

    def pair() -> None:
        proc.execute(OpInstanceStartup(instance_name=instance))
        proc.execute(OpInstanceShutdown(instance_name=instance, timeout=1))

    return pair


def bench_processor(workdir: str, p: dict[str, int]) -> dict[str, Any]:
    """Opcodes per second through the processor vs bare baselines.

    Besides ``OpTestDelay(0)`` (the processor alone), instance startup +
    shutdown pairs run real LUs (config reads, locks, hooks on the fake) on
    a small configuration and on one with 1,000 instances and 100 nodes.
    """
    from ganeti_lv.opcodes import OpTestDelay

    proc, data = _fake_processor(workdir, "small", 3, 10)
    inst = sorted(data.instances)[0]
    node = data.instances[inst].primary_node
    large_proc, large = _fake_processor(
        workdir, "large", p.get("cfg_nodes", 100), p.get("cfg_instances", 1000)
    )
    lu_small = _startup_shutdown(proc, sorted(data.instances)[1])
    lu_large = _startup_shutdown(large_proc, sorted(large.instances)[0])

    def op_plain() -> None:
        proc.execute(OpTestDelay(duration=0))

    def op_locked() -> None:
        proc.execute(OpTestDelay(duration=0, instance_names=[inst], node_names=[node]))

    def bare_call() -> bool:
        return True

    job_path = os.path.join(workdir, "job.json")
    record = OpTestDelay(duration=0).to_dict()

    def bare_job() -> None:
        for status in ("queued", "running", "success"):
            atomic_json_write(job_path, {"op": record, "status": status})

    op_plain()  # warm up imports and lock files
    lu_small()
    series: dict[str, list[float]] = {
        "plain": [],
        "locked": [],
        "bare_call": [],
        "bare_job": [],
        "lu_small": [],
        "lu_large": [],
    }
    for run_idx in range(p["runs"]):
        series["plain"].append(_timed(op_plain, p["ops"]))
        series["locked"].append(_timed(op_locked, p["ops"]))
        series["bare_call"].append(_timed(bare_call, p["ops"] * 100))
        series["bare_job"].append(_timed(bare_job, p["ops"]))
        series["lu_small"].append(_timed(lu_small, max(1, p["ops"] // 4)) / 2)
        if run_idx < 3:  # bounded: each op re-reads the large configuration
            series["lu_large"].append(_timed(lu_large, 1) / 2)

    def ten_ops() -> None:
        for _ in range(10):
            op_locked()

    heap = _heap_peak(ten_ops)
    med = {k: stats.median(v) for k, v in series.items()}
    return {
        "ops_per_run": p["ops"],
        "runs": p["runs"],
        "seconds_per_op": med,
        "ops_per_second": {k: stats.per_second(1, v) for k, v in med.items()},
        "overhead_ms_per_op": med["plain"] * 1000,
        "overhead_ms_per_op_locked": med["locked"] * 1000,
        "lu_ms_per_op_small": med["lu_small"] * 1000,
        "lu_ms_per_op_large": med["lu_large"] * 1000,
        "large_instances": len(large.instances),
        "ratio_locked_to_bare_job": stats.median_pair_ratio(series["locked"], series["bare_job"]),
        "heap_peak_bytes_10_ops": heap,
    }


# ------------------------------------------------------------------ locks


def bench_locks(workdir: str, p: dict[str, int]) -> dict[str, Any]:
    """Lock acquire/release per second with 10,000 instances vs a bare flock loop."""
    from ganeti_lv import locking
    from ganeti_lv.locking import ALL_SET, LockManager

    names = [f"inst{i:05d}.example.com" for i in range(p["lock_names"])]
    locks_dir = os.path.join(workdir, "locks")
    known = frozenset(names)  # as the configuration's instances (a dict's keys)
    mgr = LockManager(
        locks_dir, names_fn=lambda level: known if level == locking.LEVEL_INSTANCE else None
    )
    # Create every lock file once (as a long-lived cluster has them).
    mgr.acquire(locking.LEVEL_INSTANCE, ALL_SET, shared=False, timeout=60)
    mgr.release_all()
    level_dir = os.path.join(locks_dir, os.listdir(locks_dir)[0])
    files = sorted(os.path.join(level_dir, f) for f in os.listdir(level_dir) if f.endswith(".lock"))
    rounds = min(p["lock_rounds"], len(names))
    step = max(1, len(names) // rounds)
    picked = names[::step][:rounds]
    picked_files = files[::step][:rounds]

    def single() -> None:
        for name in picked:
            mgr.acquire(locking.LEVEL_INSTANCE, [name], shared=False, timeout=10)
            mgr.release(locking.LEVEL_INSTANCE)

    def bare_single() -> None:
        for path in picked_files:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def all_set() -> None:
        mgr.acquire(locking.LEVEL_INSTANCE, ALL_SET, shared=True, timeout=60)
        mgr.release_all()

    def bare_all() -> None:
        fds = []
        for path in files:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            fds.append(fd)
        for fd in fds:
            os.close(fd)

    series: dict[str, list[float]] = {"single": [], "bare_single": [], "all": [], "bare_all": []}
    for _ in range(p["runs"]):
        series["single"].append(_timed(single, 1) / rounds)
        series["bare_single"].append(_timed(bare_single, 1) / rounds)
        series["all"].append(_timed(all_set, 1))
        series["bare_all"].append(_timed(bare_all, 1))
    heap = _heap_peak(all_set)
    med = {k: stats.median(v) for k, v in series.items()}
    return {
        "instances": len(names),
        "single_rounds": rounds,
        "runs": p["runs"],
        "acquire_release_per_second": stats.per_second(1, med["single"]),
        "bare_flock_per_second": stats.per_second(1, med["bare_single"]),
        "ratio_single_to_bare": stats.median_pair_ratio(series["single"], series["bare_single"]),
        "all_set_seconds": med["all"],
        "bare_all_seconds": med["bare_all"],
        "ratio_all_to_bare": stats.median_pair_ratio(series["all"], series["bare_all"]),
        "heap_peak_bytes_all_set": heap,
    }


# ------------------------------------------------------------------ config


def bench_config(workdir: str, p: dict[str, int]) -> dict[str, Any]:
    """Configuration save with 1,000 instances and 100 nodes vs a bare atomic dump."""
    from ganeti_lv import constants
    from ganeti_lv.config import ConfigStore

    data = make_config(p.get("cfg_nodes", 100), p.get("cfg_instances", 1000))
    ddir = os.path.join(workdir, "data")
    store = ConfigStore.initialize(ddir, data)
    size = os.path.getsize(store.path)
    names = sorted(data.instances)
    as_dict = data.to_dict()
    bare_path = os.path.join(workdir, "bare.json")
    counter = {"i": 0}

    def save() -> None:
        counter["i"] += 1
        name = names[counter["i"] % len(names)]
        with store.update() as cfg:
            inst = cfg.instances[name]
            inst.admin_state = (
                constants.ADMINST_DOWN
                if inst.admin_state == constants.ADMINST_UP
                else constants.ADMINST_UP
            )

    def read() -> None:
        store.read()

    def bare() -> None:
        atomic_json_write(bare_path, as_dict)

    series: dict[str, list[float]] = {"save": [], "bare": [], "read": []}
    for _ in range(p["runs"]):
        series["save"].append(_timed(save, p["saves"]))
        series["bare"].append(_timed(bare, p["saves"]))
        series["read"].append(_timed(read, p["saves"]))
    heap = _heap_peak(save)
    med = {k: stats.median(v) for k, v in series.items()}
    return {
        "instances": len(data.instances),
        "nodes": len(data.nodes),
        "file_bytes": size,
        "runs": p["runs"],
        "save_ms": med["save"] * 1000,
        "bare_dump_ms": med["bare"] * 1000,
        "read_ms": med["read"] * 1000,
        "ratio_save_to_bare": stats.median_pair_ratio(series["save"], series["bare"]),
        "heap_peak_bytes_save": heap,
    }


BENCHES: dict[str, Callable[[str, dict[str, int]], dict[str, Any]]] = {
    "processor": bench_processor,
    "locks": bench_locks,
    "config": bench_config,
}


# ------------------------------------------------------------------ driver


def run_part_here(part: str, quick: bool, tmpfs: bool = False) -> dict[str, Any]:
    """Run one part in this process (in a scratch dir) and add its memory peak.

    ``tmpfs`` puts the scratch dir on /dev/shm: fsync costs nothing there,
    which separates the CPU cost from the disk's durability cost.
    """
    params = QUICK if quick else FULL
    base = "/dev/shm" if tmpfs and os.path.isdir("/dev/shm") else None
    with tempfile.TemporaryDirectory(prefix=f"gnt-lv-bench-{part}-", dir=base) as workdir:
        result = BENCHES[part](workdir, params)
    result["maxrss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result["scratch"] = "tmpfs" if base else "disk"
    return result


def run_part_subprocess(
    part: str, quick: bool, tmpfs: bool = False, timeout: float = 300
) -> dict[str, Any]:
    """Run one part in a fresh interpreter so its memory peak is its own."""
    argv = [sys.executable, "-m", "bench.framework", "--part", part, "--json"]
    if quick:
        argv.append("--quick")
    if tmpfs:
        argv.append("--tmpfs")
    proc = subprocess.run(
        argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode != 0:
        return {"error": (proc.stderr or proc.stdout).strip()[-2000:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_all(quick: bool = False) -> dict[str, Any]:
    """Every part on disk, and processor and config again on tmpfs, each in a subprocess."""
    results = {part: run_part_subprocess(part, quick) for part in PARTS}
    for part in ("processor", "config"):
        results[f"{part}_tmpfs"] = run_part_subprocess(part, quick, tmpfs=True)
    return results


def targets(results: dict[str, Any]) -> list[stats.Target]:
    """Issue 6's framework targets evaluated on ``results``."""
    nan = float("nan")
    proc = results.get("processor", {})
    cfg = results.get("config", {})
    return [
        stats.Target(
            "processor overhead per opcode", proc.get("overhead_ms_per_op", nan), 5.0, "<=", "ms"
        ),
        stats.Target(
            "configuration save, 1,000 instances", cfg.get("save_ms", nan), 50.0, "<=", "ms"
        ),
    ]


def _mib(kib: float | None) -> float:
    return float("nan") if kib is None else kib / 1024


def _processor_rows(proc: dict[str, Any], where: str) -> list[list[Any]]:
    nan = float("nan")
    per_op = proc.get("seconds_per_op", {})
    job_ms = stats.fmt(per_op.get("bare_job", nan) * 1000, 3)
    return [
        [
            f"processor, OpTestDelay(0), no locks ({where})",
            f"{stats.fmt(proc.get('overhead_ms_per_op', nan), 3)} ms/op",
            f"bare call {stats.fmt(per_op.get('bare_call', nan) * 1e6, 3)} µs; "
            f"bare job record {job_ms} ms",
            "-",
            _mib(proc.get("maxrss_kib")),
        ],
        [
            f"processor, OpTestDelay(0), instance + node lock ({where})",
            f"{stats.fmt(proc.get('overhead_ms_per_op_locked', nan), 3)} ms/op",
            f"bare job record {job_ms} ms",
            proc.get("ratio_locked_to_bare_job", nan),
            "",
        ],
        [
            f"instance startup/shutdown on the fake, 10 instances ({where})",
            f"{stats.fmt(proc.get('lu_ms_per_op_small', nan), 2)} ms/op",
            "-",
            "-",
            "",
        ],
        [
            f"instance startup/shutdown on the fake, "
            f"{proc.get('large_instances', 0):,} instances ({where})",
            f"{stats.fmt(proc.get('lu_ms_per_op_large', nan), 1)} ms/op",
            "-",
            "-",
            "",
        ],
    ]


def _config_row(cfg: dict[str, Any], where: str) -> list[Any]:
    nan = float("nan")
    return [
        f"config save, {cfg.get('instances', 0):,} instances / {cfg.get('nodes', 0)} nodes "
        f"({where}; read alone {stats.fmt(cfg.get('read_ms', nan), 1)} ms)",
        f"{stats.fmt(cfg.get('save_ms', nan), 2)} ms",
        f"bare json.dumps+fsync+rename {stats.fmt(cfg.get('bare_dump_ms', nan), 2)} ms",
        cfg.get("ratio_save_to_bare", nan),
        _mib(cfg.get("maxrss_kib")),
    ]


def markdown(results: dict[str, Any]) -> str:
    """The framework results as a markdown table."""
    nan = float("nan")
    locks = results.get("locks", {})
    rows = _processor_rows(results.get("processor", {}), "disk")
    rows += _processor_rows(results.get("processor_tmpfs", {}), "tmpfs")
    rows += [
        [
            f"lock acquire+release, {locks.get('instances', 0):,} instances",
            f"{stats.fmt(locks.get('acquire_release_per_second', nan), 0)} /s",
            f"bare flock {stats.fmt(locks.get('bare_flock_per_second', nan), 0)} /s",
            locks.get("ratio_single_to_bare", nan),
            _mib(locks.get("maxrss_kib")),
        ],
        [
            f"lock whole instance level (ALL_SET, {locks.get('instances', 0):,} names), shared",
            f"{stats.fmt(locks.get('all_set_seconds', nan) * 1000, 1)} ms",
            f"bare flock of all {stats.fmt(locks.get('bare_all_seconds', nan) * 1000, 1)} ms",
            locks.get("ratio_all_to_bare", nan),
            "",
        ],
        _config_row(results.get("config", {}), "disk"),
        _config_row(results.get("config_tmpfs", {}), "tmpfs"),
    ]
    errors = [f"{part}: {res['error']}" for part, res in results.items() if "error" in res]
    headers = ["framework", "ganeti_lv (median)", "baseline (median)", "ratio", "peak RSS MiB"]
    table = stats.markdown_table(headers, rows)
    if errors:
        table += "\n\nErrors:\n" + "\n".join(f"- {e.splitlines()[-1]}" for e in errors)
    return table


def main(argv: list[str] | None = None) -> int:
    """Run the framework benchmark (or one part with ``--part``) and print the results."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--part", choices=PARTS)
    parser.add_argument("--quick", action="store_true", help="fewer iterations")
    parser.add_argument("--json", action="store_true", help="print JSON only")
    parser.add_argument("--tmpfs", action="store_true", help="scratch dir on /dev/shm")
    opts = parser.parse_args(argv)
    if opts.part:
        result = run_part_here(opts.part, opts.quick, opts.tmpfs)
        print(json.dumps(result))
        return 0
    results = run_all(opts.quick)
    if opts.json:
        print(json.dumps(results))
        return 0
    print(markdown(results))
    for target in targets(results):
        print(
            f"target: {target.name} {target.op} {target.limit:g} {target.unit}: "
            f"{stats.fmt(target.value, 3)} -> {target.verdict()}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
