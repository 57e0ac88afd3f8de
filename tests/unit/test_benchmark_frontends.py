"""The pure parts of benchmarks.frontends: reading a process tree from /proc, the many-core
projection, and the restart part's bookkeeping (listening sockets, requests sorted around a
kill, the report's rows). No server, no timing: a fake /proc tree, one socket of this process,
and hand-computed figures."""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import paced_load, process_tree
from benchmarks.frontends_report import (
    capacity_table,
    capacity_targets,
    memory_totals,
    projection,
    restart_summary,
    restart_table,
    restart_targets,
    single_targets,
    targets,
)
from benchmarks.model_capacity import model_socket
from serving.multiproc.protocol import MODEL_SOCKET_ENV


def _stat(pid: int, comm: str, utime: int, stime: int, starttime: int = 0) -> str:
    # Fields after the command name: state, ppid, pgrp, session, tty, tpgid, flags, minflt,
    # cminflt, majflt, cmajflt, utime, stime, cutime, cstime, priority, nice, num_threads,
    # itrealvalue, starttime, vsize, rss, ...
    return (
        f"{pid} ({comm}) S 1 1 1 0 -1 4194304 10 0 0 0 {utime} {stime} 7 9 20 0 1 0 "
        f"{starttime} 1000 50\n"
    )


def test_cpu_ticks_adds_utime_and_stime_even_when_the_name_holds_parentheses():
    assert process_tree.cpu_ticks(_stat(42, "python", 120, 30)) == 150
    assert process_tree.cpu_ticks(_stat(42, "a) (b c) S 9", 5, 6)) == 11


def test_a_front_end_serves_since_its_slots_last_serving_line():
    from benchmarks.frontends import serving_since

    log = (
        "2026-12-06 13:31:07,841 I [frontend-0] __main__] Front end 0 serving\n"
        "2026-12-06 13:31:07,900 I [frontend-1] __main__] Front end 1 serving\n"
        "2026-12-06 13:32:24,153 E serving.multiproc.supervisor] frontend-0 (pid 7) exited\n"
        "2026-12-06 13:32:24,190 I [frontend-0] __main__] Front end 0 serving\n"
        "2026-12-06 13:32:25,000 I [frontend-10] __main__] Front end 10 serving\n"
    )
    first = serving_since(log, "frontend-1")
    assert serving_since(log, "frontend-0") - first == pytest.approx(76.29)  # the spare's
    assert serving_since(log, "frontend-10") - first == pytest.approx(77.1)
    assert serving_since(log, "frontend-2") is None


def test_kib_fields_are_bytes_and_absent_fields_none():
    status = "Name:\tpython\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\n"
    assert process_tree.kib_field(status, "VmRSS") == 1024 * 1024
    assert process_tree.kib_field("Rss: 10 kB\nPss:   3 kB\n", "Pss") == 3 * 1024
    assert process_tree.kib_field(status, "Pss") is None


def test_roles_come_from_the_module_in_the_command_line_and_the_process_name():
    assert process_tree.role("python -m serving.multiproc.model_process --x", False) == "model"
    frontend = "python -m serving.multiproc.frontend --port=1"
    assert process_tree.role(frontend, False, "frontend-3") == "frontend"
    assert process_tree.role(frontend, False, "frontend-spare") == "spare"
    assert process_tree.role(frontend, False, "python") == "spare"  # importing, no slot yet
    assert process_tree.role("python -m serving --port=1", True) == "parent"
    assert process_tree.role("python -c from multiprocessing.resource_tracker", False) == "other"


def _fake_process(
    proc: Path, pid: int, cmdline: str, ticks: int, children: dict[int, list], name="python"
):
    folder = proc / str(pid)
    for tid, kids in children.items():
        (folder / "task" / str(tid)).mkdir(parents=True)
        (folder / "task" / str(tid) / "children").write_text(" ".join(map(str, kids)) + " ")
    (folder / "cmdline").write_bytes(cmdline.replace(" ", "\0").encode() + b"\0")
    (folder / "comm").write_text(name + "\n")
    (folder / "stat").write_text(_stat(pid, "python", ticks, 0))
    (folder / "status").write_text(f"VmRSS:\t {pid} kB\n")
    (folder / "smaps_rollup").write_text(f"Pss: {pid // 2} kB\n")


