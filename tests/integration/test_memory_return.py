"""After a large request the server's memory goes back to what it was (``serving.memory``).

RSS is read from ``/proc/<pid>/status`` (``RssAnon``: the heap, not the shared libraries,
whose pages the kernel may drop or keep). A sampler records the peak during the request, so
the test also proves the request did cost memory; then RSS must fall back to within
``SLACK`` of the value before it, polled with a deadline.
"""

from __future__ import annotations

import threading
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from tests.support.models import write_half_plus_two
from tests.support.server_process import ServerProcess

pytestmark = pytest.mark.integration

MIB = 1024 * 1024
SLACK = 64 * MIB
GRPC_TENSOR_BYTES = 256 * MIB
REST_VALUES = 16 * 1024 * 1024  # ~70 MB of JSON numbers, 64 MiB decoded as float32


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("memory") / "half_plus_two"
    write_half_plus_two(str(base / "1"))
    args = [
        "--model_name=half_plus_two",
        f"--model_base_path={base}",
        "--max_request_bytes=1073741824",
        # Off: the REST body below is parsed into more than the default 1 GiB allows, which
        # is what makes its retention measurable (the limits are tested on their own).
        "--max_request_memory_bytes=0",
        "--max_total_request_memory_bytes=0",
        # One process: the RSS measured is the process that decodes and runs the request.
        "--frontend_processes=0",
    ]
    with ServerProcess(args, grpc=True) as process:
        process.wait_for(lambda: process.available_versions("half_plus_two") == [1])
        yield process


def _anon_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no RssAnon in /proc/<pid>/status")


class _PeakSampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self._pid = pid
        self._done = threading.Event()
        self.peak = 0
        self.start()

    def run(self) -> None:
        while not self._done.wait(0.02):
            self.peak = max(self.peak, _anon_bytes(self._pid))

    def stop(self) -> int:
        self._done.set()
        self.join()
        return self.peak


def _assert_memory_returns(server: ServerProcess, send, min_growth: int) -> None:
    pid = server.process.pid
    assert server.json("POST", "/v1/models/half_plus_two:predict", {"instances": [[1.0]]})[0] == 200
    before = _anon_bytes(pid)
    sampler = _PeakSampler(pid)
    send()
    peak = sampler.stop()
    assert peak - before >= min_growth, f"the request cost only {(peak - before) / MIB:.0f} MiB"
    deadline = time.monotonic() + 30
    while (after := _anon_bytes(pid)) > before + SLACK:
        assert time.monotonic() < deadline, (
            f"RSS (anon) stayed at {after / MIB:.0f} MiB after the request: "
            f"{before / MIB:.0f} MiB before, peak {peak / MIB:.0f} MiB"
        )
        time.sleep(0.2)


def test_memory_of_a_large_grpc_request_is_returned(server):
    def send() -> None:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "half_plus_two"
        values = np.ones((1, GRPC_TENSOR_BYTES // 4), np.float32)
        request.inputs["x"].CopyFrom(tf.make_tensor_proto(values))
        options = [("grpc.max_send_message_length", 2**31 - 1)]
        options.append(("grpc.max_receive_message_length", 2**31 - 1))
        with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}", options=options) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            response = stub.Predict(request, timeout=300)
        assert response.outputs["y"].tensor_shape.dim[1].size == values.shape[1]

    _assert_memory_returns(server, send, min_growth=GRPC_TENSOR_BYTES)


def test_memory_of_a_large_rest_request_is_returned(server):
    def send() -> None:
        body = b'{"instances": [[' + b",".join([b"1.0"] * REST_VALUES) + b"]]}"
        status, payload = server.request("POST", "/v1/models/half_plus_two:predict", body)
        assert status == 200, payload[:300]
        assert payload.startswith(b'{"predictions":[[2.5,2.5,')

    _assert_memory_returns(server, send, min_growth=100 * MIB)
