"""REST JSON codec against TF Serving's json_tensor.cc behaviour and messages.

Golden cases come from upstream's json_tensor_test.cc / http_rest_api_handler_test.cc and the
reference notes; expected values are written out independently of the implementation.
"""

import json
import math

import numpy as np
import pytest
from google.protobuf import text_format
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import classification_pb2, input_pb2, regression_pb2

from serving.errors import Code, ServingError
from serving.rest import json_codec
from serving.rest.json_codec import (
    decode_inference_input,
    decode_predict_inputs,
    encode_classification,
    encode_error,
    encode_predict_outputs,
    encode_regression,
    parse_json,
    signature_name_of,
)

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


# ------------------------------------------------------------------------------- parsing


def test_empty_body():
    error = failure(parse_json, b"")
    assert (error.code, error.message) == (
        Code.INVALID_ARGUMENT,
        "JSON Parse error: The document is empty",
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"   ", "The document is empty. at offset: 3"),
        (b"instances = [1, 2]", "Invalid value. at offset: 0"),
        (b"]", "The document is empty. at offset: 0"),
        (b'{"a": [1, 2, ]}', "Invalid value. at offset: 13"),
        (b'{"a": [1, 2}', "Missing a comma or ']' after an array element. at offset: 11"),
        (b'{"a" [1]}', "Missing a colon after a name of object member. at offset: 5"),
        (b'{"a": 1, }', "Missing a name for object member. at offset: 9"),
        (b'{"a": 1 "b": 2}', "Missing a comma or '}' after an object member. at offset: 8"),
        (b'{"a": [[1]]]}', "Missing a comma or '}' after an object member. at offset: 11"),
        (b'{"a": [01]}', "Missing a comma or ']' after an array element. at offset: 8"),
        (b'{"a": [1.]}', "Miss fraction part in number. at offset: 9"),
        (b'{"a": [1e+]}', "Miss exponent in number. at offset: 10"),
        (b'{"a": [-]}', "Invalid value. at offset: 8"),
        (b'{"a": [1, 1e400]}', "Number too big to be stored in double. at offset: 10"),
        (b'{"a": -1e400}', "Number too big to be stored in double. at offset: 6"),
        (b'{"a": [Infinit]}', "Invalid value. at offset: 14"),
        (b'{"a": [Nan]}', "Invalid value. at offset: 9"),
        (b'{"a": tru}', "Invalid value. at offset: 9"),
        (b'{"a": "x\\q"}', "Invalid escape character in string. at offset: 8"),
        (b'{"a": "x\\u12G4"}', "Incorrect hex digit after \\u escape in string. at offset: 8"),
        (b'{"a": "\\ud800x"}', "The surrogate pair in string is invalid. at offset: 7"),
        (b'{"a": "\\udc00"}', "The surrogate pair in string is invalid. at offset: 7"),
        (b'{"a": "abc', "Missing a closing quotation mark in string. at offset: 10"),
        (b'{"a": "a\nb"}', "Invalid escape character in string. at offset: 8"),
        (b'{"a": 1', "Missing a comma or '}' after an object member. at offset: 7"),
        (b'{"a": 1\x00}', "Missing a comma or '}' after an object member. at offset: 7"),
    ],
)
def test_parse_errors_use_rapidjson_messages_and_offsets(body, message):
    error = failure(parse_json, body)
    assert (error.code, error.message) == (Code.INVALID_ARGUMENT, f"JSON Parse error: {message}")


@pytest.mark.parametrize(
    ("body", "dump"),
    [(b"[1, 2.5, -0.0, 1e21, 1e-7]", "[1, 2.5, -0.0, 1e21, 1e-7]"), (b'"x"', '"x"'), (b"7", "7")],
)
def test_top_level_must_be_an_object(body, dump):
    assert failure(parse_json, body).message == f"JSON Value: {dump} Is not object"


