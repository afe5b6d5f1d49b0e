"""Guest safety under live migration: plain ``virsh migrate`` against ``gnt-lv``.

Does a guest survive a live migration on the local cluster, and does it
matter which tool asked libvirt for it? Two guests of the same kind (memory,
memory dirtier) run at once on a 2-node local cluster: one is only ever
migrated by plain

    virsh migrate --live --p2p --persistent --undefinesource --unsafe \\
        --migrateuri tcp://<target> <domain> <target peer URI>

(libvirt's defaults: unlimited bandwidth, qemu's 300 ms downtime limit, no
capabilities), the other only by ``gnt-lv instance migrate`` (ganeti_lv's
defaults, through the master daemon). The two are migrated alternately,
back and forth, and after every migration the migrated guest's health is
checked:

- the domain runs on the target and nowhere else;
- heartbeat on the console: ``tick`` lines continue on the target with
  numbers above the last one before the migration (no reboot, no
  ``GUEST-READY`` again);
- heartbeat on disk: the tick the guest writes at 64 MiB of its disk
  advances past the one before the migration;
- no kernel error on either node's console log of that guest (``BUG:``,
  ``Oops``, ``panic``, ``corruption``, ``NX-protected``, ``general
  protection``, stalls, lock-ups, ...).

A guest that fails a check is dead: the failure is recorded with the
kernel's words and the migration's figures, and the guest is replaced by a
fresh one. Every guest lives for at most ``life`` migrations, so both freshly
booted guests and guests migrated many times are covered.

Every migration is one JSON line in ``--out`` (appended: chunks of one
experiment may go to the same file); ``--summary FILE...`` tables them.
The run brings up its own 2-node local cluster in ``--dir`` and takes it
down at the end, also on failure; run it under the machine's guest lock.

    flock /var/lock/glv-guests.lock .venv/bin/python -m bench.guest_safety \\
        --cases 256:64:10,128:16:10 --per-arm 30 --max-minutes 30 --out gs.jsonl
    .venv/bin/python -m bench.guest_safety --summary gs.jsonl
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from bench import stats
from bench.common import BenchCluster, BenchError, Guest, ensure_bytecode, parse_jobinfo
from bench.migration import virsh_argv
from ganeti_lv.devcluster.guest import kernel_faults

NODES = ("node1", "node2")
ARMS = ("virsh", "gnt-lv")
# A third arm for finding out what in gnt-lv's way makes a difference: plain
# virsh, while the host makes ganeti_lv's monitor calls on the source during
# the migration (jobStats every second, the downtime limit set once).
MONITORED = "virsh-monitored"
ALL_ARMS = (*ARMS, MONITORED)
DEFAULT_DIR = "/var/tmp/ganeti-lv-guestsafety"
DEFAULT_SUBNET = "10.250.13.0/24"
TICK_RE = re.compile(r"^tick (\d+)\s*$", re.M)
DISK_TICK_OFFSET = 64 * 1024 * 1024


def ticks(text: str) -> list[int]:
    """The tick numbers of a console log, in order."""
    return [int(m.group(1)) for m in TICK_RE.finditer(text.replace("\r", ""))]


@dataclass
class Case:
    """Guests of one kind: memory and dirtier in MiB, migrations per guest life."""

    memory: int
    dirtymb: int
    life: int

    @classmethod
    def parse(cls, text: str) -> Case:
        """``MEMORY:DIRTYMB[:LIFE]``, e.g. ``256:64:10``."""
        parts = [int(p) for p in text.split(":")]
        if len(parts) not in (2, 3) or min(parts) < 0 or parts[0] < 64:
            raise argparse.ArgumentTypeError(f"bad case {text!r}: MEMORY:DIRTYMB[:LIFE]")
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else 10)

    @property
    def label(self) -> str:
        return f"{self.memory} MiB, dirtier {self.dirtymb} MiB"


@dataclass
class Life:
    """One guest of one arm, from boot to death or retirement."""

    arm: str
    case: Case
    name: str
    migrations: int = 0
    last_tick: int = 0
    last_disk_tick: int = 0
    booted: float = field(default_factory=time.monotonic)
    last_move: float | None = None
    dead: bool = False
    notes: list[str] = field(default_factory=list)


class Experiment:
    """The alternating migrations of one run (one cluster, one qemu)."""

    def __init__(self, cl: BenchCluster, out: str, meta: dict[str, Any]) -> None:
        self.cl = cl
        self.out = out
        self.meta = meta
        self.serial = 0

    # ------------------------------------------------------------ guests
    def boot(self, arm: str, case: Case) -> Life:
        """A fresh guest for ``arm`` on node1 (a new name: its console logs start empty)."""
        self.serial += 1
        tag = {"virsh": "v", "gnt-lv": "g", MONITORED: "m"}[arm]
        name = f"gs{tag}{case.memory}d{case.dirtymb}n{self.serial}{int(time.time()) % 10000}"
        self.cl.add_instance(
            name, NODES[0], Guest(seed=name, dirtymb=case.dirtymb), memory=case.memory, disk="96M"
        )
        self.cl.wait_console(name, NODES[0], "GUEST-READY", timeout=180)
        life = Life(arm, case, name)
        self.cl.wait_console(name, NODES[0], "tick 2", timeout=60)
        life.last_tick = max(ticks(self.console(name, NODES[0])), default=0)
        life.last_disk_tick = self.disk_tick(name)
        return life

    def retire(self, life: Life) -> None:
        self.cl.remove_instance(life.name)
        for node in NODES:
            path = self.cl.console_path(life.name, node)
            if os.path.exists(path):
                os.unlink(path)

    def console(self, name: str, node: str) -> str:
        path = self.cl.console_path(name, node)
        try:
            with open(path, "rb") as fh:
                return fh.read().decode(errors="replace").replace("\r", "")
        except FileNotFoundError:
            return ""

    def disk_tick(self, name: str) -> int:
        """The tick the guest last wrote to its disk (0 when none yet)."""
        from ganeti_lv import objects

        config = self.cl.config()
        inst = config.instances[name]
        path = self.cl.host_path(inst.primary_node, objects.disk_path(config.cluster, inst, 0))
        with open(path, "rb") as fh:
            fh.seek(DISK_TICK_OFFSET)
            data = fh.read(512).split(b"\0", 1)[0].decode(errors="replace")
        m = re.match(r"tick (\d+)", data)
        return int(m.group(1)) if m else 0

    # ------------------------------------------------------------ migrations
    def migrate(self, life: Life) -> dict[str, Any]:
        """Migrate ``life``'s guest to the other node with its arm's tool."""
        src = self.cl.primary(life.name)
        dst = NODES[1] if src == NODES[0] else NODES[0]
        start = time.perf_counter()
        if life.arm in ("virsh", MONITORED):
            argv = virsh_argv(self.cl, life.name, src, dst, [])
            if life.arm == MONITORED:
                proc = monitored(argv, self.cl.uri(src), life.name)
            else:
                proc = subprocess.run(
                    argv, capture_output=True, text=True, timeout=600, check=False
                )
            if proc.returncode == 0:
                self.cl.record_primary(life.name, dst)
        else:
            proc = self.cl.gnt(
                "instance", "migrate", "-f", "-n", dst, life.name, check=False, timeout=600
            )
        wall = time.perf_counter() - start
        job = self.cl.virsh(dst, "domjobinfo", "--completed", life.name, check=False)
        info = parse_jobinfo(job.stdout) if job.returncode == 0 else {}
        return {
            "src": src,
            "dst": dst,
            "ok": proc.returncode == 0,
            "wall_s": round(wall, 3),
            "output": (proc.stdout + proc.stderr).strip()[-400:],
            "total_ms": info.get("time_elapsed_ms"),
            "downtime_ms": info.get("total_downtime_ms"),
            "iterations": info.get("iteration"),
            "memory_processed_mib": info.get("memory_processed_mib"),
            "dirty_rate": info.get("dirty_rate"),
        }

    def check(self, life: Life, node: str, timeout: float) -> list[str]:
        """Why the guest is not healthy on ``node`` ([] when it is)."""
        problems: list[str] = []
        state = self.cl.virsh(node, "domstate", life.name, check=False).stdout.strip()
        if state != "running":
            problems.append(f"domain is '{state or 'missing'}' on {node}")
        other = NODES[1] if node == NODES[0] else NODES[0]
        if self.cl.virsh(other, "domstate", life.name, check=False).returncode == 0:
            problems.append(f"domain still defined on {other}")
        deadline = time.monotonic() + timeout
        seen: list[int] = []
        while time.monotonic() < deadline and not problems:
            seen = [t for t in ticks(self.console(life.name, node)) if t > life.last_tick]
            if len(seen) >= 2:
                break
            time.sleep(0.25)
        if len(seen) < 2 and not problems:
            problems.append(
                f"console heartbeat stopped: no two ticks above {life.last_tick} on {node}"
                f" within {timeout:g} s"
            )
        disk = self.disk_tick(life.name)
        if not problems and disk <= life.last_disk_tick:
            problems.append(f"disk heartbeat stopped at tick {disk}")
        text = "\n".join(self.console(life.name, n) for n in NODES)
        found = kernel_faults(text)
        if found:
            problems.append("kernel: " + " | ".join(found[:4]))
        if text.count("GUEST-READY") > 1:
            problems.append("the guest booted again")
        if seen:
            life.last_tick = seen[-1]
        life.last_disk_tick = max(disk, life.last_disk_tick)
        return problems

    def record(self, row: dict[str, Any]) -> None:
        with open(self.out, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({**self.meta, **row}, sort_keys=True) + "\n")

    def step(self, life: Life, heartbeat_timeout: float) -> None:
        """One migration of ``life``'s guest and its health check; records one line."""
        before = life.last_tick
        now = time.monotonic()
        age = now - life.booted
        gap = None if life.last_move is None else now - life.last_move
        result = self.migrate(life)
        life.last_move = time.monotonic()
        life.migrations += 1
        where = result["dst"] if result["ok"] else result["src"]
        problems = self.check(life, where, heartbeat_timeout)
        life.dead = bool(problems)
        tail = ""
        if problems:
            tail = self.console(life.name, where)[-1500:]
        self.record(
            {
                "arm": life.arm,
                "memory": life.case.memory,
                "dirtymb": life.case.dirtymb,
                "guest": life.name,
                "nth_of_guest": life.migrations,
                "guest_age_s": round(age, 1),
                "since_last_move_s": None if gap is None else round(gap, 1),
                "tick_before": before,
                "tick_after": life.last_tick,
                "dead": life.dead,
                "problems": problems,
                "console_tail": tail,
                **result,
            }
        )


