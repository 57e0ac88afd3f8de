"""REST JSON codec: TF Serving's ``util/json_tensor.cc`` behaviour in Python.

Clients and tests written against TF Serving depend on its exact JSON dialect and error texts,
so this module reproduces them: NaN/Infinity tokens, trailing data after the document ignored,
row (``instances``/``predictions``) and columnar (``inputs``/``outputs``) formats, ``{"b64": ..}``
strings, dtypes taken from the signature, TF Serving's float text, and every error message
(including the ``JSON Value: <dump>`` prefixes, dumped the way rapidjson's PrettyWriter does and
cut at 256 bytes).

Speed matters because decoding runs on the event loop: documents go through orjson first, and
tensors are checked in bulk (type sets, min/max) and built with one ``np.array`` call. Only a
request that fails those checks is walked value by value, in upstream's order, to produce the
exact error message. Likewise only bodies orjson rejects reach the slower parsers.

Deliberate differences from upstream (all corner cases):
* duplicate object keys: the last one wins (rapidjson keeps both; lookups see the first);
* an escaped lone low surrogate (``"\\udc00"``) is rejected like newer rapidjson does
  (rapidjson 1.1.0, which TF Serving pins, passes it through as CESU-8 bytes);
* numbers are parsed with correct rounding (rapidjson's default mode may be 1 ulp off);
* tensors are limited to numpy's 32 dimensions (TF allows 254);
* string outputs that are not valid UTF-8 are written with U+FFFD replacements, because
  raw bytes (upstream) would make the whole response unparsable for most clients.
"""

from __future__ import annotations

import base64
import binascii
import gc
import json
import math
import re
from collections.abc import Iterator
from itertools import chain
from typing import Any

import numpy as np
import orjson
from tensorflow.core.example import example_pb2
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import classification_pb2, input_pb2, regression_pb2

from serving.errors import ServingError, invalid_argument, unimplemented
from serving.rest import float_format
from serving.tensor_types import dtype_name, numpy_dtype, tf_dtype

# --------------------------------------------------------------------------------- parsing

_BOM = b"\xef\xbb\xbf"
_JSON_WHITESPACE = " \t\n\r"
_WHITESPACE_BYTES = frozenset(b" \t\n\r")
_WHITESPACE = re.compile(rb"[ \t\n\r]*")
_OPEN_ARRAYS = re.compile(rb"(?:\[[ \t\n\r]*)+")
_CLOSE_ARRAYS = re.compile(rb"(?:\][ \t\n\r]*)+")
_DIGIT_RUN = re.compile(rb"[0-9]*")
_PLAIN_STRING = re.compile(rb'[^"\\\x00-\x1f]*')
_HEX4 = re.compile(rb"[0-9A-Fa-f]{4}")
# What the stdlib parser would read differently from rapidjson: lone surrogate escapes
# (accepted), integer parts of 20+ digits (huge ints must become doubles) and exponents >= 100
# (overflow must be an error). Bodies containing them go to the exact reader.
_STDLIB_UNSAFE = re.compile(rb"\\u[dD][89a-fA-F]|(?<![0-9.])[0-9]{20}|[eE]\+?0*[1-9][0-9]{2}")
# A comma-separated run of plain numbers (NaN/Inf included), read in one step by the exact
# reader; anything glued to a number (``1.``, ``01``, ``1e``, ``Infinit``) is left to it.
_NUMBER = rb"-?(?:(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?|NaN|Inf(?:inity)?)"
_NUMBER_RUN = re.compile(
    _NUMBER + rb"(?![0-9A-Za-z.+-])(?:[ \t\n\r]*,[ \t\n\r]*" + _NUMBER + rb"(?![0-9A-Za-z.+-]))*"
)
_STDLIB_DECODER = json.JSONDecoder()
_SIMPLE_ESCAPES = {
    ord('"'): b'"',
    ord("\\"): b"\\",
    ord("/"): b"/",
    ord("b"): b"\b",
    ord("f"): b"\f",
    ord("n"): b"\n",
    ord("r"): b"\r",
    ord("t"): b"\t",
}
_INT64_MIN, _UINT64_MAX = -(2**63), 2**64 - 1


