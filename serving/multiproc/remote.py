"""A front end's dataplane: what ``InferenceService`` and ``ServerCore`` answer in one process,
asked of the model process instead.

The REST and gRPC front ends call the same methods either way (``predict``, ``classify``,
``model_status``, ...), so their parsing, errors and encoding are the single-process server's.
Here a call becomes one small message; the request's tensors go into this process's arena and
the model process's reply tensors come back as views of its arena for this front end, freed
when the last view of them is gone (after the response is encoded). A lost model process fails
calls with UNAVAILABLE and makes ``/readyz`` fail until a new one is connected.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import re
import threading
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from functools import partial
from typing import Any

import numpy as np

from serving import protos
from serving.api import request_context
from serving.api.types import PredictResult, ResolvedSpec, status_error
from serving.core.model_spec import ModelSpec
from serving.errors import Code, ServingError, unavailable
from serving.ipc.arena import Arena, ArenaMap
from serving.ipc.channel import Channel, ChannelClosed, RemoteError, RpcClient, Settled
from serving.ipc.tensors import pack, pack_rows, unpack
from serving.multiproc import protocol as op
from serving.multiproc.coalesce import Coalescer, PendingCall
from serving.multiproc.snapshot import SignatureGuess, SnapshotView
from serving.rest.app import ExtraRoute
from serving.servables.signatures import (
    check_inputs,
    find_signature,
    find_signature_rest,
    signature_or_default,
)

log = logging.getLogger(__name__)

# A failed connect to a socket path that is not there yet costs microseconds: retrying often
# keeps each front end's window of 503s after a model-process restart short.
RECONNECT_SECONDS = 0.05
FREE_DELAY_SECONDS = 0.05
OBSERVE_FLUSH_SECONDS = 0.1
_FINDER_NAMES = {find_signature: "predict", find_signature_rest: "rest"}


def predict_fields(
    spec: ModelSpec,
    fingerprint: str,
    output_filter: Sequence[str] = (),
    timeout_ms: int = 0,
    find: Callable[[Mapping[str, Any], str], Any] = find_signature,
) -> dict[str, Any]:
    """A predict message without its tensors: the one place its fields are named, for the
    front end and for anything that speaks to the model process as one (the capacity
    benchmark), so neither can drift from what ``serving.multiproc.host`` reads."""
    return {
        "op": op.PREDICT,
        "spec": op.spec_fields(spec),
        "fp": fingerprint,
        "filter": list(output_filter),
        "timeout": timeout_ms,
        "find": _FINDER_NAMES.get(find, "predict"),
    }


class ForwardedMetrics:
    """The request figures a front end measures, sent to the model process in small batches,
    so ``/monitoring/prometheus/metrics`` shows whole-server figures whichever front end
    answers (the model process owns the one registry)."""

    path = None  # the exposition is an extra route that asks the model process

    def __init__(self, send: Callable[[list[list[Any]], int | None], None]) -> None:
        self._send = send
        self._samples: list[list[Any]] = []
        self._scheduled = False

    def record_request_latency(self, model: str, api: str, entrypoint: str, seconds: float) -> None:
        self._add(["latency", model, api, entrypoint, seconds])

    def record_request(self, model: str, status: str) -> None:
        self._add(["status", model, status])

    def _add(self, sample: list[Any]) -> None:
        self._samples.append(sample)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_later(OBSERVE_FLUSH_SECONDS, self.flush)

    def flush(self, token: int | None = None) -> None:
        """Sends the samples held; ``token`` answers the model process's flush request."""
        self._scheduled = False
        samples, self._samples = self._samples, []
        if samples or token is not None:
            self._send(samples, token)


