"""REST request bodies: TF Serving's JSON dialect, parse errors, value dumps and error bodies.

Golden cases come from upstream's json_tensor_test.cc / http_rest_api_handler_test.cc and the
reference notes; expected values are written out independently of the implementation.
"""

import json
import math
import re

import pytest

from serving.errors import Code, ServingError
from serving.rest.json_body import debug_text, encode_error, parse_json, signature_name_of


def failure(function, *args, **kwargs) -> ServingError:
    with pytest.raises(ServingError) as caught:
        function(*args, **kwargs)
    return caught.value


def parse_error(body: bytes) -> str:
    error = failure(parse_json, body)
    assert error.code == Code.INVALID_ARGUMENT
    return error.message


def test_empty_body():
    error = failure(parse_json, b"")
    assert (error.code, error.message) == (
        Code.INVALID_ARGUMENT,
        "JSON Parse error: The document is empty",
    )
    assert parse_error(b" \n\t") == "JSON Parse error: The document is empty at offset: 3"


@pytest.mark.parametrize(
    ("body", "offset"),
    [
        (b"{not json", 1),
        (b"instances = [1, 2]", 0),
        (b"]", 0),
        (b'{"a": [1, 2, ]}', 13),
        (b'{"a": [1, 2}', 11),
        (b'{"a" [1]}', 5),
        (b'{"a": 1', 7),
        (b'{"a": "abc', 6),
        (b'{"a": [Infinit]}', 7),
    ],
)
def test_bad_json_is_a_parse_error_with_the_offset(body, offset):
    assert re.fullmatch(rf"JSON Parse error: \S.* at offset: {offset}", parse_error(body))


@pytest.mark.parametrize(
    "body",
    [b"[" * 500_000, b"[" * 100_000 + b"]" * 100_000, b'{"a": ' + b"[" * 5000 + b"]" * 5000 + b"}"],
    ids=["unclosed", "array", "member"],
)
def test_absurd_nesting_is_a_parse_error(body):
    assert parse_error(body).startswith("JSON Parse error: ")


def test_moderate_nesting_is_fine_on_both_parser_paths():
    nested = b"[" * 500 + b"]" * 500
    assert (
        parse_json(b'{"a": ' + nested + b"}")["a"]
        == parse_json(b'{"nan": NaN, "a": ' + nested + b"}")["a"]
    )


def test_invalid_utf8_is_a_parse_error():
    assert (
        parse_error(b'{"a": "\xff\xfeok"}')
        == "JSON Parse error: Invalid UTF-8 encoding at offset: 7"
    )
    assert parse_error(b"\xff\xfe").startswith("JSON Parse error: ")


def test_lone_surrogate_escapes_are_parse_errors():
    for body in (b'{"a": "\\ud800x"}', b'{"a": "\\udc00"}', b'{"a": ["\\udc00", NaN]}'):
        assert parse_error(body).startswith("JSON Parse error: ")
    # A pair is one character, on either parser path.
    assert parse_json(b'{"a": "\\u00e9\\ud83d\\ude00"}') == {"a": "é😀"}
    assert parse_json(b'{"a": "\\ud83d\\ude00", "b": NaN}')["a"] == "😀"


@pytest.mark.parametrize(
    ("body", "dump"),
    [(b"[1, 2.5, -0.0, 1e21, 1e-7]", "[1, 2.5, -0.0, 1e21, 1e-7]"), (b'"x"', '"x"'), (b"7", "7")],
)
def test_top_level_must_be_an_object(body, dump):
    assert failure(parse_json, body).message == f"JSON Value: {dump} Is not object"
    assert failure(parse_json, body + b" trailing").message == f"JSON Value: {dump} Is not object"


@pytest.mark.parametrize(
    "suffix",
    [b"}", b"} trailing", b', "nan": NaN}', b', "inf": -Inf}'],
    ids=["orjson", "trailing", "nan", "inf-token"],
)
def test_numbers_keep_int_float_distinction_on_every_parser_path(suffix):
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


