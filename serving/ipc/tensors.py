"""Numpy arrays into and out of an arena: one block per message, one copy in, zero copies out.

``pack`` writes every array of a message into one arena block (each array 64-byte aligned in
it) and returns small JSON-able descriptors, ``[name, dtype, shape, offset, nbytes]`` with
``offset`` absolute in the arena, which travel in the control message. ``unpack`` on the other
side turns descriptors back into numpy arrays that are views of the shared memory (no copy), so
the model process's batch merge copies each request once, as it does in-process.

Strings (TF's DT_STRING: object arrays of ``bytes`` or ``str``) have no fixed width, so they
travel as an int64 array of lengths followed by the concatenated bytes, under the dtype marker
``"bytes"``; ``unpack`` returns an object array of ``bytes``, which is what TensorFlow gives
back for a string tensor. Fixed-width numpy strings (``S``/``U``) and every numeric dtype travel
as their raw bytes under numpy's ``dtype.str`` (byte order included).

The arena is duck-typed (``alloc(nbytes) -> int | None`` and ``view(offset, nbytes)``), so this
module needs neither the arena module nor the process that owns it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import numpy as np

ALIGNMENT = 64
BYTES = "bytes"  # the dtype marker of a variable-length string tensor

_DTYPES: dict[str, np.dtype] = {}
_INT64 = np.dtype("<i8")


class Allocator(Protocol):
    def alloc(self, nbytes: int) -> int | None: ...

    def view(self, offset: int, nbytes: int) -> memoryview: ...


def _dtype(name: str) -> np.dtype:
    dtype = _DTYPES.get(name)
    if dtype is None:
        dtype = _DTYPES[name] = np.dtype(name)
    return dtype


def _strings(name: str, array: np.ndarray) -> tuple[np.ndarray, bytes]:
    """(lengths, concatenated bytes) of an object array of bytes/str."""
    items = array.ravel(order="C").tolist()
    try:
        encoded = [item if isinstance(item, bytes) else item.encode() for item in items]
    except AttributeError:
        bad = next(item for item in items if not isinstance(item, bytes | str))
        raise TypeError(
            f"tensor {name!r}: an object array must hold bytes or str (a string tensor), "
            f"found {type(bad).__name__}"
        ) from None
    lengths = np.fromiter(map(len, encoded), dtype=_INT64, count=len(encoded))
    return lengths, b"".join(encoded)


# One entry per array: (name, descriptor dtype, shape, offset in block, nbytes, payload), where
# payload is the ndarray to copy, or (lengths, data) for a string tensor.
_Plan = list[tuple[str, str, list[int], int, int, Any]]


def _plan(arrays: Mapping[str, np.ndarray | list[np.ndarray]]) -> tuple[_Plan, int]:
    """A list of arrays (``pack_rows``) is planned as their concatenation along axis 0."""
    plan: _Plan = []
    position = 0
    for name, array in arrays.items():
        parts = None
        if isinstance(array, list):
            parts, array = array, array[0]
        elif not isinstance(array, np.ndarray):
            array = np.asarray(array)
        dtype = array.dtype
        kind = dtype.kind
        if kind == "O":
            if parts is not None:  # references only: cheap to join before encoding
                array = np.concatenate(parts)
            lengths, data = _strings(name, array)
            nbytes = lengths.nbytes + len(data)
            plan.append((name, BYTES, list(array.shape), position, nbytes, (lengths, data)))
        else:
            if kind == "V" and dtype.fields is not None:
                raise TypeError(f"tensor {name!r}: structured dtype {dtype} is not a tensor")
            shape = list(array.shape)
            if parts is not None:
                shape[0] = sum(len(part) for part in parts)
            nbytes = math.prod(shape) * dtype.itemsize
            plan.append((name, dtype.str, shape, position, nbytes, parts or array))
        position += -(-nbytes // ALIGNMENT) * ALIGNMENT
    return plan, position


def block_size(arrays: Mapping[str, np.ndarray]) -> int:
    """The bytes ``pack`` allocates for these arrays (each rounded up to 64)."""
    return _plan(arrays)[1]


def pack(
    arrays: Mapping[str, np.ndarray | list[np.ndarray]], arena: Allocator
) -> tuple[list, int] | None:
    """Copy ``arrays`` into one new arena block: (descriptors, block offset), or None when the
    arena has no room (the caller decides: wait, or answer RESOURCE_EXHAUSTED). The block
    belongs to the caller until it frees it with ``arena.free(block_offset)``. A list of
    arrays is packed as their concatenation along axis 0 (``pack_rows``)."""
    plan, total = _plan(arrays)
    block = arena.alloc(total)
    if block is None:
        return None
    descriptors = []
    memory = arena.view(block, total) if total else None
    for name, dtype, shape, position, nbytes, payload in plan:
        if nbytes:
            if dtype == BYTES:
                lengths, data = payload
                size = lengths.nbytes
                memory[position : position + size] = lengths.view(np.uint8)
                memory[position + size : position + nbytes] = data
            elif isinstance(payload, list):  # pack_rows: concatenated straight into the block
                destination = np.frombuffer(
                    memory[position : position + nbytes], dtype=payload[0].dtype
                ).reshape(shape)
                np.concatenate(payload, out=destination, casting="no")
            elif payload.flags.c_contiguous and payload.dtype.kind not in "Mm":
                # The buffer protocol's memcpy: cheaper than building a numpy destination.
                memory[position : position + nbytes] = memoryview(payload).cast("B")
            else:  # strided, or datetimes (which numpy does not export as a buffer)
                destination = np.frombuffer(
                    memory[position : position + nbytes], dtype=payload.dtype
                ).reshape(payload.shape)
                np.copyto(destination, payload, casting="no")
        descriptors.append([name, dtype, shape, block + position, nbytes])
    return descriptors, block


def pack_rows(parts: list[Mapping[str, np.ndarray]], arena: Allocator) -> tuple[list, int] | None:
    """``pack`` for several requests' inputs at once: each tensor is the concatenation of the
    parts' tensors of that name along axis 0, written straight into the block (one copy, as
    ``pack``). Every part must hold the same names, with arrays of one dtype whose shapes
    differ only in their first dimension."""
    if len(parts) == 1:
        return pack(parts[0], arena)
    return pack({name: [part[name] for part in parts] for name in parts[0]}, arena)


def unpack(descriptors: list, view_of: Callable[[int, int], memoryview]) -> dict[str, np.ndarray]:
    """Arrays from ``pack``'s descriptors. Numeric arrays are writable views of the shared
    memory (valid while the block is not freed); string arrays are decoded to object arrays of
    ``bytes``. A descriptor whose sizes do not add up raises ValueError."""
    arrays: dict[str, np.ndarray] = {}
    for name, dtype_name, shape, offset, nbytes in descriptors:
        count = math.prod(shape)
        if dtype_name == BYTES:
            arrays[name] = _unpack_strings(name, shape, count, view_of(offset, nbytes))
            continue
        dtype = _dtype(dtype_name)
        if count * dtype.itemsize != nbytes:
            raise ValueError(
                f"tensor {name!r}: {nbytes} bytes cannot hold shape {shape} of {dtype_name}"
            )
        if nbytes == 0:
            arrays[name] = np.empty(shape, dtype)
        else:
            arrays[name] = np.frombuffer(view_of(offset, nbytes), dtype=dtype).reshape(shape)
    return arrays


def _unpack_strings(name: str, shape: list[int], count: int, memory: memoryview) -> np.ndarray:
    head = count * 8
    if head > len(memory):
        raise ValueError(f"tensor {name!r}: {len(memory)} bytes cannot hold {count} lengths")
    lengths = np.frombuffer(memory[:head], dtype=_INT64)
    if count and (int(lengths.min()) < 0 or int(lengths.sum()) != len(memory) - head):
        raise ValueError(f"tensor {name!r}: string lengths do not match the block's bytes")
    data = bytes(memory[head:])
    out = np.empty(count, dtype=object)
    if count:
        ends = np.cumsum(lengths).tolist()
        starts = [0, *ends[:-1]]
        out[:] = [data[start:end] for start, end in zip(starts, ends, strict=True)]
    return out.reshape(shape)
