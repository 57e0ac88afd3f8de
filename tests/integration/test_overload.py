"""Overload: a full queue refuses at once (REST 503, gRPC UNAVAILABLE), the server recovers,
and the REST connection cap answers a connection past it with an immediate 503.

The queue is made full deterministically: a gated model (``tests.support.gate``) blocks the
only batch thread, and the scheduler's own count of accepted inputs (Prometheus) says when the
one queue slot is taken as well. Latency figures are in ``benchmarks/overload.py``; here only
the behaviour is asserted, with generous bounds.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from tests.support.gate import OPEN, Gate, write_gated_double
from tests.support.server_process import ServerProcess, frontend_processes

pytestmark = pytest.mark.integration

BATCHING = """
max_batch_size { value: 1 }
batch_timeout_micros { value: 0 }
max_enqueued_batches { value: 1 }
num_batch_threads { value: 1 }
"""
PREDICT = "/v1/models/gated:predict"
ACCEPTED_INPUTS = ":tensorflow:serving:batching:input_batch_size_count"


@pytest.fixture
def gated_server(tmp_path):
    write_gated_double(str(tmp_path / "gated" / "1"))
    (tmp_path / "batching.txt").write_text(BATCHING)
    (tmp_path / "monitoring.txt").write_text("prometheus_config { enable: true }\n")
    args = [
        "--model_name=gated",
        f"--model_base_path={tmp_path / 'gated'}",
        "--enable_batching",
        f"--batching_parameters_file={tmp_path / 'batching.txt'}",
        f"--monitoring_config_file={tmp_path / 'monitoring.txt'}",
    ]
    with ServerProcess(args, grpc=True) as server:
        server.wait_for(lambda: server.available_versions("gated") == [1])
        yield server


def _accepted_inputs(server: ServerProcess) -> int:
    status, body = server.request("GET", "/monitoring/prometheus/metrics")
    assert status == 200
    total = 0.0
    for line in body.decode().splitlines():
        if line.startswith(ACCEPTED_INPUTS):
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


class _Call(threading.Thread):
    """One REST predict on its own fresh connection, in the background."""

    def __init__(self, server: ServerProcess, rows: list[dict]) -> None:
        super().__init__(daemon=True)
        self._server = server
        self._rows = rows
        self.answer: tuple[int, dict] | None = None
        self.start()

    def run(self) -> None:
        self.answer = self._server.json("POST", PREDICT, {"instances": self._rows})


def _fill_queue(server: ServerProcess, gate: Gate) -> list[_Call]:
    """Gated calls until one runs (blocking the batch thread) and one waits in the queue.

    A call sent before the batch thread took the previous one finds the queue full and is
    refused; it is simply sent again."""
    held: list[_Call] = []
    deadline = time.monotonic() + 120
    while len(held) < 2:
        before = _accepted_inputs(server)
        call = _Call(server, gate.rows([float(len(held) + 1)]))
        while call.answer is None and _accepted_inputs(server) == before:
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.05)
        if call.answer is None:
            held.append(call)  # accepted: it will wait for the gate
        else:
            call.join()
            assert call.answer[0] == 503, call.answer
    return held


def test_full_queue_refuses_new_clients_at_once_and_the_server_recovers(gated_server, tmp_path):
    gate = Gate(str(tmp_path))
    held = _fill_queue(gated_server, gate)

    # A new client on a fresh connection is refused while the gate is still closed, i.e.
    # without waiting for the backlog to drain.
    refused = _Call(gated_server, gate.rows([9.0]))
    refused.join(timeout=30)
    assert refused.answer is not None, "a request was queued behind the blocked batch"
    status, body = refused.answer
    assert status == 503
    assert "queue" in body["error"] and "full" in body["error"]

    channel = grpc.insecure_channel(f"127.0.0.1:{gated_server.grpc_port}")
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "gated"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.ones((1, 1), np.float32)))
    request.inputs["gate"].CopyFrom(tf.make_tensor_proto([gate.path.encode()]))
    with pytest.raises(grpc.RpcError) as refusal:
        prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=30)
    channel.close()
    assert refusal.value.code() == grpc.StatusCode.UNAVAILABLE
    assert all(call.answer is None for call in held), "the gate was open too early"

    gate.open()
    for index, call in enumerate(held):
        call.join(timeout=60)
        assert call.answer == (200, {"predictions": [[2.0 * (index + 1)]]})
    status, body = gated_server.json("POST", PREDICT, {"instances": [{"x": [4.0], "gate": OPEN}]})
    assert (status, body) == (200, {"predictions": [[8.0]]})


def _keep_alive_request(conn: http.client.HTTPConnection) -> tuple[int, bytes, str]:
    body = json.dumps({"instances": [{"x": [1.0], "gate": OPEN}]})
    conn.request("POST", PREDICT, body, {"Content-Type": "application/json"})
    response = conn.getresponse()
    return response.status, response.read(), response.getheader("connection") or ""


@pytest.fixture(scope="module")
def capped_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("capped")
    write_gated_double(str(root / "gated" / "1"))
    args = ["--model_name=gated", f"--model_base_path={root / 'gated'}"]
    # At most one front end: with several, each takes a share of the cap (docs/serving.md) and
    # which one a connection reaches is the kernel's choice. One front end holds the whole cap,
    # so the runs with front-end processes (scripts/test.sh) test it there.
    cap = ["--rest_api_max_connections=3", f"--frontend_processes={min(frontend_processes(), 1)}"]
    with ServerProcess([*args, *cap]) as server:
        server.wait_for(lambda: server.available_versions("gated") == [1])
        yield server


def _hold_connections(server: ServerProcess, count: int) -> list[http.client.HTTPConnection]:
    """``count`` open keep-alive connections, each answered once (so the server has them).
    Connections of earlier requests may still count for a moment: a 503 is retried."""
    held: list[http.client.HTTPConnection] = []
    deadline = time.monotonic() + 60
    while len(held) < count:
        conn = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=30)
        if _keep_alive_request(conn)[0] == 200:
            held.append(conn)
        else:
            conn.close()
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.1)
    return held


def test_connection_past_the_cap_gets_an_immediate_503_and_room_frees_up(capped_server):
    held = _hold_connections(capped_server, 3)
    for conn in held:  # still open, still served
        assert _keep_alive_request(conn)[0] == 200

    extra = http.client.HTTPConnection("127.0.0.1", capped_server.rest_port, timeout=30)
    status, body, connection = _keep_alive_request(extra)
    extra.close()
    assert status == 503
    assert "--rest_api_max_connections" in json.loads(body)["error"]
    assert connection.lower() == "close"

    held.pop().close()
    capped_server.wait_for(
        lambda: (
            capped_server.json("POST", PREDICT, {"instances": [{"x": [3.0], "gate": OPEN}]})
            == (200, {"predictions": [[6.0]]})
        ),
        timeout=30,
    )
    for conn in held:
        conn.close()


def test_refused_client_reads_the_503_even_when_it_sent_a_body(capped_server):
    """The refusal is written before anything is read; the socket is drained before it is
    closed, so the client reads the 503 instead of a connection reset."""
    held = _hold_connections(capped_server, 3)
    with socket.create_connection(("127.0.0.1", capped_server.rest_port), timeout=30) as sock:
        sock.sendall(f"POST {PREDICT} HTTP/1.1\r\nHost: x\r\n".encode())
        sock.sendall(b"Content-Length: 100000\r\n\r\n" + b"0" * 100000)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 503 ")
    for conn in held:
        conn.close()
