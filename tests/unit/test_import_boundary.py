"""The server's import graph: no TFX on its path, one direction between layers, no cycles.

The layer order is the README's drawing (storage -> servables -> batching -> core -> api ->
front ends), as in TF Serving's source tree. The graph is read statically with ``ast`` (every
``import`` in every module, including those under ``TYPE_CHECKING`` and inside functions), so a
lazy or type-only import cannot hide an upward dependency or a cycle.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

FORBIDDEN = ("tfx", "apache_beam", "ml_metadata", "kfp")

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "serving"

# (group, rank, module prefixes). A module may import its own group and any lower rank. Groups
# of equal rank are peers and may not import each other (REST and gRPC share only the layers
# below them). Plug-ins sit on top: the server core and front ends expose seams (observers,
# extra routes) that the plug-in fills; only the process wiring (``serving.server``) names a
# plug-in, and only inside a function, so it is imported only when a flag asks for it.
LAYERS: list[tuple[str, float, tuple[str, ...]]] = [
    (
        "shared",
        0,
        (
            "serving.version",
            "serving.errors",
            "serving.compat",
            "serving.tensor_types",
            "serving.tensor_codec",
            "serving.config_protos",
            "serving.request_limits",
            "serving.monitoring",
            "serving.security",
            "serving.protos",  # TF Serving's API messages without TensorFlow
            "serving.usable_cpus",
            "serving.ipc",  # shared memory and framed messages between processes
        ),
    ),
    ("storage", 1, ("serving.storage",)),
    ("servables", 2, ("serving.servables",)),
    # The server's flags: read by the front ends' builders and the process wiring; checking
    # them needs only the op-library spec rules (servables).
    ("flags", 2.5, ("serving.options",)),
    ("batching", 3, ("serving.batching",)),
    ("core", 4, ("serving.core",)),
    ("api", 5, ("serving.api",)),
    ("rest", 6, ("serving.rest",)),
    ("grpc_api", 6, ("serving.grpc_api",)),
    (
        "process",
        7,
        (
            "serving",  # the package's own __init__ (the version only)
            "serving.__main__",
            "serving.cli",
            "serving.server",
            "serving.config_file",
            "serving.heap",
            "serving.memory",
            "serving.event_loop",
            "serving.frontend_setup",
            "serving.multiproc",  # the same wiring, spread over processes
        ),
    ),
    # Plug-ins are peers: the status page reads the metadata plug-in through a protocol.
    ("metadata", 8, ("serving.metadata",)),
    ("status", 8, ("serving.status",)),
]
PLUGINS = {"metadata", "status"}
PLUGIN_LOADERS = {"serving.server"}


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    line: int
    lazy: bool  # inside a function body


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The serving module an imported name refers to (``a.b.c`` may be a function in ``a.b``)."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def _edges(modules: dict[str, Path]) -> list[Edge]:
    edges: list[Edge] = []
    for module, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        lazy_nodes = {
            id(inner)
            for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            for inner in ast.walk(node)
        }
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                names = [f"{base}.{alias.name}" for alias in node.names]
            for name in names:
                if not name.startswith("serving"):
                    continue
                target = _resolve(name, modules)
                if target is not None and target != module:
                    edges.append(Edge(module, target, node.lineno, id(node) in lazy_nodes))
    return edges


def _layer(module: str) -> tuple[str, float]:
    best: tuple[str, float, int] | None = None
    for group, rank, prefixes in LAYERS:
        for prefix in prefixes:
            inside = module == prefix or (prefix != "serving" and module.startswith(prefix + "."))
            if inside and (best is None or len(prefix) > best[2]):
                best = (group, rank, len(prefix))
    assert best is not None, f"{module} is in no layer: add it to LAYERS (and the README)"
    return best[0], best[1]


def _violations(edges: list[Edge]) -> list[str]:
    found = []
    for edge in edges:
        (source_group, source_rank), (target_group, target_rank) = (
            _layer(edge.source),
            _layer(edge.target),
        )
        if source_group == target_group:
            continue
        if target_group in PLUGINS:
            if edge.source in PLUGIN_LOADERS and edge.lazy:
                continue
            found.append(f"{edge.source}:{edge.line} imports the plug-in {edge.target}")
        elif target_rank >= source_rank:
            found.append(
                f"{edge.source}:{edge.line} ({source_group}) imports {edge.target} "
                f"({target_group}), a layer at or above its own"
            )
    return found


def _cycles(modules: dict[str, Path], edges: list[Edge]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    graph: dict[str, set[str]] = {module: set() for module in modules}
    for edge in edges:
        graph[edge.source].add(edge.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
    return components


def test_server_import_path_does_not_touch_tfx_or_the_metadata_plugin():
    """The server, its REST app and gRPC front end run without TFX, and without the metadata
    plug-in until a flag asks for it."""
    code = (
        "import sys, serving.cli, serving.server, serving.rest.app, serving.grpc_api.server\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r}\n"
        "             or m.startswith('serving.metadata'))\n"
        "print(','.join(bad))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        cwd=ROOT,
    )
    assert result.stdout.strip() == ""


def test_every_import_points_down_the_layers():
    modules = _modules()
    assert "serving.api.inference" in modules and "serving.servables.signatures" in modules
    assert _violations(_edges(modules)) == []


def test_there_is_no_import_cycle_inside_serving():
    modules = _modules()
    assert _cycles(modules, _edges(modules)) == []


def test_the_checks_catch_an_upward_import_a_plugin_import_and_a_cycle():
    """The rules above on a hand-made graph, so a bug in them cannot pass silently."""
    modules = {name: Path() for name in ("serving.core.a", "serving.api.b", "serving.storage.c")}
    up = Edge("serving.core.a", "serving.api.b", 1, lazy=False)
    down = Edge("serving.api.b", "serving.core.a", 1, lazy=False)
    plugin = Edge("serving.rest.app", "serving.metadata.services", 1, lazy=True)
    wired = Edge("serving.server", "serving.metadata.services", 1, lazy=True)
    assert len(_violations([up, down, plugin, wired])) == 2
    assert _cycles(modules, [up, down]) == [["serving.api.b", "serving.core.a"]]
    assert _cycles(modules, [down]) == []
