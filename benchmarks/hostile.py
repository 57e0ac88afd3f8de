"""Hostile requests against a real server: memory they cost, how fast they are refused or reaped.

    .venv/bin/python -m benchmarks.hostile                       # this tree
    .venv/bin/python -m benchmarks.hostile --baseline /tmp/base  # and a baseline, side by side
    .venv/bin/python -m benchmarks.hostile --cases concurrent    # 8 clients x large requests
    .venv/bin/python -m benchmarks.hostile --cases overhead --baseline /tmp/base  # good clients

A baseline is any checkout of this repository (``git archive <commit> | tar -x -C /tmp/base``);
each tree's server runs from its own directory with the project venv's Python, on loopback ports,
serving TF Serving's ``half_plus_two`` test model. Flags a tree does not know are left out, so
the baseline runs with its own defaults.

Memory is the server's peak RSS (``VmHWM``, reset through ``/proc/<pid>/clear_refs`` before each
case) minus its RSS just before the case. Cases that crash or hang a server are stopped at a
bound (``--reap_wait``); the 2 GiB huge-shape message is skipped on trees without a decode
budget unless ``--risk_oom`` is given, because it got the server OOM-killed on a 24 GiB machine
(issue 11) and this machine is shared.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import select
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zlib
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import predict_pb2

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
MIB = 1024 * 1024
HALF_SENT_CONNECTIONS = 200
# Short timeouts for the reaping cases, so a run takes seconds; defaults are documented in
# docs/serving.md.
SHORT_TIMEOUTS = {
    "--rest_api_header_timeout_in_ms": "2000",
    "--rest_api_body_timeout_in_ms": "2000",
    "--rest_api_keep_alive_timeout_in_ms": "2000",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    """One ``python -m serving`` process from ``tree`` (REST + gRPC on loopback)."""

    tree: Path
    model_base: Path
    flags: dict[str, str] = field(default_factory=dict)
    pin_cpu: str | None = None  # taskset the server (the overhead case pins it to CPU 0)
    process: subprocess.Popen | None = None

    def start(self) -> Server:
        self.rest, self.grpc = free_port(), free_port()
        known = (self.tree / "serving" / "options.py").read_text()
        flags = [f"{k}={v}" for k, v in self.flags.items() if k[2:] in known]
        fd, self.log_path = tempfile.mkstemp(prefix="hostile-", suffix=".log")
        self.log = os.fdopen(fd, "wb")
        pin = ["taskset", "-c", self.pin_cpu] if self.pin_cpu else []
        self.process = subprocess.Popen(
            [
                *pin,
                sys.executable,
                "-m",
                "serving",
                f"--rest_api_port={self.rest}",
                f"--port={self.grpc}",
                "--host=127.0.0.1",
                "--model_name=half_plus_two",
                f"--model_base_path={self.model_base}",
                *flags,
            ],
            cwd=self.tree,
            env={**os.environ, "PYTHONPATH": str(self.tree), "TF_CPP_MIN_LOG_LEVEL": "2"},
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {Path(self.log_path).read_text()[-2000:]}")
            if self.good_request() == 200:
                return self
            time.sleep(0.2)
        raise TimeoutError("server did not start")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.log.close()
        os.unlink(self.log_path)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def status_kib(self, key: str) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
        raise KeyError(key)

    def reset_peak(self) -> int:
        Path(f"/proc/{self.process.pid}/clear_refs").write_text("5")
        return self.status_kib("VmRSS")

    def peak_growth_mib(self, before_kib: int) -> float:
        return (self.status_kib("VmHWM") - before_kib) / 1024

    def post(self, path: str, body: bytes, headers: dict | None = None) -> tuple[int, bytes]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.rest}{path}", data=body, headers=headers or {}, method="POST"
        )
        return _open(request)

    def get(self, path: str) -> tuple[int, bytes]:
        return _open(urllib.request.Request(f"http://127.0.0.1:{self.rest}{path}"))

    def good_request(self) -> int | None:
        try:
            status, body = self.post("/v1/models/half_plus_two:predict", b'{"instances":[2.0]}')
        except OSError:
            return None
        return status if body == b'{"predictions":[3.0]}' else -status

    def grpc_raw(self, method: str, body: bytes) -> tuple[str, str]:
        with grpc.insecure_channel(
            f"127.0.0.1:{self.grpc}",
            options=[("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)],
        ) as channel:
            call = channel.unary_unary(f"/tensorflow.serving.PredictionService/{method}")
            try:
                call(body, timeout=120)
                return "OK", ""
            except grpc.RpcError as error:
                return error.code().name, error.details() or ""


def _open(request: urllib.request.Request) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


# ------------------------------------------------------------------------------------- cases
def huge_shape_request(rows: int) -> bytes:
    """Issue 11's message: one float value, shape [rows, 64] (TF fills the rest with it)."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "half_plus_two"
    tensor = request.inputs["x"]
    tensor.dtype = types_pb2.DT_FLOAT
    tensor.tensor_shape.dim.add().size = rows
    tensor.tensor_shape.dim.add().size = 64
    tensor.float_val.append(1.0)
    return request.SerializeToString()