def test_sample_walks_every_threads_children_recursively(tmp_path: Path):
    # 10 = supervisor (children forked from two threads), 11 = model, 12/13 = front ends,
    # 14 = a helper of the model process, 15 = the spare; 99 is listed but has already gone.
    _fake_process(tmp_path, 10, "python -m serving", 100, {10: [11], 20: [12, 13, 99, 15]})
    _fake_process(tmp_path, 11, "python -m serving.multiproc.model_process", 500, {11: [14]})
    frontend = "python -m serving.multiproc.frontend --port=1"
    _fake_process(tmp_path, 12, frontend, 300, {12: []}, name="frontend-0")
    _fake_process(tmp_path, 13, frontend, 200, {13: []}, name="frontend-1")
    _fake_process(tmp_path, 14, "python -c resource_tracker", 1, {14: []})
    _fake_process(tmp_path, 15, frontend, 60, {15: []}, name="frontend-spare")
    samples = process_tree.sample(10, proc=tmp_path)
    assert [(s.pid, s.role) for s in samples] == [
        (10, "parent"),
        (11, "model"),
        (12, "frontend"),
        (13, "frontend"),
        (15, "spare"),
        (14, "other"),
    ]
    assert process_tree.counts(samples) == {
        "parent": 1,
        "model": 1,
        "frontend": 2,
        "spare": 1,
        "other": 1,
    }
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


def test_front_end_shares_are_of_the_front_ends_alive_through_the_run_largest_first():
    before = [_sample(2, "model", 5.0), _sample(3, "frontend", 2.0), _sample(4, "frontend", 1.0)]
    after = [
        _sample(2, "model", 9.0),
        _sample(3, "frontend", 2.5),  # 0.5 s
        _sample(4, "frontend", 2.5),  # 1.5 s
        _sample(5, "frontend", 3.0),  # started during the run: not comparable
    ]
    assert process_tree.shares(before, after, "frontend") == [0.75, 0.25]
    assert process_tree.shares(before, before, "frontend") == []


def _scaling_point(frontends: int, protocol: str, rps: float, shares: list[float]) -> dict:
    return {
        "server": f"ours N={frontends}",
        "frontends": frontends,
        "protocol": protocol,
        "concurrency": 64,
        "rps": rps,
        "p50_ms": 1.0,
        "cpu_us_per_request": None,
        "frontend_shares": shares,
    }


