"""A TensorFlow Lite version (``<version>/model.tflite``) served like a SavedModel.

TF Serving's ``--prefer_tflite_model`` loads ``model.tflite`` instead of ``saved_model.pb``
when a version directory has one (``saved_model_bundle_factory.cc``), wraps it in a
``TfLiteSession`` and exposes SignatureDefs, so Predict, metadata and batching work unchanged.
This does the same with ``tf.lite.Interpreter``:

* Signatures, in TF Serving's order of preference: the SignatureDefs stored in the model's
  ``signature_defs_metadata`` (what TF Serving reads); else the model's own signatures (what
  ``tf.lite.TFLiteConverter`` writes, run through signature runners); else one
  ``serving_default`` built from the model's input and output tensors, named after them
  without the ``:0`` suffix (TF Serving's fallback). Each is a real ``SignatureDef`` proto
  with dtypes and shapes, so request validation and ``GetModelMetadata`` need no special case.
* ``--num_tflite_pools`` interpreters (default: one per CPU) in a pool: a call borrows one, so
  concurrent requests run in parallel instead of queueing on a single interpreter (an
  interpreter is not thread-safe). Each interpreter uses one thread, as in TF Serving.
* ``--num_tflite_interpreters_per_pool`` > 1 splits a request's rows into that many parts run
  on separate interpreters at once, then joins the outputs — TF Serving's use of several
  interpreters for one large request.
* Inputs are resized to the request's shape before each run, so a model converted with a
  batch of 1 still takes any batch, as in TF Serving.
"""

from __future__ import annotations

import itertools
import logging
import os
import queue
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import tensorflow as tf
from flatbuffers import flexbuffers
from tensorflow.core.framework import tensor_shape_pb2
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow.lite.python import schema_py_generated as tflite_schema

from serving.errors import Code, ServingError, invalid_argument
from serving.servables.servable import BlockingServable
from serving.servables.signatures import DEFAULT_SIGNATURE

# TensorFlow's own class, like a SavedModel's signatures (its MetaGraphDef holds them).
SignatureDef = meta_graph_pb2.SignatureDef

log = logging.getLogger(__name__)

TFLITE_MODEL_FILE = "model.tflite"
PREDICT_METHOD = "tensorflow/serving/predict"
# The metadata entry where TF Serving (tflite::GetSignatureDefMap) finds SignatureDefs.
_SIGNATURE_METADATA = b"signature_defs_metadata"
_TENSOR_SUFFIX = re.compile(r":\d+$")

Arrays = dict[str, np.ndarray]


@dataclass(frozen=True)
class TfLiteOptions:
    """``--num_tflite_pools`` (0: one interpreter per CPU) and
    ``--num_tflite_interpreters_per_pool`` (parts one request is split into)."""

    num_pools: int = 0
    interpreters_per_pool: int = 1

    @property
    def pool_size(self) -> int:
        return self.num_pools if self.num_pools > 0 else max(1, os.cpu_count() or 1)


def has_tflite_model(version_path: str) -> bool:
    return tf.io.gfile.exists(os.path.join(version_path, TFLITE_MODEL_FILE))


# --------------------------------------------------------------------------- execution groups
@dataclass(frozen=True)
class _Group:
    """Tensors one interpreter call can feed and fetch: the main subgraph (legacy and
    synthesized signatures share it) or one native signature (its own subgraph)."""

    signature_key: str | None  # None: the main subgraph, addressed by tensor index
    inputs: dict[str, int | str]  # tensor name -> tensor index or signature input name
    outputs: dict[str, int | str]

    def run(self, interpreter: _PooledInterpreter, feeds: Arrays, fetches: Sequence[str]) -> Arrays:
        if self.signature_key is not None:
            runner = interpreter.runner(self.signature_key)
            values = runner(**{self.inputs[name]: value for name, value in feeds.items()})
            return {name: values[self.outputs[name]] for name in fetches}
        lite = interpreter.lite
        shapes = interpreter.input_shapes
        try:
            resized = False
            for name, value in feeds.items():
                index = self.inputs[name]
                if shapes.get(index) != value.shape:
                    lite.resize_tensor_input(index, value.shape, strict=False)
                    shapes[index] = value.shape
                    resized = True
            if resized:
                lite.allocate_tensors()
            for name, value in feeds.items():
                lite.set_tensor(self.inputs[name], value)
            lite.invoke()
        except Exception:
            shapes.clear()  # unknown state: the next call resizes every input again
            raise
        return {name: lite.get_tensor(self.outputs[name]) for name in fetches}


