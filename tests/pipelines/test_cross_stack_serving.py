"""A model the TFX 1.16 pipeline pushed, served by the current-stack server (Python 3.12, TF 2.21)
and by the TFX-stack server (Python 3.10, TF 2.16) side by side: every REST and gRPC answer of
the first must equal the second's.

The pipeline (TFX 1.16's Keras trainer, then this project's Exporter adding classify, regress and
serialized-Example signatures plus warmup records) runs on the TFX stack, as in production;
docs/stacks.md says which stack each part runs on.
"""

from __future__ import annotations

import base64
import json
import sys

import grpc
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from pipelines import serving_demo
from tests.support.server_process import ServerProcess
from tests.support.stacks import current_stack_python, stack_versions

pytestmark = pytest.mark.integration

MODEL = serving_demo.MODEL_NAME
# Fixed rows on both sides of the decision boundary, including a large and a tiny value.
ROWS = [(0.5, -1.0), (-1.5, -1.0), (2.0, 2.0), (-0.705, -1.397), (1e-7, 30.0)]


def _example(x1: float, x2: float) -> tf.train.Example:
    feature = {
        name: tf.train.Feature(float_list=tf.train.FloatList(value=[value]))
        for name, value in (("x1", x1), ("x2", x2))
    }
    return tf.train.Example(features=tf.train.Features(feature=feature))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


REST_CALLS = [
    ("GET", f"/v1/models/{MODEL}", None),
    ("GET", f"/v1/models/{MODEL}/metadata", None),
    (
        "POST",
        f"/v1/models/{MODEL}:predict",
        {"instances": [{"x1": [a], "x2": [b]} for a, b in ROWS]},
    ),
    (
        "POST",
        f"/v1/models/{MODEL}:predict",
        {"inputs": {"x1": [[a] for a, _ in ROWS], "x2": [[b] for _, b in ROWS]}},
    ),
    (
        "POST",
        f"/v1/models/{MODEL}:regress",
        {"signature_name": "regression", "examples": [{"x1": a, "x2": b} for a, b in ROWS]},
    ),
    (
        "POST",
        f"/v1/models/{MODEL}:predict",
        {
            "signature_name": "predict_examples",
            "instances": [{"b64": _b64(_example(a, b).SerializeToString())} for a, b in ROWS],
        },
    ),
]
CLIENT_ERRORS = [
    ("POST", f"/v1/models/{MODEL}:predict", {"instances": [{"x1": [1.0]}]}),
    ("POST", f"/v1/models/{MODEL}:classify", {"examples": [{"x1": 1.0, "x2": 1.0}]}),
    (
        "POST",
        f"/v1/models/{MODEL}:predict",
        {"signature_name": "predict_examples", "instances": [{"b64": _b64(b"not an Example")}]},
    ),
]


def _grpc_answers(port: int) -> list:
    """Predict (raw features and serialized Examples), Regress, GetModelMetadata."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        features = predict_pb2.PredictRequest()
        features.model_spec.name = MODEL
        for index, name in enumerate(("x1", "x2")):
            column = [[row[index]] for row in ROWS]
            features.inputs[name].CopyFrom(tf.make_tensor_proto(column, dtype=tf.float32))
        serialized = predict_pb2.PredictRequest()
        serialized.model_spec.name = MODEL
        serialized.model_spec.signature_name = "predict_examples"
        serialized.inputs["examples"].CopyFrom(
            tf.make_tensor_proto([_example(a, b).SerializeToString() for a, b in ROWS])
        )
        regress = regression_pb2.RegressionRequest()
        regress.model_spec.name = MODEL
        regress.model_spec.signature_name = "regression"
        regress.input.example_list.examples.extend(_example(a, b) for a, b in ROWS)
        metadata = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        metadata.model_spec.name = MODEL
        return [
            stub.Predict(features, timeout=30),
            stub.Predict(serialized, timeout=30),
            stub.Regress(regress, timeout=30),
            stub.GetModelMetadata(metadata, timeout=30),
        ]


@pytest.fixture(scope="module")
def pushed_store(tmp_path_factory) -> str:
    return serving_demo.run_local(str(tmp_path_factory.mktemp("demo")), train_steps=10)


def test_current_stack_server_answers_a_tfx_pipeline_model_like_the_tfx_stack_server(
    pushed_store,
):
    current = current_stack_python()
    ours, theirs = stack_versions(sys.executable), stack_versions(current)
    # Two different stacks, or this test proves nothing.
    assert (ours["python"][:4], ours["tensorflow"][:4]) == ("3.10", "2.16"), ours
    assert (theirs["python"][:4], theirs["tensorflow"][:4]) == ("3.12", "2.21"), theirs
    assert int(theirs["protobuf"].split(".")[0]) >= 5 and theirs["numpy"].startswith("2."), theirs

    args = [f"--model_name={MODEL}", f"--model_base_path={pushed_store}"]
    with (
        ServerProcess(args, grpc=True) as reference,
        ServerProcess(args, grpc=True, python=current) as server,
    ):
        for running in (reference, server):
            running.wait_for(lambda running=running: running.available_versions(MODEL))
        for (method, path, body), ok in [(c, True) for c in REST_CALLS] + [
            (c, False) for c in CLIENT_ERRORS
        ]:
            expected = reference.request(method, path, body)
            answer = server.request(method, path, body)
            assert (expected[0] == 200) is ok and expected[0] < 500, (path, body, expected)
            assert answer[0] == expected[0], (path, body, answer, expected)
            assert json.loads(answer[1]) == json.loads(expected[1]), (path, body)

        expected_grpc = _grpc_answers(reference.grpc_port)
        for answer, expected in zip(_grpc_answers(server.grpc_port), expected_grpc, strict=True):
            assert answer == expected, (answer, expected)
    predicted = tf.make_ndarray(expected_grpc[0].outputs["output_0"])
    assert predicted.shape == (len(ROWS), 1) and ((predicted >= 0) & (predicted <= 1)).all()
