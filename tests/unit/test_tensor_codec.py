"""TensorProto codec against TensorFlow itself as the oracle.

``tf.make_tensor_proto`` / ``tf.make_ndarray`` check the wire format both ways, and
``tf.io.parse_tensor`` runs TF's C++ ``Tensor::FromProto``, the very parser TF Serving feeds
requests through, so the typed-field rules (fill with the last value, ignore extras, zeros when
empty) are checked against the real thing rather than against our reading of it.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import predict_pb2

from serving import tensor_codec
from serving.errors import Code, ServingError

_NUMERIC = [
    np.float32,
    np.float64,
    np.float16,
    np.int8,
    np.int16,
    np.int32,
    np.int64,
    np.uint8,
    np.uint16,
    np.uint32,
    np.uint64,
    np.complex64,
    np.complex128,
]
_SHAPES = [(), (0,), (3,), (2, 3), (4, 0, 2), (1000,)]


def _sample(dtype: type, shape: tuple[int, ...]) -> np.ndarray:
    """Values that exercise each type's range: negatives, extremes, fractions."""
    count = int(np.prod(shape))
    if dtype is bool:
        return (np.arange(count) % 3 == 0).reshape(shape)
    if dtype is object:
        values = np.empty(count, dtype=object)
        values[:] = [f"s{i}\x00\xff".encode("latin-1") * (i % 3) for i in range(count)]
        return values.reshape(shape)
    info = np.iinfo(dtype) if np.issubdtype(dtype, np.integer) else None
    if info is not None:
        pool = np.array([info.min, info.max, 0, 1, info.max // 3], dtype=dtype)
        return np.resize(pool, count).reshape(shape)
    values = np.linspace(-3.5, 1e3, count) if count else np.zeros(0)
    if np.issubdtype(dtype, np.complexfloating):
        values = values + 1j * values[::-1]
    return values.astype(dtype).reshape(shape)


def _same(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.shape == expected.shape
    assert actual.dtype == expected.dtype
    assert actual.tolist() == expected.tolist()


def _parsed_by_tf(proto: tensor_pb2.TensorProto, dtype) -> np.ndarray:
    """What TF's C++ parser makes of ``proto``."""
    return tf.io.parse_tensor(proto.SerializeToString(), tf.as_dtype(dtype)).numpy()


def _typed(dtype: int, field: str, values: list, shape: tuple[int, ...]) -> tensor_pb2.TensorProto:
    proto = tensor_pb2.TensorProto(dtype=dtype)
    getattr(proto, field).extend(values)
    for size in shape:
        proto.tensor_shape.dim.add().size = size
    return proto


# ------------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("dtype", [*_NUMERIC, bool, object], ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape", _SHAPES, ids=str)
@pytest.mark.parametrize("tensor_content", [False, True], ids=["typed", "content"])
def test_encode_is_read_back_by_tf(dtype, shape, tensor_content):
    array = _sample(dtype, shape)
    proto = tensor_codec.encode(array, tensor_content=tensor_content)
    _same(tf.make_ndarray(proto), array)
    _same(tensor_codec.decode(proto, "x"), array)


@pytest.mark.parametrize("dtype", [*_NUMERIC, bool, object], ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape", _SHAPES, ids=str)
def test_decode_reads_tf_encoding(dtype, shape):
    array = _sample(dtype, shape)
    _same(tensor_codec.decode(tf.make_tensor_proto(array), "x"), array)


@pytest.mark.parametrize("dtype", [*_NUMERIC, bool], ids=lambda d: np.dtype(d).name)
def test_typed_fields_by_default_and_tensor_content_on_request(dtype):
    array = _sample(dtype, (2, 3))
    typed = tensor_codec.encode(array)
    assert not typed.tensor_content
    assert len(typed.ListFields()) == 3  # dtype, tensor_shape and the one value field
    content = tensor_codec.encode(array, tensor_content=True)
    assert content.tensor_content == array.tobytes()


def test_float_outputs_use_float_val_like_tf_serving():
    proto = tensor_codec.encode(np.array([3.0], dtype=np.float32))
    assert proto.dtype == types_pb2.DT_FLOAT
    assert list(proto.float_val) == [3.0]
    assert [d.size for d in proto.tensor_shape.dim] == [1]


def test_half_is_carried_as_bit_patterns():
    proto = tensor_codec.encode(np.array([1.0, -2.5], dtype=np.float16))
    assert list(proto.half_val) == np.array([1.0, -2.5], np.float16).view(np.uint16).tolist()


def test_strings_stay_in_string_val_even_with_tensor_content():
    array = np.array([b"a", b"\x00b"], dtype=object)
    proto = tensor_codec.encode(array, tensor_content=True)
    assert not proto.tensor_content
    assert list(proto.string_val) == [b"a", b"\x00b"]


def test_scalar_and_unicode_strings_are_encoded_as_bytes():
    # A TF session returns a scalar string output as plain bytes.
    scalar = tensor_codec.encode(b"abc")
    assert (scalar.dtype, list(scalar.string_val), len(scalar.tensor_shape.dim)) == (
        types_pb2.DT_STRING,
        [b"abc"],
        0,
    )
    assert list(tensor_codec.encode(np.array(["é", "x"])).string_val) == ["é".encode(), b"x"]


def test_encode_fills_a_response_map_entry_in_place():
    response = predict_pb2.PredictResponse()
    tensor_codec.encode(np.arange(4, dtype=np.float32), out=response.outputs["y"])
    parsed = predict_pb2.PredictResponse.FromString(response.SerializeToString())
    _same(tf.make_ndarray(parsed.outputs["y"]), np.arange(4, dtype=np.float32))


@pytest.mark.parametrize("dtype", [*_NUMERIC, bool, object], ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape", _SHAPES, ids=str)
@pytest.mark.parametrize("tensor_content", [False, True], ids=["typed", "content"])
def test_encode_bytes_are_the_bytes_of_the_encoded_message(dtype, shape, tensor_content):
    array = _sample(dtype, shape)
    data = tensor_codec.encode_bytes(array, tensor_content)
    assert data == tensor_codec.encode(array, tensor_content).SerializeToString()
    _same(tf.make_ndarray(tensor_pb2.TensorProto.FromString(data)), array)


@pytest.mark.parametrize(
    "value",
    [
        np.arange(12, dtype=np.float32).reshape(3, 4).T,  # not contiguous
        np.float32(2.5),  # a numpy scalar, not an array
        b"plain bytes",  # a TF session's scalar string
    ],
    ids=["transposed", "numpy_scalar", "bytes_scalar"],
)
@pytest.mark.parametrize("tensor_content", [False, True], ids=["typed", "content"])
def test_encode_bytes_of_unusual_values_match_encode(value, tensor_content):
    data = tensor_codec.encode_bytes(value, tensor_content)
    assert data == tensor_codec.encode(value, tensor_content).SerializeToString()


@pytest.mark.parametrize(
    "value",
    [np.array(["2020-01-01"], dtype="datetime64[D]"), np.arange(6, dtype=">f8")],
    ids=["datetime", "big_endian"],
)
def test_encode_bytes_refuse_what_encode_refuses(value):
    with pytest.raises(ServingError) as expected:
        tensor_codec.encode(value)
    with pytest.raises(ServingError) as err:
        tensor_codec.encode_bytes(value)
    assert (err.value.code, err.value.message) == (expected.value.code, expected.value.message)
    assert err.value.code == Code.UNIMPLEMENTED


def test_encode_rejects_types_without_a_tensorflow_dtype():
    with pytest.raises(ServingError) as err:
        tensor_codec.encode(np.array(["2020-01-01"], dtype="datetime64[D]"))
    assert err.value.code == Code.UNIMPLEMENTED


def test_tensor_content_is_decoded_without_copying():
    proto = tf.make_tensor_proto(np.arange(12, dtype=np.float32).reshape(3, 4))
    decoded = tensor_codec.decode(proto, "x")
    assert not decoded.flags.owndata


class _CountingReads:
    """A TensorProto that counts reads of ``tensor_content`` (each read copies the bytes out
    of the message)."""

    def __init__(self, proto) -> None:
        self._proto = proto
        self.content_reads = 0

    def __getattr__(self, name):
        if name == "tensor_content":
            self.content_reads += 1
        return getattr(self._proto, name)


@pytest.mark.parametrize("dtype", [np.float32, np.bytes_])
def test_tensor_content_is_read_out_of_the_message_once(dtype):
    values = np.array([b"a", b"bc"]) if dtype is np.bytes_ else np.arange(6, dtype=dtype)
    tensor = _CountingReads(tf.make_tensor_proto(values))
    if dtype is np.bytes_:  # TF's own encoder puts strings in string_val: frame them instead
        tensor._proto.string_val[:] = []
        tensor._proto.tensor_content = b"\x01\x02abc"
    tensor_codec.decode(tensor, "x")
    assert tensor.content_reads == 1


def test_string_tensor_content_varint_framing():
    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, tensor_content=b"\x01\x02abc")
    proto.tensor_shape.dim.add().size = 2
    _same(tensor_codec.decode(proto, "x"), _parsed_by_tf(proto, tf.string).astype(object))


# ------------------------------------------------------------------ typed fields vs TF's parser
_TYPED_CASES = [
    (types_pb2.DT_FLOAT, "float_val", [1.5, -2.0, 3.25]),
    (types_pb2.DT_DOUBLE, "double_val", [1e300, -2.0, 0.1]),
    (types_pb2.DT_INT32, "int_val", [-(2**31), 7, 2**31 - 1]),
    (types_pb2.DT_INT16, "int_val", [-5, 40000, 7]),  # 40000 wraps, as C++'s cast does
    (types_pb2.DT_INT8, "int_val", [300, -129, 1]),
    (types_pb2.DT_UINT8, "int_val", [255, -1, 256]),
    (types_pb2.DT_UINT16, "int_val", [65535, 70000, -1]),
    (types_pb2.DT_INT64, "int64_val", [-(2**63), 2**63 - 1, 0]),
    (types_pb2.DT_UINT32, "uint32_val", [2**32 - 1, 0, 5]),
    (types_pb2.DT_UINT64, "uint64_val", [2**64 - 1, 0, 5]),
    (types_pb2.DT_BOOL, "bool_val", [True, False, True]),
    (types_pb2.DT_HALF, "half_val", [15360, 49152, 31744]),  # 1.0, -2.0, inf
    (types_pb2.DT_COMPLEX64, "scomplex_val", [1.0, 2.0, -3.0, 4.0, 9.0]),  # odd: 9.0 ignored
    (types_pb2.DT_COMPLEX128, "dcomplex_val", [1.0, 2.0, -3.0, 4.0]),
    (types_pb2.DT_STRING, "string_val", [b"a", b"", b"\xff"]),
]


@pytest.mark.parametrize(("dtype", "field", "values"), _TYPED_CASES, ids=lambda c: str(c))
@pytest.mark.parametrize("count", [0, 1, 2, 3], ids=lambda n: f"{n}values")
@pytest.mark.parametrize("shape", [(), (1,), (2, 3), (0, 4)], ids=str)
def test_typed_fields_follow_tf_fill_rules(dtype, field, values, count, shape):
    """Fewer values than elements: the last repeats (none: zeros); more: the rest is ignored."""
    per_element = 2 if "complex" in field else 1
    proto = _typed(dtype, field, values[: count * per_element], shape)
    tf_dtype = tf.dtypes.as_dtype(dtype)
    expected = _parsed_by_tf(proto, tf_dtype)
    if dtype == types_pb2.DT_STRING:  # TF gives a scalar string as plain bytes
        expected = np.array(expected, dtype=object)
    _same(tensor_codec.decode(proto, "x"), expected)


@pytest.mark.parametrize(
    ("dtype", "field", "values"),
    [c for c in _TYPED_CASES if c[1] in ("float_val", "double_val", "bool_val", "scomplex_val")],
    ids=lambda c: str(c),
)
def test_per_element_path_matches_packed_path(dtype, field, values):
    """An unrelated value field (TF ignores it) disables the packed-bytes shortcut."""
    proto = _typed(dtype, field, values, (4,))
    fast = tensor_codec.decode(proto, "x")
    proto.string_val.append(b"ignored")
    _same(tensor_codec.decode(proto, "x"), fast)
    _same(fast, _parsed_by_tf(proto, tf.dtypes.as_dtype(dtype)))


def test_single_value_fills_a_large_shape():
    proto = _typed(types_pb2.DT_FLOAT, "float_val", [2.0], (100, 10))
    decoded = tensor_codec.decode(proto, "x")
    _same(decoded, np.full((100, 10), 2.0, dtype=np.float32))


# ----------------------------------------------------------------------------------- errors
def _content(dtype: int, content: bytes, shape: tuple[int, ...]) -> tensor_pb2.TensorProto:
    proto = tensor_pb2.TensorProto(dtype=dtype, tensor_content=content)
    for size in shape:
        proto.tensor_shape.dim.add().size = size
    return proto


_BAD = {
    "content_too_short": _content(types_pb2.DT_FLOAT, b"\x00" * 8, (3,)),
    "content_too_long": _content(types_pb2.DT_FLOAT, b"\x00" * 16, (3,)),
    "negative_dim": _typed(types_pb2.DT_FLOAT, "float_val", [1.0], (-1,)),
    "rank_255": _typed(types_pb2.DT_FLOAT, "float_val", [1.0], (1,) * 255),
    "too_many_elements": _typed(types_pb2.DT_FLOAT, "float_val", [1.0], (2**40, 2**40)),
    # Elements fit int64, bytes do not: TF's allocation fails and FromProto with it.
    "bytes_beyond_2_63": _typed(types_pb2.DT_FLOAT, "float_val", [1.0], (2**62,)),
    "dtype_unset": _typed(types_pb2.DT_INVALID, "float_val", [1.0], (1,)),
    "dtype_bfloat16": _typed(types_pb2.DT_BFLOAT16, "half_val", [1], (1,)),
    "dtype_resource": _typed(types_pb2.DT_RESOURCE, "float_val", [1.0], (1,)),
    "string_content_truncated": _content(types_pb2.DT_STRING, b"\x05ab", (1,)),
    "string_content_trailing": _content(types_pb2.DT_STRING, b"\x01abc", (1,)),
    "string_content_bad_varint": _content(types_pb2.DT_STRING, b"\xff", (1,)),
}


@pytest.mark.parametrize("name", sorted(_BAD))
def test_unparsable_tensors_are_invalid_argument(name):
    with pytest.raises(ServingError) as err:
        tensor_codec.decode(_BAD[name], "my_input")
    assert err.value.code == Code.INVALID_ARGUMENT
    assert err.value.message == "tensor parsing error: my_input"


@pytest.mark.parametrize("name", ["content_too_short", "negative_dim", "string_content_trailing"])
def test_tf_rejects_the_same_tensors(name):
    with pytest.raises(tf.errors.InvalidArgumentError):
        tf.io.parse_tensor(_BAD[name].SerializeToString(), tf.as_dtype(_BAD[name].dtype))


def test_unknown_rank_flag_is_ignored_like_tf():
    proto = _typed(types_pb2.DT_FLOAT, "float_val", [4.0], ())
    proto.tensor_shape.unknown_rank = True
    _same(tensor_codec.decode(proto, "x"), _parsed_by_tf(proto, tf.float32))
