"""The event loop every front end runs on: uvloop where installed, else asyncio's own.

uvicorn[standard] brings uvloop on Linux. The REST and gRPC front ends share this one loop,
and uvloop's lower per-callback cost is measurable throughput for both.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Coroutine


def prepare() -> None:
    """Imports the loop ahead of ``run_event_loop``: a spare front-end process does all its
    imports before it is given a slot (``serving.multiproc.frontend``)."""
    if importlib.util.find_spec("uvloop") is not None:
        import uvloop  # noqa: F401


def run_event_loop(main: Coroutine[None, None, None]) -> None:
    if importlib.util.find_spec("uvloop") is not None:
        import uvloop

        uvloop.run(main)
    else:
        asyncio.run(main)
