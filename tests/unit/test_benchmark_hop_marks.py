"""The pure parts of benchmarks.hop_stages (its tracer, benchmarks.hop_marks): which processes
mark stages, how marks from several processes become calls and steps, and that a stage the
tracer could not wrap fails the run. Hand-made marks and files; the real server's marks are
checked in tests/integration/test_frontend_processes.py."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import types
from pathlib import Path

import pytest

from benchmarks.hop_marks import calls, collect, read_marks, steps
from benchmarks.hop_trace.sitecustomize import Marks, role


def test_only_processes_that_serve_calls_are_traced():
    server = ["python", "-m", "serving"]
    assert role(["python", "-m", "serving.multiproc.frontend", "--port=1"]) == "frontend"
    assert role(["python", "-m", "serving.multiproc.model_process"]) == "model"
    # The last --frontend_processes wins, as in the server's parsing: the supervisor of an
    # N=1 server started by the test harness (which puts its own value first) is not traced.
    assert role([*server, "--frontend_processes=1"]) is None
    assert role([*server, "--frontend_processes=1", "--frontend_processes=0"]) == "server"
    assert role([*server, "--frontend_processes=0", "--frontend_processes=1"]) is None
    assert role(["python", "-m", "pytest"]) is None


def test_a_stage_that_cannot_be_wrapped_fails_the_run(tmp_path, monkeypatch):
    marks = Marks("model")
    marks.wrap("serving.batching.scheduler", "BatchQueue.no_such_stage", False)
    marks.wrap("serving.no_such_module", "f", False)
    monkeypatch.setenv("HOP_TRACE_DIR", str(tmp_path))
    marks.write()
    with pytest.raises(
        RuntimeError, match=r"BatchQueue\.no_such_stage, serving\.no_such_module\.f"
    ):
        read_marks(tmp_path.glob("*.tsv"))


async def _double(x: int) -> int:
    return 2 * x


def test_wrapped_functions_mark_entry_and_return_and_still_answer(tmp_path, monkeypatch):
    module = types.ModuleType("hop_stages_fixture")
    module.double = _double
    module.triple = lambda x: 3 * x
    monkeypatch.setitem(sys.modules, "hop_stages_fixture", module)
    marks = Marks("frontend")
    marks.wrap("hop_stages_fixture", "double", True)
    marks.wrap("hop_stages_fixture", "triple", False)
    assert asyncio.run(module.double(4)) == 8
    assert module.triple(2) == 6
    assert [stage for _, stage in marks.marks] == ["double", "double returns", "triple"]
    monkeypatch.setenv("HOP_TRACE_DIR", str(tmp_path))
    marks.write()
    (written,) = tmp_path.glob("*.tsv")
    assert written.name.startswith("frontend-")
    assert [stage for _, stage in read_marks([written])] == [
        "front end: double",
        "front end: double returns",
        "front end: triple",
    ]


def _write(folder: Path, name: str, marks: list[tuple[int, str]]) -> Path:
    path = folder / name
    path.write_text("".join(f"{ns}\t{stage}\n" for ns, stage in marks))
    return path


def test_marks_of_two_processes_become_calls_in_clock_order(tmp_path):
    entry = "RemoteDataplane.predict"
    frontend = _write(
        tmp_path,
        "frontend-10.tsv",
        [(100, entry), (400, entry + " returns"), (1_000, entry), (1_700, entry + " returns")],
    )
    model = _write(
        tmp_path,
        "model-11.tsv",
        [(200, "SavedModelServable.run"), (1_200, "SavedModelServable.run"), (5_000, "late")],
    )
    marks = read_marks([model, frontend])
    found = calls(marks, f"front end: {entry}", since=0, until=2_000)
    assert [[ns for ns, _ in call] for call in found] == [[100, 200, 400], [1_000, 1_200, 1_700]]
    assert found[0][1][1] == "model process: SavedModelServable.run"
    # A call that entered before the window is not cut in half.
    assert len(calls(marks, f"front end: {entry}", since=150, until=2_000)) == 1


def test_steps_follow_the_most_common_path():
    def call(start: int, gaps: list[int], stages: list[str]) -> list[tuple[int, str]]:
        times = [start]
        for gap in gaps:
            times.append(times[-1] + gap)
        return list(zip(times, stages, strict=True))

    path = ["a", "b", "c"]
    found = [
        call(0, [1_000, 3_000], path),
        call(10_000, [2_000, 1_000], path),
        call(20_000, [3_000, 2_000], path),
        call(30_000, [500, 500, 500], ["a", "b", "flush", "c"]),  # a metrics flush in between
    ]
    result = steps(found)
    assert (result.calls, result.on_path) == (4, 3)
    assert [(r[0], r[1], r[2]) for r in result.rows] == [("a", "b", 2.0), ("b", "c", 2.0)]
    assert [r[3] for r in result.rows] == [3.0, 3.0]  # p90 of three: the largest
    assert result.in_server_us == 4.0


def test_no_marked_call_is_an_error():
    with pytest.raises(RuntimeError, match="no call was marked"):
        steps([])


def test_a_process_started_without_the_tracer_is_not_signalled(tmp_path):
    """The tracer's signal would end a process that has no handler for it: collect refuses
    instead, and the process lives on."""
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with pytest.raises(RuntimeError, match="was not started with tracing_env"):
            collect(sleeper.pid, 0, tmp_path, lambda: None)
        assert sleeper.poll() is None
    finally:
        sleeper.kill()
        sleeper.wait()
