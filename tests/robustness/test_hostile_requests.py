"""Each hostile case of issue 11 against a real server: refused with a client error, cheaply,
and the server still answers good requests afterwards."""

from __future__ import annotations

import gzip
import json
import select
import socket
import struct
import threading
import time
import zlib

import grpc
import pytest
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import predict_pb2

from tests.robustness.conftest import (
    MAX_HEADER_BYTES,
    MAX_REQUEST_BYTES,
    MIB,
    PER_REQUEST_MEMORY,
    TIMEOUT_MS,
    good_grpc_predict,
    good_predictions,
    raw_call,
)
from tests.support.server_process import ServerProcess, frontend_processes

pytestmark = pytest.mark.integration

PREDICT = "/tensorflow.serving.PredictionService/Predict"
_REAP_WAIT = 30.0  # generous bound; the server's own deadline is TIMEOUT_MS


def _predict_request(tensor: tensor_pb2.TensorProto) -> bytes:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "half_plus_two"
    request.inputs["x"].CopyFrom(tensor)
    return request.SerializeToString()


def _float_tensor(dims: list[int], values: list[float]) -> tensor_pb2.TensorProto:
    tensor = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT)
    for size in dims:
        tensor.tensor_shape.dim.add().size = size
    tensor.float_val.extend(values)
    return tensor


def _grpc_error(channel, method: str, data: bytes) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        raw_call(channel, method, data)
    return err.value


# ------------------------------------------------------------------------ memory on gRPC
def test_tiny_message_with_a_huge_shape_is_refused_without_allocating(hardened, channel, memory):
    """Issue 11: 41 bytes, shape [8388607, 64], one float_val -> 2 GiB under TF's fill rule."""
    data = _predict_request(_float_tensor([8388607, 64], [1.0]))
    assert len(data) <= 64
    memory.reset()
    error = _grpc_error(channel, PREDICT, data)
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "input x (float [8388607, 64]) needs 2147483400 bytes" in error.details()
    assert f"limit of {PER_REQUEST_MEMORY} bytes per request" in error.details()
    assert "--max_request_memory_bytes" in error.details()
    assert memory.peak_growth_mib() < 32
    assert good_grpc_predict(channel)


@pytest.mark.parametrize("rank", [33, 64, 254])
def test_ranks_beyond_numpy_are_invalid_argument(channel, rank):
    error = _grpc_error(channel, PREDICT, _predict_request(_float_tensor([1] * rank, [1.0])))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "tensors of more than 32 dimensions are not supported" in error.details()


def test_zero_size_tensor_with_huge_dims_is_invalid_argument(channel):
    error = _grpc_error(channel, PREDICT, _predict_request(_float_tensor([1, 3, 0, 2**63 - 1], [])))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "[1, 3, 0, 9223372036854775807]" in error.details()


@pytest.mark.parametrize(
    "method",
    [
        PREDICT,
        "/tensorflow.serving.PredictionService/Classify",
        "/tensorflow.serving.PredictionService/MultiInference",
        "/tensorflow.serving.PredictionService/GetModelMetadata",
        "/tensorflow.serving.ModelService/GetModelStatus",
        "/tensorflow.serving.ModelService/HandleReloadConfigRequest",
        "/grpc.health.v1.Health/Check",
        "/tensorflow.ProfilerService/Terminate",
    ],
)
def test_random_bytes_are_invalid_argument_on_every_method(channel, method):
    garbage = b"\x8f\x13" + bytes(range(256)) * 4  # field 0 / wire type 7: never parses
    error = _grpc_error(channel, method, garbage)
    if method.startswith("/tensorflow.ProfilerService/") and frontend_processes() > 0:
        # Front-end processes do not serve the profiler (docs/serving.md, "Every core"): the
        # method is unknown there, whatever the bytes.
        assert error.code() == grpc.StatusCode.UNIMPLEMENTED
        return
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith("The request is not a valid ")


def _padded(data: bytes, size: int) -> bytes:
    """``data`` plus an unknown field of ``size`` bytes (parsed and kept, ignored by TF)."""
    return data + _varint(99 << 3 | 2) + _varint(size) + b"p" * size


