"""TF Serving's gRPC API (PredictionService, ModelService) over the shared inference core.

Named ``grpc_api`` so it never shadows the ``grpc`` library. This module holds what both
services share: turning a ``ServingError`` into a gRPC status the way TF Serving's
``ToGRPCStatus`` does, reading a request's ``ModelSpec``, and the client deadline.

No TensorFlow on this package's import path: requests are parsed into, and responses built
from, ``serving.protos``' messages (wire-identical to ``tensorflow_serving.apis``, so clients
using the official stubs see no difference), and services are registered from its descriptors.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from serving import protos
from serving.api import request_context
from serving.api.types import ResolvedSpec, status_error
from serving.core.model_spec import ModelSpec
from serving.errors import Code, ServingError, invalid_argument

log = logging.getLogger(__name__)

_GRPC_CODES = {status.value[0]: status for status in grpc.StatusCode}
_MESSAGE_LIMIT = 1024  # grpc_status_util.cc: longer messages are cut and marked
_TRUNCATED = "...TRUNCATED"

Response = TypeVar("Response")
Handler = Callable[[Any, Any, grpc.aio.ServicerContext], Awaitable[Response]]


def grpc_status(error: ServingError) -> tuple[grpc.StatusCode, str]:
    """TF code 1:1 to gRPC code; messages over 1024 characters truncated like TF Serving."""
    code = _GRPC_CODES.get(int(error.code), grpc.StatusCode.UNKNOWN)
    if code is grpc.StatusCode.OK:  # an error must never look like success
        code = grpc.StatusCode.UNKNOWN
    message = error.message
    if len(message) > _MESSAGE_LIMIT:
        message = message[:_MESSAGE_LIMIT] + _TRUNCATED
    return code, message


def rpc(method: Handler) -> Handler:
    """Wraps a servicer method so every failure ends the call with a status, never a crash.

    It starts the call's :class:`~serving.api.request_context.RequestContext` (request id,
    latency), reading ``metrics`` from the servicer when it has them.

    A ``ServingError`` keeps its code and message; anything else is a server bug, logged with
    its traceback and reported as INTERNAL. Cancellation (``asyncio.CancelledError``) passes.
    """

    @functools.wraps(method)
    async def handler(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Response:
        # The caller's x-request-id (or a new one) joins prediction logs and feedback; its
        # traffic-split routing key (servicers with a ``routing_header``) is read in the same
        # pass over the metadata.
        client_id, routing_key = metadata_values(
            context, request_context.HEADER, getattr(self, "routing_header", None)
        )
        call = request_context.begin("GRPC", client_id, getattr(self, "metrics", None))
        call.routing_key = routing_key
        context.set_trailing_metadata(((request_context.HEADER, call.request_id),))
        try:
            return await method(self, request, context)
        except ServingError as exc:
            log.debug("%s failed: %s", method.__name__, exc.message)
            error = exc
        except Exception as exc:  # a server bug: INTERNAL for the client, traceback in the log
            log.exception("%s failed unexpectedly", method.__name__)
            error = status_error(exc)
        code, message = grpc_status(error)
        await context.abort(code, message)  # raises: ends the call with this status

    return handler


def request_spec(
    request: Any, require_name: bool = True, routing_key: str | None = None
) -> ModelSpec:
    """The request's ``model_spec`` with TF Serving's checks (absent spec, empty name)."""
    if not request.HasField("model_spec"):
        raise invalid_argument("Missing ModelSpec")
    spec = model_spec(request.model_spec, require_name)
    return dataclasses.replace(spec, routing_key=routing_key) if routing_key else spec


def metadata_values(
    context: grpc.aio.ServicerContext, first: str, second: str | None
) -> tuple[str | None, str | None]:
    """Two request metadata entries (keys are lower-case on the wire), the first of each key,
    in one pass over the metadata (``second``: None reads only the first)."""
    found_first = found_second = None
    for key, value in context.invocation_metadata() or ():
        if key == first:
            if found_first is None:
                found_first = value if isinstance(value, str) else value.decode("latin-1")
        elif key == second and found_second is None:
            found_second = value if isinstance(value, str) else value.decode("latin-1")
    return found_first, found_first if second == first else found_second


def model_spec(proto: protos.ModelSpec, require_name: bool = True) -> ModelSpec:
    """ServerCore::ServableRequestFromModelSpec's view of a ModelSpec proto."""
    if require_name and not proto.name:
        raise invalid_argument("ModelSpec has no name specified.")
    choice = proto.WhichOneof("version_choice")
    return ModelSpec(
        name=proto.name,
        version=proto.version.value if choice == "version" else None,
        label=proto.version_label if choice == "version_label" else None,
        signature_name=proto.signature_name,
    )


def set_model_spec(proto: protos.ModelSpec, spec: ResolvedSpec) -> None:
    """A response's ``model_spec``: name, resolved version and resolved signature name."""
    proto.name = spec.name
    proto.version.value = spec.version
    proto.signature_name = spec.signature_name


def timeout_ms(context: grpc.aio.ServicerContext) -> int:
    """The client's remaining deadline as ``RunOptions.timeout_in_ms`` (0: no deadline), passed
    on as it is: how finely to honour it is the servable's business (``Servable.run_async``)."""
    remaining = context.time_remaining()
    if remaining is None:
        return 0
    if remaining <= 0:
        raise ServingError(Code.DEADLINE_EXCEEDED, "Deadline Exceeded")
    return max(1, math.ceil(remaining * 1000.0))
