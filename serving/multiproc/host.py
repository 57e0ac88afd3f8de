"""The model process's side of the dataplane: front ends' calls run against the one core.

Each front end connects once (``hello``: it hands over its request arena, gets this side's
reply arena for its connection) and then sends small messages; tensors sit in the arenas
(``serving.ipc``). Every call goes through the same ``InferenceService`` a single-process
server uses, so request counting, batching (which merges calls from all front ends), the
prediction log and the observers behave the same. What only the model process can know is
decided here, per request, against the version it actually runs: a front end decodes against
its snapshot's guess and sends that signature's fingerprint; if the version resolved here has a
different signature, the call is answered ``retry`` with the right signature and version, and
the front end decodes again -- never an answer computed from inputs decoded for another version.
A predict may carry several front-end calls coalesced into one (``rows``, see
``serving.multiproc.coalesce``): it runs as ``InferenceService.predict_calls``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

import numpy as np

from serving import protos
from serving.api import model_info, request_context
from serving.api.model_control import ConfigReloader
from serving.api.types import PredictResult
from serving.batching.servable import BatchingServable
from serving.core.model_spec import ModelSpec
from serving.errors import Code, ServingError
from serving.ipc.arena import Arena, ArenaMap
from serving.ipc.channel import Channel, ChannelServer, RpcServer, serve
from serving.ipc.tensors import pack, unpack
from serving.multiproc import protocol as op
from serving.multiproc.publisher import Snapshot, SnapshotPublisher
from serving.multiproc.snapshot import SignatureFingerprints, build_snapshot
from serving.servables.signatures import find_signature, find_signature_rest

log = logging.getLogger(__name__)

FLUSH_WAIT_SECONDS = 1.0  # a front end too busy to answer by then is read as it stands
FINDERS = {"predict": find_signature, "rest": find_signature_rest}


def _batched_rows(servable: Any) -> tuple[int, int]:
    """(rows per call, calls in flight) a front end may coalesce for this version: a batch's
    rows, and one call per batch thread (more would only wait in the batch queue)."""
    if not isinstance(servable, BatchingServable):
        return 0, 0
    return servable.config.max_batch_size, servable.batch_threads


def _never(servable: Any) -> tuple[int, int]:
    return 0, 0


class _StaleSignature(ServingError):
    """The front end decoded against another signature than the resolved version's (counted
    as ABORTED in ``request_count``; the front end's retry is counted again)."""

    def __init__(self, signature: Any) -> None:
        super().__init__(Code.ABORTED, "the signature changed while the request was decoded")
        self.signature = signature


class _Condition:
    """Wakes waiters of a predicate when an event that may change it happens."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify_all_soon(self) -> None:
        self._event.set()

    async def wait_until(self, predicate: Callable[[], bool], timeout: float) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while not predicate():
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return
            self._event.clear()
            try:
                await asyncio.wait_for(self._event.wait(), remaining)
            except asyncio.TimeoutError:
                return


class FrontendLink:
    """One front end's connection: its request arena (read here) and the reply arena this
    process writes outputs into for it."""

    def __init__(self, server: RpcServer, requests: ArenaMap, replies: Arena) -> None:
        self.server = server
        self.requests = requests
        self.replies = replies
        self.flushed = 0  # the last metrics flush this front end answered

    def close(self) -> None:
        """Views a call still holds (a batch in progress) keep the mappings alive."""
        self.requests.close()
        self.replies.close()


class _Connection:
    """A front end's channel; its link exists once the front end has said hello."""

    __slots__ = ("link", "server")

    def __init__(self) -> None:
        self.link: FrontendLink | None = None
        self.server: RpcServer | None = None


