"""The serving side of metadata reporting: state changes -> spool, and the worker's lifecycle.

``on_state_change`` runs inside the model manager (under its lock), so it only appends a small
row to the local spool; the worker process started here does everything MLMD. If the worker
dies it is restarted; if MLMD is down the spool grows (bounded) and is delivered later.

A heartbeat every ``heartbeat_seconds`` says "this server is alive" (one queued report at most:
a newer beat replaces an undelivered one). Readers call a RUNNING load *stale* when metadata has
heard nothing from its server for ``STALE_AFTER_BEATS`` intervals, so a server that died
without restarting no longer looks live (only a restart of the same server id closes its
records, see ``record_server_started``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import platform
import posixpath
import socket
import subprocess
import sys
import threading
import time
from typing import Any

from serving.core.model_manager import State, VersionRecord
from serving.metadata import reports
from serving.metadata.config import PASSWORD_ENV, ConnectionSpec
from serving.metadata.prediction_index import VersionMetrics
from serving.metadata.spool import Spool
from serving.version import __version__

log = logging.getLogger(__name__)

QUERY_SOCKET = "lineage.sock"
DEFAULT_HEARTBEAT_SECONDS = 30.0
_WATCH_SECONDS = 2.0


def _now_ms() -> float:
    return time.time() * 1000.0


def runtime_version() -> str:
    """This server's version and the stack it runs on (Python and TensorFlow), so lineage says
    which of the two stacks (docs/stacks.md) served a version."""
    import tensorflow as tf  # already loaded by the servables

    return (
        f"tfx-model-server {__version__} "
        f"(Python {platform.python_version()}, TensorFlow {tf.__version__})"
    )


class MetadataReporter:
    def __init__(
        self,
        spool_dir: str,
        connection: ConnectionSpec,
        server_id: str,
        device: str,
        spool_max_reports: int,
        heartbeat_seconds: float = DEFAULT_HEARTBEAT_SECONDS,
        worker_python: str = sys.executable,
    ) -> None:
        if heartbeat_seconds <= 0:
            raise ValueError(f"heartbeat_seconds must be > 0, got {heartbeat_seconds}")
        self.spool = Spool(spool_dir, spool_max_reports)
        self.server_id = server_id
        self.heartbeat_seconds = heartbeat_seconds
        self._connection = connection
        self._device = device
        self._hostname = socket.gethostname()
        self._lock = threading.Lock()
        self._loading: dict[tuple[str, int], float] = {}
        self._episodes: dict[tuple[str, int], str] = {}
        self._worker_python = worker_python
        self._worker: subprocess.Popen | None = None
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        # A UNIX socket path is limited to ~107 bytes; the spool dir may be deep.
        self.query_socket = os.path.join(spool_dir, QUERY_SOCKET)
        if len(self.query_socket) > 100:
            self.query_socket = os.path.join("/tmp", f"tfx-serving-lineage-{os.getpid()}.sock")

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Reports the server start (which cancels episodes a crash left RUNNING) first, so it
        is ordered before this run's loads, then starts the worker."""
        started = _now_ms()
        self.spool.append(
            reports.SERVER_STARTED,
            f"{self.server_id}/started/{int(started)}",
            {
                "server_id": self.server_id,
                "hostname": self._hostname,
                "runtime_version": runtime_version(),
                "started_at_ms": started,
                "pid": os.getpid(),
                "heartbeat_interval_s": self.heartbeat_seconds,
            },
        )
        self.heartbeat()
        self._spawn()
        self._watcher = threading.Thread(target=self._watch, name="metadata-watch", daemon=True)
        self._watcher.start()

    def _spawn(self) -> None:
        env = {**os.environ}
        if self._connection.password:
            env[PASSWORD_ENV] = self._connection.password
        command = [
            self._worker_python,
            "-m",
            "serving.metadata.worker",
            f"--spool_dir={os.path.dirname(self.spool.path)}",
            f"--connection={self._connection.as_argument()}",
            f"--query_socket={self.query_socket}",
            f"--parent_pid={os.getpid()}",
        ]
        self._worker = subprocess.Popen(command, env=env)
        log.info(
            "Metadata worker started (pid %d) for %s", self._worker.pid, self._connection.describe()
        )

    def _watch(self) -> None:
        next_beat = time.monotonic() + self.heartbeat_seconds
        while not self._stop.wait(min(_WATCH_SECONDS, self.heartbeat_seconds)):
            if self._worker is not None and self._worker.poll() is not None:
                log.warning(
                    "Metadata worker exited with %s; restarting it", self._worker.returncode
                )
                self._spawn()
            if time.monotonic() >= next_beat:
                self.heartbeat()
                next_beat = time.monotonic() + self.heartbeat_seconds

    def heartbeat(self) -> None:
        """Spools "alive now", replacing a beat the worker has not delivered yet."""
        self.spool.replace(
            reports.HEARTBEAT,
            f"{self.server_id}/heartbeat",
            {
                "server_id": self.server_id,
                "heartbeat_ms": _now_ms(),
                "heartbeat_interval_s": self.heartbeat_seconds,
            },
        )

    def close(self, drain_seconds: float = 10.0) -> None:
        """Gives the worker ``drain_seconds`` to deliver the unload reports of the shutdown."""
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join()
        if self._worker is not None:
            deadline = time.monotonic() + drain_seconds
            while len(self.spool) and time.monotonic() < deadline and self._worker.poll() is None:
                time.sleep(0.1)
            self._worker.terminate()
            try:
                self._worker.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._worker.kill()
        self.spool.close()

    # ------------------------------------------------------------------ reports
    def on_state_change(self, model: str, record: VersionRecord) -> None:
        """ServerCore's hook; must never raise or block (the spool logs its own failures)."""
        key = (model, record.version)
        with self._lock:
            if record.state == State.LOADING:
                self._loading[key] = _now_ms()
            elif record.state == State.AVAILABLE:
                self._loaded(key, record)
            elif record.state == State.END:
                self._ended(key, record)

    def _episode_payload(self, key: tuple[str, int], record: VersionRecord) -> dict[str, Any]:
        latency_ms = (record.load_seconds or 0.0) * 1000.0
        started = self._loading.pop(key, None) or _now_ms() - latency_ms
        model, version = key
        return {
            "episode_id": f"{self.server_id}/{model}/{version}/{int(started)}",
            "server_id": self.server_id,
            "model_name": model,
            "model_version": str(version),
            # Bucket URIs as they are (they match the Pusher's pushed_destination).
            "path": _as_uri(record.path),
            "base_path": posixpath.dirname(_as_uri(record.path).rstrip("/")),
            "load_started_ms": started,
            "load_time_ms": _now_ms(),
            "load_latency_ms": latency_ms,
            "hostname": self._hostname,
            "device": self._device,
            "heartbeat_interval_s": self.heartbeat_seconds,
        }

    def _loaded(self, key: tuple[str, int], record: VersionRecord) -> None:
        payload = self._episode_payload(key, record)
        self._episodes[key] = payload["episode_id"]
        self.spool.append(reports.VERSION_LOADED, payload["episode_id"], payload)

    def _ended(self, key: tuple[str, int], record: VersionRecord) -> None:
        episode_id = self._episodes.pop(key, None)
        if episode_id is not None:
            payload = {
                "episode_id": episode_id,
                "unload_time_ms": _now_ms(),
                "unload_reason": "unloaded",
            }
            self.spool.append(reports.VERSION_UNLOADED, f"{episode_id}/unloaded", payload)
        elif record.error is not None and key in self._loading:
            payload = self._episode_payload(key, record)
            payload["error"] = record.error.message
            payload.pop("load_time_ms")
            self.spool.append(reports.VERSION_LOAD_FAILED, payload["episode_id"], payload)
        else:
            self._loading.pop(key, None)

    def episode_for(self, model: str, version: int) -> str | None:
        with self._lock:
            return self._episodes.get((model, version))

    def report_live_metrics(self, metrics: VersionMetrics) -> None:
        payload = {
            **metrics.as_dict(),
            "model_name": metrics.model,
            "model_version": metrics.version,
            "server_id": self.server_id,
            "episode_id": self.episode_for(metrics.model, int(metrics.version))
            if metrics.version.isdigit()
            else None,
            "updated_ms": _now_ms(),
        }
        report_id = f"{self.server_id}/{metrics.model}/{metrics.version}/metrics/{time.time_ns()}"
        self.spool.append(reports.LIVE_METRICS, report_id, payload)

    # ------------------------------------------------------------------ lineage queries
    async def query(self, request: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
        """Forwards a lineage query to the worker (the only process holding MLMD)."""
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_unix_connection(self.query_socket), timeout
            )
            writer.write(json.dumps(request).encode() + b"\n")
            await writer.drain()
            line = await asyncio.wait_for(reader.readline(), timeout)
            writer.close()
            return json.loads(line)
        except (OSError, asyncio.TimeoutError, ValueError) as exc:
            return {
                "ok": False,
                "code": "UNAVAILABLE",
                "error": f"Metadata worker not answering ({type(exc).__name__}: {exc}); "
                "is the metadata store reachable?",
            }


def _as_uri(path: str) -> str:
    """Local paths absolute, ``gs://``/``s3://`` URIs unchanged."""
    return path if "://" in path else os.path.abspath(path)
