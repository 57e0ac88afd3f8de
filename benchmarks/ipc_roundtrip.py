"""Round trips through serving.ipc between two processes, against plain asyncio streams.

    .venv/bin/python -m benchmarks.ipc_roundtrip [--calls 20000] [--loop uvloop]

The server is a second process (pinned to CPU 0 where the machine has two or more, the client
to CPU 1). Rows:

- ``ipc small``: ``RpcClient.call`` / ``serve`` with a small control message (the model
  process's per-request floor);
- ``ipc tensor``: the same plus tensors through the arenas, as a predict would: the client
  packs a 1x784 float32 request into its arena, the server unpacks it (zero-copy), reads it,
  packs a 1x10 float32 reply into its own arena; the client unpacks it and releases it with
  its next call;
- ``streams small`` (baseline): the same framing (4-byte length + orjson) and id matching
  written on asyncio's ``StreamReader``/``StreamWriter`` the usual way (a reader task
  resolving futures, ``writer.write`` per message).

Columns: p50/p99 round trip at 1 call in flight, calls/s and p50 with 64 in flight, and the CPU
each side spends per call (process CPU time over the calls) at 64 in flight.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson

from serving.ipc.arena import Arena, ArenaMap
from serving.ipc.channel import Channel, RpcClient, serve, start_server
from serving.ipc.tensors import pack, unpack

_WORD = struct.Struct("<I")


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _run(main, loop: str):
    if loop == "uvloop":
        import uvloop

        return uvloop.run(main)
    return asyncio.run(main)


# -- server side ----------------------------------------------------------------------------


async def _serve_ipc(path: str) -> None:
    arena = Arena(64 << 20, "bench-server")
    peers: dict[int, ArenaMap] = {}
    reply = np.arange(10, dtype=np.float32)

    def handler(msg: dict, fds: list[int]):
        op = msg["op"]
        if op == "small":
            return {"n": msg["n"]}
        if op == "predict":
            for block in msg["release"]:
                arena.free(block)
            inputs = unpack(msg["tensors"], peers[0].view)
            packed = pack({"y": reply + inputs["x"][0, 0]}, arena)
            assert packed is not None
            descriptors, block = packed
            return {"tensors": descriptors, "block": block}
        if op == "hello":
            peers[0] = ArenaMap(fds[0], msg["capacity"])
            return {"capacity": arena.capacity}, [arena.fd]
        if op == "cpu":
            return {"cpu": _cpu_seconds()}
        raise ValueError(op)

    stop = asyncio.get_running_loop().create_future()

    def on_channel(channel: Channel) -> None:
        serve(channel, handler, on_close=lambda reason: stop.done() or stop.set_result(None))

    await start_server(path, on_channel)
    print("ready", flush=True)
    await stop


async def _serve_streams(path: str) -> None:
    stop = asyncio.get_running_loop().create_future()

    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async def answer(msg: dict) -> None:
            if msg["op"] == "cpu":
                out = {"cpu": _cpu_seconds(), "id": msg["id"]}
            else:
                out = {"n": msg["n"], "id": msg["id"]}
            payload = orjson.dumps(out)
            writer.write(_WORD.pack(len(payload)) + payload)

        tasks = set()
        try:
            while True:
                (length,) = _WORD.unpack(await reader.readexactly(4))
                task = asyncio.ensure_future(answer(orjson.loads(await reader.readexactly(length))))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        except asyncio.IncompleteReadError:
            stop.set_result(None)

    await asyncio.start_unix_server(connection, path)
    print("ready", flush=True)
    await stop


# -- client side ----------------------------------------------------------------------------


class _StreamsClient:
    """The baseline's client: a reader task resolving one future per id."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader, self._writer = reader, writer
        self._pending: dict[int, asyncio.Future] = {}
        self._next = 0
        self._task = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        while True:
            (length,) = _WORD.unpack(await self._reader.readexactly(4))
            msg = orjson.loads(await self._reader.readexactly(length))
            self._pending.pop(msg["id"]).set_result(msg)

    async def call(self, msg: dict) -> dict:
        self._next += 1
        future = asyncio.get_running_loop().create_future()
        self._pending[self._next] = future
        payload = orjson.dumps({**msg, "id": self._next})
        self._writer.write(_WORD.pack(len(payload)) + payload)
        return await future

    def close(self) -> None:
        self._task.cancel()
        self._writer.close()


