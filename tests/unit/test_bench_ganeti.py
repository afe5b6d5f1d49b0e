"""Unit tests of the Ganeti comparison's pure parts: qemu's monitor output, the
migration watcher, summaries, targets and tables."""

from __future__ import annotations

import math
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench import export, ganeti_report, qemu_monitor  # noqa: E402

GREETING = "QEMU 7.2.22 monitor - type 'help' for more information\r\n(qemu) "
# What qemu 7.2 sends back for a typed 'info migrate': the line echoed with
# cursor movements, the answer, a new prompt.
ECHO = "i\x1b[K\x1b[Din\x1b[K\x1b[D\x1b[Dinfo migrate\x1b[K\r\n"
COMPLETED = """globals:
store-global-state: on
only-migratable: off
clear-bitmap-shift: 18
Migration status: completed
total time: 2143 ms
downtime: 31 ms
setup: 4 ms
transferred ram: 59392 kbytes
throughput: 268.44 mbps
remaining ram: 0 kbytes
total ram: 131592 kbytes
duplicate: 18900 pages
skipped: 0 pages
normal: 14600 pages
normal bytes: 58400 kbytes
dirty sync count: 4
page size: 4 kbytes
multifd bytes: 0 kbytes
pages-per-second: 8192
downtime ram: 212 kbytes
"""
ACTIVE = """globals:
store-global-state: on
Migration status: active
total time: 1012 ms
expected downtime: 300 milliseconds
setup: 4 ms
transferred ram: 32768 kbytes
remaining ram: 40960 kbytes
total ram: 131592 kbytes
dirty sync count: 2
page size: 4 kbytes
dirty pages rate: 12800 pages
"""
PARAMETERS = """announce-initial: 50 ms
max-bandwidth: 33554432 bytes/second
downtime-limit: 30 ms
tls-creds: ''
xbzrle-cache-size: 67108864 bytes
"""


# --- monitor output -----------------------------------------------------------


def test_parse_info_migrate_completed() -> None:
    info = qemu_monitor.parse_info(COMPLETED)
    assert info["status"] == "completed"
    assert info["total_time_ms"] == 2143 and info["downtime_ms"] == 31
    assert info["transferred_ram_mib"] == pytest.approx(58.0)
    assert info["total_ram_mib"] == pytest.approx(128.5078125)
    assert info["dirty_sync_count"] == 4 and info["throughput_mbps"] == pytest.approx(268.44)
    assert "store_global_state" not in info  # 'on' is no number
    figures = qemu_monitor.migration_figures(info)
    assert figures["downtime_ms"] == 31 and figures["memory_mib"] == pytest.approx(58.0)
    assert figures["passes"] == 4 and figures["total_ms"] == 2143


def test_parse_info_migrate_active_and_parameters() -> None:
    active = qemu_monitor.parse_info(ACTIVE)
    assert active["status"] == "active" and active["expected_downtime_ms"] == 300
    # 12800 pages of 4 KiB per second
    assert qemu_monitor.dirty_rate_mib_s(active) == pytest.approx(50.0)
    assert qemu_monitor.dirty_rate_mib_s({}) is None
    params = qemu_monitor.parse_info(PARAMETERS)
    assert params["downtime_limit_ms"] == 30
    assert params["max_bandwidth_mib_s"] == pytest.approx(32.0)


def test_parse_info_failed_status_keeps_the_word() -> None:
    info = qemu_monitor.parse_info("Migration status: failed (Unable to write)\ntotal time: 0 ms")
    assert info == {"status": "failed", "total_time_ms": 0}


def test_clean_reply_drops_echo_escapes_and_prompt() -> None:
    raw = ECHO + COMPLETED.replace("\n", "\r\n") + "(qemu) "
    text = qemu_monitor.clean_reply(raw, "info migrate")
    assert text.splitlines()[0] == "globals:"
    assert text.splitlines()[-1] == "downtime ram: 212 kbytes"
    assert "\x1b" not in text and "\r" not in text and "(qemu)" not in text


