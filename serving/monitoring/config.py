"""``--monitoring_config_file``: TF Serving's ``MonitoringConfig`` text proto.

tensorflow-serving-api does not ship ``monitoring_config.proto``, so its two messages are
declared here with TF Serving's field names and numbers and parsed by protobuf's text format:
a file written for TF Serving (``prometheus_config { enable: true, path: "/metrics" }``) works
unchanged, and a typo is a parse error naming the line, not a silently disabled exporter.
"""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf import descriptor_pb2, descriptor_pool, text_format
from google.protobuf.message import Message
from google.protobuf.message_factory import MessageFactory

DEFAULT_PATH = "/monitoring/prometheus/metrics"  # PrometheusExporter::kPrometheusPath


def _message_class() -> type[Message]:
    field = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(
        name="tfx_serving/monitoring_config.proto", package="tensorflow.serving", syntax="proto3"
    )
    prometheus = proto.message_type.add(name="PrometheusConfig")
    prometheus.field.add(name="enable", number=1, type=field.TYPE_BOOL, label=field.LABEL_OPTIONAL)
    prometheus.field.add(name="path", number=2, type=field.TYPE_STRING, label=field.LABEL_OPTIONAL)
    monitoring = proto.message_type.add(name="MonitoringConfig")
    monitoring.field.add(
        name="prometheus_config",
        number=1,
        type=field.TYPE_MESSAGE,
        type_name=".tensorflow.serving.PrometheusConfig",
        label=field.LABEL_OPTIONAL,
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    descriptor = pool.FindMessageTypeByName("tensorflow.serving.MonitoringConfig")
    return MessageFactory(pool).GetPrototype(descriptor)


MonitoringConfigProto = _message_class()


class MonitoringConfigError(ValueError):
    """A monitoring config file that cannot be used; the message says what to fix."""


@dataclass(frozen=True)
class PrometheusSettings:
    enable: bool = False
    path: str = DEFAULT_PATH


def parse_monitoring_config(text: str, source: str = "<string>") -> PrometheusSettings:
    message = MonitoringConfigProto()
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as exc:
        raise MonitoringConfigError(f"Invalid MonitoringConfig in {source}: {exc}") from None
    prometheus = message.prometheus_config
    path = prometheus.path or DEFAULT_PATH
    if not path.startswith("/"):
        raise MonitoringConfigError(f"{source}: prometheus_config.path must start with '/'")
    return PrometheusSettings(prometheus.enable, path)


def read_monitoring_config(path: str) -> PrometheusSettings:
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise MonitoringConfigError(f"Cannot read monitoring config {path}: {exc}") from None
    return parse_monitoring_config(text, path)
