"""Keras trainer for the demo pipeline (``Trainer(run_fn='pipelines.trainer_module.run_fn')``).

Referenced by dotted path rather than ``module_file`` so LocalDagRunner does not build a wheel
per run and the Kubeflow image only needs this package installed. Reads ExampleGen's gzip
TFRecords directly (no Transform/schema needed for two numeric features) and exports a
SavedModel with a ``serving_default`` signature on the raw features, which the Exporter then
completes with serialized-Example, regress signatures and warmup data.

With feedback (``FeedbackExampleGen``) the Trainer's ``examples`` are base data plus feedback
spans, so ``train_files`` holds one pattern per artifact and all are read. Feedback rows carry a
``sample_weight`` feature (higher for predictions the served model got wrong); base rows have
none and count 1.0 — Keras receives it as per-row sample weights.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from tfx.components.trainer.fn_args_utils import FnArgs

FEATURES = ("x1", "x2")
LABEL = "label"
WEIGHT = "sample_weight"  # serving.metadata.feedback_examples.DEFAULT_WEIGHT_FEATURE
_BATCH_SIZE = 16


def _dataset(file_patterns: list[str]) -> tf.data.Dataset:
    spec = {name: tf.io.FixedLenFeature([1], tf.float32) for name in FEATURES}
    spec[LABEL] = tf.io.FixedLenFeature([1], tf.int64)
    spec[WEIGHT] = tf.io.FixedLenFeature([1], tf.float32, default_value=[1.0])
    files = tf.data.Dataset.list_files(file_patterns, shuffle=False)

    def split(record: tf.Tensor) -> tuple[dict[str, tf.Tensor], tf.Tensor, tf.Tensor]:
        parsed = tf.io.parse_example(record, spec)
        label = tf.cast(parsed.pop(LABEL), tf.float32)
        return parsed, label, parsed.pop(WEIGHT)

    return (
        tf.data.TFRecordDataset(files, compression_type="GZIP")
        .batch(_BATCH_SIZE)
        .map(split)
        .repeat()
    )


def build_model() -> keras.Model:
    inputs = {name: keras.Input(shape=(1,), name=name, dtype="float32") for name in FEATURES}
    hidden = keras.layers.Dense(8, activation="relu")(
        keras.layers.Concatenate()(list(inputs.values()))
    )
    output = keras.layers.Dense(1, activation="sigmoid", name="probability")(hidden)
    model = keras.Model(inputs, output)
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="binary_crossentropy")
    return model


def run_fn(fn_args: FnArgs) -> None:
    keras.utils.set_random_seed(0)
    model = build_model()
    model.fit(
        _dataset(fn_args.train_files),
        steps_per_epoch=fn_args.train_steps,
        validation_data=_dataset(fn_args.eval_files),
        validation_steps=fn_args.eval_steps,
        epochs=1,
        verbose=2,
    )
    model.export(fn_args.serving_model_dir, format="tf_saved_model")
