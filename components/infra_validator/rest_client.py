"""TF Serving 2.x REST client for readiness polling and canary requests.

Requests arrive as TF Serving protos (see :mod:`components.serving_requests`) and are converted
to TF Serving's JSON here, so a gRPC client can later send the very same objects.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import tensorflow as tf
from tensorflow_serving.apis import classification_pb2, predict_pb2

from components.infra_validator.runners.base import Endpoint, FailureCode, ValidationFailed
from components.serving_requests import Request

_HTTP_TIMEOUT_SECONDS = 30.0


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"b64": base64.b64encode(value).decode("ascii")}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def _example_json(example: tf.train.Example) -> dict[str, Any]:
    row = {}
    for name, feature in example.features.feature.items():
        kind = feature.WhichOneof("kind")
        values = list(getattr(feature, kind).value) if kind else []
        row[name] = _jsonable(values[0] if len(values) == 1 else values)
    return row


def request_json(request: Request) -> tuple[str, dict[str, Any]]:
    """(``:verb``, JSON body) for a TF Serving request proto."""
    signature = request.model_spec.signature_name
    if isinstance(request, predict_pb2.PredictRequest):
        inputs = {k: _jsonable(tf.make_ndarray(v).tolist()) for k, v in request.inputs.items()}
        return "predict", {"signature_name": signature, "inputs": inputs}
    verb = (
        "classify" if isinstance(request, classification_pb2.ClassificationRequest) else "regress"
    )
    examples = [_example_json(e) for e in request.input.example_list.examples]
    return verb, {"signature_name": signature, "examples": examples}


class RestClient:
    def __init__(self, endpoint: Endpoint, model_name: str) -> None:
        self._base = f"http://{endpoint.host}:{endpoint.rest_port}/v1/models/{model_name}"

    def close(self) -> None:
        """Nothing to release (one connection per call); here so both clients share a shape."""

    def _call(self, url: str, body: dict[str, Any] | None = None) -> tuple[int, str]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=_HTTP_TIMEOUT_SECONDS) as resp:
                return resp.status, resp.read().decode(errors="replace")
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode(errors="replace")

    def wait_until_available(
        self, deadline: float, check_alive: Callable[[], None], poll_seconds: float = 0.5
    ) -> None:
        """Polls ``GET /v1/models/<name>`` until every version is AVAILABLE.

        A version in state END (load failed or unloaded) fails at once with the server's error
        instead of waiting out the deadline.
        """
        last = "no response"
        while time.time() < deadline:
            check_alive()
            try:
                status, text = self._call(self._base)
            except (urllib.error.URLError, OSError) as e:
                status, text = 0, str(e)
            if status == 200:
                versions = json.loads(text).get("model_version_status", [])
                states = {v.get("state") for v in versions}
                if versions and states == {"AVAILABLE"}:
                    return
                for v in versions:
                    if v.get("state") == "END":
                        raise ValidationFailed(
                            FailureCode.MODEL_UNAVAILABLE,
                            f"version {v.get('version')} failed to load: "
                            f"{v.get('status', {}).get('error_message', '') or text}",
                        )
            last = f"HTTP {status}: {text[:500]}"
            time.sleep(poll_seconds)
        raise ValidationFailed(
            FailureCode.LOAD_TIMEOUT,
            f"model not AVAILABLE before the deadline (last status: {last}); raise "
            "validation_spec.max_loading_time_seconds if loading is just slow.",
        )

    def send(self, request: Request) -> float:
        """Sends one canary request; returns its latency in seconds."""
        verb, body = request_json(request)
        started = time.perf_counter()
        try:
            status, text = self._call(f"{self._base}:{verb}", body)
        except (urllib.error.URLError, OSError) as e:
            raise ValidationFailed(FailureCode.REQUEST_FAILED, f"{verb} request: {e}") from e
        latency = time.perf_counter() - started
        if status != 200:
            raise ValidationFailed(
                FailureCode.REQUEST_FAILED,
                f"{verb} on signature {body['signature_name']!r} returned HTTP {status}: "
                f"{text[:1000]}",
            )
        return latency
