"""Thousands of generated REST requests — URLs, methods, headers, bodies valid or not, some
compressed — against the hardened server: never a 5xx other than 503/504, every error a JSON
``{"error": ...}``, and afterwards the server answers a good request with its memory bounded.

Generation is seeded (``derandomize``), so a failure reproduces on every run.
"""

from __future__ import annotations

import gzip
import http.client
import json
import zlib
from collections import Counter
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.robustness.conftest import good_predictions

pytestmark = pytest.mark.integration


def _fuzz(examples: int) -> settings:
    return settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )


# The slow test model is left out: a generated loop count would run until the REST deadline.
_NAMES = st.sampled_from(["half_plus_two", "scale", "missing", "HALF_PLUS_TWO"]) | st.text(
    max_size=12
)
_VERSIONS = st.one_of(
    st.integers(0, 2**64).map(str),
    st.text("0123456789", min_size=1, max_size=40),
    st.just("9" * 5000),
    st.text(max_size=8),
)
_TAILS = st.sampled_from(
    ["", ":predict", ":classify", ":regress", ":feedback", "/metadata", ":PREDICT", ":", "/"]
)
_PREFIXES = st.sampled_from(
    ["/v1/models/", "/V1/Models/", "/v1/", "/v1/lineage/models/", "/v1/lineage/servers/", "/"]
)


@st.composite
def _paths(draw) -> str:
    path = draw(_PREFIXES) + quote(draw(_NAMES), safe="")
    choice = draw(st.sampled_from(["", "version", "label", "both", "diff"]))
    if choice in ("version", "both"):
        path += "/versions/" + quote(draw(_VERSIONS), safe="")
    if choice in ("label", "both"):
        path += "/labels/" + quote(draw(_NAMES), safe="")
    if choice == "diff":
        path += f"/diff/{quote(draw(_VERSIONS), safe='')}/{quote(draw(_VERSIONS), safe='')}"
    return path + draw(_TAILS) + draw(st.sampled_from(["", "?a=1", "#f"]))


_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(),  # NaN and +-Infinity too: TF Serving's dialect accepts them
    st.text(max_size=16),
    st.builds(lambda text: {"b64": text}, st.text(max_size=12)),
)
_KEYS = st.sampled_from(["x", "y", "n", "inputs", "instances", "b64", "features"]) | st.text(
    max_size=6
)
_VALUES = st.recursive(
    _SCALARS,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(_KEYS, children, max_size=4),
    max_leaves=30,
)
_DOCUMENTS = st.fixed_dictionaries(
    {},
    optional={
        "instances": _VALUES,
        "inputs": _VALUES,
        "signature_name": st.sampled_from(["", "classify_x_to_y", "regress_x_to_y"]) | _VALUES,
        "examples": _VALUES,
        "context": _VALUES,
    },
)


def _json(doc) -> bytes:
    return json.dumps(doc, allow_nan=True).encode()


_BODIES = st.one_of(
    _DOCUMENTS.map(_json),
    _VALUES.map(_json),
    st.binary(max_size=300),
    # Deep nesting, beyond both JSON parsers' recursion limits.
    st.integers(1, 100_000).map(
        lambda depth: b'{"instances":' + b"[" * depth + b"1" + b"]" * depth
    ),
    # Invalid UTF-8 inside a string, a BOM, trailing data, unterminated documents.
    st.binary(min_size=1, max_size=20).map(lambda raw: b'{"instances": ["' + raw + b'"]}'),
    _DOCUMENTS.map(lambda doc: b"\xef\xbb\xbf" + _json(doc) + b" trailing"),
    _DOCUMENTS.map(lambda doc: _json(doc)[:-1]),
    # Large but cheap to send: arrays of empty arrays parse to ~33x their size.
    st.integers(1, 500_000).map(lambda n: b'{"instances": [' + b",".join([b"[]"] * n) + b"]}"),
)
_ENCODINGS = st.sampled_from([None, "gzip", "deflate", "br", "gzip (not really)"])
_METHODS = st.sampled_from(["POST", "POST", "POST", "GET", "PUT", "DELETE", "OPTIONS", "HEAD"])
_HEADER_TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)


