"""Pipeline run + real model server + feedback + next pipeline run, on SQLite and real MariaDB.

The pipeline and the metadata worker (the MLMD writer) run on the TFX 1.16 stack; the server runs
on either stack. On the current stack (Python 3.12, TF 2.21), where ml-metadata 1.16 cannot be
installed, its worker runs on the TFX stack's Python through ``$TFX_SERVING_METADATA_PYTHON`` —
the configuration the serving image ships (docs/stacks.md).
"""

from __future__ import annotations

import json
import os
import sys

import pytest
from ml_metadata.proto import metadata_store_pb2 as pb
from tfx import v1 as tfx

from pipelines import serving_demo
from serving.metadata import export, lineage
from serving.metadata.config import parse_connection
from serving.metadata.mlmd_store import connect, connection_config
from serving.metadata.spool import Spool
from serving.metadata.worker_python import WORKER_PYTHON_ENV
from tests.support.server_process import ServerProcess
from tests.support.stacks import current_stack_python, stack_versions

pytestmark = pytest.mark.integration

INSTANCES = {"instances": [{"x1": [0.5], "x2": [1.0]}, {"x1": [-1.5], "x2": [-1.0]}]}


def _server_args(store_dir: str, connection: str, work) -> list[str]:
    return [
        "--model_name=demo",
        f"--model_base_path={store_dir}",
        f"--metadata_connection={connection}",
        f"--metadata_spool_dir={work / 'spool'}",
        f"--prediction_log_dir={work / 'predictions'}",
        "--prediction_log_sampling=0,demo=1.0",
        "--metadata_server_id=srv-1",
        "--file_system_poll_wait_seconds=1",
    ]


def _on_stack(stack: str) -> dict:
    """ServerProcess arguments running the server on ``stack``; the worker stays on this one."""
    if stack == "tfx":
        return {}
    python = current_stack_python()
    assert stack_versions(python)["python"].startswith("3.12"), python
    return {"python": python, "env": {WORKER_PYTHON_ENV: sys.executable}}


def _episodes(connection: str) -> list[pb.Execution]:
    store = connect(parse_connection(connection))
    return sorted(store.get_executions_by_type("serving.ModelServing"), key=lambda e: e.id)


def _input_ids(connection: str, execution_id: int) -> list[int]:
    store = connect(parse_connection(connection))
    events = store.get_events_by_execution_ids([execution_id])
    return [e.artifact_id for e in events if e.type == pb.Event.INPUT]


def _pushed_model_id(connection: str, version: str) -> int:
    store = connect(parse_connection(connection))
    [pushed] = [
        a
        for a in store.get_artifacts_by_type("PushedModel")
        if a.custom_properties["pushed_version"].string_value == version
    ]
    return pushed.id


