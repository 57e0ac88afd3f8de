"""Pushes the model snapshot to the front ends when what the core serves changes.

Every input of ``serving.multiproc.snapshot.build_snapshot`` changes only through a core
change (``ServerCore.add_change_listener``): AVAILABLE versions and the models still waiting
(version states), their signatures and coalescing figures (fixed per loaded version: a
version's SignatureDefs, its batching parameters and the batch thread pool are set when it
loads), labels and models (config changes) and the traffic splits. So the snapshot is rebuilt
on those events only, with no timer and no safety-net poll: front ends learn of a version as
soon as it is AVAILABLE, and an idle model process does no work for them. TF Serving's own
observers of servable states work the same way (``ServableStateMonitor`` on the manager's
event bus).

Changes happen on load, unload and config threads; each only marks the snapshot dirty and,
if it was clean, schedules one rebuild on the event loop, so a burst of changes (a swap:
LOADING, AVAILABLE, UNLOADING, END; a reload removing several models) costs one rebuild at the
loop's next iteration. A rebuild that equals the last snapshot pushes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

Snapshot = dict[str, Any]


class SnapshotPublisher:
    """``build()`` makes the snapshot (on the event loop), ``push(snapshot)`` sends it to every
    front end; ``changed()`` is the core's change listener, safe from any thread."""

    def __init__(self, build: Callable[[], Snapshot], push: Callable[[Snapshot], None]) -> None:
        self._build = build
        self._push = push
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        self._dirty = False
        self.snapshot: Snapshot | None = None  # the last one built: what a new front end gets

    def start(self) -> None:
        """Builds the first snapshot; from now on ``changed()`` schedules rebuilds on the
        running loop."""
        self._loop = asyncio.get_running_loop()  # first: a change during the build is seen
        self.snapshot = self._build()

    def stop(self) -> None:
        """A rebuild already scheduled does nothing; later changes schedule none."""
        self._loop = None

    def changed(self) -> None:
        """Something the snapshot shows may have changed. Called on the thread making the
        change (under a model manager's lock): it only schedules, never blocks or raises."""
        loop = self._loop
        if loop is None:
            return
        with self._lock:
            if self._dirty:
                return  # a rebuild is scheduled and has not started: it will see this change
            self._dirty = True
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: stopping
            loop.call_soon_threadsafe(self._rebuild)

    def _rebuild(self) -> None:
        with self._lock:
            self._dirty = False  # changes from here on schedule another rebuild
        if self._loop is None:
            return
        try:
            snapshot = self._build()
        except Exception:  # never let a bad moment stop publishing: the next change retries
            log.exception("Building the model snapshot failed")
            return
        if snapshot != self.snapshot:
            self.snapshot = snapshot
            self._push(snapshot)
