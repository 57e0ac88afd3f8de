"""TF Serving's REST API as a thin ASGI application (served by uvicorn).

A raw ASGI callable rather than a web framework: the URL grammar is TF Serving's own regexes,
every response is JSON of the same two shapes, and each layer a framework adds costs
throughput on the hot path.
"""

from __future__ import annotations

import logging
import re
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import orjson

from serving import protos, request_limits
from serving.api import model_info, request_context
from serving.api.types import Dataplane, status_error
from serving.compat import message_to_dict_with_defaults
from serving.core.model_spec import ModelSpec
from serving.core.traffic_split import DEFAULT_ROUTING_HEADER
from serving.errors import Code, ServingError, http_status, invalid_argument
from serving.request_limits import MemoryLimits, MemoryPool, RequestTooLarge
from serving.rest import json_body, json_examples, json_tensors
from serving.rest.routes import API_PREFIX, Route, parse_route
from serving.security.auth import TokenAuthenticator
from serving.servables.signatures import find_signature_rest

log = logging.getLogger(__name__)

Scope = dict
Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]

_JSON_TYPE = b"application/json"
_JSON_HEADERS = [(b"content-type", _JSON_TYPE)]
_CORS_HEADERS = [
    (b"access-control-allow-origin", b"*"),
    (b"access-control-allow-methods", b"POST, GET"),
    (b"access-control-allow-headers", b"Content-Type"),
]
_MAX_UNCOMPRESSED_BYTES = 100 * 1024 * 1024  # TF Serving's gzip limit (ZLib::kMaxUncompressedBytes)
_INFLATE_STEP = 1024 * 1024
# Content-Encoding -> zlib window bits: gzip framing, or zlib framing (HTTP's "deflate").
_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}
_PROMETHEUS_HEADERS = [(b"content-type", b"text/plain; version=0.0.4; charset=utf-8")]
_INFERENCE_KINDS = frozenset({"predict", "classify", "regress"})


@dataclass(frozen=True)
class ExtraRoute:
    """A route a plug-in adds to the REST port, tried before the API's own routes.

    A request whose method is ``method`` and whose raw path (no query) fully matches
    ``pattern`` is answered by ``await handler(match, body)``, where ``body`` is the request
    body (decompressed). Extra routes get what every API call gets: token auth, a request id,
    the request memory account, and a ``ServingError`` raised by the handler answered as the
    JSON error with its HTTP status. The response carries ``content_type``.
    """

    method: str
    pattern: re.Pattern[str]
    handler: Callable[[re.Match[str], bytes], Awaitable[bytes]]
    content_type: bytes = _JSON_TYPE


# Route kinds of this server's URL grammar that only a plug-in answers, and what turns it on.
_PLUGIN_KINDS = {
    "feedback": "Feedback needs --prediction_log_dir on this server",
    "lineage_version": "Lineage queries need --metadata_connection on this server",
    "lineage_versions": "Lineage queries need --metadata_connection on this server",
    "lineage_diff": "Lineage queries need --metadata_connection on this server",
    "lineage_server": "Lineage queries need --metadata_connection on this server",
}


@dataclass(frozen=True)
class RestOptions:
    timeout_ms: int = 30000
    enable_cors: bool = False
    max_request_bytes: int = 0  # 0 = unlimited
    authenticator: TokenAuthenticator = field(
        default_factory=lambda: TokenAuthenticator(frozenset())
    )
    routing_header: bytes = DEFAULT_ROUTING_HEADER.encode()
    # Routes plug-ins add (serving.metadata's feedback and lineage, a status page).
    extra_routes: tuple[ExtraRoute, ...] = ()
    # Shared with the gRPC front end: one account of request memory for the process.
    memory: MemoryPool = field(default_factory=lambda: MemoryPool(MemoryLimits()))


def _proto_json(message) -> dict:
    """Proto3 JSON the way TF Serving prints status/metadata: field names kept, defaults on."""
    return message_to_dict_with_defaults(message, preserving_proto_field_name=True)


def _decompress(body: bytes, encoding: str, limit: int, limit_flag: str) -> bytes:
    """A ``gzip``/``deflate`` body inflated a step at a time, charged to the request's memory
    as it grows and refused (413) once it exceeds ``limit`` — a 1 MB body inflating to 1 GiB
    costs no more than ``limit``. Concatenated gzip members are one body, as in
    ``gzip.decompress``; other encodings pass through."""
    wbits = _WBITS.get(encoding)
    if wbits is None:
        return body
    steps: list[bytes] = []
    size = 0
    pending = body
    try:
        while pending:
            inflater = zlib.decompressobj(wbits)
            while not inflater.eof:
                step = inflater.decompress(pending, _INFLATE_STEP)
                if not step and len(inflater.unconsumed_tail) == len(pending):
                    raise invalid_argument(
                        f"Failed to decompress {encoding} request body: it ends early"
                    )
                pending = inflater.unconsumed_tail
                size += len(step)
                if size > limit:
                    raise _too_large(f"{encoding}-inflated request body", size, limit, limit_flag)
                request_limits.charge(len(step), lambda: f"the {encoding}-inflated body")
                steps.append(step)
            pending = inflater.unused_data if encoding == "gzip" else b""
    except zlib.error as exc:
        raise invalid_argument(f"Failed to decompress {encoding} request body: {exc}") from None
    request_limits.charge(size, lambda: f"the {encoding}-inflated body (joined)")
    return b"".join(steps)