def monitored(argv: list[str], uri: str, name: str) -> subprocess.CompletedProcess[str]:
    """Run the virsh migration while making ganeti_lv's monitor calls on the source.

    As ``ganeti_lv.hypervisor.libvirt.migration`` does: every poll interval
    ``jobStats()``, and once a job runs, ``migrateSetMaxDowntime`` to the
    default downtime.
    """
    import libvirt

    from ganeti_lv.hypervisor.migration_types import MigrationParams

    params = MigrationParams()
    conn = libvirt.open(uri)
    try:
        dom = conn.lookupByName(name)
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        downtime_set = False
        while True:
            try:
                proc.wait(timeout=params.poll_interval)
                break
            except subprocess.TimeoutExpired:
                pass
            with contextlib.suppress(libvirt.libvirtError):
                stats = dom.jobStats()
                if int(stats.get("type", 0)) != libvirt.VIR_DOMAIN_JOB_NONE and not downtime_set:
                    dom.migrateSetMaxDowntime(params.downtime_ms, 0)
                    downtime_set = True
        out, err = proc.communicate()
        return subprocess.CompletedProcess(argv, proc.returncode, out, err)
    finally:
        conn.close()


def _cases(text: str) -> list[Case]:
    return [Case.parse(part) for part in text.split(",") if part]


