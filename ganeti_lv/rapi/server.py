"""The remote API's HTTPS server: a WSGI application on cheroot, in the master daemon.

cheroot (CherryPy's HTTP server) parses HTTP, speaks TLS with the
certificate of ``<data dir>/rapi.pem`` (its handshake in a worker thread,
``rapi.tls``) and runs each request in one of its worker threads; werkzeug
parses the request (path variables, query arguments, Basic credentials) and
routes it. The application then does what Ganeti's RAPI does, in its order,
after refusing a body it could not bound (413; chunked: 411):

1. the resource: 404 for an unknown path, 501 for a method it does not have;
2. authentication: every request for a resource needs the credentials of a
   user of the users file (HTTP Basic), else 401 with ``WWW-Authenticate``;
3. access: 403 when a change (or a job wait) is asked by a user without
   ``write``, or the console by one with neither ``read`` nor ``write``;
4. the body: JSON (``Content-Type: application/json``, else 415), else 400;
5. the handler (``resources``); its answer goes back as JSON, an error as
   Ganeti's ``{"code", "message", "explain"}``.

Each request is logged (user, method, path, status, the job it started);
credentials never are, nor is a password in any form.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

from cheroot import wsgi
from werkzeug.exceptions import MethodNotAllowed, NotFound
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request as WsgiRequest
from werkzeug.wrappers import Response

from ganeti_lv import constants, paths
from ganeti_lv.errors import (
    ECODE_INVAL,
    ECODE_NOENT,
    GenericError,
    MasterStopping,
    OpExecError,
    OpPrereqError,
)
from ganeti_lv.rapi import certs
from ganeti_lv.rapi import users as rapi_users
from ganeti_lv.rapi.httperrors import (
    HttpError,
    bad_request,
    forbidden,
    not_found,
    not_implemented,
    unauthorized,
)
from ganeti_lv.rapi.resources import RESOURCES, Backend, Request, Resource
from ganeti_lv.rapi.tls import HandshakeInWorker

log = logging.getLogger("ganeti_lv.rapi")

DEFAULT_PORT = 5080
MAX_BODY = 1 << 20
# a body too large, up to this size, is read (and thrown away) before the 413
DRAIN_LIMIT = 16 << 20
# a request line and headers together (Ganeti's client sends a few hundred bytes)
MAX_HEADERS = 64 << 10
JSON_TYPE = "application/json"
WORKER_THREADS = 32
LISTEN_BACKLOG = 64


class RapiApplication:
    """The WSGI application of the remote API (see the module docstring)."""

    def __init__(self, backend: Backend, users: rapi_users.UsersFile) -> None:
        self.backend = backend
        self.users = users
        self._map = Map(
            [Rule(res.rule, endpoint=idx) for idx, res in enumerate(RESOURCES)],
            strict_slashes=False,
            merge_slashes=False,
        )

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        request = WsgiRequest(environ)
        user = "-"
        try:
            _check_body_length(environ)  # before anything, so nothing reads the body
            resource, items = self._resource(request)
            found = self._authenticate(request)
            user = found.name
            result = self._dispatch(request, resource, items, found)
            response = Response(json.dumps(result), 200, content_type=JSON_TYPE)
        except HttpError as err:
            response = _error_response(err)
        except Exception as err:  # noqa: BLE001 - the client gets a 500, the log the details
            log.error("rapi: %s %s failed", _client(request), _line(request), exc_info=err)
            response = _error_response(HttpError(500, f"Internal error: {err}"))
        log.info(
            "rapi: %s %s %s -> %d", _client(request), user, _line(request), response.status_code
        )
        return response(environ, start_response)

    # -------------------------------------------------------------- steps

    def _authenticate(self, request: WsgiRequest) -> rapi_users.User:
        auth = request.authorization
        if auth is None or auth.type != "basic" or auth.username is None:
            raise unauthorized()
        try:
            user = self.users.lookup(auth.username)
        except rapi_users.UsersFileError as err:
            log.error("rapi: %s", err)
            raise HttpError(
                500, "The remote API users file is not usable (see the master daemon's log)"
            ) from err
        if user is None:
            log.warning("rapi: %s: authentication failed: unknown user", _client(request))
            raise unauthorized()
        if not rapi_users.password_ok(user, auth.password or ""):
            log.warning(
                "rapi: %s: authentication failed: wrong password for user %r",
                _client(request),
                user.name,
            )
            raise unauthorized()
        return user

    def _resource(self, request: WsgiRequest) -> tuple[Resource, dict[str, Any]]:
        """The resource of the path and its items; 404, or 501 for a method it has not."""
        # the path alone: the Host header (and an Upgrade) mean nothing here, as in Ganeti
        adapter = self._map.bind(
            "rapi", path_info=request.path, default_method=request.method.upper()
        )
        try:
            index, items = adapter.match()
        except (NotFound, MethodNotAllowed):
            raise not_found() from None
        resource = RESOURCES[index]
        if request.method.upper() not in resource.handlers:
            raise not_implemented(request.method.upper(), request.path)
        return resource, dict(items)

    def _dispatch(
        self,
        request: WsgiRequest,
        resource: Resource,
        items: dict[str, Any],
        user: rapi_users.User,
    ) -> Any:
        method = request.method.upper()
        handler = resource.handlers[method]
        if not resource.allows(method, user.options):
            log.warning("rapi: %s: user %r may not %s", _client(request), user.name, _line(request))
            raise forbidden()
        req = Request(
            backend=self.backend,
            method=method,
            path=request.path,
            rule=resource.rule,
            items=items,
            # empty values dropped, as Ganeti's parser does (``?dry-run=`` is no dry run)
            args={
                name: values
                for name in request.args
                if (values := [v for v in request.args.getlist(name) if v])
            },
            body=_body(request),
            user=user.name,
        )
        try:
            return handler(req)
        except OpPrereqError as err:
            if err.ecode == ECODE_NOENT:
                raise not_found(str(err)) from err
            if err.ecode == ECODE_INVAL:
                raise bad_request(str(err)) from err
            raise HttpError(500, str(err)) from err
        except MasterStopping as err:  # while the daemon finishes its jobs: try later
            raise HttpError(503, str(err)) from err
        except GenericError as err:
            raise HttpError(500, str(err)) from err


def _body(request: WsgiRequest) -> Any:
    """The request's JSON body (None when empty); one over MAX_BODY is a JSON 413."""
    data = request.stream.read(MAX_BODY + 1)  # a chunked body has no length to check first
    if len(data) > MAX_BODY:
        raise _too_large()
    if not data:
        return None
    content_type = (request.mimetype or "application/octet-stream").lower()
    if content_type != JSON_TYPE:
        raise HttpError(415)
    try:
        return json.loads(data)
    except (ValueError, RecursionError):  # nested too deep for the decoder: malformed too
        raise bad_request("Unable to parse JSON data") from None


