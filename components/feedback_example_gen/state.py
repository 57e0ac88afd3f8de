"""What one FeedbackExampleGen execution covers, and where that state lives.

The state is a **cursor**: per prediction index (keyed by the index's own ``index_id``, so a
different mount path does not matter) the ``seq`` of the last label already emitted. It is
stored on each output ``Examples`` artifact (custom property ``feedback_cursor``), i.e. in MLMD.
The driver reads the cursor of this node's newest published output (``from``), snapshots every
index's newest label (``to``) and hands both to the executor, which emits exactly the labels in
``(from, to]``. A re-run therefore starts where the last *successful* execution stopped: nothing
is emitted twice, and nothing is skipped when an execution fails.

Keys below are exec properties the driver adds (recorded on the MLMD execution as custom
properties, so the covered range is visible there too) and the artifact's custom properties.
"""

from __future__ import annotations

import json
import os

from absl import logging

from serving.metadata.prediction_index import JoinedRow, PredictionIndex

# Component parameters.
MODEL_NAME_KEY = "model_name"
PREDICTION_LOG_DIRS_KEY = "prediction_log_dirs"
VERSIONS_KEY = "versions"
LABEL_KEY_KEY = "label_key"
LABEL_TYPE_KEY = "label_type"
FEEDBACK_WEIGHT_KEY = "feedback_weight"
CORRECTED_WEIGHT_KEY = "corrected_weight"
WEIGHT_FEATURE_KEY = "weight_feature"
EXAMPLES_KEY = "examples"

ALL_VERSIONS = "all"
PIPELINE_VERSIONS = "pipeline"

# Exec properties set by the driver.
SPAN_KEY = "span"
CURSOR_FROM_KEY = "feedback_cursor_from"
CURSOR_TO_KEY = "feedback_cursor_to"
ALLOWED_VERSIONS_KEY = "feedback_allowed_versions"  # JSON list, or JSON null = all versions

# Custom properties of the output Examples.
CURSOR_PROPERTY = "feedback_cursor"
MODEL_PROPERTY = "feedback_model"
VERSIONS_PROPERTY = "feedback_versions"  # JSON list of the served versions in this span
NUM_EXAMPLES_PROPERTY = "num_examples"
NUM_CORRECTED_PROPERTY = "num_corrected"
SPLIT_COUNTS_PROPERTY = "split_counts"
TASK_PROPERTY = "feedback_task"
LABEL_TYPE_PROPERTY = "label_type"
WEIGHT_FEATURE_PROPERTY = "weight_feature"

Cursor = dict[str, int]


def encode_cursor(cursor: Cursor) -> str:
    return json.dumps(cursor, sort_keys=True)


def decode_cursor(text: str | None) -> Cursor:
    if not text:
        return {}
    value = json.loads(text)
    if not isinstance(value, dict) or not all(isinstance(v, int) for v in value.values()):
        raise ValueError(f"Not a feedback cursor: {text!r}")
    return value


def decode_log_dirs(text: str) -> list[str]:
    dirs = json.loads(text)
    if not isinstance(dirs, list) or not dirs or not all(isinstance(d, str) for d in dirs):
        raise ValueError(f"prediction_log_dirs must be a non-empty JSON list of paths: {text!r}")
    return dirs


def read_rows(
    model: str,
    log_dirs: list[str],
    cursor_from: Cursor,
    allowed_versions: list[str] | None,
    cursor_to: Cursor | None = None,
) -> tuple[Cursor, list[JoinedRow]]:
    """The labelled rows after ``cursor_from`` up to ``cursor_to`` (default: each index's
    newest label now) over all logs, and that upper cursor.

    ``allowed_versions`` None = every version; an empty list = none. A log directory without
    an index yet (no server has logged there) adds nothing; it is logged, since a wrong path
    looks the same."""
    upper: Cursor = {}
    rows: list[JoinedRow] = []
    for log_dir in log_dirs:
        try:
            index = PredictionIndex(log_dir, create=False)
        except FileNotFoundError:
            logging.warning(
                "No prediction index in %s yet (no server logged there, or a wrong path); "
                "nothing read from it",
                os.path.abspath(log_dir),
            )
            continue
        try:
            if cursor_to is None:
                upper[index.index_id] = index.label_high_water()
            elif index.index_id in cursor_to:
                upper[index.index_id] = cursor_to[index.index_id]
            else:  # appeared between driver and executor: covered by the next execution
                continue
            if allowed_versions != []:
                rows += index.joined(
                    model,
                    allowed_versions or (),
                    after_seq=cursor_from.get(index.index_id, 0),
                    up_to_seq=upper[index.index_id],
                )
        finally:
            index.close()
    return upper, rows
