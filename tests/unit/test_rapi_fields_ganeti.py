"""The remote API's bulk fields against Ganeti 3.0's own (its installed ``rlib2``)."""

from __future__ import annotations

from support.ganeti_package import ganeti_json

from ganeti_lv.rapi import jobfields, queries


def test_bulk_resources_have_ganetis_fields_in_its_order() -> None:
    """A client of Ganeti 3.0 reads these keys of every instance, node and job."""
    program = (
        "import json; from ganeti.rapi import rlib2 as r;"
        "print(json.dumps({'I': r.I_FIELDS, 'N': r.N_FIELDS, 'J': r.J_FIELDS,"
        " 'J_BULK': r.J_FIELDS_BULK}))"
    )
    ganeti = ganeti_json(program, "rapi/rlib2")
    assert list(queries.I_FIELDS) == ganeti["I"]
    assert list(queries.N_FIELDS) == ganeti["N"]
    assert list(jobfields.JOB_FIELDS) == ganeti["J"]
    assert list(jobfields.JOB_FIELDS_BULK) == ganeti["J_BULK"]
