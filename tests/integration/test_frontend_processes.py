"""The multi-process server (``--frontend_processes``): what it is made of and how it fails.

A real supervisor with a model process and two front ends on loopback ports; processes are
found through /proc (the supervisor's children), killed for real, and every expectation is
polled for rather than slept for. What the front ends answer is checked against the single-
process server elsewhere: the request-path suites run again with front ends in CI
(``TFX_SERVING_TEST_FRONTENDS``, see scripts/test.sh).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from benchmarks.hop_marks import calls, collect, entry, steps, tracing_env
from serving.core.model_spec import ModelSpec
from serving.multiproc.remote import RemoteDataplane
from tests.support.models import write_half_plus_two, write_tf2_scale
from tests.support.server_process import ServerProcess

pytestmark = pytest.mark.integration

PREDICT = "/v1/models/half/versions/1:predict"


def children(pid: int) -> dict[int, str]:
    """pid -> role of a process's children, from /proc: "model", "frontend" (a front-end
    process serving a slot: it names itself ``frontend-N``), "spare" (one waiting for a slot:
    ``frontend-spare``) or "starting" (a front-end process still importing)."""
    found = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            try:
                cmdline = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
                name = Path(f"/proc/{child}/comm").read_text().strip()
            except FileNotFoundError:
                continue
            module = next((part for part in cmdline if part.startswith(b"serving.")), b"")
            if module.endswith(b"model_process"):
                found[int(child)] = "model"
            elif module.endswith(b"frontend"):
                found[int(child)] = (
                    "spare"
                    if name == "frontend-spare"
                    else "frontend"
                    if name.startswith("frontend-")
                    else "starting"
                )
    return found


def name(pid: int) -> str:
    """/proc/<pid>/comm: a front-end process's slot (``frontend-N``) or ``frontend-spare``."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except FileNotFoundError:
        return ""


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def maps_tensorflow(pid: int) -> bool:
    return "tensorflow" in Path(f"/proc/{pid}/maps").read_text()


def vm_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.fixture
def model_dir(tmp_path):
    write_half_plus_two(str(tmp_path / "half" / "1"))
    (tmp_path / "monitoring.txt").write_text("prometheus_config { enable: true }\n")
    return tmp_path


def start(model_dir, frontends: int = 2, extra=(), env: dict | None = None) -> ServerProcess:
    return ServerProcess(
        [
            "--model_name=half",
            f"--model_base_path={model_dir / 'half'}",
            f"--frontend_processes={frontends}",
            f"--monitoring_config_file={model_dir / 'monitoring.txt'}",
            *extra,
        ],
        grpc=True,
        env=env,
    )


def all_serving(server: ServerProcess, frontends: int = 2, spares: int = 1) -> dict[int, str]:
    """The server's children once every front end has said it serves (the REST port opens
    with the first one) and the spares wait for a slot (``--frontend_spare``, default 1)."""
    server.wait_for(lambda: all(f"Front end {i} serving" in server.log() for i in range(frontends)))
    expected = sorted(["model"] + ["frontend"] * frontends + ["spare"] * spares)
    return server.wait_for(
        lambda: (
            (found := children(server.process.pid)) and sorted(found.values()) == expected and found
        )
    )


def predict_rest(server: ServerProcess) -> tuple[int, bytes]:
    return server.request("POST", PREDICT, {"instances": [1.0, 2.0]})


def predict_grpc(server: ServerProcess) -> predict_pb2.PredictResponse:
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "half"
        request.inputs["x"].CopyFrom(tf.make_tensor_proto([[1.0], [2.0]], tf.float32))
        return stub.Predict(request, timeout=30)