def parse_json(body: bytes) -> dict:
    """The request document, read the way TF Serving's rapidjson settings read it.

    NaN/Inf/Infinity/-Inf/-Infinity tokens are numbers and anything after the top-level value
    is ignored. Integer tokens stay ``int`` (classify/regress type features by it); integers
    beyond the int64/uint64 range become floats, as in rapidjson.
    """
    if not body:
        raise invalid_argument("JSON Parse error: The document is empty")
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        doc = _parse_lenient(body)
    if not isinstance(doc, dict):
        raise invalid_argument(f"JSON Value: {_debug_text(doc)} Is not object")
    return doc


def _parse_lenient(body: bytes) -> Any:
    """orjson rejected the body: try the stdlib (fast for NaN/Infinity), then the exact reader."""
    try:
        return _parse_stdlib(body)
    except (ValueError, RecursionError):
        return _RapidJsonReader(body).parse()


def _parse_stdlib(body: bytes) -> dict:
    """Covers NaN/Infinity/-Infinity and trailing data; anything subtler raises ValueError."""
    if _STDLIB_UNSAFE.search(body):
        raise ValueError("needs the exact reader")
    text = body.decode("utf-8")
    start = len(text) - len(text.lstrip(_JSON_WHITESPACE))
    doc, _ = _STDLIB_DECODER.raw_decode(text, start)
    if not isinstance(doc, dict):
        raise ValueError("top-level scalars are left to the exact reader")
    return doc


# States of rapidjson's iterative parser.
_START, _FINISH = 0, 1
_OBJECT_INITIAL, _MEMBER_KEY, _KEY_VALUE_DELIMITER, _MEMBER_VALUE, _MEMBER_DELIMITER = 2, 3, 4, 5, 6
_ARRAY_INITIAL, _ELEMENT, _ELEMENT_DELIMITER = 7, 8, 9
_EXPECTS_VALUE = frozenset([_START, _KEY_VALUE_DELIMITER, _ARRAY_INITIAL, _ELEMENT_DELIMITER])
_EXPECTS_KEY = frozenset([_OBJECT_INITIAL, _MEMBER_DELIMITER])
# rapidjson's HandleError: what a state reports when the next byte does not fit.
_STATE_ERRORS = {
    _START: "The document is empty.",
    _OBJECT_INITIAL: "Missing a name for object member.",
    _MEMBER_DELIMITER: "Missing a name for object member.",
    _MEMBER_KEY: "Missing a colon after a name of object member.",
    _MEMBER_VALUE: "Missing a comma or '}' after an object member.",
    _KEY_VALUE_DELIMITER: "Invalid value.",
    _ARRAY_INITIAL: "Invalid value.",
    _ELEMENT_DELIMITER: "Invalid value.",
    _ELEMENT: "Missing a comma or ']' after an array element.",
}