def test_shared_memory_limit_sheds_with_unavailable(channel):
    """A call holding most of the process-wide budget (a padded message to the slow model,
    running until its deadline) makes another large call fail fast with UNAVAILABLE; once
    it has ended, the same call is served."""
    holder = predict_pb2.PredictRequest()
    holder.model_spec.name = "slow"
    holder.inputs["n"].CopyFrom(
        tensor_pb2.TensorProto(dtype=types_pb2.DT_INT64, int64_val=[10**12])
    )
    holding = _padded(holder.SerializeToString(), 28 * MIB)  # charged twice: 56 of 96 MiB
    big = _padded(_predict_request(_float_tensor([1], [2.0])), 20 * MIB)  # 40: over 96
    outcome: list[tuple[grpc.StatusCode, str]] = []
    done = threading.Event()

    def hold() -> None:
        # Shed itself while a `big` call is in flight: it tries again until it is admitted.
        for _ in range(200):
            try:
                raw_call(channel, PREDICT, holding, timeout=10)
            except grpc.RpcError as exc:
                outcome.append((exc.code(), exc.details()))
                if exc.code() != grpc.StatusCode.UNAVAILABLE:
                    break
        done.set()

    thread = threading.Thread(target=hold)
    thread.start()
    shed = None
    while shed is None and not done.is_set():  # until the holder's charge is in place
        try:
            raw_call(channel, PREDICT, big)
        except grpc.RpcError as exc:
            shed = exc
    thread.join(timeout=60)
    assert shed is not None, f"never shed; the holding call ended with {outcome}"
    assert shed.code() == grpc.StatusCode.UNAVAILABLE, shed.details()
    assert "--max_total_request_memory_bytes" in shed.details()
    assert outcome[-1][0] == grpc.StatusCode.DEADLINE_EXCEEDED, outcome
    response = predict_pb2.PredictResponse.FromString(raw_call(channel, PREDICT, big))
    assert list(response.outputs["y"].float_val) == [3.0]


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


# ------------------------------------------------------------------------ memory on REST
def _gzip_bomb() -> bytes:
    """1 GiB of spaces in ~1 MB: one 64 MiB gzip member, repeated (a valid gzip body)."""
    return gzip.compress(b" " * (64 * MIB), 9) * 16


def test_gzip_bomb_is_cut_while_inflating(hardened, memory):
    """1 GiB from ~1 MB of gzip: refused once --max_request_bytes of it is inflated."""
    bomb = _gzip_bomb()
    assert len(bomb) < 2 * MIB
    memory.reset()
    status, body = hardened.request(
        "POST", "/v1/models/half_plus_two:predict", bomb, {"Content-Encoding": "gzip"}
    )
    message = json.loads(body)["error"]
    assert status == 413
    inflated = int(message.split(" of ")[1].split(" bytes")[0])
    assert MAX_REQUEST_BYTES < inflated <= MAX_REQUEST_BYTES + MIB  # cut at the limit
    assert f"limit of {MAX_REQUEST_BYTES} bytes (--max_request_bytes)" in message
    assert memory.peak_growth_mib() < 3 * MAX_REQUEST_BYTES / MIB
    assert good_predictions(hardened)


def test_compressed_bodies_still_work(hardened):
    body = json.dumps({"instances": [2.0]}).encode()
    for encoding, data in (("gzip", gzip.compress(body)), ("deflate", zlib.compress(body))):
        status, payload = hardened.request(
            "POST", "/v1/models/half_plus_two:predict", data, {"Content-Encoding": encoding}
        )
        assert (status, payload) == (200, b'{"predictions":[3.0]}')


def test_json_that_would_parse_past_the_limit_is_413(hardened, memory):
    body = b'{"instances": [' + b",".join([b"[]"] * (2 * MIB)) + b"]}"  # 6 MB, ~200 MB parsed
    memory.reset()
    status, payload = hardened.request("POST", "/v1/models/half_plus_two:predict", body)
    assert status == 413
    message = json.loads(payload)["error"]
    assert f"the JSON body ({len(body)} bytes)" in message
    assert "--max_request_memory_bytes" in message
    assert memory.peak_growth_mib() < 64


def test_version_of_5000_nines_is_400_with_tf_serving_words(hardened):
    version = "9" * 5000
    for method, path in (
        ("GET", f"/v1/models/half_plus_two/versions/{version}"),
        ("POST", f"/v1/models/half_plus_two/versions/{version}:predict"),
    ):
        status, payload = hardened.request(method, path, b"{}" if method == "POST" else None)
        assert status == 400
        assert json.loads(payload)["error"] == f"Failed to convert version: {version} to numeric."


