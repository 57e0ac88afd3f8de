"""TF Serving gRPC client for readiness polling and canary requests.

The transport stock TFX's InfraValidator uses (``ModelService.GetModelStatus`` to wait, then
``PredictionService.Predict/Classify/Regress``). It takes the same request protos as
:class:`components.infra_validator.rest_client.RestClient` and raises the same
``ValidationFailed`` codes, so the executor can switch transports without other changes.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import grpc
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from components.infra_validator.runners.base import Endpoint, FailureCode, ValidationFailed
from components.serving_requests import Request

_RPC_TIMEOUT_SECONDS = 30.0
_STATUS_TIMEOUT_SECONDS = 5.0
# Canaries are built from examples and may be large; never fail on gRPC's 4 MiB default.
_CHANNEL_OPTIONS = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]
_AVAILABLE = get_model_status_pb2.ModelVersionStatus.AVAILABLE
_END = get_model_status_pb2.ModelVersionStatus.END
_STATE_NAME = get_model_status_pb2.ModelVersionStatus.State.Name


class GrpcClient:
    """One insecure channel to ``host:grpc_port``; call :meth:`close` when done."""

    def __init__(self, endpoint: Endpoint, model_name: str) -> None:
        self._model_name = model_name
        self._target = f"{endpoint.host}:{endpoint.grpc_port}"
        self._channel = grpc.insecure_channel(self._target, options=_CHANNEL_OPTIONS)
        self._models = model_service_pb2_grpc.ModelServiceStub(self._channel)
        self._predictions = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def wait_until_available(
        self, deadline: float, check_alive: Callable[[], None], poll_seconds: float = 0.5
    ) -> None:
        """Polls ``GetModelStatus`` until every version is AVAILABLE.

        While the server boots the call fails (UNAVAILABLE) or the model is unknown
        (NOT_FOUND); both mean "not yet". A version in state END fails at once with the
        server's error message instead of waiting out the deadline.
        """
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = self._model_name
        last = "no response"
        while time.time() < deadline:
            check_alive()
            try:
                response = self._models.GetModelStatus(request, timeout=_STATUS_TIMEOUT_SECONDS)
            except grpc.RpcError as e:
                last = f"{e.code().name}: {e.details()}"
            else:
                versions = response.model_version_status
                if versions and all(v.state == _AVAILABLE for v in versions):
                    return
                for v in versions:
                    if v.state == _END:
                        raise ValidationFailed(
                            FailureCode.MODEL_UNAVAILABLE,
                            f"version {v.version} failed to load: "
                            f"{v.status.error_message or 'state END'}",
                        )
                last = ", ".join(f"version {v.version} {_STATE_NAME(v.state)}" for v in versions)
            time.sleep(poll_seconds)
        raise ValidationFailed(
            FailureCode.LOAD_TIMEOUT,
            f"model not AVAILABLE over gRPC at {self._target} before the deadline (last status: "
            f"{last}); raise validation_spec.max_loading_time_seconds if loading is just slow.",
        )

    def send(self, request: Request) -> float:
        """Sends one canary request; returns its latency in seconds."""
        if isinstance(request, predict_pb2.PredictRequest):
            method, call = "Predict", self._predictions.Predict
        elif isinstance(request, classification_pb2.ClassificationRequest):
            method, call = "Classify", self._predictions.Classify
        else:
            method, call = "Regress", self._predictions.Regress
        started = time.perf_counter()
        try:
            call(request, timeout=_RPC_TIMEOUT_SECONDS)
        except grpc.RpcError as e:
            raise ValidationFailed(
                FailureCode.REQUEST_FAILED,
                f"gRPC {method} on signature {request.model_spec.signature_name!r} failed with "
                f"{e.code().name}: {(e.details() or '')[:1000]}",
            ) from e
        return time.perf_counter() - started
