"""The progress display (fake clock), the worker events, and the watching front end."""

from __future__ import annotations

import io
import logging
import os
import re
import sys
import textwrap

import pytest

from pipelines import local_run, quiet
from pipelines.progress import DONE, FAILED, RUNNING, ProgressDisplay
from pipelines.run_events import DropProtoDumps, EventWriter, NodeEventHandler

NODES = ["CsvExampleGen", "Trainer", "Exporter"]


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Utf8Stream(io.StringIO):
    encoding = "utf-8"


def _screen(output: str) -> list[str]:
    """What a VT100 terminal shows after ``output`` (cursor-up-to-column-0, erase line)."""
    lines, row = [""], 0
    for match in re.finditer(r"\x1b\[(\d*)([A-Za-z])|\n|[^\x1b\n]+", output):
        token = match.group(0)
        if token == "\n":
            row += 1
            if row == len(lines):
                lines.append("")
        elif token.startswith("\x1b"):
            count, command = match.group(1), match.group(2)
            if command == "F":
                row -= int(count or 1)
                assert row >= 0, "moved above the display's first line"
            elif command == "K":
                lines[row] = ""
            else:
                raise AssertionError(f"unexpected escape {token!r}")
        else:
            lines[row] += token
    return lines[:-1] if lines[-1] == "" else lines


def test_plain_view_prints_one_line_per_state_change():
    clock, out = FakeClock(), Utf8Stream()
    display = ProgressDisplay(out, "Pipeline demo", live=False, clock=clock)
    display.set_steps(NODES)
    display.set_status("running")
    display.update("CsvExampleGen", RUNNING)
    clock.advance(4.25)
    display.tick()  # refreshes nothing in the plain view
    display.update("CsvExampleGen", DONE)
    display.update("Trainer", RUNNING)
    clock.advance(10)
    display.update("Trainer", RUNNING, detail="epoch 1")  # detail alone: printed with the end
    display.update("Trainer", DONE)
    display.update("Exporter", RUNNING)
    clock.advance(1.5)
    display.update("Exporter", FAILED, detail="ValueError: no signature")
    display.close("FAILED after 16 s")

    assert out.getvalue().splitlines() == [
        "Pipeline demo",
        "  > CsvExampleGen" + " " * 14 + "running",
        "  ✓ CsvExampleGen       4.2 s",
        "  > Trainer" + " " * 20 + "running",
        "  ✓ Trainer            10.0 s  epoch 1",
        "  > Exporter" + " " * 19 + "running",
        "  ✗ Exporter            1.5 s  failed  ValueError: no signature",
        "Pipeline demo: FAILED after 16 s",
    ]
    assert "\x1b" not in out.getvalue()


def test_live_view_redraws_one_block_in_place():
    clock, out = FakeClock(), Utf8Stream()
    display = ProgressDisplay(out, "Pipeline demo", live=True, clock=clock, width=60)
    frames = []

    def frame() -> list[str]:
        screen = _screen(out.getvalue())
        frames.append(screen)
        return screen

    assert frame() == []  # nothing drawn before there is something to show
    display.set_steps(NODES)
    assert frame() == [
        "Pipeline demo: starting (0 s)",
        "  · CsvExampleGen              waiting",
        "  · Trainer                    waiting",
        "  · Exporter                   waiting",
    ]
    display.update("CsvExampleGen", RUNNING)
    clock.advance(3)
    display.tick()
    screen = frame()
    assert re.fullmatch(r"  \S CsvExampleGen       3\.0 s  running", screen[1])
    display.update("CsvExampleGen", DONE, detail="x" * 80)  # cut at the terminal width
    display.update("Trainer", RUNNING)
    clock.advance(12.5)
    display.tick()
    display.close("finished in 16 s")

    final = frame()
    assert final[0] == "Pipeline demo: finished in 16 s"
    assert final[1] == "  ✓ CsvExampleGen       3.0 s  " + "x" * 27 + "…"  # cut to 59 columns
    assert re.fullmatch(r"  \S Trainer            12\.5 s  running", final[2])
    assert final[3] == "  · Exporter                   waiting"
    # However many redraws, the terminal only ever shows the one block.
    assert max(len(f) for f in frames) == 4
    assert all(len(line) <= 59 for line in frames[-1])


def test_marks_fall_back_to_ascii_on_other_encodings():
    out = io.StringIO()  # encoding None: as a Latin-1 pipe would be treated
    display = ProgressDisplay(out, "p", live=False, clock=FakeClock())
    display.update("Trainer", RUNNING)
    display.update("Trainer", DONE)
    display.update("Pusher", FAILED)

    assert [line.split()[0] for line in out.getvalue().splitlines()[1:]] == [">", "+", "x"]


def test_event_handler_reads_tfx_launcher_records_and_summaries():
    read_fd, write_fd = os.pipe()
    writer = EventWriter(write_fd)
    handler = NodeEventHandler(writer)
    logger = logging.getLogger("absl-under-test")
    logger.setLevel(logging.INFO)  # the worker sets absl's verbosity to INFO
    logger.addHandler(handler)
    logger.propagate = False
    summary = logging.getLogger("tfx_serving_suite")
    summary.addHandler(handler)
    try:
        # The records LocalDagRunner emits (tfx/orchestration/local/local_dag_runner.py).
        logger.info("Component %s is running.", "Exporter")
        logger.info("Component %s is running soon.", "Other")  # another template: ignored
        from components.summary import log_summary

        log_summary("Exporter", "signatures serving_default (predict)")
        logger.info("Component %s is finished.", "Exporter")
        logger.info("Skipping component %s.", "Pusher")
    finally:
        logger.removeHandler(handler)
        summary.removeHandler(handler)
        writer.close()
    with os.fdopen(read_fd) as events:
        lines = events.read().splitlines()

    assert lines == [
        '{"event": "running", "node": "Exporter"}',
        '{"event": "detail", "node": "Exporter", "text": "signatures serving_default (predict)"}',
        '{"event": "finished", "node": "Exporter"}',
        '{"event": "skipped", "node": "Pusher"}',
    ]


