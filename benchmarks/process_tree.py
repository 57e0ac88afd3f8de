"""A server's processes as /proc shows them: who is who, how much CPU each used, how much memory.

The multi-process server (issue 14, ``--frontend_processes=N``) is a supervisor with one model
process and N front ends as children, told apart by the module in their command line. The
benchmark reads each one's CPU time (``utime + stime`` in ``/proc/<pid>/stat``) before and after
a measured run and divides by the requests served, and reads resident memory (``VmRSS`` in
``/proc/<pid>/status``; ``Pss`` from ``smaps_rollup``, which splits pages the processes share).
Children are found through ``/proc/<pid>/task/*/children`` (every thread's children, as a
forked child's parent may be any thread), recursively.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

MODEL_MODULE = "serving.multiproc.model_process"
FRONTEND_MODULE = "serving.multiproc.frontend"
PROC = Path("/proc")


@dataclass(frozen=True)
class ProcessSample:
    pid: int
    role: str  # "parent" (the process started), "model", "frontend" or "other"
    cpu_seconds: float
    rss_bytes: int
    pss_bytes: int | None
    cmdline: str


def cpu_ticks(stat_text: str) -> int:
    """utime + stime (clock ticks) from a ``/proc/<pid>/stat`` line. The command name (field 2)
    is parenthesised and may hold spaces or ')' itself, so fields are counted after the last
    ')': utime and stime are fields 14 and 15 of the line, i.e. 12th and 13th after it."""
    rest = stat_text[stat_text.rindex(")") + 2 :].split()
    return int(rest[11]) + int(rest[12])


def kib_field(text: str, name: str) -> int | None:
    """``name:  1234 kB`` from /proc/<pid>/status or smaps_rollup, in bytes."""
    for line in text.splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1]) * 1024
    return None


def role(cmdline: str, is_root: bool) -> str:
    if MODEL_MODULE in cmdline:
        return "model"
    if FRONTEND_MODULE in cmdline:
        return "frontend"
    return "parent" if is_root else "other"


def children(pid: int, proc: Path = PROC) -> list[int]:
    found: list[int] = []
    for task in (proc / str(pid) / "task").glob("*"):
        try:
            found += [int(child) for child in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue  # the thread ended while being read
    return sorted(set(found))


def descendants(pid: int, proc: Path = PROC) -> list[int]:
    """``pid`` and every process below it, parents first."""
    order, queue = [], [pid]
    while queue:
        current = queue.pop(0)
        order.append(current)
        queue += children(current, proc)
    return order


def sample(pid: int, proc: Path = PROC) -> list[ProcessSample]:
    """Every live process of the tree rooted at ``pid``; one that ends while read is skipped."""
    ticks_per_second = os.sysconf("SC_CLK_TCK")
    samples = []
    for current in descendants(pid, proc):
        folder = proc / str(current)
        try:
            cmdline = (folder / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
            ticks = cpu_ticks((folder / "stat").read_text())
            rss = kib_field((folder / "status").read_text(), "VmRSS") or 0
            try:
                pss = kib_field((folder / "smaps_rollup").read_text(), "Pss")
            except (FileNotFoundError, PermissionError):
                pss = None
        except (FileNotFoundError, ProcessLookupError):
            continue
        samples.append(
            ProcessSample(
                current, role(cmdline, current == pid), ticks / ticks_per_second, rss, pss, cmdline
            )
        )
    return samples


def cpu_by_role(
    before: list[ProcessSample], after: list[ProcessSample]
) -> tuple[dict[str, float], list[str]]:
    """CPU seconds each role used between two samples, and notes on processes that started or
    ended in between (a restarted front end: its CPU before the restart is lost, so the cost
    per request it yields is a lower bound and the note says so)."""
    earlier = {s.pid: s for s in before}
    later = {s.pid: s for s in after}
    used: dict[str, float] = {}
    notes = []
    for pid, now in later.items():
        then = earlier.get(pid)
        if then is None:
            notes.append(f"{now.role} pid {pid} started during the run")
        used[now.role] = (
            used.get(now.role, 0.0) + now.cpu_seconds - (then.cpu_seconds if then else 0.0)
        )
    for pid, then in earlier.items():
        if pid not in later:
            notes.append(f"{then.role} pid {pid} ended during the run (its CPU is not counted)")
    return used, notes


def counts(samples: list[ProcessSample]) -> dict[str, int]:
    found: dict[str, int] = {}
    for s in samples:
        found[s.role] = found.get(s.role, 0) + 1
    return found
