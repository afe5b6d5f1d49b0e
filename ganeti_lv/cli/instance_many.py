"""Several instances in one command: ``gnt-lv instance startup|shutdown|reboot``.

As Ganeti's ``gnt-instance``, the instances are named (the default,
``--instance``) or selected: by node (``--node``: their primary or
secondary node is one of those named; ``--primary``, ``--secondary``), by
tag (``--tags``: any of the tags named) or all of them (``--all``).

One instance named is one job, followed as every command follows its job.
Any other selection is confirmed first (``--force-multiple`` answers yes),
then one job per instance is started at once: the jobs run side by side,
each under its own locks. With ``--submit`` each job's id is printed as
Ganeti prints it (``N: NAME``); else they are followed in turn ("Waiting for
job N for NAME ...", their lines as they come), a failure is reported
("Job N for NAME has failed: ...") and the others are still followed, and
the exit code is 1 when any failed. Ctrl-C (or SIGTERM) asks the job
followed to stop safely and, once it stopped, every other job not ended;
all are followed to their ends.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
from collections.abc import Callable

from ganeti_lv.cancel import Cancellation
from ganeti_lv.cli.common import EXIT_FAILURE, EXIT_SUCCESS, CliEnv
from ganeti_lv.errors import ECODE_INVAL, GenericError, OpPrereqError, format_error
from ganeti_lv.opcodes import OpCode, OpInstanceQuery, OpNodeQuery

MODE_INSTANCES = "instances"
MODE_NODES = "nodes"
MODE_PRIMARY = "nodes-pri"
MODE_SECONDARY = "nodes-sec"
MODE_TAGS = "instances-by-tags"
MODE_ALL = "cluster"

# Ganeti's selection flags (the last one given counts), what their names are
_MODES = (
    ("--instance", MODE_INSTANCES, "Filter by instance name [default]"),
    ("--node", MODE_NODES, "Filter by nodes (primary and secondary)"),
    ("--primary", MODE_PRIMARY, "Filter by nodes (primary only)"),
    ("--secondary", MODE_SECONDARY, "Filter by nodes (secondary only)"),
    ("--tags", MODE_TAGS, "Filter by instance tags"),
    ("--all", MODE_ALL, "Select all instances in the cluster"),
)
_NAMES_OF = {
    MODE_INSTANCES: "instance",
    MODE_NODES: "node",
    MODE_PRIMARY: "node",
    MODE_SECONDARY: "node",
    MODE_TAGS: "instance tag",
}


def add_selection(parser: argparse.ArgumentParser) -> None:
    """The instances' names (or nodes', tags'), the selection flags, ``--force-multiple``."""
    parser.add_argument("names", nargs="*", metavar="NAME", help="instances (or nodes, tags)")
    for flag, mode, text in _MODES:
        parser.add_argument(flag, dest="multi_mode", action="store_const", const=mode, help=text)
    parser.set_defaults(multi_mode=MODE_INSTANCES)
    parser.add_argument(
        "--force-multiple",
        action="store_true",
        help="Do not ask for confirmation when more than one instance is affected",
    )


def selected(opts: argparse.Namespace, env: CliEnv) -> list[str]:
    """The instances the command's names and selection flag select, in Ganeti's order."""
    mode, names = opts.multi_mode, list(dict.fromkeys(opts.names))
    if mode == MODE_ALL:
        if names:
            raise OpPrereqError("--all takes no names", ECODE_INVAL)
        return [row["name"] for row in env.query(OpInstanceQuery(live=False))]
    if not names:
        raise OpPrereqError(f"No {_NAMES_OF[mode]} names given", ECODE_INVAL)
    if mode == MODE_INSTANCES:
        return [row["name"] for row in env.query(OpInstanceQuery(names=names, live=False))]
    if mode == MODE_TAGS:
        rows = env.query(OpInstanceQuery(live=False))
        return [row["name"] for row in rows if set(row["tags"]) & set(names)]
    rows = env.query(OpNodeQuery(names=names, live=False))
    primaries = itertools.chain.from_iterable(row["pinst_list"] for row in rows)
    secondaries = itertools.chain.from_iterable(row["sinst_list"] for row in rows)
    found = {
        MODE_NODES: itertools.chain(primaries, secondaries),
        MODE_PRIMARY: primaries,
        MODE_SECONDARY: secondaries,
    }[mode]
    return list(dict.fromkeys(found))


def run(
    opts: argparse.Namespace, env: CliEnv, operation: str, build: Callable[[str], OpCode]
) -> int:
    """Run ``build(name)``'s opcode for every instance selected; the exit code."""
    if opts.multi_mode == MODE_INSTANCES and len(set(opts.names)) == 1:
        env.submit(build(opts.names[0]))
        return EXIT_SUCCESS
    names = selected(opts, env)
    if not names:
        if opts.multi_mode == MODE_ALL:
            env.write(f"Cluster is empty, no instances to {operation}")
            return EXIT_SUCCESS
        raise OpPrereqError("Selection filter does not match any instances", ECODE_INVAL)
    listed = "".join(f"\n  {name}" for name in names)
    question = (
        f"The {operation} will operate on {len(names)} instances.\n"
        f"Affected instances:{listed}\nDo you want to continue?"
    )
    if not env.confirm(question, opts.force_multiple, "--force-multiple"):
        return EXIT_FAILURE
    jobs, ok = _start(env, names, build)
    if env.submit_only:
        for job_id, name in jobs:
            env.write(f"{job_id}: {name}")
        return EXIT_SUCCESS if ok else EXIT_FAILURE
    if jobs:
        env.write("Submitted jobs " + ", ".join(str(job_id) for job_id, _ in jobs))
    ok = _follow(env, jobs) and ok
    return EXIT_SUCCESS if ok else EXIT_FAILURE


def _start(
    env: CliEnv, names: list[str], build: Callable[[str], OpCode]
) -> tuple[list[tuple[int, str]], bool]:
    """One job per instance, started at once; the jobs started, and whether all were."""
    jobs: list[tuple[int, str]] = []
    ok = True
    for name in names:
        try:
            jobs.append((env.enqueue([build(name)]), name))
        except GenericError as err:
            env.warn(f"Failed to submit job for {name}: {format_error(err)}")
            ok = False
    return jobs, ok


def _follow(env: CliEnv, jobs: list[tuple[int, str]]) -> bool:
    """Follow every job to its end, in turn; whether all succeeded."""
    client = env.client()
    cancel = Cancellation()
    ok, asked = True, False
    with env.job_signals(cancel):
        for index, (job_id, name) in enumerate(jobs):
            if cancel.is_set() and not asked:  # the others as soon as the one followed stopped
                asked = True
                _ask_to_stop(env, [job for job, _ in jobs[index:]])
            env.write(f"Waiting for job {job_id} for {name} ...")
            try:
                with env.records() as show:
                    client.watch(job_id, show, cancel)
            except GenericError as err:
                env.warn(f"Job {job_id} for {name} has failed: {format_error(err)}")
                ok = False
    return ok


def _ask_to_stop(env: CliEnv, job_ids: list[int]) -> None:
    """Ask each job to stop safely; one that ended meanwhile (or was asked) is left."""
    for job_id in job_ids:
        with contextlib.suppress(GenericError):
            env.client().cancel(job_id, "interrupted by the user")
