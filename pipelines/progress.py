"""A live, compact view of a pipeline run: one line per component with its state and time.

A progress display, not a log. On a terminal the block is redrawn in place (cursor up and
erase-line, ANSI sequences every VT100-compatible terminal understands), so a five-component
run stays six lines however long it takes. Anywhere else (CI logs, pipes, files) redrawing would
leave escape codes behind, so one plain line is printed per state change instead.

The display owns no clock or thread: callers report states (``update``) and call ``tick`` now
and then to refresh elapsed times; tests pass a fake clock.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from collections.abc import Callable, Sequence
from typing import TextIO

WAITING = "waiting"
RUNNING = "running"
DONE = "done"
FAILED = "failed"
SKIPPED = "skipped"
_FINAL = (DONE, FAILED, SKIPPED)
_MARKS = {WAITING: "·", RUNNING: ">", DONE: "✓", FAILED: "✗", SKIPPED: "-"}
_ASCII_MARKS = {WAITING: ".", RUNNING: ">", DONE: "+", FAILED: "x", SKIPPED: "-"}
_SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
_CURSOR_UP_AND_ERASE = "\x1b[{n}F"  # to the start of the line n lines up
_ERASE_LINE = "\x1b[2K"


@dataclasses.dataclass
class Step:
    """One component of the run as the display knows it."""

    name: str
    state: str = WAITING
    started: float | None = None
    ended: float | None = None
    detail: str = ""

    def elapsed(self, now: float) -> float | None:
        if self.started is None:
            return None
        return (self.ended if self.ended is not None else now) - self.started


class ProgressDisplay:
    """Shows the steps of one run on ``stream``; ``live`` (default: ``stream.isatty()``)
    selects redraw-in-place over one line per change."""

    def __init__(
        self,
        stream: TextIO,
        title: str,
        *,
        live: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
        width: int | None = None,
    ) -> None:
        self._stream = stream
        self._title = title
        self._live = stream.isatty() if live is None else live
        self._clock = clock
        self._width = width
        self._started = clock()
        self._status = "starting"
        self._closed = False
        self._steps: dict[str, Step] = {}
        self._drawn = 0  # lines of the last live frame, to move back over
        self._frames = 0
        # Marks are symbols on UTF-8 streams and letters elsewhere (a Latin-1 terminal would
        # raise UnicodeEncodeError on "✓").
        self._unicode = "utf" in (getattr(stream, "encoding", None) or "").lower()
        if not self._live:
            self._print(title)

    @property
    def steps(self) -> list[Step]:
        return list(self._steps.values())

    def set_steps(self, names: Sequence[str]) -> None:
        """The run's components in execution order (known once the pipeline is built)."""
        for name in names:
            self._steps.setdefault(name, Step(name))
        self._redraw()

    def set_status(self, status: str) -> None:
        """What the run as a whole is doing, shown in the title line of the live view."""
        self._status = status
        self._redraw()

    def update(self, name: str, state: str, detail: str | None = None) -> None:
        """Records a state change of one step (adding the step if it was not announced)."""
        step = self._steps.setdefault(name, Step(name))
        now = self._clock()
        if state == RUNNING and step.started is None:
            step.started = now
        if state in _FINAL and step.ended is None:
            step.ended = now
            if step.started is None:  # reported finished without a start: no time to show
                step.started = now
        state_changed = state != step.state
        detail_changed = detail is not None and detail != step.detail
        step.state = state
        if detail is not None:
            step.detail = detail
        if self._live:
            if state_changed or detail_changed:
                self._redraw()
        # The plain view prints a detail with the step's final line, not once more before it.
        elif state_changed or (detail_changed and state in _FINAL):
            self._print(self._step_line(step, now))

    def tick(self) -> None:
        """Refreshes elapsed times (live view only; the plain view prints changes only)."""
        self._redraw()

    def close(self, status: str) -> None:
        """Final state: the live frame is drawn once more and stays on screen."""
        self._status = status
        self._closed = True
        if self._live:
            self._redraw()
        else:
            self._print(self._title_line())

    # ------------------------------------------------------------------ rendering
    def lines(self) -> list[str]:
        """The live frame: a title line and one line per step."""
        now = self._clock()
        return [self._title_line(), *(self._step_line(s, now) for s in self._steps.values())]

    def _title_line(self) -> str:
        if self._closed:  # the final status says how long it took
            return f"{self._title}: {self._status}"
        return f"{self._title}: {self._status} ({self._clock() - self._started:.0f} s)"

    def _step_line(self, step: Step, now: float) -> str:
        marks = _MARKS if self._unicode else _ASCII_MARKS
        if step.state == RUNNING and self._live and self._unicode:
            mark = _SPINNER[self._frames % len(_SPINNER)]
        else:
            mark = marks.get(step.state, "?")
        elapsed = step.elapsed(now)
        # A plain "running" line is printed at the start: its elapsed time would always be 0.
        if elapsed is None or (step.state == RUNNING and not self._live):
            seconds = " " * 8
        else:
            seconds = f"{elapsed:6.1f} s"
        state = "" if step.state == DONE else step.state
        text = "  ".join(part for part in (state, step.detail) if part)
        return f"  {mark} {step.name:<16} {seconds}  {text}".rstrip()

    def _redraw(self) -> None:
        if not self._live:
            return
        self._frames += 1
        width = self._width or shutil.get_terminal_size((100, 24)).columns
        out = [_CURSOR_UP_AND_ERASE.format(n=self._drawn)] if self._drawn else []
        frame = self.lines()
        # Cut to the terminal width: a wrapped line would break the cursor-up count.
        out.extend(f"{_ERASE_LINE}{self._fit(line, max(width - 1, 10))}\n" for line in frame)
        self._stream.write("".join(out))
        self._stream.flush()
        self._drawn = len(frame)

    def _fit(self, line: str, width: int) -> str:
        if len(line) <= width:
            return line
        return line[: width - 1] + ("…" if self._unicode else ">")

    def _print(self, line: str) -> None:
        self._stream.write(line + "\n")
        self._stream.flush()
