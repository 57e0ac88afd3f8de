"""fast_metrics: the same Prometheus text as prometheus-client's own metrics, no lost counts."""

from __future__ import annotations

import random
import sys
import threading
import time

import prometheus_client.metrics
import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from serving.monitoring.fast_metrics import FastCounter, FastHistogram
from serving.monitoring.metrics import _BATCH_SIZES, _LATENCY_US, _QUEUING_US, ServingMetrics

CREATED_AT = 1_700_000_000.25


@pytest.fixture
def fixed_clock(monkeypatch):
    """Both kinds of metric stamp ``_created`` from ``time.time()``: one fixed clock makes the
    whole exposition, ``_created`` included, comparable byte for byte."""
    monkeypatch.setattr(time, "time", lambda: CREATED_AT)


def _observations(seed: int, count: int) -> list[tuple[tuple[str, ...], float]]:
    """Label sets and values in a seeded random order: bucket bounds exactly, values between
    them, zero, values beyond the last bound, integers (batch sizes) and small floats."""
    rng = random.Random(seed)
    label_sets = [("m", "predict", "REST"), ("m", "classify", "gRPC"), ("other", "predict", "")]
    values: list[float] = [0, 0.0, 10.0, 1e12, 12345.678, *_LATENCY_US[:5], _LATENCY_US[-1]]
    values += [rng.lognormvariate(7, 3) for _ in range(count)]
    values += [rng.randint(1, 9000) for _ in range(count // 4)]
    rng.shuffle(values)
    return [(rng.choice(label_sets), value) for value in values]


@pytest.mark.parametrize(
    "buckets", [_LATENCY_US, _QUEUING_US, _BATCH_SIZES, (0.5, 1, 2.5, float("inf"))]
)
def test_histogram_exposition_is_prometheus_clients(fixed_clock, buckets):
    stock_registry, fast_registry = CollectorRegistry(), CollectorRegistry()
    labelnames = ("model_name", "API", "entrypoint")
    doc = 'Wall time "in" µs\\ of a\nrequest.'  # HELP escaping goes through the same path
    stock = Histogram(":t:latency", doc, labelnames, buckets=buckets, registry=stock_registry)
    fast = FastHistogram(":t:latency", doc, labelnames, buckets, fast_registry)
    for labels, value in _observations(seed=14, count=400):
        stock.labels(*labels).observe(value)
        fast.observe(labels, value)

    text = generate_latest(fast_registry)
    assert text == generate_latest(stock_registry)
    assert b'_created{API="predict",entrypoint="REST",model_name="m"} 1.70000000025e+09' in text
    assert b'le="+Inf"' in text


def test_histogram_observe_all_counts_each_value(fixed_clock):
    stock_registry, fast_registry = CollectorRegistry(), CollectorRegistry()
    stock = Histogram(":t:q", "q", ("pool",), buckets=_QUEUING_US, registry=stock_registry)
    fast = FastHistogram(":t:q", "q", ("pool",), _QUEUING_US, fast_registry)
    rng = random.Random(3)
    for _ in range(50):
        waits = [rng.expovariate(1 / 5000) for _ in range(rng.randint(0, 6))]
        for wait in waits:
            stock.labels("batch_threads").observe(wait)
        fast.observe_all(("batch_threads",), waits)
    assert generate_latest(fast_registry) == generate_latest(stock_registry)


def test_counter_exposition_is_prometheus_clients(fixed_clock):
    stock_registry, fast_registry = CollectorRegistry(), CollectorRegistry()
    stock = Counter(
        ":t:request_count", "Requests.", ("model_name", "status"), registry=stock_registry
    )
    fast = FastCounter(":t:request_count", "Requests.", ("model_name", "status"), fast_registry)
    stock_runs = Counter(":t:runs", "Runs.", (), registry=stock_registry)
    fast_runs = FastCounter(":t:runs", "Runs.", (), fast_registry)
    # Before any increment: the unlabelled counter is there at 0, the labelled one is empty.
    assert generate_latest(fast_registry) == generate_latest(stock_registry)
    rng = random.Random(7)
    for _ in range(300):
        labels = (rng.choice(["m", "n"]), rng.choice(["OK", "INVALID_ARGUMENT", "UNAVAILABLE"]))
        amount = rng.choice([1, 1, 1, 2, 0.5])
        stock.labels(*labels).inc(amount)
        fast.inc(labels, amount)
        stock_runs.inc()
        fast_runs.inc()
    text = generate_latest(fast_registry)
    assert text == generate_latest(stock_registry)
    assert b":t:runs_total 300.0" in text


def test_created_series_follow_prometheus_clients_switch(fixed_clock):
    fast_registry = CollectorRegistry()
    FastHistogram(":t:h", "h", ("a",), (1, 2), fast_registry).observe(("x",), 1)
    FastCounter(":t:c", "c", ("a",), fast_registry).inc(("x",))
    prometheus_client.metrics.disable_created_metrics()
    try:
        text = generate_latest(fast_registry)
    finally:
        prometheus_client.metrics.enable_created_metrics()
    assert b"_created" not in text and b':t:h_count{a="x"} 1.0' in text
    assert b"_created" in generate_latest(fast_registry)


def test_serving_metrics_exposition_matches_stock_metrics(fixed_clock):
    """The whole registry of ``ServingMetrics`` against the same metrics built on stock
    prometheus-client, fed the same per-request calls: same families, order and samples."""
    fast = ServingMetrics()
    stock_registry = CollectorRegistry(auto_describe=False)
    calls = _serving_calls(seed=21)
    for method, args in calls:
        getattr(fast, method)(*args)
    stock = _stock_serving_metrics(stock_registry)
    for method, args in calls:
        stock[method](*args)
    fast_families = _families(generate_latest(fast.registry))
    stock_families = _families(generate_latest(stock_registry))
    assert len(list(stock_registry.collect())) == 9
    in_both = [(name, text) for name, text in fast_families if name in dict(stock_families)]
    assert in_both == stock_families
    # ``exposition()`` (TF Serving's format) writes labels in declaration order, which
    # generate_latest sorts away: compare the collected samples with their label order too.
    fast_samples, stock_samples = _samples(fast.registry), _samples(stock_registry)
    assert {name: fast_samples[name] for name in stock_samples} == stock_samples


def _samples(registry: CollectorRegistry) -> dict[str, list[tuple]]:
    return {
        metric.name: [(s.name, list(s.labels.items()), s.value, s.exemplar) for s in metric.samples]
        for metric in registry.collect()
    }


def _families(exposition: bytes) -> list[tuple[str, str]]:
    """(name, text) of each metric family, in exposition order."""
    blocks = exposition.decode().split("# HELP ")[1:]
    return [(block.split(" ", 1)[0], block) for block in blocks]


def _serving_calls(seed: int) -> list[tuple[str, tuple]]:
    rng = random.Random(seed)
    calls: list[tuple[str, tuple]] = []
    for _ in range(200):
        model = rng.choice(["m", "n"])
        calls.append(
            ("record_request", (model, rng.choice(["OK", "NOT_FOUND"]), rng.randint(1, 3)))
        )
        calls.append(
            ("record_request_latency", (model, "predict", "REST", rng.lognormvariate(-7, 2)))
        )
        calls.append(("record_runtime", (model, rng.randint(1, 3), "Predict", rng.random() / 50)))
        rows = rng.randint(1, 40)
        callers = [rng.randint(1, rows) for _ in range(rng.randint(1, 3))]
        calls.append(("record_inputs", ("batch_threads", callers)))
        padded = next(size for size in _BATCH_SIZES if size >= rows)
        waits = [rng.random() / 100 for _ in range(rng.randint(1, 4))]
        calls.append(("record_batch", ("batch_threads", rows, padded, waits)))
    return calls


def _stock_serving_metrics(registry: CollectorRegistry) -> dict:
    """The per-request metrics as ``ServingMetrics`` declared them on prometheus-client
    before fast_metrics (same names, help, labels, buckets, registration order)."""

    def histogram(name, doc, labels, buckets):
        return Histogram(name, doc, labels, buckets=buckets, registry=registry)

    tf = ":tensorflow:serving:"
    request_count = Counter(
        f"{tf}request_count", "The total number of requests.", ("model_name", "status"),
        registry=registry,
    )  # fmt: skip
    request_latency = histogram(
        f"{tf}request_latency",
        "Distribution of wall time (in microseconds) for Tensorflow Serving request.",
        ("model_name", "API", "entrypoint"),
        _LATENCY_US,
    )
    runtime_latency = histogram(
        f"{tf}runtime_latency",
        "Distribution of wall time (in microseconds) for Tensorflow runtime.",
        ("model_name", "API", "runtime"),
        _LATENCY_US,
    )
    queuing = histogram(
        f"{tf}batching_session:queuing_latency",
        "Distribution of wall time spent (in microseconds) in queuing",
        ("thread_pool_name",),
        _QUEUING_US,
    )
    wrapped = Counter(
        f"{tf}batching_session:wrapped_run_count",
        "Total count of run calls on the wrapped session",
        registry=registry,
    )
    input_size = histogram(
        f"{tf}batching:input_batch_size",
        "Tracks the batch size distribution on the inputs by thread pool.",
        ("thread_pool_name",),
        _BATCH_SIZES,
    )
    processed = histogram(
        f"{tf}batching:processed_batch_size",
        "Tracks the batch size distribution on processing by thread pool.",
        ("thread_pool_name",),
        _BATCH_SIZES,
    )
    padding = histogram(
        f"{tf}batching:padding_size",
        "Tracks the padding size distribution on batches by execution batch size.",
        ("thread_pool_name", "execution_batch_size"),
        _BATCH_SIZES,
    )
    version_runtime = histogram(
        ":tfx_serving:version_runtime_latency",
        "Distribution of wall time (in microseconds) of model calls, by model version.",
        ("model_name", "version"),
        _LATENCY_US,
    )

    def record_runtime(model, version, api, seconds):
        runtime_latency.labels(model, api, "TF1").observe(seconds * 1e6)
        version_runtime.labels(model, str(version)).observe(seconds * 1e6)

    def record_batch(pool, rows, padded, waits):
        wrapped.inc()
        processed.labels(pool).observe(padded)
        padding.labels(pool, str(padded)).observe(padded - rows)
        for wait in waits:
            queuing.labels(pool).observe(wait * 1e6)

    def record_inputs(pool: str, callers: list[int]) -> None:
        for rows in callers:
            input_size.labels(pool).observe(rows)

    return {
        "record_request": lambda model, status, calls: request_count.labels(model, status).inc(
            calls
        ),
        "record_request_latency": lambda model, api, entry, seconds: request_latency.labels(
            model, api, entry
        ).observe(seconds * 1e6),
        "record_runtime": record_runtime,
        "record_inputs": record_inputs,
        "record_batch": record_batch,
    }


def test_concurrent_observations_lose_no_count():
    """Threads record into the same cells at once (the event loop and batch threads do):
    every increment lands, including those racing to create a label set's cell. All threads
    walk the same label sets in step from a barrier, and a short switch interval makes them
    interleave between the cell look-up and the adds many times over. (On a GIL build the
    lost updates this catches come from cell creation — an unlocked create-or-replace loses
    a few counts per cell here; the adds themselves rarely interleave without the lock, but
    a free-threaded build would lose them too.)"""
    registry = CollectorRegistry()
    histogram = FastHistogram(":t:h", "h", ("model_name",), _LATENCY_US, registry)
    counter = FastCounter(":t:c", "c", ("model_name",), registry)
    threads, per_thread, label_sets = 8, 20_000, 1_000
    start = threading.Barrier(threads)

    def record() -> None:
        start.wait()
        for i in range(per_thread):
            labels = (f"m{i % label_sets}",)
            histogram.observe(labels, i % 10 + 1)  # 1..10: first two buckets
            counter.inc(labels)

    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        workers = [threading.Thread(target=record) for _ in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=120)
        assert not any(worker.is_alive() for worker in workers)
    finally:
        sys.setswitchinterval(switch)

    per_cell = threads * per_thread // label_sets
    snapshots = histogram.snapshots()
    assert len(snapshots) == label_sets
    assert {sum(s.counts) for s in snapshots.values()} == {per_cell}
    # Cell m<j> always sees the value j % 10 + 1 (label_sets is a multiple of 10).
    assert all(s.sum == per_cell * (int(labels[0][1:]) % 10 + 1) for labels, s in snapshots.items())
    totals = [
        sample.value
        for metric in registry.collect()
        for sample in metric.samples
        if sample.name == ":t:c_total"
    ]
    assert len(totals) == label_sets and set(totals) == {per_cell}


def test_bad_declarations_and_calls_are_refused():
    registry = CollectorRegistry()
    with pytest.raises(ValueError, match="increasing order"):
        FastHistogram(":t:h", "h", (), (2, 1), registry)
    with pytest.raises(ValueError, match="'le'"):
        FastHistogram(":t:h", "h", ("le",), (1, 2), registry)
    counter = FastCounter(":t:c", "c", ("model_name", "status"), registry)
    with pytest.raises(ValueError, match="only go up"):
        counter.inc(("m", "OK"), -1)
    with pytest.raises(ValueError, match=r"takes labels \('model_name', 'status'\)"):
        counter.inc(("m",))
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        FastCounter(":t:c", "again", (), registry)