class RestApi:
    def __init__(self, service: Dataplane, options: RestOptions) -> None:
        self._service = service
        self._options = options

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        method = scope["method"]
        raw_path = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
        raw_path = raw_path.split("?", 1)[0]
        headers = dict(scope["headers"])
        extra_headers = list(_CORS_HEADERS) if self._options.enable_cors else []
        authenticator = self._options.authenticator
        if method != "OPTIONS" and request_context.needs_token(authenticator, raw_path):
            reason = authenticator.check(headers.get(b"authorization"))
            if reason is not None:
                challenge = [(b"www-authenticate", b"Bearer")]
                await self._send(send, 401, json_body.encode_error(reason), challenge)
                return
        if method == "GET" and raw_path in ("/healthz", "/readyz"):
            status, payload = self._health(raw_path)
            await self._send(send, status, payload, extra_headers)
            return
        metrics = self._service.metrics
        if metrics is not None and method == "GET" and raw_path == metrics.path:
            await self._send(send, 200, metrics.exposition(), _PROMETHEUS_HEADERS, False)
            return
        extra = self._extra_route(method, raw_path)
        if extra is None and not API_PREFIX.match(raw_path):
            await self._send(send, 404, json_body.encode_error(f"Not found: {raw_path}"), [])
            return
        if method == "OPTIONS":
            origin = headers.get(b"origin", b"")
            ok = origin.startswith((b"http://", b"https://"))
            await self._send(send, 200 if ok else 400, b"", extra_headers, content_type=False)
            return
        client_id = headers.get(request_context.HEADER_BYTES, b"").decode("latin-1")
        call = request_context.begin("REST", client_id, metrics)
        extra_headers.append((request_context.HEADER_BYTES, call.request_id.encode()))
        route = None
        reply_type = _JSON_TYPE
        with self._options.memory.request():
            try:
                body = await self._read_body(receive, headers) if method == "POST" else b""
                encoding = headers.get(b"content-encoding", b"").decode("latin-1").strip().lower()
                if extra is not None:
                    extra_route, match = extra
                    inflated = _decompress(body, encoding, *self._inflate_limit())
                    payload, version = await extra_route.handler(match, inflated), None
                    reply_type = extra_route.content_type
                else:
                    route = parse_route(method, raw_path)
                    routing_key = headers.get(self._options.routing_header)
                    payload, version = await self._dispatch(
                        route,
                        _decompress(body, encoding, *self._inflate_limit()),
                        routing_key.decode("latin-1") if routing_key else None,
                    )
                if version is not None:
                    extra_headers.append((b"x-model-version", str(version).encode()))
                status = 200
            except Exception as exc:  # every failure becomes a JSON error response
                error = status_error(exc)
                if not isinstance(exc, ServingError):
                    log.exception("Unexpected error serving %s %s", method, raw_path)
                status = 413 if isinstance(error, RequestTooLarge) else http_status(error.code)
                payload = json_body.encode_error(error.message)
                reply_type = _JSON_TYPE
        if status == 200 and route is not None and route.kind in _INFERENCE_KINDS:
            call.succeeded(route.model, route.kind)  # successful calls only, as TF Serving
        if reply_type != _JSON_TYPE:
            extra_headers.append((b"content-type", reply_type))
        await self._send(send, status, payload, extra_headers, reply_type == _JSON_TYPE)

    def _extra_route(self, method: str, raw_path: str) -> tuple[ExtraRoute, re.Match] | None:
        for route in self._options.extra_routes:
            if route.method == method:
                match = route.pattern.fullmatch(raw_path)
                if match is not None:
                    return route, match
        return None

    async def _model_list(self) -> list[dict]:
        """Every configured model with its version states (TF Serving lacks this: #795)."""
        models = []
        for name in self._service.model_names():
            try:
                statuses = _proto_json(await self._service.model_status(ModelSpec(name)))
            except ServingError:  # configured, but no version seen yet
                statuses = {"model_version_status": []}
            models.append({"name": name, **statuses})
        return models

    def _health(self, path: str) -> tuple[int, bytes]:
        """Kubernetes probes: liveness = the process answers; readiness = every model serves."""
        if path == "/healthz":
            return 200, orjson.dumps({"status": "ok"})
        waiting = self._service.models_without_available_version()
        if waiting:
            return 503, orjson.dumps({"status": "not ready", "models_not_available": waiting})
        return 200, orjson.dumps({"status": "ready"})

    async def _dispatch(
        self, route: Route, body: bytes, routing_key: str | None
    ) -> tuple[bytes, int | None]:
        """The response body, and the model version that answered (for inference calls)."""
        if route.kind == "list":
            return orjson.dumps({"models": await self._model_list()}), None
        if route.kind == "status":
            spec = ModelSpec(route.model, route.version, route.label)
            status = await self._service.model_status(spec)
            return orjson.dumps(_proto_json(status)), None
        if route.kind == "metadata":
            spec = ModelSpec(route.model, route.version, route.label)
            response = await self._service.model_metadata(spec, [model_info.SIGNATURE_DEF_FIELD])
            metadata = {
                key: _proto_json(_unpack_signature_map(value))
                for key, value in response.metadata.items()
            }
            document = {"model_spec": _proto_json(response.model_spec), "metadata": metadata}
            return orjson.dumps(document), None
        if route.kind in _PLUGIN_KINDS:  # no plug-in on this server claimed the route
            raise ServingError(Code.FAILED_PRECONDITION, _PLUGIN_KINDS[route.kind])
        doc = json_body.parse_json(body)
        spec = ModelSpec(
            route.model,
            route.version,
            route.label,
            json_body.signature_name_of(doc),
            routing_key,
        )
        timeout = self._options.timeout_ms
        if route.kind == "predict":
            columnar: list[bool] = []

            def decode(signature):
                inputs, is_columnar = json_tensors.decode_predict_inputs(doc, signature)
                columnar.append(is_columnar)
                return inputs

            result = await self._service.predict(
                spec, decode, timeout_ms=timeout, find=find_signature_rest
            )
            encoded = json_tensors.encode_predict_outputs(result.outputs, columnar[0])
            return encoded, result.spec.version
        inp = json_examples.decode_inference_input(doc, route.kind)
        if route.kind == "classify":
            resolved, classification = await self._service.classify(spec, inp, timeout)
            return json_examples.encode_classification(classification), resolved.version
        resolved, regression = await self._service.regress(spec, inp, timeout)
        return json_examples.encode_regression(regression), resolved.version

    async def _read_body(self, receive: Receive, headers: dict[bytes, bytes]) -> bytes:
        """The body as it arrives, each chunk charged to the request's memory (so a body
        larger than the request memory limit is refused before it is all held). After an
        early refusal uvicorn reads and drops the rest of the body (within the body
        deadline), so the client gets the answer rather than a reset connection."""
        limit = self._options.max_request_bytes
        declared = headers.get(b"content-length", b"")
        if limit and declared.isdigit() and int(declared) > limit:
            raise _too_large("Request body", int(declared), limit, "--max_request_bytes")
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ServingError(Code.CANCELLED, "Client disconnected")
            chunk = message.get("body", b"")
            size += len(chunk)
            if limit and size > limit:
                raise _too_large("Request body", size, limit, "--max_request_bytes")
            request_limits.charge(len(chunk), lambda: "the request body")
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        if len(chunks) == 1:
            return chunks[0]
        # Joined once at the end: a bytearray grown chunk by chunk leaves glibc's heap
        # fragmented at several times the body's size.
        request_limits.charge(size, lambda: "the request body (joined)")
        return b"".join(chunks)

    def _inflate_limit(self) -> tuple[int, str]:
        """Largest inflated body: --max_request_bytes holds after decompression, as gRPC's
        message limit does; without it, TF Serving's own 100 MB limit for gzip bodies."""
        if self._options.max_request_bytes:
            return self._options.max_request_bytes, "--max_request_bytes"
        return _MAX_UNCOMPRESSED_BYTES, "TF Serving's limit for compressed bodies"

    @staticmethod
    async def _send(
        send: Send, status: int, body: bytes, headers: list, content_type: bool = True
    ) -> None:
        all_headers = ([*_JSON_HEADERS] if content_type else []) + headers
        all_headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": all_headers})
        await send({"type": "http.response.body", "body": body})

    @staticmethod
    async def _lifespan(receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return


def _too_large(what: str, size: int, limit: int, source: str) -> RequestTooLarge:
    return RequestTooLarge(
        f"{what} of {size} bytes exceeds the server's limit of {limit} bytes ({source})"
    )


def _unpack_signature_map(any_message) -> protos.SignatureDefMap:
    signature_map = protos.SignatureDefMap()
    any_message.Unpack(signature_map)
    return signature_map