def case_huge_shape(server: Server, rows: int) -> dict:
    body = huge_shape_request(rows)
    before = server.reset_peak()
    start = time.perf_counter()
    code, details = server.grpc_raw("Predict", body)
    elapsed = time.perf_counter() - start
    return {
        "message bytes": len(body),
        "answer": f"{code} {details[:90]}",
        "seconds": round(elapsed, 3),
        "RSS peak +MiB": round(server.peak_growth_mib(before), 1),
        "alive": server.alive(),
    }


def gzip_bomb(inflated: int) -> bytes:
    """A gzip body of ``inflated`` spaces, compressed in 1 MiB steps (never held inflated)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    chunk = b" " * MIB
    parts = [compressor.compress(chunk) for _ in range(inflated // MIB)]
    parts.append(compressor.flush())
    return b"".join(parts)


def case_gzip_bomb(server: Server, body: bytes) -> dict:
    before = server.reset_peak()
    start = time.perf_counter()
    status, payload = server.post(
        "/v1/models/half_plus_two:predict", body, {"Content-Encoding": "gzip"}
    )
    elapsed = time.perf_counter() - start
    return {
        "body bytes": len(body),
        "answer": f"{status} {payload[:100].decode(errors='replace')}",
        "seconds": round(elapsed, 3),
        "RSS peak +MiB": round(server.peak_growth_mib(before), 1),
        "alive": server.alive(),
    }


_HALF_HEADER = b"POST /v1/models/half_plus_two:predict HTTP/1.1\r\nHost: x\r\nContent-Le"
_HALF_BODY = (
    b"POST /v1/models/half_plus_two:predict HTTP/1.1\r\nHost: x\r\n"
    b"Content-Type: application/json\r\nContent-Length: 40\r\n\r\n"
    b'{"instances": [1.0, '
)


def case_half_sent(server: Server, prefix: bytes | None, wait: float) -> dict:
    """Opens connections that send ``prefix`` (None: one full request, then idle) and stall;
    reports when the server closed them and whether a fresh client is served meanwhile."""
    sockets = []
    for _ in range(HALF_SENT_CONNECTIONS):
        sock = socket.create_connection(("127.0.0.1", server.rest))
        if prefix is None:
            sock.sendall(
                b"POST /v1/models/half_plus_two:predict HTTP/1.1\r\nHost: x\r\n"
                b"Content-Length: 19\r\n\r\n" + b'{"instances":[2.0]}'
            )
        else:
            sock.sendall(prefix)
        sockets.append(sock)
    start = time.monotonic()
    served_meanwhile = server.good_request() == 200
    closed_at: list[float] = []
    open_socks = {sock.fileno(): sock for sock in sockets}
    while open_socks and time.monotonic() - start < wait:
        readable, _, _ = select.select(list(open_socks), [], [], 0.05)
        for fd in readable:
            sock = open_socks[fd]
            try:
                data = sock.recv(65536)
            except ConnectionError:
                data = b""
            if not data:  # EOF: the server closed it
                closed_at.append(time.monotonic() - start)
                del open_socks[fd]
                sock.close()
    for sock in open_socks.values():
        sock.close()
    return {
        "connections": HALF_SENT_CONNECTIONS,
        "closed by server": len(closed_at),
        "last closed after s": round(max(closed_at), 2) if closed_at else None,
        "waited s": wait,
        "fresh client served": served_meanwhile,
        "alive": server.alive(),
    }


# Seeded random bytes that do not parse as a PredictRequest (the last byte opens a field).
NOT_A_PROTO = random.Random(11).randbytes(64) + b"\x0a"


def case_client_mistakes(server: Server) -> dict:
    """Issue 11's client mistakes: what each tree answers."""
    out = {}
    out["REST version of 5000 nines"] = server.get(
        "/v1/models/half_plus_two/versions/" + "9" * 5000
    )[0]

    def tensor_request(dims: list[int], values: int) -> bytes:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "half_plus_two"
        tensor = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT)
        for size in dims:
            tensor.tensor_shape.dim.add().size = size
        tensor.float_val.extend([1.0] * values)
        request.inputs["x"].CopyFrom(tensor)
        return request.SerializeToString()

    out["gRPC rank 33"] = server.grpc_raw("Predict", tensor_request([1] * 33, 1))[0]
    out["gRPC shape [1,3,0,2^63-1]"] = server.grpc_raw(
        "Predict", tensor_request([1, 3, 0, 2**63 - 1], 0)
    )[0]
    out["gRPC random bytes"] = server.grpc_raw("Predict", NOT_A_PROTO)[0]
    out["alive"] = server.alive()
    return out


