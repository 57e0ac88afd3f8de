"""Pusher component: stock constructor contract and channel types."""

from __future__ import annotations

import pytest
from tfx.proto import pusher_pb2
from tfx.types import channel_utils, standard_artifacts

from components.pusher.component import Pusher

DESTINATION = pusher_pb2.PushDestination(
    filesystem=pusher_pb2.PushDestination.Filesystem(base_directory="/srv/models/m")
)


def _channel(artifact_type):
    return channel_utils.as_channel([artifact_type()])


def test_outputs_and_exec_properties_match_stock():
    pusher = Pusher(
        model=_channel(standard_artifacts.Model),
        model_blessing=_channel(standard_artifacts.ModelBlessing),
        infra_blessing=_channel(standard_artifacts.InfraBlessing),
        push_destination=DESTINATION,
        keep_last_versions=3,
    )

    assert pusher.outputs["pushed_model"].type_name == "PushedModel"
    assert set(pusher.inputs) == {"model", "model_blessing", "infra_blessing"}
    assert pusher.exec_properties["keep_last_versions"] == 3
    assert pusher.exec_properties["custom_config"] == "null"


def test_infra_blessing_alone_is_enough():
    pusher = Pusher(
        infra_blessing=_channel(standard_artifacts.InfraBlessing), push_destination=DESTINATION
    )

    assert pusher.outputs["pushed_model"].type_name == "PushedModel"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"push_destination": DESTINATION}, "Either one of model or infra_blessing"),
        (
            {"model": _channel(standard_artifacts.Model)},
            r"The Pusher needs push_destination, the model store the servers poll: "
            r"Pusher\(model=..., push_destination=tfx.proto.PushDestination\(filesystem=",
        ),
        (
            {
                "model": _channel(standard_artifacts.Model),
                "custom_config": {"ai_platform_serving_args": {"project_id": "p"}},
            },
            r"configures a cloud push.*use tfx.extensions.google_cloud_ai_platform.Pusher",
        ),
        (
            {
                "model": _channel(standard_artifacts.Model),
                "push_destination": DESTINATION,
                "keep_last_versions": 0,
            },
            "keep_last_versions must be >= 1",
        ),
    ],
)
def test_constructor_rejects_unusable_configurations(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Pusher(**kwargs)


def test_subclass_with_its_own_executor_needs_no_push_destination():
    # Stock rule: push_destination is required only while the stock executor is in use.
    from tfx.dsl.components.base import base_executor, executor_spec

    class _Elsewhere(base_executor.BaseExecutor):
        def Do(self, input_dict, output_dict, exec_properties):
            del input_dict, output_dict, exec_properties

    class CustomPusher(Pusher):
        EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(_Elsewhere)

    pusher = CustomPusher(model=_channel(standard_artifacts.Model), custom_config={"to": "x"})

    assert pusher.exec_properties["custom_config"] == '{"to": "x"}'