# --------------------------------------------------------------- slow and idle REST clients
def _read_until_closed(sock: socket.socket, wait: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and when it closed."""
    start = time.monotonic()
    received = b""
    while time.monotonic() - start < wait:
        readable, _, _ = select.select([sock], [], [], 0.05)
        if readable:
            chunk = sock.recv(65536)
            if not chunk:
                return received, time.monotonic() - start
            received += chunk
    raise AssertionError(f"connection still open after {wait} s; got {received[:200]!r}")


def _connect(server: ServerProcess) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.rest_port), timeout=10)


@pytest.mark.parametrize(
    ("prefix", "message"),
    [
        (b"", "Request headers not received within"),
        (
            b"POST /v1/models/half_plus_two:predict HTTP/1.1\r\nHost: x\r\nContent-Le",
            "Request headers not received within",
        ),
        (
            b"POST /v1/models/half_plus_two:predict HTTP/1.1\r\nHost: x\r\n"
            b"Content-Length: 40\r\n\r\n" + b'{"instances": [1.0, ',
            "Request body stalled: no data for",
        ),
    ],
    ids=["nothing_sent", "half_a_header", "half_a_body"],
)
def test_half_sent_requests_are_reaped(hardened, prefix, message):
    with _connect(hardened) as sock:
        sock.sendall(prefix)
        received, _ = _read_until_closed(sock, _REAP_WAIT)
    assert received.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    assert message.encode() in received
    assert f"{TIMEOUT_MS} ms".encode() in received
    assert good_predictions(hardened)


def test_a_body_that_keeps_arriving_is_not_cut(hardened):
    """The body deadline is an idle deadline: a slow but steady upload is served."""
    body = b'{"instances": [' + b" " * 40 + b"2.0]}"
    with _connect(hardened) as sock:
        sock.sendall(
            b"POST /v1/models/half_plus_two:predict HTTP/1.1\r\nHost: x\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)
        )
        pause = TIMEOUT_MS / 1000 / 3
        for start in range(0, len(body), 10):  # 7 pieces: twice the deadline in total
            sock.sendall(body[start : start + 10])
            time.sleep(pause)
        response, _ = _read_until_closed(sock, _REAP_WAIT)  # closed once idle
    assert response.startswith(b"HTTP/1.1 200 OK")
    assert response.endswith(b'{"predictions":[3.0]}')


def test_idle_keep_alive_connections_are_closed(hardened):
    with _connect(hardened) as sock:
        sock.sendall(b"GET /v1/models/half_plus_two HTTP/1.1\r\nHost: x\r\n\r\n")
        received, _ = _read_until_closed(sock, _REAP_WAIT)
    assert received.startswith(b"HTTP/1.1 200 OK")  # answered, then closed once idle


def test_oversized_headers_are_431(hardened):
    with _connect(hardened) as sock:
        sock.sendall(b"GET /v1/models/half_plus_two HTTP/1.1\r\nHost: x\r\n")
        sock.sendall(b"X-Filler: " + b"a" * (MAX_HEADER_BYTES * 2) + b"\r\n")
        received, _ = _read_until_closed(sock, _REAP_WAIT)
    assert received.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
    assert b"--rest_api_max_header_bytes" in received


# ------------------------------------------------------------------ gRPC connection limits
_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_EMPTY_SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
_SETTINGS, _GOAWAY = 0x4, 0x7
_MAX_CONCURRENT_STREAMS = 0x3


def _frames(sock: socket.socket, until: int | None = None) -> list[tuple[int, bytes]]:
    """HTTP/2 frames (type, payload) the server sends, until it closes the connection or
    sends a frame of type ``until``; fails after a bounded wait."""
    frames: list[tuple[int, bytes]] = []
    data = b""
    deadline = time.monotonic() + _REAP_WAIT
    while time.monotonic() < deadline:
        readable, _, _ = select.select([sock], [], [], 0.05)
        if not readable:
            continue
        chunk = sock.recv(65536)
        if not chunk:
            return frames
        data += chunk
        while len(data) >= 9 and len(data) >= 9 + int.from_bytes(data[:3], "big"):
            length = int.from_bytes(data[:3], "big")
            frames.append((data[3], data[9 : 9 + length]))
            data = data[9 + length :]
            if frames[-1][0] == until:
                return frames
    raise AssertionError(f"connection neither closed nor sent frame type {until}: {frames}")


def _settings(payload: bytes) -> dict[int, int]:
    return {
        key: value
        for key, value in (
            struct.unpack(">HI", payload[i : i + 6]) for i in range(0, len(payload), 6)
        )
    }


@pytest.fixture(scope="module")
def tuned(robust_store):
    """gRPC only, with short connection limits through --grpc_channel_arguments."""
    with ServerProcess(
        [
            f"--model_config_file={robust_store / 'models.config'}",
            "--grpc_channel_arguments=grpc.max_concurrent_streams=7,"
            "grpc.server_handshake_timeout_ms=1000,grpc.max_connection_idle_ms=1000",
        ],
        grpc=True,
        rest=False,
    ) as server:
        yield server


def test_grpc_advertises_the_default_stream_bound(hardened):
    with socket.create_connection(("127.0.0.1", hardened.grpc_port), timeout=10) as sock:
        sock.sendall(_PREFACE + _EMPTY_SETTINGS)
        frames = _frames(sock, until=_SETTINGS)
    assert _settings(frames[-1][1])[_MAX_CONCURRENT_STREAMS] == 100


def test_grpc_channel_arguments_override_the_connection_limits(tuned):
    with socket.create_connection(("127.0.0.1", tuned.grpc_port), timeout=10) as sock:
        sock.sendall(_PREFACE + _EMPTY_SETTINGS)
        frames = _frames(sock, until=_GOAWAY)  # idle past max_connection_idle_ms
    settings = [_settings(payload) for kind, payload in frames if kind == _SETTINGS]
    assert settings[0][_MAX_CONCURRENT_STREAMS] == 7
    # A connection that never completes the HTTP/2 handshake is dropped.
    with socket.create_connection(("127.0.0.1", tuned.grpc_port), timeout=10) as sock:
        sock.sendall(_PREFACE[:10])
        _read_until_closed(sock, _REAP_WAIT)
