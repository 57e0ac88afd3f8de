"""Warmup replay against a real SavedModel: what is replayed, how often, and what fails a load."""

from __future__ import annotations

import os

import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2, regression_pb2

from serving.errors import Code, ServingError
from serving.servables.saved_model import LoadOptions, load_saved_model
from serving.servables.warmup import MAX_RECORDS, WARMUP_FILE, warm_up, write_warmup_file


class _Model(tf.Module):
    """y = 0.5x + 2, fed as a tensor or as serialized tf.Examples (regress)."""

    @tf.function(input_signature=[tf.TensorSpec([None, 1], tf.float32, name="x")])
    def predict(self, x):
        return {"y": 0.5 * x + 2}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
    def regress(self, serialized):
        x = tf.io.parse_example(serialized, {"x": tf.io.FixedLenFeature([1], tf.float32)})["x"]
        return {"outputs": 0.5 * x + 2}


def write_model(path: str) -> str:
    module = _Model()
    signatures = {"serving_default": module.predict, "regress_x_to_y": module.regress}
    tf.saved_model.save(module, path, signatures=signatures)
    return path


def predict_log(rows: int = 2) -> prediction_log_pb2.PredictionLog:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "ignored"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.ones((rows, 1), np.float32)))
    return prediction_log_pb2.PredictionLog(
        predict_log=prediction_log_pb2.PredictLog(request=request)
    )


def regress_log() -> prediction_log_pb2.PredictionLog:
    request = regression_pb2.RegressionRequest()
    request.model_spec.signature_name = "regress_x_to_y"
    example = request.input.example_list.examples.add()
    example.features.feature["x"].float_list.value.append(1.0)
    return prediction_log_pb2.PredictionLog(
        regress_log=prediction_log_pb2.RegressLog(request=request)
    )


class Spy:
    """Counts calls and batch sizes on the way to a real servable."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.path = inner.path
        self.signatures = inner.signatures
        self.calls: list[tuple[str, int]] = []

    def run(self, signature, inputs, aliases, timeout_ms=0):
        (value,) = inputs.values()
        self.calls.append((aliases[0], len(value)))
        return self.inner.run(signature, inputs, aliases, timeout_ms)


@pytest.fixture()
def model(tmp_path):
    path = write_model(str(tmp_path / "1"))
    servable = load_saved_model(path, LoadOptions())
    yield servable
    servable.close()


def test_no_file_is_fine(model):
    assert warm_up(Spy(model)) == 0


def test_records_are_replayed_iterations_times(model):
    write_warmup_file(
        model.path, [predict_log(), regress_log(), prediction_log_pb2.PredictionLog()]
    )
    spy = Spy(model)
    assert warm_up(spy, iterations=3) == 2  # the empty log_type is skipped
    assert spy.calls == [("y", 2)] * 3 + [("outputs", 1)] * 3


def test_every_allowed_batch_size_runs_once_on_the_unbatched_model(model):
    write_warmup_file(model.path, [predict_log(rows=1)])
    spy = Spy(model)
    wrapper = Spy(spy)  # stands for the batching wrapper: ``inner`` is the model itself
    warm_up(wrapper, allowed_batch_sizes=(2, 4, 8))
    assert wrapper.calls == [("y", 1)]
    assert spy.calls == [("y", 1), ("y", 2), ("y", 4), ("y", 8)]


def test_allowed_sizes_without_records_use_zeros_for_numeric_signatures(model):
    spy = Spy(model)
    warm_up(Spy(spy), allowed_batch_sizes=(4,))
    assert spy.calls == [("y", 4)]  # the string (tf.Example) signature is skipped


def test_more_than_the_record_limit_fails_the_load(model):
    write_warmup_file(model.path, [predict_log()] * (MAX_RECORDS + 1))
    with pytest.raises(ServingError, match=r"exceeds the maximum \(1000\)"):
        warm_up(model)


def test_corrupt_file_is_data_loss(model):
    path = os.path.join(model.path, WARMUP_FILE)
    os.makedirs(os.path.dirname(path))
    with open(path, "wb") as handle:
        handle.write(b"definitely not a tfrecord file")
    with pytest.raises(ServingError) as err:
        warm_up(model)
    assert err.value.code == Code.DATA_LOSS
    assert "TFRecord format" in err.value.message


def test_unsupported_log_type_and_failing_request_fail_the_load(model):
    unsupported = prediction_log_pb2.PredictionLog()
    unsupported.session_run_log.SetInParent()
    write_warmup_file(model.path, [unsupported])
    with pytest.raises(ServingError) as err:
        warm_up(model)
    assert err.value.code == Code.UNIMPLEMENTED

    bad = predict_log()
    bad.predict_log.request.inputs["nope"].CopyFrom(tf.make_tensor_proto([1.0]))
    write_warmup_file(model.path, [bad])
    with pytest.raises(ServingError) as err:
        warm_up(model)
    assert err.value.code == Code.INVALID_ARGUMENT
