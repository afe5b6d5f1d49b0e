"""Migration benchmark: ``gnt-lv instance migrate`` against plain ``virsh migrate``.

The same guest (sharedfile disk, empty hook directories) is migrated back and
forth between node1 and node2, alternately by ganeti_lv and by

    virsh -c <source> migrate --live --p2p --persistent --undefinesource \\
        --unsafe --migrateuri tcp://<target address> <domain> <target peer URI>

which is what ganeti_lv asks libvirt for on a cluster that declared its
shared storage coherent (the local cluster does). Both run with
ganeti_lv's defaults: unlimited bandwidth, and the maximum downtime
ganeti_lv gives a migration (``migration_downtime``, 300 ms), which virsh
gets through ``virsh migrate-setmaxdowntime`` on the source just before
each migration (untimed); ganeti_lv starts lower (5 ms) and rises to that
limit only while the guest does not converge. After a virsh migration the
configuration is told where the instance went (untimed), as an operator
would have to.

``gnt-lv`` runs as on a Ganeti master: with the cluster's master daemon
(``gnt-lv-masterd``) running, which takes the job with its node connections
already open. The 256 MiB idle case is measured once more with ``gnt-lv``
on its own (no daemon: a new process, new connections, every time).

Cases: memory 128, 256 and 512 MiB, idle and with the 32 MiB dirtier. Per
case: wall time of each tool, libvirt's total time and downtime, and the
ratio ganeti_lv / virsh as the median of alternating pairs. Each case
starts with one unmeasured migration by each tool (the guest has just
booted, and an instance's first move to a node also creates its console
log there). Then a guest
dirtying memory faster than a bandwidth limit: does each tool converge, and
how long does it take (virsh is aborted after a cap)?

One more case moves an instance on node-local files (``file``: its 256 MiB
disk is copied with the memory), against ``virsh migrate --copy-storage-all``.
ganeti_lv creates the target's empty images and removes the source's after
the move; for virsh an operator does both by hand, so the bench does them
around its migrations, untimed.

For every migration of both tools qemu's own events are recorded on both
nodes (``qmp_events.libvirt_switchover``): the pause split into libvirt's
pre-switchover wait and its Finish hand-over, the
same protocol for both, since both go through libvirt's peer-to-peer call.
The same events split each tool's wall time in three: from its start until
the source's migration ``setup`` (the tool's own start and checks, then
libvirt's Begin and Prepare, which starts the target's qemu), the
migration itself (``setup`` to ``completed``), and from ``completed`` until
the tool ended (libvirt's Finish and Confirm, which stops the source's
qemu, then the tool's own bookkeeping). What ganeti_lv adds to virsh shows
in the first and the last.

Before the first run ganeti_lv's modules are compiled to bytecode, as
installing the package does: a development checkout run with
PYTHONDONTWRITEBYTECODE=1 would otherwise compile some fifty modules at
every ``gnt-lv`` start (0.15-0.3 s of CPU), which no installed ``gnt-lv``
does and ``virsh`` has no equivalent of.
"""

from __future__ import annotations

import math
import re
import subprocess
import time
from collections.abc import Callable
from typing import Any

from bench import stats
from bench.common import (
    BenchCluster,
    BenchError,
    Feedback,
    Guest,
    ensure_bytecode,
    parse_jobinfo,
    run,
)
from bench.qmp_events import PHASE_KEYS, libvirt_switchover

FULL_CASES = [(128, 0), (128, 32), (256, 0), (256, 32), (512, 0), (512, 32)]
QUICK_CASES = [(128, 0), (256, 32)]
FAST_DIRTY = {"memory": 256, "dirtymb": 64, "bandwidth": 8, "cap": 90.0}
# the instance whose disk is copied: memory MiB, disk size
COPIED_DISK = (256, "256M")
NODES = ("node1", "node2")
GNT_STATS_RE = re.compile(r"total time ([0-9.]+) s, downtime (\d+|unknown)")


def _other(node: str) -> str:
    return NODES[1] if node == NODES[0] else NODES[0]


