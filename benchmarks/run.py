"""The benchmark: this server (batching on/off, REST and gRPC) against the alternatives.

    bash benchmarks/install.sh && .venv/bin/python -m benchmarks.run

Every server runs pinned to CPU 0 (``taskset``), the load generator to CPU 1: wrk for HTTP/1.1
and h2load for gRPC unary calls over h2c. For each model, server, protocol and concurrency it
runs a discarded warm-up, then a measured run, and records req/s, p50/p99, errors and — where
the server exposes it — the mean number of rows per model call. Results go to
``benchmarks/results/`` (results.json, results.md, one PNG per model) with the machine, package
versions, settings and how busy other processes kept the CPUs just before each measurement
(it waits for a quiet moment first): numbers taken while something else ran on this shared
machine are not comparable, and the table says so.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import grpc
import numpy as np

from benchmarks import models, payloads
from benchmarks.prometheus import batching_totals, prometheus_values
from benchmarks.report import main as report_main
from serving.options import ServerOptions

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "benchmarks" / "work"
RESULTS = ROOT / "benchmarks" / "results"
PROJECT_PY = ROOT / ".venv" / "bin" / "python"
SERVER_CPU, CLIENT_CPU = "0", "1"
TF_ONE_THREAD = {
    "TF_NUM_INTRAOP_THREADS": "1",
    "TF_NUM_INTEROP_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "TF_CPP_MIN_LOG_LEVEL": "2",
}
BATCHING_PARAMETERS = """max_batch_size { value: 128 }
batch_timeout_micros { value: 0 }
max_enqueued_batches { value: 128 }
num_batch_threads { value: 1 }
allowed_batch_sizes: [1, 2, 4, 8, 16, 32, 64, 128]
"""
# Our server with batch_timeout_micros other than 0, by name: 1 ms is the peers' batching delay
# (PyTriton's queue delay, MLServer's max_batch_time), 5 ms the middle of TF Serving's guide's
# 1-10 ms tuning range. gRPC calls reach Python one at a time (grpc.aio accepts one call per
# completion-queue round trip), so with timeout 0 an idle batch thread runs each alone; see
# benchmarks/README.md.
BATCH_TIMEOUT_VARIANTS = {"ours-batching-1ms": 1000, "ours-batching-5ms": 5000}
TF_PREDICT = "/tensorflow.serving.PredictionService/Predict"
V2_INFER = "/inference.GRPCInferenceService/ModelInfer"


@dataclass
class Endpoint:
    protocol: str  # "REST" or "gRPC"
    target: str  # URL for wrk; h2load URL (with the gRPC method path) for gRPC
    body: Path


@dataclass
class Server:
    name: str
    command: list[str]
    endpoints: list[Endpoint]
    env: dict[str, str] = field(default_factory=dict)
    batch_probe: Callable[[], tuple[float, float]] | None = None  # (rows, model calls) so far
    settings: str = ""
    cpus: str = SERVER_CPU  # taskset's CPU list for the server (benchmarks.frontends: "0,1")


@dataclass
class Row:
    model: str
    server: str
    protocol: str
    concurrency: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    mean_batch: float | None
    busy_before: float
    round: int


# ------------------------------------------------------------------------------- helpers
def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpu_busy(seconds: float = 1.0) -> float:
    """Fraction of all CPUs busy over ``seconds`` (from /proc/stat), taken while the server
    under test is idle: what other work on the shared machine is using."""

    def sample() -> tuple[int, int]:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + fields[4]  # idle + iowait
        return sum(fields), idle

    total0, idle0 = sample()
    time.sleep(seconds)
    total1, idle1 = sample()
    return 1 - (idle1 - idle0) / max(total1 - total0, 1)


def wait_for_quiet(limit: float, patience: float) -> float:
    """Waits (up to ``patience`` s) until other work uses less than ``limit`` of the CPUs;
    returns the last busy fraction seen, recorded with the measurement."""
    deadline = time.monotonic() + patience
    busy = cpu_busy()
    while busy > limit and time.monotonic() < deadline:
        busy = cpu_busy()
    return busy


def http_post(url: str, body: bytes, timeout: float = 10) -> tuple[int, bytes]:
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def grpc_call(target: str, body: Path, timeout: float = 10) -> bytes:
    """Sends the framed request file as one unary call (raw bytes, no stubs needed)."""
    host, method = target.removeprefix("http://").split("/", 1)
    with grpc.insecure_channel(host) as channel:
        call = channel.unary_unary("/" + method)
        return call(body.read_bytes()[5:], timeout=timeout)


def validate(endpoint: Endpoint) -> None:
    if endpoint.protocol == "REST":
        status, payload = http_post(endpoint.target, endpoint.body.read_bytes())
        if status != 200:
            raise RuntimeError(f"{endpoint.target} answered {status}: {payload[:300]!r}")
    else:
        grpc_call(endpoint.target, endpoint.body)


def start(server: Server, log_path: Path) -> subprocess.Popen:
    env = {**os.environ, **TF_ONE_THREAD, "PYTHONPATH": str(ROOT), **server.env}
    log = open(log_path, "wb")  # noqa: SIM115 (kept open for the process's lifetime)
    process = subprocess.Popen(
        ["taskset", "-c", server.cpus, *server.command],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{server.name} exited: {log_path.read_text()[-3000:]}")
        try:
            for endpoint in server.endpoints:
                validate(endpoint)
            return process
        except Exception:
            time.sleep(0.5)
    stop(process)
    raise RuntimeError(f"{server.name} not ready in 300 s: {log_path.read_text()[-3000:]}")


def stop(process: subprocess.Popen) -> None:
    """Stops the server's whole process group (Triton and MLServer spawn children)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


