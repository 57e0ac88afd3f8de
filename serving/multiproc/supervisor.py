"""The parent of a multi-process server: starts, watches and stops its processes.

Order of start, as TF Serving opens its ports only once the models can answer: the model
process (it creates its socket when the initial loads are done) and, meanwhile, the front-end
processes, which import what they need and wait; once the socket appears each is given its
slot and reports on a pipe once it listens. While running, a front end that exits is replaced
(the others keep serving) by the spare front-end process kept waiting for that
(``--frontend_spare``), which needs only to bind and connect, and a new spare is started; the
model process is started again (front ends answer 503 / UNAVAILABLE and fail ``/readyz``
meanwhile, then reconnect); a process that keeps dying is started again after a growing
delay. SIGTERM or SIGINT drains the front ends (in-flight requests finish), then stops the
model process, and the server exits 0. Children die with the supervisor even when it
is SIGKILLed (``PR_SET_PDEATHSIG``), so nothing is left holding the ports or the model.

The supervisor imports neither TensorFlow nor the request path: it stays small and has
nothing that can crash it.
"""

from __future__ import annotations

import contextlib
import ctypes
import faulthandler
import logging
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from serving.multiproc.protocol import (
    LISTENING,
    MODEL_SOCKET_ENV,
    READY_FD_ENV,
    READY_FOR_SLOT,
    SLOT_FD_ENV,
    SPARE_NAME,
    STACK_DUMP_FD_ENV,
    STARTUP_FAILURE,
    frontend_name,
)
from serving.multiproc.stack_dumps import StackDumpRelay
from serving.options import ServerOptions
from serving.rest.listener import bind_sockets

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
FRONTEND_READY_SECONDS = 60.0
FRONTEND_STOP_SECONDS = 40.0  # past the front ends' 30 s drain
MODEL_STOP_SECONDS = 300.0  # a load in progress at SIGTERM finishes first
FATAL_START_CODES = (2, STARTUP_FAILURE)  # bad flags; a port it cannot listen on
RESTART_DELAYS = (0.0, 1.0, 2.0, 5.0, 10.0, 30.0)
STABLE_SECONDS = 60.0  # a process that ran this long starts its restart delays afresh


