"""Exporter with a real (tiny) TensorFlow Transform graph: the exported model takes raw features.

The transform graph is produced the way TFX's Transform component does it (``tft_beam``
analysis on the in-process Beam runner, transform_fn + raw metadata), with a z-score and a
vocabulary (analyzers, so variables and an asset must travel), plus a sparse raw feature.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile

import apache_beam as beam
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam
from tensorflow_transform.tf_metadata import dataset_metadata
from tfx.proto import infra_validator_pb2
from tfx.types import channel_utils, standard_artifacts
from tfx.utils import proto_utils

from components.exporter import executor
from components.exporter.component import Exporter
from components.infra_validator import executor as infra_validator_executor
from components.serving_requests import load_signature_defs

RAW_SPEC = {
    "x1": tf.io.FixedLenFeature([], tf.float32),
    "color": tf.io.FixedLenFeature([], tf.string),
    "tags": tf.io.VarLenFeature(tf.string),
    "label": tf.io.FixedLenFeature([], tf.int64),
}
ROWS = [
    {"x1": 1.0, "color": b"red", "tags": [b"a"], "label": 1},
    {"x1": 3.0, "color": b"blue", "tags": [b"a", b"b"], "label": 0},
    {"x1": 5.0, "color": b"red", "tags": [], "label": 1},
]
X1_MEAN, X1_STD = 3.0, float(np.std([1.0, 3.0, 5.0]))
COLOR_IDS = {b"red": 0, b"blue": 1}  # by frequency


def preprocessing_fn(inputs):
    tags = inputs["tags"]
    ones = tf.SparseTensor(tags.indices, tf.ones_like(tags.values, tf.float32), tags.dense_shape)
    return {
        "x1_z": tft.scale_to_z_score(inputs["x1"]),
        "color_id": tft.compute_and_apply_vocabulary(inputs["color"]),
        "n_tags": tf.reduce_sum(tf.sparse.to_dense(ones), axis=1),
        "label": inputs["label"],
    }


@pytest.fixture(scope="module")
def transform_graph_dir(tmp_path_factory) -> str:
    """A Transform component's output: ``transform_fn/``, ``transformed_metadata/``,
    ``metadata/`` (raw)."""
    out = str(tmp_path_factory.mktemp("transform_graph"))
    metadata = dataset_metadata.DatasetMetadata.from_feature_spec(RAW_SPEC)
    with (
        tft_beam.Context(temp_dir=tempfile.mkdtemp(dir=out)),
        beam.Pipeline(
            argv=["--direct_running_mode=in_memory", "--direct_num_workers=1"]
        ) as pipeline,
    ):
        transform_fn = (
            pipeline | beam.Create(ROWS),
            metadata,
        ) | tft_beam.AnalyzeDataset(preprocessing_fn)
        _ = transform_fn | tft_beam.WriteTransformFn(out)
        _ = metadata | tft_beam.WriteMetadata(
            os.path.join(out, tft.TFTransformOutput.RAW_METADATA_DIR), pipeline
        )
    return out


def _trained_model(path: str, second: str = "color_id", dtype: tf.DType = tf.int64) -> str:
    """A model trained on transformed features, with Keras-style [batch, 1] inputs."""
    module = tf.Module()
    module.w = tf.Variable(2.0)

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, 1], tf.float32, name="x1_z"),
            tf.TensorSpec([None, 1], dtype, name=second),
        ]
    )
    def serve(x1_z, other):
        return {"score": x1_z * module.w + tf.cast(other, tf.float32)}

    tf.saved_model.save(
        module, os.path.join(path, "Format-Serving"), signatures={"serving_default": serve}
    )
    return path


def _example(x1: float, color: bytes, tags: list[bytes]) -> tf.train.Example:
    example = tf.train.Example()
    example.features.feature["x1"].float_list.value.append(x1)
    example.features.feature["color"].bytes_list.value.append(color)
    example.features.feature["tags"].bytes_list.value.extend(tags)
    return example


@pytest.fixture
def raw_examples(tmp_path) -> standard_artifacts.Examples:
    split = tmp_path / "examples" / "Split-eval"
    split.mkdir(parents=True)
    with tf.io.TFRecordWriter(str(split / "data.gz"), options="GZIP") as writer:
        for row in ROWS:
            example = _example(row["x1"], row["color"], row["tags"])
            example.features.feature["label"].int64_list.value.append(row["label"])
            writer.write(example.SerializeToString())
    artifact = standard_artifacts.Examples()
    artifact.uri = str(tmp_path / "examples")
    artifact.split_names = '["eval"]'
    return artifact


def _export(tmp_path, model_uri, graph_dir, examples=None):
    model = standard_artifacts.Model()
    model.uri = model_uri
    graph = standard_artifacts.TransformGraph()
    graph.uri = graph_dir
    exported = standard_artifacts.Model()
    exported.uri = str(tmp_path / "exported")
    inputs = {"model": [model], "transform_graph": [graph]}
    if examples is not None:
        inputs["examples"] = [examples]
    executor.Executor().Do(inputs, {"exported_model": [exported]}, {"num_warmup_examples": 2})
    return exported


def _score(x1: float, color: bytes) -> float:
    return (x1 - X1_MEAN) / X1_STD * 2.0 + COLOR_IDS.get(color, -1)


@pytest.mark.integration
def test_exported_model_serves_raw_features_without_the_transform_graph(
    tmp_path, transform_graph_dir, raw_examples
):
    graph_dir = shutil.copytree(transform_graph_dir, tmp_path / "graph")
    model_uri = _trained_model(str(tmp_path / "trained"))

    exported = _export(tmp_path, model_uri, str(graph_dir), raw_examples)
    shutil.rmtree(graph_dir)  # the exported model must carry the vocabulary and statistics

    serving_dir = os.path.join(exported.uri, "Format-Serving")
    summary = json.loads(exported.get_string_custom_property("signatures"))
    # Only the raw features the model needs: no label, no unused tags.
    assert summary["serving_default"]["inputs"] == {"color": "string[-1]", "x1": "float[-1]"}
    assert set(summary) == {"serving_default", "predict_examples", "regression"}
    assert exported.get_int_custom_property("transform_embedded") == 1
    assert exported.get_int_custom_property("warmup_requests") == 6
    loaded = tf.saved_model.load(serving_dir)
    typed = loaded.signatures["serving_default"](
        x1=tf.constant([5.0, 3.0, 1.0]), color=tf.constant([b"blue", b"red", b"green"])
    )
    np.testing.assert_allclose(
        typed["score"].numpy()[:, 0],
        [_score(5.0, b"blue"), _score(3.0, b"red"), _score(1.0, b"green")],
        rtol=1e-5,
    )
    serialized = tf.constant([_example(5.0, b"blue", []).SerializeToString()])
    regressed = loaded.signatures["regression"](inputs=serialized)["outputs"].numpy()
    np.testing.assert_allclose(regressed, [_score(5.0, b"blue")], rtol=1e-5)

    # The model server loads it (vocabulary table included) and answers raw-feature canaries.
    blessing = standard_artifacts.InfraBlessing()
    blessing.uri = str(tmp_path / "blessing")
    os.makedirs(blessing.uri)
    request_spec = infra_validator_pb2.RequestSpec(
        tensorflow_serving=infra_validator_pb2.TensorFlowServingRequestSpec(
            signature_names=sorted(summary)
        )
    )
    infra_validator_executor.Executor().Do(
        {"model": [exported], "examples": [raw_examples]},
        {"blessing": [blessing]},
        {
            "serving_spec": proto_utils.proto_to_json(infra_validator_pb2.ServingSpec()),
            "validation_spec": proto_utils.proto_to_json(
                infra_validator_pb2.ValidationSpec(max_loading_time_seconds=120, num_tries=1)
            ),
            "request_spec": proto_utils.proto_to_json(request_spec),
        },
    )
    assert blessing.get_int_custom_property("blessed") == 1, blessing.get_string_custom_property(
        "reason_message"
    )


def test_model_needing_a_sparse_raw_feature_serves_serialized_examples(
    tmp_path, transform_graph_dir
):
    model_uri = _trained_model(str(tmp_path / "trained"), second="n_tags", dtype=tf.float32)

    exported = _export(tmp_path, model_uri, transform_graph_dir)

    serving_dir = os.path.join(exported.uri, "Format-Serving")
    defs = load_signature_defs(serving_dir)
    assert set(defs["serving_default"].inputs) == {"examples"}
    assert "regression" in defs
    loaded = tf.saved_model.load(serving_dir)
    serialized = tf.constant([_example(3.0, b"red", [b"a", b"b", b"c"]).SerializeToString()])
    result = loaded.signatures["serving_default"](examples=serialized)["score"].numpy()
    np.testing.assert_allclose(result, [[3.0]], rtol=1e-5)  # z(3) = 0, three tags


def test_model_not_trained_on_this_transform_is_rejected(tmp_path, transform_graph_dir):
    model_uri = _trained_model(str(tmp_path / "trained"), second="color_index")

    with pytest.raises(ValueError, match=r"\['color_index'\].*not outputs of the transform"):
        _export(tmp_path, model_uri, transform_graph_dir)


def test_component_takes_the_stock_transform_graph_channel():
    exporter = Exporter(
        model=channel_utils.as_channel([standard_artifacts.Model()]),
        transform_graph=channel_utils.as_channel([standard_artifacts.TransformGraph()]),
    )

    assert exporter.inputs["transform_graph"].type_name == "TransformGraph"
