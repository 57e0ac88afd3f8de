"""The pure parts of benchmarks.frontends: reading a process tree from /proc and the many-core
projection. No server, no timing: a fake /proc tree and hand-computed figures."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest

from benchmarks import process_tree
from benchmarks.frontends_report import memory_totals, projection


def _stat(pid: int, comm: str, utime: int, stime: int) -> str:
    # Fields after the command name: state, ppid, pgrp, session, tty, tpgid, flags, minflt,
    # cminflt, majflt, cmajflt, utime, stime, cutime, cstime, ...
    return f"{pid} ({comm}) S 1 1 1 0 -1 4194304 10 0 0 0 {utime} {stime} 7 9 20 0 1 0\n"


def test_cpu_ticks_adds_utime_and_stime_even_when_the_name_holds_parentheses():
    assert process_tree.cpu_ticks(_stat(42, "python", 120, 30)) == 150
    assert process_tree.cpu_ticks(_stat(42, "a) (b c) S 9", 5, 6)) == 11


def test_kib_fields_are_bytes_and_absent_fields_none():
    status = "Name:\tpython\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\n"
    assert process_tree.kib_field(status, "VmRSS") == 1024 * 1024
    assert process_tree.kib_field("Rss: 10 kB\nPss:   3 kB\n", "Pss") == 3 * 1024
    assert process_tree.kib_field(status, "Pss") is None


def test_roles_come_from_the_module_in_the_command_line():
    assert process_tree.role("python -m serving.multiproc.model_process --x", False) == "model"
    assert process_tree.role("python -m serving.multiproc.frontend 3", False) == "frontend"
    assert process_tree.role("python -m serving --port=1", True) == "parent"
    assert process_tree.role("python -c from multiprocessing.resource_tracker", False) == "other"


def _fake_process(proc: Path, pid: int, cmdline: str, ticks: int, children: dict[int, list]):
    folder = proc / str(pid)
    for tid, kids in children.items():
        (folder / "task" / str(tid)).mkdir(parents=True)
        (folder / "task" / str(tid) / "children").write_text(" ".join(map(str, kids)) + " ")
    (folder / "cmdline").write_bytes(cmdline.replace(" ", "\0").encode() + b"\0")
    (folder / "stat").write_text(_stat(pid, "python", ticks, 0))
    (folder / "status").write_text(f"VmRSS:\t {pid} kB\n")
    (folder / "smaps_rollup").write_text(f"Pss: {pid // 2} kB\n")


def test_sample_walks_every_threads_children_recursively(tmp_path: Path):
    # 10 = supervisor (children forked from two threads), 11 = model, 12/13 = front ends,
    # 14 = a helper of the model process; 99 is listed but has already gone.
    _fake_process(tmp_path, 10, "python -m serving", 100, {10: [11], 20: [12, 13, 99]})
    _fake_process(tmp_path, 11, "python -m serving.multiproc.model_process", 500, {11: [14]})
    _fake_process(tmp_path, 12, "python -m serving.multiproc.frontend 0", 300, {12: []})
    _fake_process(tmp_path, 13, "python -m serving.multiproc.frontend 1", 200, {13: []})
    _fake_process(tmp_path, 14, "python -c resource_tracker", 1, {14: []})
    samples = process_tree.sample(10, proc=tmp_path)
    assert [(s.pid, s.role) for s in samples] == [
        (10, "parent"),
        (11, "model"),
        (12, "frontend"),
        (13, "frontend"),
        (14, "other"),
    ]
    assert process_tree.counts(samples) == {"parent": 1, "model": 1, "frontend": 2, "other": 1}
    ticks = pytest.approx(500 / os.sysconf("SC_CLK_TCK"))
    assert samples[1].cpu_seconds == ticks
    assert samples[2].rss_bytes == 12 * 1024 and samples[2].pss_bytes == 6 * 1024


def _sample(pid: int, role: str, cpu: float) -> process_tree.ProcessSample:
    return process_tree.ProcessSample(pid, role, cpu, 0, None, "")


def test_cpu_by_role_sums_deltas_and_notes_restarted_processes():
    before = [_sample(1, "parent", 1.0), _sample(2, "model", 5.0), _sample(3, "frontend", 2.0)]
    after = [
        _sample(1, "parent", 1.5),
        _sample(2, "model", 7.0),
        _sample(4, "frontend", 0.25),  # front end 3 died and was restarted as 4
    ]
    used, notes = process_tree.cpu_by_role(before, after)
    assert used == {"parent": 0.5, "model": 2.0, "frontend": 0.25}
    assert notes == [
        "frontend pid 4 started during the run",
        "frontend pid 3 ended during the run (its CPU is not counted)",
    ]


def test_projection_is_bounded_by_the_front_ends_until_the_model_process_saturates():
    # front ends 200 µs/request over 7 cores: 35k req/s; model process 25 µs: 40k req/s.
    assert projection(200.0, 25.0, 8) == (pytest.approx(35_000), "front ends")
    # 15 front-end cores could do 75k req/s; the one model process caps it at 40k.
    assert projection(200.0, 25.0, 16) == (pytest.approx(40_000), "model process")
    assert projection(200.0, 25.0, 64) == (pytest.approx(40_000), "model process")


def test_a_cost_below_clock_resolution_never_bounds():
    assert projection(100.0, 0.0, 8) == (pytest.approx(70_000), "front ends")
    rate, _ = projection(0.0, 0.0, 8)
    assert math.isinf(rate)


def test_memory_totals_sum_rss_per_role_and_server():
    memory = [
        {"frontends": 0, "processes": [{"role": "parent", "rss_bytes": 500, "pss_bytes": 400}]},
        {
            "frontends": 2,
            "processes": [
                {"role": "parent", "rss_bytes": 30, "pss_bytes": 20},
                {"role": "model", "rss_bytes": 450, "pss_bytes": 300},
                {"role": "frontend", "rss_bytes": 60, "pss_bytes": None},
                {"role": "frontend", "rss_bytes": 70, "pss_bytes": 50},
            ],
        },
    ]
    totals = memory_totals(memory)
    assert totals[0] == {"parent": 500, "all": 500, "pss": 400}
    assert totals[2] == {"parent": 30, "model": 450, "frontend": 130, "all": 610, "pss": 370}


def test_mean_latency_is_the_runs_share_of_the_sums_in_ms():
    from benchmarks.frontends import mean_latency_ms

    before = {"request_sum": 1000.0, "request_count": 2, "runtime_sum": 400.0, "runtime_count": 2}
    after = {"request_sum": 7000.0, "request_count": 6, "runtime_sum": 2400.0, "runtime_count": 6}
    assert mean_latency_ms(before, after) == {"request": 1.5, "runtime": 0.5}
    assert mean_latency_ms(before, before) is None  # no call in between
    assert mean_latency_ms(None, after) is None


def test_hop_table_splits_the_servers_time_at_the_model_call():
    from benchmarks.frontends_report import hop_table

    def point(n, p50, server_ms):
        return {
            "server": f"ours N={n}", "frontends": n, "protocol": "REST", "concurrency": 1,
            "p50_ms": p50, "p99_ms": 1.0, "busy_before": 0.0, "server_ms": server_ms,
        }  # fmt: skip

    rows = hop_table(
        [point(0, 0.5, {"request": 0.4, "runtime": 0.3}), point(1, 0.75, None)], concurrency=1
    )
    assert rows[2] == "| ours N=0 | REST | 0.500 | baseline | 1.00 | 0.400 | 0.300 | 0.100 | 0% |"
    assert rows[3] == "| ours N=1 | REST | 0.750 | +0.250 ms | 1.00 | — | — | — | 0% |"
