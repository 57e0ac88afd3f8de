"""The batcher's semantics against a numpy fake model: merging, splitting, padding, limits,
isolation of bad requests, timeouts and cancellation. A gate in the fake model holds the only
batch thread, so which requests share a batch is decided by the test, not by timing."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import numpy as np
import pytest
from tensorflow.core.protobuf import meta_graph_pb2

from serving.batching.params import (
    BatchingConfig,
    BatchingConfigError,
    parse_batching_parameters,
)
from serving.batching.scheduler import QUEUE_FULL_MESSAGE, BatchScheduler
from serving.batching.servable import BatchingServable
from serving.errors import Code, ServingError, invalid_argument


def _signature() -> meta_graph_pb2.SignatureDef:
    signature = meta_graph_pb2.SignatureDef()
    signature.inputs["x"].name = "x:0"
    signature.outputs["y"].name = "y:0"
    signature.outputs["n"].name = "n:0"
    return signature


class FakeModel:
    """y = 2x; n = the executed batch size per row. Negative inputs are a model error."""

    path = "/fake/1"
    meta_graph = None

    def __init__(self, gate_first: bool = False) -> None:
        self.signatures = {"serving_default": _signature()}
        self.batches: list[int] = []
        self.started = threading.Event()
        self.release = threading.Event()
        if not gate_first:
            self.release.set()
        self.closed = False

    def run(self, signature, inputs, aliases, timeout_ms=0):
        x = inputs["x"]
        self.batches.append(x.shape[0])
        self.started.set()
        self.release.wait(10)
        if (x < 0).any():
            raise invalid_argument("negative input")
        return {"y": x * 2, "n": np.full(x.shape[0], x.shape[0])}

    def close(self) -> None:
        self.closed = True


def _servable(model: FakeModel, **config) -> tuple[BatchingServable, BatchScheduler]:
    scheduler = BatchScheduler(num_threads=1)
    return BatchingServable(model, scheduler, BatchingConfig(**config)), scheduler


async def _no_offload(fn, *args):
    """The batching wrapper waits for its batch without the caller's thread pool."""
    raise AssertionError("a batched call must not be offloaded to the caller's threads")


async def _predict(servable: BatchingServable, x, timeout_ms: int = 0):
    signature = servable.signatures["serving_default"]
    return await servable.run_async(
        signature, {"x": np.asarray(x)}, ["y", "n"], timeout_ms, _no_offload
    )


async def _after_first_batch_started(model: FakeModel, servable, first, *others):
    """Runs ``first``, waits until the model holds it, enqueues ``others``, then releases."""
    head = asyncio.ensure_future(_predict(servable, first))
    await asyncio.to_thread(model.started.wait, 10)
    tasks = [asyncio.ensure_future(_predict(servable, x)) for x in others]
    await asyncio.sleep(0)
    model.release.set()
    results = await asyncio.gather(head, *tasks, return_exceptions=True)
    return results


# ---------------------------------------------------------------------------- parameters
def test_parameters_use_tf_serving_wrapper_syntax_and_defaults():
    config = parse_batching_parameters(
        "max_batch_size { value: 128 } batch_timeout_micros { value: 0 } "
        "max_enqueued_batches { value: 1000000 } num_batch_threads { value: 8 } "
        "allowed_batch_sizes: 32 allowed_batch_sizes: 128 pad_variable_length_inputs: true"
    )
    assert (config.max_batch_size, config.max_enqueued_batches, config.num_batch_threads) == (
        128,
        1000000,
        8,
    )
    assert config.allowed_batch_sizes == (32, 128)
    assert config.pad_variable_length_inputs
    defaults = parse_batching_parameters("")
    assert (defaults.max_batch_size, defaults.max_enqueued_batches) == (1000, 10)
    assert defaults.padded_size(7) == 7


def test_parameters_reject_what_tf_serving_rejects():
    with pytest.raises(BatchingConfigError, match="Last entry in allowed_batch_sizes must match"):
        parse_batching_parameters("max_batch_size { value: 8 } allowed_batch_sizes: 4")
    with pytest.raises(BatchingConfigError, match="strictly increasing"):
        parse_batching_parameters(
            "max_batch_size { value: 8 } allowed_batch_sizes: 8 allowed_batch_sizes: 8"
        )
    with pytest.raises(
        BatchingConfigError,
        match=r"Error parsing text-format tensorflow\.serving\.BatchingParameters",
    ):
        parse_batching_parameters("max_batch_size: 8")  # a wrapper needs { value: 8 }


