"""Stage marks for ``benchmarks.hop_stages``: loaded by every Python process of a server started
with this folder first on ``PYTHONPATH`` and ``HOP_TRACE_DIR`` set, and inert otherwise.

In a front end, the model process, or a one-process server (``--frontend_processes=0``), it
wraps the functions a predict passes through (``FRONTEND_STAGES`` in a front end,
``MODEL_STAGES`` elsewhere) so each call appends ``(CLOCK_MONOTONIC ns, stage)`` to a bounded
list: that clock is one for every process of the machine, so the marks of both processes of a
call can be put in one order. The supervisor, which serves no call, is left alone. ``SIGNAL``
writes the list to ``HOP_TRACE_DIR/<role>-<pid>.tsv``; a stage that could not be wrapped (a
function renamed or moved) is written there as ``missing`` so the driver fails instead of
timing half a path.
"""

from __future__ import annotations

import collections
import functools
import importlib
import inspect
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

DIR_ENV = "HOP_TRACE_DIR"
SIGNAL = signal.SIGRTMIN + 5
_MAX_MARKS = 2_000_000

# (module, attribute path, mark the return too); front ends never import TensorFlow, so
# their stages are listed apart from those of a process that runs models.
FRONTEND_STAGES = (
    ("serving.multiproc.remote", "RemoteDataplane.predict", True),
    ("serving.multiproc.coalesce", "Coalescer.add", False),
    ("serving.multiproc.coalesce", "Coalescer._flush", False),
    ("serving.multiproc.remote", "RemoteDataplane._send_calls", False),
    ("serving.ipc.channel", "Channel.send", False),
    ("serving.ipc.channel", "Channel._flush", True),
    ("serving.ipc.channel", "Channel._on_readable", False),
    ("serving.ipc.channel", "RpcClient._on_message", False),
)
MODEL_STAGES = (
    ("serving.ipc.channel", "Channel._on_readable", False),
    ("serving.ipc.channel", "RpcServer._on_message", False),
    ("serving.api.inference", "InferenceService.predict", True),
    ("serving.batching.servable", "BatchingServable.run_async", True),
    ("serving.batching.scheduler", "BatchQueue.schedule", True),
    ("serving.batching.scheduler", "BatchScheduler._wake_from_loop", False),
    ("serving.batching.scheduler", "BatchQueue.process", True),
    ("serving.servables.saved_model", "SavedModelServable.run", True),
    ("serving.batching.scheduler", "deliver", False),
    ("serving.batching.scheduler", "_resolve", False),
    ("serving.ipc.channel", "RpcServer._finished", False),
    ("serving.ipc.channel", "Channel.send", False),
    ("serving.ipc.channel", "Channel._flush", True),
)


def role(argv: list[str]) -> str | None:
    """Which part of the server this process is, from its command line (the last
    ``--frontend_processes=`` wins, as in the server's own parsing)."""
    if "serving.multiproc.frontend" in argv:
        return "frontend"
    if "serving.multiproc.model_process" in argv:
        return "model"
    flags = [arg for arg in argv if arg.startswith("--frontend_processes=")]
    if "serving" in argv and flags and flags[-1] == "--frontend_processes=0":
        return "server"
    return None


class Marks:
    """One process's marks, kept in memory (a deque's append is atomic, so the event-loop and
    batch threads mark without a lock) and written out only when asked, off the call path."""

    def __init__(self, who: str) -> None:
        self.who = who
        self.marks: collections.deque[tuple[int, str]] = collections.deque(maxlen=_MAX_MARKS)
        self.missing: list[str] = []

    def wrap(self, module_name: str, path: str, mark_return: bool) -> None:
        try:
            owner: Any = importlib.import_module(module_name)
            *parents, name = path.split(".")
            for parent in parents:
                owner = getattr(owner, parent)
            original = getattr(owner, name)
        except (ImportError, AttributeError):
            self.missing.append(f"{module_name}.{path}")
            return
        setattr(owner, name, self._marked(original, path, mark_return))

    def _marked(self, original: Callable, path: str, mark_return: bool) -> Callable:
        append, clock = self.marks.append, time.perf_counter_ns
        entered, returned = path, path + " returns"
        if inspect.iscoroutinefunction(original):

            @functools.wraps(original)
            async def marked_coroutine(*args: Any, **kwargs: Any) -> Any:
                append((clock(), entered))
                try:
                    return await original(*args, **kwargs)
                finally:
                    if mark_return:
                        append((clock(), returned))

            return marked_coroutine

        @functools.wraps(original)
        def marked(*args: Any, **kwargs: Any) -> Any:
            append((clock(), entered))
            try:
                return original(*args, **kwargs)
            finally:
                if mark_return:
                    append((clock(), returned))

        return marked

    def write(self, *_: Any) -> None:
        folder = os.environ[DIR_ENV]
        path = os.path.join(folder, f"{self.who}-{os.getpid()}.tsv")
        with open(path + ".part", "w") as out:
            for stage in self.missing:
                out.write(f"missing\t{stage}\n")
            for ns, stage in list(self.marks):
                out.write(f"{ns}\t{stage}\n")
        os.replace(path + ".part", path)


def _install() -> None:
    who = role(getattr(sys, "orig_argv", sys.argv))
    if who is None:
        return
    marks = Marks(who)
    for stage in FRONTEND_STAGES if who == "frontend" else MODEL_STAGES:
        marks.wrap(*stage)
    signal.signal(SIGNAL, marks.write)


if os.environ.get(DIR_ENV):
    _install()
