"""grpc.aio's completion-queue poller thread, scheduled so its wake-ups do not preempt the loop.

``grpc.aio`` does not read sockets on the event loop: one thread per process (started with the
first ``grpc.aio`` object, named after its target ``_poll_wrapper``) blocks in gRPC core's
``grpc_completion_queue_next`` and, for each event (a call arrived, a message was read, a reply
was sent), queues it and writes a byte to a socket the loop watches. A unary call makes about
three such events. When the CPU the poller wakes on is busy with the event loop -- one core, or
more busy processes than cores -- the kernel's wake-up preemption stops the loop for every
event: measured with two front ends sharing two cores with the load generator (the MLP, h2load
c=64), 1.9-3.1 involuntary switches of each front end's loop thread per call, and its poller
woke 1.8-3.2 times per call, against 1.1 with a core of its own.

As ``SCHED_BATCH`` (Linux's policy for threads that need no wake-up latency; same CPU share as
normal threads, no priority or privilege change) the poller runs once the loop blocks or at the
next tick instead of interrupting it, collects the events that arrived meanwhile, and the loop
handles them in one pass. A/B on the 2-core VM (benchmarks/results/frontends/poller-ab.txt):
one core, c=32: 2,456-2,655 -> 3,424-3,755 req/s, the no-op grpc.aio ceiling 4,171-4,198 ->
5,588-5,963; two front ends sharing two cores with the load generator: ~2.5 -> ~1 involuntary
switch per call, +8-10 % req/s. One call at a time on an idle core it is no slower (mean 0.56 ->
0.53 ms): a thread waking on an idle CPU runs at once whatever its policy.
A CPU-bound neighbour on the same core may delay an event by up to its time slice; that is
what ``--grpc_poller_batch_scheduling=false`` gives back.

TF Serving's C++ server has no such thread: it polls completion queues from its RPC threads.
"""

from __future__ import annotations

import logging
import os
import threading

log = logging.getLogger(__name__)

# Python names an unnamed thread "Thread-N (<target's __name__>)"; grpc's poller target is
# PollerCompletionQueue._poll_wrapper (grpc/_cython/_cygrpc/aio/completion_queue.pyx.pxi).
POLLER_TARGET = "_poll_wrapper"


def poller_threads() -> list[threading.Thread]:
    """grpc.aio's poller threads in this process (one once any grpc.aio object exists)."""
    suffix = f" ({POLLER_TARGET})"
    return [t for t in threading.enumerate() if t.name.endswith(suffix) and t.native_id]


def batch_schedule_poller() -> None:
    """Puts grpc.aio's poller thread(s) under ``SCHED_BATCH``. Where the policy or the thread
    does not exist the poller keeps the normal policy, which costs throughput, not correctness."""
    policy = getattr(os, "SCHED_BATCH", None)
    if policy is None:
        return
    threads = poller_threads()
    if not threads:
        log.info(
            "grpc.aio's completion-queue poller thread (%s) was not found in this grpcio: "
            "it keeps the normal scheduling policy",
            POLLER_TARGET,
        )
    for thread in threads:
        try:
            os.sched_setscheduler(thread.native_id, policy, os.sched_param(0))
        except OSError as exc:  # e.g. a seccomp profile that forbids it
            log.info("Could not make grpc.aio's poller thread SCHED_BATCH: %s", exc)
