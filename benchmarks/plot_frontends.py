"""frontends.png from benchmarks.frontends' results.json (run in the "tools" venv: matplotlib).

    benchmarks/work/venv-tools/bin/python -m benchmarks.plot_frontends \
        benchmarks/results/frontends/results.json

Five panels: req/s at the scaling concurrency per server (ours by N, peers), CPU µs per request
by part, the projected req/s on 8/16/64 cores, resident memory by part, and the model process
alone: its CPU per request by calls per message, against issue 14's 25 µs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from benchmarks.frontends_report import MIB, PROJECTED_CORES, projection

PROTOCOLS = ("REST", "gRPC")
ROLES = ("model", "frontend", "parent", "other")


def _bars(axis, labels: list[str], series: dict[str, list[float]], stacked: bool) -> None:
    width = 0.8 if stacked else 0.8 / max(len(series), 1)
    bottom = [0.0] * len(labels)
    for index, (name, values) in enumerate(series.items()):
        xs = [
            i + (0 if stacked else (index - (len(series) - 1) / 2) * width)
            for i in range(len(labels))
        ]
        axis.bar(xs, values, width, bottom=bottom if stacked else None, label=name)
        if stacked:
            bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    axis.set_xticks(range(len(labels)), labels, rotation=20, ha="right", fontsize=8)
    axis.grid(True, axis="y", alpha=0.3)
    if series:
        axis.legend(fontsize=8)
    else:
        axis.text(0.5, 0.5, "not measured", ha="center", transform=axis.transAxes)


def plot(report: dict, out: Path) -> None:
    c = report["settings"]["concurrency"][-1]
    points = [p for p in report["points"] if p["concurrency"] == c]
    figure, axes = plt.subplots(2, 3, figsize=(19, 9))

    servers = list(dict.fromkeys(p["server"] for p in points))
    rates = {
        protocol: [
            next((p["rps"] for p in points if p["server"] == s and p["protocol"] == protocol), 0)
            for s in servers
        ]
        for protocol in PROTOCOLS
    }
    _bars(axes[0][0], servers, rates, stacked=False)
    axes[0][0].set_title(f"req/s at c={c} (server on CPUs {report['settings']['server_cpus']})")

    ours = [p for p in points if p["frontends"] is not None and p["cpu_us_per_request"]]
    labels = [f"N={p['frontends']} {p['protocol']}" for p in ours]
    costs = {
        role: [p["cpu_us_per_request"].get(role, 0.0) for p in ours]
        for role in ROLES
        if any(role in p["cpu_us_per_request"] for p in ours)
    }
    _bars(axes[0][1], labels, costs, stacked=True)
    axes[0][1].set_title("CPU µs per request, by process (N=0: all in 'parent')")

    axis = axes[1][0]
    for p in ours:
        cost = p["cpu_us_per_request"]
        if p["frontends"] and "model" in cost and "frontend" in cost:
            ys = [projection(cost["frontend"], cost["model"], n)[0] for n in PROJECTED_CORES]
            axis.plot(PROJECTED_CORES, ys, "-o", label=f"N={p['frontends']} {p['protocol']}")
        elif p["frontends"] == 0:
            total = sum(cost.values())
            axis.plot(
                PROJECTED_CORES,
                [1e6 / total] * len(PROJECTED_CORES),
                "--",
                label=f"in-process {p['protocol']}",
            )
    axis.set_xscale("log", base=2)
    axis.set_yscale("log")
    axis.set_xlabel("cores")
    axis.set_title("projected req/s from the measured costs")
    axis.grid(True, alpha=0.3)
    if axis.lines:
        axis.legend(fontsize=8)

    memory = report["memory"]
    labels = [entry["server"] for entry in memory]
    by_role = {
        role: [
            sum(p["rss_bytes"] for p in entry["processes"] if p["role"] == role) / MIB
            for entry in memory
        ]
        for role in ROLES
    }
    _bars(axes[1][1], labels, {r: v for r, v in by_role.items() if any(v)}, stacked=True)
    axes[1][1].set_title("VmRSS MB by process (shared pages counted in each)")

    _capacity(axes[0][2], report.get("capacity", []))
    axes[1][2].axis("off")

    figure.suptitle(f"front-end processes — {report['settings']['model']}, CPU only")
    figure.tight_layout()
    figure.savefig(out, dpi=90)
    plt.close(figure)


def _capacity(axis, rows: list[dict]) -> None:
    measured = [r for r in rows if r["calls_per_message"]]
    if not measured:
        axis.text(0.5, 0.5, "not measured", ha="center", transform=axis.transAxes)
        return
    callers = [r for r in measured if not r.get("frontends")]
    if callers:
        axis.plot(
            [r["calls_per_message"] for r in callers],
            [r["model_us_per_request"] for r in callers],
            "-o",
            label="one caller stream (idle between messages)",
        )
        for row in callers:
            axis.annotate(
                f"c={row['concurrency']}",
                (row["calls_per_message"], row["model_us_per_request"]),
                fontsize=8,
            )
    for row in measured:
        if row.get("frontends"):
            cap = row.get("batch_cap")
            axis.plot(
                row["calls_per_message"],
                row["model_us_per_request"],
                "s" if cap else "^",
                label=f"{row['frontends']} connections, "
                + (f"batches ≤ {cap} rows" if cap else f"batch {row['rows_per_model_call']:.0f}"),
            )
    axis.axhline(25, color="gray", linestyle="--", label="target: 25 µs at batch ≥ 8")
    axis.set_xscale("log", base=2)
    axis.set_yscale("log")
    axis.set_xlabel("calls per message")
    axis.set_title("model process alone: CPU µs per request")
    axis.grid(True, alpha=0.3)
    axis.legend(fontsize=7)


def main(path: Path) -> None:
    out = path.parent / "frontends.png"
    plot(json.loads(path.read_text()), out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
