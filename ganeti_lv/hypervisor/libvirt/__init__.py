"""The libvirt implementation of NodeOps.

Layout (Nova's Host/Guest split): ``host.Host`` owns one node's connection,
``guest.Guest`` wraps one domain and is the only place that calls a
virDomain (lifecycle, migration, job figures, snapshots, and block jobs
through ``guest.BlockDevice``); ``errors`` is the one place that turns
libvirt errors into ganeti_lv errors. ``domxml`` builds and reads domain
XML (pure), ``migration`` drives a migration (flags, monitor, the pure
policy's decisions), ``snapshot`` and ``diskchain`` the export snapshots and
their repair, ``exportops`` the export operations and the job sessions,
``nodeops.LibvirtNodeOps`` the implementation the LUs call. No libvirt
type or VIR_* constant is used outside this package, and no LU imports it.
"""

from ganeti_lv.hypervisor.libvirt.guest import Guest
from ganeti_lv.hypervisor.libvirt.host import Host
from ganeti_lv.hypervisor.libvirt.nodeops import LibvirtNodeOps

__all__ = ["Guest", "Host", "LibvirtNodeOps"]
