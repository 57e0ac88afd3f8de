"""The status page's JSON document, built from a real core, metrics registry and feedback index."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import numpy as np
import pytest
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from serving.api import request_context
from serving.api.inference import ResolvedSpec
from serving.core.server_core import ServerCore
from serving.core.traffic_split import TrafficSplit
from serving.metadata.feedback import FeedbackService
from serving.metadata.prediction_log import PredictionLogger
from serving.metadata.sampling import parse_sampling
from serving.metadata.services import MetadataServices
from serving.monitoring.metrics import LatencyTotals, ServingMetrics
from serving.status.snapshot import RequestRates, StatusSnapshot, percentile


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def core(tmp_path):
    """Versions 1 and 2 of model ``m`` (complete SavedModel layouts), both served, labelled."""
    for version in (1, 2):
        (tmp_path / "m" / str(version)).mkdir(parents=True)
        (tmp_path / "m" / str(version) / "saved_model.pb").write_bytes(b"\0")
    config = text_format.Parse(
        f"""model_config_list {{ config {{
              name: "m" base_path: "{tmp_path / "m"}" model_platform: "tensorflow"
              model_version_policy {{ all {{}} }}
              version_labels {{ key: "stable" value: 1 }}
              version_labels {{ key: "canary" value: 2 }} }} }}""",
        model_server_config_pb2.ModelServerConfig(),
    )
    core = ServerCore(
        loader=lambda path: SimpleNamespace(close=lambda: None),  # the page never calls a model
        poll_wait_seconds=0.05,
    )
    core.apply_config(config)
    core.set_traffic_splits({"m": TrafficSplit.from_weights("m", {"stable": 90, "canary": 10})})
    core.start()
    assert core.wait_until_settled(30)
    yield core
    core.stop()


def test_percentile_interpolates_inside_the_bucket_like_prometheus():
    buckets = [(10.0, 0), (20.0, 4), (40.0, 8), (float("inf"), 8)]
    assert percentile(buckets, 8, 0.5) == pytest.approx(20.0)
    assert percentile(buckets, 8, 0.75) == pytest.approx(30.0)
    assert percentile(buckets, 0, 0.5) is None
    # Observations past the last finite bound: the bound is all that is known.
    assert percentile([(10.0, 1), (float("inf"), 2)], 2, 0.99) == 10.0


def test_rates_cover_the_last_minute_from_the_start_of_the_server():
    clock = Clock()
    rates = RequestRates(window=60.0, clock=clock)
    clock.now += 10
    first = rates.update({("m", "1"): LatencyTotals(20, 40_000.0, [(float("inf"), 20)])})
    assert first[("m", "1")]["rate_per_second"] == 2.0  # 20 calls in the 10 s since the start
    assert first[("m", "1")]["latency_ms"]["mean"] == 2.0
    clock.now += 100  # 110 s after the start: the start sample has left the window
    second = rates.update({("m", "1"): LatencyTotals(20, 40_000.0, [(float("inf"), 20)])})
    assert second[("m", "1")]["recent_requests"] == 0
    assert second[("m", "1")]["rate_per_second"] == 0.0
    assert second[("m", "1")]["latency_ms"] is None  # nothing recent
    assert second[("m", "1")]["lifetime_latency_ms"]["mean"] == 2.0
    assert second[("m", "1")]["requests"] == 20


def test_snapshot_lists_versions_labels_split_requests_and_feedback(core, tmp_path):
    clock = Clock()
    metrics = ServingMetrics()
    logger = PredictionLogger(str(tmp_path / "log"), parse_sampling("1"), "srv", lambda *_: None)
    services = MetadataServices(None, logger, FeedbackService(logger, None))
    snapshot = StatusSnapshot(core, metrics, services, "srv", clock=clock)
    try:
        for i, score in enumerate([0.9, 0.2, 0.7]):
            metrics.record_runtime("m", 2, "Predict", 0.004)
            request_context.current.set(f"r{i}")
            logger.on_inference(
                "predict",
                ResolvedSpec("m", 2, "serving_default"),
                {"x": np.array([[1.0]], np.float32)},
                {"p": np.array([[score]], np.float32)},
            )
        labels = [{"request_id": f"r{i}", "label": y} for i, y in enumerate([1, 0, 0])]
        services.feedback.submit("m", 2, {"labels": labels})
        clock.now += 30
        document = asyncio.run(snapshot.build())
    finally:
        logger.close()
    assert document["server"]["id"] == "srv"
    assert (document["server"]["feedback"], document["server"]["lineage"]) == (True, False)
    [model] = document["models"]
    assert model["labels"] == {"canary": 2, "stable": 1}
    assert model["traffic_split"] == {"canary": 10.0, "stable": 90.0}
    newest, oldest = model["versions"]
    assert (newest["version"], newest["state"], newest["labels"]) == (2, "AVAILABLE", ["canary"])
    assert (oldest["version"], oldest["state"], oldest["labels"]) == (1, "AVAILABLE", ["stable"])
    assert newest["loaded_at"].endswith("Z") and newest["load_seconds"] is not None
    assert newest["requests"]["requests"] == 3
    assert newest["requests"]["rate_per_second"] == pytest.approx(3 / 30, abs=1e-3)
    assert oldest["requests"] is None  # never called
    assert newest["feedback"]["num_labeled"] == 3
    assert newest["feedback"]["accuracy"] == pytest.approx(2 / 3)  # 0.7 -> 1, labelled 0
    assert oldest["feedback"] is None
    assert newest["lineage"] is None  # no --metadata_connection


def test_without_metrics_or_metadata_the_page_says_what_is_off(core):
    document = asyncio.run(StatusSnapshot(core, None, None, "srv").build())
    assert document["server"]["request_metrics"] is False
    assert document["server"]["feedback"] is False
    [model] = document["models"]
    assert [v["requests"] for v in model["versions"]] == [None, None]
