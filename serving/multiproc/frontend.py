"""A front-end process: REST and gRPC on the shared ports, the model in another process.

Started by the supervisor (``serving.multiproc.supervisor``) with the server's own command
line; ``TFX_SERVING_MODEL_SOCKET`` names the model process's socket, ``TFX_SERVING_FRONTEND``
this front end's number and ``TFX_SERVING_READY_FD`` the pipe it reports "listening" on. It
never imports TensorFlow (``tests/unit/test_frontend_process.py`` checks), so it starts in a
fraction of a second and a crash costs no model memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import os
import signal

from serving.core.traffic_split import DEFAULT_ROUTING_HEADER, read_traffic_split
from serving.grpc_api.health import ReadinessHealth
from serving.grpc_api.server import GrpcSecurity, build_grpc_server
from serving.memory import MemoryReturner
from serving.multiproc.protocol import (
    FRONTEND_ENV,
    MODEL_SOCKET_ENV,
    READY_FD_ENV,
    STARTUP_FAILURE,
    arena_bytes,
)
from serving.multiproc.remote import RemoteDataplane
from serving.options import ServerOptions
from serving.request_limits import MemoryLimits, MemoryPool
from serving.rest.app import RestApi, RestOptions
from serving.rest.uvicorn_server import rest_server
from serving.security.auth import TokenAuthenticator, load_tokens
from serving.security.ssl_config import read_ssl_config

log = logging.getLogger(__name__)


class FrontendProcess:
    def __init__(self, options: ServerOptions, index: int, socket_path: str) -> None:
        # One process may own a UNIX socket path; the TCP ports are shared (SO_REUSEPORT).
        # The profiler needs TensorFlow: it stays with the single-process server.
        # The REST connection cap is the server's: each front end takes an equal share.
        self.options = dataclasses.replace(
            options,
            grpc_socket_path=options.grpc_socket_path if index == 0 else "",
            enable_profiler=False,
            rest_api_max_connections=math.ceil(
                options.rest_api_max_connections / max(1, options.frontend_count())
            ),
        )
        self.index = index
        self.tls = read_ssl_config(options.ssl_config_file) if options.ssl_config_file else None
        self.authenticator = TokenAuthenticator(
            load_tokens(options.auth_token_file), options.auth_protect_health_probes
        )
        self.traffic = (
            read_traffic_split(options.traffic_split_config_file)
            if options.traffic_split_config_file
            else None
        )
        self.memory_returner = MemoryReturner()
        self.memory = MemoryPool(
            MemoryLimits(options.max_request_memory_bytes, options.max_total_request_memory_bytes),
            on_release=self.memory_returner.note,
        )
        self.dataplane = RemoteDataplane(
            socket_path, arena_bytes(options.max_total_request_memory_bytes), f"frontend-{index}"
        )

    async def serve(self, ready_fd: int | None) -> int:
        """Serves until SIGTERM; the exit code (``STARTUP_FAILURE`` when a port cannot be
        bound, which the supervisor treats as fatal, like the single-process server)."""
        stopping = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
        if not await self.dataplane.connect(stopping):
            return 0  # stopped before the model process could be reached
        routing_header = self.traffic.routing_header if self.traffic else DEFAULT_ROUTING_HEADER
        try:
            # gRPC first: once the REST port answers (what probes and tests wait for), both do.
            grpc_server, health = await self._start_grpc(routing_header)
        except RuntimeError as exc:  # grpc: "Failed to bind to address"
            log.error("Cannot serve gRPC on %s:%d: %s", self.options.host, self.options.port, exc)
            return STARTUP_FAILURE
        rest, rest_task = await self._start_rest(routing_header)
        if rest_task is not None and rest_task.done():  # uvicorn could not bind: it exited
            return STARTUP_FAILURE
        log.info("Front end %d serving", self.index)
        if ready_fd is not None:
            os.write(ready_fd, b"1")
            os.close(ready_fd)
        await stopping.wait()
        log.info("Front end %d stopping: finishing in-flight requests", self.index)
        if rest is not None:
            rest.should_exit = True
        if grpc_server is not None:
            if health is not None:
                await health.stop()
            await grpc_server.stop(grace=30)
        if rest_task is not None:
            await rest_task
        self.dataplane.close()
        self.memory_returner.stop()
        return 0

    async def _start_grpc(self, routing_header: str):
        if not self.options.port and not self.options.grpc_socket_path:
            return None, None
        health = (
            ReadinessHealth(self.dataplane)
            if self.options.enable_grpc_healthcheck_service
            else None
        )
        security = GrpcSecurity(self.tls, self.authenticator, routing_header)
        server = build_grpc_server(self.dataplane, self.options, security, health, self.memory)
        await server.start()
        if health is not None:
            await health.refresh()
            health.start()
        return server, health

    async def _start_rest(self, routing_header: str):
        if not self.options.rest_api_port:
            return None, None
        app = RestApi(
            self.dataplane,
            RestOptions(
                timeout_ms=self.options.rest_api_timeout_in_ms,
                enable_cors=self.options.rest_api_enable_cors_support,
                max_request_bytes=self.options.max_request_bytes,
                authenticator=self.authenticator,
                routing_header=routing_header.encode(),
                extra_routes=self.dataplane.extra_routes(),
                memory=self.memory,
            ),
        )
        rest = rest_server(app, self.options, self.tls, reuse_port=True)
        task = asyncio.create_task(_serve_rest(rest))
        while not rest.started and not task.done():
            await asyncio.sleep(0.01)
        return rest, task


async def _serve_rest(rest) -> None:
    """uvicorn exits the process (``sys.exit``) when it cannot bind; here that ends the task."""
    with contextlib.suppress(SystemExit):
        await rest.serve()


def main() -> int:
    from serving.cli import process_entry

    return process_entry(_run, role=f"frontend-{os.environ.get(FRONTEND_ENV, '?')}")


def _run(options: ServerOptions) -> int:
    from serving.event_loop import run_event_loop

    index = int(os.environ[FRONTEND_ENV])
    ready = os.environ.get(READY_FD_ENV)
    frontend = FrontendProcess(options, index, os.environ[MODEL_SOCKET_ENV])
    codes: list[int] = []

    async def serve() -> None:
        codes.append(await frontend.serve(int(ready) if ready else None))

    run_event_loop(serve())
    return codes[0] if codes else 1


if __name__ == "__main__":
    main()
