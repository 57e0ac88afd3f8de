"""``tensorflow.serving.PredictionService``: protos in, the shared inference core, protos out.

Only the wire format lives here; model resolution, signature checks and running the model are
the core's (``serving.api``), shared with REST. Tensors cross with ``serving.tensor_codec``.
"""

from __future__ import annotations

from collections.abc import Mapping

import grpc
import numpy as np

from serving import protos, tensor_codec
from serving.api import request_context
from serving.api.types import Dataplane, RequestMetrics
from serving.core.traffic_split import DEFAULT_ROUTING_HEADER
from serving.grpc_api import (
    metadata_value,
    model_spec,
    request_spec,
    rpc,
    set_model_spec,
    timeout_ms,
)
from serving.servables.signatures import SignatureDef, check_inputs

Context = grpc.aio.ServicerContext


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
        self._routing_header = routing_header

    def _spec(self, request, context: Context):
        return request_spec(request, routing_key=metadata_value(context, self._routing_header))

    @property
    def metrics(self) -> RequestMetrics | None:
        """For the call's request context (``rpc``): request_latency{entrypoint="GRPC"}."""
        return self._service.metrics

    @rpc
    async def Predict(
        self, request: protos.PredictRequest, context: Context
    ) -> protos.PredictResponse:
        spec = self._spec(request, context)
        inputs = request.inputs

        def decode(signature: SignatureDef) -> Mapping[str, np.ndarray]:
            # TF Serving checks the input names before parsing any tensor (predict_util.cc).
            check_inputs(signature, list(inputs))
            return {alias: tensor_codec.decode(tensor, alias) for alias, tensor in inputs.items()}

        result = await self._service.predict(
            spec, decode, list(request.output_filter), timeout_ms(context)
        )
        response = protos.PredictResponse()
        set_model_spec(response.model_spec, result.spec)
        for alias, value in result.outputs.items():
            tensor_codec.encode(value, self._tensor_content, response.outputs[alias])
        request_context.call().succeeded(spec.name, "Predict")
        return response

    @rpc
    async def Classify(
        self, request: protos.ClassificationRequest, context: Context
    ) -> protos.ClassificationResponse:
        resolved, result = await self._service.classify(
            self._spec(request, context), request.input, timeout_ms(context)
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
            self._spec(request, context), request.input, timeout_ms(context)
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