@pytest.mark.parametrize(
    ("suffix", "reader"),
    [
        (b"}", True),  # orjson
        (b"} trailing", True),  # orjson refuses trailing data: stdlib
        (b', "nan": NaN}', False),  # stdlib (the exact reader is disabled to prove it)
        (b', "inf": Inf}', True),  # exact reader
        (b', "deep": ' + b"[" * 2000 + b"]" * 2000 + b"}", True),  # exact reader
    ],
    ids=["orjson", "trailing", "stdlib", "inf-token", "deep"],
)
def test_numbers_keep_int_float_distinction_on_every_parser_path(suffix, reader, monkeypatch):
    if not reader:
        monkeypatch.setattr(json_codec, "_RapidJsonReader", None)
    doc = parse_json(
        b'{"i": 2, "f": 2.0, "e": 2e0, "neg": -0, "i64": -9223372036854775808' + suffix
    )
    assert [type(doc[key]) for key in ("i", "f", "e", "neg", "i64")] == [
        int,
        float,
        float,
        int,
        int,
    ]
    assert doc["i64"] == -(2**63)


@pytest.mark.parametrize("suffix", [b"}", b', "inf": Inf}'], ids=["orjson", "exact"])
def test_integers_beyond_64_bits_become_doubles(suffix):
    doc = parse_json(
        b'{"u64": 18446744073709551615, "big": 18446744073709551616, '
        b'"small": -9223372036854775809' + suffix
    )
    assert doc["u64"] == 2**64 - 1 and type(doc["u64"]) is int
    assert doc["big"] == 2.0**64 and type(doc["big"]) is float
    assert doc["small"] == -(2.0**63) and type(doc["small"]) is float


def test_nan_and_infinity_tokens():
    doc = parse_json(b'{"v": [NaN, -NaN, Infinity, -Infinity, Inf, -Inf, 1]}')
    values = doc["v"]
    assert math.isnan(values[0]) and math.isnan(values[1])
    assert values[2:] == [math.inf, -math.inf, math.inf, -math.inf, 1]


def test_trailing_data_nul_and_bom():
    assert parse_json(b'{"a": 1} {"b": 2}') == {"a": 1}
    assert parse_json(b'{"a": [1, Inf]}]]]') == {"a": [1, math.inf]}
    assert parse_json(b'{"a": "x"}\x00{') == {"a": "x"}
    assert parse_json(b'\xef\xbb\xbf{"a": 1}') == {"a": 1}


def test_invalid_utf8_in_strings_reaches_the_tensor_bytes():
    tensors, _ = decode(b'{"inputs": ["\xff\xfeok", "\\u00e9\\ud83d\\ude00"]}', x=STRING)
    assert tensors["x"].tolist() == [b"\xff\xfeok", "é😀".encode()]


def test_deeply_nested_well_formed_document_is_accepted():
    body = b'{"instances": [1], "nested": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    tensors, columnar = decode(body, default=INT32)
    assert tensors["default"].tolist() == [1] and not columnar


def test_deeply_nested_signature_name_error_is_truncated_like_upstream():
    doc = parse_json(b'{"signature_name": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")
    dump = '{\n    "signature_name": [' + "[" * 231  # writing stops once 256 bytes are out
    assert len(dump.encode()) == 256
    assert failure(signature_name_of, doc).message == (
        f"JSON Value: {dump} not formatted correctly. 'signature_name' key must be a string value."
    )


# ------------------------------------------------------------------------ signature name


def test_signature_name():
    assert signature_name_of({}) == ""
    assert signature_name_of({"signature_name": "predict_images"}) == "predict_images"
    error = failure(signature_name_of, parse_json(b'{ "signature_name": 100 }'))
    assert (error.code, error.message) == (
        Code.INVALID_ARGUMENT,
        'JSON Value: {\n    "signature_name": 100\n} not formatted correctly. '
        "'signature_name' key must be a string value.",
    )


# ------------------------------------------------------------------------ predict decode


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
    ]
    for value, dtype in cases:
        fast = json_codec._fast_tensor(value, dtype)
        exact = json_codec._exact_tensor(value, dtype, 32)
        assert fast is not None
        assert fast.dtype == exact.dtype and fast.shape == exact.shape
        assert fast.tolist() == exact.tolist()


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


