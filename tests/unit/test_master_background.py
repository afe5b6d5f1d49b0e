"""Jobs started in a process of their own (``ganeti_lv.master.background.start``)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any

import pytest

from ganeti_lv.errors import ECODE_ENVIRON, OpExecError
from ganeti_lv.master import background
from ganeti_lv.opcodes import OpTestDelay


def test_a_process_that_never_records_its_job_is_stopped_within_the_start_timeout(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the process may wait for the job log's lock for ever (held by a stopped
    # process); here it sleeps without answering
    started: list[subprocess.Popen[bytes]] = []
    real_popen = subprocess.Popen

    def silent(_args: Any, **kwargs: Any) -> subprocess.Popen[bytes]:
        proc = real_popen([sys.executable, "-c", "import time; time.sleep(10)"], **kwargs)
        started.append(proc)
        return proc

    monkeypatch.setattr(background, "START_TIMEOUT", 0.5)
    monkeypatch.setattr(subprocess, "Popen", silent)
    begin = time.monotonic()
    try:
        with pytest.raises(OpExecError) as err:
            background.start(str(tmp_path), [OpTestDelay(duration=0)], None)
        elapsed = time.monotonic() - begin
        assert elapsed < 3
        assert err.value.ecode == ECODE_ENVIRON
        assert "did not record its job within 0.5 s" in err.value.msg
        [proc] = started
        assert proc.returncode is not None  # stopped and reaped
        assert not os.path.exists(f"/proc/{proc.pid}")
    finally:
        for proc in started:
            if proc.returncode is None:
                proc.kill()
                proc.wait()


def test_a_process_that_fails_before_recording_its_job_is_an_error_with_its_last_line(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_popen = subprocess.Popen
    failing = "import sys; sys.stdin.read(); sys.exit('Traceback ...\\nJobError: no job log')"

    def failed(_args: Any, **kwargs: Any) -> subprocess.Popen[bytes]:
        return real_popen([sys.executable, "-c", failing], **kwargs)

    monkeypatch.setattr(subprocess, "Popen", failed)
    with pytest.raises(OpExecError) as err:
        background.start(str(tmp_path), [OpTestDelay(duration=0)], None)
    assert err.value.msg == "Could not start the job in the background: JobError: no job log"
