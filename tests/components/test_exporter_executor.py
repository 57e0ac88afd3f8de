"""Exporter executor on real SavedModels and Examples."""

from __future__ import annotations

import json
import logging
import os

import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2
from tfx.types import standard_artifacts

from components.exporter import executor
from components.exporter.signatures import UnservableModelError
from components.manifest import Manifest
from components.serving_requests import load_signature_defs


@pytest.fixture
def examples(examples_uri) -> standard_artifacts.Examples:
    artifact = standard_artifacts.Examples()
    artifact.uri = examples_uri
    artifact.split_names = '["train", "eval"]'
    return artifact


def _export(tmp_path, model_uri, examples=None, **exec_properties):
    model = standard_artifacts.Model()
    model.uri = model_uri
    exported = standard_artifacts.Model()
    exported.uri = str(tmp_path / "exported")
    inputs = {"model": [model]}
    if examples is not None:
        inputs["examples"] = [examples]
    executor.Executor().Do(inputs, {"exported_model": [exported]}, exec_properties)
    return exported


def _save(path, module, signatures):
    tf.saved_model.save(module, os.path.join(path, "Format-Serving"), signatures=signatures)
    return path


def _warmup_logs(serving_dir):
    path = os.path.join(serving_dir, "assets.extra", "tf_serving_warmup_requests")
    return [
        prediction_log_pb2.PredictionLog.FromString(r.numpy())
        for r in tf.data.TFRecordDataset(path)
    ]


def test_typed_sigmoid_model_gets_example_regress_and_classify_signatures(
    tmp_path, trained_model_uri, examples, caplog
):
    with caplog.at_level(logging.INFO, logger="tfx_serving_suite"):
        exported = _export(tmp_path, trained_model_uri, examples, num_warmup_examples=2)

    serving_dir = os.path.join(exported.uri, "Format-Serving")
    defs = load_signature_defs(serving_dir)
    assert {n: d.method_name for n, d in defs.items()} == {
        "serving_default": "tensorflow/serving/predict",
        "predict_examples": "tensorflow/serving/predict",
        "regression": "tensorflow/serving/regress",
        "classification": "tensorflow/serving/classify",
    }
    assert json.loads(exported.get_string_custom_property("signature_names")) == sorted(defs)
    summary = json.loads(exported.get_string_custom_property("signatures"))
    assert summary["serving_default"]["inputs"] == {"x1": "float[-1,1]", "x2": "float[-1,1]"}
    assert summary["regression"] == {
        "method": "regress",
        "inputs": {"inputs": "string[-1]"},
        "outputs": {"outputs": "float[-1]"},
    }
    assert summary["classification"] == {
        "method": "classify",
        "inputs": {"inputs": "string[-1]"},
        "outputs": {"classes": "string[-1,2]", "scores": "float[-1,2]"},
    }
    # 2 examples x 4 signatures, one PredictionLog kind per signature method.
    logs = _warmup_logs(serving_dir)
    assert exported.get_int_custom_property("warmup_requests") == len(logs) == 8
    assert (
        sorted(log.WhichOneof("log_type") for log in logs)
        == ["classify_log"] * 2 + ["predict_log"] * 4 + ["regress_log"] * 2
    )
    [summary_line] = [r.getMessage() for r in caplog.records if r.name == "tfx_serving_suite"]
    assert summary_line == (
        "Exporter: signatures serving_default (predict), classification (classify: classes "
        "'0', '1' from sigmoid 'score'), predict_examples (predict), regression (regress); "
        "8 warmup records"
    )
    manifest = Manifest.read(os.path.join(exported.uri, "manifest.json"))
    manifest.verify(serving_dir)
    assert exported.get_string_custom_property("manifest_digest") == manifest.digest

    # The derived signatures compute the same thing as the trained one.
    loaded = tf.saved_model.load(serving_dir)
    example = tf.train.Example()
    example.features.feature["x1"].float_list.value.append(1.0)
    example.features.feature["x2"].float_list.value.append(2.0)
    serialized = tf.constant([example.SerializeToString()])
    direct = loaded.signatures["serving_default"](x1=tf.constant([[1.0]]), x2=tf.constant([[2.0]]))
    via_examples = loaded.signatures["predict_examples"](examples=serialized)
    via_regress = loaded.signatures["regression"](inputs=serialized)
    via_classify = loaded.signatures["classification"](inputs=serialized)
    np.testing.assert_allclose(direct["score"].numpy(), via_examples["score"].numpy())
    np.testing.assert_allclose(direct["score"].numpy()[:, 0], via_regress["outputs"].numpy())
    # Estimator's binary head: classes ["0", "1"], scores [1 - p, p].
    p = float(direct["score"].numpy()[0, 0])
    assert via_classify["classes"].numpy().tolist() == [[b"0", b"1"]]
    np.testing.assert_allclose(via_classify["scores"].numpy(), [[1 - p, p]], rtol=1e-6)


class _Softmax(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name="x")])
    def serve(self, x):
        return {"probabilities": tf.nn.softmax(tf.concat([x, -x, x * 2], axis=1)[:, :3])}


