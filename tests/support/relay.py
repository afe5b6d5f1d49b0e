"""A TCP relay in front of a test server that can forget its connections, like a rebooted node.

``VanishingRelay(target_port)`` listens on a free loopback port and relays
each connection it accepts to ``127.0.0.1:target_port``. ``vanish()`` makes
the connections open at that moment behave like the connections of a node
that rebooted while they sat idle: their server side is gone (the relay
closes it), the client hears nothing until it sends, and then gets a reset.
``mute()`` makes them behave like those of a server that stopped answering:
what the client sends is taken (its kernel sees it acknowledged) and
dropped. Connections accepted later are relayed normally.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from dataclasses import dataclass, field

_CHUNK = 65536


@dataclass
class _Link:
    """One relayed connection."""

    client: socket.socket
    upstream: socket.socket
    gone: threading.Event = field(default_factory=threading.Event)
    muted: threading.Event = field(default_factory=threading.Event)


class VanishingRelay:
    """See the module docstring; ``accepted`` counts the connections relayed."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._server.getsockname()[1])
        self.accepted = 0
        self._last_data = time.monotonic()
        self._lock = threading.Lock()
        self._open: list[_Link] = []
        threading.Thread(target=self._accept, name="relay-accept", daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return  # closed
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()  # the server is gone: so is the client's connection
                continue
            link = _Link(client, upstream)
            with self._lock:
                self.accepted += 1
                self._open.append(link)
            threading.Thread(target=self._to_server, args=(link,), daemon=True).start()
            threading.Thread(target=self._to_client, args=(link,), daemon=True).start()

    def _received(self, sock: socket.socket) -> bytes | None:
        """The next data on ``sock``: b"" at its end, None when it failed."""
        try:
            data = sock.recv(_CHUNK)
        except OSError:
            return None
        self._last_data = time.monotonic()
        return data

    def _to_server(self, link: _Link) -> None:
        while data := self._received(link.client):
            if link.gone.is_set():
                # the rebooted node answers whatever arrives on a connection it
                # no longer knows with a reset
                link.client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                link.client.close()
                return
            if not link.muted.is_set() and not _sent(link.upstream, data):
                return
        if data == b"":
            _shut_write(link.upstream)

    def _to_client(self, link: _Link) -> None:
        while (data := self._received(link.upstream)) and not link.gone.is_set():
            if not _sent(link.client, data):
                return
        if data == b"" and not link.gone.is_set():  # a vanished server says nothing more
            _shut_write(link.client)

    def vanish(self, quiet: float = 0.2, timeout: float = 5.0) -> None:
        """The server side of every open connection is gone without a word to the client.

        First waits until no data has passed for ``quiet`` seconds (at most
        ``timeout``): the connections sit idle, as before a reboot.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() - self._last_data < quiet and time.monotonic() < deadline:
            time.sleep(quiet / 4)
        with self._lock:
            for link in self._open:
                link.gone.set()
                _close(link.upstream)  # the server's side ends (its session with it)
            self._open.clear()

    def mute(self) -> None:
        """The server of every open connection stops answering (what arrives is dropped)."""
        with self._lock:
            for link in self._open:
                link.muted.set()

    def close(self) -> None:
        """Stop accepting and drop every open connection."""
        _close(self._server)
        with self._lock:
            for link in self._open:
                _close(link.client)
                _close(link.upstream)
            self._open.clear()

    def __enter__(self) -> VanishingRelay:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _close(sock: socket.socket) -> None:
    """Shut down and close ``sock``: a thread blocked on it wakes up (close alone does not)."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


def _sent(sock: socket.socket, data: bytes) -> bool:
    """Send all of ``data``; False when the connection failed."""
    try:
        sock.sendall(data)
    except OSError:
        return False
    return True


def _shut_write(sock: socket.socket) -> None:
    """Pass an end of data on."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_WR)
