"""TF Serving requests built from a SavedModel's signatures and ``tf.Example``s.

Shared by the Exporter (warmup file) and the InfraValidator (canary requests, warmup for the
stamped model). Requests are TF Serving protos (``PredictRequest``, ``ClassificationRequest``,
``RegressionRequest``) so the same objects can be written as ``PredictionLog`` warmup records,
sent over gRPC, or converted to REST JSON (:mod:`components.infra_validator.rest_client`).

Unlike stock TFX, predict signatures are not limited to one serialized-Example input: each typed
input is filled from the example feature of the same name.
"""

from __future__ import annotations

import glob
import os
import posixpath
import tempfile
from collections.abc import Iterable, Sequence

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    predict_pb2,
    prediction_log_pb2,
    regression_pb2,
)
from tfx import types
from tfx.types import artifact_utils

from components import store_io

Request = (
    predict_pb2.PredictRequest
    | classification_pb2.ClassificationRequest
    | regression_pb2.RegressionRequest
)

PREDICT_METHOD = "tensorflow/serving/predict"
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"
WARMUP_RELATIVE_PATH = os.path.join("assets.extra", "tf_serving_warmup_requests")

# Dtypes a tf.Example can carry, by the feature list that holds them.
_FLOAT_DTYPES = {types_pb2.DT_FLOAT, types_pb2.DT_DOUBLE, types_pb2.DT_HALF}
_INT_DTYPES = {
    types_pb2.DT_INT8,
    types_pb2.DT_INT16,
    types_pb2.DT_INT32,
    types_pb2.DT_INT64,
    types_pb2.DT_UINT8,
    types_pb2.DT_UINT16,
    types_pb2.DT_UINT32,
    types_pb2.DT_UINT64,
    types_pb2.DT_BOOL,
}
EXAMPLE_DTYPES = _FLOAT_DTYPES | _INT_DTYPES | {types_pb2.DT_STRING}


def load_signature_defs(
    saved_model_dir: str, tags: Sequence[str] = ("serve",)
) -> dict[str, meta_graph_pb2.SignatureDef]:
    """Callable signatures of the MetaGraph tagged ``tags``, read from saved_model.pb."""
    path = os.path.join(saved_model_dir, "saved_model.pb")
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(
            f"No saved_model.pb in {saved_model_dir}; the Model artifact must contain a "
            "TensorFlow SavedModel under Format-Serving/."
        )
    saved_model = saved_model_pb2.SavedModel()
    with tf.io.gfile.GFile(path, "rb") as f:
        saved_model.ParseFromString(f.read())
    for meta_graph in saved_model.meta_graphs:
        if set(meta_graph.meta_info_def.tags) == set(tags):
            # "__saved_model_init_op" and friends are loader internals, not callable signatures.
            return {k: v for k, v in meta_graph.signature_def.items() if not k.startswith("__")}
    found = [sorted(mg.meta_info_def.tags) for mg in saved_model.meta_graphs]
    raise ValueError(f"SavedModel {saved_model_dir} has no MetaGraph tagged {list(tags)}: {found}")


def read_examples(
    examples: types.Artifact, split: str | None, limit: int
) -> list[tf.train.Example]:
    """Up to ``limit`` tf.Examples from one split (default: the first) of an Examples artifact."""
    payload = examples.get_string_custom_property("payload_format") or "FORMAT_TF_EXAMPLE"
    if payload != "FORMAT_TF_EXAMPLE":
        raise ValueError(
            f"Examples payload_format {payload!r} is not supported; requests are built from "
            "tf.Example records (FORMAT_TF_EXAMPLE)."
        )
    splits = artifact_utils.decode_split_names(examples.split_names)
    split = split or (splits[0] if splits else "")
    if split not in splits:
        raise ValueError(f"Split {split!r} not in Examples splits {splits}.")
    split_uri = artifact_utils.get_split_uri([examples], split)
    if store_io.is_bucket_uri(split_uri):
        return _read_bucket_examples(split_uri, split, limit)
    files = sorted(glob.glob(os.path.join(split_uri, "*")))
    if not files:
        raise ValueError(f"Examples split {split!r} at {examples.uri} has no files.")
    return _read_records(files, limit)


def _read_records(files: list[str], limit: int) -> list[tf.train.Example]:
    dataset = tf.data.TFRecordDataset(files, compression_type="GZIP").take(limit)
    return [tf.train.Example.FromString(record.numpy()) for record in dataset]


def _read_bucket_examples(split_uri: str, split: str, limit: int) -> list[tf.train.Example]:
    """Downloads the split's files one at a time until ``limit`` records are read (a few
    requests need a few records, not the whole split)."""
    keys = [o.key for o in store_io.list_objects(split_uri)]
    if not keys:
        raise ValueError(f"Examples split {split!r} at {split_uri} has no files.")
    found: list[tf.train.Example] = []
    with tempfile.TemporaryDirectory(prefix="examples-") as tmp:
        for number, key in enumerate(keys):
            local = os.path.join(tmp, f"{number}.gz")
            store_io.download_file(posixpath.join(split_uri, key), local)
            found.extend(_read_records([local], limit - len(found)))
            if len(found) >= limit:
                break
    return found


