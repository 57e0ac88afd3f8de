"""Checking and completing a SavedModel's serving signatures.

A Trainer typically exports one ``serving_default`` predict signature on raw, typed tensors.
TF Serving clients also want: predict on serialized ``tf.Example`` (batch scoring, TFX's stock
InfraValidator and warmup tools), and the classify/regress APIs, which require a single
serialized-Example input named ``inputs`` and method names TF2's ``tf.saved_model.save`` cannot
set. This module derives those signatures from ``serving_default`` where the model's shape allows
it, re-saves the model, and patches the method names into saved_model.pb afterwards.

Classification follows what Estimator heads export and TF Serving's classifier
(tensorflow_serving/servables/tensorflow/classifier.cc) reads: outputs ``classes`` (DT_STRING)
and ``scores`` (DT_FLOAT), both ``[batch, num_classes]``, entry i of one matching entry i of
the other. A binary classifier's single sigmoid probability p becomes classes ``["0", "1"]``
with scores ``[1 - p, p]`` (Estimator's BinaryClassHead), and it keeps the ``regression``
signature on p as that head does; softmax (and multi-label sigmoid) outputs give one class per
column. Whether an output is a classifier's probability is read from the graph
(:mod:`components.exporter.activations`) or set with ``classification``.
"""

from __future__ import annotations

import dataclasses
import os

import tensorflow as tf
from absl import logging
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2
from tensorflow.python.saved_model.pywrap_saved_model import fingerprinting

from components.exporter.activations import SIGMOID, SOFTMAX
from components.serving_requests import (
    CLASSIFY_METHOD,
    EXAMPLE_DTYPES,
    PREDICT_METHOD,
    REGRESS_METHOD,
    is_serialized_example_signature,
)

CLASSIFY_AUTO = "auto"
CLASSIFY_SIGMOID = "sigmoid"
CLASSIFY_SOFTMAX = "softmax"
CLASSIFY_NONE = "none"
CLASSIFICATION_MODES = (CLASSIFY_AUTO, CLASSIFY_SIGMOID, CLASSIFY_SOFTMAX, CLASSIFY_NONE)
CLASSES_OUTPUT = "classes"
SCORES_OUTPUT = "scores"
DEFAULT_SIGNATURE = "serving_default"
EXAMPLES_SIGNATURE = "predict_examples"
REGRESSION_SIGNATURE = "regression"
CLASSIFICATION_SIGNATURE = "classification"
_SERVABLE_DTYPES = EXAMPLE_DTYPES | {types_pb2.DT_COMPLEX64, types_pb2.DT_COMPLEX128}
_METHODS = {PREDICT_METHOD, CLASSIFY_METHOD, REGRESS_METHOD}


class UnservableModelError(ValueError):
    """The SavedModel has no signature a TF-Serving-compatible server could call."""


@dataclasses.dataclass(frozen=True)
class Classification:
    """How the ``classification`` signature reads the default signature's probability output."""

    output: str
    """Output key of the default signature holding the probabilities."""
    activation: str
    """``sigmoid`` (independent probabilities) or ``softmax`` (one distribution per row)."""
    columns: int
    """Columns of that output: 1 for a binary sigmoid classifier."""
    labels: tuple[str, ...]
    """Class label per score column (``classes``), default ``"0"`` .. ``"n-1"``."""

    @property
    def binary(self) -> bool:
        return self.activation == CLASSIFY_SIGMOID and self.columns == 1


@dataclasses.dataclass
class SignaturePlan:
    """What the exported model's signatures will be, relative to the trained model."""

    default_source: str
    """Existing signature exported as ``serving_default`` (itself, or an alias)."""
    add_examples: bool = False
    regression_output: str | None = None
    classification: Classification | None = None
    unusable: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def changes_model(self) -> bool:
        return (
            self.default_source != DEFAULT_SIGNATURE
            or self.add_examples
            or self.regression_output is not None
            or self.classification is not None
        )


