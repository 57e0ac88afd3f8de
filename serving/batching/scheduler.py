"""A process-wide batch scheduler: TF Serving's SharedBatchScheduler semantics, in Python.

One pool of ``num_batch_threads`` threads serves every queue (one queue per model version and
signature). A queue is a deque of batches of which only the last one is open; a request that
does not fit closes it and opens a new one, and when ``max_enqueued_batches`` are already
waiting the request fails at once with UNAVAILABLE (HTTP 503) instead of queueing unboundedly.
A batch is handed to a thread once it is full or closed, or once its oldest request has waited
``batch_timeout_micros`` — with the default of 0 that is "as soon as a thread is free", so an
idle server runs a lone request immediately and a busy one collects requests meanwhile.

Waiting costs no thread: a request is an asyncio future (or, for the synchronous path used by
warmup, a ``concurrent.futures.Future``); the batch thread resolves all futures of one event
loop with a single ``call_soon_threadsafe``.

Python-specific: a request enqueued from an event loop wakes the batch threads only at the
loop's next iteration (``call_soon``), not at once. Every request the loop parsed in the same
iteration is then already in the batch; waking a thread per request would let it take the GIL
between two requests and run batches of one — measured at 1.5 rows per model call instead of
~13 under 32 concurrent REST clients on one core (gRPC: 1.1 instead of 1.8, as grpc.aio hands
calls to the loop one at a time; benchmarks/results/grpc-batching). A batch that is already
full (or a queue that is full) wakes a thread at once: nothing more can join it, and under
overload the next iteration is ~100 ms away (512 busy connections on one core), during which
the idle batch thread left the queue full and every request was refused (measured: the batch
thread waited on its condition >90 % of the time while 97 % of requests got 503).

A request from an event loop that joins the open batch without filling it wakes nobody: the
wake-up that opened the batch already has a thread either running another batch or asleep
until this batch's ``batch_timeout_micros`` runs out, and waking it earlier finds nothing to
do. With a timeout that is most requests (measured on one core, 5 ms, 128 gRPC clients: 17
context switches per request in the server when they woke it, 13-14 since; 9 % more req/s,
mean of 6 runs).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from typing import Protocol

import numpy as np

from serving.batching import merge
from serving.batching.params import BatchingConfig
from serving.errors import BATCH_WIDE_CODES, Code, ServingError, invalid_argument, unavailable

log = logging.getLogger(__name__)

QUEUE_FULL_MESSAGE = "The batch scheduling queue to which this task was submitted is full"

Outputs = dict[str, np.ndarray]
RunBatch = Callable[[dict[str, np.ndarray], int], Outputs]
AnyFuture = asyncio.Future | concurrent.futures.Future


class BatchMetrics(Protocol):
    """What the scheduler reports (implemented by serving.monitoring.metrics)."""

    def record_inputs(self, pool: str, rows: Sequence[int]) -> None: ...

    def record_batch(self, pool: str, rows: int, padded_rows: int, waits: list[float]) -> None: ...


# The rows of each client request in a request that carries several (a front-end process's
# coalesced calls, ``InferenceService.predict_calls``): set around that one model call, so the
# batching metrics count client requests -- input sizes and queuing latencies -- as TF Serving
# counts requests, whatever arrived merged.
CALLER_ROWS: contextvars.ContextVar[tuple[int, ...] | None] = contextvars.ContextVar(
    "batching_caller_rows", default=None
)


class Request:
    """What one caller waits on. Split requests resolve once all their pieces have run.
    ``caller_rows``: the client requests it carries (``CALLER_ROWS``), None for one."""

    __slots__ = (
        "caller_rows",
        "deadline",
        "future",
        "lock",
        "loop",
        "parts",
        "remaining",
        "timeout_ms",
    )

    def __init__(
        self,
        future: AnyFuture,
        loop: asyncio.AbstractEventLoop | None,
        timeout_ms: int = 0,
        caller_rows: tuple[int, ...] | None = None,
    ) -> None:
        self.future = future
        self.loop = loop
        self.timeout_ms = timeout_ms
        self.caller_rows = caller_rows
        self.deadline = time.monotonic() + timeout_ms / 1000 if timeout_ms > 0 else 0.0
        self.remaining = 1
        self.parts: list[Outputs | ServingError | None] = []
        self.lock: threading.Lock | None = None

    def expect_pieces(self, count: int) -> None:
        self.remaining = count
        self.parts = [None] * count
        self.lock = threading.Lock()

    def join(self, index: int, result: Outputs | ServingError) -> Outputs | ServingError | None:
        """Records one piece; returns the whole request's outcome once every piece is in."""
        assert self.lock is not None
        with self.lock:
            self.parts[index] = result
            self.remaining -= 1
            if self.remaining:
                return None
        for part in self.parts:
            if isinstance(part, ServingError):
                return part
        first = self.parts[0]
        assert isinstance(first, dict)
        return {alias: np.concatenate([p[alias] for p in self.parts]) for alias in first}


