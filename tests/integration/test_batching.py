"""Batching, warmup and metrics in the real server: REST and gRPC requests share one batcher."""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (
    predict_pb2,
    prediction_log_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from serving.servables.warmup import write_warmup_file
from tests.support.gate import OPEN, Gate, write_gated_double
from tests.support.models import write_half_plus_two
from tests.support.server_process import ServerProcess

pytestmark = pytest.mark.integration

BATCHING = """
max_batch_size { value: 8 }
batch_timeout_micros { value: 2000 }
max_enqueued_batches { value: 1000 }
num_batch_threads { value: 1 }
allowed_batch_sizes: 2
allowed_batch_sizes: 4
allowed_batch_sizes: 8
"""


def _warmup_logs() -> list[prediction_log_pb2.PredictionLog]:
    predict = predict_pb2.PredictRequest()
    predict.inputs["x"].CopyFrom(tf.make_tensor_proto(np.ones((1, 1), np.float32)))
    regress = regression_pb2.RegressionRequest()
    regress.model_spec.signature_name = "regress_x_to_y"
    regress.input.example_list.examples.add().features.feature["x"].float_list.value.append(1)
    return [
        prediction_log_pb2.PredictionLog(
            predict_log=prediction_log_pb2.PredictLog(request=predict)
        ),
        prediction_log_pb2.PredictionLog(
            regress_log=prediction_log_pb2.RegressLog(request=regress)
        ),
    ]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("batching")
    good = write_half_plus_two(str(root / "half" / "1"))
    write_warmup_file(good, _warmup_logs())
    broken = write_half_plus_two(str(root / "broken" / "1"))
    bad = predict_pb2.PredictRequest()
    bad.inputs["no_such_input"].CopyFrom(tf.make_tensor_proto([1.0]))
    write_warmup_file(
        broken,
        [prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=bad))],
    )
    write_gated_double(str(root / "gated" / "1"))
    config = root / "models.config"
    config.write_text(
        "model_config_list {\n"
        f'config {{ name: "half" base_path: "{root / "half"}" model_platform: "tensorflow" }}\n'
        f'config {{ name: "broken" base_path: "{root / "broken"}" model_platform: "tensorflow" }}\n'
        f'config {{ name: "gated" base_path: "{root / "gated"}" model_platform: "tensorflow" }}\n'
        "}\n"
    )
    batching = root / "batching.txt"
    batching.write_text(BATCHING)
    monitoring = root / "monitoring.txt"
    monitoring.write_text("prometheus_config { enable: true }\n")
    args = [
        f"--model_config_file={config}",
        "--enable_batching",
        f"--batching_parameters_file={batching}",
        f"--monitoring_config_file={monitoring}",
        "--num_request_iterations_for_warmup=2",
        "--max_num_load_retries=0",
    ]
    with ServerProcess(args, grpc=True) as process:
        process.wait_for(lambda: process.available_versions("half") == [1])
        process.wait_for(lambda: process.available_versions("gated") == [1])
        yield process


def _metrics(server) -> dict[str, float]:
    status, body = server.request("GET", "/monitoring/prometheus/metrics")
    assert status == 200
    values = {}
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            series, value = line.rsplit(" ", 1)
            values[series] = float(value)
    return values


def _rest_predict(server, rows: list[list[float]]) -> tuple[int, dict]:
    return server.json("POST", "/v1/models/half:predict", {"instances": rows})


def _grpc_predict(stub, rows: list[list[float]]) -> np.ndarray:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "half"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.asarray(rows, np.float32)))
    response = stub.Predict(request, timeout=60)
    return tf.make_ndarray(response.outputs["y"])


_POOL = 'thread_pool_name="batch_threads"'
_RUNS = ":tensorflow:serving:batching_session:wrapped_run_count"
_INPUTS = f":tensorflow:serving:batching:input_batch_size_count{{{_POOL}}}"
_BATCH_SIZE_SUM = f":tensorflow:serving:batching:processed_batch_size_sum{{{_POOL}}}"


def _delta(before: dict[str, float], after: dict[str, float], series: str) -> float:
    return after.get(series, 0.0) - before.get(series, 0.0)


def test_rest_and_grpc_requests_queued_together_run_as_one_batch(server, tmp_path):
    """Forced sharing: a full batch of 8 holds the only batch thread on a closed gate; three
    REST and three gRPC requests of one row queue behind it (counted on the metrics page, no
    sleeping); then the gate opens. Exactly two model runs follow: the 8 rows, then the six
    queued rows together, padded to the allowed size 8."""
    gate = Gate(str(tmp_path))
    before = _metrics(server)
    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

    def rest(values: list[float], gate_path: str) -> list:
        rows = [{"x": [v], "gate": gate_path} for v in values]
        status, body = server.json("POST", "/v1/models/gated:predict", {"instances": rows})
        assert status == 200, body
        return body["predictions"]

    def grpc_call(value: float) -> list:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "gated"
        request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.asarray([[value]], np.float32)))
        request.inputs["gate"].CopyFrom(tf.make_tensor_proto([OPEN.encode()]))
        response = stub.Predict(request, timeout=60)
        return tf.make_ndarray(response.outputs["y"]).tolist()

    with ThreadPoolExecutor(7) as pool:
        blocker = pool.submit(rest, [float(i) for i in range(8)], gate.path)
        server.wait_for(lambda: _delta(before, _metrics(server), _INPUTS) == 1, interval=0.05)
        queued = [pool.submit(rest, [10.0 + i], OPEN) for i in range(3)]
        queued += [pool.submit(grpc_call, 20.0 + i) for i in range(3)]
        server.wait_for(lambda: _delta(before, _metrics(server), _INPUTS) == 7, interval=0.05)
        assert not blocker.done() and not any(f.done() for f in queued)
        gate.open()
        assert blocker.result(60) == [[2.0 * i] for i in range(8)]
        answers = [f.result(60) for f in queued]
    channel.close()
    assert answers == [[[20.0]], [[22.0]], [[24.0]], [[40.0]], [[42.0]], [[44.0]]]
    after = _metrics(server)
    assert _delta(before, after, _RUNS) == 2
    assert _delta(before, after, _BATCH_SIZE_SUM) == 16  # 8, and 6 rows padded to 8
    padding = f':tensorflow:serving:batching:padding_size_sum{{{_POOL},execution_batch_size="8"}}'
    assert _delta(before, after, padding) == 2


