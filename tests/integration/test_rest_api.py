"""TF Serving REST semantics against the real server process on a loopback port."""

from __future__ import annotations

import json
import os
import threading
import time

import pytest

from tests.support.models import (
    write_half_plus_two,
    write_half_precision,
    write_keras_dense,
    write_slow_loop,
    write_tf2_scale,
)
from tests.support.server_process import ServerProcess

pytestmark = pytest.mark.integration


def _config(models: dict[str, str]) -> str:
    entries = "".join(
        f'config {{ name: "{name}" base_path: "{path}" model_platform: "tensorflow" }}\n'
        for name, path in models.items()
    )
    return f"model_config_list {{\n{entries}}}\n"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("store")
    write_half_plus_two(str(root / "half_plus_two" / "123"))
    write_tf2_scale(str(root / "scale" / "1"))
    write_half_precision(str(root / "half" / "1"))
    write_keras_dense(str(root / "dense" / "1"))
    config = root / "models.config"
    config.write_text(
        _config({name: str(root / name) for name in ("half_plus_two", "scale", "half", "dense")})
    )
    with ServerProcess([f"--model_config_file={config}"]) as proc:
        yield proc


def test_predict_row_and_columnar(server):
    status, body = server.request(
        "POST", "/v1/models/half_plus_two:predict", {"instances": [2.0, 3.0, 4.0]}
    )
    assert status == 200
    assert json.loads(body) == {"predictions": [3.0, 3.5, 4.0]}
    assert b"3.0" in body  # TF Serving's float text keeps the decimal point
    status, payload = server.json(
        "POST", "/v1/models/half_plus_two/versions/123:predict", {"inputs": [[1.0], [2.0]]}
    )
    assert (status, payload) == (200, {"outputs": [[2.5], [3.0]]})


def test_predict_multiple_outputs_tf2(server):
    status, payload = server.json("POST", "/v1/models/scale:predict", {"instances": [[1.0], [2.5]]})
    assert status == 200
    assert payload == {
        "predictions": [{"y": [3.0], "label": ["1.000000"]}, {"y": [7.5], "label": ["2.500000"]}]
    }
    status, payload = server.json("POST", "/v1/models/scale:predict", {"inputs": {"x": [[2.0]]}})
    assert payload == {"outputs": {"y": [[6.0]], "label": [["2.000000"]]}}


def test_classify_and_regress(server):
    status, payload = server.json(
        "POST",
        "/v1/models/half_plus_two:classify",
        {"signature_name": "classify_x_to_y", "examples": [{"x": 2.0}, {"x": 10.0}]},
    )
    assert (status, payload) == (200, {"results": [[["", 3.0]], [["", 7.0]]]})
    status, payload = server.json(
        "POST",
        "/v1/models/half_plus_two:regress",
        {"signature_name": "regress_x_to_y", "context": {"x": 4.0}, "examples": [{}]},
    )
    assert (status, payload) == (200, {"results": [4.0]})


