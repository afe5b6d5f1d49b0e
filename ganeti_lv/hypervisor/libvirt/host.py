"""One node's libvirt connection: lazy, checked before use, reopened when lost.

``Host`` owns the connection; ``Host.guest(name)`` returns a ``Guest`` for a
domain. Connecting is retried (it is idempotent).

A call that fails because the connection broke drops that connection (the
next call reconnects) and raises ``NodeUnreachable``, with one exception.
The host's own calls (lookups, lists, facts, definitions, the CPU
comparison; all idempotent) that fail with a connection error on a
connection kept from earlier are made once more on a new connection. A kept
connection may only look alive: a libvirtd that restarted while the node's
link was down for less than keepalive's time answers the first request on
it with a reset. A call that failed because keepalive declared the node
dead is not repeated (the node is silent: a new connection would only wait
for its connect timeout), nor is one that failed on a connection opened
for it. Calls on a domain are never repeated: a migration must not start
twice.

Threads share the connection: libvirt's client takes calls from several
threads at once, so a migration monitor asks for the job's figures while
another thread waits in the migration call. A call that fails drops only
the connection it used, never a new one another thread opened meanwhile.
A ``qemu+libssh`` connection takes one call at a time (``LIBSSH_SCHEME``):
concurrent calls on one such connection crashed libvirt's client (a
segmentation fault in the calling process, seen twice in the tests, each
time with two or three short calls at once). Only the migration call itself
is let through beside them, as the monitor must ask while it waits.

Every connection runs libvirt's keepalive (``KEEPALIVE_INTERVAL`` s,
``KEEPALIVE_COUNT`` unanswered probes): a node whose link is cut is declared
dead within about ``interval * (count + 1)`` s and a call blocked on it fails,
instead of waiting until TCP gives up. Keepalive needs a running libvirt
event loop; ``ensure_event_loop()`` starts the default one once per process
(a daemon thread) before the first connection is opened.

libvirt has no connect timeout: opening a connection to a node whose link
is gone waits until TCP gives up (one to two minutes, for every attempt).
``open_connection`` gives up after ``CONNECT_TIMEOUT`` s instead; the open
goes on in its thread, and a connection that comes up later is closed.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, NoReturn

import libvirt

from ganeti_lv import retry
from ganeti_lv.errors import HypervisorError, InstanceNotFound, NodeUnreachable
from ganeti_lv.hypervisor.libvirt import domxml
from ganeti_lv.hypervisor.libvirt.errors import (
    is_connection_error,
    is_keepalive_timeout,
    libvirt_errors,
    translate,
)
from ganeti_lv.hypervisor.libvirt.guest import Guest

log = logging.getLogger(__name__)

ConnectRetry = Callable[[Callable[[], Any]], Any]

# A silent peer is declared dead after about KEEPALIVE_INTERVAL * (COUNT + 1) s.
KEEPALIVE_INTERVAL = 3
KEEPALIVE_COUNT = 3
# How long one attempt to open a connection may take (s).
CONNECT_TIMEOUT = 10.0
# connections of this transport take one call at a time (see the module docstring)
LIBSSH_SCHEME = "qemu+libssh:"

_EVENT_LOOP_LOCK = threading.Lock()
_event_loop: threading.Thread | None = None


def uri_host(address: str) -> str:
    """``address`` as the host part of a URI: an IPv6 address in brackets (once)."""
    return f"[{address}]" if ":" in address and not address.startswith("[") else address


def _run_event_loop() -> None:
    # it must outlive an error: without it, no connection sends its keepalive probes
    while True:
        try:
            libvirt.virEventRunDefaultImpl()
        except libvirt.libvirtError as err:
            log.warning("libvirt event loop: %s", err)
            time.sleep(0.1)


def ensure_event_loop() -> None:
    """Register libvirt's default event loop and run it in a daemon thread (once).

    libvirt requires the registration before the connections that use it
    are opened; keepalive probes are only sent while the loop runs.
    """
    global _event_loop
    with _EVENT_LOOP_LOCK:
        if _event_loop is not None:
            return
        libvirt.virEventRegisterDefaultImpl()
        thread = threading.Thread(target=_run_event_loop, name="libvirt-events", daemon=True)
        thread.start()
        _event_loop = thread


def enable_keepalive(conn: Any, node: str) -> None:
    """Start keepalive on ``conn`` (a no-op on connections that do not support it)."""
    with contextlib.suppress(libvirt.libvirtError):
        conn.setKeepAlive(KEEPALIVE_INTERVAL, KEEPALIVE_COUNT)


def open_connection(uri: str, node: str, timeout: float = CONNECT_TIMEOUT) -> libvirt.virConnect:
    """``libvirt.open(uri)``; NodeUnreachable when it has not answered within ``timeout`` s.

    A libvirt error of the open is raised here, in the caller's thread.
    """
    opened: Future[libvirt.virConnect] = Future()

    def run() -> None:
        try:
            opened.set_result(libvirt.open(uri))
        except BaseException as err:  # noqa: BLE001 - raised in the caller's thread
            opened.set_exception(err)

    threading.Thread(target=run, name=f"libvirt-open-{node}", daemon=True).start()
    try:
        return opened.result(timeout)
    except TimeoutError:
        # runs at once if the open ended in the meantime
        opened.add_done_callback(_close_unwanted)
        # final: a node that did not answer is down or cut off (a restarting
        # libvirtd refuses at once, and that is retried)
        raise retry.not_retried(
            NodeUnreachable(
                f"Cannot connect to libvirt at {uri}: no answer within {timeout:g} s", node=node
            )
        ) from None


def _close_unwanted(opened: Future[libvirt.virConnect]) -> None:
    """Close the connection of an open that was given up, once it is there."""
    if opened.exception() is None and opened.result() is not None:
        with contextlib.suppress(libvirt.libvirtError):
            opened.result().close()


def _default_connect_retry(fn: Callable[[], Any]) -> Any:
    """Retry a connect while the node is unreachable (``retry.libvirt_connect_policy``)."""
    return retry.libvirt_connect_policy()(fn)


class Host:
    """The libvirt daemon of one node, reached at ``uri``."""

    def __init__(
        self, node: str, uri: str, connect_retry: ConnectRetry = _default_connect_retry
    ) -> None:
        self.node = node
        self.uri = uri
        self._connect_retry = connect_retry
        self._conn: libvirt.virConnect | None = None
        self._lock = threading.Lock()
        self._open_failures = retry.SharedFailure()
        # one call at a time on a libssh connection (see the module docstring)
        self._one_call: contextlib.AbstractContextManager[Any] = (
            threading.RLock() if uri.startswith(LIBSSH_SCHEME) else contextlib.nullcontext()
        )
        # facts that hold as long as a connection stays open: key -> (connection, value);
        # a fact of another (an earlier) connection is asked again
        self._facts: dict[str, tuple[libvirt.virConnect, Any]] = {}

    # -- connection ----------------------------------------------------
    def _open(self) -> libvirt.virConnect:
        ensure_event_loop()

        def attempt() -> libvirt.virConnect:
            with libvirt_errors(self.node, f"Cannot connect to libvirt at {self.uri}"):
                conn = open_connection(self.uri, self.node)
            if conn is None:  # older bindings return None instead of raising
                raise NodeUnreachable(f"Cannot connect to libvirt at {self.uri}", node=self.node)
            enable_keepalive(conn, self.node)
            return conn

        return self._connect_retry(attempt)

    def _alive(self, conn: libvirt.virConnect) -> bool:
        try:
            return bool(conn.isAlive())
        except libvirt.libvirtError:
            return False

    def get_connection(self) -> libvirt.virConnect:
        """The open connection, (re)connecting when needed (NodeUnreachable if not)."""
        return self._connection()[0]

    def _connection(self) -> tuple[libvirt.virConnect, bool]:
        """The open connection, and whether it was opened just now.

        A caller that waited while an attempt to open one failed gets its
        failure (``retry.SharedFailure``).
        """
        mark = self._open_failures.mark()
        with self._lock:
            if self._conn is not None and not self._alive(self._conn):
                self._conn = None  # lost (see _lost)
            if self._conn is not None:
                return self._conn, False
            self._open_failures.check(mark)
            self._conn = self._open_failures.attempt(self._open)
            return self._conn, True

    def close(self) -> None:
        """Close the connection (the next call reconnects)."""
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(libvirt.libvirtError):
                conn.close()

    def release(self) -> None:
        """Forget the connection without closing it (the node's URI changed): calls in
        flight on it end as they would; it closes when its last user lets it go."""
        with self._lock:
            self._conn = None

    def _lost(self, conn: libvirt.virConnect) -> None:
        """``conn`` broke: forget it, unless another thread has already replaced it.

        Not closed here: another thread may be in a call on it (a closed
        connection fails that call as an invalid one, not as a lost one);
        it closes when the last of its users lets it go.
        """
        with self._lock:
            if self._conn is conn:
                self._conn = None

    def call(self, what: str, fn: Callable[[libvirt.virConnect], Any]) -> Any:
        """Run ``fn(conn)``, an idempotent call of the host's, mapping errors.

        A connection error on a connection kept from earlier drops it, and
        ``fn`` runs once more on a new connection, unless keepalive ended
        the connection (see the module docstring).
        """
        return self._call(what, fn)[0]

    def _call(
        self,
        what: str,
        fn: Callable[[libvirt.virConnect], Any],
        opened: tuple[libvirt.virConnect, bool] | None = None,
    ) -> tuple[Any, libvirt.virConnect]:
        """``call``, also returning the connection that answered.

        ``opened``: the connection to use first and whether it was opened
        just now, when the caller already asked for it (``_connection()``).
        """
        conn, fresh = opened or self._connection()
        try:
            with self._one_call:
                return fn(conn), conn
        except libvirt.libvirtError as err:
            if fresh or is_keepalive_timeout(err) or not is_connection_error(err):
                self._raise(conn, what, err)
            self._lost(conn)
        conn = self.get_connection()
        return self.guarded(conn, what, lambda: fn(conn)), conn

    def guarded(
        self,
        conn: libvirt.virConnect,
        what: str,
        thunk: Callable[[], Any],
        beside_others: bool = False,
    ) -> Any:
        """Run ``thunk()`` (libvirt calls on objects of ``conn``), mapping errors.

        ``beside_others``: a long call (the migration) that other threads'
        calls on the connection must not wait for.
        """
        try:
            if beside_others:
                return thunk()
            with self._one_call:
                return thunk()
        except libvirt.libvirtError as err:
            self._raise(conn, what, err)

    def _raise(self, conn: libvirt.virConnect, what: str, err: libvirt.libvirtError) -> NoReturn:
        """Raise ``err`` as a ganeti_lv error; a broken ``conn`` is dropped first."""
        if is_connection_error(err):
            self._lost(conn)
        raise translate(err, self.node, what) from err

    # -- domains -----------------------------------------------------------
    def guest(self, name: str) -> Guest:
        """The domain ``name`` (InstanceNotFound if libvirt does not know it)."""
        dom, conn = self._call(f"Cannot look up domain {name}", lambda c: c.lookupByName(name))
        return Guest(self, conn, dom)

    def find_guest(self, name: str) -> Guest | None:
        """The domain ``name``, or None when it does not exist."""
        try:
            return self.guest(name)
        except InstanceNotFound:
            return None

    def list_guests(self) -> list[Guest]:
        """Every domain the node knows (running, or defined and stopped)."""
        doms, conn = self._call("Cannot list domains", lambda c: c.listAllDomains(0))
        return [Guest(self, conn, dom) for dom in doms]

    def define(self, xml: str) -> Guest:
        """Define (or redefine) a persistent domain from XML."""
        dom, conn = self._call("Cannot define domain", lambda c: c.defineXML(xml))
        return Guest(self, conn, dom)

    def start_once(self, xml: str, paused: bool = False) -> Guest:
        """Start a domain from XML for this run only (``paused``: its vCPUs paused).

        A stopped persistent domain of the same name and UUID runs this XML
        and keeps its own definition for its later starts.
        """
        flags = libvirt.VIR_DOMAIN_START_PAUSED if paused else 0
        conn = self.get_connection()  # a start is never repeated: it may have been made
        dom = self.guarded(conn, "Cannot start domain", lambda: conn.createXML(xml, flags))
        return Guest(self, conn, dom)

    # -- facts -------------------------------------------------------------
    def _fact(self, key: str, what: str, fn: Callable[[libvirt.virConnect], Any]) -> Any:
        """``fn(conn)``, asked once per connection: a fact of the running libvirtd.

        Versions, host name, CPU and memory size do not change under an
        open connection (a restarted libvirtd means a new connection, and
        the facts are asked again).
        """
        opened = self._connection()
        cached = self._facts.get(key)
        if cached is not None and cached[0] is opened[0]:
            return cached[1]
        value, conn = self._call(what, fn, opened)
        self._facts[key] = (conn, value)
        return value

    def capabilities(self) -> domxml.HostCapabilities:
        """Host uuid, arch and CPU model."""
        return self._fact(
            "capabilities",
            "Cannot read capabilities",
            lambda c: domxml.parse_capabilities(c.getCapabilities()),
        )

    def node_info(self) -> list[Any]:
        """libvirt's getInfo(): [model, memory MiB, cpus, mhz, nodes, sockets, cores, threads]."""
        return list(self._fact("info", "Cannot read node info", lambda c: c.getInfo()))

    def free_memory_mib(self) -> int:
        """Free host memory in MiB, counted as Ganeti counts it: free, buffers and page cache.

        The kernel gives buffers and cache back when a guest asks for memory;
        free memory alone makes a host with busy disks look full.
        """
        stats = self.call(
            "Cannot read free memory",
            lambda c: c.getMemoryStats(libvirt.VIR_NODE_MEMORY_STATS_ALL_CELLS, 0),
        )
        return sum(int(stats.get(key, 0)) for key in ("free", "buffers", "cached")) // 1024

    def versions(self) -> tuple[int, int]:
        """(libvirt version, hypervisor version) as libvirt's integers."""
        return self._fact(
            "versions",
            "Cannot read the versions",
            lambda c: (int(c.getLibVersion()), int(c.getVersion())),
        )

    def hostname(self) -> str:
        """The node's host name as libvirtd sees it."""
        return str(self._fact("hostname", "Cannot read host name", lambda c: c.getHostname()))

    def bridges(self) -> list[str] | None:
        """Names of the node's bridges from libvirt's interface driver (None without one).

        Cheaper than a shell on the node; every bridge counts, whatever its
        link state (as in /sys/class/net/*/bridge).
        """
        try:
            ifaces, conn = self._call("Cannot list interfaces", lambda c: c.listAllInterfaces(0))
        except HypervisorError:  # not a lost connection (NodeUnreachable)
            return None  # no interface driver on this daemon
        names = []
        for iface in ifaces:
            try:
                xml = self.guarded(conn, "Cannot read an interface", lambda: iface.XMLDesc(0))  # noqa: B023
                root = ET.fromstring(xml)
            except (HypervisorError, ET.ParseError):
                continue  # went away while listing, or unreadable
            if root.get("type") == "bridge":
                names.append(root.get("name") or iface.name())
        return sorted(names)
