"""Helpers for the remote API tests: Ganeti's client, users, a plain HTTPS request.

``GanetiClient`` runs Ganeti's own client (``rapi_driver.py`` under
Debian's ``/usr/bin/python3``, where ``python3-ganeti-rapi`` installs it);
``request`` sends one raw request with the standard library, for what the
client does not show (headers, exact bodies).
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import ssl
import subprocess
from typing import Any

DEBIAN_PYTHON = "/usr/bin/python3"
DRIVER = os.path.join(os.path.dirname(__file__), "rapi_driver.py")


def ganeti_client_missing() -> str | None:
    """Why Ganeti's client cannot run here (None when it can)."""
    if not os.path.exists(DEBIAN_PYTHON):
        return f"{DEBIAN_PYTHON} is missing"
    probe = subprocess.run(
        [DEBIAN_PYTHON, "-c", "import ganeti.rapi.client"],
        capture_output=True,
        text=True,
        cwd="/",
        env={"PATH": "/usr/bin:/bin"},
        check=False,
    )
    if probe.returncode != 0:
        return "Ganeti's RAPI client is not installed (Debian package python3-ganeti-rapi)"
    return None


class GanetiClient:
    """Ganeti's RAPI client for one user, run by Debian's Python."""

    def __init__(
        self,
        host: str,
        port: int,
        user: str | None,
        password: str | None,
        cafile: str | None = None,
    ) -> None:
        self.program: dict[str, Any] = {
            "host": host,
            "port": port,
            "user": user,
            "password": password,
            "cafile": cafile,
        }

    def run(self, calls: list[Any], timeout: float = 600) -> list[dict[str, Any]]:
        """Every call's answer ({"ok": ...} or {"error": {...}}), in order."""
        proc = subprocess.run(
            [DEBIAN_PYTHON, DRIVER],
            input=json.dumps({**self.program, "calls": calls}),
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd="/",
            env={"PATH": "/usr/bin:/bin"},  # Debian's Python alone, not the test's venv
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        return [json.loads(line) for line in proc.stdout.splitlines()]

    def call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """One call's result; AssertionError with the client's error when it failed."""
        (answer,) = self.run([[name, list(args), kwargs]])
        assert "ok" in answer, answer
        return answer["ok"]

    def error(self, name: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """The client's error of a call that must fail: class, msg and the HTTP code."""
        (answer,) = self.run([[name, list(args), kwargs]])
        assert "error" in answer, answer
        return dict(answer["error"])


def request(
    host: str,
    port: int,
    method: str,
    path: str,
    user: str | None = None,
    password: str | None = None,
    body: Any = None,
    raw_body: bytes | None = None,
    content_type: str = "application/json",
    cafile: str | None = None,
    timeout: float = 30,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], Any]:
    """One HTTPS request: status, headers and the JSON answer (text if not JSON).

    ``headers``: more request headers (a ``Host`` of its own replaces the usual one).
    """
    context = (
        ssl.create_default_context(cafile=cafile) if cafile else ssl._create_unverified_context()
    )
    if cafile:
        context.check_hostname = False
    conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=context)
    sent = {"Content-Type": content_type, **(headers or {})}
    if user is not None:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        sent["Authorization"] = f"Basic {token}"
    data = raw_body if raw_body is not None else (None if body is None else json.dumps(body))
    try:
        conn.request(method, path, body=data, headers=sent)
        resp = conn.getresponse()
        text = resp.read().decode()
        answer_headers = {k.lower(): v for k, v in resp.getheaders()}
    finally:
        conn.close()
    try:
        decoded: Any = json.loads(text)
    except ValueError:
        decoded = text
    return resp.status, answer_headers, decoded
