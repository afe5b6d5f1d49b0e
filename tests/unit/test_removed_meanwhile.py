"""An instance removed between the expansion of its name and its use: ECODE_NOENT.

A job waiting for the instance's lock (a tag change), or a query that takes
no lock (the console), may find it gone after the removal that held the lock
ended: the error is Ganeti's "not known", never a bare KeyError.
"""

from __future__ import annotations

import pytest

from ganeti_lv import constants
from ganeti_lv.cmdlib.instance_console import LUInstanceConsole
from ganeti_lv.cmdlib.tags import LUTagsSet
from ganeti_lv.config import ConfigStore
from ganeti_lv.context import Context
from ganeti_lv.errors import ECODE_NOENT, OpPrereqError
from ganeti_lv.mcpu import Processor
from ganeti_lv.opcodes import OpInstanceConsole, OpTagsSet

INST = "inst1.example.com"


def test_a_tag_change_waiting_for_a_removed_instance_is_not_known(
    ctx: Context, config: ConfigStore
) -> None:
    op = OpTagsSet(kind=constants.TAG_INSTANCE, name="inst1", tags=["x"])
    op.validate()
    lu = LUTagsSet(Processor(ctx), op, ctx)
    lu.ExpandNames()  # its full name, and a wait for its lock
    config.remove_instance(INST)  # the removal that held the lock ends
    with pytest.raises(OpPrereqError, match=f"Instance '{INST}' not known") as err:
        lu.CheckPrereq()
    assert err.value.ecode == ECODE_NOENT


def test_the_console_of_an_instance_removed_meanwhile_is_not_known(
    ctx: Context, config: ConfigStore
) -> None:
    lu = LUInstanceConsole(Processor(ctx), OpInstanceConsole(instance_name="inst1"), ctx)
    lu.ExpandNames()
    config.remove_instance(INST)
    with pytest.raises(OpPrereqError, match=f"Instance '{INST}' not known") as err:
        lu.Exec(lambda _line: None)
    assert err.value.ecode == ECODE_NOENT
