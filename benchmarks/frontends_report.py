"""Turns benchmarks/results/frontends/results.json into results.md (tables with ratios to the
in-process N=0 server, issue 14's targets, the many-core projection) and frontends.png.

    .venv/bin/python -m benchmarks.frontends_report benchmarks/results/frontends/results.json

Kept apart from the runner (benchmarks.frontends) so a table can be redrawn without a rerun and
its arithmetic tested without TensorFlow. The plot is drawn by benchmarks/plot_frontends.py in
the "tools" venv (matplotlib is not a project dependency).
"""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
from pathlib import Path

from benchmarks.paced_load import PHASES

ROOT = Path(__file__).resolve().parents[1]
TOOLS_PY = ROOT / "benchmarks" / "work" / "venv-tools" / "bin" / "python"
PROJECTED_CORES = (8, 16, 64)
MIB = 2**20


def projection(frontend_us: float, model_us: float, cores: int) -> tuple[float, str]:
    """Requests/s the design reaches on ``cores`` from measured CPU costs per request, and the
    part that bounds it: front ends scale over ``cores - 1`` (one core is left to the model
    process), the model process is one process and cannot use more than one core.
    A cost of 0 (below the clock-tick resolution) never bounds."""
    frontend_limit = (cores - 1) * 1e6 / frontend_us if frontend_us > 0 else math.inf
    model_limit = 1e6 / model_us if model_us > 0 else math.inf
    if frontend_limit <= model_limit:
        return frontend_limit, "front ends"
    return model_limit, "model process"


# The single-core part's in-process servers (benchmarks.run's names), by the batch timeout each
# names in the targets: TF Serving's default, and 5 ms (its batching guide tunes the timeout in
# 1-10 ms) since gRPC calls reach the batcher one at a time and only a timeout lets them share a
# model call (benchmarks/results/grpc-batching).
SINGLE_TIMEOUTS = {"ours-batching": "timeout 0", "ours-batching-5ms": "timeout 5 ms"}


def _find(points: list[dict], **key) -> dict | None:
    for point in points:
        if all(point.get(k) == v for k, v in key.items()):
            return point
    return None


def _ratio(a: dict | None, b: dict | None) -> str:
    if a is None or b is None or not b["rps"]:
        return "not measured"
    return f"{a['rps'] / b['rps']:.2f}x ({a['rps']:.0f} / {b['rps']:.0f} req/s)"


