"""The control channel: framing under concurrency and backpressure, fds attributed to their
frame, RPC calls matched by id, peer death failing every pending call, and a real second
process sharing an arena whose fd it received over the socket."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import uvloop

from serving.errors import Code, ServingError
from serving.ipc.arena import Arena, ArenaMap
from serving.ipc.channel import (
    Channel,
    ChannelClosed,
    RemoteError,
    RpcClient,
    serve,
    start_server,
)
from serving.ipc.tensors import pack, unpack

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request):
    """Run a coroutine on asyncio's loop and on uvloop (the server's loop when installed)."""

    def runner(coroutine):
        if request.param == "uvloop":
            return uvloop.run(asyncio.wait_for(coroutine, 60))
        return asyncio.run(asyncio.wait_for(coroutine, 60))

    return runner


def _pair() -> tuple[Channel, Channel]:
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    return Channel(left), Channel(right)


def test_concurrent_calls_are_answered_out_of_order_and_matched_by_id(run):
    async def main():
        client_end, server_end = _pair()
        gates = {i: asyncio.Event() for i in range(50)}
        arrived = asyncio.Event()
        seen = []

        async def handler(msg, fds):
            seen.append(msg["n"])
            if len(seen) == len(gates):
                arrived.set()
            await gates[msg["n"]].wait()
            return {"n": msg["n"], "pad": "x" * (msg["n"] * 3000)}  # some replies > 64 KiB

        serve(server_end, handler)
        client = RpcClient(client_end)
        calls = [asyncio.ensure_future(client.call({"n": i})) for i in range(50)]
        await arrived.wait()
        for i in reversed(range(50)):  # answer in the opposite order
            gates[i].set()
        replies = await asyncio.gather(*calls)
        assert [reply["n"] for reply in replies] == list(range(50))
        assert all(len(reply["pad"]) == reply["n"] * 3000 for reply in replies)
        client.close()

    run(main())


def test_many_senders_interleave_whole_frames_through_a_full_socket_buffer(run):
    async def main():
        sender, receiver = _pair()
        sender._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        blob = "y" * 200_000

        async def producer(k):
            for i in range(40):
                sender.send({"k": k, "i": i, "blob": blob if i % 7 == 0 else ""})
                if i % 10 == 0:
                    await asyncio.sleep(0)

        await asyncio.gather(*(producer(k) for k in range(8)))
        assert sender.write_buffer_size > 1_000_000  # nothing read yet: the kernel is full
        drained = asyncio.ensure_future(sender.drain())
        last = {k: -1 for k in range(8)}
        for _ in range(8 * 40):
            msg, fds = await receiver.recv()
            assert fds == [] and msg["i"] == last[msg["k"]] + 1
            assert msg["blob"] == (blob if msg["i"] % 7 == 0 else "")
            last[msg["k"]] = msg["i"]
        await drained
        assert sender.write_buffer_size == 0
        sender.close()
        with pytest.raises(ChannelClosed, match="peer closed"):
            await receiver.recv()

    run(main())


def test_fds_arrive_with_the_frame_that_carried_them(run):
    async def main():
        sender, receiver = _pair()
        for i in range(60):
            if i % 6 == 0:
                fd = os.memfd_create(f"marker{i}")
                os.write(fd, str(i).encode())
                sender.send({"i": i}, fds=[fd])
                os.close(fd)  # the channel holds its own dup until it is sent
            else:
                sender.send({"i": i, "pad": "z" * 50_000})
        for i in range(60):
            msg, fds = await receiver.recv()
            assert msg["i"] == i
            if i % 6 == 0:
                assert len(fds) == 1
                assert os.pread(fds[0], 16, 0) == str(i).encode()
                os.close(fds[0])
            else:
                assert fds == []
        sender.close()
        receiver.close()

    run(main())


def test_peer_death_fails_every_pending_call_with_channel_closed(run, tmp_path):
    """A real server process that takes calls and never answers is SIGKILLed."""
    path = str(tmp_path / "sock")
    child = textwrap.dedent(
        f"""
        import asyncio
        from serving.ipc.channel import Channel, serve

        async def main():
            channel = await Channel.connect({path!r})
            received = 0
            def handler(msg, fds):
                nonlocal received
                received += 1
                server.push({{"received": received}})
                return asyncio.get_running_loop().create_future()  # never answered
            server = serve(channel, handler)
            await server

        asyncio.run(main())
        """
    )

    async def main():
        accepted: asyncio.Future = asyncio.get_running_loop().create_future()
        listener = await start_server(path, accepted.set_result)
        process = subprocess.Popen([sys.executable, "-c", child], cwd=ROOT)
        try:
            channel = await accepted
            counts: asyncio.Queue = asyncio.Queue()
            client = RpcClient(channel, on_push=lambda msg: counts.put_nowait(msg["received"]))
            calls = [asyncio.ensure_future(client.call({"n": i})) for i in range(5)]
            while await counts.get() < 5:  # all five are in the server's hands
                pass
            assert not any(call.done() for call in calls)
            process.send_signal(signal.SIGKILL)
            results = await asyncio.gather(*calls, return_exceptions=True)
            assert all(isinstance(result, ChannelClosed) for result in results), results
            with pytest.raises(ChannelClosed):
                await client.call({"n": 99})
        finally:
            process.kill()
            process.wait(timeout=30)
            listener.close()

    run(main())


def test_handler_errors_keep_their_code_timeouts_and_late_replies_are_harmless(run):
    async def main():
        client_end, server_end = _pair()
        release = asyncio.Event()
        notes = []

        async def handler(msg, fds):
            if msg["op"] == "missing":
                raise ServingError(Code.NOT_FOUND, "no model 'm'")
            if msg["op"] == "slow":
                await release.wait()
                return {"late": True}
            if msg["op"] == "note":
                notes.append(msg["x"])
                return None
            return {"ok": msg["op"]}

        serve(server_end, handler)
        client = RpcClient(client_end)
        with pytest.raises(RemoteError) as caught:
            await client.call({"op": "missing"})
        assert caught.value.code == Code.NOT_FOUND and caught.value.message == "no model 'm'"
        with pytest.raises(asyncio.TimeoutError):
            await client.call({"op": "slow"}, timeout=0.05)
        release.set()  # the late reply arrives for an id nobody waits on
        client.notify({"op": "note", "x": 7})
        assert (await client.call({"op": "fine"}))["ok"] == "fine"
        assert notes == [7]
        client.close()

    run(main())


def test_on_settled_runs_once_per_call_when_answered_cancelled_or_cut_off(run):
    """The hook a caller frees shared memory in: it must see the reply of a call whose future
    was cancelled (the peer may read the request until it answers), and run on close."""

    async def main():
        client_end, server_end = _pair()
        gates = {name: asyncio.Event() for name in ("cancelled", "never")}

        async def handler(msg, fds):
            if msg["op"] in gates:
                await gates[msg["op"]].wait()
            return {"op": msg["op"]}

        serve(server_end, handler)
        client = RpcClient(client_end)
        settled: list[tuple[str, bool, str | None]] = []

        def hook(name):
            def on_settled(future, reply):
                cancelled = future is not None and future.cancelled()
                settled.append((name, cancelled, None if reply is None else reply["op"]))

            return on_settled

        answered = client.start_call({"op": "answered"}, hook("answered"))
        assert (await answered)[0]["op"] == "answered"
        assert settled == [("answered", False, "answered")]

        cancelled = client.start_call({"op": "cancelled"}, hook("cancelled"))
        cancelled.cancel()
        await asyncio.sleep(0)
        assert len(settled) == 1  # the peer has not answered: it may still read the request
        gates["cancelled"].set()
        while len(settled) < 2:
            await asyncio.sleep(0.01)
        assert settled[1] == ("cancelled", True, "cancelled")

        never = client.start_call({"op": "never"}, hook("never"))
        client.close()
        with pytest.raises(ChannelClosed):
            await never
        assert settled[2] == ("never", False, None)
        assert len(settled) == 3

    run(main())


def test_garbage_on_the_wire_closes_the_channel_with_a_clear_reason(run):
    async def main():
        raw, end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        channel = Channel(end)
        raw.sendall(b"\x05\x00\x00\x00nope!")
        with pytest.raises(ChannelClosed, match="not JSON"):
            await channel.recv()
        raw.close()

    run(main())


_PEER = textwrap.dedent(
    """
    import asyncio, sys
    import numpy as np
    from serving.ipc.arena import Arena, ArenaMap
    from serving.ipc.channel import Channel, RpcClient
    from serving.ipc.tensors import pack, unpack

    async def main():
        client = RpcClient(await Channel.connect(sys.argv[1]))
        hello, fds = await client.call_with_fds({"op": "hello"})
        peer = ArenaMap(fds[0], hello["capacity"])
        arrays = unpack(hello["tensors"], peer.view)
        arrays["x"] *= 2  # in place: the parent sees it in its own arena
        own = Arena(1 << 20, "child")
        descriptors, _ = pack(
            {"sum": np.array(arrays["x"].sum()), "echo": arrays["s"]}, own
        )
        reply = await client.call(
            {"op": "answer", "capacity": own.capacity, "tensors": descriptors}, fds=[own.fd]
        )
        assert reply["checked"] is True
        client.close()

    asyncio.run(main())
    """
)


def test_a_second_process_shares_arenas_whose_fds_crossed_the_socket(run, tmp_path):
    path = str(tmp_path / "sock")

    async def main():
        arena = Arena(1 << 20, "parent")
        x = np.arange(10, dtype=np.float32)
        strings = np.array([b"a", "\u00fc", b""], dtype=object)
        descriptors, block = pack({"x": x, "s": strings}, arena)
        done: asyncio.Future = asyncio.get_running_loop().create_future()

        def handler(msg, fds):
            if msg["op"] == "hello":
                return {"capacity": arena.capacity, "tensors": descriptors}, [arena.fd]
            child_arena = ArenaMap(fds[0], msg["capacity"])
            answer = unpack(msg["tensors"], child_arena.view)
            done.set_result((answer["sum"].item(), answer["echo"].tolist()))
            return {"checked": True}

        listener = await start_server(path, lambda channel: serve(channel, handler))
        process = subprocess.Popen([sys.executable, "-c", _PEER, path], cwd=ROOT)
        try:
            total, echo = await done
            assert total == 2 * x.sum()
            assert echo == [b"a", "\u00fc".encode(), b""]
            np.testing.assert_array_equal(unpack(descriptors, arena.view)["x"], 2 * x)
            assert await asyncio.get_running_loop().run_in_executor(None, process.wait) == 0
        finally:
            process.kill()
            listener.close()
        arena.free(block)
        arena.close()

    run(main())