class _Linear(tf.Module):
    """A regressor: y = 2 x1 - x2, no activation."""

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, 1], tf.float32, name="x1"),
            tf.TensorSpec([None, 1], tf.float32, name="x2"),
        ]
    )
    def serve(self, x1, x2):
        return {"value": 2.0 * x1 - x2}


def _classify(serving_dir: str, x: list[float] | None = None, **features: float):
    example = tf.train.Example()
    if x is not None:
        example.features.feature["x"].float_list.value.extend(x)
    for name, value in features.items():
        example.features.feature[name].float_list.value.append(value)
    signature = tf.saved_model.load(serving_dir).signatures["classification"]
    return signature(inputs=tf.constant([example.SerializeToString()]))


def test_softmax_model_gets_classes_and_scores(tmp_path):
    module = _Softmax()
    model_uri = _save(str(tmp_path / "m"), module, {"serving_default": module.serve})

    exported = _export(tmp_path, model_uri)

    serving_dir = os.path.join(exported.uri, "Format-Serving")
    defs = load_signature_defs(serving_dir)
    assert defs["classification"].method_name == "tensorflow/serving/classify"
    assert set(defs["classification"].outputs) == {"classes", "scores"}
    assert "regression" not in defs
    assert exported.get_int_custom_property("warmup_requests") == 0
    result = _classify(serving_dir, x=[1.0, -1.0])
    assert result["classes"].numpy().tolist() == [[b"0", b"1", b"2"]]
    expected = module.serve(tf.constant([[1.0, -1.0]]))["probabilities"].numpy()
    np.testing.assert_allclose(result["scores"].numpy(), expected, rtol=1e-6)


def test_regressor_without_sigmoid_gets_no_classification(tmp_path):
    module = _Linear()
    model_uri = _save(str(tmp_path / "m"), module, {"serving_default": module.serve})

    exported = _export(tmp_path, model_uri)

    defs = load_signature_defs(os.path.join(exported.uri, "Format-Serving"))
    assert set(defs) == {"serving_default", "predict_examples", "regression"}


def test_classification_can_be_forced_with_labels_or_turned_off(tmp_path, trained_model_uri):
    module = _Linear()
    linear_uri = _save(str(tmp_path / "linear"), module, {"serving_default": module.serve})

    forced = _export(
        tmp_path / "forced", linear_uri, classification="sigmoid", class_labels='["no", "yes"]'
    )
    off = _export(tmp_path / "off", trained_model_uri, classification="none")

    serving_dir = os.path.join(forced.uri, "Format-Serving")
    result = _classify(serving_dir, x1=0.25, x2=0.0)  # "probability" 0.5
    assert result["classes"].numpy().tolist() == [[b"no", b"yes"]]
    np.testing.assert_allclose(result["scores"].numpy(), [[0.5, 0.5]])
    off_defs = load_signature_defs(os.path.join(off.uri, "Format-Serving"))
    assert "classification" not in off_defs and "regression" in off_defs


@pytest.mark.parametrize(
    ("properties", "match"),
    [
        ({"classification": "softmax"}, "a softmax over one column is always 1.0"),
        (
            {"classification": "sigmoid", "class_labels": '["a", "b", "c"]'},
            "class_labels has 3 labels but output 'score' scores 2 classes",
        ),
        ({"classification": "logistic"}, "classification must be one of"),
    ],
)
def test_unusable_classification_options_fail_with_what_to_change(
    tmp_path, trained_model_uri, properties, match
):
    with pytest.raises(ValueError, match=match):
        _export(tmp_path, trained_model_uri, **properties)


def test_predict_signature_under_another_name_becomes_serving_default(tmp_path):
    module = _Softmax()
    model_uri = _save(str(tmp_path / "m"), module, {"predict": module.serve})

    exported = _export(tmp_path, model_uri)

    defs = load_signature_defs(os.path.join(exported.uri, "Format-Serving"))
    assert {"serving_default", "predict", "classification"} <= set(defs)


def test_model_without_signatures_fails_with_instructions(tmp_path):
    module = tf.Module()
    module.v = tf.Variable(1.0)
    tf.saved_model.save(module, str(tmp_path / "m" / "Format-Serving"))

    with pytest.raises(UnservableModelError, match=r"signatures=\{'serving_default': fn\}"):
        _export(tmp_path, str(tmp_path / "m"))


def test_inputs_missing_from_examples_fail_with_how_to_fix(tmp_path, examples):
    module = _Softmax()
    model_uri = _save(str(tmp_path / "m"), module, {"serving_default": module.serve})

    with pytest.raises(ValueError, match=r"no feature named 'x'.*num_warmup_examples=0"):
        _export(tmp_path, model_uri, examples)


def test_model_that_needs_no_changes_is_copied_byte_for_byte(tmp_path, trained_model_uri):
    first = _export(tmp_path / "a", trained_model_uri)

    second = _export(tmp_path / "b", first.uri)

    assert second.get_string_custom_property("manifest_digest") == first.get_string_custom_property(
        "manifest_digest"
    )
