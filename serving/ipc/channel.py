"""Framed orjson messages over a unix stream socket, with file descriptors riding along.

A frame is a 4-byte little-endian word and an orjson payload (a JSON object). The word's low
28 bits are the payload's length (so a frame carries up to 256 MiB), its high 4 bits the number
of file descriptors (0-15) sent with the frame through ``SCM_RIGHTS``. Counting the fds in the
header makes their attribution independent of how the kernel splits the byte stream: the
receiver queues every fd it gets and each frame takes its count from the front of that queue
(the kernel delivers an fd with or before the first byte of the ``sendmsg`` that carried it).

``Channel`` reads with the event loop's ``add_reader`` and ``recvmsg`` (asyncio's transports
cannot carry ancillary data), and writes lazily: ``send`` only appends the frame to a buffer
and schedules one flush per loop iteration, so a burst of replies produced in one iteration
leaves in one ``send`` system call. Works on asyncio's loop and uvloop alike.

``RpcClient`` multiplexes concurrent calls on one channel by an integer ``id``; ``serve`` runs
the other side, one task per request. Messages without an ``id`` are notifications (client to
server) or pushes (server to client, e.g. metadata snapshots). A handler's exception reaches the
caller as ``RemoteError`` carrying the exception's ``code`` (a ``ServingError``'s TF code), so
the front end answers with the status the model process chose.
"""

from __future__ import annotations

import array
import asyncio
import logging
import os
import socket
import struct
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any

import orjson

_log = logging.getLogger(__name__)

_WORD = struct.Struct("<I")
_LENGTH_BITS = 28
MAX_PAYLOAD = (1 << _LENGTH_BITS) - 1
MAX_FDS = 15
_LENGTH_MASK = MAX_PAYLOAD
_READ_SIZE = 1 << 16
# Room for the most fds Linux passes in one message (SCM_MAX_FD), so none is ever truncated.
_ANCILLARY_SIZE = socket.CMSG_SPACE(253 * array.array("i").itemsize)
_SEND_FLAGS = socket.MSG_NOSIGNAL
_RECV_FLAGS = socket.MSG_CMSG_CLOEXEC

Receiver = Callable[[dict, list[int]], None]
# start_call's on_settled: (the call's future, or None if it was already dropped; the reply
# message, or None when the channel closed first).
Settled = Callable[["asyncio.Future | None", "dict | None"], None]


class ChannelClosed(ConnectionError):
    """The channel is closed: the peer went away, the stream broke, or it was closed here."""


class RemoteError(Exception):
    """The peer's handler raised: its exception type name, message and ``code`` (if any)."""

    def __init__(self, type_name: str, message: str, code: int | None) -> None:
        super().__init__(message)
        self.type_name = type_name
        self.message = message
        self.code = code

    def __repr__(self) -> str:
        return f"RemoteError({self.type_name}, {self.message!r}, code={self.code})"


