"""The REST port's listening socket: fair accepts and a cap on open connections.

Why not the event loop's own ``create_server``: the libuv inside uvloop accepts **one**
connection per loop iteration (``uv__server_io``; strace under load shows one ``accept4`` per
``epoll_pwait``). An overloaded loop iteration takes ~100 ms with 512 busy connections on one
core, so new connections were accepted at ~10/s and waited seconds in the kernel's accept queue
(measured: 290 queued, a fresh client answered after 8-17 s). Here every connection waiting in
the queue is taken at each iteration (up to a bound, so a connection flood cannot stall the
loop), and handed to uvicorn's protocol through ``loop.connect_accepted_socket``.

Past ``max_connections`` open connections, a new one is answered at once, without parsing a
byte of it, with a fixed ``503`` and ``Connection: close`` (TLS listeners just close it: a
plaintext answer would be garbage inside a TLS handshake). The socket is then half-closed and
drained for a moment before it is closed ("lingering close", as nginx and Apache do): closing a
socket whose request is still unread sends a RST, which can destroy the 503 on its way to the
client.

TF Serving's REST server (libevent) has neither a connection cap nor this accept problem.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import resource
import socket
import ssl
from collections.abc import Callable

log = logging.getLogger(__name__)

# Connections taken per loop iteration: the whole backlog under any sane load, yet bounded.
_ACCEPTS_PER_ITERATION = 256
# accept() failing for lack of descriptors or memory: pause accepting this long (asyncio: 1 s).
_RETRY_AFTER_RESOURCE_ERROR = 0.5
_RESOURCE_ERRORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
# A refused socket is drained this long at most before it is closed, and at most this many are
# drained at once (beyond that they are closed at once: a flood must not pin descriptors).
_LINGER_SECONDS = 2.0
_MAX_LINGERING = 1024


def _refusal(limit: int) -> bytes:
    body = (
        f'{{"error": "Server has reached its limit of {limit} open connections '
        f'(--rest_api_max_connections); retry later"}}'
    ).encode()
    head = (
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\nretry-after: 1\r\n\r\n"
    ).encode()
    return head + body


def connection_limit(requested: int) -> int:
    """The cap actually applied: ``requested``, but at most half the descriptors this process
    may open, so REST connections alone cannot starve gRPC, model files and logs.

    The soft descriptor limit is first raised to the hard one (as Go's runtime does at start):
    many systems default to a soft limit of 1024 with a much higher hard limit. Nothing in this
    process uses ``select()``, which is what the low soft default protects.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    limit = min(requested, soft // 2)
    if limit < requested:
        log.warning(
            "--rest_api_max_connections=%d lowered to %d: the process may open %d file "
            "descriptors (raise it with ulimit -n)",
            requested,
            limit,
            soft,
        )
    return limit


def bind_sockets(
    host: str, port: int, backlog: int, reuse_port: bool = False
) -> list[socket.socket]:
    """Listening sockets for ``host:port``, one per address it resolves to (as asyncio binds).

    ``reuse_port``: front-end processes share the port (``SO_REUSEPORT``; the kernel spreads
    new connections over them)."""
    sockets = []
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(backlog)
            sock.setblocking(False)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


class RestListener:
    """Accepts on the given sockets; looks like an ``asyncio.Server`` to uvicorn's shutdown
    (``close`` / ``wait_closed``)."""

    def __init__(
        self,
        sockets: list[socket.socket],
        protocol_factory: Callable[[], asyncio.Protocol],
        open_connections: Callable[[], int],
        max_connections: int,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.sockets = sockets
        self._factory = protocol_factory
        self._open_connections = open_connections
        self._max = max_connections
        self._ssl = ssl_context
        self._refusal = _refusal(max_connections)
        self._loop = asyncio.get_running_loop()
        self._handshakes: set[asyncio.Task] = set()
        self._lingering: dict[int, socket.socket] = {}
        self._closed = False
        self.accepted = 0  # connections handed to uvicorn
        self.refused = 0  # connections answered 503 at the cap
        for sock in sockets:
            self._loop.add_reader(sock.fileno(), self._accept, sock)

    # ------------------------------------------------------------------ accepting
    def _accept(self, listening: socket.socket) -> None:
        for _ in range(_ACCEPTS_PER_ITERATION):
            try:
                conn, _ = listening.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:
                if exc.errno not in _RESOURCE_ERRORS:
                    raise
                log.warning(
                    "Cannot accept REST connections (%s); pausing accepts for %.1f s",
                    exc.strerror,
                    _RETRY_AFTER_RESOURCE_ERROR,
                )
                self._loop.remove_reader(listening.fileno())
                self._loop.call_later(_RETRY_AFTER_RESOURCE_ERROR, self._resume, listening)
                return
            conn.setblocking(False)
            if self._open_connections() + len(self._handshakes) >= self._max:
                self._refuse(conn)
                continue
            self.accepted += 1
            if conn.family in (socket.AF_INET, socket.AF_INET6):
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            task = self._loop.create_task(
                self._loop.connect_accepted_socket(self._factory, conn, ssl=self._ssl)
            )
            self._handshakes.add(task)
            task.add_done_callback(self._handshake_done)

    def _handshake_done(self, task: asyncio.Task) -> None:
        self._handshakes.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.debug("REST connection setup failed: %s", task.exception())

    def _resume(self, listening: socket.socket) -> None:
        if not self._closed:
            self._loop.add_reader(listening.fileno(), self._accept, listening)

    # ------------------------------------------------------------------ refusing
    def _refuse(self, conn: socket.socket) -> None:
        self.refused += 1
        if self._ssl is not None or len(self._lingering) >= _MAX_LINGERING:
            conn.close()
            return
        try:
            conn.send(self._refusal)  # a new socket's send buffer is empty: never blocks
            conn.shutdown(socket.SHUT_WR)
        except OSError:
            conn.close()
            return
        fd = conn.fileno()
        self._lingering[fd] = conn
        self._loop.add_reader(fd, self._drain, fd)
        self._loop.call_later(_LINGER_SECONDS, self._forget, fd, conn)

    def _drain(self, fd: int) -> None:
        conn = self._lingering.get(fd)
        if conn is None:
            return
        try:
            if conn.recv(65536):
                return  # the rest of the request; keep reading until the client closes
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            pass
        self._forget(fd, conn)

    def _forget(self, fd: int, conn: socket.socket) -> None:
        if self._lingering.get(fd) is not conn:
            return  # already closed (and the number possibly reused)
        del self._lingering[fd]
        self._loop.remove_reader(fd)
        conn.close()

    # ------------------------------------------------------------------ asyncio.Server's shape
    def close(self) -> None:
        """Stops accepting; connections already open are uvicorn's to finish."""
        if self._closed:
            return
        self._closed = True
        for sock in self.sockets:
            self._loop.remove_reader(sock.fileno())
            sock.close()
        for fd, conn in list(self._lingering.items()):
            self._forget(fd, conn)

    async def wait_closed(self) -> None:
        if self._handshakes:
            await asyncio.wait(list(self._handshakes))
