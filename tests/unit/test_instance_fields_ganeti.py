"""The ``hv/`` and ``be/`` list fields against Ganeti 3.0's own parameter names."""

from __future__ import annotations

from support.ganeti_package import ganeti_json

from ganeti_lv import constants
from ganeti_lv.cli import instance_fields


def _ganeti_parameters() -> dict[str, list[str]]:
    program = (
        "import json; from ganeti import constants as c;"
        "print(json.dumps({'hv': sorted(set(c.HVS_PARAMETERS) - set(c.HVC_GLOBALS)),"
        " 'hv_all': sorted(c.HVS_PARAMETERS),"
        " 'be': sorted(c.BES_PARAMETERS)}))"
    )
    return dict(ganeti_json(program, "constants"))


def test_every_ganeti_instance_parameter_is_a_known_field() -> None:
    ganeti = _ganeti_parameters()
    for kind in ("hv", "be"):
        unknown = [p for p in ganeti[kind] if not instance_fields.is_known(f"{kind}/{p}")]
        assert unknown == [], kind
    # the names kept for Ganeti's sake are Ganeti's
    taken = constants.GANETI_OTHER_HVPARAMS | constants.GANETI_KVM_ONLY_HVPARAMS
    assert sorted(taken - set(ganeti["hv_all"])) == []
    assert sorted(set(constants.GANETI_ONLY_BEPARAMS) - set(ganeti["be"])) == []
    # Ganeti's cluster-wide parameters are no instance fields, here either
    for name in constants.HVC_GLOBALS:
        assert not instance_fields.is_known(f"hv/{name}")
    assert not instance_fields.is_known("hv/xen_cmd")
