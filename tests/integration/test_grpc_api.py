"""TF Serving's gRPC API against the real server process, with real ``grpc`` client stubs.

Mirrors TF Serving's own tests (``tensorflow_model_server_test.py``): the client pattern of
``PredictRequest`` + ``tf.make_tensor_proto``, ``GetModelMetadata`` unpacking the
``SignatureDefMap``, Classify/Regress/MultiInference on a TF1 half_plus_two model (x=2 -> 3.0),
its ``--grpc_channel_arguments`` and UNIX-socket cases; plus error codes, the tensor_content
flag, a large request, deadlines and config reloads.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    input_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)
from tensorflow_serving.config import model_server_config_pb2

from serving.grpc_api import rpc
from serving.grpc_api.server import parse_channel_arguments
from serving.options import OptionsError
from tests.support.models import write_half_plus_two, write_slow_loop, write_tf2_scale
from tests.support.server_process import ServerProcess

pytestmark = pytest.mark.integration

_UNLIMITED = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]
_CLASSIFY = "tensorflow/serving/classify"
_REGRESS = "tensorflow/serving/regress"


class Client:
    """Both service stubs over one channel (TCP or ``unix:`` target)."""

    def __init__(self, target: str) -> None:
        self.channel = grpc.insecure_channel(target, options=_UNLIMITED)
        grpc.channel_ready_future(self.channel).result(timeout=30)
        self.predict_stub = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.model_stub = model_service_pb2_grpc.ModelServiceStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def predict(self, model: str, x, timeout: float = 30) -> predict_pb2.PredictResponse:
        """Upstream's client pattern: one input ``x`` from ``tf.make_tensor_proto``."""
        request = predict_pb2.PredictRequest()
        request.model_spec.name = model
        request.inputs["x"].CopyFrom(tf.make_tensor_proto(x))
        return self.predict_stub.Predict(request, timeout=timeout)


def _config(models: dict[str, Path]) -> model_server_config_pb2.ModelServerConfig:
    config = model_server_config_pb2.ModelServerConfig()
    for name, path in models.items():
        config.model_config_list.config.add(
            name=name, base_path=str(path), model_platform="tensorflow"
        )
    return config


def _write_config(path: Path, models: dict[str, Path]) -> Path:
    entries = "".join(
        f'config {{ name: "{name}" base_path: "{base}" model_platform: "tensorflow" }}\n'
        for name, base in models.items()
    )
    path.write_text(f"model_config_list {{\n{entries}}}\n")
    return path


def _examples(*xs: float) -> input_pb2.Input:
    inp = input_pb2.Input()
    for x in xs:
        inp.example_list.examples.add().features.feature["x"].float_list.value.append(x)
    return inp


def _rpc_error(call, *args, timeout: float = 30) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        call(*args, timeout=timeout)
    return err.value


