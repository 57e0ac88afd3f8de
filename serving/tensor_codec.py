"""``TensorProto`` <-> numpy with TensorFlow's parsing rules, but without TensorFlow on the path.

Decoding follows ``Tensor::FromProto``: a valid shape (no negative dims, rank <= 254) and a known
dtype; ``tensor_content`` must hold exactly ``num_elements`` values; typed ``*_val`` fields may
hold fewer values than the shape (the last value fills the rest, no values means zeros) or more
(the extra ones are ignored). Anything else is TF Serving's ``tensor parsing error: <alias>``,
as is a tensor too large for any allocation (TF's allocation fails and ``FromProto`` with it).

Before any array is allocated, its size is charged to the request's memory budget
(:mod:`serving.request_limits`): a few bytes can describe a multi-GiB tensor through the fill
rule, and TF Serving would allocate it. Numpy holds at most 32 dimensions (TF 254), and its
zero-size arrays still need the product of their other dimensions to fit in 63 bits; tensors
beyond either are refused with INVALID_ARGUMENT saying so.

Encoding follows ``Tensor::AsProtoField`` (typed fields, the default for responses) or
``AsProtoTensorContent`` (``--enable_serialization_as_tensor_content``). Strings always go to
``string_val``: TF's string ``tensor_content`` is a varint-framed format that Python clients'
``tf.make_ndarray`` cannot read.

Why not ``tf.make_tensor_proto`` / ``tf.make_ndarray``: both dispatch through TF's Python dtype
machinery on every call, and repeated proto fields cost ~100 ns per element when touched from
Python. Here ``tensor_content`` is read with ``np.frombuffer`` (no copy beyond the ``bytes``
protobuf hands out), and fixed-width typed fields (float, double, complex, bool) are moved as
packed wire-format bytes that the C++ protobuf runtime copies at memory speed: 100k floats take
~0.1 ms instead of ~10 ms. Varint fields (ints, half) and strings go through Python lists.
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass

import numpy as np

from serving import protos, request_limits
from serving.errors import Code, ServingError, invalid_argument
from serving.tensor_types import (
    DT_BOOL,
    DT_COMPLEX64,
    DT_COMPLEX128,
    DT_DOUBLE,
    DT_FLOAT,
    DT_HALF,
    DT_INT8,
    DT_INT16,
    DT_INT32,
    DT_INT64,
    DT_STRING,
    DT_UINT8,
    DT_UINT16,
    DT_UINT32,
    DT_UINT64,
    dtype_name,
    numpy_dtype,
    tf_dtype,
)

log = logging.getLogger(__name__)

# serving.protos' class (no TensorFlow); decoding only reads fields, so TensorFlow's own
# TensorProto decodes the same. Encoding fills ``out`` in place, whichever class it is.
TensorProto = protos.TensorProto

_MAX_RANK = 254  # TensorShape::MaxDimensions()
_MAX_ELEMENTS = 2**63 - 1
_NUMPY_MAX_RANK = 32  # NPY_MAXDIMS
_NUMPY_MAX_BYTES = 2**63 - 1  # npy_intp

_WIRE_VARINT = 0
_WIRE_FIXED64 = 1
_WIRE_LENGTH_DELIMITED = 2
_WIRE_FIXED32 = 5
# TensorProto fields that carry no values; any other set field besides the dtype's own value
# field makes the packed-bytes shortcut unsafe (see _packed_payload).
_HEADER_FIELDS = frozenset({"dtype", "tensor_shape", "version_number"})


@dataclass(frozen=True)
class _ValueField:
    """Where a dtype's values live in ``TensorProto`` and how they are laid out on the wire."""

    name: str
    number: int
    # Little-endian element type of the packed payload for fixed-width fields (complex values
    # are (real, imag) pairs, exactly the layout of numpy complex); None for varint/bytes fields.
    packed: np.dtype | None = None
    # Type to collect a varint field into before the (wrapping, like C++) cast to the dtype.
    collect: np.dtype | None = None