@pytest.fixture
def fake_monitor(tmp_path: Path) -> Iterator[tuple[str, list[str]]]:
    """A Unix socket speaking like qemu's monitor; records the commands it got."""
    path = str(tmp_path / "inst.monitor")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(4)
    got: list[str] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                conn.sendall(GREETING.encode())
                line = b""
                while not line.endswith(b"\n"):
                    chunk = conn.recv(1024)
                    if not chunk:
                        break
                    line += chunk
                cmd = line.decode().strip()
                got.append(cmd)
                reply = COMPLETED if cmd == "info migrate" else "unknown command\n"
                # answer in pieces, as a socket may deliver it
                conn.sendall(ECHO.encode())
                conn.sendall(reply.replace("\n", "\r\n").encode())
                conn.sendall(b"(qemu) ")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield path, got
    server.close()


def test_hmp_over_a_socket(fake_monitor: tuple[str, list[str]]) -> None:
    path, got = fake_monitor
    text = qemu_monitor.hmp(path, "info migrate", timeout=5)
    assert qemu_monitor.parse_info(text)["downtime_ms"] == 31
    assert got == ["info migrate"]


def test_hmp_without_a_socket_is_a_monitor_error(tmp_path: Path) -> None:
    with pytest.raises(qemu_monitor.MonitorError):
        qemu_monitor.hmp(str(tmp_path / "none.monitor"), "info migrate", timeout=1)


# --- the watcher ------------------------------------------------------------------


class ScriptedMonitor:
    """Answers 'info migrate' from a script of replies; records other commands."""

    def __init__(self, replies: list[str | None]) -> None:
        self.replies = replies
        self.commands: list[str] = []

    def __call__(self, _path: str, command: str) -> str:
        self.commands.append(command)
        if command == "info migrate_parameters":
            return PARAMETERS
        if command != "info migrate":
            return ""
        reply = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        if reply is None:
            raise qemu_monitor.MonitorError("no socket")
        return reply


def test_watcher_keeps_the_completed_sample_and_ignores_a_stale_one() -> None:
    stale = "Migration status: completed\ntotal time: 9 ms\ndowntime: 1 ms\n"
    mon = ScriptedMonitor([None, stale, ACTIVE, COMPLETED])
    watcher = qemu_monitor.MigrationWatcher("/x", query=mon, clock=lambda: 0.0)
    for _ in range(4):
        watcher.poll()
    result = watcher.result()
    assert result["final_seen"] and result["downtime_ms"] == 31  # not the stale 1 ms
    assert result["downtime_limit_ms"] == 30 and result["bandwidth_mib_s"] == pytest.approx(32)
    assert result["dirty_rate_mib_s"] == pytest.approx(50.0)
    assert watcher.errors == 1 and result["cancelled_after_s"] is None
    assert mon.commands.count("info migrate_parameters") == 1


def test_watcher_cancels_at_the_cap_once() -> None:
    now = [0.0]
    mon = ScriptedMonitor([ACTIVE])
    watcher = qemu_monitor.MigrationWatcher("/x", cancel_after=10, query=mon, clock=lambda: now[0])
    watcher.poll()
    assert "migrate_cancel" not in mon.commands
    now[0] = 11.0
    watcher.poll()
    watcher.poll()
    assert mon.commands.count("migrate_cancel") == 1
    assert watcher.result()["cancelled_after_s"] == 11.0
    assert not watcher.result()["final_seen"]  # figures of the last running sample


def test_watcher_reports_how_far_a_cancelled_migration_got() -> None:
    cancelled = "Migration status: cancelled\ntotal time: 0 ms\n"
    mon = ScriptedMonitor([ACTIVE, cancelled])
    watcher = qemu_monitor.MigrationWatcher("/x", query=mon, clock=lambda: 0.0)
    watcher.poll()
    watcher.poll()
    result = watcher.result()
    assert result["status"] == "cancelled" and result["final_seen"]
    assert result["memory_mib"] == pytest.approx(32.0) and result["passes"] == 2
    assert result["downtime_ms"] is None


