"""MultiInference on a TF2 SavedModel whose regress and classify signatures read different
input tensors (TF Serving's ``testMultiInferenceTf2``): every input tensor is fed the same
serialized examples in one session run, as ``multi_inference.cc`` does."""

from __future__ import annotations

import grpc
import pytest
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import inference_pb2, prediction_service_pb2_grpc

from tests.support.models import write_tf2_example_signatures
from tests.support.server_process import ServerProcess

pytestmark = pytest.mark.integration

_CLASSIFY = "tensorflow/serving/classify"
_REGRESS = "tensorflow/serving/regress"


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    base = tmp_path_factory.mktemp("tf2_examples") / "tf2"
    write_tf2_example_signatures(str(base / "123"))
    return base


@pytest.fixture(scope="module")
def stub(model):
    with ServerProcess(["--model_name=tf2", f"--model_base_path={model}"], grpc=True) as server:
        server.wait_for(lambda: server.available_versions("tf2") == [123])
        channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
        yield prediction_service_pb2_grpc.PredictionServiceStub(channel)
        channel.close()


def _request(*tasks: tuple[str, str], xs=(2.0,)) -> inference_pb2.MultiInferenceRequest:
    request = inference_pb2.MultiInferenceRequest()
    for signature, method in tasks:
        task = request.tasks.add(method_name=method)
        task.model_spec.name = "tf2"
        task.model_spec.signature_name = signature
    for x in xs:
        request.input.example_list.examples.add().features.feature["x"].float_list.value.append(x)
    return request


def test_the_model_really_has_two_input_tensors(model):
    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString((model / "123" / "saved_model.pb").read_bytes())
    signatures = saved.meta_graphs[0].signature_def
    names = {signatures[k].inputs["inputs"].name for k in ("regress_x_to_y", "classify_x_to_y")}
    assert len(names) == 2


def test_regress_and_classify_over_different_input_tensors(stub):
    request = _request(("regress_x_to_y", _REGRESS), ("classify_x_to_y", _CLASSIFY), xs=(2.0, 4.0))
    response = stub.MultiInference(request, timeout=30)
    regression, classification = response.results
    assert [r.value for r in regression.regression_result.regressions] == [3.0, 4.0]
    assert [
        [c.score for c in row.classes]
        for row in classification.classification_result.classifications
    ] == [[3.0], [4.0]]
    for result, signature in zip(
        response.results, ("regress_x_to_y", "classify_x_to_y"), strict=True
    ):
        assert (result.model_spec.name, result.model_spec.version.value) == ("tf2", 123)
        assert result.model_spec.signature_name == signature


def test_tf_serving_rules_still_apply(stub):
    duplicate = _request(("regress_x_to_y", _REGRESS), ("regress_x_to_y", _REGRESS))
    with pytest.raises(grpc.RpcError) as error:
        stub.MultiInference(duplicate, timeout=30)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.value.details() == "Duplicate evaluation of signature: regress_x_to_y"
    missing = _request(("regress_x_to_y", _REGRESS), ("nope", _CLASSIFY))
    with pytest.raises(grpc.RpcError) as error:
        stub.MultiInference(missing, timeout=30)
    assert error.value.details() == "Requested signature not found in model graph: nope"
