"""TF Serving's float text: WriteDecimal's %g / %.9g / %.17g rule and the vectorised writer."""

import math

import numpy as np
import pytest

from serving.rest.float_format import format_float, format_floats, json_array, json_rows


@pytest.mark.parametrize(
    ("value", "dtype", "text"),
    [
        # json_tensor_test.cc FromJsonSingleFloatTensorSixDigitPrecision / NonFinite
        (9000000, np.float32, "9e+06"),
        (999999, np.float32, "999999.0"),
        (0.5, np.float32, "0.5"),
        (0.0003, np.float32, "0.0003"),
        (0.00003, np.float32, "3e-05"),
        (555557.5, np.float32, "555557.5"),
        (3, np.float32, "3.0"),
        (math.nan, np.float32, "NaN"),
        (math.inf, np.float32, "Infinity"),
        (-math.inf, np.float32, "-Infinity"),
        # %g round-trips: 6 digits suffice.
        (2.5, np.float32, "2.5"),
        (1e-05, np.float32, "1e-05"),
        (0.1, np.float32, "0.1"),
        (-0.0, np.float32, "-0.0"),
        (0.0, np.float32, "0.0"),
        (100000, np.float32, "100000.0"),
        (1e6, np.float32, "1e+06"),
        # %g loses the value: float32 falls back to %.9g.
        (1 / 3, np.float32, "0.333333343"),
        (123456789, np.float32, "123456792.0"),
        (16777217, np.float32, "16777216.0"),
        (100000.5, np.float32, "100000.5"),
        (3.4028234663852886e38, np.float32, "3.40282347e+38"),
        (1e-45, np.float32, "1.4013e-45"),  # subnormal: 6 digits already round-trip
        # float64: %.17g fallback.
        (1 / 3, np.float64, "0.33333333333333331"),
        (0.1, np.float64, "0.1"),
        (1e16, np.float64, "1e+16"),
        (2**53 + 2, np.float64, "9007199254740994.0"),
        (5e-324, np.float64, "4.94066e-324"),
        (1.7976931348623157e308, np.float64, "1.7976931348623157e+308"),
        (-123456.5, np.float64, "-123456.5"),
    ],
)
def test_upstream_float_text(value, dtype, text):
    assert format_float(float(dtype(value)), dtype == np.float32) == text
    assert format_floats(np.array([value], dtype=dtype)) == [text]


def _samples(dtype, rng):
    """Values around every branch: integers, ties, powers of ten, tiny/huge, raw bit patterns."""
    count = 3000
    bits = np.uint32 if dtype == np.float32 else np.uint64
    span = 40 if dtype == np.float32 else 300
    raw = rng.integers(0, np.iinfo(bits).max, count, dtype=bits, endpoint=True).view(dtype)
    decimals = rng.integers(-(10**7), 10**7, count) / 10.0 ** rng.integers(0, 12, count)
    with np.errstate(over="ignore", invalid="ignore"):
        return [
            rng.standard_normal(count).astype(dtype),
            (rng.standard_normal(count) * 10.0 ** rng.integers(-span, span, count)).astype(dtype),
            rng.integers(-(10**10), 10**10, count).astype(dtype),
            decimals.astype(dtype),
            (rng.integers(-(10**6), 10**6, count) + 0.5).astype(dtype),
            (10.0 ** rng.integers(-20, 20, count)).astype(dtype),
            raw,
        ]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_vectorised_writer_matches_reference(dtype):
    rng = np.random.default_rng(20240611)
    single = dtype == np.float32
    for sample in _samples(dtype, rng):
        expected = [format_float(value, single) for value in sample.tolist()]
        assert format_floats(sample) == expected


def test_json_array_nests_like_the_tensor():
    values = np.array([[1.0, 2.5], [-0.0, np.nan]], dtype=np.float32)
    assert json_array(values) == b"[[1.0,2.5],[-0.0,NaN]]"
    assert json_array(np.float32(0.1)) == b"0.1"
    assert json_array(np.arange(8, dtype=np.float64).reshape(2, 2, 2)) == (
        b"[[[0.0,1.0],[2.0,3.0]],[[4.0,5.0],[6.0,7.0]]]"
    )


@pytest.mark.parametrize(
    ("shape", "text"),
    [((0,), b"[]"), ((2, 0), b"[[],[]]"), ((0, 3), b"[]"), ((1, 2, 0), b"[[[],[]]]")],
)
def test_empty_dimensions(shape, text):
    assert json_array(np.zeros(shape, dtype=np.float32)) == text


def test_json_rows_gives_one_text_per_batch_item():
    values = np.array([[[1.0], [2.0]], [[3.0], [math.inf]]], dtype=np.float32)
    assert json_rows(values) == [b"[[1.0],[2.0]]", b"[[3.0],[Infinity]]"]
    assert json_rows(np.array([0.25, 7.0])) == [b"0.25", b"7.0"]
    assert json_rows(np.zeros((2, 0))) == [b"[]", b"[]"]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_small_and_vectorised_paths_write_the_same_text(dtype):
    rng = np.random.default_rng(7)
    values = (rng.standard_normal((200, 3)) * 10.0 ** rng.integers(-6, 8, (200, 3))).astype(dtype)
    values[0, 0], values[1, 1], values[2, 2] = np.nan, -np.inf, 0.0
    whole = json_rows(values)  # 600 values: the vectorised path
    pieces = [row for chunk in np.split(values, 100) for row in json_rows(chunk)]  # 6 each
    assert whole == pieces


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_small_path_matches_reference(dtype):
    """Outputs under 128 values take the per-value path with its float32 shortcuts."""
    rng = np.random.default_rng(20261122)
    single = dtype == np.float32
    for sample in _samples(dtype, rng):
        expected = [format_float(value, single).encode() for value in sample.tolist()]
        rows = [text for chunk in np.array_split(sample, 60) for text in json_rows(chunk)]
        assert rows == expected