class RemoteDataplane:
    """The front end's view of the model process (see the module docstring)."""

    def __init__(self, socket_path: str, arena_bytes: int, frontend: str) -> None:
        self._socket_path = socket_path
        self._arena = Arena(arena_bytes, f"requests-{frontend}")
        self._frontend = frontend
        self._client: RpcClient | None = None
        self._replies: ArenaMap | None = None
        self._snapshot = SnapshotView()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._frees: list[int] = []
        # id(weak reference to a reply's views) -> (the reference, generation, reply block)
        self._reply_blocks: dict[int, tuple[weakref.ref, int, int]] = {}
        self._free_scheduled = False
        self._generation = 0  # one per model process connected: its blocks are its own
        self._routes: list[list[str]] = []
        self._metrics_path: str | None = None
        self._keeper: asyncio.Task | None = None
        self.metrics = ForwardedMetrics(self._send_samples)
        self._coalescer = Coalescer(self._send_calls)

    # ------------------------------------------------------------------ connection
    async def connect(self, stopping: asyncio.Event) -> bool:
        """Connects (retrying: the model process may be restarting even as this front end
        starts), then keeps reconnecting in the background whenever the link is lost. False
        if ``stopping`` was set first."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        while not stopping.is_set():
            if await self._try_connect():
                self._keeper = asyncio.create_task(self._keep_connected())
                return True
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stopping.wait(), RECONNECT_SECONDS)
        return False

    async def _try_connect(self) -> bool:
        try:
            await self._connect_once()
        except (OSError, ChannelClosed, RemoteError, asyncio.TimeoutError) as exc:
            log.debug("Model process not reachable yet: %s", exc)
            return False
        return True

    async def _connect_once(self) -> None:
        channel = await Channel.connect(self._socket_path)
        client = RpcClient(channel, on_push=self._on_push)
        reply, fds = await client.call_with_fds(
            {"op": op.HELLO, "capacity": self._arena.capacity, "frontend": self._frontend},
            timeout=30,
            fds=[self._arena.fd],
        )
        for fd in fds[1:]:
            os.close(fd)
        if self._replies is not None:  # the previous model process's: views keep it mapped
            self._replies.close()
        self._replies = ArenaMap(fds[0], reply["capacity"])  # owns the fd
        self._routes = reply["routes"]
        self._metrics_path = reply["metrics_path"]
        self._snapshot.update(reply["snapshot"])
        self._client = client
        self._generation += 1
        channel.add_close_callback(self._on_lost)

    def _on_lost(self, reason: ChannelClosed) -> None:
        if self._client is None:
            return
        log.warning("Lost the model process (%s); answering UNAVAILABLE until it is back", reason)
        self._client = None
        self._frees.clear()  # blocks of a gone process's arena
        self._snapshot.disconnected()

    async def _keep_connected(self) -> None:
        while True:
            await asyncio.sleep(RECONNECT_SECONDS)
            if self._client is None and await self._try_connect():
                log.info("Connected to the model process again")

    def close(self) -> None:
        if self._keeper is not None:
            self._keeper.cancel()
        if self._client is not None:
            client, self._client = self._client, None
            client.close()

    def _on_push(self, msg: dict) -> None:
        kind = msg.get("op")
        if kind == op.SNAPSHOT:
            self._snapshot.update(msg["snapshot"])
        elif kind == op.FLUSH:
            self.metrics.flush(msg["token"])

    def _start(self, msg: dict, on_settled: Settled | None = None) -> asyncio.Future:
        """Sends a call (with the request id for the prediction log, and the reply blocks
        this front end is done with) and returns the future of its reply."""
        client = self._client
        if client is None:
            raise unavailable("The model process is restarting; retry shortly")
        if "rid" not in msg:
            msg["rid"] = request_context.current.get()
        if self._frees:
            msg["free"], self._frees = self._frees, []
        return client.start_call(msg, on_settled)

    async def _call(self, msg: dict) -> dict:
        return await _reply_of(self._start(msg))

    def _send_samples(self, samples: list[list[Any]], token: int | None) -> None:
        if self._client is not None:
            msg: dict[str, Any] = {"op": op.OBSERVE, "samples": samples}
            if token is not None:
                msg["flush"] = token
            self._client.notify(msg)

    # ------------------------------------------------------------------ shared memory
    def _pack(self, arrays: Mapping[str, np.ndarray]) -> tuple[list, int]:
        packed = pack(arrays, self._arena)
        if packed is None:
            raise ServingError(
                Code.RESOURCE_EXHAUSTED,
                f"The request does not fit in this front end's shared memory "
                f"({self._arena.capacity} bytes, shared by its requests in flight); retry",
            )
        return packed

    async def _call_with_tensors(self, msg: dict, arrays: Mapping[str, np.ndarray]) -> dict:
        """The request block stays allocated until the model process answered: it may read
        the tensors until then, also after the caller gave up (``_settled``)."""
        msg["in"], block = self._pack(arrays)
        try:
            call = self._start(msg, partial(self._settled, block, self._generation))
        except BaseException:
            self._arena.free(block)
            raise
        return await _reply_of(call)

    def _send_calls(self, msg: dict, calls: list[PendingCall]) -> asyncio.Future | None:
        """The coalescer's send: the calls' inputs concatenated into one block, one message
        listing each call's rows (one call alone goes as an ordinary predict)."""
        try:
            packed = pack_rows([call.inputs for call in calls], self._arena)
            if packed is None:
                raise ServingError(
                    Code.RESOURCE_EXHAUSTED,
                    f"The requests do not fit in this front end's shared memory "
                    f"({self._arena.capacity} bytes, shared by its requests in flight); retry",
                )
            msg["in"], block = packed
            if len(calls) > 1:
                msg["rows"] = [call.rows for call in calls]
            msg["rid"] = calls[0].rid if len(calls) == 1 else None
            try:
                reply = self._start(msg, partial(self._settled, block, self._generation))
            except BaseException:
                self._arena.free(block)
                raise
        except Exception as exc:  # each caller gets it, as a lone call would
            error = status_error(exc)
            for call in calls:
                _fail(call.future, error)
            return None
        reply.add_done_callback(partial(self._distribute, calls))
        return reply

    def _distribute(self, calls: list[PendingCall], reply_future: asyncio.Future) -> None:
        """Each caller's part of the reply: views of its rows of the merged outputs, its own
        result or error when the model process ran the calls one by one, or the retry."""
        try:
            self._split_reply(calls, reply_future.result()[0])
        except (ChannelClosed, RemoteError) as exc:
            error = _reply_error(exc)
            for call in calls:
                _fail(call.future, error)
        except Exception as exc:  # a reply this front end cannot read: no caller is left hanging
            log.exception("Could not split a coalesced reply")
            for call in calls:
                _fail(call.future, status_error(exc))

    def _split_reply(self, calls: list[PendingCall], reply: dict) -> None:
        if "retry" in reply:
            for call in calls:
                _succeed(call.future, reply)
        elif "calls" in reply:
            for call, part in zip(calls, reply["calls"], strict=True):
                if "error" in part:
                    _fail(call.future, op.error_from(*part["error"]))
                else:  # unpacked even for a caller who left: the block is freed with its views
                    arrays = self._reply_arrays(part)
                    _succeed(call.future, {"spec": part["spec"], "arrays": arrays})
        else:
            arrays = self._reply_arrays(reply)
            start = 0
            for call in calls:
                stop = start + call.rows
                rows = arrays if len(calls) == 1 else {n: a[start:stop] for n, a in arrays.items()}
                _succeed(call.future, {"spec": reply["spec"], "arrays": rows})
                start = stop

    def _settled(
        self, block: int, generation: int, call: asyncio.Future | None, reply: dict | None
    ) -> None:
        """The model process has answered (or is gone): the request block is free again, and
        the reply block of a call nobody awaits any more is returned."""
        self._arena.free(block)
        if reply is not None and (call is None or call.cancelled()):
            reply_block = reply.get("block")
            if reply_block is not None:
                self._free_later(generation, reply_block)

    def _reply_arrays(self, reply: dict) -> dict[str, np.ndarray]:
        """Views of the reply block; the block is freed once the last of them is collected
        (CPython frees on the last reference, so right after the response is encoded)."""
        block, descriptors = reply["block"], reply["out"]
        end = max((d[3] + d[4] for d in descriptors), default=block)
        if end == block:  # nothing but empty tensors
            self._free_later(self._generation, block)
            return unpack(descriptors, _no_memory)
        base = np.frombuffer(self._replies.view(block, end - block), np.uint8)
        whole = memoryview(base)
        arrays = unpack(
            descriptors, lambda offset, size: whole[offset - block : offset - block + size]
        )
        # A plain weak reference with a callback: a third of weakref.finalize's cost per reply.
        # (Keyed by the reference's id: a reference to an array is not hashable.)
        ref = weakref.ref(base, self._reply_collected)
        self._reply_blocks[id(ref)] = (ref, self._generation, block)
        return arrays

    def _reply_collected(self, ref: weakref.ref) -> None:
        _, generation, block = self._reply_blocks.pop(id(ref))
        self._free_later(generation, block)

    def _reply_bytes(self, reply: dict) -> bytes:
        return self._reply_arrays(reply)["result"].tobytes()  # the view dies here: freed

    def _free_later(self, generation: int, block: int) -> None:
        """Frees ride on the next call to the model process, or go on their own after a
        moment without one; blocks of a model process that is gone are forgotten with it.
        (A finalizer may run in another thread than the event loop's.)"""
        if generation != self._generation or self._loop is None or self._loop.is_closed():
            return
        self._frees.append(block)
        if not self._free_scheduled:
            self._free_scheduled = True
            if threading.get_ident() == self._loop_thread:
                self._loop.call_later(FREE_DELAY_SECONDS, self._send_frees)
            else:
                self._loop.call_soon_threadsafe(
                    self._loop.call_later, FREE_DELAY_SECONDS, self._send_frees
                )

    def _send_frees(self) -> None:
        self._free_scheduled = False
        blocks, self._frees = self._frees, []
        if blocks and self._client is not None:
            self._client.notify({"op": op.FREE, "free": blocks})

    # ------------------------------------------------------------------ inference
    async def predict(
        self,
        spec: ModelSpec,
        decode_inputs: Callable[[Any], Mapping[str, np.ndarray]],
        output_filter: Sequence[str] = (),
        timeout_ms: int = 0,
        find: Callable[[Mapping[str, Any], str], Any] = find_signature,
    ) -> PredictResult:
        """Decodes against the snapshot's guess of the version; the model process checks the
        guess (see ``serving.multiproc.host``) and answers ``retry`` with the right signature
        when a swap came in between. A guess that cannot be made, or whose signature rejects
        the request, is confirmed with the model process first, so a stale snapshot never
        turns into an error the single-process server would not give."""
        guess = self._snapshot.guess(spec)
        confirmed = guess is None
        sent = spec
        for _ in range(_ATTEMPTS):
            try:
                if guess is None:
                    guess = await self._resolve(spec)
                try:
                    signature = find(guess.signatures, spec.signature_name)
                    inputs = decode_inputs(signature)
                    check_inputs(signature, list(inputs))
                except ServingError:
                    if confirmed:
                        raise
                    guess, confirmed = None, True
                    continue
            except ServingError as exc:
                # A failure here, before the model process saw the call, is counted in
                # request_count as the single-process server counts it.
                self.metrics.record_request(spec.name, exc.code.name)
                raise
            fields = predict_fields(
                sent, guess.fingerprint_of(signature), output_filter, timeout_ms, find
            )
            pending = None
            if guess.coalesce_rows:
                rid = request_context.current.get()
                pending = self._coalescer.add(
                    fields, inputs, guess.coalesce_rows, guess.coalesce_in_flight, rid
                )
            if pending is None:
                reply = await self._call_with_tensors(fields, inputs)
            else:
                reply = await pending
            retry = reply.get("retry")
            if retry is None:
                arrays = reply["arrays"] if "arrays" in reply else self._reply_arrays(reply)
                return PredictResult(_resolved(reply["spec"]), arrays)
            version, fp, data = retry
            self._snapshot.add_signatures({fp: data})
            guess = self._snapshot.guess_from(
                version, {signature_or_default(spec.signature_name): fp}
            )
            sent, confirmed = replace(spec, version=version, label=None), True
        raise ServingError(
            Code.ABORTED, "The model's versions kept changing during the request; retry"
        )

    async def _resolve(self, spec: ModelSpec) -> SignatureGuess:
        reply = await self._call({"op": op.RESOLVE, "spec": op.spec_fields(spec)})
        self._snapshot.add_signatures(reply["signatures"])
        guess = self._snapshot.guess_from(reply["version"], reply["names"])
        if guess is None:
            raise ServingError(Code.INTERNAL, "the model process sent an incomplete signature set")
        return guess

    async def classify(
        self, spec: ModelSpec, inp: Any, timeout_ms: int = 0
    ) -> tuple[ResolvedSpec, Any]:
        reply = await self._examples_call(op.CLASSIFY, spec, inp, timeout_ms)
        return _resolved(reply["spec"]), protos.ClassificationResult.FromString(
            self._reply_bytes(reply)
        )

    async def regress(
        self, spec: ModelSpec, inp: Any, timeout_ms: int = 0
    ) -> tuple[ResolvedSpec, Any]:
        reply = await self._examples_call(op.REGRESS, spec, inp, timeout_ms)
        return _resolved(reply["spec"]), protos.RegressionResult.FromString(
            self._reply_bytes(reply)
        )

    async def multi_inference(
        self, tasks: Sequence[tuple[ModelSpec, str]], inp: Any, timeout_ms: int = 0
    ) -> list[tuple[ResolvedSpec, Any]]:
        reply = await self._call_with_tensors(
            {
                "op": op.MULTI_INFERENCE,
                "tasks": [[op.spec_fields(spec), method] for spec, method in tasks],
                "timeout": timeout_ms,
            },
            _serialized(inp),
        )
        return [
            (_resolved(fields), _RESULT_TYPES[kind].FromString(op.unb64(data)))
            for fields, kind, data in reply["results"]
        ]

    async def _examples_call(self, kind: str, spec: ModelSpec, inp: Any, timeout_ms: int) -> dict:
        return await self._call_with_tensors(
            {"op": kind, "spec": op.spec_fields(spec), "timeout": timeout_ms}, _serialized(inp)
        )

    # ------------------------------------------------------------------ model information
    def model_names(self) -> list[str]:
        return self._snapshot.model_names()

    def models_without_available_version(self) -> list[str]:
        return self._snapshot.models_without_available_version()

    async def model_status(self, spec: ModelSpec) -> Any:
        reply = await self._call({"op": op.STATUS, "spec": op.spec_fields(spec)})
        return protos.GetModelStatusResponse.FromString(op.unb64(reply["response"]))

    async def model_metadata(self, spec: ModelSpec, fields: Sequence[str]) -> Any:
        reply = await self._call(
            {"op": op.METADATA, "spec": op.spec_fields(spec), "fields": list(fields)}
        )
        return protos.GetModelMetadataResponse.FromString(op.unb64(reply["response"]))

    async def reload_config(self, config: Any, budget_seconds: float) -> None:
        """ModelService's reload, done by the model process (which owns the config)."""
        await self._call(
            {
                "op": op.RELOAD,
                "config": op.b64(config.SerializeToString()),
                "budget": budget_seconds,
            }
        )

    def extra_routes(self) -> tuple[ExtraRoute, ...]:
        """The model process's plug-in routes (feedback, lineage, status page) and its metrics
        exposition, answered there."""
        routes = [
            ExtraRoute(method, re.compile(pattern), self._route_handler(index), content.encode())
            for index, (method, pattern, content) in enumerate(self._routes)
        ]
        if self._metrics_path:
            routes.append(
                ExtraRoute(
                    "GET",
                    re.compile(re.escape(self._metrics_path)),
                    self._metrics_text,
                    _PROMETHEUS_TYPE,
                )
            )
        return tuple(routes)

    def _route_handler(self, index: int) -> Callable[[re.Match[str], bytes], Any]:
        async def handler(match: re.Match[str], body: bytes) -> bytes:
            reply = await self._call(
                {"op": op.ROUTE, "index": index, "path": match.string, "body": op.b64(body)}
            )
            return op.unb64(reply["body"])

        return handler

    async def _metrics_text(self, match: re.Match[str], body: bytes) -> bytes:
        reply = await self._call({"op": op.METRICS})
        return op.unb64(reply["text"])


