"""Write the Vagrant cluster's description (cluster.json) from its configuration.

The file has the same shape as the one ``gnt-lv-devcluster up`` writes, so
the cluster test suite runs against either one via
``GANETI_LV_TEST_CLUSTER=/path/cluster.json``. Runs on the master node.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
from typing import Any

from ganeti_lv import paths
from ganeti_lv.config import ConfigStore
from ganeti_lv.hypervisor.libvirt import LibvirtNodeOps


def find_guest(guest_dir: str) -> dict[str, str]:
    """The newest test guest (kernel, initrd) built under ``guest_dir``."""
    kernels = sorted(glob.glob(os.path.join(guest_dir, "guest-*", "vmlinuz")), key=os.path.getmtime)
    if not kernels:
        raise SystemExit(f"no test guest under {guest_dir}")
    out_dir = os.path.dirname(kernels[-1])
    return {
        "kernel": kernels[-1],
        "initrd": os.path.join(out_dir, "initrd.gz"),
        "cmdline": "console=ttyS0",
    }


def describe(data_dir: str, guest_dir: str, timeout_scale: float = 1.0) -> dict[str, Any]:
    """Build the cluster description from the configuration in ``data_dir``.

    ``timeout_scale``: how many times longer than on the local cluster the
    tests wait here (tests/support/timeouts.py).
    """
    config = ConfigStore(data_dir).read()
    cluster = config.cluster
    ops = LibvirtNodeOps(data_dir)  # the URIs as the master uses them (its certificate)
    nodes = [
        {
            "name": node.name,
            "address": node.address,
            "libvirt_uri": ops.libvirt_uri(node),
            "peer_uri": node.peer_uri,
            "migration_address": node.migration_address,
            "ssh_port": node.ssh_port,
            "ssh_user": node.ssh_user,
        }
        for node in sorted(config.nodes.values(), key=lambda n: n.name)
    ]
    return {
        "kind": "vagrant",
        "name": cluster.name,
        "master": cluster.master_node,
        "data_dir": data_dir,
        "ssh_key_file": paths.ssh_key_file(data_dir),
        "known_hosts_file": paths.known_hosts_file(data_dir),
        "domain_type": cluster.domain_type,
        "libvirt_transport": "tls",
        "ca_cert_file": paths.ca_cert_file(data_dir),
        "bridge": cluster.default_bridge,
        "nodes": nodes,
        "storage": {
            "file_storage_dir": cluster.file_storage_dir,
            "shared_file_storage_dir": cluster.shared_file_storage_dir,
            "export_dir": cluster.export_dir,
            "hooks_base_dir": cluster.hooks_base_dir,
        },
        "guest": find_guest(guest_dir),
        # Fault injection goes through the local cluster's namespaces.
        "supports_faults": False,
        "timeout_scale": timeout_scale,
    }


def _scale(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"a number above 0, not {text!r}")
    return value


def main(argv: list[str] | None = None) -> int:
    """Command line entry: write the description to ``--out`` atomically."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--guest-dir", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--timeout-scale", type=_scale, default=1.0)
    opts = parser.parse_args(argv)
    info = describe(opts.data_dir, opts.guest_dir, opts.timeout_scale)
    text = json.dumps(info, indent=2, sort_keys=True)
    tmp = opts.out + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text + "\n")
    os.replace(tmp, opts.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
