"""The demo end to end: pipeline on LocalDagRunner + SQLite MLMD, served by the real runtime.

The demo runs as a user runs it (``scripts/demo.py`` as ``scripts/demo.sh`` starts it: the
pipeline on this, the TFX stack, the server on the current stack; output not a terminal, so the
progress is one line per state change) and its whole output is checked: compact, with the useful
parts, without the noise.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from ml_metadata import metadata_store
from tfx.orchestration import metadata

from components.infra_validator.runners.local_process import LocalProcessRunner
from pipelines import quiet, serving_demo
from tests.support.stacks import current_stack_python, runtime_version_of

pytestmark = pytest.mark.integration

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NODES = ["CsvExampleGen", "Trainer", "Exporter", "InfraValidator", "Pusher"]
ONE_SCREEN = 40


def _run(command: list[str], **env: str) -> tuple[int, list[str]]:
    result = subprocess.run(
        command,
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=REPO, **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,  # what the terminal shows, in order
        text=True,
        timeout=900,
    )
    return result.returncode, result.stdout.splitlines()


def _artifacts(metadata_path: str, type_name: str):
    store = metadata_store.MetadataStore(metadata.sqlite_metadata_connection_config(metadata_path))
    return sorted(store.get_artifacts_by_type(type_name), key=lambda a: a.id)


def _contexts(metadata_path: str, type_name: str):
    store = metadata_store.MetadataStore(metadata.sqlite_metadata_connection_config(metadata_path))
    return store.get_contexts_by_type(type_name)


def _served_versions(rest_port: int) -> dict[str, str]:
    url = f"http://127.0.0.1:{rest_port}/v1/models/{serving_demo.MODEL_NAME}"
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            status = json.load(resp)["model_version_status"]
    except OSError:
        return {}
    return {s["version"]: s["state"] for s in status}


def _wait_for_version(rest_port: int, version: str, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if _served_versions(rest_port).get(version) == "AVAILABLE":
            return
        time.sleep(1)
    raise AssertionError(f"version {version} not served: {_served_versions(rest_port)}")


def test_demo_fits_one_screen_then_a_running_server_picks_up_the_next_push(tmp_path):
    workdir = str(tmp_path / "demo")
    metadata_path = os.path.join(workdir, "metadata.sqlite")

    server_python = current_stack_python()
    code, lines = _run(
        [sys.executable, "scripts/demo.py", "--workdir", workdir, "--train_steps", "10"],
        TFX_SERVING_SERVER_PYTHON=server_python,
    )

    output = "\n".join(lines)
    assert code == 0, output
    assert len(lines) <= ONE_SCREEN, output
    # The useful part: the steps (one line when each starts and ends, with what it did)...
    finished = [line.split()[1] for line in lines if line.startswith("  ✓ ")]
    assert finished == NODES, output
    infra = next(line for line in lines if line.startswith("  ✓ InfraValidator"))
    assert "BLESSED: p99 latency" in infra and "model_server.log" in infra
    # ... the answers over both protocols, the lineage and its picture.
    assert any(line.startswith('   -> {"predictions": [[') for line in lines), output
    assert any(line.startswith('   -> {"results": [[["0", ') for line in lines), output
    assert any(line.startswith("gRPC  PredictionService/Classify  -> [[('0', ") for line in lines)
    assert "REST and gRPC agree." in lines
    (pushed,) = _artifacts(metadata_path, "PushedModel")
    first = pushed.custom_properties["pushed_version"].string_value
    assert f"Model demo version {first}" in lines
    assert os.path.getsize(os.path.join(workdir, "lineage.svg")) > 0
    # Nothing that says nothing: import noise, proto dumps, raw logs.
    assert not [line for line in lines if quiet.is_noise(line)], output
    for noise in ("FutureWarning", "node_info", "INFO", "absl"):
        assert noise not in output
    # The full logs are in the work dir instead.
    log = Path(workdir, "logs", "pipeline.log").read_text()
    assert "Component Trainer is running." in log and "Using deployment config" not in log
    assert "Exporter: signatures serving_default (predict)" in log
    server_log = Path(workdir, "logs", "server.log").read_text()
    assert f"version {first} AVAILABLE" in server_log
    # The server ran on the current stack and reported its load through the TFX stack's worker.
    [server] = _contexts(metadata_path, "serving.server")
    runtime = server.properties["runtime_version"].string_value
    assert runtime.endswith(runtime_version_of(server_python)), runtime

    summary = serving_demo.run_summary(metadata_path)
    assert [(node, state) for node, state, _ in summary] == [(node, "COMPLETE") for node in NODES]
    (blessing,) = _artifacts(metadata_path, "InfraBlessing")
    assert blessing.custom_properties["blessed"].int_value == 1
    assert pushed.custom_properties["pushed"].int_value == 1
    store = os.path.join(workdir, "models", serving_demo.MODEL_NAME)
    assert os.listdir(store) == [first]

    runner = LocalProcessRunner(serving_demo.MODEL_NAME, store, str(tmp_path / "server.log"))
    runner.start()
    try:
        endpoint = runner.wait_until_running(time.time() + 120)
        _wait_for_version(endpoint.rest_port, first)
        body = json.dumps({"inputs": {"x1": [[0.5]], "x2": [[-1.0]]}}).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{endpoint.rest_port}/v1/models/{serving_demo.MODEL_NAME}:predict",
            data=body,
        )
        with urllib.request.urlopen(request, timeout=30) as resp:
            (score,) = json.load(resp)["outputs"][0]
        assert 0.0 <= score <= 1.0

        serving_demo.run_local(workdir, train_steps=10)

        second = _artifacts(metadata_path, "PushedModel")[-1]
        new_version = second.custom_properties["pushed_version"].string_value
        assert int(new_version) > int(first)
        _wait_for_version(endpoint.rest_port, new_version)
    finally:
        runner.stop()
    assert sorted(os.listdir(store)) == [first, new_version]


def test_failing_step_shows_its_error_and_the_log_tail(tmp_path):
    no_data = tmp_path / "no-data"
    no_data.mkdir()

    code, lines = _run(
        [
            sys.executable,
            "-m",
            "pipelines.serving_demo",
            "run",
            "--workdir",
            str(tmp_path / "w"),
            "--data_root",
            str(no_data),
        ]
    )

    output = "\n".join(lines)
    assert code == 1, output
    assert [line.split()[:2] for line in lines if line.startswith("  ✗ ")] == [
        ["✗", "CsvExampleGen"]
    ], output
    error = f"RuntimeError: Split pattern {no_data}/* does not match any files."
    assert f"CsvExampleGen failed: {error}" in lines
    tail_header = lines.index(f"Last 20 lines of {tmp_path / 'w' / 'logs' / 'pipeline.log'}:")
    assert lines[-1] == f"  | {error}"
    assert len(lines) - tail_header - 1 == 20
    assert not any(line.startswith(("  > Trainer", "  ✓ Trainer")) for line in lines)
