"""``python -m serving.metadata.lineage``: what made a served model, where it ran, how it does.

    python -m serving.metadata.lineage --metadata_connection=sqlite:///w/metadata.sqlite \\
        version demo 1700000000 [--graph lineage.svg]
    ... versions demo          every version ever served, servers, live metrics
    ... server host:8501       what a server loaded and when, what is live now
    ... diff demo V1 V2        pipeline run, data, blessings, servers side by side

Tables by default, ``--json`` for scripts. ``--graph`` writes Graphviz DOT and renders it to
PNG/SVG when ``dot`` is installed (Debian: ``apt-get install graphviz``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from typing import Any

from serving.metadata.config import MetadataConfigError, parse_connection


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [[("" if v is None else str(v)) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]

    def line(values: list[str]) -> str:
        return "  ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, cells)])


def _metrics_text(metrics: dict[str, Any]) -> str:
    keys = ("accuracy", "auc", "mae", "rmse")
    shown = [f"{k}={metrics[k]:.3f}" for k in keys if isinstance(metrics.get(k), float)]
    counts = f"labeled={metrics.get('num_labeled', 0)}/{metrics.get('num_predictions', 0)}"
    return " ".join([*shown, counts])


def format_version(view: dict[str, Any]) -> str:
    pushed = view["pushed_model"]
    props = pushed["properties"]
    lines = [
        f"Model {view['model']} version {view['version']}",
        f"  pushed to      {props.get('pushed_destination', pushed['uri'])}",
        f"  pushed at      {pushed['pushed_at'] or '-'}"
        + ("  (external: not pushed by a pipeline)" if pushed["external"] else ""),
        f"  pipeline       {view['pipeline'] or '-'}",
        f"  pipeline run   {view['pipeline_run'] or '-'}",
    ]
    for trainer in view["trainer"]:
        lines.append(f"  trainer        #{trainer['id']} {trainer['state']} {trainer['updated']}")
    for examples in view["examples"]:
        lines.append(f"  examples       #{examples['id']} {examples['uri']}")
    lines.extend(_trained_on_lines(view.get("trained_on_feedback", [])))
    for blessing in view["blessings"]:
        lines.append(f"  {blessing['type']:<14} blessed={blessing['blessed']} {blessing['uri']}")
    lines.append("")
    lines.append(
        _table(
            ["server", "state", "loaded", "unloaded", "load ms"],
            [
                [
                    s["server_id"],
                    "STALE" if s.get("stale") else s["state"],
                    s["loaded"],
                    s["unloaded"],
                    f"{s['load_latency_ms']:.0f}" if s["load_latency_ms"] is not None else None,
                ]
                for s in view["servers"]
            ],
        )
        if view["servers"]
        else "  never loaded by a reporting server"
    )
    for metrics in view["live_metrics"]:
        lines.append(f"  live metrics   {metrics.get('server_id')}: {_metrics_text(metrics)}")
    for fed in view["feedback_examples"]:
        users = ", ".join(
            f"{x['type'].rsplit('.', 1)[-1]} in run {x['pipeline_run']}"
            + (f" -> version {', '.join(x['pushed_versions'])}" if x.get("pushed_versions") else "")
            for x in fed["consumed_by"]
        )
        rows = f" ({fed['num_examples']} rows)" if fed.get("num_examples") is not None else ""
        lines.append(f"  feedback data  {fed['uri']}{rows} -> {users or 'not used yet'}")
    return "\n".join(lines)


def _trained_on_lines(feedback: list[dict[str, Any]]) -> list[str]:
    """ "trained on feedback from versions ..." for a version whose Trainer read feedback."""
    if not feedback:
        return []
    versions = sorted({v for f in feedback for v in f["versions"]}, key=lambda v: (len(v), v))
    rows = sum(f.get("num_examples") or 0 for f in feedback)
    spans = ", ".join(str(f["span"]) for f in feedback if f.get("span") is not None)
    where = f" (span {spans})" if spans else ""
    if versions:
        return [
            f"  trained on     feedback from versions {', '.join(versions)}: {rows} rows{where}"
        ]
    return [f"  trained on     no new feedback{where}: base data only"]


def format_versions(model: str, versions: list[dict[str, Any]]) -> str:
    rows = [
        [
            v["version"],
            v["first_loaded"],
            v["last_unloaded"],
            ",".join(v["live_on"] + [f"{x} (stale)" for x in v.get("stale_on", [])]) or "-",
            ",".join(v["servers"]),
            v["failed"],
            "; ".join(_metrics_text(m) for m in v.get("live_metrics", [])) or "-",
        ]
        for v in versions
    ]
    header = ["version", "first loaded", "last unloaded", "live on", "servers", "failed", "metrics"]
    return f"Versions of {model} ever served\n" + _table(header, rows)


def format_server(view: dict[str, Any]) -> str:
    rows = [
        [
            e["model"],
            e["version"],
            "STALE" if e.get("stale") else e["state"],
            e["loaded"],
            e["unloaded"],
            e["error"] or "",
        ]
        for e in view["episodes"]
    ]
    head = (
        f"Server {view['server_id']} ({view['hostname']}, {view['runtime_version']}), "
        f"started {view['started']}; live: "
        + (", ".join(f"{e['model']}/{e['version']}" for e in view["live"]) or "nothing")
    )
    if view.get("stale"):
        head += (
            f"\nSTALE: no heartbeat since {view['last_heartbeat']} (every "
            f"{view['heartbeat_interval_s']:g} s expected); still recorded as loaded: "
            + (", ".join(f"{e['model']}/{e['version']}" for e in view["stale_loads"]) or "-")
        )
    return head + "\n" + _table(["model", "version", "state", "loaded", "unloaded", "error"], rows)


def format_diff(view: dict[str, Any]) -> str:
    first, second = view["versions"]
    rows = [[f["field"], f[first], f[second], "" if f["same"] else "<>"] for f in view["fields"]]
    return f"Model {view['model']}: {first} vs {second}\n" + _table(["", first, second, ""], rows)


def to_dot(view: dict[str, Any]) -> str:
    graph = view["graph"]
    lines = ["digraph lineage {", "  rankdir=LR;", '  node [fontname="Helvetica", fontsize=10];']
    for a in graph["artifacts"]:
        label = f"{a['type']} #{a['id']}\\n{os.path.basename(a['uri'].rstrip('/')) or ''}"
        lines.append(f'  a{a["id"]} [shape=ellipse, label="{label}"];')
    for x in graph["executions"]:
        name = x["type"].rsplit(".", 1)[-1]
        extra = x["properties"].get("server_id") or ""
        lines.append(
            f'  e{x["id"]} [shape=box, style=rounded, label="{name} #{x["id"]}\\n'
            f'{x["state"]} {extra}"];'
        )
    for source, target, key in graph["edges"]:
        lines.append(f'  {source} -> {target} [label="{key}", fontsize=8];')
    lines.append("}")
    return "\n".join(lines) + "\n"


def write_graph(view: dict[str, Any], target: str) -> str:
    """Writes DOT and renders PNG/SVG by extension; without ``dot`` the .dot file is the result."""
    stem, extension = os.path.splitext(target)
    dot_path = target if extension == ".dot" else stem + ".dot"
    with open(dot_path, "w") as handle:
        handle.write(to_dot(view))
    if extension == ".dot":
        return f"Wrote {dot_path}"
    if extension not in (".png", ".svg"):
        return f"Wrote {dot_path} (unknown picture type {extension!r}; use .png or .svg)"
    if shutil.which("dot") is None:
        return (
            f"Wrote {dot_path}; Graphviz 'dot' is not installed, so no {extension} was "
            f"rendered (apt-get install graphviz, then: dot -T{extension[1:]} {dot_path} "
            f"-o {target})"
        )
    subprocess.run(["dot", f"-T{extension[1:]}", dot_path, "-o", target], check=True)
    return f"Wrote {target} (and {dot_path})"


def run_query(connection: str, request: dict[str, Any]) -> Any:
    from serving.metadata.mlmd_lineage import MlmdLineage
    from serving.metadata.mlmd_store import connect
    from serving.metadata.query_socket import answer

    return answer(MlmdLineage(connect(parse_connection(connection))), request)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m serving.metadata.lineage",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--metadata_connection",
        default=os.environ.get("TFX_SERVING_METADATA", ""),
        help="sqlite:///path, mysql://user@host:port/db, postgresql://... "
        "(default $TFX_SERVING_METADATA)",
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--timing", action="store_true", help="print the query time to stderr")
    commands = parser.add_subparsers(dest="command", required=True)
    version = commands.add_parser("version", help="lineage of one model version")
    version.add_argument("model")
    version.add_argument("version")
    version.add_argument("--graph", default="", help="write a picture: lineage.svg/.png/.dot")
    versions = commands.add_parser("versions", help="versions of a model ever served")
    versions.add_argument("model")
    server = commands.add_parser("server", help="what one server loaded and when")
    server.add_argument("server_id")
    diff = commands.add_parser("diff", help="compare two versions")
    diff.add_argument("model")
    diff.add_argument("first")
    diff.add_argument("second")
    args = parser.parse_args(argv)
    if not args.metadata_connection:
        parser.error("pass --metadata_connection (or set $TFX_SERVING_METADATA)")
    request = {
        "version": lambda: {"op": "version", "model": args.model, "version": args.version},
        "versions": lambda: {"op": "versions", "model": args.model},
        "server": lambda: {"op": "server", "server_id": args.server_id},
        "diff": lambda: {
            "op": "diff",
            "model": args.model,
            "first": args.first,
            "second": args.second,
        },
    }[args.command]()
    started = time.perf_counter()
    try:
        result = run_query(args.metadata_connection, request)
    except (LookupError, MetadataConfigError, ConnectionError) as exc:
        print(f"error: {str(exc).strip(chr(39))}", file=sys.stderr)
        return 1
    if args.timing:
        print(f"query took {time.perf_counter() - started:.3f} s", file=sys.stderr)
    if args.json:
        print(json.dumps(result, indent=1, default=str))
    else:
        print(
            {
                "version": format_version,
                "versions": lambda r: format_versions(args.model, r),
                "server": format_server,
                "diff": format_diff,
            }[args.command](result)
        )
    if args.command == "version" and args.graph:
        print(write_graph(result, args.graph), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
