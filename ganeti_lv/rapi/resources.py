"""The remote API's resources: Ganeti's paths, methods, parameters and answers.

Each resource maps HTTP methods to handlers; a handler gets the request
(``Request``: path variables, query arguments, JSON body, user) and returns
what is sent back as JSON. GET reads (any user of the users file); every
other method changes something and needs a user with ``write``, and so does
``GET /2/jobs/[id]/wait`` (as in Ganeti: it holds a connection for up to 10
seconds). A change is a job of the master daemon: its handler returns the
job's id at once, and the job runs in the daemon with its own locks, as any
job of ``gnt-lv`` does (``gnt-lv job list`` shows it).

Methods are Ganeti's: ``POST /2/instances`` creates an instance (Ganeti's
request version 1, ``instance-create-reqv1``), ``DELETE`` on an instance
removes it; ``PUT`` for the cluster's modify (``/2/modify``) and an
instance's (backend and hypervisor parameters), startup,
shutdown, migrate, failover,
export and prepare-export, a node's role and tags to add (the cluster's,
``/2/tags``, a node's and an instance's, ``?tag=a&tag=b``), ``POST`` for reboot and a
node's migrate, evacuate and modify, ``DELETE`` on a job to cancel it and on
tags to remove them.
``DELETE /2/jobs/[id]`` asks a running job to stop safely (as Ctrl-C does
for ``gnt-lv``: a migration is aborted and the instance stays on its
source); its answer is Ganeti's ``[success, message]``. A node's migration
or evacuation is one job that runs a job per instance and ends after them;
its result is Ganeti's ``{"jobs": [[true, id], ...]}`` (when one of them
failed, the node job's error, as Ganeti's client reads a failed opcode's
result: it names every instance's move and the job of each that ran).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ganeti_lv import constants
from ganeti_lv.context import Context
from ganeti_lv.errors import JobError
from ganeti_lv.master.jobs import Job
from ganeti_lv.opcodes import (
    OpBackupExport,
    OpBackupPrepare,
    OpClusterSetParams,
    OpCode,
    OpInstanceCreate,
    OpInstanceFailover,
    OpInstanceMigrate,
    OpInstanceQueryData,
    OpInstanceReboot,
    OpInstanceRemove,
    OpInstanceSetParams,
    OpInstanceShutdown,
    OpInstanceStartup,
    OpNodeEvacuate,
    OpNodeMigrate,
    OpNodeSetParams,
    OpTagsDel,
    OpTagsSet,
)
from ganeti_lv.rapi import jobfields, params, queries
from ganeti_lv.rapi.httperrors import bad_request, not_found
from ganeti_lv.rapi.params import QueryArgs, bool_arg, check_type, fill_opcode, str_arg
from ganeti_lv.rapi.users import ACCESS_READ, ACCESS_WRITE

RAPI_VERSION = 2
REBOOT_HARD = "hard"  # the default reboot type, as in Ganeti
# Ganeti's optional RAPI features: an instance's creation (request version 1),
# a node's migration and evacuation take their parameters in the body (no
# reinstall here)
FEATURES: list[str] = ["instance-create-reqv1", "node-migrate-reqv1", "node-evac-res1"]
# Ganeti's field of an instance creation's body with the request's version
REQUEST_VERSION_FIELD = "__version__"
# Ganeti's roles a node can be given: (master candidate, drained, offline),
# None for a flag the role leaves as it is
ROLE_FLAGS: dict[str, tuple[bool | None, bool | None, bool | None]] = {
    "regular": (False, False, False),
    "master-candidate": (True, None, None),
    "drained": (None, True, None),
    "offline": (None, None, True),
}
# Ganeti's evacuation modes: ganeti_lv's instances have primary nodes only,
# so evacuating the secondaries moves nothing
EVAC_PRIMARY_ONLY, EVAC_SECONDARY_ONLY, EVAC_ALL = "primary-only", "secondary-only", "all"


class Backend(Protocol):
    """What the resources need of the master daemon."""

    def context(self, lock_timeout: float | None) -> Context:
        """A context for a query (node connections shared with the jobs)."""

    def submit(self, ops: Sequence[OpCode], lock_timeout: float | None = None) -> Any:
        """Start a job of ``ops``; something with its ``job_id``."""

    def job(self, job_id: int) -> Job:
        """One job of the job log; JobError when unknown."""

    def jobs(self) -> list[Job]:
        """The jobs of the job log not archived."""

    def cancel(self, job_id: int, reason: str) -> None:
        """Ask a job to stop safely, in the daemon or in its own process; JobError if it cannot."""


@dataclass
class Request:
    """One request as a handler sees it."""

    backend: Backend
    method: str
    path: str
    rule: str  # the resource's (``Resource.rule``)
    items: dict[str, Any]
    args: QueryArgs
    body: Any
    user: str

    def query_context(self) -> Context:
        """A context for a query."""
        return self.backend.context(None)


Handler = Callable[[Request], Any]


@dataclass(frozen=True)
class Resource:
    """A path (werkzeug's rule syntax), its handlers by method, and who may call them.

    A change needs a user with ``write``; a GET needs one of ``get_access``
    (Ganeti's ``GET_ACCESS``), any user when there are none.
    """

    rule: str
    handlers: dict[str, Handler]
    get_access: tuple[str, ...] = ()

    def allows(self, method: str, options: Sequence[str]) -> bool:
        """Whether a user with ``options`` (the users file's) may call ``method`` here."""
        needed = self.get_access if method == "GET" else (ACCESS_WRITE,)
        return not needed or any(access in options for access in needed)


# ------------------------------------------------------------------ plain answers


def _root(req: Request) -> None:
    return None


def _version(req: Request) -> int:
    return RAPI_VERSION


def _features(req: Request) -> list[str]:
    return list(FEATURES)


def _info(req: Request) -> dict[str, Any]:
    return queries.cluster_info(req.query_context())


def _modify_cluster(req: Request) -> int:
    """As Ganeti's: the body is the opcode's parameters, Ganeti's per-hypervisor and
    per-group forms taken (``params.cluster_params``)."""
    return _submit(req, fill_opcode(OpClusterSetParams, params.cluster_params(req.body), {}))


def _uri_list(names: list[str], template: str, key: str = "id") -> list[dict[str, Any]]:
    return [{key: name, "uri": template % name} for name in sorted(names)]


# ------------------------------------------------------------------ nodes and instances


def _listing(
    bulk: Callable[[Context], list[dict[str, Any]]],
    names: Callable[[Context], list[str]],
    template: str,
    key: str = "id",
) -> Handler:
    """A list resource: every item's fields with ``bulk=1``, else names (under
    ``key``, Ganeti's for the resource) and URIs."""

    def handler(req: Request) -> Any:
        ctx = req.query_context()
        if bool_arg(req.args, "bulk"):
            return bulk(ctx)
        return _uri_list(names(ctx), template, key)

    return handler


_nodes = _listing(queries.nodes, queries.node_names, "/2/nodes/%s")
_instances = _listing(queries.instances, queries.instance_names, "/2/instances/%s")
_groups = _listing(queries.groups, queries.group_names, "/2/groups/%s", key="name")


def _group(req: Request) -> Any:
    return queries.group(req.query_context(), req.items["name"])


def _node(req: Request) -> Any:
    return queries.node(req.query_context(), req.items["name"])


def _node_role(req: Request) -> str:
    return queries.node_role_name(req.query_context(), req.items["name"])


def _set_node_role(req: Request) -> int:
    role = check_type(req.body, str, "Body contents")
    if role not in ROLE_FLAGS:
        raise bad_request(f"Can't set '{role}' role")
    candidate, drained, offline = ROLE_FLAGS[role]
    static = {
        "node_name": req.items["name"],
        "master_candidate": candidate,
        "drained": drained,
        "offline": offline,
        "force": bool_arg(req.args, "force"),
        "auto_promote": bool_arg(req.args, "auto-promote"),
    }
    return _submit(req, fill_opcode(OpNodeSetParams, None, static))


def _modify_node(req: Request) -> int:
    return _submit(req, fill_opcode(OpNodeSetParams, req.body, {"node_name": req.items["name"]}))


def _migrate_node(req: Request) -> int:
    static: dict[str, Any] = {"node_name": req.items["name"]}
    if "dry-run" in req.args:  # how Ganeti's client asks for a dry run
        static["dry_run"] = bool_arg(req.args, "dry-run")
    if "live" in req.args or "mode" in req.args:  # Ganeti's requests before the body
        if "live" in req.args and "mode" in req.args:
            raise bad_request("Only one of 'live' and 'mode' should be passed")
        if "live" in req.args:
            live = bool(params.int_arg(req.args, "live", 1))
            static["mode"] = constants.HT_MIGRATION_LIVE if live else constants.HT_MIGRATION_NONLIVE
        else:
            static["mode"] = str_arg(req.args, "mode")
        return _submit(req, fill_opcode(OpNodeMigrate, None, static))
    return _submit(req, fill_opcode(OpNodeMigrate, req.body, static))


def _evacuate_node(req: Request) -> int:
    body = params.body_object(req.body)
    # needed, as in Ganeti (whose client sends none unless told): never "all" by default
    mode = body.pop("mode", None)
    if mode not in (EVAC_PRIMARY_ONLY, EVAC_SECONDARY_ONLY, EVAC_ALL):
        raise bad_request(
            f"Invalid body parameters: evacuation mode {mode!r} is not one of"
            f" {EVAC_PRIMARY_ONLY}, {EVAC_SECONDARY_ONLY}, {EVAC_ALL}"
        )
    if "early_release" in body:  # Ganeti's, for disk replacements: none here
        check_type(body.pop("early_release"), bool, "early_release")
    static = {
        "node_name": req.items["name"],
        "primary_only": mode == EVAC_PRIMARY_ONLY,
        "secondary_only": mode == EVAC_SECONDARY_ONLY,
        "dry_run": bool_arg(req.args, "dry-run"),
    }
    op = fill_opcode(OpNodeEvacuate, body, static, rename={"remote_node": "target_node"})
    return _submit(req, op)


def _instance(req: Request) -> Any:
    return queries.instance(req.query_context(), req.items["name"])


def _submit(req: Request, op: OpCode) -> int:
    """Start a job of ``op``, with the request's reason trail (as Ganeti's); its id."""
    op.reason = params.reason_trail(req.args, req.rule)
    return int(req.backend.submit([op]).job_id)


def _tags_methods(kind: str) -> dict[str, Handler]:
    """The tags of the cluster (``/2/tags``), or of the node or instance ``<name>`` of
    the path: read (sorted), added to and removed from (a job each, the ``tag`` query
    arguments, as Ganeti's: the body is not used; without one, a job that changes
    nothing, as Ganeti's)."""

    def target(req: Request) -> str | None:
        return None if kind == constants.TAG_CLUSTER else req.items["name"]

    def read(req: Request) -> list[str]:
        return queries.tags(req.query_context(), kind, target(req))

    def change(op_cls: type[OpTagsSet] | type[OpTagsDel]) -> Handler:
        def handler(req: Request) -> int:
            static = {
                "kind": kind,
                "name": target(req),
                "tags": list(req.args.get("tag", [])),
                "dry_run": bool_arg(req.args, "dry-run"),
            }
            return _submit(req, fill_opcode(op_cls, None, static))

        return handler

    return {"GET": read, "PUT": change(OpTagsSet), "DELETE": change(OpTagsDel)}


def _create_instance(req: Request) -> int:
    """Ganeti's instance creation, request version 1: the body is the opcode's
    parameters (``name`` and ``os`` by those names), ``?dry-run`` the dry run."""
    body = params.body_object(req.body)
    version = body.pop(REQUEST_VERSION_FIELD, 0)
    if version == 0:
        raise bad_request("Instance creation request version 0 is not supported")
    if version != 1:
        raise bad_request(f"Unsupported request data version {version!r}")
    static = {"dry_run": bool_arg(req.args, "dry-run")}
    rename = {"name": "instance_name", "os": "os_type"}
    return _submit(req, fill_opcode(OpInstanceCreate, body, static, rename=rename))


def _modify_instance(req: Request) -> int:
    """As Ganeti's: the body is the opcode's parameters (here beparams, hvparams, force;
    Ganeti's older custom_beparams and custom_hvparams too)."""
    rename = {"custom_beparams": "beparams", "custom_hvparams": "hvparams"}
    static = {"instance_name": req.items["name"]}
    return _submit(req, fill_opcode(OpInstanceSetParams, req.body, static, rename=rename))


def _remove_instance(req: Request) -> int:
    """As Ganeti's: failures are not ignored; the body may give ``shutdown_timeout``."""
    static = {
        "instance_name": req.items["name"],
        "ignore_failures": False,
        "dry_run": bool_arg(req.args, "dry-run"),
    }
    return _submit(req, fill_opcode(OpInstanceRemove, req.body, static))


def _instance_console(req: Request) -> Any:
    return queries.instance_console(req.query_context(), req.items["name"])


def _instance_info(req: Request) -> int:
    op = OpInstanceQueryData(instances=[req.items["name"]], static=bool_arg(req.args, "static"))
    return _submit(req, op)


def _startup(req: Request) -> int:
    # as Ganeti's: the body is not used
    op = fill_opcode(
        OpInstanceStartup,
        None,
        {
            "instance_name": req.items["name"],
            "force": bool_arg(req.args, "force"),
            "dry_run": bool_arg(req.args, "dry-run"),
            "no_remember": bool_arg(req.args, "no_remember"),
        },
    )
    return _submit(req, op)


def _shutdown(req: Request) -> int:
    static = {
        "instance_name": req.items["name"],
        "no_remember": bool_arg(req.args, "no_remember"),
        "dry_run": bool_arg(req.args, "dry-run"),
    }
    return _submit(req, fill_opcode(OpInstanceShutdown, req.body, static))


def _reboot(req: Request) -> int:
    static = {
        "instance_name": req.items["name"],
        "reboot_type": str_arg(req.args, "type", REBOOT_HARD),
        "ignore_secondaries": bool_arg(req.args, "ignore_secondaries"),
        "dry_run": bool_arg(req.args, "dry-run"),
    }
    return _submit(req, fill_opcode(OpInstanceReboot, req.body, static))


def _migrate(req: Request) -> int:
    op = fill_opcode(OpInstanceMigrate, req.body, {"instance_name": req.items["name"]})
    return _submit(req, op)


def _failover(req: Request) -> int:
    op = fill_opcode(OpInstanceFailover, req.body, {"instance_name": req.items["name"]})
    return _submit(req, op)


def _export(req: Request) -> int:
    op = fill_opcode(
        OpBackupExport,
        req.body,
        {"instance_name": req.items["name"]},
        rename={"destination": "target_node"},
    )
    params.refuse_remote_export(op)
    assert isinstance(op, OpBackupExport)
    if not op.target_node:  # Ganeti's opcode requires it: no job
        raise bad_request("The export needs a 'destination' (the target node)")
    return _submit(req, op)


def _prepare_export(req: Request) -> int:
    mode = str_arg(req.args, "mode")
    if mode is None:
        raise bad_request("Required parameter 'mode' is missing")
    op = fill_opcode(OpBackupPrepare, None, {"instance_name": req.items["name"], "mode": mode})
    params.refuse_remote_export(op)
    return _submit(req, op)


# ------------------------------------------------------------------ jobs


def _load_job(req: Request, job_id: int) -> Job:
    try:
        return req.backend.job(job_id)
    except JobError as err:
        raise not_found(f"Job {job_id} not found") from err


def _jobs(req: Request) -> Any:
    jobs = req.backend.jobs()
    if bool_arg(req.args, "bulk"):
        return [jobfields.render(j, jobfields.JOB_FIELDS_BULK) for j in jobs]
    return [{"id": j.id, "uri": f"/2/jobs/{j.id}"} for j in jobs]


def _job(req: Request) -> dict[str, Any]:
    return jobfields.render(_load_job(req, req.items["job_id"]), jobfields.JOB_FIELDS)


def _cancel_job(req: Request) -> list[Any]:
    job_id = req.items["job_id"]
    try:
        job = req.backend.job(job_id)
    except JobError:
        return [False, f"Job {job_id} not found"]
    if job.finished:
        return [False, f"Job {job_id} has already finished ({jobfields.job_status(job)})"]
    try:
        req.backend.cancel(job_id, f"canceled through the remote API by {req.user}")
    except JobError as err:
        return [False, f"Job {job_id} cannot be canceled here: {err}"]
    return [True, f"Job {job_id} will be canceled"]


def _wait_job(req: Request) -> Any:
    job_id = req.items["job_id"]
    fields, prev_info, prev_serial = jobfields.check_wait_body(req.body)
    _load_job(req, job_id)  # 404 for an unknown job before waiting
    return jobfields.wait_for_change(lambda: _load_job(req, job_id), fields, prev_info, prev_serial)


RESOURCES: tuple[Resource, ...] = (
    Resource("/", {"GET": _root}),
    Resource("/2", {"GET": _root}),
    Resource("/version", {"GET": _version}),
    Resource("/2/info", {"GET": _info}),
    Resource("/2/modify", {"PUT": _modify_cluster}),
    Resource("/2/features", {"GET": _features}),
    Resource("/2/nodes", {"GET": _nodes}),
    Resource("/2/nodes/<name>", {"GET": _node}),
    Resource("/2/nodes/<name>/role", {"GET": _node_role, "PUT": _set_node_role}),
    Resource("/2/nodes/<name>/modify", {"POST": _modify_node}),
    Resource("/2/nodes/<name>/migrate", {"POST": _migrate_node}),
    Resource("/2/nodes/<name>/evacuate", {"POST": _evacuate_node}),
    Resource("/2/nodes/<name>/tags", _tags_methods(constants.TAG_NODE)),
    Resource("/2/groups", {"GET": _groups}),
    Resource("/2/groups/<name>", {"GET": _group}),
    Resource("/2/instances", {"GET": _instances, "POST": _create_instance}),
    Resource("/2/instances/<name>", {"GET": _instance, "DELETE": _remove_instance}),
    Resource("/2/instances/<name>/info", {"GET": _instance_info}),
    # as Ganeti's: for users with read or write
    Resource(
        "/2/instances/<name>/console",
        {"GET": _instance_console},
        get_access=(ACCESS_WRITE, ACCESS_READ),
    ),
    Resource("/2/instances/<name>/modify", {"PUT": _modify_instance}),
    Resource("/2/instances/<name>/startup", {"PUT": _startup}),
    Resource("/2/instances/<name>/shutdown", {"PUT": _shutdown}),
    Resource("/2/instances/<name>/reboot", {"POST": _reboot}),
    Resource("/2/instances/<name>/migrate", {"PUT": _migrate}),
    Resource("/2/instances/<name>/failover", {"PUT": _failover}),
    Resource("/2/instances/<name>/export", {"PUT": _export}),
    Resource("/2/instances/<name>/prepare-export", {"PUT": _prepare_export}),
    Resource("/2/tags", _tags_methods(constants.TAG_CLUSTER)),
    Resource("/2/instances/<name>/tags", _tags_methods(constants.TAG_INSTANCE)),
    Resource("/2/jobs", {"GET": _jobs}),
    Resource("/2/jobs/<int:job_id>", {"GET": _job, "DELETE": _cancel_job}),
    Resource("/2/jobs/<int:job_id>/wait", {"GET": _wait_job}, get_access=(ACCESS_WRITE,)),
)
