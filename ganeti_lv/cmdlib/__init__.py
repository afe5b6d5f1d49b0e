"""The LogicalUnits. Importing this package registers every LU (LU_REGISTRY).

Each LU module is imported below (one line per module).
"""

from ganeti_lv.cmdlib import test  # noqa: F401
from ganeti_lv.cmdlib import instance_migration  # noqa: F401
from ganeti_lv.cmdlib import cluster, instance, node  # noqa: F401
from ganeti_lv.cmdlib import backup  # noqa: F401
