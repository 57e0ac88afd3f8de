"""``tensorflow_model_server``'s flags: same names, same defaults, same ``--flag=value`` style.

A flag is either implemented, accepted-and-ignored because it only tunes TF Serving's C++
internals (listed in ``IGNORED_FLAGS``, logged once), or rejected with a clear "not supported
yet" error (``UNSUPPORTED_FLAGS``) — never silently dropped.
"""

from __future__ import annotations

import argparse
import os
import socket
from dataclasses import dataclass, fields

from serving.errors import ConfigError
from serving.request_limits import (
    DEFAULT_MAX_REQUEST_MEMORY_BYTES,
    DEFAULT_MAX_TOTAL_REQUEST_MEMORY_BYTES,
)
from serving.servables.op_libraries import (
    OpLibraryError,
    check_op_libraries,
    parse_op_libraries,
)
from serving.usable_cpus import usable_cpus

MAX_AUTO_FRONTENDS = 8

_TRUE = {"true", "1", "yes", "t", "y"}
_FALSE = {"false", "0", "no", "f", "n"}


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


@dataclass
class ServerOptions:
    port: int = 8500
    grpc_socket_path: str = ""
    rest_api_port: int = 0
    rest_api_num_threads: int = 0
    rest_api_timeout_in_ms: int = 30000
    rest_api_enable_cors_support: bool = False
    rest_api_max_connections: int = 4096
    grpc_channel_arguments: str = ""
    grpc_max_threads: int = 0
    grpc_listeners: int = 16
    grpc_poller_batch_scheduling: bool = True
    model_name: str = "default"
    model_base_path: str = ""
    model_config_file: str = ""
    model_cache_dir: str = ""
    model_config_file_poll_wait_seconds: int = 0
    allow_version_labels_for_unavailable_models: bool = False
    saved_model_tags: str = "serve"
    prefer_tflite_model: bool = False
    num_tflite_pools: int = 0
    num_tflite_interpreters_per_pool: int = 1
    custom_op_libraries: str = ""
    file_system_poll_wait_seconds: int = 1
    num_load_threads: int = 0
    max_num_load_retries: int = 5
    load_retry_interval_micros: int = 60_000_000
    enable_batching: bool = False
    batching_parameters_file: str = ""
    enable_per_model_batching_parameters: bool = False
    tensorflow_session_parallelism: int = 0
    tensorflow_intra_op_parallelism: int = 0
    tensorflow_inter_op_parallelism: int = 0
    per_process_gpu_memory_fraction: float = 0.0
    ssl_config_file: str = ""
    monitoring_config_file: str = ""
    status_page: bool = True
    enable_model_warmup: bool = True
    num_request_iterations_for_warmup: int = 0
    enable_serialization_as_tensor_content: bool = False
    enable_grpc_healthcheck_service: bool = True
    enable_profiler: bool = True
    max_queued_requests: int = 1024
    max_request_bytes: int = 0
    max_request_memory_bytes: int = DEFAULT_MAX_REQUEST_MEMORY_BYTES
    max_total_request_memory_bytes: int = DEFAULT_MAX_TOTAL_REQUEST_MEMORY_BYTES
    rest_api_header_timeout_in_ms: int = 10_000
    rest_api_body_timeout_in_ms: int = 60_000
    rest_api_keep_alive_timeout_in_ms: int = 30_000
    rest_api_max_header_bytes: int = 65_536
    auth_token_file: str = ""
    auth_protect_health_probes: bool = False
    traffic_split_config_file: str = ""
    host: str = "0.0.0.0"
    frontend_processes: int = -1
    frontend_spare: int = 1
    metadata_connection: str = ""
    metadata_spool_dir: str = ""
    metadata_spool_max_reports: int = 100_000
    metadata_server_id: str = ""
    metadata_heartbeat_seconds: float = 30.0
    prediction_log_dir: str = ""
    prediction_log_sampling: str = "0.01"
    version: bool = False

    def frontend_count(self) -> int:
        """Front-end processes to run (0: one process serves everything).

        ``-1`` derives it from the CPUs this process may use (``serving.usable_cpus``: its
        affinity mask capped by a container's CPU quota): one front end per usable CPU, at
        most 8, and none on a single CPU, where another process would only add a hop."""
        if self.frontend_processes >= 0:
            return self.frontend_processes
        usable = usable_cpus()
        return 0 if usable < 2 else min(usable, MAX_AUTO_FRONTENDS)

    def server_id(self) -> str:
        """The name this server reports under (MLMD, the status page): ``--metadata_server_id``,
        else host and port, which stays stable across restarts of the same deployment."""
        if self.metadata_server_id:
            return self.metadata_server_id
        return f"{socket.gethostname()}:{self.rest_api_port or self.port}"


