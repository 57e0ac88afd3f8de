"""Returning the memory of a large request to the operating system.

Two allocators kept it, measured with a 300 MB gRPC ``Predict`` on a CPU host (RSS before ->
after the request, nothing referencing it any more):

* TensorFlow's oneDNN CPU allocator (the default on x86 Linux) serves tensors of 4 KiB and more
  from a BFC pool that grows in doubling regions and never shrinks: a 1 GiB region stayed
  mapped after that request (666 MB -> 1.6 GB RSS; ``strace`` showed
  ``BFCAllocator::Extend``). ``TF_ONEDNN_USE_SYSTEM_ALLOCATOR=1`` makes it use ``malloc``
  instead (666 MB -> 940 MB). The pool saved no measurable time on the MLP benchmark
  (``benchmarks/results/README.md``); the variable is set unless the environment already sets
  it (``0`` brings the pool back).
* glibc's ``malloc`` keeps freed chunks in its arenas: after freeing a large ``mmap``-ed block
  it raises its mmap and trim thresholds (up to 32/64 MiB), so the next large buffers land in
  the arenas and stay there when freed. ``malloc_trim(0)`` hands every free page back.
  It walks all arenas under their locks (tens of ms after a large request), so it runs on a
  thread of its own, only after a request that held at least ``LARGE_REQUEST_BYTES`` of
  request memory (what ``serving.request_limits`` charged it: body, parsed document, decoded
  tensors), and once no large request has ended for a moment — and once more a few seconds
  later, as a large response may still be on its way out.

With both, RSS went back to 666 MB after that request (tests/integration/test_memory_return.py
checks it for REST and gRPC). TF Serving does neither: its allocator keeps what the largest
request needed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

LARGE_REQUEST_BYTES = 32 * 1024 * 1024
_QUIET_SECONDS = 0.5  # after the last large request, before trimming
_SECOND_TRIM_SECONDS = 5.0  # once more: a huge response may take this long to encode and send


def configure_allocators(environ: dict[str, str] | None = None) -> None:
    """Before TensorFlow is imported: tensors from ``malloc``, not from a pool that never
    shrinks (see the module docstring)."""
    environ = os.environ if environ is None else environ
    environ.setdefault("TF_ONEDNN_USE_SYSTEM_ALLOCATOR", "1")


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None where the C library has none (musl, macOS)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        trim = libc.malloc_trim
    except (OSError, AttributeError, TypeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


class MemoryReturner:
    """``note(nbytes)`` after each request; a large one schedules ``malloc_trim``."""

    def __init__(self, threshold: int = LARGE_REQUEST_BYTES) -> None:
        self.threshold = threshold
        self.trims = 0  # completed trims (logs and tests)
        self._trim = _malloc_trim()
        self._noted = threading.Event()
        self._stopped = threading.Event()
        self._last_noted = 0.0
        self._thread: threading.Thread | None = None
        if self._trim is None:
            log.info("No malloc_trim in this C library: freed memory is returned as it allows")
            return
        self._thread = threading.Thread(target=self._run, name="memory-returner", daemon=True)
        self._thread.start()

    def note(self, nbytes: int) -> None:
        """Cheap: a comparison, and for a large request one timestamp and an Event.set."""
        if nbytes >= self.threshold and self._thread is not None:
            self._last_noted = time.monotonic()
            self._noted.set()

    def stop(self) -> None:
        self._stopped.set()
        self._noted.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        while True:
            self._noted.wait()
            self._noted.clear()
            for delay in (_QUIET_SECONDS, _SECOND_TRIM_SECONDS):
                # Wait until no large request was noted for ``delay`` seconds.
                while (left := self._last_noted + delay - time.monotonic()) > 0:
                    if self._stopped.wait(left):
                        return
                if self._stopped.is_set():
                    return
                self._trim_now()

    def _trim_now(self) -> None:
        started = time.perf_counter()
        assert self._trim is not None
        released = self._trim(0)
        self.trims += 1
        log.debug(
            "malloc_trim(0) in %.1f ms (%s)",
            (time.perf_counter() - started) * 1e3,
            "memory returned" if released else "nothing to return",
        )
