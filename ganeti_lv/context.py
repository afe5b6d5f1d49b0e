"""The context every operation runs in: config, node operations, locks, jobs, time.

Nothing in ganeti_lv reads globals: the processor and the LUs get all they
need from a :class:`Context`, so tests can swap any part (a fake node-ops
implementation, a fake clock and sleep).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection

from ganeti_lv import locking, paths
from ganeti_lv.config import ConfigStore
from ganeti_lv.errors import ConfigurationError
from ganeti_lv.hypervisor.base import NodeOps
from ganeti_lv.locking import LockManager
from ganeti_lv.master.jobs import JobStore


def config_names_fn(config: ConfigStore) -> locking.NamesFn:
    """A ``LockManager.names_fn`` listing the configuration's objects per level (None
    for a level the configuration does not list, such as exports', or when it cannot
    be read)."""

    def names(level: int) -> Collection[str] | None:
        try:
            if level == locking.LEVEL_INSTANCE:
                return config.snapshot().instances.keys()
            if level in (locking.LEVEL_NODE, locking.LEVEL_NODE_RES):
                return config.snapshot().nodes.keys()
        except ConfigurationError:
            return None
        if level == locking.LEVEL_CLUSTER:
            return [locking.BGL_NAME]
        return None

    return names


class Context:
    """Everything an operation needs; ``node_ops`` may be created lazily.

    When ``node_ops`` is None, the first access creates the libvirt
    implementation (``ganeti_lv.hypervisor.libvirt.LibvirtNodeOps``) for this
    data dir, once also when threads ask at the same time (the master
    daemon's jobs and remote API requests). ``lock_timeout`` (seconds,
    None = wait forever) bounds each lock-level acquisition.
    """

    def __init__(
        self,
        data_dir: str,
        config: ConfigStore,
        node_ops: NodeOps | None,
        locks: LockManager,
        jobs: JobStore,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        lock_timeout: float | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.config = config
        self._node_ops = node_ops
        self._node_ops_lock = threading.Lock()
        self.locks = locks
        self.jobs = jobs
        self.clock = clock
        self.sleep = sleep
        self.lock_timeout = lock_timeout

    @property
    def node_ops(self) -> NodeOps:
        """The node-operations facade (created on first use if not given)."""
        with self._node_ops_lock:
            if self._node_ops is None:
                from ganeti_lv.hypervisor.libvirt import LibvirtNodeOps  # heavy: libvirt

                self._node_ops = LibvirtNodeOps(self.data_dir)
            return self._node_ops

    @node_ops.setter
    def node_ops(self, value: NodeOps) -> None:
        self._node_ops = value

    @classmethod
    def from_data_dir(
        cls,
        data_dir: str | None = None,
        node_ops: NodeOps | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        lock_timeout: float | None = None,
    ) -> Context:
        """Build a context for ``data_dir`` (default: $GANETI_LV_DATA_DIR or the default)."""
        ddir = paths.data_dir(data_dir)
        config = ConfigStore(ddir)
        locks = LockManager(
            paths.locks_dir(ddir), names_fn=config_names_fn(config), clock=clock, sleep=sleep
        )
        jobs = JobStore(paths.jobs_dir(ddir))
        return cls(
            ddir,
            config,
            node_ops,
            locks,
            jobs,
            clock=clock,
            sleep=sleep,
            lock_timeout=lock_timeout,
        )

    def close(self) -> None:
        """Release the node-operations connections, if any were made."""
        if self._node_ops is not None:
            self._node_ops.close()
