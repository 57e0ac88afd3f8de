"""A lineage picture as SVG, laid out and written here: no Graphviz or other system package.

The graph (``version_lineage(...)["graph"]``: artifacts, executions, and the events between
them) is a DAG that flows from data to serving. It is drawn left to right in layers, the
Sugiyama way Graphviz's ``dot`` also works, reduced to what a lineage of tens of nodes needs:

1. layer = longest path from a source (every edge points to a later layer); an edge that
   skips layers gets a waypoint in each layer it crosses, so it is routed around the nodes
   there instead of through them;
2. order within a layer by repeated barycenter sweeps (a node moves towards the mean position
   of its neighbours in the previous layer, then the next), which removes most crossings;
3. each layer is a column as wide as its widest node; edges are cubic curves with horizontal
   ends from waypoint to waypoint, labelled with the event's key (``examples``, ``model``...).

Executions are boxes coloured by state, artifacts rounded cards; text is escaped.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from collections import defaultdict
from typing import Any
from xml.sax.saxutils import escape

_FONT = "Helvetica, Arial, sans-serif"
_CHAR_WIDTH = 6.6  # px per character at 11 px, a safe over-estimate for the fonts above
_LINE_HEIGHT = 14
_PAD_X, _PAD_Y = 10, 7
_GAP_X, _GAP_Y = 70, 22
_MARGIN = 20
_TITLE_HEIGHT = 28
_SWEEPS = 6
_WAYPOINT_HEIGHT = 8
_STATE_COLOURS = {
    "COMPLETE": ("#e8f5e9", "#2e7d32"),
    "CACHED": ("#e8f5e9", "#2e7d32"),
    "RUNNING": ("#e3f2fd", "#1565c0"),
    "NEW": ("#e3f2fd", "#1565c0"),
    "FAILED": ("#ffebee", "#c62828"),
    "CANCELED": ("#f5f5f5", "#757575"),
}
_ARTIFACT_COLOURS = ("#fffde7", "#9e9d24")


@dataclasses.dataclass
class _Node:
    key: str
    lines: list[str]
    kind: str  # "artifact" | "execution" | "waypoint" (where a long edge crosses a layer)
    state: str = ""
    layer: int = 0
    order: float = 0.0
    x: float = 0.0
    y: float = 0.0
    width: float = 0.0
    height: float = 0.0

    def __post_init__(self) -> None:
        if self.lines:
            self.width = max(len(line) for line in self.lines) * _CHAR_WIDTH + 2 * _PAD_X
            self.height = len(self.lines) * _LINE_HEIGHT + 2 * _PAD_Y
        else:
            self.height = _WAYPOINT_HEIGHT


def _short(type_name: str) -> str:
    return type_name.rsplit(".", 1)[-1]


def _artifact_lines(artifact: dict[str, Any]) -> list[str]:
    props = artifact.get("properties") or {}
    lines = [f"{_short(artifact['type'])} #{artifact['id']}"]
    if props.get("pushed_version"):
        lines.append(f"version {props['pushed_version']}")
    if "blessed" in props:
        lines.append(f"blessed={props['blessed']}")
    name = os.path.basename((artifact.get("uri") or "").rstrip("/"))
    if name and not name.isdigit():  # TFX URIs end in the execution id: nothing to read
        lines.append(name if len(name) <= 40 else name[:37] + "...")
    return lines


def _execution_lines(execution: dict[str, Any]) -> list[str]:
    props = execution.get("properties") or {}
    lines = [f"{_short(execution['type'])} #{execution['id']}", execution.get("state", "")]
    if props.get("server_id"):
        lines.append(str(props["server_id"]))
    return [line for line in lines if line]


def _nodes(graph: dict[str, Any]) -> dict[str, _Node]:
    nodes = {
        f"a{a['id']}": _Node(f"a{a['id']}", _artifact_lines(a), "artifact")
        for a in graph.get("artifacts", [])
    }
    for x in graph.get("executions", []):
        key = f"e{x['id']}"
        nodes[key] = _Node(key, _execution_lines(x), "execution", x.get("state", ""))
    return nodes


def _assign_layers(nodes: dict[str, _Node], edges: list[tuple[str, str, str]]) -> None:
    """Longest path from the sources (Kahn's order); nodes on a cycle, which MLMD lineage
    should never have, go after everything else instead of looping."""
    successors: dict[str, list[str]] = defaultdict(list)
    indegree = dict.fromkeys(nodes, 0)
    for source, target, _ in edges:
        successors[source].append(target)
        indegree[target] += 1
    ready = sorted(k for k, d in indegree.items() if d == 0)
    seen = set()
    while ready:
        key = ready.pop(0)
        seen.add(key)
        for target in successors[key]:
            nodes[target].layer = max(nodes[target].layer, nodes[key].layer + 1)
            indegree[target] -= 1
            if indegree[target] == 0:
                ready.append(target)
    last = max((n.layer for n in nodes.values()), default=0)
    for key in sorted(set(nodes) - seen):
        nodes[key].layer = last + 1


def _route(
    nodes: dict[str, _Node], edges: list[tuple[str, str, str]]
) -> list[tuple[list[str], str]]:
    """Each edge as the chain of nodes it passes (waypoints added to ``nodes``) + its label."""
    routes = []
    for number, (source, target, label) in enumerate(edges):
        chain = [source]
        for layer in range(nodes[source].layer + 1, nodes[target].layer):
            key = f"w{number}-{layer}"
            nodes[key] = _Node(key, [], "waypoint", layer=layer)
            chain.append(key)
        routes.append(([*chain, target], label))
    return routes


def _sort_key(item: tuple[str, _Node]) -> tuple[str, int, str]:
    key, node = item
    return (node.kind, int(key[1:]) if key[1:].isdigit() else 0, key)


def _order_layers(nodes: dict[str, _Node], edges: list[tuple[str, str]]) -> list[list[str]]:
    layers: dict[int, list[str]] = defaultdict(list)
    for key, node in sorted(nodes.items(), key=_sort_key):
        layers[node.layer].append(key)
    columns = [layers[i] for i in sorted(layers)]
    neighbours: dict[str, dict[str, list[str]]] = {k: {"in": [], "out": []} for k in nodes}
    for source, target in edges:
        neighbours[target]["in"].append(source)
        neighbours[source]["out"].append(target)

    def sweep(sequence: list[list[str]], side: str) -> None:
        for column in sequence:
            for key in column:
                linked = neighbours[key][side]
                if linked:
                    nodes[key].order = sum(nodes[k].order for k in linked) / len(linked)
            column.sort(key=lambda k: nodes[k].order)
            for position, key in enumerate(column):
                nodes[key].order = position

    for column in columns:
        for position, key in enumerate(column):
            nodes[key].order = position
    for _ in range(_SWEEPS):
        sweep(columns[1:], "in")
        sweep(list(reversed(columns[:-1])), "out")
    return columns


def _place(nodes: dict[str, _Node], columns: list[list[str]]) -> tuple[float, float]:
    heights = [
        sum(nodes[k].height for k in column) + _GAP_Y * (len(column) - 1) for column in columns
    ]
    total_height = max(heights, default=0)
    x = _MARGIN
    for column, height in zip(columns, heights, strict=True):
        width = max(nodes[k].width for k in column)
        y = _MARGIN + _TITLE_HEIGHT + (total_height - height) / 2
        for key in column:
            node = nodes[key]
            if node.kind == "waypoint":  # the edge crosses the whole column at this height
                node.width = width
            node.x = x + (width - node.width) / 2
            node.y = y
            y += node.height + _GAP_Y
        x += width + _GAP_X
    return x - _GAP_X + _MARGIN, _MARGIN * 2 + _TITLE_HEIGHT + total_height


def _text(x: float, y: float, content: str, **attrs: str) -> str:
    extra = "".join(f' {k.replace("_", "-")}="{v}"' for k, v in attrs.items())
    return f'<text x="{x:.1f}" y="{y:.1f}"{extra}>{escape(content)}</text>'


def _draw_node(node: _Node) -> list[str]:
    if node.kind == "execution":
        fill, stroke = _STATE_COLOURS.get(node.state, ("#f5f5f5", "#616161"))
        radius = 3
    else:
        fill, stroke = _ARTIFACT_COLOURS
        radius = 12
    out = [
        f'<g class="{node.kind}" id="{escape(node.key)}">',
        f'<rect x="{node.x:.1f}" y="{node.y:.1f}" width="{node.width:.1f}" '
        f'height="{node.height:.1f}" rx="{radius}" fill="{fill}" stroke="{stroke}" '
        'stroke-width="1.4"/>',
    ]
    for i, line in enumerate(node.lines):
        baseline = node.y + _PAD_Y + (i + 1) * _LINE_HEIGHT - 3
        weight = "bold" if i == 0 else "normal"
        out.append(
            _text(node.x + node.width / 2, baseline, line, text_anchor="middle", font_weight=weight)
        )
    out.append("</g>")
    return out


def _draw_route(chain: list[_Node], label: str) -> list[str]:
    """A path from the source's right side through each waypoint to the target's left side."""
    points: list[tuple[float, float]] = []
    for node in chain:
        middle = node.y + node.height / 2
        points.append((node.x, middle))
        points.append((node.x + node.width, middle))
    points = points[1:-1]  # leave the source on its right side, enter the target on its left
    commands = [f"M{points[0][0]:.1f},{points[0][1]:.1f}"]
    for hop, ((x1, y1), (x2, y2)) in enumerate(itertools.pairwise(points)):
        if hop % 2:  # across a waypoint's column, at its height
            commands.append(f"L{x2:.1f},{y2:.1f}")
        else:  # between columns: a curve leaving and arriving horizontally
            bend = max((x2 - x1) / 2, 20)
            commands.append(f"C{x1 + bend:.1f},{y1:.1f} {x2 - bend:.1f},{y2:.1f} {x2:.1f},{y2:.1f}")
    out = [
        f'<path d="{" ".join(commands)}" fill="none" stroke="#607d8b" marker-end="url(#arrow)"/>'
    ]
    if label:
        # An input key belongs to the consumer, an output key to the producer: label the hop
        # next to the execution the key is named by (also keeps fan-out labels apart).
        first, last = (points[0], points[1]), (points[-2], points[-1])
        (x1, y1), (x2, y2) = last if chain[0].kind == "artifact" else first
        out.append(
            _text(
                (x1 + x2) / 2,
                (y1 + y2) / 2 - 3,
                label,
                text_anchor="middle",
                font_size="9",
                fill="#455a64",
                stroke="#ffffff",
                stroke_width="3",
                paint_order="stroke",
            )
        )
    return out


def render_svg(view: dict[str, Any]) -> str:
    """The SVG document for a ``version`` lineage view."""
    graph = view.get("graph") or {}
    nodes = _nodes(graph)
    edges = [
        (s, t, k) for s, t, k in (graph.get("edges") or []) if s in nodes and t in nodes and s != t
    ]
    _assign_layers(nodes, edges)
    routes = _route(nodes, edges)
    hops = [(a, b) for chain, _ in routes for a, b in itertools.pairwise(chain)]
    columns = _order_layers(nodes, hops) if nodes else []
    width, height = _place(nodes, columns)
    title = f"Lineage of model {view.get('model', '?')} version {view.get('version', '?')}"
    width = max(width, len(title) * 8 + 2 * _MARGIN)
    out = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
        f'viewBox="0 0 {width:.0f} {height:.0f}" font-family="{_FONT}" font-size="11">',
        f"<title>{escape(title)}</title>",
        "<defs>"
        '<marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
        'fill="#607d8b"/></marker></defs>',
        f'<rect width="{width:.0f}" height="{height:.0f}" fill="#ffffff"/>',
        _text(_MARGIN, _MARGIN + 12, title, font_size="14", font_weight="bold"),
    ]
    for chain, label in routes:
        out.extend(_draw_route([nodes[k] for k in chain], label))
    for column in columns:
        for key in column:
            if nodes[key].kind != "waypoint":
                out.extend(_draw_node(nodes[key]))
    out.append("</svg>")
    return "\n".join(out) + "\n"
