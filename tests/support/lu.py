"""Running opcodes through the processor in unit tests, on a test context."""

from __future__ import annotations

from typing import Any

import pytest

from ganeti_lv.config import ConfigStore
from ganeti_lv.context import Context
from ganeti_lv.errors import OpPrereqError
from ganeti_lv.mcpu import Processor
from ganeti_lv.opcodes import OpCode


def run_op(ctx: Context, op: OpCode) -> tuple[Any, list[str]]:
    """``op`` run as the processor runs a job's opcode: its result and feedback lines."""
    lines: list[str] = []
    return Processor(ctx).execute(op, feedback_fn=lines.append), lines


def refused(ctx: Context, config: ConfigStore, op: OpCode) -> OpPrereqError:
    """The OpPrereqError ``op`` is refused with; the configuration left unchanged."""
    serial = config.read().serial
    with pytest.raises(OpPrereqError) as err:
        run_op(ctx, op)
    assert config.read().serial == serial
    return err.value
