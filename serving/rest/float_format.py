"""TF Serving's text for float and double tensor values (``WriteDecimal`` in json_tensor.cc).

Upstream prints ``%g`` (6 significant digits) when that text parses back to the same
float32/float64, otherwise ``%.9g`` (float32) or ``%.17g`` (float64); it appends ``.0`` when the
text has neither ``.`` nor ``e`` and writes ``NaN``/``Infinity``/``-Infinity`` as bare tokens.
No JSON library produces that text (``repr`` gives the *shortest* digits: float32 1/3 is
``0.33333334`` where TF Serving says ``0.333333343``), and clients that parse both servers'
answers as doubles must see identical numbers, so the text is rebuilt here.

Speed: done value by value in Python (format, parse back, reformat) a 1000x100 float32 tensor
takes 150-220 ms on the shared 2-core CI box. The vectorised path rounds ``|x| * 10**k`` with
correctly rounded float64 operations and keeps a result only where the error margin provably
cannot change the rounding (i.e. float64 yields printf's digits); the characters are then laid
out in a fixed-slot uint8 matrix whose empty cells are dropped. Values it cannot vouch for
(exact ties, float64 values that need 17 digits or lie outside ~1e-17..1e27) use the reference
:func:`format_float`. Same tensor, same box: 22-32 ms for :func:`json_array`.
"""

from __future__ import annotations

import math
import struct
from fractions import Fraction

import numpy as np

# 10**0 .. 10**22 are exact float64 values, so products and quotients with them are correctly
# rounded; the exactness argument above relies on that.
_MAX_EXACT_POWER = 22
_POW10 = 10.0 ** np.arange(_MAX_EXACT_POWER + 1)
# Scaling by up to 10**66 in three such steps covers every float32 (1e-45 .. 3e38).
_SCALE_STEPS = 3
# Relative error budget for up to three roundings (each <= 2**-53), with a 2x safety factor.
_MARGIN = 2.0**-50

# Fixed slots of one value's characters (0 = unused, dropped at the end):
# sign | "0" "." and three zeros of 0.000ddd | ten (digit, optional ".") pairs | "e" sign ddd
_SIGN, _LEAD, _PAIRS, _EXP = 0, 1, 6, 26
_SLOTS = 31  # also fits the longest reference text, "-2.2250738585072014e-308" (24)
_DIGITS = 9  # significands are widened to 9 digits; a 10th, always "0", backs the ".0"


def format_float(value: float, single: bool) -> str:
    """One value exactly as TF Serving writes it; ``single`` selects float32 round-tripping.

    This is the reference the vectorised path falls back to and is tested against.
    """
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "-Infinity" if value < 0 else "Infinity"
    text = f"{value:g}"
    if not _round_trips(text, value, single):
        text = f"{value:.9g}" if single else f"{value:.17g}"
    if "." not in text and "e" not in text:
        text += ".0"
    return text


# Smallest normal float32: above it a float32's half-ulp is at most |v| * 2**-24.
_FLOAT32_MIN_NORMAL = 1.1754943508222875e-38


def _small_texts(values: list[float], single: bool) -> list[str]:
    """:func:`format_float` of each value, for the few values of a typical online response.

    printf's work is done for all values at once (one ``%`` call for the 6-digit texts, one
    for the 9/17-digit ones), leaving Python only the choice per value. For float32 the
    common cases are decided without the exact check: ``%g`` text whose double is the value
    round-trips, and text further than twice the largest half-ulp from the value cannot (the
    double's own error is ~2**-53 relative).
    """
    count = len(values)
    packed = tuple(values)
    short = "%g," * count % packed
    if "n" in short:  # nan or inf: their own tokens, value by value
        return [format_float(value, single) for value in values]
    long = (("%.9g," if single else "%.17g,") * count % packed).split(",")
    texts = []
    for text, value, wide in zip(short.split(",")[:count], values, long[:count], strict=True):
        parsed = float(text)
        if parsed != value:
            if not single:
                text = wide
            else:
                magnitude = abs(value)
                far = (
                    magnitude >= _FLOAT32_MIN_NORMAL and abs(parsed - value) > magnitude * 2.0**-23
                )
                if far or not _round_trips(text, value, True):
                    text = wide
        if "." not in text and "e" not in text:
            text += ".0"
        texts.append(text)
    return texts


