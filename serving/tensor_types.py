"""TensorFlow ``DataType`` <-> numpy dtype, shared by the REST and gRPC codecs.

Strings are numpy ``object`` arrays of ``bytes`` because that is what a TF session accepts
and returns for DT_STRING; every codec must produce/consume exactly that.

The ``DT_*`` values are read once from ``serving.protos`` (the same numbers as TensorFlow's
``types_pb2``, without loading TensorFlow) and kept here as plain ints: the codecs compare
against them on every request, where a lookup through ``serving.protos`` would cost a call.
"""

from __future__ import annotations

import numpy as np

from serving import protos

DT_FLOAT: int = protos.DT_FLOAT
DT_DOUBLE: int = protos.DT_DOUBLE
DT_HALF: int = protos.DT_HALF
DT_INT8: int = protos.DT_INT8
DT_INT16: int = protos.DT_INT16
DT_INT32: int = protos.DT_INT32
DT_INT64: int = protos.DT_INT64
DT_UINT8: int = protos.DT_UINT8
DT_UINT16: int = protos.DT_UINT16
DT_UINT32: int = protos.DT_UINT32
DT_UINT64: int = protos.DT_UINT64
DT_BOOL: int = protos.DT_BOOL
DT_STRING: int = protos.DT_STRING
DT_COMPLEX64: int = protos.DT_COMPLEX64
DT_COMPLEX128: int = protos.DT_COMPLEX128

_NUMPY_BY_DTYPE: dict[int, np.dtype] = {
    DT_FLOAT: np.dtype(np.float32),
    DT_DOUBLE: np.dtype(np.float64),
    DT_HALF: np.dtype(np.float16),
    DT_INT8: np.dtype(np.int8),
    DT_INT16: np.dtype(np.int16),
    DT_INT32: np.dtype(np.int32),
    DT_INT64: np.dtype(np.int64),
    DT_UINT8: np.dtype(np.uint8),
    DT_UINT16: np.dtype(np.uint16),
    DT_UINT32: np.dtype(np.uint32),
    DT_UINT64: np.dtype(np.uint64),
    DT_BOOL: np.dtype(np.bool_),
    DT_STRING: np.dtype(object),
    DT_COMPLEX64: np.dtype(np.complex64),
    DT_COMPLEX128: np.dtype(np.complex128),
}

_DTYPE_BY_NUMPY: dict[np.dtype, int] = {v: k for k, v in _NUMPY_BY_DTYPE.items()}


def dtype_name(dtype: int) -> str:
    """``DT_FLOAT`` -> ``float``: the spelling TF Serving uses in its error messages."""
    return protos.DataType.Name(dtype).removeprefix("DT_").lower()


def numpy_dtype(dtype: int) -> np.dtype:
    """The numpy dtype for a TF DataType; raises KeyError for types numpy cannot hold."""
    return _NUMPY_BY_DTYPE[dtype]


def tf_dtype(array: np.ndarray) -> int:
    """The TF DataType of a numpy array (bytes/str arrays map to DT_STRING)."""
    if array.dtype.kind in ("S", "U", "O"):
        return DT_STRING
    return _DTYPE_BY_NUMPY[array.dtype]