def build_requests(
    model_name: str,
    signature_defs: dict[str, meta_graph_pb2.SignatureDef],
    signature_names: Iterable[str],
    examples: Sequence[tf.train.Example],
) -> list[Request]:
    """One request per (signature, example), like stock TFX's request builder."""
    if not examples:
        raise ValueError("No examples to build requests from; check the Examples split.")
    requests: list[Request] = []
    for name in signature_names:
        if name not in signature_defs:
            raise ValueError(
                f"Signature {name!r} not in the SavedModel (has {sorted(signature_defs)}); "
                "fix request_spec.tensorflow_serving.signature_names."
            )
        signature = signature_defs[name]
        for example in examples:
            requests.append(_build_request(model_name, name, signature, example))
    return requests


def _build_request(
    model_name: str, name: str, signature: meta_graph_pb2.SignatureDef, example: tf.train.Example
) -> Request:
    if signature.method_name in (CLASSIFY_METHOD, REGRESS_METHOD):
        cls = (
            classification_pb2.ClassificationRequest
            if signature.method_name == CLASSIFY_METHOD
            else regression_pb2.RegressionRequest
        )
        request = cls()
        request.model_spec.name = model_name
        request.model_spec.signature_name = name
        request.input.example_list.examples.add().CopyFrom(example)
        return request
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = name
    if is_serialized_example_signature(signature):
        (key,) = signature.inputs
        request.inputs[key].CopyFrom(
            tf.make_tensor_proto([example.SerializeToString()], dtype=tf.string)
        )
        return request
    for key, info in signature.inputs.items():
        request.inputs[key].CopyFrom(_tensor_from_feature(name, key, info, example))
    return request


def is_serialized_example_signature(signature: meta_graph_pb2.SignatureDef) -> bool:
    """Exactly one DT_STRING input of shape [batch]: the stock "serialized tf.Example" form."""
    if len(signature.inputs) != 1:
        return False
    (info,) = signature.inputs.values()
    dims = [d.size for d in info.tensor_shape.dim]
    return info.dtype == types_pb2.DT_STRING and (info.tensor_shape.unknown_rank or len(dims) == 1)


def _tensor_from_feature(
    signature_name: str, key: str, info: meta_graph_pb2.TensorInfo, example: tf.train.Example
) -> tensor_pb2.TensorProto:
    where = f"signature {signature_name!r} input {key!r}"
    if info.dtype not in EXAMPLE_DTYPES:
        raise ValueError(
            f"{where} has dtype {types_pb2.DataType.Name(info.dtype)}, which cannot be filled "
            "from tf.Example features; give the model a signature on float/int/string inputs."
        )
    feature = example.features.feature.get(key)
    if feature is None:
        raise ValueError(
            f"{where} has no feature named {key!r} in the examples (features: "
            f"{sorted(example.features.feature)}); name the model inputs after the features."
        )
    kind = feature.WhichOneof("kind")
    values = list(getattr(feature, kind).value) if kind else []
    if not values:
        raise ValueError(f"{where}: feature {key!r} is empty in an example; canaries need values.")
    dims = [d.size for d in info.tensor_shape.dim]
    inner = dims[1:] if dims else [-1]
    shape = [1, *(len(values) if d == -1 else d for d in inner)] if dims else [len(values)]
    np_dtype = tf.dtypes.as_dtype(info.dtype).as_numpy_dtype
    array = np.asarray(values, dtype=object if info.dtype == types_pb2.DT_STRING else np_dtype)
    if array.size != int(np.prod(shape)):
        raise ValueError(
            f"{where} expects shape {dims} but feature {key!r} has {array.size} values."
        )
    return tf.make_tensor_proto(array.reshape(shape), dtype=info.dtype)


def to_prediction_log(request: Request) -> prediction_log_pb2.PredictionLog:
    if isinstance(request, classification_pb2.ClassificationRequest):
        return prediction_log_pb2.PredictionLog(
            classify_log=prediction_log_pb2.ClassifyLog(request=request)
        )
    if isinstance(request, regression_pb2.RegressionRequest):
        return prediction_log_pb2.PredictionLog(
            regress_log=prediction_log_pb2.RegressLog(request=request)
        )
    return prediction_log_pb2.PredictionLog(
        predict_log=prediction_log_pb2.PredictLog(request=request)
    )


def write_warmup_requests(saved_model_dir: str, requests: Sequence[Request]) -> str:
    """Writes ``assets.extra/tf_serving_warmup_requests`` (TFRecord of PredictionLog)."""
    path = os.path.join(saved_model_dir, WARMUP_RELATIVE_PATH)
    tf.io.gfile.makedirs(os.path.dirname(path))
    with tf.io.TFRecordWriter(path) as writer:
        for request in requests:
            writer.write(to_prediction_log(request).SerializeToString())
    return path
