"""``--grpc_listeners``: several ``grpc.aio`` servers bound to the gRPC port in each process
(serving.grpc_api.server.GrpcServer says why), every one of them serving every service."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import numpy as np
import pytest
import tensorflow as tf
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tensorflow_serving.apis import (
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from benchmarks import process_tree
from tests.support.models import write_half_plus_two
from tests.support.server_process import ServerProcess, frontend_processes

pytestmark = pytest.mark.integration

LISTENERS = 4
# Connections opened one after another, per listener on the port: the kernel picks a listener
# for each by a hash of its addresses, so 32 x k of them miss one of k listeners with a chance
# below k x e^-32 (< 1e-13 for the 8 listeners of two front ends).
CONNECTIONS_PER_LISTENER = 32


def serving_processes() -> int:
    """The processes that bind the ports: the server, or each front end (not the model
    process, nor the spare)."""
    return max(1, frontend_processes())


def sockets_per_process(server: ServerProcess) -> list[int]:
    """How many sockets listen on the gRPC port in each of the server's processes that has
    any."""
    counts = (
        process_tree.listening_sockets(pid, server.grpc_port)
        for pid in process_tree.descendants(server.process.pid)
    )
    return [count for count in counts if count]


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[ServerProcess]:
    base = tmp_path_factory.mktemp("listeners") / "half_plus_two"
    write_half_plus_two(str(base / "1"))
    with ServerProcess(
        [
            "--model_name=half_plus_two",
            f"--model_base_path={base}",
            f"--grpc_listeners={LISTENERS}",
            "--enable_grpc_healthcheck_service",
        ],
        grpc=True,
    ) as process:
        yield process


def test_each_serving_process_binds_the_grpc_port_once_per_listener(server):
    server.wait_for(lambda: len(sockets_per_process(server)) >= serving_processes())
    assert sockets_per_process(server) == [LISTENERS] * serving_processes()


def test_every_listener_answers_every_service(server):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "half_plus_two"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([1.0, 2.0], np.float32)))
    status_request = get_model_status_pb2.GetModelStatusRequest()
    status_request.model_spec.name = "half_plus_two"
    for _ in range(CONNECTIONS_PER_LISTENER * LISTENERS * serving_processes()):
        # A local subchannel pool: a connection of its own, not one shared with earlier channels.
        with grpc.insecure_channel(
            f"127.0.0.1:{server.grpc_port}", options=[("grpc.use_local_subchannel_pool", 1)]
        ) as channel:
            predicted = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(
                request, timeout=30
            )
            np.testing.assert_allclose(tf.make_ndarray(predicted.outputs["y"]), [2.5, 3.0])
            status = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(
                status_request, timeout=30
            )
            assert [v.version for v in status.model_version_status] == [1]
            health = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=30
            )
            assert health.status == health_pb2.HealthCheckResponse.SERVING
