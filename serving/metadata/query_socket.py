"""The worker's lineage query endpoint: one JSON line in, one JSON line out, on a UNIX socket.

The model server's REST lineage routes forward here instead of opening MLMD themselves, which
keeps MLMD (and its GIL-holding waits) out of the serving process entirely.
"""

from __future__ import annotations

import json
import logging
import os
import socketserver
import threading
from typing import Any

from serving.metadata.config import ConnectionSpec
from serving.metadata.mlmd_lineage import MlmdLineage
from serving.metadata.mlmd_store import connect

log = logging.getLogger(__name__)


def answer(lineage: MlmdLineage, request: dict[str, Any]) -> Any:
    op = request.get("op")
    if op == "version":
        return lineage.version_lineage(request["model"], str(request["version"]))
    if op == "versions":
        return lineage.served_versions(request["model"])
    if op == "server":
        return lineage.server_history(request["server_id"])
    if op == "diff":
        return lineage.version_diff(request["model"], str(request["first"]), str(request["second"]))
    raise ValueError(f"Unknown lineage query {op!r}; use version, versions, server or diff")


class QueryServer:
    def __init__(self, path: str, spec: ConnectionSpec) -> None:
        self._path = path
        self._spec = spec
        self._lineage: MlmdLineage | None = None
        self._lock = threading.Lock()  # one MLMD connection, one query at a time
        if os.path.exists(path):
            os.unlink(path)
        outer = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                line = self.rfile.readline()
                self.wfile.write(json.dumps(outer.handle(line), default=str).encode() + b"\n")

        self._server = socketserver.ThreadingUnixStreamServer(path, Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def handle(self, line: bytes) -> dict[str, Any]:
        try:
            request = json.loads(line)
        except ValueError as exc:
            return {"ok": False, "code": "INVALID_ARGUMENT", "error": f"Bad query: {exc}"}
        with self._lock:
            try:
                if self._lineage is None:
                    self._lineage = MlmdLineage(connect(self._spec, attempts=1))
                return {"ok": True, "result": answer(self._lineage, request)}
            except LookupError as exc:
                return {"ok": False, "code": "NOT_FOUND", "error": str(exc).strip("'\"")}
            except (KeyError, ValueError) as exc:
                return {"ok": False, "code": "INVALID_ARGUMENT", "error": f"Bad query: {exc}"}
            except Exception as exc:  # outage: reconnect on the next query
                self._lineage = None
                log.warning("Lineage query failed: %s: %s", type(exc).__name__, exc)
                return {
                    "ok": False,
                    "code": "UNAVAILABLE",
                    "error": f"Metadata store {self._spec.describe()} unavailable: {exc}",
                }

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if os.path.exists(self._path):
            os.unlink(self._path)
