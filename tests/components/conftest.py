"""Fixtures shared by the component tests: real (tiny) TensorFlow SavedModels and Examples."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
import tensorflow as tf

FEATURES = ("x1", "x2")


class _Scorer(tf.Module):
    """y = sigmoid(w . [x1, x2] + b): small, deterministic, with real variables on disk."""

    def __init__(self) -> None:
        super().__init__()
        self.w = tf.Variable([[0.5], [-0.25]], dtype=tf.float32)
        self.b = tf.Variable([0.1], dtype=tf.float32)

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, 1], tf.float32, name="x1"),
            tf.TensorSpec([None, 1], tf.float32, name="x2"),
        ]
    )
    def serve(self, x1: tf.Tensor, x2: tf.Tensor) -> dict[str, tf.Tensor]:
        logits = tf.matmul(tf.concat([x1, x2], axis=1), self.w) + self.b
        return {"score": tf.sigmoid(logits)}


@pytest.fixture
def make_saved_model() -> Callable[[str], str]:
    """Writes a real SavedModel to ``<path>`` and returns the path."""

    def make(path: str) -> str:
        module = _Scorer()
        tf.saved_model.save(module, path, signatures={"serving_default": module.serve})
        return path

    return make


@pytest.fixture
def trained_model_uri(tmp_path, make_saved_model) -> str:
    """A Trainer-style Model artifact dir: ``<uri>/Format-Serving/``."""
    uri = str(tmp_path / "trainer_model")
    make_saved_model(os.path.join(uri, "Format-Serving"))
    return uri


def _example(x1: float, x2: float, label: int) -> tf.train.Example:
    return tf.train.Example(
        features=tf.train.Features(
            feature={
                "x1": tf.train.Feature(float_list=tf.train.FloatList(value=[x1])),
                "x2": tf.train.Feature(float_list=tf.train.FloatList(value=[x2])),
                "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
            }
        )
    )


@pytest.fixture
def examples_uri(tmp_path) -> str:
    """An ExampleGen-style Examples dir with ``Split-train`` / ``Split-eval`` gzip TFRecords."""
    uri = tmp_path / "examples"
    for split, rows in {"train": [(1.0, 2.0, 1), (0.5, -1.0, 0)], "eval": [(2.0, 0.0, 1)]}.items():
        split_dir = uri / f"Split-{split}"
        split_dir.mkdir(parents=True)
        with tf.io.TFRecordWriter(
            str(split_dir / "data_tfrecord-00000-of-00001.gz"), options="GZIP"
        ) as writer:
            for row in rows:
                writer.write(_example(*row).SerializeToString())
    return str(uri)


@pytest.fixture
def exported_model(tmp_path, trained_model_uri):
    """The trained model passed through our Exporter (a ``Model`` artifact)."""
    # Imported here: tests that need no TFX artifact do not pay TFX's import time.
    from tfx.types import standard_artifacts

    from components.exporter import executor as exporter_executor

    trained = standard_artifacts.Model()
    trained.uri = trained_model_uri
    exported = standard_artifacts.Model()
    exported.uri = str(tmp_path / "exported")
    exporter_executor.Executor().Do({"model": [trained]}, {"exported_model": [exported]}, {})
    return exported


@pytest.fixture
def examples(examples_uri):
    """``examples_uri`` as the Examples artifact ExampleGen would hand the InfraValidator."""
    from tfx.types import standard_artifacts

    artifact = standard_artifacts.Examples()
    artifact.uri = examples_uri
    artifact.split_names = '["train", "eval"]'
    return artifact


@pytest.fixture
def blessing(tmp_path):
    """An empty InfraBlessing output artifact, its directory created as the launcher does."""
    from tfx.types import standard_artifacts

    artifact = standard_artifacts.InfraBlessing()
    artifact.uri = str(tmp_path / "blessing")
    os.makedirs(artifact.uri)
    return artifact
