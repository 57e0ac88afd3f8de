"""TF Lite versions (``--prefer_tflite_model``) in the real server: REST and gRPC Predict,
metadata from the model's signatures, and batching through the same batcher.

The model is converted here by ``tf.lite.TFLiteConverter`` and its version directory holds
only ``model.tflite``, as in TF Serving's own TF Lite test models. One server (batching on)
serves every test: TF Lite calls go through the batcher like SavedModel ones.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from tests.support.models import write_half_plus_two, write_tflite_half_plus_two
from tests.support.server_process import ServerProcess

pytestmark = pytest.mark.integration

BATCHING = """
max_batch_size { value: 8 }
batch_timeout_micros { value: 2000 }
max_enqueued_batches { value: 1000 }
num_batch_threads { value: 1 }
allowed_batch_sizes: 4
allowed_batch_sizes: 8
"""


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("tflite")
    write_tflite_half_plus_two(str(root / "lite" / "123"))
    # A version with both files: the flag picks model.tflite, which here computes 3 * x.
    both = root / "both" / "1"
    write_half_plus_two(str(both))
    lite = tf.io.gfile.GFile(str(root / "lite" / "123" / "model.tflite"), "rb").read()
    (both / "model.tflite").write_bytes(lite)
    config = root / "models.config"
    config.write_text(
        "model_config_list {\n"
        f'config {{ name: "lite" base_path: "{root / "lite"}" model_platform: "tensorflow" }}\n'
        f'config {{ name: "both" base_path: "{root / "both"}" model_platform: "tensorflow" }}\n'
        "}\n"
    )
    return root


@pytest.fixture(scope="module")
def server(store):
    (store / "batching.txt").write_text(BATCHING)
    (store / "monitoring.txt").write_text("prometheus_config { enable: true }\n")
    args = [
        f"--model_config_file={store / 'models.config'}",
        "--prefer_tflite_model=true",
        "--num_tflite_pools=2",
        "--enable_batching",
        f"--batching_parameters_file={store / 'batching.txt'}",
        f"--monitoring_config_file={store / 'monitoring.txt'}",
    ]
    with ServerProcess(args, grpc=True) as process:
        process.wait_for(lambda: process.available_versions("lite") == [123])
        process.wait_for(lambda: process.available_versions("both") == [1])
        yield process


@pytest.fixture(scope="module")
def stub(server):
    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    yield prediction_service_pb2_grpc.PredictionServiceStub(channel)
    channel.close()


def _predict(stub, model: str, x, signature: str = "") -> predict_pb2.PredictResponse:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.asarray(x, np.float32)))
    return stub.Predict(request, timeout=30)


def test_rest_predict_row_and_columnar(server):
    status, body = server.json("POST", "/v1/models/lite:predict", {"instances": [[2.0], [3.0]]})
    assert (status, body) == (200, {"predictions": [[3.0], [3.5]]})
    status, body = server.json("POST", "/v1/models/lite:predict", {"inputs": [[4.0]]})
    assert (status, body) == (200, {"outputs": [[4.0]]})


def test_rest_predict_other_signature(server):
    status, body = server.json(
        "POST",
        "/v1/models/lite:predict",
        {"signature_name": "triple", "instances": [[1.0], [2.0]]},
    )
    assert status == 200, body
    assert body == {"predictions": [{"y": [3.0], "x_again": [1.0]}, {"y": [6.0], "x_again": [2.0]}]}


def test_grpc_predict_with_tf_serving_client_pattern(stub):
    # TF Serving's own TF Lite test: a [1] tensor into a model converted with [None, 1].
    response = _predict(stub, "lite", [2.0])
    assert response.outputs["y"].dtype == types_pb2.DT_FLOAT
    assert list(response.outputs["y"].float_val) == [3.0]
    assert response.model_spec.version.value == 123
    assert response.model_spec.signature_name == "serving_default"
    batch = _predict(stub, "lite", [[2.0], [4.0], [6.0]])
    assert tf.make_ndarray(batch.outputs["y"]).tolist() == [[3.0], [4.0], [5.0]]


def test_model_tflite_is_preferred_over_the_saved_model(stub):
    # half_plus_two's SavedModel would answer 3.0; the TF Lite model's "triple" answers 6.0.
    response = _predict(stub, "both", [[2.0]], signature="triple")
    assert tf.make_ndarray(response.outputs["y"]).tolist() == [[6.0]]


def test_grpc_errors_keep_tf_serving_codes(stub):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "lite"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto([[2.0]], dtype=tf.float64))
    with pytest.raises(grpc.RpcError) as wrong_dtype:
        stub.Predict(request, timeout=30)
    assert wrong_dtype.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "FLOAT64" in wrong_dtype.value.details()
    with pytest.raises(grpc.RpcError) as unknown:
        _predict(stub, "lite", [[2.0]], signature="nope")
    assert unknown.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert unknown.value.details() == 'Serving signature key "nope" not found.'


def test_metadata_describes_the_tflite_signatures(server, stub):
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "lite"
    response = stub.GetModelMetadata(request, timeout=30)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(signatures)
    assert set(signatures.signature_def) == {"serving_default", "triple"}
    x = signatures.signature_def["serving_default"].inputs["x"]
    assert x.dtype == types_pb2.DT_FLOAT
    assert [d.size for d in x.tensor_shape.dim] == [-1, 1]
    assert set(signatures.signature_def["triple"].outputs) == {"y", "x_again"}
    status, body = server.json("GET", "/v1/models/lite/metadata")
    assert status == 200
    rest_x = body["metadata"]["signature_def"]["signature_def"]["serving_default"]["inputs"]["x"]
    assert rest_x["dtype"] == "DT_FLOAT"
    assert [d["size"] for d in rest_x["tensor_shape"]["dim"]] == ["-1", "1"]


def _metrics(server) -> dict[str, float]:
    status, body = server.request("GET", "/monitoring/prometheus/metrics")
    assert status == 200
    values = {}
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            series, value = line.rsplit(" ", 1)
            values[series] = float(value)
    return values


def test_batching_merges_tflite_requests(server, stub):
    before = _metrics(server)
    requests = [[[float(i + j)] for j in range(1 + i % 3)] for i in range(24)]

    def call(index: int) -> list:
        rows = requests[index]
        if index % 2:
            return tf.make_ndarray(_predict(stub, "lite", rows).outputs["y"]).tolist()
        status, body = server.json("POST", "/v1/models/lite:predict", {"instances": rows})
        assert status == 200, body
        return body["predictions"]

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(call, range(len(requests))))
    after = _metrics(server)
    for rows, result in zip(requests, results, strict=True):
        assert result == [[0.5 * x + 2] for (x,) in rows]
    inputs = ':tensorflow:serving:batching:input_batch_size_count{thread_pool_name="batch_threads"}'
    runs = ":tensorflow:serving:batching_session:wrapped_run_count"
    assert after[inputs] - before.get(inputs, 0) == len(requests)
    assert 0 < after[runs] - before.get(runs, 0) <= len(requests)
