"""Where a predict's time goes at one call in flight, stage by stage, with front-end processes
and without: what the process hop (issue 14: "≤ 0.1 ms added to p50 at c=1") is made of.

For each ``--frontends`` N it starts benchmarks.run's ours-batching server (``taskset -c 0,1``,
as benchmarks.frontends' hop part) with ``benchmarks/hop_trace`` first on ``PYTHONPATH``: every
process that serves calls then marks each stage a predict passes through (the tracer's
``FRONTEND_STAGES`` and ``MODEL_STAGES``) on the machine's one monotonic clock. One call at a
time is sent (h2load / wrk on CPU 1, as the hop part) for ``--seconds``; the marks are
collected, put in one order across the processes, and cut into calls at the dataplane's entry
(``RemoteDataplane.predict`` in the front end; ``InferenceService.predict`` in one process).
Calls that took the most common path (the others had a background message or a metrics flush
in between) give each step's median and p90; ``in the server`` is the median from the
dataplane's entry to its return, against the load generator's p50 for the whole call.

Each mark costs the call about 0.4 µs (a wrapped call appending a clock reading), ~25 marks
per call with front ends and ~15 without: the figures include that, and are for comparing
steps, not for the targets (benchmarks.frontends measures those without the tracer).

    .venv/bin/python -m benchmarks.hop_stages [--frontends 0,1] [--protocols gRPC,REST]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from functools import partial
from pathlib import Path

from benchmarks import models
from benchmarks.frontends import ours, wait_for_children
from benchmarks.hop_marks import calls, collect, entry, print_steps, steps, tracing_env
from benchmarks.run import RUNNERS, WORK, start, stop, validate, write_bodies


def measure(n: int, model: str, base: str, bodies: dict, args: argparse.Namespace) -> dict:
    """Per protocol: (steps, the load generator's p50 ms) for the N-front-end server."""
    server = ours(model, base, bodies, n, supported=True)
    print(f"starting {server.name} (taskset -c {server.cpus})", flush=True)
    windows = {}
    with tempfile.TemporaryDirectory(prefix=f"hop-stages-N{n}-") as folder:
        server.env.update(tracing_env(Path(folder)))
        process = start(server, WORK / f"hop-stages-N{n}.log")
        try:
            wait_for_children(process.pid, n)
            for endpoint in server.endpoints:
                if endpoint.protocol not in args.protocols:
                    continue
                RUNNERS[endpoint.protocol](endpoint, 1, args.warmup)
                since = time.perf_counter_ns()
                run = RUNNERS[endpoint.protocol](endpoint, 1, args.seconds)
                windows[endpoint.protocol] = (since, time.perf_counter_ns(), run["p50_ms"])
            poke = partial(validate, server.endpoints[0])
            marks = collect(process.pid, n, Path(folder), poke)
        finally:
            stop(process)
    results = {}
    for protocol, (since, until, p50_ms) in windows.items():
        result = steps(calls(marks, entry(n), since, until))
        print_steps(f"{protocol}, {server.name}", result, p50_ms)
        results[protocol] = (result, p50_ms)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="mlp", choices=sorted(models.INPUT_SHAPES))
    parser.add_argument("--frontends", default="0,1", help="N values, comma-separated")
    parser.add_argument("--protocols", default="gRPC,REST")
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    args = parser.parse_args()
    args.protocols = set(args.protocols.split(","))
    if not args.protocols <= set(RUNNERS):
        parser.error(f"--protocols: choose from {', '.join(sorted(RUNNERS))}")
    base = models.build(args.model, str(WORK / "models"))
    bodies = write_bodies(args.model)
    by_n = {
        n: measure(n, args.model, base, bodies, args)
        for n in (int(v) for v in args.frontends.split(","))
    }
    baseline = by_n.get(0)
    if baseline is None:
        return
    print("\nthe hop (against N=0)")
    for n, results in by_n.items():
        for protocol, (result, p50_ms) in results.items():
            if n == 0 or protocol not in baseline:
                continue
            base_result, base_p50 = baseline[protocol]
            print(
                f"  {protocol} N={n}: load generator p50 {p50_ms - base_p50:+.3f} ms, "
                f"in the server {result.in_server_us - base_result.in_server_us:+.0f} µs"
            )


if __name__ == "__main__":
    main()
