"""grpc.aio's poller thread runs as SCHED_BATCH once our gRPC servers start
(``serving.grpc_api.completion_poller``), and keeps its policy when the flag says so. Fails if
a grpcio upgrade renames or removes the thread, so the tuning cannot vanish unnoticed."""

from __future__ import annotations

import asyncio
import os
import sys

import grpc
import pytest

from serving.grpc_api.completion_poller import poller_threads
from serving.grpc_api.server import GrpcServer
from serving.options import ServerOptions

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="SCHED_BATCH is Linux's scheduling policy"
)


def _policies() -> list[int]:
    return [os.sched_getscheduler(thread.native_id) for thread in poller_threads()]


async def _start_and_read_policies(batch_poller: bool) -> list[int]:
    server = grpc.aio.server()
    server.add_insecure_port("127.0.0.1:0")
    # The poller is process-wide and outlives servers: put it back to the normal policy, so
    # what is read below is what this start did.
    for thread in poller_threads():
        os.sched_setscheduler(thread.native_id, os.SCHED_OTHER, os.sched_param(0))
    assert _policies() == [os.SCHED_OTHER]
    grpc_server = GrpcServer([server], batch_poller)
    await grpc_server.start()
    try:
        return _policies()
    finally:
        await grpc_server.stop(None)


def test_starting_grpc_servers_batch_schedules_the_poller():
    assert asyncio.run(_start_and_read_policies(True)) == [os.SCHED_BATCH]


def test_the_flag_off_leaves_the_poller_normal():
    assert asyncio.run(_start_and_read_policies(False)) == [os.SCHED_OTHER]


def test_the_flag_is_on_by_default():
    assert ServerOptions().grpc_poller_batch_scheduling is True
