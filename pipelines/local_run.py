"""Front end of a watched pipeline run: progress on the terminal, full logs in a file.

The pipeline runs in a worker process (``python -m pipelines.serving_demo run --events_fd N``,
see :mod:`pipelines.run_events`) whose stdout and stderr, i.e. everything TFX, Beam, Keras and
TensorFlow's C++ runtime print, go to ``<workdir>/logs/pipeline.log``; the terminal shows the
:class:`~pipelines.progress.ProgressDisplay` driven by the worker's node events, and, with
``verbose``, the log lines as well (minus :func:`pipelines.quiet.is_noise` lines). When a step
fails, its error and the tail of the log are printed.

This module imports neither TFX nor TensorFlow, so the display is up at once and the worker
pays the import (~25 s) only once.
"""

from __future__ import annotations

import dataclasses
import json
import os
import selectors
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from pipelines import quiet
from pipelines.progress import DONE, FAILED, RUNNING, SKIPPED, ProgressDisplay, Step

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOG_TAIL_LINES = 20
_MLMD_STATES = {"COMPLETE": DONE, "CACHED": DONE, "FAILED": FAILED, "CANCELED": FAILED}


@dataclasses.dataclass
class RunOutcome:
    """How a watched run ended; ``result`` is the worker's final report (MLMD states, push)."""

    returncode: int
    steps: list[Step]
    log_path: str
    seconds: float
    failed_step: str | None = None
    error: str | None = None
    result: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.error is None


def demo_pipeline_command(
    workdir: str,
    train_steps: int,
    *,
    feedback_examples: str | None = None,
    data_root: str | None = None,
    extra_args: Sequence[str] = (),
) -> list[str]:
    """The worker command for the demo pipeline (``--events_fd`` is added by :func:`watch`)."""
    command = [
        sys.executable,
        "-m",
        "pipelines.serving_demo",
        "run",
        "--workdir",
        os.path.abspath(workdir),
        "--train_steps",
        str(train_steps),
    ]
    if feedback_examples:
        command += ["--feedback_examples", os.path.abspath(feedback_examples)]
    if data_root:
        command += ["--data_root", os.path.abspath(data_root)]
    return command + list(extra_args)


def pipeline_log_path(workdir: str) -> str:
    return os.path.join(os.path.abspath(workdir), "logs", "pipeline.log")


class _LineReader:
    """Splits a non-blocking pipe's chunks into lines."""

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, chunk: bytes) -> list[str]:
        data = self._pending + chunk
        *lines, self._pending = data.split(b"\n")
        return [line.decode("utf-8", "replace") for line in lines]

    def rest(self) -> list[str]:
        rest, self._pending = self._pending, b""
        return [rest.decode("utf-8", "replace")] if rest else []


class _Watcher:
    def __init__(self, display: ProgressDisplay, log: TextIO, echo: TextIO | None) -> None:
        self.display = display
        self.log = log
        self.echo = echo
        self.failed_step: str | None = None
        self.error: str | None = None
        self.result: dict[str, Any] = {}

    def on_output(self, line: str) -> None:
        self.log.write(line + "\n")
        if self.echo is not None and not quiet.is_noise(line):
            self.echo.write(line + "\n")
            self.echo.flush()

    def on_event(self, line: str) -> None:
        try:
            event = json.loads(line)
        except ValueError:
            self.on_output(f"[unreadable progress event] {line}")
            return
        kind, node = event.get("event"), event.get("node") or ""
        if kind == "nodes":
            self.display.set_steps(event["nodes"])
            self.display.set_status("running")
        elif kind == "running":
            self.display.update(node, RUNNING)
        elif kind == "finished":
            self.display.update(node, DONE)
        elif kind == "skipped":
            self.display.update(node, SKIPPED)
        elif kind == "detail":
            state = next((s.state for s in self.display.steps if s.name == node), RUNNING)
            self.display.update(node, state, detail=event.get("text", ""))
        elif kind == "failed":
            self.failed_step, self.error = node or None, event.get("error", "")
            if node:
                self.display.update(node, FAILED)
        elif kind == "result":
            self.result = event
            for step in event.get("steps", []):
                state = _MLMD_STATES.get(step["state"])
                if state is not None:
                    self.display.update(step["node"], state)


