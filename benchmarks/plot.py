"""Throughput and p99 vs concurrency, one PNG per model (run in the "tools" venv: matplotlib).

benchmarks/work/venv-tools/bin/python -m benchmarks.plot benchmarks/results/results.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from benchmarks.report import median_rows


def plot(rows: list[dict], model: str, out: Path) -> None:
    figure, axes = plt.subplots(2, 2, figsize=(12, 8), sharex=True)
    for column, protocol in enumerate(("REST", "gRPC")):
        series: dict[str, list[dict]] = {}
        for row in rows:
            if row["model"] == model and row["protocol"] == protocol:
                series.setdefault(row["server"], []).append(row)
        for server, points in sorted(series.items()):
            points.sort(key=lambda r: r["concurrency"])
            xs = [p["concurrency"] for p in points]
            style = "-o" if server.startswith("ours") else "--s"
            axes[0][column].plot(xs, [p["rps"] for p in points], style, label=server)
            axes[1][column].plot(xs, [p["p99_ms"] for p in points], style, label=server)
        axes[0][column].set_title(f"{model} — {protocol}")
        axes[0][column].set_ylabel("requests/s")
        axes[1][column].set_ylabel("p99 latency (ms, log)")
        axes[1][column].set_yscale("log")
        axes[1][column].set_xlabel("concurrent requests")
        for axis in (axes[0][column], axes[1][column]):
            axis.set_xscale("log", base=2)
            axis.grid(True, alpha=0.3)
        axes[0][column].legend(fontsize=8)
    figure.suptitle("server on 1 core, load generator on the other (CPU only)")
    figure.tight_layout()
    figure.savefig(out, dpi=90)
    plt.close(figure)


def main(path: Path) -> None:
    report = json.loads(path.read_text())
    rows = median_rows(report["rows"])
    for model in dict.fromkeys(r["model"] for r in rows):
        out = path.parent / f"{model}.png"
        plot(rows, model, out)
        print(f"wrote {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