# ---------------------------------------------------------------------------- merging
def test_requests_of_any_size_merge_along_dim0_and_split_back():
    model = FakeModel(gate_first=True)
    servable, scheduler = _servable(model, max_batch_size=16)
    first, a, b, c = [[1.0]], [[2.0], [3.0]], [[4.0]], [[5.0], [6.0], [7.0]]
    results = asyncio.run(_after_first_batch_started(model, servable, first, a, b, c))
    assert model.batches == [1, 6]
    for x, result in zip((first, a, b, c), results, strict=True):
        np.testing.assert_array_equal(result["y"], np.asarray(x) * 2)
    assert list(results[1]["n"]) == [6, 6]
    scheduler.stop()


def test_allowed_batch_sizes_pad_up_and_padding_is_dropped():
    model = FakeModel(gate_first=True)
    servable, scheduler = _servable(model, max_batch_size=8, allowed_batch_sizes=(2, 4, 8))
    results = asyncio.run(_after_first_batch_started(model, servable, [1.0], [2.0, 3.0], [4.0]))
    assert model.batches == [2, 4]  # 1 -> 2, 3 -> 4
    assert [r["y"].tolist() for r in results] == [[2.0], [4.0, 6.0], [8.0]]
    assert results[1]["n"].tolist() == [4, 4]
    scheduler.stop()


def test_pad_variable_length_inputs_pads_inner_dims_with_first_element():
    model = FakeModel(gate_first=True)
    servable, scheduler = _servable(model, max_batch_size=8, pad_variable_length_inputs=True)
    results = asyncio.run(
        _after_first_batch_started(model, servable, [[1.0]], [[2.0, 3.0]], [[4.0, 5.0, 6.0]])
    )
    assert model.batches == [1, 2]
    assert results[1]["y"].tolist() == [[4.0, 6.0, 4.0]]  # padded with its own first element
    assert results[2]["y"].tolist() == [[8.0, 10.0, 12.0]]
    scheduler.stop()


def test_large_requests_are_split_across_batches_when_enabled():
    model = FakeModel()
    servable, scheduler = _servable(
        model, max_batch_size=8, enable_large_batch_splitting=True, max_execution_batch_size=2
    )
    result = asyncio.run(_predict(servable, [1.0, 2.0, 3.0, 4.0, 5.0]))
    assert sorted(model.batches) == [1, 2, 2]
    assert result["y"].tolist() == [2.0, 4.0, 6.0, 8.0, 10.0]
    scheduler.stop()


# ---------------------------------------------------------------------------- limits
def test_too_large_request_is_invalid_argument():
    servable, scheduler = _servable(FakeModel(), max_batch_size=2)
    with pytest.raises(ServingError) as err:
        asyncio.run(_predict(servable, [1.0, 2.0, 3.0]))
    assert err.value.code == Code.INVALID_ARGUMENT
    assert err.value.message == "Task size 3 is larger than maximum input batch size 2"
    scheduler.stop()


def test_full_queue_fails_fast_with_unavailable():
    model = FakeModel(gate_first=True)
    servable, scheduler = _servable(model, max_batch_size=2, max_enqueued_batches=1)
    # first runs (held); [2] opens the one allowed batch; [3, 4] needs a second one -> full.
    results = asyncio.run(_after_first_batch_started(model, servable, [1.0], [2.0], [3.0, 4.0]))
    assert results[1]["y"].tolist() == [4.0]
    assert isinstance(results[2], ServingError)
    assert results[2].code == Code.UNAVAILABLE
    assert results[2].message == QUEUE_FULL_MESSAGE
    scheduler.stop()


def test_batch_timeout_collects_requests_arriving_within_it():
    model = FakeModel()
    servable, scheduler = _servable(model, max_batch_size=8, batch_timeout_micros=300_000)

    async def both():
        return await asyncio.gather(_predict(servable, [1.0]), _predict(servable, [2.0]))

    results = asyncio.run(both())
    assert model.batches == [2]
    assert [r["y"].tolist() for r in results] == [[2.0], [4.0]]
    scheduler.stop()


