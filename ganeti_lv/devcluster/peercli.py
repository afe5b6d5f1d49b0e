"""``gnt-lv-devcluster peer up|down|status|add-instance|remove-instance``.

The real Ganeti 3.0 peer cluster (:mod:`ganeti_lv.devcluster.peer`) beside
the local cluster, for comparisons with Ganeti.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from ganeti_lv.devcluster import cliargs, guest
from ganeti_lv.devcluster import peerlayout as pl
from ganeti_lv.devcluster.peer import PeerCluster
from ganeti_lv.errors import GenericError, format_error

DIR_ENV = "GANETI_LV_PEER_DIR"


def add_parser(sub: Any) -> None:
    """Add the ``peer`` command with its subcommands to the devcluster CLI."""
    peer = sub.add_parser("peer", help="a real Ganeti 3.0 cluster beside the local one")
    peer_sub = peer.add_subparsers(dest="peer_command", required=True)
    default_dir = os.environ.get(DIR_ENV, pl.DEFAULT_DIR)
    parsers = cliargs.add_commands(
        peer_sub,
        (
            ("up", "install Ganeti if missing and bring the 2-node peer up (kept when running)"),
            ("down", "stop everything of the peer and check that nothing is left"),
            ("status", "report what runs"),
            ("add-instance", "add the test guest as a Ganeti instance and wait until it boots"),
            ("remove-instance", "remove a peer instance"),
        ),
        what="peer",
        default_dir=default_dir,
        env=DIR_ENV,
        default_cache_dir=guest.DEFAULT_CACHE_DIR,
        cache_help="where the test guest is cached",
    )
    up = parsers["up"]
    up.add_argument("--subnet", default=None, help=f"node subnet (default {pl.DEFAULT_SUBNET})")
    up.add_argument("--instance", default=None, help="also add this test instance")
    for name in ("add-instance", "remove-instance"):
        parsers[name].add_argument("name", help="instance name")
    add = parsers["add-instance"]
    add.add_argument("--node", default="node1", help="primary node (default node1)")
    add.add_argument("-t", "--disk-template", default="sharedfile", choices=("sharedfile", "file"))


def _print_status(status: dict[str, Any]) -> None:
    state = "running" if status["running"] else "not (fully) running"
    print(f"Ganeti peer in {status['directory']}: {state}")
    if status.get("cluster"):
        print(
            f"  cluster {status['cluster']}, master {status['master']}, subnet {status['subnet']}"
        )
        print(f"  instances: {' '.join(status['instances']) or '-'}")
    for line in cliargs.node_lines(status):
        print(line)


def main(opts: argparse.Namespace) -> int:
    """Run a ``peer`` subcommand."""
    peer = PeerCluster(
        opts.dir, cache_dir=opts.cache_dir, feedback_fn=lambda msg: print(f">>> {msg}", flush=True)
    )
    try:
        if opts.peer_command == "up":
            info = peer.up(subnet=opts.subnet, instance=opts.instance)
            t = info["timings"]
            print(
                f"Ganeti peer up: cluster {info['cluster_name']}, master {info['master']}, "
                f"RAPI https://{info['rapi']['host']}:{info['rapi']['port']}; "
                f"description in {peer.info_file}"
            )
            if t.get("up_seconds") is not None:
                apt = t.get("apt_seconds")
                print(
                    f"  built in {t['up_seconds']} s"
                    + (f" (of which apt-get install {apt:.1f} s)" if apt else "")
                )
        elif opts.peer_command == "down":
            peer.down()
            print(f"Ganeti peer in {peer.directory} is down; nothing of it is left")
        elif opts.peer_command == "add-instance":
            res = peer.add_instance(opts.name, node=opts.node, template=opts.disk_template)
            print(f"instance {res['name']} runs on {res['node']}; console {res['console_log']}")
        elif opts.peer_command == "remove-instance":
            peer.remove_instance(opts.name)
            print(f"instance {opts.name} removed")
        else:
            status = peer.status()
            if opts.json:
                print(json.dumps(status, indent=2, sort_keys=True))
            else:
                _print_status(status)
            return 0 if status["running"] else 1
    except GenericError as err:
        print(format_error(err), file=sys.stderr)
        return 1
    return 0
