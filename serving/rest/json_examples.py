"""Classify and regress over REST JSON: ``examples``/``context`` in, ``results`` out.

Each JSON token picks the tf.Example feature list it goes to (decimal -> float_list, integer
or bool -> int64_list, string or ``{"b64": ...}`` -> bytes_list), as TF Serving's
``MakeExampleFromJsonObject`` does; scores and values are written with TF Serving's float text.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

from serving import protos
from serving.errors import invalid_argument
from serving.rest import float_format
from serving.rest.json_b64 import b64_decode, is_b64
from serving.rest.json_body import json_type, value_error

_FEATURE_KINDS = {"bytes_list": "bytes", "float_list": "float", "int64_list": "int64"}


def decode_inference_input(doc: dict, method: str) -> protos.Input:
    """``examples`` (+ optional ``context``) as tf.Examples for classify/regress.

    Each JSON token picks the feature list: decimal -> float_list, integer or bool ->
    int64_list, string or ``{"b64": ...}`` -> bytes_list. ``method`` is "classify" or
    "regress"; upstream's messages say "classify" for both, and so do these.
    """
    del method  # upstream's texts do not depend on it; see the docstring
    request_input = protos.Input()
    has_context = "context" in doc
    if has_context:
        _fill_example(doc["context"], request_input.example_list_with_context.context)
    if "examples" not in doc:
        raise value_error(
            doc, "When method is classify, key 'examples' is expected and was not found"
        )
    examples = doc["examples"]
    if not isinstance(examples, list):
        raise value_error(doc, "Expecting 'examples' value to be an list/array")
    if not examples:
        raise value_error(doc, "'examples' value is an empty array")
    target = (
        request_input.example_list_with_context.examples
        if has_context
        else request_input.example_list.examples
    )
    for example in examples:
        _fill_example(example, target.add())
    return request_input


def _fill_example(value: Any, example: protos.Example) -> None:
    """MakeExampleFromJsonObject: a feature per key, a list value being the feature's values."""
    if not isinstance(value, dict):
        raise invalid_argument(f"Example must be JSON object but got JSON {json_type(value)}")
    for name, content in value.items():
        kind, values = None, []
        for item in content if isinstance(content, list) else (content,):
            kind, item_value = _feature_value(name, item, kind)
            values.append(item_value)
        feature = example.features.feature[name]  # an empty list still creates the feature
        if kind:
            getattr(feature, kind).value.extend(values)


def _feature_value(name: str, item: Any, kind: str | None) -> tuple[str, Any]:
    """AddValueToFeature: the item's list kind and value, checked against earlier items."""
    if item is None or isinstance(item, list) or (isinstance(item, dict) and not is_b64(item)):
        raise invalid_argument(
            f"Feature: {name} has element with unexpected JSON type: {json_type(item)}"
        )
    if isinstance(item, bool):
        return _same_kind(name, kind, "int64_list"), int(item)
    if isinstance(item, dict):
        _same_kind(name, kind, "bytes_list")
        decoded = b64_decode(item["b64"])
        if decoded is None:
            raise invalid_argument("Unable to base64 decode")
        return "bytes_list", decoded
    if isinstance(item, str):
        return _same_kind(name, kind, "bytes_list"), item.encode()
    if isinstance(item, float):
        return _same_kind(name, kind, "float_list"), item
    _same_kind(name, kind, "int64_list")
    if item > 2**63 - 1:
        raise invalid_argument(f"Feature: {name} has uint64_t element. Only int64_t is supported.")
    return "int64_list", item


def _same_kind(name: str, kind: str | None, wanted: str) -> str:
    if kind is not None and kind != wanted:
        raise invalid_argument(
            f"Unexpected element type in feature: {name} expecting type: {_FEATURE_KINDS[kind]}"
        )
    return wanted


def encode_classification(result: protos.ClassificationResult) -> bytes:
    """``{"results": [[[label, score], ...] per example]}``."""
    if not result.classifications:
        raise invalid_argument("Cannot convert empty ClassificationResults to JSON")
    scores = iter(
        float_format.format_floats(
            np.array(
                [c.score for row in result.classifications for c in row.classes],
                dtype=np.float32,
            )
        )
    )
    rows = [
        b"["
        + b",".join(
            b"[" + orjson.dumps(c.label) + b"," + next(scores).encode() + b"]" for c in row.classes
        )
        + b"]"
        for row in result.classifications
    ]
    return b'{"results":[' + b",".join(rows) + b"]}"


def encode_regression(result: protos.RegressionResult) -> bytes:
    """``{"results": [value per example]}``."""
    if not result.regressions:
        raise invalid_argument("Cannot convert empty RegressionResults to JSON")
    values = np.array([r.value for r in result.regressions], dtype=np.float32)
    return b'{"results":' + float_format.json_array(values) + b"}"
