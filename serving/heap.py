"""Keeps CPython's full garbage collections off the request path.

TensorFlow and a loaded model leave ~400k long-lived objects in the heap; every full (gen-2)
collection walks all of them, which stalls the event loop for ~140 ms on this project's 2-core
machines (measured in-process) — under steady load such passes recur and set the p99. Objects
that exist once the models are loaded are moved to the permanent generation (``gc.freeze``), so
routine collections only scan what requests allocate.

A version that unloads leaves its graph in the frozen set, where cyclic garbage is never
collected; so an unload unfreezes, collects once and freezes again (one pause per unload,
instead of one every few seconds). The work runs on its own thread because state changes are
reported under the model manager's lock.
"""

from __future__ import annotations

import gc
import logging
import threading
import time

from serving.core.model_manager import State, VersionRecord

log = logging.getLogger(__name__)


def settle(full: bool = False) -> None:
    """Collects the garbage among unfrozen objects and freezes the survivors; ``full`` first
    unfreezes everything, so garbage left in the frozen set (an unloaded graph) is found too."""
    started = time.perf_counter()
    if full:
        gc.unfreeze()
    gc.collect()
    gc.freeze()
    log.debug(
        "Heap settled (%s) in %.0f ms: %d objects frozen",
        "full" if full else "new objects",
        (time.perf_counter() - started) * 1e3,
        gc.get_freeze_count(),
    )


class HeapSettler:
    """``on_state_change`` hook: settles the heap after a version loads or unloads."""

    def __init__(self) -> None:
        self._pending = threading.Event()
        self._full = False
        self._thread = threading.Thread(target=self._run, name="heap-settler", daemon=True)
        self._thread.start()

    def on_state_change(self, model: str, record: VersionRecord) -> None:
        if record.state == State.END:
            self._full = True
        if record.state in (State.AVAILABLE, State.END):
            self._pending.set()  # several changes in a row settle once

    def _run(self) -> None:
        while True:
            self._pending.wait()
            time.sleep(0.5)  # let the rest of a swap (load, then unload) land first
            self._pending.clear()
            full, self._full = self._full, False
            try:
                settle(full)
            except Exception:  # never let housekeeping take the server down
                log.exception("Settling the heap failed")
