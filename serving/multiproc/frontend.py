"""A front-end process: REST and gRPC on the shared ports, the model in another process.

Started by the supervisor (``serving.multiproc.supervisor``) with the server's own command
line; ``TFX_SERVING_MODEL_SOCKET`` names the model process's socket, ``TFX_SERVING_FRONTEND``
this front end's number and ``TFX_SERVING_READY_FD`` the pipe it reports "listening" on. It
never imports TensorFlow (``tests/unit/test_frontend_imports.py`` checks): a crash costs no
model memory, and it starts on about 0.6 s of CPU, most of it importing numpy, uvicorn and
grpc (``benchmarks.frontends --parts restart`` measures spawn to serving).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import os
import signal

from serving.frontend_setup import FrontendSetup
from serving.grpc_api.health import ReadinessHealth
from serving.grpc_api.server import build_grpc_server
from serving.multiproc.protocol import (
    FRONTEND_ENV,
    MODEL_SOCKET_ENV,
    READY_FD_ENV,
    STARTUP_FAILURE,
    arena_bytes,
)
from serving.multiproc.remote import RemoteDataplane
from serving.options import ServerOptions
from serving.rest.uvicorn_server import rest_server

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
        self.setup = FrontendSetup(self.options)
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
        try:
            # gRPC first: once the REST port answers (what probes and tests wait for), both do.
            grpc_server, health = await self._start_grpc()
        except RuntimeError as exc:  # grpc: "Failed to bind to address"
            log.error("Cannot serve gRPC on %s:%d: %s", self.options.host, self.options.port, exc)
            return STARTUP_FAILURE
        rest, rest_task = await self._start_rest()
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
        self.setup.stop()
        return 0

    async def _start_grpc(self):
        if not self.options.port and not self.options.grpc_socket_path:
            return None, None
        health = (
            ReadinessHealth(self.dataplane)
            if self.options.enable_grpc_healthcheck_service
            else None
        )
        security = self.setup.grpc_security()
        server = build_grpc_server(
            self.dataplane, self.options, security, health, self.setup.memory
        )
        await server.start()
        if health is not None:
            await health.refresh()
            health.start()
        self.setup.log_grpc_listening()
        return server, health

    async def _start_rest(self):
        if not self.options.rest_api_port:
            return None, None
        app = self.setup.rest_app(self.dataplane, self.dataplane.extra_routes())
        rest = rest_server(app, self.options, self.setup.tls, reuse_port=True)
        task = asyncio.create_task(_serve_rest(rest))
        while not rest.started and not task.done():
            await asyncio.sleep(0.01)
        if rest.started:
            self.setup.log_rest_listening()
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
