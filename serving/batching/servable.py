"""A loaded model version whose calls go through the batch scheduler (TF's BatchingSession).

It implements :class:`serving.servables.servable.Servable` around the servable it wraps, as TF
Serving's ``BatchingSession`` is a ``Session`` around the real one, so the model manager, the
inference core and warmup never know whether a version is batched. ``run`` blocks its caller
(warmup, which already runs in a load thread); ``run_async`` is what the inference core awaits,
costing no thread while the request waits for its batch (the scheduler's threads run it, so the
caller's ``offload`` pool is not used).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import threading
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from serving.batching.params import PER_MODEL_FILE, BatchingConfig, read_batching_parameters
from serving.batching.scheduler import CALLER_ROWS, BatchQueue, BatchScheduler, Outputs, Request
from serving.errors import invalid_argument
from serving.servables.servable import Offload, Servable
from serving.servables.signatures import SignatureDef, signature_info

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchingSetup:
    """``config`` applies to every model, unless ``per_model``: then each version's own
    ``batching_params.pbtxt`` does, and versions without one run unbatched. The thread pool
    (``num_batch_threads``) is always the global file's, as in TF Serving."""

    scheduler: BatchScheduler
    config: BatchingConfig
    per_model: bool = False

    def config_for(self, version_path: str) -> BatchingConfig | None:
        if not self.per_model:
            return self.config
        path = os.path.join(version_path, PER_MODEL_FILE)
        if not os.path.exists(path):
            log.info(
                "No %s in %s: this version runs without batching", PER_MODEL_FILE, version_path
            )
            return None
        return read_batching_parameters(path)

    def wrap(self, servable: Servable, version_path: str) -> tuple[Servable, Sequence[int]]:
        """The loader's wrapping step (:class:`serving.servables.loader.ServableWrapper`): the
        version batched when a config applies to it, and the batch sizes warmup should run."""
        config = self.config_for(version_path)
        if config is None:
            return servable, ()
        return BatchingServable(servable, self.scheduler, config), config.allowed_batch_sizes


class BatchingServable:
    def __init__(self, inner: Servable, scheduler: BatchScheduler, config: BatchingConfig) -> None:
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
        timeout_ms: int,
        offload: Offload,
    ) -> Outputs:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue(signature, inputs, output_aliases).schedule(
            inputs, Request(future, loop, timeout_ms, CALLER_ROWS.get())
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

    @property
    def batch_threads(self) -> int:
        """Batches of this version (and of every other sharing the pool) that run at once."""
        return self._scheduler.num_threads

    def close(self) -> None:
        with self._lock:
            queues = list(self._queues.values())
            self._queues.clear()
        for queue in queues:
            self._scheduler.remove(queue)
        self.inner.close()
