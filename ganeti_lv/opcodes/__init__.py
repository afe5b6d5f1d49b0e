"""Opcodes: what an operation is asked to do, with Ganeti's names and defaults.

Each opcode is a keyword-only dataclass with an ``OP_ID`` (Ganeti's ``OP_*``
name); ``field(default_factory=list)`` gives a fresh list per opcode. The
base class adds ``to_dict``/``from_dict`` (the form opcodes take in the job
log and in the master daemon's protocol), ``summary()`` for job listings and
``validate()``, which checks types and values and raises
``OpPrereqError(..., ECODE_INVAL)``; the processor calls it before the LU is
built. ``OP_REGISTRY`` maps OP_ID to class (no name mangling).

Every opcode carries Ganeti's reason trail (``reason``): why it runs, as
``[source, text, timestamp]`` entries, oldest first, the timestamp in
nanoseconds since the epoch as Ganeti's. Whoever submits the job starts it
(``gnt-lv``'s ``--reason`` and command, the remote API's ``?reason=`` and
resource), the job log adds the master's entry when it records the job
(``add_job_reasons``) and a node operation's jobs start with its trail.

The base class and the shared checks are in ``base``; the opcodes live by
area (``cluster``, ``node``, ``instance``, ``tags``, ``moves``, ``backup``),
and this package gives every one by its name.
"""

from __future__ import annotations

from ganeti_lv.opcodes.backup import (
    OpBackupExport,
    OpBackupPrepare,
    OpBackupQuery,
    OpBackupRemove,
)
from ganeti_lv.opcodes.base import (
    OP_REGISTRY,
    OpCode,
    add_job_reasons,
    check_node_access,
    check_node_settings,
    reason_entry,
)
from ganeti_lv.opcodes.cluster import (
    OpClusterRenewCrypto,
    OpClusterSetParams,
    OpClusterVerify,
    OpTestDelay,
)
from ganeti_lv.opcodes.instance import (
    OpInstanceConsole,
    OpInstanceCreate,
    OpInstanceQuery,
    OpInstanceQueryData,
    OpInstanceReboot,
    OpInstanceRemove,
    OpInstanceSetParams,
    OpInstanceShutdown,
    OpInstanceStartup,
)
from ganeti_lv.opcodes.moves import (
    OpInstanceFailover,
    OpInstanceMigrate,
    OpNodeEvacuate,
    OpNodeMigrate,
)
from ganeti_lv.opcodes.node import (
    OpNodeAdd,
    OpNodeQuery,
    OpNodeRemove,
    OpNodeSetParams,
)
from ganeti_lv.opcodes.tags import (
    OpTagsDel,
    OpTagsGet,
    OpTagsSearch,
    OpTagsSet,
)

__all__ = [
    "OP_REGISTRY",
    "OpCode",
    "add_job_reasons",
    "check_node_access",
    "check_node_settings",
    "reason_entry",
    "OpBackupExport",
    "OpBackupPrepare",
    "OpBackupQuery",
    "OpBackupRemove",
    "OpClusterRenewCrypto",
    "OpClusterSetParams",
    "OpClusterVerify",
    "OpInstanceConsole",
    "OpInstanceCreate",
    "OpInstanceFailover",
    "OpInstanceMigrate",
    "OpInstanceQuery",
    "OpInstanceQueryData",
    "OpInstanceReboot",
    "OpInstanceRemove",
    "OpInstanceSetParams",
    "OpInstanceShutdown",
    "OpInstanceStartup",
    "OpNodeAdd",
    "OpNodeEvacuate",
    "OpNodeMigrate",
    "OpNodeQuery",
    "OpNodeRemove",
    "OpNodeSetParams",
    "OpTagsDel",
    "OpTagsGet",
    "OpTagsSearch",
    "OpTagsSet",
    "OpTestDelay",
]
