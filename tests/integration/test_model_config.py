"""Config files: several models, reload without dropping traffic, labels, weighted splits."""

from __future__ import annotations

import json
import threading
from collections import Counter

import pytest

from tests.support.models import write_half_plus_two
from tests.support.server_process import ServerProcess

pytestmark = pytest.mark.integration


def _model(name: str, base, policy: str = "", labels: dict[str, int] | None = None) -> str:
    label_text = "".join(
        f' version_labels {{ key: "{k}" value: {v} }}' for k, v in (labels or {}).items()
    )
    return (
        f'config {{ name: "{name}" base_path: "{base}" model_platform: "tensorflow"'
        f" {policy}{label_text} }}\n"
    )


def _write_config(path, *models: str) -> None:
    staging = path.with_suffix(".tmp")
    staging.write_text("model_config_list {\n" + "".join(models) + "}\n")
    staging.replace(path)  # the watcher must never read a half-written file


def _grpc_version(server, routing_key: str) -> str:
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "ab"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto([2.0], dtype=tf.float32))
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        response = stub.Predict(request, timeout=30, metadata=(("x-routing-key", routing_key),))
    return str(response.model_spec.version.value)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("store")
    for version, offset in ((1, 2.0), (2, 10.0)):
        write_half_plus_two(str(root / "ab" / str(version)), b=offset)  # x=2 -> 3 / 11
    write_half_plus_two(str(root / "other" / "1"), b=100.0)  # x=2 -> 101
    return root


def _predict(server, path: str, headers=None) -> tuple[int, object, str | None]:
    status, payload, response_headers = server.request_with_headers(
        "POST", path, {"instances": [2.0]}, headers
    )
    body = json.loads(payload)
    value = body["predictions"][0] if status == 200 else body["error"]
    return status, value, response_headers.get("x-model-version")


def test_labels_split_and_reload(store, tmp_path):
    config = tmp_path / "models.config"
    all_versions = "model_version_policy { all {} }"
    labels = {"stable": 1, "canary": 2}
    _write_config(config, _model("ab", store / "ab", all_versions, labels))
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"seed": 13, "models": {"ab": {"stable": 80, "canary": 20}}}))
    args = [
        f"--model_config_file={config}",
        "--model_config_file_poll_wait_seconds=1",
        f"--traffic_split_config_file={split}",
    ]
    with ServerProcess(args, grpc=True) as server:
        # Labels from the startup config work once their versions load (TF Serving refuses).
        assert _predict(server, "/v1/models/ab/labels/stable:predict")[:2] == (200, 3.0)
        assert _predict(server, "/v1/models/ab/labels/canary:predict")[:2] == (200, 11.0)
        assert _predict(server, "/v1/models/ab/labels/nope:predict")[0] == 400

        # Unversioned requests are split 80/20 between the labels' versions ...
        versions = Counter(_predict(server, "/v1/models/ab:predict")[2] for _ in range(400))
        assert set(versions) == {"1", "2"}
        assert 0.12 <= versions["2"] / 400 <= 0.28, versions  # 20 % +- 8 points
        # ... and a routing key always lands on the same one.
        for key in ("user-1", "user-2", "user-3"):
            seen = {
                _predict(server, "/v1/models/ab:predict", {"x-routing-key": key})[2]
                for _ in range(10)
            }
            assert len(seen) == 1
            # gRPC: the same key in metadata picks the same version (reported in model_spec).
            assert _grpc_version(server, key) == seen.pop()
        # Status is not routed: an unversioned status lists both versions every time (with the
        # split applied, 30 calls would all name one version with probability 0.8^30 + 0.2^30).
        for _ in range(30):
            assert server.available_versions("ab") == [1, 2]

        # Reload: add a model while "ab" is under load; nothing may fail.
        failures: list = []
        stop = threading.Event()

        def load() -> None:
            while not stop.is_set():
                outcome = _predict(server, "/v1/models/ab/versions/1:predict")
                if outcome[:2] != (200, 3.0):
                    failures.append(outcome)

        thread = threading.Thread(target=load)
        thread.start()
        try:
            _write_config(
                config,
                _model("ab", store / "ab", all_versions, labels),
                _model("other", store / "other"),
            )
            server.wait_for(lambda: _predict(server, "/v1/models/other:predict")[1] == 101.0)
            # Moving a label to an AVAILABLE version is allowed ...
            _write_config(
                config,
                _model("ab", store / "ab", all_versions, {"stable": 2, "canary": 2}),
                _model("other", store / "other"),
            )
            server.wait_for(
                lambda: _predict(server, "/v1/models/ab/labels/stable:predict")[1] == 11.0
            )
            # ... to a version that is not loaded is refused, and the old config stays.
            _write_config(
                config,
                _model("ab", store / "ab", all_versions, {"stable": 7, "canary": 2}),
            )
            server.wait_for(lambda: "Rejected new config" in server.log())
            assert _predict(server, "/v1/models/other:predict")[1] == 101.0
            # Removing a model unloads it; the others keep serving.
            _write_config(config, _model("ab", store / "ab", all_versions, labels))
            server.wait_for(lambda: _predict(server, "/v1/models/other:predict")[0] == 404)
        finally:
            stop.set()
            thread.join()
        assert not failures, failures[:3]


def test_bad_config_file_is_reported(tmp_path):
    config = tmp_path / "bad.config"
    config.write_text("this is an improperly formatted file")
    server = ServerProcess([f"--model_config_file={config}"])
    with pytest.raises(RuntimeError, match="Error parsing text-format"):
        server.start()
    duplicate = tmp_path / "dup.config"
    duplicate.write_text(
        "model_config_list {\n" + _model("a", tmp_path) + _model("a", tmp_path) + "}\n"
    )
    with pytest.raises(RuntimeError, match="Illegal to list model a multiple times"):
        ServerProcess([f"--model_config_file={duplicate}"]).start()
