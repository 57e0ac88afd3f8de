"""Relays the children's SIGUSR1 stack dumps to the supervisor's stderr, one process at a time.

``kill -USR1`` on the supervisor makes every child dump every thread's stack at the same
moment. ``faulthandler`` writes a dump in many small writes from inside its signal handler, so
children sharing the supervisor's stderr interleaved theirs mid-line, and neither a person nor
a test could read one process's stack back. Each child dumps into its own pipe instead; this
relay reads them all on one thread, keeps each child's bytes apart, and writes whole lines,
prefixed with the child's current role (``[frontend-1]``) like its log lines, once that
child has gone quiet. A dump is read while it is written, so a child never blocks in its
signal handler on a full pipe, and a supervisor whose main thread hangs still relays.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO

# A child's dump has ended when its pipe stays quiet this long; a pause inside one only splits
# it into two blocks of whole lines.
QUIET_SECONDS = 0.1


@dataclass(eq=False, slots=True)
class _Source:
    """One child's pipe: whose it is and what it wrote that is not out yet."""

    pid: int
    pending: bytearray = field(default_factory=bytearray)
    last_read: float = 0.0


class StackDumpRelay:
    def __init__(self, name_of: Callable[[int], str], out: TextIO | None = None) -> None:
        """``name_of(pid)`` names a child when its lines are written: a spare that took a
        slot since its dump began is named by its slot."""
        self._name_of = name_of
        self._out = out if out is not None else sys.stderr
        self._selector = selectors.DefaultSelector()
        self._wake_read, self._wake_write = os.pipe()
        self._selector.register(self._wake_read, selectors.EVENT_READ)
        self._lock = threading.Lock()
        self._arriving: list[tuple[int, int]] = []
        self._sources: dict[int, _Source] = {}  # by read end
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="stack-dump-relay", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def watch(self, read_fd: int, pid: int) -> None:
        """Relays what arrives on ``read_fd`` (the read end of the pipe whose write end child
        ``pid`` dumps into) until the pipe closes, when the child exited; the relay owns and
        closes it."""
        with self._lock:
            self._arriving.append((read_fd, pid))
        os.write(self._wake_write, b"w")

    def stop(self, timeout: float = 2.0) -> None:
        """Writes what every child dumped so far, then ends the relay."""
        if self._stopping:
            return
        self._stopping = True
        if self._thread.is_alive():
            os.write(self._wake_write, b"s")
            self._thread.join(timeout)
        if not self._thread.is_alive():  # else it may still select on them: left to exit
            os.close(self._wake_read)
            os.close(self._wake_write)

    # ------------------------------------------------------------------ the relay's thread
    def _run(self) -> None:
        try:
            while not self._stopping:
                # Woken to write whole lines once their child is quiet; a partial line waits
                # for the rest of it, or for the pipe to close.
                lines_waiting = any(b"\n" in source.pending for source in self._sources.values())
                events = self._selector.select(QUIET_SECONDS if lines_waiting else None)
                for key, _ in events:
                    if key.fd == self._wake_read:
                        os.read(self._wake_read, 512)
                        self._add_arrivals()
                    else:
                        self._read(key.fd)
                self._write_quiet(time.monotonic())
            self._drain()
        finally:
            for fd in list(self._sources):
                self._close(fd)
            self._selector.close()

    def _add_arrivals(self) -> None:
        with self._lock:
            arriving, self._arriving = self._arriving, []
        for fd, pid in arriving:
            self._sources[fd] = _Source(pid)
            self._selector.register(fd, selectors.EVENT_READ)

    def _read(self, fd: int) -> None:
        try:
            data = os.read(fd, 65536)
        except OSError:
            data = b""
        source = self._sources[fd]
        if data:
            source.pending += data
            source.last_read = time.monotonic()
            return
        self._write(source, final=True)  # the child exited: a last line without its newline too
        self._close(fd)

    def _write_quiet(self, now: float) -> None:
        for source in self._sources.values():
            if source.pending and now - source.last_read >= QUIET_SECONDS:
                self._write(source, final=False)

    def _drain(self) -> None:
        """At stop: what the children wrote and the relay has not read yet, then the rest."""
        self._add_arrivals()
        for key, _ in self._selector.select(0):
            if key.fd != self._wake_read:
                with contextlib.suppress(OSError):
                    self._sources[key.fd].pending += os.read(key.fd, 1 << 20)
        for source in self._sources.values():
            self._write(source, final=True)

    def _write(self, source: _Source, final: bool) -> None:
        """The whole lines waiting from one child (the partial last one too when ``final``),
        each prefixed with its name, in one write."""
        data = source.pending
        end = len(data) if final else data.rfind(b"\n") + 1
        if end == 0:
            return
        lines = data[:end].decode("utf-8", "replace").splitlines()
        del data[:end]
        prefix = f"[{self._name_of(source.pid)}] "
        with contextlib.suppress(OSError, ValueError):  # stderr closed: nowhere to write
            self._out.write("".join(f"{prefix}{line}\n" for line in lines))
            self._out.flush()

    def _close(self, fd: int) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(fd)
        os.close(fd)
        del self._sources[fd]
