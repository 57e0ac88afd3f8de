"""The server on its two stacks, side by side: same code, same SavedModel, same load.

    bash benchmarks/install.sh && scripts/bootstrap.sh tfx serving
    .venv/bin/python -m benchmarks.stacks [--models mlp,scalar] [--rounds 2]

The TFX 1.16 stack (``.venv``: Python 3.10, TF 2.16, protobuf 3.20, numpy 1, grpcio 1.65) and
the current serving stack (``.venv-serving``: Python 3.12, tensorflow-cpu 2.21, protobuf 5+,
numpy 2, newer grpcio and uvicorn) differ in everything the per-request cost depends on, so each
is measured with benchmarks.run's method (server pinned to CPU 0, wrk / h2load on CPU 1, one TF
thread, a warm-up then a measured run per point, a quiet CPU first): this server with and
without batching, the no-op transport ceiling (parse and answer, no model) and the in-process
compute ceiling. Within a round the stacks alternate server by server and the order flips
every round, so a busy neighbour on this shared machine hits both alike; medians over rounds
are reported. Writes ``benchmarks/results/stacks/results.json`` and ``results.md``: req/s on
each stack and the ratio current / TFX.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

from benchmarks import models
from benchmarks.run import (
    RESULTS,
    ROOT,
    WORK,
    Row,
    bench_server,
    build_servers,
    ceiling,
    machine,
    write_bodies,
)

STACKS = {
    "tfx": ROOT / ".venv" / "bin" / "python",
    "current": ROOT / ".venv-serving" / "bin" / "python",
}
STACK_TITLES = {"tfx": "TFX 1.16 stack", "current": "current stack"}
SERVERS = {"ours-batching", "ours-no-batching", "noop"}
_VERSIONS = """
import importlib.metadata as m, json, platform
def version(*names):
    for name in names:
        try:
            return m.version(name)
        except m.PackageNotFoundError:
            pass
    return None
print(json.dumps({"python": platform.python_version(),
                  **{n: version(*alts) for n, alts in {
                      "tensorflow": ("tensorflow", "tensorflow-cpu"), "protobuf": ("protobuf",),
                      "numpy": ("numpy",), "grpcio": ("grpcio",), "uvicorn": ("uvicorn",),
                      "uvloop": ("uvloop",), "orjson": ("orjson",)}.items()}}))
