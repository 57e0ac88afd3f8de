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
- capacity: the model process alone on CPU 0 (an N=1 server, its front end idle), fed by a
  front end's own client code on CPU 1 (benchmarks.model_capacity) at
  ``--capacity-concurrency``, then from ``--capacity-frontends`` connections each keeping a
  message of ``--capacity-calls`` calls in flight, once with benchmarks.run's batching and once
  on a server whose batches hold at most ``--capacity-calls`` rows: its CPU per request as
  calls reach it coalesced, and the req/s one model process can serve at that cost;
- memory: VmRSS / Pss of every process after the load, with an N=``--memory-frontends`` server
  started for it;
- single: benchmarks.run's single-core servers (ours with batching in-process, with
  ``batch_timeout_micros`` 0 and 5 ms, the no-op ceiling, the naive Flask pattern) at
  ``--single-concurrency``;
- peers: PyTriton and MLServer with ``parallel_workers`` = N on both cores at c=64;
- restart: on the N=``--restart-frontends`` server, ``--restarts`` times: SIGKILL its oldest
  front end and time, from /proc, its replacement (the spare front-end process, or one started
  for it with ``--frontend_spare=0``) taking its slot and listening on both ports, and the new
  spare's start until it is ready to take a slot, under a paced REST load
  (benchmarks.paced_load) whose failed requests are counted. Not in the default parts: a front
  end is killed only once it has served ``--restart-after`` s (61: a slot whose process keeps
  dying within a minute backs off, and that back-off is not what is measured here), two per
  minute at N=2.

Writes ``benchmarks/results/frontends/`` results.json, results.md (benchmarks.frontends_report:
tables with ratios to N=0, the targets, the projection to 8/16/64 cores) and frontends.png.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from statistics import median
from urllib.parse import urlsplit

from benchmarks import models, paced_load, process_tree
from benchmarks.frontends_report import SINGLE_TIMEOUTS, feeders, kinds
from benchmarks.frontends_report import main as report_main
from benchmarks.prometheus import prometheus_values
from benchmarks.run import (
    BATCHING_PARAMETERS,
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
    start,
    stop,
    validate,
    venv_python,
    versions,
    wait_for_quiet,
    write_bodies,
)
from serving.multiproc.supervisor import STABLE_SECONDS
from serving.options import ServerOptions

PARTS = ("scaling", "cost", "hop", "capacity", "memory", "single", "peers", "restart")
DEFAULT_PARTS = ("scaling", "cost", "hop", "capacity", "memory", "single", "peers")
SERVER_CPUS = "0,1"  # the server may use both cores; the load generator shares CPU 1
FLAG = "--frontend_processes"
CHILDREN_TIMEOUT_S = 120
RESTART_POLL_S = 0.005  # /proc is read this often while a replacement starts
RESTART_TIMEOUT_S = 60.0  # kill to listening; the supervisor backs off up to 30 s
LOAD_LEAD_S = 1.0  # paced load before the kill (requests that must all succeed)
LOAD_TAIL_S = 1.0  # and after the replacement listens
MAX_RESTARTS = 20  # at N=2 and --restart-after 61, two a minute
SPARES = ServerOptions.frontend_spare  # the server's --frontend_spare, left at its default


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
    # ours with front ends: each one's share of the front ends' CPU, largest first
    frontend_shares: list[float] = field(default_factory=list)


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
    try:
        values = prometheus_values(
            f"http://127.0.0.1:{urlsplit(rest.target).port}/monitoring/prometheus/metrics"
        )
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
    """Waits until the tree holds one model process, ``n`` front ends and the spare, ready
    for a slot (none of them for N=0); the supervisor may report ready before every front end
    has bound its ports."""
    deadline = time.monotonic() + CHILDREN_TIMEOUT_S
    want = {"model": 1, "frontend": n, "spare": SPARES} if n else {}
    while True:
        samples = process_tree.sample(pid)
        counts = process_tree.counts(samples)
        spares_ready = all(
            process_tree.name(s.pid) == process_tree.SPARE_NAME
            for s in samples
            if s.role == "spare"
        )
        if spares_ready and all(counts.get(role, 0) == want.get(role, 0) for role in ROLES):
            return samples
        if time.monotonic() > deadline:
            found = "; ".join(f"{s.pid} [{s.role}] {s.cmdline[:160]}" for s in samples)
            raise RuntimeError(
                f"{FLAG}={n}: expected {want.get('model', 0)} process running "
                f"{process_tree.MODEL_MODULE} and {want.get('frontend', 0)} front ends and "
                f"{want.get('spare', 0)} spare running {process_tree.FRONTEND_MODULE} under "
                f"pid {pid} after {CHILDREN_TIMEOUT_S} s; found: {found}"
            )
        time.sleep(0.5)


