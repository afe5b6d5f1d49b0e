"""``gnt-lv instance console [--show-cmd] INSTANCE``: the instance's serial console.

As Ganeti's ``gnt-instance console``: the console description comes from a
query (``OpInstanceConsole``, no job), and the command connects to it with
OpenSSH's ``ssh -t`` as the node's SSH user to the primary node, with the cluster's key and
its known_hosts only (a node's host key must be the one confirmed when it
was added). There ``virsh console`` attaches to the guest's serial port;
Ctrl-] leaves it. ``--show-cmd`` prints the command instead of running it.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
from typing import Any

from ganeti_lv import opcodes, paths
from ganeti_lv.cli.common import EXIT_SUCCESS, CliEnv, CommandRegistry
from ganeti_lv.errors import ECODE_ENVIRON, OpExecError


def ssh_argv(console: dict[str, Any], data_dir: str) -> list[str]:
    """The ``ssh`` command reaching the console described (kind ``ssh``) from ``data_dir``."""
    options = {
        "BatchMode": "yes",  # never a password prompt
        "EscapeChar": "none",  # every key goes to the console
        "IdentitiesOnly": "yes",
        "StrictHostKeyChecking": "yes",
        "UserKnownHostsFile": paths.known_hosts_file(data_dir),
        "GlobalKnownHostsFile": "/dev/null",
    }
    return [
        "ssh",
        "-t",
        *(f"-o{name}={value}" for name, value in options.items()),
        "-i",
        paths.ssh_key_file(data_dir),
        "-p",
        str(console["port"]),
        "-l",
        console["user"],
        console["host"],
        shlex.join(console["command"]),
    ]


def cmd_console(opts: argparse.Namespace, env: CliEnv) -> int:
    """Connect to the instance's serial console (or show how)."""
    console = env.query(opcodes.OpInstanceConsole(instance_name=opts.instance_name))
    if console["kind"] != "ssh":
        env.write(console["message"])
        return EXIT_SUCCESS
    argv = ssh_argv(console, env.data_dir)
    if opts.show_cmd:
        env.write(shlex.join(argv))
        return EXIT_SUCCESS
    code = subprocess.run(argv, check=False).returncode  # the terminal is the console's
    if code != 0:
        raise OpExecError(
            f"Connection to the console of instance {console['instance']} failed, exit code {code}",
            ECODE_ENVIRON,
        )
    return EXIT_SUCCESS


def register(registry: CommandRegistry) -> None:
    """Add ``instance console``."""
    console = registry.command(
        "instance", "console", cmd_console, help="Connect to an instance's serial console"
    )
    console.add_argument(
        "--show-cmd", action="store_true", help="Show the command instead of running it"
    )
    console.add_argument("instance_name", metavar="INSTANCE")
