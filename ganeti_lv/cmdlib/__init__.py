"""The LogicalUnits. Importing this package registers every LU (LU_REGISTRY).

Each LU module is imported below (one line per module).
"""

from ganeti_lv.cmdlib import (  # noqa: F401
    backup_export,
    backup_import,
    backup_prepare,
    backup_query,
    cluster,
    cluster_crypto,
    instance,
    instance_console,
    instance_create,
    instance_info,
    instance_migration,
    instance_modify,
    instance_move,
    instance_query,
    node,
    node_evacuate,
    tags,
    test,  # noqa: F401
)
