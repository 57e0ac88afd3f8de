"""Predict over REST JSON: request tensors and response documents (json_tensor.cc).

Golden cases come from upstream's json_tensor_test.cc / http_rest_api_handler_test.cc and the
reference notes; expected values are written out independently of the implementation.
"""

import json
import math

import numpy as np
import pytest
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import meta_graph_pb2

from serving.errors import Code, ServingError
from serving.rest import json_tensors
from serving.rest.json_body import parse_json
from serving.rest.json_tensors import decode_predict_inputs, encode_predict_outputs

FLOAT, DOUBLE, INT32, INT64 = (
    types_pb2.DT_FLOAT,
    types_pb2.DT_DOUBLE,
    types_pb2.DT_INT32,
    types_pb2.DT_INT64,
)
STRING, BOOL, UINT8, UINT64 = (
    types_pb2.DT_STRING,
    types_pb2.DT_BOOL,
    types_pb2.DT_UINT8,
    types_pb2.DT_UINT64,
)


def signature(**dtypes):
    result = meta_graph_pb2.SignatureDef()
    for alias, dtype in dtypes.items():
        result.inputs[alias].dtype = dtype
    return result


def decode(body, **dtypes):
    raw = body if isinstance(body, bytes) else body.encode()
    return decode_predict_inputs(parse_json(raw), signature(**dtypes))


def failure(function, *args, **kwargs) -> ServingError:
    with pytest.raises(ServingError) as caught:
        function(*args, **kwargs)
    return caught.value


def as_text(body: bytes):
    """Parse a response keeping every number's exact text (upstream's AllValuesAsStrings)."""
    return json.loads(body, parse_float=str, parse_int=str, parse_constant=str)


def test_row_format_golden():
    tensors, columnar = decode('{"instances": [[1.0, 2.0], [3.0, 4.0]]}', x=FLOAT)
    assert not columnar
    assert tensors["x"].dtype == np.float32
    assert tensors["x"].tolist() == [[1.0, 2.0], [3.0, 4.0]]


def test_dtype_comes_from_signature_not_json():
    assert decode('{"instances": [[1, 2], [3, 4], [5, 6]]}', x=INT32)[0]["x"].dtype == np.int32
    mixed = decode('{"instances": [1, 2.0, 3, 4, 5.003, 0.007, 0.0]}', x=FLOAT)[0]["x"]
    assert mixed.dtype == np.float32
    assert mixed.tolist() == np.array([1, 2, 3, 4, 5.003, 0.007, 0], np.float32).tolist()
    doubles = decode('{"inputs": [1.0, 2, 0.662]}', x=DOUBLE)[0]["x"]
    assert doubles.dtype == np.float64 and doubles.tolist() == [1.0, 2.0, 0.662]


def test_float_precision_loss_and_range():
    assert decode('{"instances": [1435774380]}', x=FLOAT)[0]["x"][0] == np.float32(1435774380)
    extremes = decode(
        '{"instances": [1.79769e+308, -1.79769e+308, 2.22507e-308, -2.22507e-308]}', x=FLOAT
    )[0]["x"]
    assert extremes.tolist() == [math.inf, -math.inf, 0.0, -0.0]
    assert math.copysign(1, extremes[3]) == -1


def test_base64_instances():
    scalars = decode('{"instances": [{"b64": "aGVsbG8="}, {"b64": "d29ybGQ="}]}', x=STRING)[0]
    assert scalars["x"].dtype == object and scalars["x"].tolist() == [b"hello", b"world"]
    lists = decode('{"instances": [[{"b64": "aGVsbG8="}], [{"b64": "d29ybGQ="}]]}', x=STRING)[0]
    assert lists["x"].shape == (2, 1)
    named = decode(
        '{"instances": [{"x": [[{"b64": "aGVsbG8="}], [{"b64": "d29ybGQ="}]]}]}', x=STRING
    )[0]
    assert named["x"].tolist() == [[[b"hello"], [b"world"]]]