def qemu_version(cl: BenchCluster) -> str:
    out = cl.virsh(NODES[0], "version", check=False).stdout
    m = re.search(r"Running hypervisor: (.+)", out)
    return m.group(1).strip() if m else "unknown"


def flags_of_both() -> dict[str, str]:
    """The libvirt flags and parameters each arm's migrations use (for the record)."""
    import libvirt

    from ganeti_lv.hypervisor.libvirt.migration import migration_flags, migration_uri_params
    from ganeti_lv.hypervisor.migration_types import MigrationParams
    from ganeti_lv.objects import Node

    params = MigrationParams(unsafe=True)
    bits = migration_flags(params)
    names = sorted(
        n[len("VIR_MIGRATE_") :]
        for n in dir(libvirt)
        if n.startswith("VIR_MIGRATE_")
        and not n.startswith("VIR_MIGRATE_PARAM")
        and isinstance(getattr(libvirt, n), int)
        and getattr(libvirt, n) & bits == getattr(libvirt, n) != 0
    )
    uri = migration_uri_params(Node(name="t", address="T"), params)
    return {
        "virsh": "virsh migrate --live --p2p --persistent --undefinesource --unsafe"
        " --migrateuri tcp://T (libvirt defaults: no bandwidth limit, qemu's 300 ms"
        " downtime limit, no capabilities)",
        "gnt-lv": f"migrateToURI3 flags {'|'.join(names)}, params {sorted(uri)}; max downtime"
        f" {params.downtime_ms} ms set once the job runs (raised in steps by the convergence"
        " policy only if it does not converge), no capabilities, jobStats polled every"
        f" {params.poll_interval:g} s",
        MONITORED: "the virsh command above, while the host calls jobStats() on the source"
        f" every {params.poll_interval:g} s and migrateSetMaxDowntime({params.downtime_ms})"
        " once the job runs (ganeti_lv's monitor calls)",
    }