def test_status_json_matches_tf_serving(server):
    status, payload = server.json("GET", "/v1/models/half_plus_two")
    assert status == 200
    assert payload == {
        "model_version_status": [
            {
                "version": "123",
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
        ]
    }
    status, payload = server.json("GET", "/v1/models/half_plus_two/versions/123")
    assert status == 200 and payload["model_version_status"][0]["version"] == "123"


def test_metadata_json(server):
    status, payload = server.json("GET", "/v1/models/half_plus_two/metadata")
    assert status == 200
    assert payload["model_spec"] == {
        "name": "half_plus_two",
        "signature_name": "",
        "version": "123",
    }
    signatures = payload["metadata"]["signature_def"]["signature_def"]
    assert set(signatures) == {"serving_default", "classify_x_to_y", "regress_x_to_y"}
    x = signatures["serving_default"]["inputs"]["x"]
    assert x["dtype"] == "DT_FLOAT" and x["name"] == "x:0"
    assert x["tensor_shape"] == {
        "dim": [{"size": "-1", "name": ""}, {"size": "1", "name": ""}],
        "unknown_rank": False,
    }
    assert signatures["serving_default"]["method_name"] == "tensorflow/serving/predict"


@pytest.mark.parametrize(
    ("method", "path", "body", "code", "message"),
    [
        (
            "POST",
            "/v1/models/nope:predict",
            {"instances": [1.0]},
            404,
            "Servable not found for request: Latest(nope)",
        ),
        (
            "POST",
            "/v1/models/half_plus_two/versions/7:predict",
            {"instances": [1.0]},
            404,
            "Servable not found for request: Specific(half_plus_two, 7)",
        ),
        ("GET", "/v1/models/nope", None, 404, "Could not find any versions of model nope"),
        (
            "GET",
            "/v1/models/half_plus_two/versions/9",
            None,
            404,
            "Could not find version 9 of model half_plus_two",
        ),
        (
            "POST",
            "/v1/models/half_plus_two/labels/canary:predict",
            {"instances": [1.0]},
            400,
            "Unrecognized servable version label: canary",
        ),
        ("POST", "/v1/models/half_plus_two:predict", "{not json", 400, "JSON Parse error"),
        ("POST", "/v1/models/half_plus_two:predict", "", 400, "The document is empty"),
        (
            "POST",
            "/v1/models/half_plus_two:predict",
            {"instances": ["a"]},
            400,
            "is not of expected type: float",
        ),
        (
            "POST",
            "/v1/models/half_plus_two:predict",
            {"signature_name": "nope", "instances": [1]},
            400,
            'Serving signature name: "nope" not found in signature def',
        ),
        (
            "POST",
            "/v1/models/half_plus_two:predict",
            {"instances": [1], "inputs": [1]},
            400,
            "only one of 'inputs' or 'instances'",
        ),
        (
            "POST",
            "/v1/models/half_plus_two:classify",
            {"examples": [{"x": 1.0}]},
            400,
            "Expected input Tensor of type string",
        ),
        (
            "POST",
            "/v1/models/dense:predict",
            {"instances": [[1.0, 2.0]]},
            400,
            "Matrix size-incompatible",
        ),
        ("POST", "/v1/models/half:predict", {"inputs": [1.0]}, 501, "to type: half"),
        ("POST", "/v1/models/half:predict", {"instances": [1.0]}, 400, "UNIMPLEMENTED"),
        (
            "GET",
            "/v1/models/half_plus_two:predict",
            None,
            400,
            "Malformed request: GET /v1/models/half_plus_two:predict",
        ),
        ("GET", "/v1/models/x/metadata/y", None, 400, "Malformed request"),
        ("GET", "/healthy", None, 404, "Not found"),
    ],
)
def test_errors(server, method, path, body, code, message):
    status, payload = server.request(method, path, body)
    assert status == code, payload
    error = json.loads(payload)["error"]
    assert message in error


def test_nan_and_infinity_round_trip(server):
    status, body = server.request(
        "POST", "/v1/models/half_plus_two:predict", b'{"instances": [NaN, Infinity, -Infinity]}'
    )
    assert status == 200
    values = json.loads(body)["predictions"]  # Python's json reads the bare tokens
    assert values[0] != values[0] and values[1] == float("inf") and values[2] == float("-inf")


def test_gzip_request_body(server):
    import gzip

    body = gzip.compress(json.dumps({"instances": [2.0]}).encode())
    status, payload = server.request(
        "POST", "/v1/models/half_plus_two:predict", body, {"Content-Encoding": "gzip"}
    )
    assert (status, json.loads(payload)) == (200, {"predictions": [3.0]})


def test_server_survives_a_burst_of_bad_requests(server):
    bad = [b"[", b'{"instances": [[1], [1, 2]]}', b'{"instances": {"b64": 5}}', b"\xff\xfe"]
    for body in bad * 10:
        status, _ = server.request("POST", "/v1/models/half_plus_two:predict", body)
        assert 400 <= status < 500
    status, payload = server.json("POST", "/v1/models/half_plus_two:predict", {"instances": [2.0]})
    assert (status, payload) == (200, {"predictions": [3.0]})


def test_timeout_and_overload(tmp_path):
    write_slow_loop(str(tmp_path / "slow" / "1"))
    args = [
        "--model_name=slow",
        f"--model_base_path={tmp_path / 'slow'}",
        "--rest_api_timeout_in_ms=300",
        "--rest_api_num_threads=1",
        "--max_queued_requests=0",
    ]
    with ServerProcess(args) as proc:
        status, payload = proc.json("POST", "/v1/models/slow:predict", {"inputs": {"n": 10}})
        assert (status, payload) == (200, {"outputs": 45})
        started = time.monotonic()
        status, payload = proc.json("POST", "/v1/models/slow:predict", {"inputs": {"n": 10**12}})
        assert status == 504, payload
        assert time.monotonic() - started < 10

        def overload_attempt() -> tuple[int, dict, list[int]]:
            """A slow call, and quick calls sent until one is refused while the slow one holds
            the only thread. The two race for it: a quick call that gets there first is
            served (and sent again); if it made the slow call the refused one, the attempt
            is repeated."""
            results: list[int] = []
            slow = threading.Thread(
                target=lambda: results.append(
                    proc.request("POST", "/v1/models/slow:predict", {"inputs": {"n": 10**12}})[0]
                )
            )
            slow.start()
            status, payload = 200, {}
            while status == 200 and slow.is_alive():
                status, payload = proc.json("POST", "/v1/models/slow:predict", {"inputs": {"n": 1}})
            slow.join()
            return status, payload, results

        for _ in range(20):
            status, payload, results = overload_attempt()
            if results != [503]:
                break
        assert status == 503 and "overloaded" in payload["error"]
        assert results == [504]
        status, payload = proc.json("POST", "/v1/models/slow:predict", {"inputs": {"n": 3}})
        assert (status, payload) == (200, {"outputs": 3})
    assert os.path.isdir(tmp_path / "slow" / "1")


def test_model_list_and_probes(server):
    status, payload = server.json("GET", "/v1/models")
    assert status == 200
    names = {m["name"]: m["model_version_status"] for m in payload["models"]}
    assert set(names) == {"half_plus_two", "scale", "half", "dense"}
    assert names["half_plus_two"][0]["version"] == "123"
    assert names["half_plus_two"][0]["state"] == "AVAILABLE"
    assert server.json("GET", "/healthz") == (200, {"status": "ok"})
    assert server.json("GET", "/readyz") == (200, {"status": "ready"})