_HELP = {
    "port": "gRPC port (0 disables gRPC over TCP)",
    "grpc_socket_path": "also serve gRPC on this UNIX socket",
    "grpc_listeners": "gRPC servers in each process listening on --port together "
    "(SO_REUSEPORT): grpc.aio takes in one new call per server per event-loop pass, so more "
    "servers take in more calls at once and gRPC batches grow; 1 with --grpc_max_threads "
    "(its cap is per server) or grpc.so_reuseport=0 (tfx-model-server only; see "
    "docs/serving.md)",
    "grpc_poller_batch_scheduling": "run grpc.aio's completion-queue poller thread as "
    "SCHED_BATCH, so its wake-ups wait for the event loop to block instead of preempting it "
    "(more gRPC calls per loop pass on a busy core; tfx-model-server only; see docs/serving.md)",
    "rest_api_port": "HTTP/REST port (0 disables REST)",
    "rest_api_num_threads": "threads running model calls (default 4 x CPUs)",
    "rest_api_timeout_in_ms": "deadline for REST predict/classify/regress (HTTP 504 past it)",
    "rest_api_max_connections": "open REST connections allowed; a new one past it is answered "
    "503 at once and closed (tfx-model-server only; at most half the process's file "
    "descriptor limit; with --frontend_processes each front end takes an equal share)",
    "model_name": "model name in single-model mode",
    "model_base_path": "directory holding the model's integer version directories, or a "
    "gs://bucket/path or s3://bucket/path URI",
    "model_cache_dir": "local directory where versions from gs:// and s3:// stores are copied "
    "and loaded from (default: a private temp dir removed at exit; tfx-model-server only)",
    "model_config_file": "text ModelServerConfig with one or more models",
    "file_system_poll_wait_seconds": "seconds between version polls; 0 polls once",
    "max_queued_requests": "model calls allowed to wait for a thread before HTTP 503 / "
    "UNAVAILABLE (tfx-model-server only)",
    "host": "address to bind (tfx-model-server only)",
    "frontend_processes": "processes serving REST and gRPC on the same ports (SO_REUSEPORT) "
    "around one model process; they never load TensorFlow. -1 = one per usable CPU (at most "
    "8, none on one CPU); 0 = everything in one process (tfx-model-server only; see "
    "docs/serving.md)",
    "frontend_spare": "with --frontend_processes: front-end processes kept started but idle "
    "(imports done, no port, no model connection; about 60 MB each), so one that dies is "
    "replaced by a process that only has to bind and connect (milliseconds, not the ~0.6 s of "
    "CPU a new one takes); 0 = none, a dead front end's replacement starts from scratch "
    "(tfx-model-server only; see docs/serving.md)",
    "max_request_bytes": "largest request body/message accepted, 0 = unlimited (REST 413, gRPC "
    "RESOURCE_EXHAUSTED past it; tfx-model-server only)",
    "max_request_memory_bytes": "memory one request may take once read and decoded (body, "
    "parsed JSON, tensors after TF's fill rule, tf.Example batches), checked before it is "
    "allocated; 0 = unlimited (REST 413, gRPC RESOURCE_EXHAUSTED past it; see docs/serving.md)",
    "max_total_request_memory_bytes": "the same, summed over all requests in progress; a request "
    "that would exceed it gets 503 / UNAVAILABLE at once; 0 = unlimited",
    "rest_api_header_timeout_in_ms": "a REST request's line and headers must arrive within this "
    "(from the connection or the request's first byte), else 408 and the connection is closed; "
    "0 = no limit",
    "rest_api_body_timeout_in_ms": "a REST request's body may pause at most this long (after "
    "the headers or its last data), else 408 and the connection is closed; 0 = no limit",
    "rest_api_keep_alive_timeout_in_ms": "an idle keep-alive REST connection is closed after "
    "this; keep it above a load balancer's idle timeout",
    "rest_api_max_header_bytes": "largest REST request line plus headers; past it 431 and the "
    "connection is closed",
    "auth_token_file": "require 'Authorization: Bearer <token>' on REST and gRPC; tokens one per "
    "line (also from $TFX_MODEL_SERVER_AUTH_TOKENS, comma-separated; tfx-model-server only)",
    "auth_protect_health_probes": "also require the token on /healthz, /readyz and gRPC health "
    "(tfx-model-server only)",
    "traffic_split_config_file": "JSON weights splitting unversioned requests between version "
    "labels (tfx-model-server only; see docs/serving.md)",
    "enable_grpc_healthcheck_service": "serve grpc.health.v1.Health, SERVING once every model "
    "has an AVAILABLE version (default true here; false in TF Serving)",
    "ssl_config_file": "text SSLConfig (server_key, server_cert, custom_ca, client_verify); "
    "applies to REST and gRPC",
    "metadata_connection": "report loads/unloads, prediction logs and live metrics to ML "
    "Metadata: sqlite:///path/mlmd.sqlite, mysql://user@host:3306/db or "
    "postgresql://user@host:5432/db (password in $TFX_SERVING_METADATA_PASSWORD); a worker "
    "process writes them, never the request path (tfx-model-server only)",
    "metadata_spool_dir": "persistent local directory queueing reports while the metadata store "
    "is unreachable; required with --metadata_connection",
    "metadata_spool_max_reports": "reports the spool holds before dropping new ones (logged)",
    "metadata_server_id": "this server's name in metadata (default <hostname>:<port>)",
    "metadata_heartbeat_seconds": "seconds between liveness reports; a loaded version is shown "
    "stale after 3 missed ones (tfx-model-server only)",
    "prediction_log_dir": "write sampled PredictionLog TFRecord shards here and accept "
    "POST /v1/models/<m>:feedback (tfx-model-server only)",
    "prediction_log_sampling": "share of requests logged: a default and per-model rates, "
    "e.g. 0.01,demo=1.0",
    "status_page": "serve a self-refreshing status page at /status on the REST port (same TLS "
    "and auth): versions, labels, split, request rate and latency, live feedback, lineage "
    "(tfx-model-server only; see docs/status-page.md)",
    "version": "print versions and exit",
    "prefer_tflite_model": "serve <version>/model.tflite with TF Lite when a version has one "
    "(then a version needs no saved_model.pb)",
    "num_tflite_pools": "TF Lite interpreters per model version, so concurrent requests run in "
    "parallel (0 = one per CPU)",
    "num_tflite_interpreters_per_pool": "split one TF Lite request's rows into this many parts "
    "run on separate interpreters at once (1 = no split)",
    "custom_op_libraries": "comma-separated op libraries loaded before any model: .so paths "
    "(tf.load_op_library) and/or Python modules whose import registers ops; installed "
    "tensorflow-text is loaded anyway (tfx-model-server only)",
    "enable_profiler": "serve tensorflow.ProfilerService on the gRPC port(s), with the same TLS "
    "and auth, for tf.profiler.experimental.client.trace",
}

