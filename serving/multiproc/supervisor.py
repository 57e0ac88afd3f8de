"""The parent of a multi-process server: starts, watches and stops its processes.

Order of start, as TF Serving opens its ports only once the models can answer: the model
process first (it creates its socket when the initial loads are done), then the front ends,
each reporting on a pipe once it listens. While running, a front end that exits is started
again (the others keep serving) and so is the model process (front ends answer 503 /
UNAVAILABLE and fail ``/readyz`` meanwhile, then reconnect), with a growing delay for a process
that keeps dying. SIGTERM or SIGINT drains the front ends (in-flight requests finish), then
stops the model process, and the server exits 0. Children die with the supervisor even when it
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
    FRONTEND_ENV,
    MODEL_SOCKET_ENV,
    READY_FD_ENV,
    STARTUP_FAILURE,
)
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


@dataclass
class Child:
    """One slot (the model process or front end N) and the process filling it now."""

    role: str
    module: str
    env: dict[str, str]
    process: subprocess.Popen | None = None
    started: float = 0.0
    failures: int = 0
    next_start: float = 0.0
    ready_fd: int | None = field(default=None, repr=False)
    # The model process: its socket appeared, so its handlers (SIGUSR1) are in place. Kept
    # after it removes the socket at stop, so one that hangs while stopping still dumps.
    listened: bool = False


class Supervisor:
    def __init__(self, options: ServerOptions, argv: Sequence[str], frontends: int) -> None:
        self.options = options
        self.argv = list(argv)
        self.runtime_dir = tempfile.mkdtemp(prefix="tfx-model-server-")
        self.socket_path = os.path.join(self.runtime_dir, "model.sock")
        self.model = Child("model", "serving.multiproc.model_process", {})
        self.frontends = [
            Child(f"frontend-{index}", "serving.multiproc.frontend", {FRONTEND_ENV: str(index)})
            for index in range(frontends)
        ]
        self._stop = threading.Event()

    # ------------------------------------------------------------------ run
    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_stop_signal)
        signal.signal(signal.SIGUSR1, self._on_dump_signal)
        log.info(
            "Starting a model process and %d front-end processes (--frontend_processes)",
            len(self.frontends),
        )
        try:
            code = self._start_all()
            if code is None:
                self._watch()
                code = 0
            self._stop_all()
            return code if code is not None else 0
        finally:
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
        while not os.path.exists(self.socket_path):
            if self._stop.wait(0.05):
                return 0
            code = self.model.process.poll()
            if code is not None:  # bad flags, a config it cannot read: as the single process
                log.error("The model process exited with %d before serving", code)
                return code
        for frontend in self.frontends:
            self._spawn(frontend)
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
                listening = os.read(child.ready_fd, 1) == b"1"  # b"": it exited first
                self._close_ready(child)
                if not listening:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        child.process.wait(5)  # for its exit code
                return

    def _watch(self) -> None:
        while not self._stop.wait(0.1):
            now = time.monotonic()
            self._note_model_listening()
            for child in self.frontends:  # a restarted front end reports it listens
                if child.ready_fd is not None and select.select([child.ready_fd], [], [], 0)[0]:
                    os.read(child.ready_fd, 1)
                    self._close_ready(child)
            for child in (self.model, *self.frontends):
                if child.process is not None and child.process.poll() is not None:
                    self._on_exit(child, now)
                if child.process is None and now >= child.next_start:
                    self._spawn(child)

    def _on_exit(self, child: Child, now: float) -> None:
        code = child.process.returncode
        self._close_ready(child)
        child.failures = 0 if now - child.started > STABLE_SECONDS else child.failures + 1
        delay = RESTART_DELAYS[min(child.failures, len(RESTART_DELAYS) - 1)]
        log.error(
            "%s (pid %d) exited with %s; starting it again in %.0f s%s",
            child.role,
            child.process.pid,
            _describe(code),
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
        env = {**os.environ, **child.env, MODEL_SOCKET_ENV: self.socket_path}
        pass_fds: tuple[int, ...] = ()
        if child is not self.model:
            read_end, write_end = os.pipe()
            child.ready_fd = read_end
            env[READY_FD_ENV] = str(write_end)
            pass_fds = (write_end,)
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
        child.started = time.monotonic()
        log.info("Started %s (pid %d)", child.role, child.process.pid)

    def _close_ready(self, child: Child) -> None:
        if child.ready_fd is not None:
            os.close(child.ready_fd)
            child.ready_fd = None

    def _stop_all(self) -> None:
        """Front ends first (they finish what is in flight, which needs the model process),
        then the model process (which finishes a load in progress and unloads)."""
        running = [f for f in self.frontends if f.process is not None]
        for frontend in running:
            _signal(frontend.process, signal.SIGTERM)
        for frontend in running:
            _wait(frontend, FRONTEND_STOP_SECONDS)
        if self.model.process is not None:
            _signal(self.model.process, signal.SIGTERM)
            _wait(self.model, MODEL_STOP_SECONDS)
        for child in (self.model, *self.frontends):
            self._close_ready(child)

    def _on_stop_signal(self, signum: int, frame) -> None:
        if not self._stop.is_set():
            log.info("Received %s", signal.Signals(signum).name)
        self._stop.set()

    def _on_dump_signal(self, signum: int, frame) -> None:
        """``kill -USR1``: this process's stacks and every child's (each dumps its own). Only
        to children past their start: before its handler is installed, SIGUSR1 would end a
        Python process."""
        faulthandler.dump_traceback(all_threads=True)
        for child in (self.model, *self.frontends):
            if child.process is not None and self._started(child):
                _signal(child.process, signal.SIGUSR1)

    def _started(self, child: Child) -> bool:
        if child is self.model:
            self._note_model_listening()
            return child.listened
        return child.ready_fd is None


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
