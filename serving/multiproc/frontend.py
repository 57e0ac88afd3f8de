"""A front-end process: REST and gRPC on the shared ports, the model in another process.

Started by the supervisor (``serving.multiproc.supervisor``) with the server's own command
line; ``TFX_SERVING_MODEL_SOCKET`` names the model process's socket, ``TFX_SERVING_READY_FD``
the pipe it reports on and ``TFX_SERVING_SLOT_FD`` the pipe its slot number comes on. It
never imports TensorFlow (``tests/unit/test_frontend_imports.py`` checks): a crash costs no
model memory. Most of its start is importing numpy, uvicorn and grpc (about 0.6 s of CPU,
``benchmarks.frontends --parts restart``), so every front-end process starts as a spare: it
imports everything, says so on its ready pipe and waits -- no port bound, no model
connection, no thread serving -- until the supervisor writes the slot it is to fill. Only
then does it read the files a front end reads (TLS, tokens, the traffic split), bind the
ports, connect and say it listens. The supervisor gives a slot at once to a process it has
just started, or, when a front end died, to the spare it keeps waiting (``--frontend_spare``),
so the dead one's replacement serves in milliseconds rather than after the imports.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import logging
import math
import os
import signal
import time

from serving.frontend_setup import FrontendSetup
from serving.grpc_api.health import ReadinessHealth
from serving.grpc_api.server import build_grpc_server
from serving.multiproc.protocol import (
    LISTENING,
    MODEL_SOCKET_ENV,
    READY_FD_ENV,
    READY_FOR_SLOT,
    SLOT_FD_ENV,
    SPARE_NAME,
    STARTUP_FAILURE,
    arena_bytes,
    frontend_name,
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
            socket_path, arena_bytes(options.max_total_request_memory_bytes), frontend_name(index)
        )

    async def serve(self, ready_fd: int, sigterm: Sigterm) -> int:
        """Serves until SIGTERM (also one that came before the loop handled it); the exit
        code (``STARTUP_FAILURE`` when a port cannot be bound, which the supervisor treats as
        fatal, like the single-process server)."""
        stopping = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
        if sigterm.seen:
            stopping.set()
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
        os.write(ready_fd, LISTENING)  # kept open: the supervisor sees this process end by it
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


class _Stopped(Exception):
    """SIGTERM while waiting for a slot."""


class Sigterm:
    """SIGTERM before the event loop takes it over: it ends the wait for a slot; after the
    slot came, it is remembered and the front end stops as soon as its loop runs (exit 0,
    as a front end stopped while serving)."""

    def __init__(self) -> None:
        self.seen = False
        self.waiting = True

    def __call__(self, signum: int, frame) -> None:
        self.seen = True
        if self.waiting:
            raise _Stopped


def _name_process(name: str) -> None:
    """``/proc/<pid>/comm`` (what ``ps`` and ``top`` show, what tests and the benchmark tell
    a spare from a serving front end by): ``PR_SET_NAME``."""
    ctypes.CDLL(None).prctl(_PR_SET_NAME, name.encode()[:15], 0, 0, 0)


_PR_SET_NAME = 15


def _seconds_since_start() -> float:
    """Since this process was forked (``starttime`` in /proc/self/stat, clock ticks after
    boot), so the time before the interpreter ran counts too."""
    with open("/proc/self/stat") as stat:
        ticks = int(stat.read().rsplit(")", 1)[1].split()[19])
    return time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK")


def wait_for_slot(slot_fd: int, ready_fd: int, sigterm: Sigterm) -> int | None:
    """Reports the imports done, then blocks until the supervisor writes a slot number; None
    if it closed the pipe (stopping, or gone: ``PR_SET_PDEATHSIG`` ends this process then
    anyway) or sent SIGTERM first. Nothing runs meanwhile but the allocator's and BLAS's idle
    threads: no port, no connection, no event loop."""
    from serving import event_loop

    event_loop.prepare()  # uvloop: imported here, not at activation
    signal.signal(signal.SIGTERM, sigterm)
    try:
        _name_process(SPARE_NAME)
        log.info(
            "Imports done %.2f s after start (%.2f s of CPU); waiting for a front-end slot",
            _seconds_since_start(),
            time.process_time(),
        )
        os.write(ready_fd, READY_FOR_SLOT)
        line = b""
        while not line.endswith(b"\n"):
            chunk = os.read(slot_fd, 16)
            if not chunk:
                return None
            line += chunk
        return int(line)
    except _Stopped:
        return None
    finally:
        sigterm.waiting = False
        os.close(slot_fd)


def main() -> int:
    from serving.cli import process_entry

    return process_entry(_run, role=SPARE_NAME)


def _run(options: ServerOptions) -> int:
    from serving.cli import set_log_role
    from serving.event_loop import run_event_loop

    ready = int(os.environ[READY_FD_ENV])
    sigterm = Sigterm()
    index = wait_for_slot(int(os.environ[SLOT_FD_ENV]), ready, sigterm)
    if index is None:
        return 0
    _name_process(frontend_name(index))
    set_log_role(frontend_name(index))
    frontend = FrontendProcess(options, index, os.environ[MODEL_SOCKET_ENV])
    codes: list[int] = []

    async def serve() -> None:
        codes.append(await frontend.serve(ready, sigterm))

    run_event_loop(serve())
    return codes[0] if codes else 1


if __name__ == "__main__":
    main()
