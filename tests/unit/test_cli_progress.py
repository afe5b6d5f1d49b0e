"""How gnt-lv shows a job's records: progress bars on a terminal, lines otherwise."""

from __future__ import annotations

import io
import time

import pytest

from ganeti_lv.cli import submit
from ganeti_lv.hypervisor.migration_types import MigrationProgress
from ganeti_lv.master.protocol import Feedback, Progress, make_record, progress_of


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_not_a_terminal_prints_plain_lines_with_their_time() -> None:
    out = io.StringIO()
    record = make_record(7, 0, "migration  50.0% of memory, 10.0 MiB/s", ts=1_700_000_000.0)
    with submit.show_records(submit.Output(lambda: out)) as show:
        show(record)
        show(make_record(7, 0, "STEP 1/4 Checking", ts=1_700_000_001.0))
    assert out.getvalue() == (
        f"{time.ctime(1_700_000_000.0)} migration  50.0% of memory, 10.0 MiB/s\n"
        f"{time.ctime(1_700_000_001.0)} STEP 1/4 Checking\n"
    )


def test_terminal_draws_one_bar_per_name_and_prints_other_lines() -> None:
    tty = _Tty()
    with submit.show_records(submit.Output(lambda: tty)) as show:
        show(make_record(1, 0, "disk/0 sent 1.0G, 100.0 MiB/s, 25%, ETA 9s"))
        show(make_record(1, 0, "disk/1 sent 2.0G, 100.0 MiB/s, 50%, ETA 9s"))
        show(make_record(1, 0, "STEP 2/3 copying"))
    text = tty.getvalue()
    assert "STEP 2/3 copying" in text
    assert "disk/0" in text and "disk/1" in text
    assert "━" in text  # drawn as bars, not printed as lines
    assert "disk/0 sent" not in text


def test_progress_lines_become_progress_records() -> None:
    line = MigrationProgress(elapsed=1, memory_total=200, memory_remaining=50).format()
    record = make_record(3, 1, line, ts=5.0)
    assert isinstance(record, Progress)
    assert (record.job_id, record.op, record.ts, record.text) == (3, 1, 5.0, line)
    assert (record.bar, record.percent) == ("migrating", 75.0)
    assert record.detail.startswith("0.0 MiB/s, remaining 0.0 MiB")
    assert progress_of("disk/1 sent 1.5G, 120.0 MiB/s, 30%, ETA 12s") == (
        "disk/1",
        30.0,
        "1.5G, 120.0 MiB/s, ETA 12s",
    )
    last = "disk/0 sent 1.0G, 90.0 MiB/s, 100%"
    assert progress_of(last) == ("disk/0", 100.0, "1.0G, 90.0 MiB/s")
    for other in ("STEP 1/4 Checking", "disk/0: sha256-tree-4M:ab verified", "migration completed"):
        assert progress_of(other) is None
        assert type(make_record(1, 0, other)) is Feedback


@pytest.mark.parametrize("error", [BrokenPipeError, OSError, ValueError])
def test_lost_output_is_dropped_not_raised(error: type[Exception]) -> None:
    class Broken(io.StringIO):
        def write(self, text: str) -> int:
            raise error("gone")

    out = submit.Output(lambda: Broken())
    with submit.show_records(out) as show:
        show(make_record(1, 0, "first line"))
        show(make_record(1, 0, "second line"))
    assert out.lost
    assert not out.isatty()
