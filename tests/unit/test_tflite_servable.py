"""The TF Lite servable on models converted here: where its signatures come from, its
interpreter pool, request splitting and load errors."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import tensorflow as tf
from flatbuffers import flexbuffers
from tensorflow.core.framework import types_pb2
from tensorflow.lite.python import schema_py_generated as schema
from tensorflow.lite.tools import flatbuffer_utils

from serving.errors import Code, ServingError
from serving.servables import tflite
from serving.servables.signatures import SignatureDef
from serving.servables.tflite import TfLiteOptions, load_tflite_model
from tests.support.models import write_tflite_half_plus_two


def _graph_model() -> bytes:
    """A TF1-converted model: tensors ``x`` -> ``y`` (y = 0.5 * x + 2), no SignatureDefs."""
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 1], name="x")
        y = tf.identity(x * 0.5 + 2.0, name="y")
        with tf.compat.v1.Session(graph=graph) as session:
            return tf.compat.v1.lite.TFLiteConverter.from_session(session, [x], [y]).convert()


def _with_signature_metadata(model: bytes, signatures: dict[str, SignatureDef]) -> bytes:
    """Adds ``signature_defs_metadata`` the way TF Lite's signature_def_util writes it."""
    flat = flatbuffer_utils.convert_bytearray_to_object(bytearray(model))
    buffer = schema.BufferT()
    buffer.data = bytearray(
        flexbuffers.Dumps({k: s.SerializeToString().decode("ascii") for k, s in signatures.items()})
    )
    flat.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name = "signature_defs_metadata"
    entry.buffer = len(flat.buffers) - 1
    flat.metadata = [*(flat.metadata or []), entry]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(flat))


def _write(tmp_path, model: bytes) -> str:
    (tmp_path / "model.tflite").write_bytes(model)
    return str(tmp_path)


def _run(servable, key: str, inputs: dict, outputs: list[str]) -> dict:
    return {
        k: v.tolist() for k, v in servable.run(servable.signatures[key], inputs, outputs).items()
    }


def test_converter_signatures_become_signature_defs(tmp_path):
    servable = load_tflite_model(write_tflite_half_plus_two(str(tmp_path)), TfLiteOptions(1))
    assert set(servable.signatures) == {"serving_default", "triple"}
    x = servable.signatures["serving_default"].inputs["x"]
    assert x.dtype == types_pb2.DT_FLOAT
    assert [d.size for d in x.tensor_shape.dim] == [-1, 1]
    assert set(servable.meta_graph.signature_def) == {"serving_default", "triple"}
    rows = np.array([[2.0], [4.0]], np.float32)
    assert _run(servable, "serving_default", {"x": rows}, ["y"]) == {"y": [[3.0], [4.0]]}
    assert _run(servable, "triple", {"x": rows}, ["x_again", "y"]) == {
        "x_again": [[2.0], [4.0]],
        "y": [[6.0], [12.0]],
    }
    servable.close()


def test_signature_defs_metadata_wins_and_old_tensor_names_are_fixed(tmp_path):
    stored = SignatureDef(method_name="tensorflow/serving/predict")
    stored.inputs["features"].name = "x:0"  # old converters stored "x" for TF's "x:0"
    stored.inputs["features"].dtype = types_pb2.DT_FLOAT
    stored.outputs["prediction"].name = "y:0"
    stored.outputs["prediction"].dtype = types_pb2.DT_FLOAT
    path = _write(tmp_path, _with_signature_metadata(_graph_model(), {"serving_default": stored}))
    servable = load_tflite_model(path, TfLiteOptions(1))
    signature = servable.signatures["serving_default"]
    assert (signature.inputs["features"].name, signature.outputs["prediction"].name) == ("x", "y")
    result = _run(
        servable, "serving_default", {"features": np.array([[2.0]], np.float32)}, ["prediction"]
    )
    assert result == {"prediction": [[3.0]]}