class _RapidJsonReader:
    """rapidjson 1.1.0's iterative parser with kParseNanAndInfFlag | kParseStopWhenDoneFlag.

    Only reached for bodies the fast parsers reject, so it favours fidelity over speed: it
    accepts what rapidjson accepts (``Inf``, ``-NaN``, invalid UTF-8 inside strings, nesting of
    any depth) and reports errors with rapidjson's messages and byte offsets. Invalid UTF-8
    bytes are kept in strings as surrogate escapes and restored by :func:`_utf8`. Runs of
    brackets are handled in one step so that pathological nesting stays cheap.
    """

    def __init__(self, body: bytes) -> None:
        # rapidjson's memory stream reads NUL as end of input.
        self._text = body.split(b"\0", 1)[0]
        self._pos = 0
        for byte in _BOM:  # EncodedInputStream skips each BOM byte it finds, in order
            if self._text[self._pos : self._pos + 1] == bytes([byte]):
                self._pos += 1
        self._stack: list[list] = []  # open containers: [container, pending member key]
        self._root: Any = None

    def parse(self) -> Any:
        """The document's value, or the ServingError rapidjson's message maps to.

        The cyclic GC is paused meanwhile: a deeply nested body makes ~1e6 containers and the
        full collections they trigger would dominate (seconds instead of a fraction of one);
        the result is acyclic, so the GC has nothing to find in it.
        """
        paused = gc.isenabled()
        gc.disable()
        try:
            return self._parse()
        finally:
            if paused:
                gc.enable()

    def _parse(self) -> Any:
        text, size = self._text, len(self._text)
        state = _START
        self._skip_whitespace()
        while self._pos < size:
            state = self._step(state, text[self._pos])
            if state == _FINISH:
                return self._root
            if self._pos < size and text[self._pos] in _WHITESPACE_BYTES:
                self._skip_whitespace()
        raise self._error(_STATE_ERRORS[state], self._pos)

    def _step(self, state: int, char: int) -> int:
        """One token; mirrors rapidjson's Predict/Transit tables."""
        if char == ord("]") and state in (_ARRAY_INITIAL, _ELEMENT):
            return self._close_arrays()
        if state in _EXPECTS_VALUE:
            if char == ord("["):
                return self._open_arrays()
            if char == ord("{"):
                self._pos += 1
                self._stack.append([{}, None])
                return _OBJECT_INITIAL
            if char in b"]},:":  # includes ']' after a comma: no trailing commas
                raise self._error(_STATE_ERRORS[state], self._pos)
            if state in (_ARRAY_INITIAL, _ELEMENT_DELIMITER) and self._number_run():
                return _ELEMENT
            return self._store(self._scalar(char))
        if char == ord('"') and state in _EXPECTS_KEY:
            self._stack[-1][1] = self._string()
            return _MEMBER_KEY
        if char == ord(":") and state == _MEMBER_KEY:
            self._pos += 1
            return _KEY_VALUE_DELIMITER
        if char == ord(",") and state in (_MEMBER_VALUE, _ELEMENT):
            self._pos += 1
            return _MEMBER_DELIMITER if state == _MEMBER_VALUE else _ELEMENT_DELIMITER
        if char == ord("}") and state in (_OBJECT_INITIAL, _MEMBER_VALUE):
            self._pos += 1
            return self._store(self._stack.pop()[0])
        raise self._error(_STATE_ERRORS[state], self._pos)

    def _open_arrays(self) -> int:
        end = _OPEN_ARRAYS.match(self._text, self._pos).end()
        count = self._text.count(b"[", self._pos, end)
        self._stack.extend([[], None] for _ in range(count))
        self._pos = end
        return _ARRAY_INITIAL

    def _close_arrays(self) -> int:
        """Close the run of ']' at the cursor, stopping at the root or at a misplaced ']'."""
        text, stack = self._text, self._stack
        end = _CLOSE_ARRAYS.match(text, self._pos).end()
        count = text.count(b"]", self._pos, end)
        for closed in range(1, count + 1):
            value = stack.pop()[0]
            if not stack:
                self._root = value
                return _FINISH
            parent, key = stack[-1]
            if type(parent) is list:
                parent.append(value)
                continue
            parent[key] = value
            if closed < count:  # ']' right after an object member
                raise self._error(_STATE_ERRORS[_MEMBER_VALUE], self._bracket(closed))
            self._pos = end
            return _MEMBER_VALUE
        self._pos = end
        return _ELEMENT

    def _bracket(self, index: int) -> int:
        """Offset of the ``index``-th (0-based) ']' from the cursor."""
        offset = self._pos
        for _ in range(index):
            offset = self._text.index(b"]", offset) + 1
        return self._text.index(b"]", offset)

    def _number_run(self) -> bool:
        """Append a run of plain numbers to the open array in one step, if one starts here."""
        run = _NUMBER_RUN.match(self._text, self._pos)
        if not run:
            return False
        tokens = run.group().split(b",")
        values = [_number_value(token.strip(b" \t\n\r")) for token in tokens]
        if math.inf in values or -math.inf in values:
            self._check_overflow(run.start(), tokens, values)
        self._stack[-1][0].extend(values)
        self._pos = run.end()
        return True

    def _check_overflow(self, offset: int, tokens: list[bytes], values: list) -> None:
        """An infinity that was not spelled Inf/Infinity is rapidjson's 'Number too big'."""
        for token, value in zip(tokens, values, strict=True):
            if value in (math.inf, -math.inf) and b"I" not in token:
                start = offset + len(token) - len(token.lstrip(b" \t\n\r"))
                raise self._error("Number too big to be stored in double.", start)
            offset += len(token) + 1

    def _store(self, value: Any) -> int:
        if not self._stack:
            self._root = value
            return _FINISH
        container, key = self._stack[-1]
        if isinstance(container, list):
            container.append(value)
            return _ELEMENT
        container[key] = value
        return _MEMBER_VALUE

    def _scalar(self, char: int) -> Any:
        if char == ord('"'):
            return self._string()
        for word, value in ((b"null", None), (b"true", True), (b"false", False)):
            if char == word[0]:
                self._expect(word)
                return value
        return self._number()

    def _expect(self, word: bytes) -> None:
        """Consume ``word``; rapidjson reports the offset of the first byte that differs."""
        matched = self._match_prefix(word)
        self._pos += matched
        if matched < len(word):
            raise self._error("Invalid value.", self._pos)

    def _match_prefix(self, word: bytes) -> int:
        """How many leading bytes of ``word`` the input holds at the current position."""
        ahead = self._text[self._pos : self._pos + len(word)]
        matched = 0
        while matched < len(ahead) and ahead[matched] == word[matched]:
            matched += 1
        return matched

    def _number(self) -> int | float:
        text, start = self._text, self._pos
        self._pos += text[start : start + 1] == b"-"
        head = text[self._pos : self._pos + 1]
        if head == b"0":
            self._pos += 1
        elif head and head in b"123456789":
            self._pos = _DIGIT_RUN.match(text, self._pos).end()
        elif head in (b"N", b"I"):
            return self._nan_or_infinity(negative=self._pos > start)
        else:
            raise self._error("Invalid value.", self._pos)
        if text[self._pos : self._pos + 1] == b".":
            self._pos += 1
            self._digits("Miss fraction part in number.")
        if text[self._pos : self._pos + 1] in (b"e", b"E"):
            self._pos += 1
            self._pos += text[self._pos : self._pos + 1] in (b"+", b"-")
            self._digits("Miss exponent in number.")
        value = _number_value(text[start : self._pos])
        if value in (math.inf, -math.inf):
            raise self._error("Number too big to be stored in double.", start)
        return value

    def _digits(self, missing: str) -> None:
        end = _DIGIT_RUN.match(self._text, self._pos).end()
        if end == self._pos:
            raise self._error(missing, self._pos)
        self._pos = end

    def _nan_or_infinity(self, negative: bool) -> float:
        """rapidjson consumes N-a-N, else I-n-f, byte by byte; a partial match is an error."""
        matched = self._match_prefix(b"NaN")
        self._pos += matched
        if matched == 3:
            return math.nan
        self._expect(b"Inf")
        if self._text[self._pos : self._pos + 1] == b"i":
            self._expect(b"inity")
        return -math.inf if negative else math.inf

    def _string(self) -> str:
        text = self._text
        self._pos += 1
        parts = []
        while True:
            end = _PLAIN_STRING.match(text, self._pos).end()
            parts.append(text[self._pos : end])
            self._pos = end
            char = text[end : end + 1]
            if char == b'"':
                self._pos += 1
                return b"".join(parts).decode("utf-8", "surrogateescape")
            if char == b"\\":
                parts.append(self._escape())
            elif not char:
                raise self._error("Missing a closing quotation mark in string.", end)
            else:  # an unescaped control character (rapidjson 1.1.0's wording)
                raise self._error("Invalid escape character in string.", end)

    def _escape(self) -> bytes:
        start = self._pos
        escape = self._text[start + 1 : start + 2]
        if escape and escape[0] in _SIMPLE_ESCAPES:
            self._pos += 2
            return _SIMPLE_ESCAPES[escape[0]]
        if escape != b"u":
            raise self._error("Invalid escape character in string.", start)
        code = self._hex4(start + 2, start)
        if 0xD800 <= code <= 0xDBFF:
            if self._text[self._pos : self._pos + 2] != b"\\u":
                raise self._error("The surrogate pair in string is invalid.", start)
            low = self._hex4(self._pos + 2, start)
            if not 0xDC00 <= low <= 0xDFFF:
                raise self._error("The surrogate pair in string is invalid.", start)
            code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
        elif 0xDC00 <= code <= 0xDFFF:
            raise self._error("The surrogate pair in string is invalid.", start)
        return chr(code).encode("utf-8")

    def _hex4(self, pos: int, escape_start: int) -> int:
        match = _HEX4.match(self._text, pos)
        if not match:
            raise self._error("Incorrect hex digit after \\u escape in string.", escape_start)
        self._pos = match.end()
        return int(match.group(), 16)

    def _skip_whitespace(self) -> None:
        self._pos = _WHITESPACE.match(self._text, self._pos).end()

    @staticmethod
    def _error(message: str, offset: int) -> ServingError:
        return invalid_argument(f"JSON Parse error: {message} at offset: {offset}")


