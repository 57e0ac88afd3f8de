"""TLS, mTLS, bearer tokens and request limits on the REST front end of the real server."""

from __future__ import annotations

import ssl
import urllib.error
import urllib.request

import pytest

from tests.support.certs import make_pki, ssl_config_text
from tests.support.models import write_half_plus_two
from tests.support.server_process import ServerProcess

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("store")
    write_half_plus_two(str(root / "m" / "1"))
    return root


@pytest.fixture(scope="module")
def pki():
    return make_pki()


def _client_context(pki, with_client_cert: bool, tmp_path) -> ssl.SSLContext:
    context = ssl.create_default_context(cadata=pki.ca.cert.decode())
    if with_client_cert:
        cert, key = tmp_path / "client.pem", tmp_path / "client.key"
        cert.write_bytes(pki.client.cert)
        key.write_bytes(pki.client.key)
        context.load_cert_chain(str(cert), str(key))
    return context


def test_tls_tokens_and_size_limit(store, pki, tmp_path):
    (tmp_path / "ssl.config").write_text(ssl_config_text(pki, client_verify=False))
    (tmp_path / "tokens").write_text("# one token per line\nsecret-one\nsecret-two\n")
    args = [
        "--model_name=m",
        f"--model_base_path={store / 'm'}",
        f"--ssl_config_file={tmp_path / 'ssl.config'}",
        f"--auth_token_file={tmp_path / 'tokens'}",
        "--max_request_bytes=2000",
        "--port=0",
    ]
    context = _client_context(pki, with_client_cert=False, tmp_path=tmp_path)
    with ServerProcess(args, ssl_context=context) as server:
        body = {"instances": [2.0]}
        status, payload, headers = server.request_with_headers("POST", "/v1/models/m:predict", body)
        assert status == 401 and b"Missing bearer token" in payload
        assert headers.get("www-authenticate") == "Bearer"
        bad = {"Authorization": "Bearer nope"}
        assert server.request("POST", "/v1/models/m:predict", body, bad)[0] == 401
        good = {"Authorization": "Bearer secret-two"}
        assert server.request("POST", "/v1/models/m:predict", body, good) == (
            200,
            b'{"predictions":[3.0]}',
        )
        assert server.request("GET", "/healthz")[0] == 200  # probes need no token
        big = {"instances": [1.0] * 1000}
        status, payload = server.request("POST", "/v1/models/m:predict", big, good)
        assert status == 413 and b"--max_request_bytes" in payload
        traversal = "/v1/models/..%2F..%2Fetc%2Fpasswd"
        status, payload = server.request("GET", traversal, None, good)
        assert status == 404 and b"../../etc/passwd" in payload

        plain_http = f"http://127.0.0.1:{server.rest_port}/healthz"
        with pytest.raises((urllib.error.URLError, ConnectionError)):
            urllib.request.urlopen(plain_http, timeout=10)


def test_mutual_tls_requires_a_client_certificate(store, pki, tmp_path):
    (tmp_path / "ssl.config").write_text(ssl_config_text(pki, client_verify=True))
    args = [
        "--model_name=m",
        f"--model_base_path={store / 'm'}",
        f"--ssl_config_file={tmp_path / 'ssl.config'}",
        "--port=0",
    ]
    with_cert = _client_context(pki, with_client_cert=True, tmp_path=tmp_path)
    with ServerProcess(args, ssl_context=with_cert) as server:
        assert server.json("POST", "/v1/models/m:predict", {"instances": [2.0]}) == (
            200,
            {"predictions": [3.0]},
        )
        server.ssl_context = _client_context(pki, with_client_cert=False, tmp_path=tmp_path)
        with pytest.raises((urllib.error.URLError, ConnectionError, ssl.SSLError)):
            server.request("GET", "/v1/models/m")


def test_bad_ssl_config_stops_startup_with_a_reason(store, tmp_path):
    (tmp_path / "ssl.config").write_text('server_key: "not a key"\nserver_cert: "nope"\n')
    server = ServerProcess(
        [
            "--model_name=m",
            f"--model_base_path={store / 'm'}",
            f"--ssl_config_file={tmp_path / 'ssl.config'}",
        ]
    )
    with pytest.raises(RuntimeError, match="server_key/server_cert cannot be used"):
        server.start()


def _grpc_predict(channel, metadata=()) -> float:
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "m"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto([2.0], dtype=tf.float32))
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    response = stub.Predict(request, timeout=30, metadata=metadata)
    return response.outputs["y"].float_val[0]


def test_grpc_mutual_tls_tokens_and_health(store, pki, tmp_path):
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    (tmp_path / "ssl.config").write_text(ssl_config_text(pki, client_verify=True))
    args = [
        "--model_name=m",
        f"--model_base_path={store / 'm'}",
        f"--ssl_config_file={tmp_path / 'ssl.config'}",
    ]
    env = {"TFX_MODEL_SERVER_AUTH_TOKENS": "grpc-token"}
    with ServerProcess(args, grpc=True, rest=False, env=env) as server:
        target = f"localhost:{server.grpc_port}"
        credentials = grpc.ssl_channel_credentials(
            root_certificates=pki.ca.cert,
            private_key=pki.client.key,
            certificate_chain=pki.client.cert,
        )
        with grpc.secure_channel(target, credentials) as channel:
            token = (("authorization", "Bearer grpc-token"),)
            assert _grpc_predict(channel, token) == 3.0
            with pytest.raises(grpc.RpcError) as err:
                _grpc_predict(channel)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
            with pytest.raises(grpc.RpcError) as err:
                _grpc_predict(channel, (("authorization", "Bearer wrong"),))
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
            health = health_pb2_grpc.HealthStub(channel)
            for service in ("", "tensorflow.serving.PredictionService"):
                reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
                assert reply.status == health_pb2.HealthCheckResponse.SERVING
            # Bytes that are no request: checked for a token first, parsed only after it.
            garbage = channel.unary_unary("/tensorflow.serving.PredictionService/Predict")
            with pytest.raises(grpc.RpcError) as err:
                garbage(b"\x8f\x13garbage", timeout=10)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
            with pytest.raises(grpc.RpcError) as err:
                garbage(b"\x8f\x13garbage", timeout=10, metadata=token)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        no_client_cert = grpc.ssl_channel_credentials(root_certificates=pki.ca.cert)
        with grpc.secure_channel(target, no_client_cert) as channel:
            with pytest.raises(grpc.RpcError) as err:
                _grpc_predict(channel, (("authorization", "Bearer grpc-token"),))
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        with grpc.insecure_channel(target) as channel, pytest.raises(grpc.RpcError):
            _grpc_predict(channel, (("authorization", "Bearer grpc-token"),))
