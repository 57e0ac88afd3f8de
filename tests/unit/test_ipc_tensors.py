"""Tensors through an arena: every dtype round-trips, numeric arrays come back as views of the
shared memory, strings as object arrays of bytes."""

from __future__ import annotations

import numpy as np
import pytest

from serving.ipc.arena import Arena
from serving.ipc.tensors import BYTES, block_size, pack, unpack


@pytest.fixture
def arena():
    arena = Arena(4 << 20, "tensors")
    yield arena
    arena.close()


NUMERIC = [
    "?",
    "i1",
    "i2",
    "i4",
    "i8",
    "u1",
    "u2",
    "u4",
    "u8",
    "f2",
    "f4",
    "f8",
    "c8",
    "c16",
    ">i4",  # byte order travels in dtype.str
    ">f8",
    "S5",
    "U3",
    "M8[s]",
]


def _sample(dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    rng = np.random.default_rng(7)
    values = rng.integers(0, 100, size=shape)
    kind = np.dtype(dtype).kind
    if kind == "S":
        return values.astype("S5")
    if kind == "U":
        return values.astype("U3")
    if kind == "c":
        return (values + 1j * values[::-1] if values.ndim else values + 1j).astype(dtype)
    return values.astype(dtype)


@pytest.mark.parametrize("dtype", NUMERIC)
@pytest.mark.parametrize("shape", [(3, 4), (), (0,), (2, 0, 3)])
def test_numeric_dtypes_round_trip_as_views_of_the_arena(arena, dtype, shape):
    original = _sample(dtype, shape)
    descriptors, block = pack({"t": original}, arena)
    (name, dtype_str, shape_list, offset, nbytes) = descriptors[0]
    assert name == "t" and dtype_str == original.dtype.str and shape_list == list(shape)
    assert offset % 64 == 0 and nbytes == original.nbytes
    result = unpack(descriptors, arena.view)["t"]
    assert result.dtype == original.dtype and result.shape == original.shape
    np.testing.assert_array_equal(result, original)
    if original.size:
        # Zero copy: the array reads the arena's bytes, not a private copy.
        arena.view(offset, 1)[0] ^= 0xFF
        assert result.tobytes() != original.tobytes()
    arena.free(block)
    assert arena.used == 0


def test_non_contiguous_and_fortran_inputs_are_copied_once_into_c_order(arena):
    base = np.arange(60, dtype=np.float32).reshape(6, 10)
    arrays = {
        "strided": base[::2, ::3],
        "transposed": base.T,
        "fortran": np.asfortranarray(base),
        "negative": base[::-1],
    }
    descriptors, _ = pack(arrays, arena)
    result = unpack(descriptors, arena.view)
    for name, original in arrays.items():
        np.testing.assert_array_equal(result[name], original)
        assert result[name].flags.c_contiguous


def test_strings_travel_as_lengths_and_bytes_and_come_back_as_bytes(arena):
    strings = np.array([[b"", "h\u00e9llo"], [b"\x00\xff", "x" * 1000]], dtype=object)
    scalar = np.array(b"only", dtype=object)
    empty = np.empty((0, 4), dtype=object)
    descriptors, _ = pack({"s": strings, "scalar": scalar, "empty": empty}, arena)
    assert [d[1] for d in descriptors] == [BYTES, BYTES, BYTES]
    result = unpack(descriptors, arena.view)
    assert result["s"].dtype == object and result["s"].shape == (2, 2)
    assert result["s"].tolist() == [[b"", "h\u00e9llo".encode()], [b"\x00\xff", b"x" * 1000]]
    assert result["scalar"].shape == () and result["scalar"].item() == b"only"
    assert result["empty"].shape == (0, 4) and result["empty"].dtype == object


def test_one_block_per_message_of_the_size_block_size_reports(arena):
    arrays = {
        "a": np.ones((3, 5), np.float32),  # 60 bytes -> 64
        "b": np.array([b"abc", b"de"], dtype=object),  # 16 + 5 -> 64
        "c": np.ones(17, np.int64),  # 136 -> 192
    }
    assert block_size(arrays) == 64 + 64 + 192
    descriptors, block = pack(arrays, arena)
    assert arena.used == block_size(arrays)
    assert [d[3] - block for d in descriptors] == [0, 64, 128]
    arena.free(block)
    assert arena.used == 0


def test_no_room_returns_none_and_allocates_nothing():
    small = Arena(4096, "small")
    try:
        assert pack({"big": np.zeros(2048, np.float32)}, small) is None
        assert small.used == 0
    finally:
        small.close()


def test_object_arrays_of_other_things_and_bad_descriptors_are_clear_errors(arena):
    with pytest.raises(TypeError, match="must hold bytes or str"):
        pack({"ints": np.array([1, b"x"], dtype=object)}, arena)
    with pytest.raises(TypeError, match="structured"):
        pack({"rec": np.zeros(2, dtype=[("a", "i4"), ("b", "f4")])}, arena)
    descriptors, _ = pack({"x": np.ones(4, np.float32), "s": np.array([b"ab"], object)}, arena)
    wrong_size = [[*descriptors[0][:4], 12], descriptors[1]]
    with pytest.raises(ValueError, match="cannot hold shape"):
        unpack(wrong_size, arena.view)
    name, dtype, shape, offset, nbytes = descriptors[1]
    with pytest.raises(ValueError, match="lengths do not match"):
        unpack([[name, dtype, shape, offset, nbytes - 1]], arena.view)