class _PooledInterpreter:
    """One ``tf.lite.Interpreter`` and its signature runners; used by one thread at a time."""

    def __init__(self, model: bytes) -> None:
        self.lite = tf.lite.Interpreter(model_content=model, num_threads=1)
        self.lite.allocate_tensors()
        # Main-subgraph input shapes as last resized, so unchanged shapes skip the resize.
        self.input_shapes: dict[int, tuple[int, ...]] = {
            d["index"]: tuple(d["shape"]) for d in self.lite.get_input_details()
        }
        self._runners: dict[str, Callable[..., Arrays]] = {}

    def runner(self, key: str) -> Callable[..., Arrays]:
        runner = self._runners.get(key)
        if runner is None:
            runner = self._runners[key] = self.lite.get_signature_runner(key)
        return runner


# --------------------------------------------------------------------------- signatures
def _tensor_info(name: str, dtype, shape: Sequence[int]) -> meta_graph_pb2.TensorInfo:
    info = meta_graph_pb2.TensorInfo(name=name, dtype=tf.dtypes.as_dtype(dtype).as_datatype_enum)
    info.tensor_shape.CopyFrom(
        tensor_shape_pb2.TensorShapeProto(
            dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=int(d)) for d in shape]
        )
    )
    return info


def _detail_info(detail: Mapping) -> meta_graph_pb2.TensorInfo:
    """A tensor's TensorInfo; -1 where the model allows any size (``shape_signature``)."""
    shape = detail.get("shape_signature")
    if shape is None or (len(shape) == 0 and len(detail["shape"]) != 0):
        shape = detail["shape"]
    return _tensor_info(detail["name"], detail["dtype"], shape)


def _metadata_signatures(model: bytes) -> dict[str, SignatureDef]:
    """SignatureDefs in the ``signature_defs_metadata`` entry: a FlexBuffer map of key ->
    serialized SignatureDef, written by TF Lite's ``signature_def_util``."""
    root = tflite_schema.Model.GetRootAsModel(model, 0)
    for i in range(root.MetadataLength()):
        entry = root.Metadata(i)
        if entry.Name() != _SIGNATURE_METADATA:
            continue
        data = root.Buffers(entry.Buffer()).DataAsNumpy()
        try:
            stored = flexbuffers.GetRoot(bytes(data)).AsMap
            return {
                key.AsKey: SignatureDef.FromString(
                    value.AsStringBytes if value.IsString else value.AsBlob
                )
                for key, value in zip(stored.Keys, stored.Values, strict=True)
            }
        except Exception as exc:  # a malformed entry fails the load, as in TF Serving
            raise invalid_argument(f"Invalid SignatureDefs found in TfLite model: {exc}") from None
    return {}


def _fix_tensor_name(name: str, known: Mapping[str, int], where: str) -> str:
    """TF Serving's FixTfLiteTensorName: ``x:0`` may be stored as ``x`` by old converters."""
    if name in known:
        return name
    legacy = _TENSOR_SUFFIX.sub("", name)
    if legacy in known:
        return legacy
    raise invalid_argument(f"{where} references an unknown tensor: Unknown tensor '{name}'.")


def _main_subgraph(lite: tf.lite.Interpreter) -> tuple[dict[str, Mapping], dict[str, Mapping]]:
    inputs = {d["name"]: d for d in lite.get_input_details()}
    outputs = {d["name"]: d for d in lite.get_output_details()}
    return inputs, outputs


def _legacy_signatures(
    stored: Mapping[str, SignatureDef], lite: tf.lite.Interpreter
) -> tuple[dict[str, SignatureDef], _Group]:
    inputs, outputs = _main_subgraph(lite)
    input_index = {name: d["index"] for name, d in inputs.items()}
    output_index = {name: d["index"] for name, d in outputs.items()}
    signatures: dict[str, SignatureDef] = {}
    for key, stored_signature in stored.items():
        signature = SignatureDef()
        signature.CopyFrom(stored_signature)
        for alias, info in signature.inputs.items():
            info.name = _fix_tensor_name(info.name, input_index, f"Signature input {alias}")
        for alias, info in signature.outputs.items():
            info.name = _fix_tensor_name(info.name, output_index, f"Signature output {alias}")
        signatures[key] = signature
    return signatures, _Group(None, dict(input_index), dict(output_index))