ROLES = ("model", "frontend", "spare")


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
        process_tree.shares(cpu_before, cpu_after, "frontend"),
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
    log_path = WORK / f"frontends-N{n}.log"
    process = start(server, log_path)
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
        if "restart" in args.parts and n == args.restart_frontends:  # after memory: fresh ones
            bench_restart(server, process.pid, log_path, args, report)
    finally:
        stop(process)


def bench_capacity(
    model: str, base: str, bodies: dict[str, Path], args, supported: bool, report: dict
) -> None:
    """benchmarks.model_capacity against the model process of an N=1 server on one CPU: the
    callers' points and the connections' point with benchmarks.run's batching, then (with
    ``--capacity-frontends``) the connections' point again on a server whose batches hold at
    most ``--capacity-calls`` rows, so every message is a model call of its own. That last
    point is nearest the target's condition where one model process bounds a host: batches of
    that size, with work queued (the callers' points leave it idle between messages, and every
    wake-up costs it CPU; the uncapped connections merge into batches of ~60 rows)."""
    _run_model_capacity(
        model, base, bodies, args, supported, report, args.capacity_concurrency, batch_cap=None
    )
    if args.capacity_frontends:
        _run_model_capacity(
            model, base, bodies, args, supported, report, [], batch_cap=args.capacity_calls
        )


def capped_batching(rows: int) -> str:
    """benchmarks.run's batching parameters with batches of at most ``rows`` rows."""
    sizes = [size for size in (1, 2, 4, 8, 16, 32, 64, 128) if size < rows] + [rows]
    text = re.sub(r"max_batch_size \{ value: \d+ \}", f"max_batch_size {{ value: {rows} }}",
                  BATCHING_PARAMETERS)  # fmt: skip
    return re.sub(r"allowed_batch_sizes: \[[^]]*\]", f"allowed_batch_sizes: {sizes}", text)


