"""``gnt-lv cluster|node|instance list-tags, add-tags, remove-tags``, as Ganeti's.

``list-tags`` is a query (``OpTagsGet``) printing the tags sorted, one per
line; ``add-tags`` and ``remove-tags`` are jobs (``OpTagsSet``,
``OpTagsDel``) taking the tags as arguments and, with ``--from FILE``, one
per line of FILE (``-`` is standard input), as Ganeti's. Without a tag they
are refused (ECODE_INVAL). ``cluster search-tags PATTERN`` (``OpTagsSearch``)
prints every object's tags the regular expression finds, ``PATH TAG`` sorted
(``/cluster``, ``/instances/NAME``, ``/nodes/NAME``), and exits 1 when it
finds none, as Ganeti's.
"""

from __future__ import annotations

import argparse
import sys

from ganeti_lv import constants, opcodes
from ganeti_lv.cli import common
from ganeti_lv.cli.common import EXIT_FAILURE, EXIT_SUCCESS, CliEnv, CommandRegistry
from ganeti_lv.errors import ECODE_INVAL, OpPrereqError


def _target(opts: argparse.Namespace) -> tuple[str, str | None]:
    return opts.tag_kind, opts.tag_target


def _tags(opts: argparse.Namespace, what: str) -> list[str]:
    """The tags of the command line, then those of ``--from``; ECODE_INVAL for none."""
    tags = list(opts.tags)
    if opts.tags_source is not None:
        if opts.tags_source == "-":
            lines = sys.stdin.read().splitlines()
        else:
            try:
                with open(opts.tags_source, encoding="utf-8") as fh:
                    lines = fh.read().splitlines()
            except OSError as err:
                raise OpPrereqError(
                    f"Cannot read tags from {opts.tags_source}: {err.strerror}", ECODE_INVAL
                ) from None
        tags += [line.strip() for line in lines if line.strip()]
    if not tags:
        raise OpPrereqError(f"No tags to be {what}", ECODE_INVAL)
    return tags


def cmd_list_tags(opts: argparse.Namespace, env: CliEnv) -> int:
    """Print the tags, sorted, one per line."""
    kind, name = _target(opts)
    for tag in env.query(opcodes.OpTagsGet(kind=kind, name=name)):
        env.write(tag)
    return EXIT_SUCCESS


def cmd_add_tags(opts: argparse.Namespace, env: CliEnv) -> int:
    """Add tags."""
    kind, name = _target(opts)
    tags = _tags(opts, "added")
    env.submit(opcodes.OpTagsSet(kind=kind, name=name, tags=tags, dry_run=opts.dry_run))
    return EXIT_SUCCESS


def cmd_remove_tags(opts: argparse.Namespace, env: CliEnv) -> int:
    """Remove tags."""
    kind, name = _target(opts)
    tags = _tags(opts, "removed")
    env.submit(opcodes.OpTagsDel(kind=kind, name=name, tags=tags, dry_run=opts.dry_run))
    return EXIT_SUCCESS


def cmd_search_tags(opts: argparse.Namespace, env: CliEnv) -> int:
    """Print the (path, tag) pairs found, sorted; exit 1 for none."""
    found = env.query(opcodes.OpTagsSearch(pattern=opts.pattern))
    for path, tag in sorted(found):
        env.write(f"{path} {tag}")
    return EXIT_SUCCESS if found else EXIT_FAILURE


# the tag kind (also the command group) -> whose tags, and the positional naming the
# target (None: the cluster's take none)
_KINDS = {
    constants.TAG_CLUSTER: ("the cluster's", None),
    constants.TAG_NODE: ("a node's", "NODE"),
    constants.TAG_INSTANCE: ("an instance's", "INSTANCE"),
}


def register(registry: CommandRegistry) -> None:
    """Add ``list-tags``, ``add-tags`` and ``remove-tags`` to ``cluster``, ``node`` and
    ``instance``."""
    for group, (whose, target) in _KINDS.items():
        listing = registry.command(group, "list-tags", cmd_list_tags, help=f"List {whose} tags")
        commands = [listing]
        for name, handler, verb in (
            ("add-tags", cmd_add_tags, "Add"),
            ("remove-tags", cmd_remove_tags, "Remove"),
        ):
            change = registry.command(group, name, handler, help=f"{verb} {whose} tags")
            common.add_submit(change)
            change.add_argument(
                "--from",
                dest="tags_source",
                metavar="FILE",
                help="Also the tags of FILE, one per line ('-': standard input)",
            )
            common.add_dry_run(change)
            commands.append(change)
        for parser in commands:
            parser.set_defaults(tag_kind=group, tag_target=None)
            if target is not None:
                parser.add_argument("tag_target", metavar=target)
        for parser in commands[1:]:
            parser.add_argument("tags", nargs="*", metavar="TAG")
    search = registry.command(
        "cluster", "search-tags", cmd_search_tags, help="Search every object's tags"
    )
    search.add_argument("pattern", metavar="PATTERN", help="A regular expression")