def test_multiple_named_tensors_row_format():
    tensors, columnar = decode(
        """{"instances": [
            {"i": [[1, 2], [3, 4], [5, 6]], "s": ["foo", "bar"], "f": [1.0, NaN], "d": [NaN]},
            {"i": [[7, 8], [9, 0], [1, 2]], "s": ["baz", "bat"], "f": [2.0, Infinity],
             "d": [2.0]}
        ]}""",
        i=INT32,
        s=STRING,
        f=FLOAT,
        d=DOUBLE,
    )
    assert not columnar
    assert tensors["i"].dtype == np.int32 and tensors["i"].shape == (2, 3, 2)
    assert tensors["i"].ravel().tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 2]
    assert tensors["s"].tolist() == [[b"foo", b"bar"], [b"baz", b"bat"]]
    assert tensors["f"].dtype == np.float32 and tensors["f"][1].tolist() == [2.0, math.inf]
    assert math.isnan(tensors["f"][0][1]) and math.isnan(tensors["d"][0][0])
    assert tensors["d"].shape == (2, 1)


def test_columnar_format():
    tensors, columnar = decode(
        '{"inputs": {"i": [[[1,2],[3,4],[5,6]]], "s": ["foo", "bar"], '
        '"b": {"b64": "aGVsbG8="}, "ignored": 1}}',
        i=INT32,
        s=STRING,
        b=STRING,
    )
    assert columnar
    assert tensors.keys() == {"i", "s", "b"}
    assert tensors["i"].shape == (1, 3, 2)
    assert tensors["s"].tolist() == [b"foo", b"bar"]
    assert tensors["b"].shape == () and tensors["b"].item() == b"hello"
    plain = decode('{"inputs": [[[1,2],[3,4],[5,6]]]}', i=INT32)[0]["i"]
    assert plain.shape == (1, 3, 2)
    assert decode('{"inputs": 5}', i=INT32)[0]["i"].shape == ()
    assert decode('{"inputs": [[], []]}', i=FLOAT)[0]["i"].shape == (2, 0)


def test_integer_narrowing_and_ranges():
    assert decode('{"inputs": [300, -1]}', x=UINT8)[0]["x"].tolist() == [44, 255]
    assert decode('{"inputs": [18446744073709551615]}', x=UINT64)[0]["x"].tolist() == [2**64 - 1]
    assert decode('{"inputs": [-9223372036854775808]}', x=INT64)[0]["x"].tolist() == [-(2**63)]
    assert decode('{"inputs": [true, false]}', x=BOOL)[0]["x"].tolist() == [True, False]