def _field(name: str, packed: str | None = None, collect: type | None = None) -> _ValueField:
    return _ValueField(
        name,
        TensorProto.DESCRIPTOR.fields_by_name[name].number,
        None if packed is None else np.dtype(packed),
        None if collect is None else np.dtype(collect),
    )


_INT_VAL = _field("int_val", collect=np.int64)
_VALUE_FIELDS: dict[int, _ValueField] = {
    DT_FLOAT: _field("float_val", packed="<f4"),
    DT_DOUBLE: _field("double_val", packed="<f8"),
    DT_COMPLEX64: _field("scomplex_val", packed="<c8"),
    DT_COMPLEX128: _field("dcomplex_val", packed="<c16"),
    DT_BOOL: _field("bool_val", packed="?"),
    DT_INT8: _INT_VAL,
    DT_INT16: _INT_VAL,
    DT_INT32: _INT_VAL,
    DT_UINT8: _INT_VAL,
    DT_UINT16: _INT_VAL,
    DT_INT64: _field("int64_val", collect=np.int64),
    DT_UINT32: _field("uint32_val", collect=np.uint64),
    DT_UINT64: _field("uint64_val", collect=np.uint64),
    # DT_HALF values are the IEEE bit patterns, one per int32.
    DT_HALF: _field("half_val", collect=np.int64),
    DT_STRING: _field("string_val"),
}


# tensor_content is little-endian whatever the host's byte order.
_LITTLE_ENDIAN: dict[int, np.dtype] = {
    tf_type: numpy_dtype(tf_type).newbyteorder("<") for tf_type in _VALUE_FIELDS
}


class _ParseError(ValueError):
    """Why a TensorProto was rejected; logged, while the client gets TF Serving's short text."""


# ---------------------------------------------------------------------------------- decoding
def decode(tensor: TensorProto, alias: str) -> np.ndarray:
    """The numpy value of a request tensor; INVALID_ARGUMENT ``tensor parsing error: <alias>``
    for what TF rejects, RESOURCE_EXHAUSTED / UNAVAILABLE past the request memory limits."""
    try:
        return _decode(tensor, alias)
    except _ParseError as exc:
        log.debug("Input %s rejected: %s", alias, exc)
        raise invalid_argument(f"tensor parsing error: {alias}") from None


def _decode(tensor: TensorProto, alias: str) -> np.ndarray:
    # Each field read goes through protobuf's Python layer: every one is read once.
    tf_type = tensor.dtype
    shape, count = _shape(tensor)
    try:
        dtype = numpy_dtype(tf_type)
    except KeyError:
        raise _ParseError(f"unsupported dtype {tf_type}") from None
    _check_numpy_limits(shape, count, dtype, alias)
    if count == 0:
        return np.empty(shape, dtype)
    # Read once: every read of a bytes field copies it out of the message (both protobuf
    # runtimes), and this one holds the whole tensor.
    content = tensor.tensor_content
    if content and tf_type != DT_STRING:  # the common case, without the general helpers
        request_limits.charge(
            count * dtype.itemsize, lambda: f"input {alias} ({dtype_name(tf_type)} {list(shape)})"
        )
        if len(content) != count * dtype.itemsize:
            raise _ParseError(
                f"tensor_content has {len(content)} bytes, expected {count * dtype.itemsize}"
            )
        return np.frombuffer(content, _LITTLE_ENDIAN[tf_type]).reshape(shape)
    request_limits.charge(
        _decoded_bytes(tensor, dtype, count, content),
        lambda: f"input {alias} ({dtype_name(tf_type)} {list(shape)})",
    )
    if content:  # strings
        return _decode_string_list(content, count).reshape(shape)
    return _fill(_from_field(tensor, dtype), dtype, count).reshape(shape)


