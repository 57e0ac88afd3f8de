"""The REST listener: uvicorn serving ``RestApi`` on this server's own accept loop.

Shared by the single-process server and the front-end processes (which pass ``reuse_port`` to
share the port); imports no TensorFlow.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import shutil
import ssl
import sys
import tempfile
from contextlib import contextmanager

import uvicorn

from serving.options import ServerOptions
from serving.rest.connection import ConnectionLimits, protocol_factory
from serving.rest.listener import RestListener, bind_sockets, connection_limit
from serving.security.ssl_config import TlsSettings, write_pem_files

log = logging.getLogger(__name__)


class RestServer(uvicorn.Server):
    """uvicorn without its own signal handling (the model server owns SIGTERM/SIGINT) and with
    its own listener (``serving.rest.listener``: fair accepts, a cap on open connections)."""

    def __init__(self, config: uvicorn.Config, max_connections: int, reuse_port: bool) -> None:
        super().__init__(config)
        self.max_connections = max_connections
        self.reuse_port = reuse_port

    @contextmanager
    def capture_signals(self):
        yield

    async def startup(self, sockets=None) -> None:
        """uvicorn's own startup minus ``loop.create_server``: the same protocol factory and
        server state, so uvicorn's graceful shutdown drains these connections as its own."""
        await self.lifespan.startup()
        config = self.config

        def create_protocol() -> asyncio.Protocol:
            return config.http_protocol_class(
                config=config, server_state=self.server_state, app_state=self.lifespan.state
            )

        try:
            listening = bind_sockets(config.host, config.port, config.backlog, self.reuse_port)
        except OSError as exc:  # e.g. the port is taken: fail the start, as uvicorn does
            log.error("Cannot listen on %s:%d for REST: %s", config.host, config.port, exc)
            await self.lifespan.shutdown()
            sys.exit(uvicorn.server.STARTUP_FAILURE)
        connections = self.server_state.connections
        self.servers = [
            RestListener(
                listening,
                create_protocol,
                connections.__len__,
                self.max_connections,
                config.ssl,
            )
        ]
        self.started = True


def rest_server(
    app: object, options: ServerOptions, tls: TlsSettings | None, reuse_port: bool = False
) -> RestServer:
    """uvicorn configured from the server's flags (deadlines, limits, TLS), not started."""
    return RestServer(
        uvicorn.Config(
            app,
            host=options.host,
            port=options.rest_api_port,
            http=protocol_factory(
                ConnectionLimits(
                    options.rest_api_header_timeout_in_ms / 1000,
                    options.rest_api_body_timeout_in_ms / 1000,
                    options.rest_api_max_header_bytes,
                )
            ),
            timeout_keep_alive=options.rest_api_keep_alive_timeout_in_ms / 1000,
            loop="none",
            lifespan="off",
            ws="none",  # TF Serving's REST API has no WebSocket; nor does importing it cost
            log_level="warning",
            access_log=False,
            proxy_headers=False,  # nothing reads the client address; saves a hop
            timeout_graceful_shutdown=30,
            **_tls_arguments(tls),
        ),
        connection_limit(options.rest_api_max_connections),
        reuse_port,
    )


def _tls_arguments(tls: TlsSettings | None) -> dict:
    """uvicorn's TLS settings (it reads files, so the PEM contents go to a private dir)."""
    if tls is None:
        return {}
    private = tempfile.mkdtemp(prefix="tfx-model-server-tls-")
    atexit.register(shutil.rmtree, private, ignore_errors=True)
    files = write_pem_files(tls, private)
    return {
        "ssl_keyfile": files.key,
        "ssl_certfile": files.cert,
        "ssl_ca_certs": files.ca,
        "ssl_cert_reqs": ssl.CERT_REQUIRED if tls.client_verify else ssl.CERT_NONE,
    }