def _round_trips(text: str, value: float, single: bool) -> bool:
    """Whether ``text`` parses back to ``value`` (absl::SimpleAtof / SimpleAtod semantics)."""
    parsed = float(text)
    if not single:
        return parsed == value
    # absl rounds the decimal straight to float32. Going through float64 gives the same result
    # unless the double sits next to a float32 rounding boundary, which its neighbours reveal.
    below, above = math.nextafter(parsed, -math.inf), math.nextafter(parsed, math.inf)
    if _to_float32(below) == _to_float32(above):
        return _to_float32(parsed) == value
    return _rounds_to_float32(Fraction(text), value)


def _to_float32(value: float) -> float:
    """float64 -> float32 with round-to-nearest-even, as a C cast does."""
    try:
        return struct.unpack("f", struct.pack("f", value))[0]
    except OverflowError:
        return math.copysign(math.inf, value)


def _rounds_to_float32(decimal: Fraction, value: float) -> bool:
    """Exact check: does ``decimal`` round (nearest, ties to even) to the float32 ``value``?"""
    exact = Fraction(value)
    with np.errstate(over="ignore"):
        below = float(np.nextafter(np.float32(value), np.float32(-np.inf)))
        above = float(np.nextafter(np.float32(value), np.float32(np.inf)))
    low = (exact + Fraction(below)) / 2
    high = (exact + Fraction(above)) / 2 if math.isfinite(above) else 2 * exact - low
    if low < decimal < high:
        return True
    even_significand = int(np.float32(value).view(np.uint32)) % 2 == 0
    return even_significand and decimal in (low, high)


def format_floats(array: np.ndarray) -> list[str]:
    """Text of every element of a float32/float64 array, in C order."""
    return [token.decode("ascii") for token in json_rows(np.ravel(array))]


def json_array(array: np.ndarray) -> bytes:
    """The whole array as nested JSON lists (a bare number for rank 0)."""
    if array.ndim == 0:
        return json_rows(array.reshape(1))[0]
    return b"[" + b",".join(json_rows(array)) + b"]"


# Below this many values the vectorised path's fixed cost (~40 numpy calls, ~0.3 ms) exceeds
# formatting value by value (~2.5 us each): typical online predictions are that small.
_VECTORISE_FROM = 128


def json_rows(array: np.ndarray) -> list[bytes]:
    """JSON text of each ``array[i]`` (rank >= 1): the rows of a row-format prediction."""
    inner = array.shape[1:]
    if array.size == 0:
        return [_empty_json(inner)] * array.shape[0] if array.shape[0] else []
    if array.size < _VECTORISE_FROM:
        texts = _small_texts(np.ravel(array).tolist(), array.dtype == np.float32)
        return [_nested_text(texts, inner, row * array[0].size) for row in range(array.shape[0])]
    flat = np.ascontiguousarray(array).ravel()
    depth = len(inner)
    # One column per value, one row per character slot: every fill below writes contiguous
    # memory; a single transpose then puts the characters in reading order.
    columns = np.zeros((depth + _SLOTS + depth + 1, flat.size), dtype=np.uint8)
    _fill_values(flat, columns[depth : depth + _SLOTS])
    _fill_frame(columns, inner)
    text = np.ascontiguousarray(columns.T).ravel()
    return np.compress(text != 0, text).tobytes().split(b"\n")[:-1]


def _nested_text(texts: list[str], shape: tuple[int, ...], start: int) -> bytes:
    """JSON of the value of ``shape`` whose C-order texts begin at ``texts[start]``."""
    if not shape:
        return texts[start].encode()
    if len(shape) == 1:
        return ("[" + ",".join(texts[start : start + shape[0]]) + "]").encode()
    step = math.prod(shape[1:])
    items = [_nested_text(texts, shape[1:], start + i * step) for i in range(shape[0])]
    return b"[" + b",".join(items) + b"]"


def _empty_json(shape: tuple[int, ...]) -> bytes:
    """Nested empty lists for a shape containing a zero dimension."""
    if shape[0] == 0:
        return b"[]"
    return b"[" + b",".join([_empty_json(shape[1:])] * shape[0]) + b"]"