def test_watcher_thread_stops_at_the_final_state() -> None:
    mon = ScriptedMonitor([ACTIVE, COMPLETED])
    with qemu_monitor.MigrationWatcher("/x", interval=0.001, query=mon) as watcher:
        watcher._thread.join(timeout=5)
    assert watcher.final["status"] == "completed"
    assert watcher.samples == 2


# --- summaries, targets, tables -------------------------------------------------------


def _run(wall: float, down: float | None, ok: bool = True, mem: float = 60.0) -> dict[str, Any]:
    return {"converged": ok, "wall": wall, "downtime_ms": down, "memory_mib": mem, "total_ms": 1}


def test_summary_counts_only_completed_migrations() -> None:
    s = ganeti_report.summarize([_run(7, 30), _run(90, None, ok=False), _run(8, 34)])
    assert s["wall"] == 7.5 and s["downtime_ms"] == 32
    assert (s["converged"], s["runs"]) == (2, 3) and s["downtimes_ms"] == [30, 34]


def test_case_result_ratios() -> None:
    g = [_run(7.0, 30), _run(8.0, 32), _run(6.0, 31, ok=False)]
    lv = [_run(1.0, 25), _run(2.0, 300), _run(1.0, 20)]
    case = ganeti_report.case_result(128, 32, True, g, lv)
    assert case["label"] == "128 MiB, dirtier 32 MiB, right after boot"
    assert case["wall_ratio"] == pytest.approx(1.0 / 7.5)  # medians: 1.0 / 7.5
    # pair ratios of the pairs both completed: 1/7 and 2/8
    assert case["wall_pair_ratio"] == pytest.approx((1 / 7 + 2 / 8) / 2)
    assert case["pairs"] == 3


def _verdicts(results: dict[str, Any]) -> dict[str, str]:
    return {t.name: t.verdict() for t in ganeti_report.targets(results)}


def test_targets_downtime_wall_and_fast_dirtier() -> None:
    met = ganeti_report.case_result(128, 0, False, [_run(7, 30)] * 3, [_run(1, 25)] * 3)
    missed = ganeti_report.case_result(256, 32, False, [_run(7, 30)] * 3, [_run(4, 250)] * 3)
    results: dict[str, Any] = {
        "cases": [met, missed],
        "fast_dirtier": {
            "memory_mib": 256,
            "dirty_mib": 128,
            "cap_s": 60,
            "ganeti": {"converged": False, "wall": 61},
            "ganeti_lv": {"converged": True, "wall": 3.5},
        },
    }
    v = _verdicts(results)
    assert v["median migration downtime (qemu's) <= Ganeti's, 128 MiB, idle"] == "met"
    pause = "median pause, source stop to target resume, <= Ganeti's, 128 MiB, idle"
    assert v[pause] == "not measured"  # no pause figures in these runs
    for runs, value in ((met["runs"]["ganeti"], 12.0), (met["runs"]["ganeti_lv"], 20.0)):
        for run in runs:
            run["pause_ms"] = value
    results["cases"][0] = ganeti_report.case_result(
        128, 0, False, met["runs"]["ganeti"], met["runs"]["ganeti_lv"]
    )
    assert _verdicts(results)[pause] == "NOT met"
    assert v["median migration wall time / Ganeti's, 128 MiB, idle"] == "met"
    assert v["median migration downtime (qemu's) <= Ganeti's, 256 MiB, dirtier 32 MiB"] == "NOT met"
    assert v["median migration wall time / Ganeti's, 256 MiB, dirtier 32 MiB"] == "NOT met"
    fast = "fast dirtier converges under ganeti_lv within the cap (128 MiB in 256 MiB)"
    assert v[fast] == "met"
    results["fast_dirtier"]["ganeti_lv"] = {"converged": False, "wall": 60.2}
    assert _verdicts(results)[fast] == "NOT met"