def run(args: argparse.Namespace) -> int:
    feedback = (lambda m: print(m, flush=True)) if args.verbose else (lambda _m: None)
    cl = BenchCluster(args.dir, subnet=args.subnet, nodes=2, feedback=feedback)
    started = time.monotonic()
    limit = args.max_minutes * 60
    lives: list[Life] = []
    try:
        print(f"bringing up a 2-node local cluster in {args.dir}", flush=True)
        cl.up(qemu=args.qemu)
        ensure_bytecode()
        cl.start_masterd()
        meta = {
            "qemu": qemu_version(cl),
            "domain_type": cl.info.get("domain_type"),
            "run": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "flags": flags_of_both(),
        }
        print(f"hypervisor: {meta['qemu']} ({meta['domain_type']})", flush=True)
        exp = Experiment(cl, args.out, meta)
        arms = tuple(args.arms)
        done = {arm: 0 for arm in arms}
        for case in args.cases:
            if time.monotonic() - started > limit:
                break
            for _round in range(args.per_arm):
                if time.monotonic() - started > limit:
                    print("time limit reached", flush=True)
                    break
                # the same order in every round: each guest waits for one
                # migration of the other between two of its own
                order = arms if args.cases.index(case) % 2 == 0 else arms[::-1]
                for arm in order:
                    life = next((x for x in lives if x.arm == arm and x.case is case), None)
                    if life is None:
                        life = exp.boot(arm, case)
                        lives.append(life)
                    exp.step(life, args.heartbeat_timeout)
                    done[arm] += 1
                    if life.dead or life.migrations >= case.life:
                        status = "DEAD" if life.dead else "retired"
                        print(
                            f"{case.label}: {arm} guest {life.name} {status} after"
                            f" {life.migrations} migrations",
                            flush=True,
                        )
                        lives.remove(life)
                        exp.retire(life)
            for life in [x for x in lives if x.case is case]:
                lives.remove(life)
                exp.retire(life)
        print(f"migrations: {done}", flush=True)
    finally:
        for life in lives:
            with contextlib.suppress(BenchError, subprocess.SubprocessError, OSError):
                cl.remove_instance(life.name)
        cl.down()
        print("cluster down", flush=True)
    return 0


