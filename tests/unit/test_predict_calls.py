"""``InferenceService.predict_calls``: calls a front end coalesced, answered as batching would.

One model call for all callers when it succeeds; each caller counted as one request; a failure
that concerns one caller's rows (or outputs without the batch dimension) re-runs every caller
alone, so a request fails only for itself; errors of the whole batch fail every caller. The
model is the batcher tests' numpy fake behind the real batching wrapper and scheduler.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Sequence

import numpy as np
import pytest

from serving.api.inference import InferenceService
from serving.api.types import PredictResult
from serving.batching.params import BatchingConfig
from serving.batching.scheduler import BatchScheduler
from serving.batching.servable import BatchingServable
from serving.core.model_spec import ModelSpec
from serving.core.server_core import ServableHandle
from serving.errors import Code, ServingError, unavailable
from serving.servables.servable import BlockingServable
from tests.unit.test_batching import FakeModel

SPEC = ModelSpec("m")


class ScalarCountModel(BlockingServable, FakeModel):
    """``n`` is one number for the whole call: an output without the batch dimension."""

    def run(self, signature, inputs, aliases, timeout_ms=0):
        outputs = super().run(signature, inputs, aliases, timeout_ms)
        outputs["n"] = np.array(inputs["x"].shape[0])
        return outputs


class UnavailableModel(FakeModel):
    def run(self, signature, inputs, aliases, timeout_ms=0):
        self.batches.append(inputs["x"].shape[0])
        raise unavailable("the device is gone")


class Core:
    def __init__(self, servable) -> None:
        self.servable = servable

    def handle(self, spec):
        return contextlib.nullcontext(ServableHandle(spec.name, 1, self.servable))


class Metrics:
    def __init__(self) -> None:
        self.requests: Counter[str] = Counter()

    def record_request(self, model: str, status: str, calls: int = 1) -> None:
        self.requests[status] += calls

    def record_runtime(self, model, version, api, seconds) -> None:
        pass


class BatchMetrics:
    """The scheduler's metrics: input sizes and queuing waits as recorded."""

    def __init__(self) -> None:
        self.inputs: list[int] = []
        self.waits = 0

    def record_inputs(self, pool: str, rows: Sequence[int]) -> None:
        self.inputs.extend(rows)

    def record_batch(self, pool, rows, padded_rows, waits) -> None:
        self.waits += len(waits)


def _run(
    model: FakeModel,
    rows: list[int],
    x: np.ndarray,
    observers=(),
    batched=True,
    batch_metrics: BatchMetrics | None = None,
):
    scheduler = BatchScheduler(num_threads=1, metrics=batch_metrics)
    servable = (
        BatchingServable(model, scheduler, BatchingConfig(max_batch_size=64)) if batched else model
    )
    metrics = Metrics()
    service = InferenceService(Core(servable), 2, 8, metrics, observers=observers)

    async def main():
        return await service.predict_calls(SPEC, lambda signature: {"x": x}, rows, ["y", "n"])

    try:
        return asyncio.run(main()), metrics.requests
    finally:
        scheduler.stop()
        service.close()


def test_callers_share_one_model_call_and_each_counts_as_a_request():
    model = FakeModel()
    x = np.arange(4, dtype=np.float32)
    result, requests = _run(model, [1, 2, 1], x)
    assert isinstance(result, PredictResult)
    assert model.batches == [4]
    np.testing.assert_array_equal(result.outputs["y"], x * 2)
    assert (result.spec.name, result.spec.version) == ("m", 1)
    assert requests == {"OK": 3}


def test_batching_metrics_count_each_caller_as_a_request():
    """TF Serving's batching metrics are per request: a coalesced call's callers each record
    their input size and queuing latency, while the batch queue holds one entry for them."""
    metrics = BatchMetrics()
    model = FakeModel()
    _run(model, [1, 3, 2], np.arange(6, dtype=np.float32), batch_metrics=metrics)
    assert model.batches == [6]
    assert metrics.inputs == [1, 3, 2]
    assert metrics.waits == 3


def test_a_caller_whose_rows_fail_the_model_fails_alone():
    model = FakeModel()
    x = np.array([1, -1, 2, 3], dtype=np.float32)  # the second caller's row is rejected
    results, requests = _run(model, [1, 1, 2], x)
    assert isinstance(results, list) and len(results) == 3
    np.testing.assert_array_equal(results[0].outputs["y"], [2.0])
    assert isinstance(results[1], ServingError) and results[1].code == Code.INVALID_ARGUMENT
    np.testing.assert_array_equal(results[2].outputs["y"], [4.0, 6.0])
    assert model.batches[0] == 4  # the merged attempt came first
    assert requests == {"OK": 2, "INVALID_ARGUMENT": 1}  # the merged attempt is not counted


def test_outputs_without_the_batch_dimension_are_computed_per_caller():
    """A servable that does not check its outputs split by rows (unbatched here): the
    merged answer cannot be cut per caller, so each caller's rows run on their own."""
    model = ScalarCountModel()
    x = np.arange(3, dtype=np.float32)
    results, requests = _run(model, [1, 2], x, batched=False)
    assert isinstance(results, list)
    assert model.batches == [3, 1, 2] or model.batches == [3, 2, 1]
    np.testing.assert_array_equal(results[0].outputs["y"], [0.0])
    np.testing.assert_array_equal(results[1].outputs["y"], [2.0, 4.0])
    assert int(results[0].outputs["n"]) == 1 and int(results[1].outputs["n"]) == 2
    assert requests == {"OK": 2}


def test_batching_that_cannot_split_outputs_fails_each_caller_as_it_fails_alone():
    """The batcher refuses outputs without the batch dimension (FAILED_PRECONDITION, as TF
    Serving's batching session does) even for one request: each caller gets that error."""
    results, requests = _run(ScalarCountModel(), [1, 2], np.arange(3, dtype=np.float32))
    assert [(type(r), r.code) for r in results] == [(ServingError, Code.FAILED_PRECONDITION)] * 2
    assert requests == {"FAILED_PRECONDITION": 2}


def test_an_error_of_the_whole_batch_fails_every_caller_at_once():
    model = UnavailableModel()
    with pytest.raises(ServingError) as caught:
        _run(model, [1, 1, 1], np.zeros(3, dtype=np.float32))
    assert caught.value.code == Code.UNAVAILABLE
    assert model.batches == [3]  # not re-run per caller


def test_observers_need_each_request_on_its_own():
    with pytest.raises(ServingError) as caught:
        _run(FakeModel(), [1, 1], np.zeros(2, dtype=np.float32), observers=[object()])
    assert caught.value.code == Code.INTERNAL