def test_targets_without_ganeti_figures_are_not_measured() -> None:
    never = ganeti_report.case_result(
        256, 32, False, [_run(30, None, ok=False)] * 2, [_run(1, 25)] * 2
    )
    results = {"cases": [never], "cap_s": 30, "fast_dirtier": {"error": "boom", "cap_s": 60}}
    verdicts = _verdicts(results)
    assert set(verdicts.values()) == {"not measured"}
    assert (
        "median migration downtime (qemu's) <= Ganeti's, 256 MiB, dirtier 32 MiB"
        " (Ganeti completed none of 2 within 30 s)"
    ) in verdicts


def test_migration_table_shows_both_tools_and_errors() -> None:
    case = ganeti_report.case_result(128, 0, False, [_run(7.25, 30)], [_run(1.5, 25)])
    text = ganeti_report.migration_table({"cases": [case, {"label": "x", "error": "no peer"}]})
    lines = text.splitlines()
    assert lines[0].startswith("| guest | Ganeti wall s | ganeti_lv wall s |")
    row = lines[2].split(" | ")
    assert row[1:6] == ["7.25", "1.50", "0.21", "30.00", "25.00"]
    assert "30 / 25" in lines[2] and "1/1, 1/1" in lines[2]
    assert "error: no peer" in lines[3]


def test_incomplete_table_tells_how_far_stopped_migrations_got() -> None:
    stopped = {**_run(30.5, None, ok=False, mem=900.0), "passes": 28, "dirty_rate_mib_s": 31.0}
    case = ganeti_report.case_result(128, 32, False, [stopped, _run(7, 30)], [_run(1, 25)] * 2)
    text = ganeti_report.incomplete_table({"cases": [case]})
    row = text.splitlines()[-1]
    assert row.startswith("| 128 MiB, dirtier 32 MiB | Ganeti | 1 of 2 | 30.50 | 900.00 | 28.00 |")
    assert "31.00" in row and "ganeti_lv |" not in text
    complete = ganeti_report.case_result(128, 0, False, [_run(7, 30)], [_run(1, 25)])
    assert ganeti_report.incomplete_table({"cases": [complete]}) == ""


def test_export_table_and_rows_for_the_export_benchmark() -> None:
    runs: dict[str, list[dict[str, Any]]] = {
        "ganeti_shutdown": [
            {"wall": 40.0, "guest_gap": 55.0, "wire_bytes": 2**30, "target_allocated": 2**30}
        ],
        "ganeti_lv_live": [
            {"wall": 5.0, "guest_gap": 1.1, "wire_bytes": 2**30, "target_allocated": 2**30},
            {"failed": "Export of disk/0 failed: socket closed"},
        ],
    }
    res = {
        "disk_mib": 1024,
        "runs": runs,
        "summary": {k: ganeti_report.export_summary(v, 1024) for k, v in runs.items()},
    }
    table = ganeti_report.export_table(res)
    assert "| Ganeti, shut down (--long-sleep) | 40.00 | 25.60 | 55.00 |" in table
    live = "| ganeti_lv, live (--noshutdown) | 5.00 | 204.80 | 1.10 | 5.0, - | 1.1, - | 1/2 |"
    assert live in table
    assert "- ganeti_lv, live (--noshutdown): Export of disk/0 failed: socket closed" in table
    assert "ganeti_lv, shut down" not in table  # not measured, no row
    rows = ganeti_report.export_rows({"export": res})
    assert rows[0][1].startswith("ganeti 3.0") and rows[0][5] == 1024.0
    assert ganeti_report.export_rows(None) == []
    full = {
        "disk_mib": 1024,
        "written_mib": 1024,
        "ratio_to_pipe": 1.0,
        "runs": {},
        **{
            tool: {
                "wall": 5.0,
                "mib_s": 200.0,
                "wire_bytes": 2**30,
                "target_allocated": 2**30,
                "heartbeat_gap_max": 1.0,
            }
            for tool in ("ganeti_lv", "raw_pipe", "local_cp")
        },
    }
    text = export.markdown({"full": full}, rows)
    assert text.splitlines()[5].startswith("|  | ganeti 3.0 (shut down, --long-sleep) | 40.00")


def test_nan_wall_gives_nan_rate() -> None:
    s = ganeti_report.export_summary([], 1024)
    assert math.isnan(s["wall"]) and math.isnan(s["mib_s"])


