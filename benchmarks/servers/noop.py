"""The transport ceiling: TF-Serving-shaped REST and gRPC endpoints on this project's exact
stack (uvicorn + httptools and grpc.aio on the server's event loop, uvloop), doing everything a real
server does per request except the model call: parse the request into numpy, build a
10-float response. No server on this stack can answer faster than this one. Its gRPC port has
as many ``grpc.aio`` servers as ours has by default (``--grpc_listeners``; each takes in calls on
its own) and grpc.aio's poller thread scheduled as ours by default
(``--grpc_poller_batch_scheduling``), so the ceiling has the same way in.

    python -m benchmarks.servers.noop REST_PORT GRPC_PORT
"""

from __future__ import annotations

import sys

import grpc
import numpy as np
import orjson
import uvicorn
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from serving.event_loop import run_event_loop
from serving.grpc_api.completion_poller import batch_schedule_poller
from serving.options import ServerOptions

_OUTPUT = np.zeros((1, 10), np.float32)
_REST_BODY = orjson.dumps({"predictions": _OUTPUT.tolist()})


async def rest_app(scope, receive, send) -> None:
    if scope["type"] != "http":
        return
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    document = orjson.loads(b"".join(chunks))
    np.asarray(document["instances"], np.float32)
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(_REST_BODY))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": _REST_BODY})


class _Prediction(prediction_service_pb2_grpc.PredictionServiceServicer):
    async def Predict(self, request, context):
        for tensor in request.inputs.values():
            np.frombuffer(tensor.tensor_content, np.float32)
        response = predict_pb2.PredictResponse()
        response.model_spec.CopyFrom(request.model_spec)
        shape = tensor_shape_pb2.TensorShapeProto(
            dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=s) for s in _OUTPUT.shape]
        )
        response.outputs["y"].CopyFrom(
            tensor_pb2.TensorProto(
                dtype=types_pb2.DT_FLOAT, tensor_shape=shape, tensor_content=_OUTPUT.tobytes()
            )
        )
        return response


async def main(rest_port: int, grpc_port: int) -> None:
    servers = []  # referenced while serving: a collected grpc.aio server stops
    for _ in range(ServerOptions().grpc_listeners):
        server = grpc.aio.server()
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(_Prediction(), server)
        server.add_insecure_port(f"127.0.0.1:{grpc_port}")
        await server.start()
        servers.append(server)
    if ServerOptions().grpc_poller_batch_scheduling:
        batch_schedule_poller()
    config = uvicorn.Config(
        rest_app,
        host="127.0.0.1",
        port=rest_port,
        http="httptools",
        loop="none",
        lifespan="off",
        access_log=False,
        log_level="warning",
    )
    await uvicorn.Server(config).serve()


if __name__ == "__main__":
    run_event_loop(main(int(sys.argv[1]), int(sys.argv[2])))
