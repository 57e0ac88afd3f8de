"""The status page's data: one JSON document describing everything the server serves.

Built from what the server already keeps — the core's version records, labels and traffic
splits, the per-version runtime histogram of :mod:`serving.monitoring.metrics`, and the feedback
index and lineage the metadata plug-in answers (:class:`StatusMetadata`) — so the page shows
the same numbers as ``/v1/models/<m>``, the Prometheus endpoint, feedback answers and
``tfx-serving-lineage``. Nothing here imports the metadata plug-in (``serving.metadata``) or
``ml_metadata``; every metadata-dependent part is left out (``null``) when the server runs
without it.

TF Serving has no such page (neither do MLServer, KServe or Triton); its closest parts are the
model status API and the monitoring endpoint this document is made from.
"""

from __future__ import annotations

import asyncio
import math
import socket
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from serving.core.model_manager import State, VersionRecord
from serving.monitoring.metrics import LatencyTotals, ServingMetrics
from serving.version import __version__

if TYPE_CHECKING:
    from serving.core.server_core import ServerCore

RATE_WINDOW_SECONDS = 60.0
LINEAGE_TTL_SECONDS = 30.0  # a served version's lineage changes rarely (a new load, feedback)
LINEAGE_RETRY_SECONDS = 5.0  # not recorded yet (the worker reports loads asynchronously)
_MAX_SAMPLES = 1024


class FeedbackIndex(Protocol):
    def metrics(self, model: str, version: str) -> dict[str, Any]: ...


class StatusMetadata(Protocol):
    """What the page reads from the metadata plug-in (``serving.metadata``'s services provide
    it when ``--metadata_connection`` or ``--prediction_log_dir`` is set). A protocol, not an
    import: plug-ins are peers, and the page must run without the metadata one."""

    def feedback_index(self) -> FeedbackIndex | None: ...

    def has_lineage(self) -> bool: ...

    async def lineage(self, request: dict[str, Any]) -> Any: ...

    def lineage_svg(self, view: dict[str, Any]) -> str: ...