def _check_numpy_limits(shape: tuple[int, ...], count: int, dtype: np.dtype, alias: str) -> None:
    """Shapes TF accepts but numpy cannot hold; a tensor whose bytes overflow 63 bits could
    never be allocated, which TF reports as a parsing error. ``count``: the shape's elements."""
    if len(shape) > _NUMPY_MAX_RANK:
        raise invalid_argument(
            f"Input {alias} has {len(shape)} dimensions: tensors of more than "
            f"{_NUMPY_MAX_RANK} dimensions are not supported"
        )
    # Without a zero dimension the nonzero ones are all of them: their product is ``count``.
    nonzero = (count or math.prod(size for size in shape if size)) * dtype.itemsize
    if nonzero > _NUMPY_MAX_BYTES:
        if 0 in shape:
            raise invalid_argument(
                f"Input {alias} has shape {list(shape)}: an empty tensor whose other "
                "dimensions multiply past 2^63 bytes is not supported"
            )
        raise _ParseError(f"shape {list(shape)} needs more than 2^63 bytes")


def _decoded_bytes(tensor: TensorProto, dtype: np.dtype, count: int, content: bytes) -> int:
    """What decoding allocates, computed from sizes protobuf already knows (no value is read);
    ``content``: the tensor's ``tensor_content``."""
    if tensor.dtype == DT_STRING:
        if content:
            return request_limits.string_bytes(count, len(content))
        values = tensor.string_val
        filled = count - len(values)
        fill_payload = filled * len(values[-1]) if filled > 0 and values else 0
        # ByteSize bounds the present values' bytes without copying them out.
        return request_limits.string_bytes(count, tensor.ByteSize() + fill_payload)
    if content:
        return count * dtype.itemsize
    present = len(getattr(tensor, _VALUE_FIELDS[tensor.dtype].name))
    return count * dtype.itemsize + present * max(dtype.itemsize, 8)


def _shape(tensor: TensorProto) -> tuple[tuple[int, ...], int]:
    """The tensor's dimensions and their product (its number of elements)."""
    # unknown_rank is ignored, as TensorShape (not PartialTensorShape) does.
    dims = tuple([d.size for d in tensor.tensor_shape.dim])
    if len(dims) > _MAX_RANK:
        raise _ParseError(f"rank {len(dims)} exceeds {_MAX_RANK}")
    if dims and min(dims) < 0:
        raise _ParseError(f"negative dimension in shape {list(dims)}")
    count = math.prod(dims)
    if count > _MAX_ELEMENTS:
        raise _ParseError(f"shape {list(dims)} has too many elements")
    return dims, count


def _decode_string_list(content: bytes, count: int) -> np.ndarray:
    """TF's string ``tensor_content``: ``count`` varint32 lengths, then the bytes back to back."""
    sizes = []
    pos = 0
    for _ in range(count):
        size, pos = _read_varint(content, pos)
        sizes.append(size)
    if sum(sizes) != len(content) - pos:
        raise _ParseError("string tensor_content lengths do not match its size")
    values = np.empty(count, dtype=object)
    for i, size in enumerate(sizes):
        values[i] = content[pos : pos + size]
        pos += size
    return values


def _from_field(tensor: TensorProto, dtype: np.dtype) -> np.ndarray:
    """The values present in the dtype's typed field (maybe fewer or more than the shape)."""
    field = _VALUE_FIELDS[tensor.dtype]
    if field.packed is not None:
        payload = _packed_payload(tensor, field)
        if payload is not None:
            usable = len(payload) - len(payload) % field.packed.itemsize  # odd complex half
            return np.frombuffer(payload[:usable], field.packed)
        values = getattr(tensor, field.name)
        if field.packed.kind == "c":  # (real, imag) pairs; a trailing odd value is ignored
            parts = np.array(values, dtype=np.dtype(f"<f{field.packed.itemsize // 2}"))
            return parts[: len(parts) - len(parts) % 2].view(field.packed)
        return np.array(values, dtype=field.packed)
    values = getattr(tensor, field.name)
    if field.collect is None:  # strings
        strings = np.empty(len(values), dtype=object)
        strings[:] = list(values)
        return strings
    collected = np.fromiter(values, dtype=field.collect, count=len(values))
    if tensor.dtype == DT_HALF:
        return collected.astype(np.uint16).view(np.float16)
    return collected.astype(dtype)