def watch(
    command: Sequence[str],
    *,
    log_path: str,
    title: str,
    verbose: bool = False,
    stream: TextIO | None = None,
    live: bool | None = None,
    tick_seconds: float = 0.25,
    clock: Callable[[], float] = time.monotonic,
) -> RunOutcome:
    """Runs ``command`` (plus ``--events_fd N``) and shows its progress until it exits."""
    stream = stream or sys.stdout
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    # Interleaving log lines with a redrawn block would garble both: verbose prints changes.
    display = ProgressDisplay(stream, title, live=False if verbose else live, clock=clock)
    display.set_status("importing TFX")  # what the worker does until it reports its nodes
    started = clock()
    read_events, write_events = os.pipe()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open(log_path, "w", encoding="utf-8") as log:
        watcher = _Watcher(display, log, stream if verbose else None)
        try:
            process = subprocess.Popen(
                [*command, "--events_fd", str(write_events)],
                cwd=REPO,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                pass_fds=(write_events,),
            )
        finally:
            os.close(write_events)
        try:
            _pump(process, read_events, watcher, tick_seconds)
        except KeyboardInterrupt:
            # Ctrl-C reached the worker too (same process group); let it stop, then report.
            watcher.error = "interrupted"
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
        finally:
            os.close(read_events)
        returncode = process.wait()
    outcome = RunOutcome(
        returncode=returncode,
        steps=display.steps,
        log_path=log_path,
        seconds=clock() - started,
        failed_step=watcher.failed_step,
        error=watcher.error,
        result=watcher.result,
    )
    if returncode != 0 and outcome.error is None:
        how = f"signal {-returncode}" if returncode < 0 else f"exit code {returncode}"
        outcome.error = f"the pipeline process ended with {how}"
    if outcome.error is not None and outcome.failed_step is None:
        running = [s.name for s in outcome.steps if s.state == RUNNING]
        outcome.failed_step = running[0] if running else None
        if running:
            display.update(running[0], FAILED)
    display.close(
        f"finished in {outcome.seconds:.0f} s"
        if outcome.ok
        else f"FAILED after {outcome.seconds:.0f} s"
    )
    return outcome


def _pump(process: subprocess.Popen, events_fd: int, watcher: _Watcher, tick: float) -> None:
    """Reads output and events until both pipes are closed, refreshing the display."""
    assert process.stdout is not None
    selector = selectors.DefaultSelector()
    handlers = {
        process.stdout.fileno(): (_LineReader(), watcher.on_output),
        events_fd: (_LineReader(), watcher.on_event),
    }
    for fd in handlers:
        selector.register(fd, selectors.EVENT_READ)
    while selector.get_map():
        for key, _ in selector.select(timeout=tick):
            reader, handle = handlers[key.fd]
            chunk = os.read(key.fd, 65536)
            lines = reader.feed(chunk) if chunk else reader.rest()
            if not chunk:
                selector.unregister(key.fd)
            for line in lines:
                handle(line)
        watcher.display.tick()
    selector.close()
    process.stdout.close()


def log_tail(log_path: str, lines: int = LOG_TAIL_LINES) -> list[str]:
    """The last ``lines`` meaningful lines of a log (noise lines skipped)."""
    try:
        with open(log_path, encoding="utf-8", errors="replace") as handle:
            kept = [line.rstrip("\n") for line in handle if not quiet.is_noise(line)]
    except FileNotFoundError:
        return []
    return kept[-lines:]


def print_failure(outcome: RunOutcome, stream: TextIO | None = None) -> None:
    """The failing step's error and the log tail, the two things needed to act on it."""
    stream = stream or sys.stdout
    where = f"{outcome.failed_step} failed" if outcome.failed_step else "The pipeline failed"
    stream.write(f"{where}: {outcome.error}\n")
    tail = log_tail(outcome.log_path)
    if tail:
        stream.write(f"Last {len(tail)} lines of {_display_path(outcome.log_path)}:\n")
        stream.writelines(f"  | {line}\n" for line in tail)
    stream.flush()


def _display_path(path: str) -> str:
    relative = os.path.relpath(path)
    return relative if not relative.startswith("..") else path
