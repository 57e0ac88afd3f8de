"""CPU per metric observation: prometheus-client's Histogram/Counter against fast_metrics.

    .venv/bin/python -m benchmarks.metrics_cost [--number 200000] [--repeat 5]

Rows (the best of ``--repeat`` timeit runs of each side, alternating; µs per call, one thread,
no contention):

- ``histogram observe``: one observation into TF Serving's 33 request-latency buckets (+Inf),
  at 1.5 ms (8th bucket) and at 2 s (22nd bucket: prometheus-client walks the bounds in
  order, so its cost grows with the value; a bisect does not);
- ``counter inc``: one increment of a labelled counter;
- ``per request``: what ``ServingMetrics`` records for one unbatched request (request count,
  request latency, runtime latency and the per-version runtime histogram, the input batch
  size, and a batch of one: wrapped_run_count, processed and padding size, one queuing
  latency). The baseline is the same calls on prometheus-client children looked up in a dict,
  as ``ServingMetrics`` did before fast_metrics.

Labelled children/cells exist before timing starts (a server records the same label sets
over and over).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import platform
import timeit
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Histogram

from serving.monitoring.fast_metrics import FastCounter, FastHistogram
from serving.monitoring.metrics import _BATCH_SIZES, _LATENCY_US, _QUEUING_US, ServingMetrics


def _stock_per_request() -> Callable[[], None]:
    registry = CollectorRegistry(auto_describe=False)
    count = Counter(":r:count", "c", ("model_name", "status"), registry=registry)
    request = Histogram(":r:req", "h", ("m", "a", "e"), buckets=_LATENCY_US, registry=registry)
    runtime = Histogram(":r:run", "h", ("m", "a", "r"), buckets=_LATENCY_US, registry=registry)
    version = Histogram(":r:ver", "h", ("m", "v"), buckets=_LATENCY_US, registry=registry)
    inputs = Histogram(":r:in", "h", ("p",), buckets=_BATCH_SIZES, registry=registry)
    processed = Histogram(":r:proc", "h", ("p",), buckets=_BATCH_SIZES, registry=registry)
    padding = Histogram(":r:pad", "h", ("p", "e"), buckets=_BATCH_SIZES, registry=registry)
    queuing = Histogram(":r:q", "h", ("p",), buckets=_QUEUING_US, registry=registry)
    runs = Counter(":r:runs", "c", (), registry=registry)
    children: dict = {}

    def child(metric, *labels):
        key = (id(metric), labels)
        found = children.get(key)
        if found is None:
            found = children[key] = metric.labels(*labels)
        return found

    def record() -> None:
        child(count, "m", "OK").inc()
        child(request, "m", "predict", "REST").observe(0.0021 * 1e6)
        micros = 0.0015 * 1e6
        child(runtime, "m", "Predict", "TF1").observe(micros)
        child(version, "m", "1").observe(micros)
        child(inputs, "batch_threads").observe(1)
        runs.inc()
        child(processed, "batch_threads").observe(1)
        child(padding, "batch_threads", "1").observe(0)
        for wait in [0.0001]:
            child(queuing, "batch_threads").observe(wait * 1e6)

    return record


def _fast_per_request() -> Callable[[], None]:
    metrics = ServingMetrics(path=None)

    def record() -> None:
        metrics.record_request("m", "OK")
        metrics.record_request_latency("m", "predict", "REST", 0.0021)
        metrics.record_runtime("m", 1, "Predict", 0.0015)
        metrics.record_inputs("batch_threads", (1,))
        metrics.record_batch("batch_threads", 1, 1, [0.0001])

    return record


def _rows() -> list[tuple[str, Callable[[], None], Callable[[], None]]]:
    stock_registry, fast_registry = CollectorRegistry(), CollectorRegistry()
    labels = ("m", "predict", "REST")
    stock_h = Histogram(":h", "h", ("m", "a", "e"), buckets=_LATENCY_US, registry=stock_registry)
    stock_h_child = stock_h.labels(*labels)
    fast_h = FastHistogram(":h", "h", ("m", "a", "e"), _LATENCY_US, fast_registry)
    stock_c_child = Counter(":c", "c", ("m", "s"), registry=stock_registry).labels("m", "OK")
    fast_c = FastCounter(":c", "c", ("m", "s"), fast_registry)
    return [
        (
            "histogram observe, 1.5 ms",
            lambda: stock_h_child.observe(1500.0),
            lambda: fast_h.observe(labels, 1500.0),
        ),
        (
            "histogram observe, 2 s",
            lambda: stock_h_child.observe(2e6),
            lambda: fast_h.observe(labels, 2e6),
        ),
        ("counter inc", lambda: stock_c_child.inc(), lambda: fast_c.inc(("m", "OK"))),
        ("per request (9 observations)", _stock_per_request(), _fast_per_request()),
    ]


def _per_call_us(
    stock: Callable[[], None], fast: Callable[[], None], number: int, repeat: int
) -> tuple[float, float]:
    """Best run of each, the two timed alternately so a burst of load on the shared host
    hits both sides rather than one."""
    stock()  # creates the children / cells
    fast()
    stock_runs, fast_runs = [], []
    for _ in range(repeat):
        stock_runs.append(timeit.timeit(stock, number=number))
        fast_runs.append(timeit.timeit(fast, number=number))
    return min(stock_runs) / number * 1e6, min(fast_runs) / number * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print(
        f"Python {platform.python_version()},"
        f" prometheus-client {importlib.metadata.version('prometheus-client')}\n"
    )
    print("| operation | prometheus-client µs | fast_metrics µs | ratio |")
    print("|---|---:|---:|---:|")
    for name, stock, fast in _rows():
        stock_us, fast_us = _per_call_us(stock, fast, args.number, args.repeat)
        print(f"| {name} | {stock_us:.3f} | {fast_us:.3f} | {stock_us / fast_us:.1f}x |")


if __name__ == "__main__":
    main()