def _number_value(token: bytes) -> int | float:
    """What rapidjson stores: an integer token fitting int64/uint64 stays an int."""
    if len(token) <= 20 and token.lstrip(b"-").isdigit():
        value = int(token)
        if _INT64_MIN <= value <= _UINT64_MAX:
            return value
    return float(token)


def _utf8(text: str) -> bytes:
    """JSON string -> TF string bytes, restoring invalid UTF-8 the exact reader preserved."""
    return text.encode("utf-8", "surrogateescape")


# --------------------------------------------------------------------------- debug dumps

_DEBUG_LIMIT = 256  # json_tensor.cc kMaxJsonDebugStringBytes
_INDENT = "    "
_END = object()
_STRING_ESCAPES = {code: f"\\u{code:04X}" for code in range(0x20)} | {
    0x08: "\\b",
    0x09: "\\t",
    0x0A: "\\n",
    0x0C: "\\f",
    0x0D: "\\r",
    ord('"'): '\\"',
    ord("\\"): "\\\\",
}


def _debug_text(value: Any) -> str:
    """rapidjson PrettyWriter output (single-line arrays) cut off once 256 bytes are written.

    Like upstream's JsonWriterWithLimit, the limit is checked before each token, and writing
    stops at a NaN/Infinity (rapidjson's writer refuses them) after emitting its separator.
    """
    pieces: list[str] = []
    size = 0
    for piece, complete in _debug_tokens(value):
        if size >= _DEBUG_LIMIT:
            break
        pieces.append(piece)
        size += len(piece.encode("utf-8", "surrogatepass"))
        if not complete:
            break
    return "".join(pieces)


