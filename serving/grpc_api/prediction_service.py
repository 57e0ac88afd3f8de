"""``tensorflow.serving.PredictionService``: protos in, the shared inference core, protos out.

Only the wire format lives here; model resolution, signature checks and running the model are
the core's (``serving.api``), shared with REST. Tensors cross with ``serving.tensor_codec``.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import grpc
import numpy as np

from serving import protos, tensor_codec
from serving.api import request_context
from serving.api.types import Dataplane, PredictResult, RequestMetrics, ResolvedSpec
from serving.core.traffic_split import DEFAULT_ROUTING_HEADER
from serving.grpc_api import (
    model_spec,
    request_spec,
    rpc,
    set_model_spec,
    timeout_ms,
)
from serving.servables.signatures import SignatureDef, check_inputs
from serving.tensor_codec import length_delimited

Context = grpc.aio.ServicerContext


_OUTPUTS = protos.PredictResponse.DESCRIPTOR.fields_by_name["outputs"].number
_MODEL_SPEC = protos.PredictResponse.DESCRIPTOR.fields_by_name["model_spec"].number
_MAP_KEY, _MAP_VALUE = 1, 2  # every map<K, V> field is a repeated {K key = 1; V value = 2;}


def predict_response(result: PredictResult, tensor_content: bool) -> bytes:
    """The serialized ``PredictResponse`` of ``result``, written as bytes: building the message
    costs more than its tensors for the small responses most calls return (see
    ``tensor_codec.encode_bytes``). Fields in number order, as protobuf serializes them."""
    entries = [
        length_delimited(
            _OUTPUTS,
            _map_key(alias)
            + length_delimited(_MAP_VALUE, tensor_codec.encode_bytes(value, tensor_content)),
        )
        for alias, value in result.outputs.items()
    ]
    entries.append(_model_spec_field(result.spec))
    return b"".join(entries)


@functools.lru_cache(maxsize=1024)
def _map_key(alias: str) -> bytes:
    """An ``outputs`` entry's key field (output aliases repeat on every call)."""
    return length_delimited(_MAP_KEY, alias.encode())


@functools.lru_cache(maxsize=256)
def _model_spec_field(spec: ResolvedSpec) -> bytes:
    """The response's ``model_spec`` field as :func:`set_model_spec` fills it."""
    message = protos.ModelSpec()
    set_model_spec(message, spec)
    return length_delimited(_MODEL_SPEC, message.SerializeToString())


class PredictionServicer:
    def __init__(
        self,
        service: Dataplane,
        tensor_content: bool = False,
        routing_header: str = DEFAULT_ROUTING_HEADER,
    ) -> None:
        """``tensor_content``: ``--enable_serialization_as_tensor_content`` for Predict outputs;
        ``routing_header``: the metadata key that keeps a caller on one traffic-split label."""
        self._service = service
        self._tensor_content = tensor_content
        self.routing_header = routing_header  # read by ``rpc`` with the request id

    @staticmethod
    def _spec(request, call: request_context.RequestContext):
        return request_spec(request, routing_key=call.routing_key)

    @property
    def metrics(self) -> RequestMetrics | None:
        """For the call's request context (``rpc``): request_latency{entrypoint="GRPC"}."""
        return self._service.metrics

    @rpc
    async def Predict(self, request: protos.PredictRequest, context: Context) -> bytes:
        """The serialized ``PredictResponse`` (see :func:`predict_response`)."""
        call = request_context.call()
        spec = self._spec(request, call)
        inputs = request.inputs

        def decode(signature: SignatureDef) -> Mapping[str, np.ndarray]:
            # TF Serving checks the input names before parsing any tensor (predict_util.cc).
            check_inputs(signature, list(inputs))
            return {alias: tensor_codec.decode(tensor, alias) for alias, tensor in inputs.items()}

        result = await self._service.predict(
            spec, decode, list(request.output_filter), timeout_ms(context)
        )
        response = predict_response(result, self._tensor_content)
        call.succeeded(spec.name, "Predict")
        return response

    @rpc
    async def Classify(
        self, request: protos.ClassificationRequest, context: Context
    ) -> protos.ClassificationResponse:
        resolved, result = await self._service.classify(
            self._spec(request, request_context.call()), request.input, timeout_ms(context)
        )
        response = protos.ClassificationResponse(result=result)
        set_model_spec(response.model_spec, resolved)
        request_context.call().succeeded(resolved.name, "Classify")
        return response

    @rpc
    async def Regress(
        self, request: protos.RegressionRequest, context: Context
    ) -> protos.RegressionResponse:
        resolved, result = await self._service.regress(
            self._spec(request, request_context.call()), request.input, timeout_ms(context)
        )
        response = protos.RegressionResponse(result=result)
        set_model_spec(response.model_spec, resolved)
        request_context.call().succeeded(resolved.name, "Regress")
        return response

    @rpc
    async def MultiInference(
        self, request: protos.MultiInferenceRequest, context: Context
    ) -> protos.MultiInferenceResponse:
        # The first task's spec selects the servable; without tasks it is an empty spec, which
        # fails like TF Serving's ("ModelSpec has no name specified.").
        model_spec(request.tasks[0].model_spec if request.tasks else protos.ModelSpec())
        tasks = [
            (model_spec(t.model_spec, require_name=False), t.method_name) for t in request.tasks
        ]
        outcomes = await self._service.multi_inference(tasks, request.input, timeout_ms(context))
        response = protos.MultiInferenceResponse()
        for resolved, result in outcomes:
            entry = response.results.add()
            set_model_spec(entry.model_spec, resolved)
            if isinstance(result, protos.ClassificationResult):
                entry.classification_result.CopyFrom(result)
            else:
                entry.regression_result.CopyFrom(result)
        return response

    @rpc
    async def GetModelMetadata(
        self, request: protos.GetModelMetadataRequest, context: Context
    ) -> protos.GetModelMetadataResponse:
        return await self._service.model_metadata(
            request_spec(request), list(request.metadata_field)
        )