def load(paths: list[str]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for path in paths:
        with open(path, encoding="utf-8") as fh:
            rows.extend(json.loads(line) for line in fh if line.strip())
    return rows


def _first_words(problems: list[str]) -> str:
    """What tells most about a death: the kernel's first words, else the first problem."""
    kernel = [p for p in problems if p.startswith("kernel: ")]
    text = kernel[0].split(" | ")[0] if kernel else (problems[0] if problems else "")
    return re.sub(r"\[\s*[0-9.]+\]\s*", "", text)[:80]


def summary(rows: list[dict[str, Any]]) -> str:
    """Per qemu, case and arm: migrations, deaths, how they died, median figures."""
    groups: dict[tuple[str, int, int, str], list[dict[str, Any]]] = {}
    for row in rows:
        key = (row["qemu"], row["memory"], row["dirtymb"], row["arm"])
        groups.setdefault(key, []).append(row)
    table = []
    for (qemu, memory, dirtymb, arm), group in sorted(groups.items()):
        dead = [r for r in group if r["dead"]]
        first = [r for r in group if r["nth_of_guest"] == 1]
        long_ = [r for r in group if (r.get("iterations") or 0) >= 4]

        def med(key: str, group: list[dict[str, Any]] = group) -> float:
            values = [r[key] for r in group if r.get(key) is not None]
            return stats.median(values) if values else float("nan")

        how = "; ".join(f"#{r['nth_of_guest']}: {_first_words(r['problems'])}" for r in dead[:3])
        table.append(
            [
                qemu.split("(")[0].strip(),
                f"{memory}/{dirtymb}",
                arm,
                len(group),
                len(dead),
                f"{len([r for r in first if r['dead']])}/{len(first)}",
                len({r["guest"] for r in group}),
                f"{len(long_)} ({len([r for r in long_ if r['dead']])})",
                med("total_ms"),
                med("downtime_ms"),
                med("iterations"),
                how,
            ]
        )
    headers = [
        "hypervisor",
        "MiB/dirty MiB",
        "arm",
        "migrations",
        "deaths",
        "deaths at a fresh guest's 1st",
        "guests",
        "migrations of 4+ passes (deaths)",
        "median total ms",
        "median downtime ms",
        "median passes",
        "deaths (migration # of that guest: first problem)",
    ]
    return stats.markdown_table(headers, table)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.guest_safety", description=__doc__.split("\n")[0]
    )
    p.add_argument("--dir", default=DEFAULT_DIR, help="the local cluster's directory")
    p.add_argument("--subnet", default=DEFAULT_SUBNET)
    p.add_argument(
        "--cases",
        type=_cases,
        default=_cases("256:64:10,128:16:10"),
        help="MEMORY:DIRTYMB[:LIFE],... (LIFE: migrations per guest before a fresh one)",
    )
    p.add_argument(
        "--arms",
        type=lambda t: t.split(","),
        default=list(ARMS),
        help=f"two of {', '.join(ALL_ARMS)}, comma separated (default: virsh,gnt-lv)",
    )
    p.add_argument("--per-arm", type=int, default=20, help="migrations per arm and case")
    p.add_argument("--max-minutes", type=float, default=30, help="stop starting rounds after")
    p.add_argument("--heartbeat-timeout", type=float, default=30)
    p.add_argument(
        "--qemu",
        choices=("system", "backports"),
        default=None,
        help="the local cluster's qemu (default: the local cluster's default)",
    )
    p.add_argument("--out", default="guest-safety.jsonl", help="JSON lines, appended")
    p.add_argument("--summary", nargs="+", metavar="FILE", help="only print the table of FILEs")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    if args.summary:
        print(summary(load(args.summary)))
        return 0
    if args.per_arm < 1 or args.max_minutes <= 0:
        p.error("--per-arm and --max-minutes must be positive")
    if len(args.arms) != 2 or len(set(args.arms)) != 2 or not set(args.arms) <= set(ALL_ARMS):
        p.error(f"--arms: two different of {', '.join(ALL_ARMS)} (two guests at most)")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
