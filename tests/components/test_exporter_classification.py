"""Keras classifiers through the Exporter, classified by the real server over REST and gRPC.

A Keras binary classifier (``Dense(1, activation="sigmoid")``, exported with
``Model.export``) and a softmax one get a ``classification`` signature from the Exporter; TF
Serving's Classify API must then answer for them: REST ``:classify`` and gRPC
``PredictionService/Classify``, with string classes and the model's own probabilities.
"""

from __future__ import annotations

import os

import grpc
import keras
import numpy as np
import pytest
from tensorflow_serving.apis import classification_pb2, prediction_service_pb2_grpc
from tfx.types import standard_artifacts

from components.exporter import executor
from tests.support.server_process import ServerProcess

pytestmark = pytest.mark.integration

ROWS = [{"x1": 0.5, "x2": -1.0}, {"x1": -2.0, "x2": 0.25}, {"x1": 1.5, "x2": 1.5}]


def _keras_model(units: int, activation: str) -> keras.Model:
    keras.utils.set_random_seed(7)
    inputs = {name: keras.Input(shape=(1,), name=name) for name in ("x1", "x2")}
    hidden = keras.layers.Dense(4, activation="relu")(
        keras.layers.Concatenate()(list(inputs.values()))
    )
    outputs = keras.layers.Dense(units, activation=activation, name="probabilities")(hidden)
    return keras.Model(inputs, outputs)


def _export(tmp_path, name: str, model: keras.Model) -> str:
    """Trainer-style artifact -> Exporter -> ``<store>/<name>/1``; returns the model base."""
    trained = standard_artifacts.Model()
    trained.uri = str(tmp_path / name / "trained")
    model.export(os.path.join(trained.uri, "Format-Serving"), format="tf_saved_model")
    exported = standard_artifacts.Model()
    exported.uri = str(tmp_path / name / "exported")
    executor.Executor().Do({"model": [trained]}, {"exported_model": [exported]}, {})
    base = tmp_path / "store" / name
    base.mkdir(parents=True)
    (base / "1").symlink_to(os.path.join(exported.uri, "Format-Serving"))
    return str(base)


def _direct(model: keras.Model) -> np.ndarray:
    return model.predict(
        {k: np.array([[r[k]] for r in ROWS], np.float32) for k in ("x1", "x2")}, verbose=0
    )


def _grpc_classify(port: int, name: str) -> list[list[tuple[str, float]]]:
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = name
    request.model_spec.signature_name = "classification"
    for row in ROWS:
        example = request.input.example_list.examples.add()
        for key, value in row.items():
            example.features.feature[key].float_list.value.append(value)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        response = stub.Classify(request, timeout=30)
    return [[(c.label, c.score) for c in row.classes] for row in response.result.classifications]


def test_sigmoid_and_softmax_keras_models_classify_over_rest_and_grpc(tmp_path):
    binary, softmax = _keras_model(1, "sigmoid"), _keras_model(3, "softmax")
    bases = {
        "binary": _export(tmp_path, "binary", binary),
        "softmax": _export(tmp_path, "softmax", softmax),
    }
    config = tmp_path / "models.config"
    config.write_text(
        "model_config_list {\n"
        + "".join(
            f'config {{ name: "{n}" base_path: "{b}" model_platform: "tensorflow" }}\n'
            for n, b in bases.items()
        )
        + "}\n"
    )
    p = _direct(binary)[:, 0]
    expected = {
        "binary": [[("0", 1 - v), ("1", v)] for v in p],
        "softmax": [[(str(i), v) for i, v in enumerate(row)] for row in _direct(softmax)],
    }

    with ServerProcess([f"--model_config_file={config}"], grpc=True) as server:
        server.wait_for(lambda: all(server.available_versions(n) == [1] for n in bases))
        for name in bases:
            status, body = server.json(
                "POST",
                f"/v1/models/{name}:classify",
                {"signature_name": "classification", "examples": ROWS},
            )
            assert status == 200, body
            over_rest = [[(label, score) for label, score in row] for row in body["results"]]
            over_grpc = _grpc_classify(server.grpc_port, name)

            for answer in (over_rest, over_grpc):
                assert [[c for c, _ in row] for row in answer] == [
                    [c for c, _ in row] for row in expected[name]
                ]
                np.testing.assert_allclose(
                    [[s for _, s in row] for row in answer],
                    [[s for _, s in row] for row in expected[name]],
                    rtol=1e-5,
                    atol=1e-6,
                )
        # TF Serving's default for :classify is serving_default, which stays the Trainer's
        # predict signature (two typed inputs): a client error, as in TF Serving.
        status, body = server.json("POST", "/v1/models/binary:classify", {"examples": ROWS})
        assert status == 400 and body["error"] == "Expected one input Tensor.", body