# Flags that only tune TF Serving's C++ runtime; accepted so existing command lines keep working.
IGNORED_FLAGS = (
    "rest_api_num_threads_per_core",
    "num_unload_threads",
    "flush_filesystem_caches",
    "remove_unused_fields_from_bundle_metagraph",
    "skip_initialize_tpu",
    "xla_cpu_compilation_enabled",
    "xla_gpu_compilation_enabled",
)

# Flags of features this server does not implement yet: using one is an error, not a no-op.
UNSUPPORTED_FLAGS = {
    "platform_config_file": "use --model_config_file and the batching flags instead",
    "tensorflow_session_config_file": "use --tensorflow_intra_op_parallelism, "
    "--tensorflow_inter_op_parallelism and --per_process_gpu_memory_fraction",
    "thread_pool_factory_config_file": "custom inference thread pools are not supported",
    "mixed_precision": "mixed precision rewriting is not supported",
    "use_alts_credentials": "ALTS is not supported; use --ssl_config_file",
    "enable_signature_method_name_check": "signature method names are not checked",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tfx-model-server",
        description="TensorFlow-Serving-compatible model server (REST and gRPC).",
        allow_abbrev=False,
    )
    for field in fields(ServerOptions):
        flag = f"--{field.name}"
        help_text = _HELP.get(field.name, "same as tensorflow_model_server")
        if field.type == "bool":
            parser.add_argument(
                flag, type=_bool, nargs="?", const=True, default=field.default, help=help_text
            )
        else:
            kind = {"int": int, "float": float, "str": str}[field.type]
            parser.add_argument(flag, type=kind, default=field.default, help=help_text)
    for name in IGNORED_FLAGS:
        parser.add_argument(f"--{name}", default=None, help=argparse.SUPPRESS)
    for name in UNSUPPORTED_FLAGS:
        parser.add_argument(f"--{name}", default=None, help=argparse.SUPPRESS)
    return parser


class OptionsError(ConfigError):
    """A command line that cannot work; the message says what to change."""


