"""Front-end processes around one model process (issue 14): scaling, CPU per part, the hop,
memory, and the peers at equal CPU allowance, side by side with the in-process server.

    bash benchmarks/install.sh && .venv/bin/python -m benchmarks.frontends
    .venv/bin/python -m benchmarks.frontends --parts scaling,cost,hop --frontends 0,1,2

Reuses benchmarks.run's servers, payloads, load generators (wrk for REST, h2load for gRPC) and
its quiet-machine wait; this module adds what differs: the server (``--frontend_processes=N``)
is allowed both cores (``taskset -c 0,1``) with the load generator on CPU 1, and each process
of its tree is told apart (benchmarks.process_tree) so CPU time and memory are reported per part:
the model process, the front ends, the supervisor. Parts (``--parts``):

- scaling / cost: req/s at c=64 for each N in ``--frontends``, REST and gRPC, with each part's
  CPU µs per request and the mean rows per model call over the measured run;
- hop: p50 at c=1 (the process hop's latency against N=0);
- memory: VmRSS / Pss of every process after the load, with an N=``--memory-frontends`` server
  started for it;
- single: benchmarks.run's single-core servers (ours with batching in-process, the no-op
  ceiling, the naive Flask pattern) at ``--single-concurrency``;
- peers: PyTriton and MLServer with ``parallel_workers`` = N on both cores at c=64.

Writes ``benchmarks/results/frontends/`` results.json, results.md (benchmarks.frontends_report:
tables with ratios to N=0, the targets, the projection to 8/16/64 cores) and frontends.png.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
import urllib.parse
from dataclasses import asdict, dataclass, field
from pathlib import Path

from benchmarks import models, process_tree
from benchmarks.frontends_report import main as report_main
from benchmarks.run import (
    CLIENT_CPU,
    PROJECT_PY,
    RESULTS,
    ROOT,
    RUNNERS,
    SERVER_CPU,
    WORK,
    Endpoint,
    Row,
    Server,
    bench_server,
    build_servers,
    machine,
    prometheus_values,
    start,
    stop,
    validate,
    venv_python,
    versions,
    wait_for_quiet,
    write_bodies,
)

PARTS = ("scaling", "cost", "hop", "memory", "single", "peers")
SERVER_CPUS = "0,1"  # the server may use both cores; the load generator shares CPU 1
FLAG = "--frontend_processes"
CHILDREN_TIMEOUT_S = 120


@dataclass
class Point:
    server: str
    frontends: int | None  # ours: N; a peer: None
    peer_workers: int | None  # MLServer's parallel_workers (compared with ours at the same N)
    protocol: str
    concurrency: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int
    mean_batch: float | None
    busy_before: float
    cpu_us_per_request: dict[str, float] | None  # role -> µs (benchmarks.process_tree roles)
    process_counts: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    # ours: the server's own mean request_latency and runtime_latency (ms) over the run
    server_ms: dict[str, float] | None = None


# The server's own latency metrics: request_latency is taken where a call is received and
# answered (a front end), runtime_latency around the model call (batch queue, batch thread,
# the model), so their difference is the time a call spends outside the model call.
_LATENCY_SERIES = {
    "request": ":tensorflow:serving:request_latency",
    "runtime": ":tensorflow:serving:runtime_latency",
}


def latency_sums(server: Server) -> dict[str, float] | None:
    """Sums (µs) and counts of the server's latency histograms so far; None for a server
    without them (a peer) or when the metrics page does not answer."""
    rest = next((e for e in server.endpoints if e.protocol == "REST"), None)
    if rest is None or not server.name.startswith("ours"):
        return None
    port = urllib.parse.urlsplit(rest.target).port
    try:
        values = prometheus_values(f"http://127.0.0.1:{port}/monitoring/prometheus/metrics")
    except OSError:
        return None
    return {
        f"{key}_{part}": values.get(f"{series}_{part}", 0.0)
        for key, series in _LATENCY_SERIES.items()
        for part in ("sum", "count")
    }


def mean_latency_ms(before: dict | None, after: dict | None) -> dict[str, float] | None:
    """Mean request and runtime latency (ms) of the calls between two ``latency_sums``."""
    if not before or not after:
        return None
    means = {}
    for key in _LATENCY_SERIES:
        calls = after[f"{key}_count"] - before[f"{key}_count"]
        if calls <= 0:
            return None
        means[key] = (after[f"{key}_sum"] - before[f"{key}_sum"]) / calls / 1000
    return means


def server_supports_frontends(python: Path = PROJECT_PY) -> bool:
    """Whether this tree's server knows the flag (issue 14 may not have landed yet)."""
    out = subprocess.run(
        [str(python), "-m", "serving", "--help"],
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    return FLAG in out.stdout


def ours(model: str, base: str, bodies: dict[str, Path], n: int, supported: bool) -> Server:
    """benchmarks.run's ours-batching with ``--frontend_processes=N`` on both cores; without
    the flag (an older tree) N=0 is the server as it is."""
    flags = [f"{FLAG}={n}"] if supported else []
    (server,) = build_servers(model, base, bodies, {"ours-batching"}, ours_flags=flags)
    server.name = f"ours N={n}"
    server.cpus = SERVER_CPUS
    return server


def wait_for_children(pid: int, n: int) -> list[process_tree.ProcessSample]:
    """Waits until the tree holds one model process and ``n`` front ends (none for N=0); the
    supervisor may report ready before every front end has bound its ports."""
    deadline = time.monotonic() + CHILDREN_TIMEOUT_S
    while True:
        samples = process_tree.sample(pid)
        counts = process_tree.counts(samples)
        want_model, want_frontends = (1, n) if n else (0, 0)
        if counts.get("model", 0) == want_model and counts.get("frontend", 0) == want_frontends:
            return samples
        if time.monotonic() > deadline:
            found = "; ".join(f"{s.pid} [{s.role}] {s.cmdline[:160]}" for s in samples)
            raise RuntimeError(
                f"{FLAG}={n}: expected {want_model} process running "
                f"{process_tree.MODEL_MODULE} and {want_frontends} running "
                f"{process_tree.FRONTEND_MODULE} under pid {pid} after {CHILDREN_TIMEOUT_S} s; "
                f"found: {found}"
            )
        time.sleep(0.5)


def point(
    server: Server, pid: int, endpoint: Endpoint, concurrency: int, args: argparse.Namespace
) -> Point:
    """One measured point: warm-up, then CPU and batch counters read around the measured run."""
    busy = wait_for_quiet(args.max_busy, args.patience)
    runner = RUNNERS[endpoint.protocol]
    runner(endpoint, concurrency, args.warmup)  # discarded
    batch_before = server.batch_probe() if server.batch_probe else None
    latency_before = latency_sums(server)
    cpu_before = process_tree.sample(pid)
    result = runner(endpoint, concurrency, args.seconds)
    cpu_after = process_tree.sample(pid)
    latency_after = latency_sums(server)
    batch_after = server.batch_probe() if server.batch_probe else None
    validate(endpoint)  # still answering correctly after the run
    mean_batch = None
    if batch_before and batch_after and batch_after[1] > batch_before[1]:
        mean_batch = (batch_after[0] - batch_before[0]) / (batch_after[1] - batch_before[1])
    used, notes = process_tree.cpu_by_role(cpu_before, cpu_after)
    requests = int(result["requests"])
    cost = {role: seconds * 1e6 / requests for role, seconds in used.items()} if requests else None
    row = Point(
        server.name,
        None,
        None,
        endpoint.protocol,
        concurrency,
        result["rps"],
        result["p50_ms"],
        result["p99_ms"],
        int(result["errors"]),
        requests,
        mean_batch,
        busy,
        cost,
        process_tree.counts(cpu_after),
        notes,
        mean_latency_ms(latency_before, latency_after),
    )
    print(
        f"    {endpoint.protocol:4} c={concurrency:<3} {row.rps:8.0f} req/s  "
        f"p50 {row.p50_ms:6.2f} ms  p99 {row.p99_ms:7.2f} ms  errors {row.errors}"
        + (f"  rows/call {mean_batch:.1f}" if mean_batch else "")
        + (
            "  µs/req " + " ".join(f"{role} {us:.1f}" for role, us in sorted(cost.items()))
            if cost
            else ""
        )
        + (f"  busy {busy:.0%}" if busy > args.max_busy else ""),
        flush=True,
    )
    return row


def bench_ours(
    n: int, model: str, base: str, bodies: dict[str, Path], args, supported: bool, report: dict
) -> None:
    server = ours(model, base, bodies, n, supported)
    report["settings"]["servers"][server.name] = server.settings
    print(f"  starting {server.name} (taskset -c {server.cpus})", flush=True)
    process = start(server, WORK / f"frontends-N{n}.log")
    try:
        wait_for_children(process.pid, n)
        loaded = False
        for endpoint in server.endpoints:
            concurrencies = []
            if n in args.frontends and {"scaling", "cost"} & args.parts:
                concurrencies += args.concurrency
            if n in args.frontends and "hop" in args.parts:
                concurrencies.append(args.hop_concurrency)
            for concurrency in concurrencies:
                row = point(server, process.pid, endpoint, concurrency, args)
                row.frontends = n
                report["points"].append(asdict(row))
                loaded = True
        if "memory" in args.parts:
            if not loaded:  # memory only: let every front end serve before reading RSS
                for endpoint in server.endpoints:
                    RUNNERS[endpoint.protocol](endpoint, max(args.concurrency), args.warmup)
            processes = [
                {"role": s.role, "pid": s.pid, "rss_bytes": s.rss_bytes, "pss_bytes": s.pss_bytes}
                for s in process_tree.sample(process.pid)
            ]
            report["memory"].append({"server": server.name, "frontends": n, "processes": processes})
            total = sum(p["rss_bytes"] for p in processes) / 2**20
            print(f"    memory: {len(processes)} processes, VmRSS {total:.0f} MB", flush=True)
    finally:
        stop(process)


def bench_single(
    model: str, base: str, bodies: dict[str, Path], args, supported: bool, report: dict
) -> None:
    """benchmarks.run's single-core comparison (server on CPU 0), through its own runner."""
    flags = [f"{FLAG}=0"] if supported else []
    single_args = argparse.Namespace(**{**vars(args), "concurrency": args.single_concurrency})
    rows: list[Row] = []
    for server in build_servers(
        model, base, bodies, {"ours-batching", "noop", "flask"}, ours_flags=flags
    ):
        try:
            bench_server(server, model, single_args, 1, rows)
        except Exception as exc:  # one broken server must not lose the other results
            print(f"  {server.name} FAILED: {exc}", flush=True)
            report["failures"][f"{server.name} (single core)"] = str(exc)[:800]
        report["settings"]["servers"][f"{server.name} (single core)"] = server.settings
    if not venv_python("tools"):
        report["not_run"]["flask-naive"] = "benchmarks/work/venv-tools missing (install.sh)"
    report["single"] = [asdict(row) for row in rows]


def _peer_servers(model: str, base: str, bodies: dict[str, Path], args, report: dict):
    """(server, MLServer parallel_workers) one at a time: each MLServer run writes its
    settings into the one model folder, so it is built only when its turn comes (built all
    at once, every run but the last would listen on the last one's ports)."""
    if venv_python("pytriton"):
        for server in build_servers(model, base, bodies, {"pytriton"}):
            yield server, None
    else:
        report["not_run"]["pytriton"] = "benchmarks/work/venv-pytriton missing (install.sh)"
    if venv_python("mlserver"):
        for n in args.mlserver_workers:
            for server in build_servers(model, base, bodies, {"mlserver"}, mlserver_workers=n):
                server.name += f" parallel_workers={n}"
                yield server, n
    else:
        report["not_run"]["mlserver"] = "benchmarks/work/venv-mlserver missing (install.sh)"


def bench_peers(model: str, base: str, bodies: dict[str, Path], args, report: dict) -> None:
    for server, workers in _peer_servers(model, base, bodies, args, report):
        server.cpus = SERVER_CPUS
        report["settings"]["servers"][server.name] = server.settings
        print(f"  starting {server.name} (taskset -c {server.cpus})", flush=True)
        try:
            process = start(server, WORK / f"frontends-{server.name.replace(' ', '_')}.log")
        except Exception as exc:  # one broken peer must not lose the other results
            print(f"  {server.name} FAILED: {exc}", flush=True)
            report["failures"][server.name] = str(exc)[:800]
            continue
        try:
            for endpoint in server.endpoints:
                for concurrency in args.concurrency:
                    row = point(server, process.pid, endpoint, concurrency, args)
                    row.peer_workers = workers
                    report["points"].append(asdict(row))
        except Exception as exc:
            print(f"  {server.name} FAILED: {exc}", flush=True)
            report["failures"][server.name] = str(exc)[:800]
        finally:
            stop(process)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--parts", default=",".join(PARTS), help=f"any of {','.join(PARTS)}")
    parser.add_argument("--frontends", default="0,1,2", help="values of --frontend_processes")
    parser.add_argument(
        "--mlserver-workers",
        default=None,
        help="MLServer parallel_workers values to run (default: those of --frontends)",
    )
    parser.add_argument(
        "--memory-frontends", type=int, default=8, help="N of the extra server started for memory"
    )
    parser.add_argument("--model", default="mlp")
    parser.add_argument("--concurrency", default="64", help="scaling, cost and peer points")
    parser.add_argument("--hop-concurrency", type=int, default=1)
    parser.add_argument("--single-concurrency", default="32,128")
    parser.add_argument("--seconds", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument(
        "--max-busy", type=float, default=0.15, help="wait while others use more of the CPUs"
    )
    parser.add_argument("--patience", type=float, default=30, help="longest wait per point (s)")
    parser.add_argument("--out", default=str(RESULTS / "frontends"))
    args = parser.parse_args(argv)
    args.parts = set(args.parts.split(","))
    if not args.parts <= set(PARTS):
        parser.error(f"--parts: choose from {','.join(PARTS)}")
    args.frontends = sorted({int(n) for n in args.frontends.split(",")})
    args.mlserver_workers = (
        sorted({int(n) for n in args.mlserver_workers.split(",")})
        if args.mlserver_workers
        else args.frontends
    )
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    args.single_concurrency = [int(c) for c in args.single_concurrency.split(",")]
    if args.memory_frontends < 0:
        parser.error("--memory-frontends must be >= 0 (0: only the N=0 server's memory)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for tool in ("wrk", "h2load", "taskset"):
        if not shutil.which(tool):
            print(f"{tool} missing: run bash benchmarks/install.sh first", file=sys.stderr)
            return 2
    ours_ns: set[int] = set()
    if {"scaling", "cost", "hop"} & args.parts:
        ours_ns |= set(args.frontends)
    if "memory" in args.parts:
        ours_ns |= {0, args.memory_frontends}
    supported = server_supports_frontends()
    if not supported and any(ours_ns):
        print(
            f"This tree's server has no {FLAG} flag (`python -m serving --help` does not list "
            "it: issue 14's front-end processes have not landed here), so only N=0 can run. "
            "Run e.g. `.venv/bin/python -m benchmarks.frontends --frontends 0 --parts "
            "scaling,cost,hop,single,peers`.",
            file=sys.stderr,
        )
        return 2
    WORK.mkdir(parents=True, exist_ok=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report: dict = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "machine": machine(),
        "flag_supported": supported,
        "settings": {
            "command": "python -m benchmarks.frontends " + " ".join(argv or sys.argv[1:]),
            "model": args.model,
            "parts": sorted(args.parts),
            "frontends": args.frontends,
            "memory_frontends": args.memory_frontends,
            "concurrency": args.concurrency,
            "hop_concurrency": args.hop_concurrency,
            "single_concurrency": args.single_concurrency,
            "seconds": args.seconds,
            "warmup_seconds": args.warmup,
            "server_cpus": SERVER_CPUS,
            "single_server_cpu": SERVER_CPU,
            "client_cpu": CLIENT_CPU,
            "servers": {},
        },
        "points": [],
        "memory": [],
        "single": [],
        "not_run": {},
        "failures": {},
    }
    base = models.build(args.model, str(WORK / "models"))
    bodies = write_bodies(args.model)
    for n in sorted(ours_ns):
        try:
            bench_ours(n, args.model, base, bodies, args, supported, report)
        except Exception as exc:
            print(f"  ours N={n} FAILED: {exc}", flush=True)
            report["failures"][f"ours N={n}"] = str(exc)[:1500]
    if "single" in args.parts:
        print("single core (benchmarks.run's servers):", flush=True)
        bench_single(args.model, base, bodies, args, supported, report)
    if "peers" in args.parts:
        print("peers on both cores:", flush=True)
        bench_peers(args.model, base, bodies, args, report)
    report["finished"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    report["versions"] = versions()
    (out / "results.json").write_text(json.dumps(report, indent=1))
    print(f"wrote {out / 'results.json'}", flush=True)
    report_main([str(out / "results.json")])
    return 1 if report["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