def _fill_frame(columns: np.ndarray, inner: tuple[int, ...]) -> None:
    """Brackets of each row's nested lists, then ',' between values and '\\n' ending a row."""
    row_size = math.prod(inner)
    position = np.arange(columns.shape[1]) % row_size
    for level in range(len(inner)):
        stride = math.prod(inner[level:])
        columns[level] = np.where(position % stride == 0, ord("["), 0)
        columns[-2 - level] = np.where((position + 1) % stride == 0, ord("]"), 0)
    columns[-1] = np.where((position + 1) % row_size == 0, ord("\n"), ord(","))


def _fill_values(flat: np.ndarray, slots: np.ndarray) -> None:
    """Write each value's characters into its column of ``slots``.

    Zeros, NaN and infinities are laid out as 1.0 and then patched: a zero keeps the sign and
    "." of "1.0" with its digit replaced, the others get their fixed token. The few values the
    vectorised path cannot prove are overwritten with reference text.
    """
    single = flat.dtype == np.float32
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        magnitude = np.abs(flat.astype(np.float64))
        regular = np.isfinite(magnitude) & (magnitude != 0)
        significand, exponent, digits, proven = _significands(
            np.where(regular, magnitude, 1.0), single
        )
    slots[...] = _layout(np.signbit(flat), significand, exponent, digits)
    slots[_PAIRS, magnitude == 0] = ord("0")
    for token, rows in (
        (b"NaN", np.isnan(magnitude)),
        (b"Infinity", flat == np.inf),
        (b"-Infinity", flat == -np.inf),
    ):
        slots[:, rows] = np.frombuffer(token.ljust(_SLOTS, b"\0"), np.uint8)[:, None]
    rest = np.flatnonzero(~proven)
    if rest.size:
        texts = [format_float(value, single).encode() for value in flat[rest].tolist()]
        block = np.frombuffer(b"".join(text.ljust(_SLOTS, b"\0") for text in texts), np.uint8)
        slots[:, rest] = block.reshape(rest.size, _SLOTS).T


