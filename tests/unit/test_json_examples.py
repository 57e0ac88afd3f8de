"""Classify and regress over REST JSON: tf.Example building and result documents.

Golden cases come from upstream's json_tensor_test.cc / http_rest_api_handler_test.cc and the
reference notes; expected values are written out independently of the implementation.
"""

import json

import pytest
from google.protobuf import text_format

from serving import protos
from serving.errors import Code, ServingError
from serving.rest.json_body import parse_json, signature_name_of
from serving.rest.json_examples import (
    decode_inference_input,
    encode_classification,
    encode_regression,
)


def failure(function, *args, **kwargs) -> ServingError:
    with pytest.raises(ServingError) as caught:
        function(*args, **kwargs)
    return caught.value


def as_text(body: bytes):
    """Parse a response keeping every number's exact text (upstream's AllValuesAsStrings)."""
    return json.loads(body, parse_float=str, parse_int=str, parse_constant=str)


def parse_input(text: str) -> protos.Input:
    return text_format.Parse(text, protos.Input())


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
        protos.ClassificationResult(),
    )
    assert json.loads(encode_classification(result)) == {
        "results": [
            [["car", 0.2], ["bike", 0.7], ["bus", 0.1]],
            [["car", 0.7], ["bike", 0.1], ["bus", 0.2]],
        ]
    }
    scores_only = text_format.Parse(
        "classifications { classes { score: 12 } }", protos.ClassificationResult()
    )
    assert as_text(encode_classification(scores_only)) == {"results": [[["", "12.0"]]]}


def test_regression_response():
    result = text_format.Parse(
        "regressions { value: 0.2 } regressions { value: 0.9 } regressions { value: 1.0 }",
        protos.RegressionResult(),
    )
    assert json.loads(encode_regression(result)) == {"results": [0.2, 0.9, 1.0]}
    non_finite = text_format.Parse(
        "regressions { value: 0.2 } regressions { value: inf } regressions { value: 1.0 } "
        "regressions { value: -inf } regressions { value: nan }",
        protos.RegressionResult(),
    )
    assert as_text(encode_regression(non_finite)) == {
        "results": ["0.2", "Infinity", "1.0", "-Infinity", "NaN"]
    }


def test_empty_results_are_errors():
    error = failure(encode_classification, protos.ClassificationResult())
    assert error.message == "Cannot convert empty ClassificationResults to JSON"
    error = failure(encode_regression, protos.RegressionResult())
    assert error.message == "Cannot convert empty RegressionResults to JSON"
