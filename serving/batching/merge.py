"""Merging requests into one batch along dim 0 and splitting the outputs back: numpy only.

All per-request work is whole-array numpy (``concatenate``, slicing, ``pad``); nothing loops
over rows or elements, so the cost per request stays a few microseconds.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np

from serving.errors import failed_precondition, invalid_argument

Tensors = Mapping[str, np.ndarray]


def task_rows(inputs: Tensors) -> int:
    """A request's batch size: the dim 0 all its inputs share (batching_session.cc's checks)."""
    rows = -1
    for array in inputs.values():
        if array.ndim == 0:
            raise invalid_argument("Batching Run() input tensors must have at least one dimension")
        if rows >= 0 and array.shape[0] != rows:
            raise invalid_argument(
                "Batching Run() input tensors must have equal 0th-dimension size"
            )
        rows = array.shape[0]
    return max(rows, 0)


def merge_key(inputs: Tensors, aliases: Sequence[str], pad_variable_length: bool) -> Hashable:
    """Requests with equal keys can be concatenated; the batcher only merges those.

    Without padding the inner dimensions must match exactly; with padding only the rank does.
    Dtypes must always match (a request decoded from a wrongly typed TensorProto gets its own
    model call and its own error instead of spoiling the batch).
    """
    if pad_variable_length:
        return tuple((inputs[a].dtype, inputs[a].ndim) for a in aliases)
    return tuple((inputs[a].dtype, inputs[a].shape[1:]) for a in aliases)


def merge(
    parts: Sequence[Tensors], aliases: Sequence[str], padded_rows: int, pad_variable_length: bool
) -> dict[str, np.ndarray]:
    """One batch of ``padded_rows`` rows: the parts in order, then copies of the last part's
    first row (TF Serving's padding), which the caller drops from the outputs."""
    merged = {}
    for alias in aliases:
        arrays = [part[alias] for part in parts]
        if pad_variable_length:
            arrays = _pad_inner_dims(arrays)
        rows = sum(a.shape[0] for a in arrays)
        if padded_rows > rows:
            filler = next((a for a in reversed(arrays) if a.shape[0]), None)
            if filler is not None:
                arrays.append(np.repeat(filler[:1], padded_rows - rows, axis=0))
        merged[alias] = arrays[0] if len(arrays) == 1 else np.concatenate(arrays)
    return merged


def _pad_inner_dims(arrays: list[np.ndarray]) -> list[np.ndarray]:
    """Pads every non-batch dim to the batch's maximum with the tensor's own first element."""
    target = np.max([a.shape[1:] for a in arrays], axis=0)
    padded = []
    for array in arrays:
        missing = target - np.asarray(array.shape[1:])
        if not missing.any() or array.size == 0:
            padded.append(array if not missing.any() else np.zeros((0, *target), array.dtype))
            continue
        widths = [(0, 0)] + [(0, int(m)) for m in missing]
        padded.append(np.pad(array, widths, constant_values=array.flat[0]))
    return padded


def split(outputs: Tensors, sizes: Sequence[int], padded_rows: int) -> list[dict[str, np.ndarray]]:
    """Each request's slice of every output; padding rows are dropped."""
    for array in outputs.values():
        if array.ndim == 0 or array.shape[0] != padded_rows:
            raise failed_precondition(
                "Batched output tensor's 0th dimension does not equal the sum of the 0th "
                "dimension sizes of the input tensors"
            )
    if len(sizes) == 1 and sizes[0] == padded_rows:
        return [dict(outputs)]
    results = []
    start = 0
    for size in sizes:
        results.append({alias: array[start : start + size] for alias, array in outputs.items()})
        start += size
    return results