@pytest.mark.parametrize(
    ("body", "dtypes", "message"),
    [
        (
            '{"instances": [1], "inputs": [1]}',
            {"x": INT32},
            'JSON Value: {\n    "instances": [1],\n    "inputs": [1]\n} Not formatted correctly '
            "expecting only one of 'inputs' or 'instances' keys to exist ",
        ),
        ('{"foo": 1}', {"x": INT32}, "Missing 'inputs' or 'instances' key"),
        (
            '{"instances": {"a": 1}}',
            {"x": INT32},
            'JSON Value: {\n    "instances": {\n        "a": 1\n    }\n} '
            "Expecting 'instances' to be an list/array",
        ),
        (
            '{"instances": []}',
            {"x": INT32},
            "JSON Value: {\n    \"instances\": []\n} No values in 'instances' array",
        ),
        (
            '{"instances": [1, 2]}',
            {"a": INT32, "b": INT32},
            "instances is a plain list, but expecting list of objects as multiple input tensors "
            "required as per tensorinfo_map",
        ),
        (
            '{"instances": [{"a": 1}]}',
            {"a": INT32, "b": INT32},
            "Failed to process element: 0 of 'instances' list. JSON object: "
            '{\n    "a": 1\n} keys must be equal to: a,b',
        ),
        (
            '{"instances": [{"a": 1, "b": 2}, {"a": 1, "c": 2}]}',
            {"a": INT32, "b": INT32},
            "Failed to process element: 1 key: c of 'instances' list. "
            "Error: INVALID_ARGUMENT: JSON object: does not have named input: c",
        ),
        (
            '{"instances": [{"i": [1], "s": ["a"]}, [1, 20, 30]]}',
            {"i": INT32, "s": STRING},
            "Expecting object but got list at item 1 of input list",
        ),
        (
            '{"instances": [["baz", "bar"], {"s": ["baz", "bat"]}]}',
            {"s": STRING},
            "Expecting value/list but got object at item 1 of input list",
        ),
        (
            '{"instances": [[1,2],[3,4],[5,6,7]]}',
            {"x": INT32},
            "Failed to process element: 2 of 'instances' list. "
            "Error: INVALID_ARGUMENT: Expecting tensor size: 2 but got: 3",
        ),
        (
            '{"instances": [[1,2],[3,4],[[5,6]]]}',
            {"x": INT32},
            "Failed to process element: 2 of 'instances' list. "
            "Error: INVALID_ARGUMENT: Expecting shape [2] but got: [1,2]",
        ),
        (
            '{"instances": [1, [1]]}',
            {"x": INT32},
            "Failed to process element: 1 of 'instances' list. "
            "Error: INVALID_ARGUMENT: Expecting shape [] but got: [1]",
        ),
        (
            '{"instances": [{"i": [[1,2]], "s": ["a"]}, {"i": [[[7,8]]], "s": ["b"]}]}',
            {"i": INT32, "s": STRING},
            "Failed to process element: 1 key: i of 'instances' list. "
            "Error: INVALID_ARGUMENT: Expecting shape [1,2] but got: [1,1,2]",
        ),
        (
            '{"instances": [[1,2],["a", "b"]]}',
            {"x": INT32},
            "Failed to process element: 1 of 'instances' list. Error: INVALID_ARGUMENT: "
            'JSON Value: "a" Type: String is not of expected type: int32',
        ),
        (
            '{ "instances": ["x", "y"] }',
            {"x": FLOAT},
            "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: "
            'JSON Value: "x" Type: String is not of expected type: float',
        ),
        (
            '{"instances": [[1, [2]]]}',
            {"x": INT32},
            "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: "
            "Encountered list at unexpected level: 1 expected < 1",
        ),
        (
            '{"inputs": {"a": 1}}',
            {"a": INT32, "b": INT32},
            "Missing named input: b in 'inputs' object.",
        ),
        (
            '{"inputs": [1, 2]}',
            {"a": INT32, "b": INT32},
            "inputs is a plain value/list, but expecting an object as multiple input tensors "
            "required as per tensorinfo_map",
        ),
        (
            '{"inputs": [[1], 2]}',
            {"x": INT32},
            "JSON Value: 2 found at incorrect level: 2 in the JSON DOM. Expected at level: 2",
        ),
        (
            '{"inputs": [[1, 2], [3]]}',
            {"x": INT32},
            "Encountered list at unexpected size: 1 at level: 1 expected size: 2",
        ),
        (
            '{"inputs": [1, 0]}',
            {"x": BOOL},
            "JSON Value: 1 Type: Number is not of expected type: bool",
        ),
        (
            '{"inputs": [2.0]}',
            {"x": INT32},
            "JSON Value: 2.0 Type: Number is not of expected type: int32",
        ),
        (
            '{"inputs": [2147483648]}',
            {"x": INT32},
            "JSON Value: 2147483648 Type: Number is not of expected type: int32",
        ),
        (
            '{"inputs": [18446744073709551615]}',
            {"x": INT64},
            "JSON Value: 18446744073709551615 Type: Number is not of expected type: int64",
        ),
        (
            '{"inputs": [-1]}',
            {"x": types_pb2.DT_UINT32},
            "JSON Value: -1 Type: Number is not of expected type: uint32",
        ),
        (
            '{"inputs": [true]}',
            {"x": FLOAT},
            "JSON Value: true Type: True is not of expected type: float",
        ),
        (
            '{"inputs": [null]}',
            {"x": DOUBLE},
            "JSON Value: null Type: Null is not of expected type: double",
        ),
        (
            '{"inputs": [{"x": 1.5}]}',
            {"x": FLOAT},
            'JSON Value: {\n    "x": 1.5\n} Type: Object is not of expected type: float',
        ),
        (
            '{"inputs": [{"b64": "aGVsbG8=", "extra": 1}]}',
            {"x": STRING},
            'JSON Value: {\n    "b64": "aGVsbG8=",\n    "extra": 1\n} '
            "not formatted correctly for base64 data",
        ),
        ('{"inputs": [{"b64": "!!!!"}]}', {"x": STRING}, "Unable to base64 decode"),
        ('{"inputs": [{"b64": "aGVsbG8=="}]}', {"x": STRING}, "Unable to base64 decode"),
        ('{"inputs": [{"b64": "a"}]}', {"x": STRING}, "Unable to base64 decode"),
        (
            '{"inputs": [7]}',
            {"x": STRING},
            "JSON Value: 7 Type: Number is not of expected type: string",
        ),
    ],
)
def test_predict_request_errors(body, dtypes, message):
    error = failure(decode, body, **dtypes)
    assert (error.code, error.message) == (Code.INVALID_ARGUMENT, message)


