"""The TLS of the remote API's server: each connection's handshake in a worker thread.

cheroot's own adapter shakes hands in its one accepting thread, so a client
that connects and sends nothing held up every other request, without
credentials, for the server's whole timeout. Here the accepting thread only
wraps the socket; the worker that takes the connection shakes hands at its
first read, within HANDSHAKE_TIMEOUT. A handshake that fails or does not end
in time (a silent client, plain HTTP, garbage, a TCP probe that resets) is
cheroot's FatalSSLAlert: the connection is dropped quietly, without an
answer the client could not read anyway.
"""

from __future__ import annotations

import ssl
from typing import Any

from cheroot.errors import FatalSSLAlert
from cheroot.ssl.builtin import BuiltinSSLAdapter

# seconds a new connection has for its TLS handshake
HANDSHAKE_TIMEOUT = 5.0


class _HandshakeFirst(ssl.SSLSocket):
    """A server-side TLS socket that shakes hands at its first read, within a deadline."""

    _shaken = False

    def _shake(self) -> None:
        # _sslobj is None while the socket is being made (Python probes a peer
        # that closed the connection at once with a read): nothing to shake yet;
        # ``wrap`` drops a socket left so
        if self._shaken or getattr(self, "_sslobj", None) is None:
            return
        timeout = self.gettimeout()
        self.settimeout(HANDSHAKE_TIMEOUT)
        try:
            self.do_handshake()
        except OSError as err:  # ssl.SSLError and timeouts are OSErrors
            raise FatalSSLAlert(f"TLS handshake: {err}") from err
        finally:
            self.settimeout(timeout)
        self._shaken = True

    def recv(self, buflen: int = 1024, flags: int = 0) -> bytes:
        self._shake()
        return super().recv(buflen, flags)

    def recv_into(self, buffer: Any, nbytes: int | None = None, flags: int = 0) -> int:
        self._shake()
        return super().recv_into(buffer, nbytes, flags)  # type: ignore[arg-type]


class HandshakeInWorker(BuiltinSSLAdapter):  # type: ignore[misc]
    """cheroot's TLS adapter, the handshake left to the worker (see the module doc)."""

    def __init__(self, certificate: str, private_key: str) -> None:
        super().__init__(certificate, private_key)
        self.context.sslsocket_class = _HandshakeFirst

    def wrap(self, sock: Any) -> tuple[Any, dict[str, str]]:
        try:
            wrapped = self.context.wrap_socket(
                sock, do_handshake_on_connect=False, server_side=True
            )
        except OSError as err:  # the client is gone already (a TCP probe)
            raise FatalSSLAlert(f"TLS: {err}") from err
        if getattr(wrapped, "_sslobj", None) is None:  # it went away while being wrapped
            wrapped.close()
            raise FatalSSLAlert("TLS: the client closed the connection at once")
        return wrapped, {"wsgi.url_scheme": "https", "HTTPS": "on"}