def _run_model_capacity(
    model: str,
    base: str,
    bodies: dict[str, Path],
    args,
    supported: bool,
    report: dict,
    concurrency: list[int],
    batch_cap: int | None,
) -> None:
    server = ours(model, base, bodies, 1, supported)
    server.name = "ours N=1, model process alone"
    if batch_cap is not None:
        server.name += f", batches of at most {batch_cap} rows"
        parameters = capped_batching(batch_cap)
        capped = WORK / f"batching-max{batch_cap}.txt"
        capped.write_text(parameters)
        server.command.append(f"--batching_parameters_file={capped}")  # the last file wins
        server.settings = server.settings.replace(
            " ".join(BATCHING_PARAMETERS.split()), " ".join(parameters.split()), 1
        )
    server.cpus = SERVER_CPU
    report["settings"]["servers"][server.name] = server.settings
    print(f"  starting {server.name} (taskset -c {server.cpus})", flush=True)
    process = start(server, WORK / "frontends-capacity.log")
    try:
        samples = wait_for_children(process.pid, 1)
        model_pid = next(s.pid for s in samples if s.role == "model")
        rest = next(e for e in server.endpoints if e.protocol == "REST")
        busy = wait_for_quiet(args.max_busy, args.patience)
        command = [
            "taskset", "-c", CLIENT_CPU, str(PROJECT_PY), "-m", "benchmarks.model_capacity",
            f"--pid={model_pid}",
            f"--metrics=http://127.0.0.1:{urlsplit(rest.target).port}"
            "/monitoring/prometheus/metrics",
            f"--model={model}",
            f"--input-shape={','.join(map(str, models.INPUT_SHAPES[model]))}",
            f"--concurrency={','.join(map(str, concurrency))}",
            f"--frontends={args.capacity_frontends}",
            f"--calls={args.capacity_calls}",
            f"--seconds={args.seconds}",
            f"--warmup={args.warmup}",
        ]  # fmt: skip
        points = len(concurrency) + bool(args.capacity_frontends)
        timeout = 120 + points * (args.seconds + args.warmup) * 2
        out = subprocess.run(
            command, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
            capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
        for line in out.stdout.splitlines():  # the points measured, even if a later one failed
            if line.startswith("{"):
                row = {**json.loads(line), "busy_before": busy, "batch_cap": batch_cap}
                report["capacity"].append(row)
                print(
                    f"    {feeders(row):<36} {row['rps']:8.0f} req/s  "
                    f"model {row['model_us_per_request']:6.1f} µs/req  "
                    f"calls/message {row['calls_per_message'] or 0:5.1f}  "
                    f"rows/model call {row['rows_per_model_call'] or 0:5.1f}",
                    flush=True,
                )
        if out.returncode:
            raise RuntimeError(f"benchmarks.model_capacity failed: {out.stderr[-1500:]}")
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
        model, base, bodies, {*SINGLE_TIMEOUTS, "noop", "flask"}, ours_flags=flags
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


@dataclass
class Restart:
    """One SIGKILLed front end, its replacement and the new spare; times in seconds."""

    victim: int
    victim_age_s: float  # how long the killed front end had served (in its slot)
    replacement: int
    replacement_was_spare: bool  # the spare (imported before the kill), or a new process
    restart_delay_s: float | None  # the back-off the supervisor logged ("starting it again in")
    # The replacement first seen filling the slot: the spare named after it, or (without a
    # spare) the new process's pid.
    kill_to_taken_s: float
    taken_to_grpc_s: float  # its LISTEN socket on the gRPC port first seen
    taken_to_listening_s: float  # LISTEN on both ports (REST, bound after gRPC, is the later)
    kill_to_listening_s: float
    cpu_to_listening_s: float  # the replacement's CPU (utime + stime) from the kill to then
    # The new spare (None without one): its pid first seen, then named frontend-spare
    # (imports done, ready to take a slot), and its CPU by then.
    spare: int | None
    kill_to_spare_spawn_s: float | None
    spare_spawn_to_ready_s: float | None
    spare_cpu_to_ready_s: float | None
    busy_before: float
    load: dict  # benchmarks.paced_load.phases: requests and failures around the kill


@contextlib.contextmanager
def _on_cpu(cpu: str):
    """Runs the block on the load generator's CPU (the /proc polling is the client's work)."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {int(cpu)})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


class PacedLoad:
    """benchmarks.paced_load in its own process on the load generator's CPU."""

    def __init__(self, endpoint: Endpoint, rate: float, clients: int) -> None:
        command = [
            "taskset",
            "-c",
            CLIENT_CPU,
            str(PROJECT_PY),
            "-m",
            "benchmarks.paced_load",
            endpoint.target,
            str(endpoint.body),
            f"--rate={rate}",
            f"--clients={clients}",
        ]
        self.process = subprocess.Popen(
            command,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.PIPE,
            text=True,
        )
        ready, _, _ = select.select([self.process.stdout], [], [], 30)
        if not ready or self.process.stdout.readline().strip() != "ready":
            self.process.kill()
            raise RuntimeError(f"benchmarks.paced_load did not start: {command}")

    def stop(self) -> list[list]:
        self.process.send_signal(signal.SIGTERM)
        out, _ = self.process.communicate(timeout=paced_load.TIMEOUT_S + 20)
        return json.loads(out.strip().splitlines()[-1])["requests"]

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def serving_since(log_text: str, slot: str) -> float | None:
    """When front end ``slot`` (``frontend-<i>``) last said it serves ("[frontend-I] ...
    Front end I serving" in the server's log), in seconds since the epoch. A front-end process
    may wait long as the spare before it takes a slot, and the supervisor's back-off counts
    from the slot taken, so its age as a process says nothing here."""
    index = slot.partition("-")[2]
    found = re.findall(
        rf"^(\d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d,\d{{3}}) I \[{re.escape(slot)}\] "
        rf".*Front end {index} serving$",
        log_text,
        re.MULTILINE,
    )
    if not found:
        return None
    stamp, millis = found[-1].split(",")
    return time.mktime(time.strptime(stamp, "%Y-%m-%d %H:%M:%S")) + int(millis) / 1000


def _longest_serving(pid: int, log_path: Path) -> tuple[int, float]:
    """The tree's front end that has served longest, and for how long (s)."""
    text = log_path.read_text(errors="replace")
    since = {
        s.pid: serving_since(text, process_tree.name(s.pid))
        for s in process_tree.sample(pid)
        if s.role == "frontend"
    }
    victim = min(since, key=lambda p: since[p] or time.time())
    return victim, time.time() - (since[victim] or time.time())


def _restart_delay(log_path: Path, victim: int) -> float | None:
    """The back-off the supervisor chose for ``victim`` (its log line "frontend-I (pid P)
    exited with signal SIGKILL; starting it again in D s"): the slot is handed to the spare,
    or to a new process, after it."""
    found = re.search(
        rf"\(pid {victim}\) exited with [^;]*; starting it again in ([\d.]+) s",
        log_path.read_text(errors="replace"),
    )
    return float(found.group(1)) if found else None


@dataclass
class Watched:
    """What /proc showed after a kill; times from ``time.monotonic()``."""

    replacement: int
    was_spare: bool
    killed: float
    taken: float  # the replacement first seen filling the slot
    listening: dict[int, float]  # port -> its LISTEN socket on it first seen
    cpu_seconds: float  # its utime + stime from the kill until then
    spare: int | None = None  # the new spare
    spare_spawned: float | None = None  # its pid first seen
    spare_ready: float | None = None  # first seen named frontend-spare
    spare_cpu_seconds: float | None = None  # its utime + stime then


def kill_and_watch(supervisor: int, victim: int, ports: set[int]) -> Watched:
    """SIGKILLs ``victim`` (front end ``frontend-<slot>``), then polls /proc until a child of
    the supervisor named after that slot -- the spare, or a process started for it -- holds
    LISTEN sockets on every one of ``ports`` and, if the server had a spare, a new spare has
    started and is named ``frontend-spare`` (its imports done). Each time is taken just after
    the read that saw it, so it is late by at most one poll (``RESTART_POLL_S`` plus the
    read)."""
    slot = process_tree.name(victim)
    before = set(process_tree.children(supervisor))
    spare = next((p for p in before if process_tree.name(p) == process_tree.SPARE_NAME), None)
    spare_cpu = process_tree.cpu_seconds(spare) if spare else 0.0
    killed = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    first_seen: dict[int, float] = {}  # new pids
    replacement, taken, seen, cpu = None, 0.0, {}, 0.0
    new_spare, spare_ready, spare_cpu_ready = None, None, None
    while set(seen) != ports or (spare is not None and spare_ready is None):
        if time.monotonic() - killed > RESTART_TIMEOUT_S:
            raise RuntimeError(
                f"front end {victim} SIGKILLed: after {RESTART_TIMEOUT_S:.0f} s, "
                + (
                    f"its replacement {replacement} listens on {sorted(seen)} of {sorted(ports)}"
                    if replacement
                    else "nothing had taken its slot"
                )
                + ("" if spare is None or spare_ready else "; no new spare is ready")
            )
        time.sleep(RESTART_POLL_S)
        now = time.monotonic()
        for pid in process_tree.children(supervisor):
            if pid not in before and pid != victim:
                first_seen.setdefault(pid, now)
        if replacement is None:
            for pid in ([spare] if spare else []) + list(first_seen):
                if process_tree.name(pid) == slot:
                    replacement = pid
                    taken = now if pid == spare else first_seen[pid]
                    break
        if replacement is not None and set(seen) != ports:
            try:
                listening = process_tree.listening_ports(replacement, ports - set(seen))
            except FileNotFoundError as exc:
                raise RuntimeError(f"replacement front end {replacement} exited: {exc}") from exc
            now = time.monotonic()
            seen.update({port: now for port in listening})
            if set(seen) == ports:
                cpu = process_tree.cpu_seconds(replacement)
        if spare is not None and spare_ready is None:
            new_spare = next((p for p in first_seen if p != replacement), None)
            if new_spare and process_tree.name(new_spare) == process_tree.SPARE_NAME:
                spare_ready = time.monotonic()
                spare_cpu_ready = process_tree.cpu_seconds(new_spare)
    was_spare = replacement == spare
    return Watched(
        replacement,
        was_spare,
        killed,
        taken,
        seen,
        cpu - (spare_cpu if was_spare else 0.0),
        new_spare,
        first_seen.get(new_spare) if new_spare else None,
        spare_ready,
        spare_cpu_ready,
    )


def bench_restart(server: Server, pid: int, log_path: Path, args, report: dict) -> None:
    """``--restarts`` times: the oldest front end, once it has run ``--restart-after`` s, is
    SIGKILLed under a paced REST load; the replacement is timed from /proc (taking the slot,
    then LISTEN on both ports: a front end binds only after its hello with the model process
    has brought the model metadata, gRPC first, so once the REST port listens it can answer
    both), so is the new spare (spawn, then ready for a slot), and the load's requests are
    sorted by where they fell (benchmarks.paced_load.phases)."""
    rest = next(e for e in server.endpoints if e.protocol == "REST")
    port_of = {e.protocol: urlsplit(e.target).port for e in server.endpoints}
    ports = set(port_of.values())
    sysctl = Path("/proc/sys/net/ipv4/tcp_migrate_req")
    report["settings"]["restart"] = {
        "server": server.name,
        "frontends": args.restart_frontends,
        "restarts": args.restarts,
        "restart_after_s": args.restart_after,
        "load_rate": args.restart_rate,
        "load_clients": args.restart_clients,
        "poll_s": RESTART_POLL_S,
        "tcp_migrate_req": sysctl.read_text().strip() if sysctl.exists() else "absent",
    }
    for index in range(1, args.restarts + 1):
        victim, age = _longest_serving(pid, log_path)
        if age < args.restart_after:
            print(
                f"    restart {index}: waiting {args.restart_after - age:.0f} s until front end "
                f"{victim} has served {args.restart_after:.0f} s",
                flush=True,
            )
            time.sleep(args.restart_after - age)
        busy = wait_for_quiet(args.max_busy, args.patience)
        victim, age = _longest_serving(pid, log_path)
        load = PacedLoad(rest, args.restart_rate, args.restart_clients)
        try:
            time.sleep(LOAD_LEAD_S)
            with _on_cpu(CLIENT_CPU):
                watched = kill_and_watch(pid, victim, ports)
            time.sleep(LOAD_TAIL_S)
            requests = load.stop()
        finally:
            load.kill()
        listening = max(watched.listening.values())
        spawned = watched.spare_spawned
        row = Restart(
            victim,
            age,
            watched.replacement,
            watched.was_spare,
            _restart_delay(log_path, victim),
            watched.taken - watched.killed,
            watched.listening[port_of["gRPC"]] - watched.taken,
            listening - watched.taken,
            listening - watched.killed,
            watched.cpu_seconds,
            watched.spare,
            None if spawned is None else spawned - watched.killed,
            None if spawned is None else watched.spare_ready - spawned,
            watched.spare_cpu_seconds,
            busy,
            paced_load.phases(requests, watched.killed, listening),
        )
        report["restarts"].append(asdict(row))
        failed = sum(phase["failed"] for phase in row.load["phases"].values())
        print(
            f"    restart {index}: kill -> slot taken by "
            f"{'the spare' if row.replacement_was_spare else 'a new process'} "
            f"{row.kill_to_taken_s * 1000:.0f} ms (back-off {row.restart_delay_s} s), -> "
            f"listening {row.taken_to_listening_s * 1000:.0f} ms (its CPU meanwhile "
            f"{row.cpu_to_listening_s * 1000:.0f} ms), kill -> listening "
            f"{row.kill_to_listening_s * 1000:.0f} ms"
            + (
                f"; new spare spawn -> ready {row.spare_spawn_to_ready_s * 1000:.0f} ms "
                f"(its CPU {row.spare_cpu_to_ready_s:.2f} s)"
                if row.spare_spawn_to_ready_s is not None
                else ""
            )
            + f"; load: {failed} of {row.load['requests']} failed"
            + (f" ({kinds(row.load['errors'])})" if failed else "")
            + (f"  busy {busy:.0%}" if busy > args.max_busy else ""),
            flush=True,
        )
    for endpoint in server.endpoints:
        validate(endpoint)  # both protocols still answer correctly
    wait_for_children(pid, args.restart_frontends)
    serving = [r["kill_to_listening_s"] for r in report["restarts"]]
    print(
        f"    kill -> listening: median {median(serving) * 1000:.0f} ms, "
        f"max {max(serving) * 1000:.0f} ms over {len(serving)} restarts",
        flush=True,
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--parts", default=",".join(DEFAULT_PARTS), help=f"any of {','.join(PARTS)}"
    )
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
    parser.add_argument(
        "--capacity-concurrency", default="1,8,32,128", help="callers feeding the model process"
    )
    parser.add_argument(
        "--capacity-frontends",
        type=int,
        default=8,
        help="connections of the capacity point that keeps one message each in flight (0: none)",
    )
    parser.add_argument("--capacity-calls", type=int, default=8, help="calls per such message")
    parser.add_argument("--single-concurrency", default="32,128")
    parser.add_argument("--seconds", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument(
        "--max-busy", type=float, default=0.15, help="wait while others use more of the CPUs"
    )
    parser.add_argument("--patience", type=float, default=30, help="longest wait per point (s)")
    parser.add_argument(
        "--restart-frontends", type=int, default=2, help="N of the server the restarts run on"
    )
    parser.add_argument("--restarts", type=int, default=4, help="front ends killed, one by one")
    parser.add_argument(
        "--restart-after",
        type=float,
        default=STABLE_SECONDS + 1,
        help="kill a front end once it has run this long (s); the supervisor backs off for a "
        f"slot whose processes keep dying within {STABLE_SECONDS:.0f} s",
    )
    parser.add_argument("--restart-rate", type=float, default=200, help="paced REST load, req/s")
    parser.add_argument("--restart-clients", type=int, default=4, help="its concurrent requests")
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
    args.capacity_concurrency = [int(c) for c in args.capacity_concurrency.split(",")]
    if args.memory_frontends < 0:
        parser.error("--memory-frontends must be >= 0 (0: only the N=0 server's memory)")
    if not 1 <= args.restarts <= MAX_RESTARTS or args.restart_frontends < 1:
        parser.error(f"--restarts: 1 to {MAX_RESTARTS}; --restart-frontends: at least 1")
    if args.restart_after < 0:
        parser.error("--restart-after must be >= 0")
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
    if "restart" in args.parts:
        ours_ns.add(args.restart_frontends)
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
            "capacity_concurrency": args.capacity_concurrency,
            "capacity_frontends": args.capacity_frontends,
            "capacity_calls": args.capacity_calls,
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
        "capacity": [],
        "restarts": [],
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
    if "capacity" in args.parts and supported:
        print("the model process alone (benchmarks.model_capacity):", flush=True)
        try:
            bench_capacity(args.model, base, bodies, args, supported, report)
        except Exception as exc:
            print(f"  capacity FAILED: {exc}", flush=True)
            report["failures"]["capacity"] = str(exc)[:1500]
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