def test_absl_base64_leniency():
    tensors, _ = decode(
        '{"inputs": [{"b64": "aGVsbG8"}, {"b64": "aGV sbG8=\\n"}, {"b64": "aGVsbG8."}]}', x=STRING
    )
    assert tensors["x"].tolist() == [b"hello", b"hello", b"hello"]


def test_unsupported_dtype_is_unimplemented():
    error = failure(decode, '{"inputs": [1.5]}', x=types_pb2.DT_HALF)
    assert (error.code, error.message) == (
        Code.UNIMPLEMENTED,
        "Conversion of JSON Value: 1.5 to type: half",
    )
    # Row format wraps every element error as INVALID_ARGUMENT, as AddInstanceItem's caller does.
    error = failure(decode, '{"instances": [1.5]}', x=types_pb2.DT_BFLOAT16)
    assert (error.code, error.message) == (
        Code.INVALID_ARGUMENT,
        "Failed to process element: 0 of 'instances' list. "
        "Error: UNIMPLEMENTED: Conversion of JSON Value: 1.5 to type: bfloat16",
    )
    # No values, nothing to convert: an empty tensor, as upstream.
    empty = decode('{"inputs": [[]]}', x=types_pb2.DT_HALF)[0]["x"]
    assert empty.dtype == np.float16 and empty.shape == (1, 0)


def test_empty_input_map():
    error = failure(decode_predict_inputs, {"instances": [1]}, meta_graph_pb2.SignatureDef())
    assert error.message == "Failed to get input map for signature: DEFAULT"
    error = failure(
        decode_predict_inputs, {"signature_name": "get_counter"}, meta_graph_pb2.SignatureDef()
    )
    assert error.message == "Failed to get input map for signature: get_counter"


def test_rank_beyond_numpy_is_rejected():
    error = failure(decode, '{"inputs": ' + "[" * 33 + "1" + "]" * 33 + "}", x=INT32)
    assert error.code == Code.INVALID_ARGUMENT
    assert "more than 32 dimensions" in error.message


def test_long_dumps_are_cut_after_256_bytes():
    doc = parse_json(('{"instances": ' + json.dumps(list(range(1000))) + ', "inputs": 1}').encode())
    message = failure(decode_predict_inputs, doc, signature(x=INT32)).message
    dump = message.removeprefix("JSON Value: ").split(" Not formatted correctly")[0]
    assert dump.startswith('{\n    "instances": [0, 1, 2, 3')
    assert 256 <= len(dump.encode()) < 256 + len(", 999")  # the limit is checked per token
    assert not dump.endswith("]")


def test_fast_and_exact_paths_build_identical_tensors():
    rng = np.random.default_rng(7)
    cases = [
        (rng.standard_normal((4, 3, 2)).tolist(), FLOAT),
        (rng.integers(-(2**40), 2**40, (5, 2)).tolist(), INT64),
        (rng.integers(-300, 300, 6).tolist(), types_pb2.DT_INT8),
        ([["a", {"b64": "aGVsbG8="}], ["é", ""]], STRING),
        ([[True, False]], BOOL),
        ([[], []], DOUBLE),
        (3.5, DOUBLE),
        ([rng.standard_normal(5).tolist()], FLOAT),  # one row: its list is the leaves
        ([[0.0, 1, 0.5, -0.0, 1.0]], FLOAT),  # 0 and 1 that are numbers, not booleans
        ([[0, 1, -(2**31), 2**31 - 1]], INT32),
        ([0, 1, 2**64 - 1], UINT64),
        ([[1e300, -1e300, 2]], FLOAT),  # beyond float32: +-inf
    ]
    for value, dtype in cases:
        fast = json_tensors._fast_tensor(value, dtype, "x")
        exact = json_tensors._exact_tensor(value, dtype, 32, "x")
        assert fast is not None
        assert fast.dtype == exact.dtype and fast.shape == exact.shape
        assert fast.tolist() == exact.tolist()
        assert fast.flags.writeable  # never a view of the packed bytes