class _Task:
    """A request, or one piece of a split one, as it sits in a batch."""

    __slots__ = ("index", "inputs", "key", "queued_at", "request", "rows")

    def __init__(
        self, inputs: merge.Tensors, rows: int, key: Hashable, request: Request, index: int
    ) -> None:
        self.inputs = inputs
        self.rows = rows
        self.key = key
        self.request = request
        self.index = index
        self.queued_at = time.monotonic()


class _Batch:
    __slots__ = ("closed", "opened_at", "rows", "tasks")

    def __init__(self) -> None:
        self.tasks: list[_Task] = []
        self.rows = 0
        self.closed = False
        self.opened_at = time.monotonic()


Finished = list[tuple[_Task, Outputs | ServingError]]


class BatchQueue:
    """The queue of one (model version, signature); created by ``BatchScheduler.queue``."""

    def __init__(
        self,
        scheduler: BatchScheduler,
        config: BatchingConfig,
        aliases: Sequence[str],
        run_batch: RunBatch,
    ) -> None:
        self.config = config
        self._scheduler = scheduler
        self._aliases = tuple(aliases)
        self._run_batch = run_batch
        self._batches: deque[_Batch] = deque()
        self._timeout = config.batch_timeout_micros / 1e6
        self._capacity = config.execution_batch_size

    # ---------------------------------------------------------------- request side (any thread)
    def schedule(self, inputs: merge.Tensors, request: Request) -> None:
        """Enqueues a request or raises at once (too large, queue full); never blocks."""
        rows = merge.task_rows(inputs)
        config = self.config
        if rows > config.max_batch_size:
            raise invalid_argument(
                f"Task size {rows} is larger than maximum input batch size {config.max_batch_size}"
            )
        key = merge.merge_key(inputs, self._aliases, config.pad_variable_length_inputs)
        with self._scheduler.condition:
            batches = self._batches
            open_batch = batches[-1] if batches and not batches[-1].closed else None
            room = self._capacity - open_batch.rows if open_batch is not None else 0
            sizes = self._piece_sizes(rows, room)
            joins_open = open_batch is not None and sizes[0] <= room
            new_batches = len(sizes) - (1 if joins_open else 0)
            if new_batches and len(batches) + new_batches > config.max_enqueued_batches:
                self._scheduler.condition.notify()  # the waiting batches are runnable now
                raise unavailable(QUEUE_FULL_MESSAGE)
            if len(sizes) > 1:
                request.expect_pieces(len(sizes))
            start = 0
            for index, size in enumerate(sizes):
                piece = inputs if len(sizes) == 1 else _rows(inputs, start, start + size)
                start += size
                self._add(_Task(piece, size, key, request, index))
            ready = len(batches) > 1 or batches[-1].closed
            # Joining the open batch: the thread its opening woke knows when it is due.
            if new_batches or ready or request.loop is None:
                self._scheduler.wake(request.loop, ready)
        metrics = self._scheduler.metrics
        if metrics is not None:
            metrics.record_inputs(self._scheduler.pool_name, request.caller_rows or (rows,))

    def _piece_sizes(self, rows: int, room: int) -> list[int]:
        """Without splitting a request is one piece; with it, a request that does not fit the
        open batch fills it and the rest goes out in execution-size chunks."""
        if rows <= room or not self.config.enable_large_batch_splitting:
            return [rows]
        sizes = [room] if room else []
        rest = rows - room
        while rest > 0:
            sizes.append(min(rest, self._capacity))
            rest -= sizes[-1]
        return sizes

    def _add(self, task: _Task) -> None:
        batches = self._batches
        if not batches or batches[-1].closed or batches[-1].rows + task.rows > self._capacity:
            if batches:
                batches[-1].closed = True
            batches.append(_Batch())
        batch = batches[-1]
        batch.tasks.append(task)
        batch.rows += task.rows
        if batch.rows >= self._capacity:
            batch.closed = True

    # ---------------------------------------------------------------- scheduler side (locked)
    def take_ready(self, now: float) -> tuple[_Batch | None, float | None]:
        """The front batch if it may run now, else how long until it may (None: nothing)."""
        if not self._batches:
            return None, None
        batch = self._batches[0]
        waited = now - batch.opened_at
        if batch.closed or waited >= self._timeout:
            return self._batches.popleft(), None
        return None, self._timeout - waited

    def drain(self) -> list[_Batch]:
        batches = list(self._batches)
        self._batches.clear()
        return batches

    # ---------------------------------------------------------------- batch thread
    def process(self, batch: _Batch) -> None:
        now = time.monotonic()
        finished: Finished = []
        groups: dict[Hashable, list[_Task]] = {}
        for task in batch.tasks:
            request = task.request
            if request.future.done():  # the caller gave up (client cancelled)
                continue
            if request.deadline and now > request.deadline:
                finished.append(
                    (task, ServingError(Code.DEADLINE_EXCEEDED, "Deadline exceeded in batch queue"))
                )
                continue
            groups.setdefault(task.key, []).append(task)
        for tasks in groups.values():
            self._run_group(tasks, now, finished)
        deliver(finished)

    def _run_group(self, tasks: list[_Task], now: float, finished: Finished) -> None:
        """One model call for tasks that can be merged. If it fails for a batch of several,
        each is re-run alone, so a bad request fails only itself."""
        rows = sum(task.rows for task in tasks)
        padded = self.config.padded_size(rows)
        try:
            merged = merge.merge(
                [task.inputs for task in tasks],
                self._aliases,
                padded,
                self.config.pad_variable_length_inputs,
            )
            timeouts = [task.request.timeout_ms for task in tasks]
            outputs = self._run_batch(merged, 0 if 0 in timeouts else max(timeouts))
            parts = merge.split(outputs, [task.rows for task in tasks], padded)
        except Exception as exc:  # contained: it becomes each affected request's error
            error = _as_serving_error(exc)
            if len(tasks) > 1 and error.code not in BATCH_WIDE_CODES:
                for task in tasks:
                    self._run_group([task], now, finished)
                return
            finished.extend((task, error) for task in tasks)
            return
        metrics = self._scheduler.metrics
        if metrics is not None:
            waits: list[float] = []  # one per client request, as the inputs are counted
            for task in tasks:
                callers = task.request.caller_rows
                waits += [now - task.queued_at] * (len(callers) if callers else 1)
            metrics.record_batch(self._scheduler.pool_name, rows, padded, waits)
        finished.extend(zip(tasks, parts, strict=True))


