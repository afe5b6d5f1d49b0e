"""A Vagrant node's first TLS credentials and libvirtd's TLS settings.

libvirtd needs a certificate before it listens on TLS, and the cluster
gives its own only at ``node add``: as the local cluster's harness does,
each node gets first certificates from the cluster CA the Vagrantfile made
on the host (``.cluster/cacert.pem``, ``cakey.pem``, also given to
``gnt-lv cluster init --ca-cert/--ca-key``), under libvirt's and qemu's
standard names. ``node add`` (and ``gnt-lv cluster renew-crypto``) replace
them with certificates the cluster issues. libvirtd.conf gets the TLS
settings ganeti_lv's clusters use (client certificates of the CA, of this
cluster only; no TCP listener) in place of any earlier listen/auth/tls
lines. ``--root`` writes below another directory (for tests).
"""

from __future__ import annotations

import argparse
import os
import re

from ganeti_lv import pki
from ganeti_lv.hypervisor.libvirt import credentials

# settings of libvirtd.conf this script owns (earlier values are dropped)
_OWNED = re.compile(r"^\s*#?\s*(listen_tls|listen_tcp|auth_tls|auth_tcp|tls_\w+)\s*=")


def libvirtd_conf(text: str, cluster_name: str) -> str:
    """``text`` (a libvirtd.conf) without its listen/auth/tls settings, then ganeti_lv's."""
    kept = [line for line in text.splitlines() if not _OWNED.match(line)]
    return "\n".join(kept).rstrip("\n") + "\n" + pki.libvirtd_tls_settings(cluster_name)


def main(argv: list[str] | None = None) -> int:
    """Write the node's certificates (unless it has some) and libvirtd's TLS settings."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ca-cert", required=True)
    parser.add_argument("--ca-key", required=True)
    parser.add_argument("--cluster-name", required=True)
    parser.add_argument("--node-name", required=True)
    parser.add_argument("--address", required=True)
    parser.add_argument("--root", default="/")
    opts = parser.parse_args(argv)

    def local(path: str) -> str:
        return os.path.join(opts.root, path.lstrip("/"))

    authority = pki.parse_ca(
        pki.read_file(opts.ca_cert), pki.read_file(opts.ca_key), f"The CA {opts.ca_cert}"
    )
    credentials.write_first(authority, opts.cluster_name, opts.node_name, [opts.address], local)
    conf = local("/etc/libvirt/libvirtd.conf")
    try:
        with open(conf, encoding="utf-8") as fobj:
            text = fobj.read()
    except FileNotFoundError:
        text = ""
    os.makedirs(os.path.dirname(conf), exist_ok=True)
    with open(conf + ".new", "w", encoding="utf-8") as fobj:
        fobj.write(libvirtd_conf(text, opts.cluster_name))
    os.replace(conf + ".new", conf)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
