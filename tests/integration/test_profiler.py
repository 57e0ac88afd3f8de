"""``tensorflow.ProfilerService`` on the server's gRPC port: TF's own profiler client captures
a trace of the serving process while it answers predictions; the service shares the port's
token auth and can be turned off with ``--enable_profiler=false``."""

from __future__ import annotations

import threading
import time

import grpc
import pytest
import tensorflow as tf
from tensorflow.tsl.profiler.protobuf import xplane_pb2

from serving.grpc_api.profiler import (
    ProfileRequest,
    ProfileResponse,
    TerminateRequest,
    TerminateResponse,
)
from tests.support.models import write_half_plus_two
from tests.support.server_process import ServerProcess

pytestmark = pytest.mark.integration

TOKEN = "profiler-test-token"


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    base = tmp_path_factory.mktemp("profiler") / "half_plus_two"
    write_half_plus_two(str(base / "1"))
    return base


def _start(model, *extra: str, rest: bool = True, env: dict | None = None) -> ServerProcess:
    # The profiler runs in the process that runs TensorFlow: the single-process server's
    # (front-end processes do not serve it; docs/serving.md).
    args = [
        "--model_name=half_plus_two",
        f"--model_base_path={model}",
        "--frontend_processes=0",
        *extra,
    ]
    return ServerProcess(args, grpc=True, rest=rest, env=env)


def _profile_call(port: int):
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    call = channel.unary_unary(
        "/tensorflow.ProfilerService/Profile",
        request_serializer=ProfileRequest.SerializeToString,
        response_deserializer=ProfileResponse.FromString,
    )
    terminate = channel.unary_unary(
        "/tensorflow.ProfilerService/Terminate",
        request_serializer=TerminateRequest.SerializeToString,
        response_deserializer=TerminateResponse.FromString,
    )
    return channel, call, terminate


def _request(root, session: str, duration_ms: int) -> ProfileRequest:
    request = ProfileRequest(repository_root=str(root), session_id=session, host_name="h:1")
    request.opts.version = 1
    request.opts.host_tracer_level = 2
    request.opts.duration_ms = duration_ms
    return request


def _event_names(path) -> set[str]:
    xspace = xplane_pb2.XSpace.FromString(path.read_bytes())
    return {
        plane.event_metadata[event.metadata_id].name
        for plane in xspace.planes
        for line in plane.lines
        for event in line.events
    }


def test_tf_profiler_client_traces_the_serving_process(model, tmp_path):
    logdir = tmp_path / "logs"
    with _start(model) as server:
        server.wait_for(lambda: server.available_versions("half_plus_two") == [1])
        stop = threading.Event()

        def predict_until_stopped() -> None:
            while not stop.is_set():
                status, _ = server.json(
                    "POST", "/v1/models/half_plus_two:predict", {"instances": [[2.0]]}
                )
                assert status == 200

        traffic = threading.Thread(target=predict_until_stopped)
        traffic.start()
        try:
            tf.profiler.experimental.client.trace(
                f"localhost:{server.grpc_port}", str(logdir), 1000
            )
        finally:
            stop.set()
            traffic.join()
    (trace,) = logdir.glob("plugins/profile/*/*.xplane.pb")
    assert trace.name == f"localhost_{server.grpc_port}.xplane.pb"  # TSL's "host:port" name
    names = _event_names(trace)
    # The session runs of half_plus_two's graph (its "y" add) were recorded.
    assert any(name.split(":")[0] == "y" for name in names), sorted(names)[:50]


def test_terminate_ends_a_profile_early_and_tokens_are_required(model, tmp_path):
    with _start(model, rest=False, env={"TFX_MODEL_SERVER_AUTH_TOKENS": TOKEN}) as server:
        channel, profile, terminate = _profile_call(server.grpc_port)
        with pytest.raises(grpc.RpcError) as denied:
            profile(_request(tmp_path, "denied", 100), timeout=60)
        assert denied.value.code() == grpc.StatusCode.UNAUTHENTICATED
        auth = (("authorization", f"Bearer {TOKEN}"),)
        future = profile.future(_request(tmp_path, "run1", 600_000), metadata=auth, timeout=120)
        # Terminate until the running session sees it (it ignores ids not yet running).
        deadline = time.monotonic() + 60
        while not future.done() and time.monotonic() < deadline:
            terminate(TerminateRequest(session_id="run1"), metadata=auth, timeout=10)
            time.sleep(0.2)
        response = future.result(timeout=60)  # long before the 10 minutes asked for
        channel.close()
    assert (tmp_path / "run1" / "h_1.xplane.pb").exists()
    assert not (tmp_path / "denied").exists()
    assert isinstance(response.empty_trace, bool)


def test_enable_profiler_false_removes_the_service(model, tmp_path):
    with _start(model, "--enable_profiler=false", rest=False) as server:
        channel, profile, _ = _profile_call(server.grpc_port)
        with pytest.raises(grpc.RpcError) as error:
            profile(_request(tmp_path, "off", 100), timeout=60)
        channel.close()
    assert error.value.code() == grpc.StatusCode.UNIMPLEMENTED