def lv_downtime_ms(key: str = "migration_downtime") -> int:
    """The maximum downtime ganeti_lv gives a migration by default (ms).

    virsh gets the same (``virsh migrate-setmaxdowntime`` before each
    migration), so the two tools ask qemu for the same limit; ganeti_lv
    starts lower (``key`` ``migration_downtime_initial``) and raises its
    limit up to this one only while the guest does not converge.
    """
    from ganeti_lv import constants

    return int(constants.HVC_DEFAULTS[key])


def set_virsh_downtime(cl: BenchCluster, node: str, name: str) -> int:
    """Give the domain on ``node`` ganeti_lv's default downtime limit; return it (ms).

    libvirt passes the limit to qemu at once, and a migration started later
    keeps it (libvirt only sets the parameters the migration call names).
    """
    limit = lv_downtime_ms()
    cl.virsh(node, "migrate-setmaxdowntime", name, str(limit))
    return limit


def completed_jobinfo(cl: BenchCluster, node: str, name: str) -> dict[str, float]:
    """libvirt's statistics of the completed migration job on ``node`` ({} if none)."""
    proc = cl.virsh(node, "domjobinfo", "--completed", name, check=False)
    return parse_jobinfo(proc.stdout) if proc.returncode == 0 else {}


def _check_running(cl: BenchCluster, node: str, name: str) -> None:
    state = cl.virsh(node, "domstate", name, check=False).stdout.strip()
    if state != "running":
        raise BenchError(f"{name} is '{state}' on {node} after the migration")


def migrate_gnt(cl: BenchCluster, name: str, extra: list[str] | None = None) -> dict[str, Any]:
    """One ``gnt-lv instance migrate`` to the other node; wall time and libvirt figures."""
    src = cl.primary(name)
    dst = _other(src)
    argv = ["instance", "migrate", "-f", "-n", dst, *(extra or []), name]
    with libvirt_switchover(cl.uri(src), cl.uri(dst), name) as split:
        wall, proc = _timed_gnt(cl, argv)
    _check_running(cl, dst, name)
    info = completed_jobinfo(cl, dst, name)
    out = proc.stdout + proc.stderr
    match = GNT_STATS_RE.search(out)
    total_ms = info.get("time_elapsed_ms")
    downtime = info.get("total_downtime_ms")
    if match:
        # ganeti_lv read the completed statistics itself (which consumes them).
        total_ms = total_ms if total_ms is not None else float(match.group(1)) * 1000
        if downtime is None and match.group(2) != "unknown":
            downtime = float(match.group(2))
    return {
        "src": src,
        "dst": dst,
        "wall": wall,
        "total_ms": total_ms,
        "downtime_ms": downtime,
        "memory_mib": info.get("memory_processed_mib"),
        **split,
    }


def _timed_gnt(cl: BenchCluster, argv: list[str]) -> tuple[float, Any]:
    start = time.perf_counter()
    proc = cl.gnt(*argv, timeout=600)
    return time.perf_counter() - start, proc


def virsh_argv(cl: BenchCluster, name: str, src: str, dst: str, extra: list[str]) -> list[str]:
    """The baseline's command line (same flags as ganeti_lv's libvirt call)."""
    target = cl.node(dst)
    return [
        "virsh",
        "-c",
        cl.uri(src),
        "migrate",
        "--live",
        "--p2p",
        "--persistent",
        "--undefinesource",
        "--unsafe",
        "--migrateuri",
        f"tcp://{target.get('migration_address') or target['address']}",
        *extra,
        name,
        target.get("peer_uri") or target["libvirt_uri"],
    ]


def migrate_virsh(cl: BenchCluster, name: str, extra: list[str] | None = None) -> dict[str, Any]:
    """One plain virsh migration to the other node; the configuration is updated after."""
    src = cl.primary(name)
    dst = _other(src)
    argv = virsh_argv(cl, name, src, dst, extra or [])
    limit = set_virsh_downtime(cl, src, name)
    with libvirt_switchover(cl.uri(src), cl.uri(dst), name) as split:
        start = time.perf_counter()
        run(argv, timeout=600)
        wall = time.perf_counter() - start
    cl.record_primary(name, dst)
    _check_running(cl, dst, name)
    info = completed_jobinfo(cl, dst, name)
    return {
        "src": src,
        "dst": dst,
        "wall": wall,
        "total_ms": info.get("time_elapsed_ms"),
        "downtime_ms": info.get("total_downtime_ms"),
        "memory_mib": info.get("memory_processed_mib"),
        "downtime_limit_ms": limit,
        **split,
    }