# ------------------------------------------------------------------------ classify/regress


def parse_input(text: str) -> input_pb2.Input:
    return text_format.Parse(text, input_pb2.Input())


def test_examples_without_context():
    doc = parse_json(
        b"""{"examples": [
            {"names": ["foo", "bar"], "ratings": [8.0, 9.0], "age": 20},
            {"names": ["baz"], "ratings": 6.0, "empty": []}
        ]}"""
    )
    expected = parse_input(
        """
        example_list {
          examples { features {
            feature { key: "names" value { bytes_list { value: "foo" value: "bar" } } }
            feature { key: "ratings" value { float_list { value: 8.0 value: 9.0 } } }
            feature { key: "age" value { int64_list { value: 20 } } }
          } }
          examples { features {
            feature { key: "names" value { bytes_list { value: "baz" } } }
            feature { key: "ratings" value { float_list { value: 6.0 } } }
            feature { key: "empty" value { } }
          } }
        }"""
    )
    for method in ("classify", "regress"):
        assert decode_inference_input(doc, method) == expected


def test_examples_with_context_non_finite_base64_and_bools():
    doc = parse_json(
        b"""{
          "signature_name": "custom_signature",
          "context": {"query": "pizza", "location": ["sfo"]},
          "examples": [
            {"names": ["foo", "bar"], "ratings": [8.0, 9.0, NaN, Infinity], "age": 20},
            {"names": ["baz", {"b64": "aGVsbG8="}], "ratings": 6.0, "intboolmix": [1, true, false]},
            {"names": "bar", "ratings": -Infinity}
          ]
        }"""
    )
    expected = parse_input(
        """
        example_list_with_context {
          context { features {
            feature { key: "query" value { bytes_list { value: "pizza" } } }
            feature { key: "location" value { bytes_list { value: "sfo" } } }
          } }
          examples { features {
            feature { key: "names" value { bytes_list { value: "foo" value: "bar" } } }
            feature { key: "ratings" value { float_list { value: [8, 9, nan, inf] } } }
            feature { key: "age" value { int64_list { value: 20 } } }
          } }
          examples { features {
            feature { key: "names" value { bytes_list { value: "baz" value: "hello" } } }
            feature { key: "ratings" value { float_list { value: 6.0 } } }
            feature { key: "intboolmix" value { int64_list { value: [1, 1, 0] } } }
          } }
          examples { features {
            feature { key: "names" value { bytes_list { value: "bar" } } }
            feature { key: "ratings" value { float_list { value: -inf } } }
          } }
        }"""
    )
    decoded = decode_inference_input(doc, "classify")
    # NaN != NaN, so compare the canonical text form.
    assert text_format.MessageToString(decoded) == text_format.MessageToString(expected)
    assert signature_name_of(doc) == "custom_signature"


