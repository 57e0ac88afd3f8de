"""Loading one version: SavedModel (or TF Lite model) -> optional batching wrapper -> warmup,
with load metrics.

The steps follow TF Serving's SavedModelBundleFactory + warmup: the batching wrapper is put
in place before warmup so warmup runs through it (and warms every allowed batch size), and
the version only becomes AVAILABLE once all of it succeeded. Any failure closes what was
loaded and propagates, so the model manager's retry and status reporting apply unchanged.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass

from serving.batching.params import PER_MODEL_FILE, BatchingConfig, read_batching_parameters
from serving.batching.scheduler import BatchScheduler
from serving.batching.servable import BatchingServable
from serving.monitoring.metrics import ServingMetrics
from serving.servables.saved_model import LoadOptions, load_saved_model
from serving.servables.tflite import has_tflite_model, load_tflite_model
from serving.servables.warmup import warm_up

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


class ServableLoader:
    def __init__(
        self,
        options: LoadOptions,
        batching: BatchingSetup | None = None,
        warmup: bool = True,
        warmup_iterations: int = 1,
        metrics: ServingMetrics | None = None,
    ) -> None:
        self._options = options
        self._batching = batching
        self._warmup = warmup
        self._warmup_iterations = warmup_iterations
        self._metrics = metrics

    def __call__(self, path: str):
        start = time.perf_counter()
        try:
            servable = self._load(path)
        except BaseException:
            self._record_load(path, False, start)
            raise
        self._record_load(path, True, start)
        try:
            config = self._batching.config_for(path) if self._batching else None
            if config is not None:
                servable = BatchingServable(servable, self._batching.scheduler, config)
            if self._warmup:
                self._warm(servable, path, config)
        except BaseException:
            servable.close()
            raise
        return servable

    def _load(self, path: str):
        """TF Serving's choice: ``model.tflite`` when preferred and present, else the
        SavedModel (saved_model_bundle_factory.cc)."""
        tflite = self._options.tflite
        if tflite is not None and has_tflite_model(path):
            return load_tflite_model(path, tflite)
        return load_saved_model(path, self._options)

    def _warm(self, servable, path: str, config: BatchingConfig | None) -> None:
        start = time.perf_counter()
        sizes = config.allowed_batch_sizes if config is not None else ()
        try:
            records = warm_up(servable, self._warmup_iterations, sizes)
        except BaseException:
            if self._metrics is not None:
                self._metrics.record_warmup(path, False, 0, time.perf_counter() - start)
            raise
        seconds = time.perf_counter() - start
        if self._metrics is not None:
            self._metrics.record_warmup(path, True, records, seconds)
        if records or sizes:
            log.info(
                "Warmed up %s: %d records, %d batch sizes in %.2f s",
                path,
                records,
                len(sizes),
                seconds,
            )

    def _record_load(self, path: str, ok: bool, start: float) -> None:
        if self._metrics is not None:
            self._metrics.record_load(path, ok, time.perf_counter() - start)