def _disk_paths(cl: BenchCluster, node: str, name: str) -> list[str]:
    """The file paths of the domain's disks on ``node``."""
    out = cl.virsh(node, "domblklist", "--details", name).stdout
    return [f[3] for f in (line.split() for line in out.splitlines()) if f[:2] == ["file", "disk"]]


def migrate_virsh_copy(cl: BenchCluster, name: str) -> dict[str, Any]:
    """One virsh migration that copies the disks, between an operator's untimed steps.

    Before: empty images of the disks' sizes on the target (libvirt creates
    them only in a storage pool, and the cluster's file storage is none).
    After: the source's images removed, as ganeti_lv does after a move.
    """
    src = cl.primary(name)
    dst = _other(src)
    paths = _disk_paths(cl, src, name)
    for path in paths:
        size = _capacity(cl, src, name, path)
        cl.node_exec(dst, ["mkdir", "-p", path.rsplit("/", 1)[0]])
        cl.node_exec(dst, ["truncate", "-s", str(size), path])
    result = migrate_virsh(cl, name, ["--copy-storage-all"])
    cl.node_exec(src, ["rm", "-f", *paths])
    return result


def _capacity(cl: BenchCluster, node: str, name: str, path: str) -> int:
    out = cl.virsh(node, "domblkinfo", name, path).stdout
    for line in out.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "Capacity":
            return int(value)
    raise BenchError(f"no capacity of {path} in virsh domblkinfo: {out!r}")


def start_guest(
    cl: BenchCluster,
    name: str,
    memory: int,
    dirtymb: int,
    template: str = "sharedfile",
    disk: str = "96M",
) -> None:
    """A fresh instance ``name`` on the first node, returned once its guest is ready."""
    cl.remove_instance(name)
    # The console log of an earlier instance of the same name may still hold
    # a GUEST-READY: wait for the one of this boot.
    since = cl.console_size(name, NODES[0])
    guest = Guest(seed=name, dirtymb=dirtymb)
    cl.add_instance(name, NODES[0], guest, memory=memory, disk=disk, template=template)
    if template == "file":
        # images an earlier run's virsh migration left would stop ganeti_lv's move
        paths = _disk_paths(cl, NODES[0], name)
        for node in NODES[1:]:
            cl.node_exec(node, ["rm", "-f", *paths])
    cl.wait_console(name, NODES[0], "GUEST-READY", timeout=120, since=since)


# the part of qmp_events.SPLIT_KEYS that the migration table shows
TABLE_SPLIT_KEYS = ("stop_to_resume_ms", "switchover_wait_ms", "finish_ms")


def summarize(side: list[dict[str, Any]]) -> dict[str, float]:
    """Medians of one side's runs: wall time, libvirt's total time, downtime, its
    split, and the wall time's phases."""

    return stats.medians(side, ("wall", "total_ms", "downtime_ms", *TABLE_SPLIT_KEYS, *PHASE_KEYS))