def test_the_scaling_target_says_how_the_front_ends_shared_the_connections():
    report = {
        "points": [
            _scaling_point(0, "gRPC", 3000.0, []),
            _scaling_point(2, "gRPC", 3300.0, [0.97, 0.03]),
        ],
        "settings": {
            "concurrency": [64],
            "hop_concurrency": 1,
            "memory_frontends": 0,
            "single_concurrency": [],
        },
        "memory": [],
        "single": [],
    }
    rows = [row for row in targets(report) if row.startswith("| scaling, gRPC")]
    assert rows == [
        "| scaling, gRPC c=64: N=2 / N=0 (server on 2 cores) | ≥ 1.5x | "
        "1.10x (3300 / 3000 req/s); front ends' CPU split 97%/3% |"
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


# ---------------------------------------------------------------------------- restart part
def _tcp_table(rows: list[tuple[str, int, str, int]]) -> str:
    """/proc/net/tcp's layout: (local address in hex, port, state, inode) per socket."""
    lines = [
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  "
        "timeout inode"
    ]
    for index, (address, port, state, inode) in enumerate(rows):
        lines.append(
            f"   {index}: {address}:{port:04X} 00000000:0000 {state} 00000000:00000000 "
            f"00:00000000 00000000     0        0 {inode} 1 0000000000000000 100 0 0 10 0"
        )
    return "\n".join(lines) + "\n"


def test_listening_ports_are_this_processs_listen_sockets_only(tmp_path: Path):
    # pid 7 holds sockets 100 (LISTEN on 8500), 101 (an accepted connection on 8501) and
    # 102 (LISTEN on 8501 over IPv6); 200 is another front end's LISTEN socket on 8501
    # (SO_REUSEPORT: same port, its own line and inode).
    fds = tmp_path / "7" / "fd"
    fds.mkdir(parents=True)
    for fd, target in enumerate(["/dev/null", "socket:[100]", "socket:[101]", "pipe:[5]"]):
        os.symlink(target, fds / str(fd))
    os.symlink("socket:[102]", fds / "9")
    (tmp_path / "net").mkdir()
    (tmp_path / "net" / "tcp").write_text(
        _tcp_table(
            [
                ("0100007F", 8500, "0A", 100),
                ("0100007F", 8501, "01", 101),
                ("0100007F", 8501, "0A", 200),
                ("0100007F", 9000, "0A", 100),
            ]
        )
    )
    (tmp_path / "net" / "tcp6").write_text(
        _tcp_table([("00000000000000000000000001000000", 8501, "0A", 102)])
    )
    assert process_tree.socket_inodes(7, proc=tmp_path) == {100, 101, 102}
    assert process_tree.listening_ports(7, {8500, 8501}, proc=tmp_path) == {8500, 8501}
    assert process_tree.listening_sockets(7, 8501, proc=tmp_path) == 1  # 200 is not pid 7's
    (tmp_path / "net" / "tcp6").unlink()  # no IPv6: only the IPv4 table counts
    assert process_tree.listening_ports(7, {8500, 8501}, proc=tmp_path) == {8500}


def test_listening_ports_sees_a_real_socket_once_it_listens():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        assert process_tree.listening_ports(os.getpid(), {port}) == set()  # bound, not listening
        sock.listen(1)
        assert process_tree.listening_ports(os.getpid(), {port}) == {port}


def test_listening_sockets_counts_each_listener_sharing_a_port():
    with socket.socket() as first, socket.socket() as second:
        for sock in (first, second):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        first.bind(("127.0.0.1", 0))
        port = first.getsockname()[1]
        second.bind(("127.0.0.1", port))
        first.listen(1)
        assert process_tree.listening_sockets(os.getpid(), port) == 1
        second.listen(1)
        assert process_tree.listening_sockets(os.getpid(), port) == 2


def test_requests_are_sorted_by_where_they_fell_around_the_kill():
    killed, serving = 10.0, 11.0
    requests = [
        [9.0, 9.01, None],  # answered before the kill
        [9.99, 10.2, None],  # in flight, answered by the other front end
        [9.995, 10.012, "ConnectionResetError: [Errno 104] Connection reset by peer"],
        [10.004, 10.018, "RemoteDisconnected: Remote end closed connection"],  # sent after
        [10.5, 10.51, None],  # only the other front end listens
        [11.5, 11.53, None],
        [11.6, 11.61, "HTTP 503"],
    ]
    summary = paced_load.phases(requests, killed, serving)
    assert summary["requests"] == 7
    assert summary["phases"] == {
        "before the kill": {"requests": 1, "failed": 0},
        "in flight at the kill": {"requests": 2, "failed": 1},
        "sent before serving": {"requests": 2, "failed": 1},
        "sent after": {"requests": 2, "failed": 1},
    }
    assert summary["errors"] == {"ConnectionResetError": 1, "RemoteDisconnected": 1, "HTTP 503": 1}
    assert [round(f["ms_after_kill"]) for f in summary["failures"]] == [12, 18, 1610]
    assert summary["last_failure_ms"] == pytest.approx(1610)
    assert summary["slowest_ms"] == pytest.approx(210)
    assert paced_load.phases([[1.0, 1.1, None]], killed, serving)["last_failure_ms"] is None


def _restart(
    taken: float, listening: float, cpu: float, requests: list[list], spare=(0.9, 0.6)
) -> dict:
    return {
        "victim": 100,
        "victim_age_s": 61.5,
        "replacement": 200,
        "replacement_was_spare": spare is not None,
        "restart_delay_s": 0.0,
        "kill_to_taken_s": taken,
        "taken_to_grpc_s": listening - 0.005,
        "taken_to_listening_s": listening,
        "kill_to_listening_s": taken + listening,
        "cpu_to_listening_s": cpu,
        "spare": 300 if spare else None,
        "kill_to_spare_spawn_s": taken + listening + 0.01 if spare else None,
        "spare_spawn_to_ready_s": spare[0] if spare else None,
        "spare_cpu_to_ready_s": spare[1] if spare else None,
        "busy_before": 0.05,
        "load": paced_load.phases(requests, 10.0, 10.0 + taken + listening),
    }


def test_restart_rows_give_median_and_max_and_every_failure():
    reset = "ConnectionResetError: [Errno 104] Connection reset by peer"
    restarts = [
        _restart(0.005, 0.030, 0.040, [[9.0, 9.1, None], [9.99, 10.01, reset]], (0.9, 0.6)),
        _restart(0.010, 0.040, 0.050, [[9.0, 9.1, None]], (1.1, 0.7)),
        # without a spare: a process started for the slot, no new spare
        _restart(0.008, 0.060, 0.060, [[10.001, 10.03, reset], [10.5, 10.6, None]], None),
    ]
    summary = restart_summary(restarts)
    assert summary["kill_to_listening_s"] == (pytest.approx(0.050), pytest.approx(0.068))
    assert summary["spare_spawn_to_ready_s"] == (pytest.approx(1.0), pytest.approx(1.1))
    assert summary["by_spare"] == 2
    assert summary["requests"] == 5
    assert summary["failed"]["in flight at the kill"] == 1
    assert summary["failed"]["sent before serving"] == 1
    assert summary["errors"] == {"ConnectionResetError": 2}
    assert summary["last_failure_ms"] == pytest.approx(30)
    report = {"restarts": restarts, "settings": {"restart": {"restarts": 3}}}
    serving_row, restart_row = restart_targets(report)
    assert serving_row == (
        "| a dead front end's replacement serving (kill → LISTEN on both ports) | well under "
        "1 s | median 50 ms (max 68 ms) over 3 restarts, 2 of them by the spare; the "
        "replacement's CPU meanwhile median 50 ms (max 60 ms); a new spare: spawn → ready for "
        "a slot median 1.00 s (max 1.10 s), its CPU by then median 0.65 s (max 0.70 s) |"
    )
    assert "3 of 3 killed front ends replaced" in restart_row
    assert "kill to serving median 50 ms (max 68 ms)" in restart_row
    assert "2 of 5 paced requests failed (1 in flight at the kill, 1 sent before" in restart_row
    assert "ConnectionResetError x2; the last 30 ms after its kill" in restart_row
    table = restart_table(restarts)
    assert len(table) == 2 + 3
    assert table[2].startswith(
        "| 1 | 100 (62 s) | 200 (the spare) | 0 s | 5 | 25 | 30 | 40 | 35 | 900 (600) | 2 "
    )
    assert "| 1 / 0 / 0 | ConnectionResetError x1 | 10 | 100 | 5% |" in table[2]
    assert table[4].startswith("| 3 | 100 (62 s) | 200 (new) | 0 s | 8 | 55 | 60 | 60 | 68 | — |")


def test_restart_rows_say_not_measured_without_restarts():
    rows = restart_targets({"settings": {}})
    assert rows[0] == "| a dead front end's replacement serving | well under 1 s | not measured |"
    assert rows[1].endswith("| not measured |")


def _capacity_row(
    concurrency: int, us: float, calls: float | None, batch: float | None, **extra
) -> dict:
    return {
        **extra,
        "concurrency": concurrency,
        "requests": 60_000,
        "rps": 10_000.0,
        "p50_ms": 1.25,
        "model_us_per_request": us,
        "model_cpu_share": us * 10_000 / 1e6,
        "calls_per_message": calls,
        "rows_per_model_call": batch,
        "busy_before": 0.02,
    }


def test_capacity_targets_hold_only_the_points_at_batch_eight_or_more():
    rows = [
        _capacity_row(1, 80.0, 1.0, 1.0),
        _capacity_row(8, 20.0, 7.5, 8.0),
        _capacity_row(128, 12.5, 120.0, 126.0),
        _capacity_row(64, 30.0, None, None),  # no batching figures: not a batch ≥ 8
        _capacity_row(64, 18.0, 8.0, 62.5, frontends=8),
        _capacity_row(64, 24.0, 8.0, 8.0, frontends=8, batch_cap=8),
    ]
    assert capacity_targets(rows) == [
        "| model process CPU per request, alone on a core, 8 callers | ≤ 25 µs at batch ≥ 8 "
        "(≥ 40k req/s) | 20.0 µs at batch 8.0, 7.5 calls per message: 50.0k req/s |",
        "| model process CPU per request, alone on a core, 128 callers | ≤ 25 µs at batch ≥ 8 "
        "(≥ 40k req/s) | 12.5 µs at batch 126.0, 120.0 calls per message: 80.0k req/s |",
        "| model process CPU per request, alone on a core, 8 connections, one 8-call message each "
        "| ≤ 25 µs at batch ≥ 8 (≥ 40k req/s) | 18.0 µs at batch 62.5, 8.0 calls per message: "
        "55.6k req/s |",
        "| model process CPU per request, alone on a core, 8 connections, one 8-call message each"
        ", batches of at most 8 rows | ≤ 25 µs at batch ≥ 8 (≥ 40k req/s) | 24.0 µs at batch "
        "8.0, 8.0 calls per message: 41.7k req/s |",
    ]


def _single_row(server: str, protocol: str, rps: float, batch: float | None = None) -> dict:
    return {
        "server": server,
        "protocol": protocol,
        "concurrency": 128,
        "rps": rps,
        "mean_batch": batch,
    }


def test_single_targets_name_each_batch_timeout_the_run_measured():
    noop_and_flask = [
        _single_row("noop-ceiling", "gRPC", 4000.0),
        _single_row("flask-naive", "REST", 500.0),
    ]
    zero = [
        _single_row("ours-batching", "REST", 3000.0, 60.0),
        _single_row("ours-batching", "gRPC", 2000.0, 1.8),
    ]
    five = [
        _single_row("ours-batching-5ms", "REST", 3500.0, 60.0),
        _single_row("ours-batching-5ms", "gRPC", 3200.0, 16.2),
    ]
    both = single_targets(noop_and_flask + zero + five, [128])
    assert both == [
        "| single core, REST c=128, timeout 0: batching vs flask-naive | ≥ 12x "
        "| 6.00x (3000 / 500 req/s) |",
        "| single core, gRPC c=128, timeout 0: batching vs no-op gRPC ceiling | ≥ 0.8 "
        "| 0.50x (2000 / 4000 req/s) |",
        "| single core, gRPC rows per model call at c=128, timeout 0 | ≥ 16 | 1.8 |",
        "| single core, REST c=128, timeout 5 ms: batching vs flask-naive | ≥ 12x "
        "| 7.00x (3500 / 500 req/s) |",
        "| single core, gRPC c=128, timeout 5 ms: batching vs no-op gRPC ceiling | ≥ 0.8 "
        "| 0.80x (3200 / 4000 req/s) |",
        "| single core, gRPC rows per model call at c=128, timeout 5 ms | ≥ 16 | 16.2 |",
    ]
    older = single_targets(noop_and_flask + zero, [128])  # a run from before the 5 ms server
    assert older == both[:3]
    assert single_targets([], [128]) == []


def test_capacity_table_gives_what_one_model_process_serves_at_each_cost():
    table = capacity_table([_capacity_row(1, 80.0, 1.0, 1.0), _capacity_row(64, 0.0, 60.0, 60.0)])
    assert len(table) == 2 + 2
    assert table[2] == "| 1 caller | 10000 | 1.25 | 1.0 | 1.0 | 80.0 | 80% | 12.5k req/s | 2% |"
    assert table[3].endswith("| 0.0 | 0% | ∞ req/s | 2% |")  # below the clock tick: no bound


def _running_child(env: dict[str, str]) -> subprocess.Popen:
    """A child that has exec'd (until then /proc shows the parent's environment), running
    until its stdin closes."""
    script = "import sys; print('ready', flush=True); sys.stdin.read()"
    child = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
    )
    assert child.stdout.readline() == b"ready\n"
    return child


def test_the_capacity_driver_finds_the_model_socket_in_the_processs_environment(tmp_path: Path):
    env = {**os.environ, MODEL_SOCKET_ENV: str(tmp_path / "model.sock")}
    with _running_child(env) as child:
        assert model_socket(child.pid) == str(tmp_path / "model.sock")
        child.stdin.close()
    env.pop(MODEL_SOCKET_ENV)
    with _running_child(env) as child:
        with pytest.raises(RuntimeError, match="not a model process"):
            model_socket(child.pid)
        child.stdin.close()
