"""Model warmup: replay ``assets.extra/tf_serving_warmup_requests`` before a version serves.

The first calls into a fresh TF session pay for graph pruning, kernel and oneDNN primitive
setup — milliseconds to seconds that would otherwise land on the first users. TF Serving
replays logged requests inside the load, before the version becomes AVAILABLE, and fails the
load when a record fails; this does the same (the same file, record limit, messages and
``--num_request_iterations_for_warmup``). With batching it then also runs every allowed batch
size once, since each padded size is a new shape for the kernels to set up.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tensorflow.python.lib.io import tf_record
from tensorflow.python.util import deprecation
from tensorflow_serving.apis import prediction_log_pb2

from serving import tensor_codec
from serving.errors import Code, ServingError, invalid_argument, unimplemented
from serving.servables import examples
from serving.servables.signatures import SignatureDef, check_inputs, find_signature, output_aliases

log = logging.getLogger(__name__)

WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
MAX_RECORDS = 1000  # TF Serving's kMaxNumRecords
_CLASSIFY = "tensorflow/serving/classify"


@dataclass(frozen=True)
class WarmupCall:
    signature_name: str
    signature: SignatureDef
    inputs: dict[str, np.ndarray]
    output_aliases: list[str]


def warm_up(servable, iterations: int = 1, allowed_batch_sizes: Sequence[int] = ()) -> int:
    """Replays the version's warmup records; returns how many were read. Raises ServingError
    (which fails the load) when the file is unreadable or a replayed request fails."""
    calls = read_warmup_calls(servable)
    for call in calls:
        for _ in range(max(iterations, 1)):
            servable.run(call.signature, call.inputs, call.output_aliases)
    if allowed_batch_sizes:
        _warm_batch_sizes(getattr(servable, "inner", servable), calls, allowed_batch_sizes)
    return len(calls)


def read_warmup_calls(servable) -> list[WarmupCall]:
    path = os.path.join(servable.path, WARMUP_FILE)
    if not tf.io.gfile.exists(path):
        log.info("No warmup data file found at %s", path)
        return []
    calls: list[WarmupCall] = []
    for count, record in enumerate(_records(path), start=1):
        if count > MAX_RECORDS:
            raise invalid_argument(
                f"Number of warmup records exceeds the maximum ({MAX_RECORDS}) at {path}"
            )
        try:
            entry = prediction_log_pb2.PredictionLog.FromString(record)
        except Exception:  # protobuf's DecodeError; any unparsable record fails the load
            raise invalid_argument(f"Failed to parse warmup record {count} at {path}") from None
        calls.extend(_plan(servable.signatures, entry))
    return calls


def _records(path: str) -> Iterator[bytes]:
    try:
        with deprecation.silence():
            yield from tf_record.tf_record_iterator(path)
    except tf.errors.OpError as exc:
        raise ServingError(
            Code.DATA_LOSS,
            f"Failed to read warmup data from {path}: {exc.message}. Please verify your warmup "
            "data is in TFRecord format.",
        ) from None


def _plan(signatures, entry: prediction_log_pb2.PredictionLog) -> list[WarmupCall]:
    kind = entry.WhichOneof("log_type")
    if kind is None:
        return []
    if kind == "predict_log":
        request = entry.predict_log.request
        name = request.model_spec.signature_name
        signature = find_signature(signatures, name)
        inputs = {alias: tensor_codec.decode(t, alias) for alias, t in request.inputs.items()}
        check_inputs(signature, list(inputs))
        aliases = output_aliases(signature, list(request.output_filter))
        return [WarmupCall(name, signature, inputs, aliases)]
    if kind in ("classify_log", "regress_log"):
        request = getattr(entry, kind).request
        method = _CLASSIFY if kind == "classify_log" else ""
        return [_example_call(signatures, request.model_spec.signature_name, method, request.input)]
    if kind == "multi_inference_log":
        request = entry.multi_inference_log.request
        return [
            _example_call(
                signatures, task.model_spec.signature_name, task.method_name, request.input
            )
            for task in request.tasks
        ]
    raise unimplemented(f"Unsupported log_type for warmup: {kind}")


def _example_call(signatures, name: str, method: str, inp) -> WarmupCall:
    key, signature = examples.find_inference_signature(signatures, name)
    plan = examples.classification_plan if method == _CLASSIFY else examples.regression_plan
    alias, fetch = plan(signature)
    return WarmupCall(key, signature, {alias: examples.serialized_examples(inp)}, fetch)


def _warm_batch_sizes(inner, calls: list[WarmupCall], sizes: Sequence[int]) -> None:
    """One call per allowed batch size and signature, straight on the model (no batcher).

    Rows come from the first warmup record of each signature; without records, zeros are
    synthesised for signatures with numeric, fully defined inputs. A failure on real records
    fails the load; on synthesised zeros it is only logged (zeros may be invalid input).
    """
    seen: dict[str, WarmupCall] = {}
    for call in calls:
        seen.setdefault(call.signature_name, call)
    real = bool(seen)
    if not real:
        seen = {
            name: call
            for name, signature in inner.signatures.items()
            if (call := _zeros_call(name, signature)) is not None
        }
    for call in seen.values():
        for size in sizes:
            inputs = {a: _tile_rows(v, size) for a, v in call.inputs.items()}
            try:
                inner.run(call.signature, inputs, call.output_aliases)
            except ServingError as exc:
                if real:
                    raise
                log.warning(
                    "Warmup of signature %s at batch size %d with zeros failed (%s); add "
                    "warmup records to warm it",
                    call.signature_name,
                    size,
                    exc.message,
                )
                break


def _zeros_call(name: str, signature: SignatureDef) -> WarmupCall | None:
    inputs = {}
    for alias, info in signature.inputs.items():
        dims = [d.size for d in info.tensor_shape.dim]
        if info.dtype == types_pb2.DT_STRING or info.tensor_shape.unknown_rank or not dims:
            return None
        if any(d < 0 for d in dims[1:]):
            return None
        try:
            dtype = tf.dtypes.as_dtype(info.dtype).as_numpy_dtype
        except TypeError:
            return None
        inputs[alias] = np.zeros([1, *dims[1:]], dtype)
    if not inputs:
        return None
    return WarmupCall(name, signature, inputs, list(signature.outputs))


def _tile_rows(array: np.ndarray, rows: int) -> np.ndarray:
    if array.ndim == 0 or array.shape[0] == 0:
        return array
    return np.take(array, np.arange(rows) % array.shape[0], axis=0)


def write_warmup_file(version_path: str, logs: Sequence[prediction_log_pb2.PredictionLog]) -> str:
    """Writes ``logs`` where warmup looks for them (for exporters, tests and benchmarks)."""
    path = os.path.join(version_path, WARMUP_FILE)
    tf.io.gfile.makedirs(os.path.dirname(path))
    with tf.io.TFRecordWriter(path) as writer:
        for entry in logs:
            writer.write(entry.SerializeToString())
    return path
