"""The model process on its own: how much of its CPU one request costs when the calls reach it
coalesced, and so how many requests one model process can serve (issue 14: "≤ 25 µs of its own
CPU per request at batch ≥ 8, ≥ 40k req/s per model process").

In the scaling runs the model process shares two cores with two front ends and the load
generator, and what it is sent depends on how fast those front ends are: there, gRPC calls
reach it a few per message. Here nothing else competes with it: a ``--frontend_processes=1``
server runs on one CPU (its front end idle), and this load generator, on the other CPU, is a
front end's own client code -- ``RemoteDataplane`` with its coalescer, the request context that
takes each call's ``request_latency`` sample and forwards it -- connected to the model process's
socket as one more front end. Each of ``--concurrency`` callers sends one-row predictions in a
loop; the coalescer groups what they send within an event-loop iteration, as a front end groups
the calls it decoded. Per point: requests/s (bounded by this one-core load generator, not by the
model process), the model process's CPU per request (``utime + stime`` from ``/proc``), calls
per message, and rows per model call from the server's batching metrics.

With ``--frontends K``, the points (none with an empty ``--concurrency``) are followed by one
where K connections each keep one message of ``--calls`` one-row calls in flight at all times:
what K front ends under load send, each holding one coalesced call in flight
(``serving.multiproc.coalesce``), sent by the same client code without the callers in front of
it. Their messages meet in the batch queue, so rows per model call grow to about K times the
calls, as they do behind K busy front ends (unless the server's ``max_batch_size`` is the calls
per message: then each message is a model call of its own, the busy model process at that batch
size); one connection's message at a time is the other extreme, where every message finds the
model process idle and its caches cold (docs/process-model.md). ``model_cpu_share`` says how
busy the point kept the model process (this one-core load generator sent 3-5k messages/s on the
2-core VM).

Run by ``benchmarks.frontends`` (part ``capacity``), which starts the server and pins this
process; by hand::

    taskset -c 1 .venv/bin/python -m benchmarks.model_capacity --pid MODEL_PID \
        --metrics http://127.0.0.1:REST/monitoring/prometheus/metrics --model mlp \
        --input-shape 784

prints one JSON object per point.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from statistics import median

import numpy as np
import uvloop

from benchmarks import process_tree
from benchmarks.prometheus import batching_totals
from serving.api import request_context
from serving.core.model_spec import ModelSpec
from serving.multiproc.coalesce import PendingCall
from serving.multiproc.protocol import MODEL_SOCKET_ENV, arena_bytes
from serving.multiproc.remote import RemoteDataplane, predict_fields
from serving.options import ServerOptions
from serving.servables.signatures import find_signature


class CountingDataplane(RemoteDataplane):
    """A front end's dataplane that counts the coalesced messages it sends."""

    messages = 0

    def _send_calls(self, msg: dict, calls: list[PendingCall]) -> asyncio.Future | None:
        self.messages += 1
        return super()._send_calls(msg, calls)

    async def keep_one_message_in_flight(
        self, model: str, inputs: dict, calls: int, deadline: float
    ) -> list[float]:
        """Sends ``calls`` one-row calls as one coalesced message, as soon as the last one is
        answered, until ``deadline``; each message's latency. Each call's future gets its rows,
        as the coalescer's callers do."""
        spec = ModelSpec(model)
        guess = self._snapshot.guess(spec) or await self._resolve(spec)
        if guess.coalesce_rows < calls:
            raise RuntimeError(
                f"{model}'s front ends would not send {calls} calls as one message: serve it "
                f"with --enable_batching, max_batch_size >= {calls} and no prediction log"
            )
        signature = find_signature(guess.signatures, "")
        fields = predict_fields(spec, guess.fingerprint_of(signature))
        loop = asyncio.get_running_loop()
        latencies: list[float] = []
        while time.perf_counter() < deadline:
            group = [PendingCall(inputs, 1, 0, None, loop.create_future()) for _ in range(calls)]
            started = time.perf_counter()
            if self._send_calls(dict(fields), group) is None:
                raise RuntimeError("the model process refused a message")
            for call in group:
                reply = await call.future
                if "retry" in reply:
                    raise RuntimeError("the model's signature changed during the benchmark")
            latencies.append(time.perf_counter() - started)
        return latencies


def model_socket(pid: int) -> str:
    """The socket the supervisor told the model process to listen on (its environment)."""
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    prefix = MODEL_SOCKET_ENV.encode() + b"="
    for entry in environ:
        if entry.startswith(prefix):
            return entry[len(prefix) :].decode()
    raise RuntimeError(f"pid {pid} has no {MODEL_SOCKET_ENV}: not a model process")


