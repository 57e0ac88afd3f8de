"""``--monitoring_config_file``: TF Serving's ``MonitoringConfig`` text proto.

tensorflow-serving-api does not ship ``monitoring_config.proto``; :mod:`serving.config_protos`
declares its messages with TF Serving's field names and numbers, parsed by protobuf's text format:
a file written for TF Serving (``prometheus_config { enable: true, path: "/metrics" }``) works
unchanged, and a typo is a parse error naming the line, not a silently disabled exporter.
"""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf.message import Message

from serving.config_protos import MonitoringConfig, parse_text_proto, read_text_proto
from serving.errors import ConfigError

DEFAULT_PATH = "/monitoring/prometheus/metrics"  # PrometheusExporter::kPrometheusPath


class MonitoringConfigError(ConfigError):
    """A monitoring config file that cannot be used; the message says what to fix."""


@dataclass(frozen=True)
class PrometheusSettings:
    enable: bool = False
    path: str = DEFAULT_PATH


def parse_monitoring_config(text: str, source: str = "<string>") -> PrometheusSettings:
    message = parse_text_proto(text, MonitoringConfig(), MonitoringConfigError, source)
    return _settings(message, source)


def read_monitoring_config(path: str) -> PrometheusSettings:
    return _settings(read_text_proto(path, MonitoringConfig(), MonitoringConfigError), path)


def _settings(message: Message, source: str) -> PrometheusSettings:
    prometheus = message.prometheus_config
    path = prometheus.path or DEFAULT_PATH
    if not path.startswith("/"):
        raise MonitoringConfigError(f"{source}: prometheus_config.path must start with '/'")
    return PrometheusSettings(prometheus.enable, path)
