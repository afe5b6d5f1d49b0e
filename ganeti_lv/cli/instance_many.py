"""Several instances in one command: ``gnt-lv instance startup|shutdown|reboot``.

As Ganeti's ``gnt-instance``, the instances are named (the default,
``--instance``) or selected: by node (``--node``: their primary or
secondary node is one of those named; ``--primary``, ``--secondary``), by
tag (``--tags``: any of the tags named), by their nodes' tags
(``--node-tags``, ``--pri-node-tags``, ``--sec-node-tags``: a node with any
of the tags named) or all of them (``--all``).

One instance named is one job, followed as every command follows its job
(``JobID: N`` with ``--submit``). Any other selection is confirmed first
(``--force-multiple`` answers yes), then one job per instance is started at
once: the jobs run side by side, each under its own locks. With
``--submit`` each job's id is printed as Ganeti prints it (``N: NAME``;
``--print-jobid`` adds nothing to it); else they are followed in turn ("Waiting for
job N for NAME ...", their lines as they come), a failure is reported
("Job N for NAME has failed: ...") and the others are still followed, and
the exit code is 1 when any failed. Ctrl-C (or SIGTERM) asks the job
followed to stop safely and, once it stopped, every other job not ended;
all are followed to their ends.
"""

from __future__ import annotations

import argparse
import contextlib
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
MODE_NODE_TAGS = "nodes-by-tags"
MODE_PRIMARY_TAGS = "nodes-pri-by-tags"
MODE_SECONDARY_TAGS = "nodes-sec-by-tags"
MODE_ALL = "cluster"

