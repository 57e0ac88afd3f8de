"""TF Serving's metrics, kept in a prometheus-client registry and exposed under TF's names.

TF Serving exports its TF monitoring metrics with every character outside ``[a-zA-Z0-9_]``
turned into ``:`` — ``/tensorflow/serving/request_count`` becomes
``:tensorflow:serving:request_count`` — and prints counters without the ``_total`` suffix
prometheus-client's own exposition adds. Dashboards written for TF Serving query those exact
names, so ``exposition()`` renders the registry in TF Serving's format (``# TYPE`` lines, no
``# HELP``, no ``_created`` samples). Latencies are in microseconds, as in TF Serving.

The metrics recorded on every request or batch are kept in :mod:`serving.monitoring.fast_metrics`
(the same samples for a fraction of prometheus-client's CPU per observation); the rare ones
(loading, warm-up, model stores) are prometheus-client's own.

Metrics are recorded when ``--monitoring_config_file`` enables them (exported at its path) or
when the status page needs their request figures (recorded, not exported); with neither, the
servers get ``None`` and record nothing, so such a server pays nothing per request.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.utils import floatToGoString

from serving.monitoring.config import DEFAULT_PATH
from serving.monitoring.fast_metrics import FastCounter, FastHistogram

# TF's monitoring::Buckets::Exponential(scale, power, count) plus +Inf.
_LATENCY_US = tuple(round(10 * 1.8**i, 3) for i in range(33))  # request/runtime/warmup latency
_QUEUING_US = tuple(round(100 * 1.2**i, 3) for i in range(52))  # batching_session queuing latency
_BATCH_SIZES = tuple(2**i for i in range(14))  # 1 .. 8192 rows


@dataclass
class LatencyTotals:
    """One histogram child read back: count, sum (µs) and cumulative (upper bound, count)."""

    count: int = 0
    sum_us: float = 0.0
    buckets: list[tuple[float, int]] = field(default_factory=list)


VersionStates = Callable[[], Iterable[tuple[str, int, str]]]


def _name(tf_name: str) -> str:
    return tf_name.replace("/", ":")


class ServingMetrics:
    def __init__(
        self, version_states: VersionStates | None = None, path: str | None = DEFAULT_PATH
    ) -> None:
        # Where the REST front end serves ``exposition()``; None when the metrics are kept
        # only for the status page (no --monitoring_config_file), so nothing is exported.
        self.path = path
        self.registry = CollectorRegistry(auto_describe=False)
        self._version_states = version_states

        def counter(tf_name: str, doc: str, labels: tuple[str, ...]) -> Counter:
            return Counter(_name(tf_name), doc, labels, registry=self.registry)

        def histogram(tf_name: str, doc: str, labels: tuple[str, ...], buckets) -> Histogram:
            return Histogram(_name(tf_name), doc, labels, buckets=buckets, registry=self.registry)

        # Recorded on every request or batch: kept in fast_metrics' cells (a bisect and two
        # adds per observation instead of prometheus-client's bucket walk and mutexes), with
        # the same exposition. Registration order is exposition order, as before.
        def fast_counter(tf_name: str, doc: str, labels: tuple[str, ...]) -> FastCounter:
            return FastCounter(_name(tf_name), doc, labels, self.registry)

        def fast_histogram(
            tf_name: str, doc: str, labels: tuple[str, ...], buckets
        ) -> FastHistogram:
            return FastHistogram(_name(tf_name), doc, labels, buckets, self.registry)

        self._request_count = fast_counter(
            "/tensorflow/serving/request_count",
            "The total number of requests.",
            ("model_name", "status"),
        )
        self._request_latency = fast_histogram(
            "/tensorflow/serving/request_latency",
            "Distribution of wall time (in microseconds) for Tensorflow Serving request.",
            ("model_name", "API", "entrypoint"),
            _LATENCY_US,
        )
        self._runtime_latency = fast_histogram(
            "/tensorflow/serving/runtime_latency",
            "Distribution of wall time (in microseconds) for Tensorflow runtime.",
            ("model_name", "API", "runtime"),
            _LATENCY_US,
        )
        self._queuing_latency = fast_histogram(
            "/tensorflow/serving/batching_session/queuing_latency",
            "Distribution of wall time spent (in microseconds) in queuing",
            ("thread_pool_name",),
            _QUEUING_US,
        )
        self._wrapped_run_count = fast_counter(
            "/tensorflow/serving/batching_session/wrapped_run_count",
            "Total count of run calls on the wrapped session",
            (),
        )
        # Batch-size histograms use TF's batching metric names (batch_resource_base.cc).
        self._input_batch_size = fast_histogram(
            "/tensorflow/serving/batching/input_batch_size",
            "Tracks the batch size distribution on the inputs by thread pool.",
            ("thread_pool_name",),
            _BATCH_SIZES,
        )
        self._processed_batch_size = fast_histogram(
            "/tensorflow/serving/batching/processed_batch_size",
            "Tracks the batch size distribution on processing by thread pool.",
            ("thread_pool_name",),
            _BATCH_SIZES,
        )
        self._padding_size = fast_histogram(
            "/tensorflow/serving/batching/padding_size",
            "Tracks the padding size distribution on batches by execution batch size.",
            ("thread_pool_name", "execution_batch_size"),
            _BATCH_SIZES,
        )
        self._warmup_latency = histogram(
            "/tensorflow/serving/model_warmup_latency",
            "Distribution of wall time (in microseconds) for warming up the model.",
            ("model_path", "status"),
            _LATENCY_US,
        )
        self._warmup_records = counter(
            "/tensorflow/serving/model_warmup_records_read",
            "Total number of warmup records read during model warmup.",
            ("model_path", "status"),
        )
        self._load_attempts = counter(
            "/tensorflow/cc/saved_model/load_attempt_count",
            "The number of times a SavedModel was successfully loaded.",
            ("model_path", "status"),
        )
        self._load_latency = counter(
            "/tensorflow/cc/saved_model/load_latency",
            "Latency in microseconds for SavedModels that were successfully loaded.",
            ("model_path",),
        )
        # Bucket model stores (tfx-model-server only; TF Serving has no such metrics).
        self._store_requests = counter(
            "/tfx_serving/storage/requests",
            "HTTP requests sent to a gs:// or s3:// model store, by operation.",
            ("model_name", "operation"),
        )
        self._store_poll_failures = counter(
            "/tfx_serving/storage/poll_failures",
            "Polls of a model store that failed (store unreachable); serving continues.",
            ("model_name",),
        )
        self._store_polls = counter(
            "/tfx_serving/storage/polls",
            "Polls of a gs:// or s3:// model store.",
            ("model_name",),
        )
        # Per version (tfx-model-server only; TF Serving's latencies are per model): what the
        # status page shows as each version's request rate and latency.
        self._version_runtime = fast_histogram(
            "/tfx_serving/version_runtime_latency",
            "Distribution of wall time (in microseconds) of model calls, by model version.",
            ("model_name", "version"),
            _LATENCY_US,
        )
        self._store_poll_requests = Gauge(
            _name("/tfx_serving/storage/last_poll_requests"),
            "HTTP requests the last poll of a model store sent (1 per 1,000 listed objects).",
            ("model_name",),
            registry=self.registry,
        )
        if version_states is not None:
            self.registry.register(_VersionStateCollector(version_states))

    # ---------------------------------------------------------------- requests
    def record_request(self, model: str, status: str, calls: int = 1) -> None:
        self._request_count.inc((model, status), calls)

    def record_request_latency(self, model: str, api: str, entrypoint: str, seconds: float) -> None:
        self._request_latency.observe((model, api, entrypoint), seconds * 1e6)

    def record_runtime(self, model: str, version: int, api: str, seconds: float) -> None:
        micros = seconds * 1e6
        self._runtime_latency.observe((model, api, "TF1"), micros)
        self._version_runtime.observe((model, str(version)), micros)

    def version_runtimes(self) -> dict[tuple[str, str], LatencyTotals]:
        """Per (model, version): calls so far, their summed time and cumulative bucket counts
        (the status page turns two of these into a rate and a latency)."""
        bounds = self._version_runtime.bounds
        totals: dict[tuple[str, str], LatencyTotals] = {}
        for (model, version), snapshot in self._version_runtime.snapshots().items():
            cumulative = list(itertools.accumulate(snapshot.counts))
            totals[(model, version)] = LatencyTotals(
                count=cumulative[-1],
                sum_us=snapshot.sum,
                buckets=list(zip(bounds, cumulative, strict=True)),
            )
        return totals

    # ---------------------------------------------------------------- batching (BatchMetrics)
    def record_inputs(self, pool: str, rows: Sequence[int]) -> None:
        """One observation per client request (a coalesced request carries several)."""
        self._input_batch_size.observe_all((pool,), rows)

    def record_batch(self, pool: str, rows: int, padded_rows: int, waits: list[float]) -> None:
        self._wrapped_run_count.inc()
        self._processed_batch_size.observe((pool,), padded_rows)
        self._padding_size.observe((pool, str(padded_rows)), padded_rows - rows)
        self._queuing_latency.observe_all((pool,), [wait * 1e6 for wait in waits])

    # ---------------------------------------------------------------- loading
    def record_warmup(self, model_path: str, ok: bool, records: int, seconds: float) -> None:
        status = "OK" if ok else "FAILED"
        self._warmup_latency.labels(model_path, status).observe(seconds * 1e6)
        self._warmup_records.labels(model_path, status).inc(records)

    def record_load(self, model_path: str, ok: bool, seconds: float) -> None:
        self._load_attempts.labels(model_path, "success" if ok else "fail").inc()
        if ok:
            self._load_latency.labels(model_path).inc(seconds * 1e6)

    # ---------------------------------------------------------------- model stores
    def record_store_request(self, model: str, operation: str) -> None:
        self._store_requests.labels(model, operation).inc()

    def record_store_poll(self, model: str, requests: int) -> None:
        self._store_polls.labels(model).inc()
        self._store_poll_requests.labels(model).set(requests)

    def record_store_poll_failure(self, model: str) -> None:
        self._store_poll_failures.labels(model).inc()

    # ---------------------------------------------------------------- exposition
    def exposition(self) -> bytes:
        """The registry in TF Serving's Prometheus text format."""
        lines: list[str] = []
        for metric in self.registry.collect():
            lines.append(f"# TYPE {metric.name} {metric.type}\n")
            lines.extend(_sample_lines(metric))
        return "".join(lines).encode()


def _sample_lines(metric: Metric) -> Iterable[str]:
    for sample in metric.samples:
        if sample.name.endswith("_created"):
            continue
        name = metric.name if metric.type == "counter" else sample.name
        labels = ",".join(f'{k}="{_escape(v)}"' for k, v in sample.labels.items())
        body = f"{{{labels}}}" if labels else ""
        yield f"{name}{body} {floatToGoString(sample.value)}\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class _VersionStateCollector:
    """``:tensorflow:serving:model_version_state``: 1 for each version's current state.

    TF Serving has no such gauge (version states are only in the status API); it is added so
    an alert can fire on a version stuck in LOADING or END without polling every model.
    """

    def __init__(self, version_states: VersionStates) -> None:
        self._version_states = version_states

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(
            _name("/tensorflow/serving/model_version_state"),
            "1 for the state each model version is in.",
            labels=("model_name", "version", "state"),
        )
        for model, version, state in self._version_states():
            family.add_metric((model, str(version), state), 1)
        yield family