def bench_case(
    cl: BenchCluster,
    memory: int,
    dirtymb: int,
    pairs: int,
    feedback: Feedback,
    masterd: bool = True,
    flat: bool = False,
    disk: str | None = None,
) -> dict[str, Any]:
    """Alternating pairs of migrations of one guest; medians and the pair ratio.

    With ``masterd`` gnt-lv submits to the cluster's master daemon (the way a
    master runs); without it, every gnt-lv runs the job in its own process.
    With ``flat`` ganeti_lv's migrations start at their downtime limit, as
    virsh's do (the cluster's ``migration_downtime_initial`` is set to it for
    the case): what the ratio is without the ramp's lower pauses.
    With ``disk`` (a size) the instance is on node-local files with a disk of
    that size, copied by every migration (virsh: ``--copy-storage-all``).
    """
    template = "file" if disk else "sharedfile"
    name = f"bm{memory}d{dirtymb}{'c' if disk else ''}"
    how = "" if masterd else ", without the master daemon"
    how += ", flat downtime limit" if flat else ""
    how += f", {disk} disk copied" if disk else ""
    feedback(f"migration: {memory} MiB guest, dirtier {dirtymb} MiB, {pairs} pairs{how}")
    initial = cl.hvparam("migration_downtime_initial")
    baseline = migrate_virsh_copy if disk else migrate_virsh
    try:  # a guest that did not boot in time is removed too
        start_guest(cl, name, memory, dirtymb, template=template, disk=disk or "96M")
        if flat:
            cl.set_hvparam("migration_downtime_initial", lv_downtime_ms())
        # one unmeasured pair first: the guest has just booted, and the first
        # move of an instance to a node also creates its console log there
        migrate_gnt(cl, name)
        baseline(cl, name)
        gnt, virsh = stats.alternate(
            lambda _i: migrate_gnt(cl, name), lambda _i: baseline(cl, name), pairs
        )
    finally:
        try:
            if flat:
                cl.set_hvparam("migration_downtime_initial", initial)
        finally:
            cl.remove_instance(name)
    return {
        "memory_mib": memory,
        "dirty_mib": dirtymb,
        "masterd": masterd,
        "flat": flat,
        "template": template,
        "disk": disk,
        "pairs": pairs,
        "ganeti_lv": summarize(gnt),
        "virsh": summarize(virsh),
        "wall_ratio": stats.median_pair_ratio([r["wall"] for r in gnt], [r["wall"] for r in virsh]),
        "runs": {"ganeti_lv": gnt, "virsh": virsh},
    }


def _virsh_capped(cl: BenchCluster, name: str, bandwidth: int, cap: float) -> dict[str, Any]:
    """virsh migration with a bandwidth limit, aborted (domjobabort) after ``cap`` s."""
    src = cl.primary(name)
    dst = _other(src)
    argv = virsh_argv(cl, name, src, dst, ["--bandwidth", str(bandwidth)])
    set_virsh_downtime(cl, src, name)
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    aborted = False
    try:
        proc.wait(timeout=cap)
    except subprocess.TimeoutExpired:
        aborted = True
        cl.virsh(src, "domjobabort", name, check=False)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()  # the abort did not end it: nothing of the benchmark is left running
            proc.wait()
    wall = time.perf_counter() - start
    converged = proc.returncode == 0 and not aborted
    if converged:
        cl.record_primary(name, dst)
    return {"converged": converged, "wall": wall, "aborted_after_cap": aborted}


def bench_fast_dirtier(cl: BenchCluster, feedback: Feedback, cap: float) -> dict[str, Any]:
    """A guest dirtying faster than the bandwidth: does each converge, and when?"""
    memory, dirtymb, bandwidth = (
        FAST_DIRTY["memory"],
        FAST_DIRTY["dirtymb"],
        FAST_DIRTY["bandwidth"],
    )
    name = f"bmfast{memory}"
    feedback(f"migration: dirtier {dirtymb} MiB faster than {bandwidth} MiB/s, cap {cap:g} s")
    result: dict[str, Any] = {"memory_mib": memory, "dirty_mib": dirtymb, "bandwidth": bandwidth}
    try:
        start_guest(cl, name, int(memory), int(dirtymb))
        start = time.perf_counter()
        proc = cl.gnt(
            "instance",
            "migrate",
            "-f",
            "-n",
            _other(cl.primary(name)),
            "--migration-bandwidth",
            str(bandwidth),
            name,
            check=False,
            timeout=600,
        )
        wall = time.perf_counter() - start
        out = (proc.stdout + proc.stderr).strip()
        result["ganeti_lv"] = {
            "converged": proc.returncode == 0,
            "wall": wall,
            "output_tail": out.splitlines()[-3:] if out else [],
        }
        result["virsh"] = _virsh_capped(cl, name, int(bandwidth), cap)
    finally:
        cl.remove_instance(name)
    return result