def _problem(signature: meta_graph_pb2.SignatureDef) -> str | None:
    if signature.method_name not in _METHODS:
        return f"method_name {signature.method_name!r} is not predict/classify/regress"
    for kind, tensors in (("input", signature.inputs), ("output", signature.outputs)):
        for key, info in tensors.items():
            if info.dtype not in _SERVABLE_DTYPES:
                return f"{kind} {key!r} has dtype {types_pb2.DataType.Name(info.dtype)}"
    if not signature.outputs:
        return "it has no outputs"
    return None


def _inner_dims(info: meta_graph_pb2.TensorInfo) -> list[int] | None:
    """Per-example shape if statically known (what FixedLenFeature needs), else None."""
    if info.tensor_shape.unknown_rank or not info.tensor_shape.dim:
        return None
    dims = [d.size for d in info.tensor_shape.dim][1:]
    return None if any(d < 0 for d in dims) else dims


def validate_classification_options(mode: str | None, labels: list[str] | None) -> None:
    """Raises ValueError with what to write if the Exporter's classification options are bad."""
    if mode is not None and mode not in CLASSIFICATION_MODES:
        raise ValueError(
            f"classification must be one of {list(CLASSIFICATION_MODES)}, got {mode!r}."
        )
    if labels is not None:
        if not labels or not all(isinstance(label, str) and label for label in labels):
            raise ValueError(
                f"class_labels must be a non-empty list of non-empty strings, got {labels!r}."
            )
        if len(set(labels)) != len(labels):
            raise ValueError(f"class_labels has duplicates: {labels!r}.")
        if mode == CLASSIFY_NONE:
            raise ValueError("class_labels has no effect with classification='none'.")


def plan_signatures(
    signature_defs: dict[str, meta_graph_pb2.SignatureDef],
    *,
    classification: str = CLASSIFY_AUTO,
    class_labels: list[str] | None = None,
    output_ops: dict[str, str | None] | None = None,
) -> SignaturePlan:
    """Decides which signatures to add; raises UnservableModelError with what to change.

    ``output_ops`` maps the default signature's output keys to the op computing them
    (:func:`components.exporter.activations.computing_op`); ``classification="auto"`` adds a
    classification signature only where that op is ``Sigmoid`` or ``Softmax``.
    """
    validate_classification_options(classification, class_labels)
    unusable = {name: p for name, sig in signature_defs.items() if (p := _problem(sig))}
    usable_predict = [
        name
        for name, sig in signature_defs.items()
        if name not in unusable and sig.method_name == PREDICT_METHOD
    ]
    if DEFAULT_SIGNATURE in signature_defs and DEFAULT_SIGNATURE not in unusable:
        default = DEFAULT_SIGNATURE
    elif DEFAULT_SIGNATURE not in signature_defs and usable_predict:
        default = sorted(usable_predict)[0]
        logging.info("No %s signature; exporting %r under that name.", DEFAULT_SIGNATURE, default)
    else:
        details = "; ".join(f"{n}: {p}" for n, p in sorted(unusable.items())) or "none found"
        raise UnservableModelError(
            f"The model has no servable '{DEFAULT_SIGNATURE}' signature ({details}). Export it "
            "with tf.saved_model.save(..., signatures={'serving_default': fn}) or "
            "keras Model.export(), on float/int/string/bool tensors and with predict outputs."
        )
    plan = SignaturePlan(default_source=default, unusable=unusable)
    forced = classification in (CLASSIFY_SIGMOID, CLASSIFY_SOFTMAX)
    signature = signature_defs[default]
    if signature.method_name != PREDICT_METHOD:
        if forced:
            raise ValueError(
                f"classification={classification!r} needs a predict '{default}' signature; "
                f"it is {signature.method_name!r} (the model already chose its API)."
            )
        return plan
    serialized = is_serialized_example_signature(signature)
    parsable = serialized or all(
        info.dtype in EXAMPLE_DTYPES and _inner_dims(info) is not None
        for info in signature.inputs.values()
    )
    if not parsable:
        if forced:
            raise ValueError(
                f"classification={classification!r}: the inputs of {default!r} are not "
                "tf.Example-shaped (fixed-size float/int/string tensors), and classify "
                "requests carry tf.Examples. Export the model with such inputs or leave "
                "classification unset."
            )
        logging.info("Inputs of %r are not tf.Example-shaped; adding no signatures.", default)
        return plan
    plan.add_examples = not serialized and EXAMPLES_SIGNATURE not in signature_defs
    float_outputs = {
        key: [d.size for d in info.tensor_shape.dim]
        for key, info in signature.outputs.items()
        if info.dtype in (types_pb2.DT_FLOAT, types_pb2.DT_DOUBLE)
    }
    if len(signature.outputs) != 1 or len(float_outputs) != 1:
        if forced:
            raise ValueError(
                f"classification={classification!r} needs one float output in {default!r} "
                f"(the probabilities); it has {sorted(signature.outputs)}."
            )
        return plan
    ((key, dims),) = float_outputs.items()
    if (len(dims) == 1 or (len(dims) == 2 and dims[1] == 1)) and (
        REGRESSION_SIGNATURE not in signature_defs
    ):
        plan.regression_output = key
    if CLASSIFICATION_SIGNATURE not in signature_defs:
        op = (output_ops or {}).get(key)
        plan.classification = _plan_classification(key, dims, op, classification, class_labels)
    return plan