@pytest.mark.parametrize("suffix", [b"}", b', "inf": Infinity}'], ids=["orjson", "stdlib"])
def test_integers_beyond_64_bits_become_doubles(suffix):
    doc = parse_json(
        b'{"u64": 18446744073709551615, "big": 18446744073709551616, '
        b'"small": -9223372036854775809, "huge": 1' + b"0" * 5000 + b', "dbl": -1e400' + suffix
    )
    assert doc["u64"] == 2**64 - 1 and type(doc["u64"]) is int
    assert doc["big"] == 2.0**64 and type(doc["big"]) is float
    assert doc["small"] == -(2.0**63) and type(doc["small"]) is float
    assert (doc["huge"], doc["dbl"]) == (math.inf, -math.inf)  # rapidjson: an error


def test_nan_and_infinity_tokens():
    doc = parse_json(b'{"v": [NaN, -NaN, Infinity, -Infinity, Inf, -Inf, 1]}')
    values = doc["v"]
    assert math.isnan(values[0]) and math.isnan(values[1])
    assert values[2:] == [math.inf, -math.inf, math.inf, -math.inf, 1]


def test_short_constants_inside_strings_are_text():
    doc = parse_json(b'{"Inf": "Info -NaN \\" Inf", "v": [Inf, NaN]}')
    assert doc["Inf"] == 'Info -NaN " Inf' and doc["v"][0] == math.inf


def test_trailing_data_and_bom():
    assert parse_json(b'{"a": 1} {"b": 2}') == {"a": 1}
    assert parse_json(b'{"a": [1, Inf]}]]]') == {"a": [1, math.inf]}
    assert parse_json(b'{"a": "x"}\x00{') == {"a": "x"}
    assert parse_json(b'\xef\xbb\xbf{"a": 1}') == {"a": 1}
    assert parse_json(b'\xef\xbb\xbf  {"a": NaN} x')["a"] != 0


def test_deeply_nested_signature_name_error_is_truncated_like_upstream():
    doc = parse_json(b'{"signature_name": ' + b"[" * 1000 + b"]" * 1000 + b"}")
    dump = '{\n    "signature_name": [' + "[" * 231  # writing stops once 256 bytes are out
    assert len(dump.encode()) == 256
    assert failure(signature_name_of, doc).message == (
        f"JSON Value: {dump} not formatted correctly. 'signature_name' key must be a string value."
    )


def test_signature_name():
    assert signature_name_of({}) == ""
    assert signature_name_of({"signature_name": "predict_images"}) == "predict_images"
    error = failure(signature_name_of, parse_json(b'{ "signature_name": 100 }'))
    assert (error.code, error.message) == (
        Code.INVALID_ARGUMENT,
        'JSON Value: {\n    "signature_name": 100\n} not formatted correctly. '
        "'signature_name' key must be a string value.",
    )


def test_debug_text_layout():
    value = {"a": [1, {"b": None}], "c": {}, "d": [], "e": 't\n"x"', "f": True}
    assert debug_text(value) == (
        '{\n    "a": [1, {\n            "b": null\n        }],\n    "c": {},\n    "d": [],'
        '\n    "e": "t\\n\\"x\\"",\n    "f": true\n}'
    )
    assert debug_text([1.5, math.nan, 2]) == "[1.5, "  # rapidjson's writer stops at NaN
    assert debug_text([1e16, 1e-6, 1e-7, 123.0]) == "[10000000000000000.0, 0.000001, 1e-7, 123.0]"


def test_error_body():
    assert json.loads(encode_error('Bad key: "key"')) == {"error": 'Bad key: "key"'}
    assert json.loads(encode_error("Bad key: 'key'")) == {"error": "Bad key: 'key'"}
    assert json.loads(encode_error("bytes \udcff here")) == {"error": "bytes ? here"}
