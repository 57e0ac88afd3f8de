"""Request bodies, written once per model and protocol and replayed by wrk/h2load.

TF Serving's REST row format and gRPC PredictRequest are built here (project venv); the OIP v2
gRPC ModelInferRequest needs a peer's protobuf module, so ``python -m benchmarks.payloads v2grpc
IN.npy OUT`` is run inside a peer venv.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import orjson


def grpc_frame(message: bytes) -> bytes:
    """gRPC's length-prefixed message: 1 flag byte (uncompressed) + 4-byte big-endian length."""
    return b"\x00" + len(message).to_bytes(4, "big") + message


def tf_rest(x: np.ndarray) -> bytes:
    return orjson.dumps({"instances": x.tolist()})


def tf_grpc(model: str, x: np.ndarray) -> bytes:
    from serving import protos, tensor_codec

    request = protos.PredictRequest()
    request.model_spec.name = model
    tensor_codec.encode(x, tensor_content=True, out=request.inputs["x"])
    return grpc_frame(request.SerializeToString())


def v2_rest(x: np.ndarray) -> bytes:
    tensor = {"name": "x", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}
    return orjson.dumps({"inputs": [tensor]})


def v2_grpc(model: str, x: np.ndarray) -> bytes:
    try:
        from tritonclient.grpc import service_pb2
    except ImportError:
        from mlserver.grpc import dataplane_pb2 as service_pb2
    request = service_pb2.ModelInferRequest(model_name=model)
    request.inputs.add(name="x", datatype="FP32", shape=list(x.shape))
    request.raw_input_contents.append(np.ascontiguousarray(x, np.float32).tobytes())
    return grpc_frame(request.SerializeToString())


if __name__ == "__main__":
    _, kind, model, source, target = sys.argv
    assert kind == "v2grpc", kind
    Path(target).write_bytes(v2_grpc(model, np.load(source)))