def _debug_tokens(root: Any) -> Iterator[tuple[str, bool]]:
    """Writer events with their separators, iteratively (documents may nest very deeply)."""
    levels: list[list] = []  # rapidjson Writer::Level: [in_array, value_count]
    children: list[Iterator] = [iter((root,))]
    while children:
        item = next(children[-1], _END)
        if item is _END:
            children.pop()
            if not levels:
                return
            in_array, count = levels.pop()
            closing = "\n" + _INDENT * len(levels) + "}" if count else "}"
            yield ("]" if in_array else closing), True
            continue
        if levels and not levels[-1][0]:
            key, item = item
            yield _debug_prefix(levels) + _quote(key), True
        prefix = _debug_prefix(levels)
        if isinstance(item, (dict, list)):
            is_list = isinstance(item, list)
            yield prefix + ("[" if is_list else "{"), True
            levels.append([is_list, 0])
            children.append(iter(item) if is_list else iter(item.items()))
            continue
        text = _debug_scalar(item)
        yield prefix + (text or ""), text is not None
        if text is None:
            return


def _debug_prefix(levels: list[list]) -> str:
    """PrettyWriter::PrettyPrefix with kFormatSingleLineArray and 4-space indent."""
    if not levels:
        return ""
    level = levels[-1]
    in_array, count = level
    level[1] += 1
    if in_array:
        return ", " if count else ""
    if count % 2:
        return ": "
    return (",\n" if count else "\n") + _INDENT * len(levels)


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


def _json_type(value: Any) -> str:
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


def _format_error(value: Any, text: str) -> ServingError:
    return invalid_argument(f"JSON Value: {_debug_text(value)} {text}")


def _nested_error(error: ServingError) -> str:
    """absl::Status::ToString() of a wrapped status: ``CODE: message``."""
    return f"{error.code.name}: {error.message}"


# -------------------------------------------------------------------------- base64 strings

_B64_SPACE = re.compile(r"[ \t\n\v\f\r]")
_B64_BODY = re.compile(r"([A-Za-z0-9+/]*)([=.]*)")
_B64_PADDING = {0: 0, 2: 2, 3: 1}  # data length % 4 -> '=' count absl insists on, if any


def _is_b64(value: Any) -> bool:
    """``{"b64": "<string>"}`` with no other key (IsValBase64Object)."""
    return type(value) is dict and len(value) == 1 and type(value.get("b64")) is str


def _base64_decode(text: str) -> bytes | None:
    """absl::Base64Unescape: whitespace ignored, '=' or '.' padding optional but exact if given."""
    match = _B64_BODY.fullmatch(_B64_SPACE.sub("", text))
    if not match:
        return None
    data, padding = match.groups()
    if len(data) % 4 == 1 or (padding and len(padding) != _B64_PADDING[len(data) % 4]):
        return None
    return binascii.a2b_base64(data + "=" * (-len(data) % 4))


def _decode_b64_object(value: Any) -> bytes:
    if not _is_b64(value):
        raise _format_error(value, "not formatted correctly for base64 data")
    decoded = _base64_decode(value["b64"])
    if decoded is None:
        raise invalid_argument("Unable to base64 decode")
    return decoded


# ------------------------------------------------------------------------ predict request

