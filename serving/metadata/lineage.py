"""``tfx-serving-lineage``: what made a served model, where it ran, how it does.

    tfx-serving-lineage --metadata_connection=sqlite:///w/metadata.sqlite \\
        version demo 1700000000 [--graph lineage.svg]
    ... versions demo          every version ever served, servers, live metrics
    ... server host:8501       what a server loaded and when, what is live now
    ... diff demo V1 V2        pipeline run, data, blessings, servers side by side

Tables by default, ``--json`` for scripts; ``--metadata_connection``, ``--json`` and
``--timing`` go before or after the subcommand. ``--graph x.svg`` draws the lineage: with
Graphviz's ``dot`` when installed, else with the built-in layered layout (no system package
needed); ``.png`` needs Graphviz, ``.dot`` writes the Graphviz source.
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


GRAPH_RENDERERS = ("auto", "builtin", "graphviz")


class GraphError(ValueError):
    """The picture cannot be made as asked; the message says what would work."""


def write_graph(view: dict[str, Any], target: str, renderer: str = "auto") -> str:
    """Draws the lineage into ``target`` by its extension; returns what was written.

    ``.svg``: Graphviz when ``renderer`` is ``graphviz``, or ``auto`` and ``dot`` is on PATH;
    else the built-in layout (:mod:`serving.metadata.lineage_svg`). ``.png``: Graphviz only.
    ``.dot``: the Graphviz source.
    """
    extension = os.path.splitext(target)[1].lower()
    if extension not in (".svg", ".png", ".dot"):
        raise GraphError(f"unknown picture type {extension or target!r}: use .svg, .png or .dot")
    if extension == ".dot":
        with open(target, "w") as handle:
            handle.write(to_dot(view))
        return f"Wrote {target}"
    if renderer not in GRAPH_RENDERERS:
        raise GraphError(f"unknown renderer {renderer!r}: use one of {list(GRAPH_RENDERERS)}")
    if extension == ".png" and renderer == "builtin":
        raise GraphError("the built-in renderer writes SVG: use a .svg file name")
    dot = shutil.which("dot")
    use_graphviz = (
        extension == ".png" or renderer == "graphviz" or (renderer == "auto" and dot is not None)
    )
    if use_graphviz and dot is None:
        raise GraphError(
            f"Graphviz 'dot' is not installed, so no {extension} can be rendered with it "
            "(apt-get install graphviz); write a .svg instead, which needs no system package."
        )
    if use_graphviz:
        subprocess.run(
            [dot, f"-T{extension[1:]}", "-o", target], input=to_dot(view), text=True, check=True
        )
        return f"Wrote {target} (Graphviz)"
    from serving.metadata.lineage_svg import render_svg

    with open(target, "w", encoding="utf-8") as handle:
        handle.write(render_svg(view))
    return f"Wrote {target}"


def run_query(connection: str, request: dict[str, Any]) -> Any:
    from serving.metadata.mlmd_lineage import MlmdLineage
    from serving.metadata.mlmd_store import connect
    from serving.metadata.query_socket import answer

    return answer(MlmdLineage(connect(parse_connection(connection))), request)


PROG = "tfx-serving-lineage"


def _common_options(*, with_defaults: bool) -> argparse.ArgumentParser:
    """Options every subcommand takes, accepted before and after the subcommand.

    The top-level parser holds the defaults; the subcommands' copies default to SUPPRESS, so
    an option given before the subcommand is not reset by the subcommand's parser (argparse
    copies a subparser's defaults over the namespace).
    """

    def default(value: Any) -> Any:
        return value if with_defaults else argparse.SUPPRESS

    options = argparse.ArgumentParser(add_help=False)
    options.add_argument(
        "--metadata_connection",
        default=default(os.environ.get("TFX_SERVING_METADATA", "")),
        help="sqlite:///path, mysql://user@host:port/db, postgresql://... "
        "(default $TFX_SERVING_METADATA)",
    )
    options.add_argument(
        "--json", action="store_true", default=default(False), help="machine-readable output"
    )
    options.add_argument(
        "--timing",
        action="store_true",
        default=default(False),
        help="print the query time to stderr",
    )
    return options


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[_common_options(with_defaults=True)],
    )
    common = _common_options(with_defaults=False)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    version = commands.add_parser("version", parents=[common], help="lineage of one model version")
    version.add_argument("model")
    version.add_argument("version")
    version.add_argument("--graph", default="", help="draw it: lineage.svg (or .png, .dot)")
    version.add_argument(
        "--graph_renderer",
        choices=GRAPH_RENDERERS,
        default="auto",
        help="auto: Graphviz if installed, else built-in (SVG only)",
    )
    versions = commands.add_parser(
        "versions", parents=[common], help="versions of a model ever served"
    )
    versions.add_argument("model")
    server = commands.add_parser("server", parents=[common], help="what one server loaded")
    server.add_argument("server_id")
    diff = commands.add_parser("diff", parents=[common], help="compare two versions")
    diff.add_argument("model")
    diff.add_argument("first")
    diff.add_argument("second")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.metadata_connection:
        parser.error("pass --metadata_connection (or set $TFX_SERVING_METADATA)")
    graph = getattr(args, "graph", "")
    if graph and os.path.splitext(graph)[1].lower() not in (".svg", ".png", ".dot"):
        parser.error(f"--graph {graph}: use a .svg, .png or .dot file name")
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
        print(f"{PROG}: error: {str(exc).strip(chr(39))}", file=sys.stderr)
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
    if graph:
        try:
            print(write_graph(result, graph, args.graph_renderer), file=sys.stderr)
        except (GraphError, OSError, subprocess.CalledProcessError) as exc:
            print(f"{PROG}: error: {exc}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