def test_one_model_process_and_front_ends_without_tensorflow(model_dir):
    with start(model_dir) as server:
        roles = all_serving(server)
        assert sorted(roles.values()) == ["frontend", "frontend", "model", "spare"]
        status, body = predict_rest(server)
        assert (status, json.loads(body)) == (200, {"predictions": [2.5, 3.0]})
        outputs = tf.make_ndarray(predict_grpc(server).outputs["y"])
        np.testing.assert_allclose(outputs, [[2.5], [3.0]])
        for pid, role in roles.items():
            assert maps_tensorflow(pid) == (role == "model"), (pid, role)
        frontend_rss = [vm_rss_mb(pid) for pid, role in roles.items() if role != "model"]
        assert max(frontend_rss) < 200, frontend_rss  # the spare's too
        assert not maps_tensorflow(server.process.pid)  # the supervisor neither
        assert server.stop() == 0
        for pid in roles:
            assert not alive(pid)


def test_metrics_count_requests_of_every_front_end(model_dir):
    with start(model_dir) as server:
        all_serving(server)
        for _ in range(20):  # one connection each: the kernel spreads them over front ends
            assert predict_rest(server)[0] == 200

        def counted() -> float:
            _, text = server.request("GET", "/monitoring/prometheus/metrics")
            for line in text.decode().splitlines():
                if line.startswith(":tensorflow:serving:request_count{") and 'status="OK"' in line:
                    return float(line.rsplit(" ", 1)[1])
            return 0.0

        assert server.wait_for(lambda: counted() == 20 or None, timeout=10)


def test_without_a_spare_a_killed_front_end_is_replaced_while_the_other_serves(model_dir):
    """``--frontend_spare=0``: the replacement is a process started for it."""
    with start(model_dir, extra=["--frontend_spare=0"]) as server:
        roles = all_serving(server, spares=0)
        victim = next(pid for pid, role in roles.items() if role == "frontend")
        os.kill(victim, signal.SIGKILL)
        server.wait_for(lambda: not alive(victim))
        # A connection racing the crash may still be reset (the kernel drops what was queued on
        # the dead listener; docs/serving.md); then every new one reaches a live front end.
        resets = 0
        while resets < 3:
            try:
                assert predict_rest(server)[0] == 200
                break
            except OSError:  # reset (or refused) by the kernel for the dead listener
                resets += 1
        for _ in range(20):
            assert predict_rest(server)[0] == 200
        replaced = server.wait_for(
            lambda: (
                (found := children(server.process.pid))
                and sorted(found.values()) == ["frontend", "frontend", "model"]
                and victim not in found
            )
        )
        assert replaced
        assert "frontend-" in server.log() and "exited with signal SIGKILL" in server.log()


def predict_unix(path: Path) -> predict_pb2.PredictResponse:
    with grpc.insecure_channel(f"unix:{path}") as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "half"
        request.inputs["x"].CopyFrom(tf.make_tensor_proto([[1.0]], tf.float32))
        return stub.Predict(request, timeout=30)