def test_integer_tokens_make_int64_features_and_decimals_float_features():
    doc = parse_json(b'{"examples": [{"x": 2}, {"x": 2.0}, {"x": 1e2}]}')
    examples = decode_inference_input(doc, "regress").example_list.examples
    assert list(examples[0].features.feature["x"].int64_list.value) == [2]
    assert list(examples[1].features.feature["x"].float_list.value) == [2.0]
    assert list(examples[2].features.feature["x"].float_list.value) == [100.0]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            '{"context": [{"names": ["foo", "bar"]}]}',
            "Example must be JSON object but got JSON Array",
        ),
        (
            '{"examples": {"names": ["foo", "bar"]}}',
            'JSON Value: {\n    "examples": {\n        "names": ["foo", "bar"]\n    }\n} '
            "Expecting 'examples' value to be an list/array",
        ),
        ('{"examples": [[{"names": ["foo"]}]]}', "Example must be JSON object but got JSON Array"),
        (
            '{"examples": [{"names": [10, null]}]}',
            "Feature: names has element with unexpected JSON type: Null",
        ),
        (
            '{"examples": [{"names": [10, 10.0]}]}',
            "Unexpected element type in feature: names expecting type: int64",
        ),
        (
            '{"examples": [{"names": ["a", true]}]}',
            "Unexpected element type in feature: names expecting type: bytes",
        ),
        (
            '{"examples": [{"names": [1.5, {"b64": "aGVsbG8="}]}]}',
            "Unexpected element type in feature: names expecting type: float",
        ),
        (
            '{"examples": [{"names": [10, {"test": 10}]}]}',
            "Feature: names has element with unexpected JSON type: Object",
        ),
        (
            '{"examples": [{"names": [[10], 20]}]}',
            "Feature: names has element with unexpected JSON type: Array",
        ),
        (
            '{"examples": [{"names": [20, 18446744073709551603]}]}',
            "Feature: names has uint64_t element. Only int64_t is supported.",
        ),
        ('{"examples": [{"names": {"b64": "!"}}]}', "Unable to base64 decode"),
        (
            '{"context": {}}',
            'JSON Value: {\n    "context": {}\n} '
            "When method is classify, key 'examples' is expected and was not found",
        ),
        (
            '{"examples": []}',
            "JSON Value: {\n    \"examples\": []\n} 'examples' value is an empty array",
        ),
    ],
)
@pytest.mark.parametrize("method", ["classify", "regress"])
def test_classify_regress_request_errors(body, message, method):
    error = failure(decode_inference_input, parse_json(body.encode()), method)
    assert (error.code, error.message) == (Code.INVALID_ARGUMENT, message)


def test_classification_response():
    result = text_format.Parse(
        """
        classifications {
          classes { label: "car" score: 0.2 } classes { label: "bike" score: 0.7 }
          classes { label: "bus" score: 0.1 }
        }
        classifications {
          classes { label: "car" score: 0.7 } classes { label: "bike" score: 0.1 }
          classes { label: "bus" score: 0.2 }
        }""",
        classification_pb2.ClassificationResult(),
    )
    assert json.loads(encode_classification(result)) == {
        "results": [
            [["car", 0.2], ["bike", 0.7], ["bus", 0.1]],
            [["car", 0.7], ["bike", 0.1], ["bus", 0.2]],
        ]
    }
    scores_only = text_format.Parse(
        "classifications { classes { score: 12 } }", classification_pb2.ClassificationResult()
    )
    assert as_text(encode_classification(scores_only)) == {"results": [[["", "12.0"]]]}


def test_regression_response():
    result = text_format.Parse(
        "regressions { value: 0.2 } regressions { value: 0.9 } regressions { value: 1.0 }",
        regression_pb2.RegressionResult(),
    )
    assert json.loads(encode_regression(result)) == {"results": [0.2, 0.9, 1.0]}
    non_finite = text_format.Parse(
        "regressions { value: 0.2 } regressions { value: inf } regressions { value: 1.0 } "
        "regressions { value: -inf } regressions { value: nan }",
        regression_pb2.RegressionResult(),
    )
    assert as_text(encode_regression(non_finite)) == {
        "results": ["0.2", "Infinity", "1.0", "-Infinity", "NaN"]
    }


def test_empty_results_are_errors():
    error = failure(encode_classification, classification_pb2.ClassificationResult())
    assert error.message == "Cannot convert empty ClassificationResults to JSON"
    error = failure(encode_regression, regression_pb2.RegressionResult())
    assert error.message == "Cannot convert empty RegressionResults to JSON"


def test_error_body():
    assert json.loads(encode_error('Bad key: "key"')) == {"error": 'Bad key: "key"'}
    assert json.loads(encode_error("Bad key: 'key'")) == {"error": "Bad key: 'key'"}
    assert json.loads(encode_error("bytes \udcff here")) == {"error": "bytes ? here"}
