"""A TF-free gRPC client built on serving.protos talks to the real server like TF Serving's clients.

The client below never touches the official ``*_pb2`` modules: method paths come from our
service descriptors, requests are our messages, answers are parsed with our classes. It runs in
a subprocess so the test can also check that TensorFlow was never imported on the client side
(the point of serving.protos: a front-end process that speaks the API without TensorFlow).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.support.models import write_half_plus_two
from tests.support.server_process import REPO_ROOT, ServerProcess

pytestmark = pytest.mark.integration

_CLIENT = """
import json, sys
import grpc
from serving import protos

channel = grpc.insecure_channel(sys.argv[1])
grpc.channel_ready_future(channel).result(timeout=30)

def call(service, method, request, response_type):
    rpc = channel.unary_unary(
        protos.method_path(service, method),
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=response_type.FromString,
    )
    return rpc(request, timeout=30)

request = protos.PredictRequest()
request.model_spec.name = "half_plus_two"
x = request.inputs["x"]
x.dtype = protos.DT_FLOAT
x.tensor_shape.dim.add(size=3)
x.tensor_shape.dim.add(size=1)
x.float_val.extend([1.0, 2.0, 5.0])
predicted = call("tensorflow.serving.PredictionService", "Predict", request,
                 protos.PredictResponse)

metadata_request = protos.GetModelMetadataRequest(metadata_field=["signature_def"])
metadata_request.model_spec.name = "half_plus_two"
metadata = call("tensorflow.serving.PredictionService", "GetModelMetadata", metadata_request,
                protos.GetModelMetadataResponse)
signatures = protos.SignatureDefMap()
metadata.metadata["signature_def"].Unpack(signatures)

status_request = protos.GetModelStatusRequest()
status_request.model_spec.name = "half_plus_two"
status = call("tensorflow.serving.ModelService", "GetModelStatus", status_request,
              protos.GetModelStatusResponse)

try:
    missing = protos.PredictRequest()
    missing.model_spec.name = "no_such_model"
    call("tensorflow.serving.PredictionService", "Predict", missing, protos.PredictResponse)
    missing_code = "OK"
except grpc.RpcError as error:
    missing_code = error.code().name

print(json.dumps({
    "y": list(predicted.outputs["y"].float_val),
    "y_dtype": protos.DataType.Name(predicted.outputs["y"].dtype),
    "version": predicted.model_spec.version.value,
    "type_url": metadata.metadata["signature_def"].type_url,
    "signatures": sorted(signatures.signature_def),
    "states": [protos.ModelVersionStatus.State.Name(v.state) for v in status.model_version_status],
    "missing_code": missing_code,
    "tensorflow_loaded": sorted(m for m in sys.modules if m.split(".")[0] == "tensorflow"),
}))
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("tf_free_client")
    write_half_plus_two(str(root / "half_plus_two" / "123"))
    args = ["--model_name=half_plus_two", f"--model_base_path={root / 'half_plus_two'}"]
    with ServerProcess(args, grpc=True) as server:
        server.wait_for(lambda: server.available_versions("half_plus_two") == [123])
        yield server


def test_a_tf_free_client_predicts_reads_metadata_and_status(server) -> None:
    out = subprocess.run(
        [sys.executable, "-c", _CLIENT, f"127.0.0.1:{server.grpc_port}"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    answer = json.loads(out.stdout)
    assert answer["y"] == [2.5, 3.0, 4.5]  # half_plus_two: x / 2 + 2
    assert answer["y_dtype"] == "DT_FLOAT"
    assert answer["version"] == 123
    assert answer["type_url"] == "type.googleapis.com/tensorflow.serving.SignatureDefMap"
    assert "serving_default" in answer["signatures"]
    assert answer["states"] == ["AVAILABLE"]
    assert answer["missing_code"] == "NOT_FOUND"
    assert answer["tensorflow_loaded"] == []
