"""Prediction logging, the feedback join and live metrics, without a server."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

from serving.api import request_context
from serving.api.inference import ResolvedSpec
from serving.errors import ServingError
from serving.metadata.config import MetadataConfigError, parse_connection
from serving.metadata.export import write_examples
from serving.metadata.feedback import FeedbackService
from serving.metadata.prediction_index import compute_metrics
from serving.metadata.prediction_log import PredictionLogger
from serving.metadata.sampling import SamplingError, parse_sampling

SPEC = ResolvedSpec("demo", 7, "serving_default")


@pytest.fixture
def logger(tmp_path):
    logger = PredictionLogger(
        str(tmp_path / "log"), parse_sampling("0,demo=1"), "srv", lambda *_: None
    )
    yield logger
    logger.close()


def _predict(logger: PredictionLogger, rid: str, x: list[float], p: list[float]) -> None:
    request_context.current.set(rid)
    inputs = {"x1": np.array([[v] for v in x], np.float32)}
    logger.on_inference(
        "predict", SPEC, inputs, {"probability": np.array([[v] for v in p], np.float32)}
    )


def test_feedback_joins_by_request_id_and_reports_unknown_ids(logger):
    _predict(logger, "a", [1.0], [0.9])
    _predict(logger, "b", [2.0, 3.0], [0.2, 0.7])
    service = FeedbackService(logger, None)
    answer = service.submit(
        "demo",
        None,
        {
            "labels": [
                {"request_id": "a", "label": 1},
                {"request_id": "b", "label": [0, 0]},
                {"request_id": "zzz", "label": 1},
                {"request_id": "b", "label": 1},  # two rows: which one?
            ]
        },
    )
    assert answer["accepted"] == 3
    assert [u["request_id"] for u in answer["unknown"]] == ["zzz", "b"]
    assert "2 rows" in answer["unknown"][1]["reason"]
    [metrics] = answer["metrics"]
    assert metrics["num_labeled"] == 3 and metrics["num_predictions"] == 3
    assert metrics["accuracy"] == pytest.approx(2 / 3)
    # Re-sending the same labels replaces them instead of counting twice.
    again = service.submit("demo", 7, {"labels": [{"request_id": "a", "label": 1}]})
    assert again["metrics"][0]["num_labeled"] == 3
    wrong_version = service.submit("demo", 8, {"labels": [{"request_id": "a", "label": 1}]})
    assert wrong_version["unknown"][0]["reason"] == "answered by version 7, not 8"
    with pytest.raises(ServingError):
        service.submit("demo", None, {"labels": []})


def test_shards_are_prediction_logs_and_export_writes_examples(logger, tmp_path):
    _predict(logger, "a", [1.0], [0.9])
    _predict(logger, "b", [2.0], [0.1])
    _predict(logger, "c", [3.0], [0.4])
    FeedbackService(logger, None).submit(
        "demo", None, {"labels": [{"request_id": r, "label": 1} for r in "abc"]}
    )
    logger.close()
    [shard] = (tmp_path / "log" / "demo" / "7").iterdir()
    records = [
        prediction_log_pb2.PredictionLog.FromString(r.numpy())
        for r in tf.data.TFRecordDataset(str(shard))
    ]
    assert [r.predict_log.request.model_spec.version.value for r in records] == [7, 7, 7]
    summary = write_examples(str(tmp_path / "log"), "demo", str(tmp_path / "out"), "label", [])
    assert summary["num_examples"] == 3
    files = tf.io.gfile.glob(str(tmp_path / "out" / "Split-*" / "*.gz"))
    examples = [
        tf.train.Example.FromString(r.numpy())
        for r in tf.data.TFRecordDataset(files, compression_type="GZIP")
    ]
    assert sorted(e.features.feature["x1"].float_list.value[0] for e in examples) == [1.0, 2.0, 3.0]
    assert {e.features.feature["label"].int64_list.value[0] for e in examples} == {1}


def test_unsampled_models_are_not_logged(logger):
    request_context.current.set("x")
    logger.on_inference("predict", ResolvedSpec("other", 1, "s"), {}, {})
    logger.wait_idle(1.0)
    assert logger.index.lookup(["x"]) == {}


def test_metrics():
    # scikit-learn's roc_auc_score example: y=[0, 0, 1, 1], scores=[0.1, 0.4, 0.35, 0.8] -> 0.75
    auc = compute_metrics("m", "1", "predict", 4, [(0.1, 0), (0.4, 0), (0.35, 1), (0.8, 1)])
    assert (auc.task, auc.auc, auc.accuracy) == ("classification", 0.75, 0.75)
    regression = compute_metrics("m", "1", "predict", 2, [(2.0, 1.0), (0.0, 2.0)])
    assert (regression.task, regression.mae) == ("regression", 1.5)
    assert regression.rmse == pytest.approx((2.5) ** 0.5)


def test_connection_and_sampling_flags():
    assert parse_connection("sqlite:///data/m.sqlite").path == "/data/m.sqlite"
    mysql = parse_connection("mysql://u:p%40ss@db:3307/mlmd?socket=/run/s.sock", environ={})
    assert (mysql.kind, mysql.port, mysql.password, mysql.socket) == (
        "mysql",
        3307,
        "p@ss",
        "/run/s.sock",
    )
    assert "p@ss" not in mysql.describe() and "p@ss" not in mysql.as_argument()
    assert (
        parse_connection(
            "postgresql://u@h/db", environ={"TFX_SERVING_METADATA_PASSWORD": "x"}
        ).password
        == "x"
    )
    with pytest.raises(MetadataConfigError, match="names no database"):
        parse_connection("mysql://u@h:1")
    rates = parse_sampling("0.05, demo=1.0")
    assert (rates.rate("demo"), rates.rate("other")) == (1.0, 0.05)
    with pytest.raises(SamplingError):
        parse_sampling("demo=2")


def test_label_cursor_orders_labels_and_survives_old_indexes(tmp_path):
    import sqlite3

    from serving.metadata.prediction_index import INDEX_FILENAME, PredictionIndex

    # An index written before label cursors existed (no seq column), labels out of id order.
    folder = tmp_path / "old"
    folder.mkdir()
    db = sqlite3.connect(folder / INDEX_FILENAME)
    db.executescript(
        "CREATE TABLE requests (request_id TEXT PRIMARY KEY, model TEXT, version TEXT, "
        "kind TEXT, shard TEXT, shard_id TEXT, episode_id TEXT, ts REAL);"
        "CREATE TABLE rows (request_id TEXT, row INTEGER, example BLOB, score REAL, "
        "PRIMARY KEY (request_id, row));"
        "CREATE TABLE labels (request_id TEXT, row INTEGER, label REAL, received REAL, "
        "PRIMARY KEY (request_id, row));"
        "INSERT INTO requests VALUES ('b', 'demo', '7', 'predict', 's', 'sid', NULL, 1);"
        "INSERT INTO requests VALUES ('a', 'demo', '7', 'predict', 's', 'sid', NULL, 2);"
        "INSERT INTO rows VALUES ('a', 0, x'', 0.9); INSERT INTO rows VALUES ('b', 0, x'', 0.1);"
        "INSERT INTO labels VALUES ('a', 0, 1, 20.0); INSERT INTO labels VALUES ('b', 0, 0, 10.0);"
    )
    db.close()
    index = PredictionIndex(str(folder), create=False)
    assert [(r.request_id, r.seq) for r in index.joined("demo")] == [("b", 1), ("a", 2)]
    assert index.label_high_water() == 2
    index.add_labels([("b", 0, 1.0)])  # re-sent: a new seq, never a reused one
    assert [(r.request_id, r.seq) for r in index.joined("demo", after_seq=2)] == [("b", 3)]
    assert [r.request_id for r in index.joined("demo", after_seq=0, up_to_seq=2)] == ["a"]
    index_id = index.index_id
    index.close()
    assert PredictionIndex(str(folder), create=False).index_id == index_id
    with pytest.raises(FileNotFoundError, match="--prediction_log_dir"):
        PredictionIndex(str(tmp_path / "missing"), create=False)
