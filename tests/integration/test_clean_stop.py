"""SIGTERM exits 0 (README), also when it arrives while the initial versions are loading; a
REST port that cannot be bound fails the start instead of leaving a server without REST.

The load is held open by a gated model whose warmup request waits for the test
(``tests.support.gate``), so the signal is known to arrive mid-load.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

from serving.servables.warmup import write_warmup_file
from tests.support.gate import Gate, write_gated_double
from tests.support.models import write_half_plus_two
from tests.support.server_process import REPO_ROOT, ServerProcess

pytestmark = pytest.mark.integration


def _gated_warmup(version_dir: str, gate: Gate) -> None:
    request = predict_pb2.PredictRequest()
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.ones((1, 1), np.float32)))
    request.inputs["gate"].CopyFrom(tf.make_tensor_proto([gate.path.encode()]))
    log = prediction_log_pb2.PredictionLog(
        predict_log=prediction_log_pb2.PredictLog(request=request)
    )
    write_warmup_file(version_dir, [log])


def _wait_for_log(server: ServerProcess, text: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while text not in server.log():
        assert server.process.poll() is None, server.log()
        assert time.monotonic() < deadline, f"{text!r} not logged:\n{server.log()}"
        time.sleep(0.1)


def test_sigterm_during_the_initial_load_exits_0_once_the_load_is_done(tmp_path):
    gate = Gate(str(tmp_path))
    version = write_gated_double(str(tmp_path / "gated" / "1"))
    _gated_warmup(version, gate)
    server = ServerProcess(["--model_name=gated", f"--model_base_path={tmp_path / 'gated'}"])
    # Not ServerProcess.start(): the REST port opens only after the load, which is held.
    server.process = subprocess.Popen(
        [sys.executable, "-m", "serving", *server.args],
        cwd=REPO_ROOT,
        env=server._env,
        stdout=server._log,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_for_log(server, "Model gated: loading version 1")
        server.process.send_signal(signal.SIGTERM)
        _wait_for_log(server, "Stop requested while the initial versions were loading")
        assert server.process.poll() is None  # the load in progress is finished, not torn down
        gate.open()
        assert server.process.wait(120) == 0, server.log()
        assert "Server stopped" in server.log()
        assert "Exporting HTTP/REST API" not in server.log()  # it never started serving
    finally:
        server.__exit__(None, None, None)


def test_a_rest_port_in_use_fails_the_start(tmp_path):
    write_half_plus_two(str(tmp_path / "half" / "1"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = ServerProcess(["--model_name=half", f"--model_base_path={tmp_path / 'half'}"])
        server.args[0] = f"--rest_api_port={taken.getsockname()[1]}"
        completed = subprocess.run(
            [sys.executable, "-m", "serving", *server.args],
            cwd=REPO_ROOT,
            env=server._env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        server.__exit__(None, None, None)
    assert completed.returncode != 0
    assert "Cannot listen on 127.0.0.1" in completed.stderr


def test_sigusr1_prints_every_threads_stack_and_the_server_keeps_serving(tmp_path):
    write_half_plus_two(str(tmp_path / "hpt" / "1"))
    with ServerProcess(["--model_name=hpt", f"--model_base_path={tmp_path / 'hpt'}"]) as server:
        server.wait_for(lambda: server.available_versions("hpt") == [1])
        server.process.send_signal(signal.SIGUSR1)
        # The dump ends with the main thread, which runs the event loop; it answers after.
        _wait_for_log(server, "in run_event_loop")
        assert "most recent call first" in server.log()
        status, body = server.json("POST", "/v1/models/hpt:predict", {"instances": [1.0]})
        assert (status, body) == (200, {"predictions": [2.5]})
        assert server.stop() == 0
