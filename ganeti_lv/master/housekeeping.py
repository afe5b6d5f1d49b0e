"""The master daemon's periodic pass over its data dir (as Ganeti's watcher archives jobs).

Once when the daemon starts and every ``PASS_INTERVAL`` seconds after that
(``Housekeeper.tick``, called between requests), a thread of its own:

- removes the temp files that writers killed mid-write (SIGKILL, a crash)
  left beside the configuration and the job files, once they are an hour
  old (a writer of another process may still be writing a younger one);
- records the ends of the daemon's jobs that the job log did not take when
  they ended (a full disk; ``MasterDaemon.record_unrecorded_ends``);
- records the end of the lost jobs (their process is gone) and archives
  the finished jobs that ended ``AUTOARCHIVE_AGE`` (6 h, as Ganeti's
  watcher) ago or earlier (``ganeti_lv.master.archive``).

A pass that fails is logged; the next one runs at its time.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable

from ganeti_lv import paths
from ganeti_lv.config import atomic_temp_pattern, remove_stale_temp_files
from ganeti_lv.master.archive import auto_archive
from ganeti_lv.master.jobs import JOB_TEMP_FILE_RES, JobStore

log = logging.getLogger("ganeti_lv.master.housekeeping")

# finished jobs older than this are archived (Ganeti's watcher's default job age)
AUTOARCHIVE_AGE = 6 * 3600.0
# seconds between two passes (Ganeti's watcher runs every 5 minutes)
PASS_INTERVAL = 300.0
# a temp file last written this long ago (s) has no writer any more: far
# longer than a write takes, even one whose fsync waits behind a large copy
STALE_TEMP_AGE = 3600.0

_CONFIG_TEMP_RES = (atomic_temp_pattern(re.escape("config.json")),)


def remove_stale_temps(data_dir: str, now: float | None = None) -> list[str]:
    """Remove the temp files killed writers left (configuration, job log); their names."""
    removed = remove_stale_temp_files(data_dir, _CONFIG_TEMP_RES, STALE_TEMP_AGE, now)
    removed += remove_stale_temp_files(
        paths.jobs_dir(data_dir), JOB_TEMP_FILE_RES, STALE_TEMP_AGE, now
    )
    return removed


def housekeeping_pass(data_dir: str) -> None:
    """One pass: stale temp files, lost jobs, archiving (see the module's docstring)."""
    removed = remove_stale_temps(data_dir)
    if removed:
        log.info("removed %d temp files left by killed writers: %s", len(removed), removed)
    archived = auto_archive(JobStore(paths.jobs_dir(data_dir)), AUTOARCHIVE_AGE)
    if archived:
        log.info("archived %d jobs older than %g s", archived, AUTOARCHIVE_AGE)


class Housekeeper:
    """Runs ``housekeeping_pass`` for a data dir when it is due, in a thread of its own,
    after the daemon's own ``before_pass`` (a failing one is logged, the pass runs)."""

    def __init__(
        self,
        data_dir: str,
        interval: float = PASS_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
        before_pass: Callable[[], None] = lambda: None,
    ) -> None:
        self.data_dir = data_dir
        self.interval = interval
        self._clock = clock
        self._before_pass = before_pass
        self._due: float | None = None  # None: at once
        self._thread: threading.Thread | None = None

    def tick(self) -> None:
        """Start a pass when one is due and none runs (cheap otherwise)."""
        now = self._clock()
        if self._due is not None and now < self._due:
            return
        if self._thread is not None and self._thread.is_alive():
            return
        self._due = now + self.interval
        thread = threading.Thread(target=self.run_pass, name="masterd-housekeeping")
        try:
            thread.start()
        except RuntimeError:  # no thread to be had now: the daemon goes on serving
            log.exception("the periodic pass over the data dir could not start")
            return
        self._thread = thread

    def run_pass(self) -> None:
        """One pass now, in the caller's thread (``tick`` runs it in a thread of its own)."""
        for step in (self._before_pass, lambda: housekeeping_pass(self.data_dir)):
            try:
                step()
            except Exception:  # noqa: BLE001 - the daemon goes on; the next pass tries again
                log.exception("the periodic pass over the data dir failed")

    def join(self) -> None:
        """Wait for the pass that runs now, if any."""
        if self._thread is not None:
            self._thread.join()
