"""SavedModels built by the tests themselves, so every number they check is computed here.

``half_plus_two`` mirrors TF Serving's own test model: a TF1 graph where ``x`` is an identity
over parsed ``tf.Example``s (so it also accepts any fed shape), ``y = 0.5 * x + 2``, with
predict, classify and regress signatures.

The builders run on both stacks the server runs on (TF 2.16 with Keras 3.x on Python 3.10, TF
2.21 with Keras 3.15 on Python 3.12; docs/stacks.md): TF1 graphs through ``tf.compat.v1``, TF2
modules through ``tf.saved_model.save`` and Keras through ``Model.export``, all of which both
TensorFlow versions keep.
"""

from __future__ import annotations

import os

import tensorflow as tf


def write_half_plus_two(path: str, a: float = 0.5, b: float = 2.0) -> str:
    """TF1 graph SavedModel at ``path`` (a version directory); returns ``path``."""
    graph = tf.Graph()
    with graph.as_default():
        serialized = tf.compat.v1.placeholder(tf.string, shape=[None], name="tf_example")
        parsed = tf.io.parse_example(serialized, {"x": tf.io.FixedLenFeature([1], tf.float32)})
        x = tf.identity(parsed["x"], name="x")
        va = tf.compat.v1.get_variable("a", initializer=tf.constant(a))
        vb = tf.compat.v1.get_variable("b", initializer=tf.constant(b))
        y = tf.add(tf.multiply(va, x), vb, name="y")
        info = tf.compat.v1.saved_model.build_tensor_info
        sig = tf.compat.v1.saved_model.signature_def_utils.build_signature_def
        predict = sig({"x": info(x)}, {"y": info(y)}, "tensorflow/serving/predict")
        classify = sig(
            {"inputs": info(serialized)}, {"scores": info(y)}, "tensorflow/serving/classify"
        )
        regress = sig(
            {"inputs": info(serialized)}, {"outputs": info(y)}, "tensorflow/serving/regress"
        )
        with tf.compat.v1.Session(graph=graph) as session:
            session.run(tf.compat.v1.global_variables_initializer())
            builder = tf.compat.v1.saved_model.Builder(path)
            builder.add_meta_graph_and_variables(
                session,
                ["serve"],
                signature_def_map={
                    "serving_default": predict,
                    "classify_x_to_y": classify,
                    "regress_x_to_y": regress,
                },
            )
            builder.save()
    return path


class _Scale(tf.Module):
    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = tf.Variable(factor)

    @tf.function(input_signature=[tf.TensorSpec([None, 1], tf.float32, name="x")])
    def serve(self, x):
        return {"y": x * self.factor, "label": tf.strings.as_string(x)}


def write_tf2_scale(path: str, factor: float = 3.0) -> str:
    """TF2 tf.function SavedModel: y = factor * x, plus a string output."""
    module = _Scale(factor)
    tf.saved_model.save(module, path, signatures={"serving_default": module.serve})
    return path


def version_dir(base: str, version: int) -> str:
    return os.path.join(base, str(version))


def write_slow_loop(path: str) -> str:
    """TF1 graph whose run time grows with input ``n`` (a counting while-loop): for timeouts."""
    graph = tf.Graph()
    with graph.as_default():
        n = tf.compat.v1.placeholder(tf.int64, shape=[], name="n")
        _, total = tf.while_loop(
            lambda i, acc: i < n,
            lambda i, acc: (i + 1, acc + i),
            [tf.constant(0, tf.int64), tf.constant(0, tf.int64)],
        )
        total = tf.identity(total, name="total")
        info = tf.compat.v1.saved_model.build_tensor_info
        signature = tf.compat.v1.saved_model.signature_def_utils.build_signature_def(
            {"n": info(n)}, {"total": info(total)}, "tensorflow/serving/predict"
        )
        with tf.compat.v1.Session(graph=graph) as session:
            builder = tf.compat.v1.saved_model.Builder(path)
            builder.add_meta_graph_and_variables(
                session, ["serve"], signature_def_map={"serving_default": signature}
            )
            builder.save()
    return path


class _Half(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None], tf.float16, name="x")])
    def serve(self, x):
        return {"y": x * 2}


def write_half_precision(path: str) -> str:
    """A DT_HALF input, which TF Serving's JSON codec refuses with UNIMPLEMENTED (HTTP 501)."""
    module = _Half()
    tf.saved_model.save(module, path, signatures={"serving_default": module.serve})
    return path


def write_keras_dense(path: str, units: int = 2, features: int = 4, seed: int = 0) -> str:
    """Keras 3 ``model.export`` of a Dense layer: the TF2 path most users take."""
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape=(features,), name="features")
    outputs = keras.layers.Dense(units, name="dense")(inputs)
    keras.Model(inputs, outputs).export(path, verbose=False)
    return path
