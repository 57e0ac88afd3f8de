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


def save_predict_graph(
    path: str, graph: tf.Graph, inputs: dict[str, tf.Tensor], outputs: dict[str, tf.Tensor]
) -> str:
    """Saves a TF1 graph without variables at ``path`` (a version directory) with one predict
    signature, ``serving_default``, of these inputs and outputs; returns ``path``."""
    with graph.as_default():
        info = tf.compat.v1.saved_model.build_tensor_info
        signature = tf.compat.v1.saved_model.signature_def_utils.build_signature_def(
            {alias: info(tensor) for alias, tensor in inputs.items()},
            {alias: info(tensor) for alias, tensor in outputs.items()},
            "tensorflow/serving/predict",
        )
        with tf.compat.v1.Session(graph=graph) as session:
            builder = tf.compat.v1.saved_model.Builder(path)
            builder.add_meta_graph_and_variables(
                session, ["serve"], signature_def_map={"serving_default": signature}
            )
            builder.save()
    return path


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
    return save_predict_graph(path, graph, {"n": n}, {"total": total})


def write_op_chain(path: str, length: int, width: int = 16_000) -> str:
    """TF1 graph ``y = sin(sin(...sin(x)))`` over ``x`` spread to ``width`` values, ``length``
    chained ops: no loop, so its run time is bounded, yet it grows with ``length`` (sines,
    which grappler cannot fold into fewer ops as it folds adds of constants). In a process on
    one CPU, TensorFlow computes a sine of up to ~16k values in the thread that runs the op;
    with more CPUs it hands it to its intra-op pool."""
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, shape=[], name="x")
        y = tf.fill([width], x)
        for _ in range(length):
            y = tf.sin(y)
        y = tf.identity(y, name="y")
    return save_predict_graph(path, graph, {"x": x}, {"y": y})


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


class _ExampleSignatures(tf.Module):
    """Regress and classify signatures over serialized ``tf.Example``s, each with its own input
    placeholder once saved (what TF2 exports look like; TF Serving's half_plus_two_tf2)."""

    def __init__(self, a: float, b: float) -> None:
        super().__init__()
        self.a = tf.Variable(a)
        self.b = tf.Variable(b)

    def _y(self, serialized):
        x = tf.io.parse_example(serialized, {"x": tf.io.FixedLenFeature([1], tf.float32)})["x"]
        return self.a * x + self.b

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
    def regress(self, serialized):
        return {"outputs": self._y(serialized)}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
    def classify(self, serialized):
        return {"scores": self._y(serialized)}


def write_tf2_example_signatures(path: str, a: float = 0.5, b: float = 2.0) -> str:
    """TF2 SavedModel with ``regress_x_to_y`` and ``classify_x_to_y`` (y = a * x + b), whose
    inputs are two different tensors in the loaded graph."""
    module = _ExampleSignatures(a, b)
    tf.saved_model.save(
        module,
        path,
        signatures={"regress_x_to_y": module.regress, "classify_x_to_y": module.classify},
    )
    return path


class _HalfPlusTwo(tf.Module):
    # The converter names each signature after its method.
    @tf.function(input_signature=[tf.TensorSpec([None, 1], tf.float32, name="x")])
    def serving_default(self, x):
        return {"y": 0.5 * x + 2.0}

    @tf.function(input_signature=[tf.TensorSpec([None, 1], tf.float32, name="x")])
    def triple(self, x):
        return {"y": 3.0 * x, "x_again": tf.identity(x)}


def write_tflite_half_plus_two(version_path: str) -> str:
    """``<version_path>/model.tflite``, converted by ``tf.lite.TFLiteConverter``, with the
    signatures ``serving_default`` (y = 0.5 * x + 2) and ``triple`` (y = 3 * x, x_again = x)."""
    module = _HalfPlusTwo()
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [module.serving_default.get_concrete_function(), module.triple.get_concrete_function()],
        module,
    )
    flatbuffer = converter.convert()
    os.makedirs(version_path, exist_ok=True)
    with open(os.path.join(version_path, "model.tflite"), "wb") as handle:
        handle.write(flatbuffer)
    return version_path


class _WordCount(tf.Module):
    def __init__(self) -> None:
        super().__init__()
        import tensorflow_text

        self._tokenizer = tensorflow_text.WhitespaceTokenizer()

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def serve(self, text):
        return {"words": self._tokenizer.tokenize(text).row_lengths()}


def write_tf_text_word_count(path: str) -> str:
    """A SavedModel whose graph needs a TF Text kernel (its whitespace tokenizer): words per
    input string. Requires tensorflow-text."""
    module = _WordCount()
    tf.saved_model.save(module, path, signatures={"serving_default": module.serve})
    return path


def write_unregistered_op_model(path: str, op_type: str) -> str:
    """A TF1 SavedModel whose ``y`` node has op type ``op_type``, registered nowhere: loading
    it fails exactly like a model that needs an op library the server has not loaded."""
    from tensorflow.core.protobuf import saved_model_pb2

    write_slow_loop(path)
    pb_path = os.path.join(path, "saved_model.pb")
    saved_model = saved_model_pb2.SavedModel()
    with open(pb_path, "rb") as handle:
        saved_model.ParseFromString(handle.read())
    (node,) = [n for n in saved_model.meta_graphs[0].graph_def.node if n.name == "total"]
    node.op = op_type
    with open(pb_path, "wb") as handle:
        handle.write(saved_model.SerializeToString())
    return path
