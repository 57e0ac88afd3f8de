"""``tfx-serving-lineage``: option order, program name, and the lineage picture."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from serving.metadata import lineage
from serving.metadata.config import parse_connection
from serving.metadata.mlmd_records import MlmdRecords
from serving.metadata.mlmd_store import connect
from tests.metadata.history import seed_run

V1 = "1700000000"
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture
def connection(tmp_path) -> str:
    """A store with one pipeline run that pushed V1, loaded by one server."""
    connection = f"sqlite://{tmp_path}/mlmd.sqlite"
    store = connect(parse_connection(connection))
    seed_run(store, "run-1", V1, f"/models/demo/{V1}")
    MlmdRecords(store).record_version_loaded(
        {
            "episode_id": "srv-a/demo/1",
            "server_id": "srv-a",
            "model_name": "demo",
            "model_version": V1,
            "path": f"/models/demo/{V1}",
            "base_path": "/models/demo",
            "load_started_ms": 1.0e12,
            "load_time_ms": 1.0e12 + 500,
            "load_latency_ms": 500.0,
            "hostname": "host-a",
            "device": "CPU",
        }
    )
    return connection


def _json_out(capsys, argv: list[str]) -> object:
    assert lineage.main(argv) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize(
    "argv",
    [
        ["--metadata_connection={c}", "--json", "version", "demo", V1],
        ["--metadata_connection={c}", "version", "demo", V1, "--json"],
        ["version", "demo", V1, "--json", "--metadata_connection={c}"],
        ["--json", "version", "--metadata_connection={c}", "demo", V1],
    ],
    ids=["all-before", "json-after", "all-after", "mixed"],
)
def test_common_options_work_before_and_after_the_subcommand(connection, capsys, argv):
    view = _json_out(capsys, [a.format(c=connection) for a in argv])

    assert (view["model"], view["version"]) == ("demo", V1)
    assert view["pipeline_run"] == "run-1"
    assert [s["server_id"] for s in view["servers"]] == ["srv-a"]


def test_option_before_the_subcommand_is_not_reset_by_the_subcommand(connection, capsys):
    # argparse copies a subparser's defaults over the namespace; --json given first must stay.
    versions = _json_out(
        capsys, ["--json", f"--metadata_connection={connection}", "versions", "demo"]
    )
    assert [v["version"] for v in versions] == [V1]

    assert lineage.main([f"--metadata_connection={connection}", "versions", "demo"]) == 0
    assert capsys.readouterr().out.startswith("Versions of demo ever served\n")


def test_usage_and_errors_name_the_program(connection):
    run = [sys.executable, "-m", "serving.metadata.lineage"]
    env = dict(os.environ, PYTHONPATH=REPO, TFX_SERVING_METADATA="")

    usage = subprocess.run([*run, "--help"], cwd=REPO, env=env, capture_output=True, text=True)
    assert usage.returncode == 0
    assert usage.stdout.startswith("usage: tfx-serving-lineage ")

    sub = subprocess.run(
        [*run, "version", "--help"], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert sub.stdout.startswith("usage: tfx-serving-lineage version ")
    assert "--json" in sub.stdout and "--metadata_connection" in sub.stdout

    missing = subprocess.run(
        [*run, "versions", "demo"], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert missing.returncode == 2
    assert "tfx-serving-lineage: error: pass --metadata_connection" in missing.stderr

    unknown = subprocess.run(
        [*run, f"--metadata_connection={connection}", "version", "demo", "42"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    assert unknown.returncode == 1
    assert unknown.stderr.startswith("tfx-serving-lineage: error: No record of model 'demo'")


def test_console_script_is_installed_under_that_name(connection):
    script = os.path.join(os.path.dirname(sys.executable), "tfx-serving-lineage")
    assert os.access(script, os.X_OK), f"{script} missing: reinstall the package (pip install -e .)"
    result = subprocess.run(
        [script, "version", "demo", V1, "--json", f"--metadata_connection={connection}"],
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=REPO),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["version"] == V1


def _boxes(root: ET.Element) -> dict[str, tuple[float, float, float, float]]:
    boxes = {}
    for group in root.iter(f"{SVG}g"):
        rect = group.find(f"{SVG}rect")
        boxes[group.get("id")] = tuple(float(rect.get(k)) for k in ("x", "y", "width", "height"))
    return boxes


def test_builtin_svg_is_a_layered_left_to_right_picture(connection, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no Graphviz, whatever this machine has
    target = tmp_path / "lineage.svg"

    assert (
        lineage.main(
            [f"--metadata_connection={connection}", "version", "demo", V1, "--graph", str(target)]
        )
        == 0
    )

    assert f"Wrote {target}\n" in capsys.readouterr().err
    view = lineage.run_query(connection, {"op": "version", "model": "demo", "version": V1})
    graph = view["graph"]
    root = ET.fromstring(target.read_text())
    assert root.tag == f"{SVG}svg"
    boxes = _boxes(root)
    assert set(boxes) == {f"a{a['id']}" for a in graph["artifacts"]} | {
        f"e{x['id']}" for x in graph["executions"]
    }
    texts = " ".join(t.text or "" for t in root.iter(f"{SVG}text"))
    for expected in ("Trainer", "Pusher", "ModelServing", "PushedModel", f"version {V1}", "srv-a"):
        assert expected in texts
    # Layered: every event edge points right, one arrow path per edge.
    for source, target_key, _ in graph["edges"]:
        assert boxes[source][0] + boxes[source][2] < boxes[target_key][0], (source, target_key)
    assert len(root.findall(f"{SVG}path")) == len(graph["edges"])
    # No two boxes overlap.
    items = list(boxes.values())
    for i, (x1, y1, w1, h1) in enumerate(items):
        for x2, y2, w2, h2 in items[i + 1 :]:
            assert x1 + w1 <= x2 or x2 + w2 <= x1 or y1 + h1 <= y2 or y2 + h2 <= y1


def test_png_without_graphviz_says_what_works(connection, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    target = tmp_path / "lineage.png"

    code = lineage.main(
        [f"--metadata_connection={connection}", "version", "demo", V1, "--graph", str(target)]
    )

    assert code == 1 and not target.exists()
    err = capsys.readouterr().err
    assert "tfx-serving-lineage: error: Graphviz 'dot' is not installed" in err
    assert "write a .svg instead" in err


def test_graphviz_renders_when_dot_is_on_path(connection, tmp_path, capsys, monkeypatch):
    # A stand-in `dot` (Graphviz is not installed here): records what it was given, writes -o.
    fake = tmp_path / "bin" / "dot"
    fake.parent.mkdir()
    fake.write_text(
        "#!/bin/sh\n"
        f'echo "$@" > {tmp_path}/dot-args\n'
        f"cat > {tmp_path}/dot-input\n"
        'while [ "$1" != "-o" ]; do shift; done; echo "<svg/>" > "$2"\n'
    )
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}/usr/bin{os.pathsep}/bin")
    target = tmp_path / "lineage.svg"

    assert (
        lineage.main(
            [f"--metadata_connection={connection}", "version", "demo", V1, "--graph", str(target)]
        )
        == 0
    )

    assert "(Graphviz)" in capsys.readouterr().err
    assert (tmp_path / "dot-args").read_text().split() == ["-Tsvg", "-o", str(target)]
    assert (tmp_path / "dot-input").read_text().startswith("digraph lineage {")
    assert target.read_text() == "<svg/>\n"

    builtin = tmp_path / "builtin.svg"
    lineage.main(
        [
            f"--metadata_connection={connection}",
            "version",
            "demo",
            V1,
            "--graph",
            str(builtin),
            "--graph_renderer=builtin",
        ]
    )
    assert ET.fromstring(builtin.read_text()).tag == f"{SVG}svg"


def test_dot_source_and_unknown_picture_types(connection, tmp_path, capsys):
    dot = tmp_path / "lineage.dot"
    argv = [f"--metadata_connection={connection}", "version", "demo", V1, "--graph"]
    assert lineage.main([*argv, str(dot)]) == 0
    assert "ModelServing" in dot.read_text() and "-> " in dot.read_text()

    with pytest.raises(SystemExit) as exit_info:
        lineage.main([*argv, str(tmp_path / "lineage.jpg")])
    assert exit_info.value.code == 2
    assert "use a .svg, .png or .dot file name" in capsys.readouterr().err
