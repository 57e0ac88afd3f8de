"""The ``grpc.aio`` server: listeners, channel arguments and limits from TF Serving's flags.

It runs on the same asyncio loop as the REST server (``serving.server``), so handlers never
block: model calls go to the inference core's thread pool.

Flag mapping:

* ``--port`` -> ``<host>:<port>`` (0 disables TCP); ``--grpc_socket_path`` -> ``unix:<path>``.
* Message size: 2^31 - 1 bytes both ways, TF Serving's ``SetMaxMessageSize(INT32_MAX)``.
* Connection hygiene (:data:`CONNECTION_DEFAULTS`; TF Serving keeps grpc's defaults): peers that
  vanish mid-call are found by keepalive pings, idle connections are closed after 5 minutes and
  every connection is replaced after 30 (its calls get 5 more minutes), a connection that has
  not finished its HTTP/2 (and TLS) handshake after 20 s is dropped, and one connection may
  carry at most 100 concurrent calls (grpc's default is unbounded).
* ``--grpc_channel_arguments "k=v,k2=v2"``: server channel arguments, integer-looking values
  passed as ints (as TF Serving does); they may override any of the defaults above.
* ``--grpc_max_threads``: in TF Serving, the sync server's thread quota, i.e. how many RPCs run
  at once. An asyncio server has no RPC threads, so it maps to ``maximum_concurrent_rpcs``:
  calls beyond it fail fast with RESOURCE_EXHAUSTED. Unset (0) means no gRPC-level cap; load is
  still bounded by the inference core, which answers UNAVAILABLE once its queue is full
  (``--max_queued_requests``).
* ``--grpc_listeners`` (ours; default 16): how many ``grpc.aio`` servers share ``--port`` in
  each process (:class:`GrpcServer` says why).
* ``--grpc_poller_batch_scheduling`` (ours; default true): grpc.aio's poller thread runs as
  ``SCHED_BATCH`` (``serving.grpc_api.completion_poller`` says why).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Mapping
from dataclasses import dataclass

import grpc

from serving import protos
from serving.api.types import Dataplane
from serving.core.traffic_split import DEFAULT_ROUTING_HEADER
from serving.grpc_api.auth import TokenAuthInterceptor
from serving.grpc_api.completion_poller import batch_schedule_poller
from serving.grpc_api.health import ReadinessHealth
from serving.grpc_api.model_service import ModelServicer
from serving.grpc_api.prediction_service import PredictionServicer
from serving.grpc_api.profiler import profiler_handler
from serving.grpc_api.wire import service_handler
from serving.options import OptionsError, ServerOptions
from serving.request_limits import MemoryLimits, MemoryPool
from serving.security.auth import TokenAuthenticator
from serving.security.ssl_config import TlsSettings

MAX_MESSAGE_BYTES = 2**31 - 1
CONNECTION_DEFAULTS: dict[str, int] = {
    # A ping after 60 s without traffic on a connection with calls in progress; no answer
    # within 20 s closes it (a peer gone without a FIN would otherwise hold its calls forever).
    "grpc.keepalive_time_ms": 60_000,
    "grpc.keepalive_timeout_ms": 20_000,
    "grpc.max_connection_idle_ms": 5 * 60_000,
    # Bounds how long any connection lives, including one that sent half a message and
    # stalls (keepalive pings cannot tell that from a slow client); grpc adds +-10% jitter.
    "grpc.max_connection_age_ms": 30 * 60_000,
    "grpc.max_connection_age_grace_ms": 5 * 60_000,
    "grpc.server_handshake_timeout_ms": 20_000,
    "grpc.max_concurrent_streams": 100,
}

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


def channel_options(options: ServerOptions) -> dict[str, int | str]:
    """The server's channel arguments: message limits, connection hygiene, then the user's."""
    arguments: dict[str, int | str] = {
        "grpc.max_receive_message_length": options.max_request_bytes or MAX_MESSAGE_BYTES,
        "grpc.max_send_message_length": MAX_MESSAGE_BYTES,
        **CONNECTION_DEFAULTS,
    }
    arguments.update(parse_channel_arguments(options.grpc_channel_arguments))
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


class GrpcServer:
    """The ``grpc.aio`` servers of one process, all serving the same services on ``--port``.

    Why several: a ``grpc.aio`` server takes in one new call at a time -- it asks gRPC core
    for the next call only once the event loop has handled the last one (grpc/grpc#43436 is
    the upstream change) -- so a busy loop admits about one call per pass, each joins a batch
    of its own and gRPC batches stay near one row. Servers bound to one port with
    ``SO_REUSEPORT`` (gRPC's default on Linux) each have such a call waiting: the kernel
    spreads connections over them, and one loop pass takes in a call from each. TF Serving's
    C++ server needs none of this: it polls completion queues from many threads.
    """

    def __init__(self, servers: list[grpc.aio.Server], batch_poller: bool = True) -> None:
        self.servers = servers
        self._batch_poller = batch_poller

    async def start(self) -> None:
        for server in self.servers:
            await server.start()
        if self._batch_poller:  # the thread exists once a grpc.aio server does
            batch_schedule_poller()

    async def stop(self, grace: float | None) -> None:
        await asyncio.gather(*(server.stop(grace) for server in self.servers))


def listener_count(options: ServerOptions, arguments: Mapping[str, int | str]) -> int:
    """How many servers share ``--port``: ``--grpc_listeners``, but one where several would
    change what the user asked for -- ``--grpc_max_threads`` is each server's own cap, and
    ``grpc.so_reuseport=0`` makes a second bind of the port fail -- or have nothing to share
    (no TCP port)."""
    if not options.port or options.grpc_max_threads or not arguments.get("grpc.so_reuseport", 1):
        return 1
    return options.grpc_listeners


def build_grpc_server(
    service: Dataplane,
    options: ServerOptions,
    security: GrpcSecurity | None = None,
    health: ReadinessHealth | None = None,
    memory: MemoryPool | None = None,
) -> GrpcServer:
    """PredictionService, ModelService (and Health, ProfilerService) on the configured
    listeners, not started.

    ``memory`` is the request-memory account shared with the REST front end (a private one
    from ``options`` when not given)."""
    security = security or GrpcSecurity()
    memory = memory or MemoryPool(
        MemoryLimits(options.max_request_memory_bytes, options.max_total_request_memory_bytes)
    )
    handlers = [
        service_handler(
            PredictionServicer(
                service, options.enable_serialization_as_tensor_content, security.routing_header
            ),
            protos.service("tensorflow.serving.PredictionService"),
            memory,
        ),
        service_handler(
            ModelServicer(service), protos.service("tensorflow.serving.ModelService"), memory
        ),
    ]
    if health is not None:
        handlers.append(health.handler(memory))
    if options.enable_profiler:  # TF Serving's --enable_profiler, default true
        handlers.append(profiler_handler(memory))
    arguments = channel_options(options)
    authenticator = security.authenticator
    interceptors = (
        [TokenAuthInterceptor(authenticator)]
        if authenticator is not None and authenticator.enabled
        else None
    )
    credentials = server_credentials(security.tls) if security.tls is not None else None
    host = f"[{options.host}]" if ":" in options.host else options.host
    servers = []
    for index in range(listener_count(options, arguments)):
        server = grpc.aio.server(
            options=list(arguments.items()),
            maximum_concurrent_rpcs=options.grpc_max_threads or None,
            interceptors=interceptors,
        )
        server.add_generic_rpc_handlers(handlers)
        if credentials is not None:
            add_port = functools.partial(server.add_secure_port, server_credentials=credentials)
        else:
            add_port = server.add_insecure_port
        if options.port:
            add_port(f"{host}:{options.port}")
        if options.grpc_socket_path and not index:  # a path binds once
            add_port(f"unix:{options.grpc_socket_path}")
        servers.append(server)
    return GrpcServer(servers, options.grpc_poller_batch_scheduling)