async def _measure(call, calls: int, concurrency: int) -> tuple[list[float], float]:
    latencies: list[float] = []

    async def worker(count: int) -> None:
        for _ in range(count):
            start = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    await asyncio.gather(*(worker(calls // concurrency) for _ in range(concurrency)))
    return latencies, time.perf_counter() - start


async def _client(kind: str, path: str, calls: int) -> dict:
    if kind == "streams":
        reader, writer = await asyncio.open_unix_connection(path)
        client = _StreamsClient(reader, writer)
    else:
        client = RpcClient(await Channel.connect(path))
    arena = Arena(64 << 20, "bench-client")
    peer: list[ArenaMap] = []
    release: list[int] = []
    request = np.random.default_rng(0).random((1, 784), dtype=np.float32)

    async def small() -> None:
        await client.call({"op": "small", "n": 1})

    async def predict() -> None:
        packed = pack({"x": request}, arena)
        assert packed is not None
        descriptors, block = packed
        freed, release[:] = list(release), []
        reply = await client.call({"op": "predict", "tensors": descriptors, "release": freed})
        arena.free(block)
        outputs = unpack(reply["tensors"], peer[0].view)
        assert outputs["y"].shape == (10,)
        release.append(reply["block"])

    call = small
    if kind == "ipc-tensor":
        hello, fds = await client.call_with_fds(
            {"op": "hello", "capacity": arena.capacity}, fds=[arena.fd]
        )
        peer.append(ArenaMap(fds[0], hello["capacity"]))
        call = predict

    await _measure(call, min(calls, 2000), 1)  # warm-up
    serial, _ = await _measure(call, calls // 4, 1)
    server_before = (await client.call({"op": "cpu"}))["cpu"]
    client_before = _cpu_seconds()
    parallel, elapsed = await _measure(call, calls, 64)
    client_cpu = _cpu_seconds() - client_before
    server_cpu = (await client.call({"op": "cpu"}))["cpu"] - server_before
    client.close()
    done = len(parallel)
    return {
        "p50_c1_us": statistics.median(serial) * 1e6,
        "p99_c1_us": statistics.quantiles(serial, n=100)[98] * 1e6,
        "calls_per_s_c64": done / elapsed,
        "p50_c64_us": statistics.median(parallel) * 1e6,
        "client_cpu_us": client_cpu / done * 1e6,
        "server_cpu_us": server_cpu / done * 1e6,
    }


def _row(kind: str, calls: int, loop: str, pin: bool) -> dict:
    path = os.path.join(tempfile.mkdtemp(prefix="ipc-bench-"), "sock")
    server_kind = "streams" if kind == "streams" else "ipc"
    module = "benchmarks.ipc_roundtrip"
    process = subprocess.Popen(
        [sys.executable, "-m", module, "--serve", server_kind, path, "--loop", loop],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    try:
        if pin:
            os.sched_setaffinity(process.pid, {0})
        assert process.stdout is not None and process.stdout.readline().strip() == "ready"
        return _run(_client(kind, path, calls), loop)
    finally:
        process.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    parser.add_argument("--serve", nargs=2, metavar=("KIND", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        kind, path = args.serve
        _run(_serve_ipc(path) if kind == "ipc" else _serve_streams(path), args.loop)
        return
    pin = len(os.sched_getaffinity(0)) >= 2
    if pin:
        os.sched_setaffinity(0, {1})
    kinds = ("streams", "ipc", "ipc-tensor")
    rows = {kind: _row(kind, args.calls, args.loop, pin) for kind in kinds}
    base = rows["streams"]
    print(
        f"Python {sys.version.split()[0]}, {args.loop}, {args.calls} calls at c=64, "
        f"server on CPU 0 and client on CPU 1: {pin}\n"
    )
    print(
        "| transport | p50 c=1 µs | p99 c=1 µs | calls/s c=64 | vs streams | p50 c=64 µs "
        "| client CPU µs/call | server CPU µs/call |"
    )
    print("|---|---|---|---|---|---|---|---|")
    names = {"streams": "streams small (baseline)", "ipc": "ipc small", "ipc-tensor": "ipc tensor"}
    for kind, row in rows.items():
        ratio = row["calls_per_s_c64"] / base["calls_per_s_c64"]
        print(
            f"| {names[kind]} | {row['p50_c1_us']:.0f} | {row['p99_c1_us']:.0f} "
            f"| {row['calls_per_s_c64']:,.0f} | {ratio:.2f}x "
            f"| {row['p50_c64_us']:.0f} | {row['client_cpu_us']:.1f} | {row['server_cpu_us']:.1f} |"
        )


if __name__ == "__main__":
    main()