def _synthesized_signature(lite: tf.lite.Interpreter) -> tuple[dict[str, SignatureDef], _Group]:
    """TF Serving's fallback for a model without SignatureDefs: one ``serving_default``."""
    inputs, outputs = _main_subgraph(lite)
    signature = SignatureDef(method_name=PREDICT_METHOD)
    for name, detail in inputs.items():
        signature.inputs[_TENSOR_SUFFIX.sub("", name)].CopyFrom(_detail_info(detail))
    for name, detail in outputs.items():
        signature.outputs[_TENSOR_SUFFIX.sub("", name)].CopyFrom(_detail_info(detail))
    group = _Group(
        None,
        {name: d["index"] for name, d in inputs.items()},
        {name: d["index"] for name, d in outputs.items()},
    )
    return {DEFAULT_SIGNATURE: signature}, group


def _native_signatures(
    lite: tf.lite.Interpreter,
) -> tuple[dict[str, SignatureDef], dict[str, _Group]]:
    signatures: dict[str, SignatureDef] = {}
    groups: dict[str, _Group] = {}
    for key in lite.get_signature_list():
        runner = lite.get_signature_runner(key)
        signature = SignatureDef(method_name=PREDICT_METHOD)
        group_inputs: dict[str, int | str] = {}
        group_outputs: dict[str, int | str] = {}
        for alias, detail in runner.get_input_details().items():
            signature.inputs[alias].CopyFrom(_detail_info(detail))
            group_inputs[detail["name"]] = alias
        for alias, detail in runner.get_output_details().items():
            signature.outputs[alias].CopyFrom(_detail_info(detail))
            group_outputs[detail["name"]] = alias
        signatures[key] = signature
        groups[key] = _Group(key, group_inputs, group_outputs)
    return signatures, groups