"""


def stack_versions(python: Path) -> dict[str, str]:
    out = subprocess.run([str(python), "-c", _VERSIONS], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def _median(rows: list[dict], **key) -> dict | None:
    group = [r for r in rows if all(r[k] == v for k, v in key.items())]
    if not group:
        return None
    return {
        "rps": statistics.median(r["rps"] for r in group),
        "p99_ms": statistics.median(r["p99_ms"] for r in group),
        "errors": sum(r["errors"] for r in group),
        "busy_before": max(r["busy_before"] for r in group),
        "rounds": len(group),
    }


def _ratio(current: float | None, tfx: float | None) -> str:
    return f"{current / tfx:.2f}x" if current and tfx else "—"


def markdown(report: dict) -> str:
    rows = report["rows"]
    lines = [
        "# The server on its two stacks",
        "",
        f"Measured {report['started']} to {report['finished']} with `python -m benchmarks.stacks` "
        f"({report['settings']['rounds']} rounds, {report['settings']['seconds']} s per point "
        f"after {report['settings']['warmup_seconds']} s warm-up; medians over rounds).",
        "",
        "| stack | " + " | ".join(next(iter(report["versions"].values()))) + " |",
        "|---|" + "---|" * len(next(iter(report["versions"].values()))),
    ]
    for stack, found in report["versions"].items():
        lines.append(
            f"| {STACK_TITLES[stack]} | " + " | ".join(str(v) for v in found.values()) + " |"
        )
    machine_ = report["machine"]
    lines += [
        "",
        f"Machine: {machine_['cpu']}, {machine_['cores']} cores (server on CPU 0, load generator "
        "on CPU 1), shared with other work: `busy` is the highest CPU use by others just before "
        "a point (either stack); points above 0.15 understate both stacks.",
        "",
        "## Requests per second (ratio = current / TFX; above 1 the current stack is faster)",
        "",
        "| model | server | protocol | c | TFX 1.16 req/s | current req/s | ratio "
        "| p99 TFX ms | p99 current ms | errors | busy |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    keys = sorted(
        {(r["model"], r["server"].split("@")[0], r["protocol"], r["concurrency"]) for r in rows},
        key=lambda k: (k[0], k[1], k[2], k[3]),
    )
    empty = {"rps": 0.0, "p99_ms": 0.0, "errors": 0, "busy_before": 0.0}
    for model, server, protocol, concurrency in keys:
        tfx, current = (
            _median(
                rows,
                model=model,
                server=f"{server}@{stack}",
                protocol=protocol,
                concurrency=concurrency,
            )
            or empty
            for stack in ("tfx", "current")
        )
        lines.append(
            f"| {model} | {server} | {protocol} | {concurrency} | {tfx['rps']:.0f} "
            f"| {current['rps']:.0f} | {_ratio(current['rps'], tfx['rps'])} "
            f"| {tfx['p99_ms']:.2f} | {current['p99_ms']:.2f} "
            f"| {tfx['errors'] + current['errors']} "
            f"| {max(tfx['busy_before'], current['busy_before']):.2f} |"
        )
    lines += [
        "",
        "## In-process compute ceiling (rows/s through the session callable, one TF thread)",
        "",
        "| model | batch | TFX 1.16 rows/s | current rows/s | ratio |",
        "|---|---|---|---|---|",
    ]
    for model, by_stack in report["ceilings_rows_per_second"].items():
        for batch in by_stack["tfx"]:
            tfx, current = by_stack["tfx"][batch], by_stack["current"].get(batch)
            lines.append(
                f"| {model} | {batch} | {tfx:.0f} | {current or 0:.0f} | {_ratio(current, tfx)} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="mlp,scalar")
    parser.add_argument("--servers", default=",".join(sorted(SERVERS)))
    parser.add_argument("--concurrency", default="1,32")
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--max-busy", type=float, default=0.15)
    parser.add_argument("--patience", type=float, default=60)
    parser.add_argument("--out", default=str(RESULTS / "stacks"))
    args = parser.parse_args(argv)
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    wanted = set(args.servers.split(","))
    if not wanted <= SERVERS:
        parser.error(f"--servers: choose from {sorted(SERVERS)}")
    for stack, python in STACKS.items():
        if not python.exists():
            print(
                f"{python} missing: scripts/bootstrap.sh {'tfx' if stack == 'tfx' else 'serving'}"
            )
            return 2
    for tool in ("wrk", "h2load", "taskset"):
        if not shutil.which(tool):
            print(f"{tool} missing: run bash benchmarks/install.sh first", file=sys.stderr)
            return 2
    WORK.mkdir(parents=True, exist_ok=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    rows: list[Row] = []
    ceilings: dict[str, dict[str, dict[str, float]]] = {}
    for model in args.models.split(","):
        base = models.build(model, str(WORK / "models"))
        bodies = write_bodies(model)
        ceilings[model] = {}
        for stack, python in STACKS.items():
            print(f"model {model}: in-process ceiling on the {STACK_TITLES[stack]}", flush=True)
            ceilings[model][stack] = ceiling(model, base, max(args.seconds / 4, 1), python)
        for round_ in range(1, args.rounds + 1):
            order = list(STACKS) if round_ % 2 else list(reversed(STACKS))
            per_stack = {
                stack: build_servers(model, base, bodies, wanted, STACKS[stack]) for stack in order
            }
            for variants in zip(*(per_stack[stack] for stack in order), strict=True):
                for stack, server in zip(order, variants, strict=True):
                    server.name = f"{server.name}@{stack}"
                    print(f"round {round_}, {STACK_TITLES[stack]}:", flush=True)
                    bench_server(server, model, args, round_, rows)
    report = {
        "started": started,
        "finished": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "machine": machine(),
        "versions": {stack: stack_versions(python) for stack, python in STACKS.items()},
        "settings": {
            "seconds": args.seconds,
            "warmup_seconds": args.warmup,
            "rounds": args.rounds,
            "concurrency": args.concurrency,
            "servers": sorted(wanted),
        },
        "ceilings_rows_per_second": ceilings,
        "rows": [asdict(row) for row in rows],
    }
    (out / "results.json").write_text(json.dumps(report, indent=1))
    (out / "results.md").write_text(markdown(report))
    print((out / "results.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