@pytest.mark.parametrize(
    ("value", "dtype"),
    [
        ([[0.5, True]], FLOAT),  # struct would read true as 1.0
        ([False, 2.5], DOUBLE),
        ([[2, True]], INT32),
        ([0, 1, False], INT64),
        ([1.5, "2"], FLOAT),
        ([1.5, None], DOUBLE),
        ([1.5, [2.0]], FLOAT),
        ([1.5, {"b64": "AA=="}], FLOAT),
        ([1, 2.0], INT64),  # a float for an integer dtype
        ([2**31], INT32),
        ([-(2**31) - 1], INT32),
        ([2**63], INT64),
        ([-1], UINT64),
        ([-1], types_pb2.DT_UINT32),
        ([2**32], types_pb2.DT_UINT32),
    ],
)
def test_fast_path_leaves_invalid_numbers_to_the_exact_walk(value, dtype):
    """The exact walk raises upstream's error for these; the bulk conversion must not accept
    them (it would turn a boolean into 1, or wrap an integer)."""
    assert json_tensors._fast_tensor(value, dtype, "x") is None
    with pytest.raises(ServingError):
        json_tensors._exact_tensor(value, dtype, 32, "x")


# ------------------------------------------------------------------------ predict encode


def test_single_int_tensor_both_formats():
    tensor = np.array([[[1, 2], [3, 4], [5, 6]], [[7, 8], [9, 0], [1, 2]]], dtype=np.int32)
    expected = [[[1, 2], [3, 4], [5, 6]], [[7, 8], [9, 0], [1, 2]]]
    assert json.loads(encode_predict_outputs({"t": tensor}, columnar=False)) == {
        "predictions": expected
    }
    assert json.loads(encode_predict_outputs({"t": tensor}, columnar=True)) == {"outputs": expected}
    vector = np.arange(1, 6, dtype=np.int32)
    assert json.loads(encode_predict_outputs({"t": vector}, False)) == {
        "predictions": [1, 2, 3, 4, 5]
    }


def test_half_plus_two_response_text():
    body = encode_predict_outputs({"y": np.array([2.5, 3.0, 4.5], dtype=np.float32)}, False)
    assert as_text(body) == {"predictions": ["2.5", "3.0", "4.5"]}


def test_bytes_outputs_are_base64():
    tensor = np.array([[b"hello", b"world"], [b"tf", b"serving"]], dtype=object)
    assert json.loads(encode_predict_outputs({"str_tensor_bytes": tensor}, False)) == {
        "predictions": [
            [{"b64": "aGVsbG8="}, {"b64": "d29ybGQ="}],
            [{"b64": "dGY="}, {"b64": "c2VydmluZw=="}],
        ]
    }


def test_multiple_named_outputs_both_formats():
    outputs = {
        "double_scalar_tensor": np.array([8.0, 9.0]),
        "float_tensor": np.array([[1.0], [2.0]], dtype=np.float32),
        "int_tensor": np.array([[[1, 2], [3, 4], [5, 6]], [[7, 8], [9, 0], [1, 2]]], np.int32),
        "str_tensor": np.array([[b"foo", b"bar"], [b"baz", b"bat"]], dtype=object),
        "str_tensor_bytes": np.array([[b"hello", b"world"], [b"tf", b"serving"]], dtype=object),
    }
    assert json.loads(encode_predict_outputs(outputs, False)) == {
        "predictions": [
            {
                "double_scalar_tensor": 8.0,
                "float_tensor": [1.0],
                "int_tensor": [[1, 2], [3, 4], [5, 6]],
                "str_tensor": ["foo", "bar"],
                "str_tensor_bytes": [{"b64": "aGVsbG8="}, {"b64": "d29ybGQ="}],
            },
            {
                "double_scalar_tensor": 9.0,
                "float_tensor": [2.0],
                "int_tensor": [[7, 8], [9, 0], [1, 2]],
                "str_tensor": ["baz", "bat"],
                "str_tensor_bytes": [{"b64": "dGY="}, {"b64": "c2VydmluZw=="}],
            },
        ]
    }
    assert json.loads(encode_predict_outputs(outputs, True)) == {
        "outputs": {
            "double_scalar_tensor": [8.0, 9.0],
            "float_tensor": [[1.0], [2.0]],
            "int_tensor": [[[1, 2], [3, 4], [5, 6]], [[7, 8], [9, 0], [1, 2]]],
            "str_tensor": [["foo", "bar"], ["baz", "bat"]],
            "str_tensor_bytes": [
                [{"b64": "aGVsbG8="}, {"b64": "d29ybGQ="}],
                [{"b64": "dGY="}, {"b64": "c2VydmluZw=="}],
            ],
        }
    }


