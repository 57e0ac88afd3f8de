"""Pusher component: stock TFX 1.16 Pusher contract plus retention and stale-dir cleanup."""

from __future__ import annotations

from typing import Any

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.orchestration import data_types
from tfx.proto import pusher_pb2
from tfx.types import standard_artifacts
from tfx.types import standard_component_specs as stock
from tfx.types.component_spec import ChannelParameter, ExecutionParameter
from tfx.types.system_executions import Deploy
from tfx.utils import json_utils

from components.pusher import executor
from components.pusher.keys import KEEP_LAST_VERSIONS_KEY, STALE_INCOMING_SECONDS_KEY


class PusherSpec(types.ComponentSpec):
    """Stock ``PusherSpec`` (same keys and types) plus two optional store-housekeeping knobs."""

    PARAMETERS = {
        stock.PUSH_DESTINATION_KEY: ExecutionParameter(
            type=pusher_pb2.PushDestination, optional=True
        ),
        stock.CUSTOM_CONFIG_KEY: ExecutionParameter(type=str, optional=True),
        KEEP_LAST_VERSIONS_KEY: ExecutionParameter(type=int, optional=True),
        STALE_INCOMING_SECONDS_KEY: ExecutionParameter(type=float, optional=True),
    }
    INPUTS = {
        stock.MODEL_KEY: ChannelParameter(type=standard_artifacts.Model, optional=True),
        stock.MODEL_BLESSING_KEY: ChannelParameter(
            type=standard_artifacts.ModelBlessing, optional=True
        ),
        stock.INFRA_BLESSING_KEY: ChannelParameter(
            type=standard_artifacts.InfraBlessing, optional=True
        ),
    }
    OUTPUTS = {stock.PUSHED_MODEL_KEY: ChannelParameter(type=standard_artifacts.PushedModel)}
    TYPE_ANNOTATION = Deploy


_CLOUD_PUSHERS = {
    "ai_platform_serving_args": "tfx.extensions.google_cloud_ai_platform.Pusher",
    "bigquery_serving_args": "tfx.extensions.google_cloud_big_query.Pusher",
}


def _missing_destination_message(custom_config: dict[str, Any] | None) -> str:
    """What to write instead; names the stock cloud Pusher when custom_config asks for one."""
    message = executor.PUSH_DESTINATION_REQUIRED
    cloud = sorted(_CLOUD_PUSHERS[k] for k in custom_config or {} if k in _CLOUD_PUSHERS)
    if cloud:
        message += (
            f" custom_config {sorted(custom_config or {})} configures a cloud push, which "
            f"this Pusher does not do (it publishes to a TF Serving model store): use {cloud[0]}."
        )
    elif custom_config:
        message += (
            " custom_config does not choose a destination here; it is passed to the executor "
            "unchanged, as in stock TFX."
        )
    return message


class Pusher(base_component.BaseComponent):
    """Pushes a blessed model into ``<base_directory>/<version>`` atomically.

    Accepts the same arguments as ``tfx.components.Pusher`` (minus the deprecated
    ``custom_executor_spec``). ``keep_last_versions`` deletes older versions after a successful
    push; ``stale_incoming_seconds`` is how old a crashed publisher's hidden incoming dir must be
    before it is removed (default one hour, so concurrent pushes are never disturbed).
    """

    SPEC_CLASS = PusherSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(
        self,
        model: types.BaseChannel | None = None,
        model_blessing: types.BaseChannel | None = None,
        infra_blessing: types.BaseChannel | None = None,
        push_destination: pusher_pb2.PushDestination | data_types.RuntimeParameter | None = None,
        custom_config: dict[str, Any] | None = None,
        keep_last_versions: int | None = None,
        stale_incoming_seconds: float | None = None,
    ) -> None:
        # As stock: required unless a subclass swapped in an executor that does not need it.
        if push_destination is None and self.EXECUTOR_SPEC.executor_class is executor.Executor:
            raise ValueError(_missing_destination_message(custom_config))
        if model is None and infra_blessing is None:
            raise ValueError(
                "Either one of model or infra_blessing channel should be given. Pass "
                "model=<Exporter/Trainer output>, or infra_blessing=<InfraValidator output> "
                "validated with request_spec.make_warmup=True."
            )
        if keep_last_versions is not None and keep_last_versions < 1:
            raise ValueError(f"keep_last_versions must be >= 1, got {keep_last_versions}.")
        spec = PusherSpec(
            model=model,
            model_blessing=model_blessing,
            infra_blessing=infra_blessing,
            push_destination=push_destination,
            custom_config=json_utils.dumps(custom_config),
            keep_last_versions=keep_last_versions,
            stale_incoming_seconds=stale_incoming_seconds,
            pushed_model=types.Channel(type=standard_artifacts.PushedModel),
        )
        super().__init__(spec=spec)
