"""Metrics: TF Serving's names and text format, the monitoring config file, device planning."""

from __future__ import annotations

import pytest
import tensorflow as tf

from serving.monitoring.config import (
    DEFAULT_PATH,
    MonitoringConfigError,
    parse_monitoring_config,
)
from serving.monitoring.metrics import ServingMetrics
from serving.servables import devices


def test_monitoring_config_is_tf_servings_text_proto():
    settings = parse_monitoring_config('prometheus_config { enable: true, path: "/metrics" }')
    assert (settings.enable, settings.path) == (True, "/metrics")
    assert parse_monitoring_config("prometheus_config { enable: true }").path == DEFAULT_PATH
    assert not parse_monitoring_config("").enable
    with pytest.raises(
        MonitoringConfigError,
        match=r"Error parsing text-format tensorflow\.serving\.MonitoringConfig",
    ):
        parse_monitoring_config("prometheus_config { enabled: true }")


def test_exposition_uses_tf_serving_names_without_client_suffixes():
    metrics = ServingMetrics(lambda: [("m", 2, "AVAILABLE"), ("m", 1, "END")])
    metrics.record_request("m", "OK")
    metrics.record_request("m", "OK")
    metrics.record_request("m", "INVALID_ARGUMENT")
    metrics.record_request_latency("m", "predict", "REST", 0.002)
    metrics.record_runtime("m", 2, "Predict", 0.001)
    metrics.record_inputs("batch_threads", [3])
    metrics.record_batch("batch_threads", 3, 4, [0.0001, 0.0002])
    metrics.record_warmup("/models/m/2", True, 5, 0.5)
    metrics.record_load("/models/m/2", True, 1.5)
    text = metrics.exposition().decode()
    lines = text.splitlines()
    values = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in lines
        if not line.startswith("#")
    }
    tf_serving = ":tensorflow:serving:"
    assert f"# TYPE {tf_serving}request_count counter" in lines
    assert values[f'{tf_serving}request_count{{model_name="m",status="OK"}}'] == 2
    assert values[f'{tf_serving}request_count{{model_name="m",status="INVALID_ARGUMENT"}}'] == 1
    assert f"# TYPE {tf_serving}request_latency histogram" in lines
    rest = 'model_name="m",API="predict",entrypoint="REST"'
    assert values[f"{tf_serving}request_latency_count{{{rest}}}"] == 1
    assert values[f"{tf_serving}batching_session:wrapped_run_count"] == 1
    pool = 'thread_pool_name="batch_threads"'
    assert values[f"{tf_serving}batching_session:queuing_latency_count{{{pool}}}"] == 2
    assert values[f'{tf_serving}batching:padding_size_sum{{{pool},execution_batch_size="4"}}'] == 1
    model_path = 'model_path="/models/m/2"'
    assert values[f'{tf_serving}model_warmup_records_read{{{model_path},status="OK"}}'] == 5
    assert values[f":tensorflow:cc:saved_model:load_latency{{{model_path}}}"] == 1.5e6
    state = 'model_name="m",version="2",state="AVAILABLE"'
    assert values[f"{tf_serving}model_version_state{{{state}}}"] == 1
    assert "_total" not in text and "_created" not in text and "# HELP" not in text
    assert values[':tfx_serving:version_runtime_latency_count{model_name="m",version="2"}'] == 1


def test_version_runtimes_read_back_per_version():
    metrics = ServingMetrics()
    metrics.record_runtime("m", 1, "Predict", 0.001)
    metrics.record_runtime("m", 1, "Classify", 0.003)
    metrics.record_runtime("m", 2, "Predict", 0.010)
    totals = metrics.version_runtimes()
    assert set(totals) == {("m", "1"), ("m", "2")}
    assert totals[("m", "1")].count == 2
    assert totals[("m", "1")].sum_us == pytest.approx(4000.0)
    assert totals[("m", "2")].buckets[-1] == (float("inf"), 1)


def test_cpu_host_runs_models_on_cpu():
    assert not tf.config.list_physical_devices("GPU")  # this machine has none
    plan = devices.configure_devices(0.0)
    assert plan.gpus == () and plan.device == "/device:CPU:0"
    assert tf.config.list_logical_devices("CPU")


def test_gpu_host_gets_memory_growth_unless_a_fraction_caps_it(monkeypatch):
    fake_gpu = tf.config.PhysicalDevice("/physical_device:GPU:0", "GPU")
    grown = []
    monkeypatch.setattr(devices.tf.config, "list_physical_devices", lambda kind: [fake_gpu])
    monkeypatch.setattr(
        devices.tf.config.experimental,
        "set_memory_growth",
        lambda gpu, enabled: grown.append((gpu.name, enabled)),
    )
    plan = devices.configure_devices(0.0)
    assert plan.device == "/device:GPU:0" and plan.memory_growth
    assert grown == [("/physical_device:GPU:0", True)]
    grown.clear()
    assert not devices.configure_devices(0.5).memory_growth
    assert grown == []