def _plan_classification(
    key: str, dims: list[int], op: str | None, mode: str, labels: list[str] | None
) -> Classification | None:
    if mode == CLASSIFY_NONE:
        return None
    if mode == CLASSIFY_AUTO:
        activation = {SIGMOID: CLASSIFY_SIGMOID, SOFTMAX: CLASSIFY_SOFTMAX}.get(op or "")
        if activation is None:
            logging.info(
                "Output %r is computed by %s, not Sigmoid/Softmax: no classification signature "
                "(Exporter(classification='sigmoid'|'softmax') adds one).",
                key,
                op or "an op that could not be traced",
            )
            return None
    else:
        activation = mode
    columns = 1 if len(dims) == 1 else (dims[1] if len(dims) == 2 else -1)
    problem = None
    if columns < 1:
        problem = f"its shape {dims} is not [batch] or [batch, classes] with a known size"
    elif activation == CLASSIFY_SOFTMAX and columns < 2:
        problem = "a softmax over one column is always 1.0; use 'sigmoid' for one probability"
    if problem is not None:
        if mode == CLASSIFY_AUTO:
            logging.info("No classification signature for output %r: %s.", key, problem)
            return None
        raise ValueError(f"classification={mode!r} cannot use output {key!r}: {problem}.")
    num_classes = 2 if activation == CLASSIFY_SIGMOID and columns == 1 else columns
    if labels is not None and len(labels) != num_classes:
        raise ValueError(
            f"class_labels has {len(labels)} labels but output {key!r} scores {num_classes} "
            f"classes ({activation}, {columns} column(s)); a binary sigmoid output takes two "
            "labels: [negative, positive]."
        )
    return Classification(
        output=key,
        activation=activation,
        columns=columns,
        labels=tuple(labels) if labels else tuple(str(i) for i in range(num_classes)),
    )