async def _callers(
    dataplane: RemoteDataplane, model: str, inputs: dict, concurrency: int, seconds: float
) -> list[float]:
    """Each caller's latencies, as a gRPC front end serves a Predict: a request context (its
    request id, its latency sample forwarded to the model process), then the dataplane."""
    spec = ModelSpec(model)
    deadline = time.perf_counter() + seconds
    latencies: list[float] = []

    async def caller() -> None:
        while time.perf_counter() < deadline:
            context = request_context.begin("GRPC", None, dataplane.metrics)
            await dataplane.predict(spec, lambda signature: inputs)
            context.succeeded(model, "Predict")
            latencies.append(time.perf_counter() - context.start)

    await asyncio.gather(*(caller() for _ in range(concurrency)))
    return latencies


async def measure(args: argparse.Namespace) -> None:
    """Prints each point as soon as it is measured: a point already printed survives a later
    one failing."""
    # The request arena a front end of the benchmark's server (default options) has.
    arena = arena_bytes(ServerOptions.max_total_request_memory_bytes)
    path = model_socket(args.pid)
    dataplane = await _connected(path, arena, "capacity")
    # The benchmark's models take one float32 input "x" (benchmarks.models): built here from
    # its shape, so this process, like a front end, never imports TensorFlow.
    inputs = {"x": np.random.default_rng(1).random((1, *args.input_shape), dtype=np.float32)}
    connections = [
        await _connected(path, arena, f"capacity-connection-{i}") for i in range(args.frontends)
    ]
    try:
        for concurrency in args.concurrency:
            load = partial(_callers, dataplane, args.model, inputs, concurrency)
            await load(args.warmup)
            point = await _point(args, load, [dataplane], requests_per_latency=1)
            print(json.dumps({"concurrency": concurrency, **point}), flush=True)
        if connections:
            load = partial(_one_message_each, connections, args.model, inputs, args.calls)
            await load(args.warmup)
            point = await _point(args, load, connections, requests_per_latency=args.calls)
            fed_by = {"concurrency": args.frontends * args.calls, "frontends": args.frontends}
            print(json.dumps({**fed_by, **point}), flush=True)
    finally:
        for each in (dataplane, *connections):
            each.close()


async def _connected(path: str, arena: int, name: str) -> CountingDataplane:
    """One more front end's connection to the model process's socket at ``path``."""
    dataplane = CountingDataplane(path, arena, name)
    if not await dataplane.connect(asyncio.Event()):
        raise RuntimeError("could not connect to the model process")
    return dataplane


async def _one_message_each(
    dataplanes: list[CountingDataplane], model: str, inputs: dict, calls: int, seconds: float
) -> list[float]:
    """Every connection keeps one message in flight; the messages' latencies."""
    deadline = time.perf_counter() + seconds
    streams = [d.keep_one_message_in_flight(model, inputs, calls, deadline) for d in dataplanes]
    return [latency for stream in await asyncio.gather(*streams) for latency in stream]


async def _point(
    args: argparse.Namespace,
    load: Callable[[float], Awaitable[list[float]]],
    dataplanes: list[CountingDataplane],
    requests_per_latency: int,
) -> dict:
    """One measured run of ``load``: the model process's CPU per request and the rest."""
    rows_before, model_calls_before = batching_totals(args.metrics)
    messages_before = sum(d.messages for d in dataplanes)
    cpu_before = process_tree.cpu_seconds(args.pid)
    started = time.perf_counter()
    latencies = await load(args.seconds)
    elapsed = time.perf_counter() - started
    cpu = process_tree.cpu_seconds(args.pid) - cpu_before
    messages = sum(d.messages for d in dataplanes) - messages_before
    rows_after, model_calls_after = batching_totals(args.metrics)
    requests = len(latencies) * requests_per_latency
    model_calls = model_calls_after - model_calls_before
    rows = rows_after - rows_before
    return {
        "requests": requests,
        "rps": requests / elapsed,
        "p50_ms": median(latencies) * 1000,
        "model_us_per_request": cpu * 1e6 / requests,
        "model_cpu_share": cpu / elapsed,
        "calls_per_message": requests / messages if messages else None,
        "rows_per_model_call": rows / model_calls if model_calls else None,
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pid", type=int, required=True, help="the model process")
    parser.add_argument("--metrics", required=True, help="the server's Prometheus URL")
    parser.add_argument("--model", default="mlp")
    parser.add_argument("--input-shape", default="784", help="x's shape after the batch")
    parser.add_argument("--concurrency", default="1,8,32,128")
    parser.add_argument("--seconds", type=float, default=6)
    parser.add_argument("--warmup", type=float, default=2)
    parser.add_argument(
        "--frontends",
        type=int,
        default=0,
        help="connections that each keep one message in flight, for a last point (0: none)",
    )
    parser.add_argument("--calls", type=int, default=8, help="calls per such message")
    args = parser.parse_args(argv)
    args.concurrency = [int(c) for c in args.concurrency.split(",") if c]
    args.input_shape = [int(d) for d in args.input_shape.split(",")]
    return args


def main(argv: list[str] | None = None) -> int:
    uvloop.install()
    asyncio.run(measure(parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
