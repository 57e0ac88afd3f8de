"""A loaded model version whose calls go through the batch scheduler (TF's BatchingSession).

It keeps the servable interface (``signatures``, ``meta_graph``, ``run``, ``close``), so the
model manager, metadata and warmup code need not know about batching. ``run`` blocks its caller
(for warmup and MultiInference, which already run in a thread); ``run_async`` is what the
front ends await, costing no thread while the request waits for its batch.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Hashable, Mapping, Sequence

import numpy as np

from serving.api.signatures import SignatureDef, signature_info
from serving.batching.params import BatchingConfig
from serving.batching.scheduler import BatchQueue, BatchScheduler, Outputs, Request
from serving.errors import invalid_argument


class BatchingServable:
    def __init__(self, inner, scheduler: BatchScheduler, config: BatchingConfig) -> None:
        self.inner = inner
        self.config = config
        self.path: str = inner.path
        self.signatures: Mapping[str, SignatureDef] = inner.signatures
        self.meta_graph = inner.meta_graph
        self._scheduler = scheduler
        self._queues: dict[Hashable, BatchQueue] = {}
        self._lock = threading.Lock()

    def run(
        self,
        signature: SignatureDef,
        inputs: Mapping[str, np.ndarray],
        output_aliases: Sequence[str],
        timeout_ms: int = 0,
    ) -> Outputs:
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._queue(signature, inputs, output_aliases).schedule(
            inputs, Request(future, None, timeout_ms)
        )
        return future.result()

    async def run_async(
        self,
        signature: SignatureDef,
        inputs: Mapping[str, np.ndarray],
        output_aliases: Sequence[str],
        timeout_ms: int = 0,
    ) -> Outputs:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue(signature, inputs, output_aliases).schedule(
            inputs, Request(future, loop, timeout_ms)
        )
        return await future

    def _queue(
        self,
        signature: SignatureDef,
        inputs: Mapping[str, np.ndarray],
        output_aliases: Sequence[str],
    ) -> BatchQueue:
        """TF's TensorSignature: calls feeding and fetching the same tensors share a queue."""
        if not inputs:
            raise invalid_argument("Batching session Run() must have at least one input tensor")
        info = signature_info(signature)
        feeds = tuple(sorted(inputs))
        fetches = tuple(output_aliases)
        key = (
            feeds,
            tuple(info.input_names[a] for a in feeds),
            fetches,
            tuple(info.output_names[a] for a in fetches),
        )
        queue = self._queues.get(key)
        if queue is not None:
            return queue
        with self._lock:
            queue = self._queues.get(key)
            if queue is None:
                inner = self.inner

                def run_batch(merged: dict[str, np.ndarray], timeout_ms: int) -> Outputs:
                    return inner.run(signature, merged, fetches, timeout_ms)

                queue = self._scheduler.queue(self.config, feeds, run_batch)
                self._queues[key] = queue
        return queue

    def close(self) -> None:
        with self._lock:
            queues = list(self._queues.values())
            self._queues.clear()
        for queue in queues:
            self._scheduler.remove(queue)
        self.inner.close()
