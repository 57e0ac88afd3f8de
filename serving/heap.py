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

That thread must be stopped (``HeapSettler.stop``) before the versions are unloaded at
shutdown. Collecting an unloaded TF2 model runs native code with the GIL released (e.g. the ops
that destroy a Transform graph's lookup tables); if the interpreter is finalizing meanwhile, a
daemon thread that tries to take the GIL back is ended by ``pthread_exit``, whose forced unwind
crosses a C++ ``catch (...)`` in TensorFlow and aborts the process ("FATAL: exception not
rethrown", SIGABRT after "Server stopped": 3 of 15 stops of a model with a TFT vocabulary,
found in a core dump as this thread's exit).
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
        self._stopped = threading.Event()
        self._full = False
        self._thread = threading.Thread(target=self._run, name="heap-settler", daemon=True)
        self._thread.start()

    def on_state_change(self, model: str, record: VersionRecord) -> None:
        if record.state == State.END:
            self._full = True
        if record.state in (State.AVAILABLE, State.END):
            self._pending.set()  # several changes in a row settle once

    def stop(self, timeout: float = 120.0) -> None:
        """Finishes a settle in progress, then ends the thread; later changes settle nothing
        (the garbage of versions unloaded at shutdown is left to the process exit)."""
        self._stopped.set()
        self._pending.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("The heap settler did not finish within %.0f s", timeout)

    def _run(self) -> None:
        while True:
            self._pending.wait()
            # Let the rest of a swap (load, then unload) land first.
            if self._stopped.is_set() or self._stopped.wait(0.5):
                return
            self._pending.clear()
            # stop() sets _stopped before _pending: a stop whose _pending.set() the clear above
            # erased is seen here, else its set() comes after the clear and ends the next wait.
            if self._stopped.is_set():
                return
            full, self._full = self._full, False
            try:
                settle(full)
            except Exception:  # never let housekeeping take the server down
                log.exception("Settling the heap failed")
