"""Predict over REST JSON: request tensors from the document, response document from tensors.

TF Serving's ``util/json_tensor.cc`` semantics: row (``instances``/``predictions``) and
columnar (``inputs``/``outputs``) formats, dtypes taken from the signature (never from the
JSON tokens), ``{"b64": ...}`` strings in and out (outputs named ``*_bytes``), TF Serving's
float text, and upstream's error messages.

Decoding runs on the event loop, so tensors are checked and built in bulk: numbers are read
by one ``struct`` call that refuses anything else, strings and booleans by type sets; only a
request that fails those checks is walked value by value, in upstream's order, to find the
first error. Float outputs are written by the vectorised :mod:`serving.rest.float_format`.

Timings for a 1000x100 float32 tensor on the shared 2-core CI box (best of 15, load ~3):
``parse_json`` + :func:`decode_predict_inputs` 9 ms for a body orjson reads (53 ms for one
with a ``NaN`` token, which the stdlib parser reads); :func:`encode_predict_outputs` 21 ms,
row or columnar. (The codec before the split: 9 / 103 / 20 ms.) Reading numbers with
``struct`` rather than type sets and ``np.array`` took a one-row 784-float request's decoding
from 55 to 24 us, and the 1000x100 tensor's from 14 to 11 ms (same box, load ~2).

Deliberate differences from upstream (corner cases): tensors are limited to numpy's 32
dimensions (TF allows 254), and string outputs that are not valid UTF-8 are written with
U+FFFD replacements, because raw bytes (upstream) would make the whole response unparsable
for most clients.
"""

from __future__ import annotations

import struct
from itertools import chain
from typing import Any

import numpy as np
import orjson

from serving import request_limits
from serving.errors import ServingError, invalid_argument, unimplemented
from serving.rest import float_format
from serving.rest.json_b64 import b64_decode, b64_object, is_b64
from serving.rest.json_body import debug_text, json_type, signature_name_of, value_error
from serving.servables.signatures import SignatureDef, signature_info
from serving.tensor_types import (
    DT_BOOL,
    DT_DOUBLE,
    DT_FLOAT,
    DT_INT8,
    DT_INT16,
    DT_INT32,
    DT_INT64,
    DT_STRING,
    DT_UINT8,
    DT_UINT32,
    DT_UINT64,
    dtype_name,
    numpy_dtype,
    tf_dtype,
)

# ------------------------------------------------------------------------ predict request

# numpy's dimension limit (NPY_MAXDIMS); TF Serving would accept up to 254.
_MAX_RANK = 32
_FLOATS = frozenset([DT_FLOAT, DT_DOUBLE])
_NARROW_FLOAT_MAX = {np.dtype(t): float(np.finfo(t).max) for t in (np.float32, np.float16)}
# JSON integer range each dtype accepts (rapidjson IsInt / IsInt64 / IsUint / IsUint64).
# int8/int16/uint8 go through TensorProto.int_val upstream: any int32 is accepted and narrowed.
_INT_RANGES = {
    DT_INT8: (-(2**31), 2**31 - 1),
    DT_INT16: (-(2**31), 2**31 - 1),
    DT_INT32: (-(2**31), 2**31 - 1),
    DT_UINT8: (-(2**31), 2**31 - 1),
    DT_INT64: (-(2**63), 2**63 - 1),
    DT_UINT32: (0, 2**32 - 1),
    DT_UINT64: (0, 2**64 - 1),
}


def decode_predict_inputs(doc: dict, signature: SignatureDef) -> tuple[dict[str, np.ndarray], bool]:
    """Input tensors by alias and whether the request was columnar (``inputs``).

    The dtypes come from the signature, never from the JSON tokens. Shapes are not checked
    against the signature (TF Serving feeds whatever shape the request has).
    """
    # Sorted by alias: the order the key-set message lists names in (a std::set upstream).
    dtypes = signature_info(signature).input_dtypes
    if not dtypes:
        name = signature_name_of(doc) or "DEFAULT"
        raise invalid_argument(f"Failed to get input map for signature: {name}")
    if "instances" in doc:
        if "inputs" in doc:
            raise value_error(
                doc,
                "Not formatted correctly expecting only one of 'inputs' or 'instances' "
                "keys to exist ",
            )
        return _decode_instances(doc, dtypes), False
    if "inputs" in doc:
        return _decode_inputs(doc["inputs"], dtypes), True
    raise invalid_argument("Missing 'inputs' or 'instances' key")


