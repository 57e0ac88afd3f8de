"""Overload: how fast and how fairly the server sheds load it cannot take.

    .venv/bin/python -m benchmarks.overload                   # this tree only
    .venv/bin/python -m benchmarks.overload --baseline main   # a git ref side by side

The server runs a model with a deliberately small batching queue (``max_batch_size 4``,
``max_enqueued_batches 2``, one batch thread) pinned to CPU 0: ``scalar`` (y = 0.5 x + 2, the
front ends are the bottleneck) or ``busy`` (the same answer after ~3 ms of matrix products per
batch, so the model is the bottleneck and most requests must be refused). On CPU 1,
512 closed-loop clients keep one request each in flight (REST: keep-alive HTTP/1.1 connections;
gRPC: concurrent unary calls over a few channels) while a prober opens a *fresh* connection
every 0.5 s and sends one request on it. What matters is how fast the refusals (503 /
UNAVAILABLE) come, how long the accepted requests take, and whether a newcomer gets an answer
at all. The report gives p50/p99/max per answer, the prober's latency and
how many of its probes were answered, and the load generator's own CPU use (near 100 % would
mean the client, not the server, set the pace).

Load generators are asyncio clients on uvloop (HTTP/1.1 written and parsed by hand, grpc.aio for
gRPC), because wrk and h2load do not report latency per status. Results:
``benchmarks/results/overload.json`` and ``overload.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "benchmarks" / "work"
RESULTS = ROOT / "benchmarks" / "results"
SERVER_CPU, CLIENT_CPU = "0", "1"
BATCHING = """max_batch_size { value: 4 }
batch_timeout_micros { value: 0 }
max_enqueued_batches { value: 2 }
num_batch_threads { value: 1 }
"""
BODY = b'{"instances": [[1.0]]}'
MODEL_NAME = "overload"
PREDICT_PATH = f"/v1/models/{MODEL_NAME}:predict"
BUSY_MATMULS = 3
BUSY_SIZE = 256
CLIENT_TIMEOUT = 30.0
GRPC_BODY = WORK / "overload-predict.bin"


# ------------------------------------------------------------------------------- REST clients
class _HttpConnection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection: one request at a time, the response parsed by hand
    (status and Content-Length are all a load generator needs)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future | None = None
        self.closed = asyncio.get_running_loop().create_future()
        self._buffer = b""
        self._need = -1
        self._status = 0
        self._close_after = False

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while True:
            if self._need < 0:
                end = self._buffer.find(b"\r\n\r\n")
                if end < 0:
                    return
                head = self._buffer[:end].lower()
                self._status = int(head[9:12])
                length = re.search(rb"content-length:\s*(\d+)", head)
                self._close_after = b"connection: close" in head
                self._need = end + 4 + (int(length.group(1)) if length else 0)
            if len(self._buffer) < self._need:
                return
            self._buffer = self._buffer[self._need :]
            self._need = -1
            if self.waiter is not None and not self.waiter.done():
                self.waiter.set_result((self._status, self._close_after))

    def connection_lost(self, exc) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result((-1, True))  # reset before an answer
        if not self.closed.done():
            self.closed.set_result(None)

    async def send(self, request: bytes) -> tuple[int, bool]:
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return await asyncio.wait_for(self.waiter, CLIENT_TIMEOUT)


def _request(port: int) -> bytes:
    return (
        f"POST {PREDICT_PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(BODY)}\r\n\r\n"
    ).encode() + BODY


async def _open(port: int) -> _HttpConnection:
    loop = asyncio.get_running_loop()
    _, protocol = await asyncio.wait_for(
        loop.create_connection(_HttpConnection, "127.0.0.1", port), CLIENT_TIMEOUT
    )
    return protocol


async def rest_load(port: int, connections: int, seconds: float) -> list[tuple[int, float]]:
    """``connections`` closed loops; (status, latency s) per request. A refused or reset
    connection is reopened, its failed attempt recorded as status -1 (or 0 on timeout)."""
    request = _request(port)
    samples: list[tuple[int, float]] = []
    stop_at = time.perf_counter() + seconds

    async def client() -> None:
        conn: _HttpConnection | None = None
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            try:
                if conn is None:
                    conn = await _open(port)
                status, close = await conn.send(request)
            except (OSError, asyncio.TimeoutError) as exc:
                status, close = (0 if isinstance(exc, asyncio.TimeoutError) else -1), True
            samples.append((status, time.perf_counter() - started))
            if close and conn is not None:
                conn.transport.close()
                conn = None
        if conn is not None:
            conn.transport.close()

    await asyncio.gather(*(client() for _ in range(connections)))
    return samples


async def rest_probe(port: int, seconds: float, interval: float) -> list[tuple[int, float]]:
    """A newcomer every ``interval`` s: connect, one request, close. Each probe runs on its own,
    so a slow one does not delay the next."""
    request = _request(port)

    async def probe() -> tuple[int, float]:
        started = time.perf_counter()
        conn = None
        try:
            conn = await _open(port)
            status, _ = await conn.send(request)
        except (OSError, asyncio.TimeoutError) as exc:
            status = 0 if isinstance(exc, asyncio.TimeoutError) else -1
        finally:
            if conn is not None:
                conn.transport.close()
        return status, time.perf_counter() - started

    tasks = []
    for _ in range(int(seconds / interval)):
        tasks.append(asyncio.create_task(probe()))
        await asyncio.sleep(interval)
    return list(await asyncio.gather(*tasks))


# ------------------------------------------------------------------------------- gRPC clients
# The clients send a pre-serialized PredictRequest (see ``_grpc_request_bytes``) through a raw
# method handle, so they need not import TensorFlow (which takes ~25 s on a busy machine).
def _grpc_request_bytes() -> bytes:
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL_NAME
    tensor = request.inputs["x"]
    tensor.dtype = 1  # DT_FLOAT
    tensor.tensor_shape.dim.add().size = 1
    tensor.tensor_shape.dim.add().size = 1
    tensor.float_val.append(1.0)
    return request.SerializeToString()


def _grpc_status(exc: BaseException | None) -> int:
    """gRPC status code number, mapped into one int column with the HTTP ones."""
    import grpc

    if exc is None:
        return 200
    if isinstance(exc, grpc.aio.AioRpcError):
        return 1000 + exc.code().value[0]
    if isinstance(exc, asyncio.TimeoutError):
        return 0
    return -1


def _predict(channel):
    return channel.unary_unary("/tensorflow.serving.PredictionService/Predict")


async def grpc_load(port: int, calls: int, seconds: float, request: bytes, channels: int = 8):
    import grpc

    samples: list[tuple[int, float]] = []
    stop_at = time.perf_counter() + seconds
    opened = [grpc.aio.insecure_channel(f"127.0.0.1:{port}") for _ in range(channels)]
    methods = [_predict(channel) for channel in opened]

    async def client(index: int) -> None:
        predict = methods[index % channels]
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            error = None
            try:
                await predict(request, timeout=CLIENT_TIMEOUT)
            except Exception as exc:
                error = exc
            samples.append((_grpc_status(error), time.perf_counter() - started))

    await asyncio.gather(*(client(i) for i in range(calls)))
    for channel in opened:
        await channel.close()
    return samples


async def grpc_probe(port: int, seconds: float, interval: float, request: bytes):
    import grpc

    async def probe() -> tuple[int, float]:
        started = time.perf_counter()
        error = None
        # A fresh channel per probe: its own TCP connection and HTTP/2 handshake.
        async with grpc.aio.insecure_channel(
            f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)]
        ) as channel:
            try:
                await _predict(channel)(request, timeout=CLIENT_TIMEOUT)
            except Exception as exc:
                error = exc
        return _grpc_status(error), time.perf_counter() - started

    tasks = []
    for _ in range(int(seconds / interval)):
        tasks.append(asyncio.create_task(probe()))
        await asyncio.sleep(interval)
    return list(await asyncio.gather(*tasks))


def client_main(argv: list[str]) -> int:
    """``python -m benchmarks.overload client <kind> <port> <seconds> <out.json> <n> <request>``."""
    import uvloop

    kind, port, seconds, out = argv[0], int(argv[1]), float(argv[2]), Path(argv[3])
    count = int(argv[4])
    request = Path(argv[5]).read_bytes() if kind.startswith("grpc") else b""
    runners = {
        "rest-load": lambda: rest_load(port, count, seconds),
        "rest-probe": lambda: rest_probe(port, seconds, 0.5),
        "grpc-load": lambda: grpc_load(port, count, seconds, request),
        "grpc-probe": lambda: grpc_probe(port, seconds, 0.5, request),
    }
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    cpu_before = time.process_time()
    wall_before = time.perf_counter()
    samples = uvloop.run(runners[kind]())
    busy = (time.process_time() - cpu_before) / (time.perf_counter() - wall_before)
    out.write_text(json.dumps({"samples": samples, "client_cpu": busy}))
    return 0


# ------------------------------------------------------------------------------- models
def _build_busy(base: str) -> str:
    """``busy``: y = 0.5 x + 2 like ``scalar``, after a fixed chain of matrix products (a
    variable operand, so graph optimizers cannot fold it)."""
    import tensorflow as tf

    version = os.path.join(base, "busy", "1")
    if os.path.exists(os.path.join(version, "saved_model.pb")):
        return os.path.dirname(version)

    class Busy(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            rng = np.random.default_rng(0)
            scale = 1.0 / np.sqrt(BUSY_SIZE)  # keeps the products' magnitude steady
            self.m = tf.Variable(rng.normal(0, scale, (BUSY_SIZE, BUSY_SIZE)).astype(np.float32))

        @tf.function(input_signature=[tf.TensorSpec([None, 1], tf.float32, name="x")])
        def serve(self, x):
            acc = tf.ones((BUSY_SIZE, BUSY_SIZE))
            for _ in range(BUSY_MATMULS):
                acc = tf.matmul(acc, self.m)
            # min(|sum|, 0) is always 0, but no optimizer can know it: the products must run.
            return {"y": 0.5 * x + 2.0 + tf.minimum(tf.abs(tf.reduce_sum(acc)), 0.0)}

    module = Busy()
    tf.saved_model.save(module, version, signatures={"serving_default": module.serve})
    return os.path.dirname(version)


# ------------------------------------------------------------------------------- orchestration
def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _code_tree(ref: str | None) -> Path:
    """This tree, or a git ref exported under benchmarks/work/ (its server is started there)."""
    if ref is None:
        return ROOT
    sha = subprocess.run(
        ["git", "rev-parse", ref], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    tree = WORK / f"tree-{sha[:12]}"
    if not (tree / "serving").exists():
        tree.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(
            ["git", "archive", "--format=tar", sha, "serving"], cwd=ROOT, capture_output=True
        ).stdout
        with tempfile.TemporaryFile() as tar_file:
            tar_file.write(archive)
            tar_file.seek(0)
            with tarfile.open(fileobj=tar_file) as tar:
                tar.extractall(tree)
    return tree


def _start_server(tree: Path, base: str, log_path: Path, extra: list[str]):
    rest, grpc_port = _free_port(), _free_port()
    batching = WORK / "overload-batching.txt"
    batching.write_text(BATCHING)
    command = [
        "taskset",
        "-c",
        SERVER_CPU,
        sys.executable,
        "-m",
        "serving",
        f"--rest_api_port={rest}",
        f"--port={grpc_port}",
        "--host=127.0.0.1",
        f"--model_name={MODEL_NAME}",
        f"--model_base_path={base}",
        "--enable_batching",
        f"--batching_parameters_file={batching}",
        "--tensorflow_intra_op_parallelism=1",
        "--tensorflow_inter_op_parallelism=1",
        *extra,
    ]
    env = {**os.environ, "PYTHONPATH": str(tree), "TF_CPP_MIN_LOG_LEVEL": "2"}
    log = open(log_path, "wb")  # noqa: SIM115 (kept open for the process's lifetime)
    process = subprocess.Popen(command, cwd=tree, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 180
    url = f"http://127.0.0.1:{rest}{PREDICT_PATH}"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited: {log_path.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(urllib.request.Request(url, BODY), timeout=5) as answer:
                if answer.status == 200:
                    return process, rest, grpc_port
        except OSError:
            time.sleep(0.5)
    process.kill()
    raise RuntimeError(f"server not ready in 180 s: {log_path.read_text()[-3000:]}")


def _client(kind: str, port: int, seconds: float, out: Path, count: int = 0):
    command = ["taskset", "-c", CLIENT_CPU, sys.executable, "-m", "benchmarks.overload"]
    command += ["client", kind, str(port), str(seconds), str(out), str(count), str(GRPC_BODY)]
    return subprocess.Popen(command, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})


def _summary(samples: list[tuple[int, float]], seconds: float) -> dict:
    by_status: dict[str, dict] = {}
    for status in sorted({s for s, _ in samples}):
        latencies = np.asarray([t for s, t in samples if s == status]) * 1e3
        by_status[_status_name(status)] = {
            "count": int(latencies.size),
            "p50_ms": float(np.percentile(latencies, 50)),
            "p99_ms": float(np.percentile(latencies, 99)),
            "max_ms": float(latencies.max()),
        }
    return {"requests_per_second": len(samples) / seconds, "by_status": by_status}


def _status_name(status: int) -> str:
    if status >= 1000:
        import grpc

        return next(c.name for c in grpc.StatusCode if c.value[0] == status - 1000)
    return {0: "client timeout", -1: "connection error"}.get(status, str(status))


def run_point(tree: Path, base: str, protocol: str, args, log_path: Path) -> dict:
    process, rest, grpc_port = _start_server(tree, base, log_path, args.server_flag)
    port = rest if protocol == "REST" else grpc_port
    kind = protocol.lower()
    try:
        with tempfile.TemporaryDirectory(dir=WORK) as scratch:
            load_out, probe_out = Path(scratch, "load.json"), Path(scratch, "probe.json")
            load = _client(f"{kind}-load", port, args.seconds, load_out, args.clients)
            time.sleep(1.0)  # the probes start once the load is on
            probe = _client(f"{kind}-probe", port, args.seconds - 2.0, probe_out)
            for child in (probe, load):
                try:
                    child.wait(args.seconds + CLIENT_TIMEOUT + 30)
                except subprocess.TimeoutExpired:
                    child.kill()
                    raise
            loaded, probed = json.loads(load_out.read_text()), json.loads(probe_out.read_text())
        alive = process.poll() is None
    finally:
        process.terminate()
        process.wait(60)
    probes = probed["samples"]
    answered = [t * 1e3 for s, t in probes if s > 0]
    return {
        "load": _summary(loaded["samples"], args.seconds),
        "load_client_cpu": loaded["client_cpu"],
        "probe": {
            "sent": len(probes),
            "answered": len(answered),
            "statuses": sorted({_status_name(s) for s, _ in probes}),
            "p50_ms": float(np.percentile(answered, 50)) if answered else None,
            "p99_ms": float(np.percentile(answered, 99)) if answered else None,
            "max_ms": max(answered) if answered else None,
        },
        "server_alive_after": alive,
    }


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _cell(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"
    return str(value)


def _rows(points: list[dict]) -> list[tuple[str, object]]:
    """(label, getter) for every figure any of ``points`` has."""
    statuses: list[str] = []
    for point in points:
        for status in point["load"]["by_status"]:
            if status not in statuses:
                statuses.append(status)
    rows: list[tuple[str, object]] = [("requests/s", lambda r: r["load"]["requests_per_second"])]
    for status in statuses:
        for key in ("count", "p50_ms", "p99_ms", "max_ms"):
            rows.append(
                (
                    f"{status}: {key}",
                    lambda r, s=status, k=key: r["load"]["by_status"].get(s, {}).get(k),
                )
            )
    rows += [
        ("fresh-connection probes answered", lambda r: _probe_answered(r)),
        ("probe p50 ms", lambda r: r["probe"]["p50_ms"]),
        ("probe p99 ms", lambda r: r["probe"]["p99_ms"]),
        ("probe max ms", lambda r: r["probe"]["max_ms"]),
        ("probe answers", lambda r: ", ".join(r["probe"]["statuses"])),
        ("load generator CPU share", lambda r: f"{r['load_client_cpu']:.0%}"),
        ("server alive after", lambda r: r["server_alive_after"]),
        ("load average before", lambda r: r["loadavg"]),
    ]
    return rows


def markdown(report: dict) -> str:
    labels = list(report["trees"])
    lines = [
        f"# Overload: {report['clients']} clients against a 4-row x 2-batch queue",
        "",
        f"{report['started']}; {report['settings']}. Latencies are per answer, measured by the "
        "clients; `ratio` = this tree / baseline.",
        "",
    ]
    for point, by_label in report["points"].items():
        runs = [by_label[label] for label in labels]
        header = ["figure", *labels] + (["ratio"] if len(labels) == 2 else [])
        lines += [f"## {point}", "", "| " + " | ".join(header) + " |"]
        lines.append("|" + "---|" * len(header))
        for name, get in _rows(runs):
            values = [get(run) for run in runs]
            cells = [_cell(value) for value in values]
            if len(labels) == 2:
                first, second = (_number(v) for v in values)
                cells.append(f"{second / first:.2f}" if first and second is not None else "")
            lines.append("| " + " | ".join([name, *cells]) + " |")
        lines.append("")
    return "\n".join(lines)


def _probe_answered(run: dict) -> str:
    return f"{run['probe']['answered']} / {run['probe']['sent']}"


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "client":
        return client_main(sys.argv[2:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline", help="git ref whose server runs too, side by side")
    parser.add_argument("--clients", type=int, default=512)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--models", default="scalar,busy")
    parser.add_argument("--protocols", default="REST,gRPC")
    parser.add_argument(
        "--server-flag", action="append", default=[], help="extra server flag (repeatable)"
    )
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    if not shutil.which("taskset"):
        print("taskset missing (util-linux)", file=sys.stderr)
        return 2
    from benchmarks import models

    WORK.mkdir(parents=True, exist_ok=True)
    bases = {
        "scalar": models.build("scalar", str(WORK / "models")),
        "busy": _build_busy(str(WORK / "models")),
    }
    GRPC_BODY.write_bytes(_grpc_request_bytes())
    trees = {"this tree": ROOT}
    if args.baseline:
        trees = {f"baseline {args.baseline}": _code_tree(args.baseline), **trees}
    report = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "clients": args.clients,
        "settings": f"{args.seconds:.0f} s per point, server on CPU 0, clients on CPU 1, "
        f"extra server flags: {' '.join(args.server_flag) or 'none'}",
        "trees": list(trees),
        "points": {},
    }
    for model in args.models.split(","):
        for protocol in args.protocols.split(","):
            point = f"{model} model, {protocol}"
            report["points"][point] = {}
            for label, tree in trees.items():  # side by side, one point at a time
                print(f"{point}: {label}", flush=True)
                loadavg = " ".join(Path("/proc/loadavg").read_text().split()[:3])
                log_path = WORK / f"overload-{model}-{protocol}-{label.replace(' ', '_')}.log"
                result = run_point(tree, bases[model], protocol, args, log_path)
                report["points"][point][label] = {**result, "loadavg": loadavg}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "overload.json").write_text(json.dumps(report, indent=1))
    text = markdown(report)
    (out / "overload.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