# Ganeti's selection flags (the last one given counts), what their names are
_MODES = (
    ("--instance", MODE_INSTANCES, "Filter by instance name [default]"),
    ("--node", MODE_NODES, "Filter by nodes (primary and secondary)"),
    ("--primary", MODE_PRIMARY, "Filter by nodes (primary only)"),
    ("--secondary", MODE_SECONDARY, "Filter by nodes (secondary only)"),
    ("--tags", MODE_TAGS, "Filter by instance tags"),
    ("--node-tags", MODE_NODE_TAGS, "Filter by node tags (primary and secondary)"),
    ("--pri-node-tags", MODE_PRIMARY_TAGS, "Filter by node tags (primary only)"),
    ("--sec-node-tags", MODE_SECONDARY_TAGS, "Filter by node tags (secondary only)"),
    ("--all", MODE_ALL, "Select all instances in the cluster"),
)
_NAMES_OF = {
    MODE_INSTANCES: "instance",
    MODE_NODES: "node",
    MODE_PRIMARY: "node",
    MODE_SECONDARY: "node",
    MODE_TAGS: "instance tag",
    MODE_NODE_TAGS: "node tag",
    MODE_PRIMARY_TAGS: "node tag",
    MODE_SECONDARY_TAGS: "node tag",
}
# the selections by node: whether the names are the nodes' tags, and the node query's
# lists of instances they take, in order
_BOTH, _PRIMARY, _SECONDARY = ("pinst_list", "sinst_list"), ("pinst_list",), ("sinst_list",)
_BY_NODE = {
    MODE_NODES: (False, _BOTH),
    MODE_PRIMARY: (False, _PRIMARY),
    MODE_SECONDARY: (False, _SECONDARY),
    MODE_NODE_TAGS: (True, _BOTH),
    MODE_PRIMARY_TAGS: (True, _PRIMARY),
    MODE_SECONDARY_TAGS: (True, _SECONDARY),
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
    mode, names = opts.multi_mode, list(opts.names)
    if mode == MODE_ALL and names:
        raise OpPrereqError("--all takes no names", ECODE_INVAL)
    if mode != MODE_ALL and not names:
        raise OpPrereqError(f"No {_NAMES_OF[mode]} names given", ECODE_INVAL)
    if mode in (MODE_ALL, MODE_INSTANCES, MODE_TAGS):
        rows = env.query(OpInstanceQuery(names=names if mode == MODE_INSTANCES else [], live=False))
        found = [row["name"] for row in rows if mode != MODE_TAGS or set(row["tags"]) & set(names)]
    else:
        by_tags, lists = _BY_NODE[mode]
        rows = env.query(OpNodeQuery(names=[] if by_tags else names, live=False))
        if by_tags:
            rows = [row for row in rows if set(row["tags"]) & set(names)]
        found = [name for key in lists for row in rows for name in row[key]]
    return list(dict.fromkeys(found))  # an instance named twice (or by two names) once


def run(
    opts: argparse.Namespace, env: CliEnv, operation: str, build: Callable[[str], OpCode]
) -> int:
    """Run ``build(name)``'s opcode for every instance selected; the exit code."""
    if opts.multi_mode == MODE_INSTANCES and len(set(opts.names)) == 1 and not env.submit_only:
        names = list(opts.names[:1])  # checked by its job, which is followed
    else:
        names = selected(opts, env)
    if not names:
        if opts.multi_mode == MODE_ALL:
            env.write(f"Cluster is empty, no instances to {operation}")
            return EXIT_SUCCESS
        raise OpPrereqError("Selection filter does not match any instances", ECODE_INVAL)
    single = opts.multi_mode == MODE_INSTANCES and len(names) == 1
    if single and not env.submit_only:
        env.submit(build(names[0]))
        return EXIT_SUCCESS
    listed = "".join(f"\n  {name}" for name in names)
    question = (
        f"The {operation} will operate on {len(names)} instances.\n"
        f"Affected instances:{listed}\nDo you want to continue?"
    )
    if not single and not env.confirm(question, opts.force_multiple, "--force-multiple"):
        return EXIT_FAILURE
    cancel = Cancellation()
    with env.job_signals(cancel):
        jobs, ok = _start(env, names, build, cancel)
        if env.submit_only:
            for job_id, name in jobs:
                env.write(f"{job_id}: {name}")
        else:
            if jobs:
                env.write("Submitted jobs " + ", ".join(str(job_id) for job_id, _ in jobs))
            ok = _follow(env, jobs, cancel) and ok
    return EXIT_SUCCESS if ok else EXIT_FAILURE


def _start(
    env: CliEnv, names: list[str], build: Callable[[str], OpCode], cancel: Cancellation
) -> tuple[list[tuple[int, str]], bool]:
    """One job per instance, started at once (none after a cancel request); the jobs
    started, and whether all were."""
    jobs: list[tuple[int, str]] = []
    ok = True
    for index, name in enumerate(names):
        if cancel.is_set():
            env.warn(f"Not submitted (interrupted): {', '.join(names[index:])}")
            return jobs, False
        try:
            jobs.append((env.enqueue([build(name)]), name))
        except GenericError as err:
            env.warn(f"Failed to submit job for {name}: {format_error(err)}")
            ok = False
    return jobs, ok


def _follow(env: CliEnv, jobs: list[tuple[int, str]], cancel: Cancellation) -> bool:
    """Follow every job to its end, in turn; whether all succeeded.

    Once ``cancel`` is set (Ctrl-C), the job followed is asked to stop by
    its watch, the others as soon as it returns; an interruption (a second
    Ctrl-C) asks every job not followed to its end yet to stop and ends the
    command.
    """
    client = env.client()
    ok, asked = True, False
    for index, (job_id, name) in enumerate(jobs):
        if cancel.is_set() and not asked:
            asked = True
            _ask_to_stop(env, [job for job, _ in jobs[index:]])
        env.write(f"Waiting for job {job_id} for {name} ...")
        try:
            with env.records() as show:
                client.watch(job_id, show, cancel)
        except GenericError as err:
            env.warn(f"Job {job_id} for {name} has failed: {format_error(err)}")
            ok = False
        except KeyboardInterrupt:
            _ask_to_stop(env, [job for job, _ in jobs[index:]])
            raise
    return ok


def _ask_to_stop(env: CliEnv, job_ids: list[int]) -> None:
    """Ask each job to stop safely; one that ended meanwhile (or was asked) is left."""
    for job_id in job_ids:
        with contextlib.suppress(GenericError):
            env.client().cancel(job_id, "interrupted by the user")