# --- ganeti_lv's source qemu through libvirt (QMP) --------------------------------

QMP_ACTIVE = (
    '{"return": {"status": "active", "setup-time": 2, "total-time": 120, '
    '"ram": {"transferred": 33554432, "total": 134742016, "dirty-sync-count": 2, '
    '"mbps": 900.5, "dirty-pages-rate": 2560, "page-size": 4096}}}'
)
QMP_COMPLETED = (
    '{"return": {"status": "completed", "setup-time": 2, "downtime": 7, '
    '"total-time": 310, "ram": {"transferred": 73400320, "total": 134742016, '
    '"dirty-sync-count": 3, "mbps": 1900.0, "page-size": 4096}}}'
)


def test_qmp_replies_read_into_the_keys_of_info_migrate() -> None:
    done = qemu_monitor.parse_info(QMP_COMPLETED)
    assert done["status"] == "completed" and done["downtime_ms"] == 7
    assert done["total_time_ms"] == 310 and done["dirty_sync_count"] == 3
    assert done["transferred_ram_mib"] == pytest.approx(70.0)
    active = qemu_monitor.parse_info(QMP_ACTIVE)
    assert qemu_monitor.dirty_rate_mib_s(active) == pytest.approx(10.0)
    params = qemu_monitor.parse_info('{"return": {"downtime-limit": 30, "max-bandwidth": 0}}')
    assert params == {"downtime_limit_ms": 30.0, "max_bandwidth_mib_s": 0.0}
    with pytest.raises(qemu_monitor.MonitorError):
        qemu_monitor.parse_qmp("{not json")
    # qemu 8.1 on: the RAM sent while the guest was stopped
    stopped = '{"return": {"status": "completed", "ram": {"downtime-bytes": 3145728}}}'
    figures = qemu_monitor.migration_figures(qemu_monitor.parse_info(stopped))
    assert figures["stopped_memory_mib"] == pytest.approx(3.0)
    assert qemu_monitor.migration_figures(done)["stopped_memory_mib"] is None


def test_watcher_reads_qemus_downtime_from_qmp_replies() -> None:
    replies = iter(['{"return": {}}', QMP_ACTIVE, QMP_COMPLETED])

    def query(_name: str, command: str) -> str:
        if command == "info migrate_parameters":
            return '{"return": {"downtime-limit": 30, "max-bandwidth": 0}}'
        if command == "info migrate_capabilities":
            return (
                '{"return": [{"capability": "return-path", "state": true},'
                ' {"capability": "pause-before-switchover", "state": true},'
                ' {"capability": "events", "state": false}]}'
            )
        return next(replies)

    watcher = qemu_monitor.MigrationWatcher("web1", query=query, clock=lambda: 0.0)
    for _ in range(3):
        watcher.poll()
    result = watcher.result()
    assert result["final_seen"] and result["downtime_ms"] == 7 and result["passes"] == 3
    assert result["downtime_limit_ms"] == 30 and result["return_path"] is True
    assert result["capabilities"] == {
        "events": False,
        "return-path": True,
        "pause-before-switchover": True,
    }


def test_capability_from_hmp_and_qmp() -> None:
    hmp_caps = "xbzrle: off\nreturn-path: on\npostcopy-ram: off\n"
    assert qemu_monitor.capability(hmp_caps, "return-path") is True
    assert qemu_monitor.capability(hmp_caps, "postcopy-ram") is False
    qmp_caps = '{"return": [{"capability": "return-path", "state": false}]}'
    assert qemu_monitor.capability(qmp_caps, "return-path") is False
    assert qemu_monitor.capability(qmp_caps, "events") is None


# --- the pause split along qemu's events ----------------------------------------------


def _split_run(down: float, pause: float, wait: float | None, finish: float) -> dict[str, Any]:
    run = _run(1.0, down)
    run.update(pause_ms=pause, switchover_wait_ms=wait, finish_ms=finish, stop_to_resume_ms=pause)
    return run