_ATTEMPTS = 3
_PROMETHEUS_TYPE = b"text/plain; version=0.0.4; charset=utf-8"
_RESULT_TYPES = {
    "ClassificationResult": protos.ClassificationResult,
    "RegressionResult": protos.RegressionResult,
}


async def _reply_of(call: Awaitable[tuple[dict, list[int]]]) -> dict:
    """The reply of a call, or the ``ServingError`` the model process raised for it."""
    try:
        return (await call)[0]
    except (ChannelClosed, RemoteError) as exc:
        raise _reply_error(exc) from None


def _reply_error(exc: ChannelClosed | RemoteError) -> ServingError:
    if isinstance(exc, ChannelClosed):
        return unavailable("The model process stopped during the request; retry")
    if exc.code is None:  # a fault there, not an answer: logged by the model process
        return ServingError(Code.INTERNAL, f"The model process failed the call: {exc}")
    return op.error_from(exc.code, exc.message)


def _succeed(future: asyncio.Future, reply: dict) -> None:
    if not future.done():  # a caller who gave up has cancelled it
        future.set_result(reply)


def _fail(future: asyncio.Future, error: ServingError) -> None:
    if not future.done():
        future.set_exception(error)


def _resolved(fields: list[Any]) -> ResolvedSpec:
    name, version, signature_name = fields
    return _resolved_spec(name, version, signature_name)


@functools.lru_cache(maxsize=1024)
def _resolved_spec(name: str, version: int, signature_name: str) -> ResolvedSpec:
    """One immutable spec per version and signature, not one per reply (building a frozen
    dataclass costs about a microsecond)."""
    return ResolvedSpec(name, version, signature_name)


def _serialized(message: Any) -> dict[str, np.ndarray]:
    return {"input": np.frombuffer(message.SerializeToString(), np.uint8)}


def _no_memory(offset: int, size: int) -> memoryview:
    return memoryview(b"")
