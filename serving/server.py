"""Process lifecycle: config -> core -> initial loads -> REST/gRPC front ends -> graceful stop.

Like TF Serving, the ports open only after the initial load attempts finish, so a client that
sees the port open can call the model. Unlike TF Serving, a model that fails to load does not
kill the process: it is reported in its status and retried.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from contextlib import contextmanager

import uvicorn
from tensorflow_serving.config import model_server_config_pb2

from serving.api.inference import InferenceService
from serving.config_file import ConfigFileError, ConfigFileWatcher, read_model_config
from serving.core.model_manager import RetryPolicy
from serving.core.server_core import ServerCore
from serving.errors import ServingError
from serving.options import OptionsError, ServerOptions
from serving.rest.app import RestApi, RestOptions
from serving.servables.saved_model import LoadOptions, load_saved_model
from serving.servables.session_config import SessionSettings, build_session_config

log = logging.getLogger(__name__)

# Options of features that later work items implement; using one now is a clear error.
_NOT_YET = {
    "enable_batching": "dynamic batching",
    "monitoring_config_file": "Prometheus monitoring",
    "ssl_config_file": "TLS",
    "enable_grpc_healthcheck_service": "the gRPC health service",
    "enable_per_model_batching_parameters": "per-model batching",
}


def check_implemented(options: ServerOptions) -> None:
    defaults = ServerOptions()
    for name, feature in _NOT_YET.items():
        if getattr(options, name) != getattr(defaults, name):
            raise OptionsError(f"--{name}: {feature} is not supported by this build yet")


def model_config_from_flags(options: ServerOptions) -> model_server_config_pb2.ModelServerConfig:
    """The config a command line describes: the file, or one model from the flags."""
    if options.model_config_file:
        try:
            return read_model_config(options.model_config_file)
        except ConfigFileError as exc:
            raise OptionsError(str(exc)) from exc
    config = model_server_config_pb2.ModelServerConfig()
    model = config.model_config_list.config.add()
    model.name = options.model_name
    model.base_path = os.path.abspath(options.model_base_path)
    model.model_platform = "tensorflow"
    return config


class _Uvicorn(uvicorn.Server):
    """uvicorn without its own signal handling: the model server owns SIGTERM/SIGINT."""

    @contextmanager
    def capture_signals(self):
        yield


class ModelServer:
    def __init__(self, options: ServerOptions) -> None:
        check_implemented(options)
        self.options = options
        intra = options.tensorflow_intra_op_parallelism or options.tensorflow_session_parallelism
        inter = options.tensorflow_inter_op_parallelism or options.tensorflow_session_parallelism
        load_options = LoadOptions(
            tags=tuple(t.strip() for t in options.saved_model_tags.split(",") if t.strip()),
            session_config=build_session_config(
                SessionSettings(intra, inter, options.per_process_gpu_memory_fraction)
            ),
        )
        self.config = model_config_from_flags(options)
        self.core = ServerCore(
            loader_factory=lambda _model_config: lambda path: load_saved_model(path, load_options),
            closer=lambda servable: servable.close(),
            poll_wait_seconds=options.file_system_poll_wait_seconds,
            num_load_threads=options.num_load_threads,
            retry=RetryPolicy(
                options.max_num_load_retries, options.load_retry_interval_micros / 1e6
            ),
            allow_labels_for_unavailable_versions=(
                options.allow_version_labels_for_unavailable_models
            ),
        )
        self._watcher = (
            ConfigFileWatcher(
                options.model_config_file,
                options.model_config_file_poll_wait_seconds,
                self.core,
                self.config,
            )
            if options.model_config_file and options.model_config_file_poll_wait_seconds > 0
            else None
        )
        threads = options.rest_api_num_threads or 4 * (os.cpu_count() or 1)
        self.service = InferenceService(self.core, threads, options.max_queued_requests)
        self._stopping: asyncio.Event | None = None

    def run(self) -> int:
        try:
            self.core.apply_config(self.config)
        except ServingError as exc:
            raise OptionsError(exc.message) from exc
        self.core.start()
        if self._watcher is not None:
            self._watcher.start()
        log.info("Waiting for the initial versions of %s to load", self.core.model_names())
        self.core.wait_until_settled()
        try:
            asyncio.run(self._serve())
        finally:
            if self._watcher is not None:
                self._watcher.stop()
            self.core.stop()
            self.service.close()
        log.info("Server stopped")
        return 0

    async def _serve(self) -> None:
        self._stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        tasks = []
        rest = None
        if self.options.rest_api_port:
            app = RestApi(
                self.service,
                RestOptions(
                    self.options.rest_api_timeout_in_ms, self.options.rest_api_enable_cors_support
                ),
            )
            rest = _Uvicorn(
                uvicorn.Config(
                    app,
                    host=self.options.host,
                    port=self.options.rest_api_port,
                    http="httptools",
                    loop="none",
                    lifespan="off",
                    log_level="warning",
                    access_log=False,
                    timeout_graceful_shutdown=30,
                )
            )
            tasks.append(asyncio.create_task(rest.serve()))
            log.info(
                "Exporting HTTP/REST API at:%s:%d ...",
                self.options.host,
                self.options.rest_api_port,
            )
        grpc_server = await self._start_grpc()
        await self._stopping.wait()
        log.info("Stopping: no new requests accepted; finishing in-flight ones")
        if rest is not None:
            rest.should_exit = True
        if grpc_server is not None:
            await grpc_server.stop(grace=30)
        await asyncio.gather(*tasks)

    async def _start_grpc(self):
        """The gRPC front end, when built (see serving.grpc_api)."""
        if not self.options.port and not self.options.grpc_socket_path:
            return None
        try:
            from serving.grpc_api.server import build_grpc_server
        except ImportError:
            log.warning(
                "gRPC API requested (--port=%d) but not available in this build; "
                "serving REST only. Pass --port=0 to silence this warning.",
                self.options.port,
            )
            return None
        server = build_grpc_server(self.service, self.options)
        await server.start()
        log.info("Running gRPC ModelServer at %s:%d ...", self.options.host, self.options.port)
        return server

    def request_stop(self) -> None:
        if self._stopping is not None:
            self._stopping.set()
