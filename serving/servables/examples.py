"""Classify/Regress: ``Input`` protos in, ``ClassificationResult``/``RegressionResult`` out.

Mirrors TF Serving's classifier.cc/regressor.cc contract: one DT_STRING input fed the
serialized ``tf.Example``s (context features merged into each), classify outputs ``classes``
and/or ``scores`` shaped ``[batch, num_classes]``, regress one ``outputs`` tensor shaped
``[batch]`` or ``[batch, 1]``.

No TensorFlow here: results are built with ``serving.protos``' classes, so a front end (in this
process or another) embeds them in its response directly. ``Input`` protos are only read, so one
from either descriptor pool works (the gRPC/REST front ends parse into ``serving.protos``,
warm-up records are TensorFlow's own ``PredictionLog`` protos).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from serving import protos, request_limits
from serving.errors import failed_precondition, invalid_argument
from serving.servables.signatures import SignatureDef, signature_or_default
from serving.tensor_types import DT_STRING

CLASSES = "classes"
SCORES = "scores"
REGRESS_OUTPUTS = "outputs"


def serialized_examples(inp: protos.Input) -> np.ndarray:
    """The batch of serialized examples a classify/regress signature is fed.

    The batch is charged to the request's memory budget first: the context is copied into
    every example, so a small request can describe a huge batch (``N`` examples x a large
    context); sizes come from protobuf's ``ByteSize`` without serializing anything.
    """
    kind = inp.WhichOneof("kind")
    if kind == "example_list":
        count = len(inp.example_list.examples)
        _charge_batch(count, inp.ByteSize())
        examples = [e.SerializeToString() for e in inp.example_list.examples]
    elif kind == "example_list_with_context":
        context = inp.example_list_with_context.context
        count = len(inp.example_list_with_context.examples)
        _charge_batch(count, inp.ByteSize() + count * context.ByteSize())
        examples = []
        for example in inp.example_list_with_context.examples:
            merged = type(context)()  # the context's own class: pools cannot be mixed
            merged.CopyFrom(context)
            merged.MergeFrom(example)  # the example's own features win over the context's
            examples.append(merged.SerializeToString())
    else:
        examples = []
    if not examples:
        raise invalid_argument("Input is empty.")
    batch = np.empty(len(examples), dtype=object)
    batch[:] = examples
    return batch


def _charge_batch(count: int, payload: int) -> None:
    request_limits.charge(
        request_limits.string_bytes(count, payload),
        lambda: f"the batch of {count} serialized tf.Examples ({payload} bytes)",
    )


def find_inference_signature(
    signatures: Mapping[str, SignatureDef], name: str
) -> tuple[str, SignatureDef]:
    key = signature_or_default(name)
    if key not in signatures:
        raise failed_precondition(f"No signature was found with the name: {key}")
    return key, signatures[key]


def _single_string_input(signature: SignatureDef) -> str:
    if len(signature.inputs) != 1:
        raise invalid_argument("Expected one input Tensor.")
    ((alias, info),) = signature.inputs.items()
    if info.dtype != DT_STRING:
        raise invalid_argument(
            "Expected input Tensor of type string (serialized tf.Example) for classify/regress"
        )
    return alias


def classification_plan(signature: SignatureDef) -> tuple[str, list[str]]:
    """(input alias, output aliases to fetch) for a classification signature."""
    alias = _single_string_input(signature)
    if len(signature.outputs) not in (1, 2):
        raise invalid_argument(
            f"Expected one or two output Tensors, found {len(signature.outputs)}"
        )
    fetch = [key for key in (CLASSES, SCORES) if key in signature.outputs]
    if not fetch:
        raise invalid_argument(
            "Expected classification signature outputs to contain classes and/or scores, "
            f"found {sorted(signature.outputs)}"
        )
    return alias, fetch


def regression_plan(signature: SignatureDef) -> tuple[str, list[str]]:
    alias = _single_string_input(signature)
    if len(signature.outputs) != 1:
        raise invalid_argument("Expected one output Tensor.")
    if REGRESS_OUTPUTS not in signature.outputs:
        raise invalid_argument(
            f"No regression outputs found in signature outputs {sorted(signature.outputs)}; "
            f"expected an output named '{REGRESS_OUTPUTS}'"
        )
    return alias, [REGRESS_OUTPUTS]


def _check_rows(name: str, tensor: np.ndarray, batch: int) -> None:
    if tensor.ndim != 2 or tensor.shape[0] != batch:
        raise invalid_argument(
            f"Expected Tensor shape: [{batch} num_classes] for {name} but got {list(tensor.shape)}"
        )


def classification_result(
    outputs: Mapping[str, np.ndarray], batch: int
) -> protos.ClassificationResult:
    classes = outputs.get(CLASSES)
    scores = outputs.get(SCORES)
    if classes is not None:
        _check_rows(CLASSES, classes, batch)
    if scores is not None:
        _check_rows(SCORES, scores, batch)
    if classes is not None and scores is not None and classes.shape != scores.shape:
        raise invalid_argument(
            f"Tensors class and score should match in shape, got {list(classes.shape)} and "
            f"{list(scores.shape)}"
        )
    result = protos.ClassificationResult()
    num_classes = (classes if classes is not None else scores).shape[1]
    for row in range(batch):
        target = result.classifications.add()
        for col in range(num_classes):
            entry = target.classes.add()
            if classes is not None:
                label = classes[row, col]
                entry.label = (
                    label.decode("utf-8", "replace") if isinstance(label, bytes) else str(label)
                )
            if scores is not None:
                entry.score = float(scores[row, col])
    return result


def regression_result(outputs: Mapping[str, np.ndarray], batch: int) -> protos.RegressionResult:
    values = outputs[REGRESS_OUTPUTS]
    if not (values.ndim == 1 or (values.ndim == 2 and values.shape[1] == 1)) or (
        values.shape[0] != batch
    ):
        raise invalid_argument(
            "Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but got "
            f"{list(values.shape)}"
        )
    result = protos.RegressionResult()
    for value in values.reshape(-1):
        result.regressions.add().value = float(value)
    return result