def _significands(
    magnitude: np.ndarray, single: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per value: 9-digit significand, decimal exponent, printf precision, and 'proven' mask."""
    estimate = np.floor(np.log10(magnitude)).astype(np.int64)
    short, short_exp, proven = _round_to_digits(magnitude, estimate, 6)
    candidate, one_step, reachable = _scale(short.astype(np.float64), short_exp - 5)
    if single:
        # Every decimal within the candidate's error margin must round to the same float32,
        # or the float64 detour could disagree with absl's direct decimal -> float32 parse.
        lower = (candidate * (1 - _MARGIN)).astype(np.float32)
        upper = (candidate * (1 + _MARGIN)).astype(np.float32)
        proven &= reachable & (lower == upper)
        round_trips = candidate.astype(np.float32) == magnitude
        long, long_exp, long_proven = _round_to_digits(magnitude, estimate, 9)
    else:
        # Equality with a double needs the candidate correctly rounded: one step only. Values
        # that need 17 digits exceed float64 precision and take the reference path.
        proven &= one_step
        round_trips = candidate == magnitude
        long, long_exp, long_proven = short, short_exp, np.zeros_like(proven)
    proven &= round_trips | long_proven
    significand = np.where(round_trips, short * 1000, long)
    exponent = np.where(round_trips, short_exp, long_exp)
    return significand, exponent, np.where(round_trips, 6, 9), proven


def _round_to_digits(
    magnitude: np.ndarray, estimate: np.ndarray, digits: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """printf's rounding to ``digits`` significant digits, as integer significand and exponent.

    ``estimate`` is floor(log10(magnitude)), possibly off by one next to powers of ten.
    Returns ``(m, e, proven)`` with ``10**(digits-1) <= m < 10**digits`` and the value
    ~ ``m * 10**(e - digits + 1)``; ``proven`` is False where float64 cannot settle the rounding.
    """
    scaled = _scale(magnitude, digits - 1 - estimate)[0]
    # log10 may be off by one next to powers of ten; one correction settles it.
    exponent = estimate + (scaled >= _POW10[digits]) - (scaled < _POW10[digits - 1]).astype(int)
    scaled, _, proven = _scale(magnitude, digits - 1 - exponent)
    proven &= (scaled >= _POW10[digits - 1]) & (scaled <= _POW10[digits])
    # If no rounding boundary k + 0.5 lies within the error margin of ``scaled``, rint()
    # rounds the exact product the same way printf rounds the exact value.
    proven &= np.abs(scaled - np.floor(scaled) - 0.5) > scaled * _MARGIN
    rounded = np.rint(scaled)
    carry = rounded == _POW10[digits]
    rounded[carry] = _POW10[digits - 1]
    exponent += carry
    return np.where(proven, rounded, _POW10[digits - 1]).astype(np.int64), exponent, proven


def _scale(values: np.ndarray, power: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``values * 10**power`` in up to three correctly rounded steps by exact powers of ten.

    Returns the product, whether one step sufficed (then it is correctly rounded), and whether
    the power was in reach (|power| <= 66). Each step adds at most half an ulp of error, far
    inside ``_MARGIN``.
    """
    result, remaining = values, power
    for _ in range(_SCALE_STEPS):
        step = np.clip(remaining, -_MAX_EXACT_POWER, _MAX_EXACT_POWER)
        factor = _POW10[np.abs(step)]
        result = np.where(step >= 0, result * factor, result / factor)
        remaining = remaining - step
        if not remaining.any():  # the usual case: everything within 1e-22 .. 1e22
            break
    return result, np.abs(power) <= _MAX_EXACT_POWER, remaining == 0


def _layout(
    negative: np.ndarray, significand: np.ndarray, exponent: np.ndarray, digits: np.ndarray
) -> np.ndarray:
    """Characters of printf ``%.{digits}g`` (plus TF Serving's ``.0``): slots x values.

    Cells are written as ``condition * char`` (bool x uint8), several times cheaper than
    np.where; an unused cell is 0.
    """
    out = np.empty((_SLOTS, significand.size), dtype=np.uint8)
    value_digits = _decimal_digits(significand)
    significant = (_DIGITS - np.argmax(value_digits[::-1] != 0, axis=0)).astype(np.int16)
    exponent = exponent.astype(np.int16)
    scientific = (exponent < -4) | (exponent >= digits)
    fraction_only = ~scientific & (exponent < 0)
    with_integer = ~scientific & (exponent >= 0)
    # An integral fixed value keeps one zero digit after its '.', giving TF Serving's ".0".
    used = np.where(with_integer, np.maximum(significant, exponent + 2), significant)
    dot_after = np.where(with_integer, exponent, np.where(significant > 1, 0, -1))
    dot_after[fraction_only] = -1

    out[_SIGN] = negative * _char("-")
    out[_LEAD] = fraction_only * _char("0")
    out[_LEAD + 1] = fraction_only * _char(".")
    for zero in range(3):  # 0.0ddd .. 0.000ddd
        out[_LEAD + 2 + zero] = (fraction_only & (zero < -exponent - 1)) * _char("0")
    for index in range(_DIGITS + 1):
        digit = value_digits[index] + _char("0") if index < _DIGITS else _char("0")
        out[_PAIRS + 2 * index] = (index < used) * digit
        out[_PAIRS + 2 * index + 1] = (dot_after == index) * _char(".")
    power = np.abs(exponent)
    out[_EXP] = scientific * _char("e")
    out[_EXP + 1] = scientific * np.where(exponent < 0, _char("-"), _char("+"))
    out[_EXP + 2] = (scientific & (power >= 100)) * (power // 100 + ord("0")).astype(np.uint8)
    out[_EXP + 3] = scientific * (power // 10 % 10 + ord("0")).astype(np.uint8)
    out[_EXP + 4] = scientific * (power % 10 + ord("0")).astype(np.uint8)
    return out


def _char(text: str) -> np.uint8:
    return np.uint8(ord(text))


def _decimal_digits(significand: np.ndarray) -> np.ndarray:
    """The 9 decimal digits of each significand, most significant first (digits x values).

    Float64 division by an exact power of ten is correctly rounded and a 9-digit quotient is
    never within rounding distance of the next integer, so floor() gives the integer quotient
    (float ops are several times faster than int64 division).
    """
    values = significand.astype(np.float64)
    result = np.empty((_DIGITS, values.size), dtype=np.uint8)
    for index in range(_DIGITS):
        quotient = np.floor(values / _POW10[_DIGITS - 1 - index])
        result[index] = quotient - 10 * np.floor(quotient / 10)
    return result