def test_concurrent_rest_and_grpc_requests_get_their_own_rows(server):
    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    before = _metrics(server)
    requests = [[[float(i + j)] for j in range(1 + i % 3)] for i in range(48)]

    def call(index: int):
        rows = requests[index]
        if index % 2:
            return _grpc_predict(stub, rows).tolist()
        status, body = _rest_predict(server, rows)
        assert status == 200, body
        return body["predictions"]

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(call, range(len(requests))))
    channel.close()
    for rows, result in zip(requests, results, strict=True):
        assert result == [[0.5 * x + 2] for (x,) in rows]
    after = _metrics(server)
    runs = ":tensorflow:serving:batching_session:wrapped_run_count"
    pool_label = 'thread_pool_name="batch_threads"'
    inputs = f":tensorflow:serving:batching:input_batch_size_count{{{pool_label}}}"
    assert after[inputs] - before.get(inputs, 0) == len(requests)
    assert 0 < after[runs] - before[runs] <= len(requests)
    ok = ':tensorflow:serving:request_count{model_name="half",status="OK"}'
    assert after[ok] - before.get(ok, 0) == len(requests)


def test_padding_rows_never_reach_the_client(server):
    status, body = _rest_predict(server, [[1.0], [2.0], [3.0]])  # runs padded to 4
    assert status == 200
    assert body["predictions"] == [[2.5], [3.0], [3.5]]


def test_request_larger_than_max_batch_size_is_rejected(server):
    status, body = _rest_predict(server, [[1.0]] * 9)
    assert status == 400
    assert body["error"] == "Task size 9 is larger than maximum input batch size 8"


def test_classify_and_regress_are_batched_too(server):
    """Regress goes through the batcher: one input counted, one batched run of 2 rows."""
    before = _metrics(server)
    examples = [{"x": 1.0}, {"x": 3.0}]
    status, body = server.json(
        "POST",
        "/v1/models/half:regress",
        {"signature_name": "regress_x_to_y", "examples": examples},
    )
    assert status == 200, body
    assert body["results"] == [2.5, 3.5]
    after = _metrics(server)
    assert _delta(before, after, _INPUTS) == 1
    assert _delta(before, after, _RUNS) == 1
    assert _delta(before, after, _BATCH_SIZE_SUM) == 2


def test_warmup_ran_before_available_and_a_failing_warmup_fails_the_load(server):
    values = _metrics(server)
    read = {k: v for k, v in values.items() if "model_warmup_records_read" in k}
    assert any('/half/1"' in k and 'status="OK"' in k and v == 2 for k, v in read.items()), read
    status, body = server.json("GET", "/v1/models/broken")
    assert status == 200
    (version,) = body["model_version_status"]
    assert version["state"] == "END"
    assert "no_such_input" in version["status"]["error_message"]
    state = (
        ':tensorflow:serving:model_version_state{model_name="half",version="1",state="AVAILABLE"}'
    )
    assert values[state] == 1


def test_metrics_page_is_tf_serving_text_format(server):
    status, body = server.request("GET", "/monitoring/prometheus/metrics")
    text = body.decode()
    assert status == 200
    assert "# TYPE :tensorflow:serving:request_count counter" in text
    assert re.search(
        r':tensorflow:serving:request_latency_count\{model_name="half",'
        r'API="predict",entrypoint="REST"\} \d',
        text,
    )
    assert "_total" not in text
    json.dumps(text)  # plain text, no binary


def test_request_latency_counts_successful_calls_of_each_front_end(server):
    latency = ':tensorflow:serving:request_latency_count{model_name="half",'
    rest = latency + 'API="predict",entrypoint="REST"}'
    grpc_ok = latency + 'API="Predict",entrypoint="GRPC"}'
    before = _metrics(server)
    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    for _ in range(3):
        assert _grpc_predict(stub, [[1.0]]).tolist() == [[2.5]]
    bad = predict_pb2.PredictRequest()
    bad.model_spec.name = "half"
    bad.inputs["nope"].CopyFrom(tf.make_tensor_proto([1.0]))
    with pytest.raises(grpc.RpcError) as failed:
        stub.Predict(bad, timeout=60)
    assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    channel.close()
    assert _rest_predict(server, [[1.0]])[0] == 200
    assert server.json("POST", "/v1/models/half:predict", {"instances": "x"})[0] == 400
    after = _metrics(server)
    # Failed calls are counted in request_count but not timed, as in TF Serving.
    assert after[grpc_ok] - before.get(grpc_ok, 0) == 3
    assert after[rest] - before.get(rest, 0) == 1