def test_a_killed_front_end_is_replaced_by_the_spare_and_a_new_spare_starts(model_dir, tmp_path):
    """The spare (imports done, nothing bound) takes the dead front end's slot: the replacement
    is the spare's own pid, started before the kill, so nothing is imported for it, and it is
    front end 0 down to what only front end 0 does (the ``--grpc_socket_path`` socket). The
    other front end serves alone meanwhile -- forced by stopping the spare (SIGSTOP) until
    requests have been answered -- and a new spare starts."""
    grpc_socket = tmp_path / "grpc.sock"
    with start(model_dir, extra=[f"--grpc_socket_path={grpc_socket}"]) as server:
        roles = all_serving(server)
        spare = next(pid for pid, role in roles.items() if role == "spare")
        victim = next(pid for pid in roles if name(pid) == "frontend-0")
        other = next(pid for pid in roles if name(pid) == "frontend-1")
        assert tf.make_ndarray(predict_unix(grpc_socket).outputs["y"]).tolist() == [[2.5]]
        os.kill(spare, signal.SIGSTOP)  # it cannot take the slot until SIGCONT
        try:
            os.kill(victim, signal.SIGKILL)
            # Reaped by the supervisor, which waits for its ready pipe to close: every file of
            # it is closed, its listening sockets too (a zombie leader's threads may still
            # hold them), so no new connection can reach them.
            server.wait_for(lambda: not Path(f"/proc/{victim}").exists())
            for _ in range(20):  # only `other` listens: the victim is gone, the spare stopped
                assert predict_rest(server)[0] == 200
            np.testing.assert_allclose(
                tf.make_ndarray(predict_grpc(server).outputs["y"]), [[2.5], [3.0]]
            )
            assert name(spare) == "frontend-spare"
        finally:
            os.kill(spare, signal.SIGCONT)
        server.wait_for(lambda: name(spare) == "frontend-0", timeout=30)
        server.wait_for(lambda: server.log().count("Front end 0 serving") == 2, timeout=30)
        assert f"Spare front end (pid {spare}) takes the place of frontend-0" in server.log()
        assert alive(other) and name(other) == "frontend-1"
        # Front end 0's UNIX socket: served again, by the former spare.
        assert tf.make_ndarray(predict_unix(grpc_socket).outputs["y"]).tolist() == [[2.5]]
        after = all_serving(server)
        frontends = {pid for pid, role in after.items() if role == "frontend"}
        assert frontends == {spare, other}
        (new_spare,) = [pid for pid, role in after.items() if role == "spare"]
        assert new_spare not in roles
        for _ in range(10):
            assert predict_rest(server)[0] == 200
        assert server.stop() == 0
        assert not any(alive(pid) for pid in [*after, victim])


def test_a_spare_that_cannot_bind_is_a_front_end_that_failed_to_start(model_dir):
    """The spare takes the slot of the only front end while something else holds the REST
    port (forced: the spare is stopped until the port is taken): it exits as a front end that
    cannot listen does, the supervisor starts the slot again after its back-off -- the server
    keeps running -- and once the port is free the slot serves again."""
    with start(model_dir, frontends=1) as server:
        roles = all_serving(server, frontends=1)
        spare = next(pid for pid, role in roles.items() if role == "spare")
        victim = next(pid for pid, role in roles.items() if role == "frontend")
        os.kill(spare, signal.SIGSTOP)
        try:
            os.kill(victim, signal.SIGKILL)
            server.wait_for(lambda: not Path(f"/proc/{victim}").exists())
            # Bound, not listening, without SO_REUSEADDR / SO_REUSEPORT: no one else can bind.
            blocker = socket.socket()
            blocker.bind(("127.0.0.1", server.rest_port))
        finally:
            os.kill(spare, signal.SIGCONT)
        with blocker:
            server.wait_for(lambda: f"(pid {spare}) exited with code 3" in server.log())
            assert "Cannot listen on 127.0.0.1" in server.log()
            assert server.process.poll() is None  # the server runs on
        server.wait_for(lambda: server.log().count("Front end 0 serving") == 2)
        assert predict_rest(server)[0] == 200
        assert server.stop() == 0


def test_front_ends_answer_unavailable_while_the_model_process_is_restarted(model_dir):
    with start(model_dir) as server:
        roles = all_serving(server)
        model = next(pid for pid, role in roles.items() if role == "model")
        os.kill(model, signal.SIGKILL)
        server.wait_for(lambda: not alive(model))
        # Until the new model process has loaded its versions: 503, UNAVAILABLE, not ready.
        _, body = server.wait_for(
            lambda: (answer := predict_rest(server))[0] == 503 and answer, timeout=30
        )
        assert b"model process" in body
        with pytest.raises(grpc.RpcError) as failure:
            predict_grpc(server)
        assert failure.value.code() == grpc.StatusCode.UNAVAILABLE
        assert server.request("GET", "/readyz")[0] == 503
        # Then back, with its version reloaded, through the same front ends.
        server.wait_for(lambda: server.request("GET", "/readyz")[0] == 200, timeout=90)
        # Each front end reconnects on its own, within RECONNECT_SECONDS of the new model
        # process listening: then every connection, whichever front end takes it, is served.
        server.wait_for(lambda: all(predict_rest(server)[0] == 200 for _ in range(10)), timeout=5)
        assert set(children(server.process.pid)) - {model} >= {
            pid for pid, role in roles.items() if role == "frontend"
        }