def percentile(buckets: list[tuple[float, int]], count: int, q: float) -> float | None:
    """The ``q`` quantile of a cumulative histogram, interpolated inside its bucket the way
    Prometheus' ``histogram_quantile`` does; None without observations."""
    if count <= 0:
        return None
    rank = q * count
    lower, below = 0.0, 0
    for upper, cumulative in buckets:
        if cumulative >= rank:
            if math.isinf(upper):
                return lower
            inside = cumulative - below
            return lower + (upper - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = upper, cumulative
    return lower


@dataclass(frozen=True)
class _Sample:
    at: float
    totals: LatencyTotals


def _difference(now: LatencyTotals, then: LatencyTotals) -> LatencyTotals:
    earlier = dict(then.buckets)
    return LatencyTotals(
        now.count - then.count,
        now.sum_us - then.sum_us,
        [(bound, value - earlier.get(bound, 0)) for bound, value in now.buckets],
    )


class RequestRates:
    """Request rate and latency per version over the last minute, from the cumulative runtime
    histogram: each snapshot keeps a sample, and the figures are the difference between now and
    the oldest sample inside the window (the server's start counts as a sample of zeros)."""

    def __init__(
        self, window: float = RATE_WINDOW_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._window = window
        self._clock = clock
        self._started = clock()
        self._samples: dict[tuple[str, str], deque[_Sample]] = {}

    def update(self, totals: dict[tuple[str, str], LatencyTotals]) -> dict[tuple[str, str], dict]:
        now = self._clock()
        figures = {}
        for key, current in totals.items():
            samples = self._samples.get(key)
            if samples is None:
                samples = self._samples[key] = deque(maxlen=_MAX_SAMPLES)
                samples.append(_Sample(self._started, LatencyTotals()))
            while len(samples) > 1 and now - samples[1].at >= self._window:
                samples.popleft()  # keep one sample at or just past the window's start
            oldest = samples[0]
            samples.append(_Sample(now, current))
            recent = _difference(current, oldest.totals)
            elapsed = now - oldest.at
            figures[key] = {
                "requests": current.count,
                "rate_per_second": round(recent.count / elapsed, 3) if elapsed > 0 else None,
                "window_seconds": round(min(elapsed, self._window), 1),
                "recent_requests": recent.count,
                "latency_ms": _latency(recent) if recent.count else None,
                "lifetime_latency_ms": _latency(current),
            }
        return figures


def _latency(totals: LatencyTotals) -> dict[str, float | None]:
    def ms(micros: float | None) -> float | None:
        return None if micros is None else round(micros / 1000, 3)

    return {
        "mean": ms(totals.sum_us / totals.count) if totals.count else None,
        "p50": ms(percentile(totals.buckets, totals.count, 0.5)),
        "p99": ms(percentile(totals.buckets, totals.count, 0.99)),
    }


def _iso(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


@dataclass
class _CachedLineage:
    until: float
    view: dict[str, Any] | None
    error: str | None


class LineageCache:
    """Lineage views of served versions, asked from the metadata worker at most every
    ``LINEAGE_TTL_SECONDS`` per version, so a page polled every few seconds by several
    browsers does not turn into a stream of MLMD queries."""

    def __init__(
        self, services: StatusMetadata, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._services = services
        self._clock = clock
        self._views: dict[tuple[str, int], _CachedLineage] = {}

    async def get(self, model: str, version: int) -> _CachedLineage:
        key = (model, version)
        cached = self._views.get(key)
        now = self._clock()
        if cached is not None and now < cached.until:
            return cached
        query = {"op": "version", "model": model, "version": version}
        try:
            view = await self._services.lineage(query)
            cached = _CachedLineage(now + LINEAGE_TTL_SECONDS, view, None)
        except Exception as exc:  # not recorded yet, store down: shown, retried soon
            cached = _CachedLineage(now + LINEAGE_RETRY_SECONDS, None, str(exc))
        self._views[key] = cached
        return cached

    def view(self, model: str, version: int) -> dict[str, Any] | None:
        cached = self._views.get((model, version))
        return cached.view if cached else None

    def svg(self, model: str, version: int) -> str | None:
        """The picture of a fetched view (the plug-in draws it), None if none was fetched."""
        view = self.view(model, version)
        return None if view is None else self._services.lineage_svg(view)


def lineage_summary(view: dict[str, Any]) -> dict[str, Any]:
    """The few facts printed next to the picture (the CLI's ``version`` view, shortened)."""
    pushed = view.get("pushed_model") or {}
    return {
        "pipeline": view.get("pipeline"),
        "pipeline_run": view.get("pipeline_run"),
        "pushed_at": pushed.get("pushed_at"),
        "pushed_to": (pushed.get("properties") or {}).get("pushed_destination", pushed.get("uri")),
        "trainers": [f"#{t['id']} {t['state']}" for t in view.get("trainer") or []],
        "examples": [e.get("uri") for e in view.get("examples") or []],
        "blessings": [
            {"type": b.get("type", "").rsplit(".", 1)[-1], "blessed": b.get("blessed")}
            for b in view.get("blessings") or []
        ],
    }


class StatusSnapshot:
    """Builds the ``/status/snapshot.json`` document; one instance per server."""

    def __init__(
        self,
        core: ServerCore,
        metrics: ServingMetrics | None,
        metadata: StatusMetadata | None,
        server_id: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._core = core
        self._metrics = metrics
        self._server_id = server_id or socket.gethostname()
        self._started = time.time()
        self._rates = RequestRates(clock=clock)
        self._feedback = metadata.feedback_index() if metadata else None
        has_lineage = metadata is not None and metadata.has_lineage()
        self.lineage = LineageCache(metadata, clock) if has_lineage else None

    async def build(self) -> dict[str, Any]:
        rates = self._rates.update(self._metrics.version_runtimes()) if self._metrics else {}
        models = [await self._model(name, rates) for name in self._core.model_names()]
        return {
            "server": {
                "id": self._server_id,
                "version": __version__,
                "started_at": _iso(self._started),
                "now": _iso(time.time()),
                "request_metrics": self._metrics is not None,
                "feedback": self._feedback is not None,
                "lineage": self.lineage is not None,
            },
            "models": models,
        }

    async def _model(self, name: str, rates: dict[tuple[str, str], dict]) -> dict[str, Any]:
        try:
            config = self._core.model_config(name)
        except Exception:  # removed from the config between the listing and now
            return {"name": name, "versions": [], "labels": {}, "traffic_split": None}
        labels = dict(sorted(config.version_labels.items()))
        split = self._core.traffic_split(name)
        weights = split.weights() if split else None
        by_version: dict[int, list[str]] = {}
        for label, version in labels.items():
            by_version.setdefault(version, []).append(label)
        versions = []
        for record in self._core.manager(name).records():
            versions.append(
                await self._version(name, record, by_version.get(record.version, []), rates)
            )
        total = sum(weights.values()) if weights else 0
        return {
            "name": name,
            "base_path": config.base_path,
            "labels": labels,
            "traffic_split": (
                {label: round(100 * w / total, 1) for label, w in weights.items()}
                if weights
                else None
            ),
            "versions": versions[::-1],  # newest first
        }

    async def _version(
        self,
        model: str,
        record: VersionRecord,
        labels: list[str],
        rates: dict[tuple[str, str], dict],
    ) -> dict[str, Any]:
        serving = record.state == State.AVAILABLE
        entry: dict[str, Any] = {
            "version": record.version,
            "state": record.state.name,
            "error": record.error.message if record.error else None,
            "labels": labels,
            "loaded_at": _iso(record.loaded_at),
            "load_seconds": round(record.load_seconds, 3) if record.load_seconds else None,
            "requests": rates.get((model, str(record.version))),
            "feedback": await self._feedback_metrics(model, record.version),
            "lineage": None,
        }
        if self.lineage is not None and serving:
            cached = await self.lineage.get(model, record.version)
            entry["lineage"] = (
                {
                    "svg": f"/status/lineage/{model}/{record.version}.svg",
                    **lineage_summary(cached.view),
                }
                if cached.view is not None
                else {"error": cached.error}
            )
        return entry

    async def _feedback_metrics(self, model: str, version: int) -> dict[str, Any] | None:
        if self._feedback is None:
            return None
        loop = asyncio.get_running_loop()  # a SQLite read: off the event loop
        metrics = await loop.run_in_executor(None, self._feedback.metrics, model, str(version))
        return metrics.as_dict() if metrics.num_predictions else None
