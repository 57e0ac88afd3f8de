"""The demo pipeline end to end on LocalDagRunner + SQLite MLMD, served by the real runtime."""

from __future__ import annotations

import json
import os
import time
import urllib.request

import pytest
from ml_metadata import metadata_store
from tfx.orchestration import metadata

from components.infra_validator.runners.local_process import LocalProcessRunner
from pipelines import serving_demo

pytestmark = pytest.mark.integration


def _artifacts(metadata_path: str, type_name: str):
    store = metadata_store.MetadataStore(metadata.sqlite_metadata_connection_config(metadata_path))
    return sorted(store.get_artifacts_by_type(type_name), key=lambda a: a.id)


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


def test_pipeline_pushes_versions_a_running_server_picks_up(tmp_path):
    workdir = str(tmp_path / "demo")
    metadata_path = os.path.join(workdir, "metadata.sqlite")

    store = serving_demo.run_local(workdir, train_steps=10)

    summary = serving_demo.run_summary(metadata_path)
    assert [(node, state) for node, state, _ in summary] == [
        (node, "COMPLETE")
        for node in ["CsvExampleGen", "Trainer", "Exporter", "InfraValidator", "Pusher"]
    ]
    (blessing,) = _artifacts(metadata_path, "InfraBlessing")
    assert blessing.custom_properties["blessed"].int_value == 1
    (pushed,) = _artifacts(metadata_path, "PushedModel")
    assert pushed.custom_properties["pushed"].int_value == 1
    first = pushed.custom_properties["pushed_version"].string_value
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
