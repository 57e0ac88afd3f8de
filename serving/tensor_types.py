"""TensorFlow ``DataType`` <-> numpy dtype, shared by the REST and gRPC codecs.

Strings are numpy ``object`` arrays of ``bytes`` because that is what a TF session accepts
and returns for DT_STRING; every codec must produce/consume exactly that.
"""

from __future__ import annotations

import numpy as np
from tensorflow.core.framework import types_pb2

_NUMPY_BY_DTYPE: dict[int, np.dtype] = {
    types_pb2.DT_FLOAT: np.dtype(np.float32),
    types_pb2.DT_DOUBLE: np.dtype(np.float64),
    types_pb2.DT_HALF: np.dtype(np.float16),
    types_pb2.DT_INT8: np.dtype(np.int8),
    types_pb2.DT_INT16: np.dtype(np.int16),
    types_pb2.DT_INT32: np.dtype(np.int32),
    types_pb2.DT_INT64: np.dtype(np.int64),
    types_pb2.DT_UINT8: np.dtype(np.uint8),
    types_pb2.DT_UINT16: np.dtype(np.uint16),
    types_pb2.DT_UINT32: np.dtype(np.uint32),
    types_pb2.DT_UINT64: np.dtype(np.uint64),
    types_pb2.DT_BOOL: np.dtype(np.bool_),
    types_pb2.DT_STRING: np.dtype(object),
    types_pb2.DT_COMPLEX64: np.dtype(np.complex64),
    types_pb2.DT_COMPLEX128: np.dtype(np.complex128),
}

_DTYPE_BY_NUMPY: dict[np.dtype, int] = {v: k for k, v in _NUMPY_BY_DTYPE.items()}


def dtype_name(dtype: int) -> str:
    """``DT_FLOAT`` -> ``float``: the spelling TF Serving uses in its error messages."""
    return types_pb2.DataType.Name(dtype).removeprefix("DT_").lower()


def numpy_dtype(dtype: int) -> np.dtype:
    """The numpy dtype for a TF DataType; raises KeyError for types numpy cannot hold."""
    return _NUMPY_BY_DTYPE[dtype]


def tf_dtype(array: np.ndarray) -> int:
    """The TF DataType of a numpy array (bytes/str arrays map to DT_STRING)."""
    if array.dtype.kind in ("S", "U", "O"):
        return types_pb2.DT_STRING
    return _DTYPE_BY_NUMPY[array.dtype]
