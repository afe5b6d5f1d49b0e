"""The guest-safety harness's pure parts: cases, ticks, fault words, the summary."""

from __future__ import annotations

import argparse

import pytest

from bench.guest_safety import Case, main, summary, ticks
from ganeti_lv.devcluster.guest import kernel_faults

BOOT_LINES = """\
[    0.000000] NX (Execute Disable) protection: active
[ 1.04] PCI: Using host bridge windows from ACPI; if necessary, use "pci=nocrs" and report a bug
[    1.877193] AMD-Vi: AMD IOMMUv2 functionality not available on this system - This is not a bug.
GUEST-READY
tick 1
"""


def test_case_parse() -> None:
    assert Case.parse("256:64:10") == Case(256, 64, 10)
    assert Case.parse("128:16") == Case(128, 16, 10)
    for bad in ("256", "32:0", "256:-1:3", "1:2:3:4"):
        with pytest.raises(argparse.ArgumentTypeError):
            Case.parse(bad)


def test_ticks_in_order_across_carriage_returns() -> None:
    assert ticks("GUEST-READY\r\ntick 1\r\ntick 2\nticker 3\n tick 4\ntick 5\n") == [1, 2, 5]


@pytest.mark.parametrize(
    "line",
    [
        "[ 9.32] list_add corruption. next->prev should be prev (ffff89ff4f8387a8)",
        "[ 11.1] general protection fault, probably for non-canonical address 0xdead",
        "[ 2.84] kernel tried to execute NX-protected page - exploit attempt? (uid: 0)",
        "[ 172.8] watchdog: BUG: soft lockup - CPU#0 stuck for 23s! [dd:628]",
        "[ 88.4] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:",
        "[ 9.9] Kernel panic - not syncing: Fatal exception in interrupt",
        "[ 3.1] BUG: TASK stack guard page was hit at 00000000a1b2c3d4",
    ],
)
def test_kernel_faults_found(line: str) -> None:
    assert kernel_faults(BOOT_LINES + line + "\ntick 2\n") == [line]


def test_a_normal_boot_has_no_faults() -> None:
    assert kernel_faults(BOOT_LINES) == []


def _row(arm: str, dead: bool, nth: int, guest: str, passes: int = 3) -> dict:
    return {
        "qemu": "QEMU 7.2.22",
        "memory": 256,
        "dirtymb": 64,
        "arm": arm,
        "dead": dead,
        "nth_of_guest": nth,
        "guest": guest,
        "total_ms": 900.0,
        "downtime_ms": 100.0,
        "iterations": passes,
        "problems": ["kernel: list_add corruption"] if dead else [],
    }


def test_summary_counts_migrations_deaths_and_fresh_guests() -> None:
    rows = [
        _row("virsh", False, 1, "a"),
        _row("virsh", False, 2, "a"),
        _row("gnt-lv", False, 1, "b"),
        _row("gnt-lv", True, 2, "b", passes=4),
        _row("gnt-lv", True, 1, "c", passes=4),
    ]
    lines = summary(rows).splitlines()
    gnt = next(line for line in lines if "| gnt-lv |" in line)
    virsh = next(line for line in lines if "| virsh |" in line)
    cells = [c.strip() for c in gnt.strip("|").split("|")]
    # migrations, deaths, deaths at a fresh guest's first, guests, >=4 passes (deaths)
    assert cells[3:7] == ["3", "2", "1/2", "2"]
    assert "#2: kernel: list_add corruption" in cells[-1]
    assert [c.strip() for c in virsh.strip("|").split("|")][3:5] == ["2", "0"]


def test_bad_arms_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--arms", "virsh,virsh", "--out", "/dev/null"])
    assert "--arms" in capsys.readouterr().err