def _decode_instances(doc: dict, dtypes: dict[str, int]) -> dict[str, np.ndarray]:
    """Row format: one list element per batch item, batched along a new dimension 0."""
    instances = doc["instances"]
    if not isinstance(instances, list):
        raise value_error(doc, "Expecting 'instances' to be an list/array")
    if not instances:
        raise value_error(doc, "No values in 'instances' array")
    if not isinstance(instances[0], dict) and len(dtypes) > 1:
        raise invalid_argument(
            "instances is a plain list, but expecting list of objects as multiple input "
            "tensors required as per tensorinfo_map"
        )
    named = _is_named_object(instances[0])
    tensors = _fast_rows(instances, dtypes, named)
    if tensors is not None:
        return tensors
    if named:
        return _exact_named_rows(instances, dtypes)
    return _exact_plain_rows(instances, dtypes)


def _is_named_object(value: Any) -> bool:
    return isinstance(value, dict) and not is_b64(value)


def _fast_rows(
    instances: list, dtypes: dict[str, int], named: bool
) -> dict[str, np.ndarray] | None:
    """Whole columns at once when every row is well-formed; None sends us to the exact walk."""
    if named:
        names = dtypes.keys()
        if not all(_is_named_object(row) and row.keys() == names for row in instances):
            return None
        columns = {alias: [row[alias] for row in instances] for alias in dtypes}
    else:
        if dict in set(map(type, instances)) and any(map(_is_named_object, instances)):
            return None
        columns = {next(iter(dtypes)): instances}
    tensors = {}
    for alias, column in columns.items():
        tensor = _fast_tensor(column, dtypes[alias], alias)
        if tensor is None:
            return None
        tensors[alias] = tensor
    return tensors


class _RowBatcher:
    """AddInstanceItem: per-row tensors of one input must all match the first row's shape."""

    def __init__(self, dtypes: dict[str, int]) -> None:
        self._dtypes = dtypes
        self.rows: dict[str, list[np.ndarray]] = {}

    def add(self, name: str, item: Any) -> None:
        if name not in self._dtypes:
            raise invalid_argument(f"JSON object: does not have named input: {name}")
        tensor = _exact_tensor(item, self._dtypes[name], _MAX_RANK - 1, name)
        rows = self.rows.setdefault(name, [])
        if rows and rows[0].size != tensor.size:
            raise invalid_argument(f"Expecting tensor size: {rows[0].size} but got: {tensor.size}")
        if rows and rows[0].shape != tensor.shape:
            raise invalid_argument(
                f"Expecting shape {_shape_text(rows[0].shape)} but got: {_shape_text(tensor.shape)}"
            )
        rows.append(tensor)

    def tensors(self) -> dict[str, np.ndarray]:
        for name, rows in self.rows.items():
            request_limits.charge(
                sum(row.nbytes for row in rows), lambda name=name: f"input {name} (batched)"
            )
        return {name: np.stack(rows) for name, rows in self.rows.items()}


def _exact_named_rows(instances: list, dtypes: dict[str, int]) -> dict[str, np.ndarray]:
    batcher = _RowBatcher(dtypes)
    names = set(dtypes)
    for index, row in enumerate(instances):
        if not _is_named_object(row):
            raise invalid_argument(f"Expecting object but got list at item {index} of input list")
        for name, item in row.items():
            try:
                batcher.add(name, item)
            except ServingError as error:
                raise invalid_argument(
                    f"Failed to process element: {index} key: {name} of 'instances' list. "
                    f"Error: {_nested_error(error)}"
                ) from error
        if row.keys() != names:
            raise invalid_argument(
                f"Failed to process element: {index} of 'instances' list. JSON object: "
                f"{debug_text(row)} keys must be equal to: {','.join(dtypes)}"
            )
    return batcher.tensors()


def _nested_error(error: ServingError) -> str:
    """absl::Status::ToString() of a wrapped status: ``CODE: message``."""
    return f"{error.code.name}: {error.message}"


