"""The marks of ``benchmarks/hop_trace``: turning a server's processes on to mark, collecting
what they marked, and cutting the marks into calls and steps (benchmarks.hop_stages prints
them). Apart from the driver so that reading marks needs neither TensorFlow nor a server."""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from statistics import median

from benchmarks import process_tree
from benchmarks.hop_trace.sitecustomize import DIR_ENV, SIGNAL

ROOT = Path(__file__).resolve().parents[1]
TRACER = Path(__file__).resolve().parent / "hop_trace"
ROLE_NAMES = {"frontend": "front end", "model": "model process", "server": "one process"}
# Where a call enters the dataplane, by the role that receives calls.
ENTRIES = {"frontend": "RemoteDataplane.predict", "server": "InferenceService.predict"}
COLLECT_TIMEOUT_S = 30.0

Mark = tuple[int, str]  # (CLOCK_MONOTONIC ns, "<role name>: <stage>")


def entry(frontends: int) -> str:
    """The mark a call starts with: the dataplane's entry in the process that received it."""
    where = "frontend" if frontends else "server"
    return f"{ROLE_NAMES[where]}: {ENTRIES[where]}"


def tracing_env(folder: Path) -> dict[str, str]:
    """The environment that makes a server's processes mark their stages into ``folder``."""
    return {"PYTHONPATH": f"{TRACER}{os.pathsep}{ROOT}", DIR_ENV: str(folder)}


def collect(pid: int, frontends: int, folder: Path, poke: Callable[[], object]) -> list[Mark]:
    """Every traced process of the server ``pid`` writes its marks: the server itself at
    ``frontends`` = 0, else its model process and front ends (never the supervisor, which
    has no handler: the signal would end it). ``poke`` sends a call so that each runs its
    signal handler promptly. Raises if a stage could not be wrapped."""
    tree = process_tree.sample(pid)
    traced = [s.pid for s in tree if s.role in ("model", "frontend")] if frontends else [pid]
    if len(traced) != (1 + frontends if frontends else 1):
        raise RuntimeError(f"expected a model process and {frontends} front ends under {pid}")
    setting = f"{DIR_ENV}={folder}".encode()
    for target in traced:  # a process started without the tracer would die of the signal
        if setting not in Path(f"/proc/{target}/environ").read_bytes().split(b"\0"):
            raise RuntimeError(f"pid {target} was not started with tracing_env({folder})")
    for old in folder.glob("*.tsv"):
        old.unlink()
    for target in traced:
        os.kill(target, SIGNAL)
    deadline = time.monotonic() + COLLECT_TIMEOUT_S
    while len(files := list(folder.glob("*.tsv"))) < len(traced):
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"{len(files)} of {len(traced)} processes wrote their marks in "
                f"{COLLECT_TIMEOUT_S:.0f} s"
            )
        poke()
        time.sleep(0.2)
    return read_marks(files)


def read_marks(files: Iterable[Path]) -> list[Mark]:
    """The marks of several processes in one order (one clock for all of them), each named
    after the part of the server that made it."""
    marks: list[Mark] = []
    missing: list[str] = []
    for path in files:
        who = ROLE_NAMES[path.name.split("-", 1)[0]]
        for line in path.read_text().splitlines():
            first, stage = line.split("\t", 1)
            if first == "missing":
                missing.append(stage)
            else:
                marks.append((int(first), f"{who}: {stage}"))
    if missing:
        raise RuntimeError(
            "benchmarks/hop_trace could not wrap "
            + ", ".join(sorted(set(missing)))
            + ": update its stage lists to the functions' current names"
        )
    marks.sort()
    return marks


def calls(marks: list[Mark], first: str, since: int, until: int) -> list[list[Mark]]:
    """The marks of each call that entered (mark ``first``, see :func:`entry`) and returned
    between ``since`` and ``until``, from its entry to its return; other marks in between stay
    in (a call that had company takes a path of its own in :func:`steps`)."""
    returned = first + " returns"
    found: list[list[Mark]] = []
    current: list[Mark] | None = None
    for ns, stage in marks:
        if ns < since or ns > until:
            continue
        if stage == first:
            current = [(ns, stage)]
        elif current is not None:
            current.append((ns, stage))
            if stage == returned:
                found.append(current)
                current = None
    return found


@dataclass
class Steps:
    calls: int  # calls measured
    on_path: int  # of them, those that took the most common path
    rows: list[tuple[str, str, float, float]]  # (from, to, median µs, p90 µs)
    in_server_us: float  # median from the entry to the return, calls on the path


def steps(found: list[list[Mark]]) -> Steps:
    """Each step of the most common path: the median and p90 of its calls' time in it."""
    if not found:
        raise RuntimeError("no call was marked from its entry to its return")
    paths = Counter(tuple(stage for _, stage in call) for call in found)
    path, on_path = paths.most_common(1)[0]
    taken = [call for call in found if tuple(stage for _, stage in call) == path]
    rows = []
    for index in range(1, len(path)):
        gaps = sorted((call[index][0] - call[index - 1][0]) / 1e3 for call in taken)
        rows.append((path[index - 1], path[index], median(gaps), gaps[int(0.9 * len(gaps))]))
    spans = [(call[-1][0] - call[0][0]) / 1e3 for call in taken]
    return Steps(len(found), on_path, rows, median(spans))


def print_steps(title: str, result: Steps, client_p50_ms: float) -> None:
    share = result.on_path / result.calls
    print(
        f"\n{title}: {result.on_path:,} of {result.calls:,} calls ({share:.0%}) took this path; "
        f"in the server {result.in_server_us:.0f} µs (median), load generator p50 "
        f"{client_p50_ms:.3f} ms",
        flush=True,
    )
    print(f"  {'median µs':>9} {'p90 µs':>8}  step")
    for before, after, mid, p90 in result.rows:
        print(f"  {mid:9.1f} {p90:8.1f}  {before}  ->  {after}")