class Channel:
    """One end of a connected unix stream socket carrying framed messages (and fds).

    Messages go to the receiver set with ``set_receiver`` (called synchronously from the read
    callback, the fast path ``RpcClient`` and ``serve`` use), or else queue for ``recv``.
    Received fds belong to the receiver, which must close them.
    """

    def __init__(self, sock: socket.socket) -> None:
        self._loop = asyncio.get_running_loop()
        sock.setblocking(False)
        self._sock = sock
        self._fileno = sock.fileno()
        self._closed: ChannelClosed | None = None
        self._close_callbacks: list[Callable[[ChannelClosed], object]] = []
        # Reading.
        self._partial = b""  # bytes of a frame not yet complete
        self._fds: deque[int] = deque()  # received fds no frame has claimed yet
        self._receiver: Receiver | None = None
        self._inbox: deque[tuple[dict, list[int]]] = deque()
        self._waiter: asyncio.Future | None = None
        # Writing: frames without fds accumulate in _pending and are joined at flush; a frame
        # with fds goes out in its own sendmsg (holding dups, closed once sent).
        self._pending: list[bytes] = []
        self._queue: deque[tuple[bytes | memoryview, list[int]]] = deque()
        self._flush_scheduled = False
        self._writing = False  # add_writer registered: the socket buffer was full
        self._drained: asyncio.Future | None = None
        self._loop.add_reader(self._fileno, self._on_readable)

    @classmethod
    async def connect(cls, path: str) -> Channel:
        """Connect to a ``start_server`` listening on ``path``."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        sock.setblocking(False)
        try:
            await asyncio.get_running_loop().sock_connect(sock, path)
        except BaseException:
            sock.close()
            raise
        return cls(sock)

    @property
    def closed(self) -> bool:
        return self._closed is not None

    # -- sending ----------------------------------------------------------------------------

    def send(self, msg: dict, fds: Sequence[int] = ()) -> None:
        """Queue ``msg`` (and dups of ``fds``: the caller keeps its own) for the next flush."""
        if self._closed is not None:
            raise ChannelClosed(str(self._closed))
        payload = orjson.dumps(msg)
        if len(payload) > MAX_PAYLOAD:
            raise ValueError(f"message of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
        if fds:
            if len(fds) > MAX_FDS:
                raise ValueError(f"a frame carries at most {MAX_FDS} fds, got {len(fds)}")
            self._seal()
            dups = [os.dup(fd) for fd in fds]
            word = len(payload) | len(dups) << _LENGTH_BITS
            self._queue.append((_WORD.pack(word) + payload, dups))
        else:
            self._pending.append(_WORD.pack(len(payload)))
            self._pending.append(payload)
        if not self._flush_scheduled and not self._writing:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _seal(self) -> None:
        if self._pending:
            self._queue.append((b"".join(self._pending), []))
            self._pending = []

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._closed is not None:
            return
        self._seal()
        queue = self._queue
        while queue:
            data, fds = queue[0]
            try:
                if fds:
                    ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))]
                    sent = self._sock.sendmsg([data], ancillary, _SEND_FLAGS)
                else:
                    sent = self._sock.send(data, _SEND_FLAGS)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                self._abort(ChannelClosed(f"sending failed: {exc}"))
                return
            for fd in fds:  # in flight now: the kernel holds its own reference
                os.close(fd)
            if sent < len(data):
                queue[0] = (memoryview(data)[sent:], [])
                break
            queue.popleft()
        if queue:
            if not self._writing:
                self._writing = True
                self._loop.add_writer(self._fileno, self._on_writable)
        else:
            if self._writing:
                self._writing = False
                self._loop.remove_writer(self._fileno)
            if self._drained is not None:
                self._drained.set_result(None)
                self._drained = None

    def _on_writable(self) -> None:
        self._flush()

    @property
    def write_buffer_size(self) -> int:
        """Bytes queued and not yet taken by the kernel."""
        return sum(map(len, self._pending)) + sum(len(data) for data, _ in self._queue)

    async def drain(self) -> None:
        """Wait until every queued frame has been handed to the kernel (backpressure)."""
        if self._closed is not None:
            raise ChannelClosed(str(self._closed))
        if not self._pending and not self._queue:
            return
        if self._drained is None:
            self._drained = self._loop.create_future()
        await asyncio.shield(self._drained)

    # -- receiving --------------------------------------------------------------------------

    def set_receiver(self, receiver: Receiver) -> None:
        """Deliver every message (queued ones first) to ``receiver(msg, fds)`` from now on."""
        self._receiver = receiver
        while self._inbox and self._receiver is receiver:
            receiver(*self._inbox.popleft())

    async def recv(self) -> tuple[dict, list[int]]:
        """The next message and the fds that came with it; ChannelClosed once none is left."""
        if self._inbox:
            return self._inbox.popleft()
        if self._closed is not None:
            raise ChannelClosed(str(self._closed))
        if self._waiter is not None:
            raise RuntimeError("another coroutine is already waiting in recv()")
        self._waiter = self._loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None
        if not self._inbox:  # woken by the close
            raise ChannelClosed(str(self._closed))
        return self._inbox.popleft()

    def _on_readable(self) -> None:
        try:
            data, ancillary, flags, _ = self._sock.recvmsg(_READ_SIZE, _ANCILLARY_SIZE, _RECV_FLAGS)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._abort(ChannelClosed(f"receiving failed: {exc}"))
            return
        if ancillary:
            self._take_fds(ancillary)
            if flags & socket.MSG_CTRUNC:
                self._abort(ChannelClosed("file descriptors were truncated in transit"))
                return
        if not data:
            where = " in the middle of a frame" if self._partial else ""
            self._abort(ChannelClosed(f"the peer closed the channel{where}"))
            return
        if self._partial:
            data = self._partial + data
        end = len(data)
        position = 0
        view = memoryview(data)
        while end - position >= 4 and self._closed is None:
            word = _WORD.unpack_from(data, position)[0]
            stop = position + 4 + (word & _LENGTH_MASK)
            if stop > end:
                break
            try:
                msg = orjson.loads(view[position + 4 : stop])
            except orjson.JSONDecodeError as exc:
                self._abort(ChannelClosed(f"protocol error: a frame is not JSON ({exc})"))
                return
            count = word >> _LENGTH_BITS
            fds: list[int] = []
            if count:
                if len(self._fds) < count:
                    self._abort(ChannelClosed("protocol error: a frame's fds did not arrive"))
                    return
                fds = [self._fds.popleft() for _ in range(count)]
            position = stop
            if not isinstance(msg, dict):
                self._abort(ChannelClosed("protocol error: a frame is not a JSON object"))
                return
            self._deliver(msg, fds)
        view.release()
        self._partial = data[position:] if position < end else b""

    def _take_fds(self, ancillary: list[tuple[int, int, bytes]]) -> None:
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds = array.array("i")
                fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
                self._fds.extend(fds)

    def _deliver(self, msg: dict, fds: list[int]) -> None:
        if self._receiver is not None:
            self._receiver(msg, fds)
            return
        self._inbox.append((msg, fds))
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    # -- closing ----------------------------------------------------------------------------

    def add_close_callback(self, callback: Callable[[ChannelClosed], object]) -> None:
        """Call ``callback(reason)`` once the channel closes (at once if it already has)."""
        if self._closed is not None:
            self._loop.call_soon(callback, self._closed)
        else:
            self._close_callbacks.append(callback)

    def close(self) -> None:
        """Hand what is queued to the kernel if it takes it without waiting, then close."""
        if self._closed is None:
            self._flush()
            self._abort(ChannelClosed("the channel was closed"))

    def _abort(self, reason: ChannelClosed) -> None:
        if self._closed is not None:
            return
        self._closed = reason
        self._loop.remove_reader(self._fileno)
        if self._writing:
            self._loop.remove_writer(self._fileno)
            self._writing = False
        self._sock.close()
        for _, fds in self._queue:
            for fd in fds:
                os.close(fd)
        self._queue.clear()
        self._pending = []
        while self._fds:
            os.close(self._fds.popleft())
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)  # recv() finds the inbox empty and raises
        if self._drained is not None and not self._drained.done():
            self._drained.set_exception(ChannelClosed(str(reason)))
        callbacks, self._close_callbacks = self._close_callbacks, []
        for callback in callbacks:
            callback(reason)


class ChannelServer:
    """Accepts connections on a unix socket path, one ``Channel`` each."""

    def __init__(self, sock: socket.socket, on_channel: Callable[[Channel], object]) -> None:
        self._sock = sock
        self._on_channel = on_channel
        self._task = asyncio.get_running_loop().create_task(self._accept())

    async def _accept(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            conn, _ = await loop.sock_accept(self._sock)
            self._on_channel(Channel(conn))

    def close(self) -> None:
        """Stop accepting (channels already open stay open)."""
        self._task.cancel()
        self._sock.close()


async def start_server(path: str, on_channel: Callable[[Channel], object]) -> ChannelServer:
    """Listen on ``path`` (a filesystem path, or ``"\\0name"`` for Linux's abstract namespace);
    ``on_channel(channel)`` is called for each connection (e.g. ``serve`` on it)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.setblocking(False)
        sock.bind(path)
        sock.listen(128)
    except BaseException:
        sock.close()
        raise
    return ChannelServer(sock, on_channel)


def _close_fds(fds: list[int]) -> None:
    for fd in fds:
        os.close(fd)


class RpcClient:
    """Concurrent request/reply calls on one channel, matched by the ``id`` it adds.

    ``on_push(msg)`` receives the server's messages that are not replies (no ``id``). When the
    channel closes, every pending call fails with ``ChannelClosed``.
    """

    def __init__(self, channel: Channel, on_push: Callable[[dict], object] | None = None) -> None:
        self._channel = channel
        self._loop = asyncio.get_running_loop()
        self._on_push = on_push
        self._pending: dict[int, asyncio.Future] = {}
        # start_call's on_settled callbacks, by call id: run when the call ends on the wire.
        self._settled: dict[int, Settled] = {}
        self._next_id = 0
        channel.add_close_callback(self._on_close)
        channel.set_receiver(self._on_message)

    @property
    def channel(self) -> Channel:
        return self._channel

    async def call(
        self, msg: dict, timeout: float | None = None, *, fds: Sequence[int] = ()
    ) -> dict:
        """Send ``msg`` (a copy with an ``id`` added) and return the reply (which carries the same
        ``id``). Raises RemoteError if the handler failed, asyncio.TimeoutError after
        ``timeout`` seconds, ChannelClosed if the channel goes first."""
        reply, reply_fds = await self.call_with_fds(msg, timeout, fds=fds)
        if reply_fds:
            _close_fds(reply_fds)
        return reply

    async def call_with_fds(
        self, msg: dict, timeout: float | None = None, *, fds: Sequence[int] = ()
    ) -> tuple[dict, list[int]]:
        """``call`` for a reply that carries fds (the caller owns and must close them)."""
        self._next_id += 1
        call_id = self._next_id
        future = self._loop.create_future()
        self._channel.send({**msg, "id": call_id}, fds)
        self._pending[call_id] = future
        timer = None
        if timeout is not None:
            timer = self._loop.call_later(timeout, self._expire, call_id, timeout)
        try:
            return await future
        finally:
            if timer is not None:
                timer.cancel()
            self._pending.pop(call_id, None)

    def start_call(self, msg: dict, on_settled: Settled | None = None) -> asyncio.Future:
        """``call`` without a coroutine, for the request path: sends ``msg`` (adding its
        ``id`` to it) and returns the future of its reply, ``(reply, fds)``. Cancelling the
        future abandons the call (a late reply is dropped).

        ``on_settled(future, reply)`` runs once the call has ended on the wire, whether or not
        the future was cancelled meanwhile: with the reply message when it arrives (an
        ``rpc_error`` too), with None when the channel closes first. Shared memory the peer
        may read until it answers is freed there, so the caller can await the future itself
        (no ``asyncio.shield``) and still never free a block under the peer's feet."""
        self._next_id += 1
        call_id = self._next_id
        future = self._loop.create_future()
        msg["id"] = call_id
        self._channel.send(msg)
        self._pending[call_id] = future
        if on_settled is not None:
            self._settled[call_id] = on_settled
        return future

    def notify(self, msg: dict, fds: Sequence[int] = ()) -> None:
        """Send a message that gets no reply (it must not carry an ``id``)."""
        if "id" in msg:
            raise ValueError("a notification has no 'id' (that would make it a call)")
        self._channel.send(msg, fds)

    def _on_message(self, msg: dict, fds: list[int]) -> None:
        call_id = msg.get("id")
        if call_id is None:
            if fds:
                _close_fds(fds)
            if self._on_push is not None:
                self._on_push(msg)
            return
        future = self._pending.pop(call_id, None)
        if self._settled:
            on_settled = self._settled.pop(call_id, None)
            if on_settled is not None:
                on_settled(future, msg)
        if future is None or future.done():  # timed out or cancelled: nobody waits
            _close_fds(fds)
            return
        error = msg.get("rpc_error")
        if error is not None:
            _close_fds(fds)
            future.set_exception(RemoteError(error["type"], error["message"], error.get("code")))
        else:
            future.set_result((msg, fds))

    def _expire(self, call_id: int, timeout: float) -> None:
        future = self._pending.pop(call_id, None)
        if future is not None and not future.done():
            future.set_exception(
                asyncio.TimeoutError(f"no reply to call {call_id} within {timeout} s")
            )

    def _on_close(self, reason: ChannelClosed) -> None:
        pending, self._pending = self._pending, {}
        settled, self._settled = self._settled, {}
        for call_id, on_settled in settled.items():
            on_settled(pending.get(call_id), None)
        for future in pending.values():
            if not future.done():
                future.set_exception(ChannelClosed(str(reason)))

    def close(self) -> None:
        self._channel.close()


Handler = Callable[[dict, list[int]], "Awaitable[Any] | Any"]


class RpcServer:
    """The serving side of one channel (see ``serve``). Awaiting it waits until it closes."""

    def __init__(
        self,
        channel: Channel,
        handler: Handler,
        on_close: Callable[[ChannelClosed], object] | None,
    ) -> None:
        self._channel = channel
        self._handler = handler
        self._on_close = on_close
        self._loop = asyncio.get_running_loop()
        self._tasks: set[asyncio.Task] = set()
        self._closed = self._loop.create_future()
        channel.add_close_callback(self._channel_closed)
        channel.set_receiver(self._on_message)

    @property
    def channel(self) -> Channel:
        return self._channel

    def push(self, msg: dict, fds: Sequence[int] = ()) -> None:
        """Send a server-initiated message (no ``id``) to the client's ``on_push``."""
        if "id" in msg:
            raise ValueError("a pushed message has no 'id' (that would make it a reply)")
        self._channel.send(msg, fds)

    def _on_message(self, msg: dict, fds: list[int]) -> None:
        call_id = msg.get("id")
        try:
            result = self._handler(msg, fds)
        except Exception as exc:
            self._fail(call_id, exc)
            return
        if asyncio.iscoroutine(result):
            task = self._loop.create_task(result)
            self._tasks.add(task)
            task.add_done_callback(partial(self._finished, call_id))
        elif asyncio.isfuture(result):
            result.add_done_callback(partial(self._finished, call_id))
        else:
            self._reply(call_id, result)

    def _finished(self, call_id: int | None, future: asyncio.Future) -> None:
        self._tasks.discard(future)  # type: ignore[arg-type]
        if future.cancelled():
            if self._channel.closed:
                return
            self._fail(call_id, asyncio.CancelledError("the request was cancelled"))
            return
        exc = future.exception()
        if exc is not None:
            self._fail(call_id, exc)
        else:
            self._reply(call_id, future.result())

    def _reply(self, call_id: int | None, result: Any) -> None:
        """A dict, None (no reply), or (dict, fds) for a reply carrying fds."""
        if call_id is None or self._channel.closed:
            return
        fds: Sequence[int] = ()
        if isinstance(result, tuple):
            result, fds = result
        if result is None:
            result = {}
        result["id"] = call_id
        self._channel.send(result, fds)

    def _fail(self, call_id: int | None, exc: BaseException) -> None:
        code = getattr(exc, "code", None)
        if not isinstance(code, int):
            code = None
            # No status code: not an answer the handler chose but a fault; keep its traceback.
            _log.error("ipc handler failed on a message", exc_info=exc)
        if call_id is None or self._channel.closed:
            return
        error = {"type": type(exc).__name__, "message": str(exc), "code": code}
        self._channel.send({"id": call_id, "rpc_error": error})

    def _channel_closed(self, reason: ChannelClosed) -> None:
        for task in list(self._tasks):
            task.cancel()
        if not self._closed.done():
            self._closed.set_result(None)
        if self._on_close is not None:
            self._on_close(reason)

    def close(self) -> None:
        self._channel.close()

    async def wait_closed(self) -> None:
        await asyncio.shield(self._closed)

    def __await__(self):
        return self.wait_closed().__await__()


def serve(
    channel: Channel,
    handler: Handler,
    on_close: Callable[[ChannelClosed], object] | None = None,
) -> RpcServer:
    """Answer requests on ``channel``: ``handler(msg, fds)`` runs for each message as it
    arrives and returns a coroutine (run as a task), a future, or the reply itself. The reply is
    a dict (the server sets its ``id``), None (an empty reply), or (dict, fds). Messages without
    an ``id`` are notifications: the handler runs, nothing is sent back. A handler exception
    goes back as ``rpc_error`` (raised as RemoteError by the caller, with the exception's
    ``code``). When the channel closes, running handler tasks are cancelled and
    ``on_close(reason)`` is called. Returns the RpcServer (``push``, ``close``; await it to wait
    for the channel to close)."""
    return RpcServer(channel, handler, on_close)