class _CountingCondition(threading.Condition):
    """The scheduler's condition, counting the wake-ups it is asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.notified = 0

    def notify(self, n: int = 1) -> None:
        self.notified += 1
        super().notify(n)


def test_a_request_joining_an_open_batch_wakes_no_batch_thread():
    """With a timeout the batch thread sleeps until the open batch's time is up; a request that
    joins that batch from a later event-loop iteration has nothing to wake it for. The batch
    still runs as one once a request fills it."""
    model = FakeModel()
    scheduler = BatchScheduler(num_threads=1)
    condition = scheduler.condition = _CountingCondition()
    servable = BatchingServable(
        model, scheduler, BatchingConfig(max_batch_size=3, batch_timeout_micros=60_000_000)
    )

    async def iterations(count: int) -> None:
        for _ in range(count):
            await asyncio.sleep(0)

    async def scenario():
        first = asyncio.ensure_future(_predict(servable, [1.0]))
        await iterations(3)  # enqueued, and the deferred wake-up that opened the batch ran
        opened = condition.notified
        second = asyncio.ensure_future(_predict(servable, [2.0]))
        await iterations(3)
        joined = condition.notified
        third = asyncio.ensure_future(_predict(servable, [3.0]))  # fills the batch
        results = await asyncio.gather(first, second, third)
        return opened, joined, [r["y"].tolist() for r in results]

    opened, joined, results = asyncio.run(scenario())
    assert opened >= 1
    assert joined == opened, "a request joining the open batch woke a batch thread"
    assert results == [[2.0], [4.0], [6.0]]
    assert model.batches == [3]
    scheduler.stop()


def test_request_past_its_deadline_in_the_queue_fails_alone():
    model = FakeModel(gate_first=True)
    servable, scheduler = _servable(model, max_batch_size=8)

    async def scenario():
        head = asyncio.ensure_future(_predict(servable, [1.0]))
        await asyncio.to_thread(model.started.wait, 10)
        late = asyncio.ensure_future(_predict(servable, [2.0], timeout_ms=1))
        ok = asyncio.ensure_future(_predict(servable, [3.0]))
        await asyncio.sleep(0.05)
        model.release.set()
        return await asyncio.gather(head, late, ok, return_exceptions=True)

    _, late, ok = asyncio.run(scenario())
    assert isinstance(late, ServingError) and late.code == Code.DEADLINE_EXCEEDED
    assert ok["y"].tolist() == [6.0]
    assert model.batches == [1, 1]
    scheduler.stop()


# ---------------------------------------------------------------------------- isolation
def test_a_failing_request_fails_only_itself():
    model = FakeModel(gate_first=True)
    servable, scheduler = _servable(model, max_batch_size=8)
    results = asyncio.run(_after_first_batch_started(model, servable, [1.0], [2.0], [-1.0], [3.0]))
    assert results[1]["y"].tolist() == [4.0]
    assert isinstance(results[2], ServingError) and results[2].message == "negative input"
    assert results[3]["y"].tolist() == [6.0]
    assert model.batches == [1, 3, 1, 1, 1]  # the failed batch of 3 re-run one by one
    scheduler.stop()


def test_requests_with_different_inner_shapes_or_dtypes_are_not_merged():
    model = FakeModel(gate_first=True)
    servable, scheduler = _servable(model, max_batch_size=8)
    others = ([[2.0, 2.0]], [[3.0]], np.array([[4]], dtype=np.int32), [[5.0]])
    results = asyncio.run(_after_first_batch_started(model, servable, [[1.0]], *others))
    assert sorted(model.batches) == [1, 1, 1, 2]  # [[1.0]]-shaped requests merge
    assert results[1]["y"].tolist() == [[4.0, 4.0]]
    assert results[3]["y"].dtype == np.int32
    scheduler.stop()


def test_inputs_must_share_dim0():
    servable, scheduler = _servable(FakeModel())
    signature = servable.signatures["serving_default"]
    signature.inputs["z"].name = "z:0"
    with pytest.raises(ServingError, match="must have equal 0th-dimension size"):
        servable.run(signature, {"x": np.ones(2), "z": np.ones(3)}, ["y"])
    with pytest.raises(ServingError, match="at least one dimension"):
        servable.run(signature, {"x": np.float32(1), "z": np.float32(1)}, ["y"])
    scheduler.stop()


def test_cancelled_request_does_not_break_the_batcher():
    model = FakeModel(gate_first=True)
    servable, scheduler = _servable(model, max_batch_size=8)

    async def scenario():
        head = asyncio.ensure_future(_predict(servable, [1.0]))
        await asyncio.to_thread(model.started.wait, 10)
        cancelled = asyncio.ensure_future(_predict(servable, [2.0]))
        await asyncio.sleep(0)
        cancelled.cancel()
        model.release.set()
        await head
        return await _predict(servable, [5.0])

    assert asyncio.run(scenario())["y"].tolist() == [10.0]
    scheduler.stop()


# ---------------------------------------------------------------------------- callers
class _InputCounter:
    """The scheduler's metrics hook, counting enqueued requests so a test can wait for them."""

    def __init__(self) -> None:
        self.inputs = 0
        self.changed = threading.Condition()

    def record_inputs(self, pool: str, rows: Sequence[int]) -> None:
        with self.changed:
            self.inputs += len(rows)
            self.changed.notify_all()

    def record_batch(self, pool: str, rows: int, padded_rows: int, waits: list[float]) -> None:
        pass

    def wait_for(self, count: int) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: self.inputs >= count, timeout=10)


