"""Loading one version: SavedModel (or TF Lite model) -> optional batching wrapper -> warmup,
with load metrics.

The steps follow TF Serving's SavedModelBundleFactory + warmup: the batching wrapper is put
in place before warmup so warmup runs through it (and warms every allowed batch size), and
the version only becomes AVAILABLE once all of it succeeded. Any failure closes what was
loaded and propagates, so the model manager's retry and status reporting apply unchanged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Protocol

from serving.monitoring.metrics import ServingMetrics
from serving.servables.saved_model import LoadOptions, load_saved_model
from serving.servables.servable import Servable
from serving.servables.tflite import has_tflite_model, load_tflite_model
from serving.servables.warmup import warm_up

log = logging.getLogger(__name__)


class ServableWrapper(Protocol):
    """What the loader puts around a freshly loaded servable before warmup: batching
    (:class:`serving.batching.servable.BatchingSetup`), which lives above this layer."""

    def wrap(self, servable: Servable, version_path: str) -> tuple[Servable, Sequence[int]]:
        """The servable to serve and the batch sizes warmup should exercise (may be empty)."""
        ...


class ServableLoader:
    def __init__(
        self,
        options: LoadOptions,
        wrapper: ServableWrapper | None = None,
        warmup: bool = True,
        warmup_iterations: int = 1,
        metrics: ServingMetrics | None = None,
    ) -> None:
        self._options = options
        self._wrapper = wrapper
        self._warmup = warmup
        self._warmup_iterations = warmup_iterations
        self._metrics = metrics

    def __call__(self, path: str) -> Servable:
        start = time.perf_counter()
        try:
            servable = self._load(path)
        except BaseException:
            self._record_load(path, False, start)
            raise
        self._record_load(path, True, start)
        try:
            sizes: Sequence[int] = ()
            if self._wrapper is not None:
                servable, sizes = self._wrapper.wrap(servable, path)
            if self._warmup:
                self._warm(servable, path, sizes)
        except BaseException:
            servable.close()
            raise
        return servable

    def _load(self, path: str) -> Servable:
        """TF Serving's choice: ``model.tflite`` when preferred and present, else the
        SavedModel (saved_model_bundle_factory.cc)."""
        tflite = self._options.tflite
        if tflite is not None and has_tflite_model(path):
            return load_tflite_model(path, tflite)
        return load_saved_model(path, self._options)

    def _warm(self, servable: Servable, path: str, sizes: Sequence[int]) -> None:
        start = time.perf_counter()
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