def _check_body_length(environ: dict[str, Any]) -> None:
    """Refuse a body the server could not bound before anything reads it.

    A body needs a plain Content-Length of at most MAX_BODY: the HTTP server
    reads what the header declares (also to drain an unread body after an
    answer other than 413, which closes the connection), and a chunked body
    comes in chunks of any size. Ganeti's client always sends the length; a
    body up to DRAIN_LIMIT is read and thrown away first, so that a client
    that sends all of it before it reads gets the 413, not a broken pipe.
    """
    if environ.get("HTTP_TRANSFER_ENCODING"):
        raise HttpError(411, "A request body needs a Content-Length (no Transfer-Encoding)")
    text = str(environ.get("CONTENT_LENGTH") or "0")
    if not (text.isascii() and text.isdigit()):
        raise _too_large()
    length = int(text)
    if length > MAX_BODY:
        if length <= DRAIN_LIMIT:
            stream = environ["wsgi.input"]
            while stream.read(64 << 10):
                pass
        raise _too_large()


def _too_large() -> HttpError:
    return HttpError(413, f"The body is larger than {MAX_BODY} bytes")


def _error_response(err: HttpError) -> Response:
    response = Response(json.dumps(err.body()), err.code, content_type=JSON_TYPE)
    for name, value in err.headers.items():
        response.headers[name] = value
    return response