def _parser(signature: meta_graph_pb2.SignatureDef):
    """serialized tf.Examples -> kwargs for the default signature."""
    if is_serialized_example_signature(signature):
        (key,) = signature.inputs
        return lambda serialized: {key: serialized}
    spec, casts = {}, {}
    for key, info in signature.inputs.items():
        dtype = tf.dtypes.as_dtype(info.dtype)
        parse_dtype = (
            tf.string if dtype == tf.string else (tf.float32 if dtype.is_floating else tf.int64)
        )
        spec[key] = tf.io.FixedLenFeature(_inner_dims(info), parse_dtype)
        casts[key] = dtype

    def parse(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
        features = tf.io.parse_example(serialized, spec)
        return {k: tf.cast(v, casts[k]) for k, v in features.items()}

    return parse


def write_serving_model(
    source_dir: str,
    target_dir: str,
    signature_defs: dict[str, meta_graph_pb2.SignatureDef],
    plan: SignaturePlan,
) -> None:
    """Re-saves source_dir with the planned signatures into target_dir."""
    loaded = tf.saved_model.load(source_dir)
    root = tf.Module()
    root.model = loaded  # Tracks variables and assets so they are saved again.
    default_fn = loaded.signatures[plan.default_source]
    parse = _parser(signature_defs[plan.default_source])
    signatures = {name: loaded.signatures[name] for name in signature_defs}
    signatures[DEFAULT_SIGNATURE] = default_fn
    methods = {name: sig.method_name for name, sig in signature_defs.items()}
    methods[DEFAULT_SIGNATURE] = signature_defs[plan.default_source].method_name

    if plan.add_examples:

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
        def predict_examples(examples: tf.Tensor) -> dict[str, tf.Tensor]:
            return default_fn(**parse(examples))

        signatures[EXAMPLES_SIGNATURE] = predict_examples
        methods[EXAMPLES_SIGNATURE] = PREDICT_METHOD
    if plan.regression_output is not None:
        output = plan.regression_output

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
        def regression(inputs: tf.Tensor) -> dict[str, tf.Tensor]:
            return {"outputs": tf.reshape(default_fn(**parse(inputs))[output], [-1])}

        signatures[REGRESSION_SIGNATURE] = regression
        methods[REGRESSION_SIGNATURE] = REGRESS_METHOD
    if plan.classification is not None:
        plan_c = plan.classification
        label_row = tf.constant([list(plan_c.labels)], dtype=tf.string)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
        def classification(inputs: tf.Tensor) -> dict[str, tf.Tensor]:
            # TF Serving's classifier wants DT_FLOAT scores and DT_STRING classes, both
            # [batch, num_classes], entry i of one matching entry i of the other.
            probabilities = default_fn(**parse(inputs))[plan_c.output]
            probabilities = tf.reshape(tf.cast(probabilities, tf.float32), [-1, plan_c.columns])
            if plan_c.binary:
                scores = tf.concat([1.0 - probabilities, probabilities], axis=1)
            else:
                scores = probabilities
            classes = tf.tile(label_row, [tf.shape(scores)[0], 1])
            return {CLASSES_OUTPUT: classes, SCORES_OUTPUT: scores}

        signatures[CLASSIFICATION_SIGNATURE] = classification
        methods[CLASSIFICATION_SIGNATURE] = CLASSIFY_METHOD

    tf.saved_model.save(root, target_dir, signatures=signatures)
    _set_method_names(target_dir, methods)


def _set_method_names(saved_model_dir: str, methods: dict[str, str]) -> None:
    """TF2 saves every signature as predict; restore/set classify and regress afterwards and
    refresh fingerprint.pb, whose checksum covers saved_model.pb."""
    path = os.path.join(saved_model_dir, "saved_model.pb")
    saved_model = saved_model_pb2.SavedModel()
    with tf.io.gfile.GFile(path, "rb") as f:
        saved_model.ParseFromString(f.read())
    for meta_graph in saved_model.meta_graphs:
        for name, method in methods.items():
            if name in meta_graph.signature_def:
                meta_graph.signature_def[name].method_name = method
    with tf.io.gfile.GFile(path, "wb") as f:
        f.write(saved_model.SerializeToString())
    with tf.io.gfile.GFile(os.path.join(saved_model_dir, "fingerprint.pb"), "wb") as f:
        f.write(fingerprinting.CreateFingerprintDef(saved_model_dir))


def summarize(signature_defs: dict[str, meta_graph_pb2.SignatureDef]) -> dict[str, dict]:
    """JSON-able summary: method, and dtype[shape] of every input/output."""

    def describe(info: meta_graph_pb2.TensorInfo) -> str:
        dtype = types_pb2.DataType.Name(info.dtype).removeprefix("DT_").lower()
        if info.tensor_shape.unknown_rank:
            return f"{dtype}[?]"
        return f"{dtype}[{','.join(str(d.size) for d in info.tensor_shape.dim)}]"

    return {
        name: {
            "method": sig.method_name.rsplit("/", 1)[-1],
            "inputs": {k: describe(v) for k, v in sorted(sig.inputs.items())},
            "outputs": {k: describe(v) for k, v in sorted(sig.outputs.items())},
        }
        for name, sig in sorted(signature_defs.items())
    }
