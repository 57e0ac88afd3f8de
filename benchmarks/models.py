"""The benchmark's SavedModels, generated here so every server loads byte-identical models.

All three take one float32 input ``x`` with a ``None`` batch dimension and return ``y``:
- ``scalar``: y = 0.5 x + 2 on ``[None, 1]`` — the tiny-payload, pure-overhead case;
- ``mlp``: 784 -> 256 (relu) -> 10, 203,530 parameters — transport-bound, the issue's target;
- ``cnn``: 32x32x3 -> conv 3x3x16 -> conv 3x3x32 (stride 2) -> global average pool -> 10 —
  compute-bound on a CPU core.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

INPUT_SHAPES = {"scalar": (1,), "mlp": (784,), "cnn": (32, 32, 3)}


class _Scalar(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None, 1], tf.float32, name="x")])
    def serve(self, x):
        return {"y": 0.5 * x + 2.0}


class _Mlp(tf.Module):
    def __init__(self, rng: np.random.Generator) -> None:
        super().__init__()
        self.w1 = tf.Variable(rng.normal(0, 0.05, (784, 256)).astype(np.float32))
        self.b1 = tf.Variable(np.zeros(256, np.float32))
        self.w2 = tf.Variable(rng.normal(0, 0.05, (256, 10)).astype(np.float32))
        self.b2 = tf.Variable(np.zeros(10, np.float32))

    @tf.function(input_signature=[tf.TensorSpec([None, 784], tf.float32, name="x")])
    def serve(self, x):
        hidden = tf.nn.relu(tf.matmul(x, self.w1) + self.b1)
        return {"y": tf.matmul(hidden, self.w2) + self.b2}


class _Cnn(tf.Module):
    def __init__(self, rng: np.random.Generator) -> None:
        super().__init__()
        self.k1 = tf.Variable(rng.normal(0, 0.1, (3, 3, 3, 16)).astype(np.float32))
        self.k2 = tf.Variable(rng.normal(0, 0.1, (3, 3, 16, 32)).astype(np.float32))
        self.w = tf.Variable(rng.normal(0, 0.1, (32, 10)).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec([None, 32, 32, 3], tf.float32, name="x")])
    def serve(self, x):
        h = tf.nn.relu(tf.nn.conv2d(x, self.k1, 1, "SAME"))
        h = tf.nn.relu(tf.nn.conv2d(h, self.k2, 2, "SAME"))
        return {"y": tf.matmul(tf.reduce_mean(h, axis=[1, 2]), self.w)}


def build(name: str, base: str) -> str:
    """Writes model ``name`` as version 1 under ``base/name``; returns the model's base path."""
    path = os.path.join(base, name)
    version = os.path.join(path, "1")
    if os.path.exists(os.path.join(version, "saved_model.pb")):
        return path
    rng = np.random.default_rng(0)
    module = {"scalar": _Scalar, "mlp": lambda: _Mlp(rng), "cnn": lambda: _Cnn(rng)}[name]()
    tf.saved_model.save(module, version, signatures={"serving_default": module.serve})
    return path


def sample(name: str, rows: int = 1) -> np.ndarray:
    """The request every client sends: deterministic, one row unless asked otherwise."""
    rng = np.random.default_rng(1)
    return rng.random((rows, *INPUT_SHAPES[name]), dtype=np.float32)
