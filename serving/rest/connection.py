"""uvicorn's httptools protocol with deadlines for slow clients and a bound on header size.

uvicorn closes a keep-alive connection that stays idle (``timeout_keep_alive``), but waits
forever for a request that was only partly sent, and buffers headers without limit: a client
sending half a header or half a body ("slowloris") holds its connection and file descriptor as
long as it likes. This subclass adds, per connection:

* a header deadline: the request line and headers must arrive within ``header_timeout`` of the
  connection opening or of the request's first byte (the idle time between keep-alive requests
  is uvicorn's keep-alive timeout);
* a body deadline: the body must keep arriving — at most ``body_timeout`` may pass after the
  headers or after the last piece of body without more (nginx's ``client_body_timeout``: a
  large upload on a slow link, or on a server too busy to read for a while, is not cut);
* a header size limit: past ``max_header_bytes`` (counted per read, so the check may trigger
  up to one read later) the connection is answered 431 and closed.

A missed deadline is answered 408 (when no response has started) and the connection closed;
the application sees a disconnect. TF Serving's libevent server has no such limits.

It also sends each response in one write (``_OneWriteResponse``): uvicorn writes the head and
the body separately, and uvloop turns each write into a system call at once.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from dataclasses import dataclass

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

_WAITING, _HEADERS, _BODY, _DONE = range(4)


@dataclass(frozen=True)
class ConnectionLimits:
    """Seconds allowed for a request's headers and for its body (0 = no limit), and the most
    header bytes accepted; ``*_flag`` name the settings in the answers."""

    header_timeout: float
    body_timeout: float
    max_header_bytes: int
    header_flag: str = "--rest_api_header_timeout_in_ms"
    body_flag: str = "--rest_api_body_timeout_in_ms"
    header_bytes_flag: str = "--rest_api_max_header_bytes"


def protocol_factory(limits: ConnectionLimits) -> Callable[..., GuardedHttpToolsProtocol]:
    """What ``uvicorn.Config(http=...)`` takes: it calls it with its usual arguments."""
    return functools.partial(GuardedHttpToolsProtocol, limits=limits)


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(self, *args, limits: ConnectionLimits, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._limits = limits
        self._phase = _HEADERS  # a new connection waits for its first request's headers
        self._header_bytes = 0
        # The current phase's deadline (loop time) and what runs if it passes (None: no
        # deadline), checked by one timer per connection (see _expect_within).
        self._deadline_at = 0.0
        self._on_expiry: Callable[[], None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0

    # ------------------------------------------------------------------ connection events
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._expect_within(self._limits.header_timeout, self._header_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        self._on_expiry = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        in_headers = self._phase == _HEADERS
        super().data_received(data)
        # Bytes read while the headers were incomplete before and after this read are header
        # bytes; a read that starts a request after another's body is not counted (it would
        # count that body).
        if in_headers and self._phase == _HEADERS:
            self._header_bytes += len(data)
            if self._header_bytes > self._limits.max_header_bytes > 0:
                self._refuse(
                    431,
                    f"Request headers exceed {self._limits.max_header_bytes} bytes "
                    f"({self._limits.header_bytes_flag})",
                )

    # ------------------------------------------------------------------ parser callbacks
    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._phase != _HEADERS:  # a keep-alive connection's next request
            self._phase = _HEADERS
            self._header_bytes = 0
            self._expect_within(self._limits.header_timeout, self._header_timed_out)

    def on_headers_complete(self) -> None:
        self._phase = _BODY
        self._expect_within(self._limits.body_timeout, self._body_timed_out)
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None and cycle.transport is self.transport:  # a new request's cycle
            cycle.transport = _OneWriteResponse(self.transport, cycle)

    def on_body(self, body: bytes) -> None:
        if self._on_expiry is not None:  # the body advanced: a new period begins
            self._deadline_at = self.loop.time() + self._limits.body_timeout
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._phase = _DONE
        self._on_expiry = None  # idle keep-alive connections are uvicorn's (timeout_keep_alive)
        super().on_message_complete()

    # ------------------------------------------------------------------ deadlines
    def _expect_within(self, seconds: float, on_expiry: Callable[[], None]) -> None:
        """The current phase must end within ``seconds`` (0: no limit), else ``on_expiry``.

        One timer serves the connection: when it fires before the deadline (which moved on
        since it was set) it is set again for the rest, and it is replaced only when a
        deadline comes before it. Cancelling and creating a timer for each phase of each
        request cost two of each per request.
        """
        if seconds <= 0:
            self._on_expiry = None
            return
        self._deadline_at = self.loop.time() + seconds
        self._on_expiry = on_expiry
        if self._timer is not None and self._timer_at <= self._deadline_at:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._set_timer()

    def _set_timer(self) -> None:
        self._timer_at = self._deadline_at
        self._timer = self.loop.call_at(self._timer_at, self._timer_fired)

    def _timer_fired(self) -> None:
        self._timer = None
        if self._on_expiry is None:  # no deadline now: the next phase sets a timer again
            return
        if self._deadline_at > self.loop.time():
            self._set_timer()
            return
        on_expiry, self._on_expiry = self._on_expiry, None
        on_expiry()

    def _header_timed_out(self) -> None:
        millis = round(self._limits.header_timeout * 1000)
        self._refuse(
            408,
            f"Request headers not received within {millis} ms ({self._limits.header_flag})",
        )

    def _body_timed_out(self) -> None:
        millis = round(self._limits.body_timeout * 1000)
        self._refuse(
            408, f"Request body stalled: no data for {millis} ms ({self._limits.body_flag})"
        )

    def _refuse(self, status: int, message: str) -> None:
        """Answers ``status`` unless a response is being written, then closes the connection.

        The cycle of a kept-alive connection's next request is made once its headers are in:
        until then ``self.cycle`` is the previous request's, whose response is complete.
        """
        self._on_expiry = None
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if cycle is None or not cycle.response_started or cycle.response_complete:
            body = orjson.dumps({"error": message})
            self.transport.write(
                b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\n"
                b"content-length: %d\r\nconnection: close\r\n\r\n%s"
                % (status, _REASONS[status], len(body), body)
            )
            if cycle is not None:  # the application's answer would follow this one
                cycle.response_started = cycle.response_complete = True
        self.transport.close()


class _OneWriteResponse:
    """The transport as one request's cycle sees it: the response head is held until the body
    (or the response's end), so a response is one write, not two.

    uvicorn writes the status line and headers on ``http.response.start`` and the body on
    ``http.response.body``; uvloop sends each write at once, so every response cost two
    ``write`` system calls (and the client two reads). This server's app sends both messages
    back to back; a head is never held past its response's end or the connection's close.
    ``100 Continue``, written before the response starts, passes straight through.
    """

    __slots__ = ("_cycle", "_head", "_head_seen", "_transport")

    def __init__(self, transport: asyncio.Transport, cycle) -> None:
        self._transport = transport
        self._cycle = cycle
        self._head: bytes | None = None
        self._head_seen = False
        on_response = cycle.on_response

        def completed() -> None:  # a HEAD response has no body write
            self.flush()
            on_response()

        cycle.on_response = completed

    def write(self, data: bytes) -> None:
        if not self._head_seen and self._cycle.response_started:
            self._head_seen = True
            self._head = data
            return
        if self._head is not None:
            head, self._head = self._head, None
            self._transport.writelines((head, data))
            return
        self._transport.write(data)

    def flush(self) -> None:
        if self._head is not None:
            head, self._head = self._head, None
            self._transport.write(head)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()


_REASONS = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}