def large_predict(megabytes: int) -> tuple[bytes, bytes]:
    """A gRPC message (``tensor_content``) of about ``megabytes`` and a REST body (JSON rows)
    of a quarter of that."""
    x = np.linspace(0.0, 1.0, megabytes * MIB // 4, dtype=np.float32)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "half_plus_two"
    tensor = request.inputs["x"]
    tensor.dtype = types_pb2.DT_FLOAT
    tensor.tensor_shape.dim.add().size = x.size
    tensor.tensor_content = x.tobytes()
    # A quarter of the size as JSON: parsed, each "0.1234," takes ~11x its bytes in memory.
    rows = ",".join(f"{value:.4f}" for value in x[: megabytes * MIB // 4 // 7].tolist())
    body = b'{"instances":[' + rows.encode() + b"]}"
    return request.SerializeToString(), body


def case_concurrent(server: Server, protocol: str, payload: bytes, clients: int, rounds: int):
    """``clients`` threads each sending ``rounds`` large requests at once: how many were
    served, how many shed (UNAVAILABLE / 503), and the server's peak RSS meanwhile."""
    before = server.reset_peak()

    def one(_: int) -> str:
        if protocol == "grpc":
            return server.grpc_raw("Predict", payload)[0]
        try:
            return str(server.post("/v1/models/half_plus_two:predict", payload)[0])
        except OSError as error:
            return type(error).__name__

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        answers = list(pool.map(one, range(clients * rounds)))
    return {
        "request MiB": round(len(payload) / MIB, 1),
        "answers": dict(Counter(answers)),
        "seconds": round(time.perf_counter() - start, 1),
        "RSS peak +MiB": round(server.peak_growth_mib(before), 1),
        "alive": server.alive(),
        "good request after": server.good_request(),
    }


def case_overhead(server: Server, rounds: int = 3, seconds: int = 8) -> dict:
    """What the hardening costs a well-behaved client: small predicts (REST with wrk, gRPC
    with h2load; client on CPU 1, server on CPU 0), median of ``rounds``."""
    from benchmarks.run import WORK, Endpoint, run_h2load, run_wrk

    WORK.mkdir(parents=True, exist_ok=True)
    rest_body = WORK / "hostile-rest.json"
    rest_body.write_bytes(b'{"instances": [[1.0, 2.0, 5.0]]}')
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "half_plus_two"
    tensor = request.inputs["x"]
    tensor.dtype = types_pb2.DT_FLOAT
    tensor.tensor_shape.dim.add().size = 3
    tensor.float_val.extend([1.0, 2.0, 5.0])
    message = request.SerializeToString()
    grpc_body = WORK / "hostile-grpc.bin"
    grpc_body.write_bytes(b"\0" + len(message).to_bytes(4, "big") + message)
    endpoints = {
        "REST": (
            run_wrk,
            Endpoint(
                "REST", f"http://127.0.0.1:{server.rest}/v1/models/half_plus_two:predict", rest_body
            ),
        ),
        "gRPC": (
            run_h2load,
            Endpoint(
                "gRPC",
                f"http://127.0.0.1:{server.grpc}/tensorflow.serving.PredictionService/Predict",
                grpc_body,
            ),
        ),
    }
    out = {}
    for protocol, (run, endpoint) in endpoints.items():
        run(endpoint, 8, 2)  # warm-up
        runs = sorted((run(endpoint, 8, seconds) for _ in range(rounds)), key=lambda r: r["rps"])
        middle = runs[len(runs) // 2]
        out[f"{protocol} req/s"] = round(middle["rps"])
        out[f"{protocol} p99 ms"] = round(middle["p99_ms"], 2)
        out[f"{protocol} errors"] = sum(r["errors"] for r in runs)
    return out


# -------------------------------------------------------------------------------------- main
CASES = ("bomb", "mistakes", "shape", "reap", "concurrent", "overhead")


def run_tree(tree: Path, model_base: Path, args) -> dict:
    results: dict[str, dict] = {}
    has_budget = "max_request_memory_bytes" in (tree / "serving" / "options.py").read_text()
    cases = set(args.cases.split(","))

    # A fresh server per memory case: memory a case leaves allocated would hide the next peak.
    if "bomb" in cases:
        name = "gzip bomb (1 GiB inflated, --max_request_bytes=10MiB)"
        with _server(tree, model_base, {"--max_request_bytes": str(10 * MIB)}) as server:
            results[name] = case_gzip_bomb(server, gzip_bomb(1024 * MIB))
            results[name]["good request after"] = server.good_request()
    if "mistakes" in cases:
        with _server(tree, model_base, {}) as server:
            results["client mistakes"] = case_client_mistakes(server)
    if "shape" in cases:
        with _server(tree, model_base, {}) as server:
            results["huge shape [262144,64] (64 MiB decoded)"] = case_huge_shape(server, 262144)
        name = "huge shape [8388607,64] (2 GiB decoded)"
        if has_budget or args.risk_oom:
            with _server(tree, model_base, {}) as server:
                results[name] = case_huge_shape(server, 8388607)
                results[name]["good request after"] = server.good_request()
        else:
            results[name] = {"answer": "not run: OOM-killed the server in issue 11 (--risk_oom)"}
    if "reap" in cases:
        with _server(tree, model_base, SHORT_TIMEOUTS) as server:
            for name, prefix in (
                ("half-sent header", _HALF_HEADER),
                ("half-sent body", _HALF_BODY),
                ("idle keep-alive", None),
            ):
                results[f"{name} x{HALF_SENT_CONNECTIONS} (timeouts 2 s)"] = case_half_sent(
                    server, prefix, args.reap_wait
                )
    if "overhead" in cases:
        with _server(tree, model_base, {}, pin_cpu="0") as server:
            results["overhead: small predicts, 8 connections"] = case_overhead(server)
    if "concurrent" in cases and has_budget:
        message, body = large_predict(args.concurrent_mib)
        for protocol, payload in (("grpc", message), ("rest", body)):
            with _server(tree, model_base, {}) as server:
                results[f"{protocol}: 8 clients x 2 large requests"] = case_concurrent(
                    server, protocol, payload, clients=8, rounds=2
                )
    return results


class _server:
    def __init__(
        self, tree: Path, model_base: Path, flags: dict[str, str], pin_cpu: str | None = None
    ) -> None:
        self.server = Server(tree, model_base, flags, pin_cpu=pin_cpu)

    def __enter__(self) -> Server:
        return self.server.start()

    def __exit__(self, *exc) -> None:
        self.server.stop()


def ratios(baseline: dict, this: dict) -> dict:
    """this / baseline for the overhead measures both runs have."""
    out = {}
    for case, measures in this.items():
        if case.startswith("overhead") and case in baseline:
            out[case] = {
                name: round(value / baseline[case][name], 3)
                for name, value in measures.items()
                if "errors" not in name and baseline[case].get(name)
            }
    return out


def table(runs: dict[str, dict]) -> str:
    """Markdown: one row per case and measure, one column per tree."""
    names = list(runs)
    lines = ["| case | measure | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    cases = list(dict.fromkeys(case for run in runs.values() for case in run))
    for case in cases:
        measures = list(dict.fromkeys(m for run in runs.values() for m in run.get(case, {})))
        for measure in measures:
            cells = [str(runs[name].get(case, {}).get(measure, "")) for name in names]
            cells = [cell.replace("|", "/").replace("\n", " ") for cell in cells]
            lines.append(f"| {case} | {measure} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", type=Path, default=ROOT, help="the checkout to measure")
    parser.add_argument("--baseline", type=Path, help="another checkout to measure side by side")
    parser.add_argument("--reap_wait", type=float, default=20.0, help="seconds to wait for closes")
    parser.add_argument("--risk_oom", action="store_true", help="send the 2 GiB shape everywhere")
    parser.add_argument(
        "--cases",
        default="bomb,mistakes,shape,reap",
        help=f"comma-separated, of {','.join(CASES)}; 'concurrent' (trees with a request "
        "memory budget only) may take the server to several GiB",
    )
    parser.add_argument("--concurrent_mib", type=int, default=200, help="size of each request")
    parser.add_argument("--output", type=Path, default=RESULTS / "hostile.md")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from tests.support.models import write_half_plus_two

    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="hostile-model-") as store:
        write_half_plus_two(os.path.join(store, "1"))
        runs = {}
        if args.baseline is not None:
            runs[f"baseline ({args.baseline})"] = run_tree(
                args.baseline.resolve(), Path(store), args
            )
        runs[f"{args.tree}"] = run_tree(args.tree.resolve(), Path(store), args)
    if len(runs) == 2:
        runs["ratio (this / baseline)"] = ratios(*runs.values())
    text = table(runs)
    print(text)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(
        "# Hostile requests (benchmarks/hostile.py)\n\n"
        f"Machine: {os.cpu_count()} CPUs; load average before the run: {load_before:.1f}\n\n"
        + text
        + "\n"
    )
    args.output.with_suffix(".json").write_text(json.dumps(runs, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
