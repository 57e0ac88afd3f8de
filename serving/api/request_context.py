"""What every API call gets the same way on REST and gRPC: its request id, its latency sample,
and the rule that lets health probes through without a token.

Request ids are taken from ``X-Request-Id`` (REST) / ``x-request-id`` metadata (gRPC), generated
when absent, always returned, and carried to inference observers (the prediction log) through
a context variable so no inference signature has to change. Status counting
(``request_count``) happens in the inference core itself; readiness is
``ServerCore.models_without_available_version`` (``/readyz`` and the gRPC Health service).
"""

from __future__ import annotations

import contextvars
import os
import re
import time
from typing import TYPE_CHECKING

from serving.security.auth import TokenAuthenticator

if TYPE_CHECKING:
    from serving.monitoring.metrics import ServingMetrics

HEADER = "x-request-id"
HEADER_BYTES = HEADER.encode()
_VALID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")

current: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)


def accept(value: str | None) -> str:
    """The client's id when it is a sane token (it ends up in logs and SQL), else a new one."""
    if value and _VALID.fullmatch(value):
        return value
    return os.urandom(16).hex()  # uuid4's randomness without building a UUID object


def bind(value: str | None) -> str:
    """Accepts and binds the id for the current request; returns it for the response."""
    request_id = accept(value)
    current.set(request_id)
    return request_id


# Kubernetes probes on REST and the gRPC health service: exempt from token auth unless
# --auth_protect_health_probes, so kubelet needs no token.
PROBE_PATHS = frozenset({"/healthz", "/readyz"})
GRPC_HEALTH_PREFIX = "/grpc.health.v1.Health/"


def needs_token(authenticator: TokenAuthenticator, target: str) -> bool:
    """Whether a call to ``target`` (a REST path or a gRPC method) must carry a token."""
    if not authenticator.enabled:
        return False
    probe = target in PROBE_PATHS or target.startswith(GRPC_HEALTH_PREFIX)
    return authenticator.protect_probes or not probe


class RequestContext:
    """One API call on a front end (``entrypoint``: REST or GRPC): its id, bound for the
    prediction log, the start of its ``request_latency`` sample, and the traffic-split
    routing key the caller sent (set by the gRPC front end, which reads it with the id)."""

    __slots__ = ("_metrics", "entrypoint", "request_id", "routing_key", "start")

    def __init__(
        self, entrypoint: str, client_request_id: str | None, metrics: ServingMetrics | None
    ) -> None:
        self.entrypoint = entrypoint
        self.request_id = bind(client_request_id)
        self.start = time.perf_counter()
        self._metrics = metrics
        self.routing_key: str | None = None

    def succeeded(self, model: str, api: str) -> None:
        """TF Serving's request_latency{model_name,API,entrypoint}: successful calls only."""
        if self._metrics is not None:
            latency = time.perf_counter() - self.start
            self._metrics.record_request_latency(model, api, self.entrypoint, latency)


_call: contextvars.ContextVar[RequestContext] = contextvars.ContextVar("request_context")


def begin(
    entrypoint: str, client_request_id: str | None, metrics: ServingMetrics | None
) -> RequestContext:
    """Starts the context of the call the current task serves."""
    context = RequestContext(entrypoint, client_request_id, metrics)
    _call.set(context)
    return context


def call() -> RequestContext:
    """The context :func:`begin` started for the current call."""
    return _call.get()
