"""Services registered on raw request bytes: this module, not grpc, parses each request.

With the generated ``add_*Servicer_to_server`` helpers, grpc deserializes a request before any
of our code runs, and bytes that do not parse end the call with UNKNOWN ("Exception
deserializing request!"). Registered here instead, under the same generated service and
method names (real clients notice no difference), every handler receives the message bytes and:

* charges them to the request's memory budget before parsing (twice: the bytes and the parsed
  message; :mod:`serving.request_limits`), and keeps that budget bound while the method runs;
* parses them, answering INVALID_ARGUMENT naming the expected message when they do not parse
  — what TF Serving's REST API says of a body that does not parse, and what a client can act on.

Interceptors (bearer-token auth) run before the handler, so a rejected call is never parsed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf import message, symbol_database
from google.protobuf.descriptor import Descriptor, MethodDescriptor, ServiceDescriptor

from serving import protos
from serving.errors import ServingError, invalid_argument
from serving.grpc_api import grpc_status
from serving.request_limits import MemoryPool

Behavior = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]


def service_handler(
    servicer: object, service: ServiceDescriptor, memory: MemoryPool
) -> grpc.GenericRpcHandler:
    """``servicer``'s methods for every method of ``service`` (unary or server streaming, as
    generated) on raw bytes, to register on each of a process's gRPC servers."""
    handlers = {
        method.name: raw_handler(
            getattr(servicer, method.name),
            _message_class(method.input_type),
            _message_class(method.output_type),
            memory,
            streaming=_server_streaming(method),
        )
        for method in service.methods
    }
    return grpc.method_handlers_generic_handler(service.full_name, handlers)


def raw_handler(
    behavior: Behavior,
    request_type: type[message.Message],
    response_type: type[message.Message],
    memory: MemoryPool,
    streaming: bool = False,
) -> grpc.RpcMethodHandler:
    """A handler that parses the request itself (for services whose messages are not in the
    default pool, such as the profiler's) and calls ``behavior(request, context)``."""
    if streaming:
        kind = grpc.unary_stream_rpc_method_handler
    else:
        kind = grpc.unary_unary_rpc_method_handler
    return kind(
        _parsing(behavior, request_type, memory),
        response_serializer=_serializer(response_type),
    )


def _serializer(response_type: type[message.Message]) -> Callable[[Any], bytes]:
    """Serializes a response message; a method that wrote its response as bytes already
    (Predict: ``prediction_service.predict_response``) returns those bytes as they are."""
    serialize = response_type.SerializeToString

    def serialize_response(response: Any) -> bytes:
        return response if type(response) is bytes else serialize(response)

    return serialize_response


def _message_class(descriptor: Descriptor) -> type[message.Message]:
    """The class of a method's message in the service's own pool: ``serving.protos``' for TF
    Serving's services (no TensorFlow), the generated module's for grpc's Health service."""
    if descriptor.file.pool is protos.POOL:
        return protos.message_type(descriptor.full_name)
    return symbol_database.Default().GetSymbol(descriptor.full_name)


def _server_streaming(method: MethodDescriptor) -> bool:
    if method.client_streaming:
        raise ValueError(f"{method.full_name}: client streaming is not served on raw bytes")
    return method.server_streaming


def _parsing(method: Behavior, request_type: type[message.Message], memory: MemoryPool) -> Behavior:
    name = request_type.DESCRIPTOR.full_name

    async def call(data: bytes, context: grpc.aio.ServicerContext) -> Any:
        with memory.request() as budget:
            try:
                budget.charge(2 * len(data), lambda: f"the {name} message ({len(data)} bytes)")
                request = parse(data, request_type)
            except ServingError as error:
                await context.abort(*grpc_status(error))  # raises: ends the call
            return await method(request, context)

    return call


def parse(data: bytes, request_type: type[message.Message]) -> message.Message:
    """``request_type`` from ``data``, or INVALID_ARGUMENT naming the message expected."""
    try:
        return request_type.FromString(data)
    except message.DecodeError as error:
        raise invalid_argument(
            f"The request is not a valid {request_type.DESCRIPTOR.full_name} message "
            f"({len(data)} bytes): {error}"
        ) from None