def parse_options(
    argv: list[str], environ: dict[str, str] | None = None
) -> tuple[ServerOptions, list[str]]:
    """Returns the options and the TF-internal flags that were given and are ignored."""
    environ = dict(os.environ) if environ is None else environ
    namespace = build_parser().parse_args(argv)
    values = vars(namespace)
    for name, advice in UNSUPPORTED_FLAGS.items():
        given = values.pop(name)
        if given not in (None, "", "false", "False", "0"):
            raise OptionsError(f"--{name} is not supported by tfx-model-server yet: {advice}")
    ignored = [name for name in IGNORED_FLAGS if values.pop(name) is not None]
    options = ServerOptions(**values)
    # The TF Serving container convention: MODEL_NAME / MODEL_BASE_PATH fill unset flags.
    if options.model_name == "default" and environ.get("MODEL_NAME"):
        options.model_name = environ["MODEL_NAME"]
    if (
        not options.model_base_path
        and not options.model_config_file
        and environ.get("MODEL_BASE_PATH")
    ):
        base = environ["MODEL_BASE_PATH"].rstrip("/")
        options.model_base_path = f"{base}/{options.model_name}"
    validate(options)
    return options, ignored


def validate(options: ServerOptions) -> None:
    if options.version:
        return
    if not options.model_base_path and not options.model_config_file:
        raise OptionsError(
            "Both server_options.model_base_path and server_options.model_config_file are "
            "empty! Pass --model_base_path=/abs/path/to/model (holding version directories "
            "like 1/, 2/) or --model_config_file=models.config"
        )
    if options.model_base_path and options.model_config_file:
        raise OptionsError("Pass either --model_base_path or --model_config_file, not both")
    if options.port == 0 and not options.grpc_socket_path and options.rest_api_port == 0:
        raise OptionsError(
            "No API is enabled: set --port (gRPC), --grpc_socket_path or --rest_api_port"
        )
    if options.rest_api_port and options.rest_api_port == options.port:
        raise OptionsError(
            f"--rest_api_port={options.rest_api_port} must differ from --port={options.port}"
        )
    if options.batching_parameters_file and not options.enable_batching:
        raise OptionsError("--batching_parameters_file requires --enable_batching")
    if options.tensorflow_session_parallelism and (
        options.tensorflow_intra_op_parallelism or options.tensorflow_inter_op_parallelism
    ):
        raise OptionsError(
            "Either --tensorflow_session_parallelism or --tensorflow_intra_op_parallelism/"
            "--tensorflow_inter_op_parallelism may be set, not both"
        )
    if not 0.0 <= options.per_process_gpu_memory_fraction <= 1.0:
        raise OptionsError("--per_process_gpu_memory_fraction must be between 0 and 1")
    for name in (
        "max_request_bytes",
        "max_request_memory_bytes",
        "max_total_request_memory_bytes",
        "rest_api_header_timeout_in_ms",
        "rest_api_body_timeout_in_ms",
        "rest_api_max_header_bytes",
    ):
        if getattr(options, name) < 0:
            raise OptionsError(f"--{name} must be >= 0 (0 = unlimited)")
    if options.rest_api_keep_alive_timeout_in_ms <= 0:
        raise OptionsError("--rest_api_keep_alive_timeout_in_ms must be > 0")
    if 0 < options.max_total_request_memory_bytes < options.max_request_memory_bytes or (
        options.max_total_request_memory_bytes and not options.max_request_memory_bytes
    ):
        raise OptionsError(
            "--max_total_request_memory_bytes must be at least --max_request_memory_bytes "
            "(else a request within its own limit could never be served)"
        )
    if options.grpc_listeners < 1:
        raise OptionsError("--grpc_listeners must be >= 1")
    if options.frontend_processes < -1:
        raise OptionsError("--frontend_processes must be >= 0, or -1 for one per usable CPU")
    if options.frontend_spare < 0:
        raise OptionsError("--frontend_spare must be >= 0 (0: no spare front-end process)")
    if options.rest_api_max_connections < 1:
        raise OptionsError("--rest_api_max_connections must be >= 1")
    if options.num_tflite_pools < 0:
        raise OptionsError("--num_tflite_pools must be >= 0 (0 = one interpreter per CPU)")
    if options.num_tflite_interpreters_per_pool < 1:
        raise OptionsError("--num_tflite_interpreters_per_pool must be >= 1")
    if options.rest_api_timeout_in_ms < 0:
        raise OptionsError("--rest_api_timeout_in_ms must be >= 0")
    try:
        check_op_libraries(parse_op_libraries(options.custom_op_libraries))
    except OpLibraryError as exc:
        raise OptionsError(str(exc)) from None
    if options.metadata_heartbeat_seconds <= 0:
        raise OptionsError("--metadata_heartbeat_seconds must be > 0")
    if options.metadata_connection and not options.metadata_spool_dir:
        raise OptionsError(
            "--metadata_connection needs --metadata_spool_dir: a persistent local directory "
            "where reports wait while the metadata store is unreachable"
        )
