"""Canary requests over gRPC (TF Serving's PredictionService) against the real model server."""

from __future__ import annotations

import json
import os
import time

import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2
from tfx.proto import infra_validator_pb2
from tfx.types import standard_artifacts
from tfx.utils import proto_utils

from components.infra_validator import executor
from components.infra_validator.grpc_client import GrpcClient
from components.infra_validator.runners.base import FailureCode, ValidationFailed
from components.infra_validator.runners.local_process import LocalProcessRunner

SIGNATURES = ["serving_default", "predict_examples", "regression"]


def _base_path(tmp_path, model: standard_artifacts.Model) -> str:
    base = tmp_path / "models" / "canary"
    base.mkdir(parents=True)
    (base / "1").symlink_to(os.path.join(model.uri, "Format-Serving"))
    return str(base)


def test_unknown_canary_protocol_is_rejected_at_dsl_time():
    with pytest.raises(ValueError, match="canary_protocol must be 'rest' or 'grpc'"):
        executor.ValidationOptions.from_config({"canary_protocol": "http2"})


@pytest.mark.integration
def test_executor_sends_canaries_for_every_signature_over_grpc(exported_model, examples, blessing):
    request_spec = infra_validator_pb2.RequestSpec(
        tensorflow_serving=infra_validator_pb2.TensorFlowServingRequestSpec(
            signature_names=SIGNATURES
        ),
        num_examples=2,
    )

    executor.Executor().Do(
        {"model": [exported_model], "examples": [examples]},
        {"blessing": [blessing]},
        {
            "serving_spec": proto_utils.proto_to_json(
                infra_validator_pb2.ServingSpec(model_name="canary")
            ),
            "validation_spec": proto_utils.proto_to_json(
                infra_validator_pb2.ValidationSpec(max_loading_time_seconds=120, num_tries=1)
            ),
            "request_spec": proto_utils.proto_to_json(request_spec),
            "custom_config": json.dumps({"canary_protocol": "grpc", "max_latency_p99_ms": 5000}),
        },
    )

    assert blessing.get_int_custom_property("blessed") == 1, blessing.get_string_custom_property(
        "reason_message"
    )
    assert blessing.get_float_custom_property("latency_p99_ms") > 0


@pytest.mark.integration
def test_rejected_request_fails_with_the_grpc_status(tmp_path, exported_model):
    runner = LocalProcessRunner(
        "canary", _base_path(tmp_path, exported_model), str(tmp_path / "server.log")
    )
    runner.start()
    try:
        deadline = time.time() + 120
        client = GrpcClient(runner.wait_until_running(deadline), "canary")
        try:
            client.wait_until_available(deadline, runner.check_alive)
            request = predict_pb2.PredictRequest()
            request.model_spec.name = "canary"
            request.inputs["x1"].CopyFrom(tf.make_tensor_proto([[1.0]], dtype=tf.float32))
            request.inputs["x2"].CopyFrom(tf.make_tensor_proto([[2.0]], dtype=tf.float32))
            assert client.send(request) > 0
            del request.inputs["x2"]
            with pytest.raises(ValidationFailed) as err:
                client.send(request)
        finally:
            client.close()
    finally:
        runner.stop()

    assert err.value.code == FailureCode.REQUEST_FAILED
    assert "gRPC Predict on signature '' failed with INVALID_ARGUMENT" in err.value.message


@pytest.mark.integration
def test_model_that_fails_to_load_is_reported_without_waiting_for_the_deadline(
    tmp_path, exported_model
):
    with open(os.path.join(exported_model.uri, "Format-Serving", "saved_model.pb"), "wb") as f:
        f.write(b"not a SavedModel")
    runner = LocalProcessRunner(
        "canary", _base_path(tmp_path, exported_model), str(tmp_path / "server.log")
    )
    runner.start()
    started = time.time()
    try:
        deadline = started + 300
        client = GrpcClient(runner.wait_until_running(deadline), "canary")
        try:
            with pytest.raises(ValidationFailed) as err:
                client.wait_until_available(deadline, runner.check_alive)
        finally:
            client.close()
    finally:
        runner.stop()

    assert err.value.code == FailureCode.MODEL_UNAVAILABLE, err.value.message
    assert "version 1 failed to load" in err.value.message
    assert time.time() - started < 120