# numpy's dimension limit (NPY_MAXDIMS); TF Serving would accept up to 254.
_MAX_RANK = 32
_FLOATS = frozenset([types_pb2.DT_FLOAT, types_pb2.DT_DOUBLE])
# JSON integer range each dtype accepts (rapidjson IsInt / IsInt64 / IsUint / IsUint64).
# int8/int16/uint8 go through TensorProto.int_val upstream: any int32 is accepted and narrowed.
_INT_RANGES = {
    types_pb2.DT_INT8: (-(2**31), 2**31 - 1),
    types_pb2.DT_INT16: (-(2**31), 2**31 - 1),
    types_pb2.DT_INT32: (-(2**31), 2**31 - 1),
    types_pb2.DT_UINT8: (-(2**31), 2**31 - 1),
    types_pb2.DT_INT64: (_INT64_MIN, 2**63 - 1),
    types_pb2.DT_UINT32: (0, 2**32 - 1),
    types_pb2.DT_UINT64: (0, _UINT64_MAX),
}


def signature_name_of(doc: dict) -> str:
    """The optional ``signature_name`` ("" when absent, meaning the default signature)."""
    name = doc.get("signature_name", "")
    if not isinstance(name, str):
        raise _format_error(
            doc, "not formatted correctly. 'signature_name' key must be a string value."
        )
    return name


def decode_predict_inputs(
    doc: dict, signature: meta_graph_pb2.SignatureDef
) -> tuple[dict[str, np.ndarray], bool]:
    """Input tensors by alias and whether the request was columnar (``inputs``).

    The dtypes come from the signature, never from the JSON tokens. Shapes are not checked
    against the signature (TF Serving feeds whatever shape the request has).
    """
    if not signature.inputs:
        name = signature_name_of(doc) or "DEFAULT"
        raise invalid_argument(f"Failed to get input map for signature: {name}")
    # Sorted: the order the key-set message lists names in (a std::set upstream).
    dtypes = {alias: signature.inputs[alias].dtype for alias in sorted(signature.inputs)}
    if "instances" in doc:
        if "inputs" in doc:
            raise _format_error(
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
        raise _format_error(doc, "Expecting 'instances' to be an list/array")
    if not instances:
        raise _format_error(doc, "No values in 'instances' array")
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
    return isinstance(value, dict) and not _is_b64(value)


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
        tensor = _fast_tensor(column, dtypes[alias])
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
        tensor = _exact_tensor(item, self._dtypes[name], _MAX_RANK - 1)
        rows = self.rows.setdefault(name, [])
        if rows and rows[0].size != tensor.size:
            raise invalid_argument(f"Expecting tensor size: {rows[0].size} but got: {tensor.size}")
        if rows and rows[0].shape != tensor.shape:
            raise invalid_argument(
                f"Expecting shape {_shape_text(rows[0].shape)} but got: {_shape_text(tensor.shape)}"
            )
        rows.append(tensor)

    def tensors(self) -> dict[str, np.ndarray]:
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
                f"{_debug_text(row)} keys must be equal to: {','.join(dtypes)}"
            )
    return batcher.tensors()


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
    if not isinstance(value, dict) or _is_b64(value):
        if len(dtypes) > 1:
            raise invalid_argument(
                "inputs is a plain value/list, but expecting an object as multiple input "
                "tensors required as per tensorinfo_map"
            )
        alias = next(iter(dtypes))
        return {alias: _tensor(value, dtypes[alias])}
    tensors = {}
    for alias, dtype in dtypes.items():
        if alias not in value:
            raise invalid_argument(f"Missing named input: {alias} in 'inputs' object.")
        tensors[alias] = _tensor(value[alias], dtype)
    return tensors


def _tensor(value: Any, dtype: int) -> np.ndarray:
    tensor = _fast_tensor(value, dtype)
    return _exact_tensor(value, dtype, _MAX_RANK) if tensor is None else tensor


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


def _fast_tensor(value: Any, dtype: int) -> np.ndarray | None:
    """Bulk conversion of a well-formed dense value; None if anything needs a closer look."""
    shape = _dense_shape(value, _MAX_RANK)
    leaves: list = [value]
    for size in shape:
        if set(map(type, leaves)) != {list} or set(map(len, leaves)) != {size}:
            return None
        leaves = list(chain.from_iterable(leaves))
    values = _checked_leaves(leaves, dtype)
    return None if values is None else _to_array(values, shape, dtype)