def test_float_text_in_responses():
    six_digits = np.array([[9000000, 999999, 0.5], [0.0003, 0.00003, 555557.5]], np.float32)
    assert as_text(encode_predict_outputs({"f": six_digits}, False)) == {
        "predictions": [["9e+06", "999999.0", "0.5"], ["0.0003", "3e-05", "555557.5"]]
    }
    non_finite = np.array([[np.nan, np.inf], [3, -np.inf]], np.float32)
    assert as_text(encode_predict_outputs({"f": non_finite}, False)) == {
        "predictions": [["NaN", "Infinity"], ["3.0", "-Infinity"]]
    }
    thirds = {"f": np.array([1 / 3], np.float32), "d": np.array([1 / 3])}
    assert as_text(encode_predict_outputs(thirds, True)) == {
        "outputs": {"f": ["0.333333343"], "d": ["0.33333333333333331"]}
    }


def test_scalar_columnar_output_and_json_types():
    assert as_text(encode_predict_outputs({"c": np.float32(2.0)}, True)) == {"outputs": "2.0"}
    outputs = {
        "i64": np.array([2**62, -(2**63)], np.int64),
        "u64": np.array([2**64 - 1, 0], np.uint64),
        "flag": np.array([True, False]),
    }
    assert json.loads(encode_predict_outputs(outputs, False)) == {
        "predictions": [
            {"i64": 2**62, "u64": 2**64 - 1, "flag": True},
            {"i64": -(2**63), "u64": 0, "flag": False},
        ]
    }


def test_text_outputs_replace_invalid_utf8():
    body = encode_predict_outputs({"s": np.array([b"caf\xc3\xa9", b"\xff"], dtype=object)}, True)
    assert json.loads(body) == {"outputs": ["café", "\ufffd"]}


def test_zero_batch_outputs():
    empty_ints = np.zeros((0, 2), np.int32)
    assert json.loads(encode_predict_outputs({"t": empty_ints}, False)) == {"predictions": []}
    outputs = {"s": np.zeros((0, 1, 2), object), "f": np.zeros((0, 3, 4), np.float32)}
    assert json.loads(encode_predict_outputs(outputs, False)) == {"predictions": []}


@pytest.mark.parametrize(
    ("outputs", "columnar", "message"),
    [
        ({}, False, "Cannot convert empty tensor map to JSON"),
        (
            {"tensor": np.array([1 + 2j, 3j], np.complex64)},
            False,
            "Failed to write JSON value for tensor type: complex64",
        ),
        (
            {"tensor": np.array([1.5], np.float16)},
            True,
            "Failed to write JSON value for tensor type: half",
        ),
        ({"tensor": np.int32(1)}, False, "Tensor name: tensor has no shape information "),
        (
            {"a": np.zeros((2, 3), np.int32), "b": np.zeros((1, 3), object)},
            False,
            "Tensor name: b has inconsistent batch size: 1 expecting: 2",
        ),
        (
            {"a": np.zeros((0, 2), np.int32), "b": np.zeros((1, 2), object)},
            False,
            "Tensor name: b has inconsistent batch size: 1 expecting: 0",
        ),
    ],
)
def test_predict_response_errors(outputs, columnar, message):
    error = failure(encode_predict_outputs, outputs, columnar)
    assert (error.code, error.message) == (Code.INVALID_ARGUMENT, message)
