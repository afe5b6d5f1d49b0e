"""``gnt-lv-devcluster up|down|status|prepare``: the local multi-node test cluster.

``gnt-lv-devcluster peer ...`` (see :mod:`ganeti_lv.devcluster.peercli`) runs the
real Ganeti peer cluster beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from ganeti_lv.devcluster import cliargs, emulator, guest, peercli, peerinstall
from ganeti_lv.devcluster import layout as lay
from ganeti_lv.devcluster.cluster import DevCluster
from ganeti_lv.errors import GenericError, format_error

DIR_ENV = "GANETI_LV_DEVCLUSTER_DIR"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gnt-lv-devcluster",
        description="Local multi-node cluster of network namespaces running real "
        "libvirtd, qemu and sshd.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    default_dir = os.environ.get(DIR_ENV, lay.DEFAULT_DIR)
    parsers = cliargs.add_commands(
        sub,
        (
            ("up", "bring the cluster up (idempotent)"),
            ("down", "stop everything and remove namespaces and links"),
            ("status", "report what runs"),
        ),
        what="cluster",
        default_dir=default_dir,
        env=DIR_ENV,
        default_cache_dir=guest.DEFAULT_CACHE_DIR,
        cache_help="where the test guest and the domain type probe are cached",
    )
    p = parsers["up"]
    p.add_argument(
        "--nodes",
        type=int,
        default=None,
        help=f"number of nodes, 1-{lay.MAX_NODES} (default 2)",
    )
    p.add_argument("--subnet", default=None, help=f"node subnet (default {lay.DEFAULT_SUBNET})")
    p.add_argument(
        "--domain-type",
        choices=("kvm", "qemu"),
        default=None,
        help="libvirt domain type (default: probed)",
    )
    p.add_argument(
        "--qemu",
        choices=emulator.MODES,
        default=None,
        help="qemu for the nodes: the system's, or Debian's bookworm-backports one"
        " (fetched into the cache dir; default auto: backports on Debian 12, whose"
        " qemu 7.2 loses guest memory during live migration under TCG)",
    )
    p.add_argument(
        "--insecure-tcp",
        action="store_true",
        help="debugging only: libvirtd on plain TCP without any authentication"
        " (anyone on the bridge controls every node) instead of TLS with the"
        " cluster's certificates",
    )
    p.add_argument(
        "--memory-cap",
        action="append",
        default=None,
        metavar="NODE=MIB",
        help="memory a node offers to instances (repeatable)",
    )
    prep = sub.add_parser(
        "prepare",
        help="fetch and build what the clusters need (the qemu, the test guest; with"
        " --with-peer Ganeti's packages too), bringing nothing up",
    )
    prep.add_argument("--cache-dir", default=guest.DEFAULT_CACHE_DIR, help="the cache dir")
    prep.add_argument("--qemu", choices=emulator.MODES, default="auto", help="as for up")
    prep.add_argument(
        "--with-peer", action="store_true", help="also install the Ganeti peer's packages"
    )
    peercli.add_parser(sub)
    return parser


def _prepare(opts: argparse.Namespace) -> None:
    """What ``up`` (and ``peer up``) would fetch, build or install first, done now: the
    test suite does it before its tests, outside their time limits."""
    emulator.emulator_dir(opts.qemu, opts.cache_dir, _say)
    guest.build_guest(opts.cache_dir, _say)
    if opts.with_peer:
        peerinstall.ensure_packages(_say)
    print(f"prepared in {opts.cache_dir}")


def _say(msg: str) -> None:
    print(f">>> {msg}", flush=True)


def _print_status(status: dict) -> None:
    print(
        f"cluster in {status['directory']}: "
        f"{'running' if status['running'] else 'not (fully) running'}"
    )
    for line in cliargs.node_lines(status):
        print(line)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``gnt-lv-devcluster``."""
    opts = _parser().parse_args(argv)
    if opts.command == "peer":
        return peercli.main(opts)
    try:
        if opts.command == "prepare":
            _prepare(opts)
            return 0
        cluster = DevCluster(opts.dir, cache_dir=opts.cache_dir, feedback_fn=_say)
        if opts.command == "up":
            info = cluster.up(
                nodes=opts.nodes,
                subnet=opts.subnet,
                domain_type=opts.domain_type,
                memory_caps=lay.parse_memory_caps(opts.memory_cap) if opts.memory_cap else None,
                qemu=opts.qemu,
                transport=lay.TRANSPORT_TCP if opts.insecure_tcp else None,
            )
            print(
                f"cluster up: {len(info['nodes'])} nodes, domain type "
                f"{info['domain_type']}, qemu {info['qemu']}, libvirt over"
                f" {info['libvirt_transport']}, description in "
                f"{os.path.join(cluster.directory, 'cluster.json')}"
            )
            print("use it with:")
            print(f"export GANETI_LV_DATA_DIR={info['data_dir']}")
        elif opts.command == "down":
            cluster.down()
            print(f"cluster in {cluster.directory} is down")
        else:
            status = cluster.status()
            if opts.json:
                print(json.dumps(status, indent=2, sort_keys=True))
            else:
                _print_status(status)
            return 0 if status["running"] else 1
    except GenericError as err:
        print(format_error(err), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