# ------------------------------------------------------------------ the server


class RapiServer:
    """The HTTPS server of the remote API, serving in a thread of its own."""

    def __init__(
        self,
        app: RapiApplication,
        address: str,
        port: int,
        cert_file: str,
    ) -> None:
        self.app = app
        self._server = wsgi.Server(
            (address, port),
            app,
            numthreads=WORKER_THREADS,
            server_name=f"ganeti_lv/{constants.RELEASE_VERSION}",
            request_queue_size=LISTEN_BACKLOG,
        )
        self._server.max_request_header_size = MAX_HEADERS
        self._server.error_log = _cheroot_log  # type: ignore[method-assign]
        self._server.ssl_adapter = HandshakeInWorker(cert_file, cert_file)
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        """The address and port it listens on (the port chosen when 0 was asked for)."""
        bound = self._server.bind_addr
        return str(bound[0]), int(bound[1])  # type: ignore[index]

    def start(self) -> None:
        """Listen (OpExecError when the address cannot be had), then serve in a thread."""
        host, port = self._server.bind_addr  # type: ignore[misc]
        try:
            self._server.prepare()
        except OSError as err:
            raise OpExecError(
                f"The remote API cannot listen on {host}:{port}: {err}"
                " (choose the address with --rapi-address, the port with --rapi-port)"
            ) from err
        self._thread = threading.Thread(target=self._server.serve, name="rapi", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop listening and wait (a few seconds at most) for the requests being served."""
        self._server.stop()
        if self._thread is not None:
            self._thread.join(10)


def _client(request: WsgiRequest) -> str:
    """The client's address and port, for the log."""
    return f"{request.remote_addr or '?'}:{request.environ.get('REMOTE_PORT', '?')}"


def _line(request: WsgiRequest) -> str:
    """The method and path for the log, control characters escaped: a path's decoded
    ``%0a`` must not start a line of its own that reads like another request's."""
    path = request.full_path.rstrip("?")
    return f"{request.method} {path.encode('unicode_escape').decode('ascii')}"


def _cheroot_log(msg: str = "", level: int = logging.INFO, traceback: bool = False) -> None:
    """cheroot's own messages (TLS handshakes, sockets) into the daemon's log."""
    log.log(
        logging.DEBUG if level < logging.ERROR else level,
        "rapi server: %s",
        msg,
        exc_info=traceback,
    )


def start(backend: Backend, data_dir: str, address: str | None, port: int) -> RapiServer:
    """Check the certificate and the users file of ``data_dir``, then serve the remote API.

    ``address`` defaults to the master node's address. Raises a typed error
    (and serves nothing) when the certificate is missing or does not match
    its key, when the users file is unsafe, or when the address cannot be had.
    """
    cert_file = paths.rapi_cert_file(data_dir)
    certs.read_certificate(cert_file)
    users = rapi_users.UsersFile(paths.rapi_users_file(data_dir))
    if not users.load().users:
        log.warning(
            "rapi: no users in %s yet: every request is refused until one is added"
            " (gnt-lv rapi add-user)",
            users.path,
        )
    if address is None:
        config = backend.context(None).config
        master = config.get_cluster().master_node
        node = config.get_node(master)
        if node is None:
            raise OpExecError(f"The master node {master} is not in the configuration")
        address = node.address
    server = RapiServer(RapiApplication(backend, users), address, port, cert_file)
    server.start()
    host, bound = server.address
    log.info("rapi: serving Ganeti's remote API on https://%s:%d", host, bound)
    return server