def test_proto_dumps_are_left_out_of_the_log():
    def record(template: str) -> logging.LogRecord:
        return logging.LogRecord("absl", logging.INFO, "", 0, template, ("x",), None)

    dump, kept = record("Using deployment config:\n %s"), record("Component %s is running.")

    assert not DropProtoDumps().filter(dump)
    assert DropProtoDumps().filter(kept)


def test_noise_lines():
    assert quiet.is_noise(
        "2026-12-05 18:53:00.871375: E external/local_xla/xla/stream_executor/cuda/"
        "cuda_dnn.cc:10575] Unable to register cuDNN factory: Attempting to register factory "
        "for plugin cuDNN when one has already been registered"
    )
    assert quiet.is_noise("  warnings.warn(message, FutureWarning)")
    assert not quiet.is_noise("ValueError: Cannot build warmup requests")
    assert not quiet.is_noise("E external/something.cc:1] a real TensorFlow error")


# A stand-in worker: real process, real pipes, the event protocol, no TFX.
_FAKE_WORKER = textwrap.dedent(
    """
    import json, os, sys
    fd = int(sys.argv[sys.argv.index("--events_fd") + 1])
    events = os.fdopen(fd, "w", buffering=1)
    def send(**event):
        events.write(json.dumps(event) + "\\n")
    send(event="nodes", nodes=["CsvExampleGen", "Trainer", "Pusher"])
    send(event="running", node="CsvExampleGen")
    print("2026-12-05 18:53:00.827279: E external/local_xla/xla/stream_executor/cuda/"
          "cuda_fft.cc:479] Unable to register cuFFT factory: Attempting to register factory "
          "for plugin cuFFT when one has already been registered", file=sys.stderr)
    for i in range(30):
        print(f"log line {i}")
    send(event="finished", node="CsvExampleGen")
    send(event="running", node="Trainer")
    if sys.argv[1] == "fail":
        print("Traceback (most recent call last):", file=sys.stderr)
        print("ValueError: no feature named 'x1'", file=sys.stderr)
        send(event="failed", node="Trainer", error="ValueError: no feature named 'x1'")
        sys.exit(1)
    if sys.argv[1] == "crash":
        os._exit(3)  # no event: the front end must still say which step was running
    send(event="finished", node="Trainer")
    send(event="running", node="Pusher")
    send(event="detail", node="Pusher", text="pushed version 7")
    send(event="finished", node="Pusher")
    send(event="result", steps=[{"node": "Pusher", "state": "COMPLETE", "seconds": 0.1}],
         push={"pushed": 1, "version": "7"})
    """
)


@pytest.fixture
def worker(tmp_path):
    path = tmp_path / "worker.py"
    path.write_text(_FAKE_WORKER)
    return lambda mode: [sys.executable, str(path), mode]


def test_watch_success_shows_steps_and_keeps_logs_in_the_file(worker, tmp_path):
    out = Utf8Stream()
    log = tmp_path / "logs" / "pipeline.log"

    outcome = local_run.watch(worker("ok"), log_path=str(log), title="Pipeline", stream=out)

    assert outcome.ok and outcome.result["push"] == {"pushed": 1, "version": "7"}
    lines = out.getvalue().splitlines()
    assert lines[0] == "Pipeline" and lines[-1].startswith("Pipeline: finished in ")
    assert [line.split()[:2] for line in lines[1:-1]] == [
        [">", "CsvExampleGen"],
        ["✓", "CsvExampleGen"],
        [">", "Trainer"],
        ["✓", "Trainer"],
        [">", "Pusher"],
        ["✓", "Pusher"],
    ]
    assert lines[-2].endswith("pushed version 7")
    text = log.read_text()
    assert "log line 29" in text and "Unable to register cuFFT factory" in text  # full log
    assert "log line" not in out.getvalue()


def test_watch_verbose_streams_the_log_without_noise(worker, tmp_path):
    out = Utf8Stream()

    outcome = local_run.watch(
        worker("ok"), log_path=str(tmp_path / "p.log"), title="Pipeline", stream=out, verbose=True
    )

    assert outcome.ok
    assert "log line 29" in out.getvalue()
    assert "cuFFT" not in out.getvalue()


@pytest.mark.parametrize(
    ("mode", "error"),
    [
        ("fail", "ValueError: no feature named 'x1'"),
        ("crash", "the pipeline process ended with exit code 3"),
    ],
)
def test_failed_step_shows_its_error_and_the_log_tail(worker, tmp_path, mode, error):
    out = Utf8Stream()
    log = tmp_path / "pipeline.log"

    outcome = local_run.watch(worker(mode), log_path=str(log), title="Pipeline", stream=out)
    local_run.print_failure(outcome, out)

    assert not outcome.ok and outcome.failed_step == "Trainer" and outcome.error == error
    lines = out.getvalue().splitlines()
    steps = [line.split()[:2] for line in lines if line.startswith("  ") and "Trainer" in line]
    assert steps[-1] == ["✗", "Trainer"]
    assert f"Trainer failed: {error}" in lines
    tail_start = lines.index(f"Last {local_run.LOG_TAIL_LINES} lines of {log}:")
    tail = lines[tail_start + 1 :]
    assert len(tail) == local_run.LOG_TAIL_LINES
    assert all(line.startswith("  | ") for line in tail)
    assert not any("cuFFT" in line for line in tail)
    if mode == "fail":
        assert tail[-1] == "  | ValueError: no feature named 'x1'"