def test_sync_callers_from_threads_share_batches_with_async_ones():
    """The first batch holds the model; a thread's ``run`` and a coroutine's ``run_async``
    (same feeds and fetches: one queue) are both enqueued behind it, then it is released:
    they must run as one batch of two."""
    model = FakeModel(gate_first=True)
    counter = _InputCounter()
    scheduler = BatchScheduler(num_threads=1, metrics=counter)
    servable = BatchingServable(model, scheduler, BatchingConfig(max_batch_size=8))
    signature = servable.signatures["serving_default"]
    sync_results = []

    def sync_call():
        sync_results.append(servable.run(signature, {"x": np.asarray([9.0])}, ["y"])["y"])

    async def async_call(x: float):
        inputs = {"x": np.asarray([x])}
        return await servable.run_async(signature, inputs, ["y"], 0, _no_offload)

    async def scenario():
        head = asyncio.ensure_future(async_call(1.0))
        await asyncio.to_thread(model.started.wait, 10)
        thread = threading.Thread(target=sync_call)
        thread.start()
        other = asyncio.ensure_future(async_call(2.0))
        assert await asyncio.to_thread(counter.wait_for, 3)  # both queued behind the head
        model.release.set()
        await asyncio.to_thread(thread.join, 10)
        return await asyncio.gather(head, other)

    results = asyncio.run(scenario())
    assert sync_results[0].tolist() == [18.0]
    assert results[1]["y"].tolist() == [4.0]
    assert model.batches == [1, 2]
    scheduler.stop()


def test_close_removes_queues_and_closes_the_model():
    model = FakeModel()
    servable, scheduler = _servable(model)
    asyncio.run(_predict(servable, [1.0]))
    servable.close()
    assert model.closed
    scheduler.stop()


def test_per_model_parameters_come_from_the_version_directory(tmp_path):
    from serving.batching.servable import BatchingSetup

    scheduler = BatchScheduler(num_threads=1)
    setup = BatchingSetup(scheduler, BatchingConfig(max_batch_size=64), per_model=True)
    with_file = tmp_path / "1"
    with_file.mkdir()
    (with_file / "batching_params.pbtxt").write_text("max_batch_size { value: 16 }")
    without_file = tmp_path / "2"
    without_file.mkdir()
    assert setup.config_for(str(with_file)).max_batch_size == 16
    assert setup.config_for(str(without_file)) is None  # that version runs unbatched
    assert BatchingSetup(scheduler, BatchingConfig(max_batch_size=64)).config_for(
        str(without_file)
    ) == BatchingConfig(max_batch_size=64)


def test_a_full_batch_wakes_the_batch_thread_without_waiting_for_the_event_loop():
    """An event-loop caller defers the wake-up of a partial batch to the loop's next iteration
    (see the scheduler's docstring); a full one must start at once. Here the loop is blocked
    right after enqueuing: a deferred wake-up would never come."""
    model = FakeModel()
    servable, scheduler = _servable(model, max_batch_size=2)

    async def enqueue_and_block() -> tuple[bool, list]:
        await _predict(servable, [[0.0], [0.0]])  # the batch thread now waits for work
        model.started.clear()
        signature = servable.signatures["serving_default"]
        futures = [
            asyncio.ensure_future(
                servable.run_async(signature, {"x": np.asarray([x])}, ["y"], 0, _no_offload)
            )
            for x in (1.0, 2.0)
        ]
        await asyncio.sleep(0)  # both scheduled: the batch of two is full
        ran = model.started.wait(10)  # blocks the loop: no later iteration
        results = await asyncio.gather(*futures)
        return ran, [result["y"].tolist() for result in results]

    ran, results = asyncio.run(enqueue_and_block())
    assert ran, "the full batch waited for the next event-loop iteration"
    assert results == [[2.0], [4.0]]
    assert model.batches == [2, 2]
    scheduler.stop()