class BatchScheduler:
    """The shared thread pool and the queues it serves round-robin, one batch per turn."""

    def __init__(
        self,
        num_threads: int,
        pool_name: str = "batch_threads",
        metrics: BatchMetrics | None = None,
    ) -> None:
        self.pool_name = pool_name
        self.metrics = metrics
        self.condition = threading.Condition()
        self._num_threads = num_threads
        self._queues: list[BatchQueue] = []
        self._next = 0
        self._threads: list[threading.Thread] = []
        self._stopped = False
        self._wake_pending: set[asyncio.AbstractEventLoop] = set()

    @property
    def num_threads(self) -> int:
        """Batches that can run at once."""
        return self._num_threads

    def queue(self, config: BatchingConfig, aliases: Sequence[str], run: RunBatch) -> BatchQueue:
        queue = BatchQueue(self, config, aliases, run)
        with self.condition:
            if self._stopped:
                raise unavailable("The batch scheduler is shutting down")
            self._queues.append(queue)
            while len(self._threads) < self._num_threads:
                thread = threading.Thread(
                    target=self._work, name=f"{self.pool_name}-{len(self._threads)}", daemon=True
                )
                thread.start()
                self._threads.append(thread)
        return queue

    def wake(self, loop: asyncio.AbstractEventLoop | None, batch_ready: bool = False) -> None:
        """Wakes a batch thread: now for a thread caller or when a batch is ready to run, else
        at the loop's next iteration (coalesced, see the module docstring). Called with the lock
        held."""
        if loop is None or batch_ready:
            self.condition.notify()
        elif loop not in self._wake_pending:
            self._wake_pending.add(loop)
            loop.call_soon(self._wake_from_loop, loop)

    def _wake_from_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        with self.condition:
            self._wake_pending.discard(loop)
            self.condition.notify()

    def remove(self, queue: BatchQueue) -> None:
        """Forgets a queue (its version unloads); anything still waiting in it fails."""
        with self.condition:
            if queue in self._queues:
                self._queues.remove(queue)
            batches = queue.drain()
        error = unavailable("The model version serving this request was unloaded")
        deliver([(task, error) for batch in batches for task in batch.tasks])

    def stop(self) -> None:
        with self.condition:
            self._stopped = True
            queues = list(self._queues)
            self.condition.notify_all()
        for queue in queues:
            self.remove(queue)
        for thread in self._threads:
            thread.join(timeout=30)

    def _work(self) -> None:
        while True:
            with self.condition:
                while True:
                    if self._stopped:
                        return
                    queue, batch, wait = self._pick(time.monotonic())
                    if batch is not None:
                        break
                    self.condition.wait(wait)
            try:
                queue.process(batch)
            except Exception:  # a bug here must not kill the thread and hang every request
                log.exception("Batch processing failed")
                error = ServingError(Code.INTERNAL, "Batch processing failed; see the server log")
                deliver([(task, error) for task in batch.tasks])

    def _pick(self, now: float) -> tuple[BatchQueue | None, _Batch | None, float | None]:
        count = len(self._queues)
        wait: float | None = None
        for offset in range(count):
            index = (self._next + offset) % count
            queue = self._queues[index]
            batch, remaining = queue.take_ready(now)
            if batch is not None:
                self._next = index + 1
                return queue, batch, None
            if remaining is not None:
                wait = remaining if wait is None else min(wait, remaining)
        return None, None, wait


