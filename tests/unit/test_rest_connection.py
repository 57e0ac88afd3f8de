"""The REST connection (serving.rest.connection): one write per response, and the deadlines
of a keep-alive connection's later requests.

A real uvicorn connection (our protocol, uvloop, loopback sockets) with the transport's writes
recorded on their way to the socket: uvicorn writes a response's head and its body separately,
which cost two system calls per request.
"""

from __future__ import annotations

import asyncio
import socket
import time

import uvicorn
import uvloop
from uvicorn.server import ServerState

from serving.rest.connection import ConnectionLimits, GuardedHttpToolsProtocol

LIMITS = ConnectionLimits(header_timeout=5, body_timeout=5, max_header_bytes=65536)


class _RecordedTransport:
    """The real transport, with each write's bytes noted (one list entry per write call)."""

    def __init__(self, transport: asyncio.Transport, writes: list[bytes]) -> None:
        self._transport = transport
        self._writes = writes

    def write(self, data: bytes) -> None:
        self._writes.append(bytes(data))
        self._transport.write(data)

    def writelines(self, chunks) -> None:
        chunks = [bytes(chunk) for chunk in chunks]
        self._writes.append(b"".join(chunks))
        self._transport.writelines(chunks)

    def __getattr__(self, name: str):
        return getattr(self._transport, name)


async def _app(scope, receive, send) -> None:
    """Echoes the body; ``/stream`` sends its body in two parts with a pause between."""
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    headers = [(b"content-type", b"text/plain")]
    if scope["path"] == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await asyncio.sleep(0.01)
        await send({"type": "http.response.body", "body": b"first,", "more_body": True})
        await asyncio.sleep(0.01)
        await send({"type": "http.response.body", "body": b"second"})
        return
    reply = b"echo:" + body
    headers.append((b"content-length", str(len(reply)).encode()))
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": reply})


def _exchange(
    requests: list[bytes], expect_replies: int, limits: ConnectionLimits = LIMITS, client=None
) -> tuple[bytes, list[bytes]]:
    """Sends ``requests`` on one connection; returns what the client read and the writes."""
    writes: list[bytes] = []
    client = client or _client

    class Recorded(GuardedHttpToolsProtocol):
        def connection_made(self, transport) -> None:
            super().connection_made(_RecordedTransport(transport, writes))

    async def main() -> bytes:
        config = uvicorn.Config(_app, lifespan="off", log_level="warning")
        config.load()
        state = ServerState()
        server = await asyncio.get_running_loop().create_server(
            lambda: Recorded(config=config, server_state=state, app_state={}, limits=limits),
            "127.0.0.1",
            0,
        )
        port = server.sockets[0].getsockname()[1]
        received = await asyncio.to_thread(client, port, requests, expect_replies)
        server.close()
        for protocol in list(state.connections):
            protocol.shutdown()
        await server.wait_closed()
        return received

    return uvloop.run(main()), writes


def _client(port: int, requests: list[bytes], expect_replies: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
        received = b""
        for request in requests:
            client.sendall(request)
            if b"Expect: 100-continue" in request:
                while b"100 Continue" not in received:
                    received += client.recv(65536)
        while received.count(b"HTTP/1.1 200") < expect_replies or not received.endswith(
            (b"echo:hello", b"echo:", b"second\r\n0\r\n\r\n", b"\r\n\r\n")
        ):
            chunk = client.recv(65536)
            if not chunk:
                break
            received += chunk
        return received


def _post(path: str, body: bytes, extra: bytes = b"") -> bytes:
    return b"POST %s HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n%s\r\n%s" % (
        path.encode(),
        len(body),
        extra,
        body,
    )


def test_a_response_is_one_write_of_head_and_body():
    received, writes = _exchange([_post("/", b"hello"), _post("/", b"hello")], 2)
    assert received.count(b"HTTP/1.1 200 OK") == 2
    assert len(writes) == 2  # one per response
    for write in writes:
        assert write.startswith(b"HTTP/1.1 200 OK\r\n")
        assert write.endswith(b"\r\n\r\necho:hello")


def test_a_head_response_without_body_write_is_still_sent():
    received, writes = _exchange([b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\n"], 1)
    assert received.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"content-length: 5\r\n" in received
    assert received.endswith(b"\r\n\r\n")
    assert len(writes) == 1


def test_100_continue_is_written_before_the_head_is_held():
    request = _post("/", b"hello", b"Expect: 100-continue\r\n")
    headers, body = request.split(b"\r\n\r\n", 1)
    received, writes = _exchange([headers + b"\r\n\r\n", body], 1)
    assert received.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n")
    assert received.endswith(b"echo:hello")
    assert writes[0] == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert len(writes) == 2


def test_a_streamed_body_arrives_whole_with_its_head_in_the_first_part():
    received, writes = _exchange([_post("/stream", b"")], 1)
    assert received.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"transfer-encoding: chunked" in received
    assert received.endswith(b"6\r\nfirst,\r\n6\r\nsecond\r\n0\r\n\r\n")
    assert writes[0].startswith(b"HTTP/1.1 200 OK") and writes[0].endswith(b"first,\r\n")
    assert len(writes) == 2


def test_a_later_request_that_stalls_on_a_kept_alive_connection_is_answered_408():
    """Its deadline runs from its own first byte, after earlier requests finished and the
    connection's timer fired with no deadline pending."""
    limits = ConnectionLimits(header_timeout=0.3, body_timeout=0.3, max_header_bytes=65536)

    def client(port: int, requests: list[bytes], expect_replies: int) -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            received = b""
            for _ in range(2):
                sock.sendall(_post("/", b"hello"))
                while not received.endswith(b"echo:hello"):
                    received += sock.recv(65536)
            time.sleep(0.5)  # past the first deadline: the timer fires with nothing to check
            sock.sendall(b"POST / HTTP/1.1\r\nHost: t\r\n")  # and no more
            started = time.monotonic()
            while chunk := sock.recv(65536):
                received += chunk
            return received + b"|%.2f" % (time.monotonic() - started)

    received, _ = _exchange([], 0, limits, client)
    received, waited = received.rsplit(b"|", 1)
    assert received.count(b"echo:hello") == 2
    assert received.split(b"echo:hello")[-1].startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    assert 0.25 <= float(waited) < 3
