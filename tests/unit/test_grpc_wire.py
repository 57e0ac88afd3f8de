"""gRPC requests parsed and Predict responses written by the server itself (serving.grpc_api.wire,
prediction_service.predict_response), and its channel arguments."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2

from serving import tensor_codec
from serving.api.types import PredictResult, ResolvedSpec
from serving.errors import Code, ServingError
from serving.grpc_api import metadata_values, set_model_spec
from serving.grpc_api.prediction_service import predict_response
from serving.grpc_api.server import CONNECTION_DEFAULTS, channel_options, listener_count
from serving.grpc_api.wire import parse, raw_handler
from serving.options import ServerOptions
from serving.request_limits import MemoryLimits, MemoryPool


def test_a_valid_message_parses():
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "m"
    assert parse(request.SerializeToString(), predict_pb2.PredictRequest) == request


@pytest.mark.parametrize(
    "data",
    [b"\xff" * 8, b"\x0a\x05ab", b"\x12\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80"],
    ids=["bad_wire_type", "truncated_field", "overlong_varint"],
)
def test_bytes_that_do_not_parse_are_invalid_argument(data):
    with pytest.raises(ServingError) as err:
        parse(data, predict_pb2.PredictRequest)
    assert err.value.code == Code.INVALID_ARGUMENT
    assert err.value.message.startswith(
        f"The request is not a valid tensorflow.serving.PredictRequest message ({len(data)} bytes)"
    )


def test_connection_hygiene_defaults_and_user_overrides():
    defaults = channel_options(ServerOptions())
    assert defaults["grpc.max_receive_message_length"] == 2**31 - 1
    for key, value in CONNECTION_DEFAULTS.items():
        assert defaults[key] == value
    assert defaults["grpc.max_concurrent_streams"] == 100
    assert defaults["grpc.keepalive_time_ms"] == 60_000
    tuned = channel_options(
        ServerOptions(
            max_request_bytes=1000,
            grpc_channel_arguments="grpc.max_connection_age_ms=2000,grpc.lb_policy_name=grpclb",
        )
    )
    assert tuned["grpc.max_receive_message_length"] == 1000
    assert tuned["grpc.max_connection_age_ms"] == 2000
    assert tuned["grpc.lb_policy_name"] == "grpclb"
    assert tuned["grpc.max_concurrent_streams"] == 100


@pytest.mark.parametrize(
    "flags, listeners",
    [
        ({}, 16),
        ({"grpc_listeners": 3}, 3),
        ({"grpc_max_threads": 4}, 1),  # its cap is each server's: kept exact with one
        ({"grpc_channel_arguments": "grpc.so_reuseport=0"}, 1),  # a second bind would fail
        ({"port": 0, "grpc_socket_path": "/tmp/s.sock"}, 1),  # a unix path binds once
    ],
    ids=["default", "flag", "max_threads", "no_reuseport", "unix_socket_only"],
)
def test_listener_count_falls_back_to_one_where_several_would_change_the_meaning(flags, listeners):
    options = ServerOptions(**{"port": 8500, **flags})
    assert listener_count(options, channel_options(options)) == listeners


# ------------------------------------------------------------------------- Predict responses
@pytest.mark.parametrize("tensor_content", [False, True], ids=["typed", "content"])
@pytest.mark.parametrize(
    "spec",
    [ResolvedSpec("mlp", 3, "serving_default"), ResolvedSpec("m\u00e9", 0, "")],
    ids=["usual", "version0_no_signature"],
)
def test_predict_response_bytes_parse_to_the_message_tf_serving_builds(spec, tensor_content):
    outputs = {
        "y": np.arange(20, dtype=np.float32).reshape(2, 10),
        "classes": np.array([b"a", b"bc"], dtype=object),
        "ids": np.array([[1], [2]], dtype=np.int64),
        "sp\u00e4ter": np.float64(0.5),
    }
    data = predict_response(PredictResult(spec, outputs), tensor_content)
    expected = predict_pb2.PredictResponse()
    set_model_spec(expected.model_spec, spec)
    for alias, value in outputs.items():
        tensor_codec.encode(value, tensor_content, expected.outputs[alias])
    parsed = predict_pb2.PredictResponse.FromString(data)
    assert parsed == expected
    assert parsed.model_spec.HasField("version")  # set even for version 0, as set_model_spec does
    for alias, value in outputs.items():
        assert tf.make_ndarray(parsed.outputs[alias]).tolist() == np.asarray(value).tolist()


def test_responses_written_as_bytes_are_sent_as_they_are():
    handler = raw_handler(_echo, predict_pb2.PredictRequest, predict_pb2.PredictResponse, _POOL)
    message = predict_pb2.PredictResponse()
    message.model_spec.name = "m"
    assert handler.response_serializer(b"\x12\x03\x0a\x01m") == b"\x12\x03\x0a\x01m"
    assert handler.response_serializer(message) == message.SerializeToString()


_POOL = MemoryPool(MemoryLimits(0, 0))


async def _echo(request, context):
    return request


class _Metadata:
    def __init__(self, *entries: tuple[str, str | bytes]) -> None:
        self._entries = entries

    def invocation_metadata(self):
        return self._entries


def test_request_id_and_routing_key_are_read_in_one_pass_first_entry_wins():
    context = _Metadata(
        ("user-agent", "grpc-python"),
        ("x-routing-key", b"user-7"),
        ("x-request-id", "abc"),
        ("x-request-id", "later"),
        ("x-routing-key", "later"),
    )
    assert metadata_values(context, "x-request-id", "x-routing-key") == ("abc", "user-7")
    assert metadata_values(context, "x-request-id", None) == ("abc", None)
    assert metadata_values(context, "x-routing-key", "x-routing-key") == ("user-7", "user-7")
    assert metadata_values(_Metadata(), "x-request-id", "x-routing-key") == (None, None)
