"""Labelled predictions -> ``tf.Example`` rows in ExampleGen's layout.

The one writer behind both ways feedback becomes training data: the offline
``python -m serving.metadata.export`` and the pipeline's ``FeedbackExampleGen`` component. Both
read :meth:`PredictionIndex.joined` (the request-id join) and write what a stock TFX reader
expects of an ``Examples`` artifact: ``Split-train/`` and ``Split-eval/`` holding gzip TFRecords
of ``tf.Example`` named like ExampleGen's (``data_tfrecord-00000-of-00001.gz``).

Statistics-friendly by construction: every row carries the same features with the same types —
the request's features as the server logged them, the label (int64 or float for the whole
span, never mixed) and, unless disabled, a float weight feature — so TFDV finds no type or
presence anomaly against the base data's schema beyond the added weight column; base data
without the weight feature reads it as the default 1.0.

A row's split is a hash of (request id, row), so the same labelled row always lands in the same
split, whichever export or span it is written by.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import tensorflow as tf

from serving.metadata.prediction_index import JoinedRow, infer_task

SPLITS = ("train", "eval")
SPLIT_NAMES = json.dumps(list(SPLITS))  # the ``split_names`` property TFX writes
FILE_NAME = "data_tfrecord-00000-of-00001.gz"
DEFAULT_WEIGHT_FEATURE = "sample_weight"
LABEL_TYPES = ("auto", "int", "float")
_EVAL_EVERY = 3


@dataclass(frozen=True)
class WeightPolicy:
    """How much a feedback row counts in training.

    ``corrected_weight`` applies to rows where the served model was wrong (a binary
    classification whose thresholded score disagrees with the label); every other feedback row
    gets ``feedback_weight``. Regression rows are never "corrected" (there is no wrong class),
    so they all get ``feedback_weight``. ``feature=""`` writes no weight feature at all.
    """

    feedback_weight: float = 1.0
    corrected_weight: float = 1.0
    feature: str = DEFAULT_WEIGHT_FEATURE

    def __post_init__(self) -> None:
        if self.feedback_weight <= 0 or self.corrected_weight <= 0:
            raise ValueError(
                f"Weights must be > 0, got feedback_weight={self.feedback_weight}, "
                f"corrected_weight={self.corrected_weight}"
            )


@dataclass
class FeedbackSplits:
    """Serialized examples per split plus what the metadata record of the span needs."""

    records: dict[str, list[bytes]]
    task: str  # classification | regression ("" without rows)
    label_type: str  # int | float ("" without rows)
    num_corrected: int = 0
    versions: list[str] = field(default_factory=list)
    shard_ids: list[str] = field(default_factory=list)
    episode_ids: list[str] = field(default_factory=list)

    @property
    def num_examples(self) -> int:
        return sum(len(r) for r in self.records.values())

    def counts(self) -> dict[str, int]:
        return {name: len(records) for name, records in self.records.items()}


def split_of(request_id: str, row: int) -> str:
    digest = hashlib.sha256(f"{request_id}/{row}".encode()).digest()
    return "eval" if digest[0] % _EVAL_EVERY == 0 else "train"


def is_corrected(task: str, score: float | None, label: float) -> bool:
    """True when a binary classifier's served answer disagreed with the label."""
    return task == "classification" and score is not None and (score >= 0.5) != (label >= 0.5)


def build_examples(
    rows: Sequence[JoinedRow],
    label_key: str,
    label_type: str = "auto",
    weights: WeightPolicy | None = None,
) -> FeedbackSplits:
    """The labelled rows as ``tf.Example`` bytes per split (every row exactly once).

    ``label_type``: ``int``/``float``, or ``auto`` = int64 when every label is integral.
    """
    if label_type not in LABEL_TYPES:
        raise ValueError(f"label_type must be one of {LABEL_TYPES}, got {label_type!r}")
    weights = weights or WeightPolicy()
    if not rows:
        return FeedbackSplits({name: [] for name in SPLITS}, task="", label_type="")
    if label_type == "auto":
        label_type = "int" if all(float(r.label).is_integer() for r in rows) else "float"
    kinds = {r.kind for r in rows}
    task = infer_task(
        kinds.pop() if len(kinds) == 1 else "predict",
        [(r.score, r.label) for r in rows if r.score is not None],
    )
    result = FeedbackSplits({name: [] for name in SPLITS}, task, label_type)
    for r in rows:
        if label_type == "int" and not float(r.label).is_integer():
            raise ValueError(
                f"Label {r.label} of request {r.request_id} row {r.row} is not an integer; "
                "use label_type 'float' (or 'auto')"
            )
        example = tf.train.Example.FromString(r.example)
        label = example.features.feature[label_key]
        label.Clear()
        if label_type == "int":
            label.int64_list.value.append(int(r.label))
        else:
            label.float_list.value.append(float(r.label))
        corrected = is_corrected(task, r.score, r.label)
        result.num_corrected += int(corrected)
        if weights.feature:
            weight = weights.corrected_weight if corrected else weights.feedback_weight
            feature = example.features.feature[weights.feature]
            feature.Clear()
            feature.float_list.value.append(weight)
        result.records[split_of(r.request_id, r.row)].append(example.SerializeToString())
    result.versions = sorted({r.version for r in rows}, key=_version_order)
    result.shard_ids = sorted({r.shard_id for r in rows if r.shard_id})
    result.episode_ids = sorted({r.episode_id for r in rows if r.episode_id})
    return result


def write_splits(output_dir: str, records: dict[str, list[bytes]]) -> None:
    """One gzip TFRecord file per split, written even when a split is empty: readers glob
    ``Split-<name>/*`` and an empty span must still be a valid (zero-row) input."""
    for name, split_records in records.items():
        folder = os.path.join(output_dir, f"Split-{name}")
        tf.io.gfile.makedirs(folder)
        with tf.io.TFRecordWriter(os.path.join(folder, FILE_NAME), options="GZIP") as writer:
            for record in split_records:
                writer.write(record)


def _version_order(version: str) -> tuple[int, str]:
    return (int(version), version) if version.isdigit() else (0, version)
