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
import threading
from collections.abc import Awaitable, Callable, Sequence

from serving import heap, protos
from serving.api.inference import InferenceService
from serving.batching.params import BatchingConfig, read_batching_parameters
from serving.batching.scheduler import BatchScheduler
from serving.batching.servable import BatchingSetup
from serving.config_file import ConfigFileWatcher, read_model_config
from serving.core.model_manager import RetryPolicy, VersionRecord
from serving.core.server_core import ServerCore
from serving.errors import ServingError
from serving.event_loop import run_event_loop
from serving.frontend_setup import FrontendSetup
from serving.grpc_api.health import ReadinessHealth
from serving.grpc_api.server import GrpcServer, build_grpc_server
from serving.monitoring.config import read_monitoring_config
from serving.monitoring.metrics import ServingMetrics
from serving.options import OptionsError, ServerOptions
from serving.rest.app import ExtraRoute
from serving.rest.uvicorn_server import rest_server
from serving.servables.devices import configure_devices
from serving.servables.loader import ServableLoader
from serving.servables.op_libraries import load_op_libraries, parse_op_libraries
from serving.servables.saved_model import LoadOptions
from serving.servables.session_config import SessionSettings, build_session_config
from serving.servables.tflite import TfLiteOptions
from serving.storage.sources import StorageSources

log = logging.getLogger(__name__)


def model_config_from_flags(options: ServerOptions) -> protos.ModelServerConfig:
    """The config a command line describes: the file, or one model from the flags."""
    if options.model_config_file:
        return read_model_config(options.model_config_file)
    config = protos.ModelServerConfig()
    model = config.model_config_list.config.add()
    model.name = options.model_name
    base = options.model_base_path
    model.base_path = base if "://" in base else os.path.abspath(base)
    model.model_platform = "tensorflow"
    return config


def _metadata_plugin(options: ServerOptions):
    """``serving.metadata`` (MLMD reports, prediction logs, feedback, lineage) is a plug-in:
    imported only when a flag asks for it, and wired in through the seams the core and the
    front ends expose (state and inference observers, extra REST routes)."""
    if not options.metadata_connection and not options.prediction_log_dir:
        return None
    from serving.metadata.services import build_metadata_services

    return build_metadata_services(options)


StopFrontends = Callable[[], Awaitable[None]]
FrontEnds = Callable[["ModelServer"], Awaitable[StopFrontends]]