def run_all(cl: BenchCluster, quick: bool, feedback: Feedback) -> dict[str, Any]:
    """Every migration case on a cluster that is up; returns the results."""
    ensure_bytecode()
    cases = QUICK_CASES if quick else FULL_CASES
    pairs = 1 if quick else 3
    out: dict[str, Any] = {"cases": []}

    def case(
        memory: int,
        dirtymb: int,
        n_pairs: int,
        masterd: bool,
        flat: bool = False,
        disk: str | None = None,
    ) -> None:
        try:
            out["cases"].append(
                bench_case(cl, memory, dirtymb, n_pairs, feedback, masterd, flat, disk)
            )
        except (BenchError, subprocess.TimeoutExpired) as err:
            out["cases"].append(
                {
                    "memory_mib": memory,
                    "dirty_mib": dirtymb,
                    "masterd": masterd,
                    "flat": flat,
                    "template": "file" if disk else "sharedfile",
                    "disk": disk,
                    "error": str(err),
                }
            )

    cl.start_masterd()
    try:
        for memory, dirtymb in cases:
            # More pairs where the targets are (256 MiB), fewer for the slowest
            # guests: the whole run stays bounded.
            n_pairs = pairs + 8 if memory == 256 and not quick else pairs
            case(memory, dirtymb, n_pairs if memory <= 256 else max(1, pairs - 1), True)
        if not quick:
            # the same dirtier guest with ganeti_lv's limit flat from the start, like virsh's
            case(256, 32, pairs + 8, True, flat=True)
        # an instance on node-local files: its disk is copied with its memory
        case(COPIED_DISK[0], 0, pairs + 4 if not quick else pairs, True, disk=COPIED_DISK[1])
        try:
            cap = 30.0 if quick else FAST_DIRTY["cap"]
            out["fast_dirtier"] = bench_fast_dirtier(cl, feedback, cap)
        except (BenchError, subprocess.TimeoutExpired) as err:
            out["fast_dirtier"] = {"error": str(err)}
    finally:
        cl.stop_masterd()
    # the same 256 MiB idle guest with gnt-lv on its own (no daemon)
    case(256, 0, pairs, False)
    return out


# the ratio to virsh each 256 MiB case must stay under (an ordinary gnt-lv start,
# parsing its command line itself, is worth more than 50 ms of an idle guest's move)
RATIO_LIMITS = {"idle": 1.25, "dirty": 1.15}


def targets(results: dict[str, Any]) -> list[stats.Target]:
    """Migration wall-time ratio to virsh on a 256 MiB guest: <= 1.25 idle, <= 1.15 dirty."""
    found = []
    for case in results.get("cases", []):
        if (
            case.get("memory_mib") == 256
            and case.get("masterd", True)
            and not case.get("flat")
            and not case.get("disk")
        ):
            dirty = bool(case.get("dirty_mib"))
            label = f"dirtier {case['dirty_mib']} MiB" if dirty else "idle"
            found.append(
                stats.Target(
                    f"migration wall-time ratio to virsh, 256 MiB {label}",
                    case.get("wall_ratio", float("nan")),
                    RATIO_LIMITS["dirty" if dirty else "idle"],
                    "<=",
                )
            )
    if not found:
        found.append(
            stats.Target(
                "migration wall-time ratio to virsh, 256 MiB",
                float("nan"),
                RATIO_LIMITS["idle"],
                "<=",
            )
        )
    return found


def case_label(case: dict[str, Any]) -> str:
    """``<memory> MiB, idle`` or ``<memory> MiB, dirtier <n> MiB``."""
    how = f"dirtier {case['dirty_mib']} MiB" if case["dirty_mib"] else "idle"
    if case.get("flat"):
        how += f", ganeti_lv at its {lv_downtime_ms()} ms limit from the start like virsh"
    if case.get("disk"):
        how += f", {case['disk']} disk copied (virsh --copy-storage-all)"
    return f"{case['memory_mib']} MiB, {how}"


def pair_row(label: str, case: dict[str, Any], first: str, second: str) -> list[Any]:
    """A table row of a case measured in pairs: wall, libvirt total and downtime of each side."""
    if "error" in case:
        return [label, "error", case["error"][-200:], "", "", "", "", "", ""]
    a, b = case[first], case[second]
    return [
        label,
        a["wall"],
        b["wall"],
        case["wall_ratio"],
        a["total_ms"],
        b["total_ms"],
        a["downtime_ms"],
        b["downtime_ms"],
        case.get("pairs", ""),
    ]


