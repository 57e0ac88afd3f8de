"""gRPC requests parsed by the server itself (serving.grpc_api.wire) and its channel arguments."""

from __future__ import annotations

import pytest
from tensorflow_serving.apis import predict_pb2

from serving.errors import Code, ServingError
from serving.grpc_api.server import CONNECTION_DEFAULTS, channel_options
from serving.grpc_api.wire import parse
from serving.options import ServerOptions


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
