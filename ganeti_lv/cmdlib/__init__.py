"""The LogicalUnits. Importing this package registers every LU (LU_REGISTRY).

Each LU module is imported below (one line per module).
"""

from ganeti_lv.cmdlib import (  # noqa: F401
    backup_export,
    backup_import,
    backup_query,
    cluster,
    instance,
    instance_migration,  # noqa: F401
    instance_query,
    node,
    test,  # noqa: F401
)
