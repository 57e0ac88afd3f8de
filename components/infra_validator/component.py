"""InfraValidator component: the stock contract plus an optional ``custom_config`` for limits
and the canary transport."""

from __future__ import annotations

from typing import Any

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.proto import infra_validator_pb2
from tfx.types import standard_artifacts
from tfx.types import standard_component_specs as stock
from tfx.types.component_spec import ChannelParameter, ExecutionParameter
from tfx.utils import json_utils

from components.infra_validator import executor
from components.infra_validator.runners import platforms


class InfraValidatorSpec(types.ComponentSpec):
    """Stock ``InfraValidatorSpec`` plus ``custom_config`` (JSON): latency/memory limits and
    the canary transport."""

    PARAMETERS = {
        stock.SERVING_SPEC_KEY: ExecutionParameter(type=infra_validator_pb2.ServingSpec),
        stock.VALIDATION_SPEC_KEY: ExecutionParameter(
            type=infra_validator_pb2.ValidationSpec, optional=True
        ),
        stock.REQUEST_SPEC_KEY: ExecutionParameter(
            type=infra_validator_pb2.RequestSpec, optional=True
        ),
        stock.CUSTOM_CONFIG_KEY: ExecutionParameter(type=str, optional=True),
    }
    INPUTS = {
        stock.MODEL_KEY: ChannelParameter(type=standard_artifacts.Model),
        stock.EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples, optional=True),
    }
    OUTPUTS = {stock.BLESSING_KEY: ChannelParameter(type=standard_artifacts.InfraBlessing)}


class InfraValidator(base_component.BaseComponent):
    """Validates that a model loads (LOAD_ONLY) and answers (LOAD_AND_QUERY) in a real server.

    ``serving_spec`` is the stock ``ServingSpec``. With no ``serving_platform`` set, the model is
    served by this project's runtime as a local subprocess (no Docker needed); ``kubernetes``
    starts this project's serving image (``tensorflow_serving.image_name`` + tags/digests) as a
    pod (works under KubeflowV2DagRunner); ``local_docker`` runs an image (default the real
    ``tensorflow/serving``) in a local Docker engine. ``custom_config`` keys:
    ``max_latency_p99_ms``, ``latency_requests`` (number of timed requests, default 100),
    ``max_memory_mib``, ``canary_protocol`` (``"rest"``, the default, or ``"grpc"``: TF
    Serving's PredictionService, the transport stock TFX uses).
    """

    SPEC_CLASS = InfraValidatorSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(
        self,
        model: types.BaseChannel,
        serving_spec: infra_validator_pb2.ServingSpec,
        examples: types.BaseChannel | None = None,
        request_spec: infra_validator_pb2.RequestSpec | None = None,
        validation_spec: infra_validator_pb2.ValidationSpec | None = None,
        custom_config: dict[str, Any] | None = None,
    ) -> None:
        # Fail at DSL time, not run time.
        if custom_config:
            executor.ValidationOptions.from_config(custom_config)
        if isinstance(serving_spec, infra_validator_pb2.ServingSpec):
            platforms.serving_images(serving_spec)
        spec = InfraValidatorSpec(
            model=model,
            examples=examples,
            serving_spec=serving_spec,
            request_spec=request_spec,
            validation_spec=validation_spec,
            custom_config=json_utils.dumps(custom_config),
            blessing=types.Channel(type=standard_artifacts.InfraBlessing),
        )
        super().__init__(spec=spec)