def _checked_leaves(leaves: list, dtype: int) -> list | None:
    """The leaves ready for numpy if all are valid for ``dtype`` (AddValueToTensor rules)."""
    kinds = set(map(type, leaves))
    if dtype in _FLOATS:
        return leaves if kinds <= {int, float} else None
    if dtype in _INT_RANGES:
        low, high = _INT_RANGES[dtype]
        valid = kinds <= {int} and (not leaves or (low <= min(leaves) and max(leaves) <= high))
        return leaves if valid else None
    if dtype == types_pb2.DT_BOOL:
        return leaves if kinds <= {bool} else None
    if dtype == types_pb2.DT_STRING and kinds <= {str, dict}:
        values = [_utf8(leaf) if type(leaf) is str else _b64_or_none(leaf) for leaf in leaves]
        return None if None in values else values
    return None


def _b64_or_none(value: Any) -> bytes | None:
    return _base64_decode(value["b64"]) if _is_b64(value) else None


def _exact_tensor(value: Any, dtype: int, max_rank: int) -> np.ndarray:
    """FillTensorProto: walks the value in upstream's order and raises its first error."""
    shape = _dense_shape(value, max_rank)
    values: list = []
    _collect(value, 0, shape, dtype, values)
    try:
        return _to_array(values, shape, dtype)
    except KeyError:  # no values at all of a dtype numpy cannot hold (e.g. bfloat16)
        raise unimplemented(
            f"Conversion of JSON Value: {_debug_text(value)} to type: {dtype_name(dtype)}"
        ) from None