def _count(n: int) -> predict_pb2.PredictRequest:
    """A call to the ``slow`` model: a loop of ``n`` steps (10**12: until cancelled)."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "slow"
    request.inputs["n"].CopyFrom(tf.make_tensor_proto(n, dtype=tf.int64))
    return request


def _total(response: predict_pb2.PredictResponse) -> int:
    return int(tf.make_ndarray(response.outputs["total"]))


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("grpc")
    write_half_plus_two(str(root / "half_plus_two" / "123"))
    write_tf2_scale(str(root / "scale" / "1"))
    write_slow_loop(str(root / "slow" / "1"))
    broken = root / "broken" / "1"
    broken.mkdir(parents=True)
    (broken / "saved_model.pb").write_bytes(b"not a SavedModel")
    return root


@pytest.fixture(scope="module")
def servers(store) -> Iterator[dict[str, ServerProcess]]:
    """Both servers, started in parallel (each spends seconds importing TensorFlow).

    ``main``: a UNIX socket too, TF Serving's ``testGoodGrpcChannelArgs`` arguments and at
    most four concurrent RPCs (its tests make one call at a time). ``reload``:
    ``--enable_serialization_as_tensor_content`` and a single model thread (so a model run
    that ignored its deadline would block the next call); its config is replaced by the reload
    tests.
    """
    main = _write_config(
        store / "main.config",
        {name: store / name for name in ("half_plus_two", "scale", "slow")},
    )
    reload = _write_config(
        store / "reload.config",
        {"half_plus_two": store / "half_plus_two", "slow": store / "slow"},
    )
    procs = {
        "main": ServerProcess(
            [
                f"--model_config_file={main}",
                f"--grpc_socket_path={store / 'grpc.sock'}",
                "--grpc_channel_arguments=grpc.max_connection_age_ms=2000,"
                "grpc.lb_policy_name=grpclb",
                "--grpc_max_threads=4",
            ],
            grpc=True,
        ),
        "reload": ServerProcess(
            [
                f"--model_config_file={reload}",
                "--enable_serialization_as_tensor_content=true",
                "--rest_api_num_threads=1",
            ],
            grpc=True,
        ),
    }
    with contextlib.ExitStack() as stack:
        with ThreadPoolExecutor(len(procs)) as pool:
            list(pool.map(stack.enter_context, procs.values()))
        yield procs


@pytest.fixture(scope="module")
def server(servers) -> ServerProcess:
    return servers["main"]


@pytest.fixture(scope="module")
def client(server) -> Iterator[Client]:
    client = Client(f"127.0.0.1:{server.grpc_port}")
    yield client
    client.close()


# ------------------------------------------------------------------------------------ Predict
@pytest.mark.parametrize("output_filter", [[], ["y"]])
def test_predict_upstream_client_pattern(client, output_filter):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "half_plus_two"
    request.model_spec.signature_name = "serving_default"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto([2.0], shape=[1]))
    request.output_filter.extend(output_filter)
    response = client.predict_stub.Predict(request, timeout=30)
    assert list(response.outputs) == ["y"]
    assert response.outputs["y"].dtype == types_pb2.DT_FLOAT
    assert list(response.outputs["y"].float_val) == [3.0]  # typed field, not tensor_content
    assert not response.outputs["y"].tensor_content
    assert response.model_spec.name == "half_plus_two"
    assert response.model_spec.version.value == 123
    assert response.model_spec.signature_name == "serving_default"


def test_predict_typed_input_and_default_signature(client):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "half_plus_two"
    request.inputs["x"].CopyFrom(
        tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=[1.0, 2.0, 3.0])
    )
    request.inputs["x"].tensor_shape.dim.add().size = 3
    response = client.predict_stub.Predict(request, timeout=30)
    assert tf.make_ndarray(response.outputs["y"]).tolist() == [2.5, 3.0, 3.5]
    assert response.model_spec.signature_name == "serving_default"


def test_predict_tf2_model_with_string_output_and_filter(client):
    x = np.array([[1.0], [2.0]], dtype=np.float32)
    response = client.predict("scale", x)
    assert tf.make_ndarray(response.outputs["y"]).tolist() == [[3.0], [6.0]]
    assert response.outputs["label"].dtype == types_pb2.DT_STRING
    assert tf.make_ndarray(response.outputs["label"]).shape == (2, 1)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "scale"
    request.model_spec.version.value = 1
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(x))
    request.output_filter.append("label")
    filtered = client.predict_stub.Predict(request, timeout=30)
    assert list(filtered.outputs) == ["label"]
    assert filtered.model_spec.version.value == 1


def test_predict_over_unix_socket(store, server):
    uds = Client(f"unix:{store / 'grpc.sock'}")
    try:
        assert list(uds.predict("half_plus_two", [2.0]).outputs["y"].float_val) == [3.0]
    finally:
        uds.close()


# ----------------------------------------------------------------- Classify / Regress / Multi
def test_classify(client):
    request = classification_pb2.ClassificationRequest(input=_examples(2.0))
    request.model_spec.name = "half_plus_two"
    request.model_spec.signature_name = "classify_x_to_y"
    response = client.predict_stub.Classify(request, timeout=30)
    assert len(response.result.classifications) == 1
    assert len(response.result.classifications[0].classes) == 1
    assert response.result.classifications[0].classes[0].score == 3.0
    assert (response.model_spec.name, response.model_spec.version.value) == ("half_plus_two", 123)
    assert response.model_spec.signature_name == "classify_x_to_y"


def test_regress(client):
    request = regression_pb2.RegressionRequest(input=_examples(2.0, 4.0))
    request.model_spec.name = "half_plus_two"
    request.model_spec.signature_name = "regress_x_to_y"
    response = client.predict_stub.Regress(request, timeout=30)
    assert [r.value for r in response.result.regressions] == [3.0, 4.0]
    assert response.model_spec.version.value == 123
    assert response.model_spec.signature_name == "regress_x_to_y"


def _multi(tasks: list[tuple[str, str, str]]) -> inference_pb2.MultiInferenceRequest:
    request = inference_pb2.MultiInferenceRequest(input=_examples(2.0))
    for model, signature, method in tasks:
        task = request.tasks.add(method_name=method)
        task.model_spec.name = model
        task.model_spec.signature_name = signature
    return request


def test_multi_inference(client):
    request = _multi(
        [
            ("half_plus_two", "regress_x_to_y", _REGRESS),
            ("half_plus_two", "classify_x_to_y", _CLASSIFY),
        ]
    )
    response = client.predict_stub.MultiInference(request, timeout=30)
    assert len(response.results) == 2
    regression, classification = response.results
    assert regression.regression_result.regressions[0].value == 3.0
    assert classification.classification_result.classifications[0].classes[0].score == 3.0
    assert [r.model_spec.signature_name for r in response.results] == [
        "regress_x_to_y",
        "classify_x_to_y",
    ]
    assert {r.model_spec.version.value for r in response.results} == {123}


@pytest.mark.parametrize(
    ("tasks", "code", "message"),
    [
        (
            [("half_plus_two", "regress_x_to_y", _REGRESS)] * 2,
            grpc.StatusCode.INVALID_ARGUMENT,
            "Duplicate evaluation of signature: regress_x_to_y",
        ),
        (
            [("half_plus_two", "regress_x_to_y", _REGRESS), ("scale", "", _REGRESS)],
            grpc.StatusCode.INVALID_ARGUMENT,
            "All ModelSpecs in a MultiInferenceRequest must access the same model name.",
        ),
        (
            [("half_plus_two", "serving_default", "tensorflow/serving/predict")],
            grpc.StatusCode.UNIMPLEMENTED,
            "Unsupported signature method_name: tensorflow/serving/predict",
        ),
        ([], grpc.StatusCode.INVALID_ARGUMENT, "ModelSpec has no name specified."),
    ],
    ids=["duplicate", "two_models", "predict_method", "no_tasks"],
)
def test_multi_inference_rules(client, tasks, code, message):
    error = _rpc_error(client.predict_stub.MultiInference, _multi(tasks))
    assert (error.code(), error.details()) == (code, message)


# ------------------------------------------------------------------------ metadata and status
def test_get_model_metadata_unpacks_signature_def_map(client):
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "half_plus_two"
    response = client.predict_stub.GetModelMetadata(request, timeout=30)
    assert (response.model_spec.name, response.model_spec.version.value) == ("half_plus_two", 123)
    assert list(response.metadata) == ["signature_def"]
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(signature_map)
    assert {"serving_default", "classify_x_to_y", "regress_x_to_y"} <= set(
        signature_map.signature_def
    )
    assert signature_map.signature_def["serving_default"].inputs["x"].dtype == types_pb2.DT_FLOAT


def test_get_model_status(client):
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "half_plus_two"
    response = client.model_stub.GetModelStatus(request, timeout=30)
    assert len(response.model_version_status) == 1
    status = response.model_version_status[0]
    assert status.version == 123
    assert status.state == get_model_status_pb2.ModelVersionStatus.AVAILABLE
    assert status.status.error_code == 0


# ------------------------------------------------------------------------------------ errors
def _predict_request(model="half_plus_two", x=None, **spec) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    if model is not None:
        request.model_spec.name = model
        for key, value in spec.items():
            if key == "version":
                request.model_spec.version.value = value
            else:
                setattr(request.model_spec, key, value)
    request.inputs["x"].CopyFrom(x if x is not None else tf.make_tensor_proto([2.0]))
    return request


_BAD_CONTENT = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, tensor_content=b"\x00" * 6)
_BAD_CONTENT.tensor_shape.dim.add().size = 2

_PREDICT_ERRORS = {
    "missing_model": (
        _predict_request("intentionally_missing_model"),
        grpc.StatusCode.NOT_FOUND,
        "Servable not found for request: Latest(intentionally_missing_model)",
    ),
    "missing_version": (
        _predict_request(version=999),
        grpc.StatusCode.NOT_FOUND,
        "Servable not found for request: Specific(half_plus_two, 999)",
    ),
    "no_model_spec": (
        _predict_request(model=None),
        grpc.StatusCode.INVALID_ARGUMENT,
        "Missing ModelSpec",
    ),
    "empty_name": (
        _predict_request(model="", signature_name="serving_default"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "ModelSpec has no name specified.",
    ),
    "unknown_signature": (
        _predict_request(signature_name="nope"),
        grpc.StatusCode.FAILED_PRECONDITION,
        'Serving signature key "nope" not found.',
    ),
    "unknown_label": (
        _predict_request(version_label="nope"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "Unrecognized servable version label: nope",
    ),
    "unparsable_tensor": (
        _predict_request(x=_BAD_CONTENT),
        grpc.StatusCode.INVALID_ARGUMENT,
        "tensor parsing error: x",
    ),
}


@pytest.mark.parametrize("case", sorted(_PREDICT_ERRORS))
def test_predict_errors(client, case):
    request, code, message = _PREDICT_ERRORS[case]
    error = _rpc_error(client.predict_stub.Predict, request)
    assert (error.code(), error.details()) == (code, message)


def test_input_and_output_alias_errors(client):
    extra = _predict_request()
    extra.inputs["z"].CopyFrom(tf.make_tensor_proto([1.0]))
    error = _rpc_error(client.predict_stub.Predict, extra)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith("input size does not match signature: 2!=1")
    bad_filter = _predict_request()
    bad_filter.output_filter.append("nope")
    error = _rpc_error(client.predict_stub.Predict, bad_filter)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith("output tensor alias not found in signature: nope")
    wrong_dtype = _predict_request(x=tf.make_tensor_proto(np.array([2], dtype=np.int32)))
    assert _rpc_error(client.predict_stub.Predict, wrong_dtype).code() == (
        grpc.StatusCode.INVALID_ARGUMENT
    )


def test_long_error_messages_are_truncated(client):
    request = _predict_request()
    for i in range(200):
        request.inputs[f"extra_input_{i:03d}"].CopyFrom(tf.make_tensor_proto([1.0]))
    details = _rpc_error(client.predict_stub.Predict, request).details()
    assert details.endswith("...TRUNCATED")
    assert len(details) == 1024 + len("...TRUNCATED")


def test_metadata_and_status_errors(client):
    metadata = get_model_metadata_pb2.GetModelMetadataRequest()
    metadata.model_spec.name = "half_plus_two"
    error = _rpc_error(client.predict_stub.GetModelMetadata, metadata)
    assert (error.code(), error.details()) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "GetModelMetadataRequest must specify at least one metadata_field",
    )
    status = get_model_status_pb2.GetModelStatusRequest()
    status.model_spec.name = "nope"
    error = _rpc_error(client.model_stub.GetModelStatus, status)
    assert (error.code(), error.details()) == (
        grpc.StatusCode.NOT_FOUND,
        "Could not find any versions of model nope",
    )
    no_spec = _rpc_error(
        client.model_stub.GetModelStatus, get_model_status_pb2.GetModelStatusRequest()
    )
    assert (no_spec.code(), no_spec.details()) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "Missing ModelSpec",
    )


def test_channel_arguments_parsing():
    assert parse_channel_arguments(
        "grpc.max_connection_age_ms=2000,grpc.lb_policy_name=grpclb"
    ) == [
        ("grpc.max_connection_age_ms", 2000),
        ("grpc.lb_policy_name", "grpclb"),
    ]
    assert parse_channel_arguments("") == []
    with pytest.raises(OptionsError, match="key=value"):
        parse_channel_arguments("grpc.so_reuseaddr")


def test_unexpected_exceptions_become_internal():
    """A bug in a handler ends the call with INTERNAL and a message, never a crash."""

    class Aborted(Exception):
        pass

    class Context:
        def invocation_metadata(self):
            return ()

        def set_trailing_metadata(self, metadata):  # the handler returns the request id here
            self.trailing = metadata

        async def abort(self, code, details):
            self.status = (code, details)
            raise Aborted

    class Servicer:
        @rpc
        async def Broken(self, request, context):
            raise KeyError("oops")

    context = Context()
    with pytest.raises(Aborted):
        asyncio.run(Servicer().Broken(None, context))
    assert context.status == (grpc.StatusCode.INTERNAL, "KeyError: 'oops'")


def test_grpc_max_threads_caps_concurrent_calls(client):
    """``--grpc_max_threads=4``: while four calls run, another is refused at once.

    (grpc.aio counts a call until its handler task is done, a moment after the client has its
    answer: the cap is for overload protection, not an exact concurrency contract.)
    """
    running = [client.predict_stub.Predict.future(_count(10**12), timeout=1) for _ in "abcd"]
    codes = set()
    for _ in range(20):
        try:
            client.predict_stub.Predict(_count(1), timeout=0.1)
        except grpc.RpcError as exc:
            codes.add(exc.code())
            if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                break
    assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes
    assert [f.exception().code() for f in running] == [grpc.StatusCode.DEADLINE_EXCEEDED] * 4


# ----------------------------------------- reload server: tensor_content, limits, reloads
@pytest.fixture(scope="module")
def reload_client(servers) -> Iterator[Client]:
    client = Client(f"127.0.0.1:{servers['reload'].grpc_port}")
    yield client
    client.close()


def test_tensor_content_flag_and_a_64mb_request(reload_client):
    """The server accepts and returns 64 MiB messages (limit: 2^31 - 1 bytes both ways)."""
    x = np.arange(16 * 1024 * 1024, dtype=np.float32)
    response = reload_client.predict("half_plus_two", x)
    y = response.outputs["y"]
    assert not y.float_val
    assert len(y.tensor_content) == x.nbytes
    np.testing.assert_array_equal(tf.make_ndarray(y), x * 0.5 + 2)


def test_client_deadline_reaches_the_model(reload_client):
    """A deadline stops the model run itself, not just the client's wait: with one model
    thread, the next call only runs once the endless loop has been cancelled."""
    error = _rpc_error(reload_client.predict_stub.Predict, _count(10**12), timeout=0.5)
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert _total(reload_client.predict_stub.Predict(_count(10), timeout=15)) == 45


def _reload(client: Client, config: model_server_config_pb2.ModelServerConfig):
    request = model_management_pb2.ReloadConfigRequest(config=config)
    return client.model_stub.HandleReloadConfigRequest(request, timeout=60)


def test_reload_adds_and_removes_models_under_load(store, reload_client):
    failures: list[Exception] = []
    calls = [0]
    stop = threading.Event()

    def steady_traffic() -> None:
        while not stop.is_set():
            try:
                reload_client.predict_stub.Predict(_count(3), timeout=30)
                calls[0] += 1
            except grpc.RpcError as exc:
                failures.append(exc)

    traffic = threading.Thread(target=steady_traffic)
    traffic.start()
    try:
        added = {"half_plus_two": "half_plus_two", "slow": "slow", "scale": "scale"}
        response = _reload(reload_client, _config({k: store / v for k, v in added.items()}))
        assert response.status.error_code == 0
        # The reply comes once the new model is AVAILABLE: no polling needed.
        x = np.array([[2.0]], dtype=np.float32)
        assert tf.make_ndarray(reload_client.predict("scale", x).outputs["y"]).tolist() == [[6.0]]

        _reload(reload_client, _config({"slow": store / "slow", "scale": store / "scale"}))
        error = _rpc_error(reload_client.predict, "half_plus_two", [2.0])
        assert error.code() == grpc.StatusCode.NOT_FOUND
    finally:
        stop.set()
        traffic.join()
    assert failures == []
    assert calls[0] > 0


def test_reload_reports_models_that_cannot_load(store, reload_client):
    models = {
        "slow": store / "slow",
        "broken": store / "broken",
        "missing": store / "does_not_exist",
    }
    error = _rpc_error(
        reload_client.model_stub.HandleReloadConfigRequest,
        model_management_pb2.ReloadConfigRequest(config=_config(models)),
    )
    assert error.code() == grpc.StatusCode.UNKNOWN
    assert error.details().startswith("2 model(s) did not become available:")
    assert "{name: broken version: 1} due to error:" in error.details()
    assert f"no versions found under {store / 'does_not_exist'}" in error.details()
    # Models that did load keep serving.
    assert _total(reload_client.predict_stub.Predict(_count(4), timeout=30)) == 6


def test_reload_rejects_invalid_configs(reload_client):
    relative = model_server_config_pb2.ModelServerConfig()
    relative.model_config_list.config.add(
        name="m", base_path="relative/path", model_platform="tensorflow"
    )
    error = _rpc_error(
        reload_client.model_stub.HandleReloadConfigRequest,
        model_management_pb2.ReloadConfigRequest(config=relative),
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "absolute path" in error.details()
    custom = model_server_config_pb2.ModelServerConfig()
    custom.custom_model_config.Pack(model_server_config_pb2.ModelServerConfig())
    error = _rpc_error(
        reload_client.model_stub.HandleReloadConfigRequest,
        model_management_pb2.ReloadConfigRequest(config=custom),
    )
    assert (error.code(), error.details()) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "ServerModelConfig type not supported by HandleReloadConfigRequest. Only "
        "ModelConfigList is currently supported",
    )
