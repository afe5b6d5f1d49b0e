"""``gnt-lv instance info``: gnt-instance info's layout, readable as YAML.

Ganeti's QA reads ``gnt-instance info`` with a YAML parser: a list with one
mapping per instance ("Instance name", "UUID", "State", "Nodes" as a list of
``primary``/``secondaries`` entries, "Hypervisor parameters" with
``default (<value>)`` for inherited values, "NICs" and "Disks" as lists of
``nic/N``/``disk/N`` entries whose first value is "<type>, size <n>M"...).
The same layout here, so the same parser reads both; ganeti_lv adds
"Running on" and "Console log". Values that YAML would misread are quoted.
"""

from __future__ import annotations

import json
import re
from typing import Any

from ganeti_lv.cli.common import format_value

# plain scalars YAML reads back as the same string (no indicators, no ": ", no " #")
_PLAIN_RE = re.compile(r"^[A-Za-z0-9_./(][^\n]*\Z")


def scalar(value: Any) -> str:
    """``value`` as a YAML scalar: plain where that reads back the same, else quoted."""
    # None, True, False in Python's words, as gnt-instance info writes them
    text = str(value) if value is None or isinstance(value, bool) else format_value(value)
    if text == "" or (_PLAIN_RE.match(text) and ": " not in text and " #" not in text):
        return text
    return json.dumps(text)


def _params(own: dict[str, Any], filled: dict[str, Any]) -> list[str]:
    """Parameter lines: inherited values as Ganeti shows them, ``default (<value>)``."""
    lines = []
    for key in sorted(filled):
        value = filled[key]
        if key in own:
            lines.append(f"    {key}: {scalar(value)}")
        else:
            lines.append(f"    {key}: {scalar('default (' + scalar(value) + ')')}")
    return lines


def _entry(title: str, head: str | None, fields: list[tuple[str, Any]]) -> list[str]:
    """A ``nic/N``/``disk/N`` list entry: its head value, then its fields."""
    first = f"    - {title}: {head if head is not None else ''}"
    return [first, *(f"      {key}: {scalar(value)}" for key, value in fields)]


def info_lines(row: dict[str, Any]) -> list[str]:
    """The lines of one instance (the first starts the list entry)."""
    state = f"configured to be {row['admin_state']}"
    if row["oper_state"] is not None:  # unknown: said nothing of, as Ganeti
        state += f", actual state is {'up' if row['oper_state'] else 'down'}"
    lines = [
        f"- Instance name: {scalar(row['name'])}",
        f"  UUID: {row['uuid']}",
        f"  State: {state}",
        f"  Status: {row['status']}",
        "  Nodes: ",
        f"    - primary: {scalar(row['pnode'])}",
        f"    - secondaries: {scalar(row['snodes']) if row['snodes'] else ''}",
        f"  Running on: {scalar(row['running_on']) if row['running_on'] else ''}",
        f"  Operating system: {scalar(row['os'])}",
        f"  Console log: {scalar(row.get('console_log') or '')}",
        "  Hypervisor parameters: ",
        *_params(row.get("own_hvparams", {}), row["hvparams"]),
        "  Back-end parameters: ",
        *_params(row.get("own_beparams", {}), row["beparams"]),
        "  NICs: ",
    ]
    for idx, nic in enumerate(row["nic_details"]):
        lines += _entry(
            f"nic/{idx}",
            None,
            [
                ("MAC", nic["mac"]),
                ("IP", nic.get("ip")),
                ("mode", nic.get("mode")),
                ("link", nic.get("link")),
                ("vlan", nic.get("vlan") or ""),
                ("network", nic.get("network") or None),
                ("UUID", nic.get("uuid")),
                ("name", nic.get("name") or None),
            ],
        )
    lines += [f"  Disk template: {scalar(row['disk_template'])}", "  Disks: "]
    for idx, disk in enumerate(row["disk_details"]):
        lines += _entry(
            f"disk/{idx}",
            f"{disk['dev_type']}, size {disk['size']}M",
            [
                ("access mode", disk["mode"]),
                ("on primary", disk["path"]),
                ("name", disk.get("name") or None),
                ("UUID", disk.get("uuid")),
            ],
        )
    lines.append(f"  Tags: {scalar(row['tags']) if row.get('tags') else ''}")
    return lines
