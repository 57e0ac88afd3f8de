"""The REST listener takes every waiting connection at each event-loop iteration.

uvloop's own ``create_server`` accepts one connection per iteration (its libuv), which under
load left new clients in the kernel's accept queue for seconds; the control case below keeps
that reason visible.
"""

from __future__ import annotations

import asyncio
import socket

import uvloop

from serving.rest.listener import RestListener, bind_sockets

PENDING = 40
ITERATIONS = 3


async def _iterations(count: int) -> None:
    for _ in range(count):
        await asyncio.sleep(0)


def _connect(port: int) -> list[socket.socket]:
    """Connections the kernel completed and queued for ``accept``."""
    return [socket.create_connection(("127.0.0.1", port)) for _ in range(PENDING)]


def test_every_waiting_connection_is_accepted_within_one_iteration():
    async def main() -> int:
        listening = bind_sockets("127.0.0.1", 0, 128)
        port = listening[0].getsockname()[1]
        clients = _connect(port)
        listener = RestListener(listening, asyncio.Protocol, lambda: 0, max_connections=1000)
        await _iterations(ITERATIONS)
        accepted = listener.accepted
        listener.close()
        await listener.wait_closed()
        for client in clients:
            client.close()
        return accepted

    assert uvloop.run(main()) == PENDING


def test_control_uvloop_create_server_accepts_one_connection_per_iteration():
    async def main() -> int:
        made: list[asyncio.BaseTransport] = []

        class Counting(asyncio.Protocol):
            def connection_made(self, transport) -> None:
                made.append(transport)

        server = await asyncio.get_running_loop().create_server(Counting, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        clients = _connect(port)
        await _iterations(ITERATIONS)
        count = len(made)
        server.close()
        for client in clients:
            client.close()
        return count

    assert uvloop.run(main()) <= ITERATIONS


def test_connections_past_the_cap_are_answered_503_and_closed():
    async def main() -> tuple[bytes, int]:
        listening = bind_sockets("127.0.0.1", 0, 128)
        port = listening[0].getsockname()[1]
        listener = RestListener(listening, asyncio.Protocol, lambda: 2, max_connections=2)
        loop = asyncio.get_running_loop()
        client = socket.create_connection(("127.0.0.1", port))
        client.setblocking(False)
        answer = b""
        while not answer.endswith(b"}"):
            answer += await asyncio.wait_for(loop.sock_recv(client, 4096), 10)
        refused = listener.refused
        client.close()
        listener.close()
        return answer, refused

    answer, refused = uvloop.run(main())
    assert answer.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
    assert b"connection: close" in answer
    assert b"--rest_api_max_connections" in answer
    assert refused == 1


def test_the_cap_is_at_most_half_the_descriptor_limit(monkeypatch):
    from serving.rest import listener

    limits = {"soft": 1024, "hard": 2048}
    monkeypatch.setattr(listener.resource, "getrlimit", lambda _: (limits["soft"], limits["hard"]))

    def setrlimit(_, values):
        limits["soft"], limits["hard"] = values

    monkeypatch.setattr(listener.resource, "setrlimit", setrlimit)
    assert listener.connection_limit(4096) == 1024  # soft limit raised to 2048 first
    assert limits["soft"] == 2048
    assert listener.connection_limit(100) == 100
