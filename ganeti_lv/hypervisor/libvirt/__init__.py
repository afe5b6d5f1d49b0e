"""The libvirt implementation of NodeOps.

Layout (Nova's Host/Guest split): ``host.Host`` owns one node's connection,
``guest.Guest`` wraps one domain (the only place that sees virDomain objects),
``domxml`` builds and reads domain XML (pure), ``errors`` maps libvirt errors
to ganeti_lv errors, ``nodeops.LibvirtNodeOps`` is the facade the LUs call.
No libvirt type or VIR_* constant is used outside this package.
"""

from ganeti_lv.hypervisor.libvirt.guest import Guest
from ganeti_lv.hypervisor.libvirt.host import Host
from ganeti_lv.hypervisor.libvirt.nodeops import LibvirtNodeOps

__all__ = ["Guest", "Host", "LibvirtNodeOps"]