def test_sigkilled_supervisor_leaves_no_process_behind(model_dir):
    server = start(model_dir).start()
    try:
        roles = all_serving(server)
        server.process.kill()
        server.process.wait()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(alive(pid) for pid in roles):
            time.sleep(0.1)
        assert not [pid for pid in roles if alive(pid)]
    finally:
        server.stop()


def test_port_in_use_fails_the_start(model_dir):
    with start(model_dir) as first:
        second = start(model_dir, extra=[f"--rest_api_port={first.rest_port}"])
        with pytest.raises(RuntimeError, match="exited with 1"):
            second.start()
        assert "Cannot listen on" in second.log()
        assert predict_rest(first)[0] == 200


class _ScaleFloat64(tf.Module):
    """Like ``write_tf2_scale``'s model but reading float64: a signature whose JSON decodes
    differently from the float32 one under the same input name."""

    @tf.function(input_signature=[tf.TensorSpec([None, 1], tf.float64, name="x")])
    def serve(self, x):
        return {"y": x * 10.0}


def test_request_decoded_for_another_version_is_decoded_again(tmp_path):
    """The front end's snapshot guesses the latest version (2, float64 input); the split sends
    every unversioned request to label ``stable`` = version 1 (float32). The model process must
    catch the mismatch and the front end decode again for version 1 -- feeding version 1 the
    float64 tensor decoded for version 2 would fail, or answer from the wrong signature."""
    write_tf2_scale(str(tmp_path / "m" / "1"), factor=3.0)
    tf.saved_model.save(
        module := _ScaleFloat64(),
        str(tmp_path / "m" / "2"),
        signatures={"serving_default": module.serve},
    )
    (tmp_path / "models.config").write_text(
        "model_config_list { config { name: 'm' base_path: '%s' model_platform: 'tensorflow' "
        "model_version_policy { all {} } version_labels { key: 'stable' value: 1 } } }"
        % (tmp_path / "m")
    )
    (tmp_path / "split.json").write_text(json.dumps({"models": {"m": {"stable": 100}}}))
    with ServerProcess(
        [
            f"--model_config_file={tmp_path / 'models.config'}",
            f"--traffic_split_config_file={tmp_path / 'split.json'}",
            "--frontend_processes=1",
        ]
    ) as server:
        server.wait_for(lambda: server.available_versions("m") == [1, 2])
        status, body, headers = server.request_with_headers(
            "POST", "/v1/models/m:predict", {"instances": [[1.5]]}
        )
        assert status == 200, body
        assert json.loads(body)["predictions"][0]["y"] == [4.5]
        assert headers["x-model-version"] == "1"
        # Version 2 answers as itself when asked by number (its own signature, no retry).
        status, body = server.request(
            "POST", "/v1/models/m/versions/2:predict", {"instances": [[1.5]]}
        )
        assert (status, json.loads(body)) == (200, {"predictions": [[15.0]]})


def _metric(server: ServerProcess, prefix: str) -> float:
    """The sum of every sample whose line starts with ``prefix``."""
    _, text = server.request("GET", "/monitoring/prometheus/metrics")
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.decode().splitlines()
        if line.startswith(prefix)
    )


def _batching(model_dir: Path) -> list[str]:
    """Flags for batching with one batch thread and no timeout (a batch runs when it can)."""
    (model_dir / "batching.txt").write_text(
        "max_batch_size { value: 64 }\nbatch_timeout_micros { value: 0 }\n"
        "num_batch_threads { value: 1 }\n"
    )
    return ["--enable_batching", f"--batching_parameters_file={model_dir / 'batching.txt'}"]


