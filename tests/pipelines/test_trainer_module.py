"""The demo trainer reads every Examples artifact it is given, with feedback rows weighted."""

from __future__ import annotations

import os

import tensorflow as tf

from pipelines import trainer_module


def _write(path: str, rows: list[tuple[float, int, float | None]]) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path, options="GZIP") as writer:
        for x, label, weight in rows:
            feature = {
                "x1": tf.train.Feature(float_list=tf.train.FloatList(value=[x])),
                "x2": tf.train.Feature(float_list=tf.train.FloatList(value=[-x])),
                "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
            }
            if weight is not None:
                feature["sample_weight"] = tf.train.Feature(
                    float_list=tf.train.FloatList(value=[weight])
                )
            example = tf.train.Example(features=tf.train.Features(feature=feature))
            writer.write(example.SerializeToString())
    return path


def test_base_and_feedback_files_are_read_with_weights(tmp_path):
    base = _write(str(tmp_path / "base" / "Split-train" / "a.gz"), [(1.0, 1, None), (2.0, 0, None)])
    feedback = _write(str(tmp_path / "fb" / "Split-train" / "a.gz"), [(3.0, 1, 2.0), (4.0, 0, 1.0)])
    empty_span = _write(str(tmp_path / "empty" / "Split-train" / "a.gz"), [])
    patterns = [os.path.join(os.path.dirname(p), "*") for p in (base, feedback, empty_span)]

    features, labels, weights = next(iter(trainer_module._dataset(patterns)))

    rows = sorted(
        zip(
            features["x1"].numpy()[:, 0].tolist(),
            labels.numpy()[:, 0].tolist(),
            weights.numpy()[:, 0].tolist(),
            strict=True,
        )
    )
    assert rows == [(1.0, 1.0, 1.0), (2.0, 0.0, 1.0), (3.0, 1.0, 2.0), (4.0, 0.0, 1.0)]
