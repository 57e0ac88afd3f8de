"""FeedbackExampleGen under LocalDagRunner: cursors in MLMD, spans, weights, windows, lineage.

The prediction log is written by the server's own logger and feedback service (in-process, no
HTTP), the pipeline is real TFX with SQLite MLMD; each run is a few seconds.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import tensorflow as tf
from ml_metadata.proto import metadata_store_pb2 as pb
from tfx import v1 as tfx
from tfx.dsl.input_resolution.canned_resolver_functions import rolling_range
from tfx.types import standard_artifacts
from tfx.types.channel_utils import union

from components.feedback_example_gen.component import FeedbackExampleGen
from serving.api import request_context
from serving.api.inference import ResolvedSpec
from serving.metadata.config import parse_connection
from serving.metadata.feedback import FeedbackService
from serving.metadata.mlmd_store import connect
from serving.metadata.prediction_log import PredictionLogger
from serving.metadata.sampling import parse_sampling
from tests.components.feedback_pipeline_parts import BaseExamples, RecordTrainingInput
from tests.metadata.history import seed_run

pytestmark = pytest.mark.integration

PIPELINE = "demo-pipeline"  # the pipeline context tests.metadata.history seeds pushes into


def _pipeline(root, log_dir, record, window_spans: int) -> tfx.dsl.Pipeline:
    base = BaseExamples()
    feedback = FeedbackExampleGen(
        model_name="demo", prediction_log_dirs=[str(log_dir)], corrected_weight=2.0
    )
    pushed_only = FeedbackExampleGen(
        model_name="demo", prediction_log_dirs=[str(log_dir)], versions="pipeline"
    ).with_id("PushedOnly")
    window = rolling_range(
        tfx.dsl.Channel(
            type=standard_artifacts.Examples,
            producer_component_id="FeedbackExampleGen",
            output_key="examples",
        ),
        num_spans=window_spans,
        min_spans=1,
    )
    trainer = RecordTrainingInput(
        examples=union([base.outputs["examples"], window]), record=str(record)
    )
    trainer.add_upstream_node(feedback)
    return tfx.dsl.Pipeline(
        pipeline_name=PIPELINE,
        pipeline_root=str(root / "pipeline_root"),
        components=[base, feedback, pushed_only, trainer],
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
            str(root / "metadata.sqlite")
        ),
    )


def _predict(logger, version: int, rid: str, xs: list[float], scores: list[float]) -> None:
    request_context.current.set(rid)
    logger.on_inference(
        "predict",
        ResolvedSpec("demo", version, "serving_default"),
        {"x1": np.array([[x] for x in xs], np.float32)},
        {"probability": np.array([[p] for p in scores], np.float32)},
    )


def _spans(root, node_id: str) -> list[pb.Artifact]:
    store = connect(parse_connection(f"sqlite://{root / 'metadata.sqlite'}"))
    context = store.get_context_by_type_and_name("node", f"{PIPELINE}.{node_id}")
    examples = [
        a for a in store.get_artifacts_by_context(context.id) if a.state == pb.Artifact.LIVE
    ]
    return sorted(examples, key=lambda a: a.properties["span"].int_value)


def _rows(artifact: pb.Artifact) -> list[tuple[float, int, float]]:
    """(x1, label, sample_weight) of every row in both splits."""
    files = tf.io.gfile.glob(os.path.join(artifact.uri, "Split-*", "*.gz"))
    rows = []
    for record in tf.data.TFRecordDataset(files, compression_type="GZIP"):
        feature = tf.train.Example.FromString(record.numpy()).features.feature
        rows.append(
            (
                feature["x1"].float_list.value[0],
                feature["label"].int64_list.value[0],
                feature["sample_weight"].float_list.value[0],
            )
        )
    return sorted(rows)


def _custom(artifact: pb.Artifact, key: str):
    value = artifact.custom_properties[key]
    return value.int_value if value.HasField("int_value") else value.string_value


def test_spans_resume_from_mlmd_weights_and_window(tmp_path):
    log_dir = tmp_path / "predictions"
    record = tmp_path / "trainer_input.jsonl"
    pipeline = _pipeline(tmp_path, log_dir, record, window_spans=2)
    runner = tfx.orchestration.LocalDagRunner()

    runner.run(pipeline)  # no server has logged anything yet: an empty first span
    [first] = _spans(tmp_path, "FeedbackExampleGen")
    assert (first.properties["span"].int_value, _custom(first, "num_examples")) == (1, 0)
    assert _rows(first) == []

    logger = PredictionLogger(str(log_dir), parse_sampling("0,demo=1"), "srv", lambda *_: None)
    try:
        _predict(logger, 7, "a", [1.0], [0.9])
        _predict(logger, 7, "b", [2.0, 3.0], [0.2, 0.7])
        _predict(logger, 7, "c", [4.0], [0.4])  # never labelled
        _predict(logger, 8, "d", [5.0], [0.6])  # a version this pipeline did not push
        service = FeedbackService(logger, None)
        answer = service.submit(
            "demo",
            None,
            {
                "labels": [
                    {"request_id": "a", "label": 1},  # right
                    {"request_id": "b", "label": [1, 0]},  # both rows wrong: corrected
                    {"request_id": "d", "label": 1},
                ]
            },
        )
        assert answer["accepted"] == 4
        store = connect(parse_connection(f"sqlite://{tmp_path / 'metadata.sqlite'}"))
        pushed_7, _, _ = seed_run(store, "pushed-elsewhere", "7", "/models/demo/7")

        runner.run(pipeline)
        second = _spans(tmp_path, "FeedbackExampleGen")[-1]
        assert second.properties["span"].int_value == 2
        assert _rows(second) == [(1.0, 1, 1.0), (2.0, 1, 2.0), (3.0, 0, 2.0), (5.0, 1, 1.0)]
        assert (_custom(second, "num_examples"), _custom(second, "num_corrected")) == (4, 2)
        assert json.loads(_custom(second, "feedback_versions")) == ["7", "8"]
        assert json.loads(second.properties["split_names"].string_value) == ["train", "eval"]
        # versions="pipeline": version 8 was never pushed by this pipeline.
        pushed_only = _spans(tmp_path, "PushedOnly")[-1]
        assert [row[0] for row in _rows(pushed_only)] == [1.0, 2.0, 3.0]
        # Lineage: the execution consumed the PushedModel version 7 was served from.
        [execution_id] = {
            e.execution_id
            for e in store.get_events_by_artifact_ids([second.id])
            if e.type == pb.Event.OUTPUT
        }
        inputs = [
            e for e in store.get_events_by_execution_ids([execution_id]) if e.type == pb.Event.INPUT
        ]
        assert [(e.artifact_id, e.path.steps[0].key) for e in inputs] == [
            (pushed_7, "served_model")
        ]

        runner.run(pipeline)  # nothing new: an empty span, the cursor unchanged
        third = _spans(tmp_path, "FeedbackExampleGen")[-1]
        assert (third.properties["span"].int_value, _rows(third)) == (3, [])
        assert _custom(third, "feedback_cursor") == _custom(second, "feedback_cursor")

        # A corrected label is a new label: the next span carries it (and only it).
        service.submit("demo", None, {"labels": [{"request_id": "a", "label": 0}]})
        runner.run(pipeline)
        fourth = _spans(tmp_path, "FeedbackExampleGen")[-1]
        assert (fourth.properties["span"].int_value, _rows(fourth)) == (4, [(1.0, 0, 2.0)])
    finally:
        logger.close()

    # The Trainer's input each run: base span 0 + the newest two feedback spans.
    assert [json.loads(line) for line in record.read_text().splitlines()] == [
        [0, 1],
        [0, 1, 2],
        [0, 2, 3],
        [0, 3, 4],
    ]


def test_constructor_rejects_what_cannot_work():
    with pytest.raises(ValueError, match="prediction_log_dirs is empty"):
        FeedbackExampleGen(model_name="demo", prediction_log_dirs=[])
    with pytest.raises(ValueError, match="versions must be 'all' or 'pipeline'"):
        FeedbackExampleGen(model_name="demo", prediction_log_dirs=["/p"], versions="latest")
    with pytest.raises(ValueError, match="label_type"):
        FeedbackExampleGen(model_name="demo", prediction_log_dirs=["/p"], label_type="str")
    with pytest.raises(ValueError, match="must be > 0"):
        FeedbackExampleGen(model_name="demo", prediction_log_dirs=["/p"], corrected_weight=0)
