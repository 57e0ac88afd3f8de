"""REST JSON documents: the request body parsed TF Serving's way, and text about JSON values.

TF Serving reads bodies with rapidjson (``kParseNanAndInfFlag | kParseStopWhenDoneFlag``):
``NaN``/``Infinity`` tokens are numbers and anything after the top-level value is ignored.
Bodies go through orjson first; the few it rejects (non-finite tokens, trailing data, a BOM,
malformed JSON) are read again with the stdlib ``json`` module, whose error, position included,
becomes the ``JSON Parse error: ...`` message. Integer tokens stay ``int`` on both paths
(classify/regress type features by it); integers beyond int64/uint64 become floats, as in
rapidjson.

Deliberate differences from upstream's rapidjson (corner cases): parse errors carry Python's
wording and character offset (``JSON Parse error: Expecting value at offset: 7``); documents
nested deeper than Python's recursion limit (~1000) and bodies that are not UTF-8 are 400s
(rapidjson nests without limit and passes invalid bytes through); an escaped lone surrogate is
a 400; numbers beyond the double range become +-Infinity instead of an error; with duplicate
keys the last one wins.

Messages about a JSON value quote it as upstream does (``JSON Value: <dump> ...``): rapidjson's
PrettyWriter output with single-line arrays, cut once 256 bytes are written.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from typing import Any

import orjson

from serving import request_limits
from serving.errors import ServingError, invalid_argument

_JSON_WHITESPACE = re.compile(r"[ \t\n\r]*")
# rapidjson also reads Inf, -Inf and -NaN; the stdlib knows NaN, Infinity and -Infinity only.
# Strings are matched as a whole so that text inside them is left alone.
_SHORT_CONSTANT = re.compile(r"-NaN|Inf(?![A-Za-z])")
_STRING_OR_SHORT_CONSTANT = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|-NaN|Inf(?![A-Za-z])')
_SPELLED_OUT = {"-NaN": "NaN", "Inf": "Infinity"}
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _json_int(token: str) -> int | float:
    """rapidjson's integer storage: beyond int64/uint64 a token is read as a double."""
    if len(token) <= 20:
        value = int(token)
        if -(2**63) <= value <= 2**64 - 1:
            return value
    return float(token)


_STDLIB_DECODER = json.JSONDecoder(parse_int=_json_int)


def parse_json(body: bytes) -> dict:
    """The request document; raises INVALID_ARGUMENT for anything but a JSON object.

    The memory the document will take is charged to the request before parsing
    (:func:`serving.request_limits.json_document_bytes`): parsed JSON is 15-40 times its text.
    """
    if not body:
        raise invalid_argument("JSON Parse error: The document is empty")
    request_limits.charge(
        request_limits.json_document_bytes(body), lambda: f"the JSON body ({len(body)} bytes)"
    )
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        doc = _parse_stdlib(body)
    if not isinstance(doc, dict):
        raise value_error(doc, "Is not object")
    return doc


def _parse_stdlib(body: bytes) -> Any:
    """What orjson refused: non-finite tokens, trailing data and BOMs are fine, the rest is not."""
    # The text, and its copy with short constants spelled out, on top of the document.
    request_limits.charge(2 * len(body), lambda: "the JSON body's text")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise _parse_error("Invalid UTF-8 encoding", error.start) from None
    start = _JSON_WHITESPACE.match(text, 1 if text.startswith("\ufeff") else 0).end()
    if start == len(text):
        raise _parse_error("The document is empty", start)
    if _SHORT_CONSTANT.search(text, start):
        text = _STRING_OR_SHORT_CONSTANT.sub(
            lambda match: _SPELLED_OUT.get(match.group(), match.group()), text
        )
    try:
        doc, _ = _STDLIB_DECODER.raw_decode(text, start)  # trailing data is ignored
    except json.JSONDecodeError as error:
        raise _parse_error(error.msg, error.pos) from None
    except RecursionError:
        raise invalid_argument("JSON Parse error: The document is nested too deeply") from None
    if _SURROGATE_ESCAPE.search(text):
        _reject_lone_surrogates(doc)
    return doc