# --------------------------------------------------------------------------- the servable
class TfLiteServable(BlockingServable):
    """The servable interface (``path``, ``signatures``, ``meta_graph``, ``run``, ``close``)
    over a pool of interpreters; thread-safe."""

    def __init__(self, path: str, model: bytes, options: TfLiteOptions) -> None:
        self.path = path
        self._split = max(1, options.interpreters_per_pool)
        probe = _PooledInterpreter(model)
        stored = _metadata_signatures(model)
        groups: dict[str, _Group]
        if stored:
            self.signatures, main = _legacy_signatures(stored, probe.lite)
            groups = dict.fromkeys(self.signatures, main)
        elif probe.lite.get_signature_list():
            self.signatures, groups = _native_signatures(probe.lite)
        else:
            log.warning("No signature def found in TFLite model %s. Generating one.", path)
            self.signatures, main = _synthesized_signature(probe.lite)
            groups = dict.fromkeys(self.signatures, main)
        self._groups_by_id = {id(self.signatures[key]): group for key, group in groups.items()}
        self._groups = list({id(g): g for g in groups.values()}.values())
        self.meta_graph = meta_graph_pb2.MetaGraphDef()
        for key, signature in self.signatures.items():
            self.meta_graph.signature_def[key].CopyFrom(signature)
        self._pool: queue.SimpleQueue[_PooledInterpreter] = queue.SimpleQueue()
        self._pool.put(probe)
        for _ in range(options.pool_size - 1):
            self._pool.put(_PooledInterpreter(model))
        self._size = options.pool_size
        # Runs the extra parts of a split request; the caller's thread runs the first part.
        self._parts = (
            ThreadPoolExecutor(max_workers=self._split - 1, thread_name_prefix="tflite-part")
            if self._split > 1
            else None
        )
        self._closed = threading.Event()

    @property
    def pool_size(self) -> int:
        return self._size

    def run(
        self,
        signature: SignatureDef,
        inputs: Mapping[str, np.ndarray],
        output_aliases: Sequence[str],
        timeout_ms: int = 0,
    ) -> dict[str, np.ndarray]:
        """Feeds ``inputs`` (by alias) and fetches ``output_aliases`` of ``signature``.

        ``timeout_ms`` is not applied: an interpreter call cannot be interrupted (TF Serving's
        TfLiteSession ignores the run deadline too).
        """
        feeds = {signature.inputs[alias].name: np.asarray(v) for alias, v in inputs.items()}
        fetches = [signature.outputs[alias].name for alias in output_aliases]
        group = self._group(signature, feeds, fetches)
        missing = [name for name in group.inputs if name not in feeds]
        if missing and group.signature_key is None:
            raise invalid_argument(
                f"TFLite model needs every input of its graph; missing {sorted(missing)}"
            )
        parts = self._partition(feeds)
        if len(parts) == 1:
            values = self._invoke(group, feeds, fetches)
        else:
            values = self._run_parts(group, parts, fetches)
        return {alias: values[name] for alias, name in zip(output_aliases, fetches, strict=True)}

    def _group(self, signature: SignatureDef, feeds: Arrays, fetches: Sequence[str]) -> _Group:
        group = self._groups_by_id.get(id(signature))
        if group is not None:
            return group
        # A signature assembled by the caller (MultiInference): whichever group has its tensors.
        for candidate in self._groups:
            if all(n in candidate.inputs for n in feeds) and all(
                n in candidate.outputs for n in fetches
            ):
                return candidate
        raise invalid_argument(
            "The requested tensors span several signatures of this TFLite model; a call can "
            "only run one signature's subgraph"
        )

    def _invoke(self, group: _Group, feeds: Arrays, fetches: Sequence[str]) -> Arrays:
        if self._closed.is_set():
            raise ServingError(Code.UNAVAILABLE, f"TFLite model {self.path} is unloading")
        interpreter = self._pool.get()
        try:
            return group.run(interpreter, feeds, fetches)
        except ValueError as exc:  # wrong dtype, a shape the model cannot be resized to, ...
            raise invalid_argument(str(exc)) from None
        except RuntimeError as exc:  # the kernels rejected the resized inputs
            raise invalid_argument(f"Failed to invoke TfLite interpreter: {exc}") from None
        finally:
            self._pool.put(interpreter)

    def _partition(self, feeds: Arrays) -> list[Arrays]:
        """The request as up to ``interpreters_per_pool`` row ranges (one when not splittable)."""
        if self._split == 1 or not feeds:
            return [feeds]
        rows = {value.shape[0] if value.ndim else -1 for value in feeds.values()}
        if len(rows) != 1 or (count := rows.pop()) < 2:
            return [feeds]
        bounds = np.linspace(0, count, min(self._split, count) + 1).astype(int)
        return [
            {name: value[start:end] for name, value in feeds.items()}
            for start, end in itertools.pairwise(bounds)
        ]

    def _run_parts(self, group: _Group, parts: list[Arrays], fetches: Sequence[str]) -> Arrays:
        assert self._parts is not None
        pending = [self._parts.submit(self._invoke, group, part, fetches) for part in parts[1:]]
        results = [self._invoke(group, parts[0], fetches), *(f.result() for f in pending)]
        joined: Arrays = {}
        for name in fetches:
            pieces = [result[name] for result in results]
            for part, piece in zip(parts, pieces, strict=True):
                rows = next(iter(part.values())).shape[0]
                if piece.ndim == 0 or piece.shape[0] != rows:
                    raise invalid_argument(
                        f"Output {name} of this TFLite model has no batch dimension, so a "
                        "request cannot be split across interpreters; serve it with "
                        "--num_tflite_interpreters_per_pool=1"
                    )
            joined[name] = np.concatenate(pieces, axis=0)
        return joined

    def close(self) -> None:
        self._closed.set()
        if self._parts is not None:
            self._parts.shutdown(wait=True)
        while not self._pool.empty():
            self._pool.get_nowait()


def load_tflite_model(path: str, options: TfLiteOptions) -> TfLiteServable:
    """Reads ``<path>/model.tflite`` and builds the interpreter pool."""
    model_file = os.path.join(path, TFLITE_MODEL_FILE)
    with tf.io.gfile.GFile(model_file, "rb") as handle:
        model = handle.read()
    try:
        servable = TfLiteServable(path, model, options)
    except ServingError:
        raise
    except (ValueError, RuntimeError) as exc:
        raise invalid_argument(
            f"Cannot build a TFLite interpreter from {model_file}: {exc}"
        ) from None
    log.info(
        "Loaded TFLite model %s: signatures %s, %d interpreter(s)",
        model_file,
        sorted(servable.signatures),
        servable.pool_size,
    )
    return servable