def _exact_plain_rows(instances: list, dtypes: dict[str, int]) -> dict[str, np.ndarray]:
    batcher = _RowBatcher(dtypes)
    name = next(iter(dtypes))
    for index, row in enumerate(instances):
        if _is_named_object(row):
            raise invalid_argument(
                f"Expecting value/list but got object at item {index} of input list"
            )
        try:
            batcher.add(name, row)
        except ServingError as error:
            raise invalid_argument(
                f"Failed to process element: {index} of 'instances' list. "
                f"Error: {_nested_error(error)}"
            ) from error
    return batcher.tensors()


def _decode_inputs(value: Any, dtypes: dict[str, int]) -> dict[str, np.ndarray]:
    """Columnar format: each input is a whole tensor of any shape; extra keys are ignored."""
    if not isinstance(value, dict) or is_b64(value):
        if len(dtypes) > 1:
            raise invalid_argument(
                "inputs is a plain value/list, but expecting an object as multiple input "
                "tensors required as per tensorinfo_map"
            )
        alias = next(iter(dtypes))
        return {alias: _tensor(value, dtypes[alias], alias)}
    tensors = {}
    for alias, dtype in dtypes.items():
        if alias not in value:
            raise invalid_argument(f"Missing named input: {alias} in 'inputs' object.")
        tensors[alias] = _tensor(value[alias], dtype, alias)
    return tensors


def _tensor(value: Any, dtype: int, alias: str) -> np.ndarray:
    tensor = _fast_tensor(value, dtype, alias)
    return _exact_tensor(value, dtype, _MAX_RANK, alias) if tensor is None else tensor


def _dense_shape(value: Any, max_rank: int) -> list[int]:
    """GetDenseTensorShape: list lengths found by descending into element 0."""
    shape = []
    while isinstance(value, list):
        if len(shape) == max_rank:
            raise invalid_argument(
                f"JSON lists nested deeper than {max_rank} levels: tensors of more than "
                f"{_MAX_RANK} dimensions are not supported"
            )
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return shape


def _fast_tensor(value: Any, dtype: int, alias: str) -> np.ndarray | None:
    """Bulk conversion of a well-formed dense value; None if anything needs a closer look."""
    shape = _dense_shape(value, _MAX_RANK)
    leaves: list = [value]
    for size in shape:
        if set(map(type, leaves)) != {list} or set(map(len, leaves)) != {size}:
            return None
        # One list (a single row, the usual online request) is its own flat list of leaves.
        leaves = leaves[0] if len(leaves) == 1 else list(chain.from_iterable(leaves))
    values = _checked_leaves(leaves, dtype)
    return None if values is None else _to_array(values, shape, dtype, alias)


def _checked_leaves(leaves: list, dtype: int) -> list | np.ndarray | None:
    """The leaves ready for numpy if all are valid for ``dtype`` (AddValueToTensor rules)."""
    if dtype in _FLOATS or dtype in _INT_RANGES:
        return _checked_numbers(leaves, dtype)
    kinds = set(map(type, leaves))
    if dtype == DT_BOOL:
        return leaves if kinds <= {bool} else None
    if dtype == DT_STRING and kinds <= {str, dict}:
        values = [leaf.encode() if type(leaf) is str else _b64_or_none(leaf) for leaf in leaves]
        return None if None in values else values
    return None


# struct codes that read JSON numbers in C: doubles for the float dtypes (ints are taken,
# as upstream's IsNumber), 64-bit integers otherwise (floats are refused, as upstream's IsInt).
_PACK_CODES = {DT_FLOAT: "d", DT_DOUBLE: "d", DT_UINT64: "Q"}
_PACKED_DTYPES = {"d": np.dtype(np.float64), "q": np.dtype(np.int64), "Q": np.dtype(np.uint64)}


def _checked_numbers(leaves: list, dtype: int) -> np.ndarray | None:
    """The leaves as float64/int64/uint64 if all are valid numbers for ``dtype``.

    ``struct`` converts the whole list in C, refusing what is no number (strings, null,
    lists, objects), floats for integer codes and integers out of 64-bit range: several times
    faster than checking each leaf's type and then building the array. It takes ``true`` and
    ``false`` as 1 and 0, which upstream refuses for numbers, so the leaves' types are looked
    at when any value is 0 or 1. The packed bytes (8 per value) exist before :func:`_to_array`
    charges the tensor: fewer than the parsed document's number objects, which
    :func:`serving.rest.json_body.parse_json` charged.
    """
    code = _PACK_CODES.get(dtype, "q")
    try:
        packed = struct.pack(f"{len(leaves)}{code}", *leaves)
    except struct.error:
        return None
    values = np.frombuffer(packed, _PACKED_DTYPES[code])
    if np.count_nonzero((values == 0) | (values == 1)) and bool in set(map(type, leaves)):
        return None
    if dtype in _INT_RANGES and values.size:
        low, high = _INT_RANGES[dtype]
        if values.min() < low or values.max() > high:
            return None
    return values


