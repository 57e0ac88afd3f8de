"""FeedbackExampleGen component: labelled live traffic since the last run -> ``Examples``."""

from __future__ import annotations

import json
from collections.abc import Sequence

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ExecutionParameter

from components.feedback_example_gen import driver, executor
from components.feedback_example_gen import state as s
from serving.metadata.feedback_examples import DEFAULT_WEIGHT_FEATURE, LABEL_TYPES


class FeedbackExampleGenSpec(types.ComponentSpec):
    """No input channels: what to read comes from parameters, where to resume from MLMD."""

    PARAMETERS = {
        s.MODEL_NAME_KEY: ExecutionParameter(type=str),
        s.PREDICTION_LOG_DIRS_KEY: ExecutionParameter(type=str),  # JSON list
        s.VERSIONS_KEY: ExecutionParameter(type=str, optional=True),
        s.LABEL_KEY_KEY: ExecutionParameter(type=str, optional=True),
        s.LABEL_TYPE_KEY: ExecutionParameter(type=str, optional=True),
        s.FEEDBACK_WEIGHT_KEY: ExecutionParameter(type=float, optional=True),
        s.CORRECTED_WEIGHT_KEY: ExecutionParameter(type=float, optional=True),
        s.WEIGHT_FEATURE_KEY: ExecutionParameter(type=str, optional=True),
    }
    INPUTS: dict[str, ChannelParameter] = {}
    OUTPUTS = {s.EXAMPLES_KEY: ChannelParameter(type=standard_artifacts.Examples)}


class FeedbackExampleGen(base_component.BaseComponent):
    """Emits, as one new span of stock ``Examples``, every prediction of ``model_name`` that got
    a label (``POST /v1/models/<m>:feedback``) since this node's previous successful execution.

    Reads the servers' ``--prediction_log_dir`` (TFRecord ``PredictionLog`` shards plus the
    request-id join index); one directory per server. The output has ExampleGen's layout
    (``Split-train``/``Split-eval``, gzip ``tf.Example`` TFRecords), ``span`` = previous span + 1
    (the first is 1; ExampleGen's base data is span 0), ``version`` 0, and per row the request's
    features, the label (``label_key``) and a float weight feature (``weight_feature``,
    ``""`` for none): ``corrected_weight`` where a binary classifier's served answer was wrong,
    ``feedback_weight`` otherwise.

    Nothing new is not an error: the span is written with empty splits (``num_examples`` = 0),
    so a Trainer reading base data plus this span simply trains on the base data. That needs no
    conditional and behaves the same on every orchestrator.

    ``versions``: ``"all"`` (default) reads every served version of the model; ``"pipeline"``
    only versions this pipeline pushed (its ``PushedModel`` artifacts).

    Resuming needs MLMD, which TFX gives a component's *driver* (see :mod:`.driver`): TFX's
    portable launcher (LocalDagRunner, tested; BeamDagRunner uses it too) runs it. TFX 1.16's
    Kubeflow V2 runner runs no custom drivers, so there the executor stops with an explanation
    instead of emitting everything again.
    """

    SPEC_CLASS = FeedbackExampleGenSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)
    DRIVER_CLASS = driver.Driver

    def __init__(
        self,
        model_name: str,
        prediction_log_dirs: Sequence[str],
        versions: str = s.ALL_VERSIONS,
        label_key: str = "label",
        label_type: str = "auto",
        feedback_weight: float = 1.0,
        corrected_weight: float = 1.0,
        weight_feature: str = DEFAULT_WEIGHT_FEATURE,
    ) -> None:
        if isinstance(prediction_log_dirs, str):
            prediction_log_dirs = [prediction_log_dirs]
        if not prediction_log_dirs:
            raise ValueError(
                "prediction_log_dirs is empty: pass the --prediction_log_dir of every server "
                "whose feedback should be read"
            )
        if versions not in (s.ALL_VERSIONS, s.PIPELINE_VERSIONS):
            raise ValueError(
                f"versions must be {s.ALL_VERSIONS!r} or {s.PIPELINE_VERSIONS!r}, got {versions!r}"
            )
        if label_type not in LABEL_TYPES:
            raise ValueError(f"label_type must be one of {LABEL_TYPES}, got {label_type!r}")
        if feedback_weight <= 0 or corrected_weight <= 0:
            raise ValueError("feedback_weight and corrected_weight must be > 0")
        spec = FeedbackExampleGenSpec(
            model_name=model_name,
            prediction_log_dirs=json.dumps(list(prediction_log_dirs)),
            versions=versions,
            label_key=label_key,
            label_type=label_type,
            feedback_weight=float(feedback_weight),
            corrected_weight=float(corrected_weight),
            weight_feature=weight_feature,
            examples=types.Channel(type=standard_artifacts.Examples),
        )
        super().__init__(spec=spec)