def deliver(finished: Finished) -> None:
    """Resolves the callers' futures: one event-loop wake-up per loop, not per request."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[AnyFuture, Outputs | ServingError]]] = {}
    for task, outcome in finished:
        request = task.request
        if request.lock is not None:
            outcome = request.join(task.index, outcome)
            if outcome is None:
                continue
        if request.loop is None:
            _resolve([(request.future, outcome)])
        else:
            by_loop.setdefault(request.loop, []).append((request.future, outcome))
    for loop, items in by_loop.items():
        with contextlib.suppress(RuntimeError):  # a closed loop has nobody waiting any more
            loop.call_soon_threadsafe(_resolve, items)


def _resolve(items: list[tuple[AnyFuture, Outputs | ServingError]]) -> None:
    for future, outcome in items:
        if future.done():  # cancelled by its caller; setting it would raise
            continue
        try:
            if isinstance(outcome, ServingError):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)
        except (asyncio.InvalidStateError, concurrent.futures.InvalidStateError):
            pass  # cancelled between the check and the set (concurrent futures only)


def _rows(inputs: merge.Tensors, start: int, stop: int) -> dict[str, np.ndarray]:
    return {alias: array[start:stop] for alias, array in inputs.items()}


def _as_serving_error(exc: BaseException) -> ServingError:
    if isinstance(exc, ServingError):
        return exc
    return ServingError(Code.INTERNAL, f"{type(exc).__name__}: {exc}")