def _b64_or_none(value: Any) -> bytes | None:
    return b64_decode(value["b64"]) if is_b64(value) else None


def _exact_tensor(value: Any, dtype: int, max_rank: int, alias: str) -> np.ndarray:
    """FillTensorProto: walks the value in upstream's order and raises its first error."""
    shape = _dense_shape(value, max_rank)
    values: list = []
    _collect(value, 0, shape, dtype, values)
    try:
        return _to_array(values, shape, dtype, alias)
    except KeyError:  # no values at all of a dtype numpy cannot hold (e.g. bfloat16)
        raise unimplemented(
            f"Conversion of JSON Value: {debug_text(value)} to type: {dtype_name(dtype)}"
        ) from None


def _collect(value: Any, level: int, shape: list[int], dtype: int, out: list) -> None:
    rank = len(shape)
    if not isinstance(value, list):
        if level != rank:
            raise invalid_argument(
                f"JSON Value: {debug_text(value)} found at incorrect level: {level + 1} "
                f"in the JSON DOM. Expected at level: {rank}"
            )
        out.append(_scalar_value(value, dtype))
        return
    if level >= rank:
        raise invalid_argument(f"Encountered list at unexpected level: {level} expected < {rank}")
    if len(value) != shape[level]:
        raise invalid_argument(
            f"Encountered list at unexpected size: {len(value)} at level: {level} "
            f"expected size: {shape[level]}"
        )
    for item in value:
        _collect(item, level + 1, shape, dtype, out)


def _scalar_value(value: Any, dtype: int) -> Any:
    """AddValueToTensor (objects: base64 for strings, a type error otherwise)."""
    if isinstance(value, dict):
        if dtype == DT_STRING:
            return _decode_b64_object(value)
        raise _type_error(value, dtype)
    if dtype in _FLOATS:
        valid = type(value) in (int, float)
    elif dtype in _INT_RANGES:
        low, high = _INT_RANGES[dtype]
        valid = type(value) is int and low <= value <= high
    elif dtype == DT_BOOL:
        valid = type(value) is bool
    elif dtype == DT_STRING:
        valid = type(value) is str
        value = value.encode() if valid else value
    else:
        raise unimplemented(
            f"Conversion of JSON Value: {debug_text(value)} to type: {dtype_name(dtype)}"
        )
    if not valid:
        raise _type_error(value, dtype)
    return value


def _decode_b64_object(value: Any) -> bytes:
    if not is_b64(value):
        raise value_error(value, "not formatted correctly for base64 data")
    decoded = b64_decode(value["b64"])
    if decoded is None:
        raise invalid_argument("Unable to base64 decode")
    return decoded


def _type_error(value: Any, dtype: int) -> ServingError:
    return invalid_argument(
        f"JSON Value: {debug_text(value)} Type: {json_type(value)} "
        f"is not of expected type: {dtype_name(dtype)}"
    )


def _to_array(values: list | np.ndarray, shape: list[int], dtype: int, alias: str) -> np.ndarray:
    """Validated leaf values -> the tensor's numpy array (raises KeyError for unknown dtypes).

    Its memory is charged to the request first: JSON numbers are small, but a body of ``0,``
    becomes 8-byte values (plus the conversion's temporaries), and the request may be near
    its limit already.
    """
    target = numpy_dtype(dtype)
    if dtype == DT_STRING:
        cost = request_limits.string_bytes(len(values), sum(map(len, values)))
    else:
        cost = request_limits.number_bytes(len(values), target.itemsize)
    request_limits.charge(cost, lambda: f"input {alias} ({dtype_name(dtype)} {shape})")
    if dtype == DT_STRING:
        array = np.empty(len(values), dtype=object)
        array[:] = values
    elif dtype in _INT_RANGES:
        # Narrowing wraps like the C++ int_val -> int8/uint8/int16 conversion does.
        array = np.asarray(values, dtype=np.uint64 if dtype == DT_UINT64 else np.int64)
        array = array.astype(target)
    elif target in _NARROW_FLOAT_MAX:
        # Doubles beyond float32/half become +-inf, as upstream. np.errstate costs more than
        # the whole conversion of a typical row, so it is entered only when a value overflows.
        array = np.asarray(values, dtype=np.float64)
        if array.size and np.abs(array).max() > _NARROW_FLOAT_MAX[target]:
            with np.errstate(over="ignore"):
                array = array.astype(target)
        else:
            array = array.astype(target)
    else:
        array = np.array(values, dtype=target)
    return array.reshape(shape)


