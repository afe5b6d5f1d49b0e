"""The ``hv/`` and ``be/`` list fields against Ganeti 3.0's own parameter names."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from ganeti_lv import constants
from ganeti_lv.cli import instance_fields

GANETI_PACKAGE = "/usr/share/ganeti/3.0"  # Debian's ganeti (the Ganeti peer installs it)


def _ganeti_parameters() -> dict[str, list[str]]:
    if not os.path.exists(os.path.join(GANETI_PACKAGE, "ganeti", "constants.py")):
        pytest.skip("Ganeti 3.0 is not installed here")
    program = (
        "import json; from ganeti import constants as c;"
        "print(json.dumps({'hv': sorted(set(c.HVS_PARAMETERS) - set(c.HVC_GLOBALS)),"
        " 'hv_all': sorted(c.HVS_PARAMETERS),"
        " 'be': sorted(c.BES_PARAMETERS)}))"
    )
    proc = subprocess.run(
        ["/usr/bin/python3", "-c", program],
        capture_output=True,
        text=True,
        cwd="/",
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": GANETI_PACKAGE},
        check=True,
    )
    return dict(json.loads(proc.stdout))


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