def test_calls_decoded_together_share_one_model_call_and_get_their_own_rows(model_dir):
    """A front end's coalescing (``serving.multiproc.coalesce``) through the real model
    process: 16 predicts of 1-3 rows started together run their decode in one event-loop
    iteration of a front end -- here a ``RemoteDataplane`` in the test process, connected to
    the server's model process as its front ends are -- so they leave as one message. Each
    caller gets exactly its own rows' outputs, and each counts as a request and as a batching
    input."""
    with start(model_dir, frontends=1, extra=_batching(model_dir)) as server:
        frontend = next(pid for pid, role in all_serving(server, 1).items() if role == "frontend")
        environ = Path(f"/proc/{frontend}/environ").read_bytes().split(b"\0")
        socket_path = next(
            item.split(b"=", 1)[1].decode()
            for item in environ
            if item.startswith(b"TFX_SERVING_MODEL_SOCKET=")
        )
        ok = ':tensorflow:serving:request_count{model_name="half",status="OK"}'
        inputs_seen = ":tensorflow:serving:batching:input_batch_size_count"
        before = (_metric(server, ok), _metric(server, inputs_seen))
        sent: list[int] = []  # calls per message this front end sent

        def rows_of(i: int) -> np.ndarray:
            return np.full((1 + i % 3, 1), float(i), np.float32)

        async def main():
            dataplane = RemoteDataplane(socket_path, 1 << 20, "test")
            assert await dataplane.connect(asyncio.Event())
            send = dataplane._coalescer._send

            def counted(fields, calls):
                sent.append(len(calls))
                return send(fields, calls)

            dataplane._coalescer._send = counted
            try:
                return await asyncio.gather(
                    *(
                        dataplane.predict(ModelSpec("half"), lambda _, i=i: {"x": rows_of(i)})
                        for i in range(16)
                    )
                )
            finally:
                dataplane.close()

        results = asyncio.run(main())
        for i, result in enumerate(results):
            np.testing.assert_allclose(result.outputs["y"], rows_of(i) / 2 + 2)
            assert (result.spec.name, result.spec.version) == ("half", 1)
        assert sent == [16]  # one message for all of them
        after = (_metric(server, ok), _metric(server, inputs_seen))
        assert after[0] - before[0] == 16  # every caller is a request ...
        assert after[1] - before[1] == 16  # ... and an input of the batching, as in one process


def _capacity_command(server: ServerProcess, concurrency: str) -> list[str]:
    """benchmarks.model_capacity against ``server``'s model process: 4 connections of 4-call
    messages after the ``concurrency`` callers' points, one second each."""
    model = next(pid for pid, role in all_serving(server, 1).items() if role == "model")
    metrics = f"http://127.0.0.1:{server.rest_port}/monitoring/prometheus/metrics"
    return [
        sys.executable, "-m", "benchmarks.model_capacity", f"--pid={model}",
        f"--metrics={metrics}", "--model=half", "--input-shape=1", concurrency,
        "--frontends=4", "--calls=4", "--seconds=1", "--warmup=0.5",
    ]  # fmt: skip