def _shape_text(shape: tuple[int, ...]) -> str:
    return "[" + ",".join(map(str, shape)) + "]"


# ----------------------------------------------------------------------- predict response


def encode_predict_outputs(outputs: dict[str, np.ndarray], columnar: bool) -> bytes:
    """``{"outputs": ...}`` (columnar) or ``{"predictions": ...}`` (row) for the request format.

    A single output is written without its name. Row format needs every output batched along
    dimension 0 with the same size. Keys keep the order of ``outputs``.
    """
    if not outputs:
        raise invalid_argument("Cannot convert empty tensor map to JSON")
    arrays = {alias: np.asarray(value) for alias, value in outputs.items()}
    if columnar:
        return b'{"outputs":' + _columnar_json(arrays) + b"}"
    return b'{"predictions":' + _row_json(arrays) + b"}"


def _columnar_json(arrays: dict[str, np.ndarray]) -> bytes:
    if len(arrays) == 1:
        return _tensor_json(*next(iter(arrays.items())))
    members = [orjson.dumps(alias) + b":" + _tensor_json(alias, a) for alias, a in arrays.items()]
    return b"{" + b",".join(members) + b"}"


def _row_json(arrays: dict[str, np.ndarray]) -> bytes:
    batch = None
    for alias, array in arrays.items():
        if array.ndim == 0:
            raise invalid_argument(f"Tensor name: {alias} has no shape information ")
        if batch is not None and array.shape[0] != batch:
            raise invalid_argument(
                f"Tensor name: {alias} has inconsistent batch size: {array.shape[0]} "
                f"expecting: {batch}"
            )
        batch = array.shape[0]
    if len(arrays) == 1:
        return _tensor_json(*next(iter(arrays.items())))
    columns = [(orjson.dumps(alias) + b":", _row_texts(alias, a)) for alias, a in arrays.items()]
    objects = [
        b"{" + b",".join(key + texts[row] for key, texts in columns) + b"}" for row in range(batch)
    ]
    return b"[" + b",".join(objects) + b"]"


def _tensor_json(alias: str, array: np.ndarray) -> bytes:
    """A whole tensor as nested JSON lists (a bare value for rank 0)."""
    if array.dtype in (np.float32, np.float64):
        return float_format.json_array(array)
    return orjson.dumps(_plain_values(alias, array))


def _row_texts(alias: str, array: np.ndarray) -> list[bytes]:
    """JSON text of ``array[i]`` for each batch row."""
    if array.dtype in (np.float32, np.float64):
        return float_format.json_rows(array)
    return [orjson.dumps(row) for row in _plain_values(alias, array)]


def _plain_values(alias: str, array: np.ndarray) -> Any:
    """Nested Python values for the non-float dtypes JSON can hold."""
    kind = array.dtype.kind
    if kind in "biu" or array.size == 0:
        return array.tolist()  # ints stay JSON integers (int64 too), bools true/false
    if kind not in "OSU":
        raise invalid_argument(f"Failed to write JSON value for tensor type: {_dtype_label(array)}")
    # DT_STRING: outputs named *_bytes are binary and travel as {"b64": ...}.
    to_json = b64_object if alias.endswith("_bytes") else _text_value
    flat = np.empty(array.size, dtype=object)
    flat[:] = [to_json(value) for value in array.ravel().tolist()]
    return flat.reshape(array.shape).tolist()


def _text_value(value: bytes | str) -> str:
    return value if isinstance(value, str) else bytes(value).decode("utf-8", "replace")


def _dtype_label(array: np.ndarray) -> str:
    """TF's name for the dtype in messages (``half``), numpy's when TF has none."""
    try:
        return dtype_name(tf_dtype(array))
    except KeyError:
        return array.dtype.name