# ------------------------------------------------------------------------------- load generators
_WRK_LUA = """
local f = assert(io.open(os.getenv("WRK_BODY"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
"""
_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def run_wrk(endpoint: Endpoint, concurrency: int, seconds: int) -> dict[str, float]:
    script = WORK / "post.lua"
    script.write_text(_WRK_LUA)
    command = [
        "taskset",
        "-c",
        CLIENT_CPU,
        "wrk",
        "-t1",
        f"-c{concurrency}",
        f"-d{seconds}s",
        "--latency",
        "--timeout",
        "10s",
        "-s",
        str(script),
        endpoint.target,
    ]
    env = {**os.environ, "WRK_BODY": str(endpoint.body)}
    output = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout

    def latency(percent: str) -> float:
        match = re.search(rf"^\s+{percent}%\s+([\d.]+)(us|ms|s)\s*$", output, re.M)
        return float(match.group(1)) * _UNITS_MS[match.group(2)] if match else float("nan")

    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    sockets = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    errors = int(non_2xx.group(1)) if non_2xx else 0
    errors += sum(int(g) for g in sockets.groups()) if sockets else 0
    requests = re.search(r"^\s*(\d+) requests in ", output, re.M)
    return {
        "rps": float(rps.group(1)) if rps else 0.0,
        "requests": int(requests.group(1)) if requests else 0,
        "p50_ms": latency("50"),
        "p99_ms": latency("99"),
        "errors": errors,
    }