def test_the_capacity_benchmark_feeds_the_model_process_as_busy_front_ends_do(model_dir):
    """benchmarks.model_capacity against a real model process: its callers' point, and the
    point where each of its connections keeps one coalesced message in flight. Those messages
    must reach the model process with the calls they carry, each message one batching entry
    (how many meet in one model call depends on timing: not asserted)."""
    with start(model_dir, frontends=1, extra=_batching(model_dir)) as server:
        command = _capacity_command(server, "--concurrency=2")
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        # More calls per message than the version's max_batch_size: no front end would send
        # them as one, so the driver refuses instead of measuring something no server sees.
        refused = subprocess.run(
            [*command[:-3], "--calls=65", "--seconds=1", "--warmup=0.5"],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert refused.returncode != 0
    assert "would not send 65 calls as one message" in refused.stderr
    callers, connections = [json.loads(line) for line in done.stdout.splitlines()]
    assert callers["concurrency"] == 2 and "frontends" not in callers
    assert (connections["frontends"], connections["concurrency"]) == (4, 16)
    assert connections["requests"] > 0 and connections["model_us_per_request"] > 0
    assert connections["calls_per_message"] == 4.0
    assert connections["rows_per_model_call"] >= 4.0


def test_a_capacity_server_with_capped_batches_runs_each_message_as_its_own_model_call(
    model_dir,
):
    """benchmarks.frontends' batch-capped capacity point: its batching parameters (capped at
    the calls per message) keep every 4-call message a model call of its own however many are
    waiting, and the driver measures the connections' point alone (no callers' points)."""
    from benchmarks.frontends import capped_batching

    (model_dir / "capped.txt").write_text(capped_batching(4))
    flags = ["--enable_batching", f"--batching_parameters_file={model_dir / 'capped.txt'}"]
    with start(model_dir, frontends=1, extra=flags) as server:
        command = _capacity_command(server, "--concurrency=")
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    (point,) = [json.loads(line) for line in done.stdout.splitlines()]
    assert (point["frontends"], point["concurrency"]) == (4, 16)
    assert point["requests"] > 0 and point["calls_per_message"] == 4.0
    assert point["rows_per_model_call"] == 4.0


@pytest.mark.parametrize(
    ("frontends", "path"),
    [
        (
            0,
            [
                "one process: InferenceService.predict",
                "one process: BatchQueue.schedule",
                "one process: SavedModelServable.run",
                "one process: _resolve",
                "one process: InferenceService.predict returns",
            ],
        ),
        (
            1,
            [
                "front end: RemoteDataplane.predict",
                "front end: Coalescer._flush",
                "front end: Channel._flush",
                "model process: RpcServer._on_message",
                "model process: SavedModelServable.run",
                "model process: RpcServer._finished",
                "front end: RpcClient._on_message",
                "front end: RemoteDataplane.predict returns",
            ],
        ),
    ],
)
def test_the_hop_stages_benchmark_marks_each_call_through_every_process(
    model_dir, tmp_path, frontends, path
):
    """benchmarks.hop_stages' tracer in a real server: every call sent one at a time is found
    from its entry to its return, through the model process when there are front ends, with
    its stages in the order a call takes them."""
    folder = tmp_path / "marks"
    folder.mkdir()
    env = tracing_env(folder)
    with start(model_dir, frontends, extra=_batching(model_dir), env=env) as server:
        if frontends:
            all_serving(server, frontends)
        predict_grpc(server)  # the first call resolves the version: not timed
        since = time.perf_counter_ns()
        for _ in range(20):
            assert predict_rest(server)[0] == 200
        until = time.perf_counter_ns()
        marks = collect(server.process.pid, frontends, folder, lambda: predict_rest(server))
    found = calls(marks, entry(frontends), since, until)
    assert len(found) == 20
    result = steps(found)
    stages = [result.rows[0][0]] + [row[1] for row in result.rows]
    assert [stage for stage in stages if stage in path] == path
    assert result.in_server_us > 0


def test_grpc_input_names_are_checked_before_any_tensor_is_parsed(model_dir):
    """A front end checks a gRPC request's input names once, before parsing any tensor (the
    servicer's check, as TF Serving's predict_util; the dataplane does not check them again):
    a wrong name next to an unparseable tensor is reported as the wrong name."""
    with start(model_dir) as server:
        all_serving(server)
        with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            request = predict_pb2.PredictRequest()
            request.model_spec.name = "half"
            request.inputs["x"].CopyFrom(tf.make_tensor_proto([[1.0]], tf.float32))
            request.inputs["z"].dtype = tf.float32.as_datatype_enum
            request.inputs["z"].tensor_shape.dim.add().size = 4
            request.inputs["z"].tensor_content = b"\0" * 3  # not 4 floats
            with pytest.raises(grpc.RpcError) as raised:
                stub.Predict(request, timeout=30)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert raised.value.details().startswith("input size does not match signature: 2!=1")
