"""``grpc.health.v1.Health`` kept in step with model readiness (TF Serving lacks it: #1754).

The overall service ("") and both API services report SERVING once every configured model
has an AVAILABLE version, NOT_SERVING before that — the gRPC twin of REST's ``/readyz``.
Service names are given fully qualified and, as TF Serving's optional health service names
them, unqualified.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import health, health_pb2

from serving.grpc_api.wire import service_handler
from serving.request_limits import MemoryPool

if TYPE_CHECKING:
    from serving.api.types import Dataplane

SERVICE_NAMES = (
    "",
    "tensorflow.serving.PredictionService",
    "tensorflow.serving.ModelService",
    "PredictionService",
    "ModelService",
)
_REFRESH_SECONDS = 1.0


class ReadinessHealth:
    def __init__(self, dataplane: Dataplane) -> None:
        self._dataplane = dataplane
        self.servicer = health.aio.HealthServicer()
        self._task: asyncio.Task | None = None

    def handler(self, memory: MemoryPool) -> grpc.GenericRpcHandler:
        """On raw bytes like the API services, so a malformed probe is INVALID_ARGUMENT."""
        return service_handler(
            self.servicer, health_pb2.DESCRIPTOR.services_by_name["Health"], memory
        )

    async def refresh(self) -> None:
        ready = not self._dataplane.models_without_available_version()
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if ready
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in SERVICE_NAMES:
            await self.servicer.set(name, status)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            await self.refresh()
            await asyncio.sleep(_REFRESH_SECONDS)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        await self.servicer.enter_graceful_shutdown()