def run_h2load(endpoint: Endpoint, concurrency: int, seconds: int) -> dict[str, float]:
    clients = min(concurrency, 4)
    streams = max(concurrency // clients, 1)
    with tempfile.NamedTemporaryFile(suffix=".log", dir=WORK) as log:
        command = [
            "taskset",
            "-c",
            CLIENT_CPU,
            "h2load",
            "-t1",
            f"-c{clients}",
            f"-m{streams}",
            f"-D{seconds}",
            f"--log-file={log.name}",
            "-d",
            str(endpoint.body),
            "-H",
            "content-type: application/grpc",
            "-H",
            "te: trailers",
            endpoint.target,
        ]
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        latencies = [
            int(line.split("\t")[2]) / 1000 for line in Path(log.name).read_text().splitlines()
        ]
    rps = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", output)
    failed = re.search(r"(\d+) failed, (\d+) errored, (\d+) timeout", output)
    done = re.search(r"requests: \d+ total, \d+ started, (\d+) done", output)
    quantiles = np.percentile(latencies, [50, 99]) if latencies else [float("nan")] * 2
    return {
        "rps": float(rps.group(1)) if rps else 0.0,
        "requests": int(done.group(1)) if done else 0,
        "p50_ms": float(quantiles[0]),
        "p99_ms": float(quantiles[1]),
        "errors": sum(int(g) for g in failed.groups()) if failed else 0,
    }


RUNNERS = {"REST": run_wrk, "gRPC": run_h2load}


def measure(endpoint: Endpoint, concurrency: int, seconds: int, warmup: int) -> dict:
    runner = RUNNERS[endpoint.protocol]
    runner(endpoint, concurrency, warmup)  # discarded
    return runner(endpoint, concurrency, seconds)


# ------------------------------------------------------------------------------- batch probes
def ours_probe(rest_port: int) -> Callable[[], tuple[float, float]]:
    def probe() -> tuple[float, float]:
        return batching_totals(f"http://127.0.0.1:{rest_port}/monitoring/prometheus/metrics")

    return probe


def triton_probe(metrics_port: int) -> Callable[[], tuple[float, float]]:
    def probe() -> tuple[float, float]:
        values = prometheus_values(f"http://127.0.0.1:{metrics_port}/metrics")
        return values.get("nv_inference_count", 0.0), values.get("nv_inference_exec_count", 0.0)

    return probe


# ------------------------------------------------------------------------------- servers
def venv_python(name: str) -> Path | None:
    python = WORK / f"venv-{name}" / "bin" / "python"
    return python if (WORK / f"venv-{name}" / ".installed").exists() else None


def build_servers(
    model: str,
    base: str,
    bodies: dict[str, Path],
    wanted: set[str],
    python: Path = PROJECT_PY,
    ours_flags: Sequence[str] = (),
    mlserver_workers: int = 0,
) -> list[Server]:
    """``python`` runs this project's servers (ours, noop): either stack (benchmarks.stacks);
    ``ours_flags`` are added to our server's command line and ``mlserver_workers`` is MLServer's
    ``parallel_workers`` (benchmarks.frontends: ``--frontend_processes`` and its peer)."""
    version_dir = os.path.join(base, "1")
    servers: list[Server] = []
    batching_files = {"ours-batching": WORK / "batching.txt"}
    batching_files["ours-batching"].write_text(BATCHING_PARAMETERS)
    for name, micros in BATCH_TIMEOUT_VARIANTS.items():
        batching_files[name] = WORK / f"batching-{micros}us.txt"
        batching_files[name].write_text(
            BATCHING_PARAMETERS.replace(
                "batch_timeout_micros { value: 0 }", f"batch_timeout_micros {{ value: {micros} }}"
            )
        )
    monitoring_file = WORK / "monitoring.txt"
    monitoring_file.write_text("prometheus_config { enable: true }\n")
    for name in (*batching_files, "ours-no-batching"):
        if name not in wanted:
            continue
        batching_file = batching_files.get(name)
        batching = batching_file is not None
        rest, grpc_port = free_port(), free_port()
        flags = [
            f"--port={grpc_port}",
            f"--rest_api_port={rest}",
            "--host=127.0.0.1",
            f"--model_name={model}",
            f"--model_base_path={base}",
            "--tensorflow_intra_op_parallelism=1",
            "--tensorflow_inter_op_parallelism=1",
            f"--monitoring_config_file={monitoring_file}",
        ]
        if batching:
            flags += ["--enable_batching", f"--batching_parameters_file={batching_file}"]
        flags += ours_flags
        servers.append(
            Server(
                name,
                [str(python), "-m", "serving", *flags],
                [
                    Endpoint(
                        "REST",
                        f"http://127.0.0.1:{rest}/v1/models/{model}:predict",
                        bodies["tf_rest"],
                    ),
                    Endpoint(
                        "gRPC", f"http://127.0.0.1:{grpc_port}{TF_PREDICT}", bodies["tf_grpc"]
                    ),
                ],
                batch_probe=ours_probe(rest) if batching else None,
                settings=(
                    "batching: " + " ".join(batching_file.read_text().split())
                    if batching
                    else f"no batching; {os.cpu_count() * 4} model threads"
                )
                + "; TF intra/inter 1/1; Prometheus metrics on"
                + "".join(f"; {flag}" for flag in ours_flags),
            )
        )
    if "noop" in wanted:
        rest, grpc_port = free_port(), free_port()
        servers.append(
            Server(
                "noop-ceiling",
                [str(python), "-m", "benchmarks.servers.noop", str(rest), str(grpc_port)],
                [
                    Endpoint(
                        "REST",
                        f"http://127.0.0.1:{rest}/v1/models/{model}:predict",
                        bodies["tf_rest"],
                    ),
                    Endpoint(
                        "gRPC", f"http://127.0.0.1:{grpc_port}{TF_PREDICT}", bodies["tf_grpc"]
                    ),
                ],
                settings=(
                    "uvicorn+httptools / grpc.aio on uvloop (as the server, with as many gRPC "
                    f"listeners: {ServerOptions().grpc_listeners}, and its poller thread "
                    f"SCHED_BATCH: {ServerOptions().grpc_poller_batch_scheduling}); parse, no "
                    "model"
                ),
            )
        )
    tools = venv_python("tools")
    if "flask" in wanted and tools:
        rest = free_port()
        servers.append(
            Server(
                "flask-naive",
                [str(tools), "-m", "benchmarks.servers.flask_naive", version_dir, str(rest)],
                [
                    Endpoint(
                        "REST",
                        f"http://127.0.0.1:{rest}/v1/models/{model}:predict",
                        bodies["tf_rest"],
                    )
                ],
                settings="Flask dev server (threaded), tf.saved_model.load, one call per request",
            )
        )
    pytriton = venv_python("pytriton")
    if "pytriton" in wanted and pytriton:
        http, grpc_port, metrics = free_port(), free_port(), free_port()
        shape = "x".join(str(d) for d in models.INPUT_SHAPES[model])
        libdir = subprocess.run(
            [str(pytriton), "-c", "import sysconfig; print(sysconfig.get_config_var('LIBDIR'))"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        servers.append(
            Server(
                "pytriton-0.7.0",
                [
                    str(pytriton),
                    "-m",
                    "benchmarks.servers.pytriton_server",
                    version_dir,
                    model,
                    shape,
                    str(http),
                    str(grpc_port),
                    str(metrics),
                ],
                [
                    Endpoint(
                        "REST",
                        f"http://127.0.0.1:{http}/v2/models/{model}/infer",
                        bodies["v2_rest"],
                    ),
                    Endpoint("gRPC", f"http://127.0.0.1:{grpc_port}{V2_INFER}", bodies["v2_grpc"]),
                ],
                env={"LD_LIBRARY_PATH": libdir},
                batch_probe=triton_probe(metrics),
                settings="@batch, max_batch_size 32, DynamicBatcher queue delay 1000 us; OIP v2",
            )
        )
    mlserver = venv_python("mlserver")
    if "mlserver" in wanted and mlserver:
        http, grpc_port, metrics = free_port(), free_port(), free_port()
        folder = WORK / f"mlserver-{model}"
        shutil.rmtree(folder, ignore_errors=True)
        (folder / model).mkdir(parents=True)
        shutil.copy(ROOT / "benchmarks" / "servers" / "mlserver_model.py", folder / model)
        (folder / "settings.json").write_text(
            json.dumps(
                {
                    "host": "127.0.0.1",
                    "http_port": http,
                    "grpc_port": grpc_port,
                    "metrics_port": metrics,
                    "parallel_workers": mlserver_workers,
                    "debug": False,
                }
            )
        )
        (folder / model / "model-settings.json").write_text(
            json.dumps(
                {
                    "name": model,
                    "implementation": "mlserver_model.SavedModel",
                    "max_batch_size": 32,
                    "max_batch_time": 0.001,
                    "parameters": {"uri": version_dir},
                }
            )
        )
        servers.append(
            Server(
                "mlserver-1.6.1",
                [str(mlserver.parent / "mlserver"), "start", str(folder)],
                [
                    Endpoint(
                        "REST",
                        f"http://127.0.0.1:{http}/v2/models/{model}/infer",
                        bodies["v2_rest"],
                    ),
                    Endpoint("gRPC", f"http://127.0.0.1:{grpc_port}{V2_INFER}", bodies["v2_grpc"]),
                ],
                settings=(
                    f"adaptive batching 32 / 1 ms, parallel_workers {mlserver_workers}; OIP v2"
                ),
            )
        )
    return servers


def write_bodies(model: str) -> dict[str, Path]:
    folder = WORK / "payloads" / model
    folder.mkdir(parents=True, exist_ok=True)
    x = models.sample(model)
    bodies = {
        "tf_rest": payloads.tf_rest(x),
        "tf_grpc": payloads.tf_grpc(model, x),
        "v2_rest": payloads.v2_rest(x),
    }
    paths = {}
    for name, body in bodies.items():
        paths[name] = folder / name
        paths[name].write_bytes(body)
    peer = venv_python("pytriton") or venv_python("mlserver")
    if peer:
        np.save(folder / "x.npy", x)
        paths["v2_grpc"] = folder / "v2_grpc"
        subprocess.run(
            [
                str(peer),
                "-m",
                "benchmarks.payloads",
                "v2grpc",
                model,
                str(folder / "x.npy"),
                str(paths["v2_grpc"]),
            ],
            cwd=ROOT,
            check=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
    return paths


# ------------------------------------------------------------------------------- main
def ceiling(model: str, base: str, seconds: float, python: Path = PROJECT_PY) -> dict[str, float]:
    output = subprocess.run(
        [
            "taskset",
            "-c",
            SERVER_CPU,
            str(python),
            "-m",
            "benchmarks.ceiling",
            os.path.join(base, "1"),
            model,
            str(seconds),
        ],
        cwd=ROOT,
        env={**os.environ, **TF_ONE_THREAD, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def bench_server(server: Server, model: str, args, round_: int, rows: list[Row]) -> None:
    log_path = WORK / f"{server.name}-{model}.log"
    print(f"  starting {server.name}", flush=True)
    process = start(server, log_path)
    try:
        for endpoint in server.endpoints:
            for concurrency in args.concurrency:
                load = wait_for_quiet(args.max_busy, args.patience)
                before = server.batch_probe() if server.batch_probe else None
                result = measure(endpoint, concurrency, args.seconds, args.warmup)
                validate(endpoint)  # still answering correctly after the run
                mean_batch = None
                if before is not None:
                    after = server.batch_probe()
                    calls = after[1] - before[1]
                    mean_batch = (after[0] - before[0]) / calls if calls else None
                row = Row(
                    model,
                    server.name,
                    endpoint.protocol,
                    concurrency,
                    result["rps"],
                    result["p50_ms"],
                    result["p99_ms"],
                    int(result["errors"]),
                    mean_batch,
                    load,
                    round_,
                )
                rows.append(row)
                print(
                    f"    {endpoint.protocol:4} c={concurrency:<3} {row.rps:8.0f} req/s  "
                    f"p50 {row.p50_ms:6.2f} ms  p99 {row.p99_ms:7.2f} ms  errors {row.errors}"
                    + (f"  rows/call {mean_batch:.1f}" if mean_batch else ""),
                    flush=True,
                )
    finally:
        stop(process)


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in ("tools", "pytriton", "mlserver"):
        python = venv_python(name)
        if python:
            listing = subprocess.run(
                [
                    str(python),
                    "-m",
                    "pip",
                    "list",
                    "--format=json",
                    "--path",
                    str(python.parent.parent / "lib" / "python3.10" / "site-packages"),
                ],
                capture_output=True,
                text=True,
            ).stdout
            keep = {
                "flask",
                "matplotlib",
                "nvidia-pytriton",
                "tritonclient",
                "mlserver",
                "protobuf",
                "numpy",
                "uvloop",
            }
            for package in json.loads(listing or "[]"):
                if package["name"].lower() in keep:
                    found[f"{name}:{package['name']}"] = package["version"]
    import tensorflow as tf

    found["tensorflow"] = tf.__version__
    for tool, flag in (("wrk", "-v"), ("h2load", "--version")):
        out = subprocess.run([tool, flag], capture_output=True, text=True)
        found[tool] = (out.stdout + out.stderr).strip().splitlines()[0]
    return found


def machine() -> dict[str, str]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "memory_gib": f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f}",
        "kernel": platform.release(),
        "gpu": "none (CPU-only figures)",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="mlp,scalar,cnn")
    parser.add_argument(
        "--servers", default="ours-batching,ours-no-batching,noop,flask,pytriton,mlserver"
    )
    parser.add_argument("--peer-models", default="mlp", help="models the peers are run on")
    parser.add_argument("--concurrency", default="1,8,32,128")
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument(
        "--max-busy", type=float, default=0.15, help="wait while others use more of the CPUs"
    )
    parser.add_argument("--patience", type=float, default=60, help="longest wait per point (s)")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    for tool in ("wrk", "h2load", "taskset"):
        if not shutil.which(tool):
            print(f"{tool} missing: run bash benchmarks/install.sh first", file=sys.stderr)
            return 2
    WORK.mkdir(parents=True, exist_ok=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    wanted_all = set(args.servers.split(","))
    rows: list[Row] = []
    ceilings: dict[str, dict[str, float]] = {}
    servers_settings: dict[str, str] = {}
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    for model in args.models.split(","):
        base = models.build(model, str(WORK / "models"))
        bodies = write_bodies(model)
        heavy_peers = {"pytriton", "mlserver"}
        wanted = wanted_all if model in args.peer_models.split(",") else wanted_all - heavy_peers
        print(f"model {model}: in-process ceiling", flush=True)
        ceilings[model] = ceiling(model, base, max(args.seconds / 4, 1))
        for round_ in range(1, args.rounds + 1):
            for server in build_servers(model, base, bodies, wanted):
                servers_settings[server.name] = server.settings
                try:
                    bench_server(server, model, args, round_, rows)
                except Exception as exc:  # one broken peer must not lose the other results
                    print(f"  {server.name} FAILED: {exc}", flush=True)
                    servers_settings[server.name] += f" — FAILED: {str(exc)[:500]}"
    report = {
        "started": started,
        "finished": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "machine": machine(),
        "versions": versions(),
        "settings": {
            "server_cpu": SERVER_CPU,
            "client_cpu": CLIENT_CPU,
            "seconds": args.seconds,
            "warmup_seconds": args.warmup,
            "rounds": args.rounds,
            "tf_threads": "intra 1 / inter 1 everywhere (flags or TF_NUM_*_THREADS)",
            "grpc_clients": "h2load -c min(c,4) -m c/min(c,4)",
            "servers": servers_settings,
        },
        "ceilings_rows_per_second": ceilings,
        "rows": [asdict(row) for row in rows],
    }
    (out / "results.json").write_text(json.dumps(report, indent=1))
    print(f"wrote {out / 'results.json'}", flush=True)
    return report_main([str(out / "results.json")])


if __name__ == "__main__":
    sys.exit(main())