def _packed_payload(tensor: TensorProto, field: _ValueField) -> memoryview | None:
    """The packed bytes of ``field``, read from the C++-serialized message.

    Only when no other value field is set: the walk below then visits at most four fields, and
    the C++ serializer writes a repeated scalar field as one packed chunk. Otherwise (a client
    filled unrelated fields, which TF ignores) the caller takes the per-element path.
    """
    if any(
        descriptor.name != field.name and descriptor.name not in _HEADER_FIELDS
        for descriptor, _ in tensor.ListFields()
    ):
        return None
    wire = tensor.SerializeToString()
    view = memoryview(wire)
    pos = 0
    while pos < len(wire):
        key, pos = _read_varint(wire, pos)
        number, wire_type = key >> 3, key & 7
        if wire_type == _WIRE_LENGTH_DELIMITED:
            size, pos = _read_varint(wire, pos)
            if number == field.number:
                return view[pos : pos + size]
            pos += size
        elif wire_type == _WIRE_VARINT:
            _, pos = _read_varint(wire, pos)
        elif wire_type == _WIRE_FIXED32:
            pos += 4
        elif wire_type == _WIRE_FIXED64:
            pos += 8
        else:
            return None
    return memoryview(b"")


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise _ParseError("truncated or overlong varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fill(values: np.ndarray, dtype: np.dtype, count: int) -> np.ndarray:
    """TF's typed-field rule: truncate extra values, repeat the last one, or zeros if none."""
    present = len(values)
    if present >= count:
        return values[:count]
    filled = np.empty(count, dtype)
    if present == 0:
        filled[:] = b"" if dtype.kind == "O" else 0
    else:
        filled[:present] = values
        filled[present:] = values[-1]
    return filled


# ---------------------------------------------------------------------------------- encoding
def encode(
    value: np.ndarray | bytes, tensor_content: bool = False, out: TensorProto | None = None
) -> TensorProto:
    """Serializes a model output into ``out`` (e.g. a response map entry, filled in place)."""
    out = TensorProto() if out is None else out
    array = _as_array(value)
    try:
        out.dtype = tf_dtype(array)
    except KeyError:
        raise ServingError(
            Code.UNIMPLEMENTED, f"Cannot serialize a tensor of numpy dtype {array.dtype}"
        ) from None
    for size in array.shape:
        out.tensor_shape.dim.add().size = size
    if array.size == 0:
        return out
    if tensor_content and out.dtype != DT_STRING:
        out.tensor_content = np.ascontiguousarray(array, array.dtype.newbyteorder("<")).tobytes()
        return out
    field = _VALUE_FIELDS[out.dtype]
    if field.packed is not None:
        payload = np.ascontiguousarray(array, field.packed).tobytes()
        key = field.number << 3 | _WIRE_LENGTH_DELIMITED
        out.MergeFromString(_varint(key) + _varint(len(payload)) + payload)
    elif out.dtype == DT_STRING:
        out.string_val.extend(_as_bytes(v) for v in array.ravel().tolist())
    elif out.dtype == DT_HALF:
        out.half_val.extend(array.view(np.uint16).ravel().tolist())
    else:
        getattr(out, field.name).extend(array.ravel().tolist())
    return out


def encode_bytes(value: np.ndarray | bytes, tensor_content: bool = False) -> bytes:
    """The serialized ``TensorProto`` :func:`encode` fills, written directly for number
    tensors that go as packed or ``tensor_content`` bytes (no message is built, which costs
    more than the values for small tensors); other tensors are built by :func:`encode`."""
    array = _as_array(value)
    tf_type = _DTYPE_BY_NUMPY_FAST.get(array.dtype)
    if tf_type is None or not array.size:  # strings, unknown dtypes: encode() says why
        return encode(array, tensor_content).SerializeToString()
    if tensor_content:
        number = _TENSOR_CONTENT_NUMBER
        payload = np.ascontiguousarray(array, _LITTLE_ENDIAN[tf_type]).tobytes()
    else:
        field = _VALUE_FIELDS[tf_type]
        if field.packed is None:  # varint fields: protobuf encodes them
            return encode(array, tensor_content).SerializeToString()
        number = field.number
        payload = np.ascontiguousarray(array, field.packed).tobytes()
    return b"".join(
        (
            _DTYPE_KEYS[tf_type],
            _shape_bytes(array.shape),
            _varint(number << 3 | _WIRE_LENGTH_DELIMITED),
            _varint(len(payload)),
            payload,
        )
    )


def length_delimited(number: int, payload: bytes) -> bytes:
    """Field ``number`` of a message holding ``payload`` (bytes, a string, a sub-message)."""
    return _varint(number << 3 | _WIRE_LENGTH_DELIMITED) + _varint(len(payload)) + payload


def varint_field(number: int, value: int) -> bytes:
    """Field ``number`` holding the integer ``value`` (int64 two's complement when negative);
    empty for 0, which proto3 does not serialize."""
    if not value:
        return b""
    return _varint(number << 3 | _WIRE_VARINT) + _varint(value & 0xFFFFFFFFFFFFFFFF)


def _as_array(value: np.ndarray | bytes) -> np.ndarray:
    # A TF session returns a scalar string as plain bytes; np.asarray would make it 'S' dtype.
    if isinstance(value, (bytes, str)):
        array = np.empty((), dtype=object)
        array[()] = value
        return array
    return np.asarray(value)


def _as_bytes(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    return bytes(value)


def _varint(value: int) -> bytes:
    if value < 0x80:  # field keys, and the lengths of small responses' parts
        return _ONE_BYTE[value]
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_ONE_BYTE = [bytes((value,)) for value in range(0x80)]
_TENSOR_CONTENT_NUMBER = TensorProto.DESCRIPTOR.fields_by_name["tensor_content"].number
_TENSOR_SHAPE_NUMBER = TensorProto.DESCRIPTOR.fields_by_name["tensor_shape"].number
_DIM_FIELD = TensorProto.DESCRIPTOR.fields_by_name["tensor_shape"].message_type.fields_by_name[
    "dim"
]
_DIM_NUMBER = _DIM_FIELD.number
_DIM_SIZE_NUMBER = _DIM_FIELD.message_type.fields_by_name["size"].number
# Numeric dtypes only: strings (object, bytes and str arrays) take encode().
_DTYPE_BY_NUMPY_FAST: dict[np.dtype, int] = {
    numpy_dtype(tf_type): tf_type for tf_type in _VALUE_FIELDS if tf_type != DT_STRING
}
_DTYPE_KEYS: dict[int, bytes] = {
    tf_type: varint_field(TensorProto.DESCRIPTOR.fields_by_name["dtype"].number, tf_type)
    for tf_type in _VALUE_FIELDS
}


@functools.lru_cache(maxsize=1024)
def _shape_bytes(shape: tuple[int, ...]) -> bytes:
    """The ``tensor_shape`` field :func:`encode` sets: absent for a scalar (no dim added)."""
    if not shape:
        return b""
    dims = b"".join(
        length_delimited(_DIM_NUMBER, varint_field(_DIM_SIZE_NUMBER, size)) for size in shape
    )
    return length_delimited(_TENSOR_SHAPE_NUMBER, dims)
