"""The model process of a multi-process server: the single-process server minus its ports.

It loads, warms up, batches and reports exactly as ``serving.server.ModelServer`` does (it is
one); instead of opening REST and gRPC ports it serves the front-end processes on a UNIX socket
(``serving.multiproc.host``), which appears once the initial loads are done.
"""

from __future__ import annotations

import os

from serving.multiproc.protocol import MODEL_SOCKET_ENV, arena_bytes
from serving.options import ServerOptions


def _run(options: ServerOptions) -> int:
    from serving.multiproc.host import DataplaneHost
    from serving.server import ModelServer

    socket_path = os.environ[MODEL_SOCKET_ENV]

    async def serve_frontends(server: ModelServer):
        host = DataplaneHost(
            server, socket_path, arena_bytes(options.max_total_request_memory_bytes)
        )
        await host.start()
        return host.stop

    return ModelServer(options, frontends=serve_frontends).run()


def main() -> None:
    from serving.cli import process_entry

    process_entry(_run, role="model")


if __name__ == "__main__":
    main()