def _per_tool_table(
    results: dict[str, Any],
    keys: tuple[str, ...],
    cells: Callable[[dict[str, float]], list[float]],
    title: str,
    headers: list[str],
) -> str:
    """A row per case and tool whose medians have any of ``keys``: the guest,
    the tool, then ``cells`` of its medians ("" when no row has)."""
    rows = []
    for case in results.get("cases", []):
        if "error" in case or not case.get("masterd", True):
            continue
        for tool in ("ganeti_lv", "virsh"):
            s = case.get(tool, {})
            if all(math.isnan(s.get(key, math.nan)) for key in keys):
                continue
            rows.append([case_label(case), tool, *cells(s)])
    if not rows:
        return ""
    return f"{title}:\n\n" + stats.markdown_table(["guest", "tool", *headers], rows)


def split_table(results: dict[str, Any]) -> str:
    """libvirt's part of each tool's pause, from qemu's events (medians; "" if none)."""
    keys = ("downtime_ms", "stop_to_resume_ms", "switchover_wait_ms", "finish_ms")
    return _per_tool_table(
        results,
        TABLE_SPLIT_KEYS,
        lambda s: [s.get(key, math.nan) for key in keys],
        "The pause along qemu's events (medians)",
        [
            "libvirt downtime ms",
            "source STOP to target RESUME ms (qemu's events)",
            "pre-switchover wait ms (to device)",
            "source completed to target RESUME ms (libvirt's Finish)",
        ],
    )


def phase_table(results: dict[str, Any]) -> str:
    """Each tool's wall time split along the source's events (medians; "" if none)."""
    return _per_tool_table(
        results,
        PHASE_KEYS,
        lambda s: [s.get("wall", math.nan) * 1000, *(s.get(key, math.nan) for key in PHASE_KEYS)],
        "Where the wall time goes (medians; qemu's events on the source, host clock)",
        [
            "wall ms",
            "start to the source's migration setup ms",
            "setup to completed ms (memory sent, the pause)",
            "completed to the tool's end ms",
        ],
    )


def markdown(results: dict[str, Any]) -> str:
    """The migration results as markdown tables."""
    rows = []
    for case in results.get("cases", []):
        label = case_label(case)
        if not case.get("masterd", True):
            label += " (gnt-lv without the master daemon)"
        rows.append(pair_row(label, case, "ganeti_lv", "virsh"))
    headers = [
        "guest",
        "ganeti_lv wall s",
        "virsh wall s",
        "ratio (median of pairs)",
        "ganeti_lv libvirt total ms",
        "virsh libvirt total ms",
        "ganeti_lv downtime ms",
        "virsh downtime ms",
        "pairs",
    ]
    text = stats.markdown_table(headers, rows)
    for extra in (split_table(results), phase_table(results)):
        if extra:
            text += "\n\n" + extra
    fast = results.get("fast_dirtier")
    if fast and "error" not in fast:
        frows = []
        for tool in ("ganeti_lv", "virsh"):
            r = fast.get(tool, {})
            verdict = "yes" if r.get("converged") else "no"
            if r.get("aborted_after_cap"):
                verdict += " (aborted at the cap)"
            note = ""
            if not r.get("converged") and r.get("output_tail"):
                note = str(r["output_tail"][-1])[:160]
            frows.append([tool, verdict, r.get("wall", float("nan")), note])
        text += (
            f"\n\nDirtier {fast['dirty_mib']} MiB in a {fast['memory_mib']} MiB guest, "
            f"bandwidth limited to {fast['bandwidth']} MiB/s (not a like-for-like pair: "
            "ganeti_lv with its convergence policy, which may raise the downtime limit "
            "up to 2 s, within its job's own time limits; virsh at the 300 ms limit, "
            "aborted at the cap):\n\n"
            + stats.markdown_table(["tool", "converged", "wall s", "how it ended"], frows)
        )
    elif fast:
        text += f"\n\nFast-dirtier case failed: {fast['error'][-300:]}"
    return text