class DataplaneHost:
    """Serves the front-end processes' calls with this process's ``ModelServer`` parts."""

    def __init__(self, server: Any, socket_path: str, reply_arena_bytes: int) -> None:
        self._server = server
        self._service = server.service
        self._core = server.core
        self._metrics = server.metrics
        self._routes = server.extra_routes()
        self._reloader = ConfigReloader(server.core)
        self._socket_path = socket_path
        self._reply_arena_bytes = reply_arena_bytes
        # The prediction log keeps inputs after the reply (its writer is asynchronous): it
        # must get its own copy, not views of a front end's arena the front end will reuse.
        self._copy_inputs = bool(server.metadata is not None)
        # Front ends coalesce calls to batched versions (``InferenceService.predict_calls``),
        # unless the prediction log and feedback observers need every request on its own.
        self._coalescing = _never if server.metadata is not None else _batched_rows
        self._fingerprints = SignatureFingerprints()
        self._links: set[FrontendLink] = set()
        self._listener: ChannelServer | None = None
        self._publisher = SnapshotPublisher(self._build_snapshot, self._push_snapshot)
        self._flush_token = 0
        self._flushes = _Condition()

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Listens on the socket path, made visible only once listening (the supervisor starts
        front ends when the path appears)."""
        self._core.add_change_listener(self._publisher.changed)
        self._publisher.start()
        staging = f"{self._socket_path}.{os.getpid()}"
        for path in (staging, self._socket_path):
            if os.path.exists(path):
                os.unlink(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(staging)
        sock.listen(64)
        sock.setblocking(False)
        self._listener = ChannelServer(sock, self._accept)
        os.rename(staging, self._socket_path)
        log.info("Model process serving front ends at %s", self._socket_path)

    async def stop(self) -> None:
        # The core outlives this loop (it unloads every version after it closes).
        self._core.remove_change_listener(self._publisher.changed)
        self._publisher.stop()
        if self._listener is not None:
            self._listener.close()
        for link in list(self._links):
            link.server.close()
        if os.path.exists(self._socket_path):
            os.unlink(self._socket_path)

    def _accept(self, channel: Channel) -> None:
        connection = _Connection()
        connection.server = serve(
            channel, partial(self._dispatch, connection), partial(self._closed, connection)
        )

    def _closed(self, connection: _Connection, reason: Exception) -> None:
        link = connection.link
        if link is not None:
            self._links.discard(link)
            link.close()

    def _build_snapshot(self) -> Snapshot:
        return build_snapshot(self._core, self._fingerprints, self._coalescing)

    def _push_snapshot(self, snapshot: Snapshot) -> None:
        for link in list(self._links):
            link.server.push({"op": op.SNAPSHOT, "snapshot": snapshot})

    # ------------------------------------------------------------------ dispatch
    def _dispatch(self, connection: _Connection, msg: dict, fds: list[int]) -> Any:
        kind = msg.get("op")
        link = connection.link
        if kind == op.HELLO:
            return self._hello(connection, msg, fds)
        if link is None:
            raise ServingError(Code.FAILED_PRECONDITION, "a front end must say hello first")
        freed = msg.get("free")  # reply blocks the front end is done with, on any message
        if freed:
            for offset in freed:
                link.replies.free(offset)
        if kind == op.FREE:
            return None
        if kind == op.OBSERVE:
            self._observe(msg["samples"])
            if "flush" in msg:
                link.flushed = msg["flush"]
                self._flushes.notify_all_soon()
            return None
        handler = self._HANDLERS.get(kind)
        if handler is None:
            raise ValueError(f"unknown operation {kind!r}")
        # A ServingError raised by the handler reaches the front end with its code and message
        # (``serving.ipc.channel``), to be raised there again as the same error.
        return handler(self, link, msg)

    def _hello(self, connection: _Connection, msg: dict, fds: list[int]) -> tuple[dict, list[int]]:
        requests = ArenaMap(fds[0], msg["capacity"])  # owns the fd
        for fd in fds[1:]:
            os.close(fd)
        replies = Arena(self._reply_arena_bytes, f"replies-{msg.get('frontend', '?')}")
        link = FrontendLink(connection.server, requests, replies)
        connection.link = link
        self._links.add(link)
        metrics_path = self._metrics.path if self._metrics is not None else None
        reply = {
            "capacity": replies.capacity,
            "snapshot": self._publisher.snapshot,
            "routes": [
                [r.method, r.pattern.pattern, r.content_type.decode()] for r in self._routes
            ],
            "metrics_path": metrics_path,
        }
        return reply, [replies.fd]

    def _observe(self, samples: Sequence[list[Any]]) -> None:
        """Request figures a front end measured (latency of whole calls, statuses of calls
        that failed before reaching this process)."""
        if self._metrics is None:
            return
        for sample in samples:
            if sample[0] == "latency":
                _, model, api, entrypoint, seconds = sample
                self._metrics.record_request_latency(model, api, entrypoint, seconds)
            elif sample[0] == "status":
                _, model, status = sample
                self._metrics.record_request(model, status)

    # ------------------------------------------------------------------ inference
    async def _predict(self, link: FrontendLink, msg: dict) -> dict:
        request_context.current.set(msg.get("rid"))
        spec = op.spec_from(msg["spec"])
        expected = msg["fp"]
        descriptors = msg["in"]

        def decode(signature: Any) -> Mapping[str, np.ndarray]:
            if self._fingerprints.of(signature)[0] != expected:
                raise _StaleSignature(signature)
            inputs = unpack(descriptors, link.requests.view)
            if self._copy_inputs:
                return {name: array.copy() for name, array in inputs.items()}
            return inputs

        rows = msg.get("rows")  # several front-end calls coalesced (serving.multiproc.coalesce)
        try:
            if rows is None:
                result = await self._service.predict(
                    spec, decode, msg["filter"], msg["timeout"], FINDERS[msg["find"]]
                )
            else:
                result = await self._service.predict_calls(
                    spec, decode, rows, msg["filter"], msg["timeout"], FINDERS[msg["find"]]
                )
        except _StaleSignature as stale:
            return self._retry(spec, stale.signature)
        if isinstance(result, list):  # each call answered on its own
            return {"calls": [self._call_reply(link, outcome) for outcome in result]}
        return self._call_reply(link, result)

    def _call_reply(self, link: FrontendLink, outcome: PredictResult | ServingError) -> dict:
        if isinstance(outcome, ServingError):
            return {"error": [int(outcome.code), outcome.message]}
        return {
            "spec": [outcome.spec.name, outcome.spec.version, outcome.spec.signature_name],
            **self._packed_outputs(link, outcome.outputs),
        }

    def _retry(self, spec: ModelSpec, signature: Any) -> dict:
        """The version whose signature object this is, with the signature to decode against."""
        fp, data = self._fingerprints.of(signature)
        manager = self._core.manager(spec.name)
        for version in manager.available_versions():
            try:
                with self._core.handle(ModelSpec(spec.name, version)) as handle:
                    if any(s is signature for s in handle.servable.signatures.values()):
                        return {"retry": [version, fp, op.b64(data)]}
            except ServingError:
                continue
        raise ServingError(Code.ABORTED, "the version changed during the request; retry")

    def _packed_outputs(self, link: FrontendLink, outputs: Mapping[str, np.ndarray]) -> dict:
        packed = pack(outputs, link.replies)
        if packed is None:
            raise ServingError(
                Code.RESOURCE_EXHAUSTED,
                "The reply does not fit in the shared memory for this front end's replies "
                f"({link.replies.capacity} bytes, shared by its requests in flight); retry, or "
                "raise --max_total_request_memory_bytes",
            )
        descriptors, block = packed
        return {"out": descriptors, "block": block}

    def _examples_input(self, link: FrontendLink, msg: dict) -> Any:
        data = unpack(msg["in"], link.requests.view)["input"]
        return protos.Input.FromString(data.tobytes())

    async def _classify(self, link: FrontendLink, msg: dict) -> dict:
        return await self._on_examples(link, msg, self._service.classify)

    async def _regress(self, link: FrontendLink, msg: dict) -> dict:
        return await self._on_examples(link, msg, self._service.regress)

    async def _on_examples(self, link: FrontendLink, msg: dict, call: Callable) -> dict:
        request_context.current.set(msg.get("rid"))
        resolved, result = await call(
            op.spec_from(msg["spec"]), self._examples_input(link, msg), msg["timeout"]
        )
        return {
            "spec": [resolved.name, resolved.version, resolved.signature_name],
            **self._packed_bytes(link, result.SerializeToString()),
        }

    async def _multi_inference(self, link: FrontendLink, msg: dict) -> dict:
        request_context.current.set(msg.get("rid"))
        tasks = [(op.spec_from(fields), method) for fields, method in msg["tasks"]]
        outcomes = await self._service.multi_inference(
            tasks, self._examples_input(link, msg), msg["timeout"]
        )
        results = [
            [[r.name, r.version, r.signature_name], type(result).__name__, op.b64(data)]
            for r, result in outcomes
            for data in (result.SerializeToString(),)
        ]
        return {"results": results}

    def _packed_bytes(self, link: FrontendLink, data: bytes) -> dict:
        return self._packed_outputs(link, {"result": np.frombuffer(data, np.uint8)})

    # ------------------------------------------------------------------ model information
    async def _resolve(self, link: FrontendLink, msg: dict) -> dict:
        spec = op.spec_from(msg["spec"])
        with self._core.handle(spec) as handle:
            names: dict[str, str] = {}
            definitions: dict[str, str] = {}
            for key, signature in handle.servable.signatures.items():
                fp, data = self._fingerprints.of(signature)
                names[key] = fp
                definitions[fp] = op.b64(data)
            return {"version": handle.version, "names": names, "signatures": definitions}

    async def _status(self, link: FrontendLink, msg: dict) -> dict:
        response = model_info.model_status(self._core, op.spec_from(msg["spec"]))
        return {"response": op.b64(response.SerializeToString())}

    async def _metadata(self, link: FrontendLink, msg: dict) -> dict:
        response = model_info.model_metadata(
            self._core, op.spec_from(msg["spec"]), list(msg["fields"])
        )
        return {"response": op.b64(response.SerializeToString())}

    async def _reload(self, link: FrontendLink, msg: dict) -> dict:
        config = protos.ModelServerConfig.FromString(op.unb64(msg["config"]))
        await self._reloader.reload(config, msg["budget"])
        return {}

    async def _route(self, link: FrontendLink, msg: dict) -> dict:
        request_context.current.set(msg.get("rid"))
        route = self._routes[msg["index"]]
        match = route.pattern.fullmatch(msg["path"])
        if match is None:
            raise ValueError(f"route {msg['index']} does not match {msg['path']!r}")
        payload = await route.handler(match, op.unb64(msg["body"]))
        return {"body": op.b64(payload)}

    async def _metrics_text(self, link: FrontendLink, msg: dict) -> dict:
        """Whole-server figures: every front end first sends what it measured and has not
        sent yet (they batch their samples), so a read after a request counts it, whichever
        front end served the request and whichever answers the read."""
        self._flush_token += 1
        token = self._flush_token
        links = list(self._links)
        for other in links:
            other.server.push({"op": op.FLUSH, "token": token})
        await self._flushes.wait_until(
            lambda: all(other.flushed >= token or other not in self._links for other in links),
            FLUSH_WAIT_SECONDS,
        )
        text = self._metrics.exposition() if self._metrics is not None else b""
        return {"text": op.b64(text)}

    _HANDLERS: dict[str, Callable[..., Any]] = {
        op.PREDICT: _predict,
        op.CLASSIFY: _classify,
        op.REGRESS: _regress,
        op.MULTI_INFERENCE: _multi_inference,
        op.RESOLVE: _resolve,
        op.STATUS: _status,
        op.METADATA: _metadata,
        op.RELOAD: _reload,
        op.ROUTE: _route,
        op.METRICS: _metrics_text,
    }