def test_metadata_naming_an_unknown_tensor_fails_the_load(tmp_path):
    stored = SignatureDef()
    stored.inputs["features"].name = "nope:0"
    path = _write(tmp_path, _with_signature_metadata(_graph_model(), {"serving_default": stored}))
    with pytest.raises(ServingError) as error:
        load_tflite_model(path, TfLiteOptions(1))
    assert error.value.code == Code.INVALID_ARGUMENT
    assert "Signature input features references an unknown tensor" in error.value.message


def test_model_without_signatures_gets_serving_default_from_its_tensors(tmp_path):
    servable = load_tflite_model(_write(tmp_path, _graph_model()), TfLiteOptions(1))
    assert list(servable.signatures) == ["serving_default"]
    signature = servable.signatures["serving_default"]
    assert (list(signature.inputs), list(signature.outputs)) == (["x"], ["y"])
    assert signature.method_name == "tensorflow/serving/predict"
    # Any batch and rank the kernels accept: the input is resized to each request.
    assert _run(servable, "serving_default", {"x": np.array([2.0, 4.0], np.float32)}, ["y"]) == {
        "y": [3.0, 4.0]
    }


def _gated(monkeypatch, parties: int) -> list[int]:
    """Every interpreter call waits until ``parties`` calls are inside at once; returns the ids
    of the interpreters used. A pool that serialized calls would break the barrier."""
    barrier = threading.Barrier(parties, timeout=30)
    used: list[int] = []
    original = tflite._Group.run

    def run(self, interpreter, feeds, fetches):
        used.append(id(interpreter))
        barrier.wait()
        return original(self, interpreter, feeds, fetches)

    monkeypatch.setattr(tflite._Group, "run", run)
    return used


def test_concurrent_requests_run_on_separate_interpreters(tmp_path, monkeypatch):
    servable = load_tflite_model(write_tflite_half_plus_two(str(tmp_path)), TfLiteOptions(2))
    assert servable.pool_size == 2
    used = _gated(monkeypatch, parties=2)
    signature = servable.signatures["serving_default"]
    with ThreadPoolExecutor(2) as pool:
        results = list(
            pool.map(
                lambda x: servable.run(signature, {"x": np.array([[x]], np.float32)}, ["y"]),
                [2.0, 4.0],
            )
        )
    assert [r["y"].tolist() for r in results] == [[[3.0]], [[4.0]]]
    assert len(set(used)) == 2


def test_interpreters_per_pool_splits_a_request_across_interpreters(tmp_path, monkeypatch):
    servable = load_tflite_model(write_tflite_half_plus_two(str(tmp_path)), TfLiteOptions(3, 3))
    used = _gated(monkeypatch, parties=3)
    rows = np.arange(7, dtype=np.float32).reshape(7, 1)
    result = servable.run(servable.signatures["serving_default"], {"x": rows}, ["y"])
    assert result["y"].tolist() == (0.5 * rows + 2).tolist()  # all rows, in order
    assert len(set(used)) == 3
    servable.close()


def test_wrong_dtype_is_invalid_argument(tmp_path):
    servable = load_tflite_model(write_tflite_half_plus_two(str(tmp_path)), TfLiteOptions(1))
    with pytest.raises(ServingError) as error:
        servable.run(
            servable.signatures["serving_default"], {"x": np.array([[2.0]], np.float64)}, ["y"]
        )
    assert error.value.code == Code.INVALID_ARGUMENT
    assert "FLOAT64" in error.value.message


def test_a_file_that_is_not_a_tflite_model_fails_the_load_clearly(tmp_path):
    with pytest.raises(ServingError) as error:
        load_tflite_model(_write(tmp_path, b"not a flatbuffer at all"), TfLiteOptions(1))
    assert error.value.code == Code.INVALID_ARGUMENT
    assert "Cannot build a TFLite interpreter from" in error.value.message
