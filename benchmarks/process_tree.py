"""A server's processes as /proc shows them: who is who, how much CPU each used, how much memory.

The multi-process server (issue 14, ``--frontend_processes=N``) is a supervisor with one model
process, N front ends and a spare front-end process (``--frontend_spare``) as children, told
apart by the module in their command line and, among front-end processes, by the name each
gives itself (``/proc/<pid>/comm``): ``frontend-<slot>`` once it serves a slot; a spare, or one
still importing, does not have that name. The
benchmark reads each one's CPU time (``utime + stime`` in ``/proc/<pid>/stat``) before and after
a measured run and divides by the requests served, and reads resident memory (``VmRSS`` in
``/proc/<pid>/status``; ``Pss`` from ``smaps_rollup``, which splits pages the processes share).
Children are found through ``/proc/<pid>/task/*/children`` (every thread's children, as a
forked child's parent may be any thread), recursively. For the restart figures (and the gRPC
listener test) it also tells which TCP ports a process listens on, and on how many sockets: the
socket inodes among its ``/proc/<pid>/fd`` links that ``/proc/net/tcp`` and ``tcp6`` list in the
LISTEN state.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

MODEL_MODULE = "serving.multiproc.model_process"
FRONTEND_MODULE = "serving.multiproc.frontend"
PROC = Path("/proc")


SPARE_NAME = "frontend-spare"  # serving.multiproc.protocol.SPARE_NAME


@dataclass(frozen=True)
class ProcessSample:
    pid: int
    role: str  # "parent" (the process started), "model", "frontend", "spare" or "other"
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


def cpu_seconds(pid: int, proc: Path = PROC) -> float:
    """``pid``'s CPU time so far (utime + stime)."""
    return cpu_ticks((proc / str(pid) / "stat").read_text()) / os.sysconf("SC_CLK_TCK")


def kib_field(text: str, name: str) -> int | None:
    """``name:  1234 kB`` from /proc/<pid>/status or smaps_rollup, in bytes."""
    for line in text.splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1]) * 1024
    return None


def role(cmdline: str, is_root: bool, name: str = "") -> str:
    """``name``: the process's ``/proc/<pid>/comm``. A front-end process is a "frontend" once
    it serves a slot (named ``frontend-<slot>``), a "spare" before (waiting for one, or still
    importing): part of the server's memory, not of its serving front ends."""
    if MODEL_MODULE in cmdline:
        return "model"
    if FRONTEND_MODULE in cmdline:
        return "frontend" if is_slot_name(name) else "spare"
    return "parent" if is_root else "other"


def is_slot_name(name: str) -> bool:
    prefix, _, slot = name.partition("-")
    return prefix == "frontend" and slot.isdigit()


def name(pid: int, proc: Path = PROC) -> str:
    """``/proc/<pid>/comm``; "" once the process has gone."""
    try:
        return (proc / str(pid) / "comm").read_text().strip()
    except (FileNotFoundError, ProcessLookupError):
        return ""


TCP_LISTEN = "0A"  # the state column of /proc/net/tcp (include/net/tcp_states.h)


def socket_inodes(pid: int, proc: Path = PROC) -> set[int]:
    """Inodes of the sockets ``pid`` holds (its ``/proc/<pid>/fd`` links read ``socket:[N]``)."""
    found = set()
    for fd in (proc / str(pid) / "fd").iterdir():
        try:
            target = os.readlink(fd)
        except (FileNotFoundError, ProcessLookupError):
            continue  # closed while being read
        if target.startswith("socket:["):
            found.add(int(target[len("socket:[") : -1]))
    return found


def _listen_sockets(pid: int, proc: Path) -> list[int]:
    """The port of each LISTEN socket ``pid`` holds. Sockets shared with ``SO_REUSEPORT`` are
    each their own line in /proc/net/tcp{,6}, with their own inode, so this tells the listeners
    of one port apart."""
    inodes = socket_inodes(pid, proc)
    if not inodes:
        return []
    found = []
    for table in ("tcp", "tcp6"):
        try:
            lines = (proc / "net" / table).read_text().splitlines()[1:]
        except FileNotFoundError:  # no IPv6 here
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == TCP_LISTEN and int(fields[9]) in inodes:
                found.append(int(fields[1].rsplit(":", 1)[1], 16))
    return found


def listening_ports(pid: int, ports: set[int], proc: Path = PROC) -> set[int]:
    """Which of ``ports`` ``pid`` holds a LISTEN socket on."""
    return ports.intersection(_listen_sockets(pid, proc))


def listening_sockets(pid: int, port: int, proc: Path = PROC) -> int:
    """How many LISTEN sockets on ``port`` ``pid`` holds (one per gRPC server sharing it,
    ``--grpc_listeners``)."""
    return _listen_sockets(pid, proc).count(port)


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
            comm = (folder / "comm").read_text().strip()
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
                current,
                role(cmdline, current == pid, comm),
                ticks / ticks_per_second,
                rss,
                pss,
                cmdline,
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


def shares(before: list[ProcessSample], after: list[ProcessSample], role: str) -> list[float]:
    """Each process of ``role`` alive through both samples: its share of their CPU between
    them, largest first. For front ends this shows how the kernel placed the clients'
    connections (``SO_REUSEPORT`` hashes each one to a listener: a few connections can all land
    on one front end); empty when they used no CPU."""
    earlier = {s.pid: s.cpu_seconds for s in before if s.role == role}
    used = [s.cpu_seconds - earlier[s.pid] for s in after if s.role == role and s.pid in earlier]
    total = sum(used)
    return sorted((u / total for u in used), reverse=True) if total > 0 else []


def counts(samples: list[ProcessSample]) -> dict[str, int]:
    found: dict[str, int] = {}
    for s in samples:
        found[s.role] = found.get(s.role, 0) + 1
    return found