def test_left_after_protocol_subtracts_libvirts_wait_and_hand_over() -> None:
    lv = _split_run(12.0, 21.0, 4.0, 8.0)
    assert ganeti_report.left_after_protocol(lv, libvirt=True) == (8.0, 9.0)
    # Ganeti: no wait (capability read back off), its target resumes by itself
    g = _split_run(6.0, 9.0, None, 3.0)
    g["capabilities"] = {"pause-before-switchover": False}
    assert ganeti_report.left_after_protocol(g, libvirt=False) == (6.0, 9.0)
    # no events and no capability read: nothing to subtract, nothing claimed
    assert ganeti_report.left_after_protocol(_split_run(6.0, 9.0, None, 3.0), False) == (
        None,
        None,
    )


def test_switchover_table_and_capabilities_line() -> None:
    g_runs = [_split_run(6.0, 9.0, None, 3.0), _split_run(8.0, 11.0, None, 3.0)]
    for run in g_runs:
        run["capabilities"] = {"return-path": False, "pause-before-switchover": False}
    lv_runs = [_split_run(12.0, 21.0, 4.0, 8.0), _split_run(10.0, 19.0, 2.0, 6.0)]
    lv_runs[0]["capabilities"] = {"return-path": True, "pause-before-switchover": True}
    lv_runs[0]["stopped_memory_mib"] = 2.5
    case = ganeti_report.case_result(128, 0, False, g_runs, lv_runs)
    lv = case["ganeti_lv"]
    assert lv["switchover_wait_ms"] == 3.0 and lv["finish_ms"] == 7.0
    assert (lv["downtime_left_ms"], lv["pause_left_ms"]) == (8.0, 10.0)
    assert (case["ganeti"]["downtime_left_ms"], case["ganeti"]["pause_left_ms"]) == (7.0, 10.0)
    results = {"cases": [case, {"label": "256 MiB, idle", "error": "boom"}]}
    table = ganeti_report.switchover_table(results)
    rows = [line for line in table.splitlines() if line.startswith("| 128 MiB")]
    assert rows[0].startswith("| 128 MiB, idle | Ganeti | 7.00 | 10.00 | 10.00 | - | - |")
    assert rows[1].startswith("| 128 MiB, idle | ganeti_lv | 11.00 | 20.00 | 20.00 | - | 3.00 |")
    assert "| 8.00 | 10.00 | 2.50 | 4, 2 / 8, 6 | 2/2 |" in rows[1]
    line = ganeti_report.capabilities_line(results)
    assert "Ganeti return-path off, pause-before-switchover off" in line
    assert "ganeti_lv return-path on, pause-before-switchover on" in line
    text = ganeti_report.markdown(results)
    assert table in text and line in text


def test_a_case_ganeti_lv_did_not_always_complete_is_missed() -> None:
    # the one migration that completed would meet every target on its own
    lv = [_run(1, 20), _run(30, None, ok=False), _run(30, None, ok=False)]
    for run in lv:
        run["pause_ms"] = 25.0
    g = [{**_run(7, 30), "pause_ms": 40.0}] * 3
    case = ganeti_report.case_result(256, 32, False, g, lv)
    verdicts = _verdicts({"cases": [case], "cap_s": 30})
    label = "256 MiB, dirtier 32 MiB (ganeti_lv completed 1 of 3 within 30 s)"
    assert verdicts == {
        f"median migration downtime (qemu's) <= Ganeti's, {label}": "NOT met",
        f"median pause, source stop to target resume, <= Ganeti's, {label}": "NOT met",
        f"median migration wall time / Ganeti's, {label}": "NOT met",
    }


def test_a_downtime_not_read_on_every_migration_is_not_measured() -> None:
    lv = [_run(1, 20), _run(1, None), _run(1, 22)]
    case = ganeti_report.case_result(128, 0, False, [_run(7, 30)] * 3, lv)
    verdicts = _verdicts({"cases": [case]})
    assert verdicts["median migration downtime (qemu's) <= Ganeti's, 128 MiB, idle"] == (
        "not measured"
    )
    assert verdicts["median migration wall time / Ganeti's, 128 MiB, idle"] == "met"