def _us(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


def _rate(value: float) -> str:
    return "∞" if math.isinf(value) else f"{value / 1000:.1f}k"


def _split(point: dict | None) -> str:
    """How the front ends shared the work ("—" for fewer than two): ``SO_REUSEPORT`` places
    each client connection on one of them, so h2load's four gRPC connections may land 2/2, 3/1
    or 4/0 from one run to the next."""
    shares = (point or {}).get("frontend_shares") or []
    return "/".join(f"{share:.0%}" for share in shares) if len(shares) > 1 else "—"


def _ours(points: list[dict]) -> list[dict]:
    return [p for p in points if p["frontends"] is not None]


def scaling_table(points: list[dict], concurrency: list[int]) -> list[str]:
    lines = [
        "| server | protocol | c | req/s | vs N=0 | p50 ms | p99 ms | errors | rows/model call "
        "| model µs/req | front ends µs/req | parent+other µs/req | total µs/req "
        "| front ends' CPU split | busy before |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for point in _ours(points):
        if point["concurrency"] not in concurrency:
            continue
        base = _find(
            points, frontends=0, protocol=point["protocol"], concurrency=point["concurrency"]
        )
        ratio = (
            f"{point['rps'] / base['rps']:.2f}x"
            if base and base["rps"] and point["frontends"] is not None
            else "—"
        )
        cost = point["cpu_us_per_request"] or {}
        batch = f"{point['mean_batch']:.1f}" if point["mean_batch"] else "—"
        other = None
        if cost:
            other = cost.get("parent", 0.0) + cost.get("other", 0.0)
        lines.append(
            f"| {point['server']} | {point['protocol']} | {point['concurrency']} "
            f"| {point['rps']:.0f} | {ratio} | {point['p50_ms']:.2f} | {point['p99_ms']:.2f} "
            f"| {point['errors']} | {batch} | {_us(cost.get('model'))} "
            f"| {_us(cost.get('frontend'))} | {_us(other)} | {_us(sum(cost.values()) if cost else None)} "  # noqa: E501
            f"| {_split(point)} | {point['busy_before']:.0%} |"
        )
    return lines


def projection_table(points: list[dict], concurrency: int) -> list[str]:
    header = " | ".join(f"{cores} cores" for cores in PROJECTED_CORES)
    lines = [
        f"| measured at (c={concurrency}) | protocol | model µs/req | front ends µs/req | {header} |",  # noqa: E501
        "|---|---|---|---|" + "---|" * len(PROJECTED_CORES),
    ]
    for point in _ours(points):
        cost = point["cpu_us_per_request"]
        if point["concurrency"] != concurrency or not cost:
            continue
        if point["frontends"] == 0:
            total = sum(cost.values())
            cells = [f"{_rate(1e6 / total)} (one process)" if total else "—"] * len(PROJECTED_CORES)
            lines.append(
                f"| {point['server']} (in-process) | {point['protocol']} | {_us(total)} (whole) "
                f"| — | " + " | ".join(cells) + " |"
            )
            continue
        if "model" not in cost or "frontend" not in cost:
            continue
        cells = []
        for cores in PROJECTED_CORES:
            rate, bound = projection(cost["frontend"], cost["model"], cores)
            cells.append(f"{_rate(rate)} ({bound})")
        lines.append(
            f"| {point['server']} | {point['protocol']} | {_us(cost['model'])} "
            f"| {_us(cost['frontend'])} | " + " | ".join(cells) + " |"
        )
    return lines


def capacity_table(rows: list[dict]) -> list[str]:
    lines = [
        "| fed by | req/s (load generator) | p50 ms | calls per message | rows per model call "
        "| model µs/req | model process CPU | one model process at this cost | busy before |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        us = row["model_us_per_request"]
        lines.append(
            f"| {feeders(row)} | {row['rps']:.0f} | {row['p50_ms']:.2f} "
            f"| {_us(row['calls_per_message'])} | {_us(row['rows_per_model_call'])} "
            f"| {us:.1f} | {row['model_cpu_share']:.0%} | {_rate(1e6 / us if us else math.inf)} "
            f"req/s | {row['busy_before']:.0%} |"
        )
    return lines


def feeders(row: dict) -> str:
    """Who fed a capacity point: callers, or (``frontends``) connections that each kept one
    message of several calls in flight, as busy front ends do (benchmarks.model_capacity)."""
    frontends = row.get("frontends")
    if frontends:
        calls = row["concurrency"] // frontends
        fed = f"{frontends} connections, one {calls}-call message each"
        cap = row.get("batch_cap")
        return fed if cap is None else f"{fed}, batches of at most {cap} rows"
    callers = row["concurrency"]
    return f"{callers} caller{'s' if callers != 1 else ''}"


def capacity_targets(rows: list[dict]) -> list[str]:
    """The capacity points that meet the target's condition (batch ≥ 8), against it."""
    lines = []
    for row in rows:
        batch = row["rows_per_model_call"]
        if batch is None or batch < 8:
            continue
        us = row["model_us_per_request"]
        calls = _us(row["calls_per_message"])
        lines.append(
            f"| model process CPU per request, alone on a core, {feeders(row)} "
            f"| ≤ 25 µs at batch ≥ 8 (≥ 40k req/s) | {us:.1f} µs at batch {batch:.1f}, "
            f"{calls} calls per message: {_rate(1e6 / us)} req/s |"
        )
    return lines


def hop_table(points: list[dict], concurrency: int) -> list[str]:
    lines = [
        f"| server | protocol | p50 ms at c={concurrency} | vs N=0 | p99 ms "
        "| server mean ms | model call mean ms | outside the model call ms | busy before |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for point in _ours(points):
        if point["concurrency"] != concurrency:
            continue
        base = _find(points, frontends=0, protocol=point["protocol"], concurrency=concurrency)
        if point["frontends"] == 0:
            delta = "baseline"
        else:
            delta = f"{point['p50_ms'] - base['p50_ms']:+.3f} ms" if base else "—"
        server_ms = point.get("server_ms")
        if server_ms:
            split = (
                f"{server_ms['request']:.3f} | {server_ms['runtime']:.3f} "
                f"| {server_ms['request'] - server_ms['runtime']:.3f}"
            )
        else:
            split = "— | — | —"
        lines.append(
            f"| {point['server']} | {point['protocol']} | {point['p50_ms']:.3f} | {delta} "
            f"| {point['p99_ms']:.2f} | {split} | {point['busy_before']:.0%} |"
        )
    return lines


def memory_totals(memory: list[dict]) -> dict[int, dict[str, float]]:
    """Per server (N): VmRSS and Pss per role and in all (bytes)."""
    totals: dict[int, dict[str, float]] = {}
    for entry in memory:
        sums: dict[str, float] = {}
        for process in entry["processes"]:
            sums[process["role"]] = sums.get(process["role"], 0) + process["rss_bytes"]
            sums["all"] = sums.get("all", 0) + process["rss_bytes"]
            sums["pss"] = sums.get("pss", 0) + (process["pss_bytes"] or 0)
        totals[entry["frontends"]] = sums
    return totals


def memory_table(memory: list[dict]) -> list[str]:
    lines = [
        "| server | process | pid | VmRSS MB | Pss MB |",
        "|---|---|---|---|---|",
    ]
    for entry in memory:
        for process in entry["processes"]:
            pss = process["pss_bytes"]
            lines.append(
                f"| {entry['server']} | {process['role']} | {process['pid']} "
                f"| {process['rss_bytes'] / MIB:.0f} | {'—' if pss is None else f'{pss / MIB:.0f}'} |"  # noqa: E501
            )
    totals = memory_totals(memory)
    lines += [
        "",
        "| server | VmRSS MB (all processes) | vs N=0 | Pss MB (all) |",
        "|---|---|---|---|",
    ]
    for n, sums in sorted(totals.items()):
        added = f"{(sums['all'] - totals[0]['all']) / MIB:+.0f} MB" if 0 in totals else "—"
        lines.append(f"| N={n} | {sums['all'] / MIB:.0f} | {added} | {sums['pss'] / MIB:.0f} |")
    return lines


def single_table(rows: list[dict]) -> list[str]:
    lines = [
        "| server | protocol | c | req/s | p50 ms | p99 ms | errors | rows/model call | busy before |",  # noqa: E501
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in sorted(rows, key=lambda r: (r["protocol"], r["server"], r["concurrency"])):
        batch = f"{row['mean_batch']:.1f}" if row["mean_batch"] else "—"
        lines.append(
            f"| {row['server']} | {row['protocol']} | {row['concurrency']} | {row['rps']:.0f} "
            f"| {row['p50_ms']:.2f} | {row['p99_ms']:.2f} | {row['errors']} | {batch} "
            f"| {row['busy_before']:.0%} |"
        )
    return lines


def peer_table(points: list[dict], report: dict) -> list[str]:
    lines = [
        "| peer | protocol | c | req/s | ours (same N) / peer | ours (largest N) / peer "
        "| p50 ms | p99 ms | errors | CPU µs/req (all processes) | busy before |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    ours = _ours(points)
    largest = max((p["frontends"] for p in ours), default=None)
    for point in points:
        if point["frontends"] is not None:
            continue
        key = {"protocol": point["protocol"], "concurrency": point["concurrency"]}
        same = _find(ours, frontends=point.get("peer_workers"), **key)
        top = _find(ours, frontends=largest, **key)
        cost = point["cpu_us_per_request"]
        lines.append(
            f"| {point['server']} | {point['protocol']} | {point['concurrency']} "
            f"| {point['rps']:.0f} | {_ratio(same, point) if point.get('peer_workers') is not None else '—'} "  # noqa: E501
            f"| {_ratio(top, point)} | {point['p50_ms']:.2f} | {point['p99_ms']:.2f} "
            f"| {point['errors']} | {_us(sum(cost.values()) if cost else None)} "
            f"| {point['busy_before']:.0%} |"
        )
    for name, reason in report.get("not_run", {}).items():
        if name == "flask-naive":
            continue  # a single-core server, listed there
        lines.append(f"| {name} | — | — | not run: {reason} | — | — | — | — | — | — | — |")
    return lines


def kinds(errors: dict[str, int]) -> str:
    """``{"ConnectionResetError": 2}`` -> ``ConnectionResetError x2``."""
    return ", ".join(f"{kind} x{count}" for kind, count in sorted(errors.items()))


def restart_summary(restarts: list[dict]) -> dict:
    """Medians and maxima of the restart times (s) and the load's requests and failures summed
    over every restart, by phase (benchmarks.paced_load.PHASES) and by error."""
    summary: dict = {
        "count": len(restarts),
        "requests": 0,
        "failed": {},
        "errors": {},
        "last_failure_ms": None,
    }
    for key in (
        "kill_to_taken_s",
        "taken_to_listening_s",
        "cpu_to_listening_s",
        "kill_to_listening_s",
        "spare_spawn_to_ready_s",
        "spare_cpu_to_ready_s",
    ):
        values = [r[key] for r in restarts if r[key] is not None]  # no new spare: None
        summary[key] = (statistics.median(values), max(values)) if values else None
    summary["by_spare"] = sum(r["replacement_was_spare"] for r in restarts)
    for restart in restarts:
        load = restart["load"]
        summary["requests"] += load["requests"]
        for phase, counts in load["phases"].items():
            summary["failed"][phase] = summary["failed"].get(phase, 0) + counts["failed"]
        for kind, count in load["errors"].items():
            summary["errors"][kind] = summary["errors"].get(kind, 0) + count
        if load["last_failure_ms"] is not None:
            last = summary["last_failure_ms"]
            summary["last_failure_ms"] = max(last or 0.0, load["last_failure_ms"])
    return summary


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.0f}"


def _median_max(pair: tuple[float, float] | None) -> str:
    return "not measured" if pair is None else f"median {pair[0]:.2f} s (max {pair[1]:.2f} s)"


def _median_max_ms(pair: tuple[float, float]) -> str:
    return f"median {pair[0] * 1000:.0f} ms (max {pair[1] * 1000:.0f} ms)"


def restart_table(restarts: list[dict]) -> list[str]:
    lines = [
        "| # | killed pid (had served) | replacement | back-off | kill → slot taken ms "
        "| → gRPC listening ms | → both listening ms | its CPU meanwhile ms "
        "| kill → both listening ms | new spare: spawn → ready ms (its CPU ms) | requests "
        "| failed: in flight at kill / sent before serving / after | errors "
        "| last failure, ms after kill | slowest answer ms | busy before |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for index, r in enumerate(restarts, 1):
        phases = r["load"]["phases"]
        failed = " / ".join(
            str(phases[name]["failed"])
            for name in PHASES[1:]  # from the kill on; failures before it are noted apart
        )
        if phases["before the kill"]["failed"]:
            failed += f" (and {phases['before the kill']['failed']} before the kill)"
        delay = "—" if r["restart_delay_s"] is None else f"{r['restart_delay_s']:.0f} s"
        ready, ready_cpu = r["spare_spawn_to_ready_s"], r["spare_cpu_to_ready_s"]
        spare = "—" if ready is None else f"{ready * 1000:.0f} ({ready_cpu * 1000:.0f})"
        kind = "the spare" if r["replacement_was_spare"] else "new"
        lines.append(
            f"| {index} | {r['victim']} ({r['victim_age_s']:.0f} s) | {r['replacement']} "
            f"({kind}) | {delay} | {r['kill_to_taken_s'] * 1000:.0f} "
            f"| {r['taken_to_grpc_s'] * 1000:.0f} | {r['taken_to_listening_s'] * 1000:.0f} "
            f"| {r['cpu_to_listening_s'] * 1000:.0f} | {r['kill_to_listening_s'] * 1000:.0f} "
            f"| {spare} | {r['load']['requests']} | {failed} "
            f"| {kinds(r['load']['errors']) or '—'} | {_ms(r['load']['last_failure_ms'])} "
            f"| {r['load']['slowest_ms']:.0f} "
            f"| {r['busy_before']:.0%} |"
        )
    return lines


def restart_targets(report: dict) -> list[str]:
    restarts = report.get("restarts", [])
    if not restarts:
        return [
            "| a dead front end's replacement serving | well under 1 s | not measured |",
            "| a front end that dies is restarted, the others keep serving | restarted; only "
            "requests on the dead one fail | not measured |",
        ]
    summary = restart_summary(restarts)
    cpu = summary["cpu_to_listening_s"]
    failed = summary["failed"]
    lost = sum(failed.values())
    spare = summary["spare_spawn_to_ready_s"]
    spare_cpu = summary["spare_cpu_to_ready_s"]
    return [
        "| a dead front end's replacement serving (kill → LISTEN on both ports) | well under "
        f"1 s | {_median_max_ms(summary['kill_to_listening_s'])} over {summary['count']} "
        f"restarts, {summary['by_spare']} of them by the spare; the replacement's CPU "
        f"meanwhile median {cpu[0] * 1000:.0f} ms (max {cpu[1] * 1000:.0f} ms)"
        + (
            f"; a new spare: spawn → ready for a slot {_median_max(spare)}, its CPU by then "
            f"median {spare_cpu[0]:.2f} s (max {spare_cpu[1]:.2f} s)"
            if spare
            else ""
        )
        + " |",
        "| a front end that dies is restarted, the others keep serving | restarted; only "
        f"requests on the dead one fail | {summary['count']} of "
        f"{report['settings']['restart']['restarts']} killed front ends replaced, kill to "
        f"serving {_median_max_ms(summary['kill_to_listening_s'])}; {lost} of "
        f"{summary['requests']} paced requests failed ({failed.get('in flight at the kill', 0)} "
        f"in flight at the kill, {failed.get('sent before serving', 0)} sent before the "
        f"replacement served, {failed.get('sent after', 0)} after"
        + (
            f", {failed['before the kill']} before the kill"
            if failed.get("before the kill")
            else ""
        )
        + (
            f"; {kinds(summary['errors'])}; the last {summary['last_failure_ms']:.0f} ms after "
            "its kill"
            if lost
            else ""
        )
        + ") |",
    ]


def targets(report: dict) -> list[str]:
    """Issue 14's targets, each with what was measured here (or why not)."""
    points, settings = report["points"], report["settings"]
    c = settings["concurrency"][-1]
    hop_c = settings["hop_concurrency"]
    lines = ["| target | goal | measured |", "|---|---|---|"]
    for protocol in ("REST", "gRPC"):
        two = _find(points, frontends=2, protocol=protocol, concurrency=c)
        split = _split(two)
        lines.append(
            f"| scaling, {protocol} c={c}: N=2 / N=0 (server on 2 cores) | ≥ 1.5x | "
            f"{_ratio(two, _find(points, frontends=0, protocol=protocol, concurrency=c))}"
            + (f"; front ends' CPU split {split}" if split != "—" else "")
            + " |"
        )
    for point in _ours(points):
        cost = point["cpu_us_per_request"] or {}
        if point["frontends"] and point["concurrency"] == c and "model" in cost:
            batch = f"{point['mean_batch']:.1f}" if point["mean_batch"] else "unknown"
            lines.append(
                f"| model process CPU per request, {point['server']} {point['protocol']} "
                f"| ≤ 25 µs at batch ≥ 8 | {cost['model']:.1f} µs at batch {batch} "
                f"(front ends {cost.get('frontend', 0):.1f} µs) |"
            )
    lines += capacity_targets(report.get("capacity", []))
    for protocol in ("REST", "gRPC"):
        one = _find(points, frontends=1, protocol=protocol, concurrency=hop_c)
        zero = _find(points, frontends=0, protocol=protocol, concurrency=hop_c)
        measured = (
            f"{one['p50_ms'] - zero['p50_ms']:+.3f} ms ({one['p50_ms']:.3f} vs "
            f"{zero['p50_ms']:.3f} ms)"
            if one and zero
            else "not measured"
        )
        lines.append(f"| hop, {protocol} p50 at c={hop_c}: N=1 - N=0 | ≤ +0.1 ms | {measured} |")
    totals = memory_totals(report["memory"])
    n_mem = settings["memory_frontends"]
    if n_mem and 0 in totals and n_mem in totals:
        added = totals[n_mem]["all"] - totals[0]["all"]
        measured = (
            f"{added / MIB:+.0f} MB VmRSS ({totals[n_mem]['all'] / MIB:.0f} vs "
            f"{totals[0]['all'] / MIB:.0f} MB)"
        )
    else:
        measured = "not measured"
    n_goal = n_mem or 8  # issue 14's figure when no N >= 1 server was started
    lines.append(
        f"| memory: {n_goal} front ends add to the N=0 server | ≤ {n_goal} x 120 MB "
        f"= {n_goal * 120} MB | {measured} |"
    )
    ours = _ours(points)
    largest = max((p["frontends"] for p in ours), default=None)
    for point in points:
        if point["frontends"] is not None:
            continue
        key = {"protocol": point["protocol"], "concurrency": point["concurrency"]}
        if point["server"].startswith("pytriton") and largest is not None:
            lines.append(
                f"| {point['protocol']} c={point['concurrency']}: ours N={largest} vs "
                f"{point['server']} (both on 2 cores) | > 1x "
                f"| {_ratio(_find(ours, frontends=largest, **key), point)} |"
            )
        elif point.get("peer_workers") is not None:
            n = point["peer_workers"]
            lines.append(
                f"| {point['protocol']} c={point['concurrency']}: ours N={n} vs "
                f"{point['server']} (both on 2 cores) | ≥ 2x "
                f"| {_ratio(_find(ours, frontends=n, **key), point)} |"
            )
    lines += restart_targets(report)
    lines += single_targets(report["single"], settings["single_concurrency"])
    return lines


def single_targets(single: list[dict], concurrencies: list[int]) -> list[str]:
    """The single-core targets, per in-process server the run measured (SINGLE_TIMEOUTS)."""

    def row(server: str, protocol: str, concurrency: int) -> dict | None:
        return _find(single, server=server, protocol=protocol, concurrency=concurrency)

    lines: list[str] = []
    for concurrency in concurrencies if single else []:
        for server, timeout in SINGLE_TIMEOUTS.items():
            if not any(r["server"] == server for r in single):
                continue  # a run from before the variant existed
            lines.append(
                f"| single core, REST c={concurrency}, {timeout}: batching vs flask-naive | ≥ 12x "
                f"| {_ratio(row(server, 'REST', concurrency), row('flask-naive', 'REST', concurrency))} |"  # noqa: E501
            )
            lines.append(
                f"| single core, gRPC c={concurrency}, {timeout}: batching vs no-op gRPC ceiling "
                f"| ≥ 0.8 | {_ratio(row(server, 'gRPC', concurrency), row('noop-ceiling', 'gRPC', concurrency))} |"  # noqa: E501
            )
            grpc = row(server, "gRPC", concurrency)
            if concurrency >= 128 and grpc:
                batch = f"{grpc['mean_batch']:.1f}" if grpc["mean_batch"] else "unknown"
                lines.append(
                    f"| single core, gRPC rows per model call at c={concurrency}, {timeout} "
                    f"| ≥ 16 | {batch} |"
                )
    return lines


def markdown(report: dict) -> str:
    settings = report["settings"]
    points = report["points"]
    machine = report["machine"]
    lines = [
        "# Front-end processes (issue 14)",
        "",
        f"Run {report['started']} - {report['finished']} with `{settings['command']}`; raw "
        "data in `results.json`. Each figure comes from one run on this machine, side by side; "
        "ratios are against the in-process server (`--frontend_processes=0`, or no flag where "
        "the server has none) measured in the same run.",
        "",
        f"Machine: {machine['cpu']}, {machine['cores']} cores, {machine['memory_gib']} GiB, "
        f"{machine['gpu']}. Model: {settings['model']}; batching as benchmarks.run's "
        f"ours-batching; {settings['seconds']} s per point after {settings['warmup_seconds']} s "
        f"warm-up. Server under `taskset -c {settings['server_cpus']}` (single-core rows: "
        f"`taskset -c {settings['single_server_cpu']}`), load generator under `taskset -c "
        f"{settings['client_cpu']}`. *busy before* is the share of both CPUs other processes "
        "used just before a point; rows taken while the shared machine was busy understate "
        "the server measured then.",
        "",
        f"`--frontend_processes` supported by this tree's server: "
        f"{'yes' if report['flag_supported'] else 'no (only N=0, the in-process server, can run)'}.",  # noqa: E501
        "",
        "## Targets",
        "",
        *targets(report),
        "",
        "![front-end processes](frontends.png)",
    ]
    if _ours(points):
        lines += [
            "",
            "## Throughput and CPU per request (server on both cores)",
            "",
            "CPU per request: utime + stime from `/proc/<pid>/stat` of each process of the "
            "server's tree, read after the warm-up and after the measured run, divided by the "
            "requests the load generator completed. *parent* is the process started (the whole "
            "server at N=0, the supervisor otherwise). Rows per model call: "
            "`batching:input_batch_size_sum / wrapped_run_count` over the measured run.",
            "",
            *scaling_table(points, settings["concurrency"]),
        ]
        c = settings["concurrency"][-1]
        lines += [
            "",
            "## Projection to larger hosts",
            "",
            "From the CPU costs measured above: front ends spread over cores - 1, the model "
            "process is one process, so req/s = min((cores - 1) x 10⁶ / front-end µs, 10⁶ / "
            "model µs); the smaller term names the part that bounds it. The in-process server "
            "is one process whatever the host: 10⁶ / its µs per request. The supervisor's and "
            "other helpers' CPU (shown above) is not in the projection.",
            "",
            *projection_table(points, c),
            "",
            "## Process hop latency",
            "",
            "*server mean*: the server's own `request_latency` (from receiving a call to "
            "answering it, in the process that received it); *model call*: its "
            "`runtime_latency` (batch queue, batch thread and the model, in the model "
            "process); the difference is what a call spends outside the model call: "
            "decoding and encoding, and with front ends the message each way.",
            "",
            *hop_table(points, settings["hop_concurrency"]),
        ]
    if report.get("capacity"):
        lines += [
            "",
            "## The model process alone",
            "",
            "benchmarks.model_capacity: a `--frontend_processes=1` server on CPU "
            f"{settings['single_server_cpu']} (its front end idle), and on CPU "
            f"{settings['client_cpu']} a front end's own client code (`RemoteDataplane`, its "
            "coalescer, the request context that forwards each call's latency sample) "
            "connected to the model process as one more front end, its callers sending "
            "one-row predictions in a loop. Unlike the runs above, nothing competes with the "
            "model process for its core and its calls arrive as coalesced as one fast front "
            "end sends them. req/s is what the one-core load generator reached; *model "
            "process CPU* is the share of its core the model process used meanwhile, and the "
            "last column is 10⁶ / its µs per request. The *connections* row keeps one message "
            "of several calls in flight on each of several connections, as that many busy "
            "front ends do: their messages meet in the batch queue (rows per model call), "
            "where one caller's messages one at a time each find the model process idle. "
            "The *batches of at most* row is the same load on a server whose batches hold "
            "at most that many rows (its own server, `max_batch_size` and "
            "`allowed_batch_sizes` capped): every message is a model call of its own, and "
            "the next message is often already waiting (*model process CPU* says how busy "
            "it was). That is the nearest point to the target's condition where one model "
            "process bounds a host: batches of 8, work queued. The callers' rows leave it "
            "idle between messages, and each wake-up costs it CPU that a saturated model "
            "process does not pay.",
            "",
            *capacity_table(report["capacity"]),
        ]
    if report["memory"]:
        lines += [
            "",
            "## Memory (after the load runs)",
            "",
            "VmRSS counts shared pages in every process that maps them; Pss splits them.",
            "",
            *memory_table(report["memory"]),
        ]
    if report["single"]:
        lines += [
            "",
            "## Single core, in-process server (benchmarks.run's servers and method)",
            "",
            *single_table(report["single"]),
        ]
        if "flask-naive" in report.get("not_run", {}):
            lines += ["", f"flask-naive not run: {report['not_run']['flask-naive']}."]
    if any(p["frontends"] is None for p in points) or set(report.get("not_run", {})) - {
        "flask-naive"
    }:
        lines += [
            "",
            "## Peers at equal CPU allowance (both cores)",
            "",
            *peer_table(points, report),
        ]
    if report.get("restarts"):
        restart = settings["restart"]
        lines += [
            "",
            "## Front-end restart",
            "",
            f"On the `--frontend_processes={restart['frontends']}` server (as above): "
            f"{restart['restarts']} times, the front end that had served longest, once it "
            f"had served {restart['restart_after_s']:.0f} s in its slot, was SIGKILLed; the "
            "times come from `/proc`, "
            f"read every {restart['poll_s'] * 1000:.0f} ms from the load generator's CPU: "
            "*slot taken* is the replacement first seen named after the killed front end's "
            "slot in `/proc/<pid>/comm` (the spare renames itself `frontend-<slot>` as it "
            "reads its slot; a process started for it, with `--frontend_spare=0`, counts from "
            "its pid first seen), *listening* its socket inodes (`/proc/<pid>/fd`) first seen "
            "LISTEN on the port in `/proc/net/tcp`. A front end binds its ports only after its "
            "hello with the model process has brought it the model metadata, gRPC first, then "
            "REST: once both listen, it can answer both. *back-off* is the delay the "
            "supervisor logged for the restart (0 for a front end that had served a minute). The "
            "*new spare* is started once the slot is taken; *ready* is when it names itself "
            "`frontend-spare` (its imports done, waiting for a slot).",
            "",
            f"Load meanwhile: benchmarks.paced_load, {restart['load_rate']:.0f} REST "
            f"predictions/s from {restart['load_clients']} threads, each on a new connection "
            "(the kernel spreads new connections over the listening front ends), from 1 s "
            "before the kill to 1 s after the replacement listens. Failures are counted where "
            "they fell: in flight at the kill (on the killed front end, or queued on its "
            "listening socket: lost with it), sent before the replacement served (only the "
            "other front end listened), sent after. A SIGKILLed process takes some "
            "milliseconds to go, and connections made meanwhile still reach its listening "
            "socket: a request sent just after the kill can be lost with it too (see the last "
            "failure's time after the kill). "
            f"`net.ipv4.tcp_migrate_req` was {restart['tcp_migrate_req']} (1 hands connections "
            "queued on a closed listener to the others).",
            "",
            *restart_table(report["restarts"]),
        ]
    noted = [p for p in points if p.get("notes")]
    if noted:
        lines += ["", "## Processes that started or ended during a measured run", ""]
        lines += [
            f"- {p['server']} {p['protocol']} c={p['concurrency']}: {'; '.join(p['notes'])}"
            for p in noted
        ]
    if report.get("failures"):
        lines += ["", "## Failures", ""]
        lines += [f"- **{name}**: {text}" for name, text in report["failures"].items()]
    lines += ["", "## Settings", ""]
    lines += [f"- **{name}**: {text}" for name, text in settings["servers"].items()]
    lines += ["", "Versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items())]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    path = Path(argv[0]) if argv else ROOT / "benchmarks" / "results" / "frontends" / "results.json"
    report = json.loads(path.read_text())
    out = path.parent / "results.md"
    out.write_text(markdown(report))
    print(out.read_text())
    print(f"wrote {out}")
    if TOOLS_PY.exists():
        subprocess.run(
            [str(TOOLS_PY), "-m", "benchmarks.plot_frontends", str(path)], cwd=ROOT, check=True
        )
    else:
        print("no benchmarks/work/venv-tools: run benchmarks/install.sh to draw the plot")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
