import pytest

from serving.errors import Code, ServingError
from serving.rest.routes import Route, parse_route


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("POST", "/v1/models/foo:predict", Route("predict", "foo", None, None)),
        ("POST", "/v1/models/foo/versions/50:regress", Route("regress", "foo", 50, None)),
        ("POST", "/v1/models/foo/labels/stable:classify", Route("classify", "foo", None, "stable")),
        ("POST", "/V1/MODELS/Foo:predict", Route("predict", "Foo", None, None)),
        (
            "POST",
            "/v1/models/my%20model/labels/a%2Bb:predict",
            Route("predict", "my model", None, "a+b"),
        ),
        ("GET", "/v1/models/foo", Route("status", "foo", None, None)),
        ("GET", "/v1/models/foo/versions/3", Route("status", "foo", 3, None)),
        ("GET", "/v1/models/foo/labels/x/metadata", Route("metadata", "foo", None, "x")),
        ("GET", "/v1/models/foo/metadata", Route("metadata", "foo", None, None)),
    ],
)
def test_valid_routes(method, path, expected):
    assert parse_route(method, path) == expected


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/foo"),
        ("POST", "/v1/foo"),
        ("POST", "/v1/models"),
        ("GET", "/v1/models/foo:predict"),
        ("POST", "/v1/models/foo/version/50:predict"),
        ("POST", "/v1/models/foo/versions/HELLO:regress"),
        ("POST", "/v1/models/foo/label/x:regress"),
        ("POST", "/v1/models/foo/versions/50/labels/x:regress"),
        ("POST", "/v1/models/foo/metadata"),
        ("POST", "/v1/models/foo:PREDICT"),
        ("GET", "/v1/models/foo/"),
        ("PUT", "/v1/models/foo"),
    ],
)
def test_malformed_routes(method, path):
    with pytest.raises(ServingError) as err:
        parse_route(method, path)
    assert err.value.code == Code.INVALID_ARGUMENT
    assert err.value.message == f"Malformed request: {method} {path}"


def test_model_list_missing_model_name_and_huge_version():
    assert parse_route("GET", "/v1/models") == Route("list", "", None, None)
    with pytest.raises(ServingError, match=r"Missing model name in request\."):
        parse_route("GET", "/v1/models/versions/1")
    with pytest.raises(ServingError, match="Failed to convert version: 18446744073709551615"):
        parse_route("POST", "/v1/models/foo/versions/18446744073709551615:predict")


@pytest.mark.parametrize(
    "version",
    ["9" * 5000, "9223372036854775808", "0" * 30 + "9223372036854775808"],
    ids=["5000_nines", "int64_max_plus_1", "zero_padded_overflow"],
)
def test_versions_beyond_int64_are_400_not_a_crash(version):
    """``int()`` itself refuses strings past 4300 digits; TF Serving's answer is a 400."""
    for method, path in (
        ("GET", f"/v1/models/foo/versions/{version}"),
        ("POST", f"/v1/models/foo/versions/{version}:predict"),
        ("GET", f"/v1/lineage/models/foo/versions/{version}"),
    ):
        with pytest.raises(ServingError) as err:
            parse_route(method, path)
        assert err.value.code == Code.INVALID_ARGUMENT
        assert err.value.message == f"Failed to convert version: {version} to numeric."


def test_zero_padded_versions_are_read_like_simple_atoi():
    assert parse_route("GET", "/v1/models/foo/versions/0000123").version == 123
    assert parse_route("GET", "/v1/models/foo/versions/0").version == 0
    assert parse_route("GET", "/v1/models/foo/versions/9223372036854775807").version == 2**63 - 1


def test_a_repeated_url_is_parsed_once():
    first = parse_route("POST", "/v1/models/repeat%20me/labels/stable:predict")
    again = parse_route("POST", "/v1/models/repeat%20me/labels/stable:predict")
    assert again is first
    assert first == Route("predict", "repeat me", None, "stable")
    assert parse_route("GET", "/v1/models/repeat%20me/labels/stable") is not first


def test_long_urls_and_errors_are_not_kept():
    long_name = "m" * 300
    path = f"/v1/models/{long_name}:predict"
    assert parse_route("POST", path) == Route("predict", long_name, None, None)
    assert parse_route("POST", path) is not parse_route("POST", path)
    for _ in range(2):  # a malformed path raises every time, it is not kept as an answer
        with pytest.raises(ServingError):
            parse_route("POST", "/v1/models/bad:explode")
