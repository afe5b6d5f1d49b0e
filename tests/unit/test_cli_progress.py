"""The shared progress-bar feedback of the migrate and export commands."""

from __future__ import annotations

import io

import pytest

from ganeti_lv.cli import backup, common, migrate


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_not_a_terminal_prints_plain_lines() -> None:
    out = io.StringIO()
    env = common.CliEnv(data_dir="/nonexistent", out=out)
    with common.progress_feedback(env, migrate.progress_bar) as feedback:
        feedback("migration  50.0% of memory, 10.0 MiB/s")
    assert "migration  50.0% of memory, 10.0 MiB/s" in out.getvalue()


def test_terminal_draws_one_bar_per_name_and_prints_other_lines(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tty = _Tty()
    monkeypatch.setattr("sys.stdout", tty)
    env = common.CliEnv(data_dir="/nonexistent")
    with common.progress_feedback(env, backup.parse_progress, show_percent=False) as feedback:
        assert feedback != env.feedback
        feedback("disk/0 sent 1.0G, 100.0 MiB/s, 25%, ETA 9s")
        feedback("disk/1 sent 2.0G, 100.0 MiB/s, 50%, ETA 9s")
        feedback("STEP 2/3 copying")
    text = tty.getvalue()
    assert "STEP 2/3 copying" in text
    assert "disk/0" in text and "disk/1" in text
    assert "━" in text  # drawn as bars, not printed as lines
    assert "disk/0 sent" not in text


def test_migration_progress_bar_parser() -> None:
    line = "migration  75.0% of memory, 12.0 MiB/s, remaining 3.0 MiB"
    assert migrate.progress_bar(line) == ("migrating", 75.0, "12.0 MiB/s, remaining 3.0 MiB")
    assert migrate.progress_bar("STEP 1/4 Checking") is None
