"""What the REST and gRPC front ends take from the flags, however the server is split.

The single-process server (``serving.server``) and each front-end process
(``serving.multiproc.frontend``) build their front ends from the same settings: TLS, bearer
tokens, the traffic split's routing header, and one request-memory account shared by both
front ends of a process (``serving.request_limits``; a request that held much of it hands the
freed memory back to the OS, ``serving.memory``).
"""

from __future__ import annotations

import logging

from serving.api.types import Dataplane
from serving.core.traffic_split import (
    DEFAULT_ROUTING_HEADER,
    TrafficSplitConfig,
    read_traffic_split,
)
from serving.grpc_api.server import GrpcSecurity
from serving.memory import MemoryReturner
from serving.options import ServerOptions
from serving.request_limits import MemoryLimits, MemoryPool
from serving.rest.app import ExtraRoute, RestApi, RestOptions
from serving.security.auth import TokenAuthenticator, load_tokens
from serving.security.ssl_config import TlsSettings, read_ssl_config

log = logging.getLogger(__name__)


class FrontendSetup:
    def __init__(self, options: ServerOptions) -> None:
        self.options = options
        self.tls: TlsSettings | None = (
            read_ssl_config(options.ssl_config_file) if options.ssl_config_file else None
        )
        self.authenticator = TokenAuthenticator(
            load_tokens(options.auth_token_file), options.auth_protect_health_probes
        )
        self.traffic: TrafficSplitConfig | None = (
            read_traffic_split(options.traffic_split_config_file)
            if options.traffic_split_config_file
            else None
        )
        self.memory_returner = MemoryReturner()
        self.memory = MemoryPool(
            MemoryLimits(options.max_request_memory_bytes, options.max_total_request_memory_bytes),
            on_release=self.memory_returner.note,
        )

    @property
    def routing_header(self) -> str:
        return self.traffic.routing_header if self.traffic else DEFAULT_ROUTING_HEADER

    def rest_app(self, dataplane: Dataplane, extra_routes: tuple[ExtraRoute, ...]) -> RestApi:
        return RestApi(
            dataplane,
            RestOptions(
                timeout_ms=self.options.rest_api_timeout_in_ms,
                enable_cors=self.options.rest_api_enable_cors_support,
                max_request_bytes=self.options.max_request_bytes,
                authenticator=self.authenticator,
                routing_header=self.routing_header.encode(),
                extra_routes=extra_routes,
                memory=self.memory,
            ),
        )

    def grpc_security(self) -> GrpcSecurity:
        return GrpcSecurity(self.tls, self.authenticator, self.routing_header)

    def log_grpc_listening(self) -> None:
        """TF Serving's own start-up lines: scripts and log alerts wait for them."""
        log.info(
            "Running gRPC ModelServer at %s:%d%s ...",
            self.options.host,
            self.options.port,
            " (TLS)" if self.tls else "",
        )

    def log_rest_listening(self) -> None:
        log.info(
            "Exporting HTTP/REST API at:%s:%d ...", self.options.host, self.options.rest_api_port
        )

    def stop(self) -> None:
        self.memory_returner.stop()
