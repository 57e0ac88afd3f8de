"""FeedbackExampleGen executor: writes the rows the driver's cursors delimit as a new span."""

from __future__ import annotations

import json
from typing import Any

from absl import logging
from tfx import types
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils

from components.feedback_example_gen import state as s
from serving.metadata.feedback_examples import (
    DEFAULT_WEIGHT_FEATURE,
    SPLITS,
    WeightPolicy,
    build_examples,
    write_splits,
)

_NO_DRIVER = (
    "FeedbackExampleGen ran without its driver, so it does not know where its previous "
    "execution stopped (exec property {key!r} is missing) and would emit old feedback again. "
    "The driver needs TFX's portable launcher with MLMD access (LocalDagRunner, BeamDagRunner); "
    "TFX 1.16's Kubeflow V2 runner runs no custom drivers. Export feedback "
    "with 'python -m serving.metadata.export' and import it there instead."
)


class Executor(base_executor.BaseExecutor):
    def Do(
        self,
        input_dict: dict[str, list[types.Artifact]],
        output_dict: dict[str, list[types.Artifact]],
        exec_properties: dict[str, Any],
    ) -> None:
        self._log_startup(input_dict, output_dict, exec_properties)
        for key in (s.CURSOR_TO_KEY, s.SPAN_KEY):
            if exec_properties.get(key) is None:
                raise RuntimeError(_NO_DRIVER.format(key=key))
        examples = artifact_utils.get_single_instance(output_dict[s.EXAMPLES_KEY])
        model = exec_properties[s.MODEL_NAME_KEY]
        cursor_from = s.decode_cursor(exec_properties.get(s.CURSOR_FROM_KEY))
        cursor_to = s.decode_cursor(exec_properties[s.CURSOR_TO_KEY])
        allowed = json.loads(exec_properties.get(s.ALLOWED_VERSIONS_KEY) or "null")
        _, rows = s.read_rows(
            model,
            s.decode_log_dirs(exec_properties[s.PREDICTION_LOG_DIRS_KEY]),
            cursor_from,
            allowed,
            cursor_to=cursor_to,
        )
        weight_feature = exec_properties.get(s.WEIGHT_FEATURE_KEY)
        weights = WeightPolicy(
            feedback_weight=exec_properties.get(s.FEEDBACK_WEIGHT_KEY) or 1.0,
            corrected_weight=exec_properties.get(s.CORRECTED_WEIGHT_KEY) or 1.0,
            feature=DEFAULT_WEIGHT_FEATURE if weight_feature is None else weight_feature,
        )
        built = build_examples(
            rows,
            exec_properties.get(s.LABEL_KEY_KEY) or "label",
            exec_properties.get(s.LABEL_TYPE_KEY) or "auto",
            weights,
        )
        write_splits(examples.uri, built.records)

        examples.split_names = artifact_utils.encode_split_names(list(SPLITS))
        examples.span = int(exec_properties[s.SPAN_KEY])
        examples.version = 0
        examples.set_string_custom_property("file_format", "tfrecords_gzip")
        examples.set_string_custom_property("payload_format", "FORMAT_TF_EXAMPLE")
        # Indexes absent now keep their old position, so removing a log dir loses nothing.
        examples.set_string_custom_property(
            s.CURSOR_PROPERTY, s.encode_cursor({**cursor_from, **cursor_to})
        )
        examples.set_string_custom_property(s.MODEL_PROPERTY, model)
        examples.set_string_custom_property(s.VERSIONS_PROPERTY, json.dumps(built.versions))
        examples.set_int_custom_property(s.NUM_EXAMPLES_PROPERTY, built.num_examples)
        examples.set_int_custom_property(s.NUM_CORRECTED_PROPERTY, built.num_corrected)
        examples.set_string_custom_property(
            s.SPLIT_COUNTS_PROPERTY, json.dumps(built.counts(), sort_keys=True)
        )
        examples.set_string_custom_property(s.TASK_PROPERTY, built.task)
        examples.set_string_custom_property(s.LABEL_TYPE_PROPERTY, built.label_type)
        examples.set_string_custom_property(s.WEIGHT_FEATURE_PROPERTY, weights.feature)
        logging.info(
            "FeedbackExampleGen: span %d of %s: %d labelled rows (%s; %d corrected) from "
            "versions %s",
            examples.span,
            model,
            built.num_examples,
            ", ".join(f"{k} {v}" for k, v in built.counts().items()),
            built.num_corrected,
            ", ".join(built.versions) or "-",
        )
