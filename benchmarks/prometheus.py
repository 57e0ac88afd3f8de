"""A server's Prometheus page as numbers: what the benchmarks read around a measured run."""

from __future__ import annotations

import urllib.request


def prometheus_values(url: str) -> dict[str, float]:
    """Each metric's samples summed over their labels (a histogram's ``_sum`` and ``_count``
    over every label set), by metric name."""
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            series, value = line.rsplit(" ", 1)
            name = series.split("{", 1)[0]
            values[name] = values.get(name, 0.0) + float(value)
    return values


def batching_totals(url: str) -> tuple[float, float]:
    """(rows, model calls) the server's batching has counted so far: TF Serving's
    ``batching:input_batch_size_sum`` and ``batching_session:wrapped_run_count``. Rows per model
    call over a run is the ratio of their differences."""
    values = prometheus_values(url)
    rows = values.get(":tensorflow:serving:batching:input_batch_size_sum", 0.0)
    return rows, values.get(":tensorflow:serving:batching_session:wrapped_run_count", 0.0)