def _reject_lone_surrogates(doc: Any) -> None:
    """The stdlib accepts ``"\\ud800"`` alone; its text could never become UTF-8 bytes."""
    try:
        json.dumps(doc, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise invalid_argument(
            "JSON Parse error: The surrogate pair in string is invalid"
        ) from None
    except RecursionError:
        raise invalid_argument("JSON Parse error: The document is nested too deeply") from None


def _parse_error(message: str, offset: int) -> ServingError:
    return invalid_argument(f"JSON Parse error: {message} at offset: {offset}")


def signature_name_of(doc: dict) -> str:
    """The optional ``signature_name`` ("" when absent, meaning the default signature)."""
    name = doc.get("signature_name", "")
    if not isinstance(name, str):
        raise value_error(
            doc, "not formatted correctly. 'signature_name' key must be a string value."
        )
    return name


def encode_error(message: str) -> bytes:
    """``{"error": message}``; text that cannot be UTF-8 (lone surrogates) is replaced."""
    try:
        return orjson.dumps({"error": message})
    except orjson.JSONEncodeError:
        return orjson.dumps({"error": message.encode("utf-8", "replace").decode("utf-8")})


# --------------------------------------------------------------------------- debug dumps

_DEBUG_LIMIT = 256  # json_tensor.cc kMaxJsonDebugStringBytes
_INDENT = "    "
_STRING_ESCAPES = {code: f"\\u{code:04X}" for code in range(0x20)} | {
    0x08: "\\b",
    0x09: "\\t",
    0x0A: "\\n",
    0x0C: "\\f",
    0x0D: "\\r",
    ord('"'): '\\"',
    ord("\\"): "\\\\",
}


def value_error(value: Any, text: str) -> ServingError:
    """INVALID_ARGUMENT ``JSON Value: <dump> <text>``."""
    return invalid_argument(f"JSON Value: {debug_text(value)} {text}")


def debug_text(value: Any) -> str:
    """rapidjson PrettyWriter output (single-line arrays) cut off once 256 bytes are written.

    Like upstream's JsonWriterWithLimit, the limit is checked before each token, and writing
    stops at a NaN/Infinity (rapidjson's writer refuses them) after emitting its separator.
    """
    pieces: list[str] = []
    size = 0
    for piece, complete in _debug_pieces(value, "", 0):
        if size >= _DEBUG_LIMIT:
            break
        pieces.append(piece)
        size += len(piece.encode("utf-8", "surrogatepass"))
        if not complete:
            break
    return "".join(pieces)


def _debug_pieces(value: Any, prefix: str, depth: int) -> Iterator[tuple[str, bool]]:
    """Writer tokens with their separators. Each level writes before it descends, so the
    256-byte limit also bounds the recursion."""
    if isinstance(value, list):
        yield prefix + "[", True
        for index, item in enumerate(value):
            yield from _debug_pieces(item, ", " if index else "", depth + 1)
        yield "]", True
    elif isinstance(value, dict):
        yield prefix + "{", True
        indent = _INDENT * (depth + 1)
        for index, (key, item) in enumerate(value.items()):
            yield ("\n" if index == 0 else ",\n") + indent + _quote(key), True
            yield from _debug_pieces(item, ": ", depth + 1)
        yield ("\n" + _INDENT * depth + "}" if value else "}"), True
    else:
        text = _debug_scalar(value)
        yield prefix + (text or ""), text is not None


def _debug_scalar(value: Any) -> str | None:
    """A scalar as rapidjson writes it; None for NaN/Infinity, which its writer rejects."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _rapidjson_double(value) if math.isfinite(value) else None
    return _quote(value)


def _quote(text: str) -> str:
    return '"' + text.translate(_STRING_ESCAPES) + '"'


def _rapidjson_double(value: float) -> str:
    """rapidjson's dtoa: shortest digits (Grisu2 ~ repr) laid out by its Prettify()."""
    if value == 0:
        return "-0.0" if math.copysign(1.0, value) < 0 else "0.0"
    mantissa, _, exponent = repr(abs(value)).partition("e")
    whole, _, fraction = mantissa.partition(".")
    digits = (whole + fraction).lstrip("0")
    power = int(exponent or 0) - len(fraction) + len(digits) - len(digits.rstrip("0"))
    digits = digits.rstrip("0")
    sign = "-" if value < 0 else ""
    top = len(digits) + power  # 10**(top-1) <= value < 10**top
    if power >= 0 and top <= 21:
        text = digits + "0" * power + ".0"
    elif 0 < top <= 21:
        text = digits[:top] + "." + digits[top:]
    elif -6 < top <= 0:
        text = "0." + "0" * -top + digits
    else:
        fraction_digits = "." + digits[1:] if len(digits) > 1 else ""
        text = f"{digits[0]}{fraction_digits}e{top - 1}"
    return sign + text


def json_type(value: Any) -> str:
    """json_tensor.cc JsonTypeString."""
    if value is None:
        return "Null"
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, dict):
        return "Object"
    if isinstance(value, list):
        return "Array"
    if isinstance(value, str):
        return "String"
    return "Number"