def _collect(value: Any, level: int, shape: list[int], dtype: int, out: list) -> None:
    rank = len(shape)
    if not isinstance(value, list):
        if level != rank:
            raise invalid_argument(
                f"JSON Value: {_debug_text(value)} found at incorrect level: {level + 1} "
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
        if dtype == types_pb2.DT_STRING:
            return _decode_b64_object(value)
        raise _type_error(value, dtype)
    if dtype in _FLOATS:
        valid = type(value) in (int, float)
    elif dtype in _INT_RANGES:
        low, high = _INT_RANGES[dtype]
        valid = type(value) is int and low <= value <= high
    elif dtype == types_pb2.DT_BOOL:
        valid = type(value) is bool
    elif dtype == types_pb2.DT_STRING:
        valid = type(value) is str
        value = _utf8(value) if valid else value
    else:
        raise unimplemented(
            f"Conversion of JSON Value: {_debug_text(value)} to type: {dtype_name(dtype)}"
        )
    if not valid:
        raise _type_error(value, dtype)
    return value


def _type_error(value: Any, dtype: int) -> ServingError:
    return invalid_argument(
        f"JSON Value: {_debug_text(value)} Type: {_json_type(value)} "
        f"is not of expected type: {dtype_name(dtype)}"
    )


def _to_array(values: list, shape: list[int], dtype: int) -> np.ndarray:
    """Validated leaf values -> the tensor's numpy array (raises KeyError for unknown dtypes)."""
    target = numpy_dtype(dtype)
    if dtype == types_pb2.DT_STRING:
        array = np.empty(len(values), dtype=object)
        array[:] = values
    elif dtype in _INT_RANGES:
        # Narrowing wraps like the C++ int_val -> int8/uint8/int16 conversion does.
        array = np.array(values, dtype=np.uint64 if dtype == types_pb2.DT_UINT64 else np.int64)
        array = array.astype(target)
    else:
        with np.errstate(over="ignore"):  # doubles beyond float32 become +-inf, as upstream
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
    to_json = _b64_value if alias.endswith("_bytes") else _text_value
    flat = np.empty(array.size, dtype=object)
    flat[:] = [to_json(value) for value in array.ravel().tolist()]
    return flat.reshape(array.shape).tolist()


def _b64_value(value: bytes | str) -> dict[str, str]:
    raw = value.encode("utf-8") if isinstance(value, str) else bytes(value)
    return {"b64": base64.b64encode(raw).decode("ascii")}


def _text_value(value: bytes | str) -> str:
    return value if isinstance(value, str) else bytes(value).decode("utf-8", "replace")


def _dtype_label(array: np.ndarray) -> str:
    """TF's name for the dtype in messages (``half``), numpy's when TF has none."""
    try:
        return dtype_name(tf_dtype(array))
    except KeyError:
        return array.dtype.name


# ------------------------------------------------------------------------ classify/regress

_FEATURE_KINDS = {"bytes_list": "bytes", "float_list": "float", "int64_list": "int64"}


def decode_inference_input(doc: dict, method: str) -> input_pb2.Input:
    """``examples`` (+ optional ``context``) as tf.Examples for classify/regress.

    Each JSON token picks the feature list: decimal -> float_list, integer or bool ->
    int64_list, string or ``{"b64": ...}`` -> bytes_list. ``method`` is "classify" or
    "regress"; upstream's messages say "classify" for both, and so do these.
    """
    del method  # upstream's texts do not depend on it; see the docstring
    request_input = input_pb2.Input()
    has_context = "context" in doc
    if has_context:
        _fill_example(doc["context"], request_input.example_list_with_context.context)
    if "examples" not in doc:
        raise _format_error(
            doc, "When method is classify, key 'examples' is expected and was not found"
        )
    examples = doc["examples"]
    if not isinstance(examples, list):
        raise _format_error(doc, "Expecting 'examples' value to be an list/array")
    if not examples:
        raise _format_error(doc, "'examples' value is an empty array")
    target = (
        request_input.example_list_with_context.examples
        if has_context
        else request_input.example_list.examples
    )
    for example in examples:
        _fill_example(example, target.add())
    return request_input


def _fill_example(value: Any, example: example_pb2.Example) -> None:
    """MakeExampleFromJsonObject: a feature per key, a list value being the feature's values."""
    if not isinstance(value, dict):
        raise invalid_argument(f"Example must be JSON object but got JSON {_json_type(value)}")
    for name, content in value.items():
        kind, values = None, []
        for item in content if isinstance(content, list) else (content,):
            kind, item_value = _feature_value(name, item, kind)
            values.append(item_value)
        feature = example.features.feature[name]  # an empty list still creates the feature
        if kind:
            getattr(feature, kind).value.extend(values)


def _feature_value(name: str, item: Any, kind: str | None) -> tuple[str, Any]:
    """AddValueToFeature: the item's list kind and value, checked against earlier items."""
    if item is None or isinstance(item, list) or (isinstance(item, dict) and not _is_b64(item)):
        raise invalid_argument(
            f"Feature: {name} has element with unexpected JSON type: {_json_type(item)}"
        )
    if isinstance(item, bool):
        return _same_kind(name, kind, "int64_list"), int(item)
    if isinstance(item, dict):
        _same_kind(name, kind, "bytes_list")
        decoded = _base64_decode(item["b64"])
        if decoded is None:
            raise invalid_argument("Unable to base64 decode")
        return "bytes_list", decoded
    if isinstance(item, str):
        return _same_kind(name, kind, "bytes_list"), _utf8(item)
    if isinstance(item, float):
        return _same_kind(name, kind, "float_list"), item
    _same_kind(name, kind, "int64_list")
    if item > 2**63 - 1:
        raise invalid_argument(f"Feature: {name} has uint64_t element. Only int64_t is supported.")
    return "int64_list", item


def _same_kind(name: str, kind: str | None, wanted: str) -> str:
    if kind is not None and kind != wanted:
        raise invalid_argument(
            f"Unexpected element type in feature: {name} expecting type: {_FEATURE_KINDS[kind]}"
        )
    return wanted


def encode_classification(result: classification_pb2.ClassificationResult) -> bytes:
    """``{"results": [[[label, score], ...] per example]}``."""
    if not result.classifications:
        raise invalid_argument("Cannot convert empty ClassificationResults to JSON")
    scores = iter(
        float_format.format_floats(
            np.array(
                [c.score for row in result.classifications for c in row.classes],
                dtype=np.float32,
            )
        )
    )
    rows = [
        b"["
        + b",".join(
            b"[" + orjson.dumps(c.label) + b"," + next(scores).encode() + b"]" for c in row.classes
        )
        + b"]"
        for row in result.classifications
    ]
    return b'{"results":[' + b",".join(rows) + b"]}"


def encode_regression(result: regression_pb2.RegressionResult) -> bytes:
    """``{"results": [value per example]}``."""
    if not result.regressions:
        raise invalid_argument("Cannot convert empty RegressionResults to JSON")
    values = np.array([r.value for r in result.regressions], dtype=np.float32)
    return b'{"results":' + float_format.json_array(values) + b"}"


def encode_error(message: str) -> bytes:
    """``{"error": message}``; text that cannot be UTF-8 (lone surrogates) is replaced."""
    try:
        return orjson.dumps({"error": message})
    except orjson.JSONEncodeError:
        return orjson.dumps({"error": message.encode("utf-8", "replace").decode("utf-8")})
