"""Opening MLMD and registering the project's types (imported only by the worker and CLIs).

Types follow ``reference/mlmd.md`` §6: TFX's ``PushedModel`` and ``Examples`` untouched, the
project's own under the ``serving.`` prefix, timestamps as DOUBLE epoch-ms (INT is 32-bit on
MySQL/MariaDB/PostgreSQL). Types are registered with ``can_add_fields``/``can_omit_fields`` the
way TFX does, so TFX and this code can register them in either order.
"""

from __future__ import annotations

import logging
import time

from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2 as pb

from serving.metadata.config import ConnectionSpec

log = logging.getLogger(__name__)

S, INT, D = pb.STRING, pb.INT, pb.DOUBLE

SERVER_CONTEXT = "serving.server"
DEPLOYMENT_CONTEXT = "serving.deployment"
MODEL_SERVING = "serving.ModelServing"
FEEDBACK_EVALUATION = "serving.FeedbackEvaluation"
PREDICTION_LOG = "serving.PredictionLog"
LIVE_METRICS = "serving.LiveMetrics"
PUSHED_MODEL = "PushedModel"
EXAMPLES = "Examples"

_ARTIFACT_TYPES = {
    PUSHED_MODEL: ({}, pb.ArtifactType.MODEL),
    EXAMPLES: ({"span": INT, "version": INT, "split_names": S}, pb.ArtifactType.DATASET),
    PREDICTION_LOG: (
        {
            "model_name": S,
            "model_version": S,
            "server_id": S,
            "format": S,
            "num_records": INT,
            "window_start_ms": D,
            "window_end_ms": D,
        },
        None,
    ),
    LIVE_METRICS: (
        {
            "model_name": S,
            "model_version": S,
            "server_id": S,
            "task": S,
            "num_predictions": INT,
            "num_labeled": INT,
            "accuracy": D,
            "auc": D,
            "mae": D,
            "rmse": D,
            "updated_ms": D,
        },
        pb.ArtifactType.METRICS,
    ),
}
_EXECUTION_TYPES = {
    MODEL_SERVING: (
        {
            "model_name": S,
            "model_version": S,
            "server_id": S,
            "hostname": S,
            "device": S,
            "path": S,
            "error": S,
            "unload_reason": S,
            "load_started_ms": D,
            "load_time_ms": D,
            "load_latency_ms": D,
            "unload_time_ms": D,
            "heartbeat_ms": D,
            "heartbeat_interval_s": D,
        },
        pb.ExecutionType.DEPLOY,
    ),
    FEEDBACK_EVALUATION: (
        {
            "model_name": S,
            "model_version": S,
            "server_id": S,
            "window_start_ms": D,
            "window_end_ms": D,
        },
        pb.ExecutionType.EVALUATE,
    ),
}
_CONTEXT_TYPES = {
    SERVER_CONTEXT: {
        "hostname": S,
        "runtime_version": S,
        "started_at_ms": D,
        "heartbeat_ms": D,
        "heartbeat_interval_s": D,
    },
    DEPLOYMENT_CONTEXT: {"model_name": S, "base_dir": S},
}

_DECLARED: dict[str, dict[str, int]] = {
    **{name: props for name, (props, _) in _ARTIFACT_TYPES.items()},
    **{name: props for name, (props, _) in _EXECUTION_TYPES.items()},
    **_CONTEXT_TYPES,
}
_CONNECT_ATTEMPTS = 5


def connection_config(spec: ConnectionSpec) -> pb.ConnectionConfig:
    config = pb.ConnectionConfig()
    if spec.kind == "sqlite":
        config.sqlite.filename_uri = spec.path
        config.sqlite.connection_mode = pb.SqliteMetadataSourceConfig.READWRITE_OPENCREATE
    elif spec.kind == "mysql":
        config.mysql.host = spec.host
        config.mysql.port = spec.port
        config.mysql.database = spec.database
        config.mysql.user = spec.user
        config.mysql.password = spec.password
        if spec.socket:
            config.mysql.socket = spec.socket
    else:
        config.postgresql.host = spec.host
        config.postgresql.port = str(spec.port)  # a string in MLMD's proto
        config.postgresql.dbname = spec.database
        config.postgresql.user = spec.user
        config.postgresql.password = spec.password
    return config


def connect(
    spec: ConnectionSpec, attempts: int = _CONNECT_ATTEMPTS
) -> metadata_store.MetadataStore:
    """Opens the store; the constructor is outside MLMD's own retry loop, so it is retried here
    (a SQLite lock race surfaces as a misleading "subset of tables" RuntimeError)."""
    for attempt in range(1, attempts + 1):
        try:
            return metadata_store.MetadataStore(connection_config(spec))
        except RuntimeError as exc:
            if attempt == attempts:
                raise ConnectionError(
                    f"Cannot open metadata store {spec.describe()}: {exc}. Check that the "
                    "database server is up and the user/password are right."
                ) from exc
            time.sleep(0.2 * attempt)
    raise AssertionError("unreachable")


def register_types(store: metadata_store.MetadataStore) -> dict[str, int]:
    """Type name -> id, registering what is missing (additive evolution only)."""
    ids: dict[str, int] = {}
    for name, (props, base) in _ARTIFACT_TYPES.items():
        artifact_type = pb.ArtifactType(name=name)
        for key, kind in props.items():
            artifact_type.properties[key] = kind
        if base is not None:
            artifact_type.base_type = base
        ids[name] = store.put_artifact_type(
            artifact_type, can_add_fields=True, can_omit_fields=True
        )
    for name, (props, base) in _EXECUTION_TYPES.items():
        execution_type = pb.ExecutionType(name=name, base_type=base)
        for key, kind in props.items():
            execution_type.properties[key] = kind
        ids[name] = store.put_execution_type(
            execution_type, can_add_fields=True, can_omit_fields=True
        )
    for name, props in _CONTEXT_TYPES.items():
        context_type = pb.ContextType(name=name)
        for key, kind in props.items():
            context_type.properties[key] = kind
        ids[name] = store.put_context_type(context_type, can_add_fields=True, can_omit_fields=True)
    return ids


def event(kind: int, key: str, milliseconds: float | None = None) -> pb.Event:
    """A TFX-shaped event: path ``[key, 0]`` like ``event_lib.generate_event``."""
    result = pb.Event(type=kind)
    result.path.steps.add().key = key
    result.path.steps.add().index = 0
    if milliseconds is not None:
        result.milliseconds_since_epoch = int(milliseconds)
    return result


def set_properties(node, type_name: str, values: dict) -> None:
    """Sets declared properties with the declared kind (JSON may turn 3.0 into 3); None and
    undeclared keys are skipped, so payloads can carry more than a type stores."""
    declared = _DECLARED[type_name]
    for key, value in values.items():
        kind = declared.get(key)
        if value is None or kind is None:
            continue
        if kind == D:
            node.properties[key].double_value = float(value)
        elif kind == INT:
            node.properties[key].int_value = int(value)
        else:
            node.properties[key].string_value = str(value)


def value_of(value: pb.Value):
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None
