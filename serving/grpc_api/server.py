"""The ``grpc.aio`` server: listeners, channel arguments and limits from TF Serving's flags.

It runs on the same asyncio loop as the REST server (``serving.server``), so handlers never
block: model calls go to the inference core's thread pool.

Flag mapping:

* ``--port`` -> ``<host>:<port>`` (0 disables TCP); ``--grpc_socket_path`` -> ``unix:<path>``.
* Message size: 2^31 - 1 bytes both ways, TF Serving's ``SetMaxMessageSize(INT32_MAX)``.
* ``--grpc_channel_arguments "k=v,k2=v2"``: server channel arguments, integer-looking values
  passed as ints (as TF Serving does); they may override the message-size defaults.
* ``--grpc_max_threads``: in TF Serving, the sync server's thread quota, i.e. how many RPCs run
  at once. An asyncio server has no RPC threads, so it maps to ``maximum_concurrent_rpcs``:
  calls beyond it fail fast with RESOURCE_EXHAUSTED. Unset (0) means no gRPC-level cap; load is
  still bounded by the inference core, which answers UNAVAILABLE once its queue is full
  (``--max_queued_requests``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import grpc
from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

from serving.api.inference import InferenceService
from serving.core.traffic_split import DEFAULT_ROUTING_HEADER
from serving.grpc_api.auth import TokenAuthInterceptor
from serving.grpc_api.health import ReadinessHealth
from serving.grpc_api.model_service import ModelServicer
from serving.grpc_api.prediction_service import PredictionServicer
from serving.grpc_api.profiler import add_profiler_service
from serving.options import OptionsError, ServerOptions
from serving.security.auth import TokenAuthenticator
from serving.security.ssl_config import TlsSettings

MAX_MESSAGE_BYTES = 2**31 - 1

ChannelArgument = tuple[str, int | str]


def parse_channel_arguments(text: str) -> list[ChannelArgument]:
    """``"k=v,k2=v2"`` -> ``[("k", "v"), ("k2", "v2")]``, integer-looking values as ints."""
    arguments: list[ChannelArgument] = []
    for item in text.split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise OptionsError(
                f"--grpc_channel_arguments: expected comma-separated key=value pairs, got {item!r}"
            )
        try:
            parsed: int | str = int(value)
        except ValueError:
            parsed = value
        arguments.append((key.strip(), parsed))
    return arguments


@dataclass(frozen=True)
class GrpcSecurity:
    """What both front ends share: TLS settings, token checks, the traffic-split header."""

    tls: TlsSettings | None = None
    authenticator: TokenAuthenticator | None = None
    routing_header: str = DEFAULT_ROUTING_HEADER


def server_credentials(tls: TlsSettings) -> grpc.ServerCredentials:
    return grpc.ssl_server_credentials(
        [(tls.server_key, tls.server_cert)],
        root_certificates=tls.custom_ca,
        require_client_auth=tls.client_verify,
    )


def build_grpc_server(
    service: InferenceService,
    options: ServerOptions,
    security: GrpcSecurity | None = None,
    health: ReadinessHealth | None = None,
) -> grpc.aio.Server:
    """PredictionService, ModelService (and Health, ProfilerService) on the configured
    listeners, not started."""
    security = security or GrpcSecurity()
    receive_limit = options.max_request_bytes or MAX_MESSAGE_BYTES
    channel_options: dict[str, int | str] = {
        "grpc.max_receive_message_length": receive_limit,
        "grpc.max_send_message_length": MAX_MESSAGE_BYTES,
    }
    channel_options.update(parse_channel_arguments(options.grpc_channel_arguments))
    authenticator = security.authenticator
    server = grpc.aio.server(
        options=list(channel_options.items()),
        maximum_concurrent_rpcs=options.grpc_max_threads or None,
        interceptors=[TokenAuthInterceptor(authenticator)]
        if authenticator is not None and authenticator.enabled
        else None,
    )
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionServicer(
            service, options.enable_serialization_as_tensor_content, security.routing_header
        ),
        server,
    )
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(service.core), server)
    if health is not None:
        health.add_to_server(server)
    if options.enable_profiler:  # TF Serving's --enable_profiler, default true
        add_profiler_service(server)
    if security.tls is not None:
        credentials = server_credentials(security.tls)
        add_port = functools.partial(server.add_secure_port, server_credentials=credentials)
    else:
        add_port = server.add_insecure_port
    if options.port:
        host = f"[{options.host}]" if ":" in options.host else options.host
        add_port(f"{host}:{options.port}")
    if options.grpc_socket_path:
        add_port(f"unix:{options.grpc_socket_path}")
    return server