def _encode(body: bytes, encoding: str | None) -> tuple[bytes, dict[str, str]]:
    if encoding == "gzip":
        return gzip.compress(body), {"Content-Encoding": "gzip"}
    if encoding == "deflate":
        return zlib.compress(body), {"Content-Encoding": "deflate"}
    if encoding is None:
        return body, {}
    return body, {"Content-Encoding": encoding.split(" ")[0]}


class _Client:
    """One keep-alive connection, reopened when the server closes it."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.statuses: Counter[int] = Counter()

    def send(self, method: str, path: str, body: bytes | None, headers: dict[str, str]):
        for attempt in range(2):
            try:
                self.connection.request(method, path, body=body, headers=headers)
                response = self.connection.getresponse()
                self.statuses[response.status] += 1
                return response.status, response.read(), response.getheader("content-type")
            except (http.client.RemoteDisconnected, ConnectionError, BrokenPipeError):
                self.connection.close()
                self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
                if attempt:
                    raise
        raise AssertionError("unreachable")


def _check(status: int, payload: bytes, content_type: str | None, method: str) -> None:
    assert status < 500 or status in (503, 504), (status, payload[:300])
    if status >= 400 and method not in ("HEAD", "OPTIONS"):  # a refused preflight is empty
        if content_type == "text/plain; charset=utf-8":  # uvicorn's own 400: unparsable HTTP
            assert (status, payload) == (400, b"Invalid HTTP request received.")
        else:
            assert "error" in json.loads(payload), payload[:300]


@pytest.fixture(scope="module")
def client(hardened, memory) -> _Client:
    memory.reset()  # the module's peak is checked by its last test
    return _Client(hardened.rest_port)


@_fuzz(700)
@given(method=_METHODS, path=_paths(), request_id=_HEADER_TEXT, routing=_HEADER_TEXT)
@example(
    method="GET", path="/v1/models/half_plus_two/versions/" + "9" * 5000, request_id="", routing=""
)
@example(method="GET", path="/v1/models/missing", request_id="", routing="")
def test_fuzzed_urls(client, method, path, request_id, routing):
    body = b'{"instances": [1.0]}' if method in ("POST", "PUT") else None
    headers = {"X-Request-Id": request_id, "X-Routing-Key": routing}
    _check(*client.send(method, path, body, headers), method)


@_fuzz(1000)
@given(
    path=st.sampled_from(
        [
            "/v1/models/half_plus_two:predict",
            "/v1/models/half_plus_two:classify",
            "/v1/models/half_plus_two:regress",
            "/v1/models/scale/versions/1:predict",
            "/v1/models/half_plus_two/labels/nope:predict",
            "/v1/models/half_plus_two:feedback",
        ]
    ),
    body=_BODIES,
    encoding=_ENCODINGS,
    content_type=st.sampled_from(["application/json", "text/plain", "application/x-www-form"]),
)
@example(
    path="/v1/models/half_plus_two:predict",
    body=b'{"instances": [' + b",".join([b"[]"] * 500_000) + b"]}",  # parses to ~80 MB
    encoding="gzip",
    content_type="application/json",
)
@example(
    path="/v1/models/half_plus_two:predict",
    body=b'{"instances": [2.0]}',
    encoding=None,
    content_type="application/json",
)
def test_fuzzed_bodies(client, path, body, encoding, content_type):
    data, headers = _encode(body, encoding)
    headers["Content-Type"] = content_type
    _check(*client.send("POST", path, data, headers), "POST")


def test_after_fuzzing_the_server_serves_with_bounded_memory(hardened, memory, client):
    # The generators reached success, client errors, unknown models and the memory limit.
    assert {200, 400, 404, 413} <= set(client.statuses), client.statuses
    assert hardened.process.poll() is None
    assert good_predictions(hardened)
    # The limits allow 96 MiB of decoded requests at a time, and no single fuzzed request
    # here peaks above ~40 MiB; over a thousand varied requests the allocator's retained and
    # fragmented heap still reaches 0.35-0.65 GiB at times (it is returned later). The bound
    # leaves room for that and is far below one unlimited decode (a 2^31-element fill: 8 GiB).
    assert memory.peak_growth_mib() < 1536, memory