def _die_with_parent(parent: int) -> None:
    """Runs in the child before exec: SIGKILL when the supervisor dies, however it dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the supervisor died before prctl took effect
        os._exit(1)


MODEL_MODULE = "serving.multiproc.model_process"
FRONTEND_MODULE = "serving.multiproc.frontend"


@dataclass(eq=False)  # a slot is itself: two empty spares' slots are not one
class Child:
    """One slot (the model process, front end N or a spare) and the process filling it now."""

    role: str
    module: str
    process: subprocess.Popen | None = None
    started: float = 0.0
    failures: int = 0  # exits in a row (one after STABLE_SECONDS in the slot counts anew)
    next_start: float = 0.0
    # A front-end process's pipes: it reports on the one (imports done, then listening; its
    # exit closes it, which wakes the watch at once) and reads its slot number on the other.
    ready_fd: int | None = field(default=None, repr=False)
    slot_fd: int | None = field(default=None, repr=False)
    # A front-end process reported its imports done (so its SIGUSR1 handler is in place).
    warm: bool = False
    # The model process: its socket appeared, so its handlers (SIGUSR1) are in place. Kept
    # after it removes the socket at stop, so one that hangs while stopping still dumps.
    # A front end: it reported that it listens.
    listened: bool = False


class Supervisor:
    def __init__(self, options: ServerOptions, argv: Sequence[str], frontends: int) -> None:
        self.options = options
        self.argv = list(argv)
        self.runtime_dir = tempfile.mkdtemp(prefix="tfx-model-server-")
        self.socket_path = os.path.join(self.runtime_dir, "model.sock")
        self.model = Child("model", MODEL_MODULE)
        self.frontends = [
            Child(frontend_name(index), FRONTEND_MODULE) for index in range(frontends)
        ]
        spares = options.frontend_spare if frontends else 0
        self.spares = [Child(SPARE_NAME, FRONTEND_MODULE) for _ in range(spares)]
        self._stop = threading.Event()
        self._dumps = StackDumpRelay(self._name_of)

    # ------------------------------------------------------------------ run
    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_stop_signal)
        signal.signal(signal.SIGUSR1, self._on_dump_signal)
        log.info(
            "Starting a model process and %d front-end processes (--frontend_processes) "
            "with %d spare (--frontend_spare)",
            len(self.frontends),
            len(self.spares),
        )
        self._dumps.start()
        try:
            code = self._start_all()
            if code is None:
                self._watch()
                code = 0
            self._stop_all()
            return code if code is not None else 0
        finally:
            self._dumps.stop()
            shutil.rmtree(self.runtime_dir, ignore_errors=True)
            log.info("Server stopped")

    def _ports_free(self) -> bool:
        """Front ends share their ports with ``SO_REUSEPORT``, which would as gladly share
        them with another server of the same user: a port taken must fail the start, as it
        does for the single-process server. A bind without the option fails if anyone holds
        the port, with or without it."""
        for flag, port in (
            ("--rest_api_port", self.options.rest_api_port),
            ("--port", self.options.port),
        ):
            if not port:
                continue
            try:
                for sock in bind_sockets(self.options.host, port, 1):
                    sock.close()
            except OSError as exc:
                log.error("Cannot listen on %s:%d (%s): %s", self.options.host, port, flag, exc)
                return False
        return True

    def _start_all(self) -> int | None:
        """None once everything serves; else the exit code to end with."""
        if not self._ports_free():
            return 1
        self._spawn(self.model)
        # The front ends import while the model loads; they bind and connect once it serves.
        for frontend in (*self.frontends, *self.spares):
            self._spawn(frontend)
        while not os.path.exists(self.socket_path):
            if self._stop.wait(0.05):
                return 0
            code = self.model.process.poll()
            if code is not None:  # bad flags, a config it cannot read: as the single process
                log.error("The model process exited with %d before serving", code)
                return code
        for frontend in self.frontends:
            self._give_slot(frontend)
        deadline = time.monotonic() + FRONTEND_READY_SECONDS
        for frontend in self.frontends:
            self._wait_ready(frontend, deadline)
            if self._stop.is_set():
                return 0
            code = frontend.process.poll()
            if code in FATAL_START_CODES:  # a port taken, flags it cannot use: as one process
                log.error("%s could not start (exit code %d); stopping", frontend.role, code)
                return code
            # Any other early exit (e.g. killed) is restarted by the watch like a later one.
        return None

    def _wait_ready(self, child: Child, deadline: float) -> None:
        """Until the child reports it listens, exits (its pipe closes) or the deadline."""
        while time.monotonic() < deadline and not self._stop.is_set():
            readable, _, _ = select.select([child.ready_fd], [], [], 0.1)
            if readable:
                self._read_ready(child)
            if child.listened or child.ready_fd is None:
                return

    def _read_ready(self, child: Child) -> None:
        """What a front-end process reported: its imports done, then that it listens. When
        the pipe closed from its end, it exited: waits for its exit code (its files close
        just before it becomes a zombie), so the watch replaces it now."""
        reported = os.read(child.ready_fd, 8)
        if READY_FOR_SLOT in reported:
            child.warm = True
        if LISTENING in reported:
            child.listened = True
        if not reported:
            self._close_ready(child)
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.process.wait(5)

    def _watch(self) -> None:
        """Every 0.1 s, and at once when a front-end process reports or exits."""
        while not self._stop.is_set():
            reporting = [c for c in (*self.frontends, *self.spares) if c.ready_fd is not None]
            readable, _, _ = select.select([c.ready_fd for c in reporting], [], [], 0.1)
            for child in reporting:
                if child.ready_fd in readable:
                    self._read_ready(child)
            if self._stop.is_set():
                return
            now = time.monotonic()
            self._note_model_listening()
            for child in (self.model, *self.frontends, *self.spares):
                if child.process is not None and child.process.poll() is not None:
                    self._on_exit(child, now)
            for child in (self.model, *self.frontends, *self.spares):
                if child.process is None and now >= child.next_start:
                    self._start(child)

    def _start(self, child: Child) -> None:
        """Fills an empty slot: a front end's with the spare if one is left (else a process
        started for it), a spare's or the model process's with a process started for it."""
        if child in self.frontends:
            spare = self._take_spare()
            if spare is None:
                self._spawn(child)
            else:
                self._hand_over(spare, child)
            self._give_slot(child)
        else:
            self._spawn(child)

    def _take_spare(self) -> Child | None:
        """A live spare, one whose imports are done first; its slot is left to be filled
        again (no back-off: it did not fail)."""
        live = [s for s in self.spares if s.process is not None and s.process.poll() is None]
        return max(live, key=lambda s: s.warm, default=None)

    def _hand_over(self, spare: Child, slot: Child) -> None:
        slot.process, slot.ready_fd, slot.slot_fd, slot.warm, slot.listened = (
            spare.process,
            spare.ready_fd,
            spare.slot_fd,
            spare.warm,
            False,
        )
        spare.process, spare.ready_fd, spare.slot_fd, spare.warm = None, None, None, False
        spare.next_start = time.monotonic()
        log.info(
            "Spare front end (pid %d) takes the place of %s (its imports %s); starting a new spare",
            slot.process.pid,
            slot.role,
            "done" if slot.warm else "still running",
        )

    def _give_slot(self, slot: Child) -> None:
        """Writes the slot's number to the process filling it, which then binds, connects and
        reports it listens. A process that died meanwhile is noticed by the watch."""
        with contextlib.suppress(BrokenPipeError):
            os.write(slot.slot_fd, f"{self.frontends.index(slot)}\n".encode())
        os.close(slot.slot_fd)
        slot.slot_fd = None
        slot.started = time.monotonic()  # its back-off counts from here

    def _on_exit(self, child: Child, now: float) -> None:
        code = child.process.returncode
        self._close_pipes(child)
        # This exit counts into the slot's run of exits after short lives; the first of a
        # run is replaced at once (a crash, a kill), only one that keeps dying backs off.
        child.failures = 1 if now - child.started > STABLE_SECONDS else child.failures + 1
        delay = RESTART_DELAYS[min(child.failures - 1, len(RESTART_DELAYS) - 1)]
        log.error(
            "%s (pid %d) exited with %s; starting %s in %.0f s%s",
            child.role,
            child.process.pid,
            _describe(code),
            "a new one" if child in self.spares else "it again",
            delay,
            " (front ends answer 503 / UNAVAILABLE until it is back)"
            if child is self.model
            else "",
        )
        child.process = None
        child.next_start = now + delay

    # ------------------------------------------------------------------ processes
    def _note_model_listening(self) -> None:
        if not self.model.listened and self.model.process is not None:
            self.model.listened = os.path.exists(self.socket_path)

    def _spawn(self, child: Child) -> None:
        if child is self.model:
            # A killed model process leaves its socket behind: the path must appear anew
            # before this one counts as listening.
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.socket_path)
            child.listened = False
        dumps_read, dumps_end = os.pipe()
        env = {
            **os.environ,
            MODEL_SOCKET_ENV: self.socket_path,
            STACK_DUMP_FD_ENV: str(dumps_end),
        }
        pass_fds: tuple[int, ...] = (dumps_end,)
        if child is not self.model:
            child.ready_fd, ready_end = os.pipe()
            slot_end, child.slot_fd = os.pipe()
            child.warm = child.listened = False
            env[READY_FD_ENV] = str(ready_end)
            env[SLOT_FD_ENV] = str(slot_end)
            pass_fds += (ready_end, slot_end)
        parent = os.getpid()
        child.process = subprocess.Popen(
            [sys.executable, "-m", child.module, *self.argv],
            env=env,
            pass_fds=pass_fds,
            preexec_fn=lambda: _die_with_parent(parent),
            # Out of the supervisor's process group: a signal to the group (Ctrl-C, a
            # `timeout`) reaches the supervisor alone, which stops the children in order.
            start_new_session=True,
        )
        for fd in pass_fds:
            os.close(fd)
        self._dumps.watch(dumps_read, child.process.pid)
        child.started = time.monotonic()
        log.info("Started %s (pid %d)", child.role, child.process.pid)

    def _close_ready(self, child: Child) -> None:
        if child.ready_fd is not None:
            os.close(child.ready_fd)
            child.ready_fd = None

    def _close_pipes(self, child: Child) -> None:
        self._close_ready(child)
        if child.slot_fd is not None:
            os.close(child.slot_fd)
            child.slot_fd = None

    def _stop_all(self) -> None:
        """Front ends first (they finish what is in flight, which needs the model process),
        then the model process (which finishes a load in progress and unloads). A front-end
        process without a slot yet (a spare, or one started while the model process loaded)
        finds its slot pipe closed and exits 0: at once if it waits on it (SIGTERM too), else
        once its imports are done (a SIGTERM then would end it mid-import, unhandled)."""
        running = [f for f in (*self.frontends, *self.spares) if f.process is not None]
        for frontend in running:
            waiting = frontend.slot_fd is not None
            if waiting:
                os.close(frontend.slot_fd)
                frontend.slot_fd = None
            if frontend.warm or not waiting:
                _signal(frontend.process, signal.SIGTERM)
        for frontend in running:
            _wait(frontend, FRONTEND_STOP_SECONDS)
        if self.model.process is not None:
            _signal(self.model.process, signal.SIGTERM)
            _wait(self.model, MODEL_STOP_SECONDS)
        for child in (self.model, *self.frontends, *self.spares):
            self._close_pipes(child)

    def _on_stop_signal(self, signum: int, frame) -> None:
        if not self._stop.is_set():
            log.info("Received %s", signal.Signals(signum).name)
        self._stop.set()

    def _on_dump_signal(self, signum: int, frame) -> None:
        """``kill -USR1``: this process's stacks and every child's (each dumps into its pipe,
        which ``self._dumps`` relays whole). Only to children past their start: before its
        handler is installed, SIGUSR1 would end a Python process."""
        faulthandler.dump_traceback(all_threads=True)
        for child in (self.model, *self.frontends, *self.spares):
            if child.process is not None and self._started(child):
                _signal(child.process, signal.SIGUSR1)

    def _name_of(self, pid: int) -> str:
        """A child's role now, by pid: a spare that took a slot is named by the slot."""
        for child in (self.model, *self.frontends, *self.spares):
            if child.process is not None and child.process.pid == pid:
                return child.role
        return f"pid {pid}"  # exited and its slot refilled while its dump was relayed

    def _started(self, child: Child) -> bool:
        if child is self.model:
            self._note_model_listening()
            return child.listened
        return child.warm


def _signal(process: subprocess.Popen, sig: int) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(sig)


def _wait(child: Child, timeout: float) -> None:
    try:
        code = child.process.wait(timeout)
    except subprocess.TimeoutExpired:
        log.error("%s did not stop within %.0f s; killing it", child.role, timeout)
        child.process.kill()
        code = child.process.wait()
    if code != 0:
        log.warning("%s exited with %s", child.role, _describe(code))


def _describe(code: int | None) -> str:
    if code is not None and code < 0:
        return f"signal {signal.Signals(-code).name}"
    return f"code {code}"
