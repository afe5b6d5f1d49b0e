"""HTTP errors of the remote API and the body Ganeti sends with them.

Ganeti's RAPI answers an error with its status code and a JSON object
``{"code": 400, "message": "...", "explain": "..."}``: the message says
what was wrong (the status's phrase when there is nothing more to say) and
``explain`` is the status's standard description. Ganeti's client turns it
into ``GanetiApiError("400 <message>: <explain>", code=400)``.
"""

from __future__ import annotations

import http
from typing import Any

AUTH_REALM = "Ganeti Remote API"


class HttpError(Exception):
    """An HTTP error answer: its status code, message and extra headers."""

    def __init__(
        self, code: int, message: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        self.code = code
        self.message = message or _phrase(code)
        self.headers = dict(headers or {})
        super().__init__(f"{code} {self.message}")

    def body(self) -> dict[str, Any]:
        """The JSON body of the answer (Ganeti's shape)."""
        return {"code": self.code, "message": self.message, "explain": _explain(self.code)}


def _phrase(code: int) -> str:
    try:
        return http.HTTPStatus(code).phrase
    except ValueError:
        return "Unknown"


def _explain(code: int) -> str:
    try:
        return http.HTTPStatus(code).description
    except ValueError:
        return "Unknown"


def bad_request(message: str) -> HttpError:
    """400: the request (a query argument, the body) is wrong."""
    return HttpError(400, message)


def unauthorized() -> HttpError:
    """401: no or wrong credentials; the client is told the realm for Basic auth."""
    return HttpError(401, headers={"WWW-Authenticate": f'Basic realm="{AUTH_REALM}"'})


def forbidden(message: str | None = None) -> HttpError:
    """403: the user may not do this (a read-only user asking for a change)."""
    return HttpError(403, message)


def not_found(message: str | None = None) -> HttpError:
    """404: no such resource (path, instance, node, job)."""
    return HttpError(404, message)


def not_implemented(method: str, path: str) -> HttpError:
    """501: the resource exists but does not support ``method`` (as Ganeti says it)."""
    return HttpError(501, f"Method {method} is unsupported for path {path}")


def service_unavailable(message: str | None = None) -> HttpError:
    """503: the resource cannot be had now (the console of an instance that does not run)."""
    return HttpError(503, message)
