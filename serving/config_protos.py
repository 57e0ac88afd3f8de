"""TF Serving config messages that tensorflow-serving-api does not ship, declared once.

``SSLConfig``, ``MonitoringConfig`` and ``BatchingParameters`` live in TF Serving protos that
the pip wheel leaves out. They are declared here from descriptors with TF Serving's package,
message names and field numbers, so text files written for ``tensorflow_model_server`` parse
unchanged with protobuf's own ``text_format`` (wrapper syntax included, and unset wrappers
stay distinguishable from zero).
"""

from __future__ import annotations

from typing import TypeVar

from google.protobuf import descriptor_pb2, descriptor_pool, text_format, wrappers_pb2
from google.protobuf.message import Message

from serving.compat import message_class
from serving.errors import ConfigError

_F = descriptor_pb2.FieldDescriptorProto
_PACKAGE = "tensorflow.serving"
_I64 = ".google.protobuf.Int64Value"

# message -> [(field, number, scalar type or message type name, repeated)]
_MESSAGES: dict[str, list[tuple[str, int, int | str, bool]]] = {
    "SSLConfig": [
        ("server_key", 1, _F.TYPE_STRING, False),
        ("server_cert", 2, _F.TYPE_STRING, False),
        ("custom_ca", 3, _F.TYPE_STRING, False),
        ("client_verify", 4, _F.TYPE_BOOL, False),
    ],
    "PrometheusConfig": [
        ("enable", 1, _F.TYPE_BOOL, False),
        ("path", 2, _F.TYPE_STRING, False),
    ],
    "MonitoringConfig": [
        ("prometheus_config", 1, f".{_PACKAGE}.PrometheusConfig", False),
    ],
    "BatchingParameters": [
        ("max_batch_size", 1, _I64, False),
        ("batch_timeout_micros", 2, _I64, False),
        ("max_enqueued_batches", 3, _I64, False),
        ("num_batch_threads", 4, _I64, False),
        ("thread_pool_name", 5, ".google.protobuf.StringValue", False),
        ("allowed_batch_sizes", 6, _F.TYPE_INT64, True),
        ("pad_variable_length_inputs", 7, _F.TYPE_BOOL, False),
        ("enable_large_batch_splitting", 8, ".google.protobuf.BoolValue", False),
        ("max_execution_batch_size", 9, _I64, False),
    ],
}


def _declare() -> dict[str, type[Message]]:
    pool = descriptor_pool.DescriptorPool()
    wrappers = descriptor_pb2.FileDescriptorProto()
    wrappers_pb2.DESCRIPTOR.CopyToProto(wrappers)
    pool.Add(wrappers)
    file_proto = descriptor_pb2.FileDescriptorProto(
        name="tfx_serving/tf_serving_configs.proto",
        package=_PACKAGE,
        syntax="proto3",
        dependency=[wrappers.name],
    )
    for message_name, fields in _MESSAGES.items():
        message = file_proto.message_type.add(name=message_name)
        for name, number, kind, repeated in fields:
            field = message.field.add(name=name, number=number)
            field.label = _F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL
            if isinstance(kind, str):
                field.type, field.type_name = _F.TYPE_MESSAGE, kind
            else:
                field.type = kind
    pool.Add(file_proto)
    return {
        name: message_class(pool.FindMessageTypeByName(f"{_PACKAGE}.{name}")) for name in _MESSAGES
    }


_CLASSES = _declare()
SSLConfig = _CLASSES["SSLConfig"]
MonitoringConfig = _CLASSES["MonitoringConfig"]
BatchingParameters = _CLASSES["BatchingParameters"]


M = TypeVar("M", bound=Message)


def parse_text_proto(text: str, message: M, error: type[ConfigError], source: str) -> M:
    """``text`` parsed into ``message``; a parse failure is ``error`` naming the source."""
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as exc:
        raise error(
            f"Error parsing text-format {message.DESCRIPTOR.full_name} from {source}: {exc}"
        ) from None
    return message


def read_text_proto(path: str, message: M, error: type[ConfigError]) -> M:
    """The text-format proto file at ``path``; unreadable or invalid is ``error``."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise error(f"Cannot read {message.DESCRIPTOR.full_name} file {path}: {exc}") from None
    return parse_text_proto(text, message, error, path)