class ModelServer:
    def __init__(self, options: ServerOptions, frontends: FrontEnds | None = None) -> None:
        """``frontends``: what serves requests once the initial loads are done (default: REST
        and gRPC in this process); it returns the coroutine function that stops them."""
        self.options = options
        self._frontends = frontends
        intra = options.tensorflow_intra_op_parallelism or options.tensorflow_session_parallelism
        inter = options.tensorflow_inter_op_parallelism or options.tensorflow_session_parallelism
        load_options = LoadOptions(
            tags=tuple(t.strip() for t in options.saved_model_tags.split(",") if t.strip()),
            session_config=build_session_config(
                SessionSettings(intra, inter, options.per_process_gpu_memory_fraction)
            ),
            tflite=TfLiteOptions(options.num_tflite_pools, options.num_tflite_interpreters_per_pool)
            if options.prefer_tflite_model
            else None,
        )
        self.config = model_config_from_flags(options)
        # Before any model loads: graphs using these libraries' ops must find them registered.
        load_op_libraries(parse_op_libraries(options.custom_op_libraries))
        configure_devices(options.per_process_gpu_memory_fraction)
        self.metrics = self._metrics(options)
        self.batching = self._batching(options)
        self.metadata = _metadata_plugin(options)
        loader = ServableLoader(
            load_options,
            self.batching,
            options.enable_model_warmup,
            options.num_request_iterations_for_warmup,
            self.metrics,
        )
        self.core = ServerCore(
            loader=loader,
            poll_wait_seconds=options.file_system_poll_wait_seconds,
            num_load_threads=options.num_load_threads,
            retry=RetryPolicy(
                options.max_num_load_retries, options.load_retry_interval_micros / 1e6
            ),
            allow_labels_for_unavailable_versions=(
                options.allow_version_labels_for_unavailable_models
            ),
            on_state_change=self._state_hooks(
                self.metadata.state_observers() if self.metadata else ()
            ),
            source_factory=StorageSources(
                options.model_cache_dir, self.metrics, accept_tflite=options.prefer_tflite_model
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
        self.frontend = FrontendSetup(options)
        self.traffic = self.frontend.traffic
        threads = options.rest_api_num_threads or 4 * (os.cpu_count() or 1)
        self.service = InferenceService(
            self.core,
            threads,
            options.max_queued_requests,
            self.metrics,
            observers=self.metadata.inference_observers() if self.metadata else (),
        )
        self._stopping: asyncio.Event | None = None
        self._stop_requested = threading.Event()

    def _state_hooks(
        self, observers: Sequence[Callable[[str, VersionRecord], None]]
    ) -> Callable[[str, VersionRecord], None]:
        """Version state changes go to the heap settler and the plug-ins' observers (the MLMD
        reporter, when on)."""
        self._heap = heap.HeapSettler()
        hooks = [self._heap.on_state_change, *observers]

        def on_state_change(model: str, record: VersionRecord) -> None:
            for hook in hooks:
                hook(model, record)

        return on_state_change

    def _metrics(self, options: ServerOptions) -> ServingMetrics | None:
        """The metrics registry: exported when the monitoring config enables it, and kept
        unexported for the status page's request figures when only the page is on."""
        settings = (
            read_monitoring_config(options.monitoring_config_file)
            if options.monitoring_config_file
            else None
        )
        if settings is not None and settings.enable:
            if not options.rest_api_port:
                log.warning("Prometheus metrics are served on the REST port; set --rest_api_port")
            return ServingMetrics(self._version_states, settings.path)
        if options.status_page and options.rest_api_port:
            return ServingMetrics(self._version_states, path=None)
        return None

    def extra_routes(self) -> tuple[ExtraRoute, ...]:
        """What the plug-ins add to the REST port: the metadata plug-in's feedback and lineage
        routes, and the status page (``--status_page``, on by default)."""
        routes = self.metadata.rest_routes() if self.metadata else ()
        if not self.options.status_page:
            return routes
        from serving.status.page import StatusPage  # plug-in: imported when the flag asks
        from serving.status.snapshot import StatusSnapshot

        snapshot = StatusSnapshot(self.core, self.metrics, self.metadata, self.options.server_id())
        return (*routes, *StatusPage(snapshot).routes())

    def _version_states(self):
        for name in self.core.model_names():
            for version, state, _ in self.core.manager(name).statuses():
                yield name, version, state.name

    def _batching(self, options: ServerOptions) -> BatchingSetup | None:
        if not options.enable_batching:
            if options.enable_per_model_batching_parameters:
                raise OptionsError(
                    "--enable_per_model_batching_parameters requires --enable_batching"
                )
            return None
        config = (
            read_batching_parameters(options.batching_parameters_file)
            if options.batching_parameters_file
            else BatchingConfig(thread_pool_name="model_server_batch_threads")
        )
        scheduler = BatchScheduler(config.threads, config.thread_pool_name, self.metrics)
        return BatchingSetup(scheduler, config, options.enable_per_model_batching_parameters)

    def run(self) -> int:
        try:
            self.core.apply_config(self.config)
            if self.traffic is not None:
                self.core.set_traffic_splits(self.traffic.splits)
        except ServingError as exc:
            raise OptionsError(exc.message) from exc
        # From here on SIGTERM/SIGINT mean "stop cleanly, exit 0" — also during the initial
        # loads, before the event loop (which installs its own handlers) runs.
        self._install_stop_handlers()
        try:
            if self.metadata is not None:
                self.metadata.start()  # before the first load, so no load report is missed
            self.core.start()
            if self._watcher is not None:
                self._watcher.start()
            log.info("Waiting for the initial versions of %s to load", self.core.model_names())
            if self._wait_for_initial_loads():
                heap.settle()  # before the first request, not during the first seconds of load
                run_event_loop(self._serve())
            else:
                log.info("Stop requested while the initial versions were loading; not serving")
        finally:
            self._install_stop_handlers()  # the event loop restored the defaults on closing
            self._shutdown()
        log.info("Server stopped")
        return 0

    def _install_stop_handlers(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_stop_signal)

    def _on_stop_signal(self, signum: int, frame) -> None:
        if not self._stop_requested.is_set():
            log.info("Received %s", signal.Signals(signum).name)
        self._stop_requested.set()

    def _wait_for_initial_loads(self) -> bool:
        """True once the first loads have finished; False if a stop signal came first (the
        loads still in progress finish in their threads, and are unloaded by the shutdown)."""
        while not self.core.wait_until_settled(0.2):
            if self._stop_requested.is_set():
                return False
        return not self._stop_requested.is_set()

    def _shutdown(self) -> None:
        """Stops what runs in the background, in an order that leaves no thread running
        TensorFlow (or any native code that takes the GIL back) once the interpreter finalizes:
        that aborted the process after "Server stopped" (see ``serving.heap``)."""
        if self._watcher is not None:
            self._watcher.stop()
        self._heap.stop()  # before the unloads, whose garbage it would collect
        self.core.stop()  # unloads every version and joins the unload threads
        if self.batching is not None:
            self.batching.scheduler.stop()  # joins the batch threads
        self.service.close()  # joins the inference threads
        if self.metadata is not None:
            self.metadata.close()  # prediction-log writer thread, then the MLMD worker
        self.frontend.stop()
        log.debug(
            "Threads left at exit: %s",
            [t.name for t in threading.enumerate() if t is not threading.current_thread()],
        )

    async def _serve(self) -> None:
        self._stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        if self._stop_requested.is_set():  # signalled between the loads and this loop
            self._stopping.set()
        stop_frontends = await self._start_frontends()
        await self._stopping.wait()
        log.info("Stopping: no new requests accepted; finishing in-flight ones")
        await stop_frontends()

    async def _start_frontends(self) -> StopFrontends:
        """What answers requests: this process's own REST and gRPC front ends, or (in a
        model process, ``serving.multiproc``) the link to the front-end processes."""
        if self._frontends is not None:
            return await self._frontends(self)
        return await self._start_network_frontends()

    async def _start_network_frontends(self) -> StopFrontends:
        tasks = []
        rest = None
        if self.options.rest_api_port:
            app = self.frontend.rest_app(self.service, self.extra_routes())
            rest = rest_server(app, self.options, self.frontend.tls)
            tasks.append(asyncio.create_task(rest.serve()))
            self.frontend.log_rest_listening()
        grpc_parts = await self._start_grpc()

        async def stop() -> None:
            if rest is not None:
                rest.should_exit = True
            if grpc_parts is not None:
                grpc_server, health = grpc_parts
                if health is not None:
                    await health.stop()
                await grpc_server.stop(grace=30)
            await asyncio.gather(*tasks)

        return stop

    async def _start_grpc(self) -> tuple[GrpcServer, ReadinessHealth | None] | None:
        if not self.options.port and not self.options.grpc_socket_path:
            return None
        health = (
            ReadinessHealth(self.service) if self.options.enable_grpc_healthcheck_service else None
        )
        server = build_grpc_server(
            self.service, self.options, self.frontend.grpc_security(), health, self.frontend.memory
        )
        await server.start()
        if health is not None:
            await health.refresh()
            health.start()
        self.frontend.log_grpc_listening()
        return server, health

    def request_stop(self) -> None:
        self._stop_requested.set()
        if self._stopping is not None:
            self._stopping.set()