@pytest.mark.parametrize("stack", ["tfx", "current"], ids=["tfx-stack", "current-stack"])
def test_pipeline_serving_feedback_and_next_run_on_sqlite(stack, tmp_path, capsys):
    server_stack = _on_stack(stack)
    workdir = tmp_path / "demo"
    store_dir = serving_demo.run_local(str(workdir), train_steps=10)
    [version] = os.listdir(store_dir)
    connection = f"sqlite://{workdir / 'metadata.sqlite'}"

    with ServerProcess(_server_args(store_dir, connection, tmp_path), **server_stack) as server:
        server.wait_for(lambda: server.available_versions("demo"))
        status, _, headers = server.request_with_headers(
            "POST", "/v1/models/demo:predict", INSTANCES, {"X-Request-Id": "req-1"}
        )
        assert (status, headers["x-request-id"]) == (200, "req-1")
        ids = []
        for x in (2.0, -2.0, 1.0):
            _, _, headers = server.request_with_headers(
                "POST", "/v1/models/demo:predict", {"instances": [{"x1": [x], "x2": [x]}]}
            )
            ids.append(headers["x-request-id"])  # generated when the client sent none
        labels = [{"request_id": "req-1", "label": [1, 0]}] + [
            {"request_id": rid, "label": int(x > 0)}
            for rid, x in zip(ids, (2.0, -2.0, 1.0), strict=True)
        ]
        status, answer = server.json(
            "POST",
            "/v1/models/demo:feedback",
            {"labels": [*labels, {"request_id": "nope", "label": 1}]},
        )
        assert status == 200, answer
        assert answer["accepted"] == 5
        assert [u["request_id"] for u in answer["unknown"]] == ["nope"]
        assert answer["metrics"][0]["num_labeled"] == 5

        def lineage_view():
            status, view = server.json("GET", f"/v1/lineage/models/demo/versions/{version}")
            return view if status == 200 and view["servers"] and view["live_metrics"] else None

        view = server.wait_for(lineage_view)
        assert view["servers"][0]["state"] == "RUNNING"
        assert view["live_metrics"][0]["num_labeled"] == 5
        assert view["pipeline_run"] and view["trainer"] and view["examples"]

    [episode] = _episodes(connection)
    assert episode.last_known_state == pb.Execution.COMPLETE
    assert _input_ids(connection, episode.id) == [_pushed_model_id(connection, version)]

    feedback_dir = tmp_path / "feedback-1"
    assert (
        export.main(
            [
                f"--prediction_log_dir={tmp_path / 'predictions'}",
                "--model=demo",
                f"--output_dir={feedback_dir}",
                f"--metadata_connection={connection}",
            ]
        )
        == 0
    )
    serving_demo.run_local(str(workdir), train_steps=10, feedback_examples=str(feedback_dir))

    capsys.readouterr()
    assert (
        lineage.main(["--metadata_connection", connection, "--json", "version", "demo", version])
        == 0
    )
    view = json.loads(capsys.readouterr().out)
    [fed_back] = view["feedback_examples"]
    assert fed_back["uri"] == str(feedback_dir)
    [consumer] = fed_back["consumed_by"]
    assert consumer["type"].endswith("Trainer") and consumer["pipeline_run"] != view["pipeline_run"]


def test_mariadb_down_during_loads_then_delivered_once(mariadb, tmp_path):
    """On the current stack: the serving image's configuration (server 3.12, worker 3.10)."""
    server_stack = _on_stack("current")
    workdir = tmp_path / "demo"
    store_dir = str(workdir / "models" / "demo")
    connection = mariadb.connection
    tfx.orchestration.LocalDagRunner().run(
        serving_demo.create_pipeline(
            pipeline_root=str(workdir / "root"),
            data_root=serving_demo.DATA_ROOT,
            serving_model_dir=store_dir,
            train_steps=10,
            metadata_connection_config=connection_config(parse_connection(connection)),
        )
    )
    [version] = os.listdir(store_dir)
    args = _server_args(store_dir, connection, tmp_path)

    mariadb.stop()
    # Serving works while the metadata store is down.
    with ServerProcess(args, **server_stack) as server:
        server.wait_for(lambda: server.available_versions("demo"))
        assert server.request("POST", "/v1/models/demo:predict", INSTANCES)[0] == 200
        status, answer = server.json("GET", f"/v1/lineage/models/demo/versions/{version}")
        assert status == 503, answer
    spool = Spool(str(tmp_path / "spool"))
    assert [r.kind for r in spool.peek()][:3] == [
        "server_started",
        "version_loaded",
        "version_unloaded",
    ]
    spool.close()

    mariadb.start()
    # The backlog goes first, then this run's load.
    with ServerProcess(args, **server_stack) as server:
        server.wait_for(lambda: server.available_versions("demo"))
        server.wait_for(lambda: len(_episodes(connection)) == 2, timeout=60)
        status, view = server.json("GET", f"/v1/lineage/models/demo/versions/{version}")
        assert status == 200 and [s["state"] for s in view["servers"]] == ["COMPLETE", "RUNNING"]

    episodes = _episodes(connection)
    assert [e.last_known_state for e in episodes] == [pb.Execution.COMPLETE] * 2
    pushed = _pushed_model_id(connection, version)
    assert [_input_ids(connection, e.id) for e in episodes] == [[pushed], [pushed]]
    assert episodes[0].properties["load_time_ms"].double_value > 2**31  # DOUBLE on MariaDB
